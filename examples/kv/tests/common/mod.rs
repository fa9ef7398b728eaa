//! Real `flotilla-kv` processes on loopback for the integration tests: certificates from a
//! fresh CA, one config file per node, passwords in files (never on a command line), fixed
//! ports kept across restarts, SIGKILL on drop. A node's peer port is free for both UDP
//! (QUIC) and TCP (the node channel), and no port is handed out twice in a test process.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use flotilla_kv::resp::{encode_command, parse_value};
use std::time::{Duration, Instant};

use flotilla_kv::cluster::Admin;

pub struct Proc {
    pub child: Option<Child>,
    pub client: String,
    pub peer: String,
    pub config: PathBuf,
    /// The `/metrics` address (when the cluster's `metrics` was set at its first start).
    pub metrics: Option<String>,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub ca: flotilla_net::ClusterCa,
    pub nodes: BTreeMap<u64, Proc>,
    pub password: Option<String>,
    pub extra: String,
    /// Environment variables set for every node process.
    pub env: Vec<(String, String)>,
    /// Give every node a `metrics_addr` of its own.
    pub metrics: bool,
    /// Send every node's stderr to `node-<id>.stderr` in `dir` (appended) instead of the
    /// test's.
    pub capture_stderr: bool,
    /// Start every node with this open-file limit (soft, hard).
    pub nofile: Option<(u64, u64)>,
}

/// Ports handed out in this test process (tests run in parallel threads).
static USED: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());

/// A loopback port free for TCP now (and for UDP too when `udp`), never handed out before.
fn free_port(udp: bool) -> String {
    for _ in 0..1000 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if udp && std::net::UdpSocket::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        if USED.lock().unwrap().insert(port) {
            return format!("127.0.0.1:{port}");
        }
    }
    panic!("no free port");
}

fn free_tcp() -> String {
    free_port(false)
}

/// The QUIC transport (UDP) and the node channel (TCP) share the peer address.
fn free_udp() -> String {
    free_port(true)
}

/// The admin user's password of a cluster whose data password is `p`.
pub fn admin_password(p: &str) -> String {
    format!("{p}-admin")
}

impl Cluster {
    /// `extra` is appended to every node's config (e.g. `shards = 4`).
    pub fn new(password: Option<&str>, extra: &str) -> Cluster {
        Cluster {
            dir: tempfile::tempdir().unwrap(),
            ca: flotilla_net::ClusterCa::generate().unwrap(),
            nodes: BTreeMap::new(),
            password: password.map(str::to_string),
            extra: extra.to_string(),
            env: Vec::new(),
            metrics: false,
            capture_stderr: false,
            nofile: None,
        }
    }

    pub fn admin(&self) -> Admin {
        let mut a = Admin::new(self.password.as_deref().map(|p| admin_password(p).into()));
        a.step_timeout = Duration::from_secs(20);
        a
    }

    /// Writes node `id`'s files (first time) and starts it; waits for its ready line.
    pub fn start(&mut self, id: u64, bootstrap: bool) -> String {
        if !self.nodes.contains_key(&id) {
            let d = self.dir.path();
            std::fs::write(d.join("ca.pem"), &self.ca.pem().cert_pem).unwrap();
            let pair = self.ca.issue_node(id).unwrap();
            std::fs::write(d.join(format!("node-{id}.pem")), &pair.cert_pem).unwrap();
            std::fs::write(d.join(format!("node-{id}.key")), &pair.key_pem).unwrap();
            let (client, peer) = (free_tcp(), free_udp());
            let pw = match &self.password {
                Some(p) => {
                    std::fs::write(d.join("password"), format!("{p}\n")).unwrap();
                    std::fs::write(d.join("admin-password"), admin_password(p)).unwrap();
                    format!(
                        "password_file = \"{d}/password\"\nadmin_password_file = \"{d}/admin-password\"\n",
                        d = d.display()
                    )
                }
                None => String::new(),
            };
            let metrics = self.metrics.then(free_tcp);
            let pw = match &metrics {
                Some(m) => format!("{pw}metrics_addr = \"{m}\"\n"),
                None => pw,
            };
            let text = format!(
                "node_id = {id}\ndata_dir = \"{d}/data-{id}\"\npeer_addr = \"{peer}\"\nclient_addr = \"{client}\"\n\
                 ca_cert = \"{d}/ca.pem\"\nnode_cert = \"{d}/node-{id}.pem\"\nnode_key = \"{d}/node-{id}.key\"\n\
                 bootstrap = {bootstrap}\n{exec}engine_workers = 2\n{pw}{}\n",
                self.extra,
                // 16 executor threads unless the test sets its own.
                exec = if self.extra.contains("executor_threads") { "" } else { "executor_threads = 16\n" },
                d = d.display()
            );
            let config = d.join(format!("node-{id}.toml"));
            std::fs::write(&config, text).unwrap();
            self.nodes.insert(id, Proc { child: None, client, peer, config, metrics });
        }
        self.spawn(id)
    }

