//! Heartbeats stepped without a [`Message`]: the narrow entry points a runtime that receives
//! heartbeats and their answers coalesced per node pair (`WireItem::Heartbeats`,
//! `WireItem::HeartbeatAcks`) uses to hand each one to its group, and the handling of
//! either kind that `step` shares with them.
//!
//! Owns [`Raft::step_heartbeat`] and [`Raft::step_heartbeat_response`]. Each takes the
//! fields of the message and behaves exactly as [`Raft::step`] with the whole message: it
//! goes straight to the handler only in the common case (addressed to this replica, a
//! well-formed term and index, not quiesced, the current term, the role that handles it),
//! where `step` reaches that same handler through no other rule; anything else (another
//! term, another role, a quiesced replica, a malformed value) builds the message and
//! takes `step`, with every term check and wake-up rule there. Never adds a rule of its
//! own.

use super::*;

impl<S: LogStore> Raft<S> {
    /// Steps a heartbeat (`MessageBody::Heartbeat { commit, round, quiesce }` from leader
    /// replica `from` to replica `to` in `term`): the same as [`Raft::step`] with that
    /// message, without building it in the common case (a follower of the current term).
    pub fn step_heartbeat(
        &mut self,
        from: ReplicaId,
        to: ReplicaId,
        term: u64,
        commit: u64,
        round: u64,
        quiesce: bool,
    ) -> Result<(), StepError> {
        if to == self.id
            && term == self.term
            && term < MAX_TERM
            && commit < MAX_INDEX
            && self.role == Role::Follower
            && !self.quiesced
        {
            // `step` would: pass the recipient and well-formedness checks, skip the quiesce
            // rules (not quiesced), change no term (the current one) and hand the message
            // to `step_follower`, which calls exactly this.
            self.follower_heartbeat(from, commit, round, quiesce);
            return Ok(());
        }
        self.step(Message { from, to, term, body: MessageBody::Heartbeat { commit, round, quiesce } })
    }

    /// Steps a heartbeat answer (`MessageBody::HeartbeatResponse { round }` from replica
    /// `from` to replica `to` in `term`): the same as [`Raft::step`] with that message,
    /// without building it in the common case (a leader of the current term, not
    /// quiesced).
    pub fn step_heartbeat_response(
        &mut self,
        from: ReplicaId,
        to: ReplicaId,
        term: u64,
        round: u64,
    ) -> Result<(), StepError> {
        if to == self.id
            && term == self.term
            && term < MAX_TERM
            && self.role == Role::Leader
            && !self.quiesced
        {
            // `step` would: pass the recipient and well-formedness checks (an answer
            // carries no index), skip the quiesce acknowledgement (not quiesced), change
            // no term and hand the message to `step_leader`, which calls exactly this.
            self.leader_heartbeat_response(from, round);
            return Ok(());
        }
        self.step(Message { from, to, term, body: MessageBody::HeartbeatResponse { round } })
    }

    /// A follower's handling of its leader's heartbeat of the current term.
    pub(super) fn follower_heartbeat(&mut self, from: ReplicaId, commit: u64, round: u64, quiesce: bool) {
        self.election_elapsed = 0;
        self.leader = from;
        self.leader_heard(commit);
        if quiesce && self.may_follow_quiesce(commit) {
            // The leader quiesced with `commit` as the final index, acknowledged by every
            // member already: quiesce too, and acknowledge (again, for a re-sent heartbeat:
            // the first answer may have been lost). The leader takes the answer with its
            // round without waking, and re-sends to members that did not answer.
            if !self.quiesced {
                self.quiesced = true;
                self.idle_credit = 0;
                self.count(|s| &mut s.quiesces);
                self.shed_idle_memory();
            }
            self.send(from, MessageBody::HeartbeatResponse { round });
        } else if quiesce {
            // Unable to quiesce: the wake-up ping (round 0) wakes the leader (an answer
            // with its round would be taken for an acknowledgement).
            self.log.commit_to(commit);
            self.send(from, MessageBody::HeartbeatResponse { round: 0 });
        } else {
            // Not quiescing (or unable to): the answer wakes a quiesced leader.
            self.handle_heartbeat(from, commit, round);
        }
    }

