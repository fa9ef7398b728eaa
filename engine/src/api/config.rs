//! The engine's configuration: [`EngineConfig`] as a user writes it, its bounds (the
//! `MAX_`/`MIN_` constants), [`ValidEngineConfig`] (every rule checked once, defaults
//! resolved) and [`ConfigError`] (one variant per rule).
//!
//! Owns the rules and the defaults. Never reads the configuration at run time: the runtime
//! takes a [`ValidEngineConfig`] and trusts it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use super::{CreatePolicy, SnapshotCheck};
use crate::raft::config::{Config as RaftConfig, ConfigError as RaftConfigError, ValidConfig};
use crate::raft::types::NodeId;

pub use flotilla_wal::WalConfig;

/// Most worker threads allowed.
pub const MAX_WORKERS: usize = 256;
/// Shortest tick interval allowed.
pub const MIN_TICK: Duration = Duration::from_millis(1);
/// Longest tick interval allowed.
pub const MAX_TICK: Duration = Duration::from_secs(1);
/// The largest `compact_snapshot_percent` accepted.
pub const MAX_COMPACT_SNAPSHOT_PERCENT: u32 = 10_000;
/// The smallest `compact_bytes` accepted.
pub const MIN_COMPACT_BYTES: u64 = 4096;
/// Largest `max_pending_wal_bytes` allowed (16 GiB).
pub const MAX_PENDING_WAL_BYTES: u64 = 16 << 30;
/// Largest `max_apply_backlog_bytes` allowed (16 GiB).
pub const MAX_APPLY_BACKLOG_BYTES: u64 = 16 << 30;
/// Largest `max_worker_uncommitted_bytes` allowed (16 GiB).
pub const MAX_WORKER_UNCOMMITTED_BYTES: u64 = 16 << 30;
/// Largest `propose_timeout_ticks` allowed.
pub const MAX_PROPOSE_TIMEOUT_TICKS: u32 = 1 << 24;
/// Largest `max_creates_per_tick` allowed.
pub const MAX_CREATES_PER_TICK: u32 = 1 << 16;
/// Largest `max_unconfirmed_replicas` allowed.
pub const MAX_UNCONFIRMED_REPLICAS: usize = 1 << 20;
/// Largest `unconfirmed_replica_ticks` allowed.
pub const MAX_UNCONFIRMED_REPLICA_TICKS: u32 = 1 << 24;
/// Largest `max_learned_peers` allowed.
pub const MAX_LEARNED_PEERS: usize = 1024;
/// Smallest `max_snapshot_bytes` allowed (1 MiB).
pub const MIN_SNAPSHOT_BYTES: u64 = 1 << 20;
/// Largest `max_snapshot_bytes` allowed (1 TiB).
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 40;
/// Shortest `session_ttl` allowed.
pub const MIN_SESSION_TTL: Duration = Duration::from_secs(1);
/// Longest `session_ttl` allowed (30 days).
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Largest `max_sessions` allowed.
pub const MAX_SESSIONS: u64 = 1 << 20;
/// Shortest `load_fold_interval` allowed.
pub const MIN_LOAD_FOLD_INTERVAL: Duration = Duration::from_millis(10);
/// Longest `load_half_life` allowed (one day).
pub const MAX_LOAD_HALF_LIFE: Duration = Duration::from_secs(24 * 3600);
/// Longest `inline_sync_max` allowed: a worker inside a sync neither sends nor answers
/// heartbeats, so a disk slower than this never has syncs on a worker.
pub const MAX_INLINE_SYNC_MAX: Duration = Duration::from_secs(1);
/// Shortest `inline_apply_slow` allowed.
pub const MIN_INLINE_APPLY_SLOW: Duration = Duration::from_millis(1);
/// Longest `inline_apply_slow` allowed.
pub const MAX_INLINE_APPLY_SLOW: Duration = Duration::from_secs(10);

