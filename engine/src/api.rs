//! The embedding API: [`Engine`], its configuration ([`EngineConfig`], validated once into a
//! [`ValidEngineConfig`]), the [`StateMachine`] an application plugs in, and the typed
//! answers of every operation.
//!
//! Owns the public surface and its error types. Never runs Raft rules or touches the WAL or
//! the network itself: every operation becomes a command in the mailbox of the worker that
//! owns the group (see [`crate::runtime`]).
//!
//! Errors: "not appended, try elsewhere" answers ([`ProposeError::NotLeader`],
//! [`ProposeError::TransferInProgress`]) are kept apart from outcomes of appended
//! proposals ([`ProposeError::Dropped`], [`ProposeError::Indeterminate`]), from
//! backpressure ([`ProposeError::Busy`]) and from fatal errors
//! ([`ProposeError::StorageFailed`], [`ProposeError::Shutdown`]); see
//! [`ProposeError::class`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;

use crate::raft::conf::{ConfChangeError, ConfState};
use crate::raft::config::{Config as RaftConfig, ConfigError as RaftConfigError, ValidConfig};
use crate::raft::types::{NodeId, Replica, ReplicaId, Role};
use crate::runtime::{self, Abandoned, Pending};
use crate::transport::Transport;

pub use flotilla_wal::WalConfig;

// ---------------------------------------------------------------------------------------
// Configuration

/// Most worker threads allowed.
pub const MAX_WORKERS: usize = 256;
/// Shortest tick interval allowed.
pub const MIN_TICK: Duration = Duration::from_millis(1);
/// Longest tick interval allowed.
pub const MAX_TICK: Duration = Duration::from_secs(1);
/// The smallest `compact_bytes` accepted.
pub const MIN_COMPACT_BYTES: u64 = 4096;
/// Largest `max_pending_wal_bytes` allowed (16 GiB).
pub const MAX_PENDING_WAL_BYTES: u64 = 16 << 30;
/// Largest `propose_timeout_ticks` allowed.
pub const MAX_PROPOSE_TIMEOUT_TICKS: u32 = 1 << 24;

