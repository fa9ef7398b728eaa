//! `flotilla-rebalance` by measured load (issue 15 point 2), the real binaries against real
//! node processes on loopback: 3 nodes, 16 shards, 60% of the writes on 3 shards node 1
//! leads; the rebalancer spreads the leader write load, no client request fails
//! meanwhile, and a second pass moves nothing.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Cluster;
use flotilla_kv::cluster::Admin;
use flotilla_kv::sm::{shard_group, shard_of};
use redis::Commands;

const SHARDS: u32 = 16;
const HOT: [u64; 3] = [1000, 1001, 1002];

fn rebalance(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla-rebalance"))
        .args(args)
        .env_remove("FLOTILLA_PASSWORD")
        .env_remove("FLOTILLA_ADMIN_PASSWORD")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A hash tag of each shard: `{tag}` keys land in that shard.
fn tags() -> BTreeMap<u64, String> {
    let mut m = BTreeMap::new();
    for i in 0..100_000 {
        let t = format!("t{i}");
        m.entry(shard_group(shard_of(t.as_bytes(), SHARDS))).or_insert(t);
        if m.len() == SHARDS as usize {
            break;
        }
    }
    assert_eq!(m.len(), SHARDS as usize);
    m
}

/// The hot shards of the moment.
type Hot = Arc<Mutex<[u64; 3]>>;

/// Writes through `url` until told to stop: 60% of them to the hot shards, the rest spread
/// evenly over the others, in a fixed cycle of 65 writes (13 to each hot shard, 2 to each
/// cold one; blocks of 3 hot and 2 cold writes) starting at `offset`, so the measured rates
/// carry little sampling noise. Returns the requests sent and every failure.
fn writer(
    url: String,
    offset: u64,
    tags: Arc<BTreeMap<u64, String>>,
    hot: Hot,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u64, Vec<String>)> {
    std::thread::spawn(move || {
        let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
        con.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let (mut n, mut errors) = (offset, Vec::new());
        let deadline = Instant::now() + Duration::from_secs(180);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let now = *hot.lock().unwrap();
            let (block, pos) = (n % 65 / 5, (n % 5) as usize);
            let group = if pos < 3 {
                now[pos]
            } else {
                let cold: Vec<u64> = tags.keys().copied().filter(|g| !now.contains(g)).collect();
                cold[(2 * block as usize + pos - 3) % cold.len()]
            };
            let key = format!("{{{}}}:{}", tags[&group], n % 8);
            let r: redis::RedisResult<()> = con.set(key, n);
            if let Err(e) = r {
                errors.push(e.to_string());
            }
            n += 1;
        }
        (n, errors)
    })
}

/// The measured leader write load: each shard's proposals per second (summed over its
/// replicas' reports), each node's sum over the shards it leads, and who leads each.
struct Measured {
    shard: BTreeMap<u64, f64>,
    node: BTreeMap<u64, f64>,
    leaders: BTreeMap<u64, u64>,
}

impl Measured {
    fn take(a: &Admin, seed: &str) -> Measured {
        let v = a.view(seed).unwrap();
        let mut shard: BTreeMap<u64, f64> = v.shard_groups().map(|g| (g.group, 0.0)).collect();
        for st in v.status.values() {
            for r in &st.replicas {
                if let Some(s) = shard.get_mut(&r.group) {
                    *s += r.load.proposals_per_sec as f64;
                }
            }
        }
        let mut node: BTreeMap<u64, f64> = v.nodes.keys().map(|&n| (n, 0.0)).collect();
        let mut leaders = BTreeMap::new();
        for g in v.shard_groups() {
            if let Some(l) = g.leader {
                *node.entry(l).or_default() += shard[&g.group];
                leaders.insert(g.group, l);
            }
        }
        Measured { shard, node, leaders }
    }

    fn ratio(&self) -> f64 {
        let max = self.node.values().cloned().fold(0.0, f64::max);
        let min = self.node.values().cloned().fold(f64::INFINITY, f64::min);
        if min > 0.0 {
            max / min
        } else {
            f64::INFINITY
        }
    }

