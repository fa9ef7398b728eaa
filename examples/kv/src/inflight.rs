//! A connection's batch in flight without a thread waiting for it: the client port's loop
//! starts the proposals (or read barriers) of a run of single-key commands that this node
//! serves itself, and the engine's completions wake the loop through a [`Waker`], so many
//! in-flight requests cost no thread each (issue 14 point 5). Anything that needs more
//! (a refusal to retry, an unknown outcome to learn, a command after the run) goes to an
//! executor thread as a [`Finish`], which completes the batch in order.
//!
//! Owns the started operations and their results until the batch's replies are known.
//! Never blocks: polling a result is a lock and a check, and every slow continuation is
//! handed to the executors.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use flotilla_engine::api::{Proposal, ProposeError, ReadBarrier};

use crate::commands::{finish_read, finish_write, plan_here, run_batch, write_is_final, Session};
use crate::joint::{Continuation, Joiner, JointWrite, Seat};
use crate::joint_read::{JointRead, ReadJoiner};
use crate::node::{Node, Op, Outcome};
use crate::resp::Value;
use crate::sm::WriteCmd;

/// The most commands one entry of a connection's pipelined writes (or one joint entry of
/// several connections' writes) carries. 256 rather than 64: with 50 clients pipelining
/// 16 SETs each, entries of 256 took 7% less server CPU per SET and gave 5 to 11% more
/// SETs/s in five alternating pairs (BENCHMARKS.md, session 30).
pub const MAX_BATCH_CMDS: usize = 256;
/// The most bytes of commands one such entry carries (a larger command goes alone).
pub const MAX_BATCH_BYTES: usize = 1 << 20;

enum State {
    /// A proposal, and when it was made (for the propose latency metric).
    Write(Proposal, std::time::Instant),
    Read(ReadBarrier),
    /// Its result, and how long it took.
    Wrote(Result<Bytes, ProposeError>, std::time::Duration),
    /// A seat in an entry shared with other connections' writes ([`crate::joint`]).
    Joined(std::sync::Arc<JointWrite>, Seat),
    /// A joint entry's final outcome for this connection's commands.
    JointDone(Outcome),
    /// A barrier shared with other connections' reads of the shard ([`crate::joint_read`]).
    JointRead(std::sync::Arc<JointRead>),
    /// Whether the read's barrier confirmed it.
    ReadDone(bool),
}

/// A batch of commands, each as its arguments.
pub type Commands = Vec<Vec<Vec<u8>>>;

/// A batch whose first commands are in flight.
pub struct InFlight {
    sess: Session,
    /// Each started operation, and how many of the batch's commands it answers (more than
    /// one for a [`WriteCmd::Batch`]).
    ops: Vec<(Op, State, usize)>,
    /// The batch's commands after the started ones (run by an executor, in order, once the
    /// started ones are answered).
    rest: Commands,
}

/// The rest of a batch for an executor thread: the started operations with their results,
/// and the commands after them.
pub struct Finish {
    sess: Session,
    ops: Vec<(Op, Resolved, usize)>,
    rest: Commands,
}

enum Resolved {
    Write(Outcome),
    Read(bool),
}

