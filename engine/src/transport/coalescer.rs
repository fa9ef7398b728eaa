//! Per-destination batching of outgoing messages, with heartbeats coalesced per node pair.
//!
//! Owns [`Outbox`]: during one round of the ready loop the runtime pushes every message its
//! groups emit, tagged with the destination node; [`Outbox::flush`] then yields ONE batch per
//! destination node, in which all heartbeats of all groups led here with a replica there
//! form ONE [`WireItem::Heartbeats`] item (group, term, commit clamped to the follower's
//! match, round) and all heartbeat answers form ONE [`WireItem::HeartbeatAcks`] item.
//! Every heartbeat the core emits is sent: its round may confirm a ReadIndex or a lease,
//! and a quiescing heartbeat (the flag set) is what stops a follower. On the receiving
//! side, [`split_inbound`] shares a received batch out by group (one part per worker),
//! keeping coalesced heartbeats and answers as their compact entries, which the runtime
//! steps without building a message each; [`expand`] turns received items back into
//! per-group messages (tests, tools). Never sends: the caller hands each batch to a
//! `Transport`.

use std::collections::BTreeMap;

use super::codec::{HeartbeatAck, HeartbeatEntry, WireItem};
use crate::raft::message::{Message, MessageBody};
use crate::raft::types::NodeId;

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
    /// Batches produced by [`Outbox::flush`].
    pub batches: u64,
}

/// Outgoing messages of one round, grouped per destination node.
#[derive(Debug, Default)]
pub struct Outbox {
    /// By destination node, sorted (a handful of nodes: a binary search per push).
    pending: Vec<(NodeId, Pending)>,
    /// Heartbeats and answers flushed to each node last time: the capacity reserved for the
    /// next round, so 100,000 heartbeats are not pushed through repeated reallocations.
    sizes: BTreeMap<NodeId, (usize, usize)>,
    stats: OutboxStats,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Outbox {
        Outbox { pending: Vec::new(), sizes: BTreeMap::new(), stats: OutboxStats::default() }
    }

    /// What is queued for node `to`.
    #[inline(always)]
    fn pending_for(&mut self, to: NodeId) -> &mut Pending {
        let i = match self.pending.binary_search_by_key(&to, |(n, _)| *n) {
            Ok(i) => i,
            Err(i) => {
                let (h, a) = self.sizes.get(&to).copied().unwrap_or_default();
                let p = Pending {
                    items: Vec::new(),
                    heartbeats: Vec::with_capacity(h),
                    acks: Vec::with_capacity(a),
                };
                self.pending.insert(i, (to, p));
                i
            }
        };
        &mut self.pending[i].1
    }

    /// Queues a message of `group` for node `to`. A heartbeat or an answer goes straight
    /// into the destination's coalesced list as its compact entry.
    #[inline(always)]
    pub fn push(&mut self, to: NodeId, group: u64, msg: Message) {
        let Message { from, to: replica, term, body } = msg;
        match body {
            MessageBody::Heartbeat { commit, round, quiesce } => {
                self.stats.heartbeats += 1;
                let entry = HeartbeatEntry { group, from, to: replica, term, commit, round, quiesce };
                self.pending_for(to).heartbeats.push(entry);
            }
            MessageBody::HeartbeatResponse { round } => {
                self.pending_for(to).acks.push(HeartbeatAck { group, from, to: replica, term, round });
            }
            body => {
                let msg = Message { from, to: replica, term, body };
                self.pending_for(to).items.push(WireItem::Msg { group, msg });
            }
        }
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

/// One part of a received batch (a worker's groups, see [`split_inbound`]): its messages
/// in order, and its shares of the coalesced heartbeats and answers kept compact, to be
/// stepped one by one (`Raft::step_heartbeat`, `Raft::step_heartbeat_response`) without
/// building a `Message` each.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Inbound {
    /// (group, message) pairs, in the order received.
    pub msgs: Vec<(u64, Message)>,
    /// Heartbeats, in the order received.
    pub heartbeats: Vec<HeartbeatEntry>,
    /// Heartbeat answers, in the order received.
    pub acks: Vec<HeartbeatAck>,
}

impl Inbound {
    /// Whether this part holds nothing.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty() && self.heartbeats.is_empty() && self.acks.is_empty()
    }
}

/// Room reserved for one part's share of `n` entries split `parts` ways: an even share and
/// an eighth more, so a share a little over even (group ids spread at random over the
/// parts) does not reallocate and copy the list.
fn share(n: usize, parts: usize) -> usize {
    n / parts + n / (8 * parts) + 64
}

/// Splits received items into `parts` parts by group (`part_of(group)`, taken modulo
/// `parts`): messages as (group, message) pairs, coalesced heartbeats and answers as their
/// compact entries, never expanded. With one part a coalesced list moves whole (no copy).
/// Items that carry no Raft message are skipped, as in [`expand`].
pub fn split_inbound(items: Vec<WireItem>, parts: usize, part_of: impl Fn(u64) -> usize) -> Vec<Inbound> {
    let parts = parts.max(1);
    let mut out: Vec<Inbound> = (0..parts).map(|_| Inbound::default()).collect();
    for it in items {
        match it {
            WireItem::Msg { group, msg } => out[part_of(group) % parts].msgs.push((group, msg)),
            WireItem::Heartbeats(hs) => {
                if parts == 1 && out[0].heartbeats.is_empty() {
                    out[0].heartbeats = hs;
                    continue;
                }
                for p in &mut out {
                    p.heartbeats.reserve(share(hs.len(), parts));
                }
                for h in hs {
                    out[part_of(h.group) % parts].heartbeats.push(h);
                }
            }
            WireItem::HeartbeatAcks(acks) => {
                if parts == 1 && out[0].acks.is_empty() {
                    out[0].acks = acks;
                    continue;
                }
                for p in &mut out {
                    p.acks.reserve(share(acks.len(), parts));
                }
                for a in acks {
                    out[part_of(a.group) % parts].acks.push(a);
                }
            }
            WireItem::Tombstone { .. }
            | WireItem::GcProbe { .. }
            | WireItem::TombstoneAck { .. }
            | WireItem::SnapshotProgress { .. } => {}
        }
    }
    out
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
            WireItem::Tombstone { .. }
            | WireItem::GcProbe { .. }
            | WireItem::TombstoneAck { .. }
            | WireItem::SnapshotProgress { .. } => Box::new(std::iter::empty()),
        }
    })
}
