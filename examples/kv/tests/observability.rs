//! Operations of real `flotilla-kv` processes on loopback: JSON logs on stderr (every line
//! parses, the start line and leader changes are there, `RUST_LOG` overrides the file's
//! level), the Prometheus `/metrics` page (parsed; request counters grow with SETs, the
//! fsync histogram counts syncs), `/health` and `/ready` (503 on a node that knows no
//! leader, 200 once it joined the cluster), and INFO through `redis-cli` and pip's
//! `redis` client. Every wait is bounded and on a condition.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Cluster;

/// `GET path` on `addr`: (status, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// The status of `GET path` on `addr` (0 if none came): a refusal may close the
/// connection before the request is even written.
fn status_of(addr: &str, path: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut text = Vec::new();
    let _ = s.read_to_end(&mut text);
    String::from_utf8_lossy(&text).split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Waits until `GET path` answers `status`, at most 30 s; returns the body.
fn wait_status(addr: &str, path: &str, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, body) = http_get(addr, path);
        if s == status {
            return body;
        }
        assert!(Instant::now() < deadline, "{path} stays {s}: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Prometheus text page parsed strictly: every `# TYPE` names a known type, every
/// sample line is `name{labels} value` with a valid name and a number. Returns samples by
/// their series (`name{labels}` as written) and the declared types.
fn parse_prometheus(text: &str) -> (BTreeMap<String, f64>, BTreeMap<String, String>) {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()))
    };
    let mut samples = BTreeMap::new();
    let mut types = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, t) = rest.split_once(' ').unwrap();
            assert!(valid_name(name), "{line}");
            assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&t), "{line}");
            assert!(types.insert(name.to_string(), t.to_string()).is_none(), "declared twice: {line}");
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let name = series.split('{').next().unwrap();
        assert!(valid_name(name), "{line}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}')).unwrap();
            for pair in inner.split(',') {
                let (k, v) = pair.split_once('=').unwrap();
                assert!(valid_name(k) && v.starts_with('"') && v.ends_with('"'), "{line}");
            }
        }
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
        samples.insert(series.to_string(), v);
    }
    (samples, types)
}

/// The sum of the samples whose series starts with `prefix`.
fn sum(samples: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    samples.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum()
}

/// Node `id`'s stderr lines, each parsed as JSON (panics on a line that is not).
fn json_lines(c: &Cluster, id: u64) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(c.stderr_path(id)).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn has_message(lines: &[serde_json::Value], message: &str) -> bool {
    lines.iter().any(|l| l["fields"]["message"] == message)
}