impl InFlight {
    /// Starts the leading run of `cmds` that this node serves itself (all writes or all
    /// reads, as the pipelined path runs them); the rest waits in the batch. Consecutive
    /// writes to one shard are proposed as one entry ([`WriteCmd::Batch`], up to
    /// [`MAX_BATCH_CMDS`] commands and [`MAX_BATCH_BYTES`]), in one session tag. Gives the
    /// commands and the session back when not even the first one can start here.
    ///
    /// A batch that is all writes of one shard (one write, as a client that does not
    /// pipeline sends) joins `joiner`'s entry for the shard instead (with `joint_writes`): writes of different
    /// connections in one turn of the loop share a Raft entry ([`crate::joint`]), proposed
    /// when the turn ends ([`Joiner::flush`]); `waker` is woken when its replies are known.
    /// With `reads` (`joint_reads`), its reads share one barrier per shard with the other
    /// reads of the turn ([`ReadJoiner::flush`]).
    pub fn start(
        node: &Node,
        cmds: Commands,
        sess: Session,
        joiner: Option<&mut Joiner>,
        mut reads: Option<&mut ReadJoiner>,
        waker: &Waker,
    ) -> Result<InFlight, (Commands, Session)> {
        // The run: what may start here, untagged, all reads or all writes.
        let mut run: Vec<Op> = Vec::new();
        for args in &cmds {
            let Some(op) = plan_here(node, args, &sess) else { break };
            let is_read = matches!(op, Op::Read { .. });
            if run.first().is_some_and(|f| matches!(f, Op::Read { .. }) != is_read) {
                break;
            }
            run.push(op);
        }
        if let (Some(joiner), Some(group)) = (joiner, joinable(&run, cmds.len())) {
            let own: Vec<Vec<u8>> = run
                .into_iter()
                .filter_map(|op| if let Op::Write { cmd, .. } = op { Some(cmd) } else { None })
                .collect();
            let n = own.len();
            let mine = if n == 1 { own[0].clone() } else { WriteCmd::Batch(own.clone()).encode() };
            let (joint, seat) = joiner.join(group, own, waker);
            let op = Op::Write { group, cmd: mine, tag: None };
            return Ok(InFlight { sess, ops: vec![(op, State::Joined(joint, seat), n)], rest: Vec::new() });
        }
        let mut ops: Vec<(Op, State, usize)> = Vec::new();
        let mut taken = 0;
        let mut run = run.into_iter().peekable();
        while let Some(op) = run.next() {
            let (op, n) = match op {
                Op::Write { group, cmd, .. } => {
                    // The following writes of the same shard join this one's entry.
                    let mut batch = vec![cmd];
                    let mut bytes = batch[0].len();
                    while let Some(Op::Write { group: g, cmd: next, .. }) = run.peek() {
                        if *g != group
                            || batch.len() >= MAX_BATCH_CMDS
                            || bytes + next.len() > MAX_BATCH_BYTES
                        {
                            break;
                        }
                        bytes += next.len();
                        if let Some(Op::Write { cmd, .. }) = run.next() {
                            batch.push(cmd);
                        }
                    }
                    let n = batch.len();
                    let cmd = if n == 1 { batch.remove(0) } else { WriteCmd::Batch(batch).encode() };
                    let Some(tag) = node.session_tag_now(group) else { break };
                    (Op::Write { group, cmd, tag: Some(tag) }, n)
                }
                op => (op, 1),
            };
            let state = match &op {
                Op::Write { group, cmd, tag } => match node.propose_tagged(*group, cmd.clone(), *tag) {
                    Ok(p) => State::Write(p, std::time::Instant::now()),
                    Err(_) => {
                        // Not started: the executor runs it afresh (its tag is released).
                        node.answered(*group, *tag, Value::ok());
                        break;
                    }
                },
                Op::Read { group, .. } => match reads.as_deref_mut() {
                    Some(rj) => State::JointRead(rj.join(*group, waker)),
                    None => match node.engine().read_index(*group) {
                        Ok(b) => State::Read(b),
                        Err(_) => break,
                    },
                },
                _ => break,
            };
            ops.push((op, state, n));
            taken += n;
        }
        if ops.is_empty() {
            return Err((cmds, sess));
        }
        let rest = cmds.into_iter().skip(taken).collect();
        Ok(InFlight { sess, ops, rest })
    }