/// The engine's configuration as a user writes it. Build with [`EngineConfig::new`], adjust
/// fields, and hand it to [`Engine::open`] (which validates it with
/// [`EngineConfig::validate`]).
///
/// With the default `serde` feature it reads from and writes to configuration files (TOML,
/// JSON, ...): missing fields take their defaults; sizes are integers or strings such as
/// `"64MiB"` and durations strings such as `"10ms"` ([`flotilla_wal::units`]); unknown
/// fields are refused; `create_policy` is code, not configuration, and is neither read nor
/// written. Deserializing never bypasses the rules: [`EngineConfig::validate`] still runs.
///
/// [`Engine::open`]: super::Engine::open
#[derive(Debug, Clone)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct EngineConfig {
    /// This node's id. Required; non-zero; must equal the transport's node id.
    pub node_id: NodeId,
    /// Directory of the node's durable state (the WAL lives in `data_dir/wal`). Required.
    pub data_dir: PathBuf,
    /// Worker threads; 0 means one per available core. Default 0; bounds 0..=[`MAX_WORKERS`].
    pub workers: usize,
    /// Wall time of one Raft tick. Default 10 ms; bounds [`MIN_TICK`]..=[`MAX_TICK`].
    /// Lease reads last `election_timeout_min_ticks - lease_clock_drift_ticks` of these,
    /// measured on CLOCK_BOOTTIME (which keeps running while the process is paused or the
    /// machine suspended), not by counting ticks.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub tick_interval: Duration,
    /// Template of every replica's Raft configuration (election and heartbeat ticks,
    /// flow control, PreVote, CheckQuorum, read mode, quiescence). Its `id`, `applied`,
    /// `seed` and `tick_nanos` (from `tick_interval`) are set by the engine. Default
    /// [`RaftConfig::for_engine`] ([`RaftConfig::new`] with `quiesce` on); validated by its
    /// own rules.
    pub raft: RaftConfig,
    /// The WAL's configuration. Its `dir` is ignored: the WAL lives in `data_dir/wal`.
    /// Default [`WalConfig::new`]; validated by its own rules.
    pub wal: WalConfig,
    /// Capacity of each worker's mailbox in commands. A full mailbox makes operations
    /// answer `Busy` and drops incoming network messages (Raft retransmits). Default
    /// 65,536; bounds 64..=16,777,216.
    pub mailbox_capacity: usize,
    /// Bytes of proposals appended but not yet applied that a group may hold before
    /// `propose` answers `Busy`: counted by the leader over its log in its term (a
    /// proposal whose caller timed out still counts until it is handed out for apply, that
    /// is committed, durable here and within the apply backlog, or the leadership ends;
    /// `raft::Config::max_uncommitted_bytes`). Default 8 MiB; bounds 1..=`wal.segment_size / 4` (so one
    /// turn's write batch always fits in a WAL segment).
    #[cfg_attr(feature = "serde", serde(with = "flotilla_wal::units::bytes_u64"))]
    pub max_uncommitted_bytes: u64,
    /// `max_uncommitted_bytes` summed over every group of one worker: at this sum
    /// `propose` answers `Busy` ([`BusyReason::WorkerUncommitted`]) in every group of the
    /// worker, so a client reaching many groups cannot make a node hold `groups ×
    /// max_uncommitted_bytes`. (A worker holding nothing still takes one proposal of any
    /// size, as a group does under the per-group bound; a value below
    /// `max_uncommitted_bytes` caps each group too.) Default 256 MiB; bounds
    /// 1..=[`MAX_WORKER_UNCOMMITTED_BYTES`].
    ///
    /// [`BusyReason::WorkerUncommitted`]: super::BusyReason::WorkerUncommitted
    #[cfg_attr(feature = "serde", serde(with = "flotilla_wal::units::bytes_u64"))]
    pub max_worker_uncommitted_bytes: u64,
    /// Proposals appended but not yet applied that one worker may hold before `propose`
    /// answers `Busy`. Default 262,144; bounds 1..=16,777,216.
    pub max_pending_proposals: usize,
    /// Reads one group may hold waiting to be served before `read_index` answers
    /// `ReadError::Busy(BusyReason::PendingReads)`: the reads waiting here, and (its
    /// leader's own bound, `raft::Config::max_pending_reads`) those its leader holds
    /// waiting for confirmation, which a read that timed out here still counts in until
    /// confirmed or the leadership ends. Default 16,384; bounds 1..=16,777,216.
    pub max_pending_reads: usize,
    /// `max_pending_reads` summed over every group of one worker (a read of this node's
    /// own caller at its leader counts twice: it waits here and in the leader's queue).
    /// At this sum `read_index` answers `ReadError::Busy(BusyReason::WorkerReads)` and
    /// reads forwarded by followers to leaders here are dropped (their callers time
    /// out). Default 262,144; bounds 1..=16,777,216 (a value below `max_pending_reads`
    /// caps each group too).
    pub max_worker_pending_reads: usize,
    /// Largest proposal payload accepted. Default 4 MiB; bounds 1..=`wal.max_write_bytes / 2`.
    #[cfg_attr(feature = "serde", serde(with = "flotilla_wal::units::bytes_usize"))]
    pub max_entry_bytes: usize,
    /// Committed entries one worker may have handed to its apply thread and not seen
    /// applied: bounds the memory a slow state machine makes the worker hold. At the
    /// bound `propose` answers `Busy` ([`BusyReason::ApplyBacklog`]), and committed
    /// entries of every group of the worker, leader or follower, wait in the log until
    /// the backlog falls. Default 65,536; bounds 1..=16,777,216.
    ///
    /// [`BusyReason::ApplyBacklog`]: super::BusyReason::ApplyBacklog
    pub max_apply_backlog: u64,
    /// Bytes of committed entries (`Entry::size`) one worker may have handed to its apply
    /// thread and not seen applied: `max_apply_backlog` in bytes, with the same effects
    /// (a `Ready` hands out at most the bytes left, and at least one entry while any are
    /// left, so the worker holds at most this plus one entry). Default 256 MiB; bounds
    /// 1..=[`MAX_APPLY_BACKLOG_BYTES`].
    #[cfg_attr(feature = "serde", serde(with = "flotilla_wal::units::bytes_u64"))]
    pub max_apply_backlog_bytes: u64,
    /// Bytes of WAL batches one worker may have submitted and not seen durable before
    /// `propose` answers `Busy` ([`BusyReason::WalPending`]): bounds the memory a slow
    /// disk makes the worker hold. Default 64 MiB; bounds `wal.max_write_bytes`..=16 GiB.
    ///
    /// [`BusyReason::WalPending`]: super::BusyReason::WalPending
    #[cfg_attr(feature = "serde", serde(with = "flotilla_wal::units::bytes_u64"))]
    pub max_pending_wal_bytes: u64,
    /// Ticks after which a read barrier that was not confirmed resolves as
    /// [`ReadError::Timeout`]. Default 200; must be at least the Raft template's
    /// `election_timeout_max_ticks`.
    ///
    /// [`ReadError::Timeout`]: super::ReadError::Timeout
    pub read_timeout_ticks: u32,
    /// Ticks after which a proposal or membership change whose outcome this replica has
    /// not learnt completes [`ProposeError::Indeterminate`] (or
    /// [`MembershipError::Indeterminate`]): a deposed leader cut off from the group may
    /// never learn whether its entries committed, and its waiters must not hold the
    /// worker's `max_pending_proposals` forever. Default 3,000 (30 s at the default tick);
    /// bounds `raft.election_timeout_max_ticks`..=16,777,216.
    ///
    /// [`ProposeError::Indeterminate`]: super::ProposeError::Indeterminate
    /// [`MembershipError::Indeterminate`]: super::MembershipError::Indeterminate
    pub propose_timeout_ticks: u32,
    /// A learner is promoted only if its match is within this many entries of the
    /// leader's last index (else [`MembershipError::LearnerNotCaughtUp`]). Default 1,000.
    ///
    /// [`MembershipError::LearnerNotCaughtUp`]: super::MembershipError::LearnerNotCaughtUp
    pub promote_lag_max: u64,
    /// Applied entries past a group's compaction point that make the engine snapshot its
    /// state machine to a file and compact the group's log. Default 10,000; at least 1.
    pub compact_entries: u64,
    /// Bytes of applied entries past a group's compaction point (payload sizes, counted
    /// as they are applied) that make the engine snapshot and compact the group, whatever
    /// their count. Default 64 MiB; at least 4 KiB.
    #[cfg_attr(feature = "serde", serde(with = "flotilla_wal::units::bytes_u64"))]
    pub compact_bytes: u64,
    /// Percent of a group's last snapshot size that the log must hold past the compaction
    /// point before the next snapshot (with `compact_entries` or `compact_bytes`), so that
    /// snapshotting a large state costs at most about as many bytes as were logged: a
    /// group holding 200 MiB is not snapshotted every 64 MiB of writes. Past 16 ×
    /// `compact_entries` entries a snapshot is due whatever its size (bounding replay and
    /// the log's index). Groups pinning old WAL segments (`max_wal_segments`) are
    /// compacted regardless. 0 turns the rule off. Default 100; at most 10,000.
    pub compact_snapshot_percent: u32,
    /// Live WAL segments past which the engine snapshots and compacts the groups that pin
    /// the oldest ones ([`flotilla_wal::Wal::pinning_groups`]), so an idle group with a few
    /// old records cannot keep old segments alive. Checked every `compact_check_ticks`;
    /// at most 64 groups forced per worker per check. Default 16; at least 2.
    pub max_wal_segments: usize,
    /// Ticks between checks of `max_wal_segments`. Default 100; at least 1.
    pub compact_check_ticks: u32,
    /// Quiesced groups each worker wakes per tick when node liveness concerns them (their
    /// leader's node went down or restarted), so a liveness blip never wakes every group
    /// at once. Default 1,024; at least 1.
    pub max_wakes_per_tick: u32,
    /// The clean-up of removed replicas runs every this many maximum election timeouts:
    /// quiesced followers and learners probe the members of their configuration (the
    /// stale-peer check), and leaders re-send a tombstone to every removed replica that
    /// has not confirmed its destruction. Default 10; bounds 1..=1,000.
    ///
    /// A pass is spread over the ticks of its interval, and each worker examines at most
    /// `gc_replicas_per_tick` replicas per tick.
    pub gc_interval_elections: u32,
    /// The most replicas one worker examines per tick for the passes of
    /// `gc_interval_elections`: what bounds their cost on a node of many idle groups (a
    /// probe per other member, sent and handled, for every quiesced follower). At the
    /// default, 8 per 10 ms tick, a worker examines 800 replicas a second: with more
    /// replicas than that times the interval (16,000 a worker at the defaults), a pass
    /// takes longer than the interval (about two minutes for 100,000; TiKV's stale-peer
    /// check runs every five). Default 8; bounds 1..=1,000,000.
    pub gc_replicas_per_tick: u32,
    /// A worker with nothing that needs its clock (no group ticking, nothing written or
    /// applied in flight, no wake, removal or creation queued) sleeps this many ticks at
    /// a time instead of one. Input (a message, a request, a peer event) still wakes it at
    /// once; on waking it counts every tick that passed before it handles the input, so
    /// deadlines, idle credit and pacing keep to the wall clock. It saves an idle node the
    /// wake-ups of its workers' clocks (100 a second per worker at the default tick).
    /// Default 10; bounds 1..=100 (1: wake for every tick).
    pub idle_wake_ticks: u32,
    /// Decides whether a peer's message may create a replica of a group not hosted here
    /// (or record the removal of a replica never hosted here). Default
    /// [`CreatePolicy::allow_all`]; an embedder that knows its groups (e.g. from a
    /// directory) should refuse the others. The caps below apply whatever it answers.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub create_policy: CreatePolicy,
    /// Checks the state machine's part of a snapshot received from a peer before Raft may
    /// take it (a snapshot restore that fails stops the engine). Default
    /// [`SnapshotCheck::none`] (the engine checks only its own parts); an embedder whose
    /// restore can fail on malformed bytes should check what it would restore.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub snapshot_check: SnapshotCheck,
    /// Replicas each worker creates from peers' messages per tick, all senders together;
    /// further messages for unknown groups are dropped until the next tick (the leader
    /// retries). Default 64; bounds 1..=65,536.
    pub max_creates_per_tick: u32,
    /// Of `max_creates_per_tick`, what one sending node may use per worker tick, so one
    /// peer cannot take the whole budget. Default 16; bounds 1..=`max_creates_per_tick`.
    pub max_creates_per_node_per_tick: u32,
    /// Replicas created from messages that have not yet applied a configuration holding
    /// themselves (unconfirmed: nothing but the creating message vouches for the group)
    /// one worker may hold; past it, messages for unknown groups create nothing. Default
    /// 1,024; bounds 1..=1,048,576.
    pub max_unconfirmed_replicas: usize,
    /// Of `max_unconfirmed_replicas`, how many one creating node may hold per worker.
    /// Default 256; bounds 1..=`max_unconfirmed_replicas`.
    pub max_unconfirmed_replicas_per_node: usize,
    /// Tombstone records one worker may hold (replicas destroyed here, and removals that
    /// peers reported of replicas never hosted here) before it stops recording the latter:
    /// a peer's tombstone for a group not hosted here is then neither recorded nor
    /// acknowledged (its sender keeps re-sending; its removal record stays). Records are
    /// kept forever, so without it a peer could make a node hold any number. Default
    /// 1,048,576; bounds 1..=67,108,864.
    pub max_tombstone_records: usize,
    /// Ticks after which a replica created from a message that is still unconfirmed is
    /// dropped (its records leave the WAL, no tombstone stays: a real leader's next
    /// message creates it again). Default 6,000 (60 s at the default tick); bounds
    /// `raft.election_timeout_max_ticks`..=16,777,216.
    pub unconfirmed_replica_ticks: u32,
    /// Replicas outside a group's applied configuration whose node a replica learns from
    /// their messages (a new learner, the leader of a replica still catching up). The
    /// first node a replica id is seen from keeps it; past this count, messages from
    /// further unknown replicas are dropped (counted in `dropped_wrong_sender`). Default
    /// 16; bounds 1..=1,024.
    pub max_learned_peers: usize,
    /// The largest snapshot (state-machine bytes) this node receives from a leader. A
    /// received snapshot streams to a partial file on disk, never whole in memory; a
    /// stream with a chunk ending past this is refused (its file deleted, counted in
    /// `snapshot_streams_refused`). It must exceed the largest snapshot a group's state
    /// machine makes, or a follower that needs one never catches up. Default 4 GiB;
    /// bounds 1 MiB..=1 TiB.
    #[cfg_attr(feature = "serde", serde(with = "flotilla_wal::units::bytes_u64"))]
    pub max_snapshot_bytes: u64,
    /// A client session unused for longer than this, by the group's replicated clock
    /// (the proposing leaders' wall clocks), expires (`Engine::open_session`). Carried in
    /// each register entry: the last one applied sets it for the group. Default 1 hour;
    /// bounds [`MIN_SESSION_TTL`]..=[`MAX_SESSION_TTL`].
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub session_ttl: Duration,
    /// The most client sessions a group keeps: registering one more evicts the least
    /// recently used. Carried in each register entry like `session_ttl`. Each session
    /// keeps at most `flotilla_engine::session::MAX_RESPONSES_PER_SESSION` answers.
    /// Default 10,000; bounds 1..=[`MAX_SESSIONS`].
    pub max_sessions: u64,
    /// Measure each replica's load ([`super::GroupLoad`]: proposals, bytes written, reads
    /// and apply time per second) for `GroupStatus::load`, `Engine::group_loads` and the
    /// `load_*` metrics. The cost: a counter add per event and one clock reading per
    /// worker turn (BENCHMARKS.md, "Load measuring"). Default on.
    pub measure_load: bool,
    /// A worker whose turn ends with nothing else queued (its mailboxes empty, no write
    /// of its own in flight, and no active group besides those waiting for the turn's
    /// batch) writes and syncs the batch on its own thread when the WAL's writer is free,
    /// after handing its messages to the network, instead of handing the batch to the
    /// WAL's writer thread and waiting to be woken. It saves the hand-overs when one
    /// group is busy alone (one proposal in flight); it blocks that worker for the sync,
    /// so under load (a mailbox not empty), beside other active groups (a sync can stall
    /// for 100 ms, and a worker inside it neither sends nor answers their heartbeats),
    /// and while the WAL's last sync took longer than `inline_sync_max` (a slow disk),
    /// batches are handed over as usual. Default on.
    pub inline_wal_writes: bool,
    /// With `inline_wal_writes`, a worker writes and syncs inline only while the WAL's
    /// last sync took at most this long: on a slow or stalling disk it hands its batches
    /// to the WAL's writer and keeps stepping its groups. Default 2 ms; bounds
    /// 0..=[`MAX_INLINE_SYNC_MAX`] (0: only until the first sync that takes any time).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub inline_sync_max: Duration,
    /// Workers send their batches through the transport themselves, and the transport's
    /// receiving threads hand received batches straight to the workers' mailboxes, where
    /// the transport allows it (QUIC: `Transport::sender`, `Transport::set_items_sink`);
    /// otherwise, and for snapshots and peer events always, through the network thread.
    /// Saves a thread hand-over at each end of every message. Default on.
    pub direct_network: bool,
    /// A follower's acknowledgements of appends go out from the thread that made their
    /// WAL write durable (the WAL's writer, or the worker when it wrote inline) the
    /// moment the sync returns, instead of from the worker once it wakes to the write's
    /// completion, when the worker was quiet as it submitted the write (empty mailboxes,
    /// no other write in flight; a busy worker is awake anyway and coalesces them with
    /// its other messages). The rest of what
    /// waits for the write (`on_persisted`, votes, other answers) stays on the worker.
    /// With it, a write nothing needs at once (a follower's whose acknowledgements so
    /// left, or a leader's until a follower's acknowledgement for the same group arrives)
    /// does not wake the worker when it is durable: the worker takes its completion at
    /// its next turn (at the latest its next tick). A follower's worker then wakes once
    /// per write instead of twice. Default on.
    pub acks_when_durable: bool,
    /// A worker applies a committed batch itself, instead of handing it to its apply
    /// thread, when the batch holds at most 16 entries and 64 KiB (and at most 16 entries a
    /// turn are applied so: past them batches go to the apply thread, which then works
    /// beside the worker), the state machine calls every command in it quick
    /// (`StateMachine::is_quick`; by default none is), and the apply thread has nothing
    /// queued. Saves the apply thread's wake-up on the way from
    /// commit to the proposer's answer when few proposals are in flight. Default on.
    pub inline_apply: bool,
    /// A batch applied on a worker (`inline_apply`) that takes longer than this (a state
    /// machine called quick a command that was not, or the worker was preempted) sends its
    /// group's batches to the apply thread for a minute, is counted in
    /// `Metrics::applied_inline_slow` and logged as a warning: a state machine that
    /// misjudges a command stalls its worker at most once a minute. Default 10 ms; bounds
    /// [`MIN_INLINE_APPLY_SLOW`]..=[`MAX_INLINE_APPLY_SLOW`].
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub inline_apply_slow: Duration,
    /// The half-life of the load rates: a replica that goes idle shows half its rates
    /// after this long, and a steady rate is reached to 97% after five. Default 10 s;
    /// bounds `load_fold_interval`..=[`MAX_LOAD_HALF_LIFE`].
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub load_half_life: Duration,
    /// How often the load rates are folded: the counts of each interval are folded into
    /// the rates when the interval ends (lazily: at the replica's next event or read), and
    /// workers publish the loads for `Engine::group_loads` once per interval. Default 1 s;
    /// bounds [`MIN_LOAD_FOLD_INTERVAL`]..=`load_half_life`.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub load_fold_interval: Duration,
}

