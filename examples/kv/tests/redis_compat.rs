//! flotilla-kv's replies compared byte for byte with redis-server's (Debian's Redis 7.0) on
//! the same command sequences, over RESP2 and over RESP3 (issue 14, points 1 and 3): the
//! reply types and texts a client library parses must be Redis's own.
#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_same_replies, replies, start_redis, strs, Cluster};
use flotilla_kv::resp::{encode_command, parse_value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
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
    // Every fifth key a hash, so TYPE filters by the real type.
    setup.extend(keys.iter().enumerate().map(|(i, k)| {
        if i % 5 == 0 {
            vec!["HSET", k.as_str(), "f", "v"]
        } else {
            vec!["SET", k.as_str(), "v"]
        }
    }));
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

/// The typed and expiring commands (issue 14 point 3): SET's options, SETEX, GETEX, the
/// EXPIRE family with NX/XX/GT/LT, TTL (long TTLs, so the values are deterministic),
/// EXPIRETIME, hashes, WRONGTYPE on each command of the other type, and INCRBYFLOAT's
/// long double text, byte for byte with redis-server in RESP2 and RESP3.
#[test]
fn typed_and_expiring_commands_match_redis_server_byte_for_byte() {
    let mut c = Cluster::new(None, "shards = 2");
    c.start(1, true);
    c.wait_writable(1, "warmup");
    let (_redis, redis_addr) = start_redis(c.dir.path(), &[]);
    let seq: Vec<Vec<&str>> = vec![
        // SET's options.
        vec!["SET", "c:s", "v", "EX", "1000"],
        vec!["TTL", "c:s"],
        vec!["SET", "c:s", "w", "KEEPTTL"],
        vec!["TTL", "c:s"],
        vec!["SET", "c:s", "x"],
        vec!["TTL", "c:s"],
        vec!["SET", "c:s", "y", "GET"],
        vec!["SET", "c:s", "z", "NX", "GET"],
        vec!["SET", "c:new", "z", "XX", "GET"],
        vec!["SET", "c:new", "z", "NX", "GET"],
        vec!["SET", "c:s", "v", "EX", "10", "KEEPTTL"],
        vec!["SET", "c:s", "v", "KEEPTTL", "PX", "10"],
        vec!["SET", "c:s", "v", "NX", "XX"],
        vec!["SET", "c:s", "v", "EX", "0"],
        vec!["SET", "c:s", "v", "PX", "-5"],
        vec!["SET", "c:s", "v", "EX", "x"],
        vec!["SET", "c:s", "v", "PX"],
        vec!["SET", "c:s", "v", "BOGUS"],
        vec!["SET", "c:s", "v", "EX", "9223372036854775807"],
        vec!["SET", "c:s", "v", "ex", "5", "ex", "1000"],
        vec!["TTL", "c:s"],
        vec!["SET", "c:s", "v", "EXAT", "99999999999"],
        vec!["EXPIRETIME", "c:s"],
        vec!["PEXPIRETIME", "c:s"],
        vec!["SET", "c:s", "v", "PXAT", "99999999999123"],
        vec!["PEXPIRETIME", "c:s"],
        vec!["SET", "c:past", "v", "PXAT", "1"],
        vec!["GET", "c:past"],
        vec!["EXISTS", "c:past"],
        vec!["TTL", "c:past"],
        vec!["TYPE", "c:past"],
        vec!["SETEX", "c:se", "100", "v"],
        vec!["TTL", "c:se"],
        vec!["SETEX", "c:se", "0", "v"],
        vec!["SETEX", "c:se", "x", "v"],
        vec!["PSETEX", "c:se", "100000", "w"],
        vec!["TTL", "c:se"],
        vec!["GET", "c:se"],
        // GETEX.
        vec!["GETEX", "c:s", "EX", "1000"],
        vec!["TTL", "c:s"],
        vec!["GETEX", "c:s", "PERSIST"],
        vec!["TTL", "c:s"],
        vec!["GETEX", "c:s"],
        vec!["GETEX", "c:s", "KEEPTTL"],
        vec!["GETEX", "c:s", "EX", "0"],
        vec!["GETEX", "c:s", "EX", "1", "PERSIST"],
        vec!["GETEX", "c:absent", "EX", "5"],
        vec!["GETEX", "c:s", "PXAT", "1"],
        vec!["EXISTS", "c:s"],
        // The EXPIRE family.
        vec!["EXPIRE", "c:e", "100"],
        vec!["SET", "c:e", "v"],
        vec!["TTL", "c:e"],
        vec!["EXPIRE", "c:e", "100", "XX"],
        vec!["EXPIRE", "c:e", "100", "GT"],
        vec!["EXPIRE", "c:e", "100", "NX"],
        vec!["EXPIRE", "c:e", "200", "NX"],
        vec!["EXPIRE", "c:e", "50", "GT"],
        vec!["EXPIRE", "c:e", "300", "gt"],
        vec!["TTL", "c:e"],
        vec!["EXPIRE", "c:e", "400", "LT"],
        vec!["PEXPIRE", "c:e", "100000", "LT", "XX"],
        vec!["TTL", "c:e"],
        vec!["EXPIRE", "c:e", "1", "NX", "XX"],
        vec!["EXPIRE", "c:e", "1", "GT", "LT"],
        vec!["EXPIRE", "c:e", "1", "BAD"],
        vec!["EXPIRE", "c:e", "x"],
        vec!["EXPIRE", "c:e"],
        vec!["EXPIRE", "c:e", "9223372036854775807"],
        vec!["PEXPIRE", "c:e", "9223372036854775807"],
        vec!["EXPIREAT", "c:e", "99999999999"],
        vec!["EXPIRETIME", "c:e"],
        vec!["PEXPIREAT", "c:e", "99999999999999"],
        vec!["PEXPIRETIME", "c:e"],
        vec!["PERSIST", "c:e"],
        vec!["PERSIST", "c:e"],
        vec!["PERSIST", "c:absent"],
        vec!["TTL", "c:e"],
        vec!["PTTL", "c:e"],
        vec!["EXPIRETIME", "c:e"],
        vec!["EXPIRETIME", "c:absent"],
        vec!["PTTL", "c:absent"],
        vec!["EXPIRE", "c:e", "-1"],
        vec!["EXISTS", "c:e"],
        vec!["SET", "c:e", "v"],
        vec!["EXPIREAT", "c:e", "1"],
        vec!["GET", "c:e"],
        // Hashes.
        vec!["HSET", "c:h", "f", "1", "g", "2"],
        vec!["HSET", "c:h", "f", "3", "h", "4"],
        vec!["HGET", "c:h", "f"],
        vec!["HGET", "c:h", "nope"],
        vec!["HGET", "c:absent", "f"],
        vec!["HMGET", "c:h", "f", "nope", "g"],
        vec!["HMGET", "c:absent", "f"],
        vec!["HGETALL", "c:h"],
        vec!["HLEN", "c:h"],
        vec!["HEXISTS", "c:h", "f"],
        vec!["HEXISTS", "c:h", "z"],
        vec!["HKEYS", "c:h"],
        vec!["HVALS", "c:h"],
        vec!["HSTRLEN", "c:h", "f"],
        vec!["HSTRLEN", "c:h", "z"],
        vec!["HDEL", "c:h", "f", "nope"],
        vec!["HGETALL", "c:h"],
        vec!["HINCRBY", "c:h", "n", "5"],
        vec!["HINCRBY", "c:h", "n", "x"],
        vec!["HINCRBY", "c:h", "g", "9223372036854775807"],
        vec!["HSET", "c:h", "s", "abc"],
        vec!["HINCRBY", "c:h", "s", "1"],
        vec!["HINCRBYFLOAT", "c:h", "n", "1.5"],
        vec!["HINCRBYFLOAT", "c:h", "s", "1"],
        vec!["HINCRBYFLOAT", "c:h", "n", "inf"],
        vec!["HINCRBYFLOAT", "c:h", "n", "x"],
        vec!["HSETNX", "c:h", "n", "1"],
        vec!["HSETNX", "c:h", "new", "1"],
        vec!["HMSET", "c:h", "a", "1", "b", "2"],
        vec!["HSET", "c:h", "f"],
        vec!["HSET", "c:h", "f", "1", "g"],
        vec!["HSET", "c:h"],
        vec!["HGETALL", "c:h"],
        vec!["HGETALL", "c:absent"],
        vec!["HKEYS", "c:absent"],
        vec!["HLEN", "c:absent"],
        vec!["HDEL", "c:absent", "f"],
        vec!["TYPE", "c:h"],
        vec!["HDEL", "c:h", "g", "h", "n", "s", "new", "a", "b"],
        vec!["EXISTS", "c:h"],
        vec!["HSET", "c:ht", "f", "v"],
        vec!["EXPIRE", "c:ht", "1000"],
        vec!["HSET", "c:ht", "g", "v"],
        vec!["TTL", "c:ht"],
        // WRONGTYPE on each command of the other type.
        vec!["HSET", "c:wh", "f", "v"],
        vec!["GET", "c:wh"],
        vec!["STRLEN", "c:wh"],
        vec!["APPEND", "c:wh", "x"],
        vec!["INCR", "c:wh"],
        vec!["INCRBY", "c:wh", "2"],
        vec!["INCRBYFLOAT", "c:wh", "1"],
        vec!["GETSET", "c:wh", "x"],
        vec!["GETDEL", "c:wh"],
        vec!["GETEX", "c:wh"],
        vec!["SET", "c:wh", "v", "GET"],
        vec!["MGET", "c:wh", "c:absent"],
        vec!["SETNX", "c:wh", "x"],
        vec!["SET", "c:ws", "v"],
        vec!["HGET", "c:ws", "f"],
        vec!["HMGET", "c:ws", "f"],
        vec!["HSET", "c:ws", "f", "v"],
        vec!["HSETNX", "c:ws", "f", "v"],
        vec!["HGETALL", "c:ws"],
        vec!["HLEN", "c:ws"],
        vec!["HKEYS", "c:ws"],
        vec!["HVALS", "c:ws"],
        vec!["HEXISTS", "c:ws", "f"],
        vec!["HSTRLEN", "c:ws", "f"],
        vec!["HDEL", "c:ws", "f"],
        vec!["HINCRBY", "c:ws", "f", "1"],
        vec!["HINCRBYFLOAT", "c:ws", "f", "1"],
        vec!["TYPE", "c:wh"],
        vec!["SET", "c:wh", "v"],
        vec!["TYPE", "c:wh"],
        // INCRBYFLOAT.
        vec!["SET", "c:f", "10.5"],
        vec!["INCRBYFLOAT", "c:f", "0.1"],
        vec!["INCRBYFLOAT", "c:f", "3.0e3"],
        vec!["INCRBYFLOAT", "c:f", "5.0e200"],
        vec!["SET", "c:z", "0"],
        vec!["INCRBYFLOAT", "c:z", "-0"],
        vec!["INCRBYFLOAT", "c:z", "inf"],
        vec!["INCRBYFLOAT", "c:z", "-inf"],
        vec!["INCRBYFLOAT", "c:z", "nan"],
        vec!["INCRBYFLOAT", "c:z", "abc"],
        vec!["INCRBYFLOAT", "c:z", " 1"],
        vec!["INCRBYFLOAT", "c:z", "-7.25"],
        vec!["INCRBYFLOAT", "c:nf", "1e-3"],
        vec!["INCRBYFLOAT", "c:nf", "0x1.8p3"],
        vec!["INCRBYFLOAT", "c:nf", "0x"],
        vec!["SET", "c:z", "x"],
        vec!["INCRBYFLOAT", "c:z", "1"],
        vec!["SET", "c:z", "1e5000"],
        vec!["INCRBYFLOAT", "c:z", "1"],
        vec!["SET", "c:z", "1"],
        vec!["EXPIRE", "c:z", "1000"],
        vec!["INCRBYFLOAT", "c:z", "1"],
        vec!["TTL", "c:z"],
        vec!["INCRBYFLOAT", "c:z"],
    ];
    for proto in ["2", "3"] {
        let mut cmds = vec![vec!["HELLO", proto]];
        cmds.extend(seq.iter().cloned());
        let cmds: Vec<Vec<String>> =
            cmds.iter().map(|c| c.iter().map(|a| a.replace("c:", &format!("t{proto}:"))).collect()).collect();
        let cmds = strs(&cmds);
        let ours = replies(&c.addr(1), &cmds);
        let theirs = replies(&redis_addr, &cmds);
        assert_same_replies(&ours, &theirs, &cmds, 1, &format!("RESP{proto}: "));
    }
    // PTTL by range: both count down from 5 000 ms.
    let cmds = vec![vec!["SET", "p:k", "v", "PX", "5000"], vec!["PTTL", "p:k"]];
    for addr in [c.addr(1), redis_addr.clone()] {
        let r = replies(&addr, &cmds);
        let ms: i64 = String::from_utf8_lossy(&r[1]).trim_start_matches(':').trim().parse().unwrap();
        assert!((3_000..=5_000).contains(&ms), "{addr}: PTTL {ms}");
    }
}

/// One connection sending commands one at a time (a transaction needs its connection).
struct Conn(TcpStream, Vec<u8>);

impl Conn {
    fn new(addr: &str) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        Conn(s, Vec::new())
    }

    fn send(&mut self, c: &[&str]) -> Vec<u8> {
        let mut req = Vec::new();
        encode_command(c, &mut req);
        self.0.write_all(&req).unwrap();
        loop {
            if let Some((_, used)) = parse_value(&self.1, 1 << 20, 16).unwrap() {
                return self.1.drain(..used).collect();
            }
            let mut chunk = [0u8; 4096];
            let n = self.0.read(&mut chunk).unwrap();
            assert!(n > 0, "closed after {c:?}");
            self.1.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Sends `cmds` in one write (pipelined) and reads one reply each.
fn pipelined(addr: &str, cmds: &[Vec<&str>]) -> Vec<Vec<u8>> {
    let mut c = Conn::new(addr);
    let mut req = Vec::new();
    for cmd in cmds {
        encode_command(cmd, &mut req);
    }
    c.0.write_all(&req).unwrap();
    let mut out = Vec::new();
    while out.len() < cmds.len() {
        if let Some((_, used)) = parse_value(&c.1, 1 << 20, 16).unwrap() {
            out.push(c.1.drain(..used).collect());
            continue;
        }
        let mut chunk = [0u8; 4096];
        let n = c.0.read(&mut chunk).unwrap();
        assert!(n > 0, "closed");
        c.1.extend_from_slice(&chunk[..n]);
    }
    out
}

/// A transaction pipelined in one write: the single-key commands between MULTI and EXEC
/// are queued, never started by the pipelined path.
#[test]
fn a_pipelined_transaction_is_queued_like_redis_s() {
    let mut c = Cluster::new(None, "shards = 1");
    c.start(1, true);
    c.wait_writable(1, "warmup");
    let (_redis, redis_addr) = start_redis(c.dir.path(), &[]);
    let cmds: Vec<Vec<&str>> = vec![
        vec!["SET", "p:a", "0"],
        vec!["MULTI"],
        vec!["INCR", "p:a"],
        vec!["GET", "p:a"],
        vec!["SET", "p:b", "x"],
        vec!["HSET", "p:h", "f", "v"],
        vec!["EXEC"],
        vec!["GET", "p:a"],
        vec!["MULTI"],
        vec!["INCR", "p:a"],
        vec!["DISCARD"],
        vec!["GET", "p:a"],
    ];
    let (ours, theirs) = (pipelined(&c.addr(1), &cmds), pipelined(&redis_addr, &cmds));
    assert_same_replies(&ours, &theirs, &cmds, 0, "pipelined: ");
}

/// A transaction's keys must share one shard here (one Raft entry): EXEC refuses others
/// with a clear error and runs nothing.
#[test]
fn a_transaction_across_shards_is_refused() {
    let mut c = Cluster::new(None, "shards = 4");
    c.start(1, true);
    c.wait_writable(1, "warmup");
    // Two keys in different shards.
    let group = |k: &str| flotilla_kv::sm::shard_of(k.as_bytes(), 4);
    let other = (0..100).map(|i| format!("k{i}")).find(|k| group(k) != group("k")).unwrap();
    let mut conn = Conn::new(&c.addr(1));
    assert_eq!(conn.send(&["MULTI"]), b"+OK\r\n");
    conn.send(&["SET", "k", "1"]);
    conn.send(&["SET", &other, "1"]);
    let r = String::from_utf8(conn.send(&["EXEC"])).unwrap();
    assert!(r.starts_with("-ERR") && r.contains("one shard"), "{r}");
    assert_eq!(conn.send(&["EXISTS", "k", &other]), b":0\r\n", "nothing ran");
}

/// MULTI/EXEC/DISCARD/WATCH/UNWATCH, byte for byte with redis-server in both protocols:
/// queued replies, reads seeing the transaction's writes, errors at queue time (EXECABORT)
/// and at run time (in EXEC's array), Redis's errors for misplaced commands, and a
/// transaction discarded (null array) after a second connection wrote a watched key.
#[test]
fn transactions_match_redis_server_byte_for_byte() {
    let mut c = Cluster::new(None, "shards = 1");
    c.start(1, true);
    c.wait_writable(1, "warmup");
    let (_redis, redis_addr) = start_redis(c.dir.path(), &[]);
    // (connection 0 or 1, command)
    let seq: Vec<(usize, Vec<&str>)> = vec![
        (0, vec!["SET", "c:s", "text"]),
        (0, vec!["MULTI"]),
        (0, vec!["SET", "c:m", "1"]),
        (0, vec!["INCR", "c:m"]),
        (0, vec!["GET", "c:m"]),
        (0, vec!["HSET", "c:mh", "f", "v"]),
        (0, vec!["HGETALL", "c:mh"]),
        (0, vec!["INCR", "c:s"]),
        (0, vec!["SET", "c:m", "5", "BADOPT"]),
        (0, vec!["EXPIRE", "c:m", "1000"]),
        (0, vec!["TTL", "c:m"]),
        (0, vec!["PING"]),
        (0, vec!["EXEC"]),
        (0, vec!["EXEC"]),
        (0, vec!["DISCARD"]),
        (0, vec!["MULTI"]),
        (0, vec!["MULTI"]),
        (0, vec!["SET", "c:m", "2"]),
        (0, vec!["DISCARD"]),
        (0, vec!["GET", "c:m"]),
        (0, vec!["MULTI"]),
        (0, vec!["SET", "c:m"]),
        (0, vec!["SET", "c:m", "3"]),
        (0, vec!["EXEC"]),
        (0, vec!["GET", "c:m"]),
        (0, vec!["MULTI"]),
        (0, vec!["NOSUCH", "x"]),
        (0, vec!["EXEC"]),
        (0, vec!["MULTI"]),
        (0, vec!["EXEC"]),
        // WATCH without a concurrent write: runs.
        (0, vec!["WATCH", "c:m", "c:absent"]),
        (0, vec!["MULTI"]),
        (0, vec!["WATCH", "c:m"]),
        (0, vec!["SET", "c:m", "9"]),
        (0, vec!["EXEC"]),
        // A second connection writes a watched key: EXEC answers a null array.
        (0, vec!["WATCH", "c:m"]),
        (1, vec!["SET", "c:m", "other"]),
        (0, vec!["MULTI"]),
        (0, vec!["SET", "c:m", "mine"]),
        (0, vec!["EXEC"]),
        (0, vec!["GET", "c:m"]),
        // ... or creates a watched absent key.
        (0, vec!["WATCH", "c:w"]),
        (1, vec!["HSET", "c:w", "f", "v"]),
        (0, vec!["MULTI"]),
        (0, vec!["DEL", "c:w"]),
        (0, vec!["EXEC"]),
        (0, vec!["TYPE", "c:w"]),
        // UNWATCH forgets the keys; so does EXEC.
        (0, vec!["WATCH", "c:m"]),
        (1, vec!["SET", "c:m", "again"]),
        (0, vec!["UNWATCH"]),
        (0, vec!["MULTI"]),
        (0, vec!["GET", "c:m"]),
        (0, vec!["EXEC"]),
        (0, vec!["WATCH"]),
        (0, vec!["EXEC", "x"]),
    ];
    for proto in ["2", "3"] {
        let rename = |a: &str| a.replace("c:", &format!("x{proto}:"));
        let run = |addr: &str| -> Vec<Vec<u8>> {
            let mut conns = [Conn::new(addr), Conn::new(addr)];
            for conn in &mut conns {
                conn.send(&["HELLO", proto]);
            }
            seq.iter()
                .map(|(i, cmd)| {
                    let cmd: Vec<String> = cmd.iter().map(|a| rename(a)).collect();
                    conns[*i].send(&cmd.iter().map(String::as_str).collect::<Vec<_>>())
                })
                .collect()
        };
        let (ours, theirs) = (run(&c.addr(1)), run(&redis_addr));
        for (i, (_, cmd)) in seq.iter().enumerate() {
            assert_eq!(
                String::from_utf8_lossy(&ours[i]),
                String::from_utf8_lossy(&theirs[i]),
                "RESP{proto}: #{i} {cmd:?}"
            );
        }
    }
}
