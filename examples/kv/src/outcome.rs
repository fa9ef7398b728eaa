//! What one attempt at an operation gave, and the retry rule: which failures the server may
//! run again and which it must answer `INDETERMINATE`.
//!
//! Owns the outcome of every engine error ([`ProposeError`], [`MembershipError`],
//! [`ReadError`], [`TransferError`]), decided by the error's `class()` (the engine's
//! [`ErrorClass`]), and of every way a forwarded operation can fail, and the reply format of
//! `FLOTILLA.LOCAL`. The rule for writes (proposals and membership changes): an attempt is
//! retried only when its class is `Redirect` or `Retry`, that is, it was refused before
//! anything could have been appended (not leader, busy, leadership transfer in progress,
//! group not here) or is `Dropped`, which the engine reports only once another entry is
//! committed at its index. Everything else that may
//! have been appended (the engine's `Indeterminate`, storage failure or shutdown after the
//! proposal was handed to the engine, no result in time, a forwarding connection that broke
//! after the request was written, an error from the leader's node that is not a known
//! refusal or result) is answered `-INDETERMINATE ...` and never run again, so an
//! acknowledged or unknown INCR is never applied twice. Reads and transfers change nothing
//! and may always be retried. A write tagged with a client session ([`crate::sessions`])
//! is the exception the node makes: its unknown outcome is retried with the same tag
//! (the group answers a retry of an applied write with its first result), and a session
//! refusal ([`SESSION_REFUSED`]) is known not applied. Never runs, sends or waits for
//! anything itself.

use flotilla_engine::api::{ErrorClass, MembershipError, ProposeError, ReadError, TransferError};

use crate::client::ClientError;
use crate::resp::Value;

/// Prefix of a `FLOTILLA.LOCAL` error reply that is the operation's known final answer
/// (a state machine's error result, or a refusal made before anything was appended); the
/// forwarding node strips it and passes the error on. Any other error reply to a
/// forwarded write is an unknown outcome.
pub const FINAL_ERR: &str = "FLOTILLA.ERR ";

/// What one attempt at an operation gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done: the reply (which may be an application error such as INCR on a string).
    Done(Value),
    /// Not done here (refused before any append): try the hinted node (or any, if none).
    Redirect(Option<u64>),
    /// Not done (refused before any append): try again shortly (at the hinted node, if any).
    Retry(String, Option<u64>),
    /// Final failure (a refusal known not applied, or an unknown outcome): the reply to give.
    Fail(Value),
}

impl Outcome {
    /// Whether running the operation again is allowed: nothing of this attempt can apply.
    pub fn retryable(&self) -> bool {
        matches!(self, Outcome::Redirect(_) | Outcome::Retry(..))
    }

    /// The reply `FLOTILLA.LOCAL` gives for it: refusals as `-FLOTILLA.REDIRECT` /
    /// `-FLOTILLA.RETRY`, known error answers tagged with [`FINAL_ERR`], unknown outcomes
    /// as `-INDETERMINATE ...`, values as they are.
    pub fn to_value(self) -> Value {
        match self {
            Outcome::Done(Value::Error(e)) | Outcome::Fail(Value::Error(e)) if !is_indeterminate(&e) => {
                Value::Error(format!("{FINAL_ERR}{e}"))
            }
            Outcome::Done(v) | Outcome::Fail(v) => v,
            Outcome::Redirect(h) => Value::err(format!("FLOTILLA.REDIRECT {}", h.unwrap_or(0))),
            Outcome::Retry(why, h) => Value::err(format!("FLOTILLA.RETRY {} {why}", h.unwrap_or(0))),
        }
    }
}

/// Prefix of the error a write tagged with a client session gets when the group refused
/// the session (expired, evicted, unknown, or the answer is gone): that attempt was not
/// applied. The node reopens a session, or answers INDETERMINATE if an earlier attempt
/// of the write may have been applied.
pub const SESSION_REFUSED: &str = "SESSIONREFUSED";

/// Whether an error reply is a session refusal ([`SESSION_REFUSED`]).
pub fn is_session_refused(e: &str) -> bool {
    e.starts_with(SESSION_REFUSED)
}

/// Whether an error reply is an unknown outcome.
pub fn is_indeterminate(e: &str) -> bool {
    e.starts_with("INDETERMINATE")
}

