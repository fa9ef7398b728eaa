//! The node's configuration file (TOML; `kv.example.toml` documents every key) and its
//! validation into a [`ValidNodeConfig`].
//!
//! Owns the keys, their defaults and bounds, and one [`ConfigError`] per rule, each naming
//! the key. Never opens sockets or starts anything; it reads the certificate files only to
//! check they exist.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::acl::Secret;

/// Most shards allowed.
pub const MAX_SHARDS: u32 = crate::slots::SLOTS as u32;

/// The file as written (every key but the required ones has a default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id (required; 1..=2^63).
    pub node_id: Option<u64>,
    /// Directory of the node's durable state (required).
    pub data_dir: Option<PathBuf>,
    /// UDP address of the QUIC transport between nodes (required).
    pub peer_addr: Option<String>,
    /// TCP address of the RESP client port (required).
    pub client_addr: Option<String>,
    /// Address other nodes and tools use to reach the client port (default: client_addr).
    pub advertise_client_addr: Option<String>,
    /// Address other nodes use to reach the QUIC port (default: peer_addr).
    pub advertise_peer_addr: Option<String>,
    /// The cluster CA certificate, PEM (required).
    pub ca_cert: Option<PathBuf>,
    /// This node's certificate, PEM (required).
    pub node_cert: Option<PathBuf>,
    /// This node's private key, PEM (required).
    pub node_key: Option<PathBuf>,
    /// Whether this node founds the cluster (the first node only). Default false.
    #[serde(default)]
    pub bootstrap: bool,
    /// Whether the client port speaks the Redis Cluster protocol: `CLUSTER SLOTS` and
    /// friends, `-MOVED` to the leader of a key's shard, `READONLY` replica reads,
    /// `-CROSSSLOT` for multi-key commands across slots. Default false: the node forwards
    /// every request to its shard's leader, for clients that are not cluster-aware. Every
    /// node serves either; a cluster's nodes normally all use the same.
    #[serde(default)]
    pub cluster_mode: bool,
    /// Serves a shard leader's reads under its lease (Raft thesis §6.4.1: no heartbeat
    /// round per read while a quorum confirmed the leadership within the election
    /// timeout, less a clock-drift margin of 2 ticks) instead of ReadIndex's round per
    /// batch of reads. Faster, and linearizable only while the nodes' clocks run at rates
    /// within that margin of each other (TiKV's default; etcd's `ReadOnlyLeaseBased`).
    /// Follower reads after `READONLY` still use ReadIndex. Default false.
    #[serde(default)]
    pub lease_reads: bool,
    /// Writes of different connections to one shard, started in the same turn of the
    /// client port's loop, share one Raft entry (each connection keeps its own reply; see
    /// `joint.rs`). `false` proposes each connection's writes as entries of their own (for
    /// comparison). Default true.
    #[serde(default = "d_true")]
    pub joint_writes: bool,
    /// Reads of different connections from one shard, started in the same turn of the
    /// client port's loop, share one read barrier (one ReadIndex request, or one lease
    /// check; see `joint_read.rs`). `false` takes a barrier per read (for comparison).
    /// Default true.
    #[serde(default = "d_true")]
    pub joint_reads: bool,
    /// Number of shards (Raft groups holding keys, each owning a share of the 16384 key
    /// slots). Default 16; 1..=16384. Must be the same
    /// on every node.
    #[serde(default = "d_shards")]
    pub shards: u32,
    /// Raft tick, ms. Default 10; 1..=1000.
    #[serde(default = "d_tick")]
    pub tick_ms: u64,
    /// Election timeout (lower bound), ticks. Default 10; 2..=10000.
    #[serde(default = "d_election")]
    pub election_ticks: u32,
    /// How long the server retries a request refused by leader changes, ms. Default 2000;
    /// 10..=60000.
    #[serde(default = "d_retry")]
    pub retry_budget_ms: u64,
    /// How long the server holds a request the engine refuses as busy (its backpressure:
    /// a full mailbox, too many unapplied bytes in the shard, ...), retrying it, before
    /// answering TRYAGAIN, ms. Meanwhile the connection's later commands wait and, once its
    /// query buffer is full, it is not read: TCP pushes the client back. Default 30000;
    /// 0..=600000 (0: the retry budget alone).
    #[serde(default = "d_busy_hold")]
    pub busy_hold_ms: u64,
    /// Applied entries after which a shard snapshots and compacts its log. Default 10000;
    /// 1..=10^9.
    #[serde(default = "d_compact")]
    pub compact_entries: u64,
    /// A shard this node leads splits automatically (`crate::shard_split`) once its write
    /// load passes this many bytes per second. Default 0: never for load.
    #[serde(default)]
    pub split_write_bytes_per_sec: u64,
    /// A shard this node leads splits automatically once it holds more keys than this.
    /// Default 0: never for size.
    #[serde(default)]
    pub split_keys: u64,
    /// Largest request accepted, bytes. Default 16 MiB; 1 KiB..=512 MiB.
    #[serde(default = "d_max_request")]
    pub max_request_bytes: usize,
    /// Most client connections at once. Default 10000; 1..=1000000. At start the node
    /// raises its open-file limit (up to the hard limit) to fit these, the node channel's
    /// connections and a reserve for its own files, or lowers this to fit
    /// (`crate::fd_limit`).
    #[serde(default = "d_max_clients")]
    pub max_clients: usize,
    /// Threads executing client requests (they wait for Raft), and as many again for
    /// requests forwarded by other nodes. Default 64; 1..=4096.
    #[serde(default = "d_exec")]
    pub executor_threads: usize,
    /// Engine worker threads; 0 = one per core. Default 0; 0..=256.
    #[serde(default)]
    pub engine_workers: usize,
    /// Half-life of the engine's per-shard load rates (what `flotilla-rebalance` balances
    /// by), ms. Default 10000; `load_fold_interval_ms`..=86400000.
    #[serde(default = "d_load_half_life")]
    pub load_half_life_ms: u64,
    /// How often the load rates are folded, ms. Default 1000; 10..=`load_half_life_ms`.
    #[serde(default = "d_load_fold")]
    pub load_fold_interval_ms: u64,
    // --- Trust between nodes and users (issue 12 point 9): one block. ---
    /// Refused when present: passwords never sit in the config file (nor on a command
    /// line); use `password_file` or the `FLOTILLA_PASSWORD` environment variable.
    pub password: Option<Secret>,
    /// File holding the data user's (`default`) password (one line; a trailing newline is
    /// not part of it; 1..=512 bytes). Default: the `FLOTILLA_PASSWORD` environment
    /// variable, else none. Set together with the admin password, or neither.
    pub password_file: Option<PathBuf>,
    /// The admin user's name (`AUTH <admin_user> <password>`). Default `admin`; 1..=64
    /// bytes of `[A-Za-z0-9_.-]`, not `default`.
    #[serde(default = "d_admin_user")]
    pub admin_user: String,
    /// File holding the admin user's password (as `password_file`). Default: the
    /// `FLOTILLA_ADMIN_PASSWORD` environment variable, else none.
    pub admin_password_file: Option<PathBuf>,
    /// Protected mode (Redis's): with no password set, only loopback clients are served;
    /// others get `-DENIED` and are closed. Default true.
    #[serde(default = "d_protected_mode")]
    pub protected_mode: bool,
    /// Most connections at once on the node channel (TLS over TCP at `peer_addr`, for
    /// requests forwarded by other nodes), of which at most an eighth (at least 1) in
    /// their TLS handshake. Default 1024; 1..=65536.
    #[serde(default = "d_node_channel_max_connections")]
    pub node_channel_max_connections: usize,
    /// How long a node channel connection may take to complete its TLS handshake, ms.
    /// Default 5000; 100..=60000.
    #[serde(default = "d_node_channel_handshake_ms")]
    pub node_channel_handshake_ms: u64,
    /// How long a node channel connection may stay idle before it is closed, ms (the
    /// forwarding node opens a new one when it needs it). Default 300000; 1000..=86400000.
    #[serde(default = "d_node_channel_idle_ms")]
    pub node_channel_idle_ms: u64,
    // --- Client limits (issue 12 point 8), as Redis holds them; checked in `validate`. ---
    /// Most arguments in one request. Default 1048576 (2^20); 1..=16777216.
    #[serde(default = "d_max_request_args")]
    pub max_request_args: usize,
    /// Longest inline request line (a command sent as plain words), bytes; requests are also
    /// bounded by `max_request_bytes`. Default 65536 (Redis's `PROTO_INLINE_MAX_SIZE`);
    /// 64..=16777216.
    #[serde(default = "d_max_inline")]
    pub max_inline_bytes: usize,
    /// Before AUTH (when a password is set): most arguments of a request; more gets
    /// `Protocol error: unauthenticated multibulk length` and the connection is closed.
    /// Default 10 (as Redis); 1..=1024.
    #[serde(default = "d_unauth_args")]
    pub unauthenticated_max_args: usize,
    /// Before AUTH: largest argument, bytes; longer gets `Protocol error: unauthenticated
    /// bulk length` and the connection is closed. Default 16384 (as Redis); 16..=1048576.
    #[serde(default = "d_unauth_bulk")]
    pub unauthenticated_max_bulk_bytes: usize,
    /// Most input one connection holds, bytes as received: commands parsed and not yet
    /// answered plus the request being read. At the limit the server stops reading from the
    /// connection (TCP pushes back on the client) until replies go out. Default 33554432
    /// (32 MiB); larger than `max_request_bytes` (so one request always fits),
    /// ..=4294967296.
    #[serde(default = "d_query_buffer")]
    pub client_query_buffer_bytes: usize,
    /// Most reply bytes one authenticated connection may leave unread: past it the
    /// connection is closed (Redis's `client-output-buffer-limit`, which Redis leaves
    /// unlimited for normal clients; Flotilla bounds it). Default 67108864 (64 MiB);
    /// 65536..=17179869184.
    #[serde(default = "d_output_buffer")]
    pub client_output_buffer_bytes: usize,
    /// The same before AUTH. Default 1024 (as Redis since CVE-2025-21605); 128..=1048576.
    #[serde(default = "d_unauth_output")]
    pub unauthenticated_output_buffer_bytes: usize,
    /// How long a connection may stay unauthenticated when a password is set, ms; then it
    /// is closed. Default 10000; 100..=3600000.
    #[serde(default = "d_auth_timeout")]
    pub auth_timeout_ms: u64,
    /// How long a connection may stay idle (nothing received or sent, no command running),
    /// ms; then it is closed. Default 300000 (5 min); 100..=86400000.
    #[serde(default = "d_idle_timeout")]
    pub idle_timeout_ms: u64,
    // --- Life cycle (issue 14 point 4): SIGTERM/SIGINT hand-off, restore. ---
    /// How long a stop (SIGTERM, SIGINT) may take, ms: leaderships handed off, in-flight
    /// requests answered, the engine shut down. Past it the node shuts the engine down and
    /// exits 0 anyway. Default 10000; 100..=600000.
    #[serde(default = "d_shutdown_timeout")]
    pub shutdown_timeout_ms: u64,
    /// With `bootstrap = true` only: the node founds the meta group but no shard; the
    /// shards come from `flotilla-admin restore` (see `crate::backup`). Default false.
    #[serde(default)]
    pub restore: bool,
    /// Log level or `tracing` filter directives (`info`, `warn,flotilla_engine=debug`);
    /// the `RUST_LOG` environment variable overrides it. Default `info`.
    #[serde(default = "d_log_level")]
    pub log_level: String,
    /// Log line format on stderr: `text` or `json` (one JSON object a line). Default `text`.
    #[serde(default = "d_log_format")]
    pub log_format: String,
    /// HTTP address of `/metrics` (Prometheus), `/health` and `/ready`. Default: none (off).
    #[serde(default)]
    pub metrics_addr: Option<String>,
}

