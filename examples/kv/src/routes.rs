//! Keeping the meta group's routes current: each node publishes the route of every shard
//! it leads ([`crate::sm::Route`]: the shard's applied slots, its leader and term, its
//! voters and learners) whenever it differs from what the meta group holds, so that every
//! node can route any slot, including shards it hosts no replica of (`CLUSTER SLOTS`,
//! `-MOVED`).
//!
//! Owns the publishing thread: woken by the engine's events (a leader change to this node,
//! an applied membership change), with a full sweep every 2 s (`SWEEP`) in case a publication
//! failed. Never decides where a request goes, and never trusts the routes over a shard's
//! own state: they are a cache, and a stale one costs a redirect, not a wrong answer.

use std::collections::BTreeSet;
use std::sync::Weak;
use std::time::{Duration, Instant};

use flotilla_engine::api::{EngineEvent, EventStream, RecvError};

use crate::node::{Node, Op};
use crate::resp::Value;
use crate::sm::{read_routes, shard_group, MetaCmd, Route, META_GROUP, SHARD_BASE};

/// Events the publisher's subscription buffers.
const CAPACITY: usize = 4096;
/// How long the thread waits for an event before it checks its node still exists.
const POLL: Duration = Duration::from_millis(100);
/// How often every led shard is checked, events or not.
const SWEEP: Duration = Duration::from_secs(2);

/// Starts the publisher of `node`'s routes; it ends when the node is gone or its engine
/// shut down.
pub fn start(node: &std::sync::Arc<Node>) -> std::io::Result<()> {
    let stream = node.engine().subscribe(CAPACITY).map_err(std::io::Error::other)?;
    let weak = std::sync::Arc::downgrade(node);
    std::thread::Builder::new().name("kv-routes".into()).spawn(move || run(stream, weak))?;
    Ok(())
}

/// The route of `group` as this node, its leader, sees it now; `None` if it does not lead it.
pub fn current_route(node: &Node, group: u64) -> Option<Route> {
    let leader = node.engine().leader(group).filter(|l| l.node == node.id())?;
    let st = node.engine().group_status(group)?;
    Some(Route {
        slots: node.shard_slots(group)?,
        term: leader.term,
        leader: Some(node.id()),
        voters: st.members.voters.iter().map(|r| r.node).collect(),
        learners: st.members.learners.iter().map(|r| r.node).collect(),
    })
}

/// Publishes the route of `group` if this node leads it and the meta group's differs;
/// whether the meta group holds this node's view afterwards (or it does not lead).
pub fn publish(node: &Node, group: u64) -> bool {
    // A leader whose replica has not registered its slots yet (a split's new shard before
    // its first apply) tries again.
    let Some(route) = current_route(node, group) else { return !node.leads(group) };
    if read_routes(node.routes()).get(group) == Some(&route) {
        return true;
    }
    let Ok(cmd) = serde_json::to_vec(&MetaCmd::Route { group, route }) else { return false };
    matches!(node.exec(Op::write(META_GROUP, cmd)), Value::Int(_))
}

fn run(mut stream: EventStream, node: Weak<Node>) {
    let mut dirty: BTreeSet<u64> = BTreeSet::new();
    let mut next_sweep = Instant::now();
    loop {
        let ev = stream.recv_timeout(POLL);
        let Some(n) = node.upgrade() else { return };
        match ev {
            Ok(EngineEvent::LeaderChanged { group, leader, .. }) if leader.node == n.id() => {
                dirty.insert(group);
            }
            Ok(EngineEvent::MembershipApplied { group, .. }) => {
                dirty.insert(group);
            }
            Ok(EngineEvent::Lagged { .. }) => next_sweep = Instant::now(),
            Ok(_) | Err(RecvError::Empty) => {}
            Err(RecvError::Closed) => return,
            Err(_) => {}
        }
        if Instant::now() >= next_sweep {
            // Every shard hosted here, split-off ones included.
            dirty.extend((0..n.config().shards).map(shard_group));
            dirty.extend(n.engine().status().iter().map(|s| s.group).filter(|&g| g >= SHARD_BASE));
            next_sweep = Instant::now() + SWEEP;
        }
        // Shards only: the meta group is routed by the engine's own view.
        dirty.retain(|&g| g != META_GROUP && !publish(&n, g));
    }
}
