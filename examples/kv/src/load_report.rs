//! What a node reports of each of its replicas' load in `FLOTILLA.STATUS`
//! ([`ReplicaLoad`], in [`crate::node::ReplicaStatus`]): the engine's measured rates
//! (`flotilla_engine::api::GroupLoad`) rounded to whole units, and the replica's key
//! count as its storage.
//!
//! Owns the wire shape of the report and the conversion from the engine's rates. Never
//! measures (the engine does) and never plans (see [`crate::load_plan`]).

use flotilla_engine::api::GroupLoad;
use serde::{Deserialize, Serialize};

/// One replica's load as `FLOTILLA.STATUS` reports it: exponentially weighted rates per
/// second (half-life `load_half_life_ms` of the node's config), rounded to whole units,
/// and its key count. A node that reports no load (an older version) reads as all zero.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ReplicaLoad {
    /// Proposals appended per second (on the leader; zero on followers, though a former
    /// leader's rate decays over a few half-lives after a transfer).
    pub proposals_per_sec: u64,
    /// Payload bytes of committed entries applied per second (on every replica).
    pub write_bytes_per_sec: u64,
    /// Reads served per second by this replica.
    pub reads_per_sec: u64,
    /// Microseconds of state machine apply per second (1,000,000 = one thread busy).
    pub apply_micros_per_sec: u64,
    /// Keys this replica holds (its storage, counted without a pass over the data).
    pub keys: u64,
}

/// A rate as a whole number (negative or not a number reads as 0, huge ones saturate).
fn whole(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        // `as` saturates at u64::MAX; the value is finite and positive.
        x.round() as u64
    } else {
        0
    }
}

impl ReplicaLoad {
    /// The report of a replica with the engine's rates `load` holding `keys` keys.
    pub fn new(load: &GroupLoad, keys: u64) -> ReplicaLoad {
        ReplicaLoad {
            proposals_per_sec: whole(load.proposals_per_sec),
            write_bytes_per_sec: whole(load.write_bytes_per_sec),
            reads_per_sec: whole(load.reads_per_sec),
            apply_micros_per_sec: whole(load.apply_secs_per_sec * 1e6),
            keys,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_rounded_and_apply_time_is_in_micros() {
        let mut g = GroupLoad::default();
        g.proposals_per_sec = 199.6;
        g.write_bytes_per_sec = 1024.2;
        g.reads_per_sec = f64::NAN;
        g.apply_secs_per_sec = 0.25;
        let r = ReplicaLoad::new(&g, 7);
        assert_eq!(
            r,
            ReplicaLoad {
                proposals_per_sec: 200,
                write_bytes_per_sec: 1024,
                reads_per_sec: 0,
                apply_micros_per_sec: 250_000,
                keys: 7
            }
        );
    }

    #[test]
    fn a_status_without_load_reads_as_zero() {
        let r: ReplicaLoad = serde_json::from_str("{\"keys\":3}").unwrap();
        assert_eq!(r, ReplicaLoad { keys: 3, ..ReplicaLoad::default() });
    }
}
