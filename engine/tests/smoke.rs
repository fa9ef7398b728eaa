#![allow(clippy::unwrap_used, missing_docs)]
//! Smoke test: a 3-replica group elects a leader and commits proposals when every write
//! becomes durable at once and every message is delivered.

use bytes::Bytes;
use flotilla_engine::raft::*;

struct Node {
    raft: Raft<MemStorage>,
    applied: Vec<Entry>,
}

fn node(i: u64, storage: MemStorage) -> Node {
    let mut c = Config::new(i);
    c.seed = 42;
    Node { raft: Raft::new(c.validate().unwrap(), storage).unwrap(), applied: vec![] }
}

fn cluster(n: u64) -> Vec<Node> {
    let conf = ConfState::with_voters((1..=n).map(|i| Replica::new(i, i)));
    (1..=n).map(|i| node(i, MemStorage::new_with_conf(conf.clone()))).collect()
}

fn tick_all(nodes: &mut [Node], n: usize) {
    for _ in 0..n {
        for node in nodes.iter_mut() {
            node.raft.tick();
        }
        settle(nodes);
    }
}

/// A group bootstrapped through its log: a replica that joins later with an empty log and
/// an empty configuration derives the same configuration as the founders by replaying the
/// log from index 1 (no snapshot involved).
#[test]
fn joiner_learns_configuration_from_bootstrap_entry() {
    let conf = ConfState::with_voters([Replica::new(1, 1)]);
    let mut nodes = vec![node(1, MemStorage::bootstrap(&conf))];
    tick_all(&mut nodes, 30);
    assert_eq!(nodes[0].raft.role(), Role::Leader);
    assert_eq!(nodes[0].raft.conf().voters, conf.voters);
    nodes.push(node(2, MemStorage::default()));
    nodes[0].raft.propose_conf_change(ConfChange::single(ChangeKind::AddVoter, Replica::new(2, 2))).unwrap();
    tick_all(&mut nodes, 5);
    let want = vec![Replica::new(1, 1), Replica::new(2, 2)];
    assert_eq!(nodes[0].raft.conf().voters, want);
    assert_eq!(nodes[1].raft.conf().voters, want, "the joiner replayed the bootstrap entry");
    assert_eq!(nodes[1].raft.applied(), nodes[0].raft.applied());
    assert_eq!(nodes[1].raft.snapshot_meta().index, 0, "no snapshot was needed");
}

/// Processes every Ready until quiet, delivering all messages.
fn settle(nodes: &mut [Node]) {
    for _ in 0..1000 {
        let mut inflight = Vec::new();
        for n in nodes.iter_mut() {
            while let Some(mut d) = ReadyDriver::next(&mut n.raft) {
                inflight.extend(d.take_messages());
                inflight.extend(d.take_write().persist_now(&mut n.raft));
                let committed = d.take_committed();
                ReadyDriver::applied(&mut n.raft, &committed);
                n.applied.extend(committed);
            }
        }
        if inflight.is_empty() {
            return;
        }
        for m in inflight {
            let to = m.to as usize - 1;
            nodes[to].raft.step(m).unwrap();
        }
    }
    panic!("did not settle");
}

#[test]
fn elects_and_commits() {
    let mut nodes = cluster(3);
    for _ in 0..50 {
        for n in nodes.iter_mut() {
            n.raft.tick();
        }
        settle(&mut nodes);
    }
    let leaders: Vec<_> = nodes.iter().filter(|n| n.raft.role() == Role::Leader).collect();
    assert_eq!(leaders.len(), 1);
    let l = nodes.iter().position(|n| n.raft.role() == Role::Leader).unwrap();
    for i in 0..10u8 {
        nodes[l].raft.propose(Bytes::from(vec![i])).unwrap();
    }
    settle(&mut nodes);
    for _ in 0..5 {
        for n in nodes.iter_mut() {
            n.raft.tick();
        }
        settle(&mut nodes);
    }
    for n in &nodes {
        assert_eq!(n.applied.len(), 11, "node {} applied {:?}", n.raft.id(), n.raft.status());
    }
}
