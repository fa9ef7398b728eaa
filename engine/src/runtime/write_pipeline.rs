//! A worker's WAL write pipeline: the batch the current turn builds, the writes submitted
//! and not yet durable (each with its ticket and what waits for it), in submission order.
//!
//! Owns the batch, what waits for it (per group: the last entry written and the messages
//! to send once durable; snapshot files to prune; founding replicas to start), sequence
//! numbers of writes, and the bytes submitted and not durable (`wal_pending`, for
//! backpressure and the gauge). Writes complete strictly in submission order: a later
//! write (even one with nothing to write, only messages to send) never completes before
//! an earlier one is durable.
//!
//! Never waits for a write (the worker selects on [`WritePipeline::wake_ticket`]), never
//! touches a group or sends anything itself: the worker hands durable writes on
//! (`persisted`), and a follower's acknowledgements go from the hook `durable_acks`
//! builds, run by the thread that made the write durable.

use std::collections::VecDeque;

use flotilla_wal::{Ticket, Wal, WriteBatch, WriteError};

use super::durable_acks::DurableAcks;
use super::group::PendingCreate;
use super::shared::{bump, bump_by, Counters};
use crate::raft::message::Message;
use crate::raft::types::{NodeId, ReplicaId};

/// What one group waits for from a write: the last entry written (for `on_persisted`)
/// and the messages to send once it is durable.
pub(super) type AfterWrite = (u64, Option<(u64, u64)>, Vec<Message>);

/// Snapshot files superseded by metadata in a write: (group, replica, files below this
/// index).
pub(super) type Prune = (u64, ReplicaId, u64);

/// A write in flight and what waits for it.
pub(super) struct Inflight {
    /// `None` for a write with nothing to write (only messages to send after the earlier
    /// writes), or once shutdown took it to wait on.
    pub(super) ticket: Option<Ticket>,
    /// Snapshot files superseded by metadata in this write: (group, replica, files below
    /// this index).
    pub(super) prune: Vec<Prune>,
    /// Per group: the last entry written (for `on_persisted`) and messages to send after.
    pub(super) after: Vec<AfterWrite>,
    /// Encoded bytes of the batch.
    bytes: u64,
    /// Founding replicas this write creates: they start once it is durable.
    pub(super) creates: Vec<PendingCreate>,
    /// The write's sequence number (see [`WritePipeline::next_seq`]).
    pub(super) seq: u64,
    /// Whether the worker wakes as soon as it is durable (see
    /// [`WritePipeline::wake_ticket`]).
    urgent: bool,
    /// Groups whose entries the write holds, while it is not urgent: a leader's that an
    /// acknowledgement may now commit, a follower's that learnt a commit index past what
    /// is durable here ([`WritePipeline::needed`] makes the write urgent).
    lazy: Vec<u64>,
}

/// The batch being built and the writes in flight, oldest first.
pub(super) struct WritePipeline {
    /// This turn's batch: the groups' Ready writes, metadata, tombstones, compactions.
    pub(super) batch: WriteBatch,
    after: Vec<AfterWrite>,
    /// Messages sent the moment the batch is durable, by the thread that made it so
    /// (`durable_acks`): (destination node, group, message).
    when_durable: Vec<(NodeId, u64, Message)>,
    /// Builds the hook that sends `when_durable` (`EngineConfig::acks_when_durable`).
    acks: Option<DurableAcks>,
    /// A group of the batch being built needs the worker soon after it is durable (a
    /// leader's own match, a candidate's vote: [`WritePipeline::wake_when_durable`]).
    wake: bool,
    /// Groups whose write to the batch being built may be lazy ([`WritePipeline::lazy_group`]).
    lazy: Vec<u64>,
    /// The worker has nothing queued behind the batch being submitted
    /// ([`WritePipeline::set_quiet`]): only then do acknowledgements go from the hook.
    quiet: bool,
    prune: Vec<Prune>,
    /// Groups that added to `batch` (for the `wal_batch_groups` metric).
    batch_groups: u64,
    inflight: VecDeque<Inflight>,
    /// Bytes of WAL batches submitted and not yet durable.
    pending_bytes: u64,
    /// Sequence number of the next write submitted.
    next_seq: u64,
}

