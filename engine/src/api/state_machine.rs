//! The application's side of a group: the [`StateMachine`] trait, the [`SnapshotSource`] a
//! state machine may hand out for background snapshots, the [`Effect`]s it may ask for, and
//! the [`StateMachineFactory`] the engine makes replicas' state machines with.
//!
//! Owns these contracts only. Never calls them: the runtime's apply thread does.

use std::sync::Arc;

use bytes::Bytes;

use crate::raft::types::NodeId;

/// Something a state machine asks the engine to do when it applies an entry: returned by
/// [`StateMachine::take_effects`] right after that entry's `apply`, and executed at that
/// index on every replica that applies it (so on every node hosting the group, the same
/// way).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Effect {
    /// Create `group` with founding voters `members`, exactly as [`Engine::create_group`]
    /// does on each of them (replica ids 1, 2, ... in that order; the state machine from
    /// the engine's factory). Each node among `members` that applies the entry creates its
    /// replica; a node that already has it, or holds its tombstone, does nothing. The
    /// building block of a split: the application's factory gives the new group its first
    /// state (e.g. the split-off half of the parent's data, which the parent's state
    /// machine set aside when it applied the split). A founding member that does not host
    /// the applying group is created when the new group's leader first contacts it.
    ///
    /// [`Engine::create_group`]: super::Engine::create_group
    CreateGroup {
        /// The new group's id.
        group: u64,
        /// Its founding voters, in replica-id order.
        members: Vec<NodeId>,
    },
    /// Split off a new group `group` from the applying group (the parent) at this entry's
    /// index: on each node among `members` that applies the entry, the engine takes the
    /// child's first state from [`StateMachine::take_split`] (or, if that gives none,
    /// from the factory), writes it durably as the child's founding snapshot, and
    /// creates the child's replica from it (replica ids 1, 2, ... in `members` order)
    /// *before* the parent applies its next entry: a crash either finds the child durable
    /// or replays the split entry. The replica on `first_leader` campaigns at once; the
    /// others wait an extra election timeout, so the child's first leader is the node
    /// that led the parent and no two leases over the split-off range overlap. A replica
    /// of `group` already here (created by the child's leader's message before this node
    /// applied the split, and given a snapshot, or a tombstone) is kept, never
    /// overwritten or created twice. The protocol: `runtime/split.rs` and
    /// ARCHITECTURE.md.
    Split {
        /// The child's id.
        group: u64,
        /// Its founding voters, in replica-id order (the parent's replicas' nodes).
        members: Vec<NodeId>,
        /// The node whose replica campaigns first (the parent's leader, which proposed
        /// the split).
        first_leader: NodeId,
    },
}

