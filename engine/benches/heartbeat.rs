//! Heartbeat cost: the CPU time of one tick's heartbeats for 100,000 groups led on node 1
//! with replicas on nodes 2 and 3, coalesced per node pair (engine/src/transport/
//! coalescer.rs, codec.rs).
//!
//! One tick, in phases (criterion group `heartbeat_tick_100k_groups`, times are the
//! thread's CPU time, from `/proc/thread-self/schedstat`, wall time elsewhere):
//!
//! - `leader`: node 1 ticks its outbox, pushes the 200,000 `Heartbeat` messages its groups
//!   emit (one per group per follower, none skipped: no group appended in the interval,
//!   the worst case), flushes ONE batch per destination node and encodes both into frame
//!   payloads;
//! - `follower`: node 2 decodes its one frame, expands it into 100,000 per-group
//!   heartbeats, answers each (`HeartbeatResponse`), flushes ONE reply batch and encodes it;
//! - `leader_acks`: node 1 decodes both reply frames and expands the 200,000 answers;
//! - `cluster`: all of it, both followers included: the whole cluster's CPU per tick.
//!
//! Stepping the Raft groups (building the messages, applying the answers) and the QUIC
//! transport (about 1 MB per frame) are not included.
//!
//! Run: `CARGO_TARGET_DIR=... cargo bench -p flotilla-engine --bench heartbeat`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use flotilla_engine::raft::message::{Message, MessageBody};
use flotilla_engine::transport::coalescer::expand;
use flotilla_engine::transport::codec::{decode_batch, encode_batch};
use flotilla_engine::transport::{DecodeLimits, Outbox, WireItem};

const GROUPS: u64 = 100_000;
const FOLLOWERS: [u64; 2] = [2, 3];

/// CPU time of this thread so far, or wall time where the kernel does not report it.
fn thread_time() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .unwrap_or_else(|| START.get_or_init(Instant::now).elapsed())
}

/// Times `f` over `iters` runs, in CPU time.
fn cpu<T>(iters: u64, mut f: impl FnMut() -> T) -> Duration {
    let t = thread_time();
    for _ in 0..iters {
        criterion::black_box(f());
    }
    thread_time() - t
}

/// The leader's tick: one heartbeat per group per follower, coalesced, encoded.
fn leader_tick(out: &mut Outbox, round: u64) -> Vec<(u64, Bytes)> {
    for g in 1..=GROUPS {
        for f in FOLLOWERS {
            let body = MessageBody::Heartbeat { commit: 1000 + g, round, quiesce: false };
            out.push(f, g, Message { from: 1, to: f, term: 7, body });
        }
    }
    let batches = out.flush();
    assert_eq!(batches.len(), FOLLOWERS.len(), "one heartbeat batch per destination node");
    batches.into_iter().map(|(to, items)| (to, encode_batch(&items).unwrap())).collect()
}

/// A follower's answer to one coalesced heartbeat frame: decode, expand, answer, encode.
fn follower_answer(out: &mut Outbox, frame: &Bytes) -> Bytes {
    let items = decode_batch(frame, DecodeLimits::default()).unwrap();
    let mut n = 0;
    for (g, m) in expand(items) {
        if let MessageBody::Heartbeat { round, .. } = m.body {
            let body = MessageBody::HeartbeatResponse { round };
            out.push(1, g, Message { from: m.to, to: m.from, term: m.term, body });
            n += 1;
        }
    }
    assert_eq!(n, GROUPS);
    let batches = out.flush();
    assert_eq!(batches.len(), 1, "one reply batch");
    encode_batch(&batches[0].1).unwrap()
}

/// The leader takes the answers in: decode and expand every reply frame.
fn leader_acks(replies: &[Bytes]) -> u64 {
    let mut n = 0;
    for r in replies {
        let items = decode_batch(r, DecodeLimits::default()).unwrap();
        n += expand(items).filter(|(_, m)| matches!(m.body, MessageBody::HeartbeatResponse { .. })).count();
    }
    assert_eq!(n as u64, GROUPS * FOLLOWERS.len() as u64);
    n as u64
}

fn bench(c: &mut Criterion) {
    // Each node keeps its outbox from tick to tick, as the runtime does.
    let mut out = Outbox::new();
    let mut outs = [Outbox::new(), Outbox::new()];
    let mut round = 0;
    let frames = leader_tick(&mut out, round);
    let replies: Vec<Bytes> = frames.iter().zip(&mut outs).map(|((_, f), o)| follower_answer(o, f)).collect();
    let items = decode_batch(&frames[0].1, DecodeLimits::default()).unwrap();
    assert!(matches!(&items[..], [WireItem::Heartbeats(h)] if h.len() as u64 == GROUPS));
    println!(
        "heartbeat frame per node pair: {} bytes ({:.1} B/group); reply frame: {} bytes",
        frames[0].1.len(),
        frames[0].1.len() as f64 / GROUPS as f64,
        replies[0].len()
    );
    let mut g = c.benchmark_group("heartbeat_tick_100k_groups");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.bench_function("leader", |b| {
        b.iter_custom(|iters| {
            cpu(iters, || {
                round += 1;
                leader_tick(&mut out, round)
            })
        })
    });
    g.bench_function("follower", |b| {
        b.iter_custom(|iters| cpu(iters, || follower_answer(&mut outs[0], &frames[0].1)))
    });
    g.bench_function("leader_acks", |b| b.iter_custom(|iters| cpu(iters, || leader_acks(&replies))));
    g.bench_function("cluster", |b| {
        b.iter_custom(|iters| {
            cpu(iters, || {
                round += 1;
                let frames = leader_tick(&mut out, round);
                let replies: Vec<Bytes> =
                    frames.iter().zip(&mut outs).map(|((_, f), o)| follower_answer(o, f)).collect();
                leader_acks(&replies)
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