fn d_log_level() -> String {
    "info".into()
}
fn d_log_format() -> String {
    "text".into()
}

fn d_shutdown_timeout() -> u64 {
    10_000
}

fn d_admin_user() -> String {
    "admin".into()
}
fn d_true() -> bool {
    true
}

fn d_protected_mode() -> bool {
    true
}
fn d_node_channel_max_connections() -> usize {
    1024
}
fn d_node_channel_handshake_ms() -> u64 {
    5000
}
fn d_node_channel_idle_ms() -> u64 {
    300_000
}

/// The environment variable holding the data user's password (when no `password_file`).
pub const PASSWORD_ENV: &str = "FLOTILLA_PASSWORD";
/// The environment variable holding the admin user's password (when no
/// `admin_password_file`).
pub const ADMIN_PASSWORD_ENV: &str = "FLOTILLA_ADMIN_PASSWORD";

fn d_shards() -> u32 {
    16
}
fn d_tick() -> u64 {
    10
}
fn d_election() -> u32 {
    10
}
fn d_retry() -> u64 {
    2000
}
fn d_busy_hold() -> u64 {
    30_000
}
fn d_compact() -> u64 {
    10_000
}
fn d_max_request() -> usize {
    16 << 20
}
fn d_max_clients() -> usize {
    10_000
}
fn d_load_half_life() -> u64 {
    10_000
}
fn d_load_fold() -> u64 {
    1_000
}
fn d_exec() -> usize {
    64
}
fn d_max_request_args() -> usize {
    1 << 20
}
fn d_max_inline() -> usize {
    crate::resp::DEFAULT_MAX_INLINE
}
fn d_unauth_args() -> usize {
    10
}
fn d_unauth_bulk() -> usize {
    16 << 10
}
fn d_query_buffer() -> usize {
    32 << 20
}
fn d_output_buffer() -> usize {
    64 << 20
}
fn d_unauth_output() -> usize {
    1024
}
fn d_auth_timeout() -> u64 {
    10_000
}
fn d_idle_timeout() -> u64 {
    300_000
}

