//! Shared harness for the Raft core's per-behaviour tests (`paper.rs`, `scenarios.rs`,
//! `outcomes.rs`, `removal.rs`, `quiescence.rs`): a small in-memory network of replicas over
//! [`MemStorage`], with helpers to persist a `Ready`, step one message and inspect what the
//! core emits, and to deliver, drop and isolate traffic. Every `Ready` goes through the
//! core's [`ReadyDriver`], as a runtime whose writes are durable at once.
//!
//! Replica `i` lives on node `i` unless a test says otherwise.
//! A replica added to a running group starts, like every replica of the group, from the
//! group's initial (genesis) configuration, and learns the rest from the log or a snapshot.

#![allow(clippy::unwrap_used, missing_docs, dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use flotilla_engine::raft::*;

/// Replica `id` on node `id`.
pub fn r(id: u64) -> Replica {
    Replica::new(id, id)
}

/// A configuration of the given voters (replica `i` on node `i`).
pub fn voters(ids: &[u64]) -> ConfState {
    ConfState::with_voters(ids.iter().map(|&i| r(i)))
}

/// A configuration of voters and learners.
pub fn voters_learners(v: &[u64], l: &[u64]) -> ConfState {
    let mut c = voters(v);
    c.learners = l.iter().map(|&i| r(i)).collect();
    c.max_replica_id = v.iter().chain(l).copied().max().unwrap_or(0);
    c
}

/// The configuration etcd's paper tests use: election timeout 10 (randomized in
/// [10, 20)), heartbeat 1, no PreVote, no CheckQuorum.
pub fn config(id: ReplicaId) -> Config {
    let mut c = Config::new(id);
    c.election_timeout_min_ticks = 10;
    c.election_timeout_max_ticks = 20;
    c.heartbeat_interval_ticks = 1;
    c.pre_vote = false;
    c.check_quorum = false;
    c.seed = 7;
    c
}

/// A replica over `storage`.
pub fn raft_with(cfg: Config, storage: MemStorage) -> Raft<MemStorage> {
    Raft::new(cfg.validate().unwrap(), storage).unwrap()
}

/// A fresh replica `id` of a group of `conf`, with [`config`] adjusted by `f`.
pub fn new_raft(id: ReplicaId, conf: ConfState, f: impl Fn(&mut Config)) -> Raft<MemStorage> {
    let mut c = config(id);
    f(&mut c);
    raft_with(c, MemStorage::new_with_conf(conf))
}

/// Storage that holds `entries` (given as terms, from index 1) and `hs`.
pub fn storage_with_log(conf: ConfState, terms: &[u64], hs: HardState) -> MemStorage {
    let mut s = MemStorage::new_with_conf(conf);
    s.append(&ents(1, terms));
    s.set_hard_state(hs);
    s
}

/// Entries starting at `first` with the given terms (payload: the index as data).
pub fn ents(first: u64, terms: &[u64]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(i, &term)| {
            let index = first + i as u64;
            Entry { term, index, payload: EntryPayload::Normal(Bytes::from(index.to_le_bytes().to_vec())) }
        })
        .collect()
}

/// A hard state.
pub fn hs(term: u64, vote: ReplicaId, commit: u64) -> HardState {
    HardState { term, vote, commit }
}

/// A message.
pub fn msg(from: ReplicaId, to: ReplicaId, term: u64, body: MessageBody) -> Message {
    Message { from, to, term, body }
}

/// An Append message.
pub fn append(
    from: ReplicaId,
    to: ReplicaId,
    term: u64,
    prev: (u64, u64),
    entries: Vec<Entry>,
    commit: u64,
) -> Message {
    msg(from, to, term, MessageBody::Append { prev_index: prev.0, prev_term: prev.1, entries, commit })
}

/// An accepting AppendResponse.
pub fn append_ok(from: ReplicaId, to: ReplicaId, term: u64, index: u64) -> Message {
    msg(from, to, term, MessageBody::AppendResponse { index, reject: false, reject_hint: 0, hint_term: 0 })
}

