//! The admin and rebalance tools as an operator runs them: the real binaries against real
//! node processes on loopback, checking exit codes, messages and the resulting layout.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Cluster;
use redis::Commands;

fn tool(bin: &str, args: &[&str]) -> (i32, String, String) {
    tool_env(bin, args, None)
}

/// Runs a tool with the admin password in its environment (never on its command line).
fn tool_env(bin: &str, args: &[&str], admin_pw: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(bin);
    cmd.args(args).env_remove("FLOTILLA_PASSWORD").env_remove("FLOTILLA_ADMIN_PASSWORD");
    if let Some(pw) = admin_pw {
        cmd.env("FLOTILLA_ADMIN_PASSWORD", pw);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn admin(args: &[&str]) -> (i32, String, String) {
    tool(env!("CARGO_BIN_EXE_flotilla-admin"), args)
}

fn rebalance(args: &[&str]) -> (i32, String, String) {
    tool(env!("CARGO_BIN_EXE_flotilla-rebalance"), args)
}

/// A write load on `addr` that records every failed request; stops when told.
fn load(url: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, Vec<String>)> {
    std::thread::spawn(move || {
        let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
        let (mut n, mut errors) = (0u64, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            let r: redis::RedisResult<()> = con.set(format!("load{}", n % 50), n);
            if let Err(e) = r {
                errors.push(e.to_string());
            }
            n += 1;
        }
        (n, errors)
    })
}

/// `flotilla-admin`: status, add-servers, transfer-leader (one group, all of a node),
/// remove-servers (replicas and leaders moved away first), exit codes and messages.
#[test]
fn admin_tool_adds_transfers_removes() {
    let mut c = Cluster::new(Some("pw"), "shards = 3\nelection_ticks = 30");
    let seed = c.start(1, true);
    c.wait_writable(1, "w");
    for id in [2, 3, 4] {
        c.start(id, false);
    }
    let (a2, a3, a4) = (c.addr(2), c.addr(3), c.addr(4));
    let base = ["--seed", seed.as_str()];
    let with = |rest: &[&str]| -> Vec<String> { base.iter().chain(rest).map(|s| s.to_string()).collect() };
    let admin_pw = common::admin_password("pw");
    let run = |rest: &[&str]| {
        let a = with(rest);
        tool_env(
            env!("CARGO_BIN_EXE_flotilla-admin"),
            &a.iter().map(String::as_str).collect::<Vec<_>>(),
            Some(&admin_pw),
        )
    };

    // Wrong password, the data user's password, unreachable seed, usage.
    let bin = env!("CARGO_BIN_EXE_flotilla-admin");
    let (code, _, err) = tool_env(bin, &["--seed", &seed, "status"], Some("bad"));
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("authentication failed") && err.contains("WRONGPASS"), "{err}");
    let (code, _, err) = tool_env(bin, &["--seed", &seed, "--user", "default", "status"], Some("pw"));
    assert_eq!(code, 4, "the data user is not an admin: {err}");
    assert!(err.contains("authentication failed") && err.contains("NOPERM"), "{err}");
    let (code, _, err) = admin(&["--seed", "127.0.0.1:1", "status"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.starts_with("flotilla-admin: node at 127.0.0.1:1:"), "{err}");
    assert_eq!(admin(&["--seed", &seed, "transfer-leader", "--to", "2"]).0, 2);

    // A node configured with another shard count is refused before anything changes.
    let extra = std::mem::replace(&mut c.extra, "shards = 4\nelection_ticks = 30".into());
    let a5 = c.start(5, false);
    c.extra = extra;
    let (code, out, err) = run(&["add-servers", &a5]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert_eq!(
        err,
        format!("flotilla-admin: node 5 at {a5} is configured with 4 shards, the cluster with 3\n")
    );
    c.kill(5);

    let (code, out, err) = run(&["add-servers", &a2, &a3, &a4, "--replicas", "3"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("added node 2 ({a2})\nadded node 3 ({a3})\nadded node 4 ({a4})\n"));
    let view = c.admin().view(&seed).unwrap();
    for g in view.shard_groups() {
        let mut v = g.voters.clone();
        v.sort();
        assert_eq!(v, vec![1, 2, 3], "shards get 3 voters; node 4 none yet");
    }
    assert_eq!(view.groups[&1].voters.len(), 4, "every node is in the meta group");
    let (code, out, _) = run(&["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("NODE") && out.contains("meta") && out.contains("1000"), "{out}");

    let (code, out, err) = run(&["transfer-leader", "--group", "1000", "--to", "2"]);
    assert_eq!((code, out.as_str()), (0, "group 1000 now led by node 2\n"), "{err}");
    let (code, out, err) = run(&["transfer-leader", "--from", "1", "--to", "3"]);
    assert_eq!((code, out.as_str()), (0, "moved 2 leaderships from node 1 to node 3\n"), "{err}");
    let v = c.admin().view(&seed).unwrap();
    assert_eq!(v.leaders_per_node().get(&1), Some(&0));
    assert_eq!(v.groups[&1000].leader, Some(2));
    // Node 4 has no replica of group 1000: refused, with the reason.
    let (code, _, err) = run(&["transfer-leader", "--group", "1000", "--to", "4"]);
    assert_eq!(code, 1);
    assert!(err.contains("transfer group 1000 to node 4") && err.contains("not a member"), "{err}");

    // Remove node 3 (which leads two shards) under client load: its replicas move to node 4.
    let _: () = c.redis(2).set("before", "1").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = load(c.url(2), stop.clone());
    let (code, out, err) = run(&["remove-servers", "3"]);
    assert_eq!((code, out.as_str()), (0, "removed node 3\n"), "{err}");
    stop.store(true, Ordering::Relaxed);
    let (n, errors) = writer.join().unwrap();
    assert!(n > 0 && errors.is_empty(), "{n} requests, failed: {errors:?}");
    let v = c.admin().view(&seed).unwrap();
    assert_eq!(v.nodes.keys().copied().collect::<Vec<_>>(), vec![1, 2, 4], "node 3 left the directory");
    for g in v.groups.values() {
        assert!(!g.voters.contains(&3) && !g.learners.contains(&3), "group {}: {g:?}", g.group);
        if g.group != 1 {
            let mut vs = g.voters.clone();
            vs.sort();
            assert_eq!(vs, vec![1, 2, 4], "group {} kept 3 replicas", g.group);
        }
    }
    let got: String = c.redis(4).get("before").unwrap();
    assert_eq!(got, "1");
}

/// `flotilla-rebalance --by count`: every leader on one node gets evened out; a new empty node gets
/// its share of replicas; `--dry-run` changes nothing; no client request fails meanwhile.
#[test]
fn rebalance_evens_leaders_then_replicas_without_failed_requests() {
    let mut c = Cluster::new(None, "shards = 6\nelection_ticks = 30");
    let seed = c.start(1, true);
    c.wait_writable(1, "w");
    c.start(2, false);
    c.start(3, false);
    let a = c.admin();
    a.add_server(&seed, &c.addr(2), 3).unwrap();
    a.add_server(&seed, &c.addr(3), 3).unwrap();
    // Every leader on node 1 (where the founder's are, unless an election moved one).
    a.transfer_all(&seed, 2, 1).unwrap();
    a.transfer_all(&seed, 3, 1).unwrap();
    assert_eq!(a.view(&seed).unwrap().leaders_per_node()[&1], 6, "node 1 leads everything");

    let (code, out, err) = rebalance(&["--seed", &seed, "--by", "count", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("plan: 0 replica moves, 4 leader moves\n"), "{out}");
    assert_eq!(a.view(&seed).unwrap().leaders_per_node()[&1], 6, "dry run changed nothing");

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (1..=3).map(|i| load(c.url(i), stop.clone())).collect();
    let (code, out, err) = rebalance(&["--seed", &seed, "--by", "count", "--rate", "50"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("LEADERS(before -> after)"), "{out}");
    let l = a.view(&seed).unwrap().leaders_per_node();
    assert_eq!(l.values().copied().collect::<Vec<_>>(), vec![2, 2, 2], "{l:?}");

    // A new node with no shard replica.
    c.start(4, false);
    a.add_server(&seed, &c.addr(4), 3).unwrap();
    assert_eq!(a.view(&seed).unwrap().replicas_per_node()[&4], 0);
    let started = Instant::now();
    let (code, out, err) = rebalance(&["--seed", &seed, "--by", "count", "--rate", "50"]);
    assert_eq!(code, 0, "{out}{err}");
    let v = a.view(&seed).unwrap();
    let r = v.replicas_per_node();
    let (max, min) = (r.values().max().unwrap(), r.values().min().unwrap());
    assert!(max - min <= 1 && *min >= 4, "replicas evened: {r:?}");
    assert!(v.shard_groups().all(|g| g.voters.len() == 3), "no shard lost a replica: {v:?}");
    let l = v.leaders_per_node();
    let (max, min) = (l.values().max().unwrap(), l.values().min().unwrap());
    assert!(max - min <= 1, "leaders evened: {l:?}");
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let (n, errors) = w.join().unwrap();
        assert!(n > 0 && errors.is_empty(), "{n} requests, failed: {errors:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(120));
}

/// `flotilla-admin status --json`: one document naming every node, the meta group and
/// every shard with its leader, voters and each follower's lag, as the cluster view has
/// them; `--watch` with `--count` prints that many frames (tables, or one JSON document
/// per line).
#[test]
fn status_json_names_every_shard_and_its_leader_and_watch_redraws() {
    use flotilla_kv::cluster::StatusDoc;
    let mut c = Cluster::new(None, "shards = 3");
    let seed = c.start(1, true);
    c.wait_writable(1, "w");
    c.start(2, false);
    let a = c.admin();
    a.add_server(&seed, &c.addr(2), 2).unwrap();
    a.transfer(&seed, 1001, 2).unwrap();

    let (code, out, err) = admin(&["--seed", &seed, "status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let doc: StatusDoc = serde_json::from_str(&out).unwrap();
    let raw: serde_json::Value = serde_json::from_str(&out).unwrap();
    for field in ["nodes", "meta", "shards"] {
        assert!(raw.get(field).is_some(), "{field} missing: {out}");
    }
    assert_eq!(
        doc.nodes.iter().map(|n| (n.id, n.state.as_str())).collect::<Vec<_>>(),
        [(1, "up"), (2, "up")]
    );
    assert_eq!(doc.nodes[0].client, seed);
    assert_eq!(doc.shards.iter().map(|g| g.group).collect::<Vec<_>>(), [1000, 1001, 1002]);
    let leaders: Vec<Option<u64>> = doc.shards.iter().map(|g| g.leader).collect();
    assert_eq!(leaders[1], Some(2), "{out}");
    let view = a.view(&seed).unwrap();
    for g in &doc.shards {
        assert_eq!(g.leader, view.groups[&g.group].leader, "group {}", g.group);
        let l = g.leader.unwrap();
        let mut vs = g.voters.clone();
        vs.sort();
        assert_eq!(vs, [1, 2]);
        assert_eq!(g.lag.iter().map(|x| x.node).collect::<Vec<_>>(), [3 - l], "the follower's lag: {out}");
        assert!(g.term > 0 && g.commit > 0);
    }
    assert_eq!(doc.meta.as_ref().map(|m| m.group), Some(1));
    assert_eq!(doc.nodes.iter().map(|n| n.leaders).sum::<usize>(), 3);

    let (code, out, err) = admin(&["--seed", &seed, "status", "--watch", "0.1", "--count", "3"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("NODE  CLIENT").count(), 3, "{out}");
    let (code, out, err) = admin(&["--seed", &seed, "status", "--json", "--watch", "0.1", "--count", "2"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for l in lines {
        let d: StatusDoc = serde_json::from_str(l).unwrap();
        assert_eq!(d.shards.len(), 3);
    }
    // --count needs --watch.
    assert_eq!(admin(&["--seed", &seed, "status", "--count", "2"]).0, 2);
}
