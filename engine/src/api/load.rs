//! The load of one replica as the engine measures it ([`GroupLoad`]): exponentially
//! weighted rates, for operators and rebalancers (`GroupStatus::load`,
//! `Engine::group_loads`, the node totals in `Metrics`).
//!
//! Owns the shape of the report and its units. Never measures: the runtime does
//! (`runtime/load.rs`).

/// One replica's load: exponentially weighted rates, per second, with the half-life
/// `EngineConfig::load_half_life`, folded every `EngineConfig::load_fold_interval` (the
/// interval in progress is not counted yet). All zero when `EngineConfig::measure_load`
/// is off, and for a replica that had no event for long enough (its rates decayed below
/// one in a million).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct GroupLoad {
    /// Proposals appended by this replica as leader (client proposals and session
    /// entries), per second. Zero on followers.
    pub proposals_per_sec: f64,
    /// Payload bytes of committed entries applied by this replica (the data of proposals
    /// and session entries; not Raft's framing, no-ops or membership changes), per
    /// second. Counted on every replica: a follower writes them too.
    pub write_bytes_per_sec: f64,
    /// Reads served by this replica per second: ReadIndex barriers accepted
    /// (`Engine::read_index`) and local reads answered (`Engine::read_local`).
    pub reads_per_sec: f64,
    /// Seconds the worker's apply thread spent on this group's entries per second (a
    /// utilization, 1.0 = one apply thread busy with this group all the time): applying
    /// them in the state machine and completing their proposals. Batches that applied no
    /// command (no-ops, membership changes only) are not timed.
    pub apply_secs_per_sec: f64,
}

impl GroupLoad {
    /// A load of these rates (the runtime's constructor; the struct is non-exhaustive).
    pub(crate) fn new(proposals: f64, bytes: f64, reads: f64, apply: f64) -> GroupLoad {
        GroupLoad {
            proposals_per_sec: proposals,
            write_bytes_per_sec: bytes,
            reads_per_sec: reads,
            apply_secs_per_sec: apply,
        }
    }

    /// Every rate of `self` plus that of `other` (a node's totals).
    pub fn plus(self, other: GroupLoad) -> GroupLoad {
        GroupLoad::new(
            self.proposals_per_sec + other.proposals_per_sec,
            self.write_bytes_per_sec + other.write_bytes_per_sec,
            self.reads_per_sec + other.reads_per_sec,
            self.apply_secs_per_sec + other.apply_secs_per_sec,
        )
    }
}
