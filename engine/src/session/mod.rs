//! Client sessions (Raft dissertation §6.3): exactly-once proposals. A caller registers a
//! session through the log (its id is the register entry's index) and tags proposals with
//! (session, sequence, floor); every replica runs the same [`SessionTable`] over the
//! session entries it applies, so a retried proposal is answered with its first result
//! instead of being applied again.
//!
//! Owns the log's session vocabulary ([`header`]) and the pure, deterministic table
//! ([`table`]) with its snapshot form ([`codec`]). Never does I/O, reads a clock or calls a
//! state machine: the runtime's apply thread drives the table and the leader stamps the
//! time into the entries.

pub mod codec;
pub mod header;
pub mod table;

pub use codec::SessionDecodeError;
pub use header::{SessionHeader, SessionOp};
pub use table::{Decision, SessionLimits, SessionTable, MAX_RESPONSES_PER_SESSION};
