//! flotilla-kv's replies compared byte for byte with redis-server's (Debian's Redis 7.0) on
//! the same command sequences, over RESP2 and over RESP3 (issue 14, points 1 and 3): the
//! reply types and texts a client library parses must be Redis's own.
#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_same_replies, replies, start_redis, strs, Cluster};
use flotilla_kv::resp::parse_value;
#[test]
fn replies_match_redis_server_byte_for_byte_in_resp2_and_resp3() {
    let mut c = Cluster::new(None, "shards = 2");
    c.start(1, true);
    c.wait_writable(1, "warmup");
    let (_redis, redis_addr) = start_redis(c.dir.path(), &[]);
    let seq: Vec<Vec<&str>> = vec![
        vec!["PING"],
        vec!["PING", "hi"],
        vec!["ECHO", "a b"],
        vec!["SET", "c:k", "v"],
        vec!["SET", "c:k", "w", "NX"],
        vec!["SET", "c:k", "w", "XX"],
        vec!["SET", "c:absent", "w", "XX"],
        vec!["GET", "c:k"],
        vec!["GET", "c:absent"],
        vec!["INCR", "c:n"],
        vec!["INCRBY", "c:n", "41"],
        vec!["DECR", "c:n"],
        vec!["DECRBY", "c:n", "2"],
        vec!["INCR", "c:k"],
        vec!["INCRBY", "c:n", "x"],
        vec!["MSET", "c:a", "1", "c:b", "2"],
        vec!["MGET", "c:a", "c:absent", "c:b"],
        vec!["EXISTS", "c:a", "c:b", "c:absent"],
        vec!["DEL", "c:a", "c:absent"],
        vec!["APPEND", "c:s", "ab"],
        vec!["APPEND", "c:s", "cd"],
        vec!["STRLEN", "c:s"],
        vec!["STRLEN", "c:absent"],
        vec!["GETSET", "c:s", "new"],
        vec!["GETSET", "c:g", "first"],
        vec!["GETDEL", "c:s"],
        vec!["GETDEL", "c:s"],
        vec!["SETNX", "c:s", "1"],
        vec!["SETNX", "c:s", "2"],
        vec!["GET", "c:s"],
        vec!["TYPE", "c:s"],
        vec!["TYPE", "c:absent"],
        vec!["TYPE"],
        vec!["APPEND", "c:s"],
        vec!["SETNX", "c:s"],
        vec!["SELECT", "0"],
        // Cluster mode is off: Redis's standalone answer (tests/cluster_mode.rs has it on).
        vec!["CLUSTER", "SLOTS"],
        vec!["CLUSTER", "KEYSLOT", "foo"],
        vec!["READONLY"],
        vec!["READWRITE"],
        vec!["CLIENT", "SETNAME", "me"],
        vec!["CLIENT", "GETNAME"],
        vec!["CLIENT", "SETNAME", "a b"],
        vec!["SELECT", "16"],
        vec!["GET"],
        vec!["SET", "c:k"],
        vec!["NOSUCH", "a", "b"],
        vec!["CONFIG"],
        vec!["CONFIG", "GET"],
        vec!["CONFIG", "GET", "nosuchparam"],
        vec!["CONFIG", "NOSUCH"],
        vec!["CLIENT"],
        vec!["CLIENT", "NOSUCH"],
        vec!["COMMAND", "COUNT", "x"],
        vec!["INCR", "c:n", "extra"],
        vec!["HELLO", "4"],
        vec!["HELLO", "3", "BOGUS"],
    ];
    for proto in ["2", "3"] {
        let mut cmds = vec![vec!["HELLO", proto]];
        cmds.extend(seq.iter().cloned());
        // Fresh keys for each protocol on both servers.
        let cmds: Vec<Vec<String>> =
            cmds.iter().map(|c| c.iter().map(|a| a.replace("c:", &format!("c{proto}:"))).collect()).collect();
        let cmds = strs(&cmds);
        let ours = replies(&c.addr(1), &cmds);
        let theirs = replies(&redis_addr, &cmds);
        // HELLO's own reply names the server's version and the client id: compared as a
        // shape (same type byte and length) only.
        assert_eq!(ours[0][..3], theirs[0][..3], "HELLO {proto}");
        assert_same_replies(&ours, &theirs, &cmds, 1, &format!("RESP{proto}: "));
    }
}

