//! Real Redis clients at their default settings against one flotilla-kv node (issue 14,
//! point 1): the Rust `redis` crate over RESP2 and over RESP3, `redis-cli` (also `-3`),
//! `redis-benchmark`, and pip's `redis` 8.x, which opens every connection with `HELLO 3`.
//! `.ci/run` installs redis-tools and pip's redis; a missing tool fails the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::Cluster;

fn host_port(addr: &str) -> (&str, &str) {
    addr.rsplit_once(':').unwrap()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

#[test]
fn todays_clients_at_their_defaults() {
    let mut c = Cluster::new(None, "shards = 2");
    c.start(1, true);
    c.wait_writable(1, "warmup");
    let addr = c.addr(1);
    let (host, port) = host_port(&addr);

    // The redis crate over RESP2 (its default) and over RESP3.
    for url in [c.url(1), format!("{}?protocol=resp3", c.url(1))] {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut con = client.get_connection_with_timeout(std::time::Duration::from_secs(5)).unwrap();
        let _: () = redis::cmd("SET").arg("rs:k").arg("v").query(&mut con).unwrap();
        let v: Option<String> = redis::cmd("GET").arg("rs:k").query(&mut con).unwrap();
        assert_eq!(v.as_deref(), Some("v"), "{url}");
        let none: Option<String> = redis::cmd("GET").arg("rs:absent").query(&mut con).unwrap();
        assert_eq!(none, None, "{url}");
        let n: i64 = redis::cmd("INCR").arg("rs:n").query(&mut con).unwrap();
        assert!(n >= 1);
        let hello: redis::Value = redis::cmd("HELLO").query(&mut con).unwrap();
        let proto = if url.contains("resp3") { 3 } else { 2 };
        match hello {
            redis::Value::Map(kv) if proto == 3 => {
                assert!(
                    kv.contains(&(redis::Value::BulkString(b"proto".to_vec()), redis::Value::Int(3))),
                    "{kv:?}"
                )
            }
            redis::Value::Array(a) if proto == 2 => assert_eq!(a[5], redis::Value::Int(2), "{a:?}"),
            other => panic!("HELLO over RESP{proto}: {other:?}"),
        }
        // RESP3 reply types where Redis 7 uses them: INFO is a verbatim string, CONFIG GET a
        // map; over RESP2 a bulk string and an array.
        let info: redis::Value = redis::cmd("INFO").query(&mut con).unwrap();
        let config: redis::Value = redis::cmd("CONFIG").arg("GET").arg("save").query(&mut con).unwrap();
        match (proto, &info, &config) {
            (3, redis::Value::VerbatimString { text, .. }, redis::Value::Map(_)) => {
                assert!(text.contains("# Server"))
            }
            (2, redis::Value::BulkString(b), redis::Value::Array(_)) => {
                assert!(String::from_utf8_lossy(b).contains("# Server"))
            }
            _ => panic!("RESP{proto}: INFO {info:?}, CONFIG GET {config:?}"),
        }
    }

    // redis-cli, RESP2 and RESP3 (-3 sends HELLO 3 first).
    let cli = |extra: &[&str], cmd: &[&str]| {
        run(Command::new("redis-cli").args(["-h", host, "-p", port]).args(extra).args(cmd))
    };
    assert_eq!(cli(&[], &["SET", "cli:k", "v"]).trim(), "OK");
    assert_eq!(cli(&[], &["GET", "cli:k"]).trim(), "v");
    assert_eq!(cli(&["-3"], &["GET", "cli:k"]).trim(), "v");
    assert_eq!(cli(&["-3", "--no-raw"], &["GET", "cli:absent"]).trim(), "(nil)");
    assert_eq!(cli(&["--no-raw"], &["GET", "cli:absent"]).trim(), "(nil)");
    let hello3 = cli(&["-3", "--no-raw"], &["HELLO", "3"]);
    assert!(hello3.contains("proto") && hello3.contains("(integer) 3"), "{hello3}");

    // CONFIG GET answers the parameters tools probe, with Redis globs ignoring case.
    assert_eq!(
        cli(&[], &["CONFIG", "GET", "APPEND*", "save"]).trim(),
        "appendonly\nyes\nappendfsync\nalways\nsave"
    );
    assert_eq!(cli(&[], &["CONFIG", "GET", "nosuch*"]).trim(), "");

    // redis-benchmark at its defaults but for the request count.
    let bench = run(Command::new("redis-benchmark").args([
        "-h",
        host,
        "-p",
        port,
        "-n",
        "2000",
        "-c",
        "10",
        "-t",
        "set,get,incr",
        "-q",
    ]));
    for t in ["SET", "GET", "INCR"] {
        assert!(bench.contains(&format!("{t}: ")), "{bench}");
    }
    assert!(!bench.to_ascii_lowercase().contains("error"), "{bench}");

    // pip's redis 8.x, no protocol argument.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_defaults.py");
    let py = run(Command::new("python3").args([script, host, port]));
    assert_eq!(py.trim(), "ok", "{py}");
}
