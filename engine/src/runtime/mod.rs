//! The multi-raft runtime: thread-per-core workers that own their groups outright, the
//! network thread that owns the [`Transport`], and the commands between them.
//!
//! This file owns the `Runtime` handle: it starts the threads (after recovery,
//! `recovery`), routes each request to the worker that owns its group (`route`) through
//! a bounded mailbox (each worker also has a bounded control mailbox, fed only by the
//! network thread with received liveness items and drained first), gathers status and
//! metrics, and stops everything. Never shares
//! Raft state between threads: a group is touched only by its worker; the only shared
//! objects are the WAL (thread-safe), counters and flags (`shared`), the event
//! subscriptions (`event_hub`) and the leader view (`leader_view`), which workers write
//! and embedders read without locks.
//!
//! Where things are: the commands (`command`); the network thread (`net_loop`); a worker's
//! loop and turn (`worker`, which lists the files of each concern of the turn); the apply
//! thread (`apply`); the outcome rules of proposals and membership changes, public for the
//! core simulator ([`waiters`]).

mod admission;
mod announce;
mod apply;
mod apply_hold;
mod apply_lane;
mod apply_link;
mod clock;
mod command;
mod compaction;
mod durable_acks;
pub(crate) mod event_hub;
mod export;
mod export_file;
mod gc;
mod group;
mod heartbeats;
mod holdings;
mod import;
mod incarnation;
mod leader_view;
mod lifecycle;
mod load;
mod load_board;
mod load_book;
mod load_worker;
mod membership;
mod net_lanes;
mod net_loop;
mod observe;
mod pending;
mod persisted;
mod quiescence;
mod read_local;
mod ready;
mod recovery;
mod removal;
mod requests;
mod route;
mod session_propose;
mod sessions;
mod shared;
mod snap_receive;
mod snap_request;
mod snapfile;
mod snapshot_waiters;
mod snapshots;
mod split;
mod split_child;
mod stop;
mod store;
mod tombstones;
pub mod waiters;
mod wake_queue;
mod worker;
mod write_pipeline;
mod writeback;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{bounded, unbounded, Sender, TrySendError};
use flotilla_wal::Wal;

use command::{Cmd, NetCmd};
#[doc(hidden)]
pub use load_book::LoadProbe;
pub(crate) use pending::pending;
use pending::Completer;
pub use pending::{Abandoned, Pending};
use route::route;
use shared::{Counters, Shared, WorkerGauges};

use crate::api::{
    BusyReason, CreateGroupError, GroupStatus, MembershipChange, MembershipError, MembershipProposal,
    Metrics, OpenError, Proposal, ProposeError, ReadBarrier, ReadError, StateMachine, StateMachineFactory,
    TransferError, Unavailable, ValidEngineConfig,
};
use crate::api::{EventStream, LeaderInfo, SubscribeError};
use crate::raft::conf::ConfState;
use crate::raft::types::{NodeId, ReplicaId};
use crate::transport::{Transport, TransportStatsSource};

