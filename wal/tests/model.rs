//! Model-based property test: random sequences of append, overwrite, compact_to,
//! remove_group, hard state and metadata, segment rewrite and recycling (maintenance),
//! clean reopen and crash-reopen, checked against an in-memory model after every step.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use flotilla_wal::fault::FaultFs;
use flotilla_wal::{HardState, Wal, WalConfig};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    /// Append `n` entries to group `g`, `back` entries before its end (0: at the end).
    Append {
        g: u64,
        back: u64,
        n: u64,
        term: u64,
        len: usize,
    },
    Compact {
        g: u64,
        ahead: u64,
    },
    Remove {
        g: u64,
    },
    Hs {
        g: u64,
        term: u64,
        vote: u64,
    },
    Meta {
        g: u64,
        len: usize,
    },
    /// Big entries appended to group 9 and compacted away at once: makes segments sparse.
    Filler {
        n: u64,
    },
    Maintain,
    Reopen,
    /// The power goes off after `ops` more i/o operations while a batch of `steps`
    /// is written, then the machine "reboots".
    Crash {
        ops: u64,
        batch: Vec<Step>,
    },
}

fn simple_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0..4u64, prop_oneof![4 => Just(0u64), 1 => 1..6u64], 1..5u64, 1..4u64, 0..2500usize)
            .prop_map(|(g, back, n, term, len)| Step::Append { g, back, n, term, len }),
        2 => (0..4u64, 0..6u64).prop_map(|(g, ahead)| Step::Compact { g, ahead }),
        1 => (0..4u64).prop_map(|g| Step::Remove { g }),
        2 => (0..4u64, 0..50u64, 0..3u64).prop_map(|(g, term, vote)| Step::Hs { g, term, vote }),
        1 => (0..4u64, 0..60usize).prop_map(|(g, len)| Step::Meta { g, len }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        14 => simple_step(),
        3 => (1..12u64).prop_map(|n| Step::Filler { n }),
        2 => Just(Step::Maintain),
        1 => Just(Step::Reopen),
        1 => (0..8u64, prop::collection::vec(simple_step(), 1..4))
            .prop_map(|(ops, batch)| Step::Crash { ops, batch }),
    ]
}

fn to_op(s: &Step, model: &Model, salt: u8) -> Option<MOp> {
    let m = |g: u64| model.groups.get(&g).cloned().unwrap_or_default();
    Some(match s {
        Step::Append {
            g,
            back,
            n,
            term,
            len,
        } => {
            let mg = m(*g);
            let first = (mg.last() + 1).saturating_sub(*back).max(mg.first);
            let es = (0..*n)
                .map(|i| (*term, vec![salt ^ (i as u8); *len]))
                .collect();
            MOp::Append(*g, first, es)
        }
        Step::Compact { g, ahead } => MOp::Compact(*g, m(*g).first + ahead),
        Step::Remove { g } => MOp::Remove(*g),
        Step::Hs { g, term, vote } => MOp::Hs(
            *g,
            HardState {
                term: *term,
                vote: *vote,
                commit: 1,
            },
        ),
        Step::Meta { g, len } => MOp::Meta(*g, vec![salt; *len]),
        _ => return None,
    })
}

fn cfg(dir: &std::path::Path) -> WalConfig {
    let mut c = config(&dir.join("wal"));
    c.rewrite_ratio = 0.6;
    c
}

fn run(steps: Vec<Step>) {
    let dir = scratch();
    let fs = Arc::new(FaultFs::new(dir.path().join("trash"), 7).unwrap());
    let mut wal = Some(Wal::open_with_fs(cfg(dir.path()), fs.clone()).unwrap());
    let mut model = Model::default();
    for (i, s) in steps.iter().enumerate() {
        let salt = i as u8;
        match s {
            Step::Maintain => {
                wal.as_ref().unwrap().maintain().unwrap();
            }
            Step::Filler { n } => {
                let w = wal.as_ref().unwrap();
                for _ in 0..*n {
                    let next = model.groups.get(&9).map(|m| m.last() + 1).unwrap_or(1);
                    let ops = [
                        MOp::Append(9, next, vec![(1, vec![9; 4000])]),
                        MOp::Compact(9, next + 1),
                    ];
                    for op in &ops {
                        model.apply(op);
                    }
                    w.write(Model::batch(&ops)).unwrap();
                }
            }
            Step::Reopen => {
                drop(wal.take());
                wal = Some(Wal::open_with_fs(cfg(dir.path()), fs.clone()).unwrap());
            }
            Step::Crash { ops, batch } => {
                let mut after = model.clone();
                let mops: Vec<MOp> = batch
                    .iter()
                    .map(|b| {
                        let op = to_op(b, &after, salt).unwrap();
                        after.apply(&op);
                        op
                    })
                    .collect();
                let w = wal.take().unwrap();
                fs.power_off_after(*ops);
                let acked = w.write(Model::batch(&mops)).is_ok();
                drop(w);
                fs.crash().unwrap();
                let w = Wal::open_with_fs(cfg(dir.path()), fs.clone()).unwrap();
                let got = Model::read(&w);
                if got == after {
                    model = after;
                } else {
                    assert!(
                        !acked,
                        "step {i}: acknowledged batch lost:\n{}",
                        diff(&got, &after)
                    );
                    assert!(
                        got == model,
                        "step {i}: partial batch after crash:\n{}",
                        diff(&got, &model)
                    );
                }
                wal = Some(w);
            }
            simple => {
                let op = to_op(simple, &model, salt).unwrap();
                model.apply(&op);
                wal.as_ref().unwrap().write(Model::batch(&[op])).unwrap();
            }
        }
        let w = wal.as_ref().unwrap();
        let got = Model::read(w);
        assert!(got == model, "step {i} ({s:?}):\n{}", diff(&got, &model));
        for (g, mg) in &model.groups {
            if let Some((t, _)) = mg.entries.last() {
                assert_eq!(w.term(*g, mg.last()), Ok(*t));
            }
            assert_eq!(w.hard_state(*g), Ok(mg.hs));
        }
    }
    drop(wal);
    let w = Wal::open_with_fs(cfg(dir.path()), fs).unwrap();
    let got = Model::read(&w);
    assert!(got == model, "final reopen:\n{}", diff(&got, &model));
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn wal_agrees_with_the_model(steps in prop::collection::vec(step(), 1..80)) {
        run(steps);
    }
}
