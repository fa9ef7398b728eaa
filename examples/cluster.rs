//! A one-command local cluster demo: `cargo run --release --example cluster`.
//!
//! Runs a 3-replica Raft group of Flotilla's core in this process (messages passed in
//! memory, writes made durable at once), then: writes and reads, transfers the leader, adds
//! a fourth replica as a learner, promotes it, removes a replica, compacts the log so a new
//! replica catches up from a snapshot, and prints what happened and the throughput seen.
//! It ends by itself. (The networked multi-node demo over the WAL and QUIC arrives with the
//! runtime; this one exercises the consensus core alone.)

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use flotilla::raft::{
    ChangeKind, ConfChange, ConfState, Config, EntryPayload, MemStorage, MessageBody, Raft, Replica, Role,
    SnapshotChunk,
};

/// One replica plus its in-memory state machine (a key-value map).
struct Node {
    raft: Raft<MemStorage>,
    kv: BTreeMap<String, String>,
}

struct Cluster {
    nodes: BTreeMap<u64, Node>,
}

impl Cluster {
    fn new(ids: &[u64]) -> Self {
        let conf = ConfState::with_voters(ids.iter().map(|&i| Replica::new(i, i)));
        let mut nodes = BTreeMap::new();
        for &id in ids {
            nodes.insert(id, Self::node(id, MemStorage::bootstrap(&conf)));
        }
        Cluster { nodes }
    }

    fn node(id: u64, storage: MemStorage) -> Node {
        let mut cfg = Config::new(id);
        cfg.seed = 7;
        Node { raft: Raft::new(cfg.validate().unwrap(), storage).unwrap(), kv: BTreeMap::new() }
    }

    fn leader(&self) -> Option<u64> {
        self.nodes.values().find(|n| n.raft.role() == Role::Leader).map(|n| n.raft.id())
    }

    /// Processes every Ready and delivers every message until the cluster is quiet.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut out = Vec::new();
            for n in self.nodes.values_mut() {
                while n.raft.has_ready() {
                    let rd = n.raft.ready();
                    out.extend(rd.messages);
                    if let Some(s) = &rd.snapshot {
                        n.raft.storage_mut().apply_snapshot(s);
                        n.kv = decode(&s.data);
                    }
                    n.raft.storage_mut().append(&rd.entries);
                    if let Some(hs) = rd.hard_state {
                        n.raft.storage_mut().set_hard_state(hs);
                    }
                    if let Some(e) = rd.entries.last() {
                        n.raft.on_persisted(e.index, e.term);
                    }
                    out.extend(rd.persisted_messages);
                    let mut last = None;
                    for e in rd.committed_entries {
                        if let EntryPayload::Normal(d) = &e.payload {
                            let s = String::from_utf8_lossy(d);
                            if let Some((k, v)) = s.split_once('=') {
                                n.kv.insert(k.to_string(), v.to_string());
                            }
                        }
                        last = Some(e.index);
                    }
                    if let Some(i) = last {
                        n.raft.on_applied(i);
                    }
                }
            }
            if out.is_empty() {
                return;
            }
            for m in out {
                let from = m.from;
                match m.body {
                    MessageBody::SendSnapshot { meta } => {
                        // The runtime streams the stored snapshot in chunks.
                        let snap = self.nodes[&from].raft.storage().snapshot();
                        assert_eq!(snap.meta.index, meta.index);
                        let chunks: Vec<&[u8]> = snap.data.chunks(64).collect();
                        let n = chunks.len().max(1);
                        for seq in 0..n {
                            let data = chunks.get(seq).map(|c| Bytes::copy_from_slice(c)).unwrap_or_default();
                            let chunk = SnapshotChunk {
                                meta: meta.clone(),
                                seq: seq as u32,
                                offset: (seq * 64) as u64,
                                last: seq + 1 == n,
                                data,
                            };
                            let term = self.nodes[&from].raft.term();
                            let msg = flotilla::raft::Message {
                                from,
                                to: m.to,
                                term,
                                body: MessageBody::SnapshotChunk(chunk),
                            };
                            if let Some(t) = self.nodes.get_mut(&m.to) {
                                t.raft.step(msg).unwrap();
                            }
                        }
                        self.nodes.get_mut(&from).unwrap().raft.report_snapshot(m.to, true);
                    }
                    _ => {
                        if let Some(t) = self.nodes.get_mut(&m.to) {
                            t.raft.step(m).unwrap();
                        }
                    }
                }
            }
        }
    }

    fn tick(&mut self, n: usize) {
        for _ in 0..n {
            for node in self.nodes.values_mut() {
                node.raft.tick();
            }
            self.settle();
        }
    }

    fn change(&mut self, cc: ConfChange) {
        let l = self.leader().unwrap();
        self.nodes.get_mut(&l).unwrap().raft.propose_conf_change(cc).unwrap();
        self.settle();
        self.tick(2);
    }
}

