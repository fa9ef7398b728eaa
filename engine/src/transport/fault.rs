//! A fault-injecting [`Transport`] wrapper for tests: partitions between node pairs (one
//! way or both ways), replication-only cuts (a pair's appends, heartbeats and tombstones are lost while
//! votes and answers pass, as when large or periodic traffic fails on a path) and random
//! loss, over any transport (QUIC or in memory).
//!
//! Owns the fault rules ([`FaultControl`], shared by every wrapped node so a test flips a
//! partition in one place) and applies them on both sides: a batch is dropped when it is
//! sent on a blocked (from, to) pair, and again when it arrives on one (so a peer that is
//! not wrapped is still cut off). Drops are silent, like a network's: the sender learns
//! nothing, Raft retransmits. Never reorders, delays or alters what it lets through, except
//! that a replication-only cut removes the appends and heartbeats from a batch at send.
//! The inner transport's figures for metrics ([`Transport::stats_source`]) pass through
//! unchanged.
//!
//! A real partition also ends the connection (QUIC's idle timeout), which the transport
//! reports as the peer going down; the wrapper does the same at once: the first receive
//! after a pair involving this node is blocked (either way) yields `PeerDown` for the
//! other node, once per partition. Healing reports nothing (the next traffic flows).
//!
//! One selective rule: quiesce heartbeats (the leader's heartbeat with the quiesce flag)
//! can be dropped one by one at random, out of the batches that carry them, so a test can
//! lose exactly those (everything else in the batch goes through unchanged).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{SnapshotChunks, Transport, TransportError, TransportEvent, TransportStatsSource, WireItem};
use crate::raft::message::MessageBody;
use crate::raft::types::NodeId;

/// Blocked arrivals one `recv_timeout` call discards before it returns `None`.
const MAX_DROPS_PER_RECV: usize = 4096;

#[derive(Debug, Default)]
struct Rules {
    /// Directed pairs (from, to) whose traffic is dropped.
    blocked: HashSet<(NodeId, NodeId)>,
    /// Directed pairs (from, to) whose appends, heartbeats and snapshots are dropped.
    replication_blocked: HashSet<(NodeId, NodeId)>,
    /// Batches dropped at random, per million.
    drop_ppm: u32,
    /// SplitMix64 state for random drops.
    rng: u64,
    /// Batches and snapshot streams dropped so far.
    dropped: u64,
    /// Quiesce heartbeats dropped at random, per million.
    quiesce_drop_ppm: u32,
    /// Quiesce heartbeats sent, and dropped, so far.
    quiesce_seen: u64,
    quiesce_dropped: u64,
}

impl Rules {
    fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Whether a batch from `from` to `to` is dropped (counted if so).
    fn drops(&mut self, from: NodeId, to: NodeId) -> bool {
        let lost = self.blocked.contains(&(from, to))
            || (self.drop_ppm > 0 && self.next() % 1_000_000 < u64::from(self.drop_ppm));
        if lost {
            self.dropped += 1;
        }
        lost
    }

    /// Whether a quiesce heartbeat is dropped (counted either way).
    fn drops_quiesce(&mut self) -> bool {
        self.quiesce_seen += 1;
        let lost = self.quiesce_drop_ppm > 0 && self.next() % 1_000_000 < u64::from(self.quiesce_drop_ppm);
        if lost {
            self.quiesce_dropped += 1;
        }
        lost
    }
}

/// The fault rules shared by every [`FaultTransport`] of a test (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct FaultControl {
    rules: Arc<Mutex<Rules>>,
}

impl FaultControl {
    /// No faults; random drops seeded with `seed`.
    pub fn new(seed: u64) -> FaultControl {
        let c = FaultControl::default();
        c.lock().rng = seed;
        c
    }

    fn lock(&self) -> MutexGuard<'_, Rules> {
        // A panic while holding the lock cannot leave the rules inconsistent (every update
        // is a single insert/remove/assignment), so a poisoned lock is still usable.
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops everything `from` sends to `to` (one way).
    pub fn block(&self, from: NodeId, to: NodeId) {
        self.lock().blocked.insert((from, to));
    }

    /// Lets `from`'s traffic to `to` through again.
    pub fn unblock(&self, from: NodeId, to: NodeId) {
        self.lock().blocked.remove(&(from, to));
    }

