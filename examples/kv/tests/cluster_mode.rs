//! The Redis Cluster protocol (issue 14, point 2): real node processes with
//! `cluster_mode = true`, the `CLUSTER` replies a cluster-aware client builds its slot map
//! from, `-MOVED` to the leader of a key's shard, `READONLY` reads on a follower, and
//! `-CROSSSLOT`; then real cluster clients (pip's `RedisCluster`, the `redis` crate's
//! cluster client, `redis-benchmark --cluster`) at their default settings through leader
//! transfers and a node added and removed.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Cluster;
use flotilla_kv::client::Client;
use flotilla_kv::redis_cluster::node_name;
use flotilla_kv::resp::Value;
use flotilla_kv::slots::{key_slot, SLOTS};

fn call(addr: &str, args: &[&str]) -> Value {
    let mut c = Client::connect(addr, Duration::from_secs(5)).unwrap();
    c.set_timeout(Duration::from_secs(20)).unwrap();
    c.call(args).unwrap()
}

fn text(v: &Value) -> String {
    match v {
        Value::Bulk(Some(b)) | Value::Verbatim(_, b) => String::from_utf8_lossy(b).into_owned(),
        Value::Simple(s) => s.to_string(),
        Value::Error(s) => s.clone(),
        other => panic!("not text: {other:?}"),
    }
}

/// `CLUSTER SLOTS` as (start, end, [(ip:port, id)...]), sorted.
type SlotMap = Vec<(i64, i64, Vec<(String, String)>)>;

fn slot_map(addr: &str) -> SlotMap {
    let Value::Array(Some(ranges)) = call(addr, &["CLUSTER", "SLOTS"]) else { panic!("CLUSTER SLOTS") };
    ranges
        .iter()
        .map(|r| {
            let Value::Array(Some(f)) = r else { panic!("{r:?}") };
            let (Value::Int(a), Value::Int(b)) = (&f[0], &f[1]) else { panic!("{f:?}") };
            let nodes = f[2..]
                .iter()
                .map(|n| {
                    let Value::Array(Some(n)) = n else { panic!("{n:?}") };
                    assert_eq!(n.len(), 4, "ip, port, id, metadata: {n:?}");
                    let Value::Int(port) = n[1] else { panic!("{n:?}") };
                    (format!("{}:{port}", text(&n[0])), text(&n[2]))
                })
                .collect();
            (*a, *b, nodes)
        })
        .collect()
}

/// Starts `n` nodes in cluster mode, every shard with 3 voters, and spreads the shards'
/// leaderships over the nodes.
fn cluster(n: u64, shards: u32) -> (Cluster, String) {
    let mut c = Cluster::new(None, &format!("shards = {shards}\nelection_ticks = 30\ncluster_mode = true"));
    let seed = c.start(1, true);
    for id in 2..=n {
        c.start(id, false);
    }
    let admin = c.admin();
    for id in 2..=n {
        admin.add_server(&seed, &c.addr(id), 3).unwrap();
    }
    for s in 0..shards as u64 {
        let to = s % n + 1;
        if to != 1 {
            admin.transfer(&seed, 1000 + s, to).unwrap();
        }
    }
    (c, seed)
}

