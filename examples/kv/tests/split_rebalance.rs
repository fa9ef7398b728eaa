//! Automatic split plus load-aware rebalancing under a skewed workload (issue 15 point 3's
//! last test), the real binaries against real node processes on loopback: 3 nodes, 6
//! shards, 80% of the writes on 2 shards node 1 leads. Moving leaders alone cannot even
//! that out (one node would keep at most 20% against another's 40%); the hot shards split
//! by themselves (`split_write_bytes_per_sec`), their children start led by node 1, and
//! `flotilla-rebalance` then brings the per-node leader write load to a max/min ratio of at
//! most 1.5. No client request fails meanwhile, and every acknowledged write is readable
//! with its value at the end.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Cluster;
use flotilla_kv::cluster::Admin;
use flotilla_kv::slots::{default_owner, key_slot, SLOTS};
use flotilla_kv::sm::{shard_group, shard_of};
use redis::Commands;

const SHARDS: u32 = 6;
const HOT: [u64; 2] = [1000, 1001];
const COLD: [u64; 4] = [1002, 1003, 1004, 1005];
/// Writers, each paced to `RATE` writes per second (so the measured byte rates, and which
/// shards pass the split threshold, do not depend on how fast the machine is).
const WRITERS: u64 = 8;
const RATE: u64 = 30;
/// Each write's value.
const VALUE_BYTES: usize = 1000;
/// Between a hot shard's write rate (40% of 240 writes/s of ~1 KB: ~100 KB/s) and a split
/// half's (~50 KB/s): each hot shard splits once, its halves never; the cold shards
/// (~12 KB/s) never.
const SPLIT_BYTES: u64 = 70_000;

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

/// The slot where shard `group`'s automatic split cuts it (its middle slot, as
/// `shard_split::upper_part` picks it).
fn middle_slot(group: u64) -> u16 {
    let own: Vec<u16> = (0..SLOTS).filter(|&s| shard_group(default_owner(s, SHARDS)) == group).collect();
    own[own.len() / 2]
}

/// Writer `t`'s keys: for each hot shard two keys below its middle slot and two from it
/// on (so its writes divide evenly between the halves a split makes), and one key for
/// each cold shard. Returned in the order of the writer's cycle (see [`writer`]).
fn keys_of(t: u64) -> Vec<String> {
    let mut buckets: BTreeMap<(u64, bool), Vec<String>> = BTreeMap::new();
    let want = |g: u64, upper: bool| {
        if HOT.contains(&g) {
            2
        } else if upper {
            0
        } else {
            1
        }
    };
    let middle: BTreeMap<u64, u16> = HOT.iter().map(|&g| (g, middle_slot(g))).collect();
    for i in 0..100_000u64 {
        let key = format!("w{t}:{i}");
        let slot = key_slot(key.as_bytes());
        let g = shard_group(shard_of(key.as_bytes(), SHARDS));
        let upper = middle.get(&g).is_some_and(|&m| slot >= m);
        let b = buckets.entry((g, upper)).or_default();
        if b.len() < want(g, upper) {
            b.push(key);
        }
        if buckets.values().map(Vec::len).sum::<usize>() == 12 {
            break;
        }
    }
    // The cycle of 20 writes: 16 hot ones (alternating between the hot shards, then
    // between their halves, then between the two keys of a half), then one per cold shard.
    let mut cycle = Vec::new();
    for p in 0..16usize {
        let (g, upper, k) = (HOT[p % 2], (p / 2) % 2 == 1, (p / 4) % 2);
        cycle.push(buckets[&(g, upper)][k].clone());
    }
    for g in COLD {
        cycle.push(buckets[&(g, false)][0].clone());
    }
    cycle
}

/// One writer's record: the last value acknowledged for each key; every failure.
type Record = (BTreeMap<String, u64>, Vec<String>);

