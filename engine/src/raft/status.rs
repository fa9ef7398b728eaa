//! Read-only views of a replica: [`Status`] for operators and [`Stats`] counters for the
//! simulator and metrics.
//!
//! Owns reporting types only.

use super::conf::ConfState;
use super::progress::ProgressState;
use super::types::{ReplicaId, Role};

/// A follower as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerStatus {
    /// The follower.
    pub id: ReplicaId,
    /// Highest index known durable there.
    pub matched: u64,
    /// Next index to send.
    pub next: u64,
    /// Replication state.
    pub state: ProgressState,
}

/// A snapshot of a replica's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This replica.
    pub id: ReplicaId,
    /// Current role.
    pub role: Role,
    /// Current term.
    pub term: u64,
    /// Vote in the current term (0: none).
    pub vote: ReplicaId,
    /// Known leader (0: none).
    pub leader: ReplicaId,
    /// Commit index.
    pub commit: u64,
    /// Applied index (reported by the runtime).
    pub applied: u64,
    /// Last log index.
    pub last_index: u64,
    /// First log index (after the compaction point).
    pub first_index: u64,
    /// Current configuration.
    pub conf: ConfState,
    /// Leadership transfer target (0: none).
    pub transferee: ReplicaId,
    /// The leader's view of each follower (empty unless leader).
    pub followers: Vec<FollowerStatus>,
}

/// Monotonic counters of what a replica did, for the simulator's coverage totals and for
/// metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Campaigns started (PreVote rounds included).
    pub campaigns: u64,
    /// Times this replica became leader.
    pub leaderships: u64,
    /// Times it became leader through a transfer campaign (TimeoutNow).
    pub leaderships_by_transfer: u64,
    /// Leadership transfers started.
    pub transfers_started: u64,
    /// Transfers aborted (timeout, target left, superseded).
    pub transfers_aborted: u64,
    /// TimeoutNow messages sent.
    pub timeout_now_sent: u64,
    /// Snapshots restored from a leader.
    pub snapshots_installed: u64,
    /// Snapshots received at or below the commit index (acknowledged, not installed).
    pub snapshots_skipped: u64,
    /// Partial snapshots discarded because a chunk of another arrived or a chunk was
    /// missing.
    pub snapshot_streams_discarded: u64,
    /// Snapshot sends requested of the runtime (leader).
    pub snapshots_sent: u64,
    /// Joint configurations entered (applied).
    pub joint_entered: u64,
    /// Joint configurations left (applied).
    pub joint_left: u64,
    /// Single-step membership changes applied.
    pub simple_changes: u64,
    /// Reads released (ReadIndex confirmed or lease).
    pub reads_served: u64,
    /// Reads a follower forwarded to its leader.
    pub reads_forwarded: u64,
    /// Reads served from the lease without a heartbeat round.
    pub lease_reads: u64,
    /// Heartbeat rounds sent only to a quorum, to confirm reads
    /// (`Config::read_rounds_to_quorum`).
    pub quorum_read_rounds: u64,
    /// Lease reads whose lease had expired when applied reached their index: confirmed
    /// by a heartbeat round instead.
    pub lease_reads_expired: u64,
    /// Lease reads served under a lease this leader held before it last woke from
    /// quiescence (no round has extended it since): the lease outlives the sleep.
    pub lease_reads_after_wake: u64,
    /// Proposals refused because the leader held `Config::max_uncommitted_bytes`.
    pub proposals_refused_uncommitted: u64,
    /// Reads a leader refused (its own) or dropped (forwarded) holding
    /// `Config::max_pending_reads`.
    pub reads_refused_full: u64,
    /// Appends refused because they conflicted with committed entries.
    pub append_conflicts_refused: u64,
    /// Times a leader stepped down for lack of a quorum (CheckQuorum).
    pub check_quorum_step_downs: u64,
    /// Times this replica quiesced (leader: sent the quiesce heartbeats; follower: obeyed).
    pub quiesces: u64,
    /// Times this replica woke from quiescence.
    pub wakes: u64,
    /// Quiesce heartbeats a quiesced leader re-sent to members that had not acknowledged.
    pub quiesce_resends: u64,
}
