//! Heartbeat cost: the CPU time of one tick's heartbeats for 100,000 groups led on node 1
//! with replicas on nodes 2 and 3, coalesced per node pair (engine/src/transport/
//! coalescer.rs, codec.rs), through the same calls the runtime makes.
//!
//! One tick, in phases (criterion group `heartbeat_tick_100k_groups`, times are the
//! thread's CPU time, from `/proc/thread-self/schedstat`, wall time elsewhere):
//!
//! - `leader`: node 1 pushes the 200,000 `Heartbeat` messages its groups emit into its
//!   outbox (one per group per follower, none skipped: no group appended in the interval,
//!   the worst case), flushes ONE batch per destination node and encodes both into frame
//!   payloads (the workers' `Outbox`, the transport's `encode_batch`);
//! - `follower`: node 2 decodes its one frame, shares it out to its 2 workers by group
//!   (`split_inbound`, as the network thread does), answers each heartbeat entry
//!   (`HeartbeatResponse`), flushes ONE reply batch and encodes it;
//! - `leader_acks`: node 1 decodes both reply frames and shares the 200,000 answers out to
//!   its 2 workers as compact entries (`split_inbound`: never expanded into messages);
//! - `cluster`: all of it, both followers included: the whole cluster's CPU per tick.
//!
//! Stepping the Raft groups (building the messages, stepping each entry with
//! `Raft::step_heartbeat` / `Raft::step_heartbeat_response`) and the QUIC transport (about
//! 1 MB per frame) are not included in these.
//!
//! A second group, `raft_step_answers_10k_leaders`, measures the core's side of taking
//! the answers in: 10,000 leaders (in memory, every follower up to date) each stepping ten
//! rounds of answers of its 2 followers (200,000 answers), `narrow` through `Raft::step_heartbeat_response` (what
//! the runtime does) against `message`, the same answers as whole `Message`s through
//! `Raft::step` (what it did), in the same run.
//!
//! Run: `CARGO_TARGET_DIR=... cargo bench -p flotilla-engine --bench heartbeat`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use flotilla_engine::raft::message::{Message, MessageBody};
use flotilla_engine::raft::{ConfState, Config, MemStorage, Raft, Replica, Role};
use flotilla_engine::transport::coalescer::split_inbound;
use flotilla_engine::transport::codec::{decode_batch, encode_batch};
use flotilla_engine::transport::{DecodeLimits, Outbox, WireItem};

const GROUPS: u64 = 100_000;
const FOLLOWERS: [u64; 2] = [2, 3];
/// Workers per node (the runtime's default on this 2-core machine: one per core).
const WORKERS: usize = 2;

/// The worker owning `group` among `n` (the runtime's `route`, which is private to it).
fn route(group: u64, n: usize) -> usize {
    let mut z = group.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % n.max(1) as u64) as usize
}

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

/// A follower's answer to one coalesced heartbeat frame: decode, share out to the workers,
/// answer each entry, encode.
fn follower_answer(out: &mut Outbox, frame: &Bytes) -> Bytes {
    let items = decode_batch(frame, DecodeLimits::default()).unwrap();
    let mut n = 0;
    for part in split_inbound(items, WORKERS, |g| route(g, WORKERS)) {
        for h in part.heartbeats {
            let body = MessageBody::HeartbeatResponse { round: h.round };
            out.push(1, h.group, Message { from: h.to, to: h.from, term: h.term, body });
            n += 1;
        }
    }
    assert_eq!(n, GROUPS);
    let batches = out.flush();
    assert_eq!(batches.len(), 1, "one reply batch");
    encode_batch(&batches[0].1).unwrap()
}

/// The leader takes the answers in: decode every reply frame and share its answers out to
/// the workers, compact.
fn leader_acks(replies: &[Bytes]) -> u64 {
    let mut n = 0;
    for r in replies {
        let items = decode_batch(r, DecodeLimits::default()).unwrap();
        for part in split_inbound(items, WORKERS, |g| route(g, WORKERS)) {
            n += criterion::black_box(part.acks).len();
        }
    }
    assert_eq!(n as u64, GROUPS * FOLLOWERS.len() as u64);
    n as u64
}

/// Persists and applies one `Ready`, as a runtime does.
fn drive(r: &mut Raft<MemStorage>) {
    let rd = r.ready();
    if let Some(hs) = rd.hard_state {
        r.storage_mut().set_hard_state(hs);
    }
    if let Some(last) = rd.entries.last() {
        r.storage_mut().append(&rd.entries);
        r.on_persisted(last.index, last.term);
    }
    if let Some(last) = rd.committed_entries.last() {
        r.on_applied(last.index);
    }
}

/// Leader replica 1 of {1, 2, 3} in term 1, both followers up to date.
fn leader(seed: u64) -> Raft<MemStorage> {
    let conf = ConfState::with_voters((1..=3).map(|i| Replica::new(i, i)));
    let mut cfg = Config::new(1);
    cfg.seed = seed;
    let mut r = Raft::new(cfg.validate().unwrap(), MemStorage::new_with_conf(conf)).unwrap();
    r.campaign_now();
    drive(&mut r);
    let body = MessageBody::RequestVoteResponse { pre_vote: false, reject: false, commit: 0, commit_term: 0 };
    r.step(Message { from: 2, to: 1, term: r.term(), body }).unwrap();
    drive(&mut r);
    for from in FOLLOWERS {
        let index = r.last_index();
        let body = MessageBody::AppendResponse { index, reject: false, reject_hint: 0, hint_term: 0 };
        r.step(Message { from, to: 1, term: r.term(), body }).unwrap();
    }
    drive(&mut r);
    assert!(r.committed() == r.last_index() && r.role() == Role::Leader);
    r
}

fn bench_raft_step(c: &mut Criterion) {
    let mut leaders: Vec<Raft<MemStorage>> = (1..=10_000).map(leader).collect();
    let mut round = 0;
    let mut g = c.benchmark_group("raft_step_answers_10k_leaders");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    for narrow in [true, false] {
        g.bench_function(if narrow { "narrow" } else { "message" }, |b| {
            b.iter_custom(|iters| {
                cpu(iters, || {
                    // 10 rounds: 200,000 answers, as many as one tick of 100,000 groups.
                    for _ in 0..10 {
                        round += 1;
                        for r in &mut leaders {
                            let term = r.term();
                            for from in FOLLOWERS {
                                if narrow {
                                    r.step_heartbeat_response(from, 1, term, round).unwrap();
                                } else {
                                    let body = MessageBody::HeartbeatResponse { round };
                                    r.step(Message { from, to: 1, term, body }).unwrap();
                                }
                            }
                        }
                    }
                })
            })
        });
    }
    g.finish();
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

criterion_group!(benches, bench, bench_raft_step);
criterion_main!(benches);