/// The engine's configuration as a user writes it. Build with [`EngineConfig::new`], adjust
/// fields, and hand it to [`Engine::open`] (which validates it with
/// [`EngineConfig::validate`]).
#[derive(Debug, Clone)]
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
    pub tick_interval: Duration,
    /// Template of every replica's Raft configuration (election and heartbeat ticks,
    /// flow control, PreVote, CheckQuorum, read mode, quiescence). Its `id`, `applied`,
    /// `seed` and `tick_nanos` (from `tick_interval`) are set by the engine. Default
    /// [`RaftConfig::new`] with `quiesce` on; validated by its own rules.
    pub raft: RaftConfig,
    /// The WAL's configuration. Its `dir` is ignored: the WAL lives in `data_dir/wal`.
    /// Default [`WalConfig::new`]; validated by its own rules.
    pub wal: WalConfig,
    /// Capacity of each worker's mailbox in commands. A full mailbox makes operations
    /// answer `Busy` and drops incoming network messages (Raft retransmits). Default
    /// 65,536; bounds 64..=16,777,216.
    pub mailbox_capacity: usize,
    /// Bytes of proposals appended but not yet applied that a group may hold before
    /// `propose` answers `Busy`. Default 8 MiB; bounds 1..=`wal.segment_size / 4` (so one
    /// turn's write batch always fits in a WAL segment).
    pub max_uncommitted_bytes: u64,
    /// Proposals appended but not yet applied that one worker may hold before `propose`
    /// answers `Busy`. Default 262,144; bounds 1..=16,777,216.
    pub max_pending_proposals: usize,
    /// Largest proposal payload accepted. Default 4 MiB; bounds 1..=`wal.max_write_bytes / 2`.
    pub max_entry_bytes: usize,
    /// Committed entries one worker may have handed to its apply thread and not seen
    /// applied before `propose` answers `Busy` ([`BusyReason::ApplyBacklog`]): bounds the
    /// memory a slow state machine makes the worker hold. Default 65,536; bounds
    /// 1..=16,777,216.
    pub max_apply_backlog: u64,
    /// Bytes of WAL batches one worker may have submitted and not seen durable before
    /// `propose` answers `Busy` ([`BusyReason::WalPending`]): bounds the memory a slow
    /// disk makes the worker hold. Default 64 MiB; bounds `wal.max_write_bytes`..=16 GiB.
    pub max_pending_wal_bytes: u64,
    /// Ticks after which a read barrier that was not confirmed resolves as
    /// [`ReadError::Timeout`]. Default 200; must be at least the Raft template's
    /// `election_timeout_max_ticks`.
    pub read_timeout_ticks: u32,
    /// Ticks after which a proposal or membership change whose outcome this replica has
    /// not learnt completes [`ProposeError::Indeterminate`] (or
    /// [`MembershipError::Indeterminate`]): a deposed leader cut off from the group may
    /// never learn whether its entries committed, and its waiters must not hold the
    /// worker's `max_pending_proposals` forever. Default 3,000 (30 s at the default tick);
    /// bounds `raft.election_timeout_max_ticks`..=16,777,216.
    pub propose_timeout_ticks: u32,
    /// A learner is promoted only if its match is within this many entries of the
    /// leader's last index (else [`MembershipError::LearnerNotCaughtUp`]). Default 1,000.
    pub promote_lag_max: u64,
    /// Applied entries past a group's compaction point that make the engine snapshot its
    /// state machine to a file and compact the group's log. Default 10,000; at least 1.
    pub compact_entries: u64,
    /// Bytes of applied entries past a group's compaction point (payload sizes, counted
    /// as they are applied) that make the engine snapshot and compact the group, whatever
    /// their count. Default 64 MiB; at least 4 KiB.
    pub compact_bytes: u64,
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
    pub gc_interval_elections: u32,
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
            raft: RaftConfig { quiesce: true, ..RaftConfig::new(1) },
            mailbox_capacity: 1 << 16,
            max_uncommitted_bytes: 8 << 20,
            max_pending_proposals: 1 << 18,
            max_entry_bytes: 4 << 20,
            max_apply_backlog: 1 << 16,
            max_pending_wal_bytes: 64 << 20,
            read_timeout_ticks: 200,
            propose_timeout_ticks: 3000,
            promote_lag_max: 1000,
            compact_entries: 10_000,
            compact_bytes: 64 << 20,
            max_wal_segments: 16,
            compact_check_ticks: 100,
            max_wakes_per_tick: 1024,
            gc_interval_elections: 10,
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
        // Leases are measured on the worker's clock in nanoseconds; a tick is the interval.
        raft.tick_nanos = u64::try_from(self.tick_interval.as_nanos()).unwrap_or(u64::MAX);
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
        if !(1..=1 << 24).contains(&self.max_pending_proposals) {
            return Err(ConfigError::MaxPendingProposalsOutOfBounds(self.max_pending_proposals));
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
        let workers = if self.workers == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(MAX_WORKERS)
        } else {
            self.workers
        };
        Ok(ValidEngineConfig { raw: EngineConfig { workers, wal, ..self }, raft })
    }
}

/// An [`EngineConfig`] that passed every rule, with defaults resolved.
#[derive(Debug, Clone)]
pub struct ValidEngineConfig {
    raw: EngineConfig,
    raft: ValidConfig,
}

impl ValidEngineConfig {
    /// The checked values (with `workers` resolved and `wal.dir` set).
    pub fn get(&self) -> &EngineConfig {
        &self.raw
    }

    /// The Raft configuration of replica `id` (template with its id, applied index and
    /// seed).
    pub(crate) fn raft_for(
        &self,
        id: ReplicaId,
        applied: u64,
        seed: u64,
    ) -> Result<ValidConfig, RaftConfigError> {
        // `raft` carries `tick_nanos` from `tick_interval` (set in `validate`).
        let mut c: RaftConfig = (*self.raft).clone();
        c.id = id;
        c.applied = applied;
        c.seed = seed;
        c.validate()
    }
}

/// Why an [`EngineConfig`] was refused: one variant per rule.
#[derive(Debug, Error)]
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
    /// `max_pending_proposals` outside 1..=16,777,216.
    #[error("max_pending_proposals {0} out of bounds 1..=16777216")]
    MaxPendingProposalsOutOfBounds(usize),
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

// ---------------------------------------------------------------------------------------
// The state machine

/// Something a state machine asks the engine to do when it applies an entry: returned by
/// [`StateMachine::take_effects`] right after that entry's `apply`, and executed at that
/// index on every replica that applies it (so on every node hosting the group, the same
/// way).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Effect {
    /// Create `group` with founding voters `members`, exactly as [`Engine::create_group`]
    /// does on each of them (replica ids 1, 2, ... in that order; the state machine from
    /// the engine's factory). Each node among `members` that applies the entry creates its
    /// replica; a node that already has it, or holds its tombstone, does nothing. The
    /// building block of a split: the application's factory gives the new group its first
    /// state (e.g. the split-off half of the parent's data, which the parent's state
    /// machine set aside when it applied the split). A founding member that does not host
    /// the applying group is created when the new group's leader first contacts it.
    CreateGroup {
        /// The new group's id.
        group: u64,
        /// Its founding voters, in replica-id order.
        members: Vec<NodeId>,
    },
}

