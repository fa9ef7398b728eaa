//! `INFO [section ...]`: Redis 7's sections (server, clients, memory, stats, replication,
//! cluster, keyspace) with Redis's field names where a field has a meaning here, plus
//! flotilla's `engine` and `trust` sections. `INFO`, `INFO default`, `INFO all` and
//! `INFO everything` give every section; named sections (any case, several at once) give
//! those, and an unknown name gives nothing, as in Redis.
//!
//! Owns the sections, their fields and the text layout ([`format()`], a pure function of
//! [`InfoData`]); [`gather`] collects the data from the node. Never changes anything.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use flotilla_engine::raft::Role;

use crate::node::Node;
use crate::resp::Value;
use crate::trust::describe_allowed;

/// The Redis version reported (as HELLO does): what clients parse to pick features.
pub const REDIS_VERSION: &str = "7.0.0";

/// The sections, in the order INFO lists them.
pub const SECTIONS: [&str; 9] =
    ["server", "clients", "memory", "stats", "replication", "cluster", "keyspace", "engine", "trust"];

/// Everything INFO reports, gathered at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InfoData {
    /// This node's id.
    pub node_id: u64,
    /// Whether it serves the Redis Cluster protocol (`cluster_mode`).
    pub cluster_mode: bool,
    /// The process id.
    pub process_id: u32,
    /// The advertised client address.
    pub client_addr: String,
    /// The advertised peer address.
    pub peer_addr: String,
    /// The client port's port.
    pub tcp_port: u16,
    /// Seconds since the node started.
    pub uptime_secs: u64,
    /// Microseconds since the Unix epoch now.
    pub server_time_usec: u128,
    /// Client connections open now.
    pub connected_clients: u64,
    /// `max_clients`.
    pub maxclients: usize,
    /// Bytes of keys and values held by local replicas.
    pub used_memory: u64,
    /// Resident set size of the process, bytes (0 if unknown).
    pub used_memory_rss: u64,
    /// Connections accepted since start.
    pub total_connections_received: u64,
    /// Commands answered since start.
    pub total_commands_processed: u64,
    /// Commands per second lately.
    pub instantaneous_ops_per_sec: u64,
    /// Connections refused.
    pub rejected_connections: u64,
    /// Error replies since start.
    pub total_error_replies: u64,
    /// Shards configured.
    pub shards: u32,
    /// Nodes in the directory.
    pub known_nodes: usize,
    /// Replicas hosted here (meta group included).
    pub replicas: usize,
    /// Of those, leaders.
    pub leaders: usize,
    /// Shard replicas hosted here that lead, and that follow (voters or learners).
    pub shards_leading: usize,
    /// Shard replicas hosted here that do not lead.
    pub shards_following: usize,
    /// Keys held by local replicas.
    pub local_keys: usize,
    /// Keys with an expiry held by local replicas.
    pub local_expires: usize,
    /// Engine counters: (name, value), in order.
    pub engine: Vec<(&'static str, u64)>,
    /// Trust section: (name, value), in order.
    pub trust: Vec<(&'static str, String)>,
}

/// Which sections `args` asks for.
fn wanted(args: &[Vec<u8>]) -> BTreeSet<&'static str> {
    if args.is_empty() {
        return SECTIONS.into_iter().collect();
    }
    let mut out = BTreeSet::new();
    for a in args {
        let name = String::from_utf8_lossy(a).to_ascii_lowercase();
        match name.as_str() {
            "all" | "default" | "everything" => out.extend(SECTIONS),
            n => out.extend(SECTIONS.into_iter().filter(|s| *s == n)),
        }
    }
    out
}

/// Bytes in Redis's human form (`1.50K`, `2.00M`, ...).
fn human(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "K", "M", "G", "T", "P"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b}B")
    } else {
        format!("{v:.2}{}", UNITS[u])
    }
}

