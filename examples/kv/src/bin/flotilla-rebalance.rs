//! `flotilla-rebalance`: evens out the measured load (or the counts) of shard leaders and
//! replicas across a flotilla-kv cluster.
//!
//! ```text
//! flotilla-rebalance --seed ADDR [--user NAME] [--password-file FILE] [--by load|count]
//!     [--dry-run] [--rate MOVES_PER_SEC] [--hysteresis FRACTION] [--write-weight W]
//!     [--read-weight W] [--watch [SECONDS]] [--count N]
//! ```
//! Reads the layout and every replica's measured load from every node (`FLOTILLA.STATUS`),
//! then (1) moves shard replicas so every node's storage and write load is even (each
//! move adds a learner, waits for it to catch up, promotes it, and only then removes the
//! old replica, moving its leadership away first: no shard ever has fewer replicas than at
//! the start), and (2) transfers leaderships so every node's leader load is even (a write
//! weighs `--write-weight`, default 4, a read `--read-weight`, default 1, a KiB/s written
//! 1). A move is made only when its two nodes are apart by more than `--hysteresis`
//! (default 0.2) of the mean node load and it narrows their gap by a clear margin, so a
//! second run right after the first moves nothing and a hot shard is never moved back and
//! forth (`flotilla_kv::load_plan` documents the rule). `--by count` evens counts instead
//! (replicas, then leaders, within one of each other).
//!
//! `--dry-run` prints the plan and each node's load before -> after, and changes nothing.
//! Otherwise a progress bar (and a line per move) shows the moves, started at most
//! `--rate` per second, and a summary of each node's load before -> after ends the run.
//! `--watch` runs a pass every SECONDS (default 30) as load shifts, until Ctrl-C or
//! `--count` passes; a pass that fails prints its error and the watch goes on. By load, a
//! watch moves only on steady loads: its first pass measures, and a pass whose loads moved
//! by more than half the band since the last pass (the rates still follow a shift of the
//! workload) waits for the next.
//!
//! Exit codes: 0 done (or dry run); 1 a move failed (the message names it); 2 usage error;
//! 3 a node could not be reached; 4 authentication failed.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use flotilla_kv::cluster::{plan_leaders, plan_replicas, Admin, AdminError, ClusterView, Move, ToolArgs};
use flotilla_kv::load_plan::{
    max_min_ratio, plan, plan_leaders_by_load, unsteady, LoadView, LoadWeights, NodeLoad,
};
use indicatif::{ProgressBar, ProgressStyle};

/// What the rebalancer evens out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum By {
    /// Measured load: leader load per node, storage and write load of replicas per node.
    Load,
    /// Counts: replicas per node, then leaders per node, within one of each other.
    Count,
}

/// Evens out the load of shard leaders and replicas across the cluster.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    tool: ToolArgs,
    /// What to even out.
    #[arg(long, value_enum, default_value = "load")]
    by: By,
    /// Print the plan (and each node's load before -> after) and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Most moves started per second (0.01..=1000).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// The band within which two nodes count as balanced, as a fraction of the mean node
    /// load (0.01..=1).
    #[arg(long, default_value_t = 0.2)]
    hysteresis: f64,
    /// Weight of a write (proposal) per second in a shard's leader load (0..=1000).
    #[arg(long, default_value_t = 4.0)]
    write_weight: f64,
    /// Weight of a read per second in a shard's leader load (0..=1000).
    #[arg(long, default_value_t = 1.0)]
    read_weight: f64,
    /// Run a pass every SECONDS (default 30) until Ctrl-C.
    #[arg(long, num_args = 0..=1, default_missing_value = "30", value_name = "SECONDS")]
    watch: Option<f64>,
    /// With --watch: stop after this many passes.
    #[arg(long, requires = "watch")]
    count: Option<u64>,
}

impl Args {
    /// The weights these options describe.
    fn weights(&self) -> LoadWeights {
        LoadWeights {
            write_weight: self.write_weight,
            read_weight: self.read_weight,
            hysteresis: self.hysteresis,
            ..LoadWeights::default()
        }
    }

    /// What is out of bounds, if anything.
    fn invalid(&self) -> Option<String> {
        let bad = |name: &str, v: f64, lo: f64, hi: f64| {
            (!(lo..=hi).contains(&v)).then(|| format!("--{name} {v} out of bounds {lo}..={hi}"))
        };
        bad("rate", self.rate, 0.01, 1000.0)
            .or_else(|| bad("hysteresis", self.hysteresis, 0.01, 1.0))
            .or_else(|| bad("write-weight", self.write_weight, 0.0, 1000.0))
            .or_else(|| bad("read-weight", self.read_weight, 0.0, 1000.0))
            .or_else(|| self.watch.and_then(|s| bad("watch", s, 0.1, 86_400.0)))
    }
}

