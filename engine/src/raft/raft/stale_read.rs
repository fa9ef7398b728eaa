//! What a replica knows about its own staleness, for reads served from its applied state
//! without a ReadIndex round (the runtime's `read_local`): the highest commit index the
//! current term's leader told a follower, and how long ago (in ticks) it last heard from
//! that leader, or, on a leader, from a quorum.
//!
//! Owns the `Raft` methods that record and report these (an `impl` block over the fields
//! `leader_commit` and `contact_age`, defined in the parent). Never decides whether a read
//! may be served (the runtime compares the view with the caller's bound) and never sends
//! anything: such reads are not linearizable, and nothing here makes them so.

use super::*;

/// A replica's view of its own staleness ([`Raft::local_read_view`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalReadView {
    /// This replica's role.
    pub role: Role,
    /// The applied index (as reported by the runtime).
    pub applied: u64,
    /// The highest commit index known to the group: on a leader its own commit index; on
    /// another replica the highest commit index the current term's leader sent it (0 if
    /// it heard none in this term).
    pub known_commit: u64,
    /// Ticks since this replica last heard from the current term's leader (on a leader:
    /// an upper bound of the ticks since a quorum of voters was last heard). `None`: not
    /// heard in this term (no leader known).
    pub contact_age_ticks: Option<u64>,
}

impl<S: LogStore> Raft<S> {
    /// This replica's view of its own staleness. Reading the state machine at
    /// `applied` serves data that may lag the group's commit by `known_commit - applied`
    /// entries plus whatever committed in the last `contact_age_ticks` ticks, which a
    /// replica cut off from its leader cannot know: the age is what bounds a partitioned
    /// follower. Not linearizable (use [`Raft::read_index`] for that).
    pub fn local_read_view(&self) -> LocalReadView {
        let leader = self.role == Role::Leader;
        let known_commit = if leader { self.log.committed } else { self.leader_commit };
        let heard = self.contact_age != u32::MAX && (leader || self.leader != NO_REPLICA);
        LocalReadView {
            role: self.role,
            applied: self.log.applied,
            known_commit: known_commit.max(self.log.committed),
            contact_age_ticks: heard.then_some(u64::from(self.contact_age)),
        }
    }

    /// A follower heard from the current term's leader, which says `commit` is committed.
    pub(super) fn leader_heard(&mut self, commit: u64) {
        self.leader_commit = self.leader_commit.max(commit);
        self.contact_age = 0;
    }

    /// A leader heard from a quorum at most `age` ticks ago.
    pub(super) fn quorum_heard(&mut self, age: u32) {
        self.contact_age = self.contact_age.min(age);
    }

    /// `ticks` ticks passed (ticked, or credited while quiesced).
    pub(super) fn age_contact(&mut self, ticks: u64) {
        if self.contact_age != u32::MAX {
            let t = u32::try_from(ticks).unwrap_or(u32::MAX - 1);
            self.contact_age = self.contact_age.saturating_add(t).min(u32::MAX - 1);
        }
    }

    /// A new term or role: nothing is known about its leader yet.
    pub(super) fn forget_contact(&mut self) {
        self.leader_commit = 0;
        self.contact_age = u32::MAX;
    }
}

#[cfg(test)]
mod tests {
    use super::super::event_tests::drive;
    use super::*;
    use crate::raft::config::Config;
    use crate::raft::storage::MemStorage;

    /// Replica 2 of {1, 2, 3} with entries 1..=3 of term 1 durable, nothing committed.
    fn follower() -> Raft<MemStorage> {
        let conf = ConfState::with_voters((1..=3).map(|i| Replica::new(i, i)));
        let mut st = MemStorage::new_with_conf(conf);
        st.append(
            &(1..=3).map(|i| Entry { index: i, term: 1, payload: EntryPayload::Noop }).collect::<Vec<_>>(),
        );
        st.set_hard_state(HardState { term: 1, vote: 0, commit: 0 });
        Raft::new(Config::new(2).validate().unwrap(), st).unwrap()
    }

    fn heartbeat(term: u64, commit: u64) -> Message {
        Message { from: 1, to: 2, term, body: MessageBody::Heartbeat { commit, round: 1, quiesce: false } }
    }