/// The INFO text of the sections `args` names.
pub fn format(d: &InfoData, args: &[Vec<u8>]) -> String {
    let want = wanted(args);
    let mut out = String::new();
    for s in SECTIONS.iter().filter(|s| want.contains(*s)) {
        let fields: Vec<(String, String)> = match *s {
            "server" => vec![
                ("redis_version".into(), REDIS_VERSION.into()),
                ("flotilla_version".into(), env!("CARGO_PKG_VERSION").into()),
                ("redis_mode".into(), if d.cluster_mode { "cluster" } else { "standalone" }.into()),
                ("os".into(), format!("{} {}", std::env::consts::OS, std::env::consts::ARCH)),
                ("arch_bits".into(), (usize::BITS).to_string()),
                ("multiplexing_api".into(), "epoll".into()),
                ("process_id".into(), d.process_id.to_string()),
                ("tcp_port".into(), d.tcp_port.to_string()),
                ("server_time_usec".into(), d.server_time_usec.to_string()),
                ("uptime_in_seconds".into(), d.uptime_secs.to_string()),
                ("uptime_in_days".into(), (d.uptime_secs / 86_400).to_string()),
                ("node_id".into(), d.node_id.to_string()),
                ("client_addr".into(), d.client_addr.clone()),
                ("peer_addr".into(), d.peer_addr.clone()),
            ],
            "clients" => vec![
                ("connected_clients".into(), d.connected_clients.to_string()),
                ("maxclients".into(), d.maxclients.to_string()),
                ("blocked_clients".into(), "0".into()),
            ],
            "memory" => vec![
                ("used_memory".into(), d.used_memory.to_string()),
                ("used_memory_human".into(), human(d.used_memory)),
                ("used_memory_rss".into(), d.used_memory_rss.to_string()),
                ("used_memory_rss_human".into(), human(d.used_memory_rss)),
                ("maxmemory".into(), "0".into()),
                ("maxmemory_policy".into(), "noeviction".into()),
            ],
            "stats" => vec![
                ("total_connections_received".into(), d.total_connections_received.to_string()),
                ("total_commands_processed".into(), d.total_commands_processed.to_string()),
                ("instantaneous_ops_per_sec".into(), d.instantaneous_ops_per_sec.to_string()),
                ("rejected_connections".into(), d.rejected_connections.to_string()),
                ("total_error_replies".into(), d.total_error_replies.to_string()),
            ],
            "replication" => vec![
                ("role".into(), "master".into()),
                ("connected_slaves".into(), "0".into()),
                ("shards_leading".into(), d.shards_leading.to_string()),
                ("shards_following".into(), d.shards_following.to_string()),
            ],
            "cluster" => vec![
                ("cluster_enabled".into(), u8::from(d.cluster_mode).to_string()),
                ("shards".into(), d.shards.to_string()),
                ("known_nodes".into(), d.known_nodes.to_string()),
                ("replicas".into(), d.replicas.to_string()),
                ("leaders".into(), d.leaders.to_string()),
            ],
            "keyspace" => {
                // As Redis: a database line only when it holds keys.
                let mut f = vec![("local_keys".to_string(), d.local_keys.to_string())];
                if d.local_keys > 0 {
                    f.insert(
                        0,
                        (
                            "db0".into(),
                            format!("keys={},expires={},avg_ttl=0", d.local_keys, d.local_expires),
                        ),
                    );
                }
                f
            }
            "engine" => d.engine.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            _ => d.trust.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        };
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let mut title = s.to_string();
        title[..1].make_ascii_uppercase();
        out.push_str(&format!("# {title}\r\n"));
        for (k, v) in fields {
            out.push_str(&format!("{k}:{v}\r\n"));
        }
    }
    out
}

/// Seconds since the Unix epoch (0 for none).
fn unix_secs(t: Option<SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs())
}

/// The resident set size of this process, from `/proc/self/statm` (0 if unknown).
fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions; it only reads a system value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

