//! One worker thread and the groups it owns outright, and recovery of groups at open.
//!
//! Owns the ready loop: drain the mailbox (messages, proposals, admin), tick, step the
//! groups touched, collect their `Ready`s, send their `messages` at once, hand ONE WAL
//! write batch for all of them to the WAL without waiting for it, hand committed entries
//! and their waiters to the worker's apply thread (`apply`, which completes proposals as
//! it applies them), and take its reports (applied index, membership waiters, effects);
//! once a batch is durable (its ticket resolves, in submission order), call
//! `on_persisted` and send the `persisted_messages`. The worker waits on its mailbox, the
//! apply thread's answers, the oldest ticket and its tick deadline together, so it never
//! sits on an fsync or a slow state machine while other groups have work. Never touches
//! another worker's groups, and never calls a state machine (the apply thread owns them).
//!
//! Waiters live in `waiters::Waiters` (keyed by the (index, term) their entry got; the
//! rules of `Ok`, `Dropped` and `Indeterminate` are there): the worker reports to them
//! what committed, snapshots installed, its ticks (`propose_timeout_ticks`), and the
//! replica's destruction, a storage failure or shutdown; read barriers likewise wait in
//! `waiters::ReadWaiters`.
//!
//! Quiescence: a group whose Raft replica quiesced leaves the worker's `active` set, so
//! ticks never visit it (idle CPU does not grow with the number of groups). The wall ticks
//! it missed are credited lazily (`Raft::advance_idle`) before its next input; they count
//! as silence from the leader only when node liveness wakes the group. Node
//! liveness (a peer down, or back with a new incarnation) queues the quiesced groups led
//! there (and, for a restarted node, those led here with a replica there) for waking, at
//! most `EngineConfig::max_wakes_per_tick` per tick.
//!
//! Replica lifecycle: a replica that applies its own removal is destroyed (durable
//! tombstone). A member that receives a message from a replica its applied configuration
//! removed answers with a `WireItem::Tombstone` (TiKV's stale-peer GC); the receiver
//! destroys itself only if the tombstone names its exact replica id and a configuration
//! newer than its own, so a replica cut off during its removal is destroyed once healed;
//! one that sends nothing (quiesced, or a learner) is found by the stale-peer check (`gc`).
//!
//! Backpressure: `propose` answers `Busy` past the group's unapplied bytes, the worker's
//! pending proposals, its apply backlog (entries handed to the apply thread and not
//! reported applied) or its pending WAL bytes (submitted, not durable).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{unbounded, Receiver, Select, Sender, TryRecvError, TrySendError};
use flotilla_wal::{Ticket, WriteBatch};

use super::apply::{Applied, ApplyCmd, ApplyDone};
use super::apply_hold::ApplyHold;
use super::clock;
use super::gc;
use super::incarnation::ReadCtx;
use super::removal::{Next as RemovalNext, Removal};
use super::snapfile;
use super::store::{entry_bytes, wal_hs, GroupMeta, WalStore};
use super::waiters::{Done, ReadWaiters, Tally, Waiters};
use super::{bump, Cmd, Completer, NetCmd, Shared};
use crate::api::{
    BusyReason, CreateGroupError, Effect, GroupStatus, MembershipChange, MembershipError, OpenError,
    PeerStatus, ProposeError, ReadError, StateMachine, TransferError,
};
use crate::raft::conf::{ChangeKind, ConfChange, ConfState, SingleChange, Transition};
use crate::raft::error::{ProposeError as CoreProposeError, TransferError as CoreTransferError};
use crate::raft::message::{Entry, EntryPayload, HardState, Message, MessageBody, SnapshotMeta};
use crate::raft::types::{NodeId, Replica, ReplicaId, Role};
use crate::raft::Raft;
use crate::transport::{Outbox, SnapshotChunks, WireItem};

/// Commands taken from the mailbox per loop turn (then the turn's work is done).
const MAX_CMDS_PER_TURN: usize = 4096;
/// `ready()` rounds per group per turn; a group with more work is carried to the next turn.
const READY_ROUNDS: usize = 4;
/// Bytes of state-machine data per snapshot chunk.
const SNAPSHOT_CHUNK: usize = 256 << 10;
/// Replicas a worker creates from leaders' messages per tick; further messages for unknown
/// groups are dropped until the next tick (the leader retries).
const MAX_CREATES_PER_TICK: u32 = 64;
/// Groups one worker snapshots per check because they pin old WAL segments.
const MAX_FORCED_COMPACTIONS: usize = 64;
/// Source of `Group::epoch`.
static EPOCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
/// How long a worker keeps retrying (once a turn, never blocking) to hand another worker
/// a group created by an effect while that worker's mailbox is full.
const EFFECT_SEND_WAIT: Duration = Duration::from_secs(5);
/// How long shutdown waits for the writes in flight.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// One replica owned by this worker.
pub(crate) struct Group {
    id: u64,
    raft: Raft<WalStore>,
    /// Bytes (`Entry::size`) of entries handed to apply since the last compaction: with
    /// `compact_bytes`, the size threshold of the compaction policy.
    log_bytes: u64,
    /// Nodes of replicas learnt from received messages (for replicas not in the applied
    /// configuration yet, e.g. while a new replica has not applied the founding entry).
    peers: Vec<(ReplicaId, NodeId)>,
    waiters: Waiters<Done>,
    reads: ReadWaiters<Completer<Result<u64, ReadError>>>,
    touched: bool,
    /// The group's metadata record must be (re)written with the next batch.
    meta_dirty: bool,
    /// The worker tick up to which idle (quiesced) ticks were credited to `raft`.
    idle_since: u64,
    /// Counted in the engine's quiesced-groups gauge.
    quiesced_counted: bool,
    /// The designated first leader of a new group: campaign once the founding
    /// configuration is applied.
    first_campaign: bool,
    /// A snapshot of the state machine was asked of the apply thread and not answered.
    snapshotting: bool,
    /// This replica instance, unique in the process: answers of the apply thread for a
    /// destroyed replica of the same group are recognised and ignored.
    epoch: u64,
    /// Raft counters already reported (campaigns, leaderships, transfers started,
    /// transfers aborted, membership changes applied): the worker reports the difference
    /// as metrics and events.
    seen: [u32; 5],
    /// A voter removal between its two steps (demote, then remove the learner).
    removal: Option<Removal>,
}

impl Group {
    fn node_of(&self, replica: ReplicaId) -> Option<NodeId> {
        self.raft
            .conf()
            .find(replica)
            .map(|r| r.node)
            .or_else(|| self.peers.iter().find(|(r, _)| *r == replica).map(|(_, n)| *n))
    }

    fn learn_peer(&mut self, replica: ReplicaId, node: NodeId) {
        if self.raft.conf().contains(replica) {
            return;
        }
        if let Some(p) = self.peers.iter_mut().find(|(r, _)| *r == replica) {
            p.1 = node;
        } else {
            if self.peers.len() >= 16 {
                self.peers.remove(0);
            }
            self.peers.push((replica, node));
        }
    }

    fn leader_node(&self) -> Option<NodeId> {
        self.raft.leader_hint().map(|r| r.node)
    }

    fn meta(&self) -> GroupMeta {
        GroupMeta::Live { replica: self.raft.id(), snapshot: self.raft.storage().snap.clone() }
    }

    fn status(&self) -> GroupStatus {
        let s = self.raft.status();
        let last = s.last_index;
        let conf = &s.conf;
        GroupStatus {
            group: self.id,
            replica: s.id,
            role: s.role,
            term: s.term,
            leader: self.raft.leader_hint(),
            commit: s.commit,
            applied: s.applied,
            last_index: last,
            peers: s
                .followers
                .iter()
                .filter_map(|f| {
                    conf.find(f.id).map(|replica| PeerStatus {
                        replica,
                        matched: f.matched,
                        lag: last.saturating_sub(f.matched),
                    })
                })
                .collect(),
            members: s.conf,
        }
    }

    /// This replica can no longer learn outcomes: every waiter completes `Indeterminate`,
    /// every read fails with `read`.
    fn fail_all(&mut self, tally: &mut Tally, read: impl Fn() -> ReadError) {
        self.waiters.fail_all(tally);
        self.reads.fail_all(read);
    }
}

/// Groups recovered at open, to be handed to their workers.
pub(crate) struct Recovered {
    /// Groups boxed as they will live in the worker's map (moved there without copying).
    groups: Vec<(Box<Group>, Box<dyn StateMachine>)>,
    tombstones: HashMap<u64, ReplicaId>,
}

impl Recovered {
    /// The groups and tombstones of worker `i` of `n`.
    pub(crate) fn take_for(&mut self, i: usize, n: usize) -> Recovered {
        let (mine, rest): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.groups).into_iter().partition(|(g, _)| super::route(g.id, n) == i);
        self.groups = rest;
        let tombstones = self
            .tombstones
            .iter()
            .filter(|(g, _)| super::route(**g, n) == i)
            .map(|(g, r)| (*g, *r))
            .collect();
        Recovered { groups: mine, tombstones }
    }
}

fn seed(sh: &Shared, group: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    sh.node.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ group.rotate_left(17) ^ t
}

fn new_group(
    sh: &Shared,
    group: u64,
    replica: ReplicaId,
    snap: SnapshotMeta,
    sm_applied: u64,
) -> Result<Box<Group>, String> {
    let applied = sm_applied.max(snap.index);
    let cfg = sh.cfg.raft_for(replica, applied, seed(sh, group)).map_err(|e| e.to_string())?;
    let store = WalStore::new(sh.wal.clone(), group, snap);
    let raft = Raft::new(cfg, store).map_err(|e| e.to_string())?;
    let mut g = Box::new(Group {
        id: group,
        raft,
        peers: Vec::new(),
        waiters: Waiters::new(),
        reads: ReadWaiters::new(),
        touched: true,
        meta_dirty: false,
        idle_since: 0,
        quiesced_counted: false,
        first_campaign: false,
        snapshotting: false,
        log_bytes: 0,
        epoch: EPOCH.fetch_add(1, Ordering::Relaxed),
        seen: [0; 5],
        removal: None,
    });
    g.seen = raft_counts(&g.raft);
    Ok(g)
}