/// What is out of scope (scripting, pub/sub, lists, sets, sorted sets, streams, blocking
/// commands) is refused with Redis's own unknown-command error, word for word, and is
/// checked against redis-server's reply to a command it does not know either.
#[test]
fn out_of_scope_commands_get_redis_s_unknown_command_error() {
    let mut c = Cluster::new(None, "shards = 1");
    c.start(1, true);
    c.wait_writable(1, "warmup");
    let (_redis, redis_addr) = start_redis(c.dir.path(), &[]);
    let out_of_scope: Vec<Vec<&str>> = vec![
        vec!["EVAL", "return 1", "0"],
        vec!["SUBSCRIBE", "ch"],
        vec!["PUBLISH", "ch", "m"],
        vec!["LPUSH", "l", "a", "b"],
        vec!["SADD", "s", "a"],
        vec!["ZADD", "z", "1", "a"],
        vec!["XADD", "x", "*", "f", "v"],
        vec!["BLPOP", "l", "0"],
    ];
    let ours = replies(&c.addr(1), &out_of_scope);
    // redis-server knows these commands, so ask it for the same names with a prefix it does
    // not know and put the name back: the format is the one under test.
    let renamed: Vec<Vec<String>> = out_of_scope
        .iter()
        .map(|c| {
            c.iter().enumerate().map(|(i, a)| if i == 0 { format!("zz{a}") } else { a.to_string() }).collect()
        })
        .collect();
    let renamed = strs(&renamed);
    let theirs = replies(&redis_addr, &renamed);
    for (i, cmd) in out_of_scope.iter().enumerate() {
        let want = String::from_utf8_lossy(&theirs[i]).replacen(
            &format!("'zz{}'", cmd[0]),
            &format!("'{}'", cmd[0]),
            1,
        );
        assert!(want.starts_with("-ERR unknown command"), "{want}");
        assert_eq!(String::from_utf8_lossy(&ours[i]), want, "{cmd:?}");
    }
}

/// COMMAND answers Redis 7.0's own entries for the commands served here (clients read
/// arity, flags and key positions from it), byte for byte with redis-server's, and every
/// command it lists is one the server runs (never the unknown-command error).
#[test]
fn command_introspection_matches_redis_server() {
    let mut c = Cluster::new(None, "shards = 1");
    c.start(1, true);
    c.wait_writable(1, "warmup");
    let (_redis, redis_addr) = start_redis(c.dir.path(), &[]);
    let names: Vec<String> = flotilla_kv::command_table::names().map(str::to_string).collect();
    // CLIENT, CONFIG and COMMAND list only the subcommands served here, unlike Redis.
    let plain: Vec<&str> =
        names.iter().map(String::as_str).filter(|n| !["client", "config", "command"].contains(n)).collect();
    for proto in ["2", "3"] {
        let mut cmds: Vec<Vec<&str>> = vec![vec!["HELLO", proto]];
        for n in &plain {
            cmds.push(vec!["COMMAND", "INFO", n]);
            cmds.push(vec!["COMMAND", "DOCS", n]);
        }
        cmds.push(vec!["COMMAND", "INFO", "nosuchcommand"]);
        cmds.push(vec!["COMMAND", "DOCS", "nosuchcommand"]);
        cmds.push(vec!["COMMAND", "NOSUCH"]);
        let ours = replies(&c.addr(1), &cmds);
        let theirs = replies(&redis_addr, &cmds);
        assert_same_replies(&ours, &theirs, &cmds, 1, &format!("RESP{proto}: "));
    }
    let count = replies(&c.addr(1), &[vec!["COMMAND", "COUNT"]]);
    assert_eq!(String::from_utf8_lossy(&count[0]), format!(":{}\r\n", names.len()));
    // QUIT last: it closes the connection.
    let mut names: Vec<&str> = names.iter().map(String::as_str).filter(|n| *n != "quit").collect();
    names.push("quit");
    let each: Vec<Vec<&str>> = names.iter().map(|n| vec![*n]).collect();
    for (n, r) in names.iter().zip(replies(&c.addr(1), &each)) {
        let r = String::from_utf8_lossy(&r).into_owned();
        assert!(!r.contains("unknown command"), "{n}: {r}");
    }
}

