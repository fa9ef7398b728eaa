//! [`Raft`]: the protocol rules of one replica (Raft paper §5, thesis §3-§6, §9.6, §10.2.1).
//!
//! Owns roles, terms and votes, elections, log replication's follower side, membership,
//! leadership transfer and snapshots; its child modules hold the leader's progress
//! tracking (`tracker.rs`), reads (`read_only.rs`), quiescence (`quiesce.rs`) and the
//! heartbeat entry points that take no `Message` (`heartbeat.rs`). Never performs I/O,
//! reads a clock or spawns a thread: every effect leaves through [`Ready`]. Time enters as inputs: [`Raft::tick`] drives
//! elections and heartbeats, and [`Raft::set_now`] gives the clock that lease reads are
//! measured with (a replica that misses ticks while stalled still sees its lease expire).

use std::sync::Arc;

use bytes::Bytes;
use thin_vec::ThinVec;

use super::conf::{ConfChange, ConfChangeError, ConfState};
use super::config::{ReadMode, ValidConfig};
use super::error::{CompactError, NewRaftError, ProposeError, ReadIndexError, StepError, TransferError};
use super::event::{Event, MembershipStep};
use super::log::RaftLog;
use super::message::{
    Entry, EntryPayload, HardState, Message, MessageBody, ReadState, Snapshot, SnapshotChunk, SnapshotMeta,
};
use super::progress::{Progress, ProgressState};
use super::quorum::{joint_value, vote_result, VoteResult};
use super::ready::{ApplyBudget, Ready};
use super::rng::SplitMix64;
use super::status::{FollowerStatus, Stats, Status};
use super::storage::{LogStore, StorageError};
use super::types::{Replica, ReplicaId, Role, NO_REPLICA};

mod heartbeat;
mod quiesce;
mod read_only;
mod stale_read;
mod tracker;

pub use stale_read::LocalReadView;

use super::read_queue::{Reads, ROUND_HISTORY};

#[cfg(feature = "mutants")]
use super::config::Mutant;

/// How a campaign starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Campaign {
    /// A PreVote round (thesis §9.6): the term is not raised.
    PreElection,
    /// A normal election.
    Election,
    /// An election ordered by TimeoutNow: no PreVote, voters ignore their lease.
    Transfer,
}

/// A snapshot being received chunk by chunk.
#[derive(Debug)]
struct PartialSnapshot {
    term: u64,
    meta: SnapshotMeta,
    next_seq: u32,
    data: Vec<u8>,
}

/// The most snapshot bytes the core assembles from chunks in memory. The engine's runtime
/// never lets chunks reach the core (it streams them to disk and steps one data-less last
/// chunk); this bounds the assembly that the simulator, and anything else stepping chunks
/// into the core directly, relies on: a stream growing past it is discarded.
pub const MAX_ASSEMBLED_SNAPSHOT_BYTES: usize = 64 << 20;

/// Terms at or above this are refused: no group gets anywhere near, and refusing them keeps
/// `term + 1` from overflowing however a message lies.
const MAX_TERM: u64 = u64::MAX / 2;

/// Log indexes at or above this are refused, for the same reason.
const MAX_INDEX: u64 = u64::MAX / 2;

/// What [`Raft::stats`] reads when `Config::count_stats` is off.
static NO_STATS: Stats = Stats {
    campaigns: 0,
    leaderships: 0,
    leaderships_by_transfer: 0,
    transfers_started: 0,
    transfers_aborted: 0,
    timeout_now_sent: 0,
    snapshots_installed: 0,
    snapshots_skipped: 0,
    snapshot_streams_discarded: 0,
    snapshots_sent: 0,
    joint_entered: 0,
    joint_left: 0,
    simple_changes: 0,
    reads_served: 0,
    reads_forwarded: 0,
    lease_reads: 0,
    quorum_read_rounds: 0,
    lease_reads_expired: 0,
    lease_reads_after_wake: 0,
    proposals_refused_uncommitted: 0,
    reads_refused_full: 0,
    append_conflicts_refused: 0,
    check_quorum_step_downs: 0,
    quiesces: 0,
    wakes: 0,
    quiesce_resends: 0,
};

/// The Raft state machine of one replica of one group.
pub struct Raft<S> {
    id: ReplicaId,
    /// Shared by every replica built from one template ([`Raft::with_shared_config`]);
    /// its `id`, `applied` and `seed` are read at construction only.
    cfg: Arc<ValidConfig>,
    term: u64,
    vote: ReplicaId,
    log: RaftLog<S>,
    role: Role,
    leader: ReplicaId,
    /// The applied configuration. Shared (not copied) with the last entry of
    /// `conf_history` and with whoever asks for it ([`Raft::conf_shared`]: the runtime's
    /// apply thread), so an idle replica holds its membership once.
    conf: Arc<ConfState>,
    /// Per-member progress, kept by the leader only (empty on other roles, so an idle
    /// follower does not carry it); unsorted, groups are small.
    progress: ThinVec<(ReplicaId, Progress)>,
    votes: ThinVec<(ReplicaId, bool)>,
    msgs: ThinVec<Message>,
    msgs_after_persist: ThinVec<Message>,
    /// Whether this leader's term is known durable (so its messages may go before its
    /// writes are).
    term_durable: bool,
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_timeout: u32,
    rng: SplitMix64,
    /// The clock given to [`Raft::set_now`] (never goes back); `None` until first set,
    /// and then no lease is held.
    now: Option<u64>,
    transferee: ReplicaId,
    transfer_elapsed: u32,
    /// Index of the last membership change in the log (or the last index at election).
    pending_conf_index: u64,
    /// Membership changes handed out for apply, not yet reported applied.
    pending_conf_entries: ThinVec<(u64, ConfChange)>,
    /// The configuration after each applied change since the compaction point (the last
    /// one is `conf` itself, shared).
    conf_history: ThinVec<(u64, Arc<ConfState>)>,
    round: u64,
    /// ReadIndex bookkeeping, allocated on the first read and dropped when the replica
    /// quiesces with none pending (an idle replica pays a pointer).
    reads: Option<Box<Reads>>,
    /// The clock time (`now`) at which this leader's lease ends: the time the latest
    /// quorum-confirmed heartbeat round was sent, plus the lease (0: no lease).
    lease_until: u64,
    /// Heartbeat rounds up to this one may not extend the lease. Set to `u64::MAX` once a
    /// TimeoutNow went out: a TimeoutNow delayed past an aborted transfer can still make
    /// its target campaign past every lease, so this leader holds no lease again in its
    /// term (reads fall back to heartbeat rounds).
    lease_min_round: u64,
    /// The lease was extended before this leader last woke from quiescence and by no
    /// round since (counts `Stats::lease_reads_after_wake`).
    lease_from_sleep: bool,
    /// Payload bytes of the proposals this leader appended in its term and has not yet
    /// handed out for apply (`Config::max_uncommitted_bytes`); 0 unless leader.
    uncommitted_bytes: u64,
    /// Set at start-up under LeaseBased reads: refuse votes for one minimum election
    /// timeout, as if a leader had just been heard, since a leader may hold a lease that
    /// counted this replica before it restarted.
    startup_lease: bool,
    need_bcast: bool,
    need_heartbeat: bool,
    /// The next heartbeat round goes to every member (not only to the quorum that
    /// confirms reads): set by the heartbeat interval and by every cause but a read.
    full_heartbeat: bool,
    /// Boxed (rare): an idle replica pays a pointer for it.
    snapshot_recv: Option<Box<PartialSnapshot>>,
    /// Boxed (rare), as `snapshot_recv`.
    snapshot_ready: Option<Box<Snapshot>>,
    prev_hs: HardState,
    /// `None` unless `Config::count_stats` (boxed: a replica that does not count pays a
    /// pointer).
    stats: Option<Box<Stats>>,
    /// What happened since the last `Ready` (handed out in `Ready::events`).
    events: ThinVec<Event>,
    /// The current candidacy was ordered by TimeoutNow.
    transfer_campaign: bool,
    /// Quiesced (`Config::quiesce`): no heartbeats, no election timeout, until woken.
    quiesced: bool,
    /// Leader: the first heartbeat round that told every member commit == `quiesce_last`
    /// (the last index, committed); 0 if none. Once every member echoed a round at or
    /// after it, the group may quiesce.
    quiesce_round: u64,
    /// The last index `quiesce_round` was about.
    quiesce_last: u64,
    /// Follower: wall ticks of silence while quiesced, credited to the election timer only
    /// by a liveness wake ([`Raft::wake`]); any other wake drops them.
    idle_credit: u64,
    /// Leader: ticks since it quiesced, bounding the quiesce heartbeat's re-sends.
    quiesce_age: u32,
    /// Follower: the highest commit index the leader of the current term told it (0: none
    /// heard). See `stale_read.rs`.
    leader_commit: u64,
    /// Follower: ticks since the leader of the current term was last heard; leader: an
    /// upper bound of the ticks since a quorum was last heard. `u32::MAX`: never.
    contact_age: u32,
}

