//! A linearizability checker for histories of SET / GET / INCR on independent integer
//! registers (keys), used by the chaos test.
//!
//! Owns the search (Wing & Gong with Lowe's memoisation of (linearized set, state)), per
//! key (linearizability is local, so keys are checked apart). An operation whose outcome is
//! unknown (the client saw an error or lost the connection) may take effect at any point
//! after its call, or never; its result constrains nothing. Never talks to a server.

use std::collections::{BTreeMap, HashSet};

/// What an operation did and saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SET to a value.
    Set(i64),
    /// GET that returned the value (or nil).
    Get(Option<i64>),
    /// INCR that returned the new value (`None` if the outcome is unknown).
    Incr(Option<i64>),
}

/// One operation of a history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    /// The key (register).
    pub key: u32,
    /// When it was invoked (any monotonic clock).
    pub call: u64,
    /// When its reply arrived; `None` if its outcome is unknown.
    pub ret: Option<u64>,
    /// What it did.
    pub kind: Kind,
}

/// Why a history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// No order of the key's operations explains their results.
    #[error("key {key}: no linearization of its {ops} operations")]
    NotLinearizable {
        /// The key.
        key: u32,
        /// Operations on it.
        ops: usize,
    },
    /// The search exceeded its state budget (the history is too concurrent to decide).
    #[error("key {key}: search budget exhausted")]
    TooLarge {
        /// The key.
        key: u32,
    },
}

/// Checks a whole history, each key starting absent (nil).
pub fn check(history: &[Op]) -> Result<(), CheckError> {
    let mut by_key: BTreeMap<u32, Vec<Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key).or_default().push(*op);
    }
    for (key, ops) in by_key {
        check_key(key, ops)?;
    }
    Ok(())
}

fn step(state: Option<i64>, k: Kind) -> Option<Option<i64>> {
    match k {
        Kind::Set(v) => Some(Some(v)),
        Kind::Get(r) => (r == state).then_some(state),
        Kind::Incr(r) => {
            let n = state.unwrap_or(0).checked_add(1)?;
            match r {
                Some(r) if r != n => None,
                _ => Some(Some(n)),
            }
        }
    }
}

fn check_key(key: u32, mut ops: Vec<Op>) -> Result<(), CheckError> {
    // A GET with an unknown outcome tells nothing.
    ops.retain(|o| !(o.ret.is_none() && matches!(o.kind, Kind::Get(_))));
    ops.sort_by_key(|o| o.call);
    let n = ops.len();
    let words = n.div_ceil(64);
    let known: Vec<bool> = ops.iter().map(|o| o.ret.is_some()).collect();
    let total_known = known.iter().filter(|k| **k).count();
    let mut seen: HashSet<(Vec<u64>, Option<i64>)> = HashSet::new();
    // Explicit DFS stack of (done set, state, known done count).
    let mut stack: Vec<(Vec<u64>, Option<i64>, usize)> = vec![(vec![0; words], None, 0)];
    let mut budget: u64 = 5_000_000;
    while let Some((done, state, nk)) = stack.pop() {
        if nk == total_known {
            return Ok(());
        }
        if !seen.insert((done.clone(), state)) {
            continue;
        }
        budget = budget.saturating_sub(1);
        if budget == 0 {
            return Err(CheckError::TooLarge { key });
        }
        let is_done = |i: usize| done[i / 64] >> (i % 64) & 1 == 1;
        // The earliest return among pending known operations bounds who may go next.
        let min_ret = (0..n).filter(|&i| !is_done(i)).filter_map(|i| ops[i].ret).min().unwrap_or(u64::MAX);
        for i in 0..n {
            if is_done(i) {
                continue;
            }
            if ops[i].call > min_ret {
                break; // sorted by call: no later one may go next either
            }
            if let Some(next) = step(state, ops[i].kind) {
                let mut d = done.clone();
                d[i / 64] |= 1 << (i % 64);
                stack.push((d, next, nk + known[i] as usize));
            }
        }
    }
    Err(CheckError::NotLinearizable { key, ops: n })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: u64, ret: Option<u64>, kind: Kind) -> Op {
        Op { key: 0, call, ret, kind }
    }

    #[test]
    fn sequential_histories() {
        let h = [
            op(0, Some(1), Kind::Get(None)),
            op(2, Some(3), Kind::Set(5)),
            op(4, Some(5), Kind::Get(Some(5))),
            op(6, Some(7), Kind::Incr(Some(6))),
        ];
        assert_eq!(check(&h), Ok(()));
        let stale =
            [op(0, Some(1), Kind::Set(1)), op(2, Some(3), Kind::Set(2)), op(4, Some(5), Kind::Get(Some(1)))];
        assert!(matches!(check(&stale), Err(CheckError::NotLinearizable { .. })));
        let lost_incr = [op(0, Some(1), Kind::Incr(Some(1))), op(2, Some(3), Kind::Incr(Some(1)))];
        assert!(check(&lost_incr).is_err());
    }

    #[test]
    fn concurrent_operations_may_order_either_way() {
        // Two overlapping sets; reads after both see one of them, consistently.
        let h = [
            op(0, Some(10), Kind::Set(1)),
            op(1, Some(9), Kind::Set(2)),
            op(11, Some(12), Kind::Get(Some(1))),
            op(13, Some(14), Kind::Get(Some(1))),
        ];
        assert_eq!(check(&h), Ok(()));
        let flip = [
            op(0, Some(10), Kind::Set(1)),
            op(1, Some(9), Kind::Set(2)),
            op(11, Some(12), Kind::Get(Some(1))),
            op(13, Some(14), Kind::Get(Some(2))),
        ];
        assert!(check(&flip).is_err(), "a value cannot come back without a write");
        // A read overlapping a write may see the old or the new value.
        let h =
            [op(0, Some(1), Kind::Set(1)), op(2, Some(10), Kind::Set(2)), op(3, Some(4), Kind::Get(Some(1)))];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_apply() {
        let applied = [op(0, None, Kind::Set(7)), op(5, Some(6), Kind::Get(Some(7)))];
        assert_eq!(check(&applied), Ok(()));
        let not_applied = [op(0, None, Kind::Set(7)), op(5, Some(6), Kind::Get(None))];
        assert_eq!(check(&not_applied), Ok(()));
        // ... but not before it was called.
        let early = [op(0, Some(1), Kind::Get(Some(7))), op(5, None, Kind::Set(7))];
        assert!(check(&early).is_err());
        // An unknown INCR explains a skipped number.
        let h = [
            op(0, Some(1), Kind::Incr(Some(1))),
            op(2, None, Kind::Incr(None)),
            op(4, Some(5), Kind::Incr(Some(3))),
        ];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn keys_are_independent() {
        let h = [
            Op { key: 1, call: 0, ret: Some(1), kind: Kind::Set(1) },
            Op { key: 2, call: 2, ret: Some(3), kind: Kind::Get(Some(1)) },
        ];
        assert!(check(&h).is_err(), "key 2 was never written");
    }
}
