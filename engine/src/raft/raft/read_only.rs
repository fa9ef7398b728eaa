//! Linearizable reads of one replica (Raft thesis §6.4): ReadIndex requests and their
//! heartbeat rounds, reads forwarded by followers, and lease reads (`ReadMode::LeaseBased`,
//! measured on the clock of `Raft::set_now`), up to the `ReadState`s of a `Ready`.
//!
//! Owns the `Raft` methods that fill and release the read queues (`read_queue::Reads`).
//! Never appends to the log and never changes the term.

use super::*;
use crate::raft::read_queue::{PendingRead, MAX_FORWARDED_READS};

impl<S: LogStore> Raft<S> {
    /// Whether this leader holds its lease now (LeaseBased reads, no transfer under way,
    /// the clock set and before the lease's end).
    pub(super) fn lease_valid(&self) -> bool {
        self.cfg.read_mode == ReadMode::LeaseBased
            && self.transferee == NO_REPLICA
            && (self.now.is_some_and(|now| now < self.lease_until)
                || (self.lease_from_sleep && self.mutant(Mutant::LeaseKeptPastItsEndAfterWake)))
    }

    /// Requests a linearizable read (thesis §6.4). `ctx` must be unique across the
    /// replica's restarts too (an answer meant for an earlier life must not match a new
    /// read); it comes back in a [`ReadState`] once
    /// the leader has confirmed its leadership; serve the read once applied reaches its
    /// index. On a follower or learner the request is forwarded to the known leader, whose
    /// answer becomes the `ReadState` here (or never comes, if a message is lost or the
    /// leadership changes: the runtime times the read out).
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ReadIndexError> {
        self.wake_for_input();
        if self.role != Role::Leader {
            if self.role == Role::Follower && self.leader != NO_REPLICA {
                self.count(|s| &mut s.reads_forwarded);
                let r = self.reads_mut();
                if r.forwarded.len() >= MAX_FORWARDED_READS {
                    r.forwarded.pop_front();
                }
                r.forwarded.push_back(ctx);
                let leader = self.leader;
                self.send(leader, MessageBody::ReadIndex { ctx });
                return Ok(());
            }
            return Err(ReadIndexError::NotLeader { leader_hint: self.leader_hint() });
        }
        self.accept_read(self.id, ctx)
    }

    /// The caller gave up waiting for read `ctx` (it timed out): a follower forgets that it
    /// forwarded it, so it no longer waits for the leader's answer (which may never come:
    /// a lost message, or a leader holding `Config::max_pending_reads`) and may quiesce.
    /// A leader's own reads stay queued until confirmed (they count against
    /// `max_pending_reads` until then).
    pub fn abandon_read(&mut self, ctx: u64) {
        if let Some(r) = self.reads.as_mut() {
            if let Some(i) = r.forwarded.iter().position(|&c| c == ctx) {
                r.forwarded.remove(i);
            }
        }
    }

    /// Reads this leader holds waiting for confirmation (`Config::max_pending_reads`).
    pub fn reads_held(&self) -> usize {
        self.reads.as_ref().map_or(0, |r| r.held())
    }

    /// Takes a read of `from` (this leader, or a member that forwarded it): answered now
    /// under the lease, or queued; refused past `Config::max_pending_reads` if it would
    /// be queued (a forwarded one is then dropped: its caller times out).
    pub(super) fn accept_read(&mut self, from: ReplicaId, ctx: u64) -> Result<(), ReadIndexError> {
        let term_ok = self.committed_in_current_term() || self.mutant(Mutant::ReadIndexWithoutTermCheck);
        let held = self.reads_held();
        if held >= self.cfg.max_pending_reads {
            let at_once =
                term_ok && self.lease_valid() && (from != self.id || self.log.committed <= self.log.applied);
            if !at_once {
                self.count(|s| &mut s.reads_refused_full);
                return Err(ReadIndexError::Busy { held });
            }
        }
        if term_ok {
            self.start_read(from, ctx);
        } else {
            // The commit index of an earlier term may be stale: wait for our no-op.
            self.reads_mut().waiting_commit.push((from, ctx));
        }
        Ok(())
    }

