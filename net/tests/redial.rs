//! Redial backoff after losing a live connection: a fake peer that admits every connection
//! (valid certificate, hello acknowledged) and closes it at once must be redialed on the
//! exponential backoff schedule, not in a tight loop.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use flotilla_net::frame::{parse_header, HelloReply, HEADER_LEN};
use flotilla_net::{ClusterCa, Event};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A QUIC server presenting node `id`'s certificate of `ca`, as a real node would.
fn fake_server_config(ca: &ClusterCa, id: u64) -> quinn::ServerConfig {
    let node = ca.issue_node(id).unwrap();
    let chain =
        CertificateDer::pem_slice_iter(node.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_slice(node.key_pem.as_bytes()).unwrap();
    let provider = flotilla_net::tls::crypto_provider();
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    tls.alpn_protocols = vec![flotilla_net::tls::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    quinn::ServerConfig::with_crypto(Arc::new(quic))
}

/// Admits one connection (reads the hello, acknowledges it), waits for the dialer's first
/// message-lane bytes (so the dialer did install the connection), then closes it.
async fn admit_then_close(inc: quinn::Incoming) -> Option<()> {
    let conn = inc.await.ok()?;
    let (mut send, mut recv) = conn.accept_bi().await.ok()?;
    let mut h = [0u8; HEADER_LEN];
    recv.read_exact(&mut h).await.ok()?;
    let header = parse_header(&h, 64).ok()?;
    let mut hello = vec![0u8; header.len];
    recv.read_exact(&mut hello).await.ok()?;
    send.write_all(&HelloReply::Ack { incarnation: 7 }.encode()).await.ok()?;
    let _ = tokio::time::timeout(Duration::from_millis(500), recv.read_chunk(usize::MAX, true)).await;
    conn.close(0u32.into(), b"go away");
    Some(())
}

/// Most dials in `window` from the first one, if each redial waits at least the lower
/// bound (half) of its backoff step: `initial`, doubling up to `max`.
fn schedule_bound(initial: Duration, max: Duration, window: Duration) -> usize {
    let (mut step, mut elapsed, mut dials) = (initial, Duration::ZERO, 1);
    loop {
        elapsed += step / 2;
        if elapsed > window {
            return dials;
        }
        dials += 1;
        step = (step * 2).min(max);
    }
}

#[test]
fn peer_that_admits_and_closes_at_once_is_redialed_with_backoff() {
    let ca = ClusterCa::generate().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let fake_addr = {
        let _guard = rt.enter();
        let ep = quinn::Endpoint::server(fake_server_config(&ca, 2), "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = ep.local_addr().unwrap();
        let count = accepted.clone();
        rt.spawn(async move {
            while let Some(inc) = ep.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(admit_then_close(inc));
            }
        });
        addr
    };

    let (initial, max) = (Duration::from_millis(40), Duration::from_millis(400));
    let mut cfg = test_config(1, "127.0.0.1:0".parse().unwrap());
    cfg.backoff_initial = initial;
    cfg.backoff_max = max;
    let (e1, mut inbox1) = start(cfg.validate().unwrap(), &identity(&ca, 1));
    e1.set_peer_addr(2, fake_addr);
    // Keep work queued for node 2 the whole time, so node 1 always wants a connection.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut tag = 0;
            while !stop.load(Ordering::SeqCst) {
                let _ = e1.send(2, tag, Bytes::from_static(b"are you there"));
                tag += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            e1
        })
    };

    let deadline = Instant::now() + Duration::from_secs(10);
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "node 1 never dialed");
        std::thread::sleep(Duration::from_millis(1));
    }
    let window = Duration::from_secs(2);
    std::thread::sleep(window);
    let dials = accepted.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let e1 = sender.join().unwrap();

    // The connections were live: node 1 saw them come up (and go down).
    let mut ups = 0;
    while let Some(e) = inbox1.try_recv() {
        if matches!(e, Event::PeerUp { node: 2, incarnation: 7 }) {
            ups += 1;
        }
    }
    // One more than the schedule allows for the first dial observed a moment late.
    let bound = schedule_bound(initial, max, window) + 1;
    eprintln!("{dials} dials in {window:?} (schedule bound {bound}), {ups} peer-ups");
    assert!(ups >= 3, "the fake peer's connections were not live or not redialed: {ups} peer-ups");
    assert!(dials <= bound, "{dials} dials in {window:?}: a tight redial loop (bound {bound})");
    assert!(dials >= 3, "no redial after the losses: {dials} dials");
    drop(e1);
    rt.shutdown_timeout(Duration::from_secs(1));
}
