//! The configuration of one Raft replica, validated once into a [`ValidConfig`].
//!
//! Owns the knobs, their defaults and bounds, and one error variant per rule. Never read
//! from files or the environment: the embedding API builds a `Config` (or deserializes
//! one, with the default `serde` feature) and validates it.

use thiserror::Error;

use super::types::ReplicaId;

/// How ReadIndex requests are confirmed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum ReadMode {
    /// Every read is confirmed by a heartbeat round sent after it arrived (thesis §6.4).
    #[default]
    Safe,
    /// Reads are served without a round while the leader holds a lease (thesis §6.4.1):
    /// `election_timeout_min_ticks - lease_clock_drift_ticks` ticks of `tick_nanos` each,
    /// measured on the clock given to `Raft::set_now` from when a quorum-confirmed
    /// heartbeat round was sent, and checked when the read is answered (once applied
    /// reached its index). Requires `check_quorum` and a clock that keeps running while
    /// the replica is not ticked (a stalled or suspended process); without `set_now` no
    /// lease is ever held. Relies on bounded clock drift.
    LeaseBased,
}

/// A deliberately broken Raft rule, compiled only with the test-only `mutants` feature, so
/// the simulator can prove its checker catches it.
#[cfg(feature = "mutants")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mutant {
    /// Commit an entry of an earlier term by counting replicas (breaks Figure 8).
    CommitWithoutTermCheck,
    /// Send vote grants (and candidates' requests) before the hard state is durable.
    GrantVoteBeforeDurable,
    /// Send the leader's full commit index in heartbeats, not min(commit, match).
    HeartbeatCommitUnclamped,
    /// Serve ReadIndex before an entry of the leader's term has committed.
    ReadIndexWithoutTermCheck,
    /// Count the leader's own entries toward commit when appended, not when durable.
    LeaderCountsUndurable,
    /// Keep serving lease reads past the lease's end once woken from quiescence with a
    /// lease (the lease kept through a wake must still end on the clock).
    LeaseKeptPastItsEndAfterWake,
}

