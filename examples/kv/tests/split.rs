//! Splitting a shard by slot range (issue 15 point 3): three node processes in cluster
//! mode under load from the `redis` crate's cluster client; `FLOTILLA.SPLIT` (what
//! `flotilla-admin split` sends) moves the upper half of shard 1000's slots, with their
//! keys, to a new shard. Every acknowledged write is readable afterwards with its value,
//! no reply was ever wrong (each read of a key returns what was last acknowledged for it,
//! and no `-WRONGSLOT` reaches a client), and the cluster client and `CLUSTER SLOTS` /
//! `CLUSTER SHARDS` / `-MOVED` see the new map.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Cluster;
use flotilla_kv::client::Client;
use flotilla_kv::resp::Value;
use flotilla_kv::slots::key_slot;

fn call(addr: &str, args: &[&str]) -> Value {
    let mut c = Client::connect(addr, Duration::from_secs(5)).unwrap();
    c.set_timeout(Duration::from_secs(20)).unwrap();
    c.call(args).unwrap()
}

/// `CLUSTER SLOTS` as (start, end, leader address), sorted.
fn slot_ranges(addr: &str) -> Vec<(i64, i64, String)> {
    let Value::Array(Some(ranges)) = call(addr, &["CLUSTER", "SLOTS"]) else { panic!("CLUSTER SLOTS") };
    let mut v: Vec<(i64, i64, String)> = ranges
        .iter()
        .map(|r| {
            let Value::Array(Some(f)) = r else { panic!("{r:?}") };
            let (Value::Int(a), Value::Int(b)) = (&f[0], &f[1]) else { panic!("{f:?}") };
            let Value::Array(Some(n)) = &f[2] else { panic!("{f:?}") };
            let (Value::Bulk(Some(ip)), Value::Int(port)) = (&n[0], &n[1]) else { panic!("{n:?}") };
            (*a, *b, format!("{}:{port}", String::from_utf8_lossy(ip)))
        })
        .collect();
    v.sort();
    v
}

/// Waits until `CLUSTER SLOTS` names the one shard's leader (its route is published), so
/// a cluster client finds a node for every slot.
fn wait_one_range(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while slot_ranges(addr).len() != 1 {
        assert!(Instant::now() < deadline, "no route published: {:?}", slot_ranges(addr));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One writer's record: (key, value) acknowledged, in order; errors seen.
type Record = (Vec<(String, u64)>, Vec<String>);

/// A client connection: the cluster client (cluster mode) or a plain one to one node.
enum Con {
    Cluster(redis::cluster::ClusterConnection),
    Plain(redis::Connection),
}

impl Con {
    fn open(url: &str, cluster: bool) -> Result<Con, String> {
        Ok(if cluster {
            let client = redis::cluster::ClusterClient::new(vec![url]).map_err(|e| e.to_string())?;
            Con::Cluster(client.get_connection().map_err(|e| e.to_string())?)
        } else {
            let client = redis::Client::open(url).map_err(|e| e.to_string())?;
            Con::Plain(client.get_connection_with_timeout(Duration::from_secs(5)).map_err(|e| e.to_string())?)
        })
    }

    fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            Con::Cluster(c) => cmd.query(c),
            Con::Plain(c) => cmd.query(c),
        }
    }
}

/// Writes fresh keys until `stop`, reading each back at once (the read must return the
/// value just acknowledged: never a wrong answer).
fn writer(url: String, cluster: bool, t: usize, stop: &AtomicBool) -> Result<Record, String> {
    let mut con = Con::open(&url, cluster)?;
    let (mut acked, mut errors) = (Vec::new(), Vec::new());
    for i in 0..100_000u64 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = format!("w{t}:{i}");
        match con.query::<redis::Value>(redis::cmd("SET").arg(&key).arg(i)) {
            Ok(_) => acked.push((key.clone(), i)),
            Err(e) => {
                errors.push(format!("SET {key}: {e}"));
                continue;
            }
        }
        match con.query::<Option<u64>>(redis::cmd("GET").arg(&key)) {
            Ok(Some(v)) if v == i => {}
            Ok(other) => return Err(format!("GET {key} right after SET {i}: {other:?} (a wrong answer)")),
            Err(e) => errors.push(format!("GET {key}: {e}")),
        }
    }
    Ok((acked, errors))
}

/// Cluster mode: the cluster client follows `-MOVED` to the new shard's leader.
#[test]
fn a_shard_splits_under_load_and_clients_follow_the_new_map() {
    split_under_load(true);
}

/// Plain mode: a client connected to a node that leads nothing; the node forwards each
/// request, to the new shard once the slot moved.
#[test]
fn a_shard_splits_under_load_behind_a_forwarding_node() {
    split_under_load(false);
}

