//! [`ReadyDriver`]: the one way a caller processes a [`Ready`], as separate steps it can
//! interleave with its own work or stop between (a simulated crash after the send step
//! and before the write is durable loses exactly that write).
//!
//! Owns the split of a `Ready` into its four steps and their ordering rules:
//!
//! - **send**: [`ReadyDriver::take_messages`] hands out the messages that may go before
//!   this `Ready`'s write is durable (a leader's appends, thesis §10.2.1);
//! - **persist**: [`ReadyDriver::take_write`] hands out the write (snapshot, entries,
//!   hard state) as a [`ReadyWrite`] the caller persists now ([`ReadyWrite::persist`] into
//!   a [`LogWriter`]) or later, in order after every earlier `Ready`'s write;
//! - **advance (persisted)**: [`ReadyWrite::persisted`] tells the core what became durable
//!   (`Raft::on_persisted` with the write's last entry) and only then hands out the
//!   messages that wait for durability (votes, acknowledgements): they cannot be had
//!   before;
//! - **apply**: [`ReadyDriver::take_committed`] hands out the committed entries (durable
//!   already: the core never hands out an entry its own log has not made durable) and
//!   [`ReadyDriver::take_read_states`] the reads; **advance (applied)**:
//!   [`ReadyDriver::applied`] tells the core what was applied (`Raft::on_applied`).
//!
//! Sans-IO, like the rest of the core: it owns no clock, thread, socket or file, never
//! decides when a write is durable, and never sends or applies anything itself.

use super::event::Event;
use super::message::{Entry, HardState, Message, ReadState, Snapshot};
use super::raft::Raft;
use super::ready::Ready;
use super::storage::{LogStore, MemStorage};

/// The write side of a log store: what persisting a [`ReadyWrite`] does to it.
pub trait LogWriter {
    /// Replaces the whole log by `snapshot` (the stored commit index rises to its index).
    fn apply_snapshot(&mut self, snapshot: &Snapshot);
    /// Appends entries, replacing any stored entries at or after the first one.
    fn append(&mut self, entries: &[Entry]);
    /// Records the hard state.
    fn set_hard_state(&mut self, hs: HardState);
}

impl LogWriter for MemStorage {
    #[inline]
    fn apply_snapshot(&mut self, snapshot: &Snapshot) {
        MemStorage::apply_snapshot(self, snapshot);
    }

    #[inline]
    fn append(&mut self, entries: &[Entry]) {
        MemStorage::append(self, entries);
    }

    #[inline]
    fn set_hard_state(&mut self, hs: HardState) {
        MemStorage::set_hard_state(self, hs);
    }
}

/// One `Ready` being processed, step by step (see the module documentation for the
/// steps and their order). Each `take_*` hands its part out once; later calls return
/// nothing.
#[derive(Debug, Default)]
pub struct ReadyDriver {
    messages: Vec<Message>,
    write: ReadyWrite,
    committed: Vec<Entry>,
    read_states: Vec<ReadState>,
    events: Vec<Event>,
}

impl ReadyDriver {
    /// Takes the next `Ready` of `raft`, or `None` when it has nothing to hand out.
    #[inline]
    pub fn next<S: LogStore>(raft: &mut Raft<S>) -> Option<ReadyDriver> {
        if !raft.has_ready() {
            return None;
        }
        Some(ReadyDriver::new(raft.ready()))
    }

    /// Drives `rd` (taken from `Raft::ready`).
    #[inline]
    pub fn new(rd: Ready) -> ReadyDriver {
        // Every field is named: a part added to `Ready` must be given a step here.
        let Ready {
            hard_state,
            // The simulator writes every hard state with its Ready (the stricter choice).
            hard_state_commit_only: _,
            entries,
            snapshot,
            messages,
            persisted_messages,
            committed_entries,
            read_states,
            events,
        } = rd;
        ReadyDriver {
            messages,
            write: ReadyWrite { hard_state, entries, snapshot, messages: persisted_messages },
            committed: committed_entries,
            read_states,
            events,
        }
    }

