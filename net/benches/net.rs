//! Throughput of batched 128-byte append messages between two endpoints over loopback
//! QUIC (mutual TLS), against the same bytes over a plain loopback TCP stream in the same
//! run.
//!
//! Both sides measure the same thing, end to end: the sender hands `FRAMES` frames of
//! `PER_FRAME` messages (each frame one batch, as the engine sends them) to its link, and
//! the clock stops when a receiver thread has received and verified every message of every
//! frame, in order. Each 128-byte message carries its sequence number at its head, the
//! complement at its tail, and a filler; the receiver checks the frame length, both
//! markers, and a sum over all sixteen words of the message, so a lost, reordered,
//! truncated or corrupted message fails the run.
//!
//! - QUIC: `Endpoint::send` of each frame (a `Bytes`, queued without copying) from node 1
//!   to node 2; node 2's receiver thread reads `Event::Frame`s from its `Inbox`.
//! - TCP: the same frames, with the same 6-byte frame headers, through a 1 MiB `BufWriter`
//!   over a loopback `TcpStream` (`TCP_NODELAY`); the receiver thread parses the headers
//!   from a 1 MiB `BufReader` and verifies in place.
//!
//! Run: `CARGO_TARGET_DIR=... cargo bench -p flotilla-net --bench net` (criterion, then
//! the report: messages/s, MB/s and QUIC/TCP ratio, median of interleaved rounds).
//! `NET_QUICK=1` runs the report alone; `NET_ROUNDS` (default 5) and `NET_SECS` (seconds
//! per measurement, default 2) tune it; `NET_PROFILE=quic|tcp` runs one side alone for
//! `NET_SECS` (for perf), or for exactly `NET_ITERS` iterations after a warm-up one (fixed
//! work, for `perf stat` counts), with `NET_UDP_PAYLOAD` the QUIC datagram size (default
//! 65527). `NET_THREADS` sets the endpoints' runtime threads (default 1).
#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{Criterion, Throughput};
use flotilla_net::{ClusterCa, Endpoint, Event, NetConfig, NodeIdentity, SendError};

/// Bytes per append message.
const MSG: usize = 128;
/// Messages per frame (one batch).
const PER_FRAME: usize = 64;
/// Frames per iteration (16 MiB of messages).
const FRAMES: usize = 2_000;
/// Filler of a message's middle fourteen words.
const FILL: u64 = 0x5A5A_5A5A_5A5A_5A5A;
/// What the sixteen words of every message sum to: seq + !seq = u64::MAX, plus the filler.
const SUM: u64 = u64::MAX.wrapping_add(FILL.wrapping_mul((MSG / 8 - 2) as u64));

fn frames() -> Vec<Bytes> {
    (0..FRAMES)
        .map(|f| {
            let mut b = BytesMut::with_capacity(MSG * PER_FRAME);
            for m in 0..PER_FRAME {
                let seq = (f * PER_FRAME + m) as u64;
                b.put_u64_le(seq);
                for _ in 0..MSG / 8 - 2 {
                    b.put_u64_le(FILL);
                }
                b.put_u64_le(!seq);
            }
            b.freeze()
        })
        .collect()
}

/// Checks frame number `f` of an iteration: its length and every message in it.
fn verify(frame: &[u8], f: usize) {
    assert_eq!(frame.len(), MSG * PER_FRAME, "frame {f}: wrong length");
    for (m, msg) in frame.chunks_exact(MSG).enumerate() {
        let seq = (f * PER_FRAME + m) as u64;
        let mut sum = 0u64;
        for w in msg.chunks_exact(8) {
            sum = sum.wrapping_add(u64::from_le_bytes(w.try_into().unwrap()));
        }
        let head = u64::from_le_bytes(msg[..8].try_into().unwrap());
        let tail = u64::from_le_bytes(msg[MSG - 8..].try_into().unwrap());
        assert!(head == seq && tail == !seq && sum == SUM, "frame {f} message {m}: corrupt or out of order");
    }
}

/// A sender and a receiver thread that verifies and reports each complete iteration.
trait Link {
    /// Sends every frame, then waits until the receiver verified them all.
    fn iteration(&mut self, frames: &[Bytes]);
}

fn ident(ca: &ClusterCa, id: u64) -> NodeIdentity {
    let p = ca.issue_node(id).unwrap();
    NodeIdentity::from_pem(&ca.pem().cert_pem, &p.cert_pem, &p.key_pem).unwrap()
}

struct Quic {
    e1: Endpoint,
    _e2: Endpoint,
    done: mpsc::Receiver<()>,
}

/// The largest UDP payload loopback carries (its MTU is 64 KiB), as TCP uses it too.
const LOOPBACK_UDP_PAYLOAD: u16 = 65527;

