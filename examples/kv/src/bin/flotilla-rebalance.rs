//! `flotilla-rebalance`: evens out replicas and leaders across a flotilla-kv cluster.
//!
//! ```text
//! flotilla-rebalance --seed ADDR [--user NAME] [--password-file FILE] [--dry-run] [--rate MOVES_PER_SEC]
//! ```
//! Reads the layout from every node, then (1) moves shard replicas from the nodes with the
//! most to those with the fewest until counts differ by at most one (each move adds a
//! learner, waits for it to catch up, promotes it, and only then removes the old replica,
//! moving its leadership away first: no shard ever has fewer replicas than at the start),
//! and (2) transfers leaderships until leader counts differ by at most one where the
//! membership allows. `--dry-run` prints the plan only. A progress bar shows the moves; a
//! summary table of leaders and replicas per node before and after ends the run.
//!
//! Exit codes: 0 done (or dry run); 1 a move failed (the message names it); 2 usage error;
//! 3 a node could not be reached; 4 authentication failed.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use flotilla_kv::cluster::{plan_leaders, plan_replicas, Admin, AdminError, ClusterView, ToolArgs};
use indicatif::{ProgressBar, ProgressStyle};

/// Evens out replicas and leaders across the cluster.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    tool: ToolArgs,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Most moves started per second (0.01..=1000).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
}

fn summary(before: &ClusterView, after: &ClusterView) -> String {
    let (lb, rb, la, ra) = (
        before.leaders_per_node(),
        before.replicas_per_node(),
        after.leaders_per_node(),
        after.replicas_per_node(),
    );
    let mut s = String::from("NODE  LEADERS(before -> after)  REPLICAS(before -> after)\n");
    for n in before.nodes.keys().chain(after.nodes.keys()).collect::<std::collections::BTreeSet<_>>() {
        let g = |m: &std::collections::BTreeMap<u64, usize>| m.get(n).copied().unwrap_or(0);
        s.push_str(&format!("{n:<5} {:>7} -> {:<16} {:>8} -> {}\n", g(&lb), g(&la), g(&rb), g(&ra)));
    }
    s
}

fn run(a: &Admin, args: &Args) -> Result<(), AdminError> {
    let before = a.view(&args.tool.seed)?;
    if let Some(g) = before.shard_groups().find(|g| g.leader.is_none()) {
        return Err(AdminError::Invalid(format!("group {} has no leader now; try again later", g.group)));
    }
    let mut sim = before.clone();
    let replica_moves = plan_replicas(&mut sim);
    let leader_moves = plan_leaders(&mut sim);
    println!("plan: {} replica moves, {} leader moves", replica_moves.len(), leader_moves.len());
    for m in replica_moves.iter().chain(&leader_moves) {
        println!("  {m}");
    }
    if args.dry_run {
        print!("{}", summary(&before, &sim));
        return Ok(());
    }
    let pause = Duration::from_secs_f64(1.0 / args.rate);
    let bar = ProgressBar::new((replica_moves.len() + leader_moves.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut last = Instant::now() - pause;
    let mut step = |m| -> Result<(), AdminError> {
        let wait = pause.saturating_sub(last.elapsed());
        std::thread::sleep(wait);
        last = Instant::now();
        bar.set_message(format!("{m}"));
        a.apply_move(&args.tool.seed, m)?;
        bar.inc(1);
        Ok(())
    };
    for m in replica_moves {
        step(m)?;
    }
    // Leaders are planned again on the real layout once replicas moved.
    let mut now = a.view(&args.tool.seed)?;
    for m in plan_leaders(&mut now) {
        step(m)?;
    }
    bar.finish_with_message("done");
    let after = a.view(&args.tool.seed)?;
    print!("{}", summary(&before, &after));
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(0.01..=1000.0).contains(&args.rate) {
        eprintln!("flotilla-rebalance: --rate {} out of bounds 0.01..=1000", args.rate);
        return ExitCode::from(2);
    }
    let a = match args.tool.admin() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("flotilla-rebalance: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&a, &args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flotilla-rebalance: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
