//! The core never panics on input: seeded random messages (well-formed or not), API calls
//! and runtime notices with random fields, thrown at replicas in every role. Each run
//! checks the core's own bounds after every input. `FUZZ_SEED=<n>` replays one seed;
//! `FUZZ_SEEDS=<n>` runs more.
#![allow(clippy::unwrap_used, missing_docs)]

use bytes::Bytes;
use flotilla_engine::raft::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// A value near `around` (sometimes far away, sometimes extreme).
    fn near(&mut self, around: u64) -> u64 {
        match self.below(10) {
            0 => u64::MAX - self.below(3),
            1 => self.next(),
            _ => around.saturating_add(self.below(6)).saturating_sub(3),
        }
    }
}

fn replica(r: &mut Rng) -> Replica {
    let id = r.below(6);
    Replica::new(id, id)
}

fn conf_change(r: &mut Rng) -> ConfChange {
    let n = r.below(3) as usize;
    let changes = (0..n)
        .map(|_| SingleChange {
            kind: [ChangeKind::AddVoter, ChangeKind::AddLearner, ChangeKind::Remove][r.below(3) as usize],
            replica: replica(r),
        })
        .collect();
    let transition =
        [Transition::Auto, Transition::JointAuto, Transition::JointExplicit][r.below(3) as usize];
    ConfChange { transition, changes }
}

fn entries(r: &mut Rng, prev: u64, term: u64) -> Vec<Entry> {
    let n = r.below(4);
    let mut t = term.saturating_sub(r.below(2));
    (0..n)
        .map(|i| {
            if r.below(8) == 0 {
                t = r.near(t); // sometimes malformed
            }
            let index = prev.wrapping_add(1 + i);
            let index = if r.below(10) == 0 { r.near(index) } else { index };
            let payload = match r.below(3) {
                0 => EntryPayload::Noop,
                1 => EntryPayload::Normal(Bytes::from(vec![0u8; r.below(32) as usize])),
                _ => EntryPayload::ConfChange(conf_change(r)),
            };
            Entry { term: t, index, payload }
        })
        .collect()
}

fn random_message(r: &mut Rng, raft: &Raft<MemStorage>) -> Message {
    let term = r.near(raft.term());
    let last = raft.last_index();
    let prev_index = r.near(last);
    let body = match r.below(13) {
        0 | 1 => MessageBody::Append {
            prev_index,
            prev_term: r.near(term),
            entries: entries(r, prev_index, term),
            commit: r.near(raft.committed()),
        },
        2 => MessageBody::AppendResponse {
            index: r.near(last),
            reject: r.below(2) == 0,
            reject_hint: r.near(last),
            hint_term: r.near(term),
        },
        3 => MessageBody::Heartbeat {
            commit: r.near(raft.committed()),
            round: r.near(3),
            quiesce: r.below(4) == 0,
        },
        4 => MessageBody::HeartbeatResponse { round: r.near(3) },
        5 => MessageBody::RequestVote {
            pre_vote: r.below(2) == 0,
            last_index: r.near(last),
            last_term: r.near(term),
            transfer: r.below(4) == 0,
            commit: r.near(raft.committed()),
            commit_term: r.near(term),
        },
        6 => MessageBody::RequestVoteResponse {
            pre_vote: r.below(2) == 0,
            reject: r.below(2) == 0,
            commit: r.near(raft.committed()),
            commit_term: r.near(term),
        },
        7 => MessageBody::TimeoutNow,
        8 => MessageBody::ReadIndex { ctx: r.below(5) },
        9 => MessageBody::ReadIndexResponse { ctx: r.below(5), index: r.near(last) },
        10 => MessageBody::SendSnapshot { meta: SnapshotMeta::default() },
        11 => MessageBody::Commit { commit: r.near(raft.committed()) },
        _ => {
            let conf = if r.below(2) == 0 { raft.conf().clone() } else { ConfState::default() };
            MessageBody::SnapshotChunk(SnapshotChunk {
                meta: SnapshotMeta { index: r.near(last), term: r.near(term), conf },
                seq: r.below(3) as u32,
                offset: r.near(0),
                last: r.below(2) == 0,
                data: Bytes::from(vec![1u8; r.below(16) as usize]),
            })
        }
    };
    let from = r.below(6);
    let to = if r.below(20) == 0 { r.below(6) } else { raft.id() };
    Message { from, to, term, body }
}