/// A configuration that passed every rule.
#[derive(Debug, Clone)]
pub struct ValidNodeConfig {
    /// Node id.
    pub node_id: u64,
    /// Data directory.
    pub data_dir: PathBuf,
    /// QUIC listen address.
    pub peer_addr: SocketAddr,
    /// RESP listen address.
    pub client_addr: SocketAddr,
    /// Advertised QUIC address.
    pub advertise_peer_addr: SocketAddr,
    /// Advertised RESP address.
    pub advertise_client_addr: SocketAddr,
    /// CA certificate PEM.
    pub ca_pem: String,
    /// Node certificate PEM.
    pub cert_pem: String,
    /// Node key PEM (a secret: `Debug` shows `Secret(***)`).
    pub key_pem: Secret,
    /// Where `ca_pem`, `cert_pem` and `key_pem` were read from: a certificate reload
    /// (`FLOTILLA.RELOADCERTS`, SIGHUP) reads the same files again.
    pub cert_files: CertFiles,
    /// Founds the cluster.
    pub bootstrap: bool,
    /// Speaks the Redis Cluster protocol on the client port.
    pub cluster_mode: bool,
    /// Serves leader reads under the leader's lease (`lease_reads`).
    pub lease_reads: bool,
    /// Different connections' writes to one shard share entries (`joint_writes`).
    pub joint_writes: bool,
    /// Different connections' reads from one shard share barriers (`joint_reads`).
    pub joint_reads: bool,
    /// Shard count.
    pub shards: u32,
    /// Raft tick.
    pub tick: Duration,
    /// Election timeout lower bound in ticks.
    pub election_ticks: u32,
    /// Retry budget.
    pub retry_budget: Duration,
    /// How long a request refused as busy is held.
    pub busy_hold: Duration,
    /// Compaction threshold.
    pub compact_entries: u64,
    /// Automatic split above this write load (bytes/s; 0: off).
    pub split_write_bytes_per_sec: u64,
    /// Automatic split above this many keys (0: off).
    pub split_keys: u64,
    /// Request size limit.
    pub max_request_bytes: usize,
    /// Connection limit.
    pub max_clients: usize,
    /// Executor threads.
    pub executor_threads: usize,
    /// Engine workers.
    pub engine_workers: usize,
    /// Half-life of the load rates.
    pub load_half_life: Duration,
    /// Fold interval of the load rates.
    pub load_fold_interval: Duration,
    /// The data user's password (from `password_file` or `FLOTILLA_PASSWORD`).
    pub password: Option<Secret>,
    /// The admin user's name.
    pub admin_user: String,
    /// The admin user's password (from `admin_password_file` or `FLOTILLA_ADMIN_PASSWORD`).
    pub admin_password: Option<Secret>,
    /// Protected mode.
    pub protected_mode: bool,
    /// Node channel connection limit.
    pub node_channel_max_connections: usize,
    /// Node channel handshake deadline.
    pub node_channel_handshake: Duration,
    /// Node channel idle timeout.
    pub node_channel_idle: Duration,
    /// Client limits (see [`ClientLimits`]).
    pub limits: ClientLimits,
    /// `shutdown_timeout_ms`.
    pub shutdown_timeout: Duration,
    /// `restore`: founds the meta group only; shards come from a backup.
    pub restore: bool,
    /// Logs and the metrics endpoint (see [`Observability`]).
    pub observability: Observability,
}