impl Quic {
    /// Two endpoints with default settings but `max_udp_payload`.
    fn new(max_udp_payload: u16) -> Quic {
        let ca = ClusterCa::generate().unwrap();
        let cfg = |id| {
            let mut c = NetConfig::new(id);
            c.max_udp_payload = max_udp_payload;
            c.threads = env("NET_THREADS", 1);
            c.validate().unwrap()
        };
        let (e1, _i1) = Endpoint::start(cfg(1), &ident(&ca, 1)).unwrap();
        let (e2, mut i2) = Endpoint::start(cfg(2), &ident(&ca, 2)).unwrap();
        e1.set_peer_addr(2, e2.local_addr().unwrap());
        let (tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            let mut f = 0;
            loop {
                match i2.recv_timeout(Duration::from_secs(30)) {
                    Ok(Event::Frame { payload, .. }) => {
                        verify(&payload, f);
                        f += 1;
                        if f == FRAMES {
                            f = 0;
                            if tx.send(()).is_err() {
                                return;
                            }
                        }
                    }
                    Ok(Event::PeerUp { .. }) => {}
                    Ok(Event::PeerDown { .. }) | Err(_) => return,
                    Ok(e) => panic!("unexpected event {e:?}"),
                }
            }
        });
        Quic { e1, _e2: e2, done }
    }
}

impl Link for Quic {
    fn iteration(&mut self, frames: &[Bytes]) {
        for (i, f) in frames.iter().enumerate() {
            loop {
                match self.e1.send(2, i as u64, f.clone()) {
                    Ok(()) => break,
                    Err(SendError::QueueFull { .. }) => std::thread::sleep(Duration::from_micros(50)),
                    Err(e) => panic!("{e}"),
                }
            }
        }
        self.done.recv().unwrap();
    }
}

struct Tcp {
    w: BufWriter<TcpStream>,
    done: mpsc::Receiver<()>,
}

impl Tcp {
    fn new() -> Tcp {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::with_capacity(1 << 20, s);
            let mut payload = vec![0u8; MSG * PER_FRAME];
            let mut f = 0;
            loop {
                let mut h = [0u8; 6];
                if r.read_exact(&mut h).is_err() {
                    return;
                }
                let len = u32::from_le_bytes([h[2], h[3], h[4], h[5]]) as usize;
                assert!(h[0] == 1 && h[1] == 4 && len == payload.len(), "bad TCP frame header");
                r.read_exact(&mut payload).unwrap();
                verify(&payload, f);
                f += 1;
                if f == FRAMES {
                    f = 0;
                    if tx.send(()).is_err() {
                        return;
                    }
                }
            }
        });
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        Tcp { w: BufWriter::with_capacity(1 << 20, s), done }
    }
}

impl Link for Tcp {
    fn iteration(&mut self, frames: &[Bytes]) {
        for f in frames {
            let l = (f.len() as u32).to_le_bytes();
            self.w.write_all(&[1, 4, l[0], l[1], l[2], l[3]]).unwrap();
            self.w.write_all(f).unwrap();
        }
        self.w.flush().unwrap();
        self.done.recv().unwrap();
    }
}