    /// The spread of the nodes' loads (largest minus smallest) as a share of their mean:
    /// the planner moves leaders only past `hysteresis` (0.2) of it.
    fn spread_share(&self) -> f64 {
        let max = self.node.values().cloned().fold(0.0, f64::max);
        let min = self.node.values().cloned().fold(f64::INFINITY, f64::min);
        let mean = self.node.values().sum::<f64>() / self.node.len().max(1) as f64;
        if mean > 0.0 {
            (max - min) / mean
        } else {
            f64::INFINITY
        }
    }

    fn hot_share(&self, hot: &[u64]) -> f64 {
        let total: f64 = self.shard.values().sum();
        hot.iter().map(|g| self.shard[g]).sum::<f64>() / total.max(1.0)
    }

    /// The nodes leading `hot`, sorted.
    fn hot_leaders(&self, hot: &[u64]) -> Vec<u64> {
        let mut l: Vec<u64> = hot.iter().map(|g| self.leaders[g]).collect();
        l.sort();
        l
    }
}

/// 3 nodes, 16 shards, 60% of the writes on 3 shards node 1 leads: the measured per-node
/// leader write load goes from a max/min ratio above 3 to at most 1.3 (each node leading
/// one hot shard), no client request fails, and a `--watch` keeps that layout, its last
/// pass moving nothing; when the hot spot shifts, the watch waits for steady loads and
/// spreads the new hot shards one per node. `--dry-run` prints every node's load before ->
/// after and changes nothing.
#[test]
fn load_rebalance_spreads_hot_shards_and_a_second_pass_moves_nothing() {
    let started = Instant::now();
    // Each write its own proposal (`joint_writes` off): the load measured is proposals per
    // second, and writes of several connections sharing an entry would make a shard's count
    // follow how busy its leader's node is, not the workload's fixed shares.
    let mut c = Cluster::new(
        None,
        "shards = 16\nelection_ticks = 30\nload_half_life_ms = 2000\nload_fold_interval_ms = 200\njoint_writes = false",
    );
    let seed = c.start(1, true);
    c.wait_writable(1, "w");
    c.start(2, false);
    c.start(3, false);
    let a = c.admin();
    a.add_server(&seed, &c.addr(2), 3).unwrap();
    a.add_server(&seed, &c.addr(3), 3).unwrap();
    // Node 1 leads the hot shards and 4 cold ones, node 2 4 cold ones, node 3 5.
    let layout = |g: u64| match g {
        1000..=1006 => 1,
        1007..=1010 => 2,
        _ => 3,
    };
    let v = a.view(&seed).unwrap();
    for g in v.shard_groups() {
        if g.leader != Some(layout(g.group)) {
            a.transfer(&seed, g.group, layout(g.group)).unwrap();
        }
    }

    let tags = Arc::new(tags());
    let stop = Arc::new(AtomicBool::new(false));
    let hot: Hot = Arc::new(Mutex::new(HOT));
    let writers: Vec<_> = (0..4u64)
        .map(|i| writer(c.url(1 + i % 3), 17 * i, tags.clone(), hot.clone(), stop.clone()))
        .collect();

    // Wait until the measured loads show the skew: the hot shards carrying the workload's
    // 60% of the writes (within the rates' rounding) and node 1's leader write load more
    // than 3 times the least loaded node's.
    let deadline = Instant::now() + Duration::from_secs(40);
    let skewed = loop {
        let m = Measured::take(&a, &seed);
        if m.leaders.iter().all(|(&g, &l)| l == layout(g)) && m.ratio() > 3.0 && m.hot_share(&HOT) >= 0.57 {
            break m;
        }
        assert!(Instant::now() < deadline, "no skew measured: {:?}", m.node);
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(skewed.ratio() > 3.0, "{:?}", skewed.node);

    let (code, out, err) = rebalance(&["--seed", &seed, "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    println!("dry run:\n{out}");
    assert!(out.contains("LEADER LOAD") && out.contains("WRITES/S") && out.contains(" -> "), "{out}");
    assert!(!out.starts_with("plan: 0 replica moves, 0 leader moves"), "{out}");
    assert_eq!(Measured::take(&a, &seed).leaders, skewed.leaders, "a dry run changes nothing");

    let (code, out, err) = rebalance(&["--seed", &seed, "--rate", "20"]);
    assert_eq!(code, 0, "{out}{err}");
    println!("run:\n{out}");
    assert!(out.starts_with("plan: 0 replica moves, "), "every node holds every shard: {out}");
    assert!(out.contains("summary: ") && out.contains("leader load max/min"), "{out}");
    let after = Measured::take(&a, &seed);
    assert_eq!(after.hot_leaders(&HOT), [1, 2, 3], "one hot shard per node: {out}");
    // The measured rates follow within a few half-lives (they are noisy at the margin).
    // Settled: within the planner's band with room to spare (a ratio of 1.3 alone can
    // still be outside it, and the pass below then moves a cold shard; seen in a fast run).
    // A moved leader's meter starts from nothing at its new node (half-life 2 s), so right
    // after the moves the loads are still shifting: the planner's next pass could see a
    // node past its band that three half-lives later is not (seen in CI: a cold shard
    // moved by the pass below). Settled means three half-lives on and within the band.
    let moved_at = Instant::now();
    let deadline = moved_at + Duration::from_secs(26);
    loop {
        let m = Measured::take(&a, &seed);
        assert_eq!(m.leaders, after.leaders, "nothing moves by itself");
        if moved_at.elapsed() >= Duration::from_secs(6) && m.ratio() <= 1.3 && m.spread_share() <= 0.15 {
            println!("leader write load per node: {:?} -> {:?}", skewed.node, m.node);
            break;
        }
        assert!(Instant::now() < deadline, "ratio {} after rebalancing: {:?}\n{out}", m.ratio(), m.node);
        std::thread::sleep(Duration::from_millis(500));
    }

    // A watch of three passes (the first only measures): the rebalanced layout stands. (At
    // most one marginal move of a cold shard in the second, if the measured rates still
    // drift at the band's edge; never one in the third: no oscillation.)
    let (code, out, err) = rebalance(&["--seed", &seed, "--watch", "0.5", "--count", "3"]);
    assert_eq!(code, 0, "{out}{err}");
    println!("watch:\n{out}");
    let first = out.split("pass 1").nth(1).unwrap_or("");
    assert!(first.trim_start().starts_with("measuring: "), "{out}");
    let third = out.split("pass 3").nth(1).unwrap_or("");
    assert!(third.trim_start().starts_with("plan: 0 replica moves, 0 leader moves"), "{out}");
    assert!(out.contains("watch: 3 passes, 0 moves") || out.contains("watch: 3 passes, 1 moves"), "{out}");
    let now = Measured::take(&a, &seed);
    assert_eq!(now.hot_leaders(&HOT), [1, 2, 3], "the hot shards stay one per node: {out}");
    let after = now;

    // The load shifts: three cold shards of the node leading the most cold ones turn hot.
    // `--watch` follows.
    let (node, _) = (1..=3u64)
        .map(|n| (n, after.leaders.iter().filter(|&(g, &l)| l == n && !HOT.contains(g)).count()))
        .max_by_key(|x| x.1)
        .unwrap();
    let shifted: Vec<u64> = after
        .leaders
        .iter()
        .filter(|&(g, &l)| l == node && !HOT.contains(g))
        .map(|(&g, _)| g)
        .take(3)
        .collect();
    let shifted: [u64; 3] = shifted.try_into().unwrap();
    // The watch waits while the measured rates follow the shift (each pass a load
    // half-life after the last), then moves on steady loads: moves made on rising and
    // falling rates once left two hot shards on one node, which no later pass could
    // improve by the planner's margin (seen in CI).
    *hot.lock().unwrap() = shifted;
    let (code, out, err) = rebalance(&["--seed", &seed, "--watch", "2", "--count", "12"]);
    assert_eq!(code, 0, "{out}{err}");
    println!("watch after the shift:\n{out}");
    assert!(out.contains("loads still shifting"), "the watch waited for steady loads: {out}");
    assert!(!out.contains("watch: 12 passes, 0 moves"), "the watch moved leaders: {out}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = Measured::take(&a, &seed);
        if m.hot_leaders(&shifted) == [1, 2, 3] && m.ratio() <= 1.3 {
            println!("after the shift: {:?}", m.node);
            break;
        }
        assert!(Instant::now() < deadline, "ratio {} after the watch: {:?}\n{out}", m.ratio(), m.node);
        std::thread::sleep(Duration::from_millis(500));
    }

    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let (n, errors) = w.join().unwrap();
        assert!(n > 0 && errors.is_empty(), "{n} requests, failed: {errors:?}");
    }
    println!("run time {:.1} s", started.elapsed().as_secs_f64());
}
