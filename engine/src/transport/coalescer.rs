//! Per-destination batching of outgoing messages, with heartbeats coalesced per node pair.
//!
//! Owns [`Outbox`]: during one round of the ready loop the runtime pushes every message its
//! groups emit, tagged with the destination node; [`Outbox::flush`] then yields ONE batch per
//! destination node, in which all heartbeats of all groups led here with a replica there
//! form ONE [`WireItem::Heartbeats`] item (group, term, commit clamped to the follower's
//! match, round) and all heartbeat answers form ONE [`WireItem::HeartbeatAcks`] item.
//! Every heartbeat the core emits is sent: its round may confirm a ReadIndex or a lease,
//! and a quiescing heartbeat (the flag set) is what stops a follower. [`expand`] turns
//! received items back into per-group messages. Never sends: the caller hands each batch
//! to a `Transport`.

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
    pending: BTreeMap<NodeId, Pending>,
    /// Heartbeats and answers flushed to each node last time: the capacity reserved for the
    /// next round, so 100,000 heartbeats are not pushed through repeated reallocations.
    sizes: BTreeMap<NodeId, (usize, usize)>,
    stats: OutboxStats,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Outbox {
        Outbox { pending: BTreeMap::new(), sizes: BTreeMap::new(), stats: OutboxStats::default() }
    }

    /// Queues a message of `group` for node `to`.
    pub fn push(&mut self, to: NodeId, group: u64, msg: Message) {
        let sizes = &self.sizes;
        let p = self.pending.entry(to).or_insert_with(|| {
            let (h, a) = sizes.get(&to).copied().unwrap_or_default();
            Pending { items: Vec::new(), heartbeats: Vec::with_capacity(h), acks: Vec::with_capacity(a) }
        });
        match msg.body {
            MessageBody::Heartbeat { commit, round, quiesce } => {
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
            _ => p.items.push(WireItem::Msg { group, msg }),
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
