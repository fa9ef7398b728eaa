//! One worker thread: the groups it owns outright, its loop and one turn of it.
//!
//! A turn: drain the control mailbox (received heartbeats, votes, their answers, removal
//! items: never queued behind data), then the mailbox (messages, proposals, admin; data
//! messages only for about a tick, the rest waits for the next turn, so a backlog of
//! heavy messages never starves the clock; the control mailbox is drained again after
//! each batch of messages), start the replicas whose
//! founding write is durable, take the apply thread's answers, hand on the writes that are
//! durable, tick when due, then step the groups touched: collect their `Ready`s, send
//! their `messages` at once, hand ONE WAL write batch for all of them to the WAL without
//! waiting for it, and hand committed entries with their waiters to the worker's apply
//! thread. The worker waits on its mailbox, the apply thread's answers, the oldest write's
//! ticket and its tick deadline together, so it never sits on an fsync or a slow state
//! machine while other groups have work. Never touches another worker's groups, and never
//! calls a state machine (the apply thread owns them).
//!
//! Each concern of the turn has its file (each an `impl Worker` block or a type the worker
//! owns): `ready` (one group's Ready), `write_pipeline` and `persisted` (the batch, writes
//! in flight, what follows durability), `apply_link` (the apply thread), `requests` and
//! `membership` (client requests), `lifecycle` (create, remove, destroy, effects, the
//! sender check), `heartbeats` (received coalesced heartbeats and answers, entry by
//! entry), `admission` (who may create replicas from messages, and how many),
//! `tombstones` (removed replicas, clean-up pass), `quiescence` and `wake_queue`,
//! `compaction`, `snapshots`, `snap_receive` (received snapshot streams, to disk on the
//! worker's snapshot I/O thread), `observe` (metrics from Raft events), `announce` (the
//! leader view and events for subscribers), `stop` (storage failure, shutdown). Waiters live in `waiters` (the rules of `Ok`, `Dropped` and
//! `Indeterminate` are there).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Select, TryRecvError};

use super::admission::Admission;
use super::apply::{Applier, ApplyDone};
use super::apply_hold::ApplyHold;
use super::apply_lane::ApplyLane;
use super::command::Cmd;
use super::gc;
use super::group::{add_cmd, Group, PendingCreate};
use super::holdings::Holdings;
use super::incarnation::ReadCtx;
use super::pending::Completer;
use super::recovery::Recovered;
use super::shared::{bump, bump_by, Shared};
use super::snap_receive::SnapshotReceiver;
use super::waiters::Tally;
use super::wake_queue::WakeQueue;
use super::write_pipeline::WritePipeline;
use crate::api::{ProposeError, ReadError};
use crate::raft::types::{Replica, ReplicaId};
use crate::raft::ApplyBudget;
use crate::transport::Outbox;

/// Commands taken from the mailbox per loop turn (then the turn's work is done).
const MAX_CMDS_PER_TURN: usize = 4096;
/// `ready()` rounds per group per turn; a group with more work is carried to the next turn.
const READY_ROUNDS: usize = 4;

