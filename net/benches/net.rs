//! Throughput of batched 128-byte append messages between two endpoints over loopback
//! QUIC (mutual TLS), against the same bytes over a plain loopback TCP stream in the same
//! run. Run: `CARGO_TARGET_DIR=... cargo bench -p flotilla-net --bench net`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flotilla_net::{ClusterCa, Endpoint, Event, NetConfig, NodeIdentity, SendError};

const MSG: usize = 128;
const PER_FRAME: usize = 64;
const FRAMES: usize = 2_000;

fn ident(ca: &ClusterCa, id: u64) -> NodeIdentity {
    let p = ca.issue_node(id).unwrap();
    NodeIdentity::from_pem(&ca.pem().cert_pem, &p.cert_pem, &p.key_pem).unwrap()
}

fn bench(c: &mut Criterion) {
    let ca = ClusterCa::generate().unwrap();
    let (e1, _i1) = Endpoint::start(NetConfig::new(1).validate().unwrap(), &ident(&ca, 1)).unwrap();
    let (e2, mut i2) = Endpoint::start(NetConfig::new(2).validate().unwrap(), &ident(&ca, 2)).unwrap();
    e1.set_peer_addr(2, e2.local_addr().unwrap());
    let frame = Bytes::from(vec![7u8; MSG * PER_FRAME]);
    let mut g = c.benchmark_group("batched_128B_appends");
    g.throughput(Throughput::Bytes((FRAMES * MSG * PER_FRAME) as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    g.bench_function("quic", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                let mut sent = 0;
                let mut got = 0;
                while got < FRAMES {
                    while sent < FRAMES {
                        match e1.send(2, sent as u64, frame.clone()) {
                            Ok(()) => sent += 1,
                            Err(SendError::QueueFull { .. }) => break,
                            Err(e) => panic!("{e}"),
                        }
                    }
                    while let Some(ev) = i2.try_recv() {
                        if let Event::Frame { .. } = ev {
                            got += 1;
                        }
                    }
                    if got < FRAMES {
                        if let Ok(Event::Frame { .. }) = i2.recv_timeout(Duration::from_millis(50)) {
                            got += 1;
                        }
                    }
                }
            }
            t.elapsed()
        })
    });
    // Plain TCP: the same bytes with the same 6-byte frame headers, one reader thread.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(n) => {
                    total += n as u64;
                    if s.write_all(&[]).is_err() {
                        return total;
                    }
                }
            }
        }
    });
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut wire = vec![1u8, 4];
    wire.extend_from_slice(&((MSG * PER_FRAME) as u32).to_le_bytes());
    wire.extend_from_slice(&frame);
    g.bench_function("tcp", |b| {
        b.iter(|| {
            for _ in 0..FRAMES {
                tcp.write_all(&wire).unwrap();
            }
            tcp.flush().unwrap();
        })
    });
    g.finish();
    drop(tcp);
    let _ = reader.join();
}

criterion_group!(benches, bench);
criterion_main!(benches);