/// How the node logs, and where it serves `/metrics` (the keys `log_level`, `log_format`,
/// `metrics_addr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observability {
    /// `log_level`: `tracing` filter directives (checked to parse).
    pub log_level: String,
    /// `log_format`.
    pub log_format: LogFormat,
    /// `metrics_addr` (`None`: no HTTP endpoint).
    pub metrics_addr: Option<SocketAddr>,
}

/// The format of log lines (`log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The certificate files of a node (the keys `ca_cert`, `node_cert`, `node_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The trusted CA certificates, PEM (several during a CA rotation).
    pub ca: PathBuf,
    /// This node's certificate (chain), PEM.
    pub cert: PathBuf,
    /// This node's private key, PEM.
    pub key: PathBuf,
}

/// The bounds the client port holds per connection (the keys of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// `max_request_args`.
    pub max_request_args: usize,
    /// `max_inline_bytes`.
    pub max_inline_bytes: usize,
    /// `unauthenticated_max_args`.
    pub unauthenticated_max_args: usize,
    /// `unauthenticated_max_bulk_bytes`.
    pub unauthenticated_max_bulk_bytes: usize,
    /// `client_query_buffer_bytes`.
    pub query_buffer_bytes: usize,
    /// `client_output_buffer_bytes`.
    pub output_buffer_bytes: usize,
    /// `unauthenticated_output_buffer_bytes`.
    pub unauthenticated_output_buffer_bytes: usize,
    /// `auth_timeout_ms`.
    pub auth_timeout: Duration,
    /// `idle_timeout_ms`.
    pub idle_timeout: Duration,
}

/// Why a configuration was refused. Every message names the key.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a value of the wrong type.
    #[error("config file {path}: {error}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key and line).
        error: String,
    },
    /// A required key is missing.
    #[error("config key `{0}` is required")]
    Missing(&'static str),
    /// A key's value is out of bounds or invalid.
    #[error("config key `{key}`: {why}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        why: String,
    },
}

fn bad(key: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, why: why.into() }
}

fn addr(key: &'static str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse().map_err(|_| bad(key, format!("{v:?} is not an ip:port address")))
}

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    key: &'static str,
    v: T,
    lo: T,
    hi: T,
) -> Result<T, ConfigError> {
    if v < lo || v > hi {
        return Err(bad(key, format!("{v} out of bounds {lo}..={hi}")));
    }
    Ok(v)
}

fn pem(key: &'static str, p: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(p).map_err(|e| bad(key, format!("{}: {e}", p.display())))
}