/// Writes through `url` until told to stop, paced to `RATE` a second (a write that falls
/// behind is not made up), 80% of them to the hot shards in a fixed cycle of 20.
fn writer(url: String, t: u64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Record> {
    std::thread::spawn(move || {
        let cycle = keys_of(t);
        let value = "v".repeat(VALUE_BYTES - 8);
        let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
        con.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let (mut acked, mut errors) = (BTreeMap::new(), Vec::new());
        let period = Duration::from_micros(1_000_000 / RATE);
        let started = Instant::now();
        let mut next = started;
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120) {
            let now = Instant::now();
            if now < next {
                std::thread::sleep(next - now);
            }
            next = (next + period).max(Instant::now());
            let key = &cycle[(n % cycle.len() as u64) as usize];
            let r: redis::RedisResult<()> = con.set(key, format!("{n:08}{value}"));
            match r {
                Ok(()) => {
                    acked.insert(key.clone(), n);
                }
                Err(e) => errors.push(format!("SET {key}: {e}")),
            }
            n += 1;
        }
        (acked, errors)
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

    /// Whether the rates have settled after a split: every shard (the 6 and the 2
    /// children) measured, each hot half carrying its 20% of the writes (the cycle makes
    /// it exact but for the rates' rounding) and each cold shard its 5%.
    fn settled(&self, halves: &[u64]) -> bool {
        self.shard.len() == SHARDS as usize + 2
            && halves.iter().all(|&g| (0.18..=0.22).contains(&self.share(g)))
            && COLD.iter().all(|&g| (0.03..=0.07).contains(&self.share(g)))
    }

    fn share(&self, group: u64) -> f64 {
        let total: f64 = self.shard.values().sum();
        self.shard.get(&group).copied().unwrap_or(0.0) / total.max(1.0)
    }
}

/// 3 nodes, 6 shards, 80% of the writes on the 2 shards node 1 leads: both hot shards
/// split by themselves (each into two halves of 20% of the writes, first led by node 1,
/// which then carries 80% of the leader write load), and `flotilla-rebalance` spreads the
/// halves until the per-node leader write load's max/min ratio is at most 1.5. No client
/// request fails, and every acknowledged write is readable with its value at the end.
#[test]
fn hot_shards_split_and_rebalance_to_an_even_leader_write_load() {
    let started = Instant::now();
    // Each write its own proposal (`joint_writes` off): the shares `settled` checks are
    // proposals per second, and writes of several connections sharing an entry would make a
    // shard's count follow how busy its leader's node is, not the workload's fixed shares
    // (as in `rebalance_load`).
    let mut c = Cluster::new(
        None,
        &format!(
            "shards = {SHARDS}\nelection_ticks = 30\nload_half_life_ms = 1000\nload_fold_interval_ms = 100\n\
             split_write_bytes_per_sec = {SPLIT_BYTES}\njoint_writes = false"
        ),
    );
    let seed = c.start(1, true);
    c.wait_writable(1, "w");
    c.start(2, false);
    c.start(3, false);
    let a = c.admin();
    a.add_server(&seed, &c.addr(2), 3).unwrap();
    a.add_server(&seed, &c.addr(3), 3).unwrap();
    // Node 1 leads the hot shards, nodes 2 and 3 two cold ones each.
    let layout = |g: u64| match g {
        1000 | 1001 => 1,
        1002 | 1003 => 2,
        _ => 3,
    };
    let v = a.view(&seed).unwrap();
    for g in v.shard_groups() {
        if g.leader != Some(layout(g.group)) {
            a.transfer(&seed, g.group, layout(g.group)).unwrap();
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS).map(|t| writer(c.url(1 + t % 3), t, stop.clone())).collect();

    // Both hot shards split (their children are the next groups, 1006 and 1007), and the
    // measured loads settle: each of the four halves carries about 20% of the writes, and
    // node 1, leading all four, far more than the others.
    let halves = [1000, 1001, 1006, 1007];
    let deadline = Instant::now() + Duration::from_secs(40);
    let split = loop {
        let m = Measured::take(&a, &seed);
        if m.settled(&halves) && m.ratio() > 3.0 {
            break m;
        }
        assert!(Instant::now() < deadline, "no split of both hot shards measured: {:?}", m.shard);
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        split.shard.len(),
        SHARDS as usize + 2,
        "each hot shard split once, nothing else: {:?}",
        split.shard
    );
    for g in halves {
        assert_eq!(split.leaders.get(&g), Some(&1), "a split child starts led by its shard's leader");
    }
    println!("after the splits: shards {:?}, nodes {:?}", split.shard, split.node);

    // Rebalance by load (the default mode) until the ratio is at most 1.5: one pass should
    // do; a few are allowed for the measured rates' noise.
    let mut passes = Vec::new();
    let balanced = 'passes: loop {
        assert!(
            passes.len() < 3,
            "ratio still above 1.5 after {} passes:\n{}",
            passes.len(),
            passes.join("\n")
        );
        let (code, out, err) = rebalance(&["--seed", &seed, "--rate", "20"]);
        assert_eq!(code, 0, "{out}{err}");
        println!("pass {}:\n{out}", passes.len() + 1);
        passes.push(out);
        // The measured rates follow within a few half-lives: judged once they have
        // settled, and on 4 samples in a row over 2 half-lives (not a passing moment).
        // Up to 30 s (30 half-lives) for that: on a loaded 2-core CI machine one pass once
        // saw no settled sample within 15 s.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut run: Vec<Measured> = Vec::new();
        while Instant::now() < deadline && run.len() < 4 {
            std::thread::sleep(Duration::from_millis(500));
            let m = Measured::take(&a, &seed);
            match run.last() {
                Some(last) if !m.settled(&halves) || m.leaders != last.leaders => run.clear(),
                _ => {}
            }
            if m.settled(&halves) {
                run.push(m);
            }
        }
        if run.len() == 4 && run.iter().all(|m| m.ratio() <= 1.5) {
            break 'passes run.pop().unwrap();
        }
        let seen: Vec<String> = run.iter().map(|m| format!("{:?}", m.node)).collect();
        passes.last_mut().unwrap().push_str(&format!("measured after: {seen:?}\n"));
    };
    println!(
        "leader write load per node: {:?} (ratio {:.2}) -> {:?} (ratio {:.2}) in {} pass(es)",
        split.node,
        split.ratio(),
        balanced.node,
        balanced.ratio(),
        passes.len()
    );
    assert!(balanced.ratio() <= 1.5);
    assert_eq!(balanced.shard.len(), SHARDS as usize + 2, "no further split: {:?}", balanced.shard);

    stop.store(true, Ordering::Relaxed);
    let records: Vec<Record> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let total: usize = records.iter().map(|r| r.0.len()).sum();
    for (acked, errors) in &records {
        assert!(!acked.is_empty() && errors.is_empty(), "failed requests: {errors:?}");
    }
    assert_eq!(total, (WRITERS * 12) as usize, "every key written");
    // Every acknowledged write is readable with its value (each key has one writer).
    let mut con = c.redis(2);
    for (key, n) in records.iter().flat_map(|r| &r.0) {
        let got: Option<String> = con.get(key).unwrap();
        assert_eq!(got.as_deref().and_then(|v| v.get(..8)), Some(format!("{n:08}").as_str()), "{key}");
    }
    println!("run time {:.1} s", started.elapsed().as_secs_f64());
}