/// The configuration of one replica. Build with [`Config::new`], adjust fields, then
/// [`Config::validate`].
///
/// With the default `serde` feature a `Config` reads from configuration files: missing
/// fields take the values of [`Config::for_engine`], and the fields the engine sets per
/// replica (`id`, `applied`, `seed`, `tick_nanos`) are not read or written.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default = "Config::for_engine", deny_unknown_fields)
)]
pub struct Config {
    /// This replica's id. Required; must be non-zero.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub id: ReplicaId,
    /// Lower bound (inclusive) of the randomized election timeout, in ticks.
    /// Default 10; must exceed `heartbeat_interval_ticks`.
    pub election_timeout_min_ticks: u32,
    /// Upper bound (exclusive) of the randomized election timeout, in ticks.
    /// Default 20; must exceed `election_timeout_min_ticks`.
    pub election_timeout_max_ticks: u32,
    /// Ticks between leader heartbeats. Default 2; at least 1.
    pub heartbeat_interval_ticks: u32,
    /// Most append messages in flight to one follower in Replicate state. Default 256;
    /// at least 1.
    pub max_inflight_msgs: usize,
    /// Most entry bytes in flight to one follower. Default 32 MiB; at least 1.
    pub max_inflight_bytes: u64,
    /// Most entry bytes in one append message (at least one entry is always sent).
    /// Default 1 MiB; at least 1.
    pub max_append_bytes: u64,
    /// Most entry bytes handed out for apply in one `Ready`. Default 16 MiB; at least 1.
    pub max_apply_bytes: u64,
    /// Most payload bytes of proposals (data and session entries) a leader holds appended
    /// in its term and not yet handed out for apply; past it `propose` answers
    /// [`ProposeError::UncommittedFull`](super::error::ProposeError::UncommittedFull). A
    /// leader holding none takes one proposal of any size. Bounds the log a leader that
    /// cannot commit (or commits slower than it is asked to append) builds up, whatever
    /// its callers do with their timeouts (etcd/raft's `MaxUncommittedEntriesSize`).
    /// Default `u64::MAX` (no bound); at least 1. The engine sets it from
    /// `EngineConfig::max_uncommitted_bytes`.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub max_uncommitted_bytes: u64,
    /// Most reads a leader holds waiting for their confirmation (its term's first
    /// commit, a heartbeat round, or apply under a lease); past it `read_index` answers
    /// [`ReadIndexError::Busy`](super::error::ReadIndexError::Busy) and reads forwarded by
    /// followers are dropped (their callers time out). Bounds what readers make a leader
    /// hold when it cannot confirm reads, whatever its callers do with their timeouts.
    /// Default 16,384; at least 1. The engine sets it from
    /// `EngineConfig::max_pending_reads`.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub max_pending_reads: usize,
    /// Run a PreVote round before raising the term (thesis §9.6). Default true.
    pub pre_vote: bool,
    /// Leader steps down when it has not heard from a quorum within an election timeout;
    /// followers that heard from a leader within it refuse votes. Default true.
    pub check_quorum: bool,
    /// How reads are confirmed. Default [`ReadMode::Safe`].
    pub read_mode: ReadMode,
    /// A heartbeat round sent only to confirm reads goes to the voters that, with the
    /// leader, made up the first quorum to answer the last round sent to every member,
    /// instead of to every member (thesis §6.4 asks a quorum's answer, not everyone's):
    /// half the messages per read round in a group of three. Rounds of the heartbeat
    /// interval still go to every member, so a read whose quorum stopped answering is
    /// confirmed by the next of those (at most `heartbeat_interval_ticks` later), and its
    /// first answers become the quorum asked next. Joint configurations always ask every
    /// member. Default true.
    pub read_rounds_to_quorum: bool,
    /// Clock-drift margin subtracted from the lease (LeaseBased reads). Default 2 ticks;
    /// must be below `election_timeout_min_ticks`.
    pub lease_clock_drift_ticks: u32,
    /// The nominal length of one tick, in nanoseconds of the clock given to
    /// `Raft::set_now`: the lease lasts `election_timeout_min_ticks -
    /// lease_clock_drift_ticks` of them. Default 10 ms; at least 1.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub tick_nanos: u64,
    /// A leader removed from the configuration steps down once the removal is applied.
    /// Default true. When false it keeps leading (without counting itself) until a new
    /// leader emerges, as etcd/raft does without StepDownOnRemoval.
    pub step_down_on_removal: bool,
    /// The index the application's state machine has already applied (it keeps its data
    /// in its own storage); only later entries are handed out for apply. Default 0.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub applied: u64,
    /// Seed of the replica's random number generator (election timeouts). Default 0; use
    /// distinct seeds for distinct replicas.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub seed: u64,
    /// Quiesce an idle group: once every follower acknowledged the final commit index and
    /// nothing is pending, the leader tells its followers (a heartbeat with the quiesce
    /// flag) and the group stops heartbeating and timing out until a proposal or message
    /// wakes it (see `Raft::is_quiesced`). Default false.
    pub quiesce: bool,
    /// Count what the replica does in [`Stats`](super::status::Stats) (`Raft::stats`).
    /// Default true. The engine turns it off for its replicas: it never reads them, and
    /// the counters would cost every idle replica 176 bytes (off, `Raft::stats` reads
    /// all zeros and the replica holds a null pointer).
    #[cfg_attr(feature = "serde", serde(skip))]
    pub count_stats: bool,
    /// Test-only: a deliberately broken rule. Default none.
    #[cfg(feature = "mutants")]
    #[cfg_attr(feature = "serde", serde(skip))]
    pub mutant: Option<Mutant>,
}

