//! Writes of different connections to one shard, started in the same turn of the client
//! port's loop, proposed as ONE Raft entry ([`WriteCmd::Batch`] under one tag of the
//! node's client session of the shard): with many clients each sending one write at a
//! time, the engine gets one proposal per shard per turn instead of one per client
//! (issue 14 point 5).
//!
//! Owns a joint entry from its first member to its final reply: the members' commands
//! while the turn builds it ([`Joiner`]), the proposal, and the one continuation of an
//! outcome that is not final (a retry with the same tag, or learning an unknown outcome),
//! which an executor runs ONCE for all members ([`JointWrite::run_on_executor`]):
//! continuing per member would reuse the entry's tag for other commands. Each member then
//! takes its slice of the entry's reply ([`JointWrite::poll`]).
//!
//! Never blocks the loop: polling is a lock and a check, and the continuation runs on an
//! executor. Never answers a member before the entry's final reply is known.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use flotilla_engine::api::Proposal;

use crate::commands::{finish_write, write_is_final};
use crate::inflight::{MAX_BATCH_BYTES, MAX_BATCH_CMDS};
use crate::node::{Node, Op, Outcome};
use crate::resp::Value;
use crate::sm::WriteCmd;

enum St {
    /// The turn is still adding members' commands.
    Building(Vec<Vec<u8>>),
    /// Proposed: the proposal, when, and the operation (with its tag).
    Proposed(Proposal, Instant, Op),
    /// Its outcome so far is not final: waits for an executor to continue it from there.
    Continue(Op, Outcome),
    /// An executor continues it.
    Continuing,
    /// The entry's final reply (an array of one reply per command, or one error for all;
    /// a single command's own reply when the entry carries one).
    Final(Value),
}

struct Inner {
    st: St,
    /// The members' wakers, in join order (woken when the final reply is known).
    members: Vec<Waker>,
    /// Commands joined in all.
    cmds: usize,
    /// Their bytes.
    bytes: usize,
    /// Members whose connection is still there (see [`JointWrite::abandon`]).
    live: usize,
}

/// One entry shared by the writes of several connections to one shard.
pub struct JointWrite {
    group: u64,
    inner: Mutex<Inner>,
}

/// A joint entry the loop hands to an executor ([`JointWrite::run_on_executor`]).
pub struct Continuation(pub(crate) Arc<JointWrite>);

/// What several connections wait on together (a joint entry, a shared read barrier,
/// [`crate::joint_read`]): its members are woken together.
pub(crate) trait Members: Send + Sync + 'static {
    /// Wakes every member.
    fn wake_members(&self);
}

/// The waker of what the members wait on (a joint entry's proposal, a shared read
/// barrier): wakes every member.
pub(crate) struct WakeAll<T>(Arc<T>);

impl<T: Members> WakeAll<T> {
    /// A waker that wakes every member of `of`.
    pub(crate) fn waker(of: &Arc<T>) -> Waker {
        Waker::from(Arc::new(WakeAll(of.clone())))
    }
}

impl<T: Members> Wake for WakeAll<T> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.wake_members();
    }
}

/// A member's place in a joint entry: its first command's position and how many.
#[derive(Debug, Clone, Copy)]
pub struct Seat {
    /// Position of the member's first command in the entry.
    pub offset: usize,
    /// The member's commands.
    pub n: usize,
}

