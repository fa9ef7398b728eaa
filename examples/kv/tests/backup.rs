//! `flotilla-admin backup DIR` and `restore DIR` as an operator runs them, with real node
//! processes on loopback: a backup under load holds every write acknowledged before it
//! began, a restore seeds a fresh cluster with exactly the backed-up data (nothing never
//! written), the restored cluster grows with `add-servers`, and restores into a cluster
//! with data or another shard count are refused with a clear error.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Cluster;
use flotilla_kv::cluster_backup::Manifest;

fn admin(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla-admin"))
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

/// Every SET a writer acknowledged: key -> (value, when).
type Acked = Arc<Mutex<BTreeMap<String, (String, Instant)>>>;

/// Writes unique keys through `url` until told to stop (at most 100,000 or 60 s); every
/// key it ever sent is recorded in `tried`, the acknowledged ones in `acked`.
fn writer(
    w: usize,
    url: String,
    stop: Arc<AtomicBool>,
    tried: Arc<Mutex<BTreeSet<String>>>,
    acked: Acked,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) && i < 100_000 && Instant::now() < deadline {
            let (k, v) = (format!("b{w}-{i}"), format!("value-{w}-{i}"));
            tried.lock().unwrap().insert(k.clone());
            let r: redis::RedisResult<String> = redis::cmd("SET").arg(&k).arg(&v).query(&mut con);
            if r.is_ok() {
                acked.lock().unwrap().insert(k, (v, Instant::now()));
            }
            i += 1;
        }
    })
}

#[test]
fn backup_under_load_restores_into_a_fresh_cluster_that_then_grows() {
    // The source: 3 nodes, 4 shards, leaders spread, writers on every node.
    let mut src = Cluster::new(None, "shards = 4");
    let seed = src.start(1, true);
    src.wait_writable(1, "w");
    src.start(2, false);
    src.start(3, false);
    let a = src.admin();
    a.add_server(&seed, &src.addr(2), 3).unwrap();
    a.add_server(&seed, &src.addr(3), 3).unwrap();
    let groups: Vec<u64> = a.view(&seed).unwrap().shard_groups().map(|g| g.group).collect();
    a.transfer(&seed, groups[1], 2).unwrap();
    a.transfer(&seed, groups[2], 3).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let tried: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let acked: Acked = Arc::default();
    let ws: Vec<_> = (0..3)
        .map(|w| writer(w, src.url(w as u64 + 1), stop.clone(), tried.clone(), acked.clone()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 300 {
        assert!(Instant::now() < deadline, "the load did not start");
        std::thread::sleep(Duration::from_millis(10));
    }

    let dir = src.dir.path().join("backup");
    let began = Instant::now();
    let (code, out, err) = admin(&["--seed", &seed, "backup", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with(&format!("backed up 4 shards to {}\n", dir.display())), "{out}");
    // The writers went on during the backup; then they stop.
    let during = acked.lock().unwrap().values().filter(|(_, t)| *t > began).count();
    stop.store(true, Ordering::Relaxed);
    for w in ws {
        w.join().unwrap();
    }
    let m: Manifest = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!((m.format, m.shards, m.groups.len()), (1, 4, 4));
    assert_eq!(m.directory.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    for (i, g) in m.groups.iter().enumerate() {
        assert_eq!(g.shard as usize, i);
        assert!(g.index > 0 && g.term > 0 && g.bytes > 0, "{g:?}");
        assert_eq!(std::fs::metadata(dir.join(&g.file)).unwrap().len(), g.bytes);
    }
    // A second backup into the same directory is refused.
    let (code, _, err) = admin(&["--seed", &seed, "backup", dir.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("is not empty"), "{err}");
    // A restore into this cluster (it holds data, and runs without restore = true).
    let (code, _, err) = admin(&["--seed", &seed, "restore", dir.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("already holds data"), "{err}");

    // The target: a fresh bootstrap node with restore = true; and one with another shard
    // count, refused.
    let mut dst = Cluster::new(None, "shards = 3\nrestore = true");
    let other = dst.start(9, true);
    let (code, _, err) = admin(&["--seed", &other, "restore", dir.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("the backup holds 4 shards") && err.contains("configured with 3"), "{err}");
    dst.kill(9);
    dst.extra = "shards = 4\nrestore = true".into();
    let fresh = dst.start(1, true);
    let (code, out, err) = admin(&["--seed", &fresh, "restore", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, format!("restored 4 shards from {}\n", dir.display()));

    // Every write acknowledged before the backup began is there, with its value.
    let mut con = dst.redis(1);
    let acked = acked.lock().unwrap();
    let before: Vec<(&String, &String)> =
        acked.iter().filter(|(_, (_, t))| *t < began).map(|(k, (v, _))| (k, v)).collect();
    assert!(before.len() >= 300);
    for chunk in before.chunks(500) {
        let keys: Vec<&String> = chunk.iter().map(|(k, _)| *k).collect();
        let got: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut con).unwrap();
        for ((k, v), g) in chunk.iter().zip(got) {
            assert_eq!(g.as_deref(), Some(v.as_str()), "{k} acknowledged before the backup");
        }
    }
    // Nothing that was never written: every key restored was sent by a writer (or is the
    // readiness probe), with the value it was sent with.
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    let tried = tried.lock().unwrap();
    for k in &keys {
        if k == "w" {
            continue;
        }
        assert!(tried.contains(k), "{k} was never written");
        let v: String = redis::cmd("GET").arg(k).query(&mut con).unwrap();
        let (w, i) = k[1..].split_once('-').unwrap();
        assert_eq!(v, format!("value-{w}-{i}"));
    }
    assert!(keys.len() >= before.len(), "{} keys restored, {} acknowledged before", keys.len(), before.len());
    eprintln!("{} acknowledged before the backup, {during} during it, {} restored", before.len(), keys.len());

    // A second restore into the restored cluster is refused.
    let (code, _, err) = admin(&["--seed", &fresh, "restore", dir.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("already holds data"), "{err}");

    // The restored cluster grows as any other: a new node gets every shard.
    dst.extra = "shards = 4".into();
    let second = dst.start(2, false);
    let b = dst.admin();
    b.add_server(&fresh, &second, 2).unwrap();
    let v = b.view(&fresh).unwrap();
    for g in v.shard_groups() {
        let mut vs = g.voters.clone();
        vs.sort();
        assert_eq!(vs, vec![1, 2], "group {}", g.group);
    }
    b.transfer(&fresh, groups[0], 2).unwrap();
    let (k, v) = before[0];
    let got: String = redis::cmd("GET").arg(k).query(&mut dst.redis(2)).unwrap();
    assert_eq!(&got, v);
    let _: () = redis::cmd("SET").arg("after-restore").arg("1").query(&mut dst.redis(2)).unwrap();
}
