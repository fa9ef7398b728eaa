//! [`ApplyLane`]: the worker's way to its [`Applier`]: the apply thread, fed through a
//! FIFO channel, and the worker's own turn at a quick batch while that thread is idle.
//!
//! Why: every committed batch handed to the apply thread costs a thread wake-up (tens of
//! microseconds on a small virtual machine), and with one proposal in flight that wake-up
//! sits on the path from commit to the proposer's answer. A batch of a few entries whose
//! every command the state machine calls quick (`StateMachine::is_quick`) is applied by
//! the worker itself when nothing is queued for the thread: the proposer is answered from
//! the worker, and the thread is not woken.
//!
//! Order: the worker counts every command it sends; the thread takes the applier's lock
//! for each command and counts it done after releasing it. The worker runs a batch itself
//! only when that count is zero (everything sent is done and the lock is free; only the
//! worker sends, so nothing can come between), so commands run in the order the worker
//! made them, whoever runs them. The report of a batch run here goes into the same
//! channel as the thread's, behind every earlier report.
//!
//! A state machine that calls a command quick and then takes long over it (past
//! `EngineConfig::inline_apply_slow`, 10 ms by default) stalls the worker once: its
//! group's batches then all go to the apply thread for [`INLINE_APPLY_SLOW_PAUSE`] (or
//! until the group is removed), so a state machine that misjudges a command stalls its
//! worker at most once a pause, and a batch that was only preempted costs its group a
//! pause of inline apply.
//!
//! Owns the apply thread's loop, that count and the groups found slow. Never decides what
//! is quick (the state machine does, through the applier) and never applies anything
//! itself (the applier does).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};

use super::apply::{Applier, ApplyCmd};

/// The most entries in a batch the worker applies itself.
pub(crate) const INLINE_APPLY_MAX_ENTRIES: usize = 16;

/// The most bytes (`Entry::size`) in a batch the worker applies itself.
pub(crate) const INLINE_APPLY_MAX_BYTES: usize = 64 << 10;

/// The most entries the worker applies itself in one turn ([`ApplyLane::new_turn`]): past
/// them, its batches go to the apply thread, which then works beside it (with many groups
/// busy, applying them all on the worker would leave the apply thread idle).
pub(crate) const INLINE_APPLY_MAX_PER_TURN: usize = INLINE_APPLY_MAX_ENTRIES;

/// How long a group found slow (a batch of it applied here took past the lane's `slow`
/// bound, `EngineConfig::inline_apply_slow`: a state machine called a command quick that
/// was not, and the worker stepped nothing meanwhile) has its batches sent to the apply
/// thread before the worker may apply them again.
pub(crate) const INLINE_APPLY_SLOW_PAUSE: Duration = Duration::from_secs(60);

/// What a lane runs commands on: the [`Applier`] (a stand-in in tests).
pub(crate) trait Handler: Send + 'static {
    /// Executes `cmd`.
    fn handle(&mut self, cmd: ApplyCmd);
    /// Whether `cmd` may run on the worker (`Applier::is_quick`).
    fn is_quick(&self, cmd: &ApplyCmd) -> bool;
}

impl Handler for Applier {
    fn handle(&mut self, cmd: ApplyCmd) {
        Applier::handle(self, cmd);
    }

    fn is_quick(&self, cmd: &ApplyCmd) -> bool {
        Applier::is_quick(self, cmd)
    }
}

/// What the worker and its apply thread share.
struct Shared<A> {
    /// `None` once the thread has ended (or a state machine panicked on the worker).
    applier: Mutex<Option<A>>,
    /// Commands sent to the thread and not yet done.
    pending: AtomicU64,
}

/// What [`ApplyLane::send`] could not do.
#[derive(Debug)]
pub(crate) struct Gone;

