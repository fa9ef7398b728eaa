//! ReadIndex request contexts across restarts: an answer addressed to an earlier life of
//! a node never releases a read of its new life, whatever the wall clock does (the
//! contexts carry the node's durable incarnation in their high bits; thesis §6.4 requires
//! a read to be served only on the answer to its own request).

#![allow(clippy::unwrap_used, missing_docs)]

mod common_engine;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common_engine::*;
use flotilla_engine::api::*;
use flotilla_engine::raft::message::{Message, MessageBody};
use flotilla_engine::raft::NodeId;
use flotilla_engine::transport::{
    MemoryNetwork, SnapshotChunks, Transport, TransportError, TransportEvent, WireItem,
};

const LONG: Duration = Duration::from_secs(60);
const GROUP: u64 = 7;

#[derive(Default)]
struct TapState {
    /// Contexts of the ReadIndex requests this node sent.
    read_ctxs: Vec<u64>,
    /// Whether those requests are swallowed (the leader never answers them).
    swallow_reads: bool,
    /// Events handed to the node before anything from the network.
    inject: VecDeque<TransportEvent>,
}

/// A transport wrapper that records (and optionally swallows) outgoing ReadIndex requests
/// and lets the test inject arrivals.
struct Tap<T> {
    inner: T,
    st: Arc<Mutex<TapState>>,
}

impl<T: Transport> Transport for Tap<T> {
    fn node_id(&self) -> NodeId {
        self.inner.node_id()
    }

    fn send(&self, to: NodeId, tag: u64, items: &[WireItem]) -> Result<(), TransportError> {
        let mut st = self.st.lock().unwrap();
        let mut keep = Vec::with_capacity(items.len());
        for it in items {
            if let WireItem::Msg { msg: Message { body: MessageBody::ReadIndex { ctx }, .. }, .. } = it {
                st.read_ctxs.push(*ctx);
                if st.swallow_reads {
                    continue;
                }
            }
            keep.push(it.clone());
        }
        drop(st);
        if keep.is_empty() {
            return Ok(());
        }
        self.inner.send(to, tag, &keep)
    }

    fn send_snapshot(
        &self,
        to: NodeId,
        tag: u64,
        group: u64,
        chunks: SnapshotChunks,
    ) -> Result<(), TransportError> {
        self.inner.send_snapshot(to, tag, group, chunks)
    }

    fn recv_timeout(&mut self, timeout: Duration) -> Option<TransportEvent> {
        if let Some(ev) = self.st.lock().unwrap().inject.pop_front() {
            return Some(ev);
        }
        self.inner.recv_timeout(timeout)
    }
}

fn open(net: &MemoryNetwork, id: NodeId, dir: &std::path::Path, tap: Option<Arc<Mutex<TapState>>>) -> Engine {
    let reg = Registry::default();
    let factory: StateMachineFactory = Arc::new(move |g| ChainSm::boxed(&reg, g));
    let mut cfg = config(id, dir.to_path_buf(), 10_000);
    cfg.workers = 1;
    // Reads must not time out while the test holds one (10 s at 5 ms ticks).
    cfg.read_timeout_ticks = 2000;
    let inner = net.join(id, 1 << 12);
    let transport: Box<dyn Transport> = match tap {
        Some(st) => Box::new(Tap { inner, st }),
        None => Box::new(inner),
    };
    Engine::open(cfg, transport, factory).unwrap()
}

fn wait_for(what: &str, f: impl FnMut() -> bool) {
    common_engine::wait_until(what, LONG, f);
}

/// Node 1 (a follower) forwards a read in its first life; it restarts; in its second life
/// a forwarded read waits while the test delivers the leader's answer to the first life's
/// request (same group, same replicas, the current term): nothing is released. The answer
/// to the second life's own request then releases it, so the injection path works. The
/// contexts of the two lives differ in their incarnation bits.
#[test]
fn answer_to_previous_life_releases_no_read() {
    let tmp = tempfile::tempdir().unwrap();
    let (d1, d2) = (tmp.path().join("n1"), tmp.path().join("n2"));
    let net = MemoryNetwork::new();
    let tap = Arc::new(Mutex::new(TapState::default()));
    let e2 = open(&net, 2, &d2, None);
    let mut e1 = open(&net, 1, &d1, Some(tap.clone()));
    e1.create_group_led_by(GROUP, &[1, 2], 2, ChainSm::boxed(&Registry::default(), GROUP)).unwrap();
    e2.create_group_led_by(GROUP, &[1, 2], 2, ChainSm::boxed(&Registry::default(), GROUP)).unwrap();
    let knows_leader = |e: &Engine| {
        e.group_status(GROUP).is_some_and(|s| s.leader.map(|r| r.node) == Some(2) && s.applied >= 2)
    };
    wait_for("node 1 to follow node 2", || knows_leader(&e1));

    // Life 1: a read forwarded and answered.
    e1.read_index(GROUP).unwrap().wait_timeout(LONG).ok().unwrap().unwrap();
    let c1 = *tap.lock().unwrap().read_ctxs.last().unwrap();

    e1.shutdown();
    tap.lock().unwrap().read_ctxs.clear();
    tap.lock().unwrap().swallow_reads = true;
    e1 = open(&net, 1, &d1, Some(tap.clone()));
    wait_for("node 1 to follow node 2 again", || knows_leader(&e1));

    // Life 2: a read forwarded; the leader never sees it.
    let mut read = e1.read_index(GROUP).unwrap();
    wait_for("the forwarded read", || !tap.lock().unwrap().read_ctxs.is_empty());
    let c2 = tap.lock().unwrap().read_ctxs[0];
    assert_ne!(c1, c2, "a context of life 1 reused in life 2");
    assert_eq!((c2 >> 40), (c1 >> 40) + 1, "the incarnation is bumped at open");

    let st = e1.group_status(GROUP).unwrap();
    let answer = |ctx: u64| TransportEvent::Items {
        from: 2,
        items: vec![WireItem::Msg {
            group: GROUP,
            msg: Message {
                from: 2,
                to: st.replica,
                term: st.term,
                body: MessageBody::ReadIndexResponse { ctx, index: 1 },
            },
        }],
        hold: Default::default(),
    };
    tap.lock().unwrap().inject.push_back(answer(c1));
    wait_for("the stale answer to be taken", || tap.lock().unwrap().inject.is_empty());
    read = match read.wait_timeout(Duration::from_millis(300)) {
        Ok(r) => panic!("an answer addressed to life 1 released a read of life 2: {r:?}"),
        Err(p) => p,
    };
    tap.lock().unwrap().inject.push_back(answer(c2));
    match read.wait_timeout(LONG) {
        Ok(r) => assert!(r.unwrap() >= 1),
        Err(_) => panic!("the read's own answer did not release it"),
    }

    e1.shutdown();
    e2.shutdown();
}