/// A vote (or pre-vote) request.
pub fn vote_req(from: ReplicaId, to: ReplicaId, term: u64, last: (u64, u64), pre_vote: bool) -> Message {
    msg(
        from,
        to,
        term,
        MessageBody::RequestVote {
            pre_vote,
            last_index: last.0,
            last_term: last.1,
            transfer: false,
            commit: 0,
            commit_term: 0,
        },
    )
}

/// A vote (or pre-vote) answer.
pub fn vote_resp(from: ReplicaId, to: ReplicaId, term: u64, pre_vote: bool, reject: bool) -> Message {
    msg(from, to, term, MessageBody::RequestVoteResponse { pre_vote, reject, commit: 0, commit_term: 0 })
}

/// A 16-byte proposal payload.
pub fn data(tag: u8) -> Bytes {
    Bytes::from(vec![tag; 16])
}

/// The kinds of `msgs`, in order.
pub fn kinds(msgs: &[Message]) -> Vec<&'static str> {
    msgs.iter().map(|m| m.body.kind()).collect()
}

/// The messages of kind `kind`.
pub fn of_kind<'a>(msgs: &'a [Message], kind: &str) -> Vec<&'a Message> {
    msgs.iter().filter(|m| m.body.kind() == kind).collect()
}

/// The messages to `to`.
pub fn to(msgs: &[Message], to: ReplicaId) -> Vec<&Message> {
    msgs.iter().filter(|m| m.to == to).collect()
}

/// What a replica emitted over one or more `Ready`s.
#[derive(Debug, Default)]
pub struct Out {
    /// `Ready::messages` (sent before the write).
    pub messages: Vec<Message>,
    /// `Ready::persisted_messages` (sent after the write).
    pub persisted_messages: Vec<Message>,
    /// Hard states handed out, in order.
    pub hard_states: Vec<HardState>,
    /// Entries handed out for persisting.
    pub entries: Vec<Entry>,
    /// Entries handed out for apply.
    pub committed: Vec<Entry>,
    /// Snapshots handed out for install.
    pub snapshots: Vec<Snapshot>,
    /// Reads released.
    pub read_states: Vec<ReadState>,
    /// How many Readys were taken.
    pub readys: usize,
}

impl Out {
    /// Every message, immediate ones first.
    pub fn all(&self) -> Vec<Message> {
        self.messages.iter().chain(&self.persisted_messages).cloned().collect()
    }
}

/// Makes the snapshot, entries and hard state of `rd` durable in the replica's storage,
/// then tells the core (`on_persisted`): the [`ReadyDriver`]'s persist and advance steps
/// for a `Ready` the test took itself.
pub fn persist(raft: &mut Raft<MemStorage>, rd: &Ready) {
    let write = Ready {
        hard_state: rd.hard_state,
        entries: rd.entries.clone(),
        snapshot: rd.snapshot.clone(),
        ..Ready::default()
    };
    ReadyDriver::new(write).take_write().persist_now(raft);
}

/// Processes one Ready of `raft` through the [`ReadyDriver`] as a runtime whose writes
/// are durable at once: send, persist and advance, apply and advance. Records what it
/// handed out in `out`; returns false when `raft` had no Ready.
pub fn process_one(raft: &mut Raft<MemStorage>, out: &mut Out) -> bool {
    let Some(mut d) = ReadyDriver::next(raft) else { return false };
    out.readys += 1;
    out.messages.extend(d.take_messages());
    let write = d.take_write();
    out.hard_states.extend(write.hard_state());
    out.entries.extend_from_slice(write.entries());
    out.snapshots.extend(write.snapshot().cloned());
    out.persisted_messages.extend(write.persist_now(raft));
    let committed = d.take_committed();
    ReadyDriver::applied(raft, &committed);
    out.committed.extend(committed);
    out.read_states.extend(d.take_read_states());
    true
}

/// Takes every Ready of `raft`, persisting and applying each at once; returns what it
/// emitted (messages are not delivered anywhere).
pub fn drain(raft: &mut Raft<MemStorage>) -> Out {
    let mut out = Out::default();
    for _ in 0..1000 {
        if !process_one(raft, &mut out) {
            return out;
        }
    }
    panic!("replica {} never ran out of Readys", raft.id());
}