    /// The messages the send step will hand out (those that may go before the write).
    #[inline]
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The write the persist step will hand out.
    #[inline]
    pub fn write(&self) -> &ReadyWrite {
        &self.write
    }

    /// The entries the apply step will hand out.
    #[inline]
    pub fn committed_entries(&self) -> &[Entry] {
        &self.committed
    }

    /// The reads [`ReadyDriver::take_read_states`] will hand out.
    #[inline]
    pub fn read_states(&self) -> &[ReadState] {
        &self.read_states
    }

    /// Send step: the messages that may be sent now, before this `Ready`'s write is
    /// durable. Those that must wait come out of [`ReadyWrite::persisted`] only.
    #[inline]
    pub fn take_messages(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.messages)
    }

    /// Persist step: this `Ready`'s write and the messages that wait for it. The caller
    /// makes it durable after every earlier `Ready`'s write, then calls
    /// [`ReadyWrite::persisted`]; also when it has nothing to persist
    /// ([`ReadyWrite::is_empty`] says when there is nothing to do at all).
    #[inline]
    pub fn take_write(&mut self) -> ReadyWrite {
        std::mem::take(&mut self.write)
    }

    /// Apply step: the committed entries to apply, in order (already locally durable, so
    /// they need not wait for this `Ready`'s write). Once applied, call
    /// [`ReadyDriver::applied`].
    #[inline]
    pub fn take_committed(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.committed)
    }

    /// The reads released by this `Ready`: each may be served once applied reaches its
    /// index.
    #[inline]
    pub fn take_read_states(&mut self) -> Vec<ReadState> {
        std::mem::take(&mut self.read_states)
    }

    /// What happened to the replica in this `Ready` (elections, leadership, membership),
    /// in order: for metrics and logs; no step depends on it.
    #[inline]
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Advance step after apply: tells `raft` that `entries` (handed out by
    /// [`ReadyDriver::take_committed`]) are applied. Nothing when `entries` is empty.
    #[inline]
    pub fn applied<S: LogStore>(raft: &mut Raft<S>, entries: &[Entry]) {
        if let Some(e) = entries.last() {
            raft.on_applied(e.index);
        }
    }

    /// Whether every step has handed out its part (or had nothing to hand out).
    #[inline]
    pub fn is_done(&self) -> bool {
        self.messages.is_empty()
            && self.write.is_empty()
            && self.committed.is_empty()
            && self.read_states.is_empty()
            && self.events.is_empty()
    }
}

/// The write of one `Ready` (a received snapshot, entries, hard state, persisted in that
/// order as one durable write) and the messages that wait for it.
#[derive(Debug, Default)]
pub struct ReadyWrite {
    hard_state: Option<HardState>,
    entries: Vec<Entry>,
    /// Boxed (as in `Ready`): a snapshot is rare, and inline it would make every move of
    /// a driver or a write copy a whole configuration.
    snapshot: Option<Box<Snapshot>>,
    messages: Vec<Message>,
}

impl ReadyWrite {
    /// The hard state to persist, if it changed.
    #[inline]
    pub fn hard_state(&self) -> Option<HardState> {
        self.hard_state
    }