/// The running engine: worker threads, the network thread, the WAL.
pub(crate) struct Runtime {
    shared: Arc<Shared>,
    workers: Vec<Sender<Cmd>>,
    threads: Vec<JoinHandle<()>>,
    net_thread: Option<JoinHandle<()>>,
    /// The transport's figures for `metrics`, read while the network thread owns it.
    net_stats: Option<Arc<dyn TransportStatsSource>>,
    /// The data directory's lock: the last field, so it is released only after the
    /// threads stopped (`Drop::drop`) and the WAL closed (`shared`, dropped first).
    _lock: flotilla_wal::DirLock,
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
        flotilla_wal::create_private_dir(&c.data_dir)?;
        // Before anything in the directory is read or cleaned up: one engine at a time.
        let lock = flotilla_wal::DirLock::acquire(&c.data_dir).map_err(|e| match e {
            flotilla_wal::LockError::Held { dir, holder } => OpenError::Locked { dir, holder },
            flotilla_wal::LockError::Io { source, .. } => OpenError::Io(source),
            other => OpenError::Io(std::io::Error::other(other.to_string())),
        })?;
        let snap_dir = c.data_dir.join("snap");
        flotilla_wal::create_private_dir(&snap_dir)?;
        snapfile::remove_temporaries(&snap_dir);
        let wal = Arc::new(match fs {
            Some(fs) => Wal::open_with_fs(c.wal.clone(), fs)?,
            None => Wal::open(c.wal.clone())?,
        });
        // Under the data directory's lock: one process bumps it.
        let incarnation = incarnation::bump(&c.data_dir)?;
        let (net_tx, net_rx) = unbounded();
        let (net_ctl_tx, net_ctl_rx) = bounded(net_lanes::NET_CONTROL_BATCHES);
        let n = c.workers;
        let shared = Arc::new(Shared {
            node: c.node_id,
            incarnation,
            cfg: cfg.clone(),
            wal,
            snap_dir,
            factory,
            net: net_tx,
            net_ctl: net_ctl_tx,
            failed: AtomicBool::new(false),
            routes: std::sync::Mutex::new(Vec::new()),
            counters: Counters::default(),
            gauges: (0..n).map(|_| WorkerGauges::default()).collect(),
            events: Default::default(),
            leaders: Default::default(),
            apply_latency: Default::default(),
            loads: load_board::LoadBoard::new(n, load_book::ewma_of(c)),
            sender: if c.direct_network { transport.sender() } else { None },
            acks_when_durable: Default::default(),
            inbound: Default::default(),
        });
        let mut recovered = recovery::recover(&shared)?;
        let mut workers = Vec::with_capacity(n);
        let mut control = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        let mut start = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = bounded(c.mailbox_capacity);
            // The control mailbox: received liveness items only (heartbeats, votes, their
            // answers, removal items), from the network thread, drained first.
            let (ctl_tx, ctl_rx) = bounded(c.mailbox_capacity);
            workers.push(tx);
            control.push(ctl_tx);
            let mine = recovered.take_for(i, n);
            start.push((rx, ctl_rx, mine));
        }
        *shared.routes.lock().unwrap_or_else(|e| e.into_inner()) = workers.clone();
        for (i, (rx, ctl_rx, mine)) in start.into_iter().enumerate() {
            let w = worker::Worker::new(i, shared.clone(), rx, ctl_rx, mine).map_err(OpenError::Io)?;
            let t = std::thread::Builder::new()
                .name(format!("flotilla-worker-{i}"))
                .spawn(move || w.run())
                .map_err(OpenError::Io)?;
            threads.push(t);
        }
        let routes = workers.clone();
        let sh = shared.clone();
        let net_stats = transport.stats_source();
        let mut transport = transport;
        if c.direct_network {
            shared.inbound.store(Some(Arc::new(shared::InboundRoutes {
                workers: workers.clone(),
                control: control.clone(),
            })));
            let sink_sh = shared.clone();
            let sink: crate::transport::ItemsSink = Arc::new(move |from, items, hold| {
                if let Some(r) = sink_sh.inbound.load().as_ref() {
                    shared::bump(&sink_sh.counters.net_direct_receives);
                    net_loop::deliver(from, items, hold, &r.workers, &r.control, &sink_sh);
                }
            });
            if !transport.set_items_sink(sink) {
                shared.inbound.store(None);
            }
        }
        let net_thread = std::thread::Builder::new()
            .name("flotilla-net".into())
            .spawn(move || net_loop::run(transport, net_rx, net_ctl_rx, routes, control, sh))
            .map_err(OpenError::Io)?;
        tracing::info!("node {} open with {n} workers", c.node_id);
        Ok(Runtime { shared, workers, threads, net_thread: Some(net_thread), net_stats, _lock: lock })
    }

    pub(crate) fn node_id(&self) -> NodeId {
        self.shared.node
    }

    fn worker_of(&self, group: u64) -> &Sender<Cmd> {
        // `workers` is never empty (validated: at least one worker).
        &self.workers[route(group, self.workers.len())]
    }

    /// Hands `cmd` to `group`'s worker: `Busy(Mailbox)` when its mailbox is full,
    /// `Shutdown` when it exited.
    fn send(&self, group: u64, cmd: Cmd) -> Result<(), Unavailable> {
        match self.worker_of(group).try_send(cmd) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Unavailable::Busy(BusyReason::Mailbox)),
            Err(TrySendError::Disconnected(_)) => Err(Unavailable::Shutdown),
        }
    }

    /// `StorageFailed` once the engine stopped on a storage failure: every request is
    /// refused from then on.
    fn live(&self) -> Result<(), Unavailable> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(Unavailable::StorageFailed);
        }
        Ok(())
    }

    /// Hands the request `cmd` (built around the completer of the returned `Pending`) to
    /// `group`'s worker: refused as [`Self::live`], then as [`Self::send`].
    fn request<T: Abandoned>(
        &self,
        group: u64,
        cmd: impl FnOnce(Completer<T>) -> Cmd,
    ) -> Result<Pending<T>, Unavailable> {
        self.live()?;
        let (p, done) = pending();
        self.send(group, cmd(done))?;
        Ok(p)
    }

    pub(crate) fn create_group(
        &self,
        group: u64,
        replica: ReplicaId,
        conf: ConfState,
        sm: Box<dyn StateMachine>,
        first_leader: Option<bool>,
    ) -> Pending<Result<(), CreateGroupError>> {
        let cmd = |done| Cmd::Create { group, replica, conf: Box::new(conf), sm, first_leader, done };
        self.request(group, cmd).unwrap_or_else(|e| {
            Pending::ready(Err(match e {
                Unavailable::Busy(_) => CreateGroupError::Busy,
                Unavailable::StorageFailed => CreateGroupError::StorageFailed,
                // `request` answers only `StorageFailed`, `Busy` or `Shutdown`.
                _ => CreateGroupError::Shutdown,
            }))
        })
    }

    pub(crate) fn propose(&self, group: u64, data: Bytes) -> Result<Proposal, ProposeError> {
        self.live()?;
        let max = self.shared.cfg.get().max_entry_bytes;
        if data.len() > max {
            return Err(ProposeError::TooLarge { len: data.len(), max });
        }
        self.request(group, |done| Cmd::Propose { group, data, done }).map_err(|e| {
            if let Unavailable::Busy(reason) = e {
                self.shared.counters.refused(reason);
            }
            e.into()
        })
    }

    pub(crate) fn remove_group(&self, group: u64) -> Pending<Result<(), ProposeError>> {
        self.request(group, |done| Cmd::Remove { group, done })
            .unwrap_or_else(|e| Pending::ready(Err(e.into())))
    }

    pub(crate) fn read_index(&self, group: u64) -> Result<ReadBarrier, ReadError> {
        Ok(self.request(group, |done| Cmd::Read { group, done })?)
    }

    /// A snapshot of `group` taken now (or its current one, if it covers the applied
    /// index), durable, with its file opened.
    pub(crate) fn take_snapshot(
        &self,
        group: u64,
    ) -> Result<snapshot_waiters::TakenSnapshot, crate::api::SnapshotError> {
        self.request(group, |done| Cmd::RequestSnapshot { group, done })?.wait()
    }

    pub(crate) fn read_local(
        &self,
        group: u64,
        bound: crate::api::Staleness,
    ) -> Result<u64, crate::api::ReadLocalError> {
        self.request(group, |done| Cmd::ReadLocal { group, bound, done })?.wait()
    }

    pub(crate) fn transfer_leader(&self, group: u64, node: NodeId) -> Pending<Result<(), TransferError>> {
        self.request(group, |done| Cmd::Transfer { group, node, done })
            .unwrap_or_else(|e| Pending::ready(Err(e.into())))
    }

    pub(crate) fn change_membership(
        &self,
        group: u64,
        change: MembershipChange,
    ) -> Result<MembershipProposal, MembershipError> {
        Ok(self.request(group, |done| Cmd::Conf { group, change, done })?)
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

    pub(crate) fn subscribe(&self, capacity: usize) -> Result<EventStream, SubscribeError> {
        self.shared.events.subscribe(capacity)
    }

    pub(crate) fn leader(&self, group: u64) -> Option<LeaderInfo> {
        self.shared.leaders.get(group)
    }

    pub(crate) fn hosts(&self, group: u64) -> bool {
        self.shared.leaders.contains(group)
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
            l(&c.refused_busy_worker_uncommitted),
        ];
        let net = self.net_stats.as_ref().map(|s| s.transport_stats()).unwrap_or_default();
        let load = self.shared.loads.total(clock::now_nanos());
        Metrics {
            wal_batches: l(&c.wal_batches),
            wal_batch_groups: l(&c.wal_batch_groups),
            wal_batch_bytes: l(&c.wal_batch_bytes),
            wal_inline_writes: l(&c.wal_inline_writes),
            wal_syncs: wal.syncs,
            wal_sync_nanos_total: wal.sync_nanos_total,
            wal_sync_nanos_max: wal.sync_nanos_max,
            wal_pending_bytes: gauge(|g| &g.wal_pending_bytes),
            wal_segments: self.shared.wal.segment_seqs().len() as u64,
            wal_compaction_passes: wal.compaction_passes,
            wal_compaction_bytes_rewritten: wal.compaction_bytes_rewritten,
            wal_compaction_segments_freed: wal.compaction_segments_freed,
            wal_segments_created: wal.segments_created,
            wal_segments_recycled: wal.segments_recycled,
            applied_entries: l(&c.applied_entries),
            applied_inline: l(&c.applied_inline),
            applied_inline_slow: l(&c.applied_inline_slow),
            apply_lag: gauge(|g| &g.apply_lag),
            apply_lag_bytes: gauge(|g| &g.apply_lag_bytes),
            uncommitted_bytes: gauge(|g| &g.uncommitted_bytes),
            reads_held: gauge(|g| &g.reads_held),
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
            refused_busy_worker_uncommitted: busy[5],
            reads_refused_busy: l(&c.reads_refused_busy),
            refused_not_leader: l(&c.refused_not_leader),
            replicas_created: l(&c.replicas_created),
            replicas_destroyed: l(&c.replicas_destroyed),
            tombstones_sent: l(&c.tombstones_sent),
            gc_probes_sent: l(&c.gc_probes_sent),
            tombstones_resent: l(&c.tombstones_resent),
            removals_confirmed: l(&c.removals_confirmed),
            effects_create_group: l(&c.effects_create_group),
            split_children_created: l(&c.split_children_created),
            split_children_kept: l(&c.split_children_kept),
            messages_dropped: l(&c.messages_dropped),
            raft_ticks: l(&c.raft_ticks),
            worker_ticks: l(&c.worker_ticks),
            worker_tick_wakes: l(&c.worker_tick_wakes),
            quiesced_groups: l(&c.quiesced_groups),
            liveness_wakes: l(&c.liveness_wakes),
            net_batches: l(&c.net_batches),
            net_direct_sends: l(&c.net_direct_sends),
            acks_sent_when_durable: l(&self.shared.acks_when_durable),
            net_direct_receives: l(&c.net_direct_receives),
            dropped_wrong_sender: l(&c.dropped_wrong_sender),
            creates_refused: l(&c.creates_refused),
            unconfirmed_replicas: l(&c.unconfirmed_replicas),
            unconfirmed_dropped: l(&c.unconfirmed_dropped),
            tombstones_unproven: l(&c.tombstones_unproven),
            snapshot_streams_refused: l(&c.snapshot_streams_refused),
            snapshot_streams_failed: l(&c.snapshot_streams_failed),
            snapshot_chunks_dropped: l(&c.snapshot_chunks_dropped),
            snapshot_progress_sent: l(&c.snapshot_progress_sent),
            snapshot_progress_received: l(&c.snapshot_progress_received),
            snapshot_streams_resumed: l(&c.snapshot_streams_resumed),
            snapshot_resumed_bytes: l(&c.snapshot_resumed_bytes),
            net_cert_not_after_unix: net.cert_not_after_unix,
            net_peer_cert_not_after_min_unix: net.peer_cert_not_after_min_unix,
            net_handshakes_refused: net.handshakes_refused,
            net_policy_refused: net.policy_refused,
            load_proposals_per_sec: load.proposals_per_sec.round() as u64,
            load_write_bytes_per_sec: load.write_bytes_per_sec.round() as u64,
            load_reads_per_sec: load.reads_per_sec.round() as u64,
            load_apply_micros_per_sec: (load.apply_secs_per_sec * 1e6).round() as u64,
        }
    }

    pub(crate) fn storage_failed(&self) -> bool {
        self.shared.failed.load(Ordering::Acquire)
    }

    pub(crate) fn latency_histograms(&self) -> crate::api::LatencyHistograms {
        crate::api::LatencyHistograms {
            wal_sync: self.shared.wal.sync_latency(),
            wal_compaction: self.shared.wal.compaction_latency(),
            apply: self.shared.apply_latency.snapshot(),
        }
    }

    /// The load of every group led here with a measured load, from the load board:
    /// lock-free, no mailbox round trip.
    pub(crate) fn group_loads(&self) -> Vec<(u64, crate::api::GroupLoad)> {
        let all = self.shared.loads.loads(clock::now_nanos());
        all.into_iter().filter(|(_, leader, _)| *leader).map(|(g, _, l)| (g, l)).collect()
    }

    pub(crate) fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.inbound.store(None);
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