    /// Drops the replication traffic `from` sends to `to` (one way): appends, heartbeats,
    /// snapshot streams and tombstones (what members send a replica); votes, answers and
    /// everything else pass. The peer is not reported down.
    pub fn block_replication(&self, from: NodeId, to: NodeId) {
        self.lock().replication_blocked.insert((from, to));
    }

    /// Lets `from`'s replication traffic to `to` through again.
    pub fn unblock_replication(&self, from: NodeId, to: NodeId) {
        self.lock().replication_blocked.remove(&(from, to));
    }

    /// Cuts `a` and `b` apart both ways.
    pub fn partition(&self, a: NodeId, b: NodeId) {
        let mut r = self.lock();
        r.blocked.insert((a, b));
        r.blocked.insert((b, a));
    }

    /// Cuts `node` off from every node in `others`, both ways.
    pub fn isolate(&self, node: NodeId, others: &[NodeId]) {
        let mut r = self.lock();
        for &o in others.iter().filter(|&&o| o != node) {
            r.blocked.insert((node, o));
            r.blocked.insert((o, node));
        }
    }

    /// Drops each batch (and snapshot stream) at random with probability `ppm` per million
    /// (0 turns random loss off).
    pub fn set_drop_ppm(&self, ppm: u32) {
        self.lock().drop_ppm = ppm.min(1_000_000);
    }

    /// Drops each quiesce heartbeat (a `Heartbeat` with the quiesce flag, alone or in a
    /// coalesced heartbeat item) at random with probability `ppm` per million, removing
    /// just it from its batch (0 turns this off).
    pub fn set_quiesce_drop_ppm(&self, ppm: u32) {
        self.lock().quiesce_drop_ppm = ppm.min(1_000_000);
    }

    /// Quiesce heartbeats sent through wrapped transports so far, and how many of them
    /// were dropped (by `set_quiesce_drop_ppm`).
    pub fn quiesce_heartbeats(&self) -> (u64, u64) {
        let r = self.lock();
        (r.quiesce_seen, r.quiesce_dropped)
    }

    /// Removes every partition, replication-only cut and random loss.
    pub fn heal(&self) {
        let mut r = self.lock();
        r.blocked.clear();
        r.replication_blocked.clear();
        r.drop_ppm = 0;
        r.quiesce_drop_ppm = 0;
    }

    /// Whether traffic from `from` to `to` is blocked now.
    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.lock().blocked.contains(&(from, to))
    }

    /// Batches and snapshot streams dropped so far (by partitions and random loss).
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Wraps `inner` so its traffic obeys these rules.
    pub fn wrap<T: Transport>(&self, inner: T) -> FaultTransport<T> {
        FaultTransport {
            me: inner.node_id(),
            inner,
            ctl: self.clone(),
            failed_snapshots: Mutex::new(Vec::new()),
            reported_down: HashSet::new(),
        }
    }
}

/// A [`Transport`] whose traffic obeys a [`FaultControl`]. Build with
/// [`FaultControl::wrap`].
#[derive(Debug)]
pub struct FaultTransport<T> {
    me: NodeId,
    inner: T,
    ctl: FaultControl,
    /// Snapshot streams dropped at send: reported as failed on the next receive.
    failed_snapshots: Mutex<Vec<TransportEvent>>,
    /// Peers reported down because a pair with them is blocked (cleared when unblocked).
    reported_down: HashSet<NodeId>,
}

impl<T> FaultTransport<T> {
    /// The wrapped transport.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The rules this transport obeys.
    pub fn control(&self) -> &FaultControl {
        &self.ctl
    }
}

impl<T> FaultTransport<T> {
    /// A peer that a blocked pair (either way) cut off from this node and that was not
    /// reported down yet; forgets peers whose pairs are open again.
    fn newly_cut_off(&mut self) -> Option<NodeId> {
        let me = self.me;
        let r = self.ctl.lock();
        let cut = |n: NodeId| r.blocked.contains(&(me, n)) || r.blocked.contains(&(n, me));
        self.reported_down.retain(|&n| cut(n));
        let node = r
            .blocked
            .iter()
            .filter_map(|&(f, t)| {
                if f == me {
                    Some(t)
                } else if t == me {
                    Some(f)
                } else {
                    None
                }
            })
            .find(|n| !self.reported_down.contains(n))?;
        self.reported_down.insert(node);
        Some(node)
    }
}