/// What [`ApplyLane::try_inline`] did with a batch.
pub(crate) enum Inline {
    /// Applied on this thread; its report is in the channel.
    Applied,
    /// Applied on this thread, but it took this long (past the lane's `slow` bound): the
    /// group's batches go to the apply thread for [`INLINE_APPLY_SLOW_PAUSE`]. Its report
    /// is in the channel.
    AppliedSlow {
        /// The batch's group.
        group: u64,
        /// How long it took.
        took: Duration,
    },
    /// A state machine panicked here: nothing can be applied any more.
    Panicked,
    /// Not run here (too large, not quick, or the thread busy): send it.
    No(ApplyCmd),
}

/// The worker's end of its applier.
pub(crate) struct ApplyLane<A: Handler = Applier> {
    /// `None` once shut down.
    tx: Option<Sender<ApplyCmd>>,
    shared: Arc<Shared<A>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Entries this thread may still apply itself this turn.
    budget: usize,
    /// How long a batch may take here before its group counts as slow.
    slow_after: Duration,
    /// Groups a batch of which took past `slow_after` here, and until when none
    /// of theirs is applied here (forgotten then, or when the group is removed). At most
    /// the groups of the worker.
    slow: HashMap<u64, Instant>,
}

impl<A: Handler> ApplyLane<A> {
    /// Starts the apply thread `name` with `applier` (and its snapshot writer `writer`,
    /// joined once the applier is gone); a batch applied on the worker that takes past
    /// `slow_after` pauses inline apply for its group.
    pub(crate) fn start(
        name: String,
        applier: A,
        writer: Option<std::thread::JoinHandle<()>>,
        slow_after: Duration,
    ) -> std::io::Result<ApplyLane<A>> {
        let shared = Arc::new(Shared { applier: Mutex::new(Some(applier)), pending: AtomicU64::new(0) });
        // Unbounded, as before this lane: what it holds is bounded upstream. Its entries are
        // committed entries already in memory (shared, not copied), and the worker hands
        // out at most `max_apply_backlog` entries (and `max_apply_backlog_bytes` bytes, plus
        // one entry) not yet applied (`Worker::apply_budget`:
        // the rest wait in their logs, a follower's too; a leader also refuses proposals,
        // `requests.rs`, `Busy(ApplyBacklog)`); the other commands are one per group event
        // (create, restore, snapshot, remove).
        let (tx, rx) = unbounded();
        let sh = shared.clone();
        let thread = std::thread::Builder::new().name(name).spawn(move || run(rx, &sh, writer))?;
        Ok(ApplyLane {
            tx: Some(tx),
            shared,
            thread: Some(thread),
            budget: INLINE_APPLY_MAX_PER_TURN,
            slow_after,
            slow: HashMap::new(),
        })
    }

    /// A new worker turn: the budget of entries applied here is full again.
    pub(crate) fn new_turn(&mut self) {
        self.budget = INLINE_APPLY_MAX_PER_TURN;
    }

    /// Hands `cmd` to the apply thread, behind everything sent before. After
    /// [`ApplyLane::shut_down`] it is dropped (the reports handled last at shutdown may ask
    /// for a snapshot or a removal, which no longer matter); `Gone` only if the thread
    /// ended early (a state machine panicked there).
    pub(crate) fn send(&mut self, cmd: ApplyCmd) -> Result<(), Gone> {
        if let ApplyCmd::Remove { group } = &cmd {
            self.slow.remove(group);
        }
        let Some(tx) = &self.tx else { return Ok(()) };
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        tx.send(cmd).map_err(|_| {
            self.shared.pending.fetch_sub(1, Ordering::AcqRel);
            Gone
        })
    }

