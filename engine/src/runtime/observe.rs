//! Metrics and tracing events from a group's Raft events (`Ready::events`): elections,
//! leaderships, step-downs, transfers started and aborted, membership changes applied
//! (also published as an `EngineEvent`).
//!
//! Owns the mapping from a core event to a counter and a tracing event. Never changes a
//! group's Raft state.

use super::group::Group;
use super::shared::{bump, Shared};
use crate::api::EngineEvent;
use crate::raft::{Event, MembershipStep};

/// Reports `events` of `g` (from one `Ready`, in order) as metrics and tracing events.
pub(super) fn observe(sh: &Shared, g: &Group, events: &[Event]) {
    let c = &sh.counters;
    let (group, replica) = (g.id, g.raft.id());
    for ev in events {
        match *ev {
            Event::ElectionStarted { term, pre_vote } => {
                bump(&c.elections);
                tracing::debug!(group, term, replica, pre_vote, "election started");
            }
            Event::BecameLeader { term, by_transfer } => {
                bump(&c.leaders_elected);
                tracing::info!(group, term, replica, by_transfer, "became leader");
            }
            Event::SteppedDown { term } => {
                tracing::debug!(group, term, replica, "stepped down");
            }
            Event::TransferStarted { to } => {
                bump(&c.transfers_started);
                tracing::info!(group, term = g.raft.term(), to, "leadership transfer started");
            }
            Event::TransferAborted { to } => {
                bump(&c.transfers_aborted);
                tracing::info!(group, term = g.raft.term(), to, "leadership transfer aborted");
            }
            Event::MembershipApplied { index, step } => {
                bump(&c.membership_changes);
                let joint = matches!(step, MembershipStep::EnteredJoint);
                sh.events.publish(EngineEvent::MembershipApplied { group, index, joint });
                let step = match step {
                    MembershipStep::Simple => "simple",
                    MembershipStep::EnteredJoint => "entered joint",
                    MembershipStep::LeftJoint => "left joint",
                };
                tracing::info!(group, index, step, conf = ?g.raft.conf(), "membership change applied");
            }
            // `Event` is non-exhaustive: a new kind is reported once it has a metric.
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }
}
