//! The node's client sessions (the engine's exactly-once sessions, Raft dissertation §6.3):
//! one session per group, opened lazily at the group's leader by the first write this node
//! runs for a client, and the (session, sequence, floor) [`Tag`] each client write carries
//! on every attempt, here or forwarded (`FLOTILLA.LOCAL W ... <session> <seq> <floor>`).
//!
//! Owns the sequence numbering and the floor: a sequence is handed out once per client
//! write and stays unanswered (holding the floor down, so the group keeps its answer)
//! until the node has the write's final reply. Never proposes, forwards or retries
//! anything itself: [`crate::node`] does, and decides what a refusal means.

use std::collections::HashMap;
use std::sync::Mutex;

use flotilla_engine::api::Session;

/// The session coordinates a write carries: retried with the same `seq`, a write the
/// group already applied is answered with its first result instead of applying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// The session's id (its register entry's index in the group's log).
    pub session: u64,
    /// The write's sequence number in the session.
    pub seq: u64,
    /// The session's lowest unanswered sequence when the tag was made (at most `seq`):
    /// the group may forget answers below it.
    pub floor: u64,
}

/// The node's sessions, one per group at most.
#[derive(Debug, Default)]
pub struct Sessions {
    by_group: Mutex<HashMap<u64, Session>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Session>> {
        // Every update below leaves the map consistent: recover after a panic elsewhere.
        self.by_group.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh tag in `group`'s session, if this node has one.
    pub fn tag(&self, group: u64) -> Option<Tag> {
        let mut m = self.lock();
        let s = m.get_mut(&group)?;
        let seq = s.next_seq();
        Some(Tag { session: s.id(), seq, floor: s.floor().min(seq) })
    }

    /// Adopts session `id` (just opened) for `group` unless another one was adopted
    /// meanwhile, and returns a fresh tag in whichever is current.
    pub fn adopt(&self, group: u64, id: u64) -> Tag {
        let mut m = self.lock();
        let s = m.entry(group).or_insert_with(|| Session::resume(group, id, 1));
        let seq = s.next_seq();
        Tag { session: s.id(), seq, floor: s.floor().min(seq) }
    }

    /// The write tagged `tag` has its final reply: the group may forget its answer.
    pub fn answered(&self, group: u64, tag: Tag) {
        if let Some(s) = self.lock().get_mut(&group).filter(|s| s.id() == tag.session) {
            s.answered(tag.seq);
        }
    }

    /// The group refused session `id` (expired, evicted, unknown): stop using it, so the
    /// next write opens a new one.
    pub fn forget(&self, group: u64, id: u64) {
        let mut m = self.lock();
        if m.get(&group).is_some_and(|s| s.id() == id) {
            m.remove(&group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sequences are fresh per write, the floor stays at the lowest unanswered one, and a
    /// forgotten session is replaced only by a new adoption.
    #[test]
    fn tags_number_writes_and_hold_the_floor_until_answered() {
        let s = Sessions::default();
        assert_eq!(s.tag(1000), None, "no session yet");
        let a = s.adopt(1000, 42);
        assert_eq!(a, Tag { session: 42, seq: 1, floor: 1 });
        // A concurrent opener's session is not adopted: the first stays.
        let b = s.adopt(1000, 77);
        assert_eq!(b, Tag { session: 42, seq: 2, floor: 1 });
        s.answered(1000, b);
        let c = s.tag(1000).unwrap();
        assert_eq!(c, Tag { session: 42, seq: 3, floor: 1 }, "seq 1 still unanswered");
        s.answered(1000, a);
        let d = s.tag(1000).unwrap();
        assert_eq!(d, Tag { session: 42, seq: 4, floor: 3 });
        // Another session's answer changes nothing here.
        s.answered(1000, Tag { session: 77, seq: 3, floor: 1 });
        assert_eq!(s.tag(1000).unwrap().floor, 3);
        s.forget(1000, 77);
        assert!(s.tag(1000).is_some(), "forgetting another session keeps this one");
        s.forget(1000, 42);
        assert_eq!(s.tag(1000), None);
        assert_eq!(s.adopt(1000, 99), Tag { session: 99, seq: 1, floor: 1 });
    }
}
