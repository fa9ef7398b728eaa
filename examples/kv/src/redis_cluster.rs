//! The Redis Cluster protocol on the client port (`cluster_mode = true`): the `CLUSTER`
//! commands a cluster-aware client reads its slot map from, `-MOVED` to the node leading a
//! key's shard, `READONLY` reads on a follower replica, and `-CROSSSLOT` for a command
//! whose keys are in different slots.
//!
//! How shards map onto Redis Cluster's picture: every node is a "master" and owns the slots
//! of the shards it leads now (`CLUSTER NODES` gives a node one role); a shard's other
//! replicas are listed as its "replicas" in `CLUSTER SLOTS` and `CLUSTER SHARDS`. Slot
//! ownership moves with Raft leadership, atomically, so there is no `-ASK`. During a leader
//! change the node waits up to its retry budget for the new leader and then answers
//! `-MOVED` to it; `-TRYAGAIN` only when no leader appeared within the budget.
//!
//! Owns the replies and the redirect decision. Never runs a data command, and never trusts
//! the meta group's routes ([`crate::sm::RouteTable`]) over a shard's own state: a shard
//! this node hosts is judged by its replica's view, and the shard itself refuses a key
//! outside its applied slots.

use std::time::{Duration, Instant};

use crate::commands::Session;
use crate::node::Node;
use crate::resp::Value;
use crate::slots::{key_slot, SlotSet, SLOTS};
use crate::sm::{read_routes, NodeInfo};

/// Redis's reply to `CLUSTER`, `READONLY` and `READWRITE` when cluster mode is off.
pub fn disabled() -> Value {
    Value::err("ERR This instance has cluster support disabled")
}

/// A node's Redis Cluster id: 40 hex digits, the node id in the low digits (stable across
/// restarts, and readable: node 3 is `f1000000...0003`).
pub fn node_name(id: u64) -> String {
    format!("f1{id:038x}")
}

/// A shard as routing sees it: its slots, its leader's node and its other replicas' nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardView {
    /// The shard's group.
    pub group: u64,
    /// Its slots.
    pub slots: SlotSet,
    /// Its leader's node, if known.
    pub leader: Option<u64>,
    /// Its other members' nodes (voters, then learners).
    pub replicas: Vec<u64>,
}

/// Every shard's view: this node's replica's for the shards it hosts (leader from the
/// engine's leader view, slots from the replica's applied state), the meta group's routes
/// for the others.
pub fn shard_views(node: &Node) -> Vec<ShardView> {
    let routes = read_routes(node.routes()).routes().clone();
    routes
        .into_iter()
        .map(|(group, r)| {
            let hosted = node.engine().hosts(group);
            let leader = if hosted { node.engine().leader(group).map(|l| l.node) } else { r.leader };
            let slots = node.shard_slots(group).unwrap_or(r.slots);
            let mut members: Vec<u64> = r.voters.iter().chain(&r.learners).copied().collect();
            if members.is_empty() && hosted {
                if let Some(st) = node.engine().group_status(group) {
                    members = st.members.voters.iter().chain(&st.members.learners).map(|m| m.node).collect();
                }
            }
            members.retain(|&m| Some(m) != leader);
            members.dedup();
            ShardView { group, slots, leader, replicas: members }
        })
        .collect()
}

/// `ip` and `port` of a client address `ip:port`.
fn split_addr(a: &str) -> (String, u16) {
    match a.parse::<std::net::SocketAddr>() {
        Ok(s) => (s.ip().to_string(), s.port()),
        Err(_) => (a.to_string(), 0),
    }
}

fn node_entry(id: u64, info: &NodeInfo) -> Value {
    let (ip, port) = split_addr(&info.client);
    Value::Array(Some(vec![
        Value::bulk(ip),
        Value::Int(port as i64),
        Value::bulk(node_name(id)),
        Value::Map(vec![]),
    ]))
}

/// `CLUSTER SLOTS`: per slot range, the shard's leader then its replicas; a shard with no
/// known leader is listed with its first member in the leader's place.
fn slots_reply(node: &Node) -> Value {
    let dir = node.directory();
    let mut out: Vec<(u16, Value)> = Vec::new();
    for v in shard_views(node) {
        let nodes: Vec<u64> = v.leader.into_iter().chain(v.replicas.iter().copied()).collect();
        let entries: Vec<Value> = nodes.iter().filter_map(|n| Some(node_entry(*n, dir.get(n)?))).collect();
        if entries.is_empty() {
            continue;
        }
        for &(a, b) in v.slots.ranges() {
            let mut e = vec![Value::Int(a as i64), Value::Int(b as i64)];
            e.extend(entries.iter().cloned());
            out.push((a, Value::Array(Some(e))));
        }
    }
    out.sort_by_key(|(a, _)| *a);
    Value::Array(Some(out.into_iter().map(|(_, v)| v).collect()))
}

