//! Quiescence on a worker: a group whose Raft replica quiesced leaves the worker's
//! `active` set, so ticks never visit it (idle CPU does not grow with the number of
//! groups). The wall ticks it missed are credited lazily (`Raft::advance_idle`) before
//! its next input; they count as silence from the leader only when node liveness wakes
//! the group. Node liveness (a peer down, or back with a new incarnation) queues the
//! quiesced groups led there (and, for a restarted node, those led here with a replica
//! there) for waking, at most `EngineConfig::max_wakes_per_tick` per tick (`wake_queue`).
//!
//! Owns the tick set and the quiesced-groups gauge. Never decides to quiesce (Raft does).

use std::sync::atomic::Ordering;

use super::clock;
use super::group::Group;
use super::shared::bump_by;
use super::worker::Worker;
use crate::api::EngineEvent;
use crate::raft::types::{NodeId, Role};

impl Worker {
    /// Hands a quiesced group the wall ticks it missed, before an input reaches it. They
    /// count on a follower's election timer only if node liveness wakes it (`Raft::wake`):
    /// woken by anything else (a stray PreVote), a follower that merely slept keeps its
    /// lease. A leader re-sends an unacknowledged quiesce heartbeat on them.
    /// Also gives it the clock its leader lease is measured with (`clock`).
    pub(super) fn credit_idle(g: &mut Group, now: u64) {
        g.raft.set_now(clock::now_nanos());
        if g.raft.is_quiesced() {
            g.raft.advance_idle(now.saturating_sub(g.idle_since));
        }
        g.idle_since = now;
    }

    /// After a group's turn: a quiesced group (with no read or waiter to time out) leaves
    /// the tick set; any other joins it.
    pub(super) fn settle(&mut self, g: &mut Group) {
        // A quiesced leader stays ticked until every member acknowledged its quiesce
        // heartbeat (the credited ticks drive its re-sends).
        let idle = leaves_tick_set(
            g.raft.is_quiesced(),
            !g.reads.is_empty() || !g.waiters.is_empty(),
            g.raft.awaiting_quiesce_acks(),
        );
        if idle {
            if self.active.remove(&g.id) {
                g.idle_since = self.ticks;
            }
        } else {
            self.active.insert(g.id);
        }
        let quiesced = g.raft.is_quiesced();
        if quiesced != g.quiesced_counted {
            g.quiesced_counted = quiesced;
            if quiesced {
                // Idle from now (it may stay ticked, awaiting quiesce acknowledgements).
                g.idle_since = self.ticks;
                g.shed_idle_memory();
            }
            let c = &self.sh.counters.quiesced_groups;
            if quiesced {
                c.fetch_add(1, Ordering::Relaxed);
                self.publish(EngineEvent::GroupQuiesced { group: g.id });
            } else {
                c.fetch_sub(1, Ordering::Relaxed);
                self.publish(EngineEvent::GroupWoken { group: g.id });
            }
        }
    }

    /// Node liveness: `node` went down, or came back as a new incarnation (`restarted`).
    /// Queues the quiesced groups whose leader is there (their followers must notice and
    /// elect another), and for a restart also the quiesced groups led here with a replica
    /// there (the restarted replica learns its leader at once). Woken by `tick`, a bounded
    /// number per tick.
    pub(super) fn liveness(&mut self, node: NodeId, restarted: bool) {
        let me = self.sh.node;
        for g in self.groups.values() {
            if !g.raft.is_quiesced() {
                continue;
            }
            let leads_here = g.raft.role() == Role::Leader;
            let members = || g.raft.conf().members().into_iter().map(|r| r.node);
            if liveness_concerns(node, restarted, me, g.leader_node(), leads_here, members) {
                self.wake_queue.push(g.id);
            }
        }
    }

    /// Wakes the quiesced groups node liveness queued (`liveness`), at most
    /// `EngineConfig::max_wakes_per_tick` per tick (`WakeQueue`).
    pub(super) fn wake_queued(&mut self, now: u64) {
        let max_wakes = self.sh.cfg.get().max_wakes_per_tick;
        let (groups, touched) = (&mut self.groups, &mut self.touched);
        let woken = self.wake_queue.wake_up_to(max_wakes, |gid| {
            let Some(g) = groups.get_mut(&gid) else { return false };
            if !g.raft.is_quiesced() {
                return false;
            }
            Self::credit_idle(g, now);
            g.raft.wake();
            Self::touch(touched, g);
            true
        });
        if woken > 0 {
            bump_by(&self.sh.counters.liveness_wakes, woken);
        }
    }
}

/// Whether a group leaves the tick set after its turn: quiesced, with nothing that needs
/// ticks (`pending`: a read or a waiter to time out; `awaiting_acks`: a quiesced leader
/// re-sending its quiesce heartbeat to members that did not acknowledge it).
fn leaves_tick_set(quiesced: bool, pending: bool, awaiting_acks: bool) -> bool {
    quiesced && !pending && !awaiting_acks
}

/// Whether news of `node` (down, or `restarted` as a new incarnation) concerns a quiesced
/// group on node `me` whose leader is on `leader` (`leads_here`: this replica leads):
/// its leader is there (the followers must notice and elect another), or, for a restart,
/// it is led here with a member there (the restarted replica learns its leader at once).
fn liveness_concerns<I: IntoIterator<Item = NodeId>>(
    node: NodeId,
    restarted: bool,
    me: NodeId,
    leader: Option<NodeId>,
    leads_here: bool,
    members: impl Fn() -> I,
) -> bool {
    let led_there = leader == Some(node);
    let follower_there = restarted && leads_here && members().into_iter().any(|n| n == node && n != me);
    led_there || follower_there
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_quiesced_group_with_nothing_pending_leaves_the_tick_set() {
        assert!(leaves_tick_set(true, false, false));
        assert!(!leaves_tick_set(false, false, false));
        assert!(!leaves_tick_set(true, true, false), "a read or waiter needs its deadline");
        assert!(!leaves_tick_set(true, false, true), "a leader re-sends its quiesce heartbeat");
    }

    #[test]
    fn a_node_down_wakes_the_groups_led_there() {
        let members = || vec![1, 2, 3];
        // Follower here (node 1), leader on node 2 which went down.
        assert!(liveness_concerns(2, false, 1, Some(2), false, members));
        // Leader elsewhere: not concerned.
        assert!(!liveness_concerns(2, false, 1, Some(3), false, members));
        // Led here with a follower on the node that went down: its own ticks notice.
        assert!(!liveness_concerns(2, false, 1, Some(1), true, members));
    }

    #[test]
    fn a_restart_also_wakes_the_groups_led_here_with_a_member_there() {
        let members = || vec![1, 2, 3];
        assert!(liveness_concerns(2, true, 1, Some(1), true, members));
        // No member on the restarted node.
        assert!(!liveness_concerns(4, true, 1, Some(1), true, members));
        // Not the leader: a follower's leader is elsewhere.
        assert!(!liveness_concerns(2, true, 1, Some(3), false, members));
    }
}