/// Recovers every group in the WAL: its metadata, its state machine (restored from the
/// snapshot file when it is behind the compaction point) and its Raft state.
pub(crate) fn recover(sh: &Arc<Shared>) -> Result<Recovered, OpenError> {
    let mut out = Recovered { groups: Vec::new(), tombstones: HashMap::new() };
    for group in sh.wal.groups() {
        let err = |reason: String| OpenError::Recovery { group, reason };
        let Some(meta) = sh.wal.meta(group).map_err(|e| err(e.to_string()))? else {
            // Records without metadata: a group whose creation never completed.
            continue;
        };
        match GroupMeta::decode(&meta).map_err(err)? {
            GroupMeta::Tombstone { replica } => {
                out.tombstones.insert(group, replica);
            }
            GroupMeta::Live { replica, snapshot } => {
                let mut sm = (sh.factory)(group);
                if snapshot.index > 0 && sm.applied_index() < snapshot.index {
                    let (_, mut data) = snapfile::open(&sh.snap_dir, group, replica, snapshot.index)
                        .map_err(|e| err(format!("snapshot file at {}: {e}", snapshot.index)))?;
                    sm.restore(snapshot.index, snapshot.term, &mut data)
                        .map_err(|e| err(format!("restore: {e}")))?;
                }
                snapfile::prune(&sh.snap_dir, group, |r, i| (r, i) != (replica, snapshot.index));
                // Applied entries were durable in the log first (a snapshot's reset before
                // its restore): a state machine past the log's end ran ahead of the WAL,
                // and clamping its index would take the stale log tail as committed.
                let last = match sh.wal.last_index(group) {
                    Ok(l) => l.max(snapshot.index),
                    Err(flotilla_wal::ReadError::GroupNotFound(_)) => snapshot.index,
                    Err(e) => return Err(err(e.to_string())),
                };
                let applied = sm.applied_index();
                if applied > last {
                    return Err(OpenError::AppliedPastLog { group, applied, last });
                }
                let g = new_group(sh, group, replica, snapshot, applied).map_err(err)?;
                out.groups.push((g, sm));
            }
        }
    }
    log::info!("flotilla: node {} recovered {} groups", sh.node, out.groups.len());
    Ok(out)
}

/// What one group waits for from a write: the last entry written (for `on_persisted`)
/// and the messages to send once it is durable.
type AfterWrite = (u64, Option<(u64, u64)>, Vec<Message>);

/// A write in flight and what waits for it.
struct Inflight {
    ticket: Option<Ticket>,
    /// Snapshot files superseded by metadata in this write: (group, replica, files below
    /// this index).
    prune: Vec<(u64, ReplicaId, u64)>,
    /// Per group: the last entry written (for `on_persisted`) and messages to send after.
    after: Vec<AfterWrite>,
    /// Encoded bytes of the batch.
    bytes: u64,
    /// Founding replicas this write creates: they start once it is durable.
    creates: Vec<PendingCreate>,
    /// The write's sequence number (see `Worker::next_write`).
    seq: u64,
}

struct PendingCreate {
    first_leader: Option<bool>,
    group: u64,
    replica: ReplicaId,
    conf: ConfState,
    sm: Box<dyn StateMachine>,
    done: Completer<Result<(), CreateGroupError>>,
}

/// One worker: its groups, mailbox, outbox and writes in flight.
pub(crate) struct Worker {
    idx: usize,
    sh: Arc<Shared>,
    rx: Receiver<Cmd>,
    /// Boxed: a map slot is a pointer, so the map's spare capacity costs 8 bytes a slot,
    /// not a whole replica, and moving a group out and back per turn copies no state.
    groups: HashMap<u64, Box<Group>>,
    tombstones: HashMap<u64, ReplicaId>,
    /// Tombstone records written and not yet durable: group -> the sequence number of the
    /// write that carries it (see `next_write`). A tombstone is confirmed to a leader
    /// (`WireItem::TombstoneAck`) only once durable.
    tombstones_unsynced: HashMap<u64, u64>,
    /// Removal records confirmed by the removed replicas' nodes, to forget (proposed as
    /// `ChangeKind::Forget` on the next tick by the groups led here).
    forget: HashMap<u64, Vec<Replica>>,
    /// Groups whose tombstone record is in `batch` (not yet submitted): they join
    /// `tombstones_unsynced` with the sequence number `submit` gives that write.
    tombstones_in_batch: Vec<u64>,
    touched: Vec<u64>,
    outbox: Outbox,
    inflight: VecDeque<Inflight>,
    creates: Vec<PendingCreate>,
    /// Removals of groups whose founding write is in flight: done once it is durable.
    removes: Vec<(u64, Completer<Result<(), ProposeError>>)>,
    /// Groups created by effects for another worker whose mailbox was full: (worker,
    /// group, command, deadline), retried each turn until the deadline, never waited for.
    effect_creates: VecDeque<(usize, u64, Cmd, Instant)>,
    /// Read contexts: unique across restarts (the node's incarnation in the high bits).
    read_ctx: ReadCtx,
    ticks: u64,
    /// Waiters across all groups.
    tally: Tally,
    failed: bool,
    stopping: bool,
    batch: WriteBatch,
    after: Vec<AfterWrite>,
    prune: Vec<(u64, ReplicaId, u64)>,
    batch_groups: u64,
    /// Replicas created from messages since the last tick (rate limit).
    created_this_tick: u32,
    /// Groups ticked: every group that is not quiesced (or has reads to time out).
    active: HashSet<u64>,
    /// Quiesced groups to wake (node liveness), a bounded number per tick.
    wake_queue: VecDeque<u64>,
    /// Groups with a voter removal between its two steps (`Group::removal`).
    removing: Vec<u64>,
    /// The apply thread's queue (`None` once shut down) and its answers.
    apply_tx: Option<Sender<ApplyCmd>>,
    apply_rx: Receiver<ApplyDone>,
    apply_thread: Option<std::thread::JoinHandle<()>>,
    /// Entries handed to the apply thread and not yet reported applied.
    apply_backlog: u64,
    /// Bytes of WAL batches submitted and not yet durable.
    wal_pending: u64,
    /// Sequence number of the next write submitted.
    next_write: u64,
    /// Apply commands held until a snapshot's log reset is durable.
    apply_hold: ApplyHold,
}

impl Worker {
    pub(crate) fn new(
        idx: usize,
        sh: Arc<Shared>,
        rx: Receiver<Cmd>,
        rec: Recovered,
    ) -> std::io::Result<Worker> {
        let hb = sh.cfg.raft_for(1, 0, 0).map(|c| c.heartbeat_interval_ticks).unwrap_or(2);
        let (apply_tx, apply_cmds) = unbounded();
        let (apply_done, apply_rx) = unbounded();
        let apply_thread = std::thread::Builder::new().name(format!("flotilla-apply-{idx}")).spawn({
            let dir = sh.snap_dir.clone();
            move || super::apply::run(apply_cmds, apply_done, dir)
        })?;
        let mut groups = HashMap::with_capacity(rec.groups.len());
        let mut touched = Vec::with_capacity(rec.groups.len());
        for (g, sm) in rec.groups {
            touched.push(g.id);
            let _ = apply_tx.send(add_cmd(&g, sm));
            groups.insert(g.id, g);
        }
        let read_ctx = ReadCtx::new(sh.incarnation);
        Ok(Worker {
            idx,
            sh,
            rx,
            groups,
            tombstones: rec.tombstones,
            tombstones_unsynced: HashMap::new(),
            forget: HashMap::new(),
            tombstones_in_batch: Vec::new(),
            touched,
            outbox: Outbox::new(hb.into()),
            inflight: VecDeque::new(),
            creates: Vec::new(),
            removes: Vec::new(),
            effect_creates: VecDeque::new(),
            read_ctx,
            ticks: 0,
            tally: Tally::default(),
            failed: false,
            stopping: false,
            batch: WriteBatch::new(),
            after: Vec::new(),
            prune: Vec::new(),
            batch_groups: 0,
            created_this_tick: 0,
            active: HashSet::new(),
            wake_queue: VecDeque::new(),
            removing: Vec::new(),
            apply_tx: Some(apply_tx),
            apply_rx,
            apply_thread: Some(apply_thread),
            apply_backlog: 0,
            wal_pending: 0,
            next_write: 0,
            apply_hold: ApplyHold::default(),
        })
    }

    fn send_apply(&mut self, cmd: ApplyCmd) {
        if let Some(cmd) = self.apply_hold.hold(cmd) {
            self.send_apply_now(cmd);
        }
    }

    fn send_apply_now(&mut self, cmd: ApplyCmd) {
        let Some(tx) = &self.apply_tx else { return };
        // The apply thread lives as long as the worker holds its sender; it exits early
        // only if a state machine panicked: nothing can be applied any more, so the
        // engine stops as on a storage failure.
        if tx.send(cmd).is_err() && !self.failed {
            log::error!("flotilla: worker {}: the apply thread died (a state machine panicked)", self.idx);
            tracing::error!(worker = self.idx, "apply thread died; engine stops");
            self.storage_failed();
        }
    }

    /// Hands a quiesced group the wall ticks it missed, before an input reaches it. They
    /// count on a follower's election timer only if node liveness wakes it (`Raft::wake`):
    /// woken by anything else (a stray PreVote), a follower that merely slept keeps its
    /// lease. A leader re-sends an unacknowledged quiesce heartbeat on them.
    /// Also gives it the clock its leader lease is measured with (`clock`).
    fn credit_idle(g: &mut Group, now: u64) {
        g.raft.set_now(clock::now_nanos());
        if g.raft.is_quiesced() {
            g.raft.advance_idle(now.saturating_sub(g.idle_since));
        }
        g.idle_since = now;
    }

