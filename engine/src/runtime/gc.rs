//! Clean-up of a removed replica that missed its removal (issue 10 point 4): the
//! stale-peer check (TiKV's `check_stale_peer`).
//!
//! A replica cut off while the group removed it never applies its removal, so it is not
//! destroyed then. If it campaigns, its messages reach the members, which answer with a
//! tombstone (`Worker::answer_removed`). But a quiesced replica sends nothing and neither
//! does a learner (it never campaigns), and the leader no longer addresses a replica its
//! configuration dropped: once healed, such a replica would live on forever. So, on a slow
//! timer (a pass over the groups every `EngineConfig::gc_interval_elections` maximum
//! election timeouts, spread over the interval and capped per tick by
//! `EngineConfig::gc_replicas_per_tick`: [`GcPacer`]), every replica that is not a
//! leader and is quiesced or not a voter in its own configuration sends a
//! [`WireItem::GcProbe`] to each other node of its configuration; a member whose applied
//! configuration removed it answers with a [`WireItem::Tombstone`], and the worker's
//! checked destruction (`Worker::on_tombstone`) does the rest. Any member answers, so a
//! leader change does not stop it.
//!
//! The leader's side (TiKV raftstore-v2's `removed_records` and `GcPeerRequest`): every
//! replica records the replicas its configuration removed (`ConfState::removed`, applied
//! and carried in snapshots like the rest of the configuration), so whoever leads, now or
//! after a leader change, knows whom to tell. On the same slow timer a leader re-sends a
//! [`WireItem::Tombstone`] to each recorded replica's node ([`resends`]); the node
//! destroys the replica (checked as above) or, once a durable tombstone record there
//! covers it, answers [`WireItem::TombstoneAck`] ([`judge_tombstone`]); the leader then
//! proposes `ChangeKind::Forget`, a replicated command that drops the record everywhere.
//!
//! A tombstone is believed only from a node that hosts a voter of the receiving replica's
//! own applied configuration ([`hosts_voter`]); from any other node it only triggers the
//! probe, so the replica is destroyed only once a member confirms its removal (issue 12
//! point 2). A tombstone for a group not hosted here is recorded only if the embedder's
//! `CreatePolicy` and the creation caps admit the sender (a record is a claim about the
//! group, like a creation).
//!
//! Owns when a replica probes, what it and a leader send, the rule by which a member
//! recognises a removed replica, and what a node does with a tombstone. Never destroys a
//! replica, never steps Raft (a probe wakes no quiesced group) and never writes anything:
//! the worker acts on the verdicts.

use std::collections::HashMap;

use crate::raft::conf::ConfState;
use crate::raft::types::{NodeId, Replica, ReplicaId, Role};
use crate::transport::WireItem;

/// Ticks between the starts of two clean-up passes: `interval_elections`
/// (`EngineConfig::gc_interval_elections`, slow: a message per member per group, and a
/// removed replica that missed its removal is rare) maximum election timeouts.
pub(crate) fn gc_every(interval_elections: u32, election_max_ticks: u32) -> u64 {
    u64::from(interval_elections.max(1)) * u64::from(election_max_ticks.max(1))
}

/// Clean-up items (probes and re-sent tombstones) a worker holds before sending them.
pub(crate) const GC_SEND_BATCH: usize = 1024;

/// Clean-up items a worker holds for sending, by destination node: a paced pass sends
/// them [`GC_SEND_BATCH`] at a time or at its end, not a few every tick.
#[derive(Debug, Default)]
pub(crate) struct GcOutbox {
    probes: HashMap<NodeId, Vec<WireItem>>,
    resent: HashMap<NodeId, Vec<WireItem>>,
    held: usize,
}

impl GcOutbox {
    /// Holds a stale-peer probe for node `to`.
    pub(crate) fn hold_probe(&mut self, to: NodeId, item: WireItem) {
        self.probes.entry(to).or_default().push(item);
        self.held += 1;
    }