    /// Applies `cmd` on this thread if it is an `Apply` of at most
    /// [`INLINE_APPLY_MAX_ENTRIES`] entries (and no more than this turn's budget left) and
    /// [`INLINE_APPLY_MAX_BYTES`] of payload whose commands are all quick, and the apply
    /// thread has nothing to do; else gives it back.
    pub(crate) fn try_inline(&mut self, cmd: ApplyCmd) -> Inline {
        let ApplyCmd::Apply { group, entries, .. } = &cmd else { return Inline::No(cmd) };
        let (group, n) = (*group, entries.len());
        if let Some(until) = self.slow.get(&group) {
            if Instant::now() < *until {
                return Inline::No(cmd);
            }
            self.slow.remove(&group);
        }
        if n > INLINE_APPLY_MAX_ENTRIES
            || n > self.budget
            || entries.iter().map(|e| e.size()).sum::<usize>() > INLINE_APPLY_MAX_BYTES
            || self.shared.pending.load(Ordering::Acquire) != 0
        {
            return Inline::No(cmd);
        }
        // Free unless the thread is between releasing it and counting its command done
        // (then the count was not zero) or has ended.
        let mut guard = match self.shared.applier.try_lock() {
            Ok(g) => g,
            Err(TryLockError::WouldBlock | TryLockError::Poisoned(_)) => return Inline::No(cmd),
        };
        let Some(applier) = guard.as_mut() else { return Inline::No(cmd) };
        // The state machine's code runs on this thread from here: a panic in it is caught.
        let start = Instant::now();
        let ran = catch_unwind(AssertUnwindSafe(|| {
            if applier.is_quick(&cmd) {
                applier.handle(cmd);
                None
            } else {
                Some(cmd)
            }
        }));
        match ran {
            Ok(None) => {
                self.budget -= n;
                let end = Instant::now();
                let took = end.duration_since(start);
                if took > self.slow_after {
                    self.slow.insert(group, end + INLINE_APPLY_SLOW_PAUSE);
                    Inline::AppliedSlow { group, took }
                } else {
                    Inline::Applied
                }
            }
            Ok(Some(cmd)) => Inline::No(cmd),
            Err(_) => {
                // Its state may be half-changed: never used again (and its drop may panic
                // too: caught as well).
                let dead = guard.take();
                let _ = catch_unwind(AssertUnwindSafe(move || drop(dead)));
                Inline::Panicked
            }
        }
    }

    /// Stops the thread once it has done everything sent (a state machine with its own
    /// storage sees every entry it was given); false if a state machine panicked there.
    pub(crate) fn shut_down(&mut self) -> bool {
        self.tx = None;
        let ok = self.thread.take().map_or(true, |t| t.join().is_ok());
        // Left behind only if a state machine panicked on the thread: dropped here, which
        // ends its snapshot writer.
        drop(self.shared.applier.lock().unwrap_or_else(|e| e.into_inner()).take());
        ok
    }

    /// Whether the apply thread has commands to do (for tests).
    #[cfg(test)]
    pub(crate) fn pending(&self) -> u64 {
        self.shared.pending.load(Ordering::Acquire)
    }
}

