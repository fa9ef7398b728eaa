//! What the engine reports about how long its steps take: [`LatencyHistograms`], from
//! [`Engine::latency_histograms`](super::Engine::latency_histograms).
//!
//! Owns the shape of that report; the histogram type itself is the WAL's
//! ([`LatencyHistogram`], re-exported). Never records anything: the WAL's writer times its
//! group-commit syncs and compaction passes, the apply threads time each state machine
//! call.

pub use flotilla_wal::{LatencyHistogram, LatencySnapshot, LATENCY_BUCKETS};

/// Durations since open, by power-of-two bucket (see [`LatencySnapshot`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencyHistograms {
    /// Each group-commit write with its data sync of the WAL (one per `wal_syncs`).
    pub wal_sync: LatencySnapshot,
    /// Each compaction pass of the WAL's writer (one per `wal_compaction_passes`), from the
    /// end of the sync it starts with: no group-commit write is made while one runs.
    pub wal_compaction: LatencySnapshot,
    /// Each entry applied by a state machine (`StateMachine::apply` with the session
    /// bookkeeping around it; one per `applied_entries`).
    pub apply: LatencySnapshot,
}