/// The application's replicated state of one group. Called only from the apply thread of
/// the worker that owns the group (never from the worker itself, so a slow state machine
/// does not stall Raft), in log order.
pub trait StateMachine: Send + 'static {
    /// Applies the committed entry at (`index`, `term`). `command` is the proposal's bytes,
    /// or `None` for an entry the engine appended itself (a leader's no-op, a membership
    /// change), which still advances the applied index. The returned bytes resolve the
    /// proposal's waiter on the node that proposed it.
    fn apply(&mut self, index: u64, term: u64, command: Option<&[u8]>) -> Bytes;

    /// The index this state machine has durably applied (0 for a state machine that keeps
    /// its data in memory only). On open, the engine replays only entries after it.
    fn applied_index(&self) -> u64;

    /// Writes a snapshot of the current state (which reflects every entry applied so far)
    /// to `out`. The simple path: it runs on the apply thread, so apply waits for it. A
    /// state machine that can hand out a point-in-time view implements
    /// [`StateMachine::snapshot_source`] instead, and this is then not called.
    fn snapshot(&mut self, out: &mut dyn std::io::Write) -> std::io::Result<()>;

    /// Replaces the whole state with the snapshot read from `input`, which reflects the
    /// log up to (`index`, `term`).
    fn restore(&mut self, index: u64, term: u64, input: &mut dyn std::io::Read) -> std::io::Result<()>;

    /// A point-in-time view of the current state (reflecting every entry applied so far),
    /// which the engine reads in chunks on a background thread and writes to the
    /// snapshot file while apply goes on. Default `None`: the engine calls
    /// [`StateMachine::snapshot`] on the apply thread instead.
    fn snapshot_source(&mut self) -> Option<Box<dyn SnapshotSource>> {
        None
    }

    /// The effects of the entry just applied; called after every [`StateMachine::apply`]
    /// (return them once: the engine executes what it is given). Default: none.
    fn take_effects(&mut self) -> Vec<Effect> {
        Vec::new()
    }
}

/// A consistent, point-in-time view of a state machine's state (e.g. a storage engine's
/// snapshot, or a copy-on-write clone), from [`StateMachine::snapshot_source`]. The engine
/// reads it by offset, in chunks, on a background thread while the state machine goes on
/// applying; a failed read is retried at the same offset.
pub trait SnapshotSource: Send + 'static {
    /// The log position the view reflects: (index, term) of the last entry applied in it.
    /// The engine checks it against the entries it handed out and refuses a mismatch.
    fn reflects(&self) -> (u64, u64);

    /// Copies the view's bytes from `offset` into `buf`; returns how many were copied, 0
    /// at the end. Offsets only grow, except that after an error the same offset is asked
    /// again.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize>;
}

/// Makes the state machine of a replica the engine creates by itself: recovered on open,
/// or created when a group's leader first contacts this node after adding it.
pub type StateMachineFactory = Arc<dyn Fn(u64) -> Box<dyn StateMachine> + Send + Sync>;

// ---------------------------------------------------------------------------------------
// Errors

/// How a caller should treat an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Not done; retry at another node (the hint, if any).
    Redirect,
    /// Not done; retry later (backpressure, no leader yet).
    Retry,
    /// The operation was accepted and its outcome is known to be failure
    /// (`Dropped`) or cannot be known (`Indeterminate`): retrying may apply it twice.
    Outcome,
    /// The engine cannot continue (storage failed, shut down), or the request is invalid.
    Fatal,
}

/// Why a bounded resource refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusyReason {
    /// The worker's mailbox is full.
    Mailbox,
    /// The group's appended but unapplied bytes exceed `max_uncommitted_bytes`.
    GroupUncommitted,
    /// The worker's appended but unapplied proposals exceed `max_pending_proposals`.
    WorkerPending,
    /// The worker's committed entries waiting for its apply thread exceed
    /// `max_apply_backlog`.
    ApplyBacklog,
    /// The worker's WAL bytes submitted and not yet durable exceed `max_pending_wal_bytes`.
    WalPending,
}

