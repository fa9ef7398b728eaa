//! The embedder's check of a snapshot received from a peer: [`SnapshotCheck`], a hook the
//! engine calls on a complete received snapshot file, before Raft may take it.
//!
//! Owns the hook's shape and its default (no check of the state machine's part: the
//! behaviour before the hook existed). Never reads the file itself: the engine's snapshot
//! I/O thread hands the hook a reader of the state machine's part, after checking its own
//! parts (the header, the session section).
//!
//! Why it matters: a snapshot Raft takes is installed first (the log's reset made durable)
//! and restored after; a restore that fails then stops the engine, and every later open of
//! the node, because the replica's log no longer holds what the snapshot replaced. A
//! snapshot that cannot be restored must therefore be refused before, as bad input: the
//! stream is dropped and the leader sends it again.

use std::io::Read;
use std::sync::Arc;

/// The check function: `(group, data) -> Ok if StateMachine::restore will take it`.
type Check = dyn Fn(u64, &mut dyn Read) -> std::io::Result<()> + Send + Sync;

/// Checks the state machine's part of a snapshot received from a peer (set in
/// [`EngineConfig::snapshot_check`](super::EngineConfig::snapshot_check)): `Ok` when
/// [`StateMachine::restore`](super::StateMachine::restore) would take the same bytes,
/// `Err` (the snapshot is refused and deleted) when it would fail.
///
/// The engine calls it on the receiving worker's snapshot I/O thread, once per received
/// snapshot, with a reader of exactly the state machine's part; it must not touch the
/// group's live state (it runs beside it). A check that decodes the whole snapshot costs
/// what a restore costs; most snapshots are rare and large, so that is usually the right
/// trade.
///
/// ```
/// use std::io::Read;
/// use flotilla_engine::api::{EngineConfig, SnapshotCheck};
///
/// let mut cfg = EngineConfig::new(1, "/tmp/flotilla-doc");
/// // This state machine's snapshots start with a magic number.
/// cfg.snapshot_check = SnapshotCheck::new(|_group, data| {
///     let mut magic = [0u8; 4];
///     data.read_exact(&mut magic)?;
///     if &magic != b"SNAP" {
///         return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a snapshot"));
///     }
///     Ok(())
/// });
/// assert!(cfg.snapshot_check.check(7, &mut &b"SNAP...."[..]).is_ok());
/// assert!(cfg.snapshot_check.check(7, &mut &b"junk"[..]).is_err());
/// ```
#[derive(Clone, Default)]
pub struct SnapshotCheck {
    /// `None`: no check (every snapshot whose engine parts are sound is taken).
    check: Option<Arc<Check>>,
}

impl SnapshotCheck {
    /// No check of the state machine's part (the default).
    pub fn none() -> SnapshotCheck {
        SnapshotCheck { check: None }
    }

    /// A check by `f` (see the type's documentation).
    pub fn new(
        f: impl Fn(u64, &mut dyn Read) -> std::io::Result<()> + Send + Sync + 'static,
    ) -> SnapshotCheck {
        SnapshotCheck { check: Some(Arc::new(f)) }
    }

    /// Checks `data`, the state machine's part of a snapshot of `group`.
    pub fn check(&self, group: u64, data: &mut dyn Read) -> std::io::Result<()> {
        match &self.check {
            None => Ok(()),
            Some(f) => f(group, data),
        }
    }
}

impl std::fmt::Debug for SnapshotCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.check.is_some() { "SnapshotCheck(custom)" } else { "SnapshotCheck(none)" })
    }
}