/// One worker: its groups, mailbox, outbox and writes in flight.
pub(crate) struct Worker {
    /// This worker's index (its route, its gauges, its thread's name).
    pub(super) idx: usize,
    /// What every worker shares.
    pub(super) sh: Arc<Shared>,
    /// The mailbox.
    pub(super) rx: Receiver<Cmd>,
    /// The control mailbox (received control items, from the network thread), drained
    /// before the mailbox; `None` once the network thread dropped it.
    pub(super) ctl_rx: Option<Receiver<Cmd>>,
    /// Boxed: a map slot is a pointer, so the map's spare capacity costs 8 bytes a slot,
    /// not a whole replica, and moving a group out and back per turn copies no state.
    pub(super) groups: HashMap<u64, Box<Group>>,
    /// Replicas destroyed here, by group (a tombstone record each): a leader's message
    /// naming a replica id at or below it never recreates the group.
    pub(super) tombstones: HashMap<u64, ReplicaId>,
    /// Tombstone records written and not yet durable: group -> the sequence number of the
    /// write that carries it (see `WritePipeline::next_seq`). A tombstone is
    /// confirmed to a leader (`WireItem::TombstoneAck`) only once durable.
    pub(super) tombstones_unsynced: HashMap<u64, u64>,
    /// Removal records confirmed by the removed replicas' nodes, to forget (proposed as
    /// `ChangeKind::Forget` on the next tick by the groups led here).
    pub(super) forget: HashMap<u64, Vec<Replica>>,
    /// Groups with input since their last step, to step this turn (`Group::touched`).
    pub(super) touched: Vec<u64>,
    /// Messages to other nodes, coalesced per node, flushed once a turn.
    pub(super) outbox: Outbox,
    /// Founding replicas requested and not yet written (`flush_creates`).
    pub(super) creates: Vec<PendingCreate>,
    /// Removals of groups whose founding write is in flight: done once it is durable.
    pub(super) removes: Vec<(u64, Completer<Result<(), ProposeError>>)>,
    /// Groups created by effects for another worker whose mailbox was full: (worker,
    /// group, command, deadline), retried each turn until the deadline, never waited for.
    pub(super) effect_creates: VecDeque<(usize, u64, Cmd, Instant)>,
    /// Read contexts: unique across restarts (the node's incarnation in the high bits).
    pub(super) read_ctx: ReadCtx,
    /// Worker ticks since start: the clock of deadlines and of idle credit.
    pub(super) ticks: u64,
    /// Waiters across all groups.
    pub(super) tally: Tally,
    /// What the groups hold for their callers, summed (`max_worker_uncommitted_bytes`,
    /// `max_worker_pending_reads`).
    pub(super) holdings: Holdings,
    /// A WAL write failed: the engine stopped (`stop`).
    pub(super) failed: bool,
    /// Shutdown was asked, or the mailbox disconnected.
    pub(super) stopping: bool,
    /// The WAL writes: this turn's batch and the writes in flight.
    pub(super) writes: WritePipeline,
    /// Groups whose last hard state changed only its commit index and is not written
    /// yet: it rides the next write that is synced anyway, or a tick's write when no
    /// write is in flight (`persisted`), so a commit advance never costs a sync of its
    /// own that the next entries would wait behind.
    pub(super) lazy_commits: HashSet<u64>,
    /// Admission of replicas created from messages: the embedder's policy, the per-tick
    /// caps, the unconfirmed replicas (`admission`).
    pub(super) admission: Admission,
    /// Groups whose replica asked its members about an unproven tombstone this tick (at
    /// most one probe round per group per tick, however many tombstones arrive).
    pub(super) probed: HashSet<u64>,
    /// The clean-up pass in progress, paced over ticks, and what it holds to send.
    pub(super) gc: gc::GcPacer,
    pub(super) gc_out: gc::GcOutbox,
    /// Groups ticked: every group that is not quiesced (or has reads to time out).
    pub(super) active: HashSet<u64>,
    /// Quiesced groups to wake (node liveness), a bounded number per tick.
    pub(super) wake_queue: WakeQueue,
    /// Groups with a voter removal between its two steps (`Group::removal`).
    pub(super) removing: Vec<u64>,
    /// The way to the applier (the apply thread, or this thread for a quick batch), and
    /// its reports.
    pub(super) apply: ApplyLane,
    pub(super) apply_rx: Receiver<ApplyDone>,
    /// Entries handed to the apply thread and not yet reported applied.
    pub(super) apply_backlog: u64,
    /// Their bytes (`Entry::size`), bounded by `max_apply_backlog_bytes`.
    pub(super) apply_backlog_bytes: u64,
    /// Groups whose committed entries wait for the apply backlog to fall below
    /// `max_apply_backlog` and `max_apply_backlog_bytes` (`Worker::apply_budget`); stepped
    /// again once it has.
    pub(super) apply_waiting: HashSet<u64>,
    /// Apply commands held until a snapshot's log reset is durable.
    pub(super) apply_hold: ApplyHold,
    /// Snapshot streams received (to disk, on the snapshot I/O thread) and the resume
    /// points of streams sent.
    pub(super) snap: SnapshotReceiver,
    /// Requests waiting for a snapshot (`snap_request`).
    pub(super) snap_requests: super::snapshot_waiters::SnapshotRequests,
    /// Load measuring (`load_book`; its publishing pass: `load_worker`).
    pub(super) load: super::load_book::LoadBook,
}