impl<S> std::fmt::Debug for Raft<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Raft")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("term", &self.term)
            .field("leader", &self.leader)
            .finish_non_exhaustive()
    }
}

impl<S: LogStore> Raft<S> {
    /// Creates (or recovers) a replica from `storage`: the durable hard state, snapshot and
    /// entries. Membership changes between the snapshot and `cfg.applied` are re-applied.
    pub fn new(cfg: ValidConfig, storage: S) -> Result<Self, NewRaftError> {
        let (id, applied, seed) = (cfg.id, cfg.applied, cfg.seed);
        Self::with_shared_config(Arc::new(cfg), id, applied, seed, storage)
    }

    /// As [`Raft::new`], with a configuration shared by many replicas (a runtime holding
    /// thousands of them keeps one copy): `cfg`'s own `id`, `applied` and `seed` are
    /// ignored for `id` (non-zero), `applied` and `seed`.
    pub fn with_shared_config(
        cfg: Arc<ValidConfig>,
        id: ReplicaId,
        applied: u64,
        seed: u64,
        storage: S,
    ) -> Result<Self, NewRaftError> {
        if id == NO_REPLICA {
            return Err(NewRaftError::ZeroId);
        }
        let init = storage.initial_state()?;
        let hs = init.hard_state;
        let conf = init.snapshot.conf.clone();
        let log = RaftLog::new(storage, init.snapshot, hs.commit, applied)?;
        let count_stats = cfg.count_stats;
        let mut r = Raft {
            id,
            rng: SplitMix64::new(seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            cfg,
            term: hs.term,
            vote: hs.vote,
            log,
            role: Role::Follower,
            leader: NO_REPLICA,
            conf: Arc::default(),
            progress: ThinVec::new(),
            votes: ThinVec::new(),
            msgs: ThinVec::new(),
            msgs_after_persist: ThinVec::new(),
            term_durable: false,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_timeout: 0,
            now: None,
            transferee: NO_REPLICA,
            transfer_elapsed: 0,
            pending_conf_index: 0,
            pending_conf_entries: ThinVec::new(),
            conf_history: ThinVec::new(),
            round: 0,
            reads: None,
            lease_until: 0,
            lease_min_round: 0,
            lease_from_sleep: false,
            uncommitted_bytes: 0,
            startup_lease: false,
            need_bcast: false,
            need_heartbeat: false,
            full_heartbeat: false,
            snapshot_recv: None,
            snapshot_ready: None,
            prev_hs: hs,
            stats: count_stats.then(Box::default),
            events: ThinVec::new(),
            transfer_campaign: false,
            quiesced: false,
            quiesce_round: 0,
            quiesce_last: 0,
            idle_credit: 0,
            quiesce_age: 0,
            leader_commit: 0,
            contact_age: u32::MAX,
        };
        r.set_conf(super::conf_pool::intern(conf));
        // Re-apply membership changes the state machine already applied.
        let (lo, hi) = (r.log.first_index(), r.log.applied);
        if hi >= lo {
            let ents = r.log.entries(lo, hi + 1, u64::MAX)?;
            for e in ents {
                if let EntryPayload::ConfChange(cc) = &e.payload {
                    r.apply_conf_change(e.index, cc);
                }
            }
        }
        r.become_follower(hs.term, NO_REPLICA);
        r.startup_lease = r.cfg.read_mode == ReadMode::LeaseBased;
        Ok(r)
    }

    // ----------------------------------------------------------------------------------
    // Accessors
    // ----------------------------------------------------------------------------------

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.id
    }
    /// Current term.
    pub fn term(&self) -> u64 {
        self.term
    }
    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The leader this replica knows of (0: none).
    pub fn leader(&self) -> ReplicaId {
        self.leader
    }
    /// Commit index.
    pub fn committed(&self) -> u64 {
        self.log.committed
    }
    /// Applied index (as reported by the runtime).
    pub fn applied(&self) -> u64 {
        self.log.applied
    }
    /// Last log index.
    pub fn last_index(&self) -> u64 {
        self.log.last_index()
    }
    /// Last index known durable.
    pub fn stable_index(&self) -> u64 {
        self.log.stable_index()
    }
    /// The applied configuration.
    pub fn conf(&self) -> &ConfState {
        &self.conf
    }
    /// The applied configuration, shared: a holder of a copy that outlives this call (the
    /// runtime's apply thread) costs a pointer, not a configuration.
    pub fn conf_shared(&self) -> &Arc<ConfState> {
        &self.conf
    }
    /// An index as of which the applied configuration is known to hold: the index of the
    /// last applied membership change, or the compaction point if none was applied since
    /// (the replica-removal GC of the runtime compares these).
    pub fn conf_index(&self) -> u64 {
        self.conf_history.last().map_or(self.log.snap.index, |(i, _)| *i)
    }
    /// The compaction point (latest snapshot metadata).
    pub fn snapshot_meta(&self) -> &SnapshotMeta {
        &self.log.snap
    }
    /// The compaction point, shared: a store that records the same point keeps a
    /// pointer to it instead of a copy.
    pub fn snapshot_shared(&self) -> &Arc<SnapshotMeta> {
        &self.log.snap
    }
    /// Term of the entry at `index`.
    pub fn term_at(&self, index: u64) -> Result<u64, StorageError> {
        self.log.term(index)
    }
    /// Entries `[lo, hi)` of the log (durable or not).
    pub fn entries(&self, lo: u64, hi: u64) -> Result<Vec<Entry>, StorageError> {
        self.log.entries(lo, hi, u64::MAX)
    }
    /// Adds one to the counter `field` picks, when counting (`Config::count_stats`).
    fn count(&mut self, field: impl FnOnce(&mut Stats) -> &mut u64) {
        if let Some(s) = self.stats.as_deref_mut() {
            *field(s) += 1;
        }
    }
    /// The storage.
    pub fn storage(&self) -> &S {
        &self.log.storage
    }
    /// The storage, mutably (the runtime persists through it).
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.log.storage
    }
    /// Counters of what this replica did.
    pub fn stats(&self) -> &Stats {
        self.stats.as_deref().unwrap_or(&NO_STATS)
    }
    /// The hard state as it stands (durable or not).
    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.committed }
    }
    /// The leader this replica knows of, with its node id, if known.
    pub fn leader_hint(&self) -> Option<Replica> {
        if self.leader == NO_REPLICA {
            None
        } else {
            self.conf.find(self.leader).or(Some(Replica::new(0, self.leader)))
        }
    }
    /// A read-only view for operators.
    pub fn status(&self) -> Status {
        let followers = if self.role == Role::Leader {
            self.progress
                .iter()
                .filter(|(id, _)| *id != self.id)
                .map(|(id, p)| FollowerStatus { id: *id, matched: p.matched, next: p.next, state: p.state })
                .collect()
        } else {
            Vec::new()
        };
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit: self.log.committed,
            applied: self.log.applied,
            last_index: self.log.last_index(),
            first_index: self.log.first_index(),
            conf: ConfState::clone(&self.conf),
            transferee: self.transferee,
            followers,
        }
    }

    #[cfg(feature = "mutants")]
    fn mutant(&self, m: Mutant) -> bool {
        self.cfg.mutant == Some(m)
    }

    #[cfg(not(feature = "mutants"))]
    #[inline(always)]
    fn mutant(&self, _m: Mutant) -> bool {
        false
    }

    /// Whether a membership change is committed but not yet applied (unknown if storage
    /// fails: then assume there is).
    fn has_unapplied_conf_changes(&self) -> bool {
        let (applied, committed) = (self.log.applied, self.log.committed);
        if applied >= committed {
            return false;
        }
        match self.log.entries(applied + 1, committed + 1, u64::MAX) {
            Ok(ents) => ents.iter().any(|e| matches!(e.payload, EntryPayload::ConfChange(_))),
            Err(_) => true,
        }
    }

    fn promotable(&self) -> bool {
        self.conf.is_voter(self.id)
    }

    fn committed_in_current_term(&self) -> bool {
        self.log.term(self.log.committed).map(|t| t == self.term).unwrap_or(false)
    }

    // ----------------------------------------------------------------------------------
    // Sending
    // ----------------------------------------------------------------------------------

    fn send_term(&mut self, to: ReplicaId, term: u64, body: MessageBody) {
        // A follower or candidate says nothing before its state is durable: votes are
        // granted and entries acknowledged only from disk. A leader whose term is durable
        // may send before its own writes are (thesis §10.2.1).
        //
        // Except a heartbeat's answer and a forwarded read, which go at once (as in
        // etcd/raft, where only append and vote answers wait for the write): neither
        // promises anything that is on disk (the round echoed, a term not voted in, a
        // read's context), so a crash that loses the unsynced state cannot make them
        // untrue. Held behind the write, each would wait for an fsync: a heartbeat answer
        // on a slow disk longer than the leader's CheckQuorum window (the leader steps
        // down with both followers alive), a follower read behind every write in flight.
        let immediate = (self.role == Role::Leader && self.term_durable)
            || matches!(body, MessageBody::HeartbeatResponse { .. } | MessageBody::ReadIndex { .. })
            || self.mutant(Mutant::GrantVoteBeforeDurable);
        let m = Message { from: self.id, to, term, body };
        if immediate {
            self.msgs.push(m);
        } else {
            self.msgs_after_persist.push(m);
        }
    }

    fn send(&mut self, to: ReplicaId, body: MessageBody) {
        self.send_term(to, self.term, body);
    }

    // ----------------------------------------------------------------------------------
    // Role changes
    // ----------------------------------------------------------------------------------

    fn reset(&mut self, term: u64) {
        if self.role == Role::Leader {
            // Every role change goes through here; a leader that stays leader (a new
            // term is never led by the same replica without an election) never does.
            self.events.push(Event::SteppedDown { term: self.term });
        }
        if term != self.term {
            self.term = term;
            self.vote = NO_REPLICA;
            self.term_durable = false;
        }
        self.leader = NO_REPLICA;
        self.uncommitted_bytes = 0;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.randomized_timeout = self.rng.range(
            u64::from(self.cfg.election_timeout_min_ticks),
            u64::from(self.cfg.election_timeout_max_ticks),
        ) as u32;
        // A role or term change ends any transfer. It is not counted as aborted: the
        // usual cause is that the target won (aborts are timeout, target left, superseded).
        self.transferee = NO_REPLICA;
        self.transfer_elapsed = 0;
        self.votes.clear();
        let next = self.log.last_index() + 1;
        let stable = self.log.stable_index();
        let me = self.id;
        for (id, p) in &mut self.progress {
            *p = Progress::new(next);
            if *id == me {
                p.matched = stable;
            }
        }
        if let Some(r) = self.reads.as_mut() {
            r.waiting_commit.clear();
            r.pending.clear();
            r.lease_waiting.clear();
            r.forwarded.clear();
            r.full_round = 0;
            r.answered_full.clear();
            r.fast.clear();
        }
        self.lease_until = 0;
        self.lease_min_round = 0;
        self.lease_from_sleep = false;
        self.need_bcast = false;
        self.need_heartbeat = false;
        self.full_heartbeat = false;
        self.pending_conf_index = 0;
        self.quiesced = false;
        self.quiesce_round = 0;
        self.forget_contact();
    }

    fn become_follower(&mut self, term: u64, leader: ReplicaId) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
        self.progress = ThinVec::new();
    }

    fn become_pre_candidate(&mut self) {
        if self.role == Role::Leader {
            // Never in practice (a leader does not campaign); kept so the event holds.
            self.events.push(Event::SteppedDown { term: self.term });
        }
        self.progress = ThinVec::new();
        self.votes.clear();
        self.leader = NO_REPLICA;
        self.role = Role::PreCandidate;
    }

    fn become_candidate(&mut self) {
        self.progress = ThinVec::new();
        self.reset(self.term + 1);
        self.vote = self.id;
        self.role = Role::Candidate;
    }

    fn become_leader(&mut self, by_transfer: bool) {
        let won_with_others = self.votes.iter().any(|&(id, granted)| granted && id != self.id);
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader = self.id;
        self.rebuild_progress();
        // Our RequestVotes went out only after the term was durable, so a vote from
        // another replica proves it; a lone voter waits for its first write.
        self.term_durable = won_with_others;
        self.count(|s| &mut s.leaderships);
        // A quorum granted the votes just now.
        self.quorum_heard(0);
        self.events.push(Event::BecameLeader { term: self.term, by_transfer });
        if by_transfer {
            self.count(|s| &mut s.leaderships_by_transfer);
        }
        for (_, p) in &mut self.progress {
            p.recent_active = true;
        }
        // No membership change until everything in the log at election is applied.
        self.pending_conf_index = self.log.last_index();
        // The no-op of the new term (Raft §8): committing it commits all before it.
        self.append_entry(EntryPayload::Noop);
        self.need_bcast = true;
    }

    fn campaign(&mut self, kind: Campaign) {
        if !self.promotable() || self.has_unapplied_conf_changes() {
            // A replica whose applied configuration lags committed changes would count
            // votes in a stale configuration (two leaders in one term); etcd's hup() check.
            return;
        }
        self.count(|s| &mut s.campaigns);
        self.events
            .push(Event::ElectionStarted { term: self.term + 1, pre_vote: kind == Campaign::PreElection });
        let vote_term = if kind == Campaign::PreElection {
            self.become_pre_candidate();
            self.term + 1
        } else {
            self.become_candidate();
            self.term
        };
        self.votes.push((self.id, true));
        if self.poll() == VoteResult::Won {
            // A lone voter wins at once.
            if kind == Campaign::PreElection {
                self.campaign(Campaign::Election);
            } else {
                self.become_leader(kind == Campaign::Transfer);
            }
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let commit = self.log.committed;
        let commit_term = self.log.term(commit).unwrap_or(0);
        let pre_vote = kind == Campaign::PreElection;
        let transfer = kind == Campaign::Transfer;
        let voters: Vec<ReplicaId> = self
            .conf
            .voters
            .iter()
            .chain(&self.conf.voters_outgoing)
            .map(|r| r.id)
            .filter(|&id| id != self.id)
            .collect();
        let mut sent: Vec<ReplicaId> = Vec::with_capacity(voters.len());
        for id in voters {
            if sent.contains(&id) {
                continue;
            }
            sent.push(id);
            self.send_term(
                id,
                vote_term,
                MessageBody::RequestVote { pre_vote, last_index, last_term, transfer, commit, commit_term },
            );
        }
        self.transfer_campaign = transfer;
    }

    fn poll(&self) -> VoteResult {
        vote_result(&self.conf, |id| self.votes.iter().find(|(i, _)| *i == id).map(|&(_, g)| g))
    }

    // ----------------------------------------------------------------------------------
    // Inputs
    // ----------------------------------------------------------------------------------

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.age_contact(1);
        if self.quiesced {
            self.idle_ticks(1);
            return;
        }
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
    }

    /// Sets the clock lease reads are measured with: nanoseconds since an arbitrary
    /// origin, from a clock that keeps running while the replica is not ticked (the
    /// runtime: `CLOCK_BOOTTIME`). Call it before inputs that may start or answer a read
    /// (`read_index`, `step`, `on_applied`, `on_persisted`) and before [`Raft::ready`];
    /// a value older than one already given is ignored. Only `LeaseBased` reads use it.
    pub fn set_now(&mut self, now: u64) {
        if self.now.map_or(true, |n| now > n) {
            self.now = Some(now);
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_timeout_min_ticks {
            self.startup_lease = false;
        }
        if self.promotable() && self.election_elapsed >= self.randomized_timeout {
            self.election_elapsed = 0;
            if self.randomized_timeout >= self.cfg.election_timeout_max_ticks {
                // Stretched by a wake-up (see `wake_inner`): back to the usual range.
                self.roll_timeout();
            }
            self.campaign(if self.cfg.pre_vote { Campaign::PreElection } else { Campaign::Election });
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_timeout_min_ticks {
            self.election_elapsed = 0;
            if self.cfg.check_quorum {
                if !self.quorum_active() {
                    self.count(|s| &mut s.check_quorum_step_downs);
                    self.become_follower(self.term, NO_REPLICA);
                    return;
                }
                // Every member counted was heard within this window.
                self.quorum_heard(self.cfg.election_timeout_min_ticks);
                let me = self.id;
                for (id, p) in &mut self.progress {
                    if *id != me {
                        p.recent_active = false;
                    }
                }
            }
        }
        if self.transferee != NO_REPLICA {
            self.transfer_elapsed += 1;
            if self.transfer_elapsed >= self.cfg.election_timeout_min_ticks {
                self.abort_transfer();
            }
        }
        if self.transferee == NO_REPLICA && !self.conf.is_voter(self.id) && self.cfg.step_down_on_removal {
            // Removed (or demoted) and no handover under way (it timed out or was cut
            // short): try again, so a removed leader never lingers.
            self.leave_leadership();
            if self.role != Role::Leader {
                return;
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            if self.can_quiesce() {
                self.quiesce_leader();
            } else {
                self.need_heartbeat = true;
                self.full_heartbeat = true;
            }
        }
    }

    // ----------------------------------------------------------------------------------
    // Starting elections (quiescence: `quiesce.rs`)
    // ----------------------------------------------------------------------------------

    /// A new group's designated first leader: campaign now (a normal election; PreVote is
    /// skipped, as nobody has a leader yet). Ignored unless a follower that may vote.
    pub fn campaign_now(&mut self) {
        if self.role == Role::Follower && self.leader == NO_REPLICA && self.promotable() {
            self.campaign(Campaign::Election);
        }
    }

    /// A new group's replica that is NOT its designated first leader: wait one more
    /// maximum election timeout before the first campaign, so the designated replica's
    /// election is not raced.
    pub fn defer_first_election(&mut self) {
        if self.role == Role::Follower && self.leader == NO_REPLICA {
            self.randomized_timeout =
                self.randomized_timeout.saturating_add(self.cfg.election_timeout_max_ticks);
        }
    }

    /// Proposes application data. Returns the (index, term) the entry got; it is committed
    /// when an entry at that index with that term is applied.
    pub fn propose(&mut self, data: Bytes) -> Result<(u64, u64), ProposeError> {
        self.propose_payload(EntryPayload::Normal(data))
    }

    /// Proposes a client-session entry (register, close, or a proposal in a session with
    /// its `data`): application data to Raft, refused like [`Raft::propose`].
    pub fn propose_session(
        &mut self,
        header: crate::session::SessionHeader,
        data: Bytes,
    ) -> Result<(u64, u64), ProposeError> {
        self.propose_payload(EntryPayload::Session { header, data })
    }

    /// Appends a proposal (a data or session entry) unless refused: not leader, a
    /// transfer, or `Config::max_uncommitted_bytes` held (a leader holding none takes one
    /// of any size).
    fn propose_payload(&mut self, payload: EntryPayload) -> Result<(u64, u64), ProposeError> {
        self.wake_for_input();
        self.check_can_propose()?;
        let (held, max) = (self.uncommitted_bytes, self.cfg.max_uncommitted_bytes);
        let size = payload.proposal_bytes() as u64;
        if held > 0 && held.saturating_add(size) > max {
            self.count(|s| &mut s.proposals_refused_uncommitted);
            return Err(ProposeError::UncommittedFull { held, max });
        }
        self.uncommitted_bytes = held.saturating_add(size);
        let index = self.append_entry(payload);
        Ok((index, self.term))
    }

    /// Payload bytes of the proposals this leader appended in its term and has not yet
    /// handed out for apply (0 unless leader): what `Config::max_uncommitted_bytes` bounds.
    pub fn uncommitted_bytes(&self) -> u64 {
        self.uncommitted_bytes
    }

    fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader_hint: self.leader_hint() });
        }
        if !self.conf.is_voter(self.id) {
            // A leader demoted or removed without stepping down knows no better leader
            // to name.
            return Err(ProposeError::NotLeader { leader_hint: None });
        }
        if self.transferee != NO_REPLICA {
            return Err(ProposeError::TransferInProgress { to: self.transferee });
        }
        Ok(())
    }

    /// Proposes a membership change. One at a time: refused while another is pending, and
    /// by a new leader until an entry of its term committed and every change in its log
    /// was applied.
    pub fn propose_conf_change(&mut self, cc: ConfChange) -> Result<(u64, u64), ProposeError> {
        self.wake_for_input();
        self.check_can_propose()?;
        if self.pending_conf_index > self.log.applied {
            return Err(ProposeError::ConfChangePending);
        }
        if !self.committed_in_current_term() {
            return Err(ProposeError::LeaderNotReady);
        }
        let next = self.conf.apply(&cc)?;
        if !cc.is_leave_joint() && self.conf.is_incoming_voter(self.id) && !next.is_incoming_voter(self.id) {
            // A leader never removes or demotes itself: it transfers leadership first.
            return Err(ConfChangeError::RemovesLeader { replica: self.id }.into());
        }
        let index = self.append_entry(EntryPayload::ConfChange(cc));
        self.pending_conf_index = index;
        Ok((index, self.term))
    }

    fn append_entry(&mut self, payload: EntryPayload) -> u64 {
        let index = self.log.last_index() + 1;
        self.log.append(std::iter::once(Entry { term: self.term, index, payload }));
        self.need_bcast = true;
        if self.mutant(Mutant::LeaderCountsUndurable) {
            let me = self.id;
            if let Some(p) = self.progress_mut(me) {
                p.maybe_update(index);
            }
            self.maybe_commit();
        }
        index
    }

    /// Starts a leadership transfer to `to` (thesis §3.10): the leader catches `to` up,
    /// then sends TimeoutNow. Proposals are refused meanwhile; the transfer aborts after an
    /// election timeout or if `to` leaves the configuration. Refused with
    /// [`TransferError::ConfChangePending`] while a membership change is pending (see
    /// [`Raft::conf_change_pending`]).
    pub fn transfer_leader(&mut self, to: ReplicaId) -> Result<(), TransferError> {
        self.wake_for_input();
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader { leader_hint: self.leader_hint() });
        }
        if to == self.id {
            return Err(TransferError::ToSelf(to));
        }
        if !self.conf.contains(to) {
            return Err(TransferError::NotMember(to));
        }
        if !self.conf.is_incoming_voter(to) {
            return Err(TransferError::NotVoter(to));
        }
        if self.conf_change_pending() {
            return Err(TransferError::ConfChangePending);
        }
        if self.transferee == to {
            return Ok(());
        }
        if self.transferee != NO_REPLICA {
            self.abort_transfer();
        }
        self.count(|s| &mut s.transfers_started);
        self.events.push(Event::TransferStarted { to });
        self.transferee = to;
        self.transfer_elapsed = 0;
        let last = self.log.last_index();
        if self.progress(to).map(|p| p.matched == last).unwrap_or(false) {
            self.send_timeout_now(to);
        } else {
            self.maybe_send_append(to, true);
        }
        Ok(())
    }

    /// Whether a membership change is pending: the configuration is joint (its leave is
    /// still to come), or a change in the log is not applied yet. A new leader's
    /// `pending_conf_index` is its whole log (conservative for proposing changes); here the
    /// entries past applied are looked at, so a leader without such a change may transfer
    /// before its no-op applies.
    pub fn conf_change_pending(&self) -> bool {
        if self.conf.is_joint() {
            return true;
        }
        let (applied, pending) = (self.log.applied, self.pending_conf_index);
        if pending <= applied {
            return false;
        }
        match self.log.entries(applied + 1, pending + 1, u64::MAX) {
            Ok(ents) => ents.iter().any(|e| matches!(e.payload, EntryPayload::ConfChange(_))),
            // Unreadable entries: assume the worst, as `has_unapplied_conf_changes` does.
            Err(_) => true,
        }
    }

    fn abort_transfer(&mut self) {
        if self.transferee != NO_REPLICA {
            self.count(|s| &mut s.transfers_aborted);
            self.events.push(Event::TransferAborted { to: self.transferee });
            self.transferee = NO_REPLICA;
            self.transfer_elapsed = 0;
        }
    }

    fn send_timeout_now(&mut self, to: ReplicaId) {
        // The target will campaign past every voter's lease: ours ends now.
        self.lease_until = 0;
        self.lease_min_round = u64::MAX;
        self.count(|s| &mut s.timeout_now_sent);
        self.send(to, MessageBody::TimeoutNow);
    }

    /// Compacts the log up to `index` (at most the applied index): the application took a
    /// snapshot of its state machine there. Returns the snapshot's metadata (with the
    /// configuration at `index`) for the runtime to store with the data; the runtime may
    /// then drop entries up to `index` from storage.
    pub fn compact_to(&mut self, index: u64) -> Result<SnapshotMeta, CompactError> {
        if index > self.log.applied {
            return Err(CompactError::NotApplied { index, applied: self.log.applied });
        }
        if index <= self.log.snap.index {
            return Err(CompactError::AlreadyCompacted(self.log.snap.index));
        }
        let term = self.log.term(index)?;
        let conf = self.conf_at(index);
        let meta = SnapshotMeta { index, term, conf };
        self.conf_history.retain(|(i, _)| *i > index);
        self.log.snap = super::log::shared_meta(meta.clone());
        Ok(meta)
    }

    fn conf_at(&self, index: u64) -> ConfState {
        self.conf_history
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map(|(_, c)| ConfState::clone(c))
            .unwrap_or_else(|| self.log.snap.conf.clone())
    }

    /// The runtime made entries up to (`index`, `term`) durable (and with them every
    /// earlier write of this replica). Ignored if the log no longer holds `term` at `index`.
    pub fn on_persisted(&mut self, index: u64, term: u64) {
        if !self.log.stable_to(index, term) {
            return;
        }
        if term == self.term {
            self.term_durable = true;
        }
        if self.role == Role::Leader {
            let me = self.id;
            if let Some(p) = self.progress_mut(me) {
                p.maybe_update(index);
            }
            if self.maybe_commit() {
                self.need_bcast = true;
            }
        }
    }

    /// The runtime applied committed entries up to `index`. Membership changes among them
    /// take effect now.
    pub fn on_applied(&mut self, index: u64) {
        let index = index.min(self.log.applying);
        if index <= self.log.applied {
            return;
        }
        let due: Vec<(u64, ConfChange)> = {
            let n = self.pending_conf_entries.iter().take_while(|(i, _)| *i <= index).count();
            self.pending_conf_entries.drain(..n).collect()
        };
        self.log.applied = index;
        for (i, cc) in due {
            self.apply_conf_change(i, &cc);
        }
        self.answer_lease_reads();
    }

    fn apply_conf_change(&mut self, index: u64, cc: &ConfChange) {
        let Ok(next) = self.conf.apply(cc) else {
            // Validated when proposed; a change that no longer applies is a no-op.
            return;
        };
        let step = if cc.is_leave_joint() {
            self.count(|s| &mut s.joint_left);
            MembershipStep::LeftJoint
        } else if next.is_joint() {
            self.count(|s| &mut s.joint_entered);
            MembershipStep::EnteredJoint
        } else {
            self.count(|s| &mut s.simple_changes);
            MembershipStep::Simple
        };
        self.events.push(Event::MembershipApplied { index, step });
        let next = super::conf_pool::intern(next);
        self.conf_history.push((index, Arc::clone(&next)));
        self.set_conf(next);
    }

    /// A leader that is no longer a voter hands leadership to a caught-up voter of the new
    /// configuration, then steps down. Stepping down at once could leave the group without
    /// a leader for good: voters that do not yet know the change committed still count
    /// this replica's vote, which it refuses to any log shorter than its own, and its log
    /// may hold entries nobody else has. Until a voter is caught up, it keeps leading as a
    /// transfer (refusing proposals), and retries if the transfer times out.
    fn leave_leadership(&mut self) {
        let (me, last) = (self.id, self.log.last_index());
        let mut best: Option<(u64, ReplicaId)> = None;
        for r in &self.conf.voters {
            let matched = self.progress(r.id).map(|p| p.matched).unwrap_or(0);
            if r.id != me && best.map_or(true, |(m, _)| matched > m) {
                best = Some((matched, r.id));
            }
        }
        match best {
            Some((matched, to)) if matched < last => {
                if self.transferee != to {
                    self.abort_transfer();
                    self.count(|s| &mut s.transfers_started);
                    self.events.push(Event::TransferStarted { to });
                    self.transferee = to;
                    self.transfer_elapsed = 0;
                }
                self.maybe_send_append(to, true);
            }
            Some((_, to)) => {
                self.send_timeout_now(to);
                self.become_follower(self.term, NO_REPLICA);
            }
            None => self.become_follower(self.term, NO_REPLICA),
        }
    }

    fn set_conf(&mut self, conf: Arc<ConfState>) {
        self.conf = conf;
        if self.role != Role::Leader {
            // Progress is the leader's (rebuilt when it wins).
            self.progress = ThinVec::new();
            return;
        }
        let members = self.conf.members();
        self.progress.retain(|(id, _)| members.iter().any(|m| m.id == *id));
        let next = self.log.last_index() + 1;
        for m in &members {
            if !self.progress.iter().any(|(id, _)| *id == m.id) {
                let mut p = Progress::new(next);
                if m.id == self.id {
                    p.matched = self.log.stable_index();
                }
                self.progress.push((m.id, p));
            }
        }
        if self.role != Role::Leader {
            return;
        }
        if !self.conf.is_voter(self.id) && self.cfg.step_down_on_removal {
            self.leave_leadership();
            return;
        }
        if self.transferee != NO_REPLICA && !self.conf.is_incoming_voter(self.transferee) {
            self.abort_transfer();
        }
        // The quorum changed: commits and reads may now be decided.
        if self.maybe_commit() {
            self.need_bcast = true;
        }
        self.process_reads();
    }

    /// Steps a message from another replica.
    pub fn step(&mut self, m: Message) -> Result<(), StepError> {
        if m.to != self.id {
            return Err(StepError::WrongRecipient { to: m.to, me: self.id });
        }
        if matches!(m.body, MessageBody::SendSnapshot { .. }) {
            return Err(StepError::NotAWireMessage);
        }
        if let Err(why) = self.check_well_formed(&m) {
            return Err(StepError::Malformed { kind: m.body.kind(), from: m.from, why });
        }
        if self.quiesced && self.take_quiesce_ack(&m) {
            return Ok(());
        }
        if self.quiesced {
            let from_leader = m.from == self.leader && m.term == self.term;
            let repeat = from_leader && matches!(m.body, MessageBody::Heartbeat { quiesce: true, .. });
            if !repeat {
                // Any message wakes the group; one from the leader needs no wake-up ping.
                self.wake_inner(!from_leader);
            }
        }
        if let MessageBody::RequestVote { commit, commit_term, .. }
        | MessageBody::RequestVoteResponse { commit, commit_term, .. } = m.body
        {
            // The sender knows (commit, commit_term) is committed. If our log holds that
            // entry, our log up to it is the sender's (log matching): committed here too.
            // A fact whatever the message's term, so learnt before stale terms are dropped:
            // a demoted replica stuck in an older term may be the only one that knows a
            // joint configuration was left.
            if commit > self.log.committed && self.log.match_term(commit, commit_term) {
                self.log.commit_to(commit);
            }
        }
        if m.term > self.term {
            if let MessageBody::RequestVote { transfer, .. } = m.body {
                // CheckQuorum lease (thesis §4.2.3): a replica that heard from a leader
                // within the minimum election timeout ignores campaigns, unless the
                // leader itself ordered it by TimeoutNow.
                let in_lease = self.cfg.check_quorum
                    && (self.leader != NO_REPLICA || self.startup_lease)
                    && self.election_elapsed < self.cfg.election_timeout_min_ticks;
                if in_lease && !transfer {
                    return Ok(());
                }
            }
            match &m.body {
                MessageBody::RequestVote { pre_vote: true, .. } => {}
                MessageBody::RequestVoteResponse { pre_vote: true, reject: false, .. } => {}
                MessageBody::Append { .. }
                | MessageBody::Commit { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::SnapshotChunk(_) => self.become_follower(m.term, m.from),
                _ => self.become_follower(m.term, NO_REPLICA),
            }
        } else if m.term < self.term {
            match &m.body {
                MessageBody::Append { .. } | MessageBody::Commit { .. } | MessageBody::Heartbeat { .. }
                    if self.cfg.check_quorum || self.cfg.pre_vote =>
                {
                    // Tell a stale leader (perhaps cut off and back) about the new term so
                    // it steps down; with PreVote it could otherwise never learn it.
                    self.send(
                        m.from,
                        MessageBody::AppendResponse { index: 0, reject: true, reject_hint: 0, hint_term: 0 },
                    );
                }
                MessageBody::RequestVote { pre_vote, .. } => {
                    // Refused with our term (thesis §3.3, Figure 3.1: the answer carries
                    // the current term, for the candidate to update itself). Ignoring a
                    // stale candidate would let a replica whose term someone else keeps
                    // raising (a removed replica campaigning without PreVote) outpace,
                    // forever, the candidates that need its vote.
                    let body = self.vote_response(*pre_vote, true);
                    self.send(m.from, body);
                }
                _ => {}
            }
            return Ok(());
        }

        if let MessageBody::RequestVote { pre_vote, last_index, last_term, .. } = m.body {
            self.handle_vote_request(m.from, m.term, pre_vote, last_index, last_term);
            return Ok(());
        }
        match self.role {
            Role::Leader => self.step_leader(m),
            Role::Candidate | Role::PreCandidate => self.step_candidate(m),
            Role::Follower => self.step_follower(m),
        }
        Ok(())
    }

    /// Rejects messages that contradict themselves, before they touch any state: a
    /// malformed message must never corrupt the log or panic the core.
    fn check_well_formed(&self, m: &Message) -> Result<(), &'static str> {
        if m.term >= MAX_TERM {
            return Err("term out of range");
        }
        let index_in_range = match &m.body {
            MessageBody::Append { prev_index, entries, commit, .. } => {
                prev_index.saturating_add(entries.len() as u64) < MAX_INDEX && *commit < MAX_INDEX
            }
            MessageBody::AppendResponse { index, reject_hint, .. } => {
                *index < MAX_INDEX && *reject_hint < MAX_INDEX
            }
            MessageBody::Heartbeat { commit, .. } | MessageBody::Commit { commit } => *commit < MAX_INDEX,
            MessageBody::RequestVote { last_index, commit, .. } => {
                *last_index < MAX_INDEX && *commit < MAX_INDEX
            }
            MessageBody::RequestVoteResponse { commit, .. } => *commit < MAX_INDEX,
            MessageBody::ReadIndexResponse { index, .. } => *index < MAX_INDEX,
            MessageBody::SnapshotChunk(c) => c.meta.index < MAX_INDEX,
            _ => true,
        };
        if !index_in_range {
            return Err("log index out of range");
        }
        match &m.body {
            MessageBody::Append { prev_index, prev_term, entries, .. } => {
                let mut last_term = *prev_term;
                for (i, e) in entries.iter().enumerate() {
                    if Some(e.index) != prev_index.checked_add(1 + i as u64) {
                        return Err("entries are not contiguous after prev_index");
                    }
                    if e.term < last_term || e.term > m.term {
                        return Err("entry terms must not decrease nor exceed the message term");
                    }
                    last_term = e.term;
                }
                if *prev_term > m.term {
                    return Err("prev_term exceeds the message term");
                }
            }
            MessageBody::AppendResponse { index, reject: false, .. }
                if m.term == self.term && self.role == Role::Leader && *index > self.log.last_index() =>
            {
                return Err("acknowledges entries this leader never had");
            }
            MessageBody::SnapshotChunk(c) if c.meta.term > m.term => {
                return Err("snapshot term exceeds the message term");
            }
            MessageBody::RequestVote { last_term, .. } if *last_term > m.term => {
                return Err("last_term exceeds the campaign term");
            }
            _ => {}
        }
        Ok(())
    }

    fn vote_response(&self, pre_vote: bool, reject: bool) -> MessageBody {
        let commit = self.log.committed;
        let commit_term = self.log.term(commit).unwrap_or(0);
        MessageBody::RequestVoteResponse { pre_vote, reject, commit, commit_term }
    }

    fn handle_vote_request(
        &mut self,
        from: ReplicaId,
        term: u64,
        pre_vote: bool,
        last_index: u64,
        last_term: u64,
    ) {
        let can_vote = self.vote == from
            || (self.vote == NO_REPLICA && self.leader == NO_REPLICA)
            || (pre_vote && term > self.term);
        if can_vote && self.log.is_up_to_date(last_index, last_term) {
            // A PreVote grant answers in the term asked about, so the pre-candidate counts it.
            let body = self.vote_response(pre_vote, false);
            self.send_term(from, term, body);
            if !pre_vote {
                self.election_elapsed = 0;
                self.vote = from;
            }
        } else {
            let body = self.vote_response(pre_vote, true);
            self.send(from, body);
        }
    }

    fn step_follower(&mut self, m: Message) {
        match m.body {
            MessageBody::Append { prev_index, prev_term, entries, commit } => {
                self.election_elapsed = 0;
                self.leader = m.from;
                self.leader_heard(commit);
                self.handle_append(m.from, prev_index, prev_term, entries, commit);
            }
            MessageBody::Heartbeat { commit, round, quiesce } => {
                self.follower_heartbeat(m.from, commit, round, quiesce);
            }
            MessageBody::Commit { commit } => {
                self.election_elapsed = 0;
                self.leader = m.from;
                self.leader_heard(commit);
                self.log.commit_to(commit);
            }
            MessageBody::SnapshotChunk(chunk) => {
                self.election_elapsed = 0;
                self.leader = m.from;
                // A snapshot's index is committed.
                self.leader_heard(chunk.meta.index);
                self.handle_snapshot_chunk(m.from, chunk);
            }
            MessageBody::ReadIndexResponse { ctx, index } => {
                // The leader of our term confirmed a read we forwarded (and not one of a
                // previous life of this replica): serve it once applied >= index.
                if let Some(r) = self.reads.as_mut() {
                    if let Some(pos) = r.forwarded.iter().position(|&c| c == ctx) {
                        r.forwarded.remove(pos);
                        r.states.push(ReadState { ctx, index });
                    }
                }
            }
            MessageBody::TimeoutNow => {
                // Campaign at once, past PreVote and past the voters' leases.
                self.campaign(Campaign::Transfer);
            }
            _ => {}
        }
    }

    fn step_candidate(&mut self, m: Message) {
        match m.body {
            MessageBody::Append { prev_index, prev_term, entries, commit } => {
                self.become_follower(m.term, m.from);
                self.handle_append(m.from, prev_index, prev_term, entries, commit);
            }
            MessageBody::Heartbeat { commit, round, .. } => {
                self.become_follower(m.term, m.from);
                self.handle_heartbeat(m.from, commit, round);
            }
            MessageBody::Commit { commit } => {
                self.become_follower(m.term, m.from);
                self.log.commit_to(commit);
            }
            MessageBody::SnapshotChunk(chunk) => {
                self.become_follower(m.term, m.from);
                self.handle_snapshot_chunk(m.from, chunk);
            }
            MessageBody::RequestVoteResponse { pre_vote, reject, .. } => {
                if pre_vote != (self.role == Role::PreCandidate) {
                    return;
                }
                if !self.votes.iter().any(|(id, _)| *id == m.from) {
                    self.votes.push((m.from, !reject));
                }
                match self.poll() {
                    VoteResult::Won => {
                        if self.role == Role::PreCandidate {
                            self.campaign(Campaign::Election);
                        } else {
                            let by_transfer = self.transfer_campaign;
                            self.become_leader(by_transfer);
                        }
                    }
                    VoteResult::Lost => self.become_follower(self.term, NO_REPLICA),
                    VoteResult::Pending => {}
                }
            }
            _ => {}
        }
    }

    fn step_leader(&mut self, m: Message) {
        match m.body {
            // A member's forwarded read, confirmed like our own.
            MessageBody::ReadIndex { ctx } if self.progress(m.from).is_some() => {
                // Refused past the bound: dropped, the follower's caller times out.
                let _ = self.accept_read(m.from, ctx);
            }
            MessageBody::AppendResponse { index, reject, reject_hint, hint_term } => {
                self.handle_append_response(m.from, index, reject, reject_hint, hint_term);
            }
            MessageBody::HeartbeatResponse { round } => self.leader_heartbeat_response(m.from, round),
            _ => {}
        }
    }

    // ----------------------------------------------------------------------------------
    // Follower handlers
    // ----------------------------------------------------------------------------------

    fn handle_append(
        &mut self,
        from: ReplicaId,
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        commit: u64,
    ) {
        if prev_index < self.log.committed {
            let index = self.log.committed;
            self.send(
                from,
                MessageBody::AppendResponse { index, reject: false, reject_hint: 0, hint_term: 0 },
            );
            return;
        }
        match self.log.maybe_append(prev_index, prev_term, entries) {
            Ok(Some(last_new)) => {
                self.log.commit_to(commit.min(last_new));
                self.send(
                    from,
                    MessageBody::AppendResponse {
                        index: last_new,
                        reject: false,
                        reject_hint: 0,
                        hint_term: 0,
                    },
                );
            }
            Ok(None) => {
                // Fast backtracking (etcd's findConflictByTerm): point the leader at the
                // last index whose term could match, skipping whole terms.
                let hint = prev_index.min(self.log.last_index());
                let (reject_hint, hint_term) = self.log.find_conflict_by_term(hint, prev_term);
                self.send(
                    from,
                    MessageBody::AppendResponse { index: prev_index, reject: true, reject_hint, hint_term },
                );
            }
            Err(_) => {
                // The sender contradicts our committed entries: never truncate them.
                self.count(|s| &mut s.append_conflicts_refused);
            }
        }
    }

    fn handle_heartbeat(&mut self, from: ReplicaId, commit: u64, round: u64) {
        self.log.commit_to(commit);
        self.send(from, MessageBody::HeartbeatResponse { round });
    }

    fn handle_snapshot_chunk(&mut self, from: ReplicaId, chunk: SnapshotChunk) {
        let same = self.snapshot_recv.as_ref().is_some_and(|p| {
            p.term == self.term && p.meta.index == chunk.meta.index && p.meta.term == chunk.meta.term
        });
        if !same && self.snapshot_recv.take().is_some() {
            self.count(|s| &mut s.snapshot_streams_discarded);
        }
        if chunk.seq == 0 {
            if same {
                self.count(|s| &mut s.snapshot_streams_discarded);
            }
            self.snapshot_recv = Some(Box::new(PartialSnapshot {
                term: self.term,
                meta: chunk.meta.clone(),
                next_seq: 0,
                data: Vec::new(),
            }));
        }
        let Some(p) = self.snapshot_recv.as_mut() else { return };
        if chunk.seq != p.next_seq
            || chunk.offset != p.data.len() as u64
            || p.data.len().saturating_add(chunk.data.len()) > MAX_ASSEMBLED_SNAPSHOT_BYTES
        {
            self.snapshot_recv = None;
            self.count(|s| &mut s.snapshot_streams_discarded);
            return;
        }
        p.data.extend_from_slice(&chunk.data);
        p.next_seq += 1;
        if chunk.last {
            if let Some(p) = self.snapshot_recv.take() {
                self.handle_snapshot(from, p.meta, Bytes::from(p.data));
            }
        }
    }

    fn handle_snapshot(&mut self, from: ReplicaId, meta: SnapshotMeta, data: Bytes) {
        if meta.index <= self.log.committed {
            // Nothing new: acknowledge what we have so the leader moves on.
            self.count(|s| &mut s.snapshots_skipped);
            let index = self.log.committed;
            self.send(
                from,
                MessageBody::AppendResponse { index, reject: false, reject_hint: 0, hint_term: 0 },
            );
            return;
        }
        if self.log.match_term(meta.index, meta.term) {
            // Our log already holds the snapshot's last entry: fast-forward the commit.
            self.count(|s| &mut s.snapshots_skipped);
            self.log.commit_to(meta.index);
            let index = self.log.committed;
            self.send(
                from,
                MessageBody::AppendResponse { index, reject: false, reject_hint: 0, hint_term: 0 },
            );
            return;
        }
        self.count(|s| &mut s.snapshots_installed);
        let index = meta.index;
        self.log.restore(meta.clone());
        self.pending_conf_entries.clear();
        self.conf_history.clear();
        self.set_conf(super::conf_pool::intern(meta.conf.clone()));
        self.snapshot_ready = Some(Box::new(Snapshot { meta, data }));
        self.send(from, MessageBody::AppendResponse { index, reject: false, reject_hint: 0, hint_term: 0 });
    }

    // ----------------------------------------------------------------------------------
    // Ready
    // ----------------------------------------------------------------------------------

    /// A leader in an auto-leave joint configuration proposes the leave once the joint
    /// configuration is applied and it may propose changes (also a new leader that finds
    /// one).
    fn should_auto_leave(&self) -> bool {
        self.role == Role::Leader
            && self.conf.is_joint()
            && self.conf.auto_leave
            && self.transferee == NO_REPLICA
            && self.pending_conf_index <= self.log.applied
            && self.committed_in_current_term()
    }

    fn maybe_auto_leave(&mut self) {
        if self.should_auto_leave() {
            let index = self.append_entry(EntryPayload::ConfChange(ConfChange::leave_joint()));
            self.pending_conf_index = index;
        }
    }

    /// Whether [`Raft::ready`] has anything to hand out.
    pub fn has_ready(&self) -> bool {
        self.has_ready_within(ApplyBudget::UNLIMITED)
    }

    /// Whether [`Raft::ready_within`] with this apply budget has anything to hand out.
    pub fn has_ready_within(&self, apply_budget: ApplyBudget) -> bool {
        self.need_bcast
            || self.need_heartbeat
            || !self.msgs.is_empty()
            || !self.msgs_after_persist.is_empty()
            || self.hard_state() != self.prev_hs
            || self.log.has_unpersisted()
            || (!apply_budget.is_empty() && self.log.has_committed())
            || self.snapshot_ready.is_some()
            || self.reads.as_ref().is_some_and(|r| !r.states.is_empty())
            || self.should_auto_leave()
            || !self.events.is_empty()
    }

    /// Whether committed entries wait to be handed out for apply (an apply budget of 0
    /// held them back).
    pub fn has_committed_to_apply(&self) -> bool {
        self.log.has_committed()
    }

    /// Hands out everything the runtime must do now (see [`Ready`] for the order).
    pub fn ready(&mut self) -> Ready {
        self.ready_within(ApplyBudget::UNLIMITED)
    }

    /// [`Raft::ready`], handing out for apply at most `apply_budget`'s committed entries
    /// and bytes (none when either is 0; the rest stay committed in the log until a later
    /// `Ready`): the runtime's bound on what it hands a slow state machine, which a
    /// follower cannot otherwise enforce (its leader commits at the pace of the other
    /// members).
    pub fn ready_within(&mut self, apply_budget: ApplyBudget) -> Ready {
        self.maybe_auto_leave();
        if self.need_heartbeat && self.role == Role::Leader {
            self.need_heartbeat = false;
            let full = std::mem::take(&mut self.full_heartbeat);
            self.bcast_heartbeat(full);
            self.process_reads();
        }
        if self.need_bcast && self.role == Role::Leader {
            self.need_bcast = false;
            self.bcast_append();
        }
        let hs = self.hard_state();
        let hard_state_commit_only = hs.term == self.prev_hs.term && hs.vote == self.prev_hs.vote;
        let hard_state = if hs != self.prev_hs {
            self.prev_hs = hs;
            Some(hs)
        } else {
            None
        };
        let entries = self.log.take_unpersisted();
        let snapshot = self.snapshot_ready.take();
        let committed_entries = if apply_budget.is_empty() {
            Vec::new()
        } else {
            self.log.take_committed(self.cfg.max_apply_bytes.min(apply_budget.bytes), apply_budget.entries)
        };
        let led = if self.role == Role::Leader { self.term } else { 0 };
        for e in &committed_entries {
            if let EntryPayload::ConfChange(cc) = &e.payload {
                self.pending_conf_entries.push((e.index, cc.clone()));
            } else if e.term == led {
                let size = e.payload.proposal_bytes() as u64;
                self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(size);
            }
        }
        Ready {
            hard_state,
            hard_state_commit_only: hard_state.is_some() && hard_state_commit_only,
            entries,
            snapshot,
            messages: take_list(&mut self.msgs),
            persisted_messages: take_list(&mut self.msgs_after_persist),
            committed_entries,
            read_states: self.reads.as_mut().map(|r| std::mem::take(&mut r.states)).unwrap_or_default(),
            events: take_list(&mut self.events),
        }
    }
}