impl Config {
    /// The default configuration for replica `id`.
    pub fn new(id: ReplicaId) -> Self {
        Config {
            id,
            election_timeout_min_ticks: 10,
            election_timeout_max_ticks: 20,
            heartbeat_interval_ticks: 2,
            max_inflight_msgs: 256,
            max_inflight_bytes: 32 << 20,
            max_append_bytes: 1 << 20,
            max_apply_bytes: 16 << 20,
            max_uncommitted_bytes: u64::MAX,
            max_pending_reads: 16_384,
            pre_vote: true,
            check_quorum: true,
            read_mode: ReadMode::Safe,
            read_rounds_to_quorum: true,
            lease_clock_drift_ticks: 2,
            tick_nanos: 10_000_000,
            step_down_on_removal: true,
            applied: 0,
            seed: 0,
            quiesce: false,
            count_stats: true,
            #[cfg(feature = "mutants")]
            mutant: None,
        }
    }

    /// The template the engine gives every replica (its id, applied index, seed and tick
    /// length are then set per replica): every default of [`Config::new`] with `quiesce`
    /// on, so idle groups cost no ticks or heartbeats.
    pub fn for_engine() -> Self {
        Config { quiesce: true, ..Config::new(0) }
    }

    /// Checks every rule and returns the checked configuration.
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        if self.id == 0 {
            return Err(ConfigError::ZeroId);
        }
        if self.heartbeat_interval_ticks == 0 {
            return Err(ConfigError::ZeroHeartbeatInterval);
        }
        if self.election_timeout_min_ticks <= self.heartbeat_interval_ticks {
            return Err(ConfigError::ElectionTimeoutNotAboveHeartbeat {
                election: self.election_timeout_min_ticks,
                heartbeat: self.heartbeat_interval_ticks,
            });
        }
        if self.election_timeout_max_ticks <= self.election_timeout_min_ticks {
            return Err(ConfigError::ElectionTimeoutRangeEmpty {
                min: self.election_timeout_min_ticks,
                max: self.election_timeout_max_ticks,
            });
        }
        if self.max_inflight_msgs == 0 {
            return Err(ConfigError::ZeroMaxInflightMsgs);
        }
        if self.max_inflight_bytes == 0 {
            return Err(ConfigError::ZeroMaxInflightBytes);
        }
        if self.max_append_bytes == 0 {
            return Err(ConfigError::ZeroMaxAppendBytes);
        }
        if self.max_apply_bytes == 0 {
            return Err(ConfigError::ZeroMaxApplyBytes);
        }
        if self.max_uncommitted_bytes == 0 {
            return Err(ConfigError::ZeroMaxUncommittedBytes);
        }
        if self.max_pending_reads == 0 {
            return Err(ConfigError::ZeroMaxPendingReads);
        }
        if self.read_mode == ReadMode::LeaseBased && !self.check_quorum {
            return Err(ConfigError::LeaseWithoutCheckQuorum);
        }
        if self.lease_clock_drift_ticks >= self.election_timeout_min_ticks {
            return Err(ConfigError::LeaseDriftTooLarge {
                drift: self.lease_clock_drift_ticks,
                election: self.election_timeout_min_ticks,
            });
        }
        if self.tick_nanos == 0 {
            return Err(ConfigError::ZeroTickNanos);
        }
        Ok(ValidConfig(self))
    }
}

impl ValidConfig {
    /// How long a lease lasts, in nanoseconds: the minimum election timeout minus the
    /// drift margin, in ticks of `tick_nanos`.
    pub fn lease_nanos(&self) -> u64 {
        u64::from(self.election_timeout_min_ticks - self.lease_clock_drift_ticks)
            .saturating_mul(self.tick_nanos)
    }
}

/// A [`Config`] that passed [`Config::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidConfig(Config);

impl std::ops::Deref for ValidConfig {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.0
    }
}

