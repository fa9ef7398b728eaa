//! The handle's side of client sessions: `Runtime::propose_session`, which sends a session
//! entry (register, propose, close) to the worker that owns the group, refused like any
//! proposal, and `Runtime::config`, which the API reads the session limits from.
//!
//! Owns only these two handle methods (a leaf: nothing in the runtime imports it). Never
//! stamps or decides a session entry: the worker stamps it and the apply thread's table
//! decides (`sessions.rs`).

use bytes::Bytes;

use super::Runtime;
use crate::api::{EngineConfig, Proposal, ProposeError, Unavailable};
use crate::session::SessionOp;

impl Runtime {
    /// This node's configuration.
    pub(crate) fn config(&self) -> &EngineConfig {
        self.shared.cfg.get()
    }

    /// Proposes a session entry to `group` (refused like `propose`).
    pub(crate) fn propose_session(
        &self,
        group: u64,
        op: SessionOp,
        data: Bytes,
    ) -> Result<Proposal, ProposeError> {
        self.live()?;
        let max = self.shared.cfg.get().max_entry_bytes;
        if data.len() > max {
            return Err(ProposeError::TooLarge { len: data.len(), max });
        }
        self.request(group, |done| super::command::Cmd::ProposeSession { group, op, data, done }).map_err(
            |e| {
                if let Unavailable::Busy(reason) = e {
                    self.shared.counters.refused(reason);
                }
                e.into()
            },
        )
    }
}