fn persist(raft: &mut Raft<MemStorage>, written: &mut Vec<(u64, u64)>) {
    for _ in 0..16 {
        let Some(mut d) = ReadyDriver::next(raft) else { return };
        d.take_messages();
        let write = d.take_write();
        if let Some(last) = write.last() {
            written.push(last);
        }
        write.persist_now(raft);
        ReadyDriver::applied(raft, &d.take_committed());
    }
}

fn run(seed: u64, steps: usize) {
    let mut r = Rng(seed);
    let conf = ConfState::with_voters((1..=3).map(|i| Replica::new(i, i)));
    let mut cfg = Config::new(1 + r.below(3));
    cfg.seed = seed;
    cfg.pre_vote = r.below(2) == 0;
    cfg.check_quorum = r.below(2) == 0;
    let mut raft = Raft::new(cfg.validate().unwrap(), MemStorage::new_with_conf(conf)).unwrap();
    // Writes made durable so far: a stale durability notice repeats one of them (a notice
    // for a write never made would break the runtime's side of the contract, not input).
    let mut written: Vec<(u64, u64)> = Vec::new();
    for _ in 0..steps {
        match r.below(14) {
            0..=5 => {
                let m = random_message(&mut r, &raft);
                let _ = raft.step(m);
            }
            6 => raft.tick(),
            7 => {
                let _ = raft.propose(Bytes::from_static(b"x"));
            }
            8 => {
                let _ = raft.propose_conf_change(conf_change(&mut r));
            }
            9 => {
                let _ = raft.transfer_leader(r.below(6));
            }
            10 => {
                let _ = raft.read_index(r.below(5));
            }
            11 => {
                let at = r.near(raft.applied());
                if let Ok(meta) = raft.compact_to(at) {
                    raft.storage_mut().compact(&meta, Bytes::new());
                }
            }
            12 => {
                // Stray runtime notices with random arguments.
                match r.below(3) {
                    0 if !written.is_empty() => {
                        let (i, t) = written[r.below(written.len() as u64) as usize];
                        raft.on_persisted(i, t)
                    }
                    0 | 1 => raft.on_applied(r.near(raft.applied())),
                    _ => raft.report_snapshot(r.below(6), r.below(2) == 0),
                }
            }
            _ => persist(&mut raft, &mut written),
        }
        let s = raft.status();
        assert!(s.commit <= s.last_index, "seed {seed}: commit {} past last {}", s.commit, s.last_index);
        assert!(s.applied <= s.commit, "seed {seed}: applied {} past commit {}", s.applied, s.commit);
        assert!(
            s.first_index <= s.last_index + 1,
            "seed {seed}: first {} last {}",
            s.first_index,
            s.last_index
        );
    }
}

#[test]
fn random_inputs_never_panic() {
    let seeds: Vec<u64> = match std::env::var("FUZZ_SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => {
            let n = std::env::var("FUZZ_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(300u64);
            (0..n).collect()
        }
    };
    for seed in seeds {
        let res = std::panic::catch_unwind(|| run(seed, 2_000));
        assert!(res.is_ok(), "seed {seed} panicked; replay with FUZZ_SEED={seed}");
    }
}

/// A malformed append is refused with a typed error and changes nothing.
#[test]
fn malformed_append_is_refused() {
    let conf = ConfState::with_voters((1..=3).map(|i| Replica::new(i, i)));
    let mut raft = Raft::new(Config::new(2).validate().unwrap(), MemStorage::new_with_conf(conf)).unwrap();
    let e = |index, term| Entry { index, term, payload: EntryPayload::Noop };
    let before = raft.status();
    let gap = Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Append { prev_index: 0, prev_term: 0, entries: vec![e(1, 1), e(3, 1)], commit: 0 },
    };
    assert!(matches!(raft.step(gap), Err(StepError::Malformed { kind: "Append", from: 1, .. })));
    let future_term = Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Append { prev_index: 0, prev_term: 0, entries: vec![e(1, 2)], commit: 0 },
    };
    assert!(matches!(raft.step(future_term), Err(StepError::Malformed { .. })));
    assert_eq!(raft.status(), before);
}