/// A replica's list handed out in a [`Ready`] as a `Vec`, leaving the replica an empty
/// list that costs no allocation (`ThinVec`: one pointer while the replica idles).
fn take_list<T>(list: &mut ThinVec<T>) -> Vec<T> {
    if list.is_empty() {
        return Vec::new();
    }
    std::mem::take(list).into_iter().collect()
}

#[cfg(not(feature = "mutants"))]
#[derive(Debug, Clone, Copy)]
enum Mutant {
    CommitWithoutTermCheck,
    GrantVoteBeforeDurable,
    HeartbeatCommitUnclamped,
    ReadIndexWithoutTermCheck,
    LeaderCountsUndurable,
    LeaseKeptPastItsEndAfterWake,
}

/// Regressions found by the cluster simulator (tests/simulation.rs); each names the seed
/// class that found it.
#[cfg(test)]
mod simulator_regressions {
    use super::*;
    use crate::raft::conf::{ChangeKind, ConfChange};
    use crate::raft::config::Config;
    use crate::raft::storage::MemStorage;

    fn ent(index: u64, term: u64, payload: EntryPayload) -> Entry {
        Entry { index, term, payload }
    }

    /// Replica 1 of {1, 2, 3} with `entries` durable and `commit` committed, nothing applied.
    fn replica(entries: &[Entry], term: u64, commit: u64) -> Raft<MemStorage> {
        let conf = ConfState::with_voters((1..=3).map(|i| Replica::new(i, i)));
        let mut st = MemStorage::new_with_conf(conf);
        st.append(entries);
        st.set_hard_state(HardState { term, vote: 0, commit });
        Raft::new(Config::new(1).validate().unwrap(), st).unwrap()
    }

