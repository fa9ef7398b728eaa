//! The multi-raft runtime: thread-per-core workers that own their groups outright, the
//! network thread that owns the [`Transport`], and the commands between them.
//!
//! Owns threads, mailboxes (crossbeam channels), routing (group -> worker by id) and
//! recovery at start. Its public [`waiters`] module holds the outcome rules of proposals
//! and membership changes (the core simulator uses it too). Each worker runs the ready loop of its groups (see `worker`). Never
//! shares Raft state between threads: a group is touched only by its worker; the only
//! shared objects are the WAL (thread-safe), counters and flags.
//!
//! The network thread polls the transport (which is `Send` but not `Sync`) without waiting,
//! and when nothing arrived sleeps on the queue of batches the workers queued together with
//! the transport's event signal (`Transport::event_signal`): outgoing batches leave at
//! once, arriving ones wake it, and an idle node's network thread sleeps. A transport with
//! no signal is polled every 200 µs instead.

mod apply;
mod apply_hold;
mod clock;
mod gc;
mod incarnation;
mod pending;
mod removal;
mod snapfile;
mod store;
pub mod waiters;
mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{bounded, unbounded, Receiver, Sender, TrySendError};
use flotilla_wal::Wal;

pub(crate) use pending::{pending, Completer};
pub use pending::{Abandoned, Pending};

use crate::api::{
    BusyReason, CreateGroupError, GroupStatus, MembershipChange, MembershipError, MembershipProposal,
    Metrics, OpenError, Proposal, ProposeError, ReadBarrier, ReadError, StateMachine, StateMachineFactory,
    TransferError, ValidEngineConfig,
};
use crate::raft::conf::ConfState;
use crate::raft::message::Message;
use crate::raft::types::{NodeId, ReplicaId};
use crate::transport::coalescer::expand;
use crate::transport::{Transport, TransportEvent, WireItem};

/// How long the idle network thread waits for a batch to send before polling the
/// transport again (the most an arriving batch waits).
const NET_POLL: Duration = Duration::from_micros(200);
/// How long the network thread sleeps at most when the transport has an event signal
/// (a safety net only: the signal wakes it).
const NET_IDLE_WAIT: Duration = Duration::from_millis(100);
/// Events handled per network-thread turn before sending again.
const NET_EVENTS_PER_TURN: usize = 256;

/// A command in a worker's mailbox.
pub(crate) enum Cmd {
    /// Messages from node `from`, by group.
    Msgs {
        from: NodeId,
        msgs: Vec<(u64, Message)>,
    },
    Propose {
        group: u64,
        data: Bytes,
        done: Completer<Result<Bytes, ProposeError>>,
    },
    Conf {
        group: u64,
        change: MembershipChange,
        done: Completer<Result<(), MembershipError>>,
    },
    Read {
        group: u64,
        done: Completer<Result<u64, ReadError>>,
    },
    Transfer {
        group: u64,
        node: NodeId,
        done: Completer<Result<(), TransferError>>,
    },
    Create {
        group: u64,
        replica: ReplicaId,
        conf: ConfState,
        sm: Box<dyn StateMachine>,
        /// `Some(true)`: this replica is the designated first leader and campaigns at
        /// once; `Some(false)`: another one is, wait longer before a first campaign.
        first_leader: Option<bool>,
        done: Completer<Result<(), CreateGroupError>>,
    },
    Status {
        group: Option<u64>,
        done: Sender<Vec<GroupStatus>>,
    },
    SnapshotSent {
        group: u64,
        replica: ReplicaId,
        ok: bool,
    },
    Remove {
        group: u64,
        done: Completer<Result<(), ProposeError>>,
    },
    /// Messages to `node` were lost (its connection went down, or batches to it were
    /// dropped): leaders move their followers there from Replicate back to Probe.
    PeerUnreachable {
        node: NodeId,
    },
    /// Node liveness: `node` went down, or reconnected as a new incarnation
    /// (`restarted`): wake the quiesced groups it concerns (rate-limited).
    Liveness {
        node: NodeId,
        restarted: bool,
    },
    /// A member of `group` says replica `replica` was removed by its configuration at
    /// `conf_index` (see [`WireItem::Tombstone`]).
    Tombstone {
        from: NodeId,
        group: u64,
        replica: ReplicaId,
        conf_index: u64,
    },
    /// Node `from` confirms that replica `replica` of `group` is destroyed there (see
    /// [`WireItem::TombstoneAck`]).
    TombstoneAck {
        from: NodeId,
        group: u64,
        replica: ReplicaId,
    },
    /// Replica `replica` of `group` on node `from` asks whether it still belongs to the
    /// group (see [`WireItem::GcProbe`]).
    GcProbe {
        from: NodeId,
        group: u64,
        replica: ReplicaId,
    },
    Shutdown,
}