impl Default for EngineConfig {
    /// Every default, with node id 0 and no data directory (both of which
    /// [`EngineConfig::validate`] refuses until they are set).
    fn default() -> EngineConfig {
        EngineConfig::new(0, PathBuf::new())
    }
}

impl EngineConfig {
    /// A configuration with every default for node `node_id` storing into `data_dir`.
    pub fn new(node_id: NodeId, data_dir: impl Into<PathBuf>) -> EngineConfig {
        let data_dir = data_dir.into();
        EngineConfig {
            node_id,
            wal: WalConfig::new(data_dir.join("wal")),
            data_dir,
            workers: 0,
            tick_interval: Duration::from_millis(10),
            raft: RaftConfig::for_engine(),
            mailbox_capacity: 1 << 16,
            max_uncommitted_bytes: 8 << 20,
            max_worker_uncommitted_bytes: 256 << 20,
            max_pending_proposals: 1 << 18,
            max_pending_reads: 1 << 14,
            max_worker_pending_reads: 1 << 18,
            max_entry_bytes: 4 << 20,
            max_apply_backlog: 1 << 16,
            max_apply_backlog_bytes: 256 << 20,
            max_pending_wal_bytes: 64 << 20,
            read_timeout_ticks: 200,
            propose_timeout_ticks: 3000,
            promote_lag_max: 1000,
            compact_entries: 10_000,
            compact_bytes: 64 << 20,
            compact_snapshot_percent: 100,
            max_wal_segments: 16,
            compact_check_ticks: 100,
            max_wakes_per_tick: 1024,
            gc_interval_elections: 10,
            gc_replicas_per_tick: 8,
            idle_wake_ticks: 10,
            create_policy: CreatePolicy::allow_all(),
            snapshot_check: SnapshotCheck::none(),
            max_creates_per_tick: 64,
            max_creates_per_node_per_tick: 16,
            max_unconfirmed_replicas: 1024,
            max_unconfirmed_replicas_per_node: 256,
            max_tombstone_records: 1 << 20,
            unconfirmed_replica_ticks: 6000,
            max_learned_peers: 16,
            max_snapshot_bytes: 4 << 30,
            session_ttl: Duration::from_secs(3600),
            max_sessions: 10_000,
            measure_load: true,
            inline_wal_writes: true,
            inline_sync_max: Duration::from_millis(2),
            direct_network: true,
            acks_when_durable: true,
            inline_apply: true,
            inline_apply_slow: Duration::from_millis(10),
            load_half_life: Duration::from_secs(10),
            load_fold_interval: Duration::from_secs(1),
        }
    }