/// Takes one Ready without persisting or applying anything.
pub fn ready_raw(raft: &mut Raft<MemStorage>) -> Ready {
    raft.ready()
}

/// Steps `m` into `raft`, then drains it (see [`drain`]).
pub fn step_drain(raft: &mut Raft<MemStorage>, m: Message) -> Out {
    raft.step(m).unwrap();
    drain(raft)
}

/// Ticks `raft` until it leaves the Follower role (at most 100 ticks).
pub fn tick_until_campaign(raft: &mut Raft<MemStorage>) {
    for _ in 0..100 {
        raft.tick();
        if raft.role() != Role::Follower {
            return;
        }
    }
    panic!("replica {} never campaigned", raft.id());
}

/// Makes `raft` leader without a network: it times out, then every other voter grants its
/// (pre-)vote. Returns what it emitted as leader (its first appends).
pub fn elect_alone(raft: &mut Raft<MemStorage>) -> Out {
    tick_until_campaign(raft);
    drain(raft);
    let others: Vec<ReplicaId> = {
        let c = raft.conf();
        c.voters.iter().chain(&c.voters_outgoing).map(|x| x.id).filter(|&i| i != raft.id()).collect()
    };
    if raft.role() == Role::PreCandidate {
        let term = raft.term() + 1;
        for &o in &others {
            raft.step(vote_resp(o, raft.id(), term, true, false)).unwrap();
        }
        drain(raft);
    }
    if raft.role() == Role::Candidate {
        let term = raft.term();
        for &o in &others {
            raft.step(vote_resp(o, raft.id(), term, false, false)).unwrap();
        }
    }
    assert_eq!(raft.role(), Role::Leader, "replica {} did not win", raft.id());
    drain(raft)
}

/// A filter that drops the messages for which it returns true.
pub type DropFn = Box<dyn Fn(&Message) -> bool>;

/// One replica of a [`Network`] and what it applied.
pub struct Node {
    pub raft: Raft<MemStorage>,
    /// Entries applied, in order (snapshots reset nothing here; see `snapshots`).
    pub applied: Vec<Entry>,
    /// Snapshots installed.
    pub snapshots: Vec<Snapshot>,
    /// Reads released.
    pub read_states: Vec<ReadState>,
}

/// An in-memory network of replicas. Every Ready's write is durable at once; messages are
/// queued and delivered by [`Network::deliver`] / [`Network::settle`], except on cut links
/// and to or from isolated replicas, and except those `drop_if` rejects.
pub struct Network {
    pub nodes: BTreeMap<ReplicaId, Node>,
    pub queue: VecDeque<Message>,
    /// Directed links that lose every message.
    pub cut: BTreeSet<(ReplicaId, ReplicaId)>,
    /// Replicas cut off from everyone.
    pub isolated: BTreeSet<ReplicaId>,
    /// Drops every message for which it returns true.
    pub drop_if: Option<DropFn>,
    /// Chunk size used to stream snapshots.
    pub chunk_size: usize,
    /// Every message routed (delivered or dropped), for inspection.
    pub log: Vec<Message>,
    /// The clock given to every replica (`Raft::set_now`): advanced by one default tick
    /// (`Config::tick_nanos`) per [`Network::tick_all`].
    pub now: u64,
}

/// The default `Config::tick_nanos`: the clock step of one [`Network::tick_all`].
pub const TICK_NANOS: u64 = 10_000_000;

impl Network {
    /// A group of voters `ids` (all fresh), each configured by [`config`] then `f`.
    pub fn new(ids: &[u64], f: impl Fn(&mut Config)) -> Self {
        Self::with_conf(ids, voters(ids), f)
    }

    /// Fresh replicas `ids` whose initial configuration is `conf`.
    pub fn with_conf(ids: &[u64], conf: ConfState, f: impl Fn(&mut Config)) -> Self {
        let mut net = Network::empty();
        for &id in ids {
            net.add(new_raft(id, conf.clone(), &f));
        }
        net
    }