/// A broken rule of [`Config`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `id` is 0.
    #[error("replica id must be non-zero")]
    ZeroId,
    /// `heartbeat_interval_ticks` is 0.
    #[error("heartbeat_interval_ticks must be at least 1")]
    ZeroHeartbeatInterval,
    /// The election timeout must exceed the heartbeat interval.
    #[error("election_timeout_min_ticks ({election}) must exceed heartbeat_interval_ticks ({heartbeat})")]
    ElectionTimeoutNotAboveHeartbeat {
        /// The minimum election timeout.
        election: u32,
        /// The heartbeat interval.
        heartbeat: u32,
    },
    /// The randomized range `[min, max)` is empty.
    #[error("election_timeout_max_ticks ({max}) must exceed election_timeout_min_ticks ({min})")]
    ElectionTimeoutRangeEmpty {
        /// Lower bound.
        min: u32,
        /// Upper bound.
        max: u32,
    },
    /// `max_inflight_msgs` is 0.
    #[error("max_inflight_msgs must be at least 1")]
    ZeroMaxInflightMsgs,
    /// `max_inflight_bytes` is 0.
    #[error("max_inflight_bytes must be at least 1")]
    ZeroMaxInflightBytes,
    /// `max_append_bytes` is 0.
    #[error("max_append_bytes must be at least 1")]
    ZeroMaxAppendBytes,
    /// `max_apply_bytes` is 0.
    #[error("max_apply_bytes must be at least 1")]
    ZeroMaxApplyBytes,
    /// `max_uncommitted_bytes` is 0.
    #[error("max_uncommitted_bytes must be at least 1")]
    ZeroMaxUncommittedBytes,
    /// `max_pending_reads` is 0.
    #[error("max_pending_reads must be at least 1")]
    ZeroMaxPendingReads,
    /// Lease reads are only safe with CheckQuorum.
    #[error("read_mode LeaseBased requires check_quorum")]
    LeaseWithoutCheckQuorum,
    /// `tick_nanos` is 0.
    #[error("tick_nanos must be at least 1")]
    ZeroTickNanos,
    /// The drift margin would leave no lease.
    #[error("lease_clock_drift_ticks ({drift}) must be below election_timeout_min_ticks ({election})")]
    LeaseDriftTooLarge {
        /// The drift margin.
        drift: u32,
        /// The minimum election timeout.
        election: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(f: impl FnOnce(&mut Config), want: ConfigError) {
        let mut c = Config::new(1);
        f(&mut c);
        assert_eq!(c.validate().unwrap_err(), want);
    }

    #[test]
    fn defaults_are_valid() {
        assert!(Config::new(1).validate().is_ok());
    }

    #[test]
    fn each_rule_has_its_error() {
        check(|c| c.id = 0, ConfigError::ZeroId);
        check(|c| c.heartbeat_interval_ticks = 0, ConfigError::ZeroHeartbeatInterval);
        check(
            |c| c.election_timeout_min_ticks = 2,
            ConfigError::ElectionTimeoutNotAboveHeartbeat { election: 2, heartbeat: 2 },
        );
        check(
            |c| c.election_timeout_max_ticks = 10,
            ConfigError::ElectionTimeoutRangeEmpty { min: 10, max: 10 },
        );
        check(|c| c.max_inflight_msgs = 0, ConfigError::ZeroMaxInflightMsgs);
        check(|c| c.max_inflight_bytes = 0, ConfigError::ZeroMaxInflightBytes);
        check(|c| c.max_append_bytes = 0, ConfigError::ZeroMaxAppendBytes);
        check(|c| c.max_apply_bytes = 0, ConfigError::ZeroMaxApplyBytes);
        check(|c| c.max_uncommitted_bytes = 0, ConfigError::ZeroMaxUncommittedBytes);
        check(|c| c.max_pending_reads = 0, ConfigError::ZeroMaxPendingReads);
        check(
            |c| {
                c.read_mode = ReadMode::LeaseBased;
                c.check_quorum = false
            },
            ConfigError::LeaseWithoutCheckQuorum,
        );
        check(
            |c| c.lease_clock_drift_ticks = 10,
            ConfigError::LeaseDriftTooLarge { drift: 10, election: 10 },
        );
        check(|c| c.tick_nanos = 0, ConfigError::ZeroTickNanos);
    }

    #[test]
    fn lease_is_the_election_timeout_minus_the_drift_in_nanoseconds() {
        let mut c = Config::new(1);
        c.election_timeout_min_ticks = 10;
        c.lease_clock_drift_ticks = 3;
        c.tick_nanos = 1_000;
        assert_eq!(c.validate().map(|v| v.lease_nanos()), Ok(7_000));
    }
}
