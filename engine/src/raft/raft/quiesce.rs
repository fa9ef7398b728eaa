//! Quiescence of one replica: when an idle group stops ticking and heartbeating, how a
//! leader makes sure every follower saw the final commit (quiesce acks and re-sends), the
//! idle ticks credited lazily, and every way a quiesced replica wakes.
//!
//! Owns the `Raft` methods of that concern (an `impl` block over the fields of `Raft`,
//! defined in the parent). Never sends anything but heartbeats and their answers, and
//! never changes the log.

use super::*;

impl<S: LogStore> Raft<S> {
    /// Whether this replica is quiesced: an idle group whose leader saw every member
    /// acknowledge the final commit index stops heartbeating and timing out. The runtime
    /// need not tick a quiesced replica; it credits the wall ticks that passed with
    /// [`Raft::advance_idle`] before its next input (lazily). Any proposal, read, transfer,
    /// membership change or message (other than the leader's repeated quiesce) wakes it.
    pub fn is_quiesced(&self) -> bool {
        self.quiesced
    }

    /// Credits `ticks` wall ticks that passed while quiesced without [`Raft::tick`] being
    /// called. A follower keeps them as silence from its leader, counted on its election
    /// timer only if a liveness wake ([`Raft::wake`]) follows: the leader's node went down
    /// or restarted, so the silence is real and it must grant votes. Any other wake (a
    /// message, a local input) drops them: a quiesced leader is silent by design, so a
    /// follower that merely slept still holds its CheckQuorum lease and ignores a stray
    /// PreVote (thesis §4.2.3, §9.6). A leader whose quiesce heartbeat some member has not
    /// acknowledged re-sends it on every one of these ticks (see
    /// [`Raft::awaiting_quiesce_acks`]). Ignored unless quiesced.
    pub fn advance_idle(&mut self, ticks: u64) {
        if self.quiesced {
            self.age_contact(ticks);
            self.idle_ticks(ticks);
        }
    }

    pub(super) fn idle_ticks(&mut self, ticks: u64) {
        if self.role == Role::Leader {
            self.resend_quiesce(ticks);
        } else {
            self.idle_credit = self.idle_credit.saturating_add(ticks);
        }
    }

    /// Counts `ticks` of silence from the leader on a follower's election timer (up to the
    /// minimum election timeout, the most that matters: past it, it grants votes).
    pub(super) fn credit_silence(&mut self, ticks: u64) {
        if self.role != Role::Leader {
            let cap = self.cfg.election_timeout_min_ticks;
            let t = u32::try_from(ticks).unwrap_or(u32::MAX);
            self.election_elapsed =
                self.election_elapsed.saturating_add(t).min(cap.max(self.election_elapsed));
            if self.election_elapsed >= cap {
                self.startup_lease = false;
            }
        }
    }

    /// Whether this quiesced leader still waits for a member to acknowledge its quiesce
    /// heartbeat: it re-sends the heartbeat to those every tick from one heartbeat interval
    /// after quiescing (an answer takes less; a member that missed it times out a minimum
    /// election timeout after the last heartbeat it got, so every try counts), for up to a
    /// maximum election timeout (a member that heard none of them campaigns, which wakes
    /// the group). The runtime keeps ticking (crediting) such a group meanwhile.
    pub fn awaiting_quiesce_acks(&self) -> bool {
        self.quiesced
            && self.role == Role::Leader
            && self.quiesce_age < self.cfg.election_timeout_max_ticks
            && self.progress.iter().any(|(id, p)| *id != self.id && p.acked_round < self.round)
    }

    pub(super) fn resend_quiesce(&mut self, ticks: u64) {
        if !self.awaiting_quiesce_acks() {
            return;
        }
        let t = u32::try_from(ticks).unwrap_or(u32::MAX);
        self.quiesce_age = self.quiesce_age.saturating_add(t);
        // The first heartbeat interval leaves time for the acknowledgements to come back.
        if self.quiesce_age < self.cfg.heartbeat_interval_ticks
            || self.quiesce_age >= self.cfg.election_timeout_max_ticks
        {
            return;
        }
        let (commit, round, me) = (self.log.committed, self.round, self.id);
        let unacked: Vec<ReplicaId> = self
            .progress
            .iter()
            .filter(|(id, p)| *id != me && p.acked_round < round)
            .map(|(id, _)| *id)
            .collect();
        for id in unacked {
            self.count(|s| &mut s.quiesce_resends);
            self.send(id, MessageBody::Heartbeat { commit, round, quiesce: true });
        }
    }

    /// A member's acknowledgement of the quiesce heartbeat (its round, this term): taken
    /// by a quiesced leader without waking. Any other answer (the wake-up ping has round 0)
    /// wakes it.
    pub(super) fn take_quiesce_ack(&mut self, m: &Message) -> bool {
        let MessageBody::HeartbeatResponse { round } = m.body else { return false };
        if self.role != Role::Leader || m.term != self.term || round == 0 || round != self.round {
            return false;
        }
        match self.progress_mut(m.from) {
            Some(p) => {
                p.acked_round = p.acked_round.max(round);
                true
            }
            None => false,
        }
    }

    /// Wakes a quiesced replica (the runtime: node liveness says its leader's node went
    /// down or restarted, or another local reason). A follower asks its leader to wake too
    /// and times out after a full randomized election timeout from now unless it hears
    /// from it; a leader resumes heartbeats at once (see `wake_inner`). Ignored unless
    /// quiesced. Credit the idle ticks with [`Raft::advance_idle`] first.
    pub fn wake(&mut self) {
        if self.quiesced {
            // A liveness signal: the silence was real, count it (see `advance_idle`).
            let silence = std::mem::take(&mut self.idle_credit);
            self.credit_silence(silence);
            self.wake_inner(true);
        }
    }