/// A request to the network thread.
pub(crate) enum NetCmd {
    Send { to: NodeId, items: Vec<WireItem> },
    Snapshot { to: NodeId, group: u64, replica: ReplicaId, chunks: crate::transport::SnapshotChunks },
    Stop,
}

/// Engine-wide counters, updated by workers (see [`Metrics`] for their meaning).
#[derive(Default)]
pub(crate) struct Counters {
    pub wal_batches: AtomicU64,
    pub wal_batch_groups: AtomicU64,
    pub wal_batch_bytes: AtomicU64,
    pub forced_compactions: AtomicU64,
    pub compactions: AtomicU64,
    pub snapshots_sent: AtomicU64,
    pub snapshots_installed: AtomicU64,
    pub applied_entries: AtomicU64,
    pub elections: AtomicU64,
    pub leaders_elected: AtomicU64,
    pub transfers_started: AtomicU64,
    pub transfers_aborted: AtomicU64,
    pub membership_changes: AtomicU64,
    pub refused_busy_mailbox: AtomicU64,
    pub refused_busy_group_uncommitted: AtomicU64,
    pub refused_busy_worker_pending: AtomicU64,
    pub refused_busy_apply_backlog: AtomicU64,
    pub refused_busy_wal_pending: AtomicU64,
    pub refused_not_leader: AtomicU64,
    pub replicas_created: AtomicU64,
    pub replicas_destroyed: AtomicU64,
    pub tombstones_sent: AtomicU64,
    pub gc_probes_sent: AtomicU64,
    pub tombstones_resent: AtomicU64,
    pub removals_confirmed: AtomicU64,
    pub effects_create_group: AtomicU64,
    pub messages_dropped: AtomicU64,
    /// Raft ticks given to groups (quiesced groups get none).
    pub raft_ticks: AtomicU64,
    /// Worker ticks (each visits only the groups that are not quiesced).
    pub worker_ticks: AtomicU64,
    /// Groups quiesced now (a gauge).
    pub quiesced_groups: AtomicU64,
    /// Quiesced groups woken by node liveness.
    pub liveness_wakes: AtomicU64,
    /// Message batches (one transport frame each) handed to the network thread.
    pub net_batches: AtomicU64,
}

impl Counters {
    /// Counts a proposal refused with `Busy(reason)`.
    pub(crate) fn refused(&self, reason: BusyReason) {
        bump(match reason {
            BusyReason::Mailbox => &self.refused_busy_mailbox,
            BusyReason::GroupUncommitted => &self.refused_busy_group_uncommitted,
            BusyReason::WorkerPending => &self.refused_busy_worker_pending,
            BusyReason::ApplyBacklog => &self.refused_busy_apply_backlog,
            BusyReason::WalPending => &self.refused_busy_wal_pending,
        });
    }
}

/// Gauges one worker keeps current (summed by [`Engine::metrics`](crate::api::Engine)).
#[derive(Default)]
pub(crate) struct WorkerGauges {
    pub apply_lag: AtomicU64,
    pub wal_pending_bytes: AtomicU64,
}