/// The application's replicated state of one group. Called from one thread at a time, in
/// log order: the apply thread of the worker that owns the group, so a slow state machine
/// does not stall Raft; or, for a batch of a few entries whose every command
/// [`StateMachine::is_quick`] calls quick while that thread is idle, the worker itself
/// (`EngineConfig::inline_apply`), which saves a thread wake-up per commit.
///
/// A counter kept in memory (rebuilt from the snapshot and the log on restart, so
/// `applied_index` is 0), whose reads go through a shared handle:
///
/// ```
/// use std::io::{Read, Write};
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
///
/// use bytes::Bytes;
/// use flotilla_engine::api::StateMachine;
///
/// struct Counter {
///     value: Arc<AtomicU64>, // the application reads it after a read barrier
/// }
///
/// impl StateMachine for Counter {
///     fn apply(&mut self, _index: u64, _term: u64, command: Option<&[u8]>) -> Bytes {
///         // `None`: a no-op or membership entry. Commands here are little-endian u64s.
///         let add = command.and_then(|c| c.try_into().ok()).map_or(0, u64::from_le_bytes);
///         let now = self.value.fetch_add(add, Ordering::SeqCst) + add;
///         Bytes::copy_from_slice(&now.to_le_bytes()) // the proposer's result
///     }
///     fn applied_index(&self) -> u64 {
///         0
///     }
///     fn snapshot(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
///         out.write_all(&self.value.load(Ordering::SeqCst).to_le_bytes())
///     }
///     fn restore(&mut self, _index: u64, _term: u64, input: &mut dyn Read) -> std::io::Result<()> {
///         let mut b = [0u8; 8];
///         input.read_exact(&mut b)?;
///         self.value.store(u64::from_le_bytes(b), Ordering::SeqCst);
///         Ok(())
///     }
/// }
///
/// // What the engine does with it: apply in log order, snapshot, restore elsewhere.
/// let mut a = Counter { value: Arc::default() };
/// a.apply(1, 1, None);
/// assert_eq!(&a.apply(2, 1, Some(&5u64.to_le_bytes()))[..], &5u64.to_le_bytes());
/// a.apply(3, 1, Some(&2u64.to_le_bytes()));
/// let mut snap = Vec::new();
/// a.snapshot(&mut snap)?;
/// let mut b = Counter { value: Arc::default() };
/// b.restore(3, 1, &mut &snap[..])?;
/// assert_eq!(b.value.load(Ordering::SeqCst), 7);
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait StateMachine: Send + 'static {
    /// Applies the committed entry at (`index`, `term`). `command` is the proposal's bytes,
    /// or `None` for an entry the engine appended itself (a leader's no-op, a membership
    /// change), which still advances the applied index. The returned bytes resolve the
    /// proposal's waiter on the node that proposed it.
    fn apply(&mut self, index: u64, term: u64, command: Option<&[u8]>) -> Bytes;

    /// The index this state machine has durably applied (0 for a state machine that keeps
    /// its data in memory only). On open, the engine replays only entries after it.
    fn applied_index(&self) -> u64;

    /// Writes a snapshot of the current state (which reflects every entry applied so far)
    /// to `out`. The simple path: it runs on the apply thread, so apply waits for it. A
    /// state machine that can hand out a point-in-time view implements
    /// [`StateMachine::snapshot_source`] instead, and this is then not called.
    fn snapshot(&mut self, out: &mut dyn std::io::Write) -> std::io::Result<()>;

    /// Replaces the whole state with the snapshot read from `input`, which reflects the
    /// log up to (`index`, `term`).
    fn restore(&mut self, index: u64, term: u64, input: &mut dyn std::io::Read) -> std::io::Result<()>;

    /// A point-in-time view of the current state (reflecting every entry applied so far),
    /// which the engine reads in chunks on a background thread and writes to the
    /// snapshot file while apply goes on. Default `None`: the engine calls
    /// [`StateMachine::snapshot`] on the apply thread instead.
    fn snapshot_source(&mut self) -> Option<Box<dyn SnapshotSource>> {
        None
    }

    /// Whether the group may use client sessions (`Engine::open_session`). The session
    /// table is rebuilt from the snapshot and the log replayed after it, so a state
    /// machine that keeps its data in its own storage (a nonzero
    /// [`StateMachine::applied_index`]: the engine does not replay what it holds) must
    /// return `false`, as dragonboat's on-disk state machines do; its session entries are
    /// then refused with [`SessionRefusal::NotSupported`]. Must be the same on every
    /// replica of the group (a property of the state machine's type). Default `true`.
    ///
    /// [`SessionRefusal::NotSupported`]: super::SessionRefusal::NotSupported
    fn supports_sessions(&self) -> bool {
        true
    }

    /// Whether applying `command` is quick: microseconds of CPU, no blocking I/O, no wait
    /// on a lock held for long or on the engine, and no [`Effect::Split`] (a split waits
    /// for the child to be durable). A batch of quick commands may be applied on the
    /// worker thread itself, where a slow one would stall every group of that worker: a
    /// batch that takes longer there than `EngineConfig::inline_apply_slow` (10 ms by
    /// default) is counted (`Metrics::applied_inline_slow`), logged, and sends the group's
    /// batches to the apply thread for a minute.
    /// Default `false`: every command is applied on the apply thread.
    fn is_quick(&self, command: &[u8]) -> bool {
        let _ = command;
        false
    }

    /// The effects of the entry just applied; called after every [`StateMachine::apply`]
    /// (return them once: the engine executes what it is given). Default: none.
    fn take_effects(&mut self) -> Vec<Effect> {
        Vec::new()
    }

    /// The first state of split child `group`, which this state machine set aside when
    /// it applied the entry returning [`Effect::Split`] for it (called on the apply
    /// thread right after [`StateMachine::take_effects`], once per split effect; the
    /// data leaves the parent at that index). The engine snapshots it into the child's
    /// founding snapshot, so it must reflect exactly the split-off part of the parent's
    /// state at that index. Default `None`: the engine asks the factory for the child's
    /// state machine instead.
    fn take_split(&mut self, group: u64) -> Option<Box<dyn StateMachine>> {
        let _ = group;
        None
    }
}

/// A consistent, point-in-time view of a state machine's state (e.g. a storage engine's
/// snapshot, or a copy-on-write clone), from [`StateMachine::snapshot_source`]. The engine
/// reads it by offset, in chunks, on a background thread while the state machine goes on
/// applying; a failed read is retried at the same offset.
pub trait SnapshotSource: Send + 'static {
    /// The log position the view reflects: (index, term) of the last entry applied in it.
    /// The engine checks it against the entries it handed out and refuses a mismatch.
    fn reflects(&self) -> (u64, u64);

    /// Copies the view's bytes from `offset` into `buf`; returns how many were copied, 0
    /// at the end. Offsets only grow, except that after an error the same offset is asked
    /// again.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize>;
}

/// Makes the state machine of a replica the engine creates by itself: recovered on open,
/// or created when a group's leader first contacts this node after adding it.
pub type StateMachineFactory = Arc<dyn Fn(u64) -> Box<dyn StateMachine> + Send + Sync>;