/// Waits until every node's `CLUSTER SLOTS` names the leaders the admin view reports (the
/// routes are published through the meta group).
fn wait_converged(c: &Cluster, ids: &[u64]) -> SlotMap {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view = c.admin().view(&c.addr(ids[0])).unwrap();
        let want: BTreeMap<u64, String> =
            view.shard_groups().map(|g| (g.group, c.addr(g.leader.unwrap_or(0).max(1)))).collect();
        let maps: Vec<SlotMap> = ids.iter().map(|&id| slot_map(&c.addr(id))).collect();
        let leaders_ok = maps.iter().all(|m| {
            m.len() == want.len()
                && m.iter()
                    .zip(want.values())
                    .all(|((_, _, nodes), leader)| nodes.first().map(|n| &n.0) == Some(leader))
        });
        if leaders_ok && maps.windows(2).all(|w| w[0] == w[1]) {
            return maps.into_iter().next().unwrap();
        }
        assert!(Instant::now() < deadline, "CLUSTER SLOTS did not converge: {maps:?} want {want:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn cluster_replies_moved_readonly_and_crossslot() {
    let (c, _) = cluster(3, 4);
    let map = wait_converged(&c, &[1, 2, 3]);
    // The four shards' even shares, each led by its node, with the other two as replicas.
    assert_eq!(
        map.iter().map(|(a, b, _)| (*a, *b)).collect::<Vec<_>>(),
        [(0, 4095), (4096, 8191), (8192, 12287), (12288, 16383)]
    );
    for (i, (_, _, nodes)) in map.iter().enumerate() {
        assert_eq!(nodes.len(), 3, "leader and two replicas: {nodes:?}");
        let leader = i as u64 % 3 + 1;
        assert_eq!(nodes[0], (c.addr(leader), node_name(leader)));
        assert!(nodes.iter().all(|(_, id)| id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit())));
    }

    // CLUSTER NODES: each node once, a master with the slots of the shards it leads.
    let nodes = text(&call(&c.addr(2), &["CLUSTER", "NODES"]));
    let lines: Vec<&str> = nodes.lines().collect();
    assert_eq!(lines.len(), 3, "{nodes}");
    for (id, line) in (1..=3u64).zip(&lines) {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f[0], node_name(id));
        assert!(f[1].starts_with(&format!("{}@", c.addr(id))), "{line}");
        assert_eq!(f[2], if id == 2 { "myself,master" } else { "master" }, "{line}");
        assert_eq!(&f[3..8], ["-", "0", "0", "0", "connected"]);
        let want: Vec<String> = map
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as u64 % 3 + 1 == id)
            .map(|(_, (a, b, _))| format!("{a}-{b}"))
            .collect();
        assert_eq!(f[8..], want.iter().map(String::as_str).collect::<Vec<_>>()[..], "{line}");
    }
    // CLUSTER SHARDS: one entry per shard with its slots and nodes by role.
    let Value::Array(Some(shards)) = call(&c.addr(3), &["CLUSTER", "SHARDS"]) else { panic!() };
    assert_eq!(shards.len(), 4);
    let Value::Array(Some(first)) = &shards[0] else { panic!("RESP2: a flat array") };
    assert_eq!(text(&first[0]), "slots");
    assert_eq!(first[1], Value::Array(Some(vec![Value::Int(0), Value::Int(4095)])));
    let Value::Array(Some(members)) = &first[3] else { panic!() };
    let roles: Vec<String> = members
        .iter()
        .map(|m| {
            let Value::Array(Some(kv)) = m else { panic!() };
            text(&kv[kv.iter().position(|k| *k == Value::bulk("role")).unwrap() + 1])
        })
        .collect();
    assert_eq!(roles, ["master", "replica", "replica"]);
    assert_eq!(text(&call(&c.addr(1), &["CLUSTER", "MYID"])), node_name(1));
    assert_eq!(call(&c.addr(1), &["CLUSTER", "KEYSLOT", "foo"]), Value::Int(12182));
    let info = text(&call(&c.addr(1), &["CLUSTER", "INFO"]));
    assert!(
        info.starts_with("cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\n"),
        "{info}"
    );
    assert!(info.contains("cluster_known_nodes:3\r\ncluster_size:3\r\n"), "{info}");
    let hello = call(&c.addr(1), &["HELLO", "3"]);
    let Value::Map(hello) = hello else { panic!("{hello:?}") };
    assert!(hello.contains(&(Value::bulk("mode"), Value::bulk("cluster"))), "HELLO's mode: {hello:?}");

    // -MOVED from a node that does not lead the key's shard, naming the one that does.
    let slot = key_slot(b"foo");
    let (_, _, owners) = map.iter().find(|(a, b, _)| (*a..=*b).contains(&(slot as i64))).unwrap();
    let leader_addr = owners[0].0.clone();
    let other = (1..=3).map(|i| c.addr(i)).find(|a| *a != leader_addr).unwrap();
    assert_eq!(call(&other, &["SET", "foo", "1"]), Value::err(format!("MOVED {slot} {leader_addr}")));
    assert_eq!(call(&other, &["GET", "foo"]), Value::err(format!("MOVED {slot} {leader_addr}")));
    assert_eq!(call(&leader_addr, &["SET", "foo", "bar"]), Value::ok());
    // READONLY: the follower serves the read itself, and sees the write just acknowledged.
    let mut ro = Client::connect(&other, Duration::from_secs(5)).unwrap();
    assert_eq!(ro.call(&["READONLY"]).unwrap(), Value::ok());
    assert_eq!(ro.call(&["GET", "foo"]).unwrap(), Value::bulk("bar"));
    assert_eq!(
        ro.call(&["SET", "foo", "x"]).unwrap(),
        Value::err(format!("MOVED {slot} {leader_addr}")),
        "writes still move"
    );
    assert_eq!(ro.call(&["READWRITE"]).unwrap(), Value::ok());
    assert_eq!(ro.call(&["GET", "foo"]).unwrap(), Value::err(format!("MOVED {slot} {leader_addr}")));
    // -CROSSSLOT for keys of different slots; hash tags put keys in one slot.
    let cross = Value::err("CROSSSLOT Keys in request don't hash to the same slot");
    for cmd in
        [&["MGET", "a", "b"][..], &["MSET", "a", "1", "b", "2"], &["DEL", "a", "b"], &["EXISTS", "a", "b"]]
    {
        assert_eq!(call(&leader_addr, cmd), cross, "{cmd:?}");
    }
    let tagged = key_slot(b"u");
    let (_, _, owners) = map.iter().find(|(a, b, _)| (*a..=*b).contains(&(tagged as i64))).unwrap();
    assert_eq!(call(&owners[0].0, &["MSET", "{u}a", "1", "{u}b", "2"]), Value::ok());
    assert_eq!(
        call(&owners[0].0, &["MGET", "{u}a", "{u}b"]),
        Value::Array(Some(vec![Value::bulk("1"), Value::bulk("2")]))
    );
    assert_eq!(SLOTS, 16384);
}