/// What every worker shares.
pub(crate) struct Shared {
    pub node: NodeId,
    /// This life of the node (bumped durably at every open): the high bits of read
    /// contexts, so an answer meant for an earlier life never matches a new read.
    pub incarnation: u64,
    pub cfg: ValidEngineConfig,
    pub wal: Arc<Wal>,
    pub snap_dir: PathBuf,
    pub factory: StateMachineFactory,
    pub net: Sender<NetCmd>,
    /// Set once a WAL write failed: the engine stopped.
    pub failed: AtomicBool,
    /// Every worker's mailbox, for work one worker hands another (a group created by an
    /// effect belongs to the worker its id routes to). Emptied at shutdown, so the
    /// mailboxes disconnect.
    pub routes: std::sync::Mutex<Vec<Sender<Cmd>>>,
    pub counters: Counters,
    /// One per worker, by index.
    pub gauges: Vec<WorkerGauges>,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The running engine: worker threads, the network thread, the WAL.
pub(crate) struct Runtime {
    shared: Arc<Shared>,
    workers: Vec<Sender<Cmd>>,
    threads: Vec<JoinHandle<()>>,
    net_thread: Option<JoinHandle<()>>,
}

impl Runtime {
    /// Opens the WAL, recovers every group and starts the threads.
    pub(crate) fn start(
        cfg: ValidEngineConfig,
        transport: Box<dyn Transport>,
        factory: StateMachineFactory,
        fs: Option<Arc<dyn flotilla_wal::FileSystem>>,
    ) -> Result<Runtime, OpenError> {
        let c = cfg.get();
        std::fs::create_dir_all(&c.data_dir)?;
        let snap_dir = c.data_dir.join("snap");
        std::fs::create_dir_all(&snap_dir)?;
        snapfile::remove_temporaries(&snap_dir);
        let wal = Arc::new(match fs {
            Some(fs) => Wal::open_with_fs(c.wal.clone(), fs)?,
            None => Wal::open(c.wal.clone())?,
        });
        // After the WAL (which locks the directory): one process bumps it.
        let incarnation = incarnation::bump(&c.data_dir)?;
        let (net_tx, net_rx) = unbounded();
        let n = c.workers;
        let shared = Arc::new(Shared {
            node: c.node_id,
            incarnation,
            cfg: cfg.clone(),
            wal,
            snap_dir,
            factory,
            net: net_tx,
            failed: AtomicBool::new(false),
            routes: std::sync::Mutex::new(Vec::new()),
            counters: Counters::default(),
            gauges: (0..n).map(|_| WorkerGauges::default()).collect(),
        });
        let mut recovered = worker::recover(&shared)?;
        let mut workers = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        let mut start = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = bounded(c.mailbox_capacity);
            workers.push(tx);
            let mine = recovered.take_for(i, n);
            start.push((rx, mine));
        }
        *shared.routes.lock().unwrap_or_else(|e| e.into_inner()) = workers.clone();
        for (i, (rx, mine)) in start.into_iter().enumerate() {
            let w = worker::Worker::new(i, shared.clone(), rx, mine).map_err(OpenError::Io)?;
            let t = std::thread::Builder::new()
                .name(format!("flotilla-worker-{i}"))
                .spawn(move || w.run())
                .map_err(OpenError::Io)?;
            threads.push(t);
        }
        let routes = workers.clone();
        let sh = shared.clone();
        let net_thread = std::thread::Builder::new()
            .name("flotilla-net".into())
            .spawn(move || net_loop(transport, net_rx, routes, sh))
            .map_err(OpenError::Io)?;
        log::info!("flotilla: node {} open with {n} workers", c.node_id);
        Ok(Runtime { shared, workers, threads, net_thread: Some(net_thread) })
    }

    pub(crate) fn node_id(&self) -> NodeId {
        self.shared.node
    }

    fn worker_of(&self, group: u64) -> &Sender<Cmd> {
        // `workers` is never empty (validated: at least one worker).
        &self.workers[route(group, self.workers.len())]
    }

