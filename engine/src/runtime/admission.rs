//! Admission of replicas created from peers' messages (issue 12 point 3): the embedder's
//! [`CreatePolicy`], the per-tick caps (all senders, and per sending node) and the
//! bookkeeping of *unconfirmed* replicas, capped in count (all senders, and per node).
//!
//! A replica created from a message is unconfirmed until it has applied a configuration
//! that holds it: until then nothing but the creating message vouches for the group, so
//! it may be a hostile or stray peer's invention. An unconfirmed replica that promised
//! nothing (empty log, no vote) is dropped when it expires
//! (`EngineConfig::unconfirmed_replica_ticks`) or when the group's founding
//! `create_group` meets it (see `lifecycle`).
//!
//! The unconfirmed set lives in memory: after a restart, a replica recovered from the
//! WAL counts as confirmed (it stands against a founding `create_group` of another id
//! with `Conflict`, as before this rule), and the caps start from zero.
//!
//! Owns the counts and the admission decision. Never creates, steps or drops a replica:
//! the worker does (`lifecycle`), asking [`Admission::admit`] first.

use std::collections::HashMap;

use crate::api::{CreatePolicy, EngineConfig};
use crate::raft::types::{NodeId, ReplicaId};

/// Why a creation from a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The embedder's [`CreatePolicy`] said no.
    Policy,
    /// `max_creates_per_tick` reached this tick.
    TickCap,
    /// `max_creates_per_node_per_tick` reached for the sender this tick.
    NodeTickCap,
    /// `max_unconfirmed_replicas` reached.
    Unconfirmed,
    /// `max_unconfirmed_replicas_per_node` reached for the sender.
    NodeUnconfirmed,
}

/// One worker's admission state.
#[derive(Debug, Default)]
pub(super) struct Admission {
    /// Admissions since the last tick, all senders.
    this_tick: u32,
    /// Admissions since the last tick, per sending node (cleared every tick).
    this_tick_by_node: HashMap<NodeId, u32>,
    /// Unconfirmed replicas: group -> (creating node, worker tick of creation, the
    /// tombstone record the creation replaced, restored if the replica is dropped).
    unconfirmed: HashMap<u64, (NodeId, u64, Option<ReplicaId>)>,
    /// Unconfirmed replicas per creating node.
    unconfirmed_by_node: HashMap<NodeId, usize>,
}

impl Admission {
    /// Decides whether a message from node `from` may create a replica of `group` (when
    /// `unconfirmed`, the replica will count as unconfirmed; a removal record does not),
    /// and counts the admission against this tick's budget if so.
    pub(super) fn admit(
        &mut self,
        cfg: &EngineConfig,
        policy: &CreatePolicy,
        group: u64,
        from: NodeId,
        unconfirmed: bool,
    ) -> Result<(), Refusal> {
        if self.this_tick >= cfg.max_creates_per_tick {
            return Err(Refusal::TickCap);
        }
        let by_node = self.this_tick_by_node.get(&from).copied().unwrap_or(0);
        if by_node >= cfg.max_creates_per_node_per_tick {
            return Err(Refusal::NodeTickCap);
        }
        if unconfirmed {
            if self.unconfirmed.len() >= cfg.max_unconfirmed_replicas {
                return Err(Refusal::Unconfirmed);
            }
            let held = self.unconfirmed_by_node.get(&from).copied().unwrap_or(0);
            if held >= cfg.max_unconfirmed_replicas_per_node {
                return Err(Refusal::NodeUnconfirmed);
            }
        }
        // Asked last, and a refusal uses the sender's own budget: the caps bound how often
        // the embedder's hook runs, and a flood of refused groups cannot take the budget
        // of other senders.
        *self.this_tick_by_node.entry(from).or_default() += 1;
        if !policy.allows(group, from) {
            return Err(Refusal::Policy);
        }
        self.this_tick += 1;
        Ok(())
    }

    /// A new tick: the per-tick budgets start again.
    pub(super) fn new_tick(&mut self) {
        self.this_tick = 0;
        self.this_tick_by_node.clear();
    }

    /// Records that a message from `from` created `group`'s replica at worker tick `tick`
    /// in place of tombstone record `prior` (unconfirmed until `forget`).
    pub(super) fn created(&mut self, group: u64, from: NodeId, tick: u64, prior: Option<ReplicaId>) {
        self.forget(group);
        self.unconfirmed.insert(group, (from, tick, prior));
        *self.unconfirmed_by_node.entry(from).or_default() += 1;
    }

