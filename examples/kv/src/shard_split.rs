//! Splitting a shard by slot range (issue 15 point 3, the kv server's side of the engine's
//! `Effect::Split`; the protocol is in `flotilla_engine::runtime::split` and
//! ARCHITECTURE.md).
//!
//! - `FLOTILLA.SPLIT <group> [<slot>]` (admin; `flotilla-admin split`): the shard's slots
//!   from `<slot>` on, in slot order (default: from its middle slot), go to a new shard
//!   whose group id is the next free one. The node proposes a [`SplitCmd`] to the shard
//!   (at its leader), naming the leader as the child's first leader and the shard's voters
//!   as its members.
//! - At apply, on every replica ([`SplitState::apply`]): the command is checked against the
//!   shard's applied slots (a stale or repeated split is refused and changes nothing); the
//!   keys of the split-off slots move out of the shard's keyspace into the child's; the
//!   shard's slots shrink; the engine founds the child from that state
//!   (`StateMachine::take_split`). From that index on the shard refuses the moved slots
//!   with `-WRONGSLOT` at apply and when a read is served.
//! - A request that got `-WRONGSLOT` (issued before the split, applied or served after)
//!   was not applied: [`reroute`] waits for the routes to name the slot's new shard and
//!   gives the request to it (plain mode) or answers `-MOVED` to its leader (cluster
//!   mode); never a wrong answer.
//!
//! Owns the split command, its apply, and the re-routing rule. Never writes the engine's
//! state, never decides the routes (the shards' leaders publish them, `crate::routes`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla_engine::api::{Effect, StateMachine};

use crate::node::{Node, Op};
use crate::resp::{Proto, Value};
use crate::slots::{key_slot, SlotSet, SLOTS};
use crate::sm::{read_routes, shard_group, ShardData, ShardSlots, ShardSm, WriteCmd, SHARD_BASE};

/// What a split command's bytes start with (never a [`WriteCmd`]'s first byte pattern:
/// decoded before it).
const MAGIC: &[u8; 8] = b"FKVSPLT1";

/// Registers a shard replica's data and slots with its node, so requests reach it.
pub type ShardRegistry = Arc<dyn Fn(u64, ShardData, ShardSlots) + Send + Sync>;

/// The split of a shard: its slots `slots` go to group `child`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitCmd {
    /// The new shard's group.
    pub child: u64,
    /// The slots it takes.
    pub slots: SlotSet,
    /// The node whose replica of the child campaigns first (the shard's leader).
    pub first_leader: u64,
    /// The child's founding voters (the shard's voters when proposed).
    pub members: Vec<u64>,
}

impl SplitCmd {
    /// The command's log bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&self.child.to_le_bytes());
        b.extend_from_slice(&self.first_leader.to_le_bytes());
        b.extend_from_slice(&(self.members.len() as u32).to_le_bytes());
        for m in &self.members {
            b.extend_from_slice(&m.to_le_bytes());
        }
        self.slots.encode(&mut b);
        b
    }

    /// The command in `b`, if `b` is one.
    pub fn decode(b: &[u8]) -> Option<SplitCmd> {
        let b = b.strip_prefix(MAGIC.as_slice())?;
        let u = |b: &[u8], at: usize| Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?));
        let child = u(b, 0)?;
        let first_leader = u(b, 8)?;
        let n = u32::from_le_bytes(b.get(16..20)?.try_into().ok()?) as usize;
        let members = (0..n.min(64)).map(|i| u(b, 20 + 8 * i)).collect::<Option<Vec<u64>>>()?;
        let (slots, _) = SlotSet::decode(b.get(20 + 8 * members.len()..)?)?;
        Some(SplitCmd { child, slots, first_leader, members })
    }
}

/// A shard state machine's split side: the registry its children register with, the
/// effect of the entry just applied, and the children set aside for the engine.
#[derive(Default)]
pub struct SplitState {
    /// `None`: a state machine outside a node (tests).
    registry: Option<(u64, ShardRegistry)>,
    /// Whether this replica's data is registered with the node.
    registered: bool,
    effects: Vec<Effect>,
    aside: HashMap<u64, ShardSm>,
}