impl<T: Transport> FaultTransport<T> {
    /// `send` or `send_control` (`control`) through the faults.
    fn send_on(&self, to: NodeId, tag: u64, items: &[WireItem], control: bool) -> Result<(), TransportError> {
        let mut r = self.ctl.lock();
        if r.drops(self.me, to) {
            return Ok(());
        }
        let cut_items: Vec<WireItem>;
        let items: &[WireItem] = if r.replication_blocked.contains(&(self.me, to)) {
            cut_items = items.iter().filter(|it| !is_replication(it)).cloned().collect();
            if cut_items.is_empty() {
                return Ok(());
            }
            &cut_items
        } else {
            items
        };
        let is_quiesce = |it: &WireItem| match it {
            WireItem::Heartbeats(hs) => hs.iter().any(|h| h.quiesce),
            WireItem::Msg { msg, .. } => matches!(msg.body, MessageBody::Heartbeat { quiesce: true, .. }),
            _ => false,
        };
        if !items.iter().any(is_quiesce) {
            drop(r);
            return self.forward(to, tag, items, control);
        }
        let mut kept = Vec::with_capacity(items.len());
        for it in items {
            match it {
                WireItem::Heartbeats(hs) => {
                    let hs: Vec<_> =
                        hs.iter().filter(|h| !(h.quiesce && r.drops_quiesce())).copied().collect();
                    if !hs.is_empty() {
                        kept.push(WireItem::Heartbeats(hs));
                    }
                }
                WireItem::Msg { msg, .. }
                    if matches!(msg.body, MessageBody::Heartbeat { quiesce: true, .. })
                        && r.drops_quiesce() => {}
                _ => kept.push(it.clone()),
            }
        }
        drop(r);
        if kept.is_empty() {
            return Ok(());
        }
        self.forward(to, tag, &kept, control)
    }

    fn forward(&self, to: NodeId, tag: u64, items: &[WireItem], control: bool) -> Result<(), TransportError> {
        if control {
            self.inner.send_control(to, tag, items)
        } else {
            self.inner.send(to, tag, items)
        }
    }
}

impl<T: Transport> Transport for FaultTransport<T> {
    fn node_id(&self) -> NodeId {
        self.me
    }

    fn send(&self, to: NodeId, tag: u64, items: &[WireItem]) -> Result<(), TransportError> {
        self.send_on(to, tag, items, false)
    }

    fn send_control(&self, to: NodeId, tag: u64, items: &[WireItem]) -> Result<(), TransportError> {
        self.send_on(to, tag, items, true)
    }

    fn send_snapshot(
        &self,
        to: NodeId,
        tag: u64,
        group: u64,
        chunks: SnapshotChunks,
    ) -> Result<(), TransportError> {
        let dropped = {
            let mut r = self.ctl.lock();
            r.drops(self.me, to) || r.replication_blocked.contains(&(self.me, to))
        };
        if dropped {
            // A stream that never arrives fails (as a broken connection's would).
            let mut q = self.failed_snapshots.lock().unwrap_or_else(|p| p.into_inner());
            q.push(TransportEvent::SnapshotSent { to, tag, ok: false });
            return Ok(());
        }
        self.inner.send_snapshot(to, tag, group, chunks)
    }