    /// Checks every rule once and resolves defaults (the worker count).
    pub fn validate(self) -> Result<ValidEngineConfig, ConfigError> {
        if self.node_id == 0 {
            return Err(ConfigError::ZeroNodeId);
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::EmptyDataDir);
        }
        if self.workers > MAX_WORKERS {
            return Err(ConfigError::WorkersOutOfBounds(self.workers));
        }
        if self.tick_interval < MIN_TICK || self.tick_interval > MAX_TICK {
            return Err(ConfigError::TickIntervalOutOfBounds(self.tick_interval));
        }
        let mut raft = self.raft.clone();
        raft.id = 1;
        raft.applied = 0;
        // Nothing in the engine reads `Raft::stats`: an idle replica does not carry them.
        raft.count_stats = false;
        // Leases are measured on the worker's clock in nanoseconds; a tick is the interval.
        raft.tick_nanos = u64::try_from(self.tick_interval.as_nanos()).unwrap_or(u64::MAX);
        // The core bounds its leader's log by the same measure (0 gets its own error below).
        raft.max_uncommitted_bytes = self.max_uncommitted_bytes.max(1);
        raft.max_pending_reads = self.max_pending_reads.max(1);
        let raft = raft.validate().map_err(ConfigError::Raft)?;
        let mut wal = self.wal.clone();
        wal.dir = self.data_dir.join("wal");
        wal.check().map_err(ConfigError::Wal)?;
        if !(64..=1 << 24).contains(&self.mailbox_capacity) {
            return Err(ConfigError::MailboxCapacityOutOfBounds(self.mailbox_capacity));
        }
        if self.max_uncommitted_bytes == 0 || self.max_uncommitted_bytes > wal.segment_size / 4 {
            return Err(ConfigError::MaxUncommittedBytesOutOfBounds {
                value: self.max_uncommitted_bytes,
                max: wal.segment_size / 4,
            });
        }
        if !(1..=MAX_WORKER_UNCOMMITTED_BYTES).contains(&self.max_worker_uncommitted_bytes) {
            return Err(ConfigError::MaxWorkerUncommittedBytesOutOfBounds(self.max_worker_uncommitted_bytes));
        }
        if !(1..=1 << 24).contains(&self.max_pending_proposals) {
            return Err(ConfigError::MaxPendingProposalsOutOfBounds(self.max_pending_proposals));
        }
        if !(1..=1 << 24).contains(&self.max_pending_reads) {
            return Err(ConfigError::MaxPendingReadsOutOfBounds(self.max_pending_reads));
        }
        if !(1..=1 << 24).contains(&self.max_worker_pending_reads) {
            return Err(ConfigError::MaxWorkerPendingReadsOutOfBounds(self.max_worker_pending_reads));
        }
        if self.max_entry_bytes == 0 || self.max_entry_bytes > wal.max_write_bytes / 2 {
            return Err(ConfigError::MaxEntryBytesOutOfBounds {
                value: self.max_entry_bytes,
                max: wal.max_write_bytes / 2,
            });
        }
        if !(1..=1 << 24).contains(&self.max_apply_backlog) {
            return Err(ConfigError::MaxApplyBacklogOutOfBounds(self.max_apply_backlog));
        }
        if !(1..=MAX_APPLY_BACKLOG_BYTES).contains(&self.max_apply_backlog_bytes) {
            return Err(ConfigError::MaxApplyBacklogBytesOutOfBounds(self.max_apply_backlog_bytes));
        }
        let min_wal = wal.max_write_bytes as u64;
        if self.max_pending_wal_bytes < min_wal || self.max_pending_wal_bytes > MAX_PENDING_WAL_BYTES {
            return Err(ConfigError::MaxPendingWalBytesOutOfBounds {
                value: self.max_pending_wal_bytes,
                min: min_wal,
            });
        }
        if self.read_timeout_ticks < self.raft.election_timeout_max_ticks {
            return Err(ConfigError::ReadTimeoutTooShort {
                read: self.read_timeout_ticks,
                election: self.raft.election_timeout_max_ticks,
            });
        }
        if self.propose_timeout_ticks < self.raft.election_timeout_max_ticks
            || self.propose_timeout_ticks > MAX_PROPOSE_TIMEOUT_TICKS
        {
            return Err(ConfigError::ProposeTimeoutOutOfBounds {
                value: self.propose_timeout_ticks,
                election: self.raft.election_timeout_max_ticks,
            });
        }
        if self.compact_entries == 0 {
            return Err(ConfigError::ZeroCompactEntries);
        }
        if self.compact_bytes < MIN_COMPACT_BYTES {
            return Err(ConfigError::CompactBytesTooSmall(self.compact_bytes));
        }
        if self.compact_snapshot_percent > MAX_COMPACT_SNAPSHOT_PERCENT {
            return Err(ConfigError::CompactSnapshotPercentTooLarge(self.compact_snapshot_percent));
        }
        if self.max_wal_segments < 2 {
            return Err(ConfigError::MaxWalSegmentsTooSmall(self.max_wal_segments));
        }
        if self.compact_check_ticks == 0 {
            return Err(ConfigError::ZeroCompactCheckTicks);
        }
        if self.max_wakes_per_tick == 0 {
            return Err(ConfigError::ZeroMaxWakesPerTick);
        }
        if !(1..=1000).contains(&self.gc_interval_elections) {
            return Err(ConfigError::GcIntervalOutOfBounds(self.gc_interval_elections));
        }
        if !(1..=1_000_000).contains(&self.gc_replicas_per_tick) {
            return Err(ConfigError::GcReplicasPerTickOutOfBounds(self.gc_replicas_per_tick));
        }
        if !(1..=100).contains(&self.idle_wake_ticks) {
            return Err(ConfigError::IdleWakeTicksOutOfBounds(self.idle_wake_ticks));
        }
        if !(1..=MAX_CREATES_PER_TICK).contains(&self.max_creates_per_tick) {
            return Err(ConfigError::MaxCreatesPerTickOutOfBounds(self.max_creates_per_tick));
        }
        if !(1..=self.max_creates_per_tick).contains(&self.max_creates_per_node_per_tick) {
            return Err(ConfigError::MaxCreatesPerNodeOutOfBounds {
                value: self.max_creates_per_node_per_tick,
                max: self.max_creates_per_tick,
            });
        }
        if !(1..=MAX_UNCONFIRMED_REPLICAS).contains(&self.max_unconfirmed_replicas) {
            return Err(ConfigError::MaxUnconfirmedReplicasOutOfBounds(self.max_unconfirmed_replicas));
        }
        if !(1..=1 << 26).contains(&self.max_tombstone_records) {
            return Err(ConfigError::MaxTombstoneRecordsOutOfBounds(self.max_tombstone_records));
        }
        if !(1..=self.max_unconfirmed_replicas).contains(&self.max_unconfirmed_replicas_per_node) {
            return Err(ConfigError::MaxUnconfirmedPerNodeOutOfBounds {
                value: self.max_unconfirmed_replicas_per_node,
                max: self.max_unconfirmed_replicas,
            });
        }
        if self.unconfirmed_replica_ticks < self.raft.election_timeout_max_ticks
            || self.unconfirmed_replica_ticks > MAX_UNCONFIRMED_REPLICA_TICKS
        {
            return Err(ConfigError::UnconfirmedReplicaTicksOutOfBounds {
                value: self.unconfirmed_replica_ticks,
                election: self.raft.election_timeout_max_ticks,
            });
        }
        if !(1..=MAX_LEARNED_PEERS).contains(&self.max_learned_peers) {
            return Err(ConfigError::MaxLearnedPeersOutOfBounds(self.max_learned_peers));
        }
        if !(MIN_SNAPSHOT_BYTES..=MAX_SNAPSHOT_BYTES).contains(&self.max_snapshot_bytes) {
            return Err(ConfigError::MaxSnapshotBytesOutOfBounds(self.max_snapshot_bytes));
        }
        if !(MIN_SESSION_TTL..=MAX_SESSION_TTL).contains(&self.session_ttl) {
            return Err(ConfigError::SessionTtlOutOfBounds(self.session_ttl));
        }
        if !(1..=MAX_SESSIONS).contains(&self.max_sessions) {
            return Err(ConfigError::MaxSessionsOutOfBounds(self.max_sessions));
        }
        if !(MIN_INLINE_APPLY_SLOW..=MAX_INLINE_APPLY_SLOW).contains(&self.inline_apply_slow) {
            return Err(ConfigError::InlineApplySlowOutOfBounds(self.inline_apply_slow));
        }
        if self.inline_sync_max > MAX_INLINE_SYNC_MAX {
            return Err(ConfigError::InlineSyncMaxOutOfBounds(self.inline_sync_max));
        }
        if !(MIN_LOAD_FOLD_INTERVAL..=MAX_LOAD_HALF_LIFE).contains(&self.load_half_life) {
            return Err(ConfigError::LoadHalfLifeOutOfBounds(self.load_half_life));
        }
        if !(MIN_LOAD_FOLD_INTERVAL..=self.load_half_life).contains(&self.load_fold_interval) {
            return Err(ConfigError::LoadFoldIntervalOutOfBounds {
                value: self.load_fold_interval,
                max: self.load_half_life,
            });
        }
        let workers = if self.workers == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(MAX_WORKERS)
        } else {
            self.workers
        };
        Ok(ValidEngineConfig { raw: EngineConfig { workers, wal, ..self }, raft: Arc::new(raft) })
    }
}