    /// Election safety (simulator: two leaders in one term): a replica that has not applied
    /// a committed membership change counts votes in a stale configuration, so it must not
    /// campaign until it has applied it (etcd's hup() check).
    #[test]
    fn no_campaign_with_unapplied_committed_conf_change() {
        let cc = ConfChange::single(ChangeKind::AddLearner, Replica::new(3, 3));
        let mut r = replica(&[ent(1, 1, EntryPayload::Noop), ent(2, 1, EntryPayload::ConfChange(cc))], 1, 2);
        for _ in 0..100 {
            r.tick();
        }
        assert_eq!(r.stats().campaigns, 0, "campaigned with a committed, unapplied change");
        let rd = r.ready();
        assert_eq!(rd.committed_entries.len(), 2);
        r.on_applied(2);
        for _ in 0..100 {
            r.tick();
        }
        assert!(r.stats().campaigns > 0);
    }

    /// A chunk stream stepped into the core directly is assembled in memory only up to
    /// `MAX_ASSEMBLED_SNAPSHOT_BYTES`: the chunk that would pass it discards the stream
    /// (no snapshot, the memory freed), and a stream within it installs.
    #[test]
    fn core_snapshot_assembly_is_capped() {
        let mut r = replica(&[ent(1, 1, EntryPayload::Noop)], 1, 1);
        let part = MAX_ASSEMBLED_SNAPSHOT_BYTES / 4;
        let data = Bytes::from(vec![1u8; part]);
        let meta = SnapshotMeta { index: 10, term: 2, conf: r.conf().clone() };
        let chunk = |seq: u32, last: bool| Message {
            from: 2,
            to: 1,
            term: 2,
            body: MessageBody::SnapshotChunk(SnapshotChunk {
                meta: meta.clone(),
                seq,
                offset: u64::from(seq) * part as u64,
                last,
                data: data.clone(),
            }),
        };
        for seq in 0..4 {
            r.step(chunk(seq, false)).unwrap();
        }
        assert_eq!(r.stats().snapshot_streams_discarded, 0);
        r.step(chunk(4, true)).unwrap();
        assert_eq!(r.stats().snapshot_streams_discarded, 1, "the fifth quarter passes the cap");
        assert!(r.snapshot_recv.is_none() && r.snapshot_ready.is_none());
        for seq in 0..3 {
            r.step(chunk(seq, false)).unwrap();
        }
        r.step(chunk(3, true)).unwrap();
        let rd = r.ready();
        assert_eq!(rd.snapshot.map(|s| s.data.len()), Some(MAX_ASSEMBLED_SNAPSHOT_BYTES));
    }

