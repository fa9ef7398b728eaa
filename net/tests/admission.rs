//! Hostile admission: forged source addresses (address validation), handshake floods from
//! one address, many connections claiming one node, and a node removed from the
//! allow-list. Each bound is shown reached, and a real peer still gets through.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::raw::RawClient;
use common::*;
use flotilla_net::frame::Hello;
use flotilla_net::{ClusterCa, DropReason, Endpoint, Event, Inbox};

/// Sends from `e` to node `to` until a frame from `e` arrives in `inbox` or `limit` passes.
fn delivered(e: &Endpoint, to: u64, inbox: &mut Inbox, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut tag = 0;
    while Instant::now() < deadline {
        let _ = e.send(to, tag, Bytes::from_static(b"ping"));
        tag += 1;
        if let Ok(Event::Frame { from, .. }) = inbox.recv_timeout(Duration::from_millis(100)) {
            if from == e.node_id() {
                return true;
            }
        }
    }
    false
}

/// Waits (bounded) until `cond` holds.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// A one-way relay: datagrams sent to it reach `to` from the relay's address, and the
/// answers are dropped, as for a forged source address. Stops when `stop` is set.
fn blind_relay(to: SocketAddr, stop: Arc<AtomicBool>) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        let deadline = Instant::now() + Duration::from_secs(30);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                if from != to {
                    let _ = sock.send_to(&buf[..n], to);
                }
            }
        }
    });
    addr
}

#[test]
fn unvalidated_addresses_get_a_retry_and_cost_no_connection_state() {
    let ca = ClusterCa::generate().unwrap();
    let mut eps = cluster(&ca, 2);
    let (e2, _i2) = eps.pop().unwrap();
    let (e1, mut i1) = eps.pop().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let relay = blind_relay(e1.local_addr().unwrap(), stop.clone());
    // 50 connection attempts whose source never sees an answer (a forged address).
    let blind = RawClient::new(&ca.pem().cert_pem, None);
    assert!(blind.flood(relay, 1, 50, Duration::from_millis(800)).is_empty());
    stop.store(true, Ordering::Relaxed);
    let s = e1.stats();
    assert!(s.retries >= 50, "{s:?}");
    assert_eq!(s.handshakes_peak, 0, "a forged address made the node hold a handshake: {s:?}");
    // Positive twin: a real peer answers the Retry and connects.
    assert!(delivered(&e2, 1, &mut i1, Duration::from_secs(5)));
    let s = e1.stats();
    assert!(s.retries >= 51 && s.handshakes_peak >= 1, "{s:?}");
}

#[test]
fn handshake_flood_from_one_address_is_bounded_and_a_real_peer_still_connects() {
    let ca = ClusterCa::generate().unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let mut c1 = test_config(1, any);
    c1.max_handshakes = 16;
    c1.max_handshakes_per_address = 4;
    let (e1, mut i1) = start(c1.validate().unwrap(), &identity(&ca, 1));
    let (e2, _i2) = start(test_config(2, any).validate().unwrap(), &identity(&ca, 2));
    e2.set_peer_addr(1, e1.local_addr().unwrap());
    // A node with a valid certificate opens 64 connections from one socket and stalls them
    // after the TLS handshake (never sends its hello).
    let n9 = ca.issue_node(9).unwrap();
    let flooder = RawClient::new(&ca.pem().cert_pem, Some((&n9.cert_pem, &n9.key_pem)));
    let stalled = flooder.flood(e1.local_addr().unwrap(), 1, 64, Duration::from_secs(2));
    let s = e1.stats();
    assert!(s.handshakes_peak <= 4, "per-address cap: {s:?}");
    assert!(s.handshakes_refused >= 32, "{s:?}");
    assert!(stalled.len() <= 8, "{} stalled connections got through", stalled.len());
    // The real peer, from another address, connects meanwhile.
    assert!(delivered(&e2, 1, &mut i1, Duration::from_secs(5)));
    // The stalled ones are closed at the admission deadline (connect_timeout).
    for c in &stalled {
        assert!(flooder.closed(c, Duration::from_secs(3)).is_some(), "a stalled connection stayed open");
    }
    // Their admission slots are released when their connection tasks end, which can be a
    // moment after the close reached the flooder.
    assert!(
        eventually(Duration::from_secs(3), || e1.stats().handshakes_in_progress == 0),
        "{:?}",
        e1.stats()
    );
    let s = e1.stats();
    assert!(s.handshakes_peak <= 5, "{s:?}");
}

