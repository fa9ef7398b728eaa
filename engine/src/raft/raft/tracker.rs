//! Progress tracking of a leader (etcd's `tracker`): each follower's `Progress` (match,
//! next, probe/replicate/snapshot state, in-flight window), the appends and heartbeats that
//! move it, the commit rule over the joint quorum (Raft §5.3, §5.4.2) and check-quorum's
//! activity.
//!
//! Owns the `Raft` methods of that concern (an `impl` block over the fields of `Raft`,
//! defined in the parent). Never changes the configuration and never campaigns.

use super::*;

impl<S: LogStore> Raft<S> {
    pub(super) fn progress_mut(&mut self, id: ReplicaId) -> Option<&mut Progress> {
        self.progress.iter_mut().find(|(i, _)| *i == id).map(|(_, p)| p)
    }

    pub(super) fn progress(&self, id: ReplicaId) -> Option<&Progress> {
        self.progress.iter().find(|(i, _)| *i == id).map(|(_, p)| p)
    }

    /// The leader's progress of every member, fresh (Raft §5.3: nextIndex = last + 1).
    pub(super) fn rebuild_progress(&mut self) {
        let next = self.log.last_index() + 1;
        let stable = self.log.stable_index();
        let me = self.id;
        self.progress = self
            .conf
            .members()
            .iter()
            .map(|m| {
                let mut p = Progress::new(next);
                if m.id == me {
                    p.matched = stable;
                }
                (m.id, p)
            })
            .collect();
    }

    pub(super) fn quorum_active(&self) -> bool {
        vote_result(&self.conf, |id| {
            if id == self.id {
                Some(true)
            } else {
                Some(self.progress(id).map(|p| p.recent_active).unwrap_or(false))
            }
        }) == VoteResult::Won
    }

