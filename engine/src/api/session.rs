//! Client sessions in the embedding API (Raft dissertation §6.3): [`Session`], the
//! caller's handle that numbers its proposals and tracks which are answered. The
//! [`Engine`](super::Engine) operations `open_session`, `propose_in_session` and
//! `close_session` are in `mod.rs`; the [`SessionRefusal`](super::SessionRefusal)s a
//! session proposal can meet are in `error.rs`.
//!
//! A proposal in a session is applied at most once: a retry with the same sequence number
//! (after `Indeterminate`, `Dropped`, a timeout or a lost answer, at any node of the
//! group) is answered with the first application's result if there was one, or applied
//! now if there was none. Owns these types and the encoding of the session id in a
//! register entry's result. Never decides a proposal's fate: the group's replicated
//! session table (`crate::session`) does, on the apply thread.

use std::collections::BTreeSet;

use bytes::Bytes;

/// A caller's session on one group: its id, the next sequence number, and the sequence
/// numbers handed out and not yet answered (the lowest of them is the floor sent with
/// every proposal, so the group forgets answers the caller holds). Not tied to a node: a
/// retry can go to whichever node leads the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    group: u64,
    id: u64,
    next_seq: u64,
    unanswered: BTreeSet<u64>,
}

impl Session {
    /// The handle of an existing session `id` of `group` whose next sequence number is
    /// `next_seq` (at least 1), e.g. after the caller restarted. Numbers below `next_seq`
    /// count as answered.
    pub fn resume(group: u64, id: u64, next_seq: u64) -> Session {
        Session { group, id, next_seq: next_seq.max(1), unanswered: BTreeSet::new() }
    }

    /// The group.
    pub fn group(&self) -> u64 {
        self.group
    }

    /// The session's id (the index of its register entry).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Hands out the next sequence number; it stays unanswered until
    /// [`Session::answered`].
    pub fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unanswered.insert(seq);
        seq
    }

    /// Marks `seq` answered (its final answer is in hand: a result or a refusal): the
    /// group may forget its result. Never call it for an `Indeterminate` or `Dropped`
    /// outcome that will be retried.
    pub fn answered(&mut self, seq: u64) {
        self.unanswered.remove(&seq);
    }

    /// The lowest sequence number without an answer (the next one if all are answered).
    pub fn floor(&self) -> u64 {
        self.unanswered.first().copied().unwrap_or(self.next_seq)
    }
}

/// The result of a register entry: the session id (its index), 8 bytes little-endian.
pub(crate) fn encode_session_id(id: u64) -> Bytes {
    Bytes::copy_from_slice(&id.to_le_bytes())
}

pub(crate) fn decode_session_id(b: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_the_lowest_unanswered_sequence() {
        let mut s = Session::resume(1, 7, 1);
        assert_eq!(s.floor(), 1);
        let (a, b, c) = (s.next_seq(), s.next_seq(), s.next_seq());
        assert_eq!((a, b, c), (1, 2, 3));
        assert_eq!(s.floor(), 1);
        s.answered(2);
        assert_eq!(s.floor(), 1);
        s.answered(1);
        assert_eq!(s.floor(), 3);
        s.answered(3);
        assert_eq!(s.floor(), 4);
        assert_eq!(Session::resume(1, 7, 0).next_seq(), 1);
        assert_eq!(decode_session_id(&encode_session_id(u64::MAX - 3)), Some(u64::MAX - 3));
        assert_eq!(decode_session_id(b"short"), None);
    }
}