/// `CLUSTER SHARDS`: one entry per shard, its slots flat and its nodes with their roles.
fn shards_reply(node: &Node) -> Value {
    let dir = node.directory();
    let mut out = Vec::new();
    for v in shard_views(node) {
        let slots = v.slots.ranges().iter().flat_map(|&(a, b)| [Value::Int(a as i64), Value::Int(b as i64)]);
        let applied = node.engine().group_status(v.group).map_or(0, |s| s.applied);
        let nodes = v
            .leader
            .iter()
            .map(|n| (*n, "master"))
            .chain(v.replicas.iter().map(|n| (*n, "replica")))
            .filter_map(|(n, role)| {
                let (ip, port) = split_addr(&dir.get(&n)?.client);
                let kv = |k: &str, v: Value| (Value::bulk(k), v);
                Some(Value::Map(vec![
                    kv("id", Value::bulk(node_name(n))),
                    kv("port", Value::Int(port as i64)),
                    kv("ip", Value::bulk(ip.clone())),
                    kv("endpoint", Value::bulk(ip)),
                    kv("role", Value::bulk(role)),
                    kv("replication-offset", Value::Int(if n == node.id() { applied as i64 } else { 0 })),
                    kv("health", Value::bulk("online")),
                ]))
            })
            .collect();
        out.push(Value::Map(vec![
            (Value::bulk("slots"), Value::Array(Some(slots.collect()))),
            (Value::bulk("nodes"), Value::Array(Some(nodes))),
        ]));
    }
    Value::Array(Some(out))
}

/// Slot ranges as `CLUSTER NODES` writes them: `a-b`, or `a` for a single slot.
fn ranges_text(ranges: &[(u16, u16)]) -> String {
    ranges.iter().map(|&(a, b)| if a == b { format!(" {a}") } else { format!(" {a}-{b}") }).collect()
}

/// `CLUSTER NODES`: every node of the directory as a master with the slots of the shards
/// it leads.
fn nodes_reply(node: &Node) -> Value {
    let views = shard_views(node);
    let mut text = String::new();
    for (id, info) in node.directory() {
        let mut led: Vec<(u16, u16)> =
            views.iter().filter(|v| v.leader == Some(id)).flat_map(|v| v.slots.ranges().to_vec()).collect();
        led.sort_unstable();
        let led = SlotSet::from_ranges(led).unwrap_or_default();
        let (ip, port) = split_addr(&info.client);
        let cport = split_addr(&info.peer).1;
        let flags = if id == node.id() { "myself,master" } else { "master" };
        text.push_str(&format!(
            "{} {ip}:{port}@{cport} {flags} - 0 0 0 connected{}\n",
            node_name(id),
            ranges_text(led.ranges())
        ));
    }
    Value::Verbatim("txt".into(), text.into_bytes())
}

/// `CLUSTER INFO`: `ok` when every slot's shard has a known leader.
fn info_reply(node: &Node) -> Value {
    let views = shard_views(node);
    let assigned: usize = views.iter().map(|v| v.slots.len()).sum();
    let ok: usize = views.iter().filter(|v| v.leader.is_some()).map(|v| v.slots.len()).sum();
    let leaders: std::collections::BTreeSet<u64> = views.iter().filter_map(|v| v.leader).collect();
    let state = if ok == SLOTS as usize { "ok" } else { "fail" };
    let text = format!(
        "cluster_state:{state}\r\ncluster_slots_assigned:{assigned}\r\ncluster_slots_ok:{ok}\r\n\
         cluster_slots_pfail:0\r\ncluster_slots_fail:{}\r\ncluster_known_nodes:{}\r\ncluster_size:{}\r\n\
         cluster_current_epoch:0\r\ncluster_my_epoch:0\r\ncluster_stats_messages_sent:0\r\n\
         cluster_stats_messages_received:0\r\ntotal_cluster_links_buffer_limit_exceeded:0\r\n",
        assigned - ok,
        node.directory().len(),
        leaders.len(),
    );
    Value::Verbatim("txt".into(), text.into_bytes())
}

/// `CLUSTER <subcommand>`: SLOTS, SHARDS, NODES, MYID, KEYSLOT, INFO.
pub fn cluster(node: &Node, args: &[Vec<u8>]) -> Value {
    if !node.config().cluster_mode {
        return disabled();
    }
    let Some((sub, rest)) = args.split_first() else {
        return Value::err("ERR wrong number of arguments for 'cluster' command");
    };
    let name = String::from_utf8_lossy(sub).to_ascii_lowercase();
    match (name.as_str(), rest) {
        ("slots", []) => slots_reply(node),
        ("shards", []) => shards_reply(node),
        ("nodes", []) => nodes_reply(node),
        ("myid", []) => Value::bulk(node_name(node.id())),
        ("keyslot", [k]) => Value::Int(key_slot(k) as i64),
        ("info", []) => info_reply(node),
        ("slots" | "shards" | "nodes" | "myid" | "keyslot" | "info", _) => {
            Value::err(format!("ERR wrong number of arguments for 'cluster|{name}' command"))
        }
        _ => Value::err(format!(
            "ERR unknown subcommand '{}'. Try CLUSTER HELP.",
            String::from_utf8_lossy(sub)
        )),
    }
}

