//! The key-value server as a client sees it: real node processes on loopback, driven with
//! the `redis` crate (and raw TCP for malformed input).

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::Cluster;
use flotilla_kv::sm::META_GROUP;
use redis::Commands;

/// The seeds' bootstrap: node 1 founds every group alone, nodes 2 and 3 start empty and are
/// added (learner, catch-up, promote); then every node serves reads and writes of every
/// shard (forwarding to leaders it is not), pipelined or not, and leaders can move.
#[test]
fn bootstrap_then_add_two_nodes_reads_writes_forwarding_pipelining() {
    // Long election timeouts: leadership must stay where the test puts it on a loaded CI.
    let mut c = Cluster::new(None, "shards = 4\nelection_ticks = 30");
    let seed = c.start(1, true);
    c.wait_writable(1, "warmup");
    c.start(2, false);
    c.start(3, false);
    // The new nodes hold nothing yet.
    let admin = c.admin();
    assert!(admin.node_status(&c.addr(2)).unwrap().replicas.is_empty());
    for id in [2, 3] {
        assert_eq!(admin.add_server(&seed, &c.addr(id), 3).unwrap(), id);
    }
    let v = admin.view(&seed).unwrap();
    assert_eq!(v.groups.len(), 5, "meta + 4 shards: {v:?}");
    for g in v.groups.values() {
        let mut voters = g.voters.clone();
        voters.sort();
        assert_eq!(voters, vec![1, 2, 3], "group {}", g.group);
        assert_eq!(g.leader, Some(1), "group {} still led by the founder", g.group);
    }
    // Every node learnt every address through the meta group's log.
    for id in [1, 2, 3] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let st = admin.node_status(&c.addr(id)).unwrap();
            let known = st.directory.keys().copied().collect::<Vec<_>>();
            if known == vec![1, 2, 3] && st.replicas.iter().any(|r| r.group == META_GROUP) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "node {id} knows {known:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // Spread leaders: shard groups 1000, 1001 to node 2, 1002 to node 3.
    admin.transfer(&seed, 1000, 2).unwrap();
    admin.transfer(&seed, 1001, 2).unwrap();
    admin.transfer(&seed, 1002, 3).unwrap();
    let v = admin.view(&seed).unwrap();
    assert_eq!(v.groups[&1000].leader, Some(2));
    assert_eq!(v.groups[&1002].leader, Some(3));

    // Writes through every node (most forwarded), reads through every node.
    let mut cons: Vec<redis::Connection> = (1..=3).map(|i| c.redis(i)).collect();
    for i in 0..60 {
        let _: () = cons[i % 3].set(format!("k{i}"), format!("v{i}")).unwrap();
    }
    for con in cons.iter_mut() {
        for i in 0..60 {
            let v: String = con.get(format!("k{i}")).unwrap();
            assert_eq!(v, format!("v{i}"));
        }
    }
    // INCR and conditional SETs through a node that leads only some shards.
    let con = &mut cons[2];
    for _ in 0..5 {
        let _: i64 = con.incr("counter", 1).unwrap();
    }
    let n: i64 = cons[0].get("counter").unwrap();
    assert_eq!(n, 5);
    let nx: Option<String> = redis::cmd("SET").arg("k1").arg("other").arg("NX").query(&mut cons[1]).unwrap();
    assert_eq!(nx, None, "NX on an existing key is refused");
    let xx: Option<String> = redis::cmd("SET").arg("fresh").arg("v").arg("XX").query(&mut cons[1]).unwrap();
    assert_eq!(xx, None, "XX on a missing key is refused");
    let ok: Option<String> = redis::cmd("SET").arg("fresh").arg("v").arg("NX").query(&mut cons[1]).unwrap();
    assert_eq!(ok.as_deref(), Some("OK"));
    let err: redis::RedisResult<i64> = cons[1].incr("k1", 1);
    assert!(err.unwrap_err().to_string().contains("not an integer"));

    // Multi-key commands across shards.
    let _: () =
        redis::cmd("MSET").arg(&["a", "1", "b", "2", "c", "3", "d", "4"]).query(&mut cons[1]).unwrap();
    let got: Vec<Option<String>> = cons[2].mget(&["d", "nope", "a", "c", "b"]).unwrap();
    assert_eq!(got, vec![Some("4".into()), None, Some("1".into()), Some("3".into()), Some("2".into())]);
    let ex: i64 = redis::cmd("EXISTS").arg(&["a", "b", "nope"]).query(&mut cons[0]).unwrap();
    assert_eq!(ex, 2);
    let del: i64 = cons[0].del(&["a", "b", "nope"]).unwrap();
    assert_eq!(del, 2);
    let size: i64 = redis::cmd("DBSIZE").query(&mut cons[1]).unwrap();
    assert_eq!(size, 60 + 1 + 1 + 2 + 1, "k0..k59, counter, fresh, c, d, warmup");

    // Pipelined: 300 writes then reads on one connection through node 3, replies in order.
    let mut p = redis::pipe();
    for i in 0..300 {
        p.cmd("SET").arg(format!("p{i}")).arg(i);
    }
    for i in 0..300 {
        p.cmd("GET").arg(format!("p{i}"));
    }
    p.cmd("INCR").arg("p7").cmd("GET").arg("p7");
    let r: Vec<redis::Value> = p.query(&mut cons[2]).unwrap();
    assert_eq!(r.len(), 602);
    for i in 0..300 {
        assert_eq!(r[i], redis::Value::Okay);
        assert_eq!(redis::from_redis_value::<i64>(&r[300 + i]).unwrap(), i as i64);
    }
    assert_eq!(redis::from_redis_value::<i64>(&r[600]).unwrap(), 8);
    assert_eq!(redis::from_redis_value::<i64>(&r[601]).unwrap(), 8);
    // Same-key order holds through a pipeline on every node, whether the shard is led
    // there or forwarded: INCR replies count up one by one.
    for (i, con) in cons.iter_mut().enumerate() {
        let key = format!("ord{i}");
        let mut p = redis::pipe();
        for _ in 0..100 {
            p.cmd("INCR").arg(&key);
        }
        p.cmd("GET").arg(&key);
        let r: Vec<i64> = p.query(con).unwrap();
        assert_eq!(r, (1..=100).chain([100]).collect::<Vec<i64>>(), "node {}", i + 1);
    }

    // Leadership moves during writes: requests keep succeeding (retried inside).
    let writer = {
        let mut con = c.redis(3);
        std::thread::spawn(move || {
            for i in 0..200 {
                let _: () = con.set(format!("m{i}"), i).unwrap();
            }
        })
    };
    for (g, to) in [(1000, 3), (1001, 1), (1002, 2), (1003, 2)] {
        admin.transfer(&seed, g, to).unwrap();
    }
    writer.join().unwrap();
    for i in 0..200 {
        let v: i64 = cons[0].get(format!("m{i}")).unwrap();
        assert_eq!(v, i);
    }
    let info: String = redis::cmd("INFO").query(&mut cons[0]).unwrap();
    assert!(info.contains("node_id:1") && info.contains("known_nodes:3"), "{info}");
}