    /// Wakes from quiescence. Leader: CheckQuorum activity starts afresh (every member
    /// counts as heard from, and a full election timeout runs before the next check), and
    /// a heartbeat goes at once. A lease it holds is kept to its end: it is measured on the
    /// clock (`set_now`), which ran on while quiesced, and a follower that confirmed it
    /// grants no vote until a minimum election timeout of wall ticks has passed since it
    /// heard that round or a later heartbeat, quiesced or not: ticked if awake, and if
    /// quiesced credited with its idle ticks only at a liveness wake (thesis §6.4.1).
    /// Follower: its election timer keeps the idle ticks credited (so it grants votes if
    /// the leader was silent long enough) but it campaigns only after a full randomized
    /// timeout from now; with `ping` it sends its leader a heartbeat answer (round 0) so a
    /// quiesced leader wakes and heartbeats before that.
    pub(super) fn wake_inner(&mut self, ping: bool) {
        self.quiesced = false;
        self.quiesce_round = 0;
        self.idle_credit = 0;
        self.count(|s| &mut s.wakes);
        if self.role == Role::Leader {
            self.election_elapsed = 0;
            self.heartbeat_elapsed = 0;
            for (_, p) in &mut self.progress {
                p.recent_active = true;
            }
            self.lease_from_sleep = self.lease_until > 0;
            self.need_heartbeat = true;
            self.full_heartbeat = true;
            return;
        }
        let extra = self.rng.range(
            u64::from(self.cfg.election_timeout_min_ticks),
            u64::from(self.cfg.election_timeout_max_ticks),
        ) as u32;
        self.randomized_timeout = self.election_elapsed.saturating_add(extra);
        if ping && self.leader != NO_REPLICA && self.leader != self.id {
            let leader = self.leader;
            self.send(leader, MessageBody::HeartbeatResponse { round: 0 });
        }
    }

    pub(super) fn roll_timeout(&mut self) {
        self.randomized_timeout = self.rng.range(
            u64::from(self.cfg.election_timeout_min_ticks),
            u64::from(self.cfg.election_timeout_max_ticks),
        ) as u32;
    }

    /// A leader may quiesce when everything is committed, applied and durable here, every
    /// member (voters and learners) matches the last index and echoed a heartbeat round
    /// that told it that index is committed, and nothing is pending: no membership change
    /// (nor a joint configuration to leave), transfer, read, or snapshot.
    pub(super) fn can_quiesce(&self) -> bool {
        let last = self.log.last_index();
        if !self.cfg.quiesce
            || self.role != Role::Leader
            || !self.term_durable
            || self.quiesce_round == 0
            || self.quiesce_last != last
            || self.log.committed != last
            || self.log.applied != last
            || self.log.stable_index() != last
        {
            return false;
        }
        if self.transferee != NO_REPLICA
            || self.conf.is_joint()
            || self.pending_conf_index > self.log.applied
            || !self.conf.is_voter(self.id)
            || !self.reads.as_ref().map_or(true, |r| r.is_idle())
            || self.need_bcast
            || self.snapshot_ready.is_some()
        {
            return false;
        }
        let me = self.id;
        self.progress.iter().all(|(id, p)| {
            *id == me
                || (p.matched == last
                    && p.acked_round >= self.quiesce_round
                    && p.state != ProgressState::Snapshot
                    && p.pending_snapshot == 0)
        })
    }

    /// Returns the spare capacity of buffers an idle replica does not use, so a quiesced
    /// group stays small (the runtime holds many).
    pub(super) fn shed_idle_memory(&mut self) {
        self.votes = ThinVec::new();
        if self.reads.as_ref().is_some_and(|r| r.is_idle()) {
            // Only the history of rounds sent before quiescing left: a lease extended by
            // them is in `lease_until` already.
            self.reads = None;
        }
        self.pending_conf_entries.shrink_to_fit();
        self.conf_history.shrink_to_fit();
        self.msgs_after_persist.shrink_to_fit();
        for (_, p) in &mut self.progress {
            p.inflights.shrink();
        }
        self.log.shrink();
    }

    /// Sends every member the quiesce heartbeat (commit = the last index) and stops.
    pub(super) fn quiesce_leader(&mut self) {
        self.quiesced = true;
        self.quiesce_age = 0;
        self.count(|s| &mut s.quiesces);
        self.shed_idle_memory();
        self.round += 1;
        let (commit, round) = (self.log.committed, self.round);
        let ids: Vec<ReplicaId> =
            self.progress.iter().map(|(id, _)| *id).filter(|&id| id != self.id).collect();
        for id in ids {
            self.send(id, MessageBody::Heartbeat { commit, round, quiesce: true });
        }
    }

    /// A public input arrived while quiesced: wake (a follower also wakes its leader).
    pub(super) fn wake_for_input(&mut self) {
        if self.quiesced {
            self.wake_inner(true);
        }
    }

    /// Whether a follower told by its leader that the group quiesced at `commit` may stop
    /// too: it knows `commit` is committed and waits for nothing (a snapshot stream, a
    /// forwarded read).
    pub(super) fn may_follow_quiesce(&mut self, commit: u64) -> bool {
        self.log.commit_to(commit);
        self.cfg.quiesce
            && self.role == Role::Follower
            && self.log.committed == commit
            && self.snapshot_recv.is_none()
            && self.reads.as_ref().map_or(true, |r| r.forwarded.is_empty())
    }
}
