//! The cost of measuring per-group load (issue 15 point 1): the accounting the worker does
//! per proposal appended (a counter add on the replica's meter, rolled to the turn's
//! clock), per worker turn (one clock reading) and per applied batch (the apply thread's
//! timer and the count), each with measuring on and, as the reference in the same run,
//! off (`EngineConfig::measure_load = false`: an early return).
//!
//! Run: `CARGO_TARGET_DIR=... cargo bench --bench load`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use flotilla_engine::api::EngineConfig;
use flotilla_engine::runtime::LoadProbe;

fn probe(measure: bool) -> LoadProbe {
    let mut c = EngineConfig::new(1, "/nonexistent");
    c.measure_load = measure;
    // A short interval, so the timed loop also crosses interval ends (folds).
    c.load_fold_interval = Duration::from_millis(10);
    LoadProbe::new(&c)
}

fn main() {
    let mut cr = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut g = cr.benchmark_group("load");
    for (name, measure) in [("on", true), ("off", false)] {
        let mut p = probe(measure);
        // 64 proposals per turn, as a busy worker's turn carries many: the per-proposal
        // cost with the turn's clock reading amortized over them.
        g.bench_function(format!("proposal_{name}"), |b| {
            let mut i = 0u32;
            b.iter(|| {
                i = i.wrapping_add(1);
                if i % 64 == 0 {
                    p.turn();
                }
                p.proposal();
            })
        });
        g.bench_function(format!("turn_{name}"), |b| b.iter(|| p.turn()));
        g.bench_function(format!("applied_batch_{name}"), |b| b.iter(|| p.applied_batch(black_box(1024))));
        black_box(p.proposals_per_sec());
    }
    g.finish();
    cr.final_summary();
}