impl WritePipeline {
    /// An empty pipeline; the first write gets sequence number 0.
    pub(super) fn new() -> WritePipeline {
        WritePipeline {
            batch: WriteBatch::new(),
            after: Vec::new(),
            when_durable: Vec::new(),
            acks: None,
            wake: false,
            lazy: Vec::new(),
            quiet: false,
            prune: Vec::new(),
            batch_groups: 0,
            inflight: VecDeque::new(),
            pending_bytes: 0,
            next_seq: 0,
        }
    }

    /// The sequence number the next write submitted gets (what a record added to the
    /// batch now is durable with, see `ApplyHold` and `Worker::tombstones_unsynced`).
    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether no write is in flight and the batch being built is empty.
    pub(super) fn is_idle(&self) -> bool {
        self.inflight.is_empty() && self.batch.is_empty()
    }

    /// Bytes submitted and not yet durable.
    pub(super) fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    /// Group `gid` waits for the batch: `last` entry written, `msgs` to send once durable.
    pub(super) fn after_write(&mut self, gid: u64, last: Option<(u64, u64)>, msgs: Vec<Message>) {
        self.after.push((gid, last, msgs));
    }

    /// From now on, acknowledgements of appends go out from the thread that makes their
    /// write durable ([`WritePipeline::send_when_durable`]), through `acks`' hooks.
    pub(super) fn set_durable_acks(&mut self, acks: DurableAcks) {
        self.acks = Some(acks);
    }

    /// Whether [`WritePipeline::send_when_durable`] is available.
    pub(super) fn acks_when_durable(&self) -> bool {
        self.acks.is_some()
    }

    /// The worker is needed soon after the batch being built is durable: a group in it
    /// is not a follower (a leader's own match may commit entries; a candidate counts
    /// its own vote).
    pub(super) fn wake_when_durable(&mut self) {
        self.wake = true;
    }

    /// Whether the worker has nothing queued behind the batch it submits next (its
    /// mailboxes are empty). Only then, and with no other write in flight, is the batch's
    /// acknowledgements' durability hook worth it: a busy worker is awake when the write
    /// completes anyway, and sends them coalesced with the rest of its turn's messages in
    /// fewer frames, while the hook adds their encoding and sending to the round of the
    /// WAL's writer, which every worker's writes wait for (measured in BENCHMARKS.md: with
    /// the hook on every quiet turn's batch, a third fewer WAL batches per second and
    /// fewer writes/s at 64 to 1,024 in flight).
    pub(super) fn set_quiet(&mut self, quiet: bool) {
        self.quiet = quiet;
    }

    /// Group `gid` wrote to the batch being built and needs the worker once the write is
    /// durable only if something comes first that the durable entries then complete:
    /// for a leader, an acknowledgement from a follower (its own match then may complete
    /// a quorum); for a follower whose acknowledgements go from the durability hook, a
    /// commit index past what is durable here (the entries then become appliable).
    /// [`WritePipeline::needed`] marks the write urgent when that happens; until then
    /// the worker takes the completion at its next turn, which such an arrival starts.
    pub(super) fn lazy_group(&mut self, gid: u64) {
        self.lazy.push(gid);
    }

    /// Group `gid` needs its writes in flight (see [`WritePipeline::lazy_group`]): every
    /// write in flight that holds `gid`'s entries lazily becomes urgent, so that the
    /// worker takes its completion as soon as it is durable.
    pub(super) fn needed(&mut self, gid: u64) {
        for f in self.inflight.iter_mut() {
            if f.lazy.contains(&gid) {
                f.urgent = true;
            }
        }
    }

    /// `msg` of group `gid` goes to node `to` the moment the batch being built is durable,
    /// from the thread that made it so (or, when the batch writes nothing, from the
    /// worker after the earlier writes, as [`WritePipeline::after_write`]'s messages).
    /// Only after [`WritePipeline::set_durable_acks`].
    pub(super) fn send_when_durable(&mut self, to: NodeId, gid: u64, msg: Message) {
        self.when_durable.push((to, gid, msg));
    }

    /// Once the batch is durable, the snapshot files of `replica` of `gid` below `below`
    /// are pruned.
    pub(super) fn prune_after(&mut self, gid: u64, replica: ReplicaId, below: u64) {
        self.prune.push((gid, replica, below));
    }