impl SplitState {
    /// The split side of shard `group` on a node with `registry`; `registered`: the
    /// node knows its data already (the factory registered it).
    pub fn new(group: u64, registry: ShardRegistry, registered: bool) -> SplitState {
        SplitState { registry: Some((group, registry)), registered, ..SplitState::default() }
    }

    /// Registers the replica's data with the node on its first apply or restore (a
    /// child the engine dropped, keeping the replica already there, never registers).
    pub fn register(&mut self, data: &ShardData, slots: &ShardSlots) {
        if let (false, Some((g, r))) = (self.registered, &self.registry) {
            r(*g, data.clone(), slots.clone());
            self.registered = true;
        }
    }

    /// Applies split `cmd` at `index` to the shard's `data` and `slots`; the reply.
    pub fn apply(&mut self, index: u64, cmd: SplitCmd, data: &ShardData, slots: &ShardSlots) -> Bytes {
        let reply = |v: Value| Bytes::from(v.to_bytes(Proto::Resp3));
        let own = slots.read().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(rest) = remaining(&own, &cmd.slots) else {
            return reply(Value::err("ERR split: the slots are not all served here, or all of them are"));
        };
        if cmd.members.is_empty() || !cmd.members.contains(&cmd.first_leader) {
            return reply(Value::err("ERR split: the first leader is not a member"));
        }
        let moved = {
            let mut ks = data.write().unwrap_or_else(|e| e.into_inner());
            ks.begin(index, None);
            ks.split_off(|k| cmd.slots.contains(key_slot(k)))
        };
        *slots.write().unwrap_or_else(|e| e.into_inner()) = rest;
        let mut child = ShardSm::new(Arc::new(RwLock::new(moved)), Arc::new(RwLock::new(cmd.slots.clone())));
        if let Some((_, r)) = &self.registry {
            child.set_split(SplitState::new(cmd.child, r.clone(), false));
        }
        tracing::info!(child = cmd.child, index, slots = cmd.slots.len(), "shard split applied");
        self.aside.insert(cmd.child, child);
        self.effects.push(Effect::Split {
            group: cmd.child,
            members: cmd.members,
            first_leader: cmd.first_leader,
        });
        reply(Value::Int(cmd.child as i64))
    }

    /// The effects of the entry just applied.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// The child `group` set aside by the split just applied.
    pub fn take_split(&mut self, group: u64) -> Option<Box<dyn StateMachine>> {
        self.aside.remove(&group).map(|sm| Box::new(sm) as Box<dyn StateMachine>)
    }
}

/// `own` without `gone`, if every slot of `gone` is in `own` and some slot stays.
fn remaining(own: &SlotSet, gone: &SlotSet) -> Option<SlotSet> {
    if gone.is_empty() || gone.ranges().iter().any(|&(a, b)| (a..=b).any(|s| !own.contains(s))) {
        return None;
    }
    let left: Vec<u16> = (0..SLOTS).filter(|&s| own.contains(s) && !gone.contains(s)).collect();
    (!left.is_empty()).then(|| set_of(&left))
}

/// The set of the (ascending) `slots`.
fn set_of(slots: &[u16]) -> SlotSet {
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for &s in slots {
        match ranges.last_mut() {
            Some((_, b)) if *b + 1 == s => *b = s,
            _ => ranges.push((s, s)),
        }
    }
    SlotSet::from_ranges(ranges).unwrap_or_default()
}

/// The slots of `own` from `at` on (in slot order), or from its middle slot; `None` if
/// that leaves the shard nothing or takes nothing.
pub fn upper_part(own: &SlotSet, at: Option<u16>) -> Option<SlotSet> {
    let all: Vec<u16> = (0..SLOTS).filter(|&s| own.contains(s)).collect();
    let at = at.unwrap_or_else(|| all.get(all.len() / 2).copied().unwrap_or(0));
    let moved: Vec<u16> = all.iter().copied().filter(|&s| s >= at).collect();
    (!moved.is_empty() && moved.len() < all.len()).then(|| set_of(&moved))
}

