//! What the engine reports about itself: engine-wide [`Metrics`] (counters and gauges),
//! and each replica's [`GroupStatus`] with its followers' [`PeerStatus`].
//!
//! Owns the shapes of these reports. Never counts or collects: the runtime does.

use crate::raft::conf::ConfState;
use crate::raft::types::{Replica, ReplicaId, Role};

/// A follower as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The follower's replica.
    pub replica: Replica,
    /// Highest index known durable there.
    pub matched: u64,
    /// Entries behind the leader's last index.
    pub lag: u64,
}

/// One replica's state, for operators and rebalancers.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupStatus {
    /// The group.
    pub group: u64,
    /// This node's replica id in the group.
    pub replica: ReplicaId,
    /// Its role.
    pub role: Role,
    /// Its term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<Replica>,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Last log index.
    pub last_index: u64,
    /// The configuration.
    pub members: ConfState,
    /// Followers (leaders only).
    pub peers: Vec<PeerStatus>,
    /// The replica's measured load (all zero when `EngineConfig::measure_load` is off).
    pub load: super::GroupLoad,
}

/// Engine-wide metrics from [`Engine::metrics`]: counters since open (monotonic) and
/// gauges (a current value, marked so). The set is documented in ARCHITECTURE.md.
///
/// [`Engine::metrics`]: super::Engine::metrics
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metrics {
    /// WAL write batches submitted by the workers.
    pub wal_batches: u64,
    /// Group writes (one per `Ready` that wrote something) carried by those batches:
    /// divided by `wal_batches`, the mean groups per batch.
    pub wal_batch_groups: u64,
    /// Encoded bytes of those batches: divided by `wal_batches`, the mean batch size.
    pub wal_batch_bytes: u64,
    /// Of `wal_batches`, those a worker with nothing else to do wrote and synced on its
    /// own thread (the WAL's writer was free), with no hand-over to the WAL's threads.
    pub wal_inline_writes: u64,
    /// Group-commit write+sync calls of the WAL (one covers the batches of all workers
    /// that were waiting).
    pub wal_syncs: u64,
    /// Nanoseconds spent in those syncs in total, each from its writeback start through
    /// the index apply to the end of its fdatasync (mean sync latency: divide by
    /// `wal_syncs`).
    pub wal_sync_nanos_total: u64,
    /// The longest of those syncs (measured as above), in nanoseconds.
    pub wal_sync_nanos_max: u64,
    /// Gauge: bytes of WAL batches submitted and not yet durable, over all workers.
    pub wal_pending_bytes: u64,
    /// Gauge: live WAL segments (see `EngineConfig::max_wal_segments`).
    pub wal_segments: u64,
    /// Compaction passes of the WAL's writer (rewriting sparse old segments, freeing dead
    /// ones); their durations are `LatencyHistograms::wal_compaction`.
    pub wal_compaction_passes: u64,
    /// Bytes of live records those passes copied from sparse segments to the log's head.
    pub wal_compaction_bytes_rewritten: u64,
    /// WAL segments those passes freed (deleted or recycled).
    pub wal_compaction_segments_freed: u64,
    /// WAL segments created by zero-filling a new file (the log grew, or no freed segment
    /// was left to recycle): each writes the segment's size to the disk beside the log.
    pub wal_segments_created: u64,
    /// WAL segments recycled from freed ones (no zero-filling).
    pub wal_segments_recycled: u64,
    /// Entries applied by the state machines.
    pub applied_entries: u64,
    /// Committed batches a worker applied on its own thread (`EngineConfig::inline_apply`:
    /// a few entries whose commands the state machine calls quick, while the apply thread
    /// was idle) instead of handing them to its apply thread.
    pub applied_inline: u64,
    /// Of those, batches that took longer than `EngineConfig::inline_apply_slow` (10 ms by
    /// default) on the worker (a state machine called
    /// quick a command that was not, or the worker was preempted): each sends its group's
    /// batches to the apply thread for a minute, and is logged as a warning.
    pub applied_inline_slow: u64,
    /// Gauge: apply lag, in entries committed and handed to the apply threads but not yet
    /// applied, over all workers.
    pub apply_lag: u64,
    /// Gauge: the same entries' bytes (`Entry::size`), bounded per worker by
    /// `EngineConfig::max_apply_backlog_bytes`.
    pub apply_lag_bytes: u64,
    /// Gauge: proposal bytes the leaders here appended and have not handed out for
    /// apply, bounded per worker by `EngineConfig::max_worker_uncommitted_bytes` (as of
    /// each worker's latest turn).
    pub uncommitted_bytes: u64,
    /// Gauge: reads held here, waiting for their barrier or (at a leader) for
    /// confirmation, bounded per worker by `EngineConfig::max_worker_pending_reads` (as
    /// of each worker's latest turn).
    pub reads_held: u64,
    /// Campaigns started by replicas here (PreVote rounds included).
    pub elections: u64,
    /// Times a replica here became leader.
    pub leaders_elected: u64,
    /// Leadership transfers started by leaders here.
    pub transfers_started: u64,
    /// Leadership transfers aborted (timeout, target left, superseded).
    pub transfers_aborted: u64,
    /// Membership changes applied by replicas here.
    pub membership_changes: u64,
    /// Gauge: commands queued in the workers' mailboxes.
    pub mailbox_depth: u64,
    /// Gauge: batches queued for the network thread.
    pub net_queue_depth: u64,
    /// Snapshots taken and logs compacted.
    pub compactions: u64,
    /// Of those, snapshots asked because the group pinned old WAL segments.
    pub forced_compactions: u64,
    /// Snapshot streams started to followers.
    pub snapshots_sent: u64,
    /// Snapshots received and installed.
    pub snapshots_installed: u64,
    /// Proposals refused with `Busy`, all reasons (the sum of the `refused_busy_*`).
    pub refused_busy: u64,
    /// ... because the worker's mailbox was full ([`BusyReason::Mailbox`]).
    ///
    /// [`BusyReason::Mailbox`]: super::BusyReason::Mailbox
    pub refused_busy_mailbox: u64,
    /// ... because of the group's unapplied bytes ([`BusyReason::GroupUncommitted`]).
    ///
    /// [`BusyReason::GroupUncommitted`]: super::BusyReason::GroupUncommitted
    pub refused_busy_group_uncommitted: u64,
    /// ... because of the worker's pending proposals ([`BusyReason::WorkerPending`]).
    ///
    /// [`BusyReason::WorkerPending`]: super::BusyReason::WorkerPending
    pub refused_busy_worker_pending: u64,
    /// ... because of the worker's apply backlog ([`BusyReason::ApplyBacklog`]).
    ///
    /// [`BusyReason::ApplyBacklog`]: super::BusyReason::ApplyBacklog
    pub refused_busy_apply_backlog: u64,
    /// ... because of the worker's pending WAL bytes ([`BusyReason::WalPending`]).
    ///
    /// [`BusyReason::WalPending`]: super::BusyReason::WalPending
    pub refused_busy_wal_pending: u64,
    /// ... because of the uncommitted bytes of all the worker's groups
    /// ([`BusyReason::WorkerUncommitted`]).
    ///
    /// [`BusyReason::WorkerUncommitted`]: super::BusyReason::WorkerUncommitted
    pub refused_busy_worker_uncommitted: u64,
    /// Reads refused with `Busy` (not in `refused_busy`, which counts proposals): the
    /// group held `EngineConfig::max_pending_reads` (`BusyReason::PendingReads`), or the
    /// worker `max_worker_pending_reads` (`BusyReason::WorkerReads`; a forwarded read
    /// dropped at that bound counts here too).
    pub reads_refused_busy: u64,
    /// Proposals refused with `NotLeader` or `TransferInProgress`.
    pub refused_not_leader: u64,
    /// Replicas created on a leader's first message.
    pub replicas_created: u64,
    /// Replicas destroyed after their removal (applied, or proven by a member's
    /// tombstone message).
    pub replicas_destroyed: u64,
    /// Tombstone messages sent to replicas that a configuration here removed.
    pub tombstones_sent: u64,
    /// Stale-peer probes sent by replicas that send nothing else (quiesced followers,
    /// learners), asking the other members whether they still belong to their group.
    pub gc_probes_sent: u64,
    /// Tombstones leaders re-sent to removed replicas that had not confirmed their
    /// destruction yet (every `gc_interval_elections`).
    pub tombstones_resent: u64,
    /// Removal records forgotten: a removed replica's node confirmed its destruction and
    /// the leader proposed `ChangeKind::Forget`.
    pub removals_confirmed: u64,
    /// Groups created by [`Effect::CreateGroup`].
    ///
    /// [`Effect::CreateGroup`]: super::Effect::CreateGroup
    pub effects_create_group: u64,
    /// Split children this node created from an [`Effect::Split`] (founded from the
    /// split-off state, durable before the parent applied on).
    ///
    /// [`Effect::Split`]: super::Effect::Split
    pub split_children_created: u64,
    /// Split effects that found the child already here (created by its leader's message
    /// and given a snapshot, or tombstoned, or founded by an earlier run of the same
    /// entry) and kept it: never overwritten, never created twice.
    pub split_children_kept: u64,
    /// Network messages dropped because a mailbox was full.
    pub messages_dropped: u64,
    /// Raft ticks given to groups so far; quiesced groups get none, so with every group
    /// quiesced this stops growing.
    pub raft_ticks: u64,
    /// Worker ticks so far (summed over workers).
    pub worker_ticks: u64,
    /// Worker turns that counted ticks so far (summed over workers): the wake-ups of
    /// the workers' clocks. A worker with nothing that needs its clock counts
    /// `EngineConfig::idle_wake_ticks` ticks per wake-up, so with every group quiesced
    /// this grows that many times slower than `worker_ticks`.
    pub worker_tick_wakes: u64,
    /// Groups quiesced now.
    pub quiesced_groups: u64,
    /// Quiesced groups woken because their leader's node went down or restarted (at most
    /// `max_wakes_per_tick` per worker tick).
    pub liveness_wakes: u64,
    /// Message batches sent (one frame per destination node per worker turn; heartbeats
    /// of all groups to one node share a batch).
    pub net_batches: u64,
    /// Of `net_batches`, those a worker sent through the transport itself
    /// (`EngineConfig::direct_network`), not through the network thread.
    pub net_direct_sends: u64,
    /// Append acknowledgements a follower sent from the thread that made their write
    /// durable (`EngineConfig::acks_when_durable`), not from its worker afterwards.
    pub acks_sent_when_durable: u64,
    /// Received batches the transport's own threads handed straight to the workers
    /// (`EngineConfig::direct_network`), not through the network thread.
    pub net_direct_receives: u64,
    /// Messages dropped because their sender replica lives on another node than the one
    /// they came from (by the group's applied configuration, or the node it was first
    /// learnt from), or names an unknown replica while the group's table of learned peers
    /// is full (`max_learned_peers`).
    pub dropped_wrong_sender: u64,
    /// Messages for groups not hosted here that would have created a replica (or
    /// recorded a removal) but were refused: by the [`CreatePolicy`], by the per-tick caps
    /// (`max_creates_per_tick`, `max_creates_per_node_per_tick`), by the caps on
    /// unconfirmed replicas or (a removal record) by `max_tombstone_records`.
    ///
    /// [`CreatePolicy`]: super::CreatePolicy
    pub creates_refused: u64,
    /// Gauge: replicas created from messages that have not yet applied a configuration
    /// holding themselves, over all workers (bounded by `max_unconfirmed_replicas` per
    /// worker).
    pub unconfirmed_replicas: u64,
    /// Unconfirmed replicas dropped: expired (`unconfirmed_replica_ticks`) or replaced by
    /// the group's founding `create_group`.
    pub unconfirmed_dropped: u64,
    /// Tombstones received from a node that hosts no voter of the named replica's applied
    /// configuration: not believed; the replica asked its members instead (a stale-peer
    /// probe).
    pub tombstones_unproven: u64,
    /// Received snapshot streams refused because a chunk would end past
    /// `max_snapshot_bytes` (the partial file is deleted, the stream's further chunks
    /// dropped).
    pub snapshot_streams_refused: u64,
    /// Received snapshot streams dropped on a write error, when the complete file was
    /// malformed (its header or session section), or after their leader went silent or
    /// only repeated chunks already held (their partial file is deleted).
    pub snapshot_streams_failed: u64,
    /// Received snapshot chunks not written: held already, past a gap, of a refused
    /// stream, stale, or the snapshot I/O queue was full (the stream resumes).
    pub snapshot_chunks_dropped: u64,
    /// Reports of a received snapshot's durable offset sent to its leader.
    pub snapshot_progress_sent: u64,
    /// Such reports received from followers (and believed).
    pub snapshot_progress_received: u64,
    /// Snapshot streams to followers started past offset 0 (where the follower reported
    /// it got).
    pub snapshot_streams_resumed: u64,
    /// The bytes those resumed streams did not send again.
    pub snapshot_resumed_bytes: u64,
    /// Gauge: when this node's transport certificate expires, in seconds since the Unix
    /// epoch (0: unknown, or a transport without certificates).
    pub net_cert_not_after_unix: u64,
    /// Gauge: the earliest certificate expiry among the peers connected now, in seconds
    /// since the Unix epoch (0: none connected, or unknown).
    pub net_peer_cert_not_after_min_unix: u64,
    /// Inbound connection attempts the transport refused at its handshake caps.
    pub net_handshakes_refused: u64,
    /// Handshakes and connections the transport refused by its certificate policy (key
    /// usage, node not on the allow-list).
    pub net_policy_refused: u64,
    /// Gauge: proposals per second appended by the replicas led here (the sum of
    /// [`super::GroupLoad::proposals_per_sec`] over this node's replicas, rounded).
    pub load_proposals_per_sec: u64,
    /// Gauge: payload bytes per second of committed entries applied by this node's
    /// replicas (the sum of [`super::GroupLoad::write_bytes_per_sec`], rounded).
    pub load_write_bytes_per_sec: u64,
    /// Gauge: reads per second served by this node's replicas (the sum of
    /// [`super::GroupLoad::reads_per_sec`], rounded).
    pub load_reads_per_sec: u64,
    /// Gauge: microseconds of apply per second on this node's apply threads (the sum of
    /// [`super::GroupLoad::apply_secs_per_sec`] times 1,000,000: 1,000,000 is one apply
    /// thread fully busy).
    pub load_apply_micros_per_sec: u64,
}