#[test]
fn many_connections_claiming_one_node_keep_one_and_close_the_rest() {
    let ca = ClusterCa::generate().unwrap();
    let mut c1 = test_config(1, "127.0.0.1:0".parse().unwrap());
    // The receiver's user takes no events: its peer task cannot admit for long.
    c1.inbox_capacity = 16;
    let (e1, _i1_never_read) = start(c1.validate().unwrap(), &identity(&ca, 1));
    let addr = e1.local_addr().unwrap();
    // Node 3's certificate, from 8 sockets, 8 connections each, every one with a hello.
    let n3 = ca.issue_node(3).unwrap();
    let clients: Vec<RawClient> =
        (0..8).map(|_| RawClient::new(&ca.pem().cert_pem, Some((&n3.cert_pem, &n3.key_pem)))).collect();
    let mut conns = Vec::new();
    for c in &clients {
        for _ in 0..8 {
            if let Ok(conn) = c.connect(addr, 1, Duration::from_secs(2)) {
                let streams = c.hello(&conn, Hello { from: 3, incarnation: 7, to: 1 });
                conns.push((conn, streams));
            }
        }
    }
    assert!(conns.len() >= 48, "only {} connections were made", conns.len());
    let open = || conns.iter().filter(|(c, _)| c.close_reason().is_none()).count();
    assert!(
        eventually(Duration::from_secs(4), || open() <= 3),
        "{} of {} connections claiming node 3 still open: {:?}",
        open(),
        conns.len(),
        e1.stats()
    );
    let s = e1.stats();
    assert!(s.claims_refused >= 40, "{s:?}");
    assert!(s.handshakes_in_progress <= 1, "{s:?}");
}

#[test]
fn a_node_removed_from_the_allow_list_is_closed_and_refused() {
    let ca = ClusterCa::generate().unwrap();
    let mut eps = cluster(&ca, 3);
    let (e3, mut i3) = eps.pop().unwrap();
    let (e2, _i2) = eps.pop().unwrap();
    let (e1, mut i1) = eps.pop().unwrap();
    assert!(delivered(&e2, 1, &mut i1, Duration::from_secs(5)));
    assert!(delivered(&e3, 1, &mut i1, Duration::from_secs(5)));
    // Node 3 leaves the cluster: its certificate is still valid.
    e1.set_allowed_nodes(Some(HashSet::from([2])));
    assert!(
        wait_for(&mut i1, Duration::from_secs(3), |e| matches!(e, Event::PeerDown { node: 3, .. })).is_some()
    );
    assert!(
        wait_for(&mut i3, Duration::from_secs(3), |e| matches!(e, Event::PeerDown { node: 1, .. })).is_some()
    );
    // Node 3 redials: refused in the handshake; its frame is dropped as unreachable.
    e3.send(1, 77, Bytes::from_static(b"let me back")).unwrap();
    let ev = wait_for(
        &mut i3,
        Duration::from_secs(5),
        |e| matches!(e, Event::Dropped { tags, .. } if tags.contains(&77)),
    );
    // (Pings `delivered` queued earlier may share the report.)
    assert!(
        matches!(&ev, Some(Event::Dropped { to: 1, reason: DropReason::Unreachable, .. })),
        "{ev:?} {:?}",
        e1.stats()
    );
    // Node 1 does not dial it either.
    e1.send(3, 78, Bytes::from_static(b"for 3")).unwrap();
    let ev = wait_for(&mut i1, Duration::from_secs(3), |e| {
        matches!(e, Event::Dropped { to: 3, .. } | Event::PeerUp { node: 3, .. })
    });
    assert_eq!(ev, Some(Event::Dropped { to: 3, tags: vec![78], reason: DropReason::NotAllowed }));
    assert!(e1.stats().policy_refused >= 2, "the close and the refused handshake: {:?}", e1.stats());
    // Node 2 is unaffected.
    assert!(delivered(&e2, 1, &mut i1, Duration::from_secs(5)));
    // Positive twin: back on the list, node 3 connects again.
    e1.set_allowed_nodes(None);
    assert!(delivered(&e3, 1, &mut i1, Duration::from_secs(5)));
}