impl Worker {
    /// A worker with the groups recovered for it; starts its apply thread (the worker's
    /// own thread is started by the caller, with [`Worker::run`]).
    pub(crate) fn new(
        idx: usize,
        sh: Arc<Shared>,
        rx: Receiver<Cmd>,
        ctl_rx: Receiver<Cmd>,
        rec: Recovered,
    ) -> std::io::Result<Worker> {
        let (apply_done, apply_rx) = unbounded();
        let (applier, writer) = Applier::new(
            apply_done,
            sh.snap_dir.clone(),
            sh.apply_latency.clone(),
            sh.cfg.get().measure_load,
            super::split::SplitCtx::new(sh.clone()),
        );
        let mut apply = ApplyLane::start(
            format!("flotilla-apply-{idx}"),
            applier,
            writer,
            sh.cfg.get().inline_apply_slow,
        )?;
        let snap = SnapshotReceiver::new(&sh.snap_dir, idx)?;
        let mut groups = HashMap::with_capacity(rec.groups.len());
        let mut touched = Vec::with_capacity(rec.groups.len());
        let mut tables = rec.sessions;
        for (g, sm) in rec.groups {
            touched.push(g.id);
            let _ = apply.send(add_cmd(&g, sm));
            if let Some(table) = tables.remove(&g.id) {
                let _ = apply.send(super::apply::ApplyCmd::Sessions { group: g.id, table });
            }
            groups.insert(g.id, g);
        }
        let mut writes = WritePipeline::new();
        if sh.cfg.get().acks_when_durable {
            writes.set_durable_acks(super::durable_acks::DurableAcks::new(
                sh.sender.clone(),
                sh.net_ctl.clone(),
                sh.net.clone(),
                sh.acks_when_durable.clone(),
            ));
        }
        let read_ctx = ReadCtx::new(sh.incarnation);
        let load = super::load_book::LoadBook::new(sh.cfg.get());
        Ok(Worker {
            idx,
            sh,
            rx,
            ctl_rx: Some(ctl_rx),
            groups,
            tombstones: rec.tombstones,
            tombstones_unsynced: HashMap::new(),
            forget: HashMap::new(),
            touched,
            outbox: Outbox::new(),
            creates: Vec::new(),
            removes: Vec::new(),
            effect_creates: VecDeque::new(),
            read_ctx,
            ticks: 0,
            tally: Tally::default(),
            holdings: Holdings::default(),
            failed: false,
            stopping: false,
            writes,
            lazy_commits: HashSet::new(),
            admission: Admission::default(),
            probed: HashSet::new(),
            gc: gc::GcPacer::default(),
            gc_out: Default::default(),
            active: HashSet::new(),
            wake_queue: WakeQueue::default(),
            removing: Vec::new(),
            apply,
            apply_rx,
            apply_backlog: 0,
            apply_backlog_bytes: 0,
            apply_waiting: HashSet::new(),
            apply_hold: ApplyHold::default(),
            snap,
            snap_requests: Default::default(),
            load,
        })
    }