    /// A leader's handling of a member's heartbeat answer of the current term: the member
    /// is active (CheckQuorum), its round may confirm reads or the lease, and a member
    /// that lags gets an append.
    pub(super) fn leader_heartbeat_response(&mut self, from: ReplicaId, round: u64) {
        let last = self.log.last_index();
        let (max_msgs, max_bytes) = (self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes);
        if round > self.round {
            // An answer to a round this leader never sent (a buggy or hostile peer): it
            // would confirm reads it never saw and make every later answer look old.
            return;
        }
        let Some(p) = self.progress_mut(from) else { return };
        p.recent_active = true;
        // Only an answer to a round not answered before says anything new about the
        // follower's appends: a repeated one (a duplicate, or a peer repeating it a million
        // times in one coalesced item) must not make this leader free a window slot or
        // build an append for each.
        let fresh = round > p.acked_round;
        p.acked_round = p.acked_round.max(round);
        if fresh {
            p.probe_sent = false;
            // The follower is alive: if a full window holds appends that were lost, free
            // one so the next append resynchronizes (etcd's FreeFirstOne).
            if p.state == ProgressState::Replicate && p.inflights.full(max_msgs, max_bytes) {
                p.inflights.free_first_one();
            }
            let lagging = p.matched < last;
            if lagging {
                self.maybe_send_append(from, true);
            }
        }
        self.note_full_round_answer(from, round);
        self.process_reads();
    }

