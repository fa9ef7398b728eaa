//! What a leader knows about one follower's log (Raft §5.3 nextIndex/matchIndex) and the
//! replication state machine Probe -> Replicate, with Snapshot for followers behind the
//! compaction point.
//!
//! Owns per-follower bookkeeping; never builds messages.

use super::inflights::Inflights;

/// How the leader is replicating to a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProgressState {
    /// The follower's match is unknown: one append at a time until one is accepted.
    Probe,
    /// The follower is in step: appends are pipelined within the in-flight window.
    Replicate,
    /// The follower needs the snapshot at `pending_snapshot`; appends wait for it.
    Snapshot,
}

/// The leader's view of one follower.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Highest index known durable and matching on the follower.
    pub matched: u64,
    /// Next index to send.
    pub next: u64,
    /// Replication state.
    pub state: ProgressState,
    /// In Snapshot state: the index of the snapshot being sent.
    pub pending_snapshot: u64,
    /// In Probe state: a probe is out, wait for an answer or a heartbeat response.
    pub probe_sent: bool,
    /// Heard from within the current CheckQuorum period.
    pub recent_active: bool,
    /// Appends in flight (Replicate state).
    pub inflights: Inflights,
    /// Highest heartbeat round the follower has echoed.
    pub acked_round: u64,
}

impl Progress {
    /// A follower in Probe state about to be sent `next`.
    pub fn new(next: u64) -> Self {
        Progress {
            matched: 0,
            next: next.max(1),
            state: ProgressState::Probe,
            pending_snapshot: 0,
            probe_sent: false,
            recent_active: true,
            inflights: Inflights::default(),
            acked_round: 0,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = 0;
        self.state = state;
        self.inflights.reset();
    }

    /// Back to Probe: the next append is sent after the match.
    pub fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            let pending = self.pending_snapshot;
            self.reset_state(ProgressState::Probe);
            self.next = (self.matched + 1).max(pending + 1);
        } else {
            self.reset_state(ProgressState::Probe);
            self.next = self.matched + 1;
        }
    }

    /// To Replicate: pipeline from after the match.
    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next = self.matched + 1;
    }

    /// To Snapshot: wait for the snapshot at `index`.
    pub fn become_snapshot(&mut self, index: u64) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = index;
    }

    /// Whether sending appends is paused.
    pub fn is_paused(&self, max_msgs: usize, max_bytes: u64) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(max_msgs, max_bytes),
            ProgressState::Snapshot => true,
        }
    }

    /// Records that an append ending at `last` with `bytes` of entries was sent.
    pub fn sent_entries(&mut self, last: Option<u64>, bytes: u64) {
        match self.state {
            ProgressState::Replicate => {
                if let Some(last) = last {
                    self.next = last + 1;
                    self.inflights.add(last, bytes);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => {}
        }
    }

    /// An acceptance up to `index`: returns whether the match advanced.
    pub fn maybe_update(&mut self, index: u64) -> bool {
        let updated = self.matched < index;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index + 1);
        updated
    }

    /// A rejection of `rejected` with the follower's hint: returns whether `next` moved
    /// (a stale rejection moves nothing).
    pub fn maybe_decr_to(&mut self, rejected: u64, hint: u64) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.next = self.matched + 1;
            return true;
        }
        if self.next == 0 || self.next - 1 != rejected {
            return false;
        }
        self.next = rejected.min(hint.saturating_add(1)).max(self.matched + 1);
        self.probe_sent = false;
        true
    }
}