    fn send(&self, group: u64, cmd: Cmd) -> Result<(), bool> {
        match self.worker_of(group).try_send(cmd) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(true),
            Err(TrySendError::Disconnected(_)) => Err(false),
        }
    }

    pub(crate) fn create_group(
        &self,
        group: u64,
        replica: ReplicaId,
        conf: ConfState,
        sm: Box<dyn StateMachine>,
        first_leader: Option<bool>,
    ) -> Pending<Result<(), CreateGroupError>> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Pending::ready(Err(CreateGroupError::StorageFailed));
        }
        let (p, done) = pending();
        match self.send(group, Cmd::Create { group, replica, conf, sm, first_leader, done }) {
            Ok(()) => p,
            Err(true) => Pending::ready(Err(CreateGroupError::Busy)),
            Err(false) => Pending::ready(Err(CreateGroupError::Shutdown)),
        }
    }

    pub(crate) fn propose(&self, group: u64, data: Bytes) -> Result<Proposal, ProposeError> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(ProposeError::StorageFailed);
        }
        let max = self.shared.cfg.get().max_entry_bytes;
        if data.len() > max {
            return Err(ProposeError::TooLarge { len: data.len(), max });
        }
        let (p, done) = pending();
        match self.send(group, Cmd::Propose { group, data, done }) {
            Ok(()) => Ok(p),
            Err(true) => {
                self.shared.counters.refused(BusyReason::Mailbox);
                Err(ProposeError::Busy(BusyReason::Mailbox))
            }
            Err(false) => Err(ProposeError::Shutdown),
        }
    }

    pub(crate) fn remove_group(&self, group: u64) -> Pending<Result<(), ProposeError>> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Pending::ready(Err(ProposeError::StorageFailed));
        }
        let (p, done) = pending();
        match self.send(group, Cmd::Remove { group, done }) {
            Ok(()) => p,
            Err(true) => Pending::ready(Err(ProposeError::Busy(crate::api::BusyReason::Mailbox))),
            Err(false) => Pending::ready(Err(ProposeError::Shutdown)),
        }
    }

    pub(crate) fn read_index(&self, group: u64) -> Result<ReadBarrier, ReadError> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(ReadError::StorageFailed);
        }
        let (p, done) = pending();
        match self.send(group, Cmd::Read { group, done }) {
            Ok(()) => Ok(p),
            Err(true) => Err(ReadError::Busy),
            Err(false) => Err(ReadError::Shutdown),
        }
    }

    pub(crate) fn transfer_leader(&self, group: u64, node: NodeId) -> Pending<Result<(), TransferError>> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Pending::ready(Err(TransferError::StorageFailed));
        }
        let (p, done) = pending();
        match self.send(group, Cmd::Transfer { group, node, done }) {
            Ok(()) => p,
            Err(true) => Pending::ready(Err(TransferError::Busy)),
            Err(false) => Pending::ready(Err(TransferError::Shutdown)),
        }
    }

    pub(crate) fn change_membership(
        &self,
        group: u64,
        change: MembershipChange,
    ) -> Result<MembershipProposal, MembershipError> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(MembershipError::StorageFailed);
        }
        let (p, done) = pending();
        match self.send(group, Cmd::Conf { group, change, done }) {
            Ok(()) => Ok(p),
            Err(true) => Err(MembershipError::Busy),
            Err(false) => Err(MembershipError::Shutdown),
        }
    }

    fn collect_status(&self, group: Option<u64>) -> Vec<GroupStatus> {
        let (tx, rx) = unbounded();
        let targets: Vec<&Sender<Cmd>> = match group {
            Some(g) => vec![self.worker_of(g)],
            None => self.workers.iter().collect(),
        };
        let mut asked = 0;
        for w in targets {
            // Status waits for room: it is an operator call, not on the data path.
            if w.send_timeout(Cmd::Status { group, done: tx.clone() }, Duration::from_secs(5)).is_ok() {
                asked += 1;
            }
        }
        drop(tx);
        let mut out = Vec::new();
        for _ in 0..asked {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(v) => out.extend(v),
                Err(_) => break,
            }
        }
        out.sort_by_key(|s| s.group);
        out
    }

    pub(crate) fn status(&self) -> Vec<GroupStatus> {
        self.collect_status(None)
    }

    pub(crate) fn group_status(&self, group: u64) -> Option<GroupStatus> {
        self.collect_status(Some(group)).into_iter().next()
    }

    pub(crate) fn metrics(&self) -> Metrics {
        let c = &self.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let wal = self.shared.wal.stats();
        let gauge = |f: fn(&WorkerGauges) -> &AtomicU64| self.shared.gauges.iter().map(|g| l(f(g))).sum();
        let busy = [
            l(&c.refused_busy_mailbox),
            l(&c.refused_busy_group_uncommitted),
            l(&c.refused_busy_worker_pending),
            l(&c.refused_busy_apply_backlog),
            l(&c.refused_busy_wal_pending),
        ];
        Metrics {
            wal_batches: l(&c.wal_batches),
            wal_batch_groups: l(&c.wal_batch_groups),
            wal_batch_bytes: l(&c.wal_batch_bytes),
            wal_syncs: wal.syncs,
            wal_sync_nanos_total: wal.sync_nanos_total,
            wal_sync_nanos_max: wal.sync_nanos_max,
            wal_pending_bytes: gauge(|g| &g.wal_pending_bytes),
            wal_segments: self.shared.wal.segment_seqs().len() as u64,
            applied_entries: l(&c.applied_entries),
            apply_lag: gauge(|g| &g.apply_lag),
            elections: l(&c.elections),
            leaders_elected: l(&c.leaders_elected),
            transfers_started: l(&c.transfers_started),
            transfers_aborted: l(&c.transfers_aborted),
            membership_changes: l(&c.membership_changes),
            mailbox_depth: self.workers.iter().map(|w| w.len() as u64).sum(),
            net_queue_depth: self.shared.net.len() as u64,
            forced_compactions: l(&c.forced_compactions),
            compactions: l(&c.compactions),
            snapshots_sent: l(&c.snapshots_sent),
            snapshots_installed: l(&c.snapshots_installed),
            refused_busy: busy.iter().sum(),
            refused_busy_mailbox: busy[0],
            refused_busy_group_uncommitted: busy[1],
            refused_busy_worker_pending: busy[2],
            refused_busy_apply_backlog: busy[3],
            refused_busy_wal_pending: busy[4],
            refused_not_leader: l(&c.refused_not_leader),
            replicas_created: l(&c.replicas_created),
            replicas_destroyed: l(&c.replicas_destroyed),
            tombstones_sent: l(&c.tombstones_sent),
            gc_probes_sent: l(&c.gc_probes_sent),
            tombstones_resent: l(&c.tombstones_resent),
            removals_confirmed: l(&c.removals_confirmed),
            effects_create_group: l(&c.effects_create_group),
            messages_dropped: l(&c.messages_dropped),
            raft_ticks: l(&c.raft_ticks),
            worker_ticks: l(&c.worker_ticks),
            quiesced_groups: l(&c.quiesced_groups),
            liveness_wakes: l(&c.liveness_wakes),
            net_batches: l(&c.net_batches),
        }
    }

    pub(crate) fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for w in &self.workers {
            // A worker whose mailbox is full still sees the disconnect below.
            let _ = w.send_timeout(Cmd::Shutdown, Duration::from_secs(1));
        }
        self.workers.clear();
        self.shared.routes.lock().unwrap_or_else(|e| e.into_inner()).clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let _ = self.shared.net.send(NetCmd::Stop);
        if let Some(t) = self.net_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if !self.threads.is_empty() || self.net_thread.is_some() {
            self.stop();
        }
    }
}