/// The error given for an operation whose outcome cannot be known.
pub fn indeterminate(why: &str) -> Value {
    Value::err(format!("INDETERMINATE outcome unknown: the write may or may not have been applied ({why})"))
}

/// Where an engine error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Returned by the call that hands the operation to the engine: nothing was submitted.
    Submit,
    /// The result of a submitted operation: it may have been appended unless the error
    /// says it was refused before.
    Waited,
}

/// The outcome of an engine error, by its class (the one retry rule of every operation):
/// `Redirect` goes to the hinted node (or looks the leader up), `Retry` tries again shortly
/// (at the hinted node, if any) saying `why`, `Invalid` is the final answer `ERR ...`,
/// `Outcome` (appended, result unknown) is `-INDETERMINATE (unknown)`, and `Fatal` (or a
/// class this server does not know) is `ERR node unavailable` when nothing was submitted
/// and `-INDETERMINATE` once it was (`unknown_fatal`).
fn by_class(
    stage: Stage,
    class: ErrorClass,
    hint: Option<u64>,
    e: &dyn std::fmt::Display,
    why: impl FnOnce() -> String,
    unknown: &str,
    unknown_fatal: impl FnOnce() -> String,
) -> Outcome {
    match class {
        ErrorClass::Redirect => Outcome::Redirect(hint),
        ErrorClass::Retry => Outcome::Retry(why(), hint),
        ErrorClass::Invalid => Outcome::Fail(Value::err(format!("ERR {e}"))),
        ErrorClass::Outcome => Outcome::Fail(indeterminate(unknown)),
        _ => match stage {
            Stage::Submit => Outcome::Fail(Value::err(format!("ERR node unavailable: {e}"))),
            Stage::Waited => Outcome::Fail(indeterminate(&unknown_fatal())),
        },
    }
}

/// What the reason of a retry starts with when the engine refused as busy (its
/// backpressure): such a request is held longer than a leader change's retry budget
/// (`busy_hold_ms`). It travels in `-FLOTILLA.RETRY` replies too.
pub const BUSY: &str = "engine backpressure: ";

/// Whether a retry's reason is the engine's backpressure ([`BUSY`]).
pub fn is_busy(why: &str) -> bool {
    why.starts_with(BUSY)
}

/// The outcome of a proposal's error (by its class; see `by_class`).
pub fn propose_outcome(stage: Stage, e: ProposeError) -> Outcome {
    let why = || match &e {
        ProposeError::Busy(_) => format!("{BUSY}{e}"),
        ProposeError::TransferInProgress { .. } => "leadership transfer in progress".into(),
        // Only once another entry is committed at its index: it can never apply.
        ProposeError::Dropped => "dropped: another entry committed at its index".into(),
        e => e.to_string(),
    };
    if let ProposeError::Session(r) = &e {
        return Outcome::Fail(Value::err(format!("{SESSION_REFUSED} {r}")));
    }
    let unknown = "leader changed, replica removed or shut down after append";
    by_class(stage, e.class(), e.leader_hint(), &e, why, unknown, || e.to_string())
}

/// The outcome of a membership change's error (by its class; see `by_class`).
pub fn member_outcome(stage: Stage, e: MembershipError) -> Outcome {
    let unknown_fatal = || format!("membership change: {e}");
    by_class(stage, e.class(), e.leader_hint(), &e, || e.to_string(), "membership change", unknown_fatal)
}

/// The outcome of a read barrier's error (by its class; see `by_class`). A read changes
/// nothing: it is never an unknown outcome, and a failed node is `ERR node unavailable`.
pub fn read_outcome(e: ReadError) -> Outcome {
    let why = || match &e {
        ReadError::Busy(_) => format!("{BUSY}{e}"),
        e => e.to_string(),
    };
    by_class(Stage::Submit, e.class(), e.leader_hint(), &e, why, "read", || e.to_string())
}