    pub(super) fn start_read(&mut self, from: ReplicaId, ctx: u64) {
        let index = self.log.committed;
        if self.lease_valid() {
            if from == self.id && index > self.log.applied {
                // Answered once applied reaches `index`, if the lease still holds then.
                self.reads_mut().lease_waiting.push_back(PendingRead { from, ctx, index, round: 0 });
                return;
            }
            // A follower's read is answered now: the follower serves it after its own
            // apply, the lease cannot be checked there (another clock).
            self.count_lease_read();
            self.release_read(from, ctx, index);
            return;
        }
        self.read_by_round(from, ctx, index);
    }

    /// Queues a read for the next heartbeat round (sent after it arrived) to confirm.
    pub(super) fn read_by_round(&mut self, from: ReplicaId, ctx: u64, index: u64) {
        let round = self.round + 1;
        self.reads_mut().pending.push_back(PendingRead { from, ctx, index, round });
        self.need_heartbeat = true;
    }

    /// Answers this leader's lease reads whose index applied has reached: served under
    /// the lease if it still holds now (thesis §6.4.1: the lease is checked when the read
    /// is answered, not when it was queued, so a leader stalled past its lease never
    /// serves one), otherwise confirmed by a heartbeat round like any ReadIndex read.
    pub(super) fn answer_lease_reads(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let applied = self.log.applied;
        while let Some(r) = self.reads.as_ref().and_then(|q| q.lease_waiting.front().copied()) {
            if r.index > applied {
                break;
            }
            if let Some(q) = self.reads.as_mut() {
                q.lease_waiting.pop_front();
            }
            if self.lease_valid() {
                self.count_lease_read();
                self.release_read(r.from, r.ctx, r.index);
            } else {
                self.count(|s| &mut s.lease_reads_expired);
                self.read_by_round(r.from, r.ctx, r.index);
            }
        }
    }

    fn count_lease_read(&mut self) {
        self.count(|s| &mut s.lease_reads);
        if self.lease_from_sleep {
            self.count(|s| &mut s.lease_reads_after_wake);
        }
    }

    pub(super) fn release_read(&mut self, from: ReplicaId, ctx: u64, index: u64) {
        self.count(|s| &mut s.reads_served);
        if from == self.id {
            self.reads_mut().states.push(ReadState { ctx, index });
        } else {
            self.send(from, MessageBody::ReadIndexResponse { ctx, index });
        }
    }

    /// The read queues, allocated on first use.
    pub(super) fn reads_mut(&mut self) -> &mut Reads {
        self.reads.get_or_insert_with(Box::default)
    }

    /// Releases reads whose heartbeat round a quorum has echoed, and extends the lease.
    pub(super) fn process_reads(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let me = self.id;
        let round = self.round;
        let confirmed = joint_value(&self.conf, |id| {
            if id == me {
                round
            } else {
                self.progress(id).map(|p| p.acked_round).unwrap_or(0)
            }
        });
        if confirmed == u64::MAX {
            return;
        }
        if self.cfg.read_mode == ReadMode::LeaseBased
            && self.transferee == NO_REPLICA
            && confirmed > self.lease_min_round
        {
            let sent = self
                .reads
                .as_ref()
                .and_then(|q| q.round_sent.iter().find(|(r, _)| *r == confirmed).map(|&(_, t)| t));
            if let Some(sent) = sent {
                let lease = self.cfg.lease_nanos();
                self.lease_until = self.lease_until.max(sent.saturating_add(lease));
                self.lease_from_sleep = false;
            }
        }
        while let Some(r) = self.reads.as_ref().and_then(|q| q.pending.front().copied()) {
            if r.round > confirmed {
                break;
            }
            if let Some(q) = self.reads.as_mut() {
                q.pending.pop_front();
            }
            self.release_read(r.from, r.ctx, r.index);
        }
    }
}