    /// After a group's turn: a quiesced group (with no read or waiter to time out) leaves
    /// the tick set; any other joins it.
    fn settle(&mut self, g: &mut Group) {
        // A quiesced leader stays ticked until every member acknowledged its quiesce
        // heartbeat (the credited ticks drive its re-sends).
        let idle = g.raft.is_quiesced()
            && g.reads.is_empty()
            && g.waiters.is_empty()
            && !g.raft.awaiting_quiesce_acks();
        if idle {
            if self.active.remove(&g.id) {
                g.idle_since = self.ticks;
            }
        } else {
            self.active.insert(g.id);
        }
        let quiesced = g.raft.is_quiesced();
        if quiesced != g.quiesced_counted {
            g.quiesced_counted = quiesced;
            if quiesced {
                // Idle from now (it may stay ticked, awaiting quiesce acknowledgements).
                g.idle_since = self.ticks;
            }
            let c = &self.sh.counters.quiesced_groups;
            if quiesced {
                c.fetch_add(1, Ordering::Relaxed);
            } else {
                c.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Node liveness: `node` went down, or came back as a new incarnation (`restarted`).
    /// Queues the quiesced groups whose leader is there (their followers must notice and
    /// elect another), and for a restart also the quiesced groups led here with a replica
    /// there (the restarted replica learns its leader at once). Woken by `tick`, a bounded
    /// number per tick.
    fn liveness(&mut self, node: NodeId, restarted: bool) {
        let me = self.sh.node;
        for g in self.groups.values() {
            if !g.raft.is_quiesced() {
                continue;
            }
            let led_there = g.leader_node() == Some(node);
            let follower_there = restarted
                && g.raft.role() == Role::Leader
                && g.raft.conf().members().iter().any(|r| r.node == node && r.node != me);
            if led_there || follower_there {
                self.wake_queue.push_back(g.id);
            }
        }
    }

    /// The ready loop; returns on shutdown.
    pub(crate) fn run(mut self) {
        let interval = self.sh.cfg.get().tick_interval;
        let mut next_tick = Instant::now() + interval;
        log::debug!("flotilla: worker {} starts with {} groups", self.idx, self.groups.len());
        while !self.stopping {
            let now = Instant::now();
            let timeout = if self.touched.is_empty() {
                next_tick.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            self.wait(timeout);
            for _ in 0..MAX_CMDS_PER_TURN {
                match self.rx.try_recv() {
                    Ok(cmd) => self.handle(cmd),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.stopping = true;
                        break;
                    }
                }
            }
            self.flush_creates();
            self.poll_applied();
            self.send_effect_creates();
            self.poll_inflight();
            if Instant::now() >= next_tick {
                self.tick();
                next_tick += interval;
                let now = Instant::now();
                if next_tick < now {
                    next_tick = now + interval;
                }
            }
            self.process();
            self.flush_outbox();
            if let Some(gauges) = self.sh.gauges.get(self.idx) {
                gauges.apply_lag.store(self.apply_backlog, Ordering::Relaxed);
                gauges.wal_pending_bytes.store(self.wal_pending, Ordering::Relaxed);
            }
        }
        self.finish();
    }

    fn wait(&self, timeout: Duration) {
        let mut sel = Select::new();
        sel.recv(&self.rx);
        sel.recv(&self.apply_rx);
        if let Some(t) = self.inflight.front().and_then(|f| f.ticket.as_ref()) {
            sel.recv(t.receiver());
        }
        let _ = sel.ready_timeout(timeout);
    }

    fn touch(touched: &mut Vec<u64>, g: &mut Group) {
        if !g.touched {
            g.touched = true;
            touched.push(g.id);
        }
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Msgs { from, msgs } => {
                if !self.creates.is_empty() {
                    self.flush_creates();
                }
                for (group, m) in msgs {
                    self.step(from, group, m);
                }
            }
            Cmd::Propose { group, data, done } => self.propose(group, data, done),
            Cmd::Conf { group, change, done } => self.conf_change(group, change, done),
            Cmd::Read { group, done } => self.read(group, done),
            Cmd::Transfer { group, node, done } => done.complete(self.transfer(group, node)),
            Cmd::Create { group, replica, conf, sm, first_leader, done } => {
                self.creates.push(PendingCreate { group, replica, conf, sm, first_leader, done })
            }
            Cmd::Status { group, done } => {
                let v = match group {
                    Some(g) => self.groups.get(&g).map(|g| vec![g.status()]).unwrap_or_default(),
                    None => self.groups.values().map(|g| g.status()).collect(),
                };
                let _ = done.send(v);
            }
            Cmd::Liveness { node, restarted } => self.liveness(node, restarted),
            Cmd::PeerUnreachable { node } => {
                for g in self.groups.values_mut() {
                    if g.raft.role() != Role::Leader {
                        continue;
                    }
                    let me = g.raft.id();
                    let lost: Vec<ReplicaId> = g
                        .raft
                        .conf()
                        .members()
                        .iter()
                        .filter(|r| r.node == node && r.id != me)
                        .map(|r| r.id)
                        .collect();
                    for r in lost {
                        g.raft.report_unreachable(r);
                    }
                }
            }
            Cmd::SnapshotSent { group, replica, ok } => {
                if let Some(g) = self.groups.get_mut(&group) {
                    Self::credit_idle(g, self.ticks);
                    g.raft.report_snapshot(replica, ok);
                    Self::touch(&mut self.touched, g);
                }
            }
            Cmd::Remove { group, done } => {
                if self.failed {
                    return done.complete(Err(ProposeError::StorageFailed));
                }
                if !self.creates.is_empty() {
                    self.flush_creates();
                }
                if self.creating(group) {
                    return self.removes.push((group, done));
                }
                match self.groups.remove(&group) {
                    Some(g) => {
                        self.active.remove(&group);
                        self.destroy(g);
                        done.complete(Ok(()));
                    }
                    None => done.complete(Err(ProposeError::GroupNotFound(group))),
                }
            }
            Cmd::Tombstone { from, group, replica, conf_index } => {
                self.on_tombstone(from, group, replica, conf_index)
            }
            Cmd::TombstoneAck { from, group, replica } => self.on_tombstone_ack(from, group, replica),
            Cmd::GcProbe { from, group, replica } => {
                self.answer_removed(from, group, replica);
            }
            Cmd::Shutdown => self.stopping = true,
        }
    }

    /// A member said `replica` of `group` was removed by its configuration at
    /// `conf_index` (an answer to this replica's messages or probes, or a leader's
    /// re-send). The replica here is destroyed only if the message proves it: it names
    /// this exact replica and a configuration newer than the one applied here (a replica
    /// id is never reused, so a configuration that dropped it never takes it back). A
    /// replica that is not here is confirmed to the sender once a durable tombstone record
    /// covers it (`gc::judge_tombstone`).
    fn on_tombstone(&mut self, from: NodeId, group: u64, replica: ReplicaId, conf_index: u64) {
        if self.failed || self.stopping {
            return;
        }
        let hosted = self.groups.get(&group).map(|g| (g.raft.id(), g.raft.conf_index()));
        let tombstone =
            self.tombstones.get(&group).map(|&t| (t, !self.tombstones_unsynced.contains_key(&group)));
        match gc::judge_tombstone(hosted, tombstone, self.creating(group), replica, conf_index) {
            gc::Verdict::Destroy => {
                if let Some(g) = self.groups.remove(&group) {
                    self.destroy(g);
                }
            }
            gc::Verdict::Ack => {
                let item = WireItem::TombstoneAck { group, replica };
                let _ = self.sh.net.send(NetCmd::Send { to: from, items: vec![item] });
            }
            gc::Verdict::Record => {
                log::debug!(
                    "flotilla: group {group}: recording the removal of replica {replica} (not hosted)"
                );
                self.batch.set_meta(group, &GroupMeta::Tombstone { replica }.encode());
                self.tombstones.insert(group, replica);
                self.tombstones_in_batch.push(group);
            }
            gc::Verdict::Ignore => {
                log::debug!(
                    "flotilla: group {group}: tombstone for replica {replica} at {conf_index} ignored \
                     (hosted {hosted:?}, tombstone {tombstone:?})"
                );
            }
        }
    }

    /// Node `from` confirmed that `replica` of `group` is destroyed there: a leader whose
    /// configuration records that removal forgets it on the next tick.
    fn on_tombstone_ack(&mut self, from: NodeId, group: u64, replica: ReplicaId) {
        let Some(g) = self.groups.get(&group) else { return };
        let r = Replica::new(from, replica);
        if g.raft.role() == Role::Leader && g.raft.conf().removed.contains(&r) {
            let list = self.forget.entry(group).or_default();
            if !list.contains(&r) {
                list.push(r);
            }
        }
    }

    /// Proposes the forgetting of the confirmed removal records (one `Forget` change per
    /// group). A refusal (a membership change pending, leadership lost) drops them: the
    /// next re-send is confirmed again.
    fn propose_forgets(&mut self) {
        for (gid, list) in std::mem::take(&mut self.forget) {
            let Some(g) = self.groups.get_mut(&gid) else { continue };
            let n = list.len() as u64;
            let cc = ConfChange {
                transition: Transition::Auto,
                changes: list
                    .into_iter()
                    .map(|replica| SingleChange { kind: ChangeKind::Forget, replica })
                    .collect(),
            };
            match g.raft.propose_conf_change(cc) {
                Ok(_) => {
                    bump_by(&self.sh.counters.removals_confirmed, n);
                    Self::touch(&mut self.touched, g);
                }
                Err(e) => log::debug!("flotilla: group {gid}: forgetting removal records refused: {e}"),
            }
        }
    }

    /// Answers a message from a replica that this member's applied configuration removed:
    /// ids at or below the configuration's highest id that it no longer holds were removed
    /// for good. Returns whether `m` came from such a replica (it is then not stepped).
    /// Answers a message or a stale-peer probe (`gc`) from `replica` on node `from`.
    fn answer_removed(&mut self, from: NodeId, group: u64, replica: ReplicaId) -> bool {
        let Some(g) = self.groups.get(&group) else { return false };
        if !gc::removed_by(g.raft.conf(), g.raft.id(), replica) {
            return false;
        }
        let item = WireItem::Tombstone { group, replica, conf_index: g.raft.conf_index() };
        log::debug!("flotilla: group {group}: message from removed replica {replica} on node {from}");
        bump(&self.sh.counters.tombstones_sent);
        let _ = self.sh.net.send(NetCmd::Send { to: from, items: vec![item] });
        true
    }

    // ------------------------------------------------------------------------------
    // Group lifecycle

    /// Writes the founding replicas requested this turn in ONE batch submitted to the WAL
    /// without waiting: the founding entry and hard state must be durable before the
    /// replica reads them, so the replicas start when the write is (`start_created`, from
    /// `poll_inflight`). Meanwhile messages for these groups are dropped (their senders
    /// retry), and a request for a group whose creation is in flight waits for it.
    fn flush_creates(&mut self) {
        if self.creates.is_empty() {
            return;
        }
        let creates = std::mem::take(&mut self.creates);
        let mut batch = WriteBatch::new();
        let mut todo = Vec::new();
        let mut later = Vec::new();
        for c in creates {
            if self.failed {
                c.done.complete(Err(CreateGroupError::StorageFailed));
                continue;
            }
            if let Some(existing) = self.creating_replica(c.group) {
                if existing == c.replica {
                    later.push(c);
                } else {
                    c.done.complete(Err(CreateGroupError::Conflict { group: c.group, existing }));
                }
                continue;
            }
            if let Some(g) = self.groups.get(&c.group) {
                let r = if g.raft.id() == c.replica {
                    Ok(())
                } else {
                    Err(CreateGroupError::Conflict { group: c.group, existing: g.raft.id() })
                };
                c.done.complete(r);
                continue;
            }
            if self.tombstones.contains_key(&c.group)
                || todo.iter().any(|t: &PendingCreate| t.group == c.group)
            {
                c.done.complete(Err(CreateGroupError::Tombstoned(c.group)));
                continue;
            }
            let meta = GroupMeta::Live { replica: c.replica, snapshot: SnapshotMeta::default() };
            batch.set_meta(c.group, &meta.encode());
            let first =
                Entry { index: 1, term: 1, payload: EntryPayload::ConfChange(c.conf.bootstrap_change()) };
            batch.add_entry(c.group, 1, 1, &entry_bytes(&first));
            batch.set_hard_state(c.group, wal_hs(HardState { term: 1, vote: 0, commit: 1 }));
            todo.push(c);
        }
        self.creates = later;
        if todo.is_empty() {
            return;
        }
        let bytes = batch.encoded_len() as u64;
        match self.sh.wal.submit(batch) {
            Ok(ticket) => {
                self.wal_pending += bytes;
                let seq = self.next_write;
                self.next_write += 1;
                let f = Inflight {
                    ticket: Some(ticket),
                    after: Vec::new(),
                    prune: Vec::new(),
                    bytes,
                    seq,
                    creates: todo,
                };
                self.inflight.push_back(f);
            }
            Err(e) => {
                log::error!("flotilla: wal write creating groups failed: {e}");
                self.storage_failed();
                for c in todo {
                    c.done.complete(Err(CreateGroupError::StorageFailed));
                }
            }
        }
    }

    /// The replica of `group` whose founding write is in flight, if any.
    fn creating_replica(&self, group: u64) -> Option<ReplicaId> {
        self.inflight.iter().flat_map(|f| &f.creates).find(|c| c.group == group).map(|c| c.replica)
    }

    fn creating(&self, group: u64) -> bool {
        self.creating_replica(group).is_some()
    }

    /// Starts the founding replicas whose write is durable, then carries out removals
    /// that waited for them.
    fn start_created(&mut self, creates: Vec<PendingCreate>) {
        for c in creates {
            match new_group(&self.sh, c.group, c.replica, SnapshotMeta::default(), c.sm.applied_index()) {
                Ok(mut g) => {
                    match c.first_leader {
                        Some(true) => g.first_campaign = true,
                        Some(false) => g.raft.defer_first_election(),
                        None => {}
                    }
                    self.send_apply(add_cmd(&g, c.sm));
                    g.touched = false;
                    Self::touch(&mut self.touched, &mut g);
                    self.groups.insert(c.group, g);
                    c.done.complete(Ok(()));
                }
                Err(e) => {
                    log::error!("flotilla: group {} could not start: {e}", c.group);
                    c.done.complete(Err(CreateGroupError::StorageFailed));
                }
            }
        }
        if self.removes.is_empty() {
            return;
        }
        for (group, done) in std::mem::take(&mut self.removes) {
            if self.creating(group) {
                self.removes.push((group, done));
            } else if let Some(g) = self.groups.remove(&group) {
                self.active.remove(&group);
                self.destroy(g);
                done.complete(Ok(()));
            } else {
                done.complete(Err(ProposeError::GroupNotFound(group)));
            }
        }
    }

    /// A message for a group not hosted here creates an empty replica if it comes from
    /// a leader (append, heartbeat or snapshot), names a replica id newer than any
    /// tombstone of the group here.
    fn maybe_create(&mut self, from: NodeId, group: u64, m: &Message) -> bool {
        let from_leader = matches!(
            m.body,
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. } | MessageBody::SnapshotChunk(_)
        );
        if !from_leader || m.to == 0 || self.failed || self.stopping {
            return false;
        }
        if self.tombstones.get(&group).is_some_and(|&t| m.to <= t) {
            return false;
        }
        if self.created_this_tick >= MAX_CREATES_PER_TICK {
            return false;
        }
        self.created_this_tick += 1;
        let sm = (self.sh.factory)(group);
        match new_group(&self.sh, group, m.to, SnapshotMeta::default(), sm.applied_index()) {
            Ok(mut g) => {
                self.send_apply(add_cmd(&g, sm));
                log::info!(
                    "flotilla: node {} creates replica {} of group {group} (leader on node {from})",
                    self.sh.node,
                    m.to
                );
                g.meta_dirty = true;
                g.touched = false;
                Self::touch(&mut self.touched, &mut g);
                self.tombstones.remove(&group);
                self.groups.insert(group, g);
                bump(&self.sh.counters.replicas_created);
                true
            }
            Err(e) => {
                log::warn!("flotilla: cannot create replica of group {group}: {e}");
                false
            }
        }
    }

    fn step(&mut self, from: NodeId, group: u64, m: Message) {
        if self.failed {
            return;
        }
        // A group whose founding write is in flight takes no message yet (senders retry).
        let unknown = !self.groups.contains_key(&group);
        if unknown && (self.creating(group) || !self.maybe_create(from, group, &m)) {
            return;
        }
        if self.answer_removed(from, group, m.from) {
            return;
        }
        let Some(g) = self.groups.get_mut(&group) else { return };
        g.learn_peer(m.from, from);
        Self::credit_idle(g, self.ticks);
        if let Err(e) = g.raft.step(m) {
            log::debug!("flotilla: group {group}: message refused: {e}");
        }
        Self::touch(&mut self.touched, g);
    }

    // ------------------------------------------------------------------------------
    // Operations

    fn propose(&mut self, group: u64, data: Bytes, done: Completer<Result<Bytes, ProposeError>>) {
        if self.failed {
            return done.complete(Err(ProposeError::StorageFailed));
        }
        if self.stopping {
            return done.complete(Err(ProposeError::Shutdown));
        }
        let cfg = self.sh.cfg.get();
        let Some(g) = self.groups.get_mut(&group) else {
            return done.complete(Err(ProposeError::GroupNotFound(group)));
        };
        Self::credit_idle(g, self.ticks);
        let size = data.len() as u64;
        // Only this leadership's waiters count: a deposed leader's are released.
        let led = (g.raft.role() == Role::Leader).then(|| g.raft.term());
        let uncommitted = g.waiters.uncommitted_bytes(led);
        let busy = if uncommitted + size > cfg.max_uncommitted_bytes && uncommitted > 0 {
            Some(BusyReason::GroupUncommitted)
        } else if self.tally.waiting() >= cfg.max_pending_proposals {
            Some(BusyReason::WorkerPending)
        } else if self.apply_backlog >= cfg.max_apply_backlog {
            Some(BusyReason::ApplyBacklog)
        } else if self.wal_pending + self.batch.encoded_len() as u64 >= cfg.max_pending_wal_bytes {
            Some(BusyReason::WalPending)
        } else {
            None
        };
        if let Some(reason) = busy {
            self.sh.counters.refused(reason);
            return done.complete(Err(ProposeError::Busy(reason)));
        }
        match g.raft.propose(data) {
            Ok((index, term)) => {
                let deadline = self.ticks + u64::from(cfg.propose_timeout_ticks);
                g.waiters.add(&mut self.tally, index, term, size, deadline, Done::Propose(done));
                Self::touch(&mut self.touched, g);
            }
            Err(e) => {
                bump(&self.sh.counters.refused_not_leader);
                done.complete(Err(map_propose_err(g, e)));
            }
        }
    }

    fn conf_change(
        &mut self,
        group: u64,
        change: MembershipChange,
        done: Completer<Result<(), MembershipError>>,
    ) {
        if self.failed {
            return done.complete(Err(MembershipError::StorageFailed));
        }
        let lag_max = self.sh.cfg.get().promote_lag_max;
        let timeout = u64::from(self.sh.cfg.get().propose_timeout_ticks);
        let Some(g) = self.groups.get_mut(&group) else {
            return done.complete(Err(MembershipError::GroupNotFound(group)));
        };
        Self::credit_idle(g, self.ticks);
        if g.raft.role() != Role::Leader {
            return done.complete(Err(MembershipError::NotLeader { leader_hint: g.leader_node() }));
        }
        let cc = match change {
            MembershipChange::Joint(changes) => {
                let mut next_id = g.raft.conf().max_replica_id;
                let mut out = Vec::with_capacity(changes.len());
                for ch in &changes {
                    if matches!(ch, MembershipChange::Joint(_)) {
                        return done.complete(Err(MembershipError::Invalid {
                            node: 0,
                            why: "nested joint change".to_string(),
                        }));
                    }
                    match single_change(g, ch, &mut next_id, lag_max) {
                        Ok(c) => out.push(c),
                        Err(e) => return done.complete(Err(e)),
                    }
                }
                ConfChange { transition: Transition::JointAuto, changes: out }
            }
            other => {
                let mut next_id = g.raft.conf().max_replica_id;
                match single_change(g, &other, &mut next_id, lag_max) {
                    Ok(c)
                        if matches!(other, MembershipChange::Remove(_))
                            && c.kind == ChangeKind::AddLearner =>
                    {
                        // A voter: demote it first, then remove the learner (`removal.rs`).
                        if g.removal.is_some() {
                            return done.complete(Err(MembershipError::ChangePending));
                        }
                        let (demoted, step) = super::pending();
                        if let Err(e) = Self::propose_conf(
                            &mut self.tally,
                            self.ticks + timeout,
                            g,
                            Removal::demotion(c.replica),
                            step,
                        ) {
                            return done.complete(Err(e));
                        }
                        g.removal = Some(Removal { replica: c.replica, demoted, done });
                        self.removing.push(group);
                        Self::touch(&mut self.touched, g);
                        return;
                    }
                    Ok(c) => ConfChange { transition: Transition::Auto, changes: vec![c] },
                    Err(e) => return done.complete(Err(e)),
                }
            }
        };
        // On refusal `propose_conf` completed `done` with the error.
        if Self::propose_conf(&mut self.tally, self.ticks + timeout, g, cc, done).is_ok() {
            Self::touch(&mut self.touched, g);
        }
    }

    /// Proposes `cc` with `done` as its waiter; on refusal completes `done` and returns
    /// the error too.
    fn propose_conf(
        tally: &mut Tally,
        deadline: u64,
        g: &mut Group,
        cc: ConfChange,
        done: Completer<Result<(), MembershipError>>,
    ) -> Result<(), MembershipError> {
        match g.raft.propose_conf_change(cc) {
            Ok((index, term)) => {
                g.waiters.add(tally, index, term, 0, deadline, Done::Conf(done));
                Ok(())
            }
            Err(e) => {
                let e = map_membership_err(e);
                done.complete(Err(e.clone()));
                Err(e)
            }
        }
    }

    /// Moves a voter removal on (see `removal.rs`): called when the group applied entries
    /// and on every tick while the removal lasts.
    fn drive_removal(&mut self, g: &mut Group) {
        let Some(r) = g.removal.take() else { return };
        match r.poll(g.raft.role(), g.raft.conf(), g.leader_node()) {
            RemovalNext::Wait(r) => g.removal = Some(r),
            RemovalNext::Done(done, res) => done.complete(res),
            RemovalNext::Propose(cc, done) => {
                let deadline = self.ticks + u64::from(self.sh.cfg.get().propose_timeout_ticks);
                if Self::propose_conf(&mut self.tally, deadline, g, cc, done).is_ok() {
                    Self::touch(&mut self.touched, g);
                }
            }
        }
    }

    /// Ticks the voter removals in progress (usually none).
    fn tick_removals(&mut self) {
        let ids = std::mem::take(&mut self.removing);
        for gid in ids {
            let Some(mut g) = self.groups.remove(&gid) else { continue };
            self.drive_removal(&mut g);
            if g.removal.is_some() {
                self.removing.push(gid);
            }
            self.groups.insert(gid, g);
        }
    }

    fn read(&mut self, group: u64, done: Completer<Result<u64, ReadError>>) {
        if self.failed {
            return done.complete(Err(ReadError::StorageFailed));
        }
        let timeout = u64::from(self.sh.cfg.get().read_timeout_ticks);
        let Some(g) = self.groups.get_mut(&group) else {
            return done.complete(Err(ReadError::GroupNotFound(group)));
        };
        Self::credit_idle(g, self.ticks);
        let ctx = self.read_ctx.next();
        match g.raft.read_index(ctx) {
            Ok(()) => {
                g.reads.push(ctx, self.ticks + timeout, done);
                Self::touch(&mut self.touched, g);
            }
            Err(crate::raft::ReadIndexError::NotLeader { leader_hint }) => {
                done.complete(Err(ReadError::NotLeader { leader_hint: leader_hint.map(|r| r.node) }))
            }
        }
    }

    fn transfer(&mut self, group: u64, node: NodeId) -> Result<(), TransferError> {
        if self.failed {
            return Err(TransferError::StorageFailed);
        }
        let Some(g) = self.groups.get_mut(&group) else {
            return Err(TransferError::GroupNotFound(group));
        };
        let Some(to) = g.raft.conf().members().into_iter().find(|r| r.node == node) else {
            return Err(TransferError::NotMember(node));
        };
        Self::credit_idle(g, self.ticks);
        let r = g.raft.transfer_leader(to.id).map_err(|e| match e {
            CoreTransferError::NotLeader { leader_hint } => {
                TransferError::NotLeader { leader_hint: leader_hint.map(|r| r.node) }
            }
            CoreTransferError::ToSelf(_) => TransferError::ToSelf(node),
            CoreTransferError::NotVoter(_) => TransferError::NotVoter(node),
            CoreTransferError::NotMember(_) => TransferError::NotMember(node),
            CoreTransferError::ConfChangePending => TransferError::ConfChangePending,
        });
        Self::touch(&mut self.touched, g);
        r
    }

    fn tick(&mut self) {
        self.ticks += 1;
        bump(&self.sh.counters.worker_ticks);
        self.created_this_tick = 0;
        self.outbox.tick();
        let now = self.ticks;
        // Liveness wake-ups, rate-limited.
        let max_wakes = self.sh.cfg.get().max_wakes_per_tick;
        let mut woken = 0u64;
        while woken < u64::from(max_wakes) {
            let Some(gid) = self.wake_queue.pop_front() else { break };
            let Some(g) = self.groups.get_mut(&gid) else { continue };
            if !g.raft.is_quiesced() {
                continue;
            }
            Self::credit_idle(g, now);
            g.raft.wake();
            woken += 1;
            Self::touch(&mut self.touched, g);
        }
        if woken > 0 {
            bump_by(&self.sh.counters.liveness_wakes, woken);
        }
        // Only the active groups: quiesced ones cost nothing here.
        let mut ticked = 0u64;
        let groups = &mut self.groups;
        let touched = &mut self.touched;
        let tally = &mut self.tally;
        self.active.retain(|gid| groups.contains_key(gid));
        for gid in &self.active {
            let Some(g) = groups.get_mut(gid) else { continue };
            if g.raft.is_quiesced() {
                // Kept for its reads' deadlines, or a leader re-sending its quiesce
                // heartbeat to members that did not acknowledge it.
                Self::credit_idle(g, now);
            } else {
                g.raft.tick();
                ticked += 1;
            }
            if !g.waiters.is_empty() {
                g.waiters.expire(tally, now);
            }
            if !g.reads.is_empty() {
                g.reads.expire(now);
            }
            Self::touch(touched, g);
        }
        bump_by(&self.sh.counters.raft_ticks, ticked);
        let cfg = self.sh.cfg.get();
        if gc::gc_due(now, cfg.gc_interval_elections, cfg.raft.election_timeout_max_ticks) {
            self.gc_pass();
        }
        if !self.forget.is_empty() {
            self.propose_forgets();
        }
        self.tick_removals();
        self.compact_pinning_groups();
    }

    /// The clean-up pass (`gc`), every `gc_interval_elections` election timeouts: replicas
    /// that send nothing ask the other members whether they still belong to their group
    /// (the stale-peer check), and leaders re-send a tombstone to every removed replica
    /// that has not confirmed its destruction. One pass over the groups.
    fn gc_pass(&mut self) {
        let me = self.sh.node;
        let mut probes: HashMap<NodeId, Vec<WireItem>> = HashMap::new();
        let mut resent: HashMap<NodeId, Vec<WireItem>> = HashMap::new();
        for g in self.groups.values() {
            let r = &g.raft;
            if r.role() == Role::Leader {
                if !r.conf().removed.is_empty() {
                    let (items, local) = gc::resends(g.id, r.conf(), r.conf_index(), me);
                    for (node, item) in items {
                        resent.entry(node).or_default().push(item);
                    }
                    if !local.is_empty() {
                        self.forget.entry(g.id).or_default().extend(local);
                    }
                }
            } else if gc::should_probe(r.role(), r.is_quiesced(), r.conf().is_voter(r.id())) {
                for (node, item) in gc::probes(g.id, r.id(), r.conf(), me) {
                    probes.entry(node).or_default().push(item);
                }
            }
        }
        for (to, items) in probes {
            bump_by(&self.sh.counters.gc_probes_sent, items.len() as u64);
            let _ = self.sh.net.send(NetCmd::Send { to, items });
        }
        for (to, items) in resent {
            bump_by(&self.sh.counters.tombstones_resent, items.len() as u64);
            let _ = self.sh.net.send(NetCmd::Send { to, items });
        }
    }

    // ------------------------------------------------------------------------------
    // The ready loop

    fn process(&mut self) {
        let touched = std::mem::take(&mut self.touched);
        let mut destroyed = Vec::new();
        for gid in touched {
            let Some(mut g) = self.groups.remove(&gid) else { continue };
            g.touched = false;
            let mut removed = false;
            for _ in 0..READY_ROUNDS {
                if self.failed || !g.raft.has_ready() {
                    break;
                }
                removed = self.handle_ready(&mut g);
                if removed {
                    break;
                }
            }
            if self.failed {
                // `storage_failed` failed the waiters of the groups in the map; this one
                // was out of it while its Ready was handled.
                g.fail_all(&mut self.tally, || ReadError::StorageFailed);
                self.groups.insert(gid, g);
                continue;
            }
            if removed {
                self.active.remove(&gid);
                destroyed.push(g);
                continue;
            }
            if g.first_campaign && g.raft.applied() >= g.raft.committed() {
                g.first_campaign = false;
                g.raft.campaign_now();
            }
            observe(&self.sh, &mut g);
            if g.raft.has_ready() {
                g.touched = true;
                self.touched.push(gid);
            }
            self.settle(&mut g);
            self.groups.insert(gid, g);
            // Submitted early once it holds half the WAL's write size (one group's Ready
            // adds at most `max_uncommitted_bytes` plus one append message).
            if self.batch.encoded_len() >= self.sh.cfg.get().wal.max_write_bytes / 2 {
                self.submit();
            }
        }
        for g in destroyed {
            self.destroy(g);
        }
        self.submit();
    }

    /// Handles one `Ready` of `g`; returns whether the replica was removed from the group
    /// (never, now: a removal is seen once the apply thread reports it, in `on_applied`).
    fn handle_ready(&mut self, g: &mut Group) -> bool {
        let rd = g.raft.ready();
        let gid = g.id;
        // 1. Messages now.
        for m in rd.messages {
            self.send(g, m);
        }
        // 2. The write: metadata, a received snapshot, entries, hard state.
        let wrote_before = self.batch.encoded_len();
        if let Some(snap) = &rd.snapshot {
            if let Err(e) = self.install_snapshot(g, &snap.meta, &snap.data) {
                log::error!("flotilla: group {gid}: installing snapshot {} failed: {e}", snap.meta.index);
                self.storage_failed();
                return false;
            }
        }
        if g.meta_dirty {
            g.meta_dirty = false;
            self.batch.set_meta(gid, &g.meta().encode());
        }
        let last = rd.entries.last().map(|e| (e.index, e.term));
        for e in &rd.entries {
            self.batch.add_entry(gid, e.index, e.term, &entry_bytes(e));
        }
        if let Some(hs) = rd.hard_state {
            self.batch.set_hard_state(gid, wal_hs(hs));
        }
        if self.batch.encoded_len() != wrote_before {
            self.batch_groups += 1;
        }
        if last.is_some() || !rd.persisted_messages.is_empty() {
            self.after.push((gid, last, rd.persisted_messages));
        }
        // 3. Apply, on the apply thread, with the waiters of these entries: it completes
        // proposals as it applies them (one hop to the caller); membership changes come
        // back to complete here once Raft applied them (`poll_applied`).
        if !rd.committed_entries.is_empty() {
            let waiters = g.waiters.committed(&mut self.tally, &rd.committed_entries);
            self.apply_backlog += rd.committed_entries.len() as u64;
            g.log_bytes += rd.committed_entries.iter().map(|e| e.size() as u64).sum::<u64>();
            let entries = rd.committed_entries;
            self.send_apply(ApplyCmd::Apply { group: gid, epoch: g.epoch, entries, waiters });
        }
        // 4. Reads.
        for rs in rd.read_states {
            g.reads.confirm(rs.ctx, rs.index);
        }
        g.reads.serve(g.raft.applied());
        false
    }

    /// Executes an effect returned by the state machine of `parent` at `index`.
    fn run_effect(&mut self, parent: u64, index: u64, effect: Effect) {
        match effect {
            Effect::CreateGroup { group, members } => {
                let me = self.sh.node;
                let Some(pos) = members.iter().position(|&n| n == me) else { return };
                if members.iter().enumerate().any(|(i, n)| members[..i].contains(n)) {
                    log::warn!("flotilla: group {parent} at {index}: create-group effect lists a node twice");
                    return;
                }
                let conf = ConfState::with_voters(
                    members.iter().enumerate().map(|(i, &n)| Replica::new(n, i as u64 + 1)),
                );
                let replica = pos as u64 + 1;
                let sm = (self.sh.factory)(group);
                let (_answer, done) = super::pending::<Result<(), CreateGroupError>>();
                tracing::info!(parent, index, group, replica, "create-group effect");
                bump(&self.sh.counters.effects_create_group);
                let n = self.sh.cfg.get().workers;
                let owner = super::route(group, n);
                if owner == self.idx {
                    self.creates.push(PendingCreate { group, replica, conf, sm, done, first_leader: None });
                    return;
                }
                let cmd = Cmd::Create { group, replica, conf, sm, done, first_leader: None };
                // A create-group effect must not be lost to a momentarily full mailbox, nor
                // block this worker: retried each turn (bounded in time).
                let deadline = Instant::now() + EFFECT_SEND_WAIT;
                self.effect_creates.push_back((owner, group, cmd, deadline));
                self.send_effect_creates();
            }
        }
    }

    /// Hands the groups created by effects to their workers without blocking; a full
    /// mailbox is retried next turn, until the command's deadline.
    fn send_effect_creates(&mut self) {
        if self.effect_creates.is_empty() {
            return;
        }
        let now = Instant::now();
        for _ in 0..self.effect_creates.len() {
            let Some((owner, group, cmd, deadline)) = self.effect_creates.pop_front() else { break };
            let to = self.sh.routes.lock().unwrap_or_else(|e| e.into_inner()).get(owner).cloned();
            let res = match to {
                Some(tx) => tx.try_send(cmd),
                None => Err(TrySendError::Disconnected(cmd)),
            };
            match res {
                Ok(()) => {}
                Err(TrySendError::Full(cmd)) if now < deadline => {
                    self.effect_creates.push_back((owner, group, cmd, deadline));
                }
                Err(_) => log::error!("flotilla: worker {owner} did not take the creation of group {group}"),
            }
        }
    }

    /// Takes the apply thread's answers, in the order it did the work.
    fn poll_applied(&mut self) {
        while let Ok(done) = self.apply_rx.try_recv() {
            match done {
                ApplyDone::Applied { group, epoch, done } => self.on_applied(group, epoch, done),
                ApplyDone::RestoreFailed { group, index, error } => {
                    log::error!("flotilla: group {group}: restoring snapshot {index} failed: {error}");
                    tracing::error!(group, index, %error, "snapshot restore failed; engine stops");
                    self.storage_failed();
                }
                ApplyDone::Snapshot { group, epoch, meta, result } => {
                    self.on_snapshot(group, epoch, meta, result)
                }
            }
        }
    }

    /// Entries of `group` up to `last` were applied: Raft learns it (membership changes
    /// take effect), effects run, waiters complete with the results, reads are served; a
    /// replica whose removal was applied is destroyed; a log past the threshold is
    /// snapshotted.
    fn on_applied(&mut self, group: u64, epoch: u64, done: Applied) {
        let Applied { last, count, applied, effects, deferred } = done;
        self.apply_backlog = self.apply_backlog.saturating_sub(count);
        bump_by(&self.sh.counters.applied_entries, applied);
        if self.failed || self.groups.get(&group).map_or(true, |g| g.epoch != epoch) {
            for (w, o) in deferred {
                w.complete(o);
            }
            return;
        }
        let Some(mut g) = self.groups.remove(&group) else { return };
        let me = g.raft.id();
        let was_member = g.raft.conf().contains(me);
        // Lease reads are answered now, under the lease as it stands now.
        g.raft.set_now(clock::now_nanos());
        g.raft.on_applied(last);
        // Membership changes resolve once Raft applied them (status shows the change).
        for (w, o) in deferred {
            w.complete(o);
        }
        self.drive_removal(&mut g);
        g.reads.serve(g.raft.applied());
        if was_member && !g.raft.conf().contains(me) {
            self.destroy(g);
        } else {
            self.maybe_compact(&mut g);
            Self::touch(&mut self.touched, &mut g);
            self.groups.insert(group, g);
        }
        for (index, e) in effects {
            self.run_effect(group, index, e);
        }
    }

    /// Installs a snapshot received from the leader: the file (fsynced) first, then the
    /// state machine, then the WAL reset (in this turn's batch).
    fn install_snapshot(&mut self, g: &mut Group, meta: &SnapshotMeta, data: &Bytes) -> std::io::Result<()> {
        snapfile::save(&self.sh.snap_dir, g.id, g.raft.id(), meta, data)?;
        // Crash tests: the file is durable, the WAL reset record not written.
        fail::fail_point!("engine::snapshot_file_before_reset");
        // Persist, then apply: the restore (and every apply command after it) waits until
        // the write carrying the reset below is durable (`poll_inflight`), so a state
        // machine that persists its applied index is never ahead of the log.
        let restore = ApplyCmd::Restore { group: g.id, meta: meta.clone(), data: data.clone() };
        self.apply_hold.hold_until(self.next_write, restore);
        g.waiters.snapshot_installed(&mut self.tally, meta.index, meta.term);
        g.raft.storage_mut().snap = meta.clone();
        g.log_bytes = 0;
        let gid = g.id;
        self.batch.remove_group(gid);
        self.batch.set_meta(gid, &g.meta().encode());
        self.batch.compact_to(gid, meta.index + 1);
        self.batch.set_hard_state(gid, wal_hs(g.raft.hard_state()));
        g.meta_dirty = false;
        self.prune.push((gid, g.raft.id(), meta.index));
        bump(&self.sh.counters.snapshots_installed);
        tracing::info!(group = gid, index = meta.index, term = meta.term, "snapshot installed");
        log::info!("flotilla: group {gid}: installed snapshot at {}", meta.index);
        Ok(())
    }

    /// The compaction policy: asks the apply thread for a snapshot of the state machine
    /// once the log holds `compact_entries` applied entries, or `compact_bytes` of them,
    /// past the compaction point (answered in `on_snapshot`). `force` (the WAL names the
    /// group as pinning old segments) asks whenever anything applied is not compacted.
    fn maybe_compact(&mut self, g: &mut Group) {
        self.compact_if(g, false);
    }

    fn compact_if(&mut self, g: &mut Group, force: bool) -> bool {
        let cfg = self.sh.cfg.get();
        let applied = g.raft.applied();
        let snap = g.raft.storage().snap.index;
        let due = if force {
            applied > snap
        } else {
            applied >= snap.saturating_add(cfg.compact_entries)
                || (applied > snap && g.log_bytes >= cfg.compact_bytes)
        };
        if g.snapshotting || !due {
            return false;
        }
        g.snapshotting = true;
        self.send_apply(ApplyCmd::Snapshot { group: g.id, epoch: g.epoch });
        true
    }

    /// Every `compact_check_ticks`: past `max_wal_segments` live WAL segments, snapshots
    /// and compacts this worker's groups that pin the oldest segments (at most
    /// [`MAX_FORCED_COMPACTIONS`] per check), so an idle group cannot hold the log's
    /// oldest segments forever.
    fn compact_pinning_groups(&mut self) {
        let cfg = self.sh.cfg.get();
        if self.ticks % u64::from(cfg.compact_check_ticks) != 0 {
            return;
        }
        let live = self.sh.wal.segment_seqs().len();
        if live <= cfg.max_wal_segments {
            return;
        }
        let excess = live - cfg.max_wal_segments;
        let mut forced = 0;
        let mut busy = false;
        for pins in self.sh.wal.pinning_groups(excess) {
            for gid in pins.groups {
                if forced >= MAX_FORCED_COMPACTIONS {
                    return;
                }
                let Some(mut g) = self.groups.remove(&gid) else { continue };
                busy |= g.snapshotting;
                if self.compact_if(&mut g, true) {
                    forced += 1;
                    bump(&self.sh.counters.forced_compactions);
                }
                self.groups.insert(gid, g);
            }
        }
        if forced == 0 && !busy {
            // This worker's pinning groups are compacted: what still holds the segments
            // is dead records (freed by a compaction pass, which otherwise runs only when
            // the writer moves to a new segment) or other workers' groups.
            let _ = self.sh.wal.request_maintain();
        }
    }

    /// The snapshot-writer thread wrote (and fsynced) the snapshot file of `group` at
    /// `meta`: the log is compacted there. The file covers the state machine, so
    /// compaction may pass its durable `applied_index`: on open a state machine behind the
    /// compaction point is restored from the file.
    fn on_snapshot(&mut self, group: u64, epoch: u64, meta: SnapshotMeta, result: Result<u64, String>) {
        if self.failed {
            return;
        }
        let Some(g) = self.groups.get_mut(&group).filter(|g| g.epoch == epoch) else { return };
        g.snapshotting = false;
        let replica = g.raft.id();
        let bytes = match result {
            Ok(b) => b,
            Err(e) => {
                log::warn!("flotilla: group {group}: snapshot at {} failed: {e}", meta.index);
                tracing::warn!(group, index = meta.index, %e, "snapshot failed");
                return;
            }
        };
        let discard = |why: &str| {
            log::warn!("flotilla: group {group}: snapshot at {} discarded: {why}", meta.index);
            snapfile::prune(&self.sh.snap_dir, group, |r, i| r == replica && i == meta.index);
        };
        if meta.index <= g.raft.storage().snap.index {
            // A snapshot installed meanwhile superseded it.
            return discard("superseded");
        }
        match g.raft.compact_to(meta.index) {
            Ok(m) if m == meta => {}
            Ok(m) => {
                // Raft compacted already; the file does not match what it says: keep the
                // old compaction point durable and drop the file.
                log::error!("flotilla: group {group}: snapshot metadata {meta:?} differs from Raft's {m:?}");
                return discard("metadata mismatch");
            }
            Err(e) => return discard(&e.to_string()),
        }
        g.raft.storage_mut().snap = meta.clone();
        // Approximate: entries applied while the snapshot was written count as compacted.
        g.log_bytes = 0;
        self.batch.set_meta(group, &g.meta().encode());
        self.batch.compact_to(group, meta.index + 1);
        self.prune.push((group, replica, meta.index));
        bump(&self.sh.counters.compactions);
        tracing::debug!(group, index = meta.index, bytes, "snapshot taken, log compacted");
    }

    fn destroy(&mut self, mut g: Box<Group>) {
        let gid = g.id;
        log::info!(
            "flotilla: node {}: replica {} of group {gid} removed; destroying it",
            self.sh.node,
            g.raft.id()
        );
        g.fail_all(&mut self.tally, || ReadError::GroupNotFound(gid));
        self.batch.remove_group(gid);
        self.batch.set_meta(gid, &GroupMeta::Tombstone { replica: g.raft.id() }.encode());
        self.tombstones.insert(gid, g.raft.id());
        self.tombstones_in_batch.push(gid);
        self.prune.push((gid, g.raft.id(), u64::MAX));
        self.outbox.forget_group(gid);
        self.active.remove(&gid);
        if g.quiesced_counted {
            self.sh.counters.quiesced_groups.fetch_sub(1, Ordering::Relaxed);
        }
        self.send_apply(ApplyCmd::Remove { group: gid });
        bump(&self.sh.counters.replicas_destroyed);
        tracing::info!(group = gid, replica = g.raft.id(), "replica destroyed after its removal");
    }

    fn send(&mut self, g: &mut Group, m: Message) {
        if let MessageBody::SendSnapshot { meta } = &m.body {
            self.send_snapshot(g, m.to, meta.clone());
            return;
        }
        let Some(node) = g.node_of(m.to) else {
            log::debug!("flotilla: group {}: no node for replica {}", g.id, m.to);
            return;
        };
        if node == self.sh.node {
            return;
        }
        // Heartbeats are never skipped: a pending ReadIndex (ours or a follower's) may
        // wait on the round.
        self.outbox.push_with(node, g.id, m, false);
    }

    /// Streams the snapshot file at `meta` to replica `to`: the chunks are read from the
    /// file lazily as the transport sends them (the file is opened now, so pruning it
    /// meanwhile does not cut the stream).
    fn send_snapshot(&mut self, g: &mut Group, to: ReplicaId, meta: SnapshotMeta) {
        let ids = (g.raft.id(), to, g.raft.term());
        let (Some(node), Ok(chunks)) =
            (g.node_of(to), snapfile::chunks(&self.sh.snap_dir, g.id, ids, &meta, 0, SNAPSHOT_CHUNK))
        else {
            g.raft.report_snapshot(to, false);
            return;
        };
        bump(&self.sh.counters.snapshots_sent);
        tracing::info!(group = g.id, index = meta.index, to, node, "snapshot stream started");
        log::info!(
            "flotilla: group {}: streaming snapshot {} to replica {to} on node {node}",
            g.id,
            meta.index
        );
        let chunks: SnapshotChunks = Box::new(chunks);
        let _ = self.sh.net.send(NetCmd::Snapshot { to: node, group: g.id, replica: to, chunks });
    }

    /// Submits this turn's batch (if any) and records what waits for it.
    fn submit(&mut self) {
        if self.failed {
            self.batch = WriteBatch::new();
            self.after.clear();
            self.prune.clear();
            self.tombstones_in_batch.clear();
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let after = std::mem::take(&mut self.after);
        let prune = std::mem::take(&mut self.prune);
        let bytes = batch.encoded_len() as u64;
        let ticket = if batch.is_empty() {
            None
        } else {
            bump(&self.sh.counters.wal_batches);
            bump_by(&self.sh.counters.wal_batch_bytes, bytes);
            self.wal_pending += bytes;
            bump_by(&self.sh.counters.wal_batch_groups, self.batch_groups);
            self.batch_groups = 0;
            match self.sh.wal.submit(batch) {
                Ok(t) => Some(t),
                Err(e) => {
                    log::error!("flotilla: wal submit failed: {e}");
                    tracing::error!(%e, "wal submit failed; engine stops");
                    self.storage_failed();
                    return;
                }
            }
        };
        if ticket.is_some() || !after.is_empty() {
            let seq = self.next_write;
            self.next_write += 1;
            for g in self.tombstones_in_batch.drain(..) {
                self.tombstones_unsynced.insert(g, seq);
            }
            self.inflight.push_back(Inflight { ticket, after, prune, bytes, seq, creates: Vec::new() });
        }
        // Writes that need nothing durable complete at once (in order).
        self.poll_inflight();
    }

    /// Completes the writes that are durable, oldest first.
    fn poll_inflight(&mut self) {
        while let Some(front) = self.inflight.front() {
            if let Some(t) = &front.ticket {
                match t.try_wait() {
                    None => return,
                    // Crash tests: durable, nothing acknowledged or sent for it yet.
                    Some(Ok(())) => fail::fail_point!("engine::after_fsync_before_send"),
                    Some(Err(e)) => {
                        log::error!("flotilla: wal write failed, stopping the engine: {e}");
                        tracing::error!(%e, "wal write failed; engine stops");
                        self.storage_failed();
                        return;
                    }
                }
            }
            let Some(done) = self.inflight.pop_front() else { return };
            if done.ticket.is_some() {
                self.wal_pending = self.wal_pending.saturating_sub(done.bytes);
            }
            if let Some(cmds) = self.apply_hold.durable(done.seq) {
                // Crash tests: a snapshot's log reset is durable, the state machine not
                // restored yet (recovery restores it from the snapshot file).
                fail::fail_point!("engine::snapshot_reset_durable_before_restore");
                for cmd in cmds {
                    self.send_apply_now(cmd);
                }
            }
            if !self.tombstones_unsynced.is_empty() {
                self.tombstones_unsynced.retain(|_, seq| *seq > done.seq);
            }
            for (gid, replica, keep) in done.prune {
                snapfile::prune(&self.sh.snap_dir, gid, |r, i| r == replica && i < keep);
            }
            if !done.creates.is_empty() {
                self.start_created(done.creates);
            }
            for (gid, last, msgs) in done.after {
                let Some(g) = self.groups.get_mut(&gid) else { continue };
                if let Some((i, t)) = last {
                    g.raft.set_now(clock::now_nanos());
                    g.raft.on_persisted(i, t);
                }
                // Crash tests: a granted vote is durable, its reply not sent.
                fail::fail_point!(
                    "engine::vote_durable_before_reply",
                    msgs.iter().any(is_vote_grant),
                    |_| {}
                );
                for m in msgs {
                    // Split borrow: `send` needs the worker and the group.
                    let node = g.node_of(m.to);
                    if let Some(node) = node.filter(|&n| n != self.sh.node) {
                        self.outbox.push_with(node, gid, m, false);
                    }
                }
                Self::touch(&mut self.touched, g);
            }
        }
    }

    fn flush_outbox(&mut self) {
        if self.failed {
            let _ = self.outbox.flush();
            return;
        }
        for (to, items) in self.outbox.flush() {
            bump(&self.sh.counters.net_batches);
            let _ = self.sh.net.send(NetCmd::Send { to, items });
        }
    }

    /// A WAL write failed: nothing that depended on it is sent, every waiter fails, the
    /// engine refuses further work.
    fn storage_failed(&mut self) {
        self.failed = true;
        self.sh.failed.store(true, Ordering::Release);
        for f in self.inflight.drain(..) {
            for c in f.creates {
                c.done.complete(Err(CreateGroupError::StorageFailed));
            }
        }
        for (_, done) in self.removes.drain(..) {
            done.complete(Err(ProposeError::StorageFailed));
        }
        self.wal_pending = 0;
        self.batch = WriteBatch::new();
        self.after.clear();
        self.prune.clear();
        let _ = self.outbox.flush();
        // Appended proposals may still commit elsewhere: their waiters are Indeterminate.
        for g in self.groups.values_mut() {
            g.fail_all(&mut self.tally, || ReadError::StorageFailed);
        }
    }

    /// Shutdown: finish the writes in flight (bounded), then resolve every waiter.
    fn finish(&mut self) {
        self.flush_creates();
        self.submit();
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        while !self.failed {
            let Some(front) = self.inflight.front_mut() else { break };
            if let Some(t) = front.ticket.take() {
                let left = deadline.saturating_duration_since(Instant::now());
                match t.receiver().recv_timeout(left) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        log::error!("flotilla: wal write failed during shutdown: {e}");
                        self.storage_failed();
                        break;
                    }
                    Err(_) => {
                        log::warn!("flotilla: shutdown gave up waiting for a wal write");
                        break;
                    }
                }
            }
            self.poll_inflight();
        }
        self.flush_outbox();
        // The apply thread finishes what it was handed (a state machine with its own
        // storage sees every entry it was given); waiters of applied entries get results.
        self.apply_tx = None;
        if let Some(t) = self.apply_thread.take() {
            if t.join().is_err() {
                log::error!("flotilla: worker {}: a state machine panicked", self.idx);
            }
        }
        self.poll_applied();
        for g in self.groups.values_mut() {
            g.fail_all(&mut self.tally, || ReadError::Shutdown);
        }
        // Drain commands still queued so their callers learn the engine stopped.
        while let Ok(cmd) = self.rx.try_recv() {
            drop(cmd);
        }
    }
}