/// An [`EngineConfig`] that passed every rule, with defaults resolved.
#[derive(Debug, Clone)]
pub struct ValidEngineConfig {
    raw: EngineConfig,
    raft: Arc<ValidConfig>,
}

impl ValidEngineConfig {
    /// The checked values (with `workers` resolved and `wal.dir` set).
    pub fn get(&self) -> &EngineConfig {
        &self.raw
    }

    /// The Raft configuration every replica shares (`Raft::with_shared_config`: each
    /// gives its own id, applied index and seed; the template's are placeholders). It
    /// carries `tick_nanos` from `tick_interval` (set in `validate`).
    pub(crate) fn raft_shared(&self) -> &Arc<ValidConfig> {
        &self.raft
    }
}

/// Why an [`EngineConfig`] was refused: one variant per rule.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `node_id` is 0.
    #[error("node id must be non-zero")]
    ZeroNodeId,
    /// `data_dir` is empty.
    #[error("data_dir must be set")]
    EmptyDataDir,
    /// `workers` exceeds [`MAX_WORKERS`].
    #[error("workers {0} out of bounds 0..={MAX_WORKERS}")]
    WorkersOutOfBounds(usize),
    /// `tick_interval` outside [`MIN_TICK`]..=[`MAX_TICK`].
    #[error("tick interval {0:?} out of bounds 1ms..=1s")]
    TickIntervalOutOfBounds(Duration),
    /// The Raft template broke one of its rules.
    #[error("raft template: {0}")]
    Raft(RaftConfigError),
    /// The WAL configuration broke one of its rules.
    #[error("wal: {0}")]
    Wal(flotilla_wal::ConfigError),
    /// `mailbox_capacity` outside 64..=16,777,216.
    #[error("mailbox capacity {0} out of bounds 64..=16777216")]
    MailboxCapacityOutOfBounds(usize),
    /// `max_uncommitted_bytes` is 0 or above a quarter of the WAL's segment size.
    #[error("max_uncommitted_bytes {value} out of bounds 1..={max}")]
    MaxUncommittedBytesOutOfBounds {
        /// The value given.
        value: u64,
        /// The largest allowed.
        max: u64,
    },
    /// `max_worker_uncommitted_bytes` is 0 or above [`MAX_WORKER_UNCOMMITTED_BYTES`].
    #[error("max_worker_uncommitted_bytes {0} out of bounds 1..={MAX_WORKER_UNCOMMITTED_BYTES}")]
    MaxWorkerUncommittedBytesOutOfBounds(u64),
    /// `max_pending_proposals` outside 1..=16,777,216.
    #[error("max_pending_proposals {0} out of bounds 1..=16777216")]
    MaxPendingProposalsOutOfBounds(usize),
    /// `max_pending_reads` outside 1..=16,777,216.
    #[error("max_pending_reads {0} out of bounds 1..=16777216")]
    MaxPendingReadsOutOfBounds(usize),
    /// `max_worker_pending_reads` outside 1..=16,777,216.
    #[error("max_worker_pending_reads {0} out of bounds 1..=16777216")]
    MaxWorkerPendingReadsOutOfBounds(usize),
    /// `max_entry_bytes` is 0 or above half the WAL's write size.
    #[error("max_entry_bytes {value} out of bounds 1..={max}")]
    MaxEntryBytesOutOfBounds {
        /// The value given.
        value: usize,
        /// The largest allowed.
        max: usize,
    },
    /// `max_apply_backlog` outside 1..=16,777,216.
    #[error("max_apply_backlog {0} out of bounds 1..=16777216")]
    MaxApplyBacklogOutOfBounds(u64),
    /// `max_apply_backlog_bytes` is 0 or above [`MAX_APPLY_BACKLOG_BYTES`].
    #[error("max_apply_backlog_bytes {0} out of bounds 1..={MAX_APPLY_BACKLOG_BYTES}")]
    MaxApplyBacklogBytesOutOfBounds(u64),
    /// `max_pending_wal_bytes` below the WAL's `max_write_bytes` (one batch could never
    /// be accepted) or above [`MAX_PENDING_WAL_BYTES`].
    #[error("max_pending_wal_bytes {value} out of bounds {min}..={MAX_PENDING_WAL_BYTES}")]
    MaxPendingWalBytesOutOfBounds {
        /// The value given.
        value: u64,
        /// The smallest allowed: the WAL's `max_write_bytes`.
        min: u64,
    },
    /// `compact_entries` is 0.
    #[error("compact_entries must be at least 1")]
    ZeroCompactEntries,
    /// `compact_snapshot_percent` is above 10,000.
    #[error("compact_snapshot_percent must be at most 10000 (got {0})")]
    CompactSnapshotPercentTooLarge(u32),
    /// `compact_bytes` is below 4 KiB.
    #[error("compact_bytes must be at least 4096 (got {0})")]
    CompactBytesTooSmall(u64),
    /// `max_wal_segments` is below 2.
    #[error("max_wal_segments must be at least 2 (got {0})")]
    MaxWalSegmentsTooSmall(usize),
    /// `compact_check_ticks` is 0.
    #[error("compact_check_ticks must be at least 1")]
    ZeroCompactCheckTicks,
    /// `max_wakes_per_tick` is 0.
    #[error("max_wakes_per_tick must be at least 1")]
    ZeroMaxWakesPerTick,
    /// `gc_interval_elections` outside 1..=1,000.
    #[error("gc_interval_elections {0} out of bounds 1..=1000")]
    GcIntervalOutOfBounds(u32),
    /// `gc_replicas_per_tick` outside 1..=1,000,000.
    #[error("gc_replicas_per_tick {0} out of bounds 1..=1000000")]
    GcReplicasPerTickOutOfBounds(u32),
    /// `idle_wake_ticks` outside 1..=100.
    #[error("idle_wake_ticks {0} out of bounds 1..=100")]
    IdleWakeTicksOutOfBounds(u32),
    /// `max_creates_per_tick` outside 1..=[`MAX_CREATES_PER_TICK`].
    #[error("max_creates_per_tick {0} out of bounds 1..={MAX_CREATES_PER_TICK}")]
    MaxCreatesPerTickOutOfBounds(u32),
    /// `max_creates_per_node_per_tick` is 0 or above `max_creates_per_tick`.
    #[error("max_creates_per_node_per_tick {value} out of bounds 1..={max}")]
    MaxCreatesPerNodeOutOfBounds {
        /// The value given.
        value: u32,
        /// The largest allowed: `max_creates_per_tick`.
        max: u32,
    },
    /// `max_unconfirmed_replicas` outside 1..=[`MAX_UNCONFIRMED_REPLICAS`].
    #[error("max_unconfirmed_replicas {0} out of bounds 1..={MAX_UNCONFIRMED_REPLICAS}")]
    MaxUnconfirmedReplicasOutOfBounds(usize),
    /// `max_tombstone_records` outside 1..=67,108,864.
    #[error("max_tombstone_records {0} out of bounds 1..=67108864")]
    MaxTombstoneRecordsOutOfBounds(usize),
    /// `max_unconfirmed_replicas_per_node` is 0 or above `max_unconfirmed_replicas`.
    #[error("max_unconfirmed_replicas_per_node {value} out of bounds 1..={max}")]
    MaxUnconfirmedPerNodeOutOfBounds {
        /// The value given.
        value: usize,
        /// The largest allowed: `max_unconfirmed_replicas`.
        max: usize,
    },
    /// `unconfirmed_replica_ticks` below the maximum election timeout or above
    /// [`MAX_UNCONFIRMED_REPLICA_TICKS`].
    #[error("unconfirmed_replica_ticks {value} out of bounds {election}..={MAX_UNCONFIRMED_REPLICA_TICKS}")]
    UnconfirmedReplicaTicksOutOfBounds {
        /// The value given.
        value: u32,
        /// The template's `election_timeout_max_ticks` (the smallest allowed).
        election: u32,
    },
    /// `max_learned_peers` outside 1..=[`MAX_LEARNED_PEERS`].
    #[error("max_learned_peers {0} out of bounds 1..={MAX_LEARNED_PEERS}")]
    MaxLearnedPeersOutOfBounds(usize),
    /// `max_snapshot_bytes` outside [`MIN_SNAPSHOT_BYTES`]..=[`MAX_SNAPSHOT_BYTES`].
    #[error("max_snapshot_bytes {0} out of bounds {MIN_SNAPSHOT_BYTES}..={MAX_SNAPSHOT_BYTES}")]
    MaxSnapshotBytesOutOfBounds(u64),
    /// `session_ttl` outside [`MIN_SESSION_TTL`]..=[`MAX_SESSION_TTL`].
    #[error("session_ttl {0:?} out of bounds {MIN_SESSION_TTL:?}..={MAX_SESSION_TTL:?}")]
    SessionTtlOutOfBounds(Duration),
    /// `max_sessions` outside 1..=[`MAX_SESSIONS`].
    #[error("max_sessions {0} out of bounds 1..={MAX_SESSIONS}")]
    MaxSessionsOutOfBounds(u64),
    /// `inline_apply_slow` outside [`MIN_INLINE_APPLY_SLOW`]..=[`MAX_INLINE_APPLY_SLOW`].
    #[error("inline_apply_slow {0:?} out of bounds {MIN_INLINE_APPLY_SLOW:?}..={MAX_INLINE_APPLY_SLOW:?}")]
    InlineApplySlowOutOfBounds(Duration),
    /// `inline_sync_max` above [`MAX_INLINE_SYNC_MAX`].
    #[error("inline_sync_max {0:?} out of bounds 0..={MAX_INLINE_SYNC_MAX:?}")]
    InlineSyncMaxOutOfBounds(Duration),
    /// `load_half_life` outside [`MIN_LOAD_FOLD_INTERVAL`]..=[`MAX_LOAD_HALF_LIFE`].
    #[error("load_half_life {0:?} out of bounds {MIN_LOAD_FOLD_INTERVAL:?}..={MAX_LOAD_HALF_LIFE:?}")]
    LoadHalfLifeOutOfBounds(Duration),
    /// `load_fold_interval` below [`MIN_LOAD_FOLD_INTERVAL`] or above `load_half_life`.
    #[error("load_fold_interval {value:?} out of bounds {MIN_LOAD_FOLD_INTERVAL:?}..={max:?}")]
    LoadFoldIntervalOutOfBounds {
        /// The value given.
        value: Duration,
        /// The largest allowed: `load_half_life`.
        max: Duration,
    },
    /// `read_timeout_ticks` is below the maximum election timeout.
    #[error("read timeout {read} ticks is below the election timeout {election}")]
    ReadTimeoutTooShort {
        /// The value given.
        read: u32,
        /// The template's `election_timeout_max_ticks`.
        election: u32,
    },
    /// `propose_timeout_ticks` is below the maximum election timeout or above
    /// [`MAX_PROPOSE_TIMEOUT_TICKS`].
    #[error("propose timeout {value} ticks out of bounds {election}..={MAX_PROPOSE_TIMEOUT_TICKS}")]
    ProposeTimeoutOutOfBounds {
        /// The value given.
        value: u32,
        /// The template's `election_timeout_max_ticks` (the smallest allowed).
        election: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> EngineConfig {
        EngineConfig::new(1, "/tmp/flotilla-config-test")
    }

    #[test]
    fn defaults_validate_and_resolve_workers() {
        let v = base().validate().unwrap();
        assert!(v.get().workers >= 1);
        assert_eq!(v.get().wal.dir, PathBuf::from("/tmp/flotilla-config-test/wal"));
        assert_eq!(v.raft_shared().tick_nanos, v.get().tick_interval.as_nanos() as u64);
    }

    #[test]
    fn one_error_per_rule() {
        let check = |f: &dyn Fn(&mut EngineConfig), want: &dyn Fn(&ConfigError) -> bool| {
            let mut c = base();
            f(&mut c);
            let e = c.validate().unwrap_err();
            assert!(want(&e), "got {e:?}");
        };
        check(&|c| c.node_id = 0, &|e| matches!(e, ConfigError::ZeroNodeId));
        check(&|c| c.data_dir = PathBuf::new(), &|e| matches!(e, ConfigError::EmptyDataDir));
        check(&|c| c.workers = MAX_WORKERS + 1, &|e| matches!(e, ConfigError::WorkersOutOfBounds(_)));
        check(&|c| c.tick_interval = Duration::ZERO, &|e| {
            matches!(e, ConfigError::TickIntervalOutOfBounds(_))
        });
        check(&|c| c.tick_interval = Duration::from_secs(2), &|e| {
            matches!(e, ConfigError::TickIntervalOutOfBounds(_))
        });
        check(&|c| c.raft.heartbeat_interval_ticks = 0, &|e| matches!(e, ConfigError::Raft(_)));
        check(&|c| c.wal.segment_size = 1000, &|e| matches!(e, ConfigError::Wal(_)));
        check(&|c| c.mailbox_capacity = 1, &|e| matches!(e, ConfigError::MailboxCapacityOutOfBounds(1)));
        check(&|c| c.max_uncommitted_bytes = 0, &|e| {
            matches!(e, ConfigError::MaxUncommittedBytesOutOfBounds { .. })
        });
        check(&|c| c.max_uncommitted_bytes = c.wal.segment_size, &|e| {
            matches!(e, ConfigError::MaxUncommittedBytesOutOfBounds { .. })
        });
        check(&|c| c.max_worker_uncommitted_bytes = 0, &|e| {
            matches!(e, ConfigError::MaxWorkerUncommittedBytesOutOfBounds(0))
        });
        check(&|c| c.max_worker_uncommitted_bytes = MAX_WORKER_UNCOMMITTED_BYTES + 1, &|e| {
            matches!(e, ConfigError::MaxWorkerUncommittedBytesOutOfBounds(_))
        });
        check(&|c| c.max_worker_pending_reads = 0, &|e| {
            matches!(e, ConfigError::MaxWorkerPendingReadsOutOfBounds(0))
        });
        check(&|c| c.max_worker_pending_reads = (1 << 24) + 1, &|e| {
            matches!(e, ConfigError::MaxWorkerPendingReadsOutOfBounds(_))
        });
        check(&|c| c.max_pending_proposals = 0, &|e| {
            matches!(e, ConfigError::MaxPendingProposalsOutOfBounds(0))
        });
        check(&|c| c.max_entry_bytes = 0, &|e| matches!(e, ConfigError::MaxEntryBytesOutOfBounds { .. }));
        check(&|c| c.max_entry_bytes = c.wal.max_write_bytes, &|e| {
            matches!(e, ConfigError::MaxEntryBytesOutOfBounds { .. })
        });
        check(&|c| c.max_pending_reads = 0, &|e| matches!(e, ConfigError::MaxPendingReadsOutOfBounds(0)));
        check(&|c| c.max_pending_reads = 1 << 25, &|e| {
            matches!(e, ConfigError::MaxPendingReadsOutOfBounds(_))
        });
        check(&|c| c.max_apply_backlog = 0, &|e| matches!(e, ConfigError::MaxApplyBacklogOutOfBounds(0)));
        check(&|c| c.max_apply_backlog = 1 << 25, &|e| {
            matches!(e, ConfigError::MaxApplyBacklogOutOfBounds(_))
        });
        check(&|c| c.max_apply_backlog_bytes = 0, &|e| {
            matches!(e, ConfigError::MaxApplyBacklogBytesOutOfBounds(0))
        });
        check(&|c| c.max_apply_backlog_bytes = MAX_APPLY_BACKLOG_BYTES + 1, &|e| {
            matches!(e, ConfigError::MaxApplyBacklogBytesOutOfBounds(_))
        });
        check(&|c| c.max_pending_wal_bytes = 4096, &|e| {
            matches!(e, ConfigError::MaxPendingWalBytesOutOfBounds { .. })
        });
        check(&|c| c.max_pending_wal_bytes = MAX_PENDING_WAL_BYTES + 1, &|e| {
            matches!(e, ConfigError::MaxPendingWalBytesOutOfBounds { .. })
        });
        check(&|c| c.read_timeout_ticks = 1, &|e| matches!(e, ConfigError::ReadTimeoutTooShort { .. }));
        check(&|c| c.propose_timeout_ticks = 1, &|e| {
            matches!(e, ConfigError::ProposeTimeoutOutOfBounds { .. })
        });
        check(&|c| c.propose_timeout_ticks = MAX_PROPOSE_TIMEOUT_TICKS + 1, &|e| {
            matches!(e, ConfigError::ProposeTimeoutOutOfBounds { .. })
        });
        check(&|c| c.compact_entries = 0, &|e| matches!(e, ConfigError::ZeroCompactEntries));
        check(&|c| c.compact_bytes = 4095, &|e| matches!(e, ConfigError::CompactBytesTooSmall(4095)));
        check(&|c| c.compact_snapshot_percent = 10_001, &|e| {
            matches!(e, ConfigError::CompactSnapshotPercentTooLarge(10_001))
        });
        check(&|c| c.max_wal_segments = 1, &|e| matches!(e, ConfigError::MaxWalSegmentsTooSmall(1)));
        check(&|c| c.compact_check_ticks = 0, &|e| matches!(e, ConfigError::ZeroCompactCheckTicks));
        check(&|c| c.gc_interval_elections = 0, &|e| matches!(e, ConfigError::GcIntervalOutOfBounds(0)));
        check(&|c| c.gc_replicas_per_tick = 0, &|e| {
            matches!(e, ConfigError::GcReplicasPerTickOutOfBounds(0))
        });
        check(&|c| c.gc_replicas_per_tick = 1_000_001, &|e| {
            matches!(e, ConfigError::GcReplicasPerTickOutOfBounds(_))
        });
        check(&|c| c.idle_wake_ticks = 0, &|e| matches!(e, ConfigError::IdleWakeTicksOutOfBounds(0)));
        check(&|c| c.idle_wake_ticks = 101, &|e| matches!(e, ConfigError::IdleWakeTicksOutOfBounds(101)));
        check(&|c| c.max_creates_per_tick = 0, &|e| {
            matches!(e, ConfigError::MaxCreatesPerTickOutOfBounds(0))
        });
        check(&|c| c.max_creates_per_tick = MAX_CREATES_PER_TICK + 1, &|e| {
            matches!(e, ConfigError::MaxCreatesPerTickOutOfBounds(_))
        });
        check(&|c| c.max_creates_per_node_per_tick = 0, &|e| {
            matches!(e, ConfigError::MaxCreatesPerNodeOutOfBounds { .. })
        });
        check(&|c| c.max_creates_per_node_per_tick = c.max_creates_per_tick + 1, &|e| {
            matches!(e, ConfigError::MaxCreatesPerNodeOutOfBounds { .. })
        });
        check(&|c| c.max_unconfirmed_replicas = 0, &|e| {
            matches!(e, ConfigError::MaxUnconfirmedReplicasOutOfBounds(0))
        });
        check(&|c| c.max_unconfirmed_replicas = MAX_UNCONFIRMED_REPLICAS + 1, &|e| {
            matches!(e, ConfigError::MaxUnconfirmedReplicasOutOfBounds(_))
        });
        check(&|c| c.max_tombstone_records = 0, &|e| {
            matches!(e, ConfigError::MaxTombstoneRecordsOutOfBounds(0))
        });
        check(&|c| c.max_tombstone_records = (1 << 26) + 1, &|e| {
            matches!(e, ConfigError::MaxTombstoneRecordsOutOfBounds(_))
        });
        check(&|c| c.max_unconfirmed_replicas_per_node = 0, &|e| {
            matches!(e, ConfigError::MaxUnconfirmedPerNodeOutOfBounds { .. })
        });
        check(&|c| c.max_unconfirmed_replicas_per_node = c.max_unconfirmed_replicas + 1, &|e| {
            matches!(e, ConfigError::MaxUnconfirmedPerNodeOutOfBounds { .. })
        });
        check(&|c| c.unconfirmed_replica_ticks = 1, &|e| {
            matches!(e, ConfigError::UnconfirmedReplicaTicksOutOfBounds { .. })
        });
        check(&|c| c.unconfirmed_replica_ticks = MAX_UNCONFIRMED_REPLICA_TICKS + 1, &|e| {
            matches!(e, ConfigError::UnconfirmedReplicaTicksOutOfBounds { .. })
        });
        check(&|c| c.max_learned_peers = 0, &|e| matches!(e, ConfigError::MaxLearnedPeersOutOfBounds(0)));
        check(&|c| c.max_snapshot_bytes = MIN_SNAPSHOT_BYTES - 1, &|e| {
            matches!(e, ConfigError::MaxSnapshotBytesOutOfBounds(_))
        });
        check(&|c| c.max_snapshot_bytes = MAX_SNAPSHOT_BYTES + 1, &|e| {
            matches!(e, ConfigError::MaxSnapshotBytesOutOfBounds(_))
        });
        check(&|c| c.max_learned_peers = MAX_LEARNED_PEERS + 1, &|e| {
            matches!(e, ConfigError::MaxLearnedPeersOutOfBounds(_))
        });
        check(&|c| c.session_ttl = MIN_SESSION_TTL / 2, &|e| {
            matches!(e, ConfigError::SessionTtlOutOfBounds(_))
        });
        check(&|c| c.session_ttl = MAX_SESSION_TTL * 2, &|e| {
            matches!(e, ConfigError::SessionTtlOutOfBounds(_))
        });
        check(&|c| c.max_sessions = 0, &|e| matches!(e, ConfigError::MaxSessionsOutOfBounds(0)));
        check(&|c| c.max_sessions = MAX_SESSIONS + 1, &|e| {
            matches!(e, ConfigError::MaxSessionsOutOfBounds(_))
        });
        check(&|c| c.inline_apply_slow = Duration::from_micros(999), &|e| {
            matches!(e, ConfigError::InlineApplySlowOutOfBounds(_))
        });
        check(&|c| c.inline_apply_slow = MAX_INLINE_APPLY_SLOW + Duration::from_nanos(1), &|e| {
            matches!(e, ConfigError::InlineApplySlowOutOfBounds(_))
        });
        check(&|c| c.inline_sync_max = MAX_INLINE_SYNC_MAX + Duration::from_nanos(1), &|e| {
            matches!(e, ConfigError::InlineSyncMaxOutOfBounds(_))
        });
        check(&|c| c.load_half_life = Duration::from_millis(9), &|e| {
            matches!(e, ConfigError::LoadHalfLifeOutOfBounds(_))
        });
        check(&|c| c.load_half_life = MAX_LOAD_HALF_LIFE * 2, &|e| {
            matches!(e, ConfigError::LoadHalfLifeOutOfBounds(_))
        });
        check(&|c| c.load_fold_interval = Duration::from_millis(9), &|e| {
            matches!(e, ConfigError::LoadFoldIntervalOutOfBounds { .. })
        });
        check(
            &|c| c.load_fold_interval = Duration::from_secs(11),
            &|e| matches!(e, ConfigError::LoadFoldIntervalOutOfBounds { max, .. } if *max == Duration::from_secs(10)),
        );
    }
}