    /// The ready loop; returns on shutdown.
    pub(crate) fn run(mut self) {
        let interval = self.sh.cfg.get().tick_interval;
        let mut next_tick = Instant::now() + interval;
        tracing::debug!("worker {} starts with {} groups", self.idx, self.groups.len());
        while !self.stopping {
            let now = Instant::now();
            let stride = self.clock_stride();
            let timeout = if self.touched.is_empty() {
                (next_tick + interval * (stride - 1)).saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            self.wait(timeout);
            if stride > 1 {
                // Slept in strides: the ticks that passed are counted before any input is
                // handled, so the input sees the clock as it is (idle credit, deadlines).
                self.tick_if_due(&mut next_tick, interval, stride);
            }
            self.load.turn();
            self.apply.new_turn();
            // One span per turn (after the wait, so idle time is not in it); with no
            // subscriber, a disabled callsite: one relaxed load.
            let turn = tracing::trace_span!("turn", worker = self.idx);
            let _turn = turn.enter();
            self.drain_control();
            let data_until = Instant::now() + interval;
            for _ in 0..MAX_CMDS_PER_TURN {
                match self.rx.try_recv() {
                    Ok(cmd @ (Cmd::Msgs { .. } | Cmd::Heartbeats { .. })) => {
                        self.handle(cmd);
                        self.drain_control();
                        if Instant::now() >= data_until {
                            // The rest waits for the next turn: tick and step first.
                            break;
                        }
                    }
                    Ok(cmd) => self.handle(cmd),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.stopping = true;
                        break;
                    }
                }
            }
            self.flush_creates();
            self.poll_snapshot_io();
            self.poll_applied();
            self.send_effect_creates();
            self.poll_inflight();
            self.tick_if_due(&mut next_tick, interval, 1);
            self.process();
            self.snap.drop_uninstalled();
            self.flush_outbox();
            if let Some(gauges) = self.sh.gauges.get(self.idx) {
                gauges.apply_lag.store(self.apply_backlog, Ordering::Relaxed);
                gauges.apply_lag_bytes.store(self.apply_backlog_bytes, Ordering::Relaxed);
                gauges.wal_pending_bytes.store(self.writes.pending_bytes(), Ordering::Relaxed);
                let held = self.holdings.total();
                gauges.uncommitted_bytes.store(held.bytes, Ordering::Relaxed);
                gauges.reads_held.store(held.reads, Ordering::Relaxed);
            }
        }
        self.finish();
    }

    /// How many ticks the worker may sleep at a time: `EngineConfig::idle_wake_ticks` when
    /// nothing needs its clock (no group ticking or to step, nothing written or applied
    /// in flight, no liveness wake, removal, forget, commit index or creation waiting for
    /// a tick), else 1. Input wakes it at once either way.
    fn clock_stride(&self) -> u32 {
        let idle = self.active.is_empty()
            && self.touched.is_empty()
            && self.wake_queue.is_empty()
            && self.removing.is_empty()
            && self.forget.is_empty()
            && self.lazy_commits.is_empty()
            && self.writes.is_idle()
            && self.apply_backlog == 0
            && self.creates.is_empty()
            && self.effect_creates.is_empty();
        if idle {
            self.sh.cfg.get().idle_wake_ticks.max(1)
        } else {
            1
        }
    }

    /// Counts the ticks that passed once `next_tick` is due: one, or when the worker
    /// slept in strides, each full interval since, up to `max`. Ticks a late worker missed
    /// beyond that are dropped, not caught up (a long turn is not followed by a burst of
    /// election ticks).
    fn tick_if_due(&mut self, next_tick: &mut Instant, interval: Duration, max: u32) {
        let now = Instant::now();
        if now < *next_tick {
            return;
        }
        let behind = now.duration_since(*next_tick).as_nanos() / interval.as_nanos().max(1);
        let n = u32::try_from(behind).unwrap_or(u32::MAX).saturating_add(1).min(max.max(1));
        self.tick(u64::from(n));
        *next_tick += interval * n;
        if *next_tick < now {
            *next_tick = now + interval;
        }
    }