impl JointWrite {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The member in `seat`'s outcome once the entry's final reply is known (its waker,
    /// given when it joined, is woken then). An outcome so far that needs a thread (a
    /// refusal to retry, an unknown outcome) goes to an executor once, through `cont`,
    /// for all members.
    pub fn poll(self: &Arc<Self>, node: &Node, seat: Seat, cont: &mut Vec<Continuation>) -> Option<Outcome> {
        let mut g = self.lock();
        if let St::Proposed(p, at, _) = &mut g.st {
            let waker = WakeAll::waker(self);
            if let Poll::Ready(r) = Pin::new(p).poll(&mut Context::from_waker(&waker)) {
                node.kv_metrics().observe_propose(at.elapsed());
                let o = Node::proposal_outcome(r);
                let St::Proposed(_, _, op) = std::mem::replace(&mut g.st, St::Continuing) else {
                    unreachable!("matched above")
                };
                if write_is_final(&op, &o) {
                    // The session may forget its answer now (nothing here blocks).
                    g.st = St::Final(finish_write(node, op, false, o));
                    drop(g);
                    // The other members may have been polled already: they look again.
                    self.wake_members();
                    g = self.lock();
                } else {
                    g.st = St::Continue(op, o);
                    cont.push(Continuation(self.clone()));
                    return None;
                }
            }
        }
        match &g.st {
            St::Final(v) => Some(member_outcome(v, seat, g.cmds)),
            _ => None,
        }
    }

    /// Sees the entry through on an executor thread (may block for the retry budget):
    /// continues an outcome that is not final, once for all members and with the entry's
    /// tag, or waits for the proposal of an entry whose members are all gone (so the
    /// node's client session learns it was answered). Wakes the members.
    pub fn run_on_executor(&self, node: &Node) {
        let (op, o) = {
            let mut g = self.lock();
            match std::mem::replace(&mut g.st, St::Continuing) {
                St::Continue(op, o) => (op, o),
                St::Proposed(p, _, op) if g.live == 0 => {
                    drop(g);
                    let budget = node.config().retry_budget + std::time::Duration::from_secs(3);
                    let o = match p.wait_timeout(budget) {
                        Ok(r) => Node::proposal_outcome(r),
                        Err(_) => Outcome::Fail(crate::outcome::indeterminate("not applied in time")),
                    };
                    (op, o)
                }
                other => {
                    g.st = other;
                    return;
                }
            }
        };
        let v = finish_write(node, op, false, o);
        self.lock().st = St::Final(v);
        self.wake_members();
    }

    /// A member's connection is gone (called on an executor thread). The last one to go
    /// sees a proposed entry through ([`JointWrite::run_on_executor`]).
    pub fn abandon(&self, node: &Node) {
        let last = {
            let mut g = self.lock();
            g.live = g.live.saturating_sub(1);
            g.live == 0
        };
        if last {
            self.run_on_executor(node);
        }
    }

    /// Whether this entry, still open for joining, takes `n` more commands of `bytes`.
    fn fits(&self, n: usize, bytes: usize) -> bool {
        let g = self.lock();
        matches!(g.st, St::Building(_)) && g.cmds + n <= MAX_BATCH_CMDS && g.bytes + bytes <= MAX_BATCH_BYTES
    }
}

impl Members for JointWrite {
    fn wake_members(&self) {
        let members: Vec<Waker> = self.lock().members.clone();
        for w in members {
            w.wake();
        }
    }
}

/// The outcome of the member in `seat` from the entry's final reply `v` (for `total`
/// commands): its own replies (an array when it has several), or the entry's one error.
/// A single command the shard refused for its slot (split off since; not applied) is a
/// retry, as a proposal of its own would have been ([`Node::proposal_outcome`]).
fn member_outcome(v: &Value, seat: Seat, total: usize) -> Outcome {
    let Seat { offset, n } = seat;
    let mine = match v {
        v if total == 1 => v.clone(),
        Value::Array(Some(vs)) if vs.len() == total && n == 1 => vs[offset].clone(),
        Value::Array(Some(vs)) if vs.len() == total => Value::Array(Some(vs[offset..offset + n].to_vec())),
        e @ Value::Error(_) => e.clone(),
        other => Value::err(format!("ERR unexpected reply to a batch of {total}: {other:?}")),
    };
    match mine {
        Value::Error(e) if n == 1 && total > 1 && crate::shard_split::is_wrong_slot(&e) => {
            Outcome::Retry(e, None)
        }
        v => Outcome::Done(v),
    }
}

/// The joint entries a turn of the loop builds, one open entry per shard (a full one is
/// followed by another).
#[derive(Default)]
pub struct Joiner {
    open: Vec<Arc<JointWrite>>,
}

impl Joiner {
    /// Adds a member's `cmds` (all writes of `group`, planned here) with its connection's
    /// `waker`; its seat in the entry it joined.
    pub fn join(&mut self, group: u64, cmds: Vec<Vec<u8>>, waker: &Waker) -> (Arc<JointWrite>, Seat) {
        let bytes: usize = cmds.iter().map(Vec::len).sum();
        let n = cmds.len();
        let found = self.open.iter().rev().find(|j| j.group == group && j.fits(n, bytes));
        let j = match found {
            Some(j) => j.clone(),
            None => {
                let j = Arc::new(JointWrite {
                    group,
                    inner: Mutex::new(Inner {
                        st: St::Building(Vec::new()),
                        members: Vec::new(),
                        cmds: 0,
                        bytes: 0,
                        live: 0,
                    }),
                });
                self.open.push(j.clone());
                j
            }
        };
        let seat = {
            let mut g = j.lock();
            let seat = Seat { offset: g.cmds, n };
            if let St::Building(all) = &mut g.st {
                all.extend(cmds);
            }
            g.cmds += n;
            g.bytes += bytes;
            g.live += 1;
            g.members.push(waker.clone());
            seat
        };
        (j, seat)
    }