fn bench(c: &mut Criterion, quic: &mut Quic, tcp: &mut Tcp, frames: &[Bytes]) {
    let mut g = c.benchmark_group("batched_128B_appends");
    g.throughput(Throughput::Bytes((FRAMES * MSG * PER_FRAME) as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    g.bench_function("quic", |b| b.iter(|| quic.iteration(frames)));
    g.bench_function("tcp", |b| b.iter(|| tcp.iteration(frames)));
    g.finish();
}

/// CPU time (user + system) this process has used so far, from `/proc/self/stat`
/// (Linux; `None` elsewhere), in seconds.
fn cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split(' ').skip(11);
    let ticks: f64 = f.next()?.parse::<f64>().ok()? + f.next()?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// One measurement: messages per second, and CPU nanoseconds per message (all threads of
/// the process: sender, both endpoints' runtimes or the kernel's TCP work, the receiver).
#[derive(Clone, Copy)]
struct Rate {
    msgs: f64,
    cpu_ns: f64,
}

/// Runs iterations for about `secs`, or exactly `iters` of them if given (after one
/// warm-up iteration either way).
fn measure(link: &mut dyn Link, frames: &[Bytes], secs: f64, iters: Option<u64>) -> Rate {
    link.iteration(frames);
    let cpu0 = cpu_secs().unwrap_or(0.0);
    let start = Instant::now();
    let mut n = 0u64;
    while match iters {
        Some(i) => n < i,
        None => n == 0 || start.elapsed().as_secs_f64() < secs,
    } {
        link.iteration(frames);
        n += 1;
    }
    let msgs = (n * (FRAMES * PER_FRAME) as u64) as f64;
    let cpu = cpu_secs().unwrap_or(0.0) - cpu0;
    Rate { msgs: msgs / start.elapsed().as_secs_f64(), cpu_ns: cpu * 1e9 / msgs }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn report(quic: &mut Quic, tcp: &mut Tcp, frames: &[Bytes], rounds: usize, secs: f64) {
    let mut lan = Quic::new(NetConfig::new(1).max_udp_payload);
    println!(
        "\nnet report: {MSG}-byte messages, {PER_FRAME} per frame, {FRAMES} frames per iteration, \
         received and verified end to end; {rounds} interleaved round(s) of {secs} s per link; \
         messages/s (MB/s) [CPU ns per message, whole process]"
    );
    println!(
        "{:>6} {:>28} {:>28} {:>8} | {:>28} {:>8}",
        "round", "QUIC", "TCP", "ratio", "QUIC, 1452 B datagrams", "ratio"
    );
    let cell = |r: Rate| format!("{:.0} ({:.0}) [{:.0}]", r.msgs, r.msgs * MSG as f64 / 1e6, r.cpu_ns);
    let mut runs: [Vec<Rate>; 3] = Default::default();
    for round in 0..rounds.max(1) {
        let q = measure(quic, frames, secs, None);
        let t = measure(tcp, frames, secs, None);
        let l = measure(&mut lan, frames, secs, None);
        println!(
            "{round:>6} {:>28} {:>28} {:>7.1}% | {:>28} {:>7.1}%",
            cell(q),
            cell(t),
            100.0 * q.msgs / t.msgs,
            cell(l),
            100.0 * l.msgs / t.msgs
        );
        for (v, x) in runs.iter_mut().zip([q, t, l]) {
            v.push(x);
        }
    }
    let ratio = |a: usize| median(runs[a].iter().zip(&runs[1]).map(|(x, t)| x.msgs / t.msgs).collect());
    let med = |a: usize| Rate {
        msgs: median(runs[a].iter().map(|r| r.msgs).collect()),
        cpu_ns: median(runs[a].iter().map(|r| r.cpu_ns).collect()),
    };
    println!(
        "median {:>28} {:>28} {:>7.1}% | {:>28} {:>7.1}%",
        cell(med(0)),
        cell(med(1)),
        100.0 * ratio(0),
        cell(med(2)),
        100.0 * ratio(2)
    );
    println!(
        "ratio: QUIC / TCP messages/s, median of the rounds' ratios (bar 50%, goal 80%). QUIC: mutual \
         TLS 1.3 (AES-128-GCM), max_udp_payload {LOOPBACK_UDP_PAYLOAD} (the loopback MTU, which TCP uses \
         too); the last columns: the default 1452 (LAN-safe). MB = 10^6 bytes."
    );
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let rounds: usize = env("NET_ROUNDS", 5);
    let secs: f64 = env("NET_SECS", 2.0);
    let frames = frames();
    let args: Vec<String> = std::env::args().collect();
    let list = args.iter().any(|a| a == "--list");
    if list {
        println!("batched_128B_appends/quic: benchmark\nbatched_128B_appends/tcp: benchmark");
        return;
    }
    if let Ok(side) = std::env::var("NET_PROFILE") {
        let mut link: Box<dyn Link> = match side.as_str() {
            "quic" => Box::new(Quic::new(env("NET_UDP_PAYLOAD", LOOPBACK_UDP_PAYLOAD))),
            "tcp" => Box::new(Tcp::new()),
            _ => panic!("NET_PROFILE: quic or tcp"),
        };
        let r = measure(
            link.as_mut(),
            &frames,
            secs,
            std::env::var("NET_ITERS").ok().and_then(|v| v.parse().ok()),
        );
        println!(
            "{side}: {:.0} messages/s, {:.0} MB/s, {:.0} CPU ns per message",
            r.msgs,
            r.msgs * MSG as f64 / 1e6,
            r.cpu_ns
        );
        return;
    }
    let mut quic = Quic::new(LOOPBACK_UDP_PAYLOAD);
    let mut tcp = Tcp::new();
    let bench_run = args.iter().any(|a| a == "--bench");
    if std::env::var("NET_QUICK").is_ok_and(|v| v == "1") {
        report(&mut quic, &mut tcp, &frames, rounds, secs);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &mut quic, &mut tcp, &frames);
    c.final_summary();
    // A benchmark run (not `cargo test --benches`) also prints the report, which criterion
    // cannot; `NET_REPORT=0` skips it.
    if bench_run && std::env::var("NET_REPORT").map_or(true, |v| v != "0") {
        report(&mut quic, &mut tcp, &frames, rounds, secs);
    }
}