    #[test]
    fn follower_records_the_leaders_commit_and_the_ticks_since_it_was_heard() {
        let mut r = follower();
        let v = r.local_read_view();
        assert_eq!((v.known_commit, v.contact_age_ticks), (0, None), "no leader heard yet");
        r.step(heartbeat(1, 2)).unwrap();
        let v = r.local_read_view();
        assert_eq!((v.role, v.known_commit, v.contact_age_ticks), (Role::Follower, 2, Some(0)));
        // An append tells the leader's commit, beyond what this follower holds.
        let append = Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::Append {
                prev_index: 3,
                prev_term: 1,
                entries: vec![Entry { index: 4, term: 1, payload: EntryPayload::Noop }],
                commit: 9,
            },
        };
        r.step(append).unwrap();
        assert_eq!(r.local_read_view().known_commit, 9);
        // A heartbeat with a lower commit (min(commit, match)) never lowers what is known.
        r.step(heartbeat(1, 3)).unwrap();
        assert_eq!(r.local_read_view().known_commit, 9);
        for _ in 0..4 {
            r.tick();
        }
        let v = r.local_read_view();
        assert_eq!((v.known_commit, v.contact_age_ticks), (9, Some(4)), "silence counts in ticks");
        r.step(heartbeat(1, 9)).unwrap();
        assert_eq!(r.local_read_view().contact_age_ticks, Some(0));
        // A new term forgets the old leader: nothing is known about the new one.
        let vote = Message {
            from: 3,
            to: 2,
            term: 5,
            body: MessageBody::RequestVote {
                pre_vote: false,
                last_index: 100,
                last_term: 4,
                transfer: true,
                commit: 0,
                commit_term: 0,
            },
        };
        for _ in 0..30 {
            r.tick();
        }
        r.step(vote).unwrap();
        let v = r.local_read_view();
        assert_eq!(r.term(), 5);
        assert_eq!(v.contact_age_ticks, None, "a new term knows no leader: {v:?}");
        r.step(heartbeat(5, 4)).unwrap();
        // The old term's 9 is forgotten: only what the new leader said counts.
        assert_eq!(r.local_read_view().known_commit, 4);
    }

    fn grant(r: &Raft<MemStorage>, from: ReplicaId, pre_vote: bool) -> Message {
        let term = if pre_vote { r.term() + 1 } else { r.term() };
        Message {
            from,
            to: r.id(),
            term,
            body: MessageBody::RequestVoteResponse { pre_vote, reject: false, commit: 0, commit_term: 0 },
        }
    }

    #[test]
    fn leader_measures_its_last_quorum_contact() {
        let conf = ConfState::with_voters((1..=3).map(|i| Replica::new(i, i)));
        let cfg = Config::new(1).validate().unwrap();
        let check = u64::from(cfg.election_timeout_min_ticks);
        let mut r = Raft::new(cfg, MemStorage::new_with_conf(conf)).unwrap();
        for _ in 0..100 {
            r.tick();
            if r.role() == Role::PreCandidate {
                break;
            }
        }
        drive(&mut r);
        r.step(grant(&r, 2, true)).unwrap();
        drive(&mut r);
        r.step(grant(&r, 2, false)).unwrap();
        drive(&mut r);
        assert_eq!(r.role(), Role::Leader);
        let v = r.local_read_view();
        assert_eq!(v.contact_age_ticks, Some(0), "a quorum voted just now");
        assert_eq!(v.known_commit, r.committed());
        r.tick();
        r.tick();
        assert_eq!(r.local_read_view().contact_age_ticks, Some(2));
        // Replica 2 keeps answering: each CheckQuorum pass bounds the age by its window.
        let mut seen = Vec::new();
        for _ in 0..(3 * check) {
            let hb =
                Message { from: 2, to: 1, term: r.term(), body: MessageBody::HeartbeatResponse { round: 0 } };
            r.step(hb).unwrap();
            r.tick();
            drive(&mut r);
            seen.push(r.local_read_view().contact_age_ticks.unwrap_or(u64::MAX));
        }
        assert_eq!(r.role(), Role::Leader);
        assert!(seen.iter().all(|&a| a <= 2 * check), "ages {seen:?}");
        // Nobody answers any more: the leader steps down at a check, or its age grows past
        // the window.
        let mut last = None;
        for _ in 0..(3 * check) {
            r.tick();
            drive(&mut r);
            if r.role() != Role::Leader {
                break;
            }
            last = r.local_read_view().contact_age_ticks;
        }
        assert!(r.role() != Role::Leader || last.unwrap_or(0) > 2 * check, "{last:?}");
        assert_eq!(r.local_read_view().contact_age_ticks.filter(|_| r.role() != Role::Leader), None);
    }
}
