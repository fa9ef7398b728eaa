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
use flotilla_engine::api::{Proposal, ProposeError, ReadBarrier, ReadError};

use crate::commands::{finish_read, finish_write, run_batch, start_here, write_is_final, Session};
use crate::node::{Node, Op, Outcome};
use crate::resp::Value;

enum State {
    /// A proposal, and when it was made (for the propose latency metric).
    Write(Proposal, std::time::Instant),
    Read(ReadBarrier),
    /// Its result, and how long it took.
    Wrote(Result<Bytes, ProposeError>, std::time::Duration),
    ReadDone(Result<u64, ReadError>),
}

/// A batch of commands, each as its arguments.
pub type Commands = Vec<Vec<Vec<u8>>>;

/// A batch whose first commands are in flight.
pub struct InFlight {
    sess: Session,
    ops: Vec<(Op, State)>,
    /// The batch's commands after the started ones (run by an executor, in order, once the
    /// started ones are answered).
    rest: Commands,
}

/// The rest of a batch for an executor thread: the started operations with their results,
/// and the commands after them.
pub struct Finish {
    sess: Session,
    ops: Vec<(Op, Resolved)>,
    rest: Commands,
}

enum Resolved {
    Write(Outcome),
    Read(bool),
}

impl InFlight {
    /// Starts the leading run of `cmds` that this node serves itself (all writes or all
    /// reads, as the pipelined path runs them); the rest waits in the batch. Gives the
    /// commands and the session back when not even the first one can start here.
    pub fn start(node: &Node, cmds: Commands, sess: Session) -> Result<InFlight, (Commands, Session)> {
        let mut ops: Vec<(Op, State)> = Vec::new();
        let mut reads = None;
        let mut taken = 0;
        for args in &cmds {
            let Some(op) = start_here(node, args, &sess) else { break };
            let is_read = matches!(op, Op::Read { .. });
            if reads.is_some_and(|r| r != is_read) {
                if let Op::Write { group, tag, .. } = &op {
                    node.answered(*group, *tag, Value::ok());
                }
                break;
            }
            let state = match &op {
                Op::Write { group, cmd, tag } => match node.propose_tagged(*group, cmd.clone(), *tag) {
                    Ok(p) => State::Write(p, std::time::Instant::now()),
                    Err(_) => {
                        // Not started: the executor runs it afresh (its tag is released).
                        node.answered(*group, *tag, Value::ok());
                        break;
                    }
                },
                Op::Read { group, .. } => match node.engine().read_index(*group) {
                    Ok(b) => State::Read(b),
                    Err(_) => break,
                },
                _ => break,
            };
            reads = Some(is_read);
            ops.push((op, state));
            taken += 1;
        }
        if ops.is_empty() {
            return Err((cmds, sess));
        }
        let rest = cmds.into_iter().skip(taken).collect();
        Ok(InFlight { sess, ops, rest })
    }

    /// Polls the results not yet arrived (each registers `waker`, woken on completion);
    /// whether every one has arrived.
    pub fn poll(&mut self, waker: &Waker) -> bool {
        let mut cx = Context::from_waker(waker);
        let mut all = true;
        for (_, st) in &mut self.ops {
            match st {
                State::Write(p, at) => match Pin::new(p).poll(&mut cx) {
                    Poll::Ready(r) => *st = State::Wrote(r, at.elapsed()),
                    Poll::Pending => all = false,
                },
                State::Read(b) => match Pin::new(b).poll(&mut cx) {
                    Poll::Ready(r) => *st = State::ReadDone(r),
                    Poll::Pending => all = false,
                },
                State::Wrote(..) | State::ReadDone(_) => {}
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
        for (op, st) in self.ops {
            let r = match st {
                State::Wrote(r, took) => {
                    node.kv_metrics().observe_propose(took);
                    Resolved::Write(Node::proposal_outcome(r))
                }
                State::ReadDone(r) => Resolved::Read(r.is_ok()),
                // Not arrived: only reachable if called before `poll` said all arrived; the
                // executor waits for nothing more, and treats it as unconfirmed.
                State::Write(..) => Resolved::Write(Outcome::Fail(crate::outcome::indeterminate(
                    "answered before its result arrived",
                ))),
                State::Read(_) => Resolved::Read(false),
            };
            here &= match &r {
                Resolved::Write(o) => write_is_final(&op, o),
                Resolved::Read(confirmed) => *confirmed,
            };
            ops.push((op, r));
        }
        let f = Finish { sess: self.sess, ops, rest: self.rest };
        if !here {
            return Err(f);
        }
        let replies = f.ops.into_iter().map(|(op, r)| resolve(node, op, r)).collect();
        Ok((replies, f.sess))
    }
}

fn resolve(node: &Node, op: Op, r: Resolved) -> Value {
    match r {
        Resolved::Write(o) => finish_write(node, op, false, o),
        Resolved::Read(confirmed) => finish_read(node, op, false, confirmed),
    }
}

/// Finishes a batch on an executor thread: the started operations' replies (retrying or
/// learning outcomes where needed, which may block), then the rest of the batch.
pub fn finish(node: &Node, f: Finish) -> (Vec<Value>, Session) {
    let Finish { mut sess, ops, rest } = f;
    let mut replies: Vec<Value> = ops.into_iter().map(|(op, r)| resolve(node, op, r)).collect();
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
    for (op, st) in inf.ops {
        let o = match st {
            State::Write(p, _) => match p.wait_timeout(budget) {
                Ok(r) => Node::proposal_outcome(r),
                Err(_) => Outcome::Fail(crate::outcome::indeterminate("not applied in time")),
            },
            State::Wrote(r, _) => Node::proposal_outcome(r),
            State::Read(_) | State::ReadDone(_) => continue,
        };
        let _ = finish_write(node, op, false, o);
    }
}