/// The outcome of a leadership transfer's error (by its class; see `by_class`). A
/// transfer to the node that already leads is done; a transfer changes nothing, so a
/// failed node is a final `ERR`.
pub fn transfer_outcome(group: u64, e: TransferError) -> Outcome {
    if let TransferError::ToSelf(_) = e {
        return Outcome::Done(Value::ok());
    }
    match e.class() {
        class @ (ErrorClass::Redirect | ErrorClass::Retry) => {
            let why = || match &e {
                TransferError::ConfChangePending => format!("membership change of group {group} pending"),
                e => e.to_string(),
            };
            by_class(Stage::Submit, class, e.leader_hint(), &e, why, "transfer", || e.to_string())
        }
        _ => Outcome::Fail(Value::err(format!("ERR {e}"))),
    }
}

/// The outcome of a forwarding attempt to node `to` that failed on the connection.
/// `ClientError::Connect` (and anything before the request was written, which callers
/// report as `sent == false`) sent nothing; any failure after the request was written
/// leaves a write's outcome unknown.
pub fn forward_failure(mutates: bool, sent: bool, to: u64, e: &ClientError) -> Outcome {
    let sent = sent && !matches!(e, ClientError::Connect { .. });
    if mutates && sent {
        Outcome::Fail(indeterminate(&format!("forwarded to node {to}: {e}")))
    } else {
        Outcome::Retry(format!("node {to}: {e}"), None)
    }
}