#[cfg(all(test, feature = "serde"))]
mod serde_tests {
    use super::*;

    #[test]
    fn reads_a_toml_file_with_human_units_and_keeps_the_defaults() {
        let c: EngineConfig = toml::from_str(
            r#"
            node_id = 3
            data_dir = "/var/lib/flotilla"
            tick_interval = "20ms"
            max_uncommitted_bytes = "4MiB"
            max_entry_bytes = 65536
            compact_bytes = "128 MiB"
            session_ttl = "10m"
            [raft]
            election_timeout_min_ticks = 30
            election_timeout_max_ticks = 60
            read_mode = "lease_based"
            [wal]
            segment_size = "32MiB"
            group_commit_wait = "0s"
            "#,
        )
        .unwrap();
        assert_eq!((c.node_id, c.tick_interval), (3, Duration::from_millis(20)));
        assert_eq!((c.max_uncommitted_bytes, c.max_entry_bytes), (4 << 20, 65536));
        assert_eq!(c.compact_bytes, 128 << 20);
        assert_eq!(c.session_ttl, Duration::from_secs(600));
        assert_eq!(c.raft.election_timeout_min_ticks, 30);
        assert_eq!(c.raft.read_mode, crate::raft::config::ReadMode::LeaseBased);
        // A [raft] table keeps the engine's template for what it does not name.
        assert!(c.raft.quiesce, "the engine template (quiescence on) fills the rest");
        assert_eq!(c.raft.tick_nanos, RaftConfig::for_engine().tick_nanos);
        assert_eq!(c.wal.segment_size, 32 << 20);
        let d = EngineConfig::new(3, "/var/lib/flotilla");
        assert_eq!((c.mailbox_capacity, c.max_snapshot_bytes), (d.mailbox_capacity, d.max_snapshot_bytes));
        // max_uncommitted_bytes 4 MiB <= 32 MiB / 4: valid.
        let v = c.validate().unwrap();
        assert_eq!(v.get().wal.dir, PathBuf::from("/var/lib/flotilla/wal"));
    }

