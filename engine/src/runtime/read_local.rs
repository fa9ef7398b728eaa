//! Local reads (`Engine::read_local`): served from a replica's applied state without a
//! ReadIndex round when its lag is within the caller's bound. NOT linearizable: the data
//! may miss writes committed (even acknowledged) elsewhere within the bound, and two
//! reads at different replicas may observe states out of real-time order.
//!
//! Owns the worker's answer and the rule ([`judge`]): the replica's applied index must be
//! within `entries` of the highest commit index it heard from its current leader, and it
//! must have heard from that leader (a leader: from a quorum) within `time`, counted in
//! ticks. Never steps Raft and never reads the state machine (the caller does, at the
//! index answered).

use std::time::Duration;

use super::pending::Completer;
use super::worker::Worker;
use crate::api::{ReadLocalError, Staleness};
use crate::raft::LocalReadView;

impl Worker {
    /// Answers a local read of `group` at once: its applied index, or why not.
    pub(super) fn read_local(
        &mut self,
        group: u64,
        bound: Staleness,
        done: Completer<Result<u64, ReadLocalError>>,
    ) {
        if self.failed {
            return done.complete(Err(ReadLocalError::StorageFailed));
        }
        let tick = self.sh.cfg.get().tick_interval;
        let Some(g) = self.groups.get_mut(&group) else {
            return done.complete(Err(ReadLocalError::GroupNotFound(group)));
        };
        // Quiesced ticks count as silence too.
        Self::credit_idle(g, self.ticks);
        let answer = judge(g.raft.local_read_view(), bound, tick);
        if answer.is_ok() {
            self.load.read(&mut g.load, group);
        }
        done.complete(answer);
    }
}

/// Whether a replica with view `v` may serve a read within `bound`, ticks being `tick`
/// long: its applied index if so.
pub(super) fn judge(v: LocalReadView, bound: Staleness, tick: Duration) -> Result<u64, ReadLocalError> {
    let Some(age) = v.contact_age_ticks else {
        return Err(ReadLocalError::NoLeader);
    };
    let since = tick.saturating_mul(u32::try_from(age).unwrap_or(u32::MAX));
    let lag = v.known_commit.saturating_sub(v.applied);
    let too_old = bound.time.is_some_and(|t| since > t);
    let too_far = bound.entries.is_some_and(|e| lag > e);
    if too_old || too_far {
        return Err(ReadLocalError::TooStale {
            applied: v.applied,
            known_commit: v.known_commit,
            since_leader_ms: u64::try_from(since.as_millis()).unwrap_or(u64::MAX),
        });
    }
    Ok(v.applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::Role;

    fn view(applied: u64, known_commit: u64, age: Option<u64>) -> LocalReadView {
        LocalReadView { role: Role::Follower, applied, known_commit, contact_age_ticks: age }
    }

    #[test]
    fn serves_within_both_bounds_and_refuses_past_either() {
        let tick = Duration::from_millis(10);
        let both = Staleness::new(Some(5), Some(Duration::from_millis(100)));
        assert_eq!(judge(view(95, 100, Some(10)), both, tick), Ok(95));
        assert_eq!(
            judge(view(94, 100, Some(0)), both, tick),
            Err(ReadLocalError::TooStale { applied: 94, known_commit: 100, since_leader_ms: 0 })
        );
        assert_eq!(
            judge(view(100, 100, Some(11)), both, tick),
            Err(ReadLocalError::TooStale { applied: 100, known_commit: 100, since_leader_ms: 110 })
        );
        assert_eq!(judge(view(100, 100, None), both, tick), Err(ReadLocalError::NoLeader));
        // Unbounded parts are not checked; a leader is still needed.
        assert_eq!(judge(view(1, 100, Some(1_000)), Staleness::default(), tick), Ok(1));
        assert_eq!(judge(view(1, 100, None), Staleness::default(), tick), Err(ReadLocalError::NoLeader));
    }
}