    fn recv_timeout(&mut self, timeout: Duration) -> Option<TransportEvent> {
        let deadline = Instant::now() + timeout;
        // Bounded: a flood of blocked batches ends the call (as a timeout) after this many.
        for _ in 0..MAX_DROPS_PER_RECV {
            if let Some(ev) = self.failed_snapshots.get_mut().unwrap_or_else(|p| p.into_inner()).pop() {
                return Some(ev);
            }
            if let Some(node) = self.newly_cut_off() {
                return Some(TransportEvent::PeerDown { node });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = self.inner.recv_timeout(left)?;
            match &ev {
                TransportEvent::Items { from, .. } | TransportEvent::Malformed { from, .. } => {
                    let blocked = self.ctl.lock().blocked.contains(&(*from, self.me));
                    if !blocked {
                        return Some(ev);
                    }
                }
                _ => return Some(ev),
            }
        }
        None
    }

    /// The wrapped transport's figures (certificate expiry, refused admissions): faults
    /// change what is delivered, not what the transport under them reports.
    fn stats_source(&self) -> Option<Arc<dyn TransportStatsSource>> {
        self.inner.stats_source()
    }
}

/// Whether `item` is replication traffic (a leader's appends, heartbeats or snapshot).
fn is_replication(item: &WireItem) -> bool {
    match item {
        WireItem::Heartbeats(_) | WireItem::Tombstone { .. } => true,
        WireItem::Msg { msg, .. } => matches!(
            msg.body,
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. } | MessageBody::SnapshotChunk(_)
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::MemoryNetwork;

    fn batch() -> Vec<WireItem> {
        vec![WireItem::Heartbeats(Vec::new())]
    }

    /// Items that arrive at `t` within a short bounded wait, ignoring peer events.
    fn arrivals(t: &mut impl Transport) -> Vec<NodeId> {
        let mut from = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(50);
        while Instant::now() < deadline {
            match t.recv_timeout(Duration::from_millis(5)) {
                Some(TransportEvent::Items { from: f, .. }) => from.push(f),
                Some(_) => {}
                None => {}
            }
        }
        from
    }

    #[test]
    fn one_way_block_both_way_partition_and_heal() {
        let net = MemoryNetwork::new();
        let ctl = FaultControl::new(1);
        let mut a = ctl.wrap(net.join(1, 64));
        let mut b = ctl.wrap(net.join(2, 64));
        a.send(2, 1, &batch()).unwrap();
        assert_eq!(arrivals(&mut b), vec![1]);
        // One way: 1 -> 2 blocked, 2 -> 1 still flows.
        ctl.block(1, 2);
        a.send(2, 2, &batch()).unwrap();
        b.send(1, 3, &batch()).unwrap();
        assert!(arrivals(&mut b).is_empty());
        assert_eq!(arrivals(&mut a), vec![2]);
        assert_eq!(ctl.dropped(), 1);
        // Both ways.
        ctl.partition(1, 2);
        b.send(1, 4, &batch()).unwrap();
        a.send(2, 5, &batch()).unwrap();
        assert!(arrivals(&mut a).is_empty());
        assert!(arrivals(&mut b).is_empty());
        ctl.heal();
        a.send(2, 6, &batch()).unwrap();
        b.send(1, 7, &batch()).unwrap();
        assert_eq!(arrivals(&mut b), vec![1]);
        assert_eq!(arrivals(&mut a), vec![2]);
    }

    #[test]
    fn a_partition_reports_the_peer_down_once_per_partition() {
        let net = MemoryNetwork::new();
        let ctl = FaultControl::new(1);
        let mut a = ctl.wrap(net.join(1, 64));
        let mut b = ctl.wrap(net.join(2, 64));
        let mut c = ctl.wrap(net.join(3, 64));
        let downs = |t: &mut FaultTransport<_>| {
            let mut v = Vec::new();
            while let Some(ev) = t.recv_timeout(Duration::from_millis(5)) {
                if let TransportEvent::PeerDown { node } = ev {
                    v.push(node);
                }
            }
            v
        };
        assert!(downs(&mut a).is_empty());
        ctl.isolate(2, &[1, 3]);
        assert_eq!(downs(&mut a), vec![2]);
        let mut seen = downs(&mut b);
        seen.sort_unstable();
        assert_eq!(seen, vec![1, 3]);
        assert_eq!(downs(&mut c), vec![2]);
        // Once per partition: nothing more while it lasts ...
        assert!(downs(&mut a).is_empty());
        // ... and again after healing and a new one (a one-way block counts).
        ctl.heal();
        assert!(downs(&mut a).is_empty());
        ctl.block(2, 1);
        assert_eq!(downs(&mut a), vec![2]);
    }

    /// A replication-only cut drops appends, heartbeats and snapshot streams one way;
    /// votes pass, and the peer is not reported down.
    #[test]
    fn replication_cut_drops_appends_and_heartbeats_only() {
        use crate::raft::message::{Message, MessageBody};
        let net = MemoryNetwork::new();
        let ctl = FaultControl::new(1);
        let a = ctl.wrap(net.join(1, 64));
        let mut b = ctl.wrap(net.join(2, 64));
        let msg = |body| WireItem::Msg { group: 1, msg: Message { from: 1, to: 2, term: 1, body } };
        let append = msg(MessageBody::Append { prev_index: 0, prev_term: 0, entries: Vec::new(), commit: 0 });
        let vote = msg(MessageBody::RequestVote {
            pre_vote: false,
            last_index: 0,
            last_term: 0,
            transfer: false,
            commit: 0,
            commit_term: 0,
        });
        ctl.block_replication(1, 2);
        a.send(2, 1, &[append.clone(), WireItem::Heartbeats(Vec::new()), vote.clone()]).unwrap();
        a.send(2, 2, std::slice::from_ref(&append)).unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(100);
        while Instant::now() < deadline {
            match b.recv_timeout(Duration::from_millis(5)) {
                Some(TransportEvent::Items { items, .. }) => got.extend(items),
                Some(TransportEvent::PeerDown { node }) => panic!("node {node} reported down"),
                _ => {}
            }
        }
        assert_eq!(got, vec![vote], "only the vote gets through");
        ctl.heal();
        a.send(2, 3, &[append]).unwrap();
        assert_eq!(arrivals(&mut b), vec![1]);
    }

    #[test]
    fn receive_side_filters_an_unwrapped_sender() {
        let net = MemoryNetwork::new();
        let ctl = FaultControl::new(1);
        let raw = net.join(1, 64);
        let mut b = ctl.wrap(net.join(2, 64));
        ctl.isolate(2, &[1, 3]);
        raw.send(2, 1, &batch()).unwrap();
        assert!(arrivals(&mut b).is_empty());
        assert!(ctl.is_blocked(3, 2) && ctl.is_blocked(2, 1));
    }

    /// A transport that reports fixed figures and carries nothing.
    struct Reporting(Arc<Fixed>);

    struct Fixed(crate::transport::TransportStats);

    impl TransportStatsSource for Fixed {
        fn transport_stats(&self) -> crate::transport::TransportStats {
            self.0
        }
    }

    impl Transport for Reporting {
        fn node_id(&self) -> NodeId {
            1
        }
        fn send(&self, _: NodeId, _: u64, _: &[WireItem]) -> Result<(), TransportError> {
            Ok(())
        }
        fn send_snapshot(&self, _: NodeId, _: u64, _: u64, _: SnapshotChunks) -> Result<(), TransportError> {
            Ok(())
        }
        fn recv_timeout(&mut self, _: Duration) -> Option<TransportEvent> {
            None
        }
        fn stats_source(&self) -> Option<Arc<dyn TransportStatsSource>> {
            Some(self.0.clone())
        }
    }

    /// The wrapper hands the engine the inner transport's figures (certificate expiry,
    /// refusals), so metrics read the same with faults injected; a transport without
    /// figures stays without.
    #[test]
    fn stats_source_is_the_inner_transport_s() {
        let stats = crate::transport::TransportStats {
            cert_not_after_unix: 1_900_000_000,
            peer_cert_not_after_min_unix: 1_800_000_000,
            handshakes_refused: 3,
            policy_refused: 5,
            inbound_bytes: 7,
            ..Default::default()
        };
        let ctl = FaultControl::new(1);
        ctl.partition(1, 2);
        let wrapped = ctl.wrap(Reporting(Arc::new(Fixed(stats))));
        let source = wrapped.stats_source().expect("the inner transport's source");
        assert_eq!(source.transport_stats(), stats);
        assert!(ctl.wrap(MemoryNetwork::new().join(3, 4)).stats_source().is_none());
    }

    #[test]
    fn random_loss_drops_about_the_rate_and_snapshots_fail() {
        let net = MemoryNetwork::new();
        let ctl = FaultControl::new(7);
        let a = ctl.wrap(net.join(1, 4096));
        let mut b = ctl.wrap(net.join(2, 4096));
        ctl.set_drop_ppm(500_000);
        for tag in 0..1000 {
            a.send(2, tag, &batch()).unwrap();
        }
        let got = arrivals(&mut b).len();
        assert!((350..650).contains(&got), "{got} of 1000 arrived at 50% loss");
        assert_eq!(ctl.dropped() as usize, 1000 - got);
        // A blocked snapshot stream is reported failed.
        ctl.heal();
        ctl.block(1, 2);
        let mut a = a;
        a.send_snapshot(2, 9, 1, Box::new(std::iter::empty())).unwrap();
        assert_eq!(
            a.recv_timeout(Duration::from_millis(10)),
            Some(TransportEvent::SnapshotSent { to: 2, tag: 9, ok: false })
        );
    }
}