    /// Whether every group of `groups` waits for the batch being built (wrote entries to
    /// it, or has messages to send after it). False at once when `groups` outnumbers the
    /// batch's groups, so a busy worker pays one comparison.
    pub(super) fn holds_all<'a>(&self, mut groups: impl ExactSizeIterator<Item = &'a u64>) -> bool {
        groups.len() <= self.after.len() && groups.all(|g| self.after.iter().any(|(a, ..)| a == g))
    }

    /// One more group added to the batch (metrics).
    pub(super) fn count_group(&mut self) {
        self.batch_groups += 1;
    }

    /// Drops the batch being built and what waits for it (the engine failed).
    pub(super) fn discard(&mut self) {
        self.batch = WriteBatch::new();
        self.after.clear();
        self.when_durable.clear();
        self.wake = false;
        self.lazy.clear();
        self.prune.clear();
    }

    /// The WAL failed: forgets every write, in flight or being built. Returns the founding
    /// replicas that were in flight (their callers must learn it), oldest first.
    pub(super) fn fail(&mut self) -> Vec<PendingCreate> {
        let creates = self.inflight.drain(..).flat_map(|f| f.creates).collect();
        self.pending_bytes = 0;
        self.discard();
        creates
    }

    /// Submits the batch (if any) to `wal` without waiting and records what waits for it;
    /// a write with nothing to write but messages to send is queued too, to complete in
    /// order. On a refusal the batch and what waited for it are dropped.
    pub(super) fn submit(&mut self, wal: &Wal, counters: &Counters) -> Result<(), WriteError> {
        self.submit_as(wal, counters, false)
    }

    /// As [`WritePipeline::submit`], but when nothing is in flight and the WAL's writer
    /// is free, writes and syncs the batch on this thread (`Wal::write_or_submit`): the
    /// write is durable on return, with no hand-over to the WAL's threads and back.
    pub(super) fn write_inline(&mut self, wal: &Wal, counters: &Counters) -> Result<(), WriteError> {
        let inline = self.inflight.is_empty();
        self.submit_as(wal, counters, inline)
    }

    fn submit_as(&mut self, wal: &Wal, counters: &Counters, inline: bool) -> Result<(), WriteError> {
        let batch = std::mem::take(&mut self.batch);
        let mut after = std::mem::take(&mut self.after);
        let prune = std::mem::take(&mut self.prune);
        let bytes = batch.encoded_len() as u64;
        let wrote = !batch.is_empty();
        let when_durable = std::mem::take(&mut self.when_durable);
        let quiet = std::mem::take(&mut self.quiet);
        let hook = match &self.acks {
            Some(acks) if quiet && self.inflight.is_empty() && wrote && !when_durable.is_empty() => {
                Some(acks.hook(when_durable))
            }
            _ => {
                // Nothing written, or the worker busy: sent by the worker, after the write
                // (and the earlier ones).
                after.extend(when_durable.into_iter().map(|(_, gid, m)| (gid, None, vec![m])));
                None
            }
        };
        // Lazy (the worker takes its completion at its next turn, at the latest its next
        // tick, instead of waking for it): a write of only entries and hard states, of
        // followers whose acknowledgements go from the durability hook and of leaders
        // (until an acknowledgement or a commit index arrives: `needed`), with nothing
        // else waiting for it.
        // A candidate's write or a single voter's, messages left for the worker, files
        // to prune, or any other record (metadata, a snapshot's reset, compaction,
        // removal) keep it urgent.
        let lazy = std::mem::take(&mut self.lazy);
        let hooked = hook.is_some();
        let urgent = std::mem::take(&mut self.wake)
            || self.acks.is_none()
            || !batch.only_entries_and_hard_states()
            || !prune.is_empty()
            || after.iter().any(|(_, _, msgs)| !msgs.is_empty());
        let ticket = if !wrote {
            None
        } else {
            bump(&counters.wal_batches);
            bump_by(&counters.wal_batch_bytes, bytes);
            self.pending_bytes += bytes;
            bump_by(&counters.wal_batch_groups, self.batch_groups);
            self.batch_groups = 0;
            if inline {
                // `None`: durable already. Nothing earlier is in flight, so the order
                // of completions holds.
                let t = wal.write_or_submit_then(batch, hook)?;
                if t.is_none() {
                    if !hooked {
                        // Crash tests: durable, nothing acknowledged or sent for it yet
                        // (a hook has its own, before it sends).
                        fail::fail_point!("engine::after_fsync_before_send");
                    }
                    bump(&counters.wal_inline_writes);
                    self.pending_bytes = self.pending_bytes.saturating_sub(bytes);
                }
                t
            } else {
                Some(wal.submit_then(batch, hook)?)
            }
        };
        // A write made durable inline (no ticket) is queued too: it takes its sequence
        // number, which what was promised durability with it waits for.
        if wrote || !after.is_empty() {
            let seq = self.next_seq;
            self.next_seq += 1;
            let urgent = urgent || ticket.is_none();
            let lazy = if urgent { Vec::new() } else { lazy };
            self.inflight.push_back(Inflight {
                ticket,
                after,
                prune,
                bytes,
                seq,
                creates: Vec::new(),
                urgent,
                lazy,
            });
        }
        Ok(())
    }

    /// Submits `batch`, the founding writes of `creates`, as its own write. The batch
    /// being built goes first: its records were promised [`WritePipeline::next_seq`], so
    /// the founding write must not take that number. On a refusal hands `creates` back.
    pub(super) fn submit_creates(
        &mut self,
        wal: &Wal,
        counters: &Counters,
        batch: WriteBatch,
        creates: Vec<PendingCreate>,
    ) -> Result<(), (WriteError, Vec<PendingCreate>)> {
        if !self.batch.is_empty() || !self.after.is_empty() {
            if let Err(e) = self.submit(wal, counters) {
                return Err((e, creates));
            }
        }
        let bytes = batch.encoded_len() as u64;
        match wal.submit(batch) {
            Ok(ticket) => {
                self.pending_bytes += bytes;
                let seq = self.next_seq;
                self.next_seq += 1;
                let f = Inflight {
                    ticket: Some(ticket),
                    after: Vec::new(),
                    prune: Vec::new(),
                    bytes,
                    seq,
                    creates,
                    urgent: true,
                    lazy: Vec::new(),
                };
                self.inflight.push_back(f);
                Ok(())
            }
            Err(e) => Err((e, creates)),
        }
    }

    /// The oldest write in flight, if its outcome is known: `Ok` once durable (or when it
    /// had nothing to write), `Err` when the WAL failed it (the write stays queued).
    /// `None` while the oldest write is not durable yet, or nothing is in flight.
    pub(super) fn poll_durable(&mut self) -> Option<Result<Inflight, WriteError>> {
        let front = self.inflight.front()?;
        if let Some(t) = &front.ticket {
            match t.try_wait()? {
                // Crash tests: durable, nothing acknowledged or sent for it yet.
                Ok(()) => fail::fail_point!("engine::after_fsync_before_send"),
                Err(e) => return Some(Err(e)),
            }
        }
        let done = self.inflight.pop_front()?;
        if done.ticket.is_some() {
            self.pending_bytes = self.pending_bytes.saturating_sub(done.bytes);
        }
        Some(Ok(done))
    }

    /// The ticket of the oldest write in flight, to wait on.
    pub(super) fn oldest_ticket(&self) -> Option<&Ticket> {
        self.inflight.front().and_then(|f| f.ticket.as_ref())
    }

    /// The ticket the worker sleeps on: the oldest write's, while any write in flight is
    /// urgent (writes complete in order, so an urgent one waits for the oldest). `None`
    /// while every write in flight is lazy: a follower's write whose acknowledgements
    /// went from the durability hook needs nothing of the worker at once (its
    /// `on_persisted` is taken at the worker's next turn), so the worker is not woken
    /// for it (one thread wake-up fewer per write on a follower).
    pub(super) fn wake_ticket(&self) -> Option<&Ticket> {
        if self.inflight.iter().any(|f| f.urgent) {
            self.oldest_ticket()
        } else {
            None
        }
    }

    /// The oldest write in flight (shutdown takes its ticket to wait on it).
    pub(super) fn oldest_mut(&mut self) -> Option<&mut Inflight> {
        self.inflight.front_mut()
    }

    /// The replica of `group` whose founding write is in flight, if any.
    pub(super) fn creating_replica(&self, group: u64) -> Option<ReplicaId> {
        self.inflight.iter().flat_map(|f| &f.creates).find(|c| c.group == group).map(|c| c.replica)
    }
}

