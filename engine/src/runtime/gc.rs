//! Clean-up of a removed replica that missed its removal (issue 10 point 4): the
//! stale-peer check (TiKV's `check_stale_peer`).
//!
//! A replica cut off while the group removed it never applies its removal, so it is not
//! destroyed then. If it campaigns, its messages reach the members, which answer with a
//! tombstone (`Worker::answer_removed`). But a quiesced replica sends nothing and neither
//! does a learner (it never campaigns), and the leader no longer addresses a replica its
//! configuration dropped: once healed, such a replica would live on forever. So, on a slow
//! timer ([`PROBE_ELECTIONS`] maximum election timeouts), every replica that is not a
//! leader and is quiesced or not a voter in its own configuration sends a
//! [`WireItem::GcProbe`] to each other node of its configuration; a member whose applied
//! configuration removed it answers with a [`WireItem::Tombstone`], and the worker's
//! checked destruction (`Worker::on_tombstone`) does the rest. Any member answers, so a
//! leader change does not stop it.
//!
//! Owns when a replica probes, what it sends, and the rule by which a member recognises a
//! removed replica. Never destroys a replica, never steps Raft (a probe wakes no quiesced
//! group) and never writes anything.

use crate::raft::conf::ConfState;
use crate::raft::types::{NodeId, ReplicaId, Role};
use crate::transport::WireItem;

/// The stale-peer check runs every this many maximum election timeouts (slow: a probe per
/// member per group, and a removed replica that missed its removal is rare).
pub(crate) const PROBE_ELECTIONS: u64 = 10;

/// Whether the stale-peer check runs at worker tick `tick`.
pub(crate) fn probe_due(tick: u64, election_max_ticks: u32) -> bool {
    let every = PROBE_ELECTIONS * u64::from(election_max_ticks.max(1));
    tick > 0 && tick % every == 0
}

/// Whether a replica in `role` probes: not a leader, and quiesced or not a voter of its
/// own configuration (a voter that is awake and hears no leader campaigns, and its
/// campaign is answered like a probe).
pub(crate) fn should_probe(role: Role, quiesced: bool, voter: bool) -> bool {
    role != Role::Leader && (quiesced || !voter)
}

/// The probes of replica `replica` of `group` on node `me`: one to each other node of its
/// configuration `conf`.
pub(crate) fn probes(
    group: u64,
    replica: ReplicaId,
    conf: &ConfState,
    me: NodeId,
) -> Vec<(NodeId, WireItem)> {
    let mut nodes: Vec<NodeId> = conf.members().iter().map(|r| r.node).filter(|&n| n != me).collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes.into_iter().map(|n| (n, WireItem::GcProbe { group, replica })).collect()
}

/// Whether a member whose replica is `own` and whose applied configuration is `conf`
/// knows `replica` was removed for good: an id at or below the configuration's highest
/// that it no longer holds (replica ids are never reused).
pub(crate) fn removed_by(conf: &ConfState, own: ReplicaId, replica: ReplicaId) -> bool {
    replica != 0 && replica != own && replica <= conf.max_replica_id && !conf.contains(replica)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::conf::{ChangeKind, ConfChange};
    use crate::raft::types::Replica;

    fn r(id: ReplicaId, node: NodeId) -> Replica {
        Replica { id, node }
    }

    #[test]
    fn removed_only_below_the_highest_id_and_not_held() {
        let conf = ConfState::with_voters([r(1, 1), r(2, 2), r(3, 3)]);
        let conf = conf.apply(&ConfChange::single(ChangeKind::AddLearner, r(3, 3))).unwrap();
        assert!(!removed_by(&conf, 1, 3), "a learner is still a member");
        let conf = conf.apply(&ConfChange::single(ChangeKind::Remove, r(3, 3))).unwrap();
        assert!(removed_by(&conf, 1, 3));
        assert!(!removed_by(&conf, 1, 4), "an id the configuration never held may be new");
        assert!(!removed_by(&conf, 1, 1), "never itself");
        assert!(!removed_by(&conf, 1, 0));
    }

    #[test]
    fn followers_that_send_nothing_probe_every_other_node() {
        assert!(should_probe(Role::Follower, true, true));
        assert!(should_probe(Role::Follower, false, false), "an awake learner never campaigns");
        assert!(!should_probe(Role::Follower, false, true), "an awake voter campaigns instead");
        assert!(!should_probe(Role::Leader, true, true));
        let conf = ConfState::with_voters([r(1, 1), r(2, 2), r(3, 3)]);
        let p = probes(9, 3, &conf, 3);
        assert_eq!(p.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1, 2]);
        assert!(p.iter().all(|(_, it)| *it == WireItem::GcProbe { group: 9, replica: 3 }));
        assert!(!probe_due(0, 20));
        assert!(probe_due(200, 20) && !probe_due(201, 20) && !probe_due(80, 20));
    }
}