/// Count mode's summary: leaders and replicas per node before and after.
fn count_summary(before: &ClusterView, after: &ClusterView) -> String {
    let (lb, rb, la, ra) = (
        before.leaders_per_node(),
        before.replicas_per_node(),
        after.leaders_per_node(),
        after.replicas_per_node(),
    );
    let mut s = String::from("NODE  LEADERS(before -> after)  REPLICAS(before -> after)\n");
    for n in before.nodes.keys().chain(after.nodes.keys()).collect::<BTreeSet<_>>() {
        let g = |m: &BTreeMap<u64, usize>| m.get(n).copied().unwrap_or(0);
        s.push_str(&format!("{n:<5} {:>7} -> {:<16} {:>8} -> {}\n", g(&lb), g(&la), g(&rb), g(&ra)));
    }
    s
}

/// Load mode's table: each node's load before -> after, and the leader load's max/min.
fn load_table(before: &BTreeMap<u64, NodeLoad>, after: &BTreeMap<u64, NodeLoad>) -> String {
    let mut s = String::from(
        "NODE  LEADERS     LEADER LOAD          WRITES/S             READS/S            REPLICAS    KEYS                     WRITE KB/S\n",
    );
    let zero = NodeLoad::default();
    for n in before.keys().chain(after.keys()).collect::<BTreeSet<_>>() {
        let (b, a) = (before.get(n).unwrap_or(&zero), after.get(n).unwrap_or(&zero));
        let pair = |x: f64, y: f64| format!("{x:.0} -> {y:.0}");
        let leaders = format!("{} -> {}", b.leaders, a.leaders);
        let replicas = format!("{} -> {}", b.replicas, a.replicas);
        let kib = format!("{:.1} -> {:.1}", b.write_bytes_per_sec / 1024.0, a.write_bytes_per_sec / 1024.0);
        s.push_str(&format!(
            "{n:<5} {leaders:<11} {:<20} {:<20} {:<18} {replicas:<11} {:<24} {kib}\n",
            pair(b.leader_load, a.leader_load),
            pair(b.writes_per_sec, a.writes_per_sec),
            pair(b.reads_per_sec, a.reads_per_sec),
            pair(b.keys, a.keys),
        ));
    }
    let ratio = |m: &BTreeMap<u64, NodeLoad>| max_min_ratio(m.values().map(|n| n.leader_load));
    s.push_str(&format!("leader load max/min: {:.2} -> {:.2}\n", ratio(before), ratio(after)));
    s
}

/// Carries out moves at most `rate` per second, with a progress bar and a line per move.
struct Mover<'a> {
    a: &'a Admin,
    seed: &'a str,
    pause: Duration,
    last: Option<Instant>,
    bar: ProgressBar,
    done: usize,
}

impl<'a> Mover<'a> {
    fn new(a: &'a Admin, seed: &'a str, rate: f64, total: usize) -> Mover<'a> {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Mover { a, seed, pause: Duration::from_secs_f64(1.0 / rate), last: None, bar, done: 0 }
    }

    fn step(&mut self, m: Move) -> Result<(), AdminError> {
        if let Some(last) = self.last {
            std::thread::sleep(self.pause.saturating_sub(last.elapsed()));
        }
        self.last = Some(Instant::now());
        self.bar.set_message(format!("{m}"));
        self.a.apply_move(self.seed, m)?;
        self.done += 1;
        self.bar.inc(1);
        let (pos, len) = (self.bar.position(), self.bar.length().unwrap_or(0));
        self.bar.suspend(|| println!("[{pos}/{len}] {m}: done"));
        Ok(())
    }

    fn finish(&self) {
        self.bar.finish_with_message("done");
    }
}

/// One pass by counts; returns the moves made.
fn count_pass(a: &Admin, args: &Args, before: &ClusterView) -> Result<usize, AdminError> {
    let seed = args.tool.seed.as_str();
    let mut sim = before.clone();
    let replica_moves = plan_replicas(&mut sim);
    let leader_moves = plan_leaders(&mut sim);
    println!("plan: {} replica moves, {} leader moves", replica_moves.len(), leader_moves.len());
    for m in replica_moves.iter().chain(&leader_moves) {
        println!("  {m}");
    }
    if args.dry_run {
        print!("{}", count_summary(before, &sim));
        return Ok(0);
    }
    let mut mover = Mover::new(a, seed, args.rate, replica_moves.len() + leader_moves.len());
    for m in replica_moves {
        mover.step(m)?;
    }
    // Leaders are planned again on the real layout once replicas moved.
    let mut now = a.view(seed)?;
    for m in plan_leaders(&mut now) {
        mover.step(m)?;
    }
    mover.finish();
    let after = a.view(seed)?;
    print!("{}", count_summary(before, &after));
    Ok(mover.done)
}