/// `FLOTILLA.SPLIT <group> [<slot>]`: splits shard `group` (see the module); the reply is
/// the new shard's group.
pub fn split(node: &Node, group: u64, at: Option<u16>) -> Value {
    let routes = read_routes(node.routes()).clone();
    let Some(own) = node.shard_slots(group).or_else(|| routes.get(group).map(|r| r.slots.clone())) else {
        return Value::err(format!("ERR no shard {group}"));
    };
    let Some(slots) = upper_part(&own, at) else {
        return Value::err(format!("ERR shard {group}: nothing to split at that slot"));
    };
    let status = node.engine().status();
    let taken = routes.routes().keys().copied().chain(status.iter().map(|s| s.group));
    let at_least = taken
        .filter(|&g| g >= SHARD_BASE)
        .max()
        .unwrap_or(SHARD_BASE)
        .max(shard_group(node.config().shards) - 1)
        + 1;
    // The child's group comes from the meta group, so two splits proposed at once (from
    // any nodes) never pick the same one: a child id already taken would lose the data
    // split off to it.
    let Ok(alloc) = serde_json::to_vec(&crate::sm::MetaCmd::AllocShard { at_least }) else {
        return Value::err("ERR internal error: shard allocation");
    };
    let child = match node.exec(Op::write(crate::sm::META_GROUP, alloc)) {
        Value::Int(id) if id > 0 => id as u64,
        Value::Error(e) => return Value::Error(e),
        other => return Value::err(format!("ERR shard allocation answered {other:?}")),
    };
    let leader =
        node.engine().leader(group).map(|l| l.node).or_else(|| routes.get(group).and_then(|r| r.leader));
    let Some(first_leader) = leader else {
        return Value::err(format!("TRYAGAIN shard {group} has no leader"));
    };
    let members: Vec<u64> = match status.iter().find(|s| s.group == group) {
        Some(s) => s.members.voters.iter().map(|r| r.node).collect(),
        None => routes.get(group).map(|r| r.voters.clone()).unwrap_or_default(),
    };
    let cmd = SplitCmd { child, slots, first_leader, members };
    node.exec(Op::write(group, cmd.encode()))
}

/// How many shard indexes the cluster uses now: the configured `shards`, or more once
/// splits added shards (their groups follow on, `SHARD_BASE + shards`, ...; the routes and
/// this node's replicas name them). What iterates over every shard should follow it
/// (SCAN's cursor keeps 16 bits for it); the node's status still reports the configured
/// count, which `add-servers` compares between nodes.
pub fn shard_count(node: &Node) -> u32 {
    let routes = read_routes(node.routes());
    let status = node.engine().status();
    let groups = routes.routes().keys().copied().chain(status.iter().map(|s| s.group));
    let top = groups.filter(|&g| g >= SHARD_BASE).map(|g| g - SHARD_BASE + 1).max().unwrap_or(0);
    node.config().shards.max(u32::try_from(top).unwrap_or(u32::MAX))
}

/// Whether `group` is a shard this node knows of: a configured one, or one the routes
/// name (split off since).
pub fn is_known_shard(node: &Node, group: u64) -> bool {
    (crate::sm::known_group(group, node.config().shards) && group != crate::sm::META_GROUP)
        || read_routes(node.routes()).get(group).is_some()
}

/// The admin command `FLOTILLA.SPLIT`, if `name` is it.
pub fn command(node: &Node, name: &str, args: &[Vec<u8>]) -> Option<Value> {
    if name != "FLOTILLA.SPLIT" {
        return None;
    }
    let num = |b: &Vec<u8>| std::str::from_utf8(b).ok().and_then(|s| s.parse::<u64>().ok());
    Some(match args {
        [g] => num(g).map_or_else(|| Value::err("ERR group must be a number"), |g| split(node, g, None)),
        [g, s] => match (num(g), num(s).and_then(|s| u16::try_from(s).ok()).filter(|&s| s < SLOTS)) {
            (Some(g), Some(s)) => split(node, g, Some(s)),
            _ => Value::err("ERR usage: FLOTILLA.SPLIT <group> [<slot>]"),
        },
        _ => Value::err("ERR usage: FLOTILLA.SPLIT <group> [<slot>]"),
    })
}

/// A read of `group` refused with `refusal` (`-WRONGSLOT`) when served: the same read
/// where the slot is now (plain mode), or `-MOVED` to that shard's leader (cluster mode),
/// once the routes name it (within the retry budget; else the refusal).
pub fn moved_read(node: &Node, group: u64, q: &crate::node::ReadQ, refusal: Value) -> Value {
    let op = Op::Read { group, q: q.clone() };
    match reroute(node, &op, refusal, Instant::now() + node.config().retry_budget) {
        Ok(next) => node.exec(next),
        Err(v) => v,
    }
}