    /// The entries to persist.
    #[inline]
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The snapshot to install, if any.
    #[inline]
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_deref()
    }

    /// The messages that wait for this write.
    #[inline]
    pub fn waiting_messages(&self) -> &[Message] {
        &self.messages
    }

    /// The (index, term) of the last entry written, reported to the core once durable.
    #[inline]
    pub fn last(&self) -> Option<(u64, u64)> {
        self.entries.last().map(|e| (e.index, e.term))
    }

    /// Whether there is anything to persist.
    #[inline]
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some() || !self.entries.is_empty() || self.snapshot.is_some()
    }

    /// Whether there is neither anything to persist nor any message waiting.
    #[inline]
    pub fn is_empty(&self) -> bool {
        !self.must_persist() && self.messages.is_empty()
    }

    /// Writes the snapshot (first: it replaces the log), then the entries, then the hard
    /// state into `store`.
    #[inline]
    pub fn persist<W: LogWriter + ?Sized>(&self, store: &mut W) {
        if let Some(s) = &self.snapshot {
            store.apply_snapshot(s);
        }
        store.append(&self.entries);
        if let Some(hs) = self.hard_state {
            store.set_hard_state(hs);
        }
    }

    /// Advance step once this write (and every earlier one) is durable: tells `raft`
    /// (`on_persisted` with the last entry, if any), then hands out the messages that
    /// waited for it.
    #[inline]
    pub fn persisted<S: LogStore>(self, raft: &mut Raft<S>) -> Vec<Message> {
        if let Some((index, term)) = self.last() {
            raft.on_persisted(index, term);
        }
        self.messages
    }

    /// Persists into `raft`'s own storage and advances at once (storage that is durable
    /// as soon as written, as in tests and benchmarks); returns the messages that waited.
    #[inline]
    pub fn persist_now<S: LogStore + LogWriter>(self, raft: &mut Raft<S>) -> Vec<Message> {
        self.persist(raft.storage_mut());
        self.persisted(raft)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::raft::conf::ConfState;
    use crate::raft::config::Config;
    use crate::raft::message::{EntryPayload, MessageBody, SnapshotMeta};
    use crate::raft::types::{Replica, Role};

    fn voters(ids: &[u64]) -> ConfState {
        ConfState::with_voters(ids.iter().map(|&i| Replica::new(i, i)))
    }

    fn raft(id: u64, conf: ConfState) -> Raft<MemStorage> {
        let mut c = Config::new(id);
        c.pre_vote = false;
        c.seed = 3;
        Raft::new(c.validate().expect("valid config"), MemStorage::new_with_conf(conf)).expect("new raft")
    }

    /// Processes every Ready of `r` synchronously.
    fn drain(r: &mut Raft<MemStorage>) {
        while let Some(mut d) = ReadyDriver::next(r) {
            d.take_messages();
            d.take_write().persist_now(r);
            let c = d.take_committed();
            ReadyDriver::applied(r, &c);
        }
    }

    /// A single-voter leader with its first entries applied.
    fn solo_leader() -> Raft<MemStorage> {
        let mut r = raft(1, voters(&[1]));
        r.campaign_now();
        drain(&mut r);
        assert_eq!(r.role(), Role::Leader);
        r
    }

    fn vote_request(from: u64, to: u64, term: u64) -> Message {
        Message {
            from,
            to,
            term,
            body: MessageBody::RequestVote {
                pre_vote: false,
                last_index: 10,
                last_term: 5,
                transfer: false,
                commit: 0,
                commit_term: 0,
            },
        }
    }

    /// A vote is a message that waits for the write of the hard state that records it:
    /// the send step does not hand it out, the write holds it, and only `persisted`
    /// releases it.
    #[test]
    fn vote_reply_waits_for_the_write() {
        let mut f = raft(2, voters(&[1, 2, 3]));
        f.step(vote_request(1, 2, 5)).expect("step");
        let mut d = ReadyDriver::next(&mut f).expect("a ready");
        let now = d.take_messages();
        assert!(now.iter().all(|m| !matches!(m.body, MessageBody::RequestVoteResponse { .. })), "{now:?}");
        let w = d.take_write();
        assert_eq!(w.hard_state().map(|h| (h.term, h.vote)), Some((5, 1)));
        assert!(w.must_persist());
        assert_eq!(w.last(), None);
        assert_eq!(w.waiting_messages().len(), 1);
        let later = w.persist_now(&mut f);
        assert!(
            matches!(
                later.as_slice(),
                [Message { to: 1, body: MessageBody::RequestVoteResponse { reject: false, .. }, .. }]
            ),
            "{later:?}"
        );
        assert_eq!(f.storage().hard_state().vote, 1, "the vote is stored before its reply is out");
    }

    /// The leader counts its own entry only once the write is reported persisted: a
    /// single-voter group commits after `persisted`, not after the send or persist steps.
    #[test]
    fn commit_waits_for_persisted() {
        let mut r = solo_leader();
        let (index, _) = r.propose(Bytes::from_static(b"x")).expect("propose");
        let mut d = ReadyDriver::next(&mut r).expect("a ready");
        d.take_messages();
        let w = d.take_write();
        assert_eq!(w.last().map(|(i, _)| i), Some(index));
        w.persist(r.storage_mut());
        assert!(r.committed() < index, "committed before the write was reported");
        assert!(w.persisted(&mut r).is_empty());
        assert_eq!(r.committed(), index);
        let mut d = ReadyDriver::next(&mut r).expect("the commit's ready");
        assert_eq!(d.committed_entries().last().map(|e| e.index), Some(index));
        let c = d.take_committed();
        assert!(r.applied() < index);
        ReadyDriver::applied(&mut r, &c);
        assert_eq!(r.applied(), index);
    }

    /// A write that was never persisted (a crash between the steps) is never reported:
    /// the core does not count the entry, and the storage lacks it.
    #[test]
    fn a_dropped_write_is_never_reported() {
        let mut r = solo_leader();
        let (index, _) = r.propose(Bytes::from_static(b"x")).expect("propose");
        let mut d = ReadyDriver::next(&mut r).expect("a ready");
        d.take_messages();
        drop(d.take_write());
        assert!(r.committed() < index);
        assert!(r.storage().last_index().expect("last") < index);
    }

    /// Persisting installs the snapshot before the entries that follow it: the other
    /// order would let the snapshot wipe the entries.
    #[test]
    fn persist_installs_snapshot_then_entries_then_hard_state() {
        let conf = voters(&[1, 2, 3]);
        let meta = SnapshotMeta { index: 5, term: 2, conf: conf.clone() };
        let entries: Vec<Entry> = (6..=7)
            .map(|index| Entry { index, term: 2, payload: EntryPayload::Normal(Bytes::new()) })
            .collect();
        let hs = HardState { term: 2, vote: 1, commit: 6 };
        let rd = Ready {
            hard_state: Some(hs),
            entries,
            snapshot: Some(Box::new(Snapshot { meta, data: Bytes::from_static(b"s") })),
            ..Ready::default()
        };
        let mut store = MemStorage::new_with_conf(conf);
        let mut d = ReadyDriver::new(rd);
        d.take_write().persist(&mut store);
        assert_eq!(store.snapshot().meta.index, 5);
        assert_eq!(store.last_index().expect("last"), 7, "the entries after the snapshot survive");
        assert_eq!(store.hard_state(), hs, "the hard state is written last (the snapshot raises commit)");
    }

    /// Each step hands its part out once; the driver is done when all were taken.
    #[test]
    fn each_step_hands_out_once() {
        let mut l = raft(1, voters(&[1, 2, 3]));
        l.campaign_now();
        let mut d = ReadyDriver::next(&mut l).expect("a ready");
        assert!(!d.is_done());
        let now = d.take_messages();
        let w = d.take_write();
        assert!(!now.is_empty() || !w.waiting_messages().is_empty(), "a campaign asks for votes");
        assert!(d.take_messages().is_empty());
        assert!(d.take_write().is_empty());
        d.take_committed();
        d.take_read_states();
        assert!(!d.is_done(), "the events are still to be taken");
        assert!(
            d.take_events().iter().any(|e| matches!(e, Event::ElectionStarted { .. })),
            "the campaign is reported"
        );
        assert!(d.take_events().is_empty());
        assert!(d.is_done());
        assert!(
            ReadyDriver::next(&mut raft(4, voters(&[1, 2, 3]))).is_none(),
            "a fresh follower has nothing"
        );
    }
}