/// The outcome of node `to`'s reply to a forwarded operation (`FLOTILLA.LOCAL`). For a
/// write, only its refusals (`-FLOTILLA.REDIRECT`, `-FLOTILLA.RETRY`) are retried, a
/// [`FINAL_ERR`] error is its known answer, and any other error is an unknown outcome.
pub fn forwarded_reply(mutates: bool, to: u64, v: Value) -> Outcome {
    let Value::Error(e) = &v else { return Outcome::Done(v) };
    let hint = |s: &str| s.split(' ').next().and_then(|h| h.parse::<u64>().ok()).filter(|&h| h != 0);
    if let Some(rest) = e.strip_prefix("FLOTILLA.REDIRECT ") {
        return Outcome::Redirect(hint(rest));
    }
    if let Some(rest) = e.strip_prefix("FLOTILLA.RETRY ") {
        let why = rest.split_once(' ').map(|x| x.1).unwrap_or("").to_string();
        return Outcome::Retry(why, hint(rest));
    }
    if let Some(rest) = e.strip_prefix(FINAL_ERR) {
        return Outcome::Done(Value::Error(rest.to_string()));
    }
    if is_indeterminate(e) {
        return Outcome::Fail(v);
    }
    if mutates {
        return Outcome::Fail(indeterminate(&format!("node {to} answered: {e}")));
    }
    Outcome::Done(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_engine::api::{BusyReason, SessionRefusal};

    #[derive(Debug, PartialEq, Eq)]
    enum Class {
        Retry,
        Indeterminate,
        /// A final error known not to have been applied (or the applied result).
        Final,
    }

    fn class(o: &Outcome) -> Class {
        match o {
            Outcome::Redirect(_) | Outcome::Retry(..) => Class::Retry,
            Outcome::Fail(Value::Error(e)) if is_indeterminate(e) => Class::Indeterminate,
            Outcome::Done(_) | Outcome::Fail(_) => Class::Final,
        }
    }

    /// Every `ProposeError` variant, at submission and as a waited result: only refusals
    /// made before an append are retried; whatever may have been appended is INDETERMINATE.
    #[test]
    fn every_propose_error_is_retried_only_when_never_appended() {
        use Class::*;
        use Stage::*;
        let table: Vec<(ProposeError, Class, Class)> = vec![
            // (error, at submission, after submission)
            (ProposeError::NotLeader { leader_hint: Some(2) }, Retry, Retry),
            (ProposeError::NotLeader { leader_hint: None }, Retry, Retry),
            (ProposeError::TransferInProgress { to: Some(3) }, Retry, Retry),
            (ProposeError::GroupNotFound(1000), Retry, Retry),
            (ProposeError::Busy(BusyReason::Mailbox), Retry, Retry),
            (ProposeError::Busy(BusyReason::GroupUncommitted), Retry, Retry),
            (ProposeError::Busy(BusyReason::WorkerPending), Retry, Retry),
            (ProposeError::Busy(BusyReason::ApplyBacklog), Retry, Retry),
            (ProposeError::Busy(BusyReason::WalPending), Retry, Retry),
            (ProposeError::Busy(BusyReason::WorkerUncommitted), Retry, Retry),
            (ProposeError::Dropped, Retry, Retry),
            (ProposeError::TooLarge { len: 10, max: 5 }, Final, Final),
            (ProposeError::Indeterminate, Indeterminate, Indeterminate),
            (ProposeError::StorageFailed, Final, Indeterminate),
            (ProposeError::Shutdown, Final, Indeterminate),
            (ProposeError::Session(SessionRefusal::Unknown), Final, Final),
            (ProposeError::Session(SessionRefusal::Acked), Final, Final),
        ];
        for (e, submit, waited) in table {
            assert_eq!(class(&propose_outcome(Submit, e.clone())), submit, "{e:?} at submission");
            assert_eq!(class(&propose_outcome(Waited, e.clone())), waited, "{e:?} after submission");
            // Backpressure is told apart (held longer), also after forwarding.
            let busy = matches!(e, ProposeError::Busy(_));
            let forwarded = forwarded_reply(true, 2, propose_outcome(Submit, e.clone()).to_value());
            for o in [propose_outcome(Submit, e.clone()), forwarded] {
                assert_eq!(matches!(&o, Outcome::Retry(w, _) if is_busy(w)), busy, "{e:?}: {o:?}");
            }
        }
        // A session refusal is recognisable, also after forwarding.
        for r in [SessionRefusal::Unknown, SessionRefusal::Acked, SessionRefusal::NotSupported] {
            let o = propose_outcome(Waited, ProposeError::Session(r));
            let Outcome::Fail(Value::Error(e)) = &o else { panic!("{o:?}") };
            assert!(is_session_refused(e), "{e}");
            match forwarded_reply(true, 2, o.to_value()) {
                Outcome::Done(Value::Error(e)) => assert!(is_session_refused(&e), "{e}"),
                o => panic!("a forwarded session refusal came back as {o:?}"),
            }
        }
        // The leader hint is followed.
        assert_eq!(
            propose_outcome(Waited, ProposeError::NotLeader { leader_hint: Some(2) }),
            Outcome::Redirect(Some(2))
        );
        assert_eq!(
            propose_outcome(Waited, ProposeError::TransferInProgress { to: Some(3) }),
            Outcome::Retry("leadership transfer in progress".into(), Some(3))
        );
    }

    /// Every `MembershipError` variant, the same rule.
    #[test]
    fn every_membership_error_is_retried_only_when_never_appended() {
        use Class::*;
        use Stage::*;
        let table: Vec<(MembershipError, Class, Class)> = vec![
            (MembershipError::NotLeader { leader_hint: Some(2) }, Retry, Retry),
            (MembershipError::GroupNotFound(1000), Retry, Retry),
            (MembershipError::ChangePending, Retry, Retry),
            (MembershipError::LeaderNotReady, Retry, Retry),
            (MembershipError::TransferInProgress, Retry, Retry),
            (MembershipError::LearnerNotCaughtUp { node: 4, lag: 100 }, Retry, Retry),
            (MembershipError::Busy, Retry, Retry),
            (MembershipError::Dropped, Retry, Retry),
            (MembershipError::Invalid { node: 4, why: "already a member".into() }, Final, Final),
            (MembershipError::Conf(flotilla_engine::raft::conf::ConfChangeError::InJoint), Final, Final),
            (MembershipError::Indeterminate, Indeterminate, Indeterminate),
            (MembershipError::StorageFailed, Final, Indeterminate),
            (MembershipError::Shutdown, Final, Indeterminate),
        ];
        for (e, submit, waited) in table {
            assert_eq!(class(&member_outcome(Submit, e.clone())), submit, "{e:?} at submission");
            assert_eq!(class(&member_outcome(Waited, e.clone())), waited, "{e:?} after submission");
        }
    }

    /// Reads change nothing: every failure that could clear up is retried.
    #[test]
    fn read_errors_retry_unless_the_node_is_down() {
        for e in [
            ReadError::NotLeader { leader_hint: None },
            ReadError::GroupNotFound(1000),
            ReadError::Busy(flotilla_engine::api::BusyReason::Mailbox),
            ReadError::Busy(flotilla_engine::api::BusyReason::PendingReads),
            ReadError::Busy(flotilla_engine::api::BusyReason::WorkerReads),
            ReadError::Timeout,
        ] {
            assert!(read_outcome(e.clone()).retryable(), "{e:?}");
            let busy = matches!(&e, ReadError::Busy(_));
            assert_eq!(matches!(read_outcome(e.clone()), Outcome::Retry(w, _) if is_busy(&w)), busy, "{e:?}");
        }
        for e in [ReadError::StorageFailed, ReadError::Shutdown] {
            assert_eq!(class(&read_outcome(e.clone())), Class::Final, "{e:?}");
        }
    }

    /// The retry decision is the engine's class: an error is retried exactly when its
    /// class is `Redirect` or `Retry`, at submission and after it.
    #[test]
    fn retry_follows_the_engine_class() {
        use flotilla_engine::api::ErrorClass;
        let retried = |c: ErrorClass| matches!(c, ErrorClass::Redirect | ErrorClass::Retry);
        let proposals = [
            ProposeError::NotLeader { leader_hint: Some(2) },
            ProposeError::TransferInProgress { to: Some(3) },
            ProposeError::GroupNotFound(7),
            ProposeError::Busy(BusyReason::WalPending),
            ProposeError::Dropped,
            ProposeError::TooLarge { len: 10, max: 5 },
            ProposeError::Indeterminate,
            ProposeError::StorageFailed,
            ProposeError::Shutdown,
        ];
        for e in proposals {
            for stage in [Stage::Submit, Stage::Waited] {
                assert_eq!(propose_outcome(stage, e.clone()).retryable(), retried(e.class()), "{e:?}");
            }
        }
        let changes = [
            MembershipError::NotLeader { leader_hint: None },
            MembershipError::LearnerNotCaughtUp { node: 4, lag: 100 },
            MembershipError::Invalid { node: 4, why: "x".into() },
            MembershipError::Indeterminate,
            MembershipError::Shutdown,
        ];
        for e in changes {
            for stage in [Stage::Submit, Stage::Waited] {
                assert_eq!(member_outcome(stage, e.clone()).retryable(), retried(e.class()), "{e:?}");
            }
        }
        for e in [ReadError::NotLeader { leader_hint: Some(2) }, ReadError::Timeout, ReadError::Shutdown] {
            assert_eq!(read_outcome(e.clone()).retryable(), retried(e.class()), "{e:?}");
        }
        // A read's "no leader here" goes to the leader it names, if any.
        assert_eq!(read_outcome(ReadError::NotLeader { leader_hint: Some(2) }), Outcome::Redirect(Some(2)));
    }

    /// Every `TransferError` variant: a transfer to the leader is done, refusals are
    /// retried (at the hinted node), the rest is a final `ERR`.
    #[test]
    fn transfer_errors_retry_refusals_and_fail_the_rest() {
        use Class::*;
        let table: Vec<(TransferError, Outcome)> = vec![
            (TransferError::ToSelf(1), Outcome::Done(Value::ok())),
            (TransferError::NotLeader { leader_hint: Some(2) }, Outcome::Redirect(Some(2))),
            (TransferError::NotLeader { leader_hint: None }, Outcome::Redirect(None)),
            (TransferError::GroupNotFound(7), Outcome::Redirect(None)),
            (TransferError::Busy, Outcome::Retry("busy".into(), None)),
            (
                TransferError::ConfChangePending,
                Outcome::Retry("membership change of group 7 pending".into(), None),
            ),
        ];
        for (e, o) in table {
            assert_eq!(transfer_outcome(7, e.clone()), o, "{e:?}");
        }
        for e in [
            TransferError::NotMember(4),
            TransferError::NotVoter(4),
            TransferError::StorageFailed,
            TransferError::Shutdown,
        ] {
            let o = transfer_outcome(7, e.clone());
            assert_eq!(class(&o), Final, "{e:?}");
            assert_eq!(o, Outcome::Fail(Value::err(format!("ERR {e}"))), "{e:?}");
        }
    }

    /// Every way a forwarded operation can fail on the connection: a write is retried only
    /// when nothing was sent.
    #[test]
    fn forwarding_failures_retry_a_write_only_when_nothing_was_sent() {
        use Class::*;
        let connect = || ClientError::Connect {
            addr: "127.0.0.1:1".into(),
            error: std::io::ErrorKind::ConnectionRefused.into(),
        };
        let io = |k: std::io::ErrorKind| ClientError::Io(k.into());
        // (error, sent, write, read)
        let table: Vec<(ClientError, bool, Class, Class)> = vec![
            (connect(), false, Retry, Retry),
            // AUTH on a fresh connection failed: the request itself was not written.
            (io(std::io::ErrorKind::ConnectionReset), false, Retry, Retry),
            // Connect errors never sent anything, whatever the caller thinks.
            (connect(), true, Retry, Retry),
            // The request was written, then the reply was lost.
            (io(std::io::ErrorKind::UnexpectedEof), true, Indeterminate, Retry),
            (io(std::io::ErrorKind::ConnectionReset), true, Indeterminate, Retry),
            (io(std::io::ErrorKind::BrokenPipe), true, Indeterminate, Retry),
            (io(std::io::ErrorKind::WouldBlock), true, Indeterminate, Retry),
            (io(std::io::ErrorKind::TimedOut), true, Indeterminate, Retry),
            (ClientError::Protocol("bad reply".into()), true, Indeterminate, Retry),
        ];
        for (e, sent, write, read) in table {
            assert_eq!(class(&forward_failure(true, sent, 2, &e)), write, "write, sent {sent}: {e}");
            assert_eq!(class(&forward_failure(false, sent, 2, &e)), read, "read, sent {sent}: {e}");
        }
    }

    /// Every kind of reply from the leader's node to a forwarded operation.
    #[test]
    fn forwarded_replies_retry_only_refusals() {
        use Class::*;
        let ok = Value::Int(7);
        let table: Vec<(Value, Class, Class)> = vec![
            (ok.clone(), Final, Final),
            (Value::ok(), Final, Final),
            (Value::err("FLOTILLA.REDIRECT 3"), Retry, Retry),
            (Value::err("FLOTILLA.REDIRECT 0"), Retry, Retry),
            (Value::err("FLOTILLA.RETRY 0 busy: Mailbox"), Retry, Retry),
            (indeterminate("x"), Indeterminate, Indeterminate),
            (Value::err("FLOTILLA.ERR ERR value is not an integer or out of range"), Final, Final),
            // Untagged errors: a panic's reply, a full server, anything unexpected.
            (Value::err("ERR internal error"), Indeterminate, Final),
            (Value::err("ERR max number of clients reached"), Indeterminate, Final),
            (Value::err("ERR value is not an integer or out of range"), Indeterminate, Final),
        ];
        for (v, write, read) in table {
            assert_eq!(class(&forwarded_reply(true, 2, v.clone())), write, "write: {v:?}");
            assert_eq!(class(&forwarded_reply(false, 2, v.clone())), read, "read: {v:?}");
        }
        assert_eq!(forwarded_reply(true, 2, Value::err("FLOTILLA.REDIRECT 3")), Outcome::Redirect(Some(3)));
        assert_eq!(
            forwarded_reply(true, 2, Value::err("FLOTILLA.RETRY 4 busy: Mailbox")),
            Outcome::Retry("busy: Mailbox".into(), Some(4))
        );
    }

    /// What the receiver of `FLOTILLA.LOCAL` answers reads back as the same outcome at the
    /// forwarding node: a final error stays final (untagged it would be INDETERMINATE), an
    /// unknown outcome stays unknown, a refusal stays a refusal.
    #[test]
    fn local_replies_round_trip() {
        let cases = [
            Outcome::Done(Value::Int(3)),
            Outcome::Done(Value::err("ERR value is not an integer or out of range")),
            Outcome::Fail(Value::err("ERR proposal of 10 bytes exceeds the maximum 5")),
            Outcome::Fail(indeterminate("x")),
            Outcome::Redirect(Some(2)),
            Outcome::Redirect(None),
            Outcome::Retry("busy".into(), None),
            Outcome::Retry("transfer".into(), Some(5)),
        ];
        for o in cases {
            let back = forwarded_reply(true, 2, o.clone().to_value());
            let same = match (&o, &back) {
                (Outcome::Done(a) | Outcome::Fail(a), Outcome::Done(b) | Outcome::Fail(b)) => a == b,
                _ => o == back,
            };
            assert!(same, "{o:?} came back as {back:?}");
        }
    }
}