/// How often the automatic splitter looks at the shards this node leads.
const AUTO_CHECK: Duration = Duration::from_secs(1);
/// How long a shard split automatically is left alone before it may split again (its
/// write rate is an average over `load_half_life`, 10 s by default).
const AUTO_COOLDOWN: Duration = Duration::from_secs(30);

/// Starts the automatic splitter of `node` if `split_write_bytes_per_sec` or `split_keys`
/// is set: once a second, each shard this node leads whose write load
/// (`GroupStatus::load`) or key count passes its threshold is split at its middle slot
/// (then left alone for `AUTO_COOLDOWN`). Ends with the node.
pub fn start_auto(node: &Arc<Node>) -> std::io::Result<()> {
    let (bytes, keys) = (node.config().split_write_bytes_per_sec, node.config().split_keys);
    if bytes == 0 && keys == 0 {
        return Ok(());
    }
    let weak = Arc::downgrade(node);
    std::thread::Builder::new().name("kv-auto-split".into()).spawn(move || {
        let mut last: HashMap<u64, Instant> = HashMap::new();
        loop {
            std::thread::sleep(AUTO_CHECK);
            let Some(node) = weak.upgrade() else { return };
            for st in node.engine().status() {
                let led = st.leader.is_some_and(|l| l.node == node.id());
                if !led
                    || st.group < SHARD_BASE
                    || last.get(&st.group).is_some_and(|t| t.elapsed() < AUTO_COOLDOWN)
                {
                    continue;
                }
                let hot = bytes > 0 && st.load.write_bytes_per_sec > bytes as f64;
                let count = match node.read_local(st.group, &crate::node::ReadQ::Count) {
                    Value::Int(n) => u64::try_from(n).unwrap_or(0),
                    _ => 0,
                };
                let big = keys > 0 && count > keys;
                if !(hot || big) {
                    continue;
                }
                last.insert(st.group, Instant::now());
                let v = split(&node, st.group, None);
                tracing::info!(group = st.group, hot, big, keys = count, reply = ?v, "automatic shard split");
            }
        }
    })?;
    Ok(())
}

/// Whether `e` (an error reply's text) is a shard's refusal of a slot it does not serve.
pub fn is_wrong_slot(e: &str) -> bool {
    e.starts_with("WRONGSLOT")
}