/// Hands the state machine of `g` to the apply thread, with the position Raft has it at.
fn add_cmd(g: &Group, sm: Box<dyn StateMachine>) -> ApplyCmd {
    let index = g.raft.applied();
    let snap = g.raft.snapshot_meta();
    let term = if index == snap.index { snap.term } else { g.raft.term_at(index).unwrap_or(0) };
    ApplyCmd::Add {
        group: g.id,
        replica: g.raft.id(),
        applied: (index, term),
        conf: g.raft.conf().clone(),
        sm,
    }
}

/// The Raft counters a worker reports as metrics and events (see `Group::seen`).
fn raft_counts(r: &Raft<WalStore>) -> [u32; 5] {
    let st = r.stats();
    [
        st.campaigns,
        st.leaderships,
        st.transfers_started,
        st.transfers_aborted,
        st.simple_changes + st.joint_entered + st.joint_left,
    ]
    // Truncated on purpose: only differences between two readings are used.
    .map(|v| v as u32)
}

/// Reports what changed in `g`'s Raft counters since last seen: metrics and tracing
/// events (elections, leadership, transfers, membership changes).
fn observe(sh: &Shared, g: &mut Group) {
    let now = raft_counts(&g.raft);
    if now == g.seen {
        return;
    }
    let d: [u64; 5] = std::array::from_fn(|i| u64::from(now[i].wrapping_sub(g.seen[i])));
    g.seen = now;
    let c = &sh.counters;
    let (group, term) = (g.id, g.raft.term());
    if d[0] > 0 {
        bump_by(&c.elections, d[0]);
        tracing::debug!(group, term, replica = g.raft.id(), "election started");
    }
    if d[1] > 0 {
        bump_by(&c.leaders_elected, d[1]);
        tracing::info!(group, term, replica = g.raft.id(), "became leader");
    }
    if d[2] > 0 {
        bump_by(&c.transfers_started, d[2]);
        tracing::info!(group, term, "leadership transfer started");
    }
    if d[3] > 0 {
        bump_by(&c.transfers_aborted, d[3]);
        tracing::info!(group, term, "leadership transfer aborted");
    }
    if d[4] > 0 {
        bump_by(&c.membership_changes, d[4]);
        tracing::info!(group, term, conf = ?g.raft.conf(), "membership change applied");
    }
}