#[cfg(test)]
mod tests {
    use flotilla_wal::WalConfig;

    use super::*;

    /// A WAL in a temporary directory (kept alive by the first value), counters and an
    /// empty pipeline.
    fn rig() -> (tempfile::TempDir, Wal, Counters, WritePipeline) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = WalConfig::new(dir.path());
        cfg.segment_size = 1 << 20;
        cfg.max_write_bytes = 64 << 10;
        cfg.cache_bytes = 0;
        let wal = Wal::open(cfg).expect("open wal");
        (dir, wal, Counters::default(), WritePipeline::new())
    }

    fn write(p: &mut WritePipeline, group: u64, index: u64) {
        p.batch.add_entry(group, index, 1, b"data");
        p.count_group();
        p.after_write(group, Some((index, 1)), Vec::new());
    }

    /// Polls until `n` writes completed (or a deadline passes); returns them in
    /// completion order.
    fn drain_writes(p: &mut WritePipeline, n: usize) -> Vec<Inflight> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut done = Vec::new();
        while done.len() < n && std::time::Instant::now() < deadline {
            match p.poll_durable() {
                Some(Ok(f)) => done.push(f),
                Some(Err(e)) => panic!("write failed: {e}"),
                None => std::thread::yield_now(),
            }
        }
        done
    }

    /// The sequence numbers of `n` writes, in completion order.
    fn drain(p: &mut WritePipeline, n: usize) -> Vec<u64> {
        drain_writes(p, n).iter().map(|f| f.seq).collect()
    }

    #[test]
    fn writes_complete_in_submission_order() {
        let (_dir, wal, counters, mut p) = rig();
        write(&mut p, 1, 1);
        p.submit(&wal, &counters).expect("submit");
        // Nothing to write, a message to send after: queued behind the first write.
        p.after_write(2, None, Vec::new());
        p.submit(&wal, &counters).expect("submit");
        write(&mut p, 3, 1);
        p.submit(&wal, &counters).expect("submit");
        assert_eq!(p.next_seq(), 3);
        assert_eq!(drain(&mut p, 3), vec![0, 1, 2]);
        assert!(p.poll_durable().is_none());
    }

    /// A follower's write whose acknowledgement goes from the durability hook is lazy
    /// (the worker does not wake for it, and the hook sends the acknowledgement); a
    /// leader's write, or one with a message left for the worker, is urgent, and an
    /// urgent write behind a lazy one makes the worker wait on the oldest.
    #[test]
    fn a_followers_write_with_its_acknowledgement_hooked_does_not_wake_the_worker() {
        use crate::raft::message::MessageBody;
        let (_dir, wal, counters, mut p) = rig();
        let (ctl, _ctl_rx) = crossbeam_channel::unbounded();
        let (data, data_rx) = crossbeam_channel::unbounded();
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        p.set_durable_acks(DurableAcks::new(None, ctl, data, sent));
        let ack = |index| Message {
            from: 2,
            to: 1,
            term: 1,
            body: MessageBody::AppendResponse { index, reject: false, reject_hint: 0, hint_term: 0 },
        };
        // A busy worker (mailbox not empty): the acknowledgement stays with the worker's
        // messages, and the write is urgent.
        p.batch.add_entry(1, 1, 1, b"x");
        p.send_when_durable(1, 1, ack(1));
        p.after_write(1, Some((1, 1)), Vec::new());
        p.submit(&wal, &counters).expect("submit");
        assert!(p.wake_ticket().is_some(), "a busy worker's write must wake it");
        let done = drain_writes(&mut p, 1);
        let msgs: usize = done.iter().flat_map(|f| &f.after).map(|a| a.2.len()).sum();
        assert_eq!(msgs, 1, "the acknowledgement is the worker's to send");
        assert!(data_rx.is_empty(), "the hook sent for a busy worker");
        // A follower's entry, its acknowledgement hooked (a quiet worker): lazy.
        p.batch.add_entry(1, 2, 1, b"x");
        p.send_when_durable(1, 1, ack(2));
        p.after_write(1, Some((2, 1)), Vec::new());
        p.lazy_group(1);
        p.set_quiet(true);
        p.submit(&wal, &counters).expect("submit");
        assert!(p.oldest_ticket().is_some());
        assert!(p.wake_ticket().is_none(), "the worker woke for a follower's hooked write");
        let ack_sent = data_rx.recv_timeout(std::time::Duration::from_secs(10));
        assert!(ack_sent.is_ok(), "the hook sent the acknowledgement");
        // The follower learns a commit index past its durable entries: they become
        // appliable once the write is durable, so the worker wakes for it.
        p.needed(2);
        assert!(p.wake_ticket().is_none(), "another group's commit woke the worker");
        p.needed(1);
        assert!(p.wake_ticket().is_some(), "committed entries waiting for the write did not wake the worker");
        assert_eq!(drain(&mut p, 1), vec![1]);
        // A leader's write: urgent.
        p.batch.add_entry(2, 1, 1, b"y");
        p.wake_when_durable();
        p.after_write(2, Some((1, 1)), Vec::new());
        p.submit(&wal, &counters).expect("submit");
        assert!(p.wake_ticket().is_some(), "a leader's write must wake the worker");
        assert_eq!(drain(&mut p, 1), vec![2]);
        // A follower's write with a message left for the worker (a vote): urgent.
        p.batch.add_entry(1, 2, 1, b"z");
        let vote = Message {
            from: 2,
            to: 1,
            term: 2,
            body: MessageBody::RequestVoteResponse {
                pre_vote: false,
                reject: false,
                commit: 0,
                commit_term: 0,
            },
        };
        p.after_write(1, Some((2, 1)), vec![vote]);
        p.submit(&wal, &counters).expect("submit");
        assert!(p.wake_ticket().is_some());
        assert_eq!(drain(&mut p, 1), vec![3]);
        // A leader's write with followers to acknowledge it: lazy until an
        // acknowledgement for its group arrives (one for another group changes nothing).
        p.batch.add_entry(3, 1, 1, b"w");
        p.lazy_group(3);
        p.after_write(3, Some((1, 1)), Vec::new());
        p.submit(&wal, &counters).expect("submit");
        assert!(p.wake_ticket().is_none(), "a leader's write woke the worker before any acknowledgement");
        p.needed(4);
        assert!(p.wake_ticket().is_none());
        p.needed(3);
        assert!(p.wake_ticket().is_some(), "an acknowledgement makes the leader's write urgent");
        p.needed(3);
        assert_eq!(drain(&mut p, 1), vec![4]);
        // Lazy, then urgent behind it: the worker waits on the oldest (the lazy one).
        p.batch.add_entry(1, 3, 1, b"l");
        p.send_when_durable(1, 1, ack(3));
        p.after_write(1, Some((3, 1)), Vec::new());
        p.set_quiet(true);
        p.submit(&wal, &counters).expect("submit");
        assert!(p.wake_ticket().is_none(), "an urgent write was counted twice");
        p.batch.add_entry(2, 2, 1, b"u");
        p.wake_when_durable();
        p.after_write(2, Some((2, 1)), Vec::new());
        p.submit(&wal, &counters).expect("submit");
        let oldest = p.oldest_ticket().map(|t| t as *const Ticket);
        assert_eq!(p.wake_ticket().map(|t| t as *const Ticket), oldest);
        assert_eq!(drain(&mut p, 2), vec![5, 6]);
        assert!(p.wake_ticket().is_none() && p.oldest_ticket().is_none());
    }

    #[test]
    fn an_empty_write_waits_for_the_earlier_ones() {
        let (_dir, wal, counters, mut p) = rig();
        write(&mut p, 1, 1);
        p.submit(&wal, &counters).expect("submit");
        p.after_write(2, None, Vec::new());
        p.submit(&wal, &counters).expect("submit");
        // Whatever completes first, it is never the empty write (seq 1) alone.
        match p.poll_durable() {
            Some(Ok(f)) => assert_eq!(f.seq, 0),
            Some(Err(e)) => panic!("write failed: {e}"),
            None => assert!(p.oldest_ticket().is_some(), "the oldest write is the ticketed one"),
        }
    }

    #[test]
    fn a_record_in_the_batch_is_durable_with_the_number_promised_even_behind_founding_writes() {
        // A tombstone (or a snapshot's log reset) added to the batch is durable with
        // `next_seq()` as read when it was added; a founding write submitted before the
        // batch must not take that number (it would let the tombstone's ack out early).
        let (_dir, wal, counters, mut p) = rig();
        write(&mut p, 7, 1);
        let promised = p.next_seq();
        let mut founding = WriteBatch::new();
        founding.add_entry(9, 1, 1, b"founding");
        p.submit_creates(&wal, &counters, founding, Vec::new()).map_err(|(e, _)| e).expect("submit");
        p.submit(&wal, &counters).expect("submit");
        let seen: Vec<(u64, Vec<u64>)> =
            drain_writes(&mut p, 2).iter().map(|f| (f.seq, f.after.iter().map(|a| a.0).collect())).collect();
        assert_eq!(seen.first(), Some(&(promised, vec![7])), "writes seen: {seen:?}");
    }

    #[test]
    fn an_inline_write_is_durable_on_return_and_takes_its_number_even_with_nothing_waiting() {
        // A record promised durability with `next_seq()` (a tombstone, a snapshot's log
        // reset) is released when that number completes: an inline write with nothing
        // else waiting for it must still take it.
        let (_dir, wal, counters, mut p) = rig();
        p.batch.add_entry(4, 1, 1, b"x");
        let promised = p.next_seq();
        p.write_inline(&wal, &counters).expect("write");
        assert_eq!(p.next_seq(), promised + 1);
        assert_eq!(counters.wal_inline_writes.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(p.pending_bytes(), 0, "durable already");
        assert!(p.oldest_ticket().is_none(), "nothing to wait on");
        match p.poll_durable() {
            Some(Ok(f)) => assert_eq!((f.seq, f.ticket.is_none()), (promised, true)),
            other => {
                panic!("the inline write did not complete at once: {:?}", other.map(|r| r.map(|f| f.seq)))
            }
        }
        // With a write in flight, the next one is submitted, not written inline.
        write(&mut p, 5, 1);
        p.submit(&wal, &counters).expect("submit");
        write(&mut p, 6, 1);
        p.write_inline(&wal, &counters).expect("write");
        assert_eq!(counters.wal_inline_writes.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(drain(&mut p, 2), vec![promised + 1, promised + 2]);
    }

    #[test]
    fn nothing_to_write_and_nothing_waiting_is_no_write() {
        let (_dir, wal, counters, mut p) = rig();
        p.submit(&wal, &counters).expect("submit");
        assert_eq!(p.next_seq(), 0);
        assert!(p.poll_durable().is_none());
    }

    #[test]
    fn pending_bytes_count_submitted_writes_until_durable() {
        let (_dir, wal, counters, mut p) = rig();
        write(&mut p, 1, 1);
        write(&mut p, 2, 1);
        let len = p.batch.encoded_len() as u64;
        p.submit(&wal, &counters).expect("submit");
        assert_eq!(p.pending_bytes(), len);
        assert_eq!(counters.wal_batches.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(counters.wal_batch_groups.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert_eq!(counters.wal_batch_bytes.load(std::sync::atomic::Ordering::Relaxed), len);
        assert_eq!(drain(&mut p, 1), vec![0]);
        assert_eq!(p.pending_bytes(), 0);
    }

    #[test]
    fn failing_forgets_every_write() {
        let (_dir, wal, counters, mut p) = rig();
        write(&mut p, 1, 1);
        p.submit(&wal, &counters).expect("submit");
        write(&mut p, 2, 1);
        p.prune_after(2, 1, 5);
        assert!(p.fail().is_empty());
        assert_eq!(p.pending_bytes(), 0);
        assert!(p.batch.is_empty());
        assert!(p.poll_durable().is_none());
        // What waited for the discarded batch waits no more: the next write is empty.
        p.submit(&wal, &counters).expect("submit");
        assert!(p.poll_durable().is_none());
    }
}
