//! Issue 12 point 5: memory taken from the network is bounded in bytes, end to end, and a
//! flood of data cannot cause elections.
//!
//! Three engines over real QUIC on 127.0.0.1 and a fourth, hostile endpoint with a valid
//! certificate (node 4, a member of nothing) that floods node 1 with 16 MiB frames: valid
//! batches, each one append of one 16 MiB entry for a real group, so every frame goes
//! through node 1's transport, decoder, network thread and worker mailbox. Node 1's worker
//! that owns that group is slowed (failpoint `engine::slow_step`: 60 ms per MiB of entry
//! data it steps, so about a second per hostile frame) far below the rate QUIC delivers.
//! Node 1's other worker owns the groups node 1 leads; the groups of the slowed worker are
//! led by nodes 2 and 3.
//!
//! Asserted while the flood runs: the bytes node 1 holds of the hostile peer (its
//! transport's stats, sampled every 10 ms) never exceed `peer_inbound_bytes`; the
//! process's resident memory (all four nodes and the test) grows by at most that budget
//! plus QUIC's connection window plus a stated slack; every group keeps committing
//! proposals, node 1's own leaderships included; no election happens (every group's term
//! and leader unchanged, no node's `elections` counter moved); nothing panics. Needs the
//! cargo feature `failpoints` (CI runs `--all-features`).
#![cfg(feature = "failpoints")]
#![allow(clippy::unwrap_used, missing_docs)]

mod common_engine;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common_engine::*;
use flotilla_engine::api::*;
use flotilla_engine::raft::{Entry, EntryPayload, Message, MessageBody, NodeId, Role};
use flotilla_engine::transport::codec::encode_batch;
use flotilla_engine::transport::{QuicTransport, Transport, TransportStatsSource, WireItem};

const MIB: u64 = 1 << 20;
/// Node 1's budget per peer (`peer_inbound_bytes`).
const BUDGET: u64 = 32 * MIB;
/// QUIC's connection receive window (twice the default `stream_window`): what the
/// transport may hold unread of one peer on top of its budget.
const QUIC_WINDOW: u64 = 8 * MIB;
/// Resident memory allowed on top of those for everything else the flood makes the
/// process allocate (the hostile sender's in-flight buffers, allocator slack).
const RSS_SLACK: u64 = 96 * MIB;
/// Resident growth at which the flood stops early (a build without the bound would
/// otherwise take the machine's memory); the assertion then fails.
const RSS_ABORT: u64 = 1024 * MIB;
const FLOOD: Duration = Duration::from_secs(8);
const WORKERS: usize = 2;
const LONG: Duration = Duration::from_secs(20);

/// The runtime's group-to-worker routing (`runtime::route`), to place the groups.
fn route(group: u64, n: usize) -> usize {
    let mut z = group.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % n as u64) as usize
}

fn net_config(id: NodeId, addr: std::net::SocketAddr) -> flotilla_net::NetConfig {
    let mut c = flotilla_net::NetConfig::new(id);
    c.listen = addr;
    // Loopback: large datagrams, far less CPU per byte in a debug build.
    c.max_udp_payload = 65527;
    c.peer_inbound_bytes = BUDGET as usize;
    c
}

fn identity(ca: &flotilla_net::ClusterCa, id: NodeId) -> flotilla_net::NodeIdentity {
    let pem = ca.issue_node(id).unwrap();
    flotilla_net::NodeIdentity::from_pem(&ca.pem().cert_pem, &pem.cert_pem, &pem.key_pem).unwrap()
}

struct Node {
    engine: Engine,
    stats: Arc<dyn TransportStatsSource>,
}