    /// Handles what the control mailbox holds (at most `MAX_CMDS_PER_TURN`).
    fn drain_control(&mut self) {
        let Some(ctl) = self.ctl_rx.take() else { return };
        let mut open = true;
        for _ in 0..MAX_CMDS_PER_TURN {
            match ctl.try_recv() {
                Ok(cmd) => self.handle(cmd),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if open {
            self.ctl_rx = Some(ctl);
        }
    }

    /// Sleeps until the mailbox, the control mailbox, the apply thread or the oldest write
    /// in flight has something, or `timeout` passes.
    fn wait(&self, timeout: Duration) {
        let mut sel = Select::new();
        sel.recv(&self.rx);
        if let Some(ctl) = &self.ctl_rx {
            sel.recv(ctl);
        }
        sel.recv(&self.apply_rx);
        sel.recv(self.snap.reports());
        if let Some(t) = self.writes.wake_ticket() {
            sel.recv(t.receiver());
        }
        let _ = sel.ready_timeout(timeout);
    }

    /// Marks `g` to be stepped this turn.
    pub(super) fn touch(touched: &mut Vec<u64>, g: &mut Group) {
        if !g.touched {
            g.touched = true;
            touched.push(g.id);
        }
    }

    /// One command from the mailbox, dispatched to the file of its concern.
    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Msgs { from, msgs, hold } => {
                if !self.creates.is_empty() {
                    self.flush_creates();
                }
                self.slow_step_hook(&msgs);
                for (group, m) in msgs {
                    self.step(from, group, m);
                }
                // Released only now: the messages were stepped.
                drop(hold);
            }
            Cmd::Heartbeats { from, heartbeats, acks, hold } => {
                if !self.creates.is_empty() {
                    self.flush_creates();
                }
                self.step_heartbeats(from, heartbeats, acks);
                // Released only now: the entries were stepped.
                drop(hold);
            }
            Cmd::Propose { group, data, done } => self.propose(group, data, done),
            Cmd::ProposeSession { group, op, data, done } => self.propose_entry(group, Some(op), data, done),
            Cmd::Conf { group, change, done } => self.conf_change(group, change, done),
            Cmd::Read { group, done } => self.read(group, done),
            Cmd::Transfer { group, node, done } => done.complete(self.transfer(group, node)),
            Cmd::Create { group, replica, conf, sm, first_leader, done } => {
                self.creates.push(PendingCreate {
                    group,
                    replica,
                    conf: *conf,
                    sm,
                    first_leader,
                    snapshot: None,
                    sessions: None,
                    done,
                })
            }
            Cmd::Status { group, done } => {
                let v = match group {
                    Some(g) => {
                        self.groups.get(&g).map(|g| vec![self.status_with_load(g)]).unwrap_or_default()
                    }
                    None => self.groups.values().map(|g| self.status_with_load(g)).collect(),
                };
                let _ = done.send(v);
            }
            Cmd::Liveness { node, restarted } => self.liveness(node, restarted),
            Cmd::PeerUnreachable { node } => self.peer_unreachable(node),
            Cmd::SnapshotSent { group, replica, ok } => {
                if let Some(g) = self.groups.get_mut(&group) {
                    Self::credit_idle(g, self.ticks);
                    g.raft.report_snapshot(replica, ok);
                    Self::touch(&mut self.touched, g);
                }
            }
            Cmd::Remove { group, done } => self.remove(group, done),
            Cmd::Tombstone { from, group, replica, conf_index } => {
                self.on_tombstone(from, group, replica, conf_index)
            }
            Cmd::TombstoneAck { from, group, replica } => self.on_tombstone_ack(from, group, replica),
            Cmd::GcProbe { from, group, replica } => {
                self.answer_removed(from, group, replica);
            }
            Cmd::SnapshotProgress { from, group, replica, to, leader_term, index, term, offset } => {
                self.on_snapshot_progress(from, group, replica, to, leader_term, index, term, offset)
            }
            Cmd::Shutdown => self.stopping = true,
            Cmd::RequestSnapshot { group, done } => self.request_snapshot(group, done),
            Cmd::Import { group, replica, meta, sm, sessions, done } => {
                self.import_group(group, replica, *meta, sm, *sessions, done)
            }
            Cmd::ReadLocal { group, bound, done } => self.read_local(group, bound, done),
            Cmd::SplitChild { group, replica, meta, sm, first_leader, done } => {
                self.split_child(group, replica, *meta, sm, first_leader, done)
            }
        }
    }

