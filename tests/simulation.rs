//! The CI run of the deterministic cluster simulator (see `tests/sim/mod.rs`): at least
//! 2,000 seeds of 3,000 fault steps each, then a liveness phase per seed; fails with the
//! seed and a replay hint on the first broken invariant, and asserts minimum totals of
//! what the run exercised. Half the seeds run with quiescence (idle replicas are not
//! ticked, missed ticks are credited lazily, node liveness wakes them); about 40% run lease
//! reads, measured on per-node clocks that keep running while a node stalls. A third of
//! the seeds also propose through client sessions, retrying every attempt whose answer they
//! lack; the checker finds each session write applied by one entry only, and every answer
//! the result of that application.
//!
//! Commands (run from the workspace root):
//!
//! - CI: `cargo test --test simulation`
//! - replay one seed: `SIM_SEED=<n> cargo test --test simulation -- --nocapture`
//!   (add `SIM_TRACE=1` for an event trace, `SIM_STEPS=<n>` to change the step count)
//! - the long run, 100,000 seeds:
//!   `SIM_SEEDS=100000 SIM_THREADS=$(nproc) cargo test --release --test simulation -- --nocapture`
//!   (`SIM_SEED_BASE=<n>` starts the seeds elsewhere; `SIM_KEEP_GOING=1` reports every
//!   violating seed instead of stopping at the first)

mod sim;

use sim::{env_u64, run_seeds, Counters, Options};

/// Seeds in CI.
const CI_SEEDS: u64 = 2_000;
/// Fault steps (ticks) per seed in CI.
const CI_STEPS: u64 = 3_000;

#[test]
fn simulation() {
    let opts = Options::from_env(CI_STEPS);
    let seeds: Vec<u64> = match env_u64("SIM_SEED") {
        Some(s) => vec![s],
        None => {
            let base = env_u64("SIM_SEED_BASE").unwrap_or(0);
            let n = env_u64("SIM_SEEDS").unwrap_or(CI_SEEDS);
            (base..base + n).collect()
        }
    };
    let threads = env_u64("SIM_THREADS").unwrap_or(2).max(1) as usize;
    let t0 = std::time::Instant::now();
    let keep_going = std::env::var("SIM_KEEP_GOING").is_ok_and(|v| v == "1");
    let (c, violation) = run_seeds(&seeds, threads, &opts, !keep_going);
    let secs = t0.elapsed().as_secs_f64();
    println!("simulation: {} seeds x {} steps in {secs:.1}s on {threads} threads", c.seeds, opts.steps);
    print_totals(&c);
    if let Some(v) = violation {
        panic!("simulation found a violation:\n{v}");
    }
    if seeds.len() >= 1000 && opts.steps >= CI_STEPS {
        assert_minimums(&c);
    }
}

fn print_totals(c: &Counters) {
    println!("{c:#?}");
}

/// What a CI-sized run must have exercised (per 1,000 seeds, so larger runs pass too).
fn assert_minimums(c: &Counters) {
    let k = c.seeds as f64 / 1000.0;
    let min = |name: &str, got: u64, per_1000: f64| {
        assert!(
            got as f64 >= per_1000 * k,
            "the run exercised too few {name}: {got} (want >= {})",
            per_1000 * k
        );
    };
    min("elections", c.elections, 20_000.0);
    min("crashes that lost unsynced writes", c.crashes_lost_writes, 3_000.0);
    min("snapshots installed", c.snapshots_installed, 1_000.0);
    min("joint configurations entered", c.joint_entered, 1_000.0);
    min("joint configurations left", c.joint_left, 1_000.0);
    min("transfers completed", c.transfers_completed, 1_000.0);
    min("transfers aborted", c.transfers_aborted, 500.0);
    min("reads served", c.reads_served, 50_000.0);
    min("reads forwarded by followers", c.reads_forwarded, 5_000.0);
    min("lost appends reported to the leader", c.unreachable_reports, 5_000.0);
    min("proposals acknowledged", c.acked, 100_000.0);
    min("outcomes reported Dropped", c.outcomes_dropped, 10_000.0);
    min("outcomes reported Indeterminate", c.outcomes_indeterminate, 50_000.0);
    min("new replicas after compaction", c.replicas_added_after_compaction, 500.0);
    min("compactions past a joint configuration", c.compactions_past_joint, 500.0);
    min("leader crashes right after entering a joint configuration", c.leader_crash_after_joint, 50.0);
    min("leader crashes with an uncommitted single-step change", c.leader_crash_uncommitted_change, 50.0);
    min("replicas destroyed after applying their removal", c.destructions, 200.0);
    min("removal records forgotten (proposed)", c.forgets_proposed, 200.0);
    min("members crashed in the liveness phase", c.liveness_crashes, 300.0);
    min("explicit joint leaves", c.explicit_leaves, 100.0);
    min("failed snapshot streams", c.snapshot_streams_failed, 100.0);
    min("partitions", c.partitions, 5_000.0);
    min("replicas quiesced", c.quiesces, 30_000.0);
    min("quiesced replicas woken by node liveness", c.liveness_wakes, 200.0);
    min("lease reads", c.lease_reads, 10_000.0);
    min("heartbeat rounds sent only to a quorum for reads", c.quorum_read_rounds, 10_000.0);
    min("lease reads whose lease ran out before apply", c.lease_reads_expired, 50.0);
    min("lease reads under a lease kept through a wake", c.lease_reads_after_wake, 800.0);
    min("proposals refused past max_uncommitted_bytes", c.proposals_refused_uncommitted, 10_000.0);
    min("reads refused or dropped past max_pending_reads", c.reads_refused_full, 5_000.0);
    min("reads given up at a follower (abandon_read)", c.reads_abandoned, 1_000.0);
    min("node stalls", c.stalls, 4_000.0);
    min("reads sent to a stalled node", c.reads_during_stall, 300.0);
    min("session writes applied (exactly once each)", c.session_writes_applied, 20_000.0);
    min("session writes retried", c.session_retries, 10_000.0);
    min(
        "session writes whose first attempt committed after a retry",
        c.session_first_won_after_retry,
        2_000.0,
    );
    min("retries answered with the first application's result", c.session_duplicate_answers, 2_000.0);
}

/// Seeds that long runs in fresh ranges found (each a check stricter than the property it
/// stands for, refined in `tests/sim/mod.rs`) replay clean under the default options. A
/// seed's schedule depends on every random draw of the simulator, so a seed belongs here
/// only while the simulator draws as it did when the seed was found (earlier seeds,
/// 60034022 and others, were found before the draws changed and are not listed).
#[test]
fn seeds_found_in_long_runs_replay_clean() {
    let opts = Options::from_env(CI_STEPS);
    // 80098661: removal safety, a joint configuration committed after the removal.
    let found = [80_098_661];
    let (_, violation) = run_seeds(&found, 2, &opts, true);
    if let Some(v) = violation {
        panic!("a seed found in a long run fails again:\n{v}");
    }
}