/// Why a proposal did not (or may not) take effect.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProposeError {
    /// Not appended: this replica is not the leader. Try the hinted node.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The node hosting the leader this replica knows of.
        leader_hint: Option<NodeId>,
    },
    /// Not appended: a leadership transfer is in progress; retry at its target.
    #[error("leadership transfer in progress (to node {to:?})")]
    TransferInProgress {
        /// The transfer's target node.
        to: Option<NodeId>,
    },
    /// This node hosts no replica of the group.
    #[error("group {0} not found")]
    GroupNotFound(u64),
    /// Not appended: a bound was reached.
    #[error("busy: {0:?}")]
    Busy(BusyReason),
    /// Not appended: the payload exceeds `max_entry_bytes`.
    #[error("proposal of {len} bytes exceeds the maximum {max}")]
    TooLarge {
        /// The payload's length.
        len: usize,
        /// `max_entry_bytes`.
        max: usize,
    },
    /// Appended, and provably never applied: an entry of another term was committed at
    /// its index, or one of a newer term before it. Safe to retry.
    #[error("proposal dropped: another entry was committed at its index")]
    Dropped,
    /// Appended, but the engine cannot know whether it applied (the replica was removed,
    /// installed a snapshot past it, its storage failed after the append, the engine shut
    /// down first, or `propose_timeout_ticks` passed). Never retry blindly.
    #[error("proposal outcome unknown")]
    Indeterminate,
    /// Not appended: the WAL failed; the engine stopped.
    #[error("storage failed; the engine stopped")]
    StorageFailed,
    /// The engine is shut down (and the proposal was not appended).
    #[error("engine shut down")]
    Shutdown,
}

impl ProposeError {
    /// How to treat this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            ProposeError::NotLeader { .. } | ProposeError::TransferInProgress { .. } => ErrorClass::Redirect,
            ProposeError::Busy(_) => ErrorClass::Retry,
            ProposeError::Dropped | ProposeError::Indeterminate => ErrorClass::Outcome,
            ProposeError::GroupNotFound(_)
            | ProposeError::TooLarge { .. }
            | ProposeError::StorageFailed
            | ProposeError::Shutdown => ErrorClass::Fatal,
        }
    }
}

impl Abandoned for Result<Bytes, ProposeError> {
    fn abandoned() -> Self {
        Err(ProposeError::Indeterminate)
    }
}

/// Why a read barrier failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReadError {
    /// No leader is known to confirm the read; retry later or at the hinted node.
    #[error("no leader to confirm the read (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The node hosting the leader this replica knows of.
        leader_hint: Option<NodeId>,
    },
    /// This node hosts no replica of the group.
    #[error("group {0} not found")]
    GroupNotFound(u64),
    /// The worker's mailbox is full.
    #[error("busy")]
    Busy,
    /// The read was not confirmed within `read_timeout_ticks` (leadership changed or a
    /// message was lost); retry.
    #[error("read not confirmed in time")]
    Timeout,
    /// The WAL failed; the engine stopped.
    #[error("storage failed; the engine stopped")]
    StorageFailed,
    /// The engine is shut down.
    #[error("engine shut down")]
    Shutdown,
}

impl Abandoned for Result<(), ProposeError> {
    fn abandoned() -> Self {
        Err(ProposeError::Shutdown)
    }
}

impl Abandoned for Result<u64, ReadError> {
    fn abandoned() -> Self {
        Err(ReadError::Shutdown)
    }
}

/// Why a leadership transfer was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransferError {
    /// This replica is not the leader; ask the hinted node.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The node hosting the leader this replica knows of.
        leader_hint: Option<NodeId>,
    },
    /// This node hosts no replica of the group.
    #[error("group {0} not found")]
    GroupNotFound(u64),
    /// The target node hosts no member of the group.
    #[error("node {0} is not a member of the group")]
    NotMember(NodeId),
    /// The target's replica is a learner (or outgoing voter) and cannot lead.
    #[error("node {0} is not a voter of the group")]
    NotVoter(NodeId),
    /// The target is this node, the leader already.
    #[error("node {0} already leads the group")]
    ToSelf(NodeId),
    /// A membership change of the group is pending (not yet applied, or a joint
    /// configuration not yet left); retry once it completes.
    #[error("a membership change is pending")]
    ConfChangePending,
    /// The worker's mailbox is full.
    #[error("busy")]
    Busy,
    /// The WAL failed; the engine stopped.
    #[error("storage failed; the engine stopped")]
    StorageFailed,
    /// The engine is shut down.
    #[error("engine shut down")]
    Shutdown,
}

impl Abandoned for Result<(), TransferError> {
    fn abandoned() -> Self {
        Err(TransferError::Shutdown)
    }
}