    /// Holds a leader's re-sent tombstone for node `to`.
    pub(crate) fn hold_resent(&mut self, to: NodeId, item: WireItem) {
        self.resent.entry(to).or_default().push(item);
        self.held += 1;
    }

    /// Items held.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// The probes and the re-sent tombstones, by destination node.
    pub(crate) fn into_parts(self) -> (HashMap<NodeId, Vec<WireItem>>, HashMap<NodeId, Vec<WireItem>>) {
        (self.probes, self.resent)
    }
}

/// One worker's clean-up passes, paced: a pass is spread over the ticks of its interval
/// (a slice of the groups per tick, at least one), and no tick examines more than
/// `EngineConfig::gc_replicas_per_tick` replicas, so a node of idle groups pays a
/// bounded, small amount of work per tick whatever their number (all in one tick, a
/// pass over 100,000 groups every 2 s cost 15% of a core). A pass lists the groups when it
/// begins; the next begins once it is done and a whole interval has passed since it
/// began, so with more groups than the cap covers in an interval, passes take longer and
/// follow each other at once.
#[derive(Debug, Default)]
pub(crate) struct GcPacer {
    /// Groups of the pass in progress not yet examined (taken from the end).
    left: Vec<u64>,
    /// Groups to examine per tick in this pass.
    per_tick: usize,
    /// The tick the last pass began.
    began: u64,
}

impl GcPacer {
    /// The groups to examine at tick `now`, which counts `ticks` ticks at once (more than
    /// one when an idle worker slept several: `EngineConfig::idle_wake_ticks`): the
    /// slices of those ticks of the pass in progress, after beginning a new one over
    /// `groups()` when due (`every` ticks after the last began, the first at tick
    /// `every`). At most `cap` (at least 1) per tick counted.
    pub(crate) fn take(
        &mut self,
        now: u64,
        ticks: u64,
        every: u64,
        cap: usize,
        groups: impl FnOnce() -> Vec<u64>,
    ) -> Vec<u64> {
        let every = every.max(1);
        if self.left.is_empty() && now >= self.began + every {
            self.left = groups();
            self.began = now;
            let spread = self.left.len().div_ceil(usize::try_from(every).unwrap_or(usize::MAX));
            self.per_tick = spread.clamp(1, cap.max(1));
        }
        let ticks = usize::try_from(ticks.max(1)).unwrap_or(usize::MAX);
        let n = self.per_tick.saturating_mul(ticks).min(self.left.len());
        self.left.split_off(self.left.len() - n)
    }

    /// Whether the pass has no group left to examine.
    pub(crate) fn pass_done(&self) -> bool {
        self.left.is_empty()
    }
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

/// A leader's re-sent tombstones for the removal records of its configuration `conf`
/// (applied at `conf_index`) on node `me`: one [`WireItem::Tombstone`] per record on
/// another node, and the records on `me` itself, which need no answer (this node hosts
/// the leader's replica of the group, so no other replica of it: they can be forgotten).
pub(crate) fn resends(
    group: u64,
    conf: &ConfState,
    conf_index: u64,
    me: NodeId,
) -> (Vec<(NodeId, WireItem)>, Vec<Replica>) {
    let (local, remote): (Vec<Replica>, Vec<Replica>) = conf.removed.iter().partition(|r| r.node == me);
    let items = remote
        .into_iter()
        .map(|r| (r.node, WireItem::Tombstone { group, replica: r.id, conf_index }))
        .collect();
    (items, local)
}

/// What a node does with a [`WireItem::Tombstone`] for `replica` of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Destroy the hosted replica (it is the one named, and the sender's configuration is
    /// newer than its own).
    Destroy,
    /// Confirm: the replica does not exist here and a durable record keeps it from ever
    /// being created (or a newer replica of the group lives here).
    Ack,
    /// The group is not hosted and no tombstone covers the replica: record one (the ack
    /// follows on the next re-send, once it is durable).
    Record,
    /// Nothing to do yet (not proven, or the group's founding write is in flight).
    Ignore,
}