/// Everything INFO reports about `node` now; the keyspace's bytes (which take a pass over
/// every key) only `with_memory`.
pub fn gather(node: &Node, with_memory: bool) -> InfoData {
    let st = node.engine().status();
    let leads = |s: &&flotilla_engine::api::GroupStatus| s.role == Role::Leader;
    let shard_replicas = || st.iter().filter(|s| s.group >= crate::sm::SHARD_BASE);
    let m = node.engine().metrics();
    let net = node.net_stats();
    let km = node.kv_metrics();
    let (local_keys, used_memory) = if with_memory { node.keyspace_size() } else { (node.local_keys(), 0) };
    let l = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    InfoData {
        node_id: node.id(),
        cluster_mode: node.config().cluster_mode,
        process_id: std::process::id(),
        client_addr: node.config().advertise_client_addr.to_string(),
        peer_addr: node.config().advertise_peer_addr.to_string(),
        tcp_port: node.config().client_addr.port(),
        uptime_secs: km.started.elapsed().as_secs(),
        server_time_usec: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros()),
        connected_clients: l(&km.clients.connected),
        maxclients: node.config().max_clients,
        used_memory,
        used_memory_rss: rss_bytes(),
        total_connections_received: l(&km.clients.received),
        total_commands_processed: km.commands_processed(),
        instantaneous_ops_per_sec: km.ops_per_sec(),
        rejected_connections: l(&km.clients.rejected),
        total_error_replies: km.error_replies(),
        shards: node.config().shards,
        known_nodes: node.directory().len(),
        replicas: st.len(),
        leaders: st.iter().filter(leads).count(),
        shards_leading: shard_replicas().filter(leads).count(),
        shards_following: shard_replicas().filter(|s| !leads(s)).count(),
        local_keys,
        local_expires: node.keyspace_counts().1,
        engine: vec![
            ("applied_entries", m.applied_entries),
            ("compactions", m.compactions),
            ("snapshots_sent", m.snapshots_sent),
            ("snapshots_installed", m.snapshots_installed),
            ("elections", m.elections),
            ("leaders_elected", m.leaders_elected),
            ("transfers_started", m.transfers_started),
            ("membership_changes", m.membership_changes),
            ("wal_syncs", m.wal_syncs),
            ("wal_sync_nanos_total", m.wal_sync_nanos_total),
            ("wal_segments", m.wal_segments),
            ("apply_lag", m.apply_lag),
            ("apply_lag_bytes", m.apply_lag_bytes),
            ("uncommitted_bytes", m.uncommitted_bytes),
            ("reads_held", m.reads_held),
            ("refused_busy", m.refused_busy),
            ("refused_not_leader", m.refused_not_leader),
        ],
        trust: vec![
            ("allowed_nodes", describe_allowed(node.allow_list().get().as_deref())),
            ("cert_not_after_unix", unix_secs(net.cert_not_after).to_string()),
            ("peer_cert_not_after_min_unix", unix_secs(net.peer_cert_not_after_min).to_string()),
            ("net_connections", net.connections.to_string()),
            ("net_refused", net.refused.to_string()),
            ("net_policy_refused", net.policy_refused.to_string()),
            ("net_handshakes_refused", net.handshakes_refused.to_string()),
        ],
    }
}