    /// Test hook (cargo feature `failpoints`): the failpoint `engine::slow_step`, set to
    /// `return(N:MS)`, makes node N's workers sleep MS milliseconds per MiB of entry data
    /// in each batch of messages they step (at most one second per batch), as a worker
    /// whose storage is slow would. Inactive otherwise.
    fn slow_step_hook(&self, msgs: &[(u64, crate::raft::message::Message)]) {
        let _ = msgs;
        fail::fail_point!("engine::slow_step", |arg: Option<String>| {
            let Some((node, ms)) = arg.as_deref().and_then(|a| a.split_once(':')) else { return };
            if node.parse::<u64>().ok() != Some(self.sh.node) {
                return;
            }
            let ms_per_mib: u64 = ms.parse().unwrap_or(0);
            let bytes: usize = msgs
                .iter()
                .map(|(_, m)| match &m.body {
                    crate::raft::message::MessageBody::Append { entries, .. } => {
                        entries.iter().map(|e| e.size()).sum()
                    }
                    _ => 0,
                })
                .sum();
            let ms = (bytes as u64 * ms_per_mib / (1 << 20)).min(1000);
            std::thread::sleep(Duration::from_millis(ms));
        });
    }

    /// One worker tick: liveness wakes, Raft ticks of the active groups, waiters' and
    /// reads' deadlines, and the periodic work (clean-up pass, forgetting confirmed
    /// removals, voter removals in progress, compaction of pinning groups). Counts `ticks`
    /// ticks on the worker's clock: more than one only when an idle worker slept several
    /// (`clock_stride`), and then no group was ticking, so each active group still gets
    /// one Raft tick (a group that sleeps is credited its idle ticks by `credit_idle`).
    fn tick(&mut self, ticks: u64) {
        self.ticks += ticks;
        bump_by(&self.sh.counters.worker_ticks, ticks);
        bump(&self.sh.counters.worker_tick_wakes);
        self.admission.new_tick();
        self.probed.clear();
        let now = self.ticks;
        self.sweep_unconfirmed(now);
        self.sweep_snapshot_requests();
        self.expire_snapshot_streams();
        self.wake_queued(now);
        // Only the active groups: quiesced ones cost nothing here.
        let mut ticked = 0u64;
        let groups = &mut self.groups;
        let touched = &mut self.touched;
        let tally = &mut self.tally;
        self.active.retain(|gid| groups.contains_key(gid));
        for gid in &self.active {
            let Some(g) = groups.get_mut(gid) else { continue };
            if g.raft.is_quiesced() {
                // Kept for its reads' deadlines, or a leader re-sending its quiesce
                // heartbeat to members that did not acknowledge it.
                Self::credit_idle(g, now);
            } else {
                g.raft.tick();
                ticked += 1;
            }
            if !g.waiters.is_empty() {
                g.waiters.expire(tally, now);
            }
            if !g.reads.is_empty() {
                // A follower forgets the reads it forwarded for them (the answer may
                // never come: a lost message, a leader holding too many).
                let raft = &mut g.raft;
                g.reads.expire(now, |ctx| raft.abandon_read(ctx));
            }
            Self::touch(touched, g);
        }
        bump_by(&self.sh.counters.raft_ticks, ticked);
        let cfg = self.sh.cfg.get();
        let every = gc::gc_every(cfg.gc_interval_elections, cfg.raft.election_timeout_max_ticks);
        let cap = usize::try_from(cfg.gc_replicas_per_tick).unwrap_or(usize::MAX);
        let groups = &self.groups;
        let slice = self.gc.take(now, ticks, every, cap, || groups.keys().copied().collect());
        if !slice.is_empty() {
            let done = self.gc.pass_done();
            self.gc_pass(&slice, done);
        }
        if !self.forget.is_empty() {
            self.propose_forgets();
        }
        self.tick_removals();
        self.flush_lazy_commits_when_idle();
        self.compact_pinning_groups(ticks);
        self.publish_loads();
    }

