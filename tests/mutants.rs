//! Shows the simulator's checker works: each deliberately broken Raft rule (the core's
//! test-only `mutants` feature, `Config::mutant`) runs on every replica, and the simulator
//! must report a violation within the CI seed budget. Stops at the first violating seed and
//! prints how many seeds it took.
//!
//! Run: `cargo test --features mutants --test mutants -- --nocapture`
//! (`SIM_SEEDS=<n>` changes the budget, `SIM_STEPS=<n>` the steps per seed).
#![cfg(feature = "mutants")]

mod sim;

use flotilla::raft::Mutant;
use sim::{env_u64, run_one, Options};

/// Seeds a mutant may take at most (the CI budget of the simulation run).
const BUDGET: u64 = 2_000;

fn caught(mutant: Mutant) {
    let mut opts = Options::from_env(3_000);
    opts.mutant = Some(mutant);
    let budget = env_u64("SIM_SEEDS").unwrap_or(BUDGET);
    let t0 = std::time::Instant::now();
    for (k, seed) in (0..budget).enumerate() {
        let (_, violation) = run_one(seed, &opts);
        if let Some(v) = violation {
            println!(
                "mutant {mutant:?}: caught after {} seed(s) in {:.1}s\n  {}",
                k + 1,
                t0.elapsed().as_secs_f64(),
                v.to_string().lines().next().unwrap_or_default()
            );
            return;
        }
    }
    panic!("mutant {mutant:?} survived {budget} seeds: the checker (or the fault mix) misses it");
}

#[test]
fn commit_without_term_check_is_caught() {
    caught(Mutant::CommitWithoutTermCheck);
}

#[test]
fn grant_vote_before_durable_is_caught() {
    caught(Mutant::GrantVoteBeforeDurable);
}

#[test]
fn heartbeat_commit_unclamped_is_caught() {
    caught(Mutant::HeartbeatCommitUnclamped);
}

#[test]
fn read_index_without_term_check_is_caught() {
    caught(Mutant::ReadIndexWithoutTermCheck);
}

#[test]
fn leader_counts_undurable_is_caught() {
    caught(Mutant::LeaderCountsUndurable);
}

/// The lease a leader keeps through a wake from quiescence still ends on the clock: served
/// past its end, a read can miss a write a new leader committed meanwhile.
#[test]
fn lease_kept_past_its_end_after_wake_is_caught() {
    caught(Mutant::LeaseKeptPastItsEndAfterWake);
}