    fn spawn(&mut self, id: u64) -> String {
        let env = self.env.clone();
        let stderr_file = self.capture_stderr.then(|| self.stderr_path(id));
        // Uncaptured nodes log warnings and errors only (CI's output stays short);
        // captured ones log as their config says, unless the test sets RUST_LOG.
        let rust_log = if self.capture_stderr { "" } else { "warn" };
        let nofile = self.nofile;
        let p = self.nodes.get_mut(&id).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla-kv"));
            if let Some((soft, hard)) = nofile {
                use std::os::unix::process::CommandExt;
                // SAFETY: setrlimit is async-signal-safe; only lowering, which needs no
                // privilege.
                unsafe {
                    cmd.pre_exec(move || {
                        let lim = libc::rlimit { rlim_cur: soft, rlim_max: hard };
                        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
            let mut child = cmd
                .arg("--config")
                .arg(&p.config)
                .env_remove("FLOTILLA_PASSWORD")
                .env_remove("FLOTILLA_ADMIN_PASSWORD")
                .env("RUST_LOG", rust_log)
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdout(Stdio::piped())
                .stderr(match &stderr_file {
                    Some(f) => {
                        Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(f).unwrap())
                    }
                    None => Stdio::inherit(),
                })
                .spawn()
                .unwrap();
            let out = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(out).read_line(&mut line);
                let _ = tx.send(line);
            });
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.starts_with("ready") => {
                    p.child = Some(child);
                    return p.client.clone();
                }
                // A restarted node may find its old ports still held for a moment.
                _ if Instant::now() < deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    std::thread::sleep(Duration::from_millis(200));
                }
                other => panic!("node {id} did not start: {other:?}"),
            }
        }
    }

    /// Where node `id`'s stderr goes when `capture_stderr` is set.
    pub fn stderr_path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}.stderr"))
    }

    pub fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.nodes.get_mut(&id).and_then(|p| p.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self, id: u64) -> String {
        self.kill(id);
        self.spawn(id)
    }

    pub fn addr(&self, id: u64) -> String {
        self.nodes[&id].client.clone()
    }

    pub fn url(&self, id: u64) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@{}/", self.addr(id)),
            None => format!("redis://{}/", self.addr(id)),
        }
    }

    pub fn redis(&self, id: u64) -> redis::Connection {
        let c = redis::Client::open(self.url(id)).unwrap();
        let con = c.get_connection_with_timeout(Duration::from_secs(5)).unwrap();
        con.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        con
    }

    /// Waits until a SET through node `id` succeeds (a leader exists for `key`'s shard).
    pub fn wait_writable(&self, id: u64, key: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r: redis::RedisResult<String> = redis::Client::open(self.url(id))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
                .and_then(|mut con| redis::cmd("SET").arg(key).arg("x").query(&mut con));
            match r {
                Ok(_) => return,
                Err(e) => assert!(Instant::now() < deadline, "node {id} not writable: {e}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
    }
}

pub struct RedisServer(Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A redis-server (Debian's, 7.0) on a free loopback port, with `extra` arguments; killed
/// on drop.
pub fn start_redis(dir: &std::path::Path, extra: &[&str]) -> (RedisServer, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (Debian's redis-server package; .ci/run installs it)");
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (RedisServer(child), addr)
}

/// Sends each command on one connection and returns each reply's bytes.
pub fn replies(addr: &str, cmds: &[Vec<&str>]) -> Vec<Vec<u8>> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for c in cmds {
        let mut req = Vec::new();
        encode_command(c, &mut req);
        s.write_all(&req).unwrap();
        loop {
            if let Some((_, used)) = parse_value(&buf, 1 << 20, 16).unwrap() {
                out.push(buf.drain(..used).collect());
                break;
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "{addr} closed the connection after {c:?}");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    out
}

/// Asserts that both servers gave the same bytes to each command from `from` on.
pub fn assert_same_replies(ours: &[Vec<u8>], theirs: &[Vec<u8>], cmds: &[Vec<&str>], from: usize, ctx: &str) {
    for (i, cmd) in cmds.iter().enumerate().skip(from) {
        assert_eq!(String::from_utf8_lossy(&ours[i]), String::from_utf8_lossy(&theirs[i]), "{ctx}{cmd:?}");
    }
}

/// The commands as string slices.
pub fn strs(cmds: &[Vec<String>]) -> Vec<Vec<&str>> {
    cmds.iter().map(|c| c.iter().map(String::as_str).collect()).collect()
}