/// `INFO [section ...]`: a verbatim string (RESP3) / bulk string (RESP2), as Redis.
pub fn info(node: &Node, args: &[Vec<u8>]) -> Value {
    let with_memory = wanted(args).contains("memory");
    Value::Verbatim("txt".into(), format(&gather(node, with_memory), args).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> InfoData {
        InfoData {
            node_id: 3,
            process_id: 4242,
            tcp_port: 6380,
            uptime_secs: 90_000,
            connected_clients: 7,
            maxclients: 10_000,
            used_memory: 3 << 20,
            total_commands_processed: 99,
            local_keys: 12,
            shards_leading: 5,
            shards_following: 11,
            engine: vec![("compactions", 2)],
            trust: vec![("allowed_nodes", "any".into())],
            ..InfoData::default()
        }
    }

    fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        text.split("\r\n").find_map(|l| l.strip_prefix(&format!("{name}:")))
    }

    #[test]
    fn every_section_with_redis_field_names() {
        let text = format(&data(), &[]);
        let titles: Vec<&str> = text.split("\r\n").filter(|l| l.starts_with("# ")).collect();
        assert_eq!(
            titles,
            [
                "# Server",
                "# Clients",
                "# Memory",
                "# Stats",
                "# Replication",
                "# Cluster",
                "# Keyspace",
                "# Engine",
                "# Trust"
            ]
        );
        assert_eq!(field(&text, "redis_version"), Some("7.0.0"));
        assert_eq!(field(&text, "redis_mode"), Some("standalone"));
        assert_eq!(field(&text, "process_id"), Some("4242"));
        assert_eq!(field(&text, "tcp_port"), Some("6380"));
        assert_eq!(field(&text, "uptime_in_seconds"), Some("90000"));
        assert_eq!(field(&text, "uptime_in_days"), Some("1"));
        assert_eq!(field(&text, "connected_clients"), Some("7"));
        assert_eq!(field(&text, "maxclients"), Some("10000"));
        assert_eq!(field(&text, "used_memory"), Some("3145728"));
        assert_eq!(field(&text, "used_memory_human"), Some("3.00M"));
        assert_eq!(field(&text, "total_commands_processed"), Some("99"));
        assert_eq!(field(&text, "role"), Some("master"));
        assert_eq!(field(&text, "shards_leading"), Some("5"));
        assert_eq!(field(&text, "db0"), Some("keys=12,expires=0,avg_ttl=0"));
        assert_eq!(field(&text, "compactions"), Some("2"));
        assert_eq!(field(&text, "allowed_nodes"), Some("any"));
        // Sections are separated by one blank line; every line ends in CRLF.
        assert!(text.contains("\r\n\r\n# Clients\r\n"));
        assert!(text.ends_with("\r\n") && !text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn sections_are_chosen_as_redis_chooses_them() {
        let d = data();
        let args = |words: &[&str]| words.iter().map(|w| w.as_bytes().to_vec()).collect::<Vec<_>>();
        let ks = format(&d, &args(&["keyspace"]));
        assert_eq!(ks, "# Keyspace\r\ndb0:keys=12,expires=0,avg_ttl=0\r\nlocal_keys:12\r\n");
        assert_eq!(format(&d, &args(&["KEYSPACE"])), ks);
        let two = format(&d, &args(&["clients", "server"]));
        assert!(
            two.starts_with("# Server\r\n") && two.contains("# Clients\r\n") && !two.contains("# Memory")
        );
        assert_eq!(format(&d, &args(&["nosuchsection"])), "");
        for all in ["all", "default", "everything"] {
            assert_eq!(format(&d, &args(&[all])), format(&d, &[]));
        }
        let cluster = format(&InfoData { cluster_mode: true, ..data() }, &[]);
        assert_eq!(field(&cluster, "redis_mode"), Some("cluster"));
        assert_eq!(field(&cluster, "cluster_enabled"), Some("1"));
        assert_eq!(field(&format(&d, &[]), "cluster_enabled"), Some("0"));
        // An empty keyspace has no database line, as in Redis.
        let empty = InfoData { local_keys: 0, ..data() };
        assert!(!format(&empty, &args(&["keyspace"])).contains("db0"));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512B");
        assert_eq!(human(1536), "1.50K");
        assert_eq!(human(5 << 30), "5.00G");
    }

    #[test]
    fn rss_is_read_from_proc() {
        assert!(rss_bytes() > 1 << 20, "a test process has more than 1 MiB resident");
    }
}
