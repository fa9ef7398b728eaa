//! Loopback tests with real QUIC endpoints: ordering and integrity per lane, one
//! connection per pair, restart with a new incarnation, a 64 MiB snapshot alongside
//! heartbeats, and drop reports.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use flotilla_net::{BulkError, ClusterCa, DropReason, Event, NetConfig, SendError};

const WAIT: Duration = Duration::from_secs(10);

/// Payload `i` from `from` to `to`: a header naming them and a body derived from all three.
fn payload(from: u64, to: u64, i: u64) -> Bytes {
    let len = 16 + (i as usize * 37) % 3000;
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&from.to_le_bytes());
    v.extend_from_slice(&i.to_le_bytes());
    for k in 16..len {
        v.push((k as u64 ^ i.wrapping_mul(31) ^ to) as u8);
    }
    Bytes::from(v)
}

#[test]
fn three_endpoints_frames_intact_in_order_one_connection_per_pair() {
    let ca = ClusterCa::generate().unwrap();
    let mut eps = cluster(&ca, 3);
    const N: u64 = 2000;
    // Every node sends to both others at once (simultaneous dials exercise the tie-break).
    for i in 0..N {
        for (e, _) in &eps {
            let me = e.node_id();
            for to in (1..=3).filter(|&t| t != me) {
                e.send(to, i, payload(me, to, i)).unwrap();
            }
        }
    }
    for (e, inbox) in eps.iter_mut() {
        let me = e.node_id();
        let mut next: HashMap<u64, u64> = HashMap::new();
        let deadline = Instant::now() + WAIT;
        while next.values().sum::<u64>() < 2 * N && Instant::now() < deadline {
            match inbox.recv_timeout(Duration::from_millis(200)) {
                Ok(Event::Frame { from, payload: p, .. }) => {
                    let n = next.entry(from).or_default();
                    assert_eq!(
                        p,
                        payload(from, me, *n),
                        "frame {n} from {from} at {me} corrupt or out of order"
                    );
                    *n += 1;
                }
                Ok(Event::Dropped { .. }) => panic!("unexpected drop"),
                _ => {}
            }
        }
        assert_eq!(next.values().sum::<u64>(), 2 * N, "node {me} got {next:?}");
    }
    for (e, _) in &eps {
        let s = e.stats();
        assert_eq!(s.connections, 2, "node {}: one connection per pair, got {s:?}", e.node_id());
        assert_eq!(s.frames_sent, 2 * N);
        assert_eq!(s.frames_dropped, 0);
    }
}

