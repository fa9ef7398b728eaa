//! What a worker tells the rest of the node about its groups: after each turn of a group,
//! the leader its replica knows of goes into the shared leader view (`leader_view`) and a
//! newly learnt (term, leader) becomes an [`EngineEvent::LeaderChanged`]; the other events
//! are published where they happen (lifecycle, quiescence, snapshots, compaction, observe)
//! through [`Worker::publish`]; a destroyed replica leaves the view (`forget_leader`).
//!
//! Owns the rule of a leader-changed event: once per new (term, leader) pair known, never
//! for "no leader". Never blocks (publishing is a try-send, see `event_hub`), never
//! changes Raft state.

use super::group::Group;
use super::worker::Worker;
use crate::api::{EngineEvent, LeaderInfo};
use crate::raft::types::{Replica, NO_REPLICA};

impl Worker {
    /// Publishes `ev` to the subscribers, if any (one relaxed load when none).
    #[inline]
    pub(super) fn publish(&self, ev: EngineEvent) {
        self.sh.events.publish(ev);
    }

    /// After a turn of `g`: the leader its replica knows of (with the node hosting it,
    /// from the configuration or the peers learnt from messages) goes into the leader
    /// view when it changed, and a (term, leader) not announced before is published.
    pub(super) fn announce_leader(&self, g: &mut Group) {
        let id = g.raft.leader();
        let now = if id == NO_REPLICA {
            None
        } else {
            // A leader whose node is not known yet counts as unknown until it is.
            g.node_of(id).filter(|&n| n != 0).map(|node| LeaderInfo {
                node,
                replica: id,
                term: g.raft.term(),
            })
        };
        if now == g.leader_cell.get() {
            return;
        }
        g.leader_cell.set(now);
        let Some(l) = now else { return };
        if (l.term, l.replica) == g.leader_announced {
            return;
        }
        g.leader_announced = (l.term, l.replica);
        self.publish(EngineEvent::LeaderChanged {
            group: g.id,
            leader: Replica::new(l.node, l.replica),
            term: l.term,
        });
    }

    /// `g` was destroyed (or dropped): it leaves the leader view, and subscribers hear of
    /// it.
    pub(super) fn forget_leader(&self, g: &Group) {
        self.sh.leaders.remove(g.id, &g.leader_cell);
        self.publish(EngineEvent::ReplicaDestroyed { group: g.id });
    }
}