/// A membership change of one group, by node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// Adds `node` as a learner under a new replica id. The node creates its replica when
    /// the leader first contacts it.
    AddLearner(NodeId),
    /// Promotes the learner on `node` to voter. Refused with
    /// [`MembershipError::LearnerNotCaughtUp`] unless its match is within
    /// `promote_lag_max` of the leader's last index, or `force` is set.
    Promote {
        /// The learner's node.
        node: NodeId,
        /// Skip the catch-up check.
        force: bool,
    },
    /// Adds `node` directly as a voter under a new replica id.
    AddVoter(NodeId),
    /// Removes the member on `node`; its replica destroys itself when it applies the
    /// change. A voter is never removed directly (a destroyed voter could take a vote
    /// that members not yet aware of its removal still need): it is first demoted to
    /// learner by a joint change left automatically, then the learner is removed; the call
    /// resolves when both are applied here. If leadership moves between the two steps the
    /// call completes `NotLeader` (or `Indeterminate` if the demotion's outcome is
    /// unknown); removing a learner is direct, so a retry finishes the job. The leader
    /// cannot remove itself ([`ConfChangeError::RemovesLeader`]): transfer leadership
    /// first.
    Remove(NodeId),
    /// Several of the changes above at once through a joint configuration (Raft thesis
    /// §4.3), left automatically once applied. Resolves when the joint configuration is
    /// entered; the leader then proposes leaving it. Inside a joint change, `Remove` of a
    /// voter demotes it to learner (remove the learner afterwards); `Remove` of a learner
    /// removes it.
    Joint(Vec<MembershipChange>),
}

/// Why a membership change did not (or may not) take effect.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MembershipError {
    /// Not appended: this replica is not the leader; ask the hinted node.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The node hosting the leader this replica knows of.
        leader_hint: Option<NodeId>,
    },
    /// This node hosts no replica of the group.
    #[error("group {0} not found")]
    GroupNotFound(u64),
    /// Not appended: another change is still pending.
    #[error("a membership change is pending")]
    ChangePending,
    /// Not appended: the new leader has not committed an entry of its term; retry.
    #[error("the leader is not ready for membership changes yet")]
    LeaderNotReady,
    /// Not appended: a leadership transfer is in progress.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// Not appended: the learner lags too far behind to be promoted.
    #[error("learner on node {node} lags {lag} entries behind")]
    LearnerNotCaughtUp {
        /// The learner's node.
        node: NodeId,
        /// Entries behind the leader's last index.
        lag: u64,
    },
    /// Not appended: the node is already a member (adds) or not a member (promote,
    /// remove).
    #[error("invalid change for node {node}: {why}")]
    Invalid {
        /// The node named.
        node: NodeId,
        /// What is wrong.
        why: String,
    },
    /// Not appended: the change is invalid for the current configuration.
    #[error("invalid membership change: {0}")]
    Conf(#[from] ConfChangeError),
    /// The worker's mailbox is full.
    #[error("busy")]
    Busy,
    /// Appended, and provably never applied (see [`ProposeError::Dropped`]).
    #[error("change dropped: another entry was committed at its index")]
    Dropped,
    /// Appended; the outcome cannot be known (see [`ProposeError::Indeterminate`]).
    #[error("change outcome unknown")]
    Indeterminate,
    /// Not appended: the WAL failed; the engine stopped.
    #[error("storage failed; the engine stopped")]
    StorageFailed,
    /// The engine is shut down.
    #[error("engine shut down")]
    Shutdown,
}

impl Abandoned for Result<(), MembershipError> {
    fn abandoned() -> Self {
        Err(MembershipError::Indeterminate)
    }
}

/// Why a group could not be created.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CreateGroupError {
    /// The member list is empty.
    #[error("a group needs at least one member")]
    NoMembers,
    /// A node is listed twice.
    #[error("node {0} listed twice")]
    DuplicateMember(NodeId),
    /// This node is not among the members (it joins when a leader adds it).
    #[error("this node is not among the members")]
    NotAMember,
    /// The group was removed from this node; its tombstone forbids recreating it here.
    #[error("group {0} was removed from this node")]
    Tombstoned(u64),
    /// The group exists here with another replica id.
    #[error("group {group} exists here as replica {existing}")]
    Conflict {
        /// The group.
        group: u64,
        /// The replica id it has here.
        existing: ReplicaId,
    },
    /// The worker's mailbox is full.
    #[error("busy")]
    Busy,
    /// The WAL failed; the engine stopped.
    #[error("storage failed; the engine stopped")]
    StorageFailed,
    /// The engine is shut down.
    #[error("engine shut down")]
    Shutdown,
}

