//! The fault-injecting relay partitions a real QUIC cluster: cut, heal and delay links
//! between chosen nodes at run time.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use flotilla_net::fault::FaultyNet;
use flotilla_net::{ClusterCa, Endpoint, Event, Inbox};

/// Sends from `e` to `to` until a frame from `e` arrives in `inbox` or `limit` passes;
/// returns how long it took.
fn reach(e: &Endpoint, to: u64, inbox: &mut Inbox, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut tag = 0;
    while start.elapsed() < limit {
        let _ = e.send(to, tag, Bytes::from_static(b"ping"));
        tag += 1;
        let deadline = Instant::now() + Duration::from_millis(100);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match inbox.recv_timeout(left) {
                Ok(Event::Frame { from, .. }) if from == e.node_id() => return Some(start.elapsed()),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    None
}

#[test]
fn cut_heal_and_delay_links_of_a_real_cluster() {
    let (net, mut eps) = relayed(3, &|_| {});
    let (e3, mut i3) = eps.pop().unwrap();
    let (e2, mut i2) = eps.pop().unwrap();
    let (e1, mut i1) = eps.pop().unwrap();
    let fast = Duration::from_secs(5);
    assert!(reach(&e1, 2, &mut i2, fast).is_some());
    assert!(reach(&e1, 3, &mut i3, fast).is_some());

    // Cut 1-2: node 1 learns node 2 is down (idle timeout), 1-3 keeps working.
    net.cut(1, 2);
    let t = Instant::now();
    let down = wait_for(&mut i1, Duration::from_secs(5), |e| matches!(e, Event::PeerDown { node: 2, .. }));
    assert!(down.is_some(), "no peer-down after the cut");
    eprintln!("peer down {:?} after the cut", t.elapsed());
    assert!(reach(&e2, 1, &mut i1, Duration::from_millis(500)).is_none(), "frames crossed a cut link");
    assert!(reach(&e3, 1, &mut i1, fast).is_some(), "an uncut link stopped working");
    // While cut, sends to 2 are reported dropped (the redial fails).
    e1.send(2, 4242, Bytes::from_static(b"lost")).unwrap();
    let dropped = wait_for(&mut i1, Duration::from_secs(5), |e| matches!(e, Event::Dropped { to: 2, .. }));
    assert!(matches!(dropped, Some(Event::Dropped { tags, .. }) if tags.contains(&4242)));

    // Heal: the pair reconnects (backoff) and frames flow again.
    net.heal(1, 2);
    let back = reach(&e1, 2, &mut i2, Duration::from_secs(10));
    assert!(back.is_some(), "no recovery after heal");
    eprintln!("recovered {back:?} after heal");

    // Delay 1-3 by 150 ms each way: a frame now takes at least that long.
    while i3.try_recv().is_some() {}
    net.delay(1, 3, Duration::from_millis(150));
    std::thread::sleep(Duration::from_millis(50));
    let took = reach(&e1, 3, &mut i3, fast).unwrap();
    assert!(took >= Duration::from_millis(150), "delay not applied: {took:?}");
    net.delay(1, 3, Duration::ZERO);
    let _ = (e2, e3);
}

/// Nodes 1..=`n` (each configured by `tune`), every one reaching the others through the
/// fault relay.
fn relayed(n: u64, tune: &dyn Fn(&mut flotilla_net::NetConfig)) -> (FaultyNet, Vec<(Endpoint, Inbox)>) {
    let ca = ClusterCa::generate().unwrap();
    let eps: Vec<(Endpoint, Inbox)> = (1..=n)
        .map(|id| {
            let mut c = test_config(id, "127.0.0.1:0".parse().unwrap());
            tune(&mut c);
            start(c.validate().unwrap(), &identity(&ca, id))
        })
        .collect();
    let real: Vec<(u64, std::net::SocketAddr)> =
        eps.iter().map(|(e, _)| (e.node_id(), e.local_addr().unwrap())).collect();
    let net = FaultyNet::start(&real).unwrap();
    for (e, _) in &eps {
        for (peer, addr) in net.address_book(e.node_id()) {
            e.set_peer_addr(peer, addr);
        }
    }
    (net, eps)
}

/// Nodes 1 and 2 (configured by `tune`) through the fault relay, connected both ways.
fn relayed_pair(
    tune: &dyn Fn(&mut flotilla_net::NetConfig),
) -> (FaultyNet, (Endpoint, Inbox), (Endpoint, Inbox)) {
    let (net, mut eps) = relayed(2, tune);
    let (mut e2, mut e1) = (eps.pop().unwrap(), eps.pop().unwrap());
    assert!(reach(&e1.0, 2, &mut e2.1, Duration::from_secs(5)).is_some());
    assert!(reach(&e2.0, 1, &mut e1.1, Duration::from_secs(5)).is_some());
    // Settle (handshake, path MTU probes) before anything is counted.
    std::thread::sleep(Duration::from_millis(300));
    while e1.1.try_recv().is_some() {}
    while e2.1.try_recv().is_some() {}
    (net, e1, e2)
}

/// Node 1 sends `n` frames to node 2, one every 2 ms, with no answers; returns the
/// datagrams node 2 sent back meanwhile (acknowledgements, bar a keep-alive or two).
fn datagrams_back_for_one_way(n: u32, tune: impl Fn(&mut flotilla_net::NetConfig)) -> u64 {
    let (net, (e1, _i1), (_e2, mut i2)) = relayed_pair(&tune);
    let before = net.datagrams(2, 1);
    for i in 0..n {
        e1.send(2, u64::from(i), Bytes::from_static(b"one way")).unwrap();
        let got = wait_for(&mut i2, Duration::from_secs(5), |e| matches!(e, Event::Frame { from: 1, .. }));
        assert!(got.is_some(), "frame {i} not delivered");
        std::thread::sleep(Duration::from_millis(2));
    }
    net.datagrams(2, 1) - before
}

/// `max_ack_delay` reaches the peer: with a threshold no burst reaches, the peer
/// acknowledges on its delay timer alone, so a 1 ms delay brings far more acknowledgements
/// of a slow one-way stream than QUIC's usual 25 ms.
#[test]
fn the_requested_ack_delay_paces_the_peers_acknowledgements() {
    let n = 100;
    let slow = |c: &mut flotilla_net::NetConfig| {
        c.ack_eliciting_threshold = 1024;
        c.max_ack_delay = Duration::from_millis(25);
    };
    let fast = |c: &mut flotilla_net::NetConfig| {
        c.ack_eliciting_threshold = 1024;
        c.max_ack_delay = Duration::from_millis(1);
    };
    let slow_acks = datagrams_back_for_one_way(n, slow);
    let fast_acks = datagrams_back_for_one_way(n, fast);
    eprintln!("{n} one-way frames: {fast_acks} datagrams back with a 1 ms delay, {slow_acks} with 25 ms");
    assert!(fast_acks > 3 * slow_acks.max(1), "1 ms: {fast_acks}, 25 ms: {slow_acks}");
}

/// Runs `n` request and answer exchanges between nodes 1 and 2 (node 2 answers each frame
/// as it arrives, node 1 sends the next once the answer is in), both configured by
/// `tune`, and returns the datagrams that crossed the relay both ways.
fn datagrams_for_exchanges(n: u32, tune: impl Fn(&mut flotilla_net::NetConfig)) -> u64 {
    let (net, (e1, mut i1), (e2, mut i2)) = relayed_pair(&tune);
    let before = net.datagrams(1, 2) + net.datagrams(2, 1);
    let limit = Duration::from_secs(5);
    for i in 0..n {
        e1.send(2, u64::from(i), Bytes::from_static(b"request")).unwrap();
        let got = wait_for(&mut i2, limit, |e| matches!(e, Event::Frame { from: 1, .. }));
        assert!(got.is_some(), "request {i} not delivered");
        e2.send(1, u64::from(i), Bytes::from_static(b"answer")).unwrap();
        let got = wait_for(&mut i1, limit, |e| matches!(e, Event::Frame { from: 2, .. }));
        assert!(got.is_some(), "answer {i} not delivered");
    }
    let sent = net.datagrams(1, 2) + net.datagrams(2, 1) - before;
    drop((e1, e2));
    sent
}

/// The ACK frequency settings (`ack_eliciting_threshold`, `max_ack_delay`) reach the peer:
/// with the defaults, request and answer traffic lets acknowledgements ride the frames
/// instead of going out on their own, so fewer datagrams cross than when the peer must
/// acknowledge every packet at once (threshold 0, what each acknowledgement sent alone
/// costs: a datagram, a wake-up and a decryption at each end).
#[test]
fn acknowledgements_ride_the_answers_with_the_default_ack_frequency() {
    let n = 300;
    let eager = datagrams_for_exchanges(n, |c| c.ack_eliciting_threshold = 0);
    let lazy = datagrams_for_exchanges(n, |_| {});
    eprintln!("{n} exchanges: {eager} datagrams acknowledging every packet, {lazy} with the defaults");
    assert!(lazy >= u64::from(2 * n), "every frame is a datagram: {lazy}");
    assert!(lazy * 10 < eager * 8, "defaults {lazy} not well below {eager}");
}