fn encode(kv: &BTreeMap<String, String>) -> Bytes {
    let s: Vec<String> = kv.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Bytes::from(s.join("\n"))
}

fn decode(b: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(b)
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

fn main() {
    println!("Flotilla cluster demo: 3 replicas of one Raft group, in memory");
    let mut c = Cluster::new(&[1, 2, 3]);
    c.tick(30);
    let l = c.leader().expect("a leader is elected");
    println!("- elected leader: replica {l} (term {})", c.nodes[&l].raft.term());

    let writes = 200_000u64;
    let t0 = Instant::now();
    for burst in 0..(writes / 1000) {
        let leader = c.nodes.get_mut(&l).unwrap();
        for i in 0..1000 {
            leader.raft.propose(Bytes::from(format!("key{}=value{}", i, burst))).unwrap();
        }
        c.settle();
    }
    let secs = t0.elapsed().as_secs_f64();
    println!("- wrote {writes} keys in bursts of 1000: {:.0} commits/s", writes as f64 / secs);
    let agree = c.nodes.values().all(|n| n.kv == c.nodes[&l].kv);
    println!("- every replica applied the same {} keys: {agree}", c.nodes[&l].kv.len());

    c.nodes.get_mut(&l).unwrap().raft.read_index(1).unwrap();
    c.settle();
    println!("- linearizable read of key7 at the leader: {:?}", c.nodes[&l].kv.get("key7"));

    let target = if l == 1 { 2 } else { 1 };
    c.nodes.get_mut(&l).unwrap().raft.transfer_leader(target).unwrap();
    c.settle();
    c.tick(3);
    println!("- transferred leadership {l} -> {}", c.leader().unwrap());

    // Compact every replica's log so a newcomer needs a snapshot.
    for n in c.nodes.values_mut() {
        let applied = n.raft.applied();
        let meta = n.raft.compact_to(applied).unwrap();
        let data = encode(&n.kv);
        n.raft.storage_mut().compact(&meta, data);
    }
    c.nodes.insert(4, Cluster::node(4, MemStorage::default()));
    c.change(ConfChange::single(ChangeKind::AddLearner, Replica::new(4, 4)));
    c.tick(5);
    println!(
        "- added replica 4 as a learner; it caught up from a snapshot: applied {} keys",
        c.nodes[&4].kv.len()
    );
    c.change(ConfChange::single(ChangeKind::AddVoter, Replica::new(4, 4)));
    let l = c.leader().unwrap();
    println!("- promoted replica 4: voters {:?}", ids(&c.nodes[&l].raft.conf().voters));
    let victim = [1, 2, 3].into_iter().find(|&i| i != l).unwrap();
    c.change(ConfChange::single(ChangeKind::Remove, Replica::new(victim, victim)));
    c.nodes.remove(&victim);
    c.tick(5);
    let l = c.leader().unwrap();
    println!("- removed replica {victim}: voters {:?}", ids(&c.nodes[&l].raft.conf().voters));
    c.nodes.get_mut(&l).unwrap().raft.propose(Bytes::from_static(b"after=change")).unwrap();
    c.settle();
    c.tick(3);
    let ok = c.nodes.values().all(|n| n.kv.get("after").map(String::as_str) == Some("change"));
    println!("- a write after the changes reached every replica: {ok}");
    println!("done");
}

fn ids(rs: &[Replica]) -> Vec<u64> {
    rs.iter().map(|r| r.id).collect()
}