    /// Polls the results not yet arrived (each registers `waker`, woken on completion);
    /// whether every one has arrived.
    /// Joint entries whose outcome needs an executor go to `cont`.
    pub fn poll(&mut self, node: &Node, waker: &Waker, cont: &mut Vec<Continuation>) -> bool {
        let mut cx = Context::from_waker(waker);
        let mut all = true;
        for (_, st, _) in &mut self.ops {
            match st {
                State::Joined(j, seat) => match j.poll(node, *seat, cont) {
                    Some(o) => *st = State::JointDone(o),
                    None => all = false,
                },
                State::Write(p, at) => match Pin::new(p).poll(&mut cx) {
                    Poll::Ready(r) => *st = State::Wrote(r, at.elapsed()),
                    Poll::Pending => all = false,
                },
                State::Read(b) => match Pin::new(b).poll(&mut cx) {
                    Poll::Ready(r) => *st = State::ReadDone(r.is_ok()),
                    Poll::Pending => all = false,
                },
                State::JointRead(j) => match j.poll() {
                    Some(ok) => *st = State::ReadDone(ok),
                    None => all = false,
                },
                State::Wrote(..) | State::ReadDone(_) | State::JointDone(_) => {}
            }
        }
        all
    }

    /// Once every result arrived ([`InFlight::poll`]): the batch's replies and its
    /// session when every command is answered without running anything more, else what
    /// an executor must finish ([`finish`]).
    pub fn complete(self, node: &Node) -> Result<(Vec<Value>, Session), Finish> {
        let mut ops = Vec::with_capacity(self.ops.len());
        let mut here = self.rest.is_empty();
        for (op, st, n) in self.ops {
            let r = match st {
                State::Wrote(r, took) => {
                    node.kv_metrics().observe_propose(took);
                    Resolved::Write(Node::proposal_outcome(r))
                }
                State::ReadDone(ok) => Resolved::Read(ok),
                State::JointDone(o) => Resolved::Write(o),
                // Not arrived: only reachable if called before `poll` said all arrived; the
                // executor waits for nothing more, and treats it as unconfirmed.
                State::Write(..) => Resolved::Write(Outcome::Fail(crate::outcome::indeterminate(
                    "answered before its result arrived",
                ))),
                State::Read(_) | State::JointRead(_) => Resolved::Read(false),
                State::Joined(..) => Resolved::Write(Outcome::Fail(crate::outcome::indeterminate(
                    "answered before its result arrived",
                ))),
            };
            here &= match &r {
                Resolved::Write(o) => write_is_final(&op, o) && !refused_slots(o),
                Resolved::Read(confirmed) => *confirmed,
            };
            ops.push((op, r, n));
        }
        let f = Finish { sess: self.sess, ops, rest: self.rest };
        if !here {
            return Err(f);
        }
        let replies = f.ops.into_iter().flat_map(|(op, r, n)| resolve(node, op, r, n)).collect();
        Ok((replies, f.sess))
    }
}

/// The replies of a started operation that answers `n` commands: a batch's array split
/// into its commands' replies, or its one error repeated for each. A command of a batch
/// the shard refused for its slot (`-WRONGSLOT`: split off since; not applied) runs again
/// on its own, on the slow path, which follows the slot to its new shard (may block: only
/// on an executor, see [`refused_slots`]).
fn resolve(node: &Node, op: Op, r: Resolved, n: usize) -> Vec<Value> {
    let batch = match (&op, n) {
        (Op::Write { group, cmd, .. }, 2..) => match WriteCmd::decode(cmd) {
            Some(WriteCmd::Batch(cmds)) => Some((*group, cmds)),
            _ => None,
        },
        _ => None,
    };
    let v = match r {
        Resolved::Write(o) => finish_write(node, op, false, o),
        Resolved::Read(confirmed) => finish_read(node, op, false, confirmed),
    };
    let mut replies = split_replies(v, n);
    if let Some((group, cmds)) = batch {
        for (reply, cmd) in replies.iter_mut().zip(cmds) {
            if matches!(reply, Value::Error(e) if crate::shard_split::is_wrong_slot(e)) {
                *reply = node.exec(Op::Write { group, cmd, tag: None });
            }
        }
    }
    replies
}

/// The shard of `run`, the planned start of a batch of `total` commands, when the whole
/// batch is writes of that one shard (so it can share an entry with other connections'
/// writes: nothing of the batch is left to run after it).
fn joinable(run: &[Op], total: usize) -> Option<u64> {
    if run.len() != total || total == 0 {
        return None;
    }
    let mut group = None;
    let mut bytes = 0;
    for op in run {
        let Op::Write { group: g, cmd, tag: None } = op else { return None };
        if group.is_some_and(|x| x != *g) {
            return None;
        }
        group = Some(*g);
        bytes += cmd.len();
    }
    (total <= MAX_BATCH_CMDS && bytes <= MAX_BATCH_BYTES).then_some(group).flatten()
}