/// The verdict on a tombstone naming `replica` with configuration index `conf_index`, for
/// a node that hosts `hosted` (the replica id and its configuration index) of the group,
/// holds tombstone record `tombstone` (replica id, durable yet) and may be `creating` it.
pub(crate) fn judge_tombstone(
    hosted: Option<(ReplicaId, u64)>,
    tombstone: Option<(ReplicaId, bool)>,
    creating: bool,
    replica: ReplicaId,
    conf_index: u64,
) -> Verdict {
    if creating || replica == 0 {
        return Verdict::Ignore;
    }
    match hosted {
        Some((id, own)) if id == replica => {
            if conf_index > own {
                Verdict::Destroy
            } else {
                Verdict::Ignore
            }
        }
        // One replica of a group per node: a newer one means the named one is gone.
        Some((id, _)) if id > replica => Verdict::Ack,
        Some(_) => Verdict::Ignore,
        None => match tombstone {
            Some((t, true)) if t >= replica => Verdict::Ack,
            Some((t, false)) if t >= replica => Verdict::Ignore,
            _ => Verdict::Record,
        },
    }
}

/// Whether node `node` hosts a voter (incoming or outgoing) of configuration `conf`: the
/// only nodes whose tombstone a replica with this applied configuration believes (issue 12
/// point 2). A tombstone from any other node only makes the replica ask its members
/// ([`probes`]); a member that removed it answers with a tombstone of its own.
pub(crate) fn hosts_voter(conf: &ConfState, node: NodeId) -> bool {
    conf.voters.iter().chain(&conf.voters_outgoing).any(|r| r.node == node)
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
    fn only_a_voters_node_is_believed() {
        let mut conf = ConfState::with_voters([r(1, 1), r(2, 2)]);
        conf.learners.push(r(3, 3));
        assert!(hosts_voter(&conf, 1) && hosts_voter(&conf, 2));
        assert!(!hosts_voter(&conf, 3), "a learner's node is not believed");
        assert!(!hosts_voter(&conf, 9), "nor a stranger");
        conf.voters_outgoing.push(r(4, 4));
        assert!(hosts_voter(&conf, 4), "an outgoing voter of a joint configuration is");
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
        assert_eq!(gc_every(10, 20), 200);
        assert_eq!(gc_every(2, 20), 40, "the interval is configurable");
    }

    /// Runs `ticks` ticks of a pacer over groups `0..n`; returns the groups examined at
    /// each tick.
    fn pace(n: u64, every: u64, cap: usize, ticks: u64) -> Vec<Vec<u64>> {
        let mut p = GcPacer::default();
        (0..ticks).map(|t| p.take(t, 1, every, cap, || (0..n).collect())).collect()
    }

    /// Ticks counted several at a time (an idle worker's wake-ups): each wake-up takes
    /// the slices of all the ticks it counts, so a pass takes as many ticks as when every
    /// tick is counted on its own, and no tick's cap is exceeded on average.
    #[test]
    fn ticks_counted_in_strides_take_every_ticks_slice() {
        let mut p = GcPacer::default();
        let mut seen = Vec::new();
        let mut now = 0;
        while now < 1200 {
            now += 10;
            seen.push((now, p.take(now, 10, 100, 16, || (0..10_000).collect())));
        }
        assert!(seen.iter().all(|(_, s)| s.len() <= 160), "at most 16 for each of the 10 ticks");
        // The pass begins at tick 100 and ends 625 ticks later, as when counted one by one.
        let pass: Vec<u64> =
            seen.iter().filter(|(t, _)| (100..=720).contains(t)).flat_map(|(_, s)| s.clone()).collect();
        assert_eq!(pass.len(), 10_000);
        let mut sorted = pass;
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 10_000, "every group once");
        assert_eq!(
            seen.iter().find(|(t, _)| *t == 730).map(|(_, s)| s.len()),
            Some(160),
            "the next pass at once"
        );
    }

    /// A few groups: the first pass at tick `every`, as before pacing, one group a tick,
    /// each group once per pass, one pass per interval.
    #[test]
    fn a_pass_over_few_groups_is_spread_over_its_interval() {
        let seen = pace(3, 40, 16, 130);
        assert!(seen[..40].iter().all(|s| s.is_empty()), "nothing before the first interval");
        assert_eq!(seen[40..43].iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 1, 1]);
        assert!(seen[43..80].iter().all(|s| s.is_empty()));
        let mut first: Vec<u64> = seen[40..43].concat();
        first.sort_unstable();
        assert_eq!(first, vec![0, 1, 2]);
        assert_eq!(seen[80..83].concat().len(), 3, "the next pass an interval later");
        assert_eq!(seen[120..123].concat().len(), 3);
    }

    /// Many groups: a slice per tick that finishes the pass within the interval, and never
    /// more than the cap; past what the cap covers, passes take longer and follow each other.
    #[test]
    fn a_pass_over_many_groups_is_capped_per_tick() {
        let seen = pace(1000, 100, 16, 300);
        assert_eq!(seen[100].len(), 10, "1,000 groups over 100 ticks");
        assert_eq!(seen[100..200].concat().len(), 1000);
        let seen = pace(10_000, 100, 16, 1000);
        assert!(seen.iter().all(|s| s.len() <= 16));
        assert_eq!(seen[100].len(), 16);
        // 10,000 groups at 16 a tick: the pass ends at tick 100 + 625 and the next begins
        // at once.
        let mut pass: Vec<u64> = seen[100..725].concat();
        assert!(seen[724].len() == 16 && seen[725].len() == 16);
        pass.sort_unstable();
        pass.dedup();
        assert_eq!(pass.len(), 10_000, "every group once");
    }

    #[test]
    fn leaders_resend_to_every_removed_replica_on_another_node() {
        let mut conf = ConfState::with_voters([r(1, 1), r(2, 2)]);
        conf.removed = vec![r(3, 3), r(4, 1), r(5, 5)];
        let (items, local) = resends(9, &conf, 44, 1);
        assert_eq!(
            items,
            vec![
                (3, WireItem::Tombstone { group: 9, replica: 3, conf_index: 44 }),
                (5, WireItem::Tombstone { group: 9, replica: 5, conf_index: 44 }),
            ]
        );
        assert_eq!(local, vec![r(4, 1)], "a record on the leader's own node needs no answer");
        assert_eq!(resends(9, &ConfState::with_voters([r(1, 1)]), 1, 1), (vec![], vec![]));
    }

    /// The tombstone verdicts: destroy only the named replica with an older
    /// configuration; confirm only what a durable record (or a newer replica) proves.
    #[test]
    fn a_tombstone_is_confirmed_only_once_durable() {
        use Verdict::*;
        assert_eq!(judge_tombstone(Some((3, 10)), None, false, 3, 11), Destroy);
        assert_eq!(judge_tombstone(Some((3, 10)), None, false, 3, 10), Ignore, "not newer");
        assert_eq!(judge_tombstone(Some((7, 10)), None, false, 3, 11), Ack, "a newer replica lives here");
        assert_eq!(judge_tombstone(Some((2, 10)), None, false, 3, 11), Ignore);
        assert_eq!(judge_tombstone(None, Some((3, true)), false, 3, 1), Ack);
        assert_eq!(judge_tombstone(None, Some((5, true)), false, 3, 1), Ack);
        assert_eq!(judge_tombstone(None, Some((3, false)), false, 3, 1), Ignore, "not durable yet");
        assert_eq!(judge_tombstone(None, Some((2, true)), false, 3, 1), Record, "an older record");
        assert_eq!(judge_tombstone(None, None, false, 3, 1), Record);
        assert_eq!(judge_tombstone(None, None, true, 3, 1), Ignore, "founding write in flight");
        assert_eq!(judge_tombstone(None, None, false, 0, 1), Ignore);
    }
}
