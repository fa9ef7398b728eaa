//! The order of a snapshot install: persist, then apply (etcd's order). A received
//! snapshot resets the group's log in the WAL; the state machine is restored only once
//! that reset is durable, so a crash between the two leaves the state machine behind the
//! log (recovery restores it from the snapshot file), never ahead of it (a state machine
//! that persists its applied index would then be past the log, and the stale log tail
//! would be taken as committed).
//!
//! Owns the apply commands held back meanwhile: the restore and everything the worker
//! hands the apply thread after it, in order (entries after the snapshot must follow the
//! restore). Never sends anything itself and never looks at the WAL: the worker numbers
//! its writes, says which write carries the reset, and releases the held commands when
//! that write is durable.

use super::apply::ApplyCmd;

/// Apply commands held until a write is durable.
#[derive(Default)]
pub(crate) struct ApplyHold {
    held: Vec<ApplyCmd>,
    /// The held commands go out once the write with this sequence number is durable.
    until: Option<u64>,
}

impl ApplyHold {
    /// Holds every command from now on (this one first) until write `seq` is durable. A
    /// later write extends the hold (writes become durable in order).
    pub(crate) fn hold_until(&mut self, seq: u64, cmd: ApplyCmd) {
        self.until = Some(self.until.map_or(seq, |u| u.max(seq)));
        self.held.push(cmd);
    }

    /// Keeps `cmd` if commands are held (behind them), or gives it back to be sent now.
    pub(crate) fn hold(&mut self, cmd: ApplyCmd) -> Option<ApplyCmd> {
        if self.until.is_some() {
            self.held.push(cmd);
            None
        } else {
            Some(cmd)
        }
    }

    /// Write `seq` is durable: the held commands to send now, in order, if their write was
    /// this one or an earlier one.
    pub(crate) fn durable(&mut self, seq: u64) -> Option<Vec<ApplyCmd>> {
        match self.until {
            Some(u) if u <= seq => {
                self.until = None;
                Some(std::mem::take(&mut self.held))
            }
            _ => None,
        }
    }

    /// Whether commands are held.
    #[cfg(test)]
    pub(crate) fn is_holding(&self) -> bool {
        self.until.is_some()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn remove(group: u64) -> ApplyCmd {
        ApplyCmd::Remove { group }
    }

    fn groups(cmds: &[ApplyCmd]) -> Vec<u64> {
        cmds.iter()
            .map(|c| match c {
                ApplyCmd::Remove { group } => *group,
                _ => u64::MAX,
            })
            .collect()
    }

    #[test]
    fn held_in_order_until_the_write_is_durable() {
        let mut h = ApplyHold::default();
        assert!(h.hold(remove(1)).is_some(), "nothing held: sent at once");
        h.hold_until(5, remove(2));
        assert!(h.hold(remove(3)).is_none());
        assert!(h.durable(4).is_none(), "an earlier write does not release");
        // A second reset in a later write extends the hold.
        h.hold_until(6, remove(4));
        assert!(h.hold(remove(5)).is_none());
        assert!(h.durable(5).is_none());
        assert!(h.is_holding());
        assert_eq!(groups(&h.durable(6).unwrap()), vec![2, 3, 4, 5]);
        assert!(!h.is_holding());
        assert!(h.hold(remove(6)).is_some());
    }
}
