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
//! Never waits for a write (the worker selects on [`WritePipeline::oldest_ticket`]), never
//! touches a group or sends anything: the worker hands durable writes on (`persisted`).

use std::collections::VecDeque;

use flotilla_wal::{Ticket, Wal, WriteBatch, WriteError};

use super::group::PendingCreate;
use super::shared::{bump, bump_by, Counters};
use crate::raft::message::Message;
use crate::raft::types::ReplicaId;

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
}

/// The batch being built and the writes in flight, oldest first.
pub(super) struct WritePipeline {
    /// This turn's batch: the groups' Ready writes, metadata, tombstones, compactions.
    pub(super) batch: WriteBatch,
    after: Vec<AfterWrite>,
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
        let after = std::mem::take(&mut self.after);
        let prune = std::mem::take(&mut self.prune);
        let bytes = batch.encoded_len() as u64;
        let wrote = !batch.is_empty();
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
                let t = wal.write_or_submit(batch)?;
                if t.is_none() {
                    // Crash tests: durable, nothing acknowledged or sent for it yet.
                    fail::fail_point!("engine::after_fsync_before_send");
                    bump(&counters.wal_inline_writes);
                    self.pending_bytes = self.pending_bytes.saturating_sub(bytes);
                }
                t
            } else {
                Some(wal.submit(batch)?)
            }
        };
        // A write made durable inline (no ticket) is queued too: it takes its sequence
        // number, which what was promised durability with it waits for.
        if wrote || !after.is_empty() {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.inflight.push_back(Inflight { ticket, after, prune, bytes, seq, creates: Vec::new() });
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
