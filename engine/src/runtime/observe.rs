//! Metrics and tracing events from a group's Raft counters: after each turn of a group the
//! worker reports what changed since last seen (elections, leaderships, transfers started
//! and aborted, membership changes applied).
//!
//! Owns the differencing of counters. Never changes a group's Raft state.

use super::group::{raft_counts, Group};
use super::shared::{bump_by, Shared};

/// Reports what changed in `g`'s Raft counters since last seen: metrics and tracing
/// events (elections, leadership, transfers, membership changes).
pub(super) fn observe(sh: &Shared, g: &mut Group) {
    let now = raft_counts(&g.raft);
    if now == g.seen {
        return;
    }
    let d: [u64; 5] = std::array::from_fn(|i| u64::from(now[i].wrapping_sub(g.seen[i])));
    g.seen = now;
    let c = &sh.counters;
    let (group, term) = (g.id, g.raft.term());
    if d[0] > 0 {
        bump_by(&c.elections, d[0]);
        tracing::debug!(group, term, replica = g.raft.id(), "election started");
    }
    if d[1] > 0 {
        bump_by(&c.leaders_elected, d[1]);
        tracing::info!(group, term, replica = g.raft.id(), "became leader");
    }
    if d[2] > 0 {
        bump_by(&c.transfers_started, d[2]);
        tracing::info!(group, term, "leadership transfer started");
    }
    if d[3] > 0 {
        bump_by(&c.transfers_aborted, d[3]);
        tracing::info!(group, term, "leadership transfer aborted");
    }
    if d[4] > 0 {
        bump_by(&c.membership_changes, d[4]);
        tracing::info!(group, term, conf = ?g.raft.conf(), "membership change applied");
    }
}