/// A forwarded write whose connection to the leader's node broke after the request was
/// written is retried in node 1's client session, with the same (session, sequence), at
/// the next leader, and its client gets the real result instead of INDETERMINATE: node 2
/// leads the counter's shard and is frozen (SIGSTOP) before node 1 forwards an INCR to
/// it, then killed while node 1 waits for the reply. Node 2 never read the request, so
/// the retry at the new leader applies it: the reply is 2 and the counter 2. (That a retry
/// of a write already applied is answered with its first result and not applied again is
/// the engine's `engine_sessions` test and the chaos test's exact counters.) A server
/// without sessions answers INDETERMINATE here.
#[test]
fn forwarded_write_whose_reply_is_lost_is_retried_in_its_session() {
    // Long election timeouts: node 1 must still see node 2 as the leader when it forwards;
    // a retry budget that outlasts the election after the kill.
    let mut c = Cluster::new(None, "shards = 2\nelection_ticks = 100\nretry_budget_ms = 15000");
    let seed = c.start(1, true);
    c.wait_writable(1, "warmup");
    for id in [2, 3] {
        c.start(id, false);
        c.admin().add_server(&seed, &c.addr(id), 3).unwrap();
    }
    let key = "lost-reply";
    let group = flotilla_kv::sm::shard_group(flotilla_kv::sm::shard_of(key.as_bytes(), 2));
    let admin = c.admin();
    admin.transfer(&seed, group, 2).unwrap();
    // Node 1 knows node 2 leads (a forwarded write succeeds) and holds a connection to it.
    let mut con = c.redis(1);
    let v: i64 = redis::cmd("INCR").arg(key).query(&mut con).unwrap();
    assert_eq!(v, 1);
    // A state machine's error result comes back from the leader's node as it is, not as
    // an unknown outcome (`FLOTILLA.LOCAL` marks it final).
    let shard = flotilla_kv::sm::shard_of(key.as_bytes(), 2);
    let text = (0..)
        .map(|i| format!("str{i}"))
        .find(|k| flotilla_kv::sm::shard_of(k.as_bytes(), 2) == shard)
        .unwrap();
    let _: () = con.set(&text, "not a number").unwrap();
    let e = redis::cmd("INCR").arg(&text).query::<i64>(&mut con).unwrap_err();
    assert!(e.code() == Some("ERR") && e.to_string().contains("not an integer"), "{e}");
    let st = admin.node_status(&c.addr(1)).unwrap();
    let r = st.replicas.iter().find(|r| r.group == group).unwrap();
    assert_eq!(r.leader, Some(2), "node 1 routes group {group} to node 2");

    let pid = c.nodes[&2].child.as_ref().unwrap().id().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill").args([sig, pid.as_str()]).status().unwrap().success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let incr = std::thread::spawn(move || redis::cmd("INCR").arg(key).query::<i64>(&mut con));
    // Node 1 has written the forwarded request into the frozen node's socket by now.
    std::thread::sleep(Duration::from_millis(300));
    c.kill(2);
    let r = incr.join().unwrap();
    assert_eq!(
        r.as_ref().ok(),
        Some(&2),
        "a lost forwarded reply is retried in the session and applied once: {r:?}"
    );
    // Nodes 1 and 3 elected a leader; the frozen node never read the request: applied once.
    let mut con = c.redis(3);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let v = loop {
        match redis::cmd("GET").arg(key).query::<i64>(&mut con) {
            Ok(v) => break v,
            Err(e) => assert!(std::time::Instant::now() < deadline, "no leader after the kill: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(v, 2, "the INCR whose forwarded reply was lost is applied exactly once");
}

fn raw(addr: &str, send: &[u8]) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(send).unwrap();
    let mut out = Vec::new();
    // Ends only at EOF: the server must close the connection itself.
    s.read_to_end(&mut out).unwrap();
    out
}

/// AUTH gates every command; malformed and oversized input gets an error reply after the
/// replies to the commands before it, then a clean close; the server keeps serving.
#[test]
fn auth_malformed_and_oversized_input() {
    let mut c = Cluster::new(Some("s3cret"), "shards = 2\nmax_request_bytes = 1024");
    c.start(1, true);
    c.wait_writable(1, "k");
    let addr = c.addr(1);
    let url = format!("redis://{addr}/");
    let mut anon = redis::Client::open(url.as_str()).unwrap().get_connection().unwrap();
    let e = redis::cmd("GET").arg("k").query::<Option<String>>(&mut anon).unwrap_err();
    assert!(e.to_string().contains("NOAUTH"), "{e}");
    let e = redis::cmd("FLOTILLA.STATUS").query::<String>(&mut anon).unwrap_err();
    assert!(e.to_string().contains("NOAUTH"), "admin commands need AUTH too: {e}");
    let e = redis::cmd("AUTH").arg("wrong").query::<String>(&mut anon).unwrap_err();
    assert!(e.to_string().contains("WRONGPASS"), "{e}");
    assert!(redis::Client::open(format!("redis://:wrong@{addr}/")).unwrap().get_connection().is_err());
    let mut con = c.redis(1);
    let v: String = con.get("k").unwrap();
    assert_eq!(v, "x");
    let wrong_admin = flotilla_kv::cluster::Admin::new(Some("nope".into()));
    assert!(matches!(wrong_admin.node_status(&addr), Err(flotilla_kv::cluster::AdminError::Auth { .. })));

    // Garbage after a valid command.
    let out = raw(&addr, b"*2\r\n$4\r\nAUTH\r\n$6\r\ns3cret\r\n*1\r\n$4\r\nPING\r\n*x\r\nmore");
    assert_eq!(
        String::from_utf8_lossy(&out),
        "+OK\r\n+PONG\r\n-ERR Protocol error: invalid length or integer\r\n"
    );
    // Binary junk is an inline command (as in Redis): an unknown one; QUIT closes.
    let out = raw(&addr, b"AUTH s3cret\r\n\x00\xff\x13garbage\r\nQUIT\r\n");
    assert_eq!(
        String::from_utf8_lossy(&out),
        "+OK\r\n-ERR unknown command '\u{0}\u{fffd}\u{13}garbage', with args beginning with: \r\n+OK\r\n"
    );
    let out = raw(&addr, b"*1\r\n$4\r\nPINGxx\r\n");
    assert_eq!(String::from_utf8_lossy(&out), "-ERR Protocol error: bulk string not terminated by CRLF\r\n");
    // Oversized: a declared argument past max_request_bytes, and an endless inline line.
    let out = raw(&addr, b"*1\r\n$5000\r\n");
    assert_eq!(
        String::from_utf8_lossy(&out),
        "-ERR Protocol error: request too large (limit 1024 bytes)\r\n"
    );
    let out = raw(&addr, &vec![b'a'; 200_000]);
    assert!(String::from_utf8_lossy(&out).contains("too large"), "{out:?}");
    // Still serving.
    let v: String = c.redis(1).get("k").unwrap();
    assert_eq!(v, "x");
    let too_big = "v".repeat(2000);
    let e = c.redis(1).set::<_, _, ()>("big", too_big).unwrap_err();
    assert!(e.to_string().contains("too large") || e.is_connection_dropped() || e.is_io_error(), "{e}");
}

/// Shards snapshot and compact their logs; a node killed with SIGKILL restarts from the
/// snapshot plus the log with every acknowledged write.
#[test]
fn restart_restores_snapshot_and_log() {
    let mut c = Cluster::new(None, "shards = 2\ncompact_entries = 50");
    c.start(1, true);
    c.wait_writable(1, "k");
    let mut con = c.redis(1);
    for i in 0..400 {
        let _: () = con.set(format!("r{i}"), i).unwrap();
    }
    let _: i64 = con.incr("r0", 1000).unwrap();
    let info: String = redis::cmd("INFO").query(&mut con).unwrap();
    let compactions: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("compactions:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(compactions >= 2, "logs were compacted: {info}");
    c.restart(1);
    c.wait_writable(1, "after");
    let mut con = c.redis(1);
    let r0: i64 = con.get("r0").unwrap();
    assert_eq!(r0, 1000);
    for i in 1..400 {
        let v: i64 = con.get(format!("r{i}")).unwrap();
        assert_eq!(v, i);
    }
    let size: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(size, 402);
}

/// A bad configuration stops the node before it starts, with one error naming the key; the
/// example file in the repository is valid (with its certificate paths pointed at real
/// files).
#[test]
fn bad_config_names_the_key_and_example_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let ca = flotilla_net::ClusterCa::generate().unwrap();
    let pair = ca.issue_node(1).unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca.pem().cert_pem).unwrap();
    std::fs::write(dir.path().join("n.pem"), &pair.cert_pem).unwrap();
    std::fs::write(dir.path().join("n.key"), &pair.key_pem).unwrap();
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/kv.example.toml")).unwrap();
    let d = dir.path().display().to_string();
    let example = example
        .replace("certs/ca.pem", &format!("{d}/ca.pem"))
        .replace("certs/node-1.pem", &format!("{d}/n.pem"))
        .replace("certs/node-1.key", &format!("{d}/n.key"))
        .replace("/var/lib/flotilla-kv/node-1", &format!("{d}/data"));
    let v = flotilla_kv::config::NodeConfig::from_toml(&example).unwrap().validate().unwrap();
    assert_eq!((v.node_id, v.shards, v.bootstrap), (1, 16, true));
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, example.replace("shards = 16", "shards = 0")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla-kv"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "flotilla-kv: config key `shards`: 0 out of bounds 1..=16384\n"
    );
    assert!(!dir.path().join("data").exists(), "nothing started");
}