impl NodeConfig {
    /// Reads and parses a TOML file (not yet validated).
    pub fn from_file(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.into(), error })?;
        NodeConfig::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { error, .. } => ConfigError::Parse { path: path.into(), error },
            e => e,
        })
    }

    /// Parses TOML text (not yet validated).
    pub fn from_toml(text: &str) -> Result<NodeConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse { path: PathBuf::new(), error: e.to_string() })
    }

    /// Checks every rule (and reads the certificate and password files, and the password
    /// environment variables).
    pub fn validate(self) -> Result<ValidNodeConfig, ConfigError> {
        self.validate_with_env(|k| std::env::var(k).ok())
    }

    /// [`NodeConfig::validate`] with `env` in place of the process environment.
    pub fn validate_with_env(
        self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ValidNodeConfig, ConfigError> {
        let trust = trust_rules(&self, &env)?;
        let observability = observability_rules(&self)?;
        let node_id = self.node_id.ok_or(ConfigError::Missing("node_id"))?;
        range("node_id", node_id, 1, 1 << 63)?;
        let data_dir = self.data_dir.ok_or(ConfigError::Missing("data_dir"))?;
        if data_dir.as_os_str().is_empty() {
            return Err(bad("data_dir", "must not be empty"));
        }
        let peer_addr =
            addr("peer_addr", self.peer_addr.as_deref().ok_or(ConfigError::Missing("peer_addr"))?)?;
        let client_addr =
            addr("client_addr", self.client_addr.as_deref().ok_or(ConfigError::Missing("client_addr"))?)?;
        if peer_addr.port() == 0 {
            return Err(bad("peer_addr", "port 0: the node channel listens on TCP at the same port"));
        }
        let advertise_peer_addr = match &self.advertise_peer_addr {
            Some(a) => addr("advertise_peer_addr", a)?,
            None => peer_addr,
        };
        let advertise_client_addr = match &self.advertise_client_addr {
            Some(a) => addr("advertise_client_addr", a)?,
            None => client_addr,
        };
        if advertise_peer_addr.port() == 0 {
            return Err(bad("peer_addr", "port 0 cannot be advertised to other nodes"));
        }
        if advertise_client_addr.port() == 0 {
            return Err(bad("client_addr", "port 0 cannot be advertised to other nodes"));
        }
        let cert_files = CertFiles {
            ca: self.ca_cert.ok_or(ConfigError::Missing("ca_cert"))?,
            cert: self.node_cert.ok_or(ConfigError::Missing("node_cert"))?,
            key: self.node_key.ok_or(ConfigError::Missing("node_key"))?,
        };
        let ca_pem = pem("ca_cert", &cert_files.ca)?;
        let cert_pem = pem("node_cert", &cert_files.cert)?;
        let key_pem = Secret::new(pem("node_key", &cert_files.key)?);
        let shards = range("shards", self.shards, 1, MAX_SHARDS)?;
        let tick = Duration::from_millis(range("tick_ms", self.tick_ms, 1, 1000)?);
        let election_ticks = range("election_ticks", self.election_ticks, 2, 10_000)?;
        let retry_budget = Duration::from_millis(range("retry_budget_ms", self.retry_budget_ms, 10, 60_000)?);
        let busy_hold = Duration::from_millis(range("busy_hold_ms", self.busy_hold_ms, 0, 600_000)?);
        let compact_entries = range("compact_entries", self.compact_entries, 1, 1_000_000_000)?;
        let max_request_bytes = range("max_request_bytes", self.max_request_bytes, 1024, 512 << 20)?;
        let max_clients = range("max_clients", self.max_clients, 1, 1_000_000)?;
        let executor_threads = range("executor_threads", self.executor_threads, 1, 4096)?;
        let engine_workers = range("engine_workers", self.engine_workers, 0, 256)?;
        let load_half_life_ms = range("load_half_life_ms", self.load_half_life_ms, 10, 86_400_000)?;
        let load_fold_ms = range("load_fold_interval_ms", self.load_fold_interval_ms, 10, load_half_life_ms)?;
        let limits = ClientLimits {
            max_request_args: range("max_request_args", self.max_request_args, 1, 1 << 24)?,
            max_inline_bytes: range("max_inline_bytes", self.max_inline_bytes, 64, 16 << 20)?,
            unauthenticated_max_args: range(
                "unauthenticated_max_args",
                self.unauthenticated_max_args,
                1,
                1024,
            )?,
            unauthenticated_max_bulk_bytes: range(
                "unauthenticated_max_bulk_bytes",
                self.unauthenticated_max_bulk_bytes,
                16,
                1 << 20,
            )?,
            query_buffer_bytes: range(
                "client_query_buffer_bytes",
                self.client_query_buffer_bytes,
                max_request_bytes + 1,
                4 << 30,
            )?,
            output_buffer_bytes: range(
                "client_output_buffer_bytes",
                self.client_output_buffer_bytes,
                64 << 10,
                16 << 30,
            )?,
            unauthenticated_output_buffer_bytes: range(
                "unauthenticated_output_buffer_bytes",
                self.unauthenticated_output_buffer_bytes,
                128,
                1 << 20,
            )?,
            auth_timeout: Duration::from_millis(range(
                "auth_timeout_ms",
                self.auth_timeout_ms,
                100,
                3_600_000,
            )?),
            idle_timeout: Duration::from_millis(range(
                "idle_timeout_ms",
                self.idle_timeout_ms,
                100,
                86_400_000,
            )?),
        };
        let shutdown_timeout =
            Duration::from_millis(range("shutdown_timeout_ms", self.shutdown_timeout_ms, 100, 600_000)?);
        if self.restore && !self.bootstrap {
            return Err(bad("restore", "needs bootstrap = true (a restore seeds a new cluster)"));
        }
        Ok(ValidNodeConfig {
            node_id,
            data_dir,
            peer_addr,
            client_addr,
            advertise_peer_addr,
            advertise_client_addr,
            ca_pem,
            cert_pem,
            key_pem,
            cert_files,
            bootstrap: self.bootstrap,
            cluster_mode: self.cluster_mode,
            lease_reads: self.lease_reads,
            joint_writes: self.joint_writes,
            joint_reads: self.joint_reads,
            shards,
            tick,
            election_ticks,
            retry_budget,
            busy_hold,
            compact_entries,
            split_write_bytes_per_sec: self.split_write_bytes_per_sec,
            split_keys: self.split_keys,
            max_request_bytes,
            max_clients,
            executor_threads,
            engine_workers,
            load_half_life: Duration::from_millis(load_half_life_ms),
            load_fold_interval: Duration::from_millis(load_fold_ms),
            password: trust.password,
            admin_user: self.admin_user,
            admin_password: trust.admin_password,
            protected_mode: self.protected_mode,
            node_channel_max_connections: trust.max_connections,
            node_channel_handshake: trust.handshake,
            node_channel_idle: trust.idle,
            limits,
            observability,
            shutdown_timeout,
            restore: self.restore,
        })
    }
}