    /// Records `from`'s answer to the last round sent to every member: the first voters
    /// that make up a quorum with this leader become the ones read rounds ask
    /// (`Config::read_rounds_to_quorum`).
    fn note_full_round_answer(&mut self, from: ReplicaId, round: u64) {
        let Some(need) = self.read_quorum_others() else { return };
        if !self.conf.is_voter(from) {
            return;
        }
        let Some(r) = self.reads.as_mut() else { return };
        if round == 0
            || round != r.full_round
            || r.answered_full.len() >= need
            || r.answered_full.contains(&from)
        {
            return;
        }
        r.answered_full.push(from);
        if r.answered_full.len() == need {
            r.fast.clone_from(&r.answered_full);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::event_tests::drive;
    use super::*;
    use crate::raft::config::Config;
    use crate::raft::storage::MemStorage;

    /// Replica 1 of {1, 2, 3}, fresh (deterministic: the same every call).
    fn fresh(cfg: Config) -> Raft<MemStorage> {
        let conf = ConfState::with_voters((1..=3).map(|i| Replica::new(i, i)));
        Raft::new(cfg.validate().unwrap(), MemStorage::new_with_conf(conf)).unwrap()
    }

    /// Replica 1 elected leader of term 1; replica 2 acknowledged the no-op, replica 3
    /// acknowledged nothing (it lags).
    fn leader() -> Raft<MemStorage> {
        leader_with(Config::new(1))
    }

    /// [`leader`] with its configuration given.
    fn leader_with(cfg: Config) -> Raft<MemStorage> {
        let mut r = fresh(cfg);
        for _ in 0..100 {
            r.tick();
            if r.role() == Role::PreCandidate {
                break;
            }
        }
        drive(&mut r);
        let vote = |r: &Raft<MemStorage>, pre_vote: bool| Message {
            from: 2,
            to: 1,
            term: if pre_vote { r.term() + 1 } else { r.term() },
            body: MessageBody::RequestVoteResponse { pre_vote, reject: false, commit: 0, commit_term: 0 },
        };
        r.step(vote(&r, true)).unwrap();
        drive(&mut r);
        r.step(vote(&r, false)).unwrap();
        drive(&mut r);
        assert_eq!(r.role(), Role::Leader);
        let index = r.last_index();
        let ack = MessageBody::AppendResponse { index, reject: false, reject_hint: 0, hint_term: 0 };
        r.step(Message { from: 2, to: 1, term: r.term(), body: ack }).unwrap();
        drive(&mut r);
        r
    }

    /// The heartbeat rounds of a `Ready`: (round, members it went to, sorted).
    fn rounds(rd: &Ready) -> Vec<(u64, Vec<ReplicaId>)> {
        let mut out: Vec<(u64, Vec<ReplicaId>)> = Vec::new();
        for m in &rd.messages {
            if let MessageBody::Heartbeat { round, .. } = m.body {
                match out.iter_mut().find(|(r, _)| *r == round) {
                    Some((_, to)) => to.push(m.to),
                    None => out.push((round, vec![m.to])),
                }
            }
        }
        for (_, to) in &mut out {
            to.sort_unstable();
        }
        out
    }

    /// Reads ask a quorum, not every member (thesis §6.4 asks a quorum's answer): after a
    /// round to every member whose first answer came from replica 3, a round sent only for
    /// reads goes to replica 3 alone, and its answer releases the read. When replica 3
    /// stops answering, the read waits for the next round of the heartbeat interval, which
    /// goes to every member; replica 2's answer to it releases the read, and replica 2 is
    /// the one asked from then on. With `read_rounds_to_quorum` off, every round goes to
    /// both.
    #[test]
    fn read_rounds_go_to_the_first_quorum_of_the_last_round_to_all() {
        for on in [true, false] {
            let mut cfg = Config::new(1);
            cfg.read_rounds_to_quorum = on;
            let mut r = leader_with(cfg);
            let term = r.term();
            let answer = |r: &mut Raft<MemStorage>, from: ReplicaId, round: u64| {
                r.step_heartbeat_response(from, 1, term, round).unwrap();
                r.ready()
            };
            r.read_index(11).unwrap();
            let rd = r.ready();
            let [(r1, to)] = &rounds(&rd)[..] else { panic!("{on}: one round: {:?}", rd.messages) };
            assert_eq!(to, &[2, 3], "{on}: the first round goes to every member");
            let rd = answer(&mut r, 3, *r1);
            assert_eq!(rd.read_states.iter().map(|s| s.ctx).collect::<Vec<_>>(), [11], "{on}");
            answer(&mut r, 2, *r1);
            r.read_index(12).unwrap();
            let rd = r.ready();
            let [(r2, to)] = &rounds(&rd)[..] else { panic!("{on}: one round: {:?}", rd.messages) };
            let want: &[ReplicaId] = if on { &[3] } else { &[2, 3] };
            assert_eq!(to, want, "{on}: a read round asks the quorum that answered first");
            if !on {
                let rd = answer(&mut r, 2, *r2);
                assert_eq!(rd.read_states.iter().map(|s| s.ctx).collect::<Vec<_>>(), [12]);
                continue;
            }
            assert_eq!(r.stats().quorum_read_rounds, 1);
            // Replica 3 does not answer: the read waits for the heartbeat interval's round.
            let mut full = None;
            for _ in 0..r.cfg.heartbeat_interval_ticks {
                r.tick();
                let rd = r.ready();
                assert!(rd.read_states.is_empty(), "released without a quorum's answer");
                if let [(round, to)] = &rounds(&rd)[..] {
                    assert_eq!(to, &[2, 3], "the interval's round goes to every member");
                    full = Some(*round);
                }
            }
            let r3 = full.expect("the heartbeat interval sent a round");
            assert!(r3 > *r2);
            let rd = answer(&mut r, 2, r3);
            assert_eq!(rd.read_states.iter().map(|s| s.ctx).collect::<Vec<_>>(), [12]);
            r.read_index(13).unwrap();
            let rd = r.ready();
            assert_eq!(rounds(&rd), [(r3 + 1, vec![2])], "the first to answer is asked next");
            let rd = answer(&mut r, 2, r3 + 1);
            assert_eq!(rd.read_states.iter().map(|s| s.ctx).collect::<Vec<_>>(), [13]);
        }
    }

    /// A lagging follower's answer to a heartbeat round gets it an append (its probe is
    /// answered); the same answer repeated (a duplicate, or a peer repeating it in one
    /// coalesced item) gets nothing more, and the answer to the next round gets the next.
    #[test]
    fn only_an_answer_to_a_new_round_sends_a_lagging_follower_an_append() {
        let mut r = leader();
        let term = r.term();
        let appends_to_3 = |rd: &Ready| {
            rd.messages.iter().filter(|m| m.to == 3 && matches!(m.body, MessageBody::Append { .. })).count()
        };
        let round = |r: &mut Raft<MemStorage>| {
            for _ in 0..=r.cfg.heartbeat_interval_ticks {
                r.tick();
                if let Some((round, _)) = rounds(&r.ready()).first() {
                    return *round;
                }
            }
            panic!("no heartbeat round");
        };
        let r1 = round(&mut r);
        r.step_heartbeat_response(3, 1, term, r1).unwrap();
        assert_eq!(appends_to_3(&r.ready()), 1, "the answer to a new round probes the lagging follower");
        for _ in 0..1000 {
            r.step_heartbeat_response(3, 1, term, r1).unwrap();
        }
        assert_eq!(appends_to_3(&r.ready()), 0, "repeated answers to the same round send nothing");
        let r2 = round(&mut r);
        r.step_heartbeat_response(3, 1, term, r2).unwrap();
        assert_eq!(appends_to_3(&r.ready()), 1, "the next round's answer probes again");
    }

    /// Replica 1 following leader 2 in term 3, with entries 1..=2 of term 3 durable.
    fn follower() -> Raft<MemStorage> {
        follower_with(Config::new(1))
    }

    /// [`follower`] with its configuration given.
    fn follower_with(cfg: Config) -> Raft<MemStorage> {
        let mut r = fresh(cfg);
        let entries = (1..=2).map(|index| Entry { term: 3, index, payload: EntryPayload::Noop }).collect();
        let append = MessageBody::Append { prev_index: 0, prev_term: 0, entries, commit: 1 };
        r.step(Message { from: 2, to: 1, term: 3, body: append }).unwrap();
        drive(&mut r);
        assert_eq!((r.role(), r.term(), r.leader()), (Role::Follower, 3, 2));
        r
    }

    /// Everything a step may change, and everything it asks of the runtime.
    fn outcome(r: &mut Raft<MemStorage>, res: Result<(), StepError>) -> String {
        let state = format!(
            "{res:?} role={:?} term={} vote={} leader={} commit={} progress={:?} elapsed={} \
             quiesced={} quiesce_round={} lease={} contact={} leader_commit={} stats={:?}",
            r.role,
            r.term,
            r.vote,
            r.leader,
            r.log.committed,
            r.progress,
            r.election_elapsed,
            r.quiesced,
            r.quiesce_round,
            r.lease_until,
            r.contact_age,
            r.leader_commit,
            r.stats,
        );
        format!("{state} ready={:?}", r.ready())
    }

    /// Steps the heartbeat answer both ways into twin replicas; returns the common outcome.
    fn same_answer(
        setup: &dyn Fn() -> Raft<MemStorage>,
        from: u64,
        to: u64,
        term: u64,
        round: u64,
    ) -> String {
        let (mut a, mut b) = (setup(), setup());
        let res = a.step_heartbeat_response(from, to, term, round);
        let narrow = outcome(&mut a, res);
        let res = b.step(Message { from, to, term, body: MessageBody::HeartbeatResponse { round } });
        let full = outcome(&mut b, res);
        assert_eq!(narrow, full, "answer from {from} to {to} in term {term}, round {round}");
        narrow
    }

    /// Steps the heartbeat both ways into twin replicas; returns the common outcome.
    fn same_heartbeat(
        setup: &dyn Fn() -> Raft<MemStorage>,
        (from, to, term): (u64, u64, u64),
        commit: u64,
        round: u64,
        quiesce: bool,
    ) -> String {
        let (mut a, mut b) = (setup(), setup());
        let res = a.step_heartbeat(from, to, term, commit, round, quiesce);
        let narrow = outcome(&mut a, res);
        let body = MessageBody::Heartbeat { commit, round, quiesce };
        let res = b.step(Message { from, to, term, body });
        let full = outcome(&mut b, res);
        assert_eq!(
            narrow, full,
            "heartbeat {from}->{to} term {term} commit {commit} round {round} {quiesce}"
        );
        narrow
    }

    /// A leader's answers: the common case (a member up to date, one that lags and gets
    /// an append), and every case the narrow path hands to `step`: stale and newer
    /// terms, another recipient, an out-of-range term, an unknown member, a quiesced
    /// leader's acknowledgement and wake-up ping, a follower.
    #[test]
    fn heartbeat_answers_step_as_the_full_message_does() {
        let t = leader().term();
        // A leader that sent round 1 (an answer to a round never sent is ignored).
        let sent = || {
            let mut r = leader();
            r.round = r.round.max(1);
            r
        };
        let up_to_date = same_answer(&sent, 2, 1, t, 1);
        assert!(up_to_date.contains("ready=Ready {") && up_to_date.contains("messages: []"), "{up_to_date}");
        let lagging = same_answer(&sent, 3, 1, t, 1);
        assert!(lagging.contains("Append {"), "a lagging member gets an append: {lagging}");
        let unsent = same_answer(&leader, 3, 1, t, u64::MAX / 2);
        assert!(!unsent.contains("Append {"), "an answer to a round never sent is ignored: {unsent}");
        let stale = same_answer(&leader, 2, 1, t - 1, 1);
        assert!(stale.contains("messages: []"), "a stale answer changes nothing: {stale}");
        let newer = same_answer(&leader, 2, 1, t + 1, 1);
        assert!(newer.contains("role=Follower"), "a newer term deposes the leader: {newer}");
        assert!(same_answer(&leader, 2, 4, t, 1).starts_with("Err(WrongRecipient"));
        assert!(same_answer(&leader, 2, 1, MAX_TERM, 1).starts_with("Err(Malformed"));
        same_answer(&leader, 9, 1, t, 1);
        same_answer(&follower, 2, 1, 3, 1);
        let quiesced = || {
            let mut r = leader();
            r.quiesced = true;
            r.round = 5;
            r
        };
        let ack = same_answer(&quiesced, 2, 1, t, 5);
        assert!(ack.contains("quiesced=true"), "the quiesce acknowledgement is taken asleep: {ack}");
        let ping = same_answer(&quiesced, 2, 1, t, 0);
        assert!(ping.contains("quiesced=false"), "the wake-up ping wakes the leader: {ping}");
    }

    /// A follower's heartbeats: the common case (committing, answering with the round),
    /// a quiesce heartbeat, and every case the narrow path hands to `step`: stale and
    /// newer terms, a leader or candidate receiving one, another recipient, out-of-range
    /// values, a quiesced follower.
    #[test]
    fn heartbeats_step_as_the_full_message_does() {
        let common = same_heartbeat(&follower, (2, 1, 3), 2, 7, false);
        assert!(common.contains("commit=2") && common.contains("HeartbeatResponse { round: 7 }"), "{common}");
        same_heartbeat(&follower, (2, 1, 3), 2, 8, true);
        same_heartbeat(&follower, (2, 1, 3), 1, 8, true);
        let stale = same_heartbeat(&follower, (2, 1, 2), 2, 7, false);
        assert!(stale.contains("reject: true"), "a stale leader hears of the new term: {stale}");
        let newer = same_heartbeat(&follower, (3, 1, 4), 2, 7, false);
        assert!(newer.contains("term=4 ") && newer.contains("leader=3 "), "{newer}");
        assert!(same_heartbeat(&follower, (2, 5, 3), 2, 7, false).starts_with("Err(WrongRecipient"));
        assert!(same_heartbeat(&follower, (2, 1, 3), MAX_INDEX, 7, false).starts_with("Err(Malformed"));
        assert!(same_heartbeat(&follower, (2, 1, MAX_TERM), 2, 7, false).starts_with("Err(Malformed"));
        let t = leader().term();
        same_heartbeat(&leader, (2, 1, t), 0, 7, false);
        same_heartbeat(&leader, (2, 1, t + 1), 0, 7, false);
        let candidate = || {
            let mut r = fresh(Config::new(1));
            for _ in 0..100 {
                r.tick();
                if r.role() == Role::PreCandidate {
                    break;
                }
            }
            r
        };
        let c = candidate().term();
        same_heartbeat(&candidate, (2, 1, c), 0, 7, false);
        let quiesced = || {
            let mut r = follower();
            r.quiesced = true;
            r
        };
        let repeat = same_heartbeat(&quiesced, (2, 1, 3), 2, 7, true);
        assert!(repeat.contains("quiesced=true"), "a repeated quiesce heartbeat does not wake: {repeat}");
        let plain = same_heartbeat(&quiesced, (2, 1, 3), 2, 7, false);
        assert!(plain.contains("quiesced=false"), "a plain heartbeat wakes the follower: {plain}");
    }

    /// [`follower`] with entry 3 received and handed out to be written, not yet durable;
    /// with the `Ready` that handed it out.
    fn follower_writing() -> (Raft<MemStorage>, Ready) {
        let mut r = follower();
        let entries = vec![Entry { term: 3, index: 3, payload: EntryPayload::Noop }];
        let append = MessageBody::Append { prev_index: 2, prev_term: 3, entries, commit: 2 };
        r.step(Message { from: 2, to: 1, term: 3, body: append }).unwrap();
        let rd = r.ready();
        assert_eq!(rd.entries.len(), 1, "entry 3 is to be written");
        (r, rd)
    }

    /// A follower answers its leader's heartbeat at once, even with a write in flight: the
    /// answer promises nothing on disk, and held behind the write it would wait for an
    /// fsync, which on a slow disk outlasts the leader's CheckQuorum window (the leader
    /// then steps down with every follower alive). The append's answer still waits for
    /// the write (etcd/raft holds back the same two kinds: append and vote answers).
    #[test]
    fn a_follower_answers_a_heartbeat_before_its_write_is_durable() {
        let (mut r, rd) = follower_writing();
        assert!(rd.messages.is_empty(), "the append's answer waits for the write: {:?}", rd.messages);
        assert!(
            matches!(
                rd.persisted_messages[..],
                [Message { body: MessageBody::AppendResponse { index: 3, .. }, .. }]
            ),
            "{:?}",
            rd.persisted_messages
        );
        // The write is in flight when the heartbeat comes: its answer goes out now.
        r.step_heartbeat(2, 1, 3, 2, 9, false).unwrap();
        let rd = r.ready();
        assert!(
            matches!(
                rd.messages[..],
                [Message { to: 2, term: 3, body: MessageBody::HeartbeatResponse { round: 9 }, .. }]
            ),
            "the heartbeat is answered before the write is durable: {:?}",
            rd.messages
        );
        assert!(rd.persisted_messages.is_empty(), "{:?}", rd.persisted_messages);
    }

    /// A follower forwards a read to its leader at once, with a write in flight: the
    /// forward promises nothing on disk, and held behind the write every follower read
    /// would wait for an fsync.
    #[test]
    fn a_follower_forwards_a_read_before_its_write_is_durable() {
        let (mut r, _) = follower_writing();
        r.read_index(77).unwrap();
        let rd = r.ready();
        assert!(
            matches!(
                rd.messages[..],
                [Message { to: 2, term: 3, body: MessageBody::ReadIndex { ctx: 77 }, .. }]
            ),
            "the read is forwarded before the write is durable: {:?}",
            rd.messages
        );
        assert!(rd.persisted_messages.is_empty(), "{:?}", rd.persisted_messages);
    }

    /// The lease promise across a crash (thesis §6.4.1, leases resting on §4.2.3's rule
    /// that a replica which heard from a leader ignores campaigns for the minimum election
    /// timeout). A follower answers a heartbeat of a term it has not yet made durable
    /// (`a_follower_answers_a_heartbeat_before_its_write_is_durable`), and the leader
    /// counts that answer towards its lease. If the follower then crashes and loses the
    /// term, it restarts knowing no leader; it must still ignore campaigns for the minimum
    /// election timeout (its startup lease), or a new leader could be elected, and write,
    /// while the old one still serves reads under its lease. With ReadIndex reads there is
    /// no lease to keep, and the restarted follower votes at once.
    #[test]
    fn a_follower_that_lost_an_answered_term_in_a_crash_keeps_the_lease_promise_after_restart() {
        for lease in [true, false] {
            let cfg = || {
                let mut c = Config::new(1);
                if lease {
                    c.read_mode = ReadMode::LeaseBased;
                }
                c
            };
            let mut r = follower_with(cfg());
            // Replica 3, elected in term 5 without replica 1, sends its first heartbeat.
            let hb = MessageBody::Heartbeat { commit: 0, round: 1, quiesce: false };
            r.step(Message { from: 3, to: 1, term: 5, body: hb }).unwrap();
            let rd = r.ready();
            assert!(
                matches!(
                    rd.messages[..],
                    [Message { to: 3, term: 5, body: MessageBody::HeartbeatResponse { round: 1 }, .. }]
                ),
                "answered at once: {:?}",
                rd.messages
            );
            assert_eq!(rd.hard_state.map(|h| h.term), Some(5), "term 5 is still to be written");
            // The crash loses that write: the replica restarts from what is durable.
            let mut r = Raft::new(cfg().validate().unwrap(), r.storage().clone()).unwrap();
            assert_eq!((r.term(), r.leader()), (3, NO_REPLICA), "lease {lease}");
            let campaign = |r: &mut Raft<MemStorage>| {
                let body = MessageBody::RequestVote {
                    pre_vote: false,
                    last_index: 2,
                    last_term: 3,
                    transfer: false,
                    commit: 0,
                    commit_term: 0,
                };
                r.step(Message { from: 2, to: 1, term: 6, body }).unwrap();
                let rd = r.ready();
                rd.messages
                    .iter()
                    .chain(rd.persisted_messages.iter())
                    .any(|m| matches!(m.body, MessageBody::RequestVoteResponse { reject: false, .. }))
            };
            if lease {
                for t in 0..r.cfg.election_timeout_min_ticks {
                    assert!(!campaign(&mut r), "vote granted {t} ticks after the restart, inside the lease");
                    assert_eq!(r.term(), 3, "the campaign was ignored, term and all");
                    r.tick();
                }
            }
            assert!(campaign(&mut r), "lease {lease}: the vote is granted once no lease is left to keep");
            assert_eq!(r.term(), 6);
        }
    }
}