    /// Proposes every entry built this turn (each under a fresh tag of the node's session
    /// of its shard), and polls each once so its completion wakes the members. Entries
    /// that could not be proposed, or whose members are all gone already, come back for
    /// an executor.
    pub fn flush(&mut self, node: &Node) -> Vec<Continuation> {
        let mut cont = Vec::new();
        for j in self.open.drain(..) {
            let cmds = {
                let mut g = j.lock();
                match std::mem::replace(&mut g.st, St::Continuing) {
                    St::Building(c) => c,
                    other => {
                        g.st = other;
                        continue;
                    }
                }
            };
            let cmd = match <[Vec<u8>; 1]>::try_from(cmds) {
                Ok([one]) => one,
                Err(all) => WriteCmd::Batch(all).encode(),
            };
            let group = j.group;
            let started = node.session_tag_now(group).and_then(|tag| {
                match node.propose_tagged(group, cmd.clone(), Some(tag)) {
                    Ok(p) => Some((p, tag)),
                    Err(_) => {
                        // Not started: its tag is released, and it runs afresh below.
                        node.answered(group, Some(tag), Value::ok());
                        None
                    }
                }
            });
            match started {
                Some((p, tag)) => {
                    j.lock().st = St::Proposed(p, Instant::now(), Op::Write { group, cmd, tag: Some(tag) });
                    if j.lock().live == 0 {
                        // Every member left during the turn: an executor sees it through.
                        cont.push(Continuation(j.clone()));
                    } else {
                        // Registers the proposal's waker (no member polled it yet).
                        let _ = j.poll(node, Seat { offset: 0, n: 0 }, &mut cont);
                    }
                }
                None => {
                    // Known not appended: the slow path runs it afresh (with its own tag).
                    let o = Outcome::Retry("not started on the fast path".into(), None);
                    j.lock().st = St::Continue(Op::Write { group, cmd, tag: None }, o);
                    cont.push(Continuation(j.clone()));
                }
            }
        }
        cont
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(offset: usize, n: usize) -> Seat {
        Seat { offset, n }
    }

    #[test]
    fn each_member_takes_its_own_replies_from_the_entry() {
        let v = Value::Array(Some(vec![Value::ok(), Value::Int(3), Value::Int(4), Value::ok()]));
        assert_eq!(member_outcome(&v, seat(0, 1), 4), Outcome::Done(Value::ok()));
        assert_eq!(member_outcome(&v, seat(1, 1), 4), Outcome::Done(Value::Int(3)));
        assert_eq!(
            member_outcome(&v, seat(2, 2), 4),
            Outcome::Done(Value::Array(Some(vec![Value::Int(4), Value::ok()])))
        );
    }

    #[test]
    fn a_single_command_entry_is_its_own_reply_and_an_error_answers_every_member() {
        let arr = Value::Array(Some(vec![Value::Int(1)]));
        assert_eq!(
            member_outcome(&arr, seat(0, 1), 1),
            Outcome::Done(arr.clone()),
            "a reply that is an array"
        );
        let e = Value::err("TRYAGAIN no leader");
        assert_eq!(member_outcome(&e, seat(3, 2), 5), Outcome::Done(e.clone()));
        assert!(matches!(
            member_outcome(&Value::Array(Some(vec![Value::ok()])), seat(0, 1), 2),
            Outcome::Done(Value::Error(_))
        ));
    }

    #[test]
    fn a_member_refused_for_its_slot_is_retried_alone() {
        let refused = Value::err("WRONGSLOT 5000 is not served by this shard");
        let v = Value::Array(Some(vec![Value::ok(), refused]));
        assert!(matches!(member_outcome(&v, seat(1, 1), 2), Outcome::Retry(..)));
        assert_eq!(member_outcome(&v, seat(0, 1), 2), Outcome::Done(Value::ok()));
    }
}
