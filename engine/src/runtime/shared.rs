//! What every thread of a runtime shares: the node's identity and configuration, the WAL,
//! the state-machine factory, the network queue, the stop flag, the routes to every
//! worker, the engine-wide counters and each worker's gauges.
//!
//! Owns the shared context and the counter helpers (`bump`, `bump_by`). Never holds Raft
//! state: a group is touched only by its worker.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;
use flotilla_wal::Wal;

use super::command::{Cmd, NetCmd};
#[cfg(doc)]
use crate::api::Metrics;
use crate::api::{BusyReason, StateMachineFactory, ValidEngineConfig};
use crate::raft::types::NodeId;

/// Engine-wide counters, updated by workers (see [`Metrics`] for their meaning).
#[derive(Default)]
pub(crate) struct Counters {
    pub wal_batches: AtomicU64,
    pub wal_batch_groups: AtomicU64,
    pub wal_batch_bytes: AtomicU64,
    pub wal_inline_writes: AtomicU64,
    pub forced_compactions: AtomicU64,
    pub compactions: AtomicU64,
    pub snapshots_sent: AtomicU64,
    pub snapshots_installed: AtomicU64,
    pub applied_entries: AtomicU64,
    pub applied_inline: AtomicU64,
    /// Of those, batches that took past `EngineConfig::inline_apply_slow` (each pauses
    /// inline apply for its group).
    pub applied_inline_slow: AtomicU64,
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
    pub refused_busy_worker_uncommitted: AtomicU64,
    pub reads_refused_busy: AtomicU64,
    pub refused_not_leader: AtomicU64,
    pub replicas_created: AtomicU64,
    pub replicas_destroyed: AtomicU64,
    pub tombstones_sent: AtomicU64,
    pub gc_probes_sent: AtomicU64,
    pub tombstones_resent: AtomicU64,
    pub removals_confirmed: AtomicU64,
    pub effects_create_group: AtomicU64,
    pub split_children_created: AtomicU64,
    pub split_children_kept: AtomicU64,
    pub messages_dropped: AtomicU64,
    /// Raft ticks given to groups (quiesced groups get none).
    pub raft_ticks: AtomicU64,
    /// Worker ticks (each visits only the groups that are not quiesced).
    pub worker_ticks: AtomicU64,
    /// Worker turns that counted ticks: the clock's wake-ups (an idle worker counts
    /// `EngineConfig::idle_wake_ticks` ticks per wake-up).
    pub worker_tick_wakes: AtomicU64,
    /// Groups quiesced now (a gauge).
    pub quiesced_groups: AtomicU64,
    /// Quiesced groups woken by node liveness.
    pub liveness_wakes: AtomicU64,
    /// Message batches (one transport frame each) handed to the network thread.
    pub net_batches: AtomicU64,
    pub net_direct_sends: AtomicU64,
    pub net_direct_receives: AtomicU64,
    /// Messages dropped: sender replica not on the sending node.
    pub dropped_wrong_sender: AtomicU64,
    /// Creations (or removal records) from messages refused by the policy or the caps.
    pub creates_refused: AtomicU64,
    /// Replicas created from messages and not yet confirmed (a gauge).
    pub unconfirmed_replicas: AtomicU64,
    /// Unconfirmed replicas dropped (expired or replaced by a founding create).
    pub unconfirmed_dropped: AtomicU64,
    /// Tombstones from a node hosting no voter of the replica's configuration.
    pub tombstones_unproven: AtomicU64,
    /// Received snapshot streams refused at `max_snapshot_bytes`.
    pub snapshot_streams_refused: AtomicU64,
    /// Received snapshot streams dropped on a write error or after going idle.
    pub snapshot_streams_failed: AtomicU64,
    /// Received snapshot chunks not written (held already, a gap, refused, queue full).
    pub snapshot_chunks_dropped: AtomicU64,
    /// Snapshot progress reports sent to leaders, and received from followers.
    pub snapshot_progress_sent: AtomicU64,
    pub snapshot_progress_received: AtomicU64,
    /// Snapshot streams started past offset 0, and the bytes they skipped.
    pub snapshot_streams_resumed: AtomicU64,
    pub snapshot_resumed_bytes: AtomicU64,
}

impl Counters {
    /// Counts a proposal (a read, for `PendingReads`) refused with `Busy(reason)`.
    pub(crate) fn refused(&self, reason: BusyReason) {
        bump(match reason {
            BusyReason::Mailbox => &self.refused_busy_mailbox,
            BusyReason::GroupUncommitted => &self.refused_busy_group_uncommitted,
            BusyReason::WorkerPending => &self.refused_busy_worker_pending,
            BusyReason::ApplyBacklog => &self.refused_busy_apply_backlog,
            BusyReason::WalPending => &self.refused_busy_wal_pending,
            BusyReason::WorkerUncommitted => &self.refused_busy_worker_uncommitted,
            BusyReason::PendingReads | BusyReason::WorkerReads => &self.reads_refused_busy,
        });
    }
}

/// Gauges one worker keeps current (summed by [`Engine::metrics`](crate::api::Engine)).
#[derive(Default)]
pub(crate) struct WorkerGauges {
    pub apply_lag: AtomicU64,
    pub apply_lag_bytes: AtomicU64,
    pub uncommitted_bytes: AtomicU64,
    pub reads_held: AtomicU64,
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
    /// The network thread's bounded control queue, sent before `net` (`net_lanes`).
    pub net_ctl: Sender<NetCmd>,
    /// Set once a WAL write failed: the engine stopped.
    pub failed: AtomicBool,
    /// Every worker's mailbox, for work one worker hands another (a group created by an
    /// effect belongs to the worker its id routes to). Emptied at shutdown, so the
    /// mailboxes disconnect.
    pub routes: std::sync::Mutex<Vec<Sender<Cmd>>>,
    pub counters: Counters,
    /// One per worker, by index.
    pub gauges: Vec<WorkerGauges>,
    /// Event subscriptions (`event_hub`) and the leader view (`leader_view`).
    pub events: Arc<super::event_hub::EventHub>,
    pub leaders: super::leader_view::LeaderView,
    /// Each state machine apply, timed by the apply threads.
    pub apply_latency: Arc<flotilla_wal::LatencyHistogram>,
    /// Each worker's measured replicas, published once per fold interval (`load_board`).
    pub loads: super::load_board::LoadBoard,
    /// The transport's handle the workers send through themselves
    /// (`EngineConfig::direct_network`); `None`: through the network thread.
    pub sender: Option<Arc<dyn crate::transport::TransportSender>>,
    /// Acknowledgements sent by the hooks that run when a write is durable
    /// (`durable_acks`, `Metrics::acks_sent_when_durable`).
    pub acks_when_durable: Arc<AtomicU64>,
    /// The mailboxes the transport's receiving threads hand batches to directly
    /// (`EngineConfig::direct_network`, `net_loop::deliver`); cleared at shutdown so the
    /// mailboxes disconnect.
    pub inbound: arc_swap::ArcSwapOption<InboundRoutes>,
}

/// Every worker's mailbox and control mailbox, for batches delivered by the transport's
/// own threads.
pub(crate) struct InboundRoutes {
    /// The mailboxes, by worker.
    pub workers: Vec<Sender<Cmd>>,
    /// The control mailboxes, by worker.
    pub control: Vec<Sender<Cmd>>,
}

/// Adds one to counter `c`.
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to counter `c`.
pub(crate) fn bump_by(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