    /// Liveness (simulator: no leader forever after a joint configuration was left): vote
    /// messages carry the sender's commit, adopted when the receiver's log holds it.
    #[test]
    fn vote_messages_carry_commit() {
        let mut r = replica(&[ent(1, 1, EntryPayload::Noop), ent(2, 1, EntryPayload::Noop)], 1, 0);
        let resp = |commit_term| Message {
            from: 2,
            to: 1,
            term: 1,
            body: MessageBody::RequestVoteResponse { pre_vote: false, reject: true, commit: 2, commit_term },
        };
        r.step(resp(2)).unwrap();
        assert_eq!(r.committed(), 0, "a different entry at the commit index proves nothing");
        r.step(resp(1)).unwrap();
        assert_eq!(r.committed(), 2);
    }

    /// Simulator seed 216791: a demoted replica stuck in an older term rejects PreVotes in
    /// that term; its commit hint must still be learnt, or the voters that do not know the
    /// joint configuration was left wait for its vote forever.
    #[test]
    fn stale_vote_response_still_carries_commit() {
        let mut r = replica(&[ent(1, 1, EntryPayload::Noop), ent(2, 1, EntryPayload::Noop)], 1, 0);
        r.term = 5;
        let stale = Message {
            from: 2,
            to: 1,
            term: 4,
            body: MessageBody::RequestVoteResponse {
                pre_vote: true,
                reject: true,
                commit: 2,
                commit_term: 1,
            },
        };
        r.step(stale).unwrap();
        assert_eq!(r.term(), 5, "the stale term changes nothing else");
        assert_eq!(r.committed(), 2);
    }
}