/// `READONLY` / `READWRITE`: whether the connection's reads may be served by a follower
/// replica of this node.
pub fn readonly(node: &Node, s: &mut Session, on: bool) -> Value {
    if !node.config().cluster_mode {
        return disabled();
    }
    s.readonly = on;
    Value::ok()
}

/// Redis's reply to a command whose keys are in different slots.
pub fn crossslot() -> Value {
    Value::err("CROSSSLOT Keys in request don't hash to the same slot")
}

/// The one slot of `keys`, `None` without keys, or the `-CROSSSLOT` reply.
pub fn common_slot<'a>(keys: impl IntoIterator<Item = &'a [u8]>) -> Result<Option<u16>, Value> {
    let mut slot = None;
    for k in keys {
        let s = key_slot(k);
        match slot {
            None => slot = Some(s),
            Some(t) if t != s => return Err(crossslot()),
            _ => {}
        }
    }
    Ok(slot)
}

/// Whether this node serves a command on `group` now without waiting: it leads the shard,
/// or the command only reads, the connection sent `READONLY` and a replica is here.
pub fn served_here(node: &Node, group: u64, read: bool, s: &Session) -> bool {
    serves(node, group, read, s.readonly)
}

/// [`served_here`] with the connection's `READONLY` flag given.
fn serves(node: &Node, group: u64, read: bool, readonly: bool) -> bool {
    node.leads(group) || (read && readonly && node.engine().hosts(group))
}

/// Cluster mode's answer to a keyed command that this node does not serve: `None` when it
/// serves it here (the command runs), else `-CROSSSLOT`, `-MOVED slot ip:port` naming the
/// shard's leader (waited for up to the retry budget during a leader change), or
/// `-TRYAGAIN` when no leader appeared within it.
pub fn redirect(node: &Node, args: &[Vec<u8>], read: bool, s: &Session) -> Option<Value> {
    redirect_keys(node, &crate::command_table::command_keys(args), read, s.readonly)
}

/// [`redirect`] for a set of keys (a transaction's, at EXEC); `readonly`: the connection
/// sent `READONLY`.
pub fn redirect_keys(node: &Node, keys: &[&[u8]], read: bool, readonly: bool) -> Option<Value> {
    let slot = match common_slot(keys.iter().copied()) {
        Ok(Some(slot)) => slot,
        Ok(None) => return None,
        Err(e) => return Some(e),
    };
    let group = node.group_of(keys[0]);
    let deadline = Instant::now() + node.config().retry_budget;
    loop {
        if serves(node, group, read, readonly) {
            return None;
        }
        let leader = if node.engine().hosts(group) {
            node.engine().leader(group).map(|l| l.node)
        } else {
            read_routes(node.routes()).get(group).and_then(|r| r.leader)
        };
        if let Some(addr) = leader.filter(|&l| l != node.id()).and_then(|l| node.directory().get(&l).cloned())
        {
            return Some(Value::err(format!("MOVED {slot} {}", addr.client)));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Some(Value::err(format!(
                "TRYAGAIN slot {slot}: group {group} has no known leader within the retry budget of {} ms",
                node.config().retry_budget.as_millis()
            )));
        }
        node.wait_leader_change(group, left.min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_40_hex_digits_and_distinct() {
        let a = node_name(3);
        assert_eq!(a.len(), 40);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(a.ends_with("03"));
        assert_ne!(node_name(1), node_name(2));
        assert_eq!(node_name(u64::MAX).len(), 40);
    }

    #[test]
    fn one_slot_or_crossslot() {
        assert_eq!(common_slot([b"a".as_slice()]), Ok(Some(key_slot(b"a"))));
        assert_eq!(common_slot([b"{u}1".as_slice(), b"{u}2"]), Ok(Some(key_slot(b"u"))));
        assert_eq!(common_slot([b"a".as_slice(), b"b"]), Err(crossslot()));
        assert_eq!(common_slot(std::iter::empty::<&[u8]>()), Ok(None));
    }

    #[test]
    fn slot_ranges_are_written_as_cluster_nodes_does() {
        assert_eq!(ranges_text(&[(0, 1023), (5000, 5000)]), " 0-1023 5000");
        assert_eq!(ranges_text(&[]), "");
    }
}