impl Abandoned for Result<(), CreateGroupError> {
    fn abandoned() -> Self {
        Err(CreateGroupError::Shutdown)
    }
}

/// Why [`Engine::open`] failed.
#[derive(Debug, Error)]
pub enum OpenError {
    /// The configuration broke a rule.
    #[error("invalid config: {0}")]
    Config(#[from] ConfigError),
    /// The transport belongs to another node.
    #[error("transport is node {transport}, config says {config}")]
    NodeMismatch {
        /// `config.node_id`.
        config: NodeId,
        /// The transport's node id.
        transport: NodeId,
    },
    /// The data directory could not be created or read.
    #[error("data dir: {0}")]
    Io(#[from] std::io::Error),
    /// The WAL could not be opened or recovered.
    #[error("wal: {0}")]
    Wal(#[from] flotilla_wal::OpenError),
    /// A group's state machine reports an applied index past the last index of the
    /// group's log: it ran ahead of the WAL. Opening would take the log's stale tail as
    /// committed, so the node refuses; rebuild that state machine (or the node) from its
    /// peers.
    #[error("recovering group {group}: the state machine applied index {applied}, past the log's last index {last}")]
    AppliedPastLog {
        /// The group.
        group: u64,
        /// The state machine's `applied_index()`.
        applied: u64,
        /// The last index of the group's log (or of its snapshot).
        last: u64,
    },
    /// A group's durable state is inconsistent.
    #[error("recovering group {group}: {reason}")]
    Recovery {
        /// The group.
        group: u64,
        /// What failed.
        reason: String,
    },
}

// ---------------------------------------------------------------------------------------
// Handles and status

/// A proposal's outcome: the state machine's result once applied. Wait with
/// [`Pending::wait`] or `.await` it.
pub type Proposal = Pending<Result<Bytes, ProposeError>>;
/// A read barrier: resolves with the index applied locally once the read is linearizable.
pub type ReadBarrier = Pending<Result<u64, ReadError>>;
/// A membership change's outcome: resolves once the change is applied here.
pub type MembershipProposal = Pending<Result<(), MembershipError>>;

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
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// Engine-wide metrics from [`Engine::metrics`]: counters since open (monotonic) and
/// gauges (a current value, marked so). The set is documented in ARCHITECTURE.md.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metrics {
    /// WAL write batches submitted by the workers.
    pub wal_batches: u64,
    /// Group writes (one per `Ready` that wrote something) carried by those batches:
    /// divided by `wal_batches`, the mean groups per batch.
    pub wal_batch_groups: u64,
    /// Encoded bytes of those batches: divided by `wal_batches`, the mean batch size.
    pub wal_batch_bytes: u64,
    /// Group-commit write+sync calls of the WAL (one covers the batches of all workers
    /// that were waiting).
    pub wal_syncs: u64,
    /// Nanoseconds spent in those calls in total (mean fsync latency: divide by
    /// `wal_syncs`).
    pub wal_sync_nanos_total: u64,
    /// The longest of those calls, in nanoseconds.
    pub wal_sync_nanos_max: u64,
    /// Gauge: bytes of WAL batches submitted and not yet durable, over all workers.
    pub wal_pending_bytes: u64,
    /// Gauge: live WAL segments (see `EngineConfig::max_wal_segments`).
    pub wal_segments: u64,
    /// Entries applied by the state machines.
    pub applied_entries: u64,
    /// Gauge: apply lag, in entries committed and handed to the apply threads but not yet
    /// applied, over all workers.
    pub apply_lag: u64,
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
    pub refused_busy_mailbox: u64,
    /// ... because of the group's unapplied bytes ([`BusyReason::GroupUncommitted`]).
    pub refused_busy_group_uncommitted: u64,
    /// ... because of the worker's pending proposals ([`BusyReason::WorkerPending`]).
    pub refused_busy_worker_pending: u64,
    /// ... because of the worker's apply backlog ([`BusyReason::ApplyBacklog`]).
    pub refused_busy_apply_backlog: u64,
    /// ... because of the worker's pending WAL bytes ([`BusyReason::WalPending`]).
    pub refused_busy_wal_pending: u64,
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
    pub effects_create_group: u64,
    /// Network messages dropped because a mailbox was full.
    pub messages_dropped: u64,
    /// Raft ticks given to groups so far; quiesced groups get none, so with every group
    /// quiesced this stops growing.
    pub raft_ticks: u64,
    /// Worker ticks so far (summed over workers).
    pub worker_ticks: u64,
    /// Groups quiesced now.
    pub quiesced_groups: u64,
    /// Quiesced groups woken because their leader's node went down or restarted (at most
    /// `max_wakes_per_tick` per worker tick).
    pub liveness_wakes: u64,
    /// Message batches sent (one frame per destination node per worker turn; heartbeats
    /// of all groups to one node share a batch).
    pub net_batches: u64,
}

// ---------------------------------------------------------------------------------------
// The engine

/// A node of the multi-raft engine: its workers, its WAL and its transport. Share it by
/// reference across threads. `propose`, `read_index` and `change_membership` return at
/// once with a handle; `create_group` and `transfer_leader` wait for the owning worker's
/// answer (creating a founding replica waits for one WAL write); `status` waits for every
/// worker; `shutdown` waits for the writes in flight.
pub struct Engine {
    rt: runtime::Runtime,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("node", &self.rt.node_id()).finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens the node: validates `config`, opens (recovering) the WAL in
    /// `data_dir/wal`, recovers every group found there (state machines from `factory`,
    /// replaying the entries after their `applied_index`), and starts the workers and the
    /// network thread over `transport`.
    pub fn open(
        config: EngineConfig,
        transport: Box<dyn Transport>,
        factory: StateMachineFactory,
    ) -> Result<Engine, OpenError> {
        let cfg = config.validate()?;
        if transport.node_id() != cfg.get().node_id {
            return Err(OpenError::NodeMismatch {
                config: cfg.get().node_id,
                transport: transport.node_id(),
            });
        }
        Ok(Engine { rt: runtime::Runtime::start(cfg, transport, factory, None)? })
    }

    /// Like [`Engine::open`], with the WAL's file operations going through `fs` (tests
    /// inject write and sync failures and power loss with [`flotilla_wal::fault::FaultFs`]).
    /// Snapshot files do not go through `fs`.
    pub fn open_with_fs(
        config: EngineConfig,
        transport: Box<dyn Transport>,
        factory: StateMachineFactory,
        fs: Arc<dyn flotilla_wal::FileSystem>,
    ) -> Result<Engine, OpenError> {
        let cfg = config.validate()?;
        if transport.node_id() != cfg.get().node_id {
            return Err(OpenError::NodeMismatch {
                config: cfg.get().node_id,
                transport: transport.node_id(),
            });
        }
        Ok(Engine { rt: runtime::Runtime::start(cfg, transport, factory, Some(fs))? })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.rt.node_id()
    }

    /// Creates this node's replica of a new group whose founding voters are `members`
    /// (given in the same order on every node; replica ids are assigned 1, 2, ... in that
    /// order). The founding configuration is the group's first log entry, so replicas
    /// added later learn it from the log. Every founding node calls this; if the replica
    /// already exists here (recovered, created earlier, or created by its leader's first
    /// message) nothing changes and `Ok` is returned (`state_machine` is then dropped).
    pub fn create_group(
        &self,
        group: u64,
        members: &[NodeId],
        state_machine: Box<dyn StateMachine>,
    ) -> Result<(), CreateGroupError> {
        let (conf, replica) = self.founding(members)?;
        self.rt.create_group(group, replica, conf, state_machine, None).wait()
    }

    /// The founding configuration of a new group (`members` as voters, replica ids 1..)
    /// and this node's replica id in it.
    fn founding(&self, members: &[NodeId]) -> Result<(ConfState, u64), CreateGroupError> {
        if members.is_empty() {
            return Err(CreateGroupError::NoMembers);
        }
        for (i, n) in members.iter().enumerate() {
            if members[..i].contains(n) {
                return Err(CreateGroupError::DuplicateMember(*n));
            }
        }
        let me = self.node_id();
        let Some(pos) = members.iter().position(|&n| n == me) else {
            return Err(CreateGroupError::NotAMember);
        };
        let conf =
            ConfState::with_voters(members.iter().enumerate().map(|(i, &n)| Replica::new(n, i as u64 + 1)));
        Ok((conf, pos as u64 + 1))
    }

    /// Like [`Engine::create_group`], with a designated first leader: the replica on
    /// `first_leader` campaigns as soon as it is created, and the others wait an extra
    /// maximum election timeout before their first campaign, so creating many groups
    /// starts one election each rather than a storm. Create the other replicas first
    /// (a vote request for a replica not created yet is dropped and retried only after an
    /// election timeout). Errors as `create_group`; `NotAMember` also when `first_leader`
    /// is not among `members`.
    pub fn create_group_led_by(
        &self,
        group: u64,
        members: &[NodeId],
        first_leader: NodeId,
        state_machine: Box<dyn StateMachine>,
    ) -> Result<(), CreateGroupError> {
        let (conf, replica) = self.founding(members)?;
        if !members.contains(&first_leader) {
            // The designated leader must be one of the members.
            return Err(CreateGroupError::NotAMember);
        }
        let first = Some(self.node_id() == first_leader);
        self.rt.create_group(group, replica, conf, state_machine, first).wait()
    }

    /// Removes this node's replica of `group` without a membership change (use it when the
    /// whole group is deleted on every node; to move a replica away use
    /// [`Engine::change_membership`]). Its records leave the WAL and a tombstone stays, so
    /// messages from the group never recreate it. Pending proposals resolve
    /// `Indeterminate`.
    pub fn remove_group(&self, group: u64) -> Result<(), ProposeError> {
        self.rt.remove_group(group).wait()
    }

    /// Proposes `data` to `group`. Resolves with the state machine's result once the entry
    /// is applied here (so only a leader accepts proposals).
    pub fn propose(&self, group: u64, data: Bytes) -> Result<Proposal, ProposeError> {
        self.rt.propose(group, data)
    }

    /// A linearizable read barrier on `group` (on a leader, follower or learner): resolves
    /// with the locally applied index once every write acknowledged before the call is
    /// applied here; read the state machine after it resolves.
    pub fn read_index(&self, group: u64) -> Result<ReadBarrier, ReadError> {
        self.rt.read_index(group)
    }

    /// Starts transferring `group`'s leadership to its voter on `node`. Returns once the
    /// transfer started; proposals are refused until it ends (watch [`Engine::status`]).
    pub fn transfer_leader(&self, group: u64, node: NodeId) -> Result<(), TransferError> {
        self.rt.transfer_leader(group, node).wait()
    }

    /// Proposes a membership change; resolves once it is applied here.
    pub fn change_membership(
        &self,
        group: u64,
        change: MembershipChange,
    ) -> Result<MembershipProposal, MembershipError> {
        self.rt.change_membership(group, change)
    }

    /// Every replica on this node, by group id.
    pub fn status(&self) -> Vec<GroupStatus> {
        self.rt.status()
    }

    /// One group's replica on this node, if it exists.
    pub fn group_status(&self, group: u64) -> Option<GroupStatus> {
        self.rt.group_status(group)
    }

    /// Engine-wide counters.
    pub fn metrics(&self) -> Metrics {
        self.rt.metrics()
    }

    /// Stops the node gracefully: workers finish the writes in flight (so everything
    /// acknowledged is durable), pending waiters resolve (`Indeterminate` for appended
    /// proposals, `Shutdown` otherwise), then the network thread and the WAL stop.
    pub fn shutdown(self) {
        self.rt.shutdown();
    }
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
        assert_eq!(v.raft_for(7, 3, 9).unwrap().id, 7);
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
        check(&|c| c.max_pending_proposals = 0, &|e| {
            matches!(e, ConfigError::MaxPendingProposalsOutOfBounds(0))
        });
        check(&|c| c.max_entry_bytes = 0, &|e| matches!(e, ConfigError::MaxEntryBytesOutOfBounds { .. }));
        check(&|c| c.max_entry_bytes = c.wal.max_write_bytes, &|e| {
            matches!(e, ConfigError::MaxEntryBytesOutOfBounds { .. })
        });
        check(&|c| c.max_apply_backlog = 0, &|e| matches!(e, ConfigError::MaxApplyBacklogOutOfBounds(0)));
        check(&|c| c.max_apply_backlog = 1 << 25, &|e| {
            matches!(e, ConfigError::MaxApplyBacklogOutOfBounds(_))
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
        check(&|c| c.max_wal_segments = 1, &|e| matches!(e, ConfigError::MaxWalSegmentsTooSmall(1)));
        check(&|c| c.compact_check_ticks = 0, &|e| matches!(e, ConfigError::ZeroCompactCheckTicks));
    }

    #[test]
    fn error_classes() {
        assert_eq!(ProposeError::NotLeader { leader_hint: Some(2) }.class(), ErrorClass::Redirect);
        assert_eq!(ProposeError::Busy(BusyReason::Mailbox).class(), ErrorClass::Retry);
        assert_eq!(ProposeError::Dropped.class(), ErrorClass::Outcome);
        assert_eq!(ProposeError::Indeterminate.class(), ErrorClass::Outcome);
        assert_eq!(ProposeError::StorageFailed.class(), ErrorClass::Fatal);
        assert_eq!(ProposeError::Shutdown.class(), ErrorClass::Fatal);
    }
}
