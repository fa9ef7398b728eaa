//! Quorum arithmetic over a (possibly joint) configuration: the index a quorum has
//! reached, and election outcomes.
//!
//! Owns counting only; never decides what to do with the result.

use super::conf::ConfState;
use super::types::{Replica, ReplicaId};

/// The outcome of a vote count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VoteResult {
    /// Not decided yet.
    Pending,
    /// A quorum refused.
    Lost,
    /// A quorum granted.
    Won,
}

/// The highest value that a majority of `voters` has reached, where `value(id)` gives each
/// voter's value. An empty set yields `u64::MAX` (it never holds a joint decision back).
pub fn majority_value(voters: &[Replica], value: impl Fn(ReplicaId) -> u64) -> u64 {
    let n = voters.len();
    if n == 0 {
        return u64::MAX;
    }
    let mut buf = [0u64; 7];
    let mut heap;
    let vals: &mut [u64] = if n <= buf.len() {
        &mut buf[..n]
    } else {
        heap = vec![0u64; n];
        &mut heap[..]
    };
    for (slot, r) in vals.iter_mut().zip(voters) {
        *slot = value(r.id);
    }
    vals.sort_unstable_by(|a, b| b.cmp(a));
    vals[n / 2]
}

/// The highest value a quorum of the configuration has reached (both halves when joint).
pub fn joint_value(conf: &ConfState, value: impl Fn(ReplicaId) -> u64) -> u64 {
    let a = majority_value(&conf.voters, &value);
    if conf.voters_outgoing.is_empty() {
        return a;
    }
    a.min(majority_value(&conf.voters_outgoing, &value))
}

fn majority_vote(voters: &[Replica], vote: &impl Fn(ReplicaId) -> Option<bool>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let (mut yes, mut missing) = (0, 0);
    for r in voters {
        match vote(r.id) {
            Some(true) => yes += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    let q = voters.len() / 2 + 1;
    if yes >= q {
        VoteResult::Won
    } else if yes + missing >= q {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

/// The outcome of an election given each voter's answer (`None`: no answer yet).
pub fn vote_result(conf: &ConfState, vote: impl Fn(ReplicaId) -> Option<bool>) -> VoteResult {
    let a = majority_vote(&conf.voters, &vote);
    let b = majority_vote(&conf.voters_outgoing, &vote);
    match (a, b) {
        (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
        (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
        _ => VoteResult::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voters(ids: &[u64]) -> Vec<Replica> {
        ids.iter().map(|&i| Replica::new(i, i)).collect()
    }

    #[test]
    fn majority_index() {
        let v = voters(&[1, 2, 3]);
        let m = [0, 5, 3, 9];
        assert_eq!(majority_value(&v, |id| m[id as usize]), 5);
        let v = voters(&[1, 2, 3, 4]);
        let m = [0, 5, 3, 9, 1];
        assert_eq!(majority_value(&v, |id| m[id as usize]), 3);
        assert_eq!(majority_value(&[], |_| 0), u64::MAX);
    }

    #[test]
    fn joint_takes_minimum() {
        let mut c = ConfState::with_voters(voters(&[1, 2, 3]));
        c.voters_outgoing = voters(&[1, 4, 5]);
        let m = [0, 9, 9, 9, 1, 1];
        assert_eq!(joint_value(&c, |id| m[id as usize]), 1);
    }

    #[test]
    fn joint_votes_need_both_halves() {
        let mut c = ConfState::with_voters(voters(&[1, 2, 3]));
        c.voters_outgoing = voters(&[1, 4, 5]);
        let granted = |ids: &'static [u64]| move |id| if ids.contains(&id) { Some(true) } else { None };
        assert_eq!(vote_result(&c, granted(&[1, 2])), VoteResult::Pending);
        assert_eq!(vote_result(&c, granted(&[1, 2, 4])), VoteResult::Won);
        assert_eq!(vote_result(&c, |id| Some(id == 1 || id == 2)), VoteResult::Lost);
    }
}