/// A granted (non-PreVote) vote: its hard state carries a new vote.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
fn is_vote_grant(m: &Message) -> bool {
    matches!(m.body, MessageBody::RequestVoteResponse { pre_vote: false, reject: false, .. })
}

fn bump_by(c: &std::sync::atomic::AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// One change of a membership request, checked against the leader's configuration.
/// New replicas get ids above `next_id` (advanced).
fn single_change(
    g: &Group,
    change: &MembershipChange,
    next_id: &mut ReplicaId,
    lag_max: u64,
) -> Result<SingleChange, MembershipError> {
    let conf = g.raft.conf();
    let on = |node: NodeId| conf.members().into_iter().find(|r| r.node == node);
    let invalid = |node: NodeId, why: &str| MembershipError::Invalid { node, why: why.to_string() };
    Ok(match *change {
        MembershipChange::AddLearner(node) | MembershipChange::AddVoter(node) => {
            if on(node).is_some() {
                return Err(invalid(node, "already a member"));
            }
            let kind = if matches!(change, MembershipChange::AddLearner(_)) {
                ChangeKind::AddLearner
            } else {
                ChangeKind::AddVoter
            };
            *next_id += 1;
            SingleChange { kind, replica: Replica::new(node, *next_id) }
        }
        MembershipChange::Promote { node, force } => {
            let Some(r) = on(node).filter(|r| conf.is_learner(r.id)) else {
                return Err(invalid(node, "not a learner"));
            };
            if !force {
                let last = g.raft.last_index();
                let matched =
                    g.raft.status().followers.iter().find(|f| f.id == r.id).map(|f| f.matched).unwrap_or(0);
                let lag = last.saturating_sub(matched);
                if lag > lag_max {
                    return Err(MembershipError::LearnerNotCaughtUp { node, lag });
                }
            }
            SingleChange { kind: ChangeKind::AddVoter, replica: r }
        }
        MembershipChange::Remove(node) => {
            let Some(r) = on(node) else {
                return Err(invalid(node, "not a member"));
            };
            // A voter is never removed directly: it is demoted (the caller then removes
            // the learner; `conf_change` does both steps for a lone `Remove`).
            let kind = if conf.is_voter(r.id) { ChangeKind::AddLearner } else { ChangeKind::Remove };
            SingleChange { kind, replica: r }
        }
        MembershipChange::Joint(_) => return Err(invalid(0, "nested joint change")),
    })
}

fn map_propose_err(g: &Group, e: CoreProposeError) -> ProposeError {
    match e {
        CoreProposeError::NotLeader { leader_hint } => {
            ProposeError::NotLeader { leader_hint: leader_hint.map(|r| r.node) }
        }
        CoreProposeError::TransferInProgress { to } => ProposeError::TransferInProgress { to: g.node_of(to) },
        // Membership-only refusals; a data proposal never gets them.
        CoreProposeError::ConfChangePending
        | CoreProposeError::LeaderNotReady
        | CoreProposeError::InvalidConfChange(_) => ProposeError::NotLeader { leader_hint: g.leader_node() },
    }
}

fn map_membership_err(e: CoreProposeError) -> MembershipError {
    match e {
        CoreProposeError::NotLeader { leader_hint } => {
            MembershipError::NotLeader { leader_hint: leader_hint.map(|r| r.node) }
        }
        CoreProposeError::TransferInProgress { .. } => MembershipError::TransferInProgress,
        CoreProposeError::ConfChangePending => MembershipError::ChangePending,
        CoreProposeError::LeaderNotReady => MembershipError::LeaderNotReady,
        CoreProposeError::InvalidConfChange(c) => MembershipError::Conf(c),
    }
}