/// The worker owning `group` among `n`.
pub(crate) fn route(group: u64, n: usize) -> usize {
    // Mix the id so that ids with a common stride still spread over the workers.
    let mut z = group.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % n.max(1) as u64) as usize
}

fn net_loop(
    mut transport: Box<dyn Transport>,
    rx: Receiver<NetCmd>,
    workers: Vec<Sender<Cmd>>,
    sh: Arc<Shared>,
) {
    let n = workers.len();
    let mut snap_tags: HashMap<u64, (u64, ReplicaId)> = HashMap::new();
    // The last incarnation seen of each peer: a different one means it restarted.
    let mut incarnations: HashMap<NodeId, u64> = HashMap::new();
    let mut next_tag: u64 = 1;
    let signal = transport.event_signal();
    loop {
        // Clear the signal before polling: an event that arrives later sets it again.
        if let Some(s) = &signal {
            while s.try_recv().is_ok() {}
        }
        // Send everything queued.
        loop {
            match rx.try_recv() {
                Ok(NetCmd::Send { to, items }) => {
                    if let Err(e) = transport.send(to, 0, &items) {
                        log::debug!("flotilla: send to node {to} failed: {e}");
                    }
                }
                Ok(NetCmd::Snapshot { to, group, replica, chunks }) => {
                    let tag = next_tag;
                    next_tag += 1;
                    match transport.send_snapshot(to, tag, group, chunks) {
                        Ok(()) => {
                            snap_tags.insert(tag, (group, replica));
                        }
                        Err(e) => {
                            log::warn!("flotilla: snapshot of group {group} to node {to} refused: {e}");
                            let _ = workers[route(group, n)].try_send(Cmd::SnapshotSent {
                                group,
                                replica,
                                ok: false,
                            });
                        }
                    }
                }
                Ok(NetCmd::Stop) | Err(crossbeam_channel::TryRecvError::Disconnected) => return,
                Err(crossbeam_channel::TryRecvError::Empty) => break,
            }
        }
        // Receive what has arrived, without waiting: the transport's timed wait may be
        // coarse (1 ms for QUIC) and would hold the sends queued meanwhile.
        let mut got = 0;
        for _ in 0..NET_EVENTS_PER_TURN {
            let Some(ev) = transport.recv_timeout(Duration::ZERO) else { break };
            got += 1;
            match ev {
                TransportEvent::Items { from, mut items } => {
                    if items.iter().any(|it| {
                        matches!(
                            it,
                            WireItem::Tombstone { .. }
                                | WireItem::GcProbe { .. }
                                | WireItem::TombstoneAck { .. }
                        )
                    }) {
                        items.retain(|it| {
                            let (group, cmd) = match *it {
                                WireItem::Tombstone { group, replica, conf_index } => {
                                    (group, Cmd::Tombstone { from, group, replica, conf_index })
                                }
                                WireItem::TombstoneAck { group, replica } => {
                                    (group, Cmd::TombstoneAck { from, group, replica })
                                }
                                WireItem::GcProbe { group, replica } => {
                                    (group, Cmd::GcProbe { from, group, replica })
                                }
                                _ => return true,
                            };
                            if workers[route(group, n)].try_send(cmd).is_err() {
                                bump(&sh.counters.messages_dropped);
                            }
                            false
                        });
                    }
                    let mut per: Vec<Vec<(u64, Message)>> = (0..n).map(|_| Vec::new()).collect();
                    for (g, m) in expand(items) {
                        per[route(g, n)].push((g, m));
                    }
                    for (i, msgs) in per.into_iter().enumerate() {
                        if msgs.is_empty() {
                            continue;
                        }
                        if workers[i].try_send(Cmd::Msgs { from, msgs }).is_err() {
                            bump(&sh.counters.messages_dropped);
                        }
                    }
                }
                TransportEvent::SnapshotSent { tag, ok, .. } => {
                    if let Some((group, replica)) = snap_tags.remove(&tag) {
                        let _ = workers[route(group, n)].try_send(Cmd::SnapshotSent { group, replica, ok });
                    }
                }
                TransportEvent::Malformed { from, error } => {
                    log::warn!("flotilla: malformed batch from node {from}: {error}");
                }
                TransportEvent::PeerDown { node } => {
                    for w in &workers {
                        let _ = w.try_send(Cmd::PeerUnreachable { node });
                        let _ = w.try_send(Cmd::Liveness { node, restarted: false });
                    }
                }
                TransportEvent::Dropped { to: node, .. } => {
                    for w in &workers {
                        let _ = w.try_send(Cmd::PeerUnreachable { node });
                    }
                }
                TransportEvent::PeerUp { node, incarnation } => {
                    let before = incarnations.insert(node, incarnation);
                    if before.is_some_and(|b| b != incarnation) {
                        for w in &workers {
                            let _ = w.try_send(Cmd::Liveness { node, restarted: true });
                        }
                    }
                }
            }
        }
        if got < NET_EVENTS_PER_TURN {
            // Drained: wait for something to send or (with a signal) something to arrive.
            let mut sel = crossbeam_channel::Select::new();
            sel.recv(&rx);
            match &signal {
                Some(s) => {
                    sel.recv(s);
                    let _ = sel.ready_timeout(NET_IDLE_WAIT);
                }
                None if got == 0 => {
                    let _ = sel.ready_timeout(NET_POLL);
                }
                None => {}
            }
        }
    }
}