/// Where a request refused with `-WRONGSLOT` by `op`'s group goes now: waits (until
/// `deadline`) for the routes to name another shard for its keys' slot, then gives `op`
/// to it (`Ok`: the same request on the new group, untagged), or in cluster mode answers
/// `-MOVED` to that shard's leader unless this node leads it (`Err`). `Err` with the
/// refusal itself if the routes did not move the slot in time.
pub fn reroute(node: &Node, op: &Op, refusal: Value, deadline: Instant) -> Result<Op, Value> {
    let keys: Vec<Vec<u8>> = match op {
        Op::Write { cmd, .. } => {
            let (_, c) = crate::sm::unstamp(cmd);
            match WriteCmd::decode(c) {
                Some(w) => w.keys().into_iter().map(<[u8]>::to_vec).collect(),
                None => return Err(refusal),
            }
        }
        Op::Read { q, .. } => q.keys().into_iter().map(<[u8]>::to_vec).collect(),
        _ => return Err(refusal),
    };
    let Some(first) = keys.first() else { return Err(refusal) };
    let group = match op {
        Op::Write { group, .. } | Op::Read { group, .. } => *group,
        _ => return Err(refusal),
    };
    loop {
        let now = node.group_of(first);
        if now != group {
            if node.config().cluster_mode {
                let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                let read = matches!(op, Op::Read { .. });
                if let Some(v) = crate::redis_cluster::redirect_keys(node, &refs, read, false) {
                    return Err(v);
                }
            }
            return Ok(match op {
                Op::Write { cmd, .. } => Op::Write { group: now, cmd: cmd.clone(), tag: None },
                Op::Read { q, .. } => Op::Read { group: now, q: q.clone() },
                _ => return Err(refusal),
            });
        }
        if Instant::now() >= deadline {
            return Err(refusal);
        }
        // The new shard's leader publishes its route within moments (`crate::routes`).
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_commands_round_trip_and_other_bytes_are_not_one() {
        let c = SplitCmd {
            child: 1016,
            slots: SlotSet::from_ranges(vec![(8192, 16383)]).unwrap(),
            first_leader: 2,
            members: vec![1, 2, 3],
        };
        assert_eq!(SplitCmd::decode(&c.encode()), Some(c.clone()));
        assert_eq!(SplitCmd::decode(b"FKVSPLT1"), None);
        assert_eq!(SplitCmd::decode(&WriteCmd::Del(vec![b"k".to_vec()]).encode()), None);
        let e = c.encode();
        assert_eq!(SplitCmd::decode(&e[..e.len() - 1]), None);
    }

    #[test]
    fn the_upper_part_leaves_the_shard_something() {
        let own = SlotSet::from_ranges(vec![(0, 99), (200, 299)]).unwrap();
        assert_eq!(upper_part(&own, None), SlotSet::from_ranges(vec![(200, 299)]));
        assert_eq!(upper_part(&own, Some(50)), SlotSet::from_ranges(vec![(50, 99), (200, 299)]));
        assert_eq!(upper_part(&own, Some(0)), None, "all of it");
        assert_eq!(upper_part(&own, Some(300)), None, "nothing");
        let rest = remaining(&own, &SlotSet::from_ranges(vec![(50, 99)]).unwrap());
        assert_eq!(rest, SlotSet::from_ranges(vec![(0, 49), (200, 299)]));
        assert_eq!(remaining(&own, &SlotSet::from_ranges(vec![(150, 160)]).unwrap()), None);
        assert_eq!(remaining(&own, &own), None);
    }

    /// The split moves exactly the split-off slots' keys into the child set aside for the
    /// engine; the shard then refuses them at apply; a repeated split is refused.
    #[test]
    fn a_split_moves_the_slots_keys_and_the_shard_refuses_them_after() {
        let d: ShardData = Default::default();
        let own: ShardSlots = Arc::new(RwLock::new(crate::slots::default_range(0, 1)));
        let mut sm = ShardSm::new(d.clone(), own.clone());
        let keys: Vec<Vec<u8>> = (0..200).map(|i| format!("k{i}").into_bytes()).collect();
        for (i, k) in keys.iter().enumerate() {
            let c = WriteCmd::Set { key: k.clone(), val: b"v".to_vec(), cond: 0 }.encode();
            sm.apply(i as u64 + 1, 1, Some(&c));
        }
        let upper = upper_part(&own.read().unwrap(), None).unwrap();
        let cmd = SplitCmd { child: 1001, slots: upper.clone(), first_leader: 1, members: vec![1] };
        assert_eq!(sm.apply(300, 1, Some(&cmd.encode())).as_ref(), b":1001\r\n");
        let effects = sm.take_effects();
        assert_eq!(effects, vec![Effect::Split { group: 1001, members: vec![1], first_leader: 1 }]);
        let child = sm.take_split(1001).expect("the child is set aside");
        assert!(sm.take_split(1001).is_none());
        let moved = keys.iter().filter(|k| upper.contains(key_slot(k))).count();
        assert!(moved > 50 && moved < 150, "{moved}");
        assert_eq!(d.read().unwrap().len(), 200 - moved);
        let mut snap = Vec::new();
        let mut child = child;
        child.snapshot(&mut snap).unwrap();
        let (d2, s2): (ShardData, ShardSlots) = Default::default();
        ShardSm::new(d2.clone(), s2.clone()).restore(5, 5, &mut snap.as_slice()).unwrap();
        assert_eq!(d2.read().unwrap().len(), moved);
        assert_eq!(*s2.read().unwrap(), upper);
        let k = keys.iter().find(|k| upper.contains(key_slot(k))).unwrap();
        let set = WriteCmd::Set { key: k.clone(), val: b"late".to_vec(), cond: 0 }.encode();
        assert!(sm.apply(301, 1, Some(&set)).starts_with(b"-WRONGSLOT"), "refused at apply after the split");
        assert!(sm.apply(302, 1, Some(&cmd.encode())).starts_with(b"-ERR split"), "a repeated split");
        assert!(sm.take_effects().is_empty());
    }
}