/// KEYS (Redis globs) and FLUSHDB across the shards, against redis-server: the same keys
/// (in any order: both answer in hash order), the same replies otherwise.
#[test]
fn keys_and_flushdb_match_redis_server() {
    let mut c = Cluster::new(None, "shards = 3");
    c.start(1, true);
    c.wait_writable(1, "warmup");
    let (_redis, redis_addr) = start_redis(c.dir.path(), &[]);
    let mut cmds: Vec<Vec<&str>> = vec![vec!["FLUSHDB"], vec!["DBSIZE"]];
    let keys = ["user:1:name", "user:2:name", "user:2:mail", "hello", "hallo", "hxllo", "a*b", "", "x"];
    for k in keys {
        cmds.push(vec!["SET", k, "v"]);
    }
    let patterns = ["*", "user:*:name", "h?llo", "h[ae]llo", "h[^e]llo", "a\\*b", "nomatch*", "[a-h]*"];
    for p in patterns {
        cmds.push(vec!["KEYS", p]);
    }
    cmds.extend([
        vec!["DBSIZE"],
        vec!["FLUSHDB", "BAD"],
        vec!["KEYS"],
        vec!["FLUSHDB", "ASYNC"],
        vec!["DBSIZE"],
    ]);
    cmds.push(vec!["KEYS", "*"]);
    let ours = replies(&c.addr(1), &cmds);
    let theirs = replies(&redis_addr, &cmds);
    let sorted = |b: &[u8]| match parse_value(b, 1 << 20, 4).unwrap().unwrap().0 {
        flotilla_kv::resp::Value::Array(Some(mut vs)) => {
            vs.sort_by_key(|v| format!("{v:?}"));
            format!("{vs:?}")
        }
        v => format!("{v:?}"),
    };
    for (i, cmd) in cmds.iter().enumerate() {
        if cmd[0] == "KEYS" && cmd.len() == 2 {
            assert_eq!(sorted(&ours[i]), sorted(&theirs[i]), "{cmd:?}");
        } else {
            assert_eq!(String::from_utf8_lossy(&ours[i]), String::from_utf8_lossy(&theirs[i]), "{cmd:?}");
        }
    }
}

/// Every key of a SCAN, with MATCH, COUNT and TYPE, across the shards: a full iteration
/// returns each key once and the same keys as redis-server's; the errors are Redis's.
#[test]
fn scan_matches_redis_server() {
    let mut c = Cluster::new(None, "shards = 3");
    c.start(1, true);
    c.wait_writable(1, "warmup");
    let (_redis, redis_addr) = start_redis(c.dir.path(), &[]);
    let keys: Vec<String> =
        (0..60).map(|i| if i % 3 == 0 { format!("user:{i}") } else { format!("k{i}") }).collect();
    let mut setup: Vec<Vec<&str>> = vec![vec!["FLUSHDB"]];
    setup.extend(keys.iter().map(|k| vec!["SET", k.as_str(), "v"]));
    for addr in [c.addr(1), redis_addr.clone()] {
        replies(&addr, &setup);
    }
    let full_scan = |addr: &str, opts: &[&str]| -> Vec<String> {
        let mut cursor = "0".to_string();
        let mut seen = Vec::new();
        for _ in 0..1000 {
            let mut cmd = vec!["SCAN", cursor.as_str()];
            cmd.extend_from_slice(opts);
            let r = replies(addr, &[cmd]).remove(0);
            let flotilla_kv::resp::Value::Array(Some(parts)) =
                parse_value(&r, 1 << 20, 4).unwrap().unwrap().0
            else {
                panic!("{}", String::from_utf8_lossy(&r))
            };
            let [flotilla_kv::resp::Value::Bulk(Some(next)), flotilla_kv::resp::Value::Array(Some(ks))] =
                parts.as_slice()
            else {
                panic!("{parts:?}")
            };
            for k in ks {
                let flotilla_kv::resp::Value::Bulk(Some(k)) = k else { panic!("{k:?}") };
                seen.push(String::from_utf8(k.clone()).unwrap());
            }
            cursor = String::from_utf8(next.clone()).unwrap();
            if cursor == "0" {
                return seen;
            }
        }
        panic!("SCAN did not end");
    };
    for opts in [
        &[][..],
        &["COUNT", "2"][..],
        &["MATCH", "user:*", "COUNT", "5"][..],
        &["TYPE", "string"][..],
        &["TYPE", "hash"][..],
    ] {
        let ours = full_scan(&c.addr(1), opts);
        let mut once = ours.clone();
        once.sort();
        once.dedup();
        assert_eq!(once.len(), ours.len(), "a key returned twice with {opts:?}");
        let mut theirs = full_scan(&redis_addr, opts);
        theirs.sort();
        theirs.dedup();
        assert_eq!(once, theirs, "{opts:?}");
    }
    let errors: Vec<Vec<&str>> = vec![
        vec!["SCAN", "x"],
        vec!["SCAN", "0", "COUNT", "0"],
        vec!["SCAN", "0", "COUNT", "x"],
        vec!["SCAN", "0", "BOGUS", "1"],
        vec!["SCAN", "0", "MATCH"],
        vec!["SCAN"],
    ];
    let ours = replies(&c.addr(1), &errors);
    let theirs = replies(&redis_addr, &errors);
    assert_same_replies(&ours, &theirs, &errors, 0, "");
}
