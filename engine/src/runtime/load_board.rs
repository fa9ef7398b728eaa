//! The load board: each worker's last published list of its measured replicas (group,
//! leading or not, meter), which `Engine::group_loads` and the node totals of
//! `Engine::metrics` read without a mailbox round trip.
//!
//! Owns the shared lists and their reading. A worker replaces its own list once per fold
//! interval (`load_worker`), with only the replicas that have a meter (replicas with
//! events in the last minutes, about 100 bytes each); a reader takes every worker's list
//! (one atomic load each, no lock) and folds each meter to its own clock reading, so a
//! list published up to one interval ago still gives the decay up to now. Never counts
//! events and never touches a replica.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::load::{Ewma, LoadMeter};
use crate::api::GroupLoad;

/// One measured replica as its worker last published it.
#[derive(Debug, Clone)]
pub(crate) struct Published {
    pub(crate) group: u64,
    /// The replica was leading at the time.
    pub(crate) leader: bool,
    pub(crate) meter: LoadMeter,
}

/// Every worker's last published list.
pub(crate) struct LoadBoard {
    lists: Vec<ArcSwap<Vec<Published>>>,
    ewma: Ewma,
}

impl LoadBoard {
    /// An empty board for `workers` workers folding with `ewma`.
    pub(crate) fn new(workers: usize, ewma: Ewma) -> LoadBoard {
        LoadBoard { lists: (0..workers).map(|_| ArcSwap::from_pointee(Vec::new())).collect(), ewma }
    }

    /// Replaces worker `idx`'s list.
    pub(crate) fn publish(&self, idx: usize, list: Vec<Published>) {
        if let Some(slot) = self.lists.get(idx) {
            slot.store(Arc::new(list));
        }
    }

    /// The load of every measured replica, as of `now`, with whether it was leading:
    /// one pass over the published lists (cost proportional to the measured replicas).
    pub(crate) fn loads(&self, now: u64) -> Vec<(u64, bool, GroupLoad)> {
        let mut out = Vec::new();
        for slot in &self.lists {
            let list = slot.load();
            out.extend(list.iter().map(|p| (p.group, p.leader, p.meter.view(now, &self.ewma))));
        }
        out.sort_by_key(|(g, _, _)| *g);
        out
    }

    /// The sum over every measured replica, as of `now`.
    pub(crate) fn total(&self, now: u64) -> GroupLoad {
        self.loads(now).into_iter().fold(GroupLoad::default(), |t, (_, _, l)| t.plus(l))
    }
}