    #[test]
    fn deserializing_never_bypasses_the_rules() {
        let empty: EngineConfig = toml::from_str("").unwrap();
        assert!(matches!(empty.validate(), Err(ConfigError::ZeroNodeId)));
        let c: EngineConfig =
            toml::from_str("node_id = 1\ndata_dir = \"/d\"\ntick_interval = \"5s\"\n").unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::TickIntervalOutOfBounds(_))));
        let c: EngineConfig =
            toml::from_str("node_id = 1\ndata_dir = \"/d\"\n[raft]\nheartbeat_interval_ticks = 0\n").unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::Raft(_))));
        assert!(toml::from_str::<EngineConfig>("node_id = 1\nworkerz = 2\n").is_err(), "unknown field");
        assert!(toml::from_str::<EngineConfig>("node_id = 1\n[raft]\nid = 5\n").is_err(), "engine-set field");
        assert!(toml::from_str::<EngineConfig>("node_id = 1\ntick_interval = 10\n").is_err(), "no unit");
    }

    #[test]
    fn round_trips_through_toml() {
        let mut c = EngineConfig::new(9, "/x");
        c.max_snapshot_bytes = 3 << 30;
        c.raft.pre_vote = false;
        c.wal.cache_bytes = 12_345;
        let text = toml::to_string(&c).unwrap();
        let back: EngineConfig = toml::from_str(&text).unwrap();
        assert_eq!(format!("{back:?}"), format!("{c:?}"));
    }
}