    /// Steps the groups touched: at most `READY_ROUNDS` `Ready`s each (`ready`), then
    /// submits the turn's batch (earlier once it holds half the WAL's write size).
    fn process(&mut self) {
        let touched = std::mem::take(&mut self.touched);
        for gid in touched {
            let Some(mut g) = self.groups.remove(&gid) else { continue };
            g.touched = false;
            for _ in 0..READY_ROUNDS {
                if self.failed || !g.raft.has_ready_within(self.apply_budget()) {
                    break;
                }
                self.handle_ready(&mut g);
            }
            if self.failed {
                // `storage_failed` failed the waiters of the groups in the map; this one
                // was out of it while its Ready was handled.
                g.fail_all(&mut self.tally, || ReadError::StorageFailed);
                self.groups.insert(gid, g);
                continue;
            }
            if g.first_campaign && g.raft.applied() >= g.raft.committed() {
                g.first_campaign = false;
                g.raft.campaign_now();
            }
            if g.raft.has_ready_within(self.apply_budget()) {
                g.touched = true;
                self.touched.push(gid);
            } else if g.raft.has_committed_to_apply() {
                // Held back by the apply backlog: stepped again once it falls.
                self.apply_waiting.insert(gid);
            }
            self.announce_leader(&mut g);
            self.settle(&mut g);
            g.report_held(&mut self.holdings);
            self.groups.insert(gid, g);
            // Submitted early once it holds half the WAL's write size (one group's Ready
            // adds at most `max_uncommitted_bytes` plus one append message).
            if self.writes.batch.encoded_len() >= self.sh.cfg.get().wal.max_write_bytes / 2 {
                self.submit();
            }
        }
        self.submit_turn();
    }

    /// Committed entries (and bytes) this worker may still hand to its apply thread
    /// before the backlog reaches `max_apply_backlog` (`max_apply_backlog_bytes`). The
    /// bound holds for followers too: their leader commits at the other members' pace, so
    /// only holding entries back in the log (in memory up to `RETAINED_BYTES_MAX` per
    /// group, then on disk) bounds what a slow state machine makes this node hold.
    pub(super) fn apply_budget(&self) -> ApplyBudget {
        let cfg = self.sh.cfg.get();
        ApplyBudget {
            entries: cfg.max_apply_backlog.saturating_sub(self.apply_backlog),
            bytes: cfg.max_apply_backlog_bytes.saturating_sub(self.apply_backlog_bytes),
        }
    }

    /// Sends the turn's coalesced messages, one batch per node: through the transport's
    /// sender on this thread (`EngineConfig::direct_network`), or handed to the network
    /// thread (dropped once the engine failed).
    pub(super) fn flush_outbox(&mut self) {
        if self.failed {
            let _ = self.outbox.flush();
            return;
        }
        for (to, items) in self.outbox.flush() {
            bump(&self.sh.counters.net_batches);
            match &self.sh.sender {
                Some(s) => {
                    bump(&self.sh.counters.net_direct_sends);
                    super::net_lanes::send_direct(&**s, to, items);
                }
                None => {
                    super::net_lanes::hand_off(&self.sh.net_ctl, &self.sh.net, to, items);
                }
            }
        }
    }
}