/// The apply thread: executes each command under the applier's lock, in order, until the
/// worker drops its sender; then drops the applier (ending its snapshot writer) and joins
/// the writer.
fn run<A: Handler>(rx: Receiver<ApplyCmd>, sh: &Shared<A>, writer: Option<std::thread::JoinHandle<()>>) {
    while let Ok(cmd) = rx.recv() {
        // Poisoned only by a panic in this very loop, which ends it.
        if let Some(a) = sh.applier.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            a.handle(cmd);
        }
        // After the lock is released: a worker that reads zero finds it free.
        sh.pending.fetch_sub(1, Ordering::AcqRel);
    }
    drop(sh.applier.lock().unwrap_or_else(|e| e.into_inner()).take());
    if let Some(w) = writer {
        let _ = w.join();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::raft::message::{Entry, EntryPayload};

    /// The fake's slow group (above every group the other tests use).
    const SLOW: u64 = 1000;
    /// The lanes' bound for a batch here (the engine's default).
    const SLOW_AFTER: Duration = Duration::from_millis(10);

    /// Records the groups of the batches it runs and on which thread; group 0's batch
    /// waits for `gate`, group 99's panics, group 7's is not quick, group `SLOW`'s is quick but
    /// takes twice `SLOW_AFTER`.
    struct Fake {
        ran: Arc<std::sync::Mutex<Vec<(u64, std::thread::ThreadId)>>>,
        gate: Arc<AtomicBool>,
    }

    impl Handler for Fake {
        fn handle(&mut self, cmd: ApplyCmd) {
            let ApplyCmd::Apply { group, .. } = cmd else { return };
            if group == SLOW {
                std::thread::sleep(SLOW_AFTER * 2);
            }
            if group == 0 {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !self.gate.load(Ordering::Acquire) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            assert_ne!(group, 99, "a state machine panics");
            self.ran.lock().unwrap().push((group, std::thread::current().id()));
        }

        fn is_quick(&self, cmd: &ApplyCmd) -> bool {
            !matches!(cmd, ApplyCmd::Apply { group: 7, .. })
        }
    }

    fn batch(group: u64, n: usize, bytes: usize) -> ApplyCmd {
        let entries = (0..n as u64)
            .map(|i| Entry {
                term: 1,
                index: i + 1,
                payload: EntryPayload::Normal(bytes::Bytes::from(vec![0u8; bytes])),
            })
            .collect();
        ApplyCmd::Apply { group, epoch: 1, entries, waiters: Vec::new() }
    }

    #[allow(clippy::type_complexity)]
    fn lane() -> (ApplyLane<Fake>, Arc<std::sync::Mutex<Vec<(u64, std::thread::ThreadId)>>>, Arc<AtomicBool>)
    {
        let ran = Arc::new(std::sync::Mutex::new(Vec::new()));
        let gate = Arc::new(AtomicBool::new(false));
        let fake = Fake { ran: ran.clone(), gate: gate.clone() };
        (ApplyLane::start("test-apply".into(), fake, None, SLOW_AFTER).unwrap(), ran, gate)
    }

    fn wait_idle(l: &ApplyLane<Fake>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while l.pending() != 0 {
            assert!(Instant::now() < deadline, "the apply thread never finished");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A quick batch runs on the calling thread while the apply thread is idle; batches
    /// that are not quick, too many entries or too many bytes are given back, and run on
    /// the apply thread once sent.
    #[test]
    fn a_small_quick_batch_runs_here_and_the_rest_is_given_back() {
        let (mut l, ran, gate) = lane();
        gate.store(true, Ordering::Release);
        assert!(matches!(l.try_inline(batch(1, INLINE_APPLY_MAX_ENTRIES, 8)), Inline::Applied));
        for cmd in [
            batch(7, 1, 8),
            batch(2, INLINE_APPLY_MAX_ENTRIES + 1, 8),
            batch(3, 1, INLINE_APPLY_MAX_BYTES + 1),
            ApplyCmd::Remove { group: 4 },
        ] {
            // Each with the thread idle and a full budget: given back for what it is.
            wait_idle(&l);
            l.new_turn();
            match l.try_inline(cmd) {
                Inline::No(cmd) => l.send(cmd).unwrap(),
                _ => panic!("ran a batch that must go to the apply thread"),
            }
        }
        wait_idle(&l);
        assert!(l.shut_down());
        // After shutdown a command is dropped, not an error.
        assert!(l.send(batch(5, 1, 8)).is_ok());
        let ran = ran.lock().unwrap();
        let me = std::thread::current().id();
        assert_eq!(ran.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 7, 2, 3]);
        assert_eq!(ran[0].1, me, "the quick batch ran on the caller's thread");
        assert!(ran[1..].iter().all(|r| r.1 != me), "the others ran on the apply thread");
    }

    /// While the apply thread has a command to do (here stuck in a state machine), a quick
    /// batch is given back, so it runs behind that command, in the order sent: the worker
    /// never applies ahead of its apply thread. Once the thread is idle again, quick batches
    /// run on the caller's thread once more.
    #[test]
    fn nothing_runs_here_while_the_apply_thread_has_work() {
        let (mut l, ran, gate) = lane();
        l.send(batch(0, 1, 8)).unwrap();
        for g in 1..=3 {
            match l.try_inline(batch(g, 1, 8)) {
                Inline::No(cmd) => l.send(cmd).unwrap(),
                _ => panic!("batch {g} ran ahead of the apply thread's work"),
            }
        }
        assert!(ran.lock().unwrap().is_empty());
        gate.store(true, Ordering::Release);
        wait_idle(&l);
        assert!(matches!(l.try_inline(batch(5, 1, 8)), Inline::Applied));
        assert!(l.shut_down());
        assert_eq!(ran.lock().unwrap().iter().map(|r| r.0).collect::<Vec<_>>(), vec![0, 1, 2, 3, 5]);
    }

    /// A turn applies at most `INLINE_APPLY_MAX_PER_TURN` entries here; past them batches go
    /// to the apply thread until the next turn.
    #[test]
    fn a_turn_applies_at_most_its_budget_here() {
        let (mut l, ran, gate) = lane();
        gate.store(true, Ordering::Release);
        let mut here = 0;
        for g in 1..=(INLINE_APPLY_MAX_PER_TURN as u64 + 1) {
            wait_idle(&l);
            match l.try_inline(batch(g, 1, 8)) {
                Inline::Applied => here += 1,
                Inline::No(cmd) => l.send(cmd).unwrap(),
                Inline::Panicked | Inline::AppliedSlow { .. } => {
                    panic!("no state machine panics or is slow here")
                }
            }
        }
        assert_eq!(here, INLINE_APPLY_MAX_PER_TURN);
        wait_idle(&l);
        l.new_turn();
        assert!(matches!(l.try_inline(batch(50, 1, 8)), Inline::Applied));
        assert!(l.shut_down());
        assert_eq!(ran.lock().unwrap().len(), INLINE_APPLY_MAX_PER_TURN + 2);
    }

    /// A quick batch that takes past the lane's bound here is reported, and its group's
    /// later batches are given back (other groups' still run here) until the group is
    /// removed.
    #[test]
    fn a_group_slow_here_once_goes_to_the_apply_thread_for_a_pause() {
        let (mut l, ran, gate) = lane();
        gate.store(true, Ordering::Release);
        match l.try_inline(batch(SLOW, 1, 8)) {
            Inline::AppliedSlow { group: SLOW, took } => assert!(took > SLOW_AFTER, "{took:?}"),
            _ => panic!("the slow batch ran here and is reported slow"),
        }
        l.new_turn();
        match l.try_inline(batch(SLOW, 1, 8)) {
            Inline::No(cmd) => l.send(cmd).unwrap(),
            _ => panic!("a batch of the slow group ran here again"),
        }
        wait_idle(&l);
        // (Slow too if this thread was preempted for that long: it still ran here.)
        assert!(
            matches!(l.try_inline(batch(1, 1, 8)), Inline::Applied | Inline::AppliedSlow { group: 1, .. }),
            "another group still runs here"
        );
        l.send(ApplyCmd::Remove { group: SLOW }).unwrap();
        wait_idle(&l);
        l.new_turn();
        assert!(
            matches!(l.try_inline(batch(SLOW, 1, 8)), Inline::AppliedSlow { group: SLOW, .. }),
            "a group removed is forgotten (a new one of the same id runs here)"
        );
        assert!(l.shut_down());
        let ran = ran.lock().unwrap();
        let me = std::thread::current().id();
        assert_eq!(ran.iter().map(|r| r.0).collect::<Vec<_>>(), vec![SLOW, SLOW, 1, SLOW]);
        assert_eq!(ran.iter().map(|r| r.1 == me).collect::<Vec<_>>(), vec![true, false, true, true]);
    }

    /// A state machine that panics on the caller's thread is reported (the engine stops),
    /// the applier is never used again, and the caller's thread lives on.
    #[test]
    fn a_panic_here_is_reported_and_nothing_runs_after_it() {
        let (mut l, ran, gate) = lane();
        gate.store(true, Ordering::Release);
        assert!(matches!(l.try_inline(batch(99, 1, 8)), Inline::Panicked));
        assert!(matches!(l.try_inline(batch(1, 1, 8)), Inline::No(_)));
        l.send(batch(2, 1, 8)).unwrap();
        wait_idle(&l);
        assert!(l.shut_down());
        assert!(ran.lock().unwrap().is_empty(), "nothing runs after a panic");
    }
}
