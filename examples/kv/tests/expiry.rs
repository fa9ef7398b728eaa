//! Expiry replicated deterministically across nodes with skewed clocks (issue 14 point 3),
//! with real node processes on loopback: the leader stamps its clock into each write, so
//! relative expiries become the same absolute time on every replica; a read never returns
//! a value its serving node's clock says is expired, and TTL is judged there; expired keys
//! are removed by replicated deletes on every replica, and a key set again survives; the
//! apply time never goes backwards when leadership moves to a node whose clock is behind.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use flotilla_kv::clock::CLOCK_OFFSET_ENV;

/// Node 2's clock runs this far ahead of node 1's.
const SKEW_MS: i64 = 30_000;

fn query<T: redis::FromRedisValue>(c: &Cluster, node: u64, args: &[&str]) -> T {
    let mut con = c.redis(node);
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut con).unwrap()
}

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "not within 30 s: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn expiry_follows_the_leader_s_stamp_and_reads_judge_by_the_serving_node_s_clock() {
    let mut c = Cluster::new(None, "shards = 1");
    c.env = vec![(CLOCK_OFFSET_ENV.into(), "0".into())];
    let seed = c.start(1, true);
    c.wait_writable(1, "warmup");
    c.env = vec![(CLOCK_OFFSET_ENV.into(), SKEW_MS.to_string())];
    c.start(2, false);
    c.admin().add_server(&seed, &c.addr(2), 2).unwrap();
    let group = flotilla_kv::sm::shard_group(0);
    c.admin().transfer(&seed, group, 1).unwrap();

    // Leader node 1 (clock 0): a key living 10 s by its clock is already expired by node
    // 2's clock (+30 s). Reads run on the replica of the node asked (after ReadIndex).
    let _: () = query(&c, 1, &["SET", "k", "v", "PX", "10000"]);
    let _: () = query(&c, 1, &["SET", "again", "v", "PX", "10000"]);
    assert_eq!(query::<Option<String>>(&c, 1, &["GET", "k"]).as_deref(), Some("v"));
    assert_eq!(query::<Option<String>>(&c, 2, &["GET", "k"]), None, "expired by node 2's clock");
    assert_eq!(query::<i64>(&c, 2, &["TTL", "k"]), -2);
    assert_eq!(query::<i64>(&c, 2, &["EXISTS", "k"]), 0);
    assert_eq!(query::<Vec<String>>(&c, 2, &["KEYS", "*"]), vec!["warmup".to_string()]);
    let ttl: i64 = query(&c, 1, &["TTL", "k"]);
    assert!((1..=10).contains(&ttl), "node 1 judges by its own clock: {ttl}");
    // Set again without expiry before the replicated delete: it must survive it.
    let _: () = query(&c, 1, &["SET", "again", "kept"]);
    // The leader's active expiry removes `k` on every replica once its clock passes.
    for n in [1, 2] {
        eventually(&format!("k removed on node {n}"), || query::<i64>(&c, n, &["DBSIZE"]) == 2);
    }
    for n in [1, 2] {
        assert_eq!(query::<Option<String>>(&c, n, &["GET", "again"]).as_deref(), Some("kept"));
        assert_eq!(query::<i64>(&c, n, &["TTL", "again"]), -1);
    }

    // Leader node 2 (clock +30 s): its stamp fixes the expiry; node 1 judges it 30 s
    // further away.
    c.admin().transfer(&seed, group, 2).unwrap();
    let _: () = query(&c, 2, &["SET", "late", "v", "EX", "100"]);
    let on2: i64 = query(&c, 2, &["TTL", "late"]);
    let on1: i64 = query(&c, 1, &["TTL", "late"]);
    assert!((95..=100).contains(&on2), "{on2}");
    assert!(on1 - on2 >= 25, "node 1's clock is 30 s behind: {on1} vs {on2}");
    // A write forwarded by node 1 is stamped by the leader that proposes it (node 2).
    let _: () = query(&c, 1, &["SET", "fwd", "v", "EX", "100"]);
    let fwd: i64 = query(&c, 2, &["TTL", "fwd"]);
    assert!((95..=100).contains(&fwd), "stamped by node 2's clock, not node 1's: {fwd}");
    let at: i64 = query(&c, 1, &["PEXPIRETIME", "late"]);
    assert_eq!(at, query::<i64>(&c, 2, &["PEXPIRETIME", "late"]), "one absolute expiry on every replica");
    // INFO keyspace counts as Redis does: keys not yet deleted, and those with an expiry.
    let info: String = query(&c, 1, &["INFO"]);
    assert!(info.contains("db0:keys=4,expires=2,"), "{info}");

    // Back to node 1, whose clock is behind the last stamp: the apply time does not go
    // back, so EX 100 expires at least 100 s after node 2's stamp.
    c.admin().transfer(&seed, group, 1).unwrap();
    let _: () = query(&c, 1, &["SET", "back", "v", "EX", "100"]);
    let back: i64 = query(&c, 1, &["PEXPIRETIME", "back"]);
    assert!(back >= at, "apply time went backwards: {back} < {at}");
}