/// Real cluster clients at their default settings: pip's `RedisCluster` (in a Python
/// process) and the `redis` crate's cluster client run SET/GET/INCR/MGET with hash tags
/// while leaderships move between the nodes and a fourth node is added, leads a shard, and
/// is removed; no error reaches either application and every counter is exact. Then
/// `redis-benchmark --cluster` runs.
#[test]
fn cluster_clients_through_transfers_and_a_node_added_and_removed() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let (mut c, seed) = cluster(3, 4);
    wait_converged(&c, &[1, 2, 3]);
    let (host, port) = c.addr(1).rsplit_once(':').map(|(h, p)| (h.to_string(), p.to_string())).unwrap();
    let stop_file = c.dir.path().join("stop-clients");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/cluster_client.py");
    let py = std::process::Command::new("python3")
        .args([script, &host, &port, stop_file.to_str().unwrap(), "60"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // The redis crate's cluster client, in a thread of its own.
    let stop = Arc::new(AtomicBool::new(false));
    let rust_client = {
        let (stop, url) = (stop.clone(), c.url(2));
        std::thread::spawn(move || -> Result<u64, String> {
            let client = redis::cluster::ClusterClient::new(vec![url]).map_err(|e| e.to_string())?;
            let mut con = client.get_connection().map_err(|e| e.to_string())?;
            let mut counts = [0i64; 8];
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) && rounds < 100_000 {
                let t = (rounds % 8) as usize;
                let (s, n) = (format!("{{r{t}}}s"), format!("{{r{t}}}n"));
                let q = |cmd: &mut redis::Cmd, con: &mut redis::cluster::ClusterConnection| {
                    cmd.query::<redis::Value>(con).map_err(|e| format!("round {rounds}: {e}"))
                };
                q(redis::cmd("SET").arg(&s).arg(rounds), &mut con)?;
                counts[t] += 1;
                let got = q(redis::cmd("INCR").arg(&n), &mut con)?;
                if got != redis::Value::Int(counts[t]) {
                    return Err(format!("INCR {n}: {got:?}, expected {}", counts[t]));
                }
                let got = q(redis::cmd("MGET").arg(&s).arg(&n), &mut con)?;
                let want = redis::Value::Array(vec![
                    redis::Value::BulkString(rounds.to_string().into_bytes()),
                    redis::Value::BulkString(counts[t].to_string().into_bytes()),
                ]);
                if got != want {
                    return Err(format!("MGET {s} {n}: {got:?}, expected {want:?}"));
                }
                rounds += 1;
            }
            Ok(rounds)
        })
    };

    // Leaderships move around while both clients run.
    let admin = c.admin();
    let pause = || std::thread::sleep(Duration::from_millis(300));
    for (group, to) in [(1000, 2), (1001, 3), (1002, 1), (1003, 1), (1000, 3), (1001, 1)] {
        pause();
        admin.transfer(&seed, group, to).unwrap();
    }
    // A fourth node joins, gets a replica of shard 0 and its leadership, then leaves.
    c.start(4, false);
    admin.add_server(&seed, &c.addr(4), 3).unwrap();
    admin.add_replica(&seed, 1000, 4).unwrap();
    admin.transfer(&seed, 1000, 4).unwrap();
    pause();
    pause();
    admin.remove_server(&seed, 4).unwrap();
    // As an operator would: stop the node once no node's slot map names it any more (a
    // client that still asks it meanwhile is sent on with -MOVED) and the clients have
    // refreshed theirs (a leader change makes them). A client holding a map that names a
    // dead node fails in the redis crate 0.27 (its slot refresh stops at the first dead
    // connection), as it does against Redis Cluster.
    wait_converged(&c, &[1, 2, 3]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let names_4 =
        |id: u64| slot_map(&c.addr(id)).iter().any(|(_, _, ns)| ns.iter().any(|(a, _)| *a == c.addr(4)));
    while [1, 2, 3, 4].into_iter().any(names_4) {
        assert!(Instant::now() < deadline, "a slot map still names node 4");
        std::thread::sleep(Duration::from_millis(50));
    }
    admin.transfer(&seed, 1002, 2).unwrap();
    pause();
    c.kill(4);
    pause();
    admin.transfer(&seed, 1003, 3).unwrap();
    pause();

    std::fs::write(&stop_file, b"").unwrap();
    stop.store(true, Ordering::Relaxed);
    let out = py.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "RedisCluster failed: {stdout}{stderr}");
    assert!(stdout.contains("\"ops\""), "{stdout}");
    let rounds = rust_client.join().unwrap().unwrap();
    assert!(rounds > 10, "the redis crate's cluster client ran {rounds} rounds");
    eprintln!("RedisCluster: {stdout}; redis crate: {rounds} rounds");

    // redis-benchmark in cluster mode reads CLUSTER NODES and sends each key to its master.
    let bench = std::process::Command::new("redis-benchmark")
        .args(["-h", &host, "-p", &port, "--cluster", "-t", "set,get", "-n", "2000", "-c", "10", "-q"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&bench.stdout).into_owned() + &String::from_utf8_lossy(&bench.stderr);
    assert!(bench.status.success(), "{text}");
    assert!(text.contains("SET:") && text.contains("GET:"), "{text}");
    assert!(!text.to_lowercase().contains("error"), "{text}");
}

/// Cluster mode's replies byte for byte with a redis-server started with
/// `--cluster-enabled yes` owning every slot (one node each), over RESP2 and RESP3: key
/// slots, `-CROSSSLOT`, READONLY/READWRITE, and the CLUSTER argument errors.
#[test]
fn cluster_mode_replies_match_redis_server_byte_for_byte() {
    use common::{assert_same_replies, replies, start_redis, strs};
    let mut c = Cluster::new(None, "shards = 2\ncluster_mode = true");
    c.start(1, true);
    wait_converged(&c, &[1]);
    let conf = c.dir.path().join("redis-nodes.conf");
    let (_redis, redis_addr) = start_redis(
        c.dir.path(),
        &["--cluster-enabled", "yes", "--cluster-config-file", conf.to_str().unwrap()],
    );
    assert_eq!(call(&redis_addr, &["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]), Value::ok());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !text(&call(&redis_addr, &["CLUSTER", "INFO"])).starts_with("cluster_state:ok") {
        assert!(Instant::now() < deadline, "redis-server's cluster state did not become ok");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut seq: Vec<Vec<String>> =
        ["foo", "bar", "hello", "", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap", "{a}{b}", "a{b}c"]
            .iter()
            .map(|k| vec!["CLUSTER".into(), "KEYSLOT".into(), k.to_string()])
            .collect();
    let more: Vec<Vec<&str>> = vec![
        vec!["SET", "{t}a", "1"],
        vec!["MSET", "{t}a", "1", "{t}b", "2"],
        vec!["MGET", "{t}a", "{t}b", "{t}c"],
        vec!["MGET", "a", "b"],
        vec!["MSET", "a", "1", "b", "2"],
        vec!["DEL", "a", "b"],
        vec!["EXISTS", "a", "{t}a"],
        vec!["DEL", "{t}a", "{t}b"],
        vec!["READONLY"],
        vec!["READWRITE"],
        vec!["READONLY", "x"],
        vec!["CLUSTER"],
        vec!["CLUSTER", "KEYSLOT"],
        vec!["CLUSTER", "KEYSLOT", "a", "b"],
        vec!["CLUSTER", "MYID", "x"],
        vec!["CLUSTER", "SLOTS", "x"],
        vec!["CLUSTER", "NOSUCH"],
    ];
    seq.extend(more.iter().map(|c| c.iter().map(|s| s.to_string()).collect()));
    for proto in ["2", "3"] {
        let mut cmds: Vec<Vec<String>> = vec![vec!["HELLO".into(), proto.into()]];
        cmds.extend(seq.iter().cloned());
        let cmds = strs(&cmds);
        let (ours, theirs) = (replies(&c.addr(1), &cmds), replies(&redis_addr, &cmds));
        assert_same_replies(&ours, &theirs, &cmds, 1, &format!("RESP{proto}: "));
    }
}

/// Transactions in cluster mode, judged at EXEC as Redis Cluster does: all keys (queued
/// commands' and watched ones) in one slot, else `-CROSSSLOT`; at a node not leading that
/// slot's shard, `-MOVED`; the transaction is discarded either way.
#[test]
fn cluster_mode_transactions_are_one_slot_at_its_leader() {
    let (c, _) = cluster(2, 2);
    let map = wait_converged(&c, &[1, 2]);
    let owner = |key: &[u8]| {
        let slot = key_slot(key) as i64;
        map.iter().find(|(a, b, _)| (*a..=*b).contains(&slot)).unwrap().2[0].0.clone()
    };
    let leader = owner(b"{t}");
    let other = (1..=2).map(|i| c.addr(i)).find(|a| *a != leader).unwrap();
    let run = |addr: &str, cmds: &[&[&str]]| {
        let mut cl = Client::connect(addr, Duration::from_secs(5)).unwrap();
        cmds.iter().map(|cmd| cl.call(cmd).unwrap()).collect::<Vec<_>>()
    };
    let queued = Value::Simple("QUEUED".into());
    let r = run(&leader, &[&["MULTI"], &["SET", "{t}a", "1"], &["INCR", "{t}n"], &["EXEC"]]);
    assert_eq!(r[1..3], [queued.clone(), queued.clone()]);
    assert_eq!(r[3], Value::Array(Some(vec![Value::ok(), Value::Int(1)])));
    let r = run(&leader, &[&["MULTI"], &["SET", "{t}a", "1"], &["SET", "{u}b", "1"], &["EXEC"], &["EXEC"]]);
    assert_eq!(r[3], Value::err("CROSSSLOT Keys in request don't hash to the same slot"));
    assert_eq!(r[4], Value::err("ERR EXEC without MULTI"), "discarded");
    let slot = key_slot(b"{t}");
    let r = run(&other, &[&["MULTI"], &["INCR", "{t}n"], &["EXEC"]]);
    assert_eq!(r[2], Value::err(format!("MOVED {slot} {leader}")));
    assert_eq!(run(&leader, &[&["GET", "{t}n"]])[0], Value::bulk("1"), "the moved transaction did not run");
}
