//! Client sessions in the embedding API (Raft dissertation §6.3): [`Session`], the
//! caller's handle that numbers its proposals and tracks which are answered, the
//! [`SessionRefusal`]s a session proposal can meet, and the [`Engine`] operations
//! `open_session`, `propose_in_session` and `close_session`.
//!
//! A proposal in a session is applied at most once: a retry with the same sequence number
//! (after `Indeterminate`, `Dropped`, a timeout or a lost answer, at any node of the
//! group) is answered with the first application's result if there was one, or applied
//! now if there was none. Owns these types and the encoding of the session id in a
//! register entry's result. Never decides a proposal's fate: the group's replicated
//! session table (`crate::session`) does, on the apply thread.

use std::collections::BTreeSet;

use bytes::Bytes;
use thiserror::Error;

use super::{Engine, Proposal, ProposeError};
use crate::session::SessionOp;

/// Why the group's session table refused a session entry (it was applied without
/// effect, on every replica alike). Delivered as [`ProposeError::Session`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SessionRefusal {
    /// The session expired (unused for longer than `session_ttl` by the replicated
    /// clock), was evicted (past `max_sessions`, least recently used first), closed, or
    /// never registered. Open a new session; the proposal was not applied.
    #[error("session unknown: expired, evicted, closed or never registered")]
    Unknown,
    /// The sequence number is below the session's floor: the caller said it had this
    /// proposal's answer, and the table forgot it. Not applied again.
    #[error("sequence number below the session's floor: its answer is gone")]
    Acked,
    /// The group's state machine keeps its own storage and cannot hold sessions
    /// ([`super::StateMachine::supports_sessions`]).
    #[error("the group's state machine does not support sessions")]
    NotSupported,
}

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

fn decode_session_id(b: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

impl Engine {
    /// Opens a client session on `group`: registers it through the log (at the leader
    /// only) and waits until it is applied here. Its limits (`session_ttl`,
    /// `max_sessions` of this node's configuration) travel in the entry and become the
    /// group's. Errors as [`Engine::propose`], and [`SessionRefusal::NotSupported`].
    pub fn open_session(&self, group: u64) -> Result<Session, ProposeError> {
        let cfg = self.rt.config();
        let op = SessionOp::Register {
            ttl_ms: u64::try_from(cfg.session_ttl.as_millis()).unwrap_or(u64::MAX),
            max_sessions: cfg.max_sessions,
        };
        let r = self.rt.propose_session(group, op, Bytes::new())?.wait()?;
        // A register entry's result is always its 8-byte id; anything else is not ours.
        let id = decode_session_id(&r).ok_or(ProposeError::Indeterminate)?;
        Ok(Session::resume(group, id, 1))
    }

    /// Proposes `data` in `session` with sequence number `seq` (from
    /// [`Session::next_seq`], or the same number again to retry). Resolves with the
    /// state machine's result of the first application, whether it happens now or
    /// happened before; with [`ProposeError::Session`] if the table refused it. Call
    /// [`Session::answered`] once the answer is final.
    pub fn propose_in_session(
        &self,
        session: &Session,
        seq: u64,
        data: Bytes,
    ) -> Result<Proposal, ProposeError> {
        let op = SessionOp::Propose { session: session.id, seq, floor: session.floor().min(seq) };
        self.rt.propose_session(session.group, op, data)
    }

    /// Closes `session`: the group forgets it and its answers. Resolves once applied here.
    pub fn close_session(&self, session: &Session) -> Result<Proposal, ProposeError> {
        self.rt.propose_session(session.group, SessionOp::Close { session: session.id }, Bytes::new())
    }
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
