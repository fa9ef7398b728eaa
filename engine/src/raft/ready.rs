//! [`Ready`]: everything the core asks its runtime to do after a batch of inputs.
//!
//! Owns the shape of the hand-off only; `raft.rs` fills it.

use super::event::Event;
use super::message::{Entry, HardState, Message, ReadState, Snapshot};

/// What the runtime must do, in this order:
///
/// 1. Send `messages` now (a leader's appends may go before its own write is durable,
///    thesis §10.2.1).
/// 2. Persist `snapshot` (install into the state machine and storage), `entries` (replacing
///    any stored entries at or after the first one) and `hard_state`, as ONE durable write
///    ordered after every earlier `Ready`'s write.
/// 3. Once that write and every earlier `Ready`'s write are durable (also when this
///    `Ready` has nothing to write): call `Raft::on_persisted` with the last entry's
///    (index, term) if there were entries, and send `persisted_messages` (votes,
///    acknowledgements: nothing a follower says may get ahead of its disk).
/// 4. Apply `committed_entries` in order, then call `Raft::on_applied`.
/// 5. Serve each of `read_states` once applied >= its index.
///
/// `events` report what happened since the last `Ready` (for metrics and event
/// streams); nothing needs to be done for them.
#[derive(Debug, Default)]
pub struct Ready {
    /// Hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// Whether `hard_state` differs from the last one handed out in its commit index
    /// only. The commit index is volatile state (Raft paper, Figure 2; recovery takes
    /// the larger of it and the state machine's applied index), so a runtime may write
    /// such a hard state with a later write instead of syncing a write for it alone.
    /// Term and vote are never deferred: a vote is durable before it is granted.
    pub hard_state_commit_only: bool,
    /// Entries to persist.
    pub entries: Vec<Entry>,
    /// A snapshot to install (received from the leader), if any. Boxed: it is rare, and
    /// inline it would make every move of a `Ready` copy a whole configuration.
    pub snapshot: Option<Box<Snapshot>>,
    /// Messages to send immediately.
    pub messages: Vec<Message>,
    /// Messages to send only after this Ready's write is durable.
    pub persisted_messages: Vec<Message>,
    /// Committed, locally durable entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Reads that may be served once applied reaches their index.
    pub read_states: Vec<ReadState>,
    /// What happened since the last `Ready`, in order (elections, leadership, transfers,
    /// membership changes applied).
    pub events: Vec<Event>,
}

impl Ready {
    /// Whether there is anything to persist (the write of step 2).
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some() || !self.entries.is_empty() || self.snapshot.is_some()
    }

    /// Whether the Ready asks for nothing at all.
    pub fn is_empty(&self) -> bool {
        !self.must_persist()
            && self.messages.is_empty()
            && self.persisted_messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
            && self.events.is_empty()
    }
}

/// What one `Ready` may hand out for apply ([`Raft::ready_within`](super::Raft::ready_within)):
/// the runtime's bound on what a slow state machine makes it hold, which a follower
/// cannot otherwise enforce (its leader commits at the pace of the other members).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyBudget {
    /// Most committed entries handed out (none when 0).
    pub entries: u64,
    /// Most bytes of committed entries (`Entry::size`) handed out; at least one entry
    /// goes when above 0, so an entry larger than the budget is not held back for good.
    pub bytes: u64,
}

impl ApplyBudget {
    /// No bound beyond `Config::max_apply_bytes`.
    pub const UNLIMITED: ApplyBudget = ApplyBudget { entries: u64::MAX, bytes: u64::MAX };

    /// Whether nothing may be handed out.
    pub fn is_empty(&self) -> bool {
        self.entries == 0 || self.bytes == 0
    }
}