    /// A network with no replica.
    pub fn empty() -> Self {
        Network {
            nodes: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            isolated: BTreeSet::new(),
            drop_if: None,
            chunk_size: 4,
            log: Vec::new(),
            now: TICK_NANOS,
        }
    }

    /// Adds (or replaces) a replica.
    pub fn add(&mut self, mut raft: Raft<MemStorage>) {
        raft.set_now(self.now);
        let id = raft.id();
        self.nodes
            .insert(id, Node { raft, applied: Vec::new(), snapshots: Vec::new(), read_states: Vec::new() });
    }

    pub fn raft(&self, id: ReplicaId) -> &Raft<MemStorage> {
        &self.nodes[&id].raft
    }

    pub fn raft_mut(&mut self, id: ReplicaId) -> &mut Raft<MemStorage> {
        &mut self.nodes.get_mut(&id).unwrap().raft
    }

    pub fn node(&self, id: ReplicaId) -> &Node {
        &self.nodes[&id]
    }

    /// Takes every Ready of replica `id` (persisting and applying), queues its messages
    /// and returns what it emitted.
    pub fn process(&mut self, id: ReplicaId) -> Out {
        let node = self.nodes.get_mut(&id).unwrap();
        let mut out = Out::default();
        for _ in 0..1000 {
            let (snapshots, committed, reads) =
                (out.snapshots.len(), out.committed.len(), out.read_states.len());
            if !process_one(&mut node.raft, &mut out) {
                break;
            }
            node.snapshots.extend_from_slice(&out.snapshots[snapshots..]);
            node.applied.extend_from_slice(&out.committed[committed..]);
            node.read_states.extend_from_slice(&out.read_states[reads..]);
        }
        for m in out.all() {
            self.route(m);
        }
        out
    }

    /// Whether a message from `from` to `to` would get through.
    pub fn link_up(&self, from: ReplicaId, to: ReplicaId) -> bool {
        !self.isolated.contains(&from) && !self.isolated.contains(&to) && !self.cut.contains(&(from, to))
    }

    /// Queues `m`, unless the network drops it. A `SendSnapshot` instruction is carried out
    /// here: the sender's stored snapshot is streamed as chunks and the outcome reported.
    pub fn route(&mut self, m: Message) {
        self.log.push(m.clone());
        let dropped = !self.link_up(m.from, m.to) || self.drop_if.as_ref().is_some_and(|f| f(&m));
        if let MessageBody::SendSnapshot { meta } = &m.body {
            let sender = self.raft_mut(m.from);
            if dropped {
                sender.report_snapshot(m.to, false);
                return;
            }
            let snap = sender.storage().snapshot();
            assert_eq!(&snap.meta, meta, "SendSnapshot must describe the stored snapshot");
            let chunks = chunk_snapshot(&snap, self.chunk_size);
            let term = m.term;
            for c in chunks {
                self.queue.push_back(msg(m.from, m.to, term, MessageBody::SnapshotChunk(c)));
            }
            self.raft_mut(m.from).report_snapshot(m.to, true);
            return;
        }
        if !dropped {
            self.queue.push_back(m);
        }
    }

    /// Queues messages (see [`Network::route`]).
    pub fn send(&mut self, msgs: impl IntoIterator<Item = Message>) {
        for m in msgs {
            self.route(m);
        }
    }

    /// Delivers every queued message once (messages they cause stay queued for later).
    /// Returns how many were delivered.
    pub fn deliver(&mut self) -> usize {
        let batch: Vec<Message> = self.queue.drain(..).collect();
        let n = batch.len();
        for m in batch {
            if let Some(node) = self.nodes.get_mut(&m.to) {
                node.raft.step(m).unwrap();
            }
        }
        n
    }