/// The rules of `log_level`, `log_format` and `metrics_addr`.
fn observability_rules(c: &NodeConfig) -> Result<Observability, ConfigError> {
    let level = c.log_level.trim();
    if level.is_empty() || level.len() > 1024 {
        return Err(bad("log_level", "1..=1024 bytes of tracing filter directives (e.g. `info`)"));
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(level) {
        return Err(bad("log_level", format!("{level:?}: {e}")));
    }
    let log_format = match c.log_format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => return Err(bad("log_format", format!("{other:?}: must be `text` or `json`"))),
    };
    let metrics_addr = match &c.metrics_addr {
        Some(a) => Some(addr("metrics_addr", a)?),
        None => None,
    };
    let taken =
        [&c.client_addr, &c.peer_addr].map(|a| a.as_deref().and_then(|a| a.parse::<SocketAddr>().ok()));
    if metrics_addr.is_some_and(|m| m.port() != 0 && taken.contains(&Some(m))) {
        return Err(bad("metrics_addr", "must differ from client_addr and peer_addr"));
    }
    Ok(Observability { log_level: level.to_string(), log_format, metrics_addr })
}

struct Trust {
    password: Option<Secret>,
    admin_password: Option<Secret>,
    max_connections: usize,
    handshake: Duration,
    idle: Duration,
}

/// A password from its file, else from the environment variable.
fn secret(
    key: &'static str,
    file: Option<&Path>,
    var: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, ConfigError> {
    let raw = match file {
        Some(p) => std::fs::read_to_string(p).map_err(|e| bad(key, format!("{}: {e}", p.display())))?,
        None => match env(var) {
            Some(v) => v,
            None => return Ok(None),
        },
    };
    let pw = raw.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s)).unwrap_or(&raw);
    if pw.is_empty() || pw.len() > 512 {
        return Err(bad(key, format!("the password must be 1..=512 bytes (from {var} when no file)")));
    }
    Ok(Some(Secret::new(pw)))
}