fn split_under_load(cluster: bool) {
    let mut c = Cluster::new(None, &format!("shards = 2\nelection_ticks = 30\ncluster_mode = {cluster}"));
    let seed = c.start(1, true);
    for id in 2..=3 {
        c.start(id, false);
    }
    let admin = c.admin();
    for id in 2..=3 {
        admin.add_server(&seed, &c.addr(id), 3).unwrap();
    }
    // Shard 1000 (slots 0-8191) led by node 2, shard 1001 by node 3.
    admin.transfer(&seed, 1000, 2).unwrap();
    admin.transfer(&seed, 1001, 3).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster && slot_ranges(&seed) != [(0, 8191, c.addr(2)), (8192, 16383, c.addr(3))] {
        assert!(Instant::now() < deadline, "routes not published: {:?}", slot_ranges(&seed));
        std::thread::sleep(Duration::from_millis(50));
    }

    let stop = AtomicBool::new(false);
    let url = c.url(1);
    let (records, child) = std::thread::scope(|s| {
        let writers: Vec<_> = (0..3)
            .map(|t| {
                s.spawn({
                    let (url, stop) = (url.clone(), &stop);
                    move || writer(url, cluster, t, stop)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        // What `flotilla-admin split 1000` sends, through a node that does not lead it.
        let child = call(&c.addr(1), &["FLOTILLA.SPLIT", "1000"]);
        std::thread::sleep(Duration::from_millis(2000));
        stop.store(true, Ordering::Relaxed);
        let records: Vec<Record> = writers.into_iter().map(|w| w.join().unwrap().unwrap()).collect();
        (records, child)
    });
    assert_eq!(child, Value::Int(1002), "the new shard's group");

    // Every node's CLUSTER SLOTS shows the new map: 4096-8191 moved, led by the shard's
    // leader (the split's first leader).
    let want = [(0, 4095, c.addr(2)), (4096, 8191, c.addr(2)), (8192, 16383, c.addr(3))];
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in (1..=3).filter(|_| cluster) {
        while slot_ranges(&c.addr(id)) != want {
            assert!(Instant::now() < deadline, "node {id}: {:?}", slot_ranges(&c.addr(id)));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if cluster {
        let Value::Array(Some(shards)) = call(&c.addr(3), &["CLUSTER", "SHARDS"]) else { panic!() };
        assert_eq!(shards.len(), 3, "CLUSTER SHARDS: one entry per shard");
    }

    // Every acknowledged write is there, through a fresh cluster client.
    let (total, errors): (usize, usize) =
        records.iter().fold((0, 0), |(a, e), r| (a + r.0.len(), e + r.1.len()));
    eprintln!("{total} writes acknowledged, {errors} errors");
    for (_, errs) in &records {
        for e in errs {
            assert!(!e.contains("WRONGSLOT"), "a shard's refusal reached the client: {e}");
        }
    }
    assert!(total > 100, "too little load to prove anything ({total})");
    let moved = records
        .iter()
        .flat_map(|r| &r.0)
        .filter(|(k, _)| (4096..8192).contains(&key_slot(k.as_bytes())))
        .count();
    assert!(moved > 10, "few keys in the moved slots ({moved})");
    let mut con = Con::open(&c.url(3), cluster).unwrap();
    for (key, v) in records.iter().flat_map(|r| &r.0) {
        let got: Option<u64> = con.query(redis::cmd("GET").arg(key)).unwrap();
        assert_eq!(got, Some(*v), "acknowledged write of {key} lost or wrong");
    }
    // DBSIZE, KEYS and SCAN count the new shard's keys too.
    let distinct: std::collections::BTreeSet<&String> =
        records.iter().flat_map(|r| &r.0).map(|(k, _)| k).collect();
    if !cluster {
        let Value::Int(n) = call(&c.addr(1), &["DBSIZE"]) else { panic!("DBSIZE") };
        assert!(n as usize >= distinct.len(), "DBSIZE {n} misses keys: {} acknowledged", distinct.len());
        let Value::Array(Some(keys)) = call(&c.addr(1), &["KEYS", "*"]) else { panic!("KEYS") };
        assert_eq!(keys.len(), n as usize, "KEYS * and DBSIZE agree");
        return;
    }
    // A node that does not lead the new shard answers -MOVED to its leader.
    let (key, _) = records
        .iter()
        .flat_map(|r| &r.0)
        .find(|(k, _)| (4096..8192).contains(&key_slot(k.as_bytes())))
        .unwrap();
    let slot = key_slot(key.as_bytes());
    assert_eq!(call(&c.addr(3), &["GET", key]), Value::Error(format!("MOVED {slot} {}", c.addr(2))));
    drop(c);
}

/// Automatic split by size (`split_keys`): a one-node cluster whose only shard passes the
/// threshold splits by itself; every key stays readable with its value, and the new shard
/// shows in `CLUSTER SHARDS`. A backup then holds both shards, and restores into a fresh
/// cluster of two shards with every key.
#[test]
fn a_shard_past_the_size_threshold_splits_by_itself() {
    let mut c = Cluster::new(None, "shards = 1\ncluster_mode = true\nsplit_keys = 300");
    let seed = c.start(1, true);
    c.wait_writable(1, "k");
    wait_one_range(&seed);
    let client = redis::cluster::ClusterClient::new(vec![c.url(1)]).unwrap();
    let mut con = client.get_connection().unwrap();
    for i in 0..400u64 {
        let _: () = redis::cmd("SET").arg(format!("k{i}")).arg(i).query(&mut con).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let Value::Array(Some(shards)) = call(&seed, &["CLUSTER", "SHARDS"]) else { panic!() };
        if shards.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no automatic split: {} shards", shards.len());
        std::thread::sleep(Duration::from_millis(100));
    }
    let ranges = slot_ranges(&seed);
    assert_eq!(ranges.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(), [(0, 8191), (8192, 16383)]);
    let client = redis::cluster::ClusterClient::new(vec![c.url(1)]).unwrap();
    let mut con = client.get_connection().unwrap();
    for i in 0..400u64 {
        let got: Option<u64> = redis::cmd("GET").arg(format!("k{i}")).query(&mut con).unwrap();
        assert_eq!(got, Some(i), "k{i}");
    }
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("b");
    let m = c.admin().backup(&seed, &backup).unwrap();
    assert_eq!((m.shards, m.groups.len()), (2, 2), "the split-off shard is backed up too");
    let mut dst = Cluster::new(None, "shards = 2\nrestore = true");
    let fresh = dst.start(1, true);
    c.admin().restore(&fresh, &backup).unwrap();
    let mut con = dst.redis(1);
    for i in 0..400u64 {
        let got: Option<u64> = redis::cmd("GET").arg(format!("k{i}")).query(&mut con).unwrap();
        assert_eq!(got, Some(i), "restored k{i}");
    }
}

/// Automatic split by write load (`split_write_bytes_per_sec`): a one-node cluster whose
/// only shard takes writes faster than the threshold (measured by the engine,
/// `GroupStatus::load`) splits by itself; the keys stay readable.
#[test]
fn a_shard_past_the_write_load_threshold_splits_by_itself() {
    let mut c = Cluster::new(None, "shards = 1\ncluster_mode = true\nsplit_write_bytes_per_sec = 20000");
    let seed = c.start(1, true);
    c.wait_writable(1, "k");
    wait_one_range(&seed);
    let client = redis::cluster::ClusterClient::new(vec![c.url(1)]).unwrap();
    let mut con = client.get_connection().unwrap();
    let value = "v".repeat(1000);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut written = 0u64;
    loop {
        let Value::Array(Some(shards)) = call(&seed, &["CLUSTER", "SHARDS"]) else { panic!() };
        if shards.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no automatic split after {written} writes");
        // A few dozen KB/s over few keys: load, not size.
        for _ in 0..20 {
            let _: () =
                redis::cmd("SET").arg(format!("k{}", written % 10)).arg(&value).query(&mut con).unwrap();
            written += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let client = redis::cluster::ClusterClient::new(vec![c.url(1)]).unwrap();
    let mut con = client.get_connection().unwrap();
    for i in 0..10u64.min(written) {
        let got: Option<String> = redis::cmd("GET").arg(format!("k{i}")).query(&mut con).unwrap();
        assert_eq!(got.as_deref(), Some(value.as_str()), "k{i}");
    }
}

/// Two splits proposed at the same moment (neither child exists yet when the other picks
/// its group) get different new shards: the child's group comes from the meta group, one allocation
/// at a time. Before, both picked the same group, the second child was "kept" as the
/// first, and the second split's keys were lost. Every key stays readable with its value.
#[test]
fn simultaneous_splits_get_different_shards_and_lose_nothing() {
    let mut c = Cluster::new(None, "shards = 2");
    c.start(1, true);
    let addr = c.addr(1);
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    c.wait_writable(1, &keys[0]);
    for k in &keys {
        assert_eq!(call(&addr, &["SET", k, k]), Value::Simple("OK".into()));
    }
    // Both at once: each is proposed before the other's child exists anywhere.
    let barrier = std::sync::Barrier::new(2);
    let (a, b) = std::thread::scope(|s| {
        let split = |shard: &'static str| {
            let (addr, barrier) = (&addr, &barrier);
            s.spawn(move || {
                let mut cl = Client::connect(addr, Duration::from_secs(5)).unwrap();
                cl.set_timeout(Duration::from_secs(20)).unwrap();
                barrier.wait();
                cl.call(&["FLOTILLA.SPLIT", shard]).unwrap()
            })
        };
        let (a, b) = (split("1000"), split("1001"));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (Value::Int(a), Value::Int(b)) = (&a, &b) else { panic!("splits answered {a:?} and {b:?}") };
    assert_ne!(a, b, "two splits got the same new shard");
    let deadline = Instant::now() + Duration::from_secs(30);
    for k in &keys {
        loop {
            match call(&addr, &["GET", k]) {
                Value::Bulk(Some(v)) if v == k.as_bytes() => break,
                other => assert!(Instant::now() < deadline, "{k}: {other:?} after the splits"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let Value::Int(n) = call(&addr, &["DBSIZE"]) else { panic!("DBSIZE") };
    assert_eq!(n, 200);
}