/// Whether `o`, a batch's outcome, refused some of its commands for their slots: they
/// run again on an executor ([`resolve`]).
fn refused_slots(o: &Outcome) -> bool {
    matches!(o, Outcome::Done(Value::Array(Some(vs)))
        if vs.iter().any(|v| matches!(v, Value::Error(e) if crate::shard_split::is_wrong_slot(e))))
}

/// `v`, the reply of an entry carrying `n` commands: one reply each.
fn split_replies(v: Value, n: usize) -> Vec<Value> {
    if n == 1 {
        return vec![v];
    }
    match v {
        Value::Array(Some(vs)) if vs.len() == n => vs,
        // Not applied (or its outcome unknown): the same answer for every command.
        e @ Value::Error(_) => vec![e; n],
        other => vec![Value::err(format!("ERR unexpected reply to a batch of {n}: {other:?}")); n],
    }
}

/// Finishes a batch on an executor thread: the started operations' replies (retrying or
/// learning outcomes where needed, which may block), then the rest of the batch.
pub fn finish(node: &Node, f: Finish) -> (Vec<Value>, Session) {
    let Finish { mut sess, ops, rest } = f;
    let mut replies: Vec<Value> = ops.into_iter().flat_map(|(op, r, n)| resolve(node, op, r, n)).collect();
    if !rest.is_empty() {
        replies.extend(run_batch(node, &rest, &mut sess));
    }
    (replies, sess)
}

/// Sees a batch through whose connection is gone: waits (on an executor thread) for each
/// started write's result, continuing it where needed, so its client session learns it was
/// answered. The replies go nowhere.
pub fn abandon(node: &Node, inf: InFlight) {
    let budget = node.config().retry_budget + std::time::Duration::from_secs(3);
    for (op, st, _) in inf.ops {
        let o = match st {
            State::Write(p, _) => match p.wait_timeout(budget) {
                Ok(r) => Node::proposal_outcome(r),
                Err(_) => Outcome::Fail(crate::outcome::indeterminate("not applied in time")),
            },
            State::Wrote(r, _) => Node::proposal_outcome(r),
            // The joint entry is seen through by its last member to go.
            State::Joined(j, _) => {
                j.abandon(node);
                continue;
            }
            State::Read(_) | State::JointRead(_) | State::ReadDone(_) | State::JointDone(_) => continue,
        };
        let _ = finish_write(node, op, false, o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_reply_splits_into_its_commands_and_an_error_answers_each() {
        let arr = Value::Array(Some(vec![Value::ok(), Value::Int(3)]));
        assert_eq!(split_replies(arr.clone(), 2), vec![Value::ok(), Value::Int(3)]);
        assert_eq!(split_replies(arr.clone(), 1), vec![arr], "a single command's array reply is its own");
        let e = Value::err("TRYAGAIN no leader");
        assert_eq!(split_replies(e.clone(), 3), vec![e.clone(), e.clone(), e]);
        let wrong = split_replies(Value::Array(Some(vec![Value::ok()])), 2);
        assert!(
            wrong.iter().all(|v| matches!(v, Value::Error(_))),
            "a short array is not passed off as replies"
        );
        assert_eq!(wrong.len(), 2);
    }

    #[test]
    fn a_batch_with_a_command_refused_for_its_slot_goes_to_an_executor() {
        let refused = Value::err("WRONGSLOT 5000 is not served by this shard");
        assert!(refused_slots(&Outcome::Done(Value::Array(Some(vec![Value::ok(), refused.clone()])))));
        assert!(!refused_slots(&Outcome::Done(Value::Array(Some(vec![Value::ok(), Value::Int(1)])))));
        assert!(!refused_slots(&Outcome::Done(Value::ok())));
    }
}
