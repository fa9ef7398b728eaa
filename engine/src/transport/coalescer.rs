//! Per-destination batching of outgoing messages, with heartbeats coalesced per node pair.
//!
//! Owns [`Outbox`]: during one round of the ready loop the runtime pushes every message its
//! groups emit, tagged with the destination node; [`Outbox::flush`] then yields ONE batch per
//! destination node, in which all heartbeats of all groups led here with a replica there
//! form ONE [`WireItem::Heartbeats`] item (group, term, commit clamped to the follower's
//! match, round) and all heartbeat answers form ONE [`WireItem::HeartbeatAcks`] item. A
//! group's heartbeat is skipped when an append went to that follower within the heartbeat
//! interval (the append already reset the follower's election timer), unless the caller
//! says the round is needed (a ReadIndex waits on it). [`expand`] turns received items back
//! into per-group messages. A quiescing heartbeat (the flag set) is never skipped and
//! travels in the same item. Never sends: the caller hands each batch to a `Transport`.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use super::codec::{HeartbeatAck, HeartbeatEntry, WireItem};
use crate::raft::message::{Message, MessageBody};
use crate::raft::types::NodeId;

/// A multiplicative hasher for the (group, replica) keys of `last_append`: ids this node
/// assigned, never chosen by a peer, so no need for SipHash's flooding resistance, and a
/// lookup per heartbeat is on the tick's hot path.
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Debug, Default)]
struct Pending {
    items: Vec<WireItem>,
    heartbeats: Vec<HeartbeatEntry>,
    acks: Vec<HeartbeatAck>,
}

/// Counters of one outbox since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Heartbeats coalesced into heartbeat items.
    pub heartbeats: u64,
    /// Heartbeats skipped because an append went to the follower within the interval.
    pub heartbeats_skipped: u64,
    /// Batches produced by [`Outbox::flush`].
    pub batches: u64,
}

/// Outgoing messages of one round, grouped per destination node.
#[derive(Debug)]
pub struct Outbox {
    interval: u64,
    now: u64,
    /// (group, follower replica) -> tick of the last append sent to it.
    last_append: HashMap<(u64, u64), u64, BuildHasherDefault<IdHasher>>,
    pending: BTreeMap<NodeId, Pending>,
    /// Heartbeats and answers flushed to each node last time: the capacity reserved for the
    /// next round, so 100,000 heartbeats are not pushed through repeated reallocations.
    sizes: BTreeMap<NodeId, (usize, usize)>,
    stats: OutboxStats,
}

impl Outbox {
    /// An outbox whose heartbeat interval is `heartbeat_interval_ticks` (at least 1).
    pub fn new(heartbeat_interval_ticks: u64) -> Outbox {
        Outbox {
            interval: heartbeat_interval_ticks.max(1),
            now: 0,
            last_append: HashMap::default(),
            pending: BTreeMap::new(),
            sizes: BTreeMap::new(),
            stats: OutboxStats::default(),
        }
    }

    /// Advances the outbox's clock by one tick (call once per runtime tick).
    pub fn tick(&mut self) {
        self.now += 1;
        // Forget appends older than the interval, at most once per interval, so the map
        // stays as small as the set of recently appended followers.
        if self.now % self.interval == 0 {
            let (now, iv) = (self.now, self.interval);
            self.last_append.retain(|_, t| now - *t < iv);
        }
    }

    /// Forgets a removed group.
    pub fn forget_group(&mut self, group: u64) {
        self.last_append.retain(|(g, _), _| *g != group);
    }

    /// Queues a message of `group` for node `to`. A heartbeat may be skipped (see the
    /// module docs); returns whether the message was queued.
    pub fn push(&mut self, to: NodeId, group: u64, msg: Message) -> bool {
        self.push_with(to, group, msg, true)
    }

    /// Like [`Outbox::push`]; with `skippable == false` a heartbeat is always sent (use it
    /// while a ReadIndex of the group waits for the round).
    pub fn push_with(&mut self, to: NodeId, group: u64, msg: Message, skippable: bool) -> bool {
        let sizes = &self.sizes;
        let p = self.pending.entry(to).or_insert_with(|| {
            let (h, a) = sizes.get(&to).copied().unwrap_or_default();
            Pending { items: Vec::new(), heartbeats: Vec::with_capacity(h), acks: Vec::with_capacity(a) }
        });
        match msg.body {
            MessageBody::Heartbeat { commit, round, quiesce } => {
                let recent =
                    self.last_append.get(&(group, msg.to)).is_some_and(|&t| self.now - t < self.interval);
                // A quiescing heartbeat is never skipped: it is what stops the follower.
                if skippable && recent && !quiesce {
                    self.stats.heartbeats_skipped += 1;
                    return false;
                }
                self.stats.heartbeats += 1;
                p.heartbeats.push(HeartbeatEntry {
                    group,
                    from: msg.from,
                    to: msg.to,
                    term: msg.term,
                    commit,
                    round,
                    quiesce,
                });
            }
            MessageBody::HeartbeatResponse { round } => {
                p.acks.push(HeartbeatAck { group, from: msg.from, to: msg.to, term: msg.term, round });
            }
            MessageBody::Append { .. } => {
                self.last_append.insert((group, msg.to), self.now);
                p.items.push(WireItem::Msg { group, msg });
            }
            _ => p.items.push(WireItem::Msg { group, msg }),
        }
        true
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Takes the queued messages: one batch per destination node, messages in push order,
    /// then one heartbeat item and one answer item.
    pub fn flush(&mut self) -> Vec<(NodeId, Vec<WireItem>)> {
        let pending = std::mem::take(&mut self.pending);
        let mut out = Vec::with_capacity(pending.len());
        for (to, mut p) in pending {
            if p.heartbeats.len() + p.acks.len() > 0 || self.sizes.contains_key(&to) {
                self.sizes.insert(to, (p.heartbeats.len(), p.acks.len()));
            }
            if !p.heartbeats.is_empty() {
                p.items.push(WireItem::Heartbeats(p.heartbeats));
            }
            if !p.acks.is_empty() {
                p.items.push(WireItem::HeartbeatAcks(p.acks));
            }
            if !p.items.is_empty() {
                self.stats.batches += 1;
                out.push((to, p.items));
            }
        }
        out
    }

    /// Counters since creation.
    pub fn stats(&self) -> OutboxStats {
        self.stats
    }
}

/// Turns received items back into (group, message) pairs, in order. Items that carry no
/// Raft message ([`WireItem::Tombstone`], [`WireItem::GcProbe`], [`WireItem::TombstoneAck`]) are skipped: the runtime takes them out first.
pub fn expand(items: Vec<WireItem>) -> impl Iterator<Item = (u64, Message)> {
    items.into_iter().flat_map(|it| -> Box<dyn Iterator<Item = (u64, Message)>> {
        match it {
            WireItem::Msg { group, msg } => Box::new(std::iter::once((group, msg))),
            WireItem::Heartbeats(hs) => Box::new(hs.into_iter().map(|h| {
                let body = MessageBody::Heartbeat { commit: h.commit, round: h.round, quiesce: h.quiesce };
                (h.group, Message { from: h.from, to: h.to, term: h.term, body })
            })),
            WireItem::HeartbeatAcks(hs) => Box::new(hs.into_iter().map(|h| {
                let body = MessageBody::HeartbeatResponse { round: h.round };
                (h.group, Message { from: h.from, to: h.to, term: h.term, body })
            })),
            WireItem::Tombstone { .. } | WireItem::GcProbe { .. } | WireItem::TombstoneAck { .. } => {
                Box::new(std::iter::empty())
            }
        }
    })
}