/// One pass by load; returns the moves made. In a watch, `last` holds the loads of the
/// last pass, and a pass moves only when the loads are steady since then.
fn load_pass(
    a: &Admin,
    args: &Args,
    before: &ClusterView,
    last: Option<&mut Option<LoadView>>,
) -> Result<usize, AdminError> {
    let seed = args.tool.seed.as_str();
    let w = args.weights();
    let view = LoadView::from_cluster(before);
    if let Some(last) = last {
        let Some(prev) = last.replace(view.clone()) else {
            println!("measuring: a watch moves only on loads steady since its last pass");
            print!("{}", load_table(&view.node_loads(&w), &view.node_loads(&w)));
            return Ok(0);
        };
        if let Some((l, r)) = unsteady(&prev, &view, &w) {
            println!(
                "loads still shifting (since the last pass, leader loads moved {l:.1} and replica \
                 loads {r:.1} times half the band): no moves this pass"
            );
            print!("{}", load_table(&view.node_loads(&w), &view.node_loads(&w)));
            return Ok(0);
        }
    }
    let p = plan(&view, &w);
    println!("plan: {} replica moves, {} leader moves", p.replica_moves.len(), p.leader_moves.len());
    for m in p.replica_moves.iter().chain(&p.leader_moves) {
        let load = match m {
            Move::Leader { group, .. } | Move::Replica { group, .. } => {
                view.shards.get(group).map(|s| s.leader_load(&w)).unwrap_or(0.0)
            }
        };
        println!("  {m} (shard leader load {load:.0})");
    }
    print!("{}", load_table(&p.before, &p.after));
    if p.before.values().all(|n| n.leader_load == 0.0 && n.keys == 0.0) {
        println!("no load measured (an idle cluster, or measure_load off): --by count evens counts");
    }
    if args.dry_run || p.is_empty() {
        return Ok(0);
    }
    let started = Instant::now();
    let mut mover = Mover::new(a, seed, args.rate, p.replica_moves.len() + p.leader_moves.len());
    for m in &p.replica_moves {
        mover.step(*m)?;
    }
    // Once replicas moved, leaders are planned again on the real layout.
    let leader_moves = if p.replica_moves.is_empty() {
        p.leader_moves.clone()
    } else {
        plan_leaders_by_load(&mut LoadView::from_cluster(&a.view(seed)?), &w)
    };
    for m in leader_moves {
        mover.step(m)?;
    }
    mover.finish();
    let after = LoadView::from_cluster(&a.view(seed)?).node_loads(&w);
    println!("summary: {} moves in {:.1} s", mover.done, started.elapsed().as_secs_f64());
    print!("{}", load_table(&p.before, &after));
    Ok(mover.done)
}

/// One pass: the layout, then the plan and its moves. `last` as for [`load_pass`].
fn pass(a: &Admin, args: &Args, last: Option<&mut Option<LoadView>>) -> Result<usize, AdminError> {
    let before = a.view(&args.tool.seed)?;
    if let Some(g) = before.shard_groups().find(|g| g.leader.is_none()) {
        return Err(AdminError::Invalid(format!("group {} has no leader now; try again later", g.group)));
    }
    match args.by {
        By::Load => load_pass(a, args, &before, last),
        By::Count => count_pass(a, args, &before),
    }
}

fn run(a: &Admin, args: &Args) -> Result<(), AdminError> {
    let Some(secs) = args.watch else {
        return pass(a, args, None).map(|_| ());
    };
    let (mut total, mut last) = (0, None);
    for n in 1.. {
        println!("pass {n}");
        match pass(a, args, Some(&mut last)) {
            Ok(moved) => total += moved,
            Err(e @ AdminError::Auth { .. }) => return Err(e),
            Err(e) => eprintln!("flotilla-rebalance: pass {n}: {e}"),
        }
        if args.count.is_some_and(|c| n >= c) {
            println!("watch: {n} passes, {total} moves");
            break;
        }
        std::thread::sleep(Duration::from_secs_f64(secs));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(e) = args.invalid() {
        eprintln!("flotilla-rebalance: {e}");
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