    /// Processes every replica and delivers every message until nothing moves.
    pub fn settle(&mut self) {
        for _ in 0..10_000 {
            let ids: Vec<ReplicaId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.process(id);
            }
            if self.queue.is_empty() {
                return;
            }
            self.deliver();
        }
        panic!("network did not settle");
    }

    /// Ticks replica `id` once and settles.
    pub fn tick(&mut self, id: ReplicaId) {
        self.raft_mut(id).tick();
        self.settle();
    }

    /// Ticks every replica once and settles.
    pub fn tick_all(&mut self) {
        self.now += TICK_NANOS;
        let now = self.now;
        let ids: Vec<ReplicaId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.raft_mut(id).set_now(now);
            self.raft_mut(id).tick();
        }
        self.settle();
    }

    /// Ticks every replica `n` times (settling after each round).
    pub fn tick_all_n(&mut self, n: usize) {
        for _ in 0..n {
            self.tick_all();
        }
    }

    /// Ticks replica `id` alone until it campaigns, then settles.
    pub fn campaign(&mut self, id: ReplicaId) {
        self.settle();
        tick_until_campaign(self.raft_mut(id));
        self.settle();
    }

    /// [`Network::campaign`] and asserts that `id` won.
    pub fn elect(&mut self, id: ReplicaId) {
        self.campaign(id);
        assert_eq!(self.raft(id).role(), Role::Leader, "replica {id} did not win: {:?}", self.raft(id));
    }

    /// Proposes `d` at `id` and settles.
    pub fn propose(&mut self, id: ReplicaId, d: Bytes) -> (u64, u64) {
        let r = self.raft_mut(id).propose(d).unwrap();
        self.settle();
        r
    }

    /// Proposes a membership change at `id` and settles.
    pub fn propose_cc(&mut self, id: ReplicaId, cc: ConfChange) -> (u64, u64) {
        let r = self.raft_mut(id).propose_conf_change(cc).unwrap();
        self.settle();
        r
    }

    /// Compacts replica `id`'s log to `index` (applied) and stores a snapshot there.
    pub fn compact(&mut self, id: ReplicaId, index: u64) -> SnapshotMeta {
        let raft = self.raft_mut(id);
        let meta = raft.compact_to(index).unwrap();
        let payload = Bytes::from(format!("state-machine-at-{index}"));
        raft.storage_mut().compact(&meta, payload);
        meta
    }

    /// Cuts replica `id` off from everyone and drops what is queued to or from it.
    pub fn isolate(&mut self, id: ReplicaId) {
        self.isolated.insert(id);
        self.queue.retain(|m| m.from != id && m.to != id);
    }

    /// Reconnects everything.
    pub fn heal(&mut self) {
        self.isolated.clear();
        self.cut.clear();
        self.drop_if = None;
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut_both(&mut self, a: ReplicaId, b: ReplicaId) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    /// The replica that is leader, asserting there is exactly one among the non-isolated.
    pub fn leader(&self) -> ReplicaId {
        let leaders: Vec<ReplicaId> = self
            .nodes
            .iter()
            .filter(|(id, n)| !self.isolated.contains(id) && n.raft.role() == Role::Leader)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(leaders.len(), 1, "leaders: {leaders:?}");
        leaders[0]
    }

    /// Data payloads applied by `id`, in order.
    pub fn applied_data(&self, id: ReplicaId) -> Vec<Bytes> {
        self.node(id)
            .applied
            .iter()
            .filter_map(|e| match &e.payload {
                EntryPayload::Normal(d) => Some(d.clone()),
                _ => None,
            })
            .collect()
    }

    /// Messages routed so far of kind `kind`.
    pub fn logged(&self, kind: &str) -> Vec<&Message> {
        of_kind(&self.log, kind)
    }
}

/// Splits a snapshot into chunks of `size` bytes (at least one chunk).
pub fn chunk_snapshot(snap: &Snapshot, size: usize) -> Vec<SnapshotChunk> {
    let parts: Vec<Bytes> = if snap.data.is_empty() {
        vec![Bytes::new()]
    } else {
        (0..snap.data.len())
            .step_by(size)
            .map(|i| snap.data.slice(i..(i + size).min(snap.data.len())))
            .collect()
    };
    let n = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, data)| SnapshotChunk {
            meta: snap.meta.clone(),
            seq: i as u32,
            offset: (i * size) as u64,
            last: i + 1 == n,
            data,
        })
        .collect()
}