/// The trust block's rules (issue 12 point 9).
fn trust_rules(c: &NodeConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Trust, ConfigError> {
    if c.password.is_some() {
        return Err(bad(
            "password",
            format!("passwords are not accepted in the config file: use password_file or {PASSWORD_ENV}"),
        ));
    }
    let u = &c.admin_user;
    if u.is_empty()
        || u.len() > 64
        || u == crate::acl::DEFAULT_USER
        || !u.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(bad("admin_user", "1..=64 bytes of [A-Za-z0-9_.-], not `default`"));
    }
    let password = secret("password_file", c.password_file.as_deref(), PASSWORD_ENV, env)?;
    let admin_password =
        secret("admin_password_file", c.admin_password_file.as_deref(), ADMIN_PASSWORD_ENV, env)?;
    match (&password, &admin_password) {
        (Some(_), None) => {
            return Err(bad(
                "admin_password_file",
                format!("required when a data password is set (or set {ADMIN_PASSWORD_ENV})"),
            ))
        }
        (None, Some(_)) => {
            return Err(bad(
                "password_file",
                format!("required when an admin password is set (or set {PASSWORD_ENV})"),
            ))
        }
        _ => {}
    }
    if let (Some(d), Some(a)) = (&password, &admin_password) {
        if d.matches(a.expose().as_bytes()) {
            return Err(bad("admin_password_file", "the admin password must differ from the data password"));
        }
    }
    Ok(Trust {
        password,
        admin_password,
        max_connections: range("node_channel_max_connections", c.node_channel_max_connections, 1, 65_536)?,
        handshake: Duration::from_millis(range(
            "node_channel_handshake_ms",
            c.node_channel_handshake_ms,
            100,
            60_000,
        )?),
        idle: Duration::from_millis(range("node_channel_idle_ms", c.node_channel_idle_ms, 1000, 86_400_000)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(dir: &Path) -> String {
        for f in ["ca.pem", "n.pem", "n.key"] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        format!(
            "node_id = 1\ndata_dir = \"{d}/data\"\npeer_addr = \"127.0.0.1:7001\"\n\
             client_addr = \"127.0.0.1:6001\"\nca_cert = \"{d}/ca.pem\"\nnode_cert = \"{d}/n.pem\"\n\
             node_key = \"{d}/n.key\"\n",
            d = dir.display()
        )
    }

    fn err(text: &str) -> String {
        match NodeConfig::from_toml(text).and_then(NodeConfig::validate) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_and_each_error_names_its_key() {
        let tmp = tempfile::tempdir().unwrap();
        let b = base(tmp.path());
        let v = NodeConfig::from_toml(&b).unwrap().validate().unwrap();
        assert_eq!((v.shards, v.retry_budget, v.bootstrap), (16, Duration::from_secs(2), false));
        assert_eq!(v.advertise_client_addr, v.client_addr);
        assert!(err(&b.replace("node_id = 1\n", "")).contains("`node_id` is required"));
        assert!(err(&b.replace("node_id = 1", "node_id = 0")).contains("`node_id`"));
        assert!(err(&format!("{b}shards = 0\n")).contains("`shards`: 0 out of bounds"));
        assert!(err(&format!("{b}tick_ms = 5000\n")).contains("`tick_ms`"));
        assert!(err(&format!("{b}retry_budget_ms = 1\n")).contains("`retry_budget_ms`"));
        assert!(err(&format!("{b}busy_hold_ms = 600001\n")).contains("`busy_hold_ms`"));
        assert!(err(&format!("{b}password = \"x\"\n")).contains("`password`: passwords are not accepted"));
        assert!(err(&b.replace("127.0.0.1:6001", "nowhere")).contains("`client_addr`"));
        assert!(err(&b.replace("n.key", "missing.key")).contains("`node_key`"));
        assert!(err(&format!("{b}shardz = 3\n")).contains("shardz"));
        assert!(err(&format!("{b}shards = \"many\"\n")).contains("shards"));
        assert_eq!(v.limits.unauthenticated_max_args, 10);
        assert_eq!(v.limits.unauthenticated_max_bulk_bytes, 16384);
        assert_eq!(v.limits.query_buffer_bytes, 32 << 20);
        assert_eq!(v.limits.output_buffer_bytes, 64 << 20);
        assert_eq!(v.limits.unauthenticated_output_buffer_bytes, 1024);
        assert_eq!(
            (v.limits.auth_timeout, v.limits.idle_timeout),
            (Duration::from_secs(10), Duration::from_secs(300))
        );
        assert!(err(&format!("{b}client_query_buffer_bytes = 16777216\n"))
            .contains("`client_query_buffer_bytes`"));
        assert!(err(&format!("{b}unauthenticated_max_args = 0\n")).contains("`unauthenticated_max_args`"));
        assert!(err(&format!("{b}unauthenticated_max_bulk_bytes = 8\n"))
            .contains("`unauthenticated_max_bulk_bytes`"));
        assert!(err(&format!("{b}client_output_buffer_bytes = 1\n")).contains("`client_output_buffer_bytes`"));
        assert!(err(&format!("{b}unauthenticated_output_buffer_bytes = 1\n"))
            .contains("`unauthenticated_output_buffer_bytes`"));
        assert!(err(&format!("{b}auth_timeout_ms = 0\n")).contains("`auth_timeout_ms`"));
        assert!(err(&format!("{b}idle_timeout_ms = 0\n")).contains("`idle_timeout_ms`"));
        assert!(err(&format!("{b}max_request_args = 0\n")).contains("`max_request_args`"));
        assert!(err(&format!("{b}max_inline_bytes = 1\n")).contains("`max_inline_bytes`"));
        assert_eq!((v.shutdown_timeout, v.restore), (Duration::from_secs(10), false));
        assert!(err(&format!("{b}shutdown_timeout_ms = 99\n")).contains("`shutdown_timeout_ms`"));
        assert!(err(&format!("{b}shutdown_timeout_ms = 600001\n")).contains("`shutdown_timeout_ms`"));
        assert!(err(&format!("{b}restore = true\n")).contains("`restore`: needs bootstrap"));
        let r = NodeConfig::from_toml(&format!("{b}restore = true\nbootstrap = true\n")).unwrap();
        assert!(r.validate().unwrap().restore);
    }

    /// Passwords come from files or the environment, never the config text; `Debug` of the
    /// configuration (raw and validated) shows no password and no private key.
    #[test]
    fn secrets_come_from_files_or_env_and_never_show_in_debug() {
        let tmp = tempfile::tempdir().unwrap();
        let b = base(tmp.path());
        std::fs::write(tmp.path().join("n.key"), "-----BEGIN PRIVATE KEY-----\nSECRETKEYBYTES\n").unwrap();
        std::fs::write(tmp.path().join("pw"), "data-Secret-1\n").unwrap();
        std::fs::write(tmp.path().join("apw"), "admin-Secret-2\r\n").unwrap();
        let d = tmp.path().display();
        let text = format!("{b}password_file = \"{d}/pw\"\nadmin_password_file = \"{d}/apw\"\n");
        let raw = NodeConfig::from_toml(&text).unwrap();
        let v = raw.clone().validate_with_env(|_| None).unwrap();
        assert_eq!(v.password.as_ref().map(Secret::expose), Some("data-Secret-1"));
        assert_eq!(v.admin_password.as_ref().map(Secret::expose), Some("admin-Secret-2"));
        assert_eq!(v.admin_user, "admin");
        for dbg in [format!("{v:?}"), format!("{v:#?}"), format!("{raw:?}")] {
            for secret in ["data-Secret-1", "admin-Secret-2", "SECRETKEYBYTES"] {
                assert!(!dbg.contains(secret), "{secret} in {dbg}");
            }
        }
        // From the environment.
        let env = |k: &str| match k {
            PASSWORD_ENV => Some("env-data".to_string()),
            ADMIN_PASSWORD_ENV => Some("env-admin".to_string()),
            _ => None,
        };
        let v = NodeConfig::from_toml(&b).unwrap().validate_with_env(env).unwrap();
        assert_eq!(v.password.map(|s| s.expose().to_string()).as_deref(), Some("env-data"));
        assert!(!format!("{:?}", NodeConfig::from_toml(&b).unwrap().validate_with_env(env)).contains("env-"));
        // Both or neither; never the same; never inline.
        let only = |k: &'static str| move |q: &str| (q == k).then(|| "x".to_string());
        let e = NodeConfig::from_toml(&b).unwrap().validate_with_env(only(PASSWORD_ENV)).unwrap_err();
        assert!(e.to_string().contains("`admin_password_file`: required"), "{e}");
        let e = NodeConfig::from_toml(&b).unwrap().validate_with_env(only(ADMIN_PASSWORD_ENV)).unwrap_err();
        assert!(e.to_string().contains("`password_file`: required"), "{e}");
        let same = |_: &str| Some("same".to_string());
        let e = NodeConfig::from_toml(&b).unwrap().validate_with_env(same).unwrap_err();
        assert!(e.to_string().contains("must differ"), "{e}");
        let e = NodeConfig::from_toml(&format!("{b}password = \"inline-Secret\"\n")).unwrap();
        assert!(!format!("{e:?}").contains("inline-Secret"));
        assert!(e.validate_with_env(|_| None).unwrap_err().to_string().contains("`password`"));
        assert!(err(&format!("{b}admin_user = \"default\"\n")).contains("`admin_user`"));
        assert!(
            err(&format!("{b}node_channel_max_connections = 0\n")).contains("`node_channel_max_connections`")
        );
        assert!(err(&format!("{b}node_channel_handshake_ms = 1\n")).contains("`node_channel_handshake_ms`"));
        assert!(err(&format!("{b}node_channel_idle_ms = 1\n")).contains("`node_channel_idle_ms`"));
        assert!(err(&format!("{b}password_file = \"{d}/none\"\n")).contains("`password_file`"));
    }

    #[test]
    fn observability_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let b = base(tmp.path());
        let v = NodeConfig::from_toml(&b).unwrap().validate().unwrap();
        let want =
            Observability { log_level: "info".into(), log_format: LogFormat::Text, metrics_addr: None };
        assert_eq!(v.observability, want);
        let text = format!(
            "{b}log_level = \"warn,flotilla_engine=debug\"\nlog_format = \"json\"\nmetrics_addr = \"127.0.0.1:9100\"\n"
        );
        let v = NodeConfig::from_toml(&text).unwrap().validate().unwrap().observability;
        assert_eq!(v.log_format, LogFormat::Json);
        assert_eq!(v.log_level, "warn,flotilla_engine=debug");
        assert_eq!(v.metrics_addr, Some("127.0.0.1:9100".parse().unwrap()));
        assert!(err(&format!("{b}log_level = \"\"\n")).contains("`log_level`"));
        assert!(err(&format!("{b}log_level = \"info,[bad\"\n")).contains("`log_level`"));
        assert!(err(&format!("{b}log_format = \"xml\"\n")).contains("`log_format`"));
        assert!(err(&format!("{b}metrics_addr = \"nowhere\"\n")).contains("`metrics_addr`"));
        assert!(err(&format!("{b}metrics_addr = \"127.0.0.1:6001\"\n")).contains("`metrics_addr`"));
    }

    #[test]
    fn load_rate_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let b = base(tmp.path());
        let v = NodeConfig::from_toml(&b).unwrap().validate().unwrap();
        assert_eq!(
            (v.load_half_life, v.load_fold_interval),
            (Duration::from_secs(10), Duration::from_secs(1))
        );
        let text = format!("{b}load_half_life_ms = 2000\nload_fold_interval_ms = 200\n");
        let v = NodeConfig::from_toml(&text).unwrap().validate().unwrap();
        assert_eq!(
            (v.load_half_life, v.load_fold_interval),
            (Duration::from_secs(2), Duration::from_millis(200))
        );
        assert!(err(&format!("{b}load_half_life_ms = 5\n")).contains("`load_half_life_ms`"));
        let longer = format!("{b}load_half_life_ms = 100\nload_fold_interval_ms = 200\n");
        assert!(err(&longer).contains("`load_fold_interval_ms`"));
    }
}