#[cfg(test)]
mod event_tests {
    use super::*;
    use crate::raft::conf::{ChangeKind, ConfChange};
    use crate::raft::config::Config;
    use crate::raft::storage::MemStorage;

    /// Replica 1 of {1, 2, 3}, fresh.
    fn replica() -> Raft<MemStorage> {
        let conf = ConfState::with_voters((1..=3).map(|i| Replica::new(i, i)));
        Raft::new(Config::new(1).validate().unwrap(), MemStorage::new_with_conf(conf)).unwrap()
    }

    fn grant(r: &Raft<MemStorage>, from: ReplicaId, pre_vote: bool) -> Message {
        let term = if pre_vote { r.term() + 1 } else { r.term() };
        Message {
            from,
            to: 1,
            term,
            body: MessageBody::RequestVoteResponse { pre_vote, reject: false, commit: 0, commit_term: 0 },
        }
    }

    /// Persists and applies one `Ready` the way a runtime does; returns its events. Shared
    /// with the unit tests of the files under `raft/`.
    pub(super) fn drive(r: &mut Raft<MemStorage>) -> Vec<Event> {
        let rd = r.ready();
        if let Some(hs) = rd.hard_state {
            r.storage_mut().set_hard_state(hs);
        }
        if let Some(last) = rd.entries.last() {
            r.storage_mut().append(&rd.entries);
            r.on_persisted(last.index, last.term);
        }
        if let Some(last) = rd.committed_entries.last() {
            r.on_applied(last.index);
        }
        rd.events
    }