/// Waits until node `id`'s log has a line with `message`, at most 20 s.
fn wait_logged(c: &Cluster, id: u64, message: &str) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = json_lines(c, id);
        if has_message(&lines, message) {
            return lines;
        }
        assert!(Instant::now() < deadline, "no {message:?} in node {id}'s log: {lines:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn redis_cli(addr: &str, args: &[&str]) -> String {
    let (host, port) = addr.split_once(':').unwrap();
    let out = Command::new("redis-cli").args(["-h", host, "-p", port]).args(args).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn json_logs_metrics_health_ready_and_info() {
    let mut c = Cluster::new(None, "shards = 4\nlog_format = \"json\"\n");
    c.metrics = true;
    c.capture_stderr = true;
    // A node not in any cluster yet knows no leader: alive, not ready.
    c.start(2, false);
    let m2 = c.nodes[&2].metrics.clone().unwrap();
    // The metrics endpoint can answer a moment before the client port listens (then
    // `/health` says so with a 503): wait for it, bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while http_get(&m2, "/health").0 != 200 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(http_get(&m2, "/health"), (200, "ok\n".into()));
    let (status, why) = http_get(&m2, "/ready");
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("meta group"), "{why}");
    assert_eq!(http_get(&m2, "/nothing").0, 404);

    c.start(1, true);
    let m1 = c.nodes[&1].metrics.clone().unwrap();
    c.wait_writable(1, "warmup");
    wait_status(&m1, "/ready", 200);
    assert_eq!(http_get(&m1, "/health").0, 200);

    // Request counters grow by the SETs sent; every part of the page parses.
    let (before, _) = parse_prometheus(&wait_status(&m1, "/metrics", 200));
    let mut con = c.redis(1);
    for i in 0..40 {
        let _: () = redis::cmd("SET").arg(format!("k{i}")).arg(i).query(&mut con).unwrap();
    }
    let _: Option<String> = redis::cmd("GET").arg("k1").query(&mut con).unwrap();
    let (after, types) = parse_prometheus(&http_get(&m1, "/metrics").1);
    let set = "flotilla_kv_requests_total{command=\"set\"}";
    assert!(after[set] >= before.get(set).copied().unwrap_or(0.0) + 40.0, "{after:?}");
    assert!(after["flotilla_kv_requests_total{command=\"get\"}"] >= 1.0);
    assert!(after["flotilla_kv_request_duration_seconds_count{command=\"set\"}"] >= 40.0);
    assert_eq!(types["flotilla_kv_request_duration_seconds"], "histogram");
    assert!(after["flotilla_kv_propose_duration_seconds_count"] >= 40.0);
    assert!(sum(&after, "flotilla_kv_shard_writes_total{") >= 40.0, "{after:?}");
    assert!(sum(&after, "flotilla_kv_shard_written_bytes_total{") > 0.0);
    assert!(sum(&after, "flotilla_kv_shard_reads_total{") >= 1.0);
    assert_eq!(types["flotilla_engine_wal_sync_duration_seconds"], "histogram");
    assert!(after["flotilla_engine_wal_sync_duration_seconds_count"] > 0.0);
    assert!(after["flotilla_engine_wal_sync_duration_seconds_bucket{le=\"+Inf\"}"] > 0.0);
    assert!(after["flotilla_engine_apply_duration_seconds_count"] >= 40.0);
    // WAL compaction passes: counted and timed (none may have run yet in so short a test).
    assert_eq!(types["flotilla_engine_wal_compaction_duration_seconds"], "histogram");
    assert_eq!(types["flotilla_engine_wal_compaction_passes_total"], "counter");
    assert_eq!(types["flotilla_engine_wal_segments_created_total"], "counter");
    assert_eq!(types["flotilla_engine_wal_segments_recycled_total"], "counter");
    assert!(
        after["flotilla_engine_wal_compaction_duration_seconds_count"]
            >= after["flotilla_engine_wal_compaction_passes_total"]
    );
    assert_eq!(types["flotilla_engine_wal_syncs_total"], "counter");
    assert!(after["flotilla_engine_wal_syncs_total"] > 0.0);
    assert_eq!(types["flotilla_engine_apply_lag"], "gauge");
    assert!(after["flotilla_kv_connected_clients"] >= 1.0);

    // JSON logs: the start line with its addresses, and leader changes.
    let lines = wait_logged(&c, 1, "leader changed");
    let start = lines.iter().find(|l| l["fields"]["message"] == "flotilla-kv starting").unwrap();
    assert_eq!(start["level"], "INFO");
    assert_eq!(start["fields"]["client"], c.addr(1).as_str());
    assert!(lines.iter().any(|l| l["fields"]["message"] == "leader changed" && l["fields"]["leader"] == 1));
    assert!(has_message(&json_lines(&c, 2), "flotilla-kv starting"));

    // Node 2 joins: the meta group and every shard, then it is ready too.
    c.admin().add_server(&c.addr(1), &c.addr(2), 2).unwrap();
    wait_status(&m2, "/ready", 200);
    let joined = wait_logged(&c, 2, "leader changed");
    assert!(joined.iter().any(|l| l["fields"]["message"] == "leader changed" && l["fields"]["leader"] == 1));

    // INFO through redis-cli: every section by default, one when named.
    let info = redis_cli(&c.addr(1), &["INFO"]);
    for want in
        ["# Server", "redis_version:7.0.0", "# Clients", "connected_clients:", "# Memory", "used_memory:"]
    {
        assert!(info.contains(want), "{want} missing: {info}");
    }
    for want in ["# Stats", "total_commands_processed:", "# Replication", "role:master", "# Keyspace"] {
        assert!(info.contains(want), "{want} missing: {info}");
    }
    assert!(info.contains(&format!("process_id:{}", c.nodes[&1].child.as_ref().unwrap().id())), "{info}");
    let keyspace = redis_cli(&c.addr(1), &["INFO", "keyspace"]);
    assert!(keyspace.starts_with("# Keyspace") && !keyspace.contains("# Server"), "{keyspace}");
    assert!(keyspace.contains("db0:keys=41,expires=0,avg_ttl=0"), "{keyspace}");

    // pip's redis parses it into a dict.
    let (host, port) = c.addr(1).split_once(':').map(|(h, p)| (h.to_string(), p.to_string())).unwrap();
    let script = format!(
        "import redis\n\
         i = redis.Redis(host='{host}', port={port}).info()\n\
         assert i['redis_version'] == '7.0.0', i\n\
         assert i['connected_clients'] >= 1, i\n\
         assert i['db0']['keys'] == 41, i\n\
         assert i['role'] == 'master', i\n\
         print('ok')\n"
    );
    let out = Command::new("python3").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn rust_log_overrides_the_configured_level() {
    // The file says error; RUST_LOG=info shows the start line.
    let mut up = Cluster::new(None, "log_format = \"json\"\nlog_level = \"error\"\n");
    up.capture_stderr = true;
    up.env.push(("RUST_LOG".into(), "info".into()));
    up.start(1, false);
    wait_logged(&up, 1, "flotilla-kv starting");
    // The file says info (the default); RUST_LOG=error hides it.
    let mut down = Cluster::new(None, "log_format = \"json\"\n");
    down.capture_stderr = true;
    down.env.push(("RUST_LOG".into(), "error".into()));
    down.start(1, false);
    // The node printed `ready` after its start line would have been written.
    let lines = json_lines(&down, 1);
    assert!(!has_message(&lines, "flotilla-kv starting"), "{lines:?}");
    assert!(lines.iter().all(|l| l["level"] == "ERROR"), "{lines:?}");
}

/// Clients that trickle a request byte by byte (one a second, each read within the
/// endpoint's timeout) hold its 8 request slots only until the request's deadline
/// (`IO_TIMEOUT`, 5 s, on the whole request): `/health` answers 200 again while they go on
/// trickling. (Before the deadline covered the whole request, each byte renewed it, 8 such
/// clients held every slot for hours and every probe got a 503.)
#[test]
fn clients_trickling_requests_cannot_hold_the_endpoint() {
    let mut c = Cluster::new(None, "shards = 1\n");
    c.metrics = true;
    c.start(1, true);
    c.wait_writable(1, "w");
    let m = c.nodes[&1].metrics.clone().unwrap();
    assert_eq!(http_get(&m, "/health").0, 200);
    // (Its handler's slot is given back just after the reply.)
    std::thread::sleep(Duration::from_millis(300));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tricklers: Vec<_> = (0..8)
        .map(|_| {
            let (m, stop) = (m.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&m).unwrap();
                let deadline = Instant::now() + Duration::from_secs(20);
                // Never a blank line: the head is never complete.
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                    if s.write_all(b"X").is_err() {
                        return true;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                false
            })
        })
        .collect();
    // Every slot is held now.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status_of(&m, "/health"), 503, "8 requests in progress take every slot");
    // Past the deadline the slots are free again, while the tricklers go on.
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let status = status_of(&m, "/health");
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "/health stays {status} while clients trickle");
        std::thread::sleep(Duration::from_millis(250));
    }
    // (A write to a closed connection fails only at the second try.)
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let cut = tricklers.into_iter().map(|t| t.join().unwrap()).filter(|&cut| cut).count();
    assert_eq!(cut, 8, "the endpoint closed every trickling connection");
}