#[test]
fn peer_restart_recovers_with_new_incarnation() {
    let ca = ClusterCa::generate().unwrap();
    let mut eps = cluster(&ca, 2);
    let (e2, _inbox2) = eps.pop().unwrap();
    let (e1, mut inbox1) = eps.pop().unwrap();
    let addr2 = e2.local_addr().unwrap();
    let old = e2.incarnation();
    e1.send(2, 1, Bytes::from_static(b"before")).unwrap();
    let up = wait_for(&mut inbox1, WAIT, |e| matches!(e, Event::PeerUp { node: 2, .. }));
    assert_eq!(up, Some(Event::PeerUp { node: 2, incarnation: old }));
    e2.shutdown(Duration::from_millis(500));
    let down = wait_for(&mut inbox1, WAIT, |e| matches!(e, Event::PeerDown { node: 2, .. }));
    assert!(matches!(down, Some(Event::PeerDown { node: 2, incarnation, .. }) if incarnation == old));

    // Node 2 restarts on the same address with a new incarnation.
    let mut cfg = test_config(2, addr2);
    cfg.incarnation = Some(old.wrapping_add(1).max(1));
    let deadline = Instant::now() + WAIT;
    let (e2, mut inbox2) = loop {
        match flotilla_net::Endpoint::start(cfg.clone().validate().unwrap(), &identity(&ca, 2)) {
            Ok(x) => break x,
            Err(e) if Instant::now() < deadline => {
                eprintln!("rebind: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("restart failed: {e}"),
        }
    };
    e2.set_peer_addr(1, e1.local_addr().unwrap());
    // Node 1 keeps sending; once the connection is back, frames flow again.
    let deadline = Instant::now() + WAIT;
    let mut tag = 100;
    let got = loop {
        assert!(Instant::now() < deadline, "no recovery");
        let _ = e1.send(2, tag, Bytes::from(format!("after {tag}")));
        tag += 1;
        if let Ok(Event::Frame { from: 1, payload, .. }) = inbox2.recv_timeout(Duration::from_millis(100)) {
            break payload;
        }
    };
    assert!(got.starts_with(b"after "));
    let up = wait_for(&mut inbox1, WAIT, |e| matches!(e, Event::PeerUp { node: 2, .. }));
    assert_eq!(up, Some(Event::PeerUp { node: 2, incarnation: old.wrapping_add(1).max(1) }));
}

#[test]
fn snapshot_64mib_while_heartbeats_keep_flowing() {
    let ca = ClusterCa::generate().unwrap();
    let mut eps = cluster(&ca, 3);
    let (e3, _i3) = eps.pop().unwrap();
    let (_e2, mut inbox2) = eps.pop().unwrap();
    let (e1, _i1) = eps.pop().unwrap();
    const SIZE: usize = 64 << 20;
    const CHUNK: usize = 1 << 20;
    let data: Bytes = (0..SIZE).map(|i| (i * 7 + i / 4096) as u8).collect::<Vec<u8>>().into();
    let expect = data.clone();
    // Warm the connection so the snapshot and heartbeats share it.
    e1.send(2, 0, Bytes::from_static(b"hello")).unwrap();
    assert!(wait_for(&mut inbox2, WAIT, |e| matches!(e, Event::Frame { from: 1, .. })).is_some());

    let (started_tx, started_rx) = std_mpsc::channel();
    let bulk = e1.open_bulk(2, 77).unwrap();
    let sender = std::thread::spawn(move || {
        for (i, c) in data.chunks(CHUNK).enumerate() {
            bulk.send_chunk(data.slice_ref(c)).unwrap();
            if i == 0 {
                started_tx.send(()).unwrap();
            }
        }
        bulk.finish()
    });
    started_rx.recv_timeout(WAIT).unwrap();
    // Heartbeats from node 1 (same connection) and node 3, all sent after the snapshot began.
    let (hb_stop_tx, hb_stop_rx) = std_mpsc::channel::<()>();
    let hb = std::thread::spawn(move || {
        let mut n = 0u64;
        let deadline = Instant::now() + Duration::from_secs(30);
        while hb_stop_rx.try_recv().is_err() && Instant::now() < deadline {
            e1.send(2, n, Bytes::from(format!("hb1 {n}"))).unwrap();
            e3.send(2, n, Bytes::from(format!("hb3 {n}"))).unwrap();
            n += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        (e1, e3, n)
    });
    let mut received = Vec::with_capacity(SIZE);
    let (mut hb1_before_end, mut hb3_before_end) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "snapshot did not finish");
        match inbox2.recv_timeout(Duration::from_secs(5)).unwrap() {
            Event::BulkChunk { from: 1, tag: 77, payload, .. } => received.extend_from_slice(&payload),
            Event::BulkEnd { from: 1, tag: 77 } => break,
            Event::Frame { from: 1, payload, .. } if payload.starts_with(b"hb1") => hb1_before_end += 1,
            Event::Frame { from: 3, .. } => hb3_before_end += 1,
            Event::PeerUp { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    hb_stop_tx.send(()).unwrap();
    let (_e1, _e3, sent) = hb.join().unwrap();
    assert_eq!(sender.join().unwrap(), Ok(()), "sender learns success");
    assert_eq!(received.len(), SIZE);
    assert!(received == expect, "snapshot bytes differ");
    eprintln!(
        "heartbeats before snapshot end: from 1: {hb1_before_end}, from 3: {hb3_before_end}; sent {sent}"
    );
    assert!(hb1_before_end >= 3, "heartbeats on the same connection were held back by the snapshot");
    assert!(hb3_before_end >= 3);
}

#[test]
fn dropped_frames_are_reported_to_the_sender() {
    let ca = ClusterCa::generate().unwrap();
    // A UDP socket that never answers: dials to it time out.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut cfg = test_config(1, "127.0.0.1:0".parse().unwrap());
    cfg.queue_frames = 16;
    cfg.connect_timeout = Duration::from_millis(300);
    let (e1, mut inbox1) = start(cfg.validate().unwrap(), &identity(&ca, 1));
    e1.set_peer_addr(2, silent.local_addr().unwrap());
    for t in 0..16 {
        e1.send(2, t, Bytes::from_static(b"x")).unwrap();
    }
    // Backpressure: the 17th is refused at once, naming it.
    assert_eq!(e1.send(2, 16, Bytes::from_static(b"x")), Err(SendError::QueueFull { to: 2, tag: 16 }));
    // The queued ones are reported once the dial fails.
    let ev = wait_for(&mut inbox1, WAIT, |e| matches!(e, Event::Dropped { .. }));
    assert_eq!(ev, Some(Event::Dropped { to: 2, tags: (0..16).collect(), reason: DropReason::Unreachable }));
    assert_eq!(e1.queued(2), (0, 0));
    // A peer with no address at all.
    e1.send(5, 9, Bytes::from_static(b"y")).unwrap();
    let ev = wait_for(&mut inbox1, WAIT, |e| matches!(e, Event::Dropped { to: 5, .. }));
    assert_eq!(ev, Some(Event::Dropped { to: 5, tags: vec![9], reason: DropReason::NoAddress }));
    assert_eq!(e1.stats().frames_dropped, 17);
    // Oversized frames are refused at send time.
    let big = Bytes::from(vec![0u8; NetConfig::new(1).max_frame_size + 1]);
    assert!(matches!(e1.send(2, 1, big), Err(SendError::TooLarge { .. })));
}

#[test]
fn frames_overtake_buffered_snapshot_chunks_and_bulk_buffering_is_bounded() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let ca = ClusterCa::generate().unwrap();
    let mut eps = cluster(&ca, 2);
    let (_e2, mut inbox2) = eps.pop().unwrap();
    let (e1, _i1) = eps.pop().unwrap();
    e1.send(2, 0, Bytes::from_static(b"warm")).unwrap();
    assert!(wait_for(&mut inbox2, WAIT, |e| matches!(e, Event::Frame { .. })).is_some());
    // Node 2 reads nothing while node 1 streams 64 chunks of 1 MiB.
    const CHUNKS: usize = 64;
    let sent = Arc::new(AtomicUsize::new(0));
    let bulk = e1.open_bulk(2, 5).unwrap();
    let counter = sent.clone();
    let sender = std::thread::spawn(move || {
        for i in 0..CHUNKS {
            bulk.send_chunk(Bytes::from(vec![i as u8; 1 << 20])).unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
        }
        bulk.finish()
    });
    std::thread::sleep(Duration::from_millis(1500));
    // The receiver buffers a few chunks, then QUIC flow control stops the sender.
    let before = sent.load(Ordering::SeqCst);
    assert!(
        before > 0 && before < CHUNKS,
        "{before} of {CHUNKS} chunks sent to a receiver that reads nothing"
    );
    // A frame sent now is received before the chunks buffered ahead of it.
    e1.send(2, 1, Bytes::from_static(b"heartbeat")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    match inbox2.recv_timeout(WAIT).unwrap() {
        Event::Frame { from: 1, payload, .. } => assert_eq!(&payload[..], b"heartbeat"),
        other => panic!("a frame waited behind buffered bulk events: got {other:?} first"),
    }
    let mut chunks = 0;
    loop {
        match inbox2.recv_timeout(WAIT).unwrap() {
            Event::BulkChunk { from: 1, tag: 5, payload, .. } => {
                assert_eq!(payload, Bytes::from(vec![chunks as u8; 1 << 20]), "chunk {chunks}");
                chunks += 1;
            }
            Event::BulkEnd { from: 1, tag: 5 } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(chunks, CHUNKS);
    assert_eq!(sender.join().unwrap(), Ok(()));
}

#[test]
fn connection_is_opened_lazily_and_kept_alive_while_idle() {
    let ca = ClusterCa::generate().unwrap();
    let mut eps = cluster(&ca, 2);
    let (e2, mut inbox2) = eps.pop().unwrap();
    let (e1, mut inbox1) = eps.pop().unwrap();
    // Addresses are known but nothing is to be sent: nobody dials.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!((e1.stats().connections, e2.stats().connections), (0, 0), "dialed without work");
    assert_eq!(inbox1.try_recv(), None);
    e1.send(2, 1, Bytes::from_static(b"first")).unwrap();
    assert!(wait_for(&mut inbox2, WAIT, |e| matches!(e, Event::Frame { .. })).is_some());
    // Idle for more than two idle timeouts (1.5 s): keep-alives hold the connection.
    let lost = wait_for(&mut inbox1, Duration::from_millis(3500), |e| matches!(e, Event::PeerDown { .. }));
    assert_eq!(lost, None, "the idle connection was lost");
    assert!(!std::iter::from_fn(|| inbox2.try_recv()).any(|e| matches!(e, Event::PeerDown { .. })));
    e1.send(2, 2, Bytes::from_static(b"second")).unwrap();
    let got = wait_for(&mut inbox2, WAIT, |e| matches!(e, Event::Frame { .. }));
    assert_eq!(
        got,
        Some(Event::Frame { from: 1, payload: Bytes::from_static(b"second"), permit: Default::default() })
    );
    assert_eq!((e1.stats().connections, e2.stats().connections), (1, 1), "the connection was replaced");
}

#[test]
fn bulk_stream_reports_failure_to_its_sender() {
    let ca = ClusterCa::generate().unwrap();
    // Unreachable: the peer never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut cfg = test_config(1, "127.0.0.1:0".parse().unwrap());
    cfg.connect_timeout = Duration::from_millis(300);
    let (e1, _i1) = start(cfg.validate().unwrap(), &identity(&ca, 1));
    e1.set_peer_addr(2, silent.local_addr().unwrap());
    let bulk = e1.open_bulk(2, 3).unwrap();
    bulk.send_chunk(Bytes::from_static(b"chunk")).unwrap();
    assert_eq!(bulk.finish(), Err(BulkError::Unreachable { to: 2, tag: 3 }));
    drop(e1);

    // Failed: the receiver goes away in the middle of the stream.
    let mut eps = cluster(&ca, 2);
    let (e2, mut inbox2) = eps.pop().unwrap();
    let (e1, _i1) = eps.pop().unwrap();
    let bulk = e1.open_bulk(2, 4).unwrap();
    bulk.send_chunk(Bytes::from(vec![1u8; 1 << 20])).unwrap();
    assert!(wait_for(&mut inbox2, WAIT, |e| matches!(e, Event::BulkChunk { tag: 4, .. })).is_some());
    e2.shutdown(Duration::from_millis(200));
    drop(inbox2);
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline && bulk.send_chunk(Bytes::from(vec![2u8; 1 << 20])).is_ok() {}
    assert!(matches!(bulk.finish(), Err(BulkError::Failed { to: 2, tag: 4, .. })));
}

#[test]
fn receiver_refuses_bulk_chunks_above_its_own_bulk_chunk_size() {
    let ca = ClusterCa::generate().unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    // The sender allows 1 MiB chunks, the receiver only 64 KiB.
    const LIMIT: usize = 64 * 1024;
    let (e1, _i1) = start(test_config(1, any).validate().unwrap(), &identity(&ca, 1));
    let mut c2 = test_config(2, any);
    c2.bulk_chunk_size = LIMIT;
    let (e2, mut i2) = start(c2.validate().unwrap(), &identity(&ca, 2));
    e1.set_peer_addr(2, e2.local_addr().unwrap());
    e2.set_peer_addr(1, e1.local_addr().unwrap());
    assert!(e1.bulk_chunk_size() > LIMIT);
    let of_tag = |t: u64| {
        move |e: &Event| match e {
            Event::BulkChunk { tag, .. } | Event::BulkEnd { tag, .. } | Event::BulkAborted { tag, .. } => {
                *tag == t
            }
            _ => false,
        }
    };

    // Positive twin: a chunk of exactly the receiver's limit is delivered.
    let bulk = e1.open_bulk(2, 1).unwrap();
    bulk.send_chunk(Bytes::from(vec![1u8; LIMIT])).unwrap();
    assert_eq!(bulk.finish(), Ok(()));
    let ev = wait_for(&mut i2, WAIT, of_tag(1));
    assert!(matches!(ev, Some(Event::BulkChunk { from: 1, tag: 1, payload, .. }) if payload.len() == LIMIT));
    assert_eq!(wait_for(&mut i2, WAIT, of_tag(1)), Some(Event::BulkEnd { from: 1, tag: 1 }));
    assert_eq!(e2.stats().protocol_errors, 0);

    // One byte more: within the sender's limit, refused by the receiver before it buffers
    // the chunk; the sender learns why.
    let bulk = e1.open_bulk(2, 2).unwrap();
    bulk.send_chunk(Bytes::from(vec![2u8; LIMIT + 1])).unwrap();
    assert_eq!(bulk.finish(), Err(BulkError::Refused { to: 2, tag: 2 }));
    assert_eq!(wait_for(&mut i2, WAIT, of_tag(2)), Some(Event::BulkAborted { from: 1, tag: 2 }));
    assert_eq!(e2.stats().protocol_errors, 1);

    // Only the stream was refused: the connection and later streams keep working.
    e1.send(2, 9, Bytes::from_static(b"still here")).unwrap();
    let got = wait_for(&mut i2, WAIT, |e| matches!(e, Event::Frame { .. }));
    assert_eq!(
        got,
        Some(Event::Frame {
            from: 1,
            payload: Bytes::from_static(b"still here"),
            permit: Default::default()
        })
    );
    let bulk = e1.open_bulk(2, 3).unwrap();
    bulk.send_chunk(Bytes::from(vec![3u8; 1000])).unwrap();
    assert_eq!(bulk.finish(), Ok(()));
    assert_eq!(e1.stats().connections, 1);
}

/// Issue 12 point 5 at the transport: a receiver that holds every frame it gets holds at
/// most its `peer_inbound_bytes` of one peer (the reader stops, QUIC flow control stops
/// the sender), control frames still arrive meanwhile (their own lane and budget), and
/// the rest of the data follows, intact and in order, once the frames are released.
#[test]
fn a_spent_peer_budget_stops_the_sender_and_the_control_lane_still_flows() {
    const MIB: usize = 1 << 20;
    const FRAMES: usize = 40;
    let ca = ClusterCa::generate().unwrap();
    let mut c1 = test_config(1, "127.0.0.1:0".parse().unwrap());
    let mut c2 = test_config(2, "127.0.0.1:0".parse().unwrap());
    for c in [&mut c1, &mut c2] {
        c.max_frame_size = MIB;
        c.peer_inbound_bytes = 4 * MIB;
        c.idle_timeout = Duration::from_secs(5);
        c.keep_alive = Duration::from_millis(500);
    }
    let (e1, _inbox1) = start(c1.validate().unwrap(), &identity(&ca, 1));
    let (e2, mut inbox2) = start(c2.validate().unwrap(), &identity(&ca, 2));
    e1.set_peer_addr(2, e2.local_addr().unwrap());
    let frame = |i: usize| Bytes::from(vec![i as u8; MIB]);
    for i in 0..FRAMES {
        e1.send(2, i as u64, frame(i)).unwrap();
    }
    // Hold every frame received (with its permit) until nothing more arrives.
    let mut held = Vec::new();
    while let Ok(ev) = inbox2.recv_timeout(Duration::from_millis(700)) {
        if let Event::Frame { payload, permit, .. } = ev {
            assert_eq!(permit.bytes(), payload.len());
            held.push((payload, permit));
        }
    }
    let s = e2.stats();
    assert!(!held.is_empty() && held.len() <= 4, "{} frames of 1 MiB held with a 4 MiB budget", held.len());
    assert_eq!(s.inbound_bytes, (held.len() * MIB) as u64, "{s:?}");
    assert_eq!(e2.peer_inbound(1).unwrap().bytes, s.inbound_bytes);
    assert!(s.inbound_waits > 0, "the reader never waited: {s:?}");
    let (queued, _) = e1.queued(2);
    assert!(queued > 0, "the sender wrote everything: flow control did not push back");
    // The control lane is not held back by the spent message-lane budget.
    for i in 0..10u8 {
        e1.send_control(2, 1000 + i as u64, Bytes::from(vec![b'h', i])).unwrap();
    }
    for i in 0..10u8 {
        match inbox2.recv_timeout(WAIT) {
            Ok(Event::Control { from: 1, payload, permit }) => {
                assert_eq!(&payload[..], &[b'h', i]);
                assert_eq!(permit.bytes(), flotilla_net::budget::MIN_CHARGE);
            }
            other => panic!("control frame {i}: got {other:?}"),
        }
    }
    assert_eq!(e2.peer_inbound(1).unwrap().control_bytes, 0, "control permits were dropped");
    // Released: the rest arrives, in order and intact.
    let mut next = held.len();
    for (i, (p, _)) in held.iter().enumerate() {
        assert_eq!(p, &frame(i));
    }
    held.clear();
    let deadline = Instant::now() + WAIT;
    while next < FRAMES && Instant::now() < deadline {
        if let Ok(Event::Frame { payload, .. }) = inbox2.recv_timeout(Duration::from_millis(200)) {
            assert_eq!(payload, frame(next), "frame {next}");
            next += 1;
        }
    }
    assert_eq!(next, FRAMES);
    assert!(e2.stats().inbound_bytes <= 4 * MIB as u64);
}

#[test]
fn a_control_frame_above_the_control_budget_is_refused_at_the_sender() {
    let ca = ClusterCa::generate().unwrap();
    let mut eps = cluster(&ca, 2);
    let (e1, _) = &mut eps[0];
    let max = NetConfig::new(1).control_inbound_bytes;
    let err = e1.send_control(2, 7, Bytes::from(vec![0; max + 1])).unwrap_err();
    assert_eq!(err, SendError::TooLarge { tag: 7, len: max + 1, max });
}

#[test]
fn a_frame_hook_takes_frames_as_they_are_read_and_declined_ones_reach_the_inbox() {
    let ca = ClusterCa::generate().unwrap();
    let mut eps = cluster(&ca, 2);
    let (tx, rx) = std_mpsc::channel::<(u64, Bytes, bool)>();
    let tx = std::sync::Mutex::new(tx);
    // Takes every frame whose first byte is even, on both lanes; declines the rest.
    eps[1].0.set_frame_hook(Some(std::sync::Arc::new(move |ev: Event| match ev {
        Event::Frame { from, payload, .. } if payload[0] % 2 == 0 => {
            tx.lock().unwrap().send((from, payload, false)).unwrap();
            None
        }
        Event::Control { from, payload, .. } if payload[0] % 2 == 0 => {
            tx.lock().unwrap().send((from, payload, true)).unwrap();
            None
        }
        other => Some(other),
    })));
    const N: u8 = 40;
    for i in 0..N {
        eps[0].0.send(2, u64::from(i), Bytes::from(vec![i; 8])).unwrap();
        eps[0].0.send_control(2, u64::from(i), Bytes::from(vec![i; 4])).unwrap();
    }
    let mut taken = Vec::new();
    while taken.len() < N as usize {
        taken.push(rx.recv_timeout(WAIT).expect("the hook got every even frame"));
    }
    assert!(taken.iter().all(|(from, p, _)| *from == 1 && p[0] % 2 == 0));
    assert_eq!(taken.iter().filter(|t| t.2).count(), N as usize / 2, "half on the control lane");
    let mut queued = Vec::new();
    let inbox = &mut eps[1].1;
    while queued.len() < N as usize {
        match inbox.recv_timeout(WAIT) {
            Ok(Event::Frame { payload, .. } | Event::Control { payload, .. }) => queued.push(payload[0]),
            Ok(_) => {}
            Err(e) => panic!("declined frames never reached the inbox: {e:?} after {queued:?}"),
        }
    }
    assert!(queued.iter().all(|b| b % 2 == 1), "only declined frames queued: {queued:?}");
    // Removed: every frame reaches the inbox again.
    eps[1].0.set_frame_hook(None);
    eps[0].0.send(2, 99, Bytes::from(vec![2u8; 8])).unwrap();
    let got = wait_for(&mut eps[1].1, WAIT, |e| matches!(e, Event::Frame { .. }));
    assert!(matches!(got, Some(Event::Frame { payload, .. }) if payload[0] == 2));
    assert!(rx.try_recv().is_err(), "the removed hook saw nothing more");
}

/// A receiver that lets nothing of a bulk stream through (it never reads, so QUIC flow
/// control grants no credit) ends the stream after `bulk_stall_timeout` (1 s here): the
/// sender's `send_chunk` or `finish` fails, and the thread feeding it is free. (It waited
/// for credit forever: a peer could keep one thread per snapshot sent to it.) A frame
/// still goes through.
#[test]
fn a_bulk_stream_the_receiver_lets_nothing_through_fails_after_the_stall_timeout() {
    let ca = ClusterCa::generate().unwrap();
    let mut c1 = test_config(1, "127.0.0.1:0".parse().unwrap());
    c1.bulk_stall_timeout = Duration::from_secs(1);
    let (e1, _i1) = start(c1.validate().unwrap(), &identity(&ca, 1));
    let (e2, mut inbox2) =
        start(test_config(2, "127.0.0.1:0".parse().unwrap()).validate().unwrap(), &identity(&ca, 2));
    e1.set_peer_addr(2, e2.local_addr().unwrap());
    e2.set_peer_addr(1, e1.local_addr().unwrap());
    e1.send(2, 0, Bytes::from_static(b"warm")).unwrap();
    assert!(wait_for(&mut inbox2, WAIT, |e| matches!(e, Event::Frame { .. })).is_some());
    // Node 2 reads nothing from now on.
    let bulk = e1.open_bulk(2, 5).unwrap();
    let (tx, rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        let mut r = Ok(());
        for i in 0..256u32 {
            r = bulk.send_chunk(Bytes::from(vec![i as u8; 1 << 20]));
            if r.is_err() {
                break;
            }
        }
        let _ = tx.send(if r.is_ok() { bulk.finish() } else { r });
    });
    let t = Instant::now();
    let got = rx.recv_timeout(Duration::from_secs(20)).expect("the sender still waits for credit after 20 s");
    assert!(matches!(got, Err(BulkError::Failed { to: 2, tag: 5, .. })), "{got:?}");
    eprintln!("stalled stream failed after {:?}", t.elapsed());
    e1.send(2, 1, Bytes::from_static(b"after")).unwrap();
    assert!(wait_for(&mut inbox2, WAIT, |e| matches!(e, Event::Frame { from: 1, .. })).is_some());
}