    /// Events follow what happened, in order: a PreVote round, the election, the win,
    /// a transfer started and aborted on timeout, a membership change applied, and a
    /// step-down on a newer term. A runtime that counts them gets what the `Stats`
    /// counters say.
    #[test]
    fn events_report_elections_leadership_transfers_and_membership_in_order() {
        let mut r = replica();
        let mut events = Vec::new();
        for _ in 0..100 {
            r.tick();
            if r.role() == Role::PreCandidate {
                break;
            }
        }
        events.extend(drive(&mut r));
        assert_eq!(events, vec![Event::ElectionStarted { term: 1, pre_vote: true }]);
        r.step(grant(&r, 2, true)).unwrap();
        events.extend(drive(&mut r));
        r.step(grant(&r, 2, false)).unwrap();
        events.extend(drive(&mut r));
        assert_eq!(
            events[1..],
            [
                Event::ElectionStarted { term: 1, pre_vote: false },
                Event::BecameLeader { term: 1, by_transfer: false }
            ]
        );
        events.clear();
        // Replica 2 acknowledges the leader's no-op: committed and applied.
        let ack = |r: &Raft<MemStorage>| Message {
            from: 2,
            to: 1,
            term: r.term(),
            body: MessageBody::AppendResponse {
                index: r.log.last_index(),
                reject: false,
                reject_hint: 0,
                hint_term: 0,
            },
        };
        r.step(ack(&r)).unwrap();
        events.extend(drive(&mut r));
        assert!(events.is_empty(), "{events:?}");

        // A transfer to a replica that never catches up times out.
        r.transfer_leader(3).unwrap();
        for _ in 0..1_000 {
            r.tick();
            events.extend(drive(&mut r));
            if events.len() >= 2 {
                break;
            }
        }
        assert_eq!(events, vec![Event::TransferStarted { to: 3 }, Event::TransferAborted { to: 3 }]);
        events.clear();

        // A membership change, committed by 2 and applied.
        let (index, _) =
            r.propose_conf_change(ConfChange::single(ChangeKind::AddLearner, Replica::new(4, 4))).unwrap();
        events.extend(drive(&mut r));
        r.step(ack(&r)).unwrap();
        events.extend(drive(&mut r));
        events.extend(drive(&mut r));
        assert_eq!(events, vec![Event::MembershipApplied { index, step: MembershipStep::Simple }]);
        events.clear();

        // A newer term deposes the leader.
        let newer = Message {
            from: 3,
            to: 1,
            term: 7,
            body: MessageBody::Heartbeat { commit: 0, round: 0, quiesce: false },
        };
        r.step(newer).unwrap();
        events.extend(drive(&mut r));
        assert_eq!(events, vec![Event::SteppedDown { term: 1 }]);
        let st = r.stats();
        assert_eq!((st.campaigns, st.leaderships, st.transfers_started, st.transfers_aborted), (2, 1, 1, 1));
        assert_eq!(st.simple_changes, 1);
    }
}