#[test]
fn a_flood_of_16_mib_frames_is_held_to_the_budget_and_causes_no_election() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = flotilla_net::ClusterCa::generate().unwrap();
    let eps: Vec<(NodeId, flotilla_net::Endpoint, flotilla_net::Inbox)> = (1..=4)
        .map(|id| {
            let cfg = net_config(id, "127.0.0.1:0".parse().unwrap()).validate().unwrap();
            let (ep, inbox) = flotilla_net::Endpoint::start(cfg, &identity(&ca, id)).unwrap();
            (id, ep, inbox)
        })
        .collect();
    let addrs: HashMap<NodeId, std::net::SocketAddr> =
        eps.iter().map(|(id, ep, _)| (*id, ep.local_addr().unwrap())).collect();
    let mut nodes: Vec<Node> = Vec::new();
    let mut regs = Vec::new();
    let mut hostile = None;
    for (id, ep, inbox) in eps {
        for (&n, &a) in &addrs {
            if n != id {
                ep.set_peer_addr(n, a);
            }
        }
        if id == 4 {
            hostile = Some((ep, inbox));
            continue;
        }
        let t = QuicTransport::new(ep, inbox, Default::default());
        let stats = t.stats_source().unwrap();
        let reg = Registry::default();
        let r = reg.clone();
        let factory: StateMachineFactory = Arc::new(move |g| ChainSm::boxed(&r, g));
        let mut cfg = config(id, tmp.path().join(format!("n{id}")), 10_000);
        cfg.workers = WORKERS;
        cfg.tick_interval = Duration::from_millis(10);
        cfg.raft.quiesce = false;
        let engine = Engine::open(cfg, Box::new(t), factory).unwrap();
        nodes.push(Node { engine, stats });
        regs.push(reg);
    }
    let (hostile, _hostile_inbox) = hostile.unwrap();

    // Groups of node 1's worker 0 (the one the flood slows) are led by nodes 2 and 3;
    // those of its worker 1 by node 1.
    let groups: Vec<u64> = (1..=12).collect();
    let flooded = *groups.iter().find(|&&g| route(g, WORKERS) == 0).unwrap();
    let first_leader = |g: u64| if route(g, WORKERS) == 0 { 2 + g % 2 } else { 1 };
    assert!(groups.iter().any(|&g| first_leader(g) == 1), "node 1 leads no group");
    for &g in &groups {
        for (i, n) in nodes.iter().enumerate() {
            let sm = ChainSm::boxed(&regs[i], g);
            n.engine.create_group_led_by(g, &[1, 2, 3], first_leader(g), sm).unwrap();
        }
    }
    let leader_of = |g: u64| -> Option<(NodeId, u64)> {
        nodes.iter().enumerate().find_map(|(i, n)| {
            n.engine.group_status(g).filter(|s| s.role == Role::Leader).map(|s| (i as u64 + 1, s.term))
        })
    };
    for &g in &groups {
        wait_until(&format!("group {g} led by {}", first_leader(g)), LONG, || {
            leader_of(g).is_some_and(|(l, _)| l == first_leader(g))
        });
    }
    // At the designated leader: asking node 1 for statuses during the flood would wait
    // behind its slowed worker.
    let propose = |g: u64, data: Vec<u8>| -> bool {
        let l = first_leader(g);
        match nodes[l as usize - 1].engine.propose(g, Bytes::from(data)) {
            Ok(p) => matches!(p.wait_timeout(Duration::from_secs(3)), Ok(Ok(_))),
            Err(_) => false,
        }
    };
    for &g in &groups {
        wait_until(&format!("group {g} commits"), LONG, || propose(g, vec![0; 8]));
    }
    let before: Vec<(u64, Option<(NodeId, u64)>)> = groups.iter().map(|&g| (g, leader_of(g))).collect();
    let elections_before: Vec<u64> = nodes.iter().map(|n| n.engine.metrics().elections).collect();
    let dropped_before = nodes[0].engine.metrics().dropped_wrong_sender;

    // The flood: one append of one 16 MiB entry for the flooded group, sent again and
    // again (the same bytes: the sender holds one copy).
    let st = nodes[0].engine.group_status(flooded).unwrap();
    let entry_len = (16 << 20) - 1024;
    let frame = encode_batch(&[WireItem::Msg {
        group: flooded,
        msg: Message {
            from: 2,
            to: st.replica,
            term: st.term,
            body: MessageBody::Append {
                prev_index: st.last_index,
                prev_term: st.term,
                entries: vec![Entry {
                    term: st.term,
                    index: st.last_index + 1,
                    payload: EntryPayload::Normal(Bytes::from(vec![7u8; entry_len])),
                }],
                commit: st.commit,
            },
        },
    }])
    .unwrap();
    assert!(frame.len() <= 16 << 20);
    fail::cfg("engine::slow_step", "return(1:60)").unwrap();
    let baseline_rss = rss_kib() * 1024;
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let (peak_peer, peak_total, peak_rss, committed) = std::thread::scope(|s| {
        // The hostile sender.
        s.spawn(|| {
            let deadline = Instant::now() + FLOOD;
            let mut tag = 0;
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                match hostile.send(1, tag, frame.clone()) {
                    Ok(()) => {
                        tag += 1;
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
        // Node 1's held bytes and the process's resident memory, sampled.
        let monitor = s.spawn(|| {
            let (mut peer, mut total, mut rss) = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let t = nodes[0].stats.transport_stats();
                peer = peer.max(t.inbound_bytes_peer_max);
                total = total.max(t.inbound_bytes);
                rss = rss.max(rss_kib() * 1024);
                if rss > baseline_rss + RSS_ABORT {
                    stop.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (peer, total, rss)
        });
        // Proposals to every group, round robin, while the flood lasts.
        let mut committed: HashMap<u64, u64> = HashMap::new();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for &g in &groups {
                i += 1;
                if propose(g, i.to_le_bytes().to_vec()) {
                    *committed.entry(g).or_default() += 1;
                }
            }
        }
        let (peer, total, rss) = monitor.join().unwrap();
        (peer, total, rss, committed)
    });
    fail::remove("engine::slow_step");
    let m1 = nodes[0].engine.metrics();
    let t1 = nodes[0].stats.transport_stats();
    let rss_growth = peak_rss.saturating_sub(baseline_rss);
    eprintln!(
        "flood: {} frames of 16 MiB queued by the sender, {} refused by node 1's workers; node 1 held at most {} MiB of the hostile peer (budget {} MiB), {} MiB of all peers; budget waits {}; process RSS +{} MiB (baseline {} MiB); commits per group {:?}",
        sent.load(Ordering::Relaxed),
        m1.dropped_wrong_sender - dropped_before,
        peak_peer / MIB,
        BUDGET / MIB,
        peak_total / MIB,
        t1.inbound_waits,
        rss_growth / MIB,
        baseline_rss / MIB,
        committed
    );
    assert!(m1.dropped_wrong_sender > dropped_before, "the flood never reached node 1's workers");
    assert!(peak_peer > 0 && peak_peer <= BUDGET, "node 1 held {peak_peer} bytes of one peer");
    assert!(t1.inbound_waits > 0, "the budget never pushed back");
    assert!(
        rss_growth <= BUDGET + QUIC_WINDOW + RSS_SLACK,
        "resident memory grew by {} MiB during the flood (bound {} MiB)",
        rss_growth / MIB,
        (BUDGET + QUIC_WINDOW + RSS_SLACK) / MIB
    );
    for &g in &groups {
        let n = committed.get(&g).copied().unwrap_or(0);
        assert!(
            n >= 5,
            "group {g} (led by {}) committed only {n} proposals during the flood",
            first_leader(g)
        );
    }
    let after: Vec<(u64, Option<(NodeId, u64)>)> = groups.iter().map(|&g| (g, leader_of(g))).collect();
    assert_eq!(after, before, "a leader or a term changed during the flood");
    let elections_after: Vec<u64> = nodes.iter().map(|n| n.engine.metrics().elections).collect();
    assert_eq!(elections_after, elections_before, "an election started during the flood");
    // The flood's frames are released once handled: node 1 catches up on every group.
    wait_until("node 1's budget of the hostile peer released", LONG, || {
        nodes[0].stats.transport_stats().inbound_bytes < MIB
    });
    for n in nodes {
        n.engine.shutdown();
    }
}