    /// `group` is no longer unconfirmed (it confirmed, or its replica is gone); returns,
    /// if it was, the tombstone record its creation replaced.
    pub(super) fn forget(&mut self, group: u64) -> Option<Option<ReplicaId>> {
        let (node, _, prior) = self.unconfirmed.remove(&group)?;
        if let Some(n) = self.unconfirmed_by_node.get_mut(&node) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.unconfirmed_by_node.remove(&node);
            }
        }
        Some(prior)
    }

    /// Whether `group`'s replica was created from a message and is unconfirmed.
    pub(super) fn is_unconfirmed(&self, group: u64) -> bool {
        self.unconfirmed.contains_key(&group)
    }

    /// Unconfirmed replicas held.
    pub(super) fn len(&self) -> usize {
        self.unconfirmed.len()
    }

    /// The unconfirmed replicas: (group, worker tick of creation).
    pub(super) fn unconfirmed(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.unconfirmed.iter().map(|(&g, &(_, t, _))| (g, t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> EngineConfig {
        let mut c = EngineConfig::new(1, "/tmp/flotilla-admission-test");
        c.max_creates_per_tick = 4;
        c.max_creates_per_node_per_tick = 3;
        c.max_unconfirmed_replicas = 5;
        c.max_unconfirmed_replicas_per_node = 4;
        c
    }

    #[test]
    fn per_tick_caps_total_and_per_node() {
        let (c, p) = (cfg(), CreatePolicy::allow_all());
        let mut a = Admission::default();
        for g in 0..3 {
            assert_eq!(a.admit(&c, &p, g, 2, false), Ok(()));
        }
        assert_eq!(a.admit(&c, &p, 9, 2, false), Err(Refusal::NodeTickCap));
        assert_eq!(a.admit(&c, &p, 9, 3, false), Ok(()));
        assert_eq!(a.admit(&c, &p, 10, 4, false), Err(Refusal::TickCap));
        a.new_tick();
        assert_eq!(a.admit(&c, &p, 10, 2, false), Ok(()));
    }

    #[test]
    fn unconfirmed_replicas_are_capped_until_forgotten() {
        let (c, p) = (cfg(), CreatePolicy::allow_all());
        let mut a = Admission::default();
        for g in 0..4 {
            a.created(g, 2, 0, None);
        }
        assert_eq!(a.admit(&c, &p, 9, 2, true), Err(Refusal::NodeUnconfirmed));
        assert_eq!(a.admit(&c, &p, 9, 2, false), Ok(()), "a removal record holds no replica");
        assert_eq!(a.admit(&c, &p, 9, 3, true), Ok(()));
        a.created(9, 3, 0, Some(4));
        assert_eq!(a.admit(&c, &p, 10, 4, true), Err(Refusal::Unconfirmed));
        assert_eq!(a.forget(0), Some(None));
        assert_eq!(a.forget(0), None);
        assert_eq!(a.forget(9), Some(Some(4)), "the replaced tombstone comes back");
        a.created(9, 3, 0, Some(4));
        assert!(!a.is_unconfirmed(0) && a.is_unconfirmed(1));
        a.new_tick();
        assert_eq!(a.admit(&c, &p, 10, 2, true), Ok(()));
        a.created(1, 3, 5, None);
        assert_eq!(a.len(), 4, "re-creating a group replaces its record");
        assert_eq!(a.unconfirmed_by_node.get(&2), Some(&2));
    }

    #[test]
    fn the_policy_decides_within_the_caps() {
        let c = cfg();
        let p = CreatePolicy::new(|g, n| g == 7 && n == 2);
        let mut a = Admission::default();
        assert_eq!(a.admit(&c, &p, 8, 2, true), Err(Refusal::Policy));
        assert_eq!(a.admit(&c, &p, 7, 3, true), Err(Refusal::Policy));
        assert_eq!(a.admit(&c, &p, 7, 2, true), Ok(()));
        assert_eq!(a.this_tick, 1, "a refusal uses no shared budget");
        assert_eq!(a.admit(&c, &p, 8, 2, true), Err(Refusal::Policy));
        assert_eq!(a.admit(&c, &p, 7, 2, true), Err(Refusal::NodeTickCap), "but the sender's own");
    }
}