/// What an idle replica holds (issue 16 point 7: a runtime keeps 100,000s of them).
#[cfg(test)]
mod idle_footprint {
    use super::*;
    use crate::raft::conf::{ChangeKind, ConfChange};
    use crate::raft::config::Config;
    use crate::raft::storage::MemStorage;

    /// Replica 1 of a group founded by a conf-change entry (as the engine founds them),
    /// applied at construction.
    fn founded(count_stats: bool) -> Raft<MemStorage> {
        let mut st = MemStorage::new_with_conf(ConfState::default());
        let cc = ConfState::with_voters((1..=3).map(|i| Replica::new(i, i))).bootstrap_change();
        st.append(&[Entry { index: 1, term: 1, payload: EntryPayload::ConfChange(cc) }]);
        st.set_hard_state(HardState { term: 1, vote: 0, commit: 1 });
        let mut c = Config::new(1);
        c.applied = 1;
        c.count_stats = count_stats;
        Raft::new(c.validate().unwrap(), st).unwrap()
    }

    #[test]
    fn the_configuration_is_held_once() {
        let r = founded(false);
        assert_eq!(r.conf().voters.len(), 3);
        let (index, last) = r.conf_history.last().unwrap();
        assert_eq!(*index, 1);
        assert!(Arc::ptr_eq(last, r.conf_shared()), "the history's last entry is a copy");
    }

    #[test]
    fn replicas_of_equal_memberships_share_one_configuration() {
        let (a, b) = (founded(false), founded(false));
        assert!(Arc::ptr_eq(a.conf_shared(), b.conf_shared()), "each replica holds its own copy");
        // A membership change applied by each of two replicas: again one allocation.
        let change = ConfChange::single(ChangeKind::AddLearner, Replica::new(4, 4));
        let (mut a, mut b) = (a, b);
        for r in [&mut a, &mut b] {
            r.apply_conf_change(2, &change);
        }
        assert_eq!(a.conf().learners, vec![Replica::new(4, 4)]);
        assert!(Arc::ptr_eq(a.conf_shared(), b.conf_shared()), "changed memberships are copies");
        assert!(!Arc::ptr_eq(a.conf_shared(), founded(false).conf_shared()));
    }

    #[test]
    fn an_idle_replica_s_lists_hold_no_allocation() {
        let mut r = founded(false);
        r.campaign(Campaign::Election);
        assert!(r.msgs.len() + r.msgs_after_persist.len() >= 2, "a campaign asks both peers");
        let rd = r.ready();
        assert!(rd.messages.len() + rd.persisted_messages.len() >= 2);
        for (name, cap) in [
            ("msgs", r.msgs.capacity()),
            ("msgs_after_persist", r.msgs_after_persist.capacity()),
            ("events", r.events.capacity()),
            ("pending_conf_entries", r.pending_conf_entries.capacity()),
        ] {
            assert_eq!(cap, 0, "{name} kept its allocation after the ready was taken");
        }
    }

    #[test]
    fn stats_cost_a_pointer_unless_counted() {
        let mut r = founded(false);
        assert!(r.stats.is_none());
        r.campaign(Campaign::Election);
        assert_eq!(r.stats().campaigns, 0);
        assert!(r.stats.is_none());
        let mut r = founded(true);
        assert_eq!(r.stats().simple_changes, 1, "the founding change, applied at construction");
        r.campaign(Campaign::Election);
        assert_eq!(r.stats().campaigns, 1);
    }

    #[test]
    fn a_shared_configuration_takes_the_replica_s_own_id_and_refuses_zero() {
        let cfg = Arc::new(Config::new(9).validate().unwrap());
        let st = || MemStorage::new_with_conf(ConfState::with_voters([Replica::new(1, 1)]));
        let r = Raft::with_shared_config(Arc::clone(&cfg), 1, 0, 7, st()).unwrap();
        assert_eq!(r.id(), 1);
        assert!(Arc::ptr_eq(&r.cfg, &cfg));
        assert!(matches!(Raft::with_shared_config(cfg, 0, 0, 7, st()), Err(NewRaftError::ZeroId)));
    }
}
