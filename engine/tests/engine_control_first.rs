//! A heartbeat queued behind a backlog of appends is stepped before them (issue 16 point
//! 2): one engine (node 1, one worker) over the in-memory network, and the test playing
//! the leader of a group on node 2 with raw batches. Node 1's worker is slowed on data
//! (failpoint `engine::slow_step`: it sleeps in proportion to the entry bytes of each batch
//! of messages it steps), so while it steps the first append the network thread queues
//! 20 more appends and then a heartbeat. The heartbeat goes to the worker's control
//! mailbox, which the worker drains after every data batch: its answer comes back after
//! at most the first two appends' answers, where arrival order would put it after all 21.
//! Deterministic in what it asserts (the order of the answers); the sleeps only make the
//! backlog certain to be queued. Needs the cargo feature `failpoints`.
#![cfg(feature = "failpoints")]
#![allow(clippy::unwrap_used, missing_docs)]

mod common_engine;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common_engine::*;
use flotilla_engine::api::*;
use flotilla_engine::raft::{Entry, EntryPayload, Message, MessageBody};
use flotilla_engine::transport::{HeartbeatEntry, MemoryNetwork, Transport, TransportEvent, WireItem};

const G: u64 = 5;
/// Appends queued behind the first (slow) one.
const BACKLOG: u64 = 20;

/// An append of one entry of `len` bytes at `index`, after an entry of `prev_term`.
fn append(term: u64, index: u64, prev_term: u64, len: usize) -> WireItem {
    WireItem::Msg {
        group: G,
        msg: Message {
            from: 2,
            to: 1,
            term,
            body: MessageBody::Append {
                prev_index: index - 1,
                prev_term,
                entries: vec![Entry {
                    term,
                    index,
                    payload: EntryPayload::Normal(Bytes::from(vec![7u8; len])),
                }],
                commit: 0,
            },
        },
    }
}

/// What node 1 answered node 2, in order: `Some(index)` for an accepted append's answer,
/// `None` for a heartbeat answer with `round`; a rejected append's hint (index, term)
/// goes to `hint`. Returns whether the heartbeat answer came.
fn answers(
    t: &mut impl Transport,
    round: u64,
    out: &mut Vec<Option<u64>>,
    hint: &mut Option<(u64, u64)>,
) -> bool {
    let Some(TransportEvent::Items { from: 1, items, .. }) = t.recv_timeout(Duration::from_millis(20)) else {
        return false;
    };
    let mut acked = false;
    for it in items {
        match it {
            WireItem::Msg { group: G, msg } => match msg.body {
                MessageBody::AppendResponse { index, reject: false, .. } => out.push(Some(index)),
                MessageBody::AppendResponse { reject: true, reject_hint, hint_term, .. } => {
                    *hint = Some((reject_hint, hint_term))
                }
                _ => {}
            },
            WireItem::HeartbeatAcks(acks) if acks.iter().any(|a| a.group == G && a.round == round) => {
                out.push(None);
                acked = true;
            }
            _ => {}
        }
    }
    acked
}

#[test]
fn a_heartbeat_behind_a_backlog_of_appends_is_stepped_first() {
    let net = MemoryNetwork::new();
    let t1 = net.join(1, 1 << 16);
    let mut t2 = net.join(2, 1 << 16);
    let _t3 = net.join(3, 1 << 16);
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(1, tmp.path().join("n1"), 100_000);
    cfg.workers = 1;
    cfg.tick_interval = Duration::from_millis(10);
    let reg = Registry::default();
    let r = reg.clone();
    let factory: StateMachineFactory = Arc::new(move |g| ChainSm::boxed(&r, g));
    let e = Engine::open(cfg, Box::new(t1), factory).unwrap();
    e.create_group(G, &[1, 2, 3], ChainSm::boxed(&reg, G)).unwrap();
    wait_until("the group is created", Duration::from_secs(30), || {
        e.group_status(G).is_some_and(|s| !s.members.voters.is_empty())
    });
    let st = e.group_status(G).unwrap();
    // The log holds the group's founding state: node 2 appends after its last entry,
    // taken to have the current term, or where a rejected append's hint says.
    let term = st.term + 1;
    let (mut base, mut base_term) = (st.last_index, st.term);
    let mut seen = Vec::new();
    let mut hint = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    'lead: for _ in 0..3 {
        t2.send(1, 0, &[append(term, base + 1, base_term, 16)]).unwrap();
        while !seen.contains(&Some(base + 1)) {
            assert!(Instant::now() < deadline, "the first append was not answered: {seen:?}");
            answers(&mut t2, u64::MAX, &mut seen, &mut hint);
            if let Some((index, t)) = hint.take() {
                (base, base_term) = (index, t);
                continue 'lead;
            }
        }
        break;
    }
    assert!(seen.contains(&Some(base + 1)), "node 2 could not lead: {seen:?}");

    // Node 1's worker sleeps 1 ms per KiB of entries it steps (at most 1 s a batch): about
    // 500 ms on the first append, then 48 ms on each of the backlog's.
    fail::cfg("engine::slow_step", "return(1:1000)").unwrap();
    t2.send(1, 0, &[append(term, base + 2, term, 512 << 10)]).unwrap();
    for i in 0..BACKLOG {
        t2.send(1, 0, &[append(term, base + 3 + i, term, 48 << 10)]).unwrap();
    }
    let round = 7;
    let hb = HeartbeatEntry { group: G, from: 2, to: 1, term, commit: 0, round, quiesce: false };
    t2.send_control(1, 0, &[WireItem::Heartbeats(vec![hb])]).unwrap();

    let mut order = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !answers(&mut t2, round, &mut order, &mut hint) {
        assert!(Instant::now() < deadline, "the heartbeat was not answered: {order:?}");
    }
    fail::remove("engine::slow_step");
    let appends_first = order.iter().filter(|a| a.is_some()).count();
    assert!(
        appends_first <= 2,
        "the heartbeat was answered after {appends_first} of the {} appends queued before it: {order:?}",
        BACKLOG + 1
    );
    // The backlog is still stepped, in order, after the heartbeat.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !order.contains(&Some(base + 2 + BACKLOG)) {
        assert!(Instant::now() < deadline, "the backlog was not answered: {order:?}");
        answers(&mut t2, round, &mut order, &mut hint);
    }
    assert_eq!(hint, None, "no append of the backlog was rejected");
    eprintln!("answers in order (Some(index): an append's, None: the heartbeat's): {order:?}");
    e.shutdown();
}