    /// The runtime could not deliver messages to `to` (a send queue was full, the
    /// connection was lost, the peer's node went down): a follower in Replicate state goes
    /// back to Probe, so replication resumes from its match at the next answer instead of
    /// waiting out a window of lost appends (etcd's ReportUnreachable).
    pub fn report_unreachable(&mut self, to: ReplicaId) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(p) = self.progress_mut(to) {
            if p.state == ProgressState::Replicate {
                p.become_probe();
            }
        }
    }

    /// The runtime finished (or failed) streaming the snapshot requested by a
    /// [`MessageBody::SendSnapshot`] to `to`.
    pub fn report_snapshot(&mut self, to: ReplicaId, success: bool) {
        if self.role != Role::Leader {
            return;
        }
        let Some(p) = self.progress_mut(to) else { return };
        if p.state != ProgressState::Snapshot {
            return;
        }
        if !success {
            p.pending_snapshot = 0;
        }
        p.become_probe();
        // Wait for a heartbeat response (or the follower's answer) before probing.
        p.probe_sent = true;
    }

    pub(super) fn handle_append_response(
        &mut self,
        from: ReplicaId,
        index: u64,
        reject: bool,
        reject_hint: u64,
        hint_term: u64,
    ) {
        let next_probe = if reject && hint_term > 0 {
            self.log.find_conflict_by_term(reject_hint, hint_term).0
        } else {
            reject_hint
        };
        let first_index = self.log.first_index();
        let last_index = self.log.last_index();
        let (max_msgs, max_bytes) = (self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes);
        let Some(p) = self.progress_mut(from) else { return };
        p.recent_active = true;
        if reject {
            if p.maybe_decr_to(index, next_probe) {
                if p.state == ProgressState::Replicate {
                    p.become_probe();
                }
                self.maybe_send_append(from, true);
            }
            return;
        }
        let was_paused = p.is_paused(max_msgs, max_bytes);
        if !p.maybe_update(index) {
            return;
        }
        match p.state {
            ProgressState::Probe => p.become_replicate(),
            ProgressState::Snapshot => {
                // The follower caught up (from the snapshot or otherwise).
                if p.matched + 1 >= first_index {
                    p.become_probe();
                    p.become_replicate();
                }
            }
            ProgressState::Replicate => p.inflights.free_to(index),
        }
        let matched = p.matched;
        if self.maybe_commit() {
            self.need_bcast = true;
        } else if was_paused {
            self.maybe_send_append(from, false);
        }
        // Fill the window with whatever is left to send.
        for _ in 0..self.cfg.max_inflight_msgs {
            if !self.maybe_send_append(from, false) {
                break;
            }
        }
        if from == self.transferee && matched == last_index {
            self.send_timeout_now(from);
            if !self.conf.is_voter(self.id) && self.cfg.step_down_on_removal {
                // A removed leader's successor is caught up (see `leave_leadership`).
                self.become_follower(self.term, NO_REPLICA);
            }
        }
    }

    /// Recomputes the commit index from the quorum's match. Only an entry of the current
    /// term commits by counting replicas (Raft §5.4.2, Figure 8).
    pub(super) fn maybe_commit(&mut self) -> bool {
        let mci = joint_value(&self.conf, |id| self.progress(id).map(|p| p.matched).unwrap_or(0));
        if mci == u64::MAX || mci <= self.log.committed {
            return false;
        }
        let term_ok = self.log.term(mci).map(|t| t == self.term).unwrap_or(false);
        if !term_ok && !self.mutant(Mutant::CommitWithoutTermCheck) {
            return false;
        }
        let was_current = self.committed_in_current_term();
        self.log.commit_to(mci);
        if !was_current && self.committed_in_current_term() {
            // Reads that arrived before our term's first commit may proceed (thesis §6.4).
            let waiting =
                self.reads.as_mut().map(|r| std::mem::take(&mut r.waiting_commit)).unwrap_or_default();
            for (from, ctx) in waiting {
                self.start_read(from, ctx);
            }
        }
        true
    }

    pub(super) fn bcast_append(&mut self) {
        let ids: Vec<ReplicaId> =
            self.progress.iter().map(|(id, _)| *id).filter(|&id| id != self.id).collect();
        for id in ids {
            self.maybe_send_append(id, true);
        }
    }

    /// Sends the follower what it lacks, or a snapshot when that is compacted away.
    /// Returns whether a message was sent.
    pub(super) fn maybe_send_append(&mut self, to: ReplicaId, send_if_empty: bool) -> bool {
        let (max_msgs, max_bytes) = (self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes);
        let Some(p) = self.progress(to) else { return false };
        if p.is_paused(max_msgs, max_bytes) {
            return false;
        }
        let next = p.next;
        let recent_active = p.recent_active;
        let last = self.log.last_index();
        let prev_index = next - 1;
        let prev_term = self.log.term(prev_index);
        let entries = if next <= last {
            self.log.entries(next, last + 1, self.cfg.max_append_bytes)
        } else {
            Ok(Vec::new())
        };
        let (prev_term, entries) = match (prev_term, entries) {
            (Ok(t), Ok(e)) => (t, e),
            (Err(StorageError::Compacted(_)), _) | (_, Err(StorageError::Compacted(_))) => {
                // The follower is behind the compaction point: it needs the snapshot.
                if !recent_active {
                    return false;
                }
                let meta = SnapshotMeta::clone(&self.log.snap);
                let Some(p) = self.progress_mut(to) else { return false };
                p.become_snapshot(meta.index);
                self.count(|s| &mut s.snapshots_sent);
                self.send(to, MessageBody::SendSnapshot { meta });
                return true;
            }
            _ => return false,
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let commit = self.log.committed;
        if entries.is_empty() {
            if let Some(p) = self.progress(to) {
                if p.state == ProgressState::Replicate && p.matched == last {
                    // It has acknowledged the whole log (so `commit` <= its match): all it
                    // lacks is the commit index.
                    // (With entries unacknowledged, the empty append stays: its answer
                    // is how a lost append is found, as its `prev_index` is the last.)
                    self.send(to, MessageBody::Commit { commit });
                    return true;
                }
            }
        }
        let bytes: u64 = entries.iter().map(|e| e.size() as u64).sum();
        let last_sent = entries.last().map(|e| e.index);
        let Some(p) = self.progress_mut(to) else { return false };
        p.sent_entries(last_sent, bytes);
        self.send(to, MessageBody::Append { prev_index, prev_term, entries, commit });
        true
    }

    /// The voters a round sent only to confirm reads goes to, when
    /// `Config::read_rounds_to_quorum` allows it: the first quorum to answer the last full
    /// round (with this leader), all still voters of a configuration that is not joint.
    /// None: send to every member.
    fn read_round_targets(&self) -> Option<Vec<ReplicaId>> {
        let need = self.read_quorum_others()?;
        let fast = &self.reads.as_ref()?.fast;
        let targets: Vec<ReplicaId> =
            fast.iter().copied().filter(|&id| id != self.id && self.conf.is_voter(id)).collect();
        (need > 0 && targets.len() >= need).then_some(targets)
    }

    /// How many voters other than this leader make up a quorum with it, when a round sent
    /// only for reads may go to a quorum: `Config::read_rounds_to_quorum` on, the
    /// configuration not joint, this leader a voter. None: every round goes to everyone.
    pub(super) fn read_quorum_others(&self) -> Option<usize> {
        (self.cfg.read_rounds_to_quorum && !self.conf.is_joint() && self.conf.is_voter(self.id))
            .then(|| self.conf.voters.len() / 2)
    }

    /// Sends a heartbeat round: to every member when `full`, else (a round only reads
    /// asked for) perhaps only to a quorum ([`Self::read_round_targets`]).
    pub(super) fn bcast_heartbeat(&mut self, full: bool) {
        let only = if full { None } else { self.read_round_targets() };
        self.round += 1;
        if let (ReadMode::LeaseBased, Some(now)) = (self.cfg.read_mode, self.now) {
            // Only leases need to know when each round went out.
            let round = self.round;
            let r = self.reads_mut();
            r.round_sent.push_back((round, now));
            if r.round_sent.len() > ROUND_HISTORY {
                r.round_sent.pop_front();
            }
        }
        let committed = self.log.committed;
        let unclamped = self.mutant(Mutant::HeartbeatCommitUnclamped);
        let targets: Vec<(ReplicaId, u64)> = self
            .progress
            .iter()
            .filter(|(id, _)| *id != self.id && only.as_ref().map_or(true, |o| o.contains(id)))
            .map(|(id, p)| (*id, if unclamped { committed } else { committed.min(p.matched) }))
            .collect();
        let round = self.round;
        let last = self.log.last_index();
        if only.is_some() {
            // A round to a quorum only tells nothing to the others: quiescence is decided
            // by the rounds sent to every member.
            self.count(|s| &mut s.quorum_read_rounds);
        } else if committed == last && targets.iter().all(|&(_, c)| c == last) {
            // This round tells every member that `last` is committed: once all echo it (or
            // a later round), the group may quiesce (`can_quiesce`).
            if self.quiesce_round == 0 || self.quiesce_last != last {
                self.quiesce_round = round;
                self.quiesce_last = last;
            }
        } else {
            self.quiesce_round = 0;
        }
        if only.is_none() {
            if let Some(r) = self.reads.as_mut() {
                r.full_round = round;
                r.answered_full.clear();
            }
        }
        for (id, commit) in targets {
            self.send(id, MessageBody::Heartbeat { commit, round, quiesce: false });
        }
    }
}
