//! A kv node: the engine with its shard and meta groups, the bootstrap, and the request
//! executor that turns parsed RESP commands into proposals and read barriers, routed to
//! the shard's leader.
//!
//! Owns routing and retries. A request for a shard this node does not lead is forwarded
//! over the node channel ([`crate::node_channel`]: RESP in mutual TLS with the node
//! certificates, at the leader's advertised peer address from the directory; no password
//! travels), as the internal command `FLOTILLA.LOCAL` (which the receiver executes locally
//! only, and only from another node's channel, answering
//! `-FLOTILLA.REDIRECT <node>` or `-FLOTILLA.RETRY <node> <why>` when it cannot). Refusals
//! are retried, following leader hints, until the retry budget runs out. The writes a node
//! runs for its clients carry its client session's (session, sequence) tag
//! ([`crate::sessions`]), here and forwarded, so a write whose outcome is unknown (the
//! leader changed or its node died after the append, a forwarded reply was lost) is
//! retried with the same tag and applied at most once; its client gets the real result,
//! and `INDETERMINATE` only when the budget ends first or the session was lost meanwhile.
//! `FLOTILLA.LOCAL S <group>` opens a session at the leader. Reads are served
//! by any local replica after a ReadIndex barrier (linearizable), so only writes and reads
//! for shards without a local replica travel. Never parses bytes off the wire (see
//! [`crate::server`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla_engine::api::{
    CreatePolicy, Engine, EngineConfig, MembershipChange, OpenError, ProposeError, SnapshotCheck,
    StateMachineFactory,
};
use flotilla_engine::transport::{DecodeLimits, QuicTransport};
use flotilla_net::{Endpoint, NetConfig};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::acl::Acl;
use crate::client::{Client, ClientError};
use crate::config::ValidNodeConfig;
use crate::leader_watch::LeaderWatch;
use crate::node_channel::{ChannelLimits, NodeTls};
use crate::outcome::{
    forward_failure, forwarded_reply, member_outcome, propose_outcome, read_outcome, transfer_outcome, Stage,
};
pub use crate::outcome::{indeterminate, Outcome};
use crate::outcome::{is_indeterminate, is_session_refused};
use crate::resp::{parse_value, Value};
use crate::sessions::{Sessions, Tag};
use crate::sm::{
    check_slots, known_group, read_data, read_routes, read_slots, shard_group, shard_of, Directory,
    DirectoryHook, MetaCmd, MetaSm, NodeInfo, RouteTable, Routes, ShardData, ShardSlots, ShardSm, META_GROUP,
    SHARD_BASE,
};
use crate::trust::{describe_allowed, load_certs, read_certs, AllowList, CertError, Certs};

/// Why a node could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// The data directory could not be created.
    #[error("data_dir {path}: {error}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// The certificates are unusable.
    #[error("certificates (ca_cert, node_cert, node_key): {0}")]
    Tls(String),
    /// The node channel's TCP listener could not be bound.
    #[error("peer_addr {addr} (TCP, node channel): {error}")]
    NodeChannel {
        /// The address.
        addr: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// The QUIC endpoint could not start (address in use, ...).
    #[error("peer_addr {addr}: {error}")]
    Net {
        /// The address.
        addr: SocketAddr,
        /// Why.
        error: String,
    },
    /// The engine refused to open.
    #[error("engine: {0}")]
    Engine(#[from] OpenError),
    /// Founding the cluster's groups failed.
    #[error("bootstrap: {0}")]
    Bootstrap(String),
}

/// A read of one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadQ {
    /// GET key.
    Get(Vec<u8>),
    /// Values of keys (nil for missing), in order.
    MGet(Vec<Vec<u8>>),
    /// How many of the keys exist.
    Exists(Vec<Vec<u8>>),
    /// Number of keys in the shard.
    Count,
    /// STRLEN key: the value's length (0 when absent).
    Strlen(Vec<u8>),
    /// TYPE key: `string`, or `none` when absent.
    Type(Vec<u8>),
    /// KEYS pattern: the shard's keys matching the Redis glob.
    Keys(Vec<u8>),
    /// One SCAN step in the shard: the keys whose [`crate::sm::scan_hash`] is at least
    /// `from`, in hash order, about `count` of them; answers `[next from, or -1 when the
    /// shard is done; keys; their types]`.
    Scan {
        /// First hash to visit.
        from: u64,
        /// How many keys to visit (a hint, as Redis's COUNT: keys of one hash stay together).
        count: u64,
    },
    /// A read command as its Redis arguments ([`crate::keycmd::read`]).
    Cmd(Vec<Vec<u8>>),
    /// WATCH: each key's state ([`crate::multi::encode_state`]).
    Watch(Vec<Vec<u8>>),
}

impl ReadQ {
    /// The keys it reads (none for whole-shard reads: COUNT, KEYS, SCAN).
    pub fn keys(&self) -> Vec<&[u8]> {
        match self {
            ReadQ::Get(k) | ReadQ::Strlen(k) | ReadQ::Type(k) => vec![k],
            ReadQ::MGet(ks) | ReadQ::Exists(ks) => ks.iter().map(Vec::as_slice).collect(),
            ReadQ::Count | ReadQ::Keys(_) | ReadQ::Scan { .. } => Vec::new(),
            ReadQ::Cmd(args) => crate::sm::args_keys(args),
            ReadQ::Watch(ks) => ks.iter().map(Vec::as_slice).collect(),
        }
    }
}

/// A membership change named by node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    /// Add a learner on the node.
    AddLearner(u64),
    /// Promote the node's learner.
    Promote(u64),
    /// Add a voter on the node.
    AddVoter(u64),
    /// Remove the node's replica.
    Remove(u64),
}

/// One operation on one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A proposal (encoded command).
    Write {
        /// Group.
        group: u64,
        /// Encoded command.
        cmd: Vec<u8>,
        /// The client session it is proposed in, if any ([`crate::sessions`]).
        tag: Option<Tag>,
    },
    /// Opens a client session on the group (at its leader); the reply is its id.
    OpenSession {
        /// Group.
        group: u64,
    },
    /// A linearizable read.
    Read {
        /// Group.
        group: u64,
        /// What to read.
        q: ReadQ,
    },
    /// A membership change (at the leader).
    Member {
        /// Group.
        group: u64,
        /// Change.
        change: Member,
    },
    /// A leadership transfer to a node (at the leader), waited for.
    Transfer {
        /// Group.
        group: u64,
        /// Target node.
        to: u64,
    },
}

impl Op {
    /// A write of `cmd` to `group`, in no session yet.
    pub fn write(group: u64, cmd: Vec<u8>) -> Op {
        Op::Write { group, cmd, tag: None }
    }

    /// The session tag of a write, if it has one.
    pub fn tag(&self) -> Option<Tag> {
        match self {
            Op::Write { tag, .. } => *tag,
            _ => None,
        }
    }

    fn group(&self) -> u64 {
        match self {
            Op::Write { group, .. }
            | Op::OpenSession { group }
            | Op::Read { group, .. }
            | Op::Member { group, .. }
            | Op::Transfer { group, .. } => *group,
        }
    }

    /// Whether re-running it after an unknown outcome could apply it twice.
    pub fn mutates(&self) -> bool {
        matches!(self, Op::Write { .. } | Op::Member { .. })
    }

    /// The arguments of `FLOTILLA.LOCAL` that carry it.
    pub fn to_args(&self) -> Vec<Vec<u8>> {
        let mut a: Vec<Vec<u8>> = vec![b"FLOTILLA.LOCAL".to_vec()];
        let g = self.group().to_string().into_bytes();
        match self {
            Op::Write { cmd, tag, .. } => {
                a.extend([b"W".to_vec(), g, cmd.clone()]);
                if let Some(t) = tag {
                    a.extend([t.session, t.seq, t.floor].map(|n| n.to_string().into_bytes()));
                }
            }
            Op::OpenSession { .. } => a.extend([b"S".to_vec(), g]),
            Op::Read { q, .. } => {
                a.extend([b"R".to_vec(), g]);
                match q {
                    ReadQ::Get(k) => a.extend([b"GET".to_vec(), k.clone()]),
                    ReadQ::MGet(ks) => {
                        a.push(b"MGET".to_vec());
                        a.extend(ks.iter().cloned());
                    }
                    ReadQ::Exists(ks) => {
                        a.push(b"EXISTS".to_vec());
                        a.extend(ks.iter().cloned());
                    }
                    ReadQ::Count => a.push(b"COUNT".to_vec()),
                    ReadQ::Strlen(k) => a.extend([b"STRLEN".to_vec(), k.clone()]),
                    ReadQ::Type(k) => a.extend([b"TYPE".to_vec(), k.clone()]),
                    ReadQ::Keys(p) => a.extend([b"KEYS".to_vec(), p.clone()]),
                    ReadQ::Scan { from, count } => a.extend([
                        b"SCAN".to_vec(),
                        from.to_string().into_bytes(),
                        count.to_string().into_bytes(),
                    ]),
                    ReadQ::Cmd(args) => {
                        a.push(b"CMD".to_vec());
                        a.extend(args.iter().cloned());
                    }
                    ReadQ::Watch(ks) => {
                        a.push(b"WATCH".to_vec());
                        a.extend(ks.iter().cloned());
                    }
                }
            }
            Op::Member { change, .. } => {
                let (k, n) = match change {
                    Member::AddLearner(n) => ("addlearner", n),
                    Member::Promote(n) => ("promote", n),
                    Member::AddVoter(n) => ("addvoter", n),
                    Member::Remove(n) => ("remove", n),
                };
                a.extend([b"M".to_vec(), g, k.as_bytes().to_vec(), n.to_string().into_bytes()]);
            }
            Op::Transfer { to, .. } => a.extend([b"T".to_vec(), g, to.to_string().into_bytes()]),
        }
        a
    }

    /// Parses the arguments of `FLOTILLA.LOCAL` (after the command name).
    pub fn from_args(a: &[Vec<u8>]) -> Option<Op> {
        let num = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<u64>().ok();
        let (kind, rest) = a.split_first()?;
        let (g, rest) = rest.split_first()?;
        let group = num(g)?;
        Some(match (kind.as_slice(), rest) {
            (b"W", [cmd]) => Op::Write { group, cmd: cmd.clone(), tag: None },
            (b"W", [cmd, session, seq, floor]) => {
                let tag = Tag { session: num(session)?, seq: num(seq)?, floor: num(floor)? };
                Op::Write { group, cmd: cmd.clone(), tag: Some(tag) }
            }
            (b"S", []) => Op::OpenSession { group },
            (b"R", [q, keys @ ..]) => {
                let q = match (q.as_slice(), keys) {
                    (b"GET", [k]) => ReadQ::Get(k.clone()),
                    (b"MGET", ks) => ReadQ::MGet(ks.to_vec()),
                    (b"EXISTS", ks) => ReadQ::Exists(ks.to_vec()),
                    (b"COUNT", []) => ReadQ::Count,
                    (b"STRLEN", [k]) => ReadQ::Strlen(k.clone()),
                    (b"TYPE", [k]) => ReadQ::Type(k.clone()),
                    (b"KEYS", [p]) => ReadQ::Keys(p.clone()),
                    (b"SCAN", [f, c]) => ReadQ::Scan { from: num(f)?, count: num(c)? },
                    (b"CMD", args) if !args.is_empty() => ReadQ::Cmd(args.to_vec()),
                    (b"WATCH", ks) => ReadQ::Watch(ks.to_vec()),
                    _ => return None,
                };
                Op::Read { group, q }
            }
            (b"M", [k, n]) => {
                let n = num(n)?;
                let change = match k.as_slice() {
                    b"addlearner" => Member::AddLearner(n),
                    b"promote" => Member::Promote(n),
                    b"addvoter" => Member::AddVoter(n),
                    b"remove" => Member::Remove(n),
                    _ => return None,
                };
                Op::Member { group, change }
            }
            (b"T", [n]) => Op::Transfer { group, to: num(n)? },
            _ => return None,
        })
    }
}

/// Status of one replica on a node (the admin tools read it as JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// Group id.
    pub group: u64,
    /// Role name: leader, follower, candidate, precandidate.
    pub role: String,
    /// Term.
    pub term: u64,
    /// Node of the known leader.
    pub leader: Option<u64>,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Last log index.
    pub last_index: u64,
    /// Nodes of voters.
    pub voters: Vec<u64>,
    /// Nodes of learners.
    pub learners: Vec<u64>,
    /// Leaders only: (node, lag in entries) of each follower.
    pub lag: Vec<(u64, u64)>,
    /// The replica's measured load and key count (what `flotilla-rebalance` balances).
    #[serde(default)]
    pub load: crate::load_report::ReplicaLoad,
}

/// A node's status (`FLOTILLA.STATUS`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeStatus {
    /// Node id.
    pub node: u64,
    /// Shard count.
    pub shards: u32,
    /// Advertised addresses.
    pub info: NodeInfo,
    /// The directory as this node knows it.
    pub directory: std::collections::BTreeMap<u64, NodeInfo>,
    /// Its replicas.
    pub replicas: Vec<ReplicaStatus>,
}

/// A running node.
pub struct Node {
    engine: Engine,
    /// Leader changes from the engine's events: parked requests wait on it.
    leaders: LeaderWatch,
    /// This node's client sessions: the writes it runs for its clients are tagged.
    sessions: Sessions,
    cfg: ValidNodeConfig,
    ep: Arc<Endpoint>,
    dir: Directory,
    data: Arc<Mutex<HashMap<u64, ShardData>>>,
    /// The slots each local shard replica serves (its applied state).
    slots: Arc<Mutex<HashMap<u64, ShardSlots>>>,
    /// The meta group's routes: which shard owns a slot, who leads it (a cache).
    routes: Routes,
    pool: Mutex<HashMap<u64, Vec<Client>>>,
    rr: AtomicU64,
    tls: NodeTls,
    /// The nodes admitted (`crate::trust`), kept by the directory hook.
    allow: AllowList,
    /// Held while certificates are reloaded: one reload at a time, so both channels end
    /// with the certificates of the same read.
    reload: Mutex<()>,
    acl: Acl,
    /// What the server counts about its work (`crate::metrics`).
    metrics: crate::metrics::KvMetrics,
    /// The engine's largest proposal (`EngineConfig::max_entry_bytes`): what a
    /// transaction may queue and watch (`crate::multi`), since EXEC proposes it whole.
    max_entry_bytes: usize,
}

impl Node {
    /// The most bytes a connection's transaction may hold (its queued commands and
    /// watched keys, `crate::multi::TxState`): the engine's largest proposal, since EXEC
    /// proposes the transaction as one entry.
    pub fn max_tx_bytes(&self) -> usize {
        self.max_entry_bytes
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.cfg.node_id).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Node {
    /// Starts the node: the QUIC endpoint, the engine (recovering its groups), and on a
    /// bootstrap node the meta group and every shard with this node as the only member.
    pub fn start(cfg: ValidNodeConfig) -> Result<Arc<Node>, StartError> {
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|error| StartError::DataDir { path: cfg.data_dir.display().to_string(), error })?;
        let Certs { identity: ident, channel: tls } =
            load_certs(cfg.node_id, &cfg.ca_pem, &cfg.cert_pem, &cfg.key_pem)
                .map_err(|e| StartError::Tls(e.to_string()))?;
        let channel = std::net::TcpListener::bind(cfg.peer_addr)
            .map_err(|error| StartError::NodeChannel { addr: cfg.peer_addr, error })?;
        let mut nc = NetConfig::new(cfg.node_id);
        nc.listen = cfg.peer_addr;
        nc.max_udp_payload = 65527.min(if cfg.peer_addr.ip().is_loopback() { 65527 } else { 1452 });
        let nc = nc.validate().map_err(|e| StartError::Net { addr: cfg.peer_addr, error: e.to_string() })?;
        let (ep, inbox) = Endpoint::start(nc, &ident)
            .map_err(|e| StartError::Net { addr: cfg.peer_addr, error: e.to_string() })?;
        let ep = Arc::new(ep);
        let dir: Directory = Default::default();
        let me = cfg.node_id;
        let hook_ep = Arc::downgrade(&ep);
        let allow = AllowList::default();
        let hook_allow = allow.clone();
        // After every change of the directory: the transport's peer addresses, and the
        // allow-list of the transport and the node channel (see `crate::trust`).
        let hook: DirectoryHook = Arc::new(move |d| {
            let changed = hook_allow.update(me, d);
            if let Some(ep) = hook_ep.upgrade() {
                for (&id, info) in d {
                    if let (true, Ok(a)) = (id != me, info.peer.parse::<SocketAddr>()) {
                        ep.set_peer_addr(id, a);
                    }
                }
                if let Some(nodes) = changed {
                    tracing::info!("node {me}: nodes admitted now: {}", describe_allowed(nodes.as_ref()));
                    ep.set_allowed_nodes(nodes);
                }
            }
        });
        let data: Arc<Mutex<HashMap<u64, ShardData>>> = Default::default();
        let slots: Arc<Mutex<HashMap<u64, ShardSlots>>> = Default::default();
        let routes: Routes = Arc::new(std::sync::RwLock::new(RouteTable::new(cfg.shards)));
        let (fdir, fhook, fdata, fslots, froutes) =
            (dir.clone(), hook.clone(), data.clone(), slots.clone(), routes.clone());
        let shard_count = cfg.shards;
        // A split's new shard registers its data and slots on its first apply or restore.
        let (rdata, rslots) = (data.clone(), slots.clone());
        let registry: crate::shard_split::ShardRegistry = Arc::new(move |g, d, s| {
            lock(&rdata).insert(g, d);
            lock(&rslots).insert(g, s);
        });
        let factory: StateMachineFactory = Arc::new(move |g| {
            if g == META_GROUP {
                Box::new(MetaSm::new(fdir.clone(), fhook.clone(), froutes.clone()))
            } else {
                let d: ShardData = Default::default();
                lock(&fdata).insert(g, d.clone());
                // A shard starts with its share of the default layout; its log and
                // snapshots carry any later change.
                let s = u32::try_from(g.saturating_sub(SHARD_BASE)).unwrap_or(u32::MAX);
                let own: ShardSlots =
                    Arc::new(std::sync::RwLock::new(crate::slots::default_range(s, shard_count)));
                lock(&fslots).insert(g, own.clone());
                let mut sm = ShardSm::new(d, own);
                sm.set_split(crate::shard_split::SplitState::new(g, registry.clone(), true));
                Box::new(sm)
            }
        });
        let mut ec = EngineConfig::new(me, &cfg.data_dir);
        ec.workers = cfg.engine_workers;
        ec.tick_interval = cfg.tick;
        ec.raft.election_timeout_min_ticks = cfg.election_ticks;
        ec.raft.election_timeout_max_ticks = cfg.election_ticks * 2;
        ec.raft.heartbeat_interval_ticks = (cfg.election_ticks / 5).max(1);
        ec.read_timeout_ticks = (cfg.election_ticks * 2).max(200);
        // At least the engine's default, and never below the election timeout (the engine
        // refuses that): a long election timeout stretches it.
        ec.propose_timeout_ticks = ec.propose_timeout_ticks.max(cfg.election_ticks * 4);
        ec.compact_entries = cfg.compact_entries;
        if cfg.lease_reads {
            ec.raft.read_mode = flotilla_engine::raft::ReadMode::LeaseBased;
        }
        ec.load_half_life = cfg.load_half_life;
        ec.load_fold_interval = cfg.load_fold_interval;
        // Peers create replicas here only of this cluster's groups (issue 12 point 3).
        // And of the shards split off since, once the routes name them (before that, a
        // node founds its replica of a new shard when it applies the split).
        let shards = cfg.shards;
        let proutes = routes.clone();
        ec.create_policy = CreatePolicy::new(move |group, _from| {
            known_group(group, shards) || read_routes(&proutes).get(group).is_some()
        });
        // A snapshot a peer sends is decoded before Raft may take it: one this node could
        // not restore would stop its engine.
        ec.snapshot_check = SnapshotCheck::new(crate::sm::check_snapshot);
        let max_entry_bytes = ec.max_entry_bytes;
        let engine = Engine::open(
            ec,
            Box::new(QuicTransport::with_shared_endpoint(ep.clone(), inbox, DecodeLimits::default())),
            factory.clone(),
        )?;
        let acl = Acl {
            data: cfg.password.clone(),
            admin_user: cfg.admin_user.clone(),
            admin: cfg.admin_password.clone(),
        };
        let limits = ChannelLimits {
            max_connections: cfg.node_channel_max_connections,
            handshake: cfg.node_channel_handshake,
            idle: cfg.node_channel_idle,
            request: crate::resp::Limits { max_request: cfg.max_request_bytes, max_args: 1 << 20 },
        };
        let leaders = LeaderWatch::start(&engine).map_err(|e| StartError::Bootstrap(e.to_string()))?;
        crate::event_log::start(&engine).map_err(|e| StartError::Bootstrap(e.to_string()))?;
        let metrics =
            crate::metrics::KvMetrics::new(cfg.shards).map_err(|e| StartError::Bootstrap(e.to_string()))?;
        let node = Arc::new(Node {
            engine,
            leaders,
            sessions: Sessions::default(),
            cfg,
            ep,
            dir,
            data,
            slots,
            routes,
            pool: Mutex::new(HashMap::new()),
            rr: AtomicU64::new(0),
            tls: tls.clone(),
            allow,
            reload: Mutex::new(()),
            acl,
            metrics,
            max_entry_bytes,
        });
        let weak = Arc::downgrade(&node);
        std::thread::Builder::new()
            .name("kv-node-channel".into())
            .spawn(move || crate::node_channel::serve(weak, tls, channel, limits))
            .map_err(|e| StartError::Bootstrap(e.to_string()))?;
        if node.cfg.bootstrap {
            let mut groups = vec![META_GROUP];
            // A restore target's shards come from a backup (`crate::backup`).
            if !node.cfg.restore {
                groups.extend((0..node.cfg.shards).map(shard_group));
            }
            for g in groups {
                if node.engine.hosts(g) {
                    continue;
                }
                match node.engine.create_group(g, &[me], factory(g)) {
                    Ok(()) | Err(flotilla_engine::api::CreateGroupError::Tombstoned(_)) => {}
                    Err(e) => return Err(StartError::Bootstrap(format!("group {g}: {e}"))),
                }
            }
        }
        let weak = Arc::downgrade(&node);
        std::thread::Builder::new()
            .name("kv-active-expire".into())
            .spawn(move || crate::expiry::active_expire_loop(weak))
            .map_err(|e| StartError::Bootstrap(e.to_string()))?;
        crate::routes::start(&node).map_err(|e| StartError::Bootstrap(format!("route publisher: {e}")))?;
        crate::shard_split::start_auto(&node)
            .map_err(|e| StartError::Bootstrap(format!("auto split: {e}")))?;
        let n = node.clone();
        std::thread::Builder::new()
            .name("kv-register".into())
            .spawn(move || n.register_self())
            .map_err(|e| StartError::Bootstrap(e.to_string()))?;
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.cfg.node_id
    }

    /// The configuration.
    pub fn config(&self) -> &ValidNodeConfig {
        &self.cfg
    }

    /// Leader changes from the engine's events (wait on them instead of polling).
    pub fn leader_watch(&self) -> &LeaderWatch {
        &self.leaders
    }

    /// The users and their passwords.
    pub fn acl(&self) -> &Acl {
        &self.acl
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The nodes this node admits now, on the QUIC transport and the node channel
    /// ([`crate::trust`]).
    pub fn allow_list(&self) -> &AllowList {
        &self.allow
    }

    /// The QUIC transport's counters and certificate expiry.
    pub fn net_stats(&self) -> flotilla_net::Stats {
        self.ep.stats()
    }

    /// Re-reads `ca_cert`, `node_cert` and `node_key` and makes both the QUIC transport and
    /// the node channel use them for new connections (live ones are kept). On any error
    /// (unreadable, unparsable, a certificate of another node) nothing changes.
    pub fn reload_certs(&self) -> Result<(), CertError> {
        let _one = lock(&self.reload);
        let certs = read_certs(self.id(), &self.cfg.cert_files)?;
        self.ep.set_identity(&certs.identity).map_err(|e| CertError::Net(e.to_string()))?;
        self.tls.replace(&certs.channel);
        tracing::info!("node {}: certificates reloaded", self.id());
        Ok(())
    }

    /// This node's advertised addresses.
    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            peer: self.cfg.advertise_peer_addr.to_string(),
            client: self.cfg.advertise_client_addr.to_string(),
        }
    }

    /// Keeps this node's directory entry current once it is a member of the meta group
    /// (the bootstrap node registers itself; others are registered by `add-servers`, and
    /// re-register here if their addresses changed). Runs until the entry is right.
    fn register_self(self: Arc<Self>) {
        loop {
            std::thread::sleep(Duration::from_millis(100));
            if Arc::strong_count(&self) == 1 {
                return;
            }
            if !self.engine.hosts(META_GROUP) {
                continue;
            }
            let current = self.dir.read().unwrap_or_else(|e| e.into_inner()).get(&self.id()).cloned();
            if current.as_ref() == Some(&self.info()) {
                return;
            }
            let cmd = MetaCmd::Register { id: self.id(), info: self.info() };
            if let Ok(cmd) = serde_json::to_vec(&cmd) {
                let _ = self.exec(Op::write(META_GROUP, cmd));
            }
        }
    }

    /// The directory.
    pub fn directory(&self) -> std::collections::BTreeMap<u64, NodeInfo> {
        self.dir.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The status `FLOTILLA.STATUS` reports.
    pub fn status(&self) -> NodeStatus {
        let replicas = self
            .engine
            .status()
            .into_iter()
            .map(|s| ReplicaStatus {
                group: s.group,
                role: s.role.as_str().into(),
                term: s.term,
                leader: s.leader.map(|r| r.node),
                commit: s.commit,
                applied: s.applied,
                last_index: s.last_index,
                voters: s.members.voters.iter().map(|r| r.node).collect(),
                learners: s.members.learners.iter().map(|r| r.node).collect(),
                lag: s.peers.iter().map(|p| (p.replica.node, p.lag)).collect(),
                load: crate::load_report::ReplicaLoad::new(&s.load, self.shard_keys(s.group)),
            })
            .collect();
        NodeStatus {
            node: self.id(),
            shards: self.cfg.shards,
            info: self.info(),
            directory: self.directory(),
            replicas,
        }
    }

    /// The group holding `key`, by the meta group's routes (the default layout for a slot
    /// they do not name).
    pub fn group_of(&self, key: &[u8]) -> u64 {
        let slot = crate::slots::key_slot(key);
        read_routes(&self.routes).owner(slot).unwrap_or_else(|| shard_group(shard_of(key, self.cfg.shards)))
    }

    /// Waits until `group`'s leader changes as this node's replica sees it, at most
    /// `timeout` (just `timeout` when no replica of it is here).
    pub fn wait_leader_change(&self, group: u64, timeout: Duration) {
        if self.engine.hosts(group) {
            let seen = self.leaders.seen(group);
            self.leaders.wait_change(group, seen, timeout);
        } else {
            std::thread::sleep(timeout);
        }
    }

    /// The meta group's routes (a cache of which shard owns each slot and who leads it).
    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// The slots this node's replica of `group` serves (its applied state), if it hosts one.
    pub fn shard_slots(&self, group: u64) -> Option<crate::slots::SlotSet> {
        let s = lock(&self.slots).get(&group).cloned()?;
        let set = read_slots(&s).clone();
        Some(set)
    }

    /// Whether this node leads `group` now.
    pub fn leads(&self, group: u64) -> bool {
        self.engine.leader(group).is_some_and(|l| l.node == self.id())
    }

    /// Reads `q` from the local data of `group` (call after a read barrier).
    pub fn read_local(&self, group: u64, q: &ReadQ) -> Value {
        self.metrics.count_read(group);
        let Some(d) = lock(&self.data).get(&group).cloned() else {
            return Value::err("ERR shard data missing");
        };
        // The keys must be in the replica's applied slots when the read is served.
        // (The map's lock is released before a refused read is re-routed, which reads it
        // again.)
        let own = lock(&self.slots).get(&group).cloned();
        if let Some(s) = own {
            let checked = check_slots(&read_slots(&s), q.keys());
            if let Err(moved) = checked {
                return crate::shard_split::moved_read(self, group, q, moved);
            }
        }
        let m = read_data(&d);
        // Expiry is judged by this node's clock, as a Redis replica judges it.
        let now = crate::clock::now_ms();
        match q {
            ReadQ::Get(k) => crate::strings::get(&m, k, now),
            ReadQ::MGet(ks) => crate::strings::mget(&m, ks, now),
            ReadQ::Exists(ks) => crate::strings::exists(&m, ks, now),
            ReadQ::Count => Value::Int(m.len() as i64),
            ReadQ::Strlen(k) => crate::strings::strlen(&m, k, now),
            ReadQ::Type(k) => crate::strings::type_of(&m, k, now),
            ReadQ::Keys(p) => Value::Array(Some(
                m.live_keys(now)
                    .filter(|k| crate::glob::key_matches(p, k))
                    .map(|k| Value::bulk(k.to_vec()))
                    .collect(),
            )),
            ReadQ::Scan { from, count } => {
                let (next, keys) = crate::sm::scan_step(m.live_keys(now), *from, *count);
                let types =
                    keys.iter().map(|k| Value::bulk(m.get(k, now).map_or("none", |e| e.val.type_name())));
                let types = Value::Array(Some(types.collect()));
                Value::Array(Some(vec![
                    Value::Int(next.map_or(-1, |n| n as i64)),
                    Value::Array(Some(keys.into_iter().map(Value::bulk).collect())),
                    types,
                ]))
            }
            ReadQ::Cmd(args) => crate::keycmd::read(&m, args, now),
            ReadQ::Watch(ks) => Value::Array(Some(
                ks.iter().map(|k| crate::multi::encode_state(&m.watch_state(k, now))).collect(),
            )),
        }
    }

    /// Keys and keys with an expiry in the local replicas (INFO keyspace).
    pub fn keyspace_counts(&self) -> (usize, usize) {
        lock(&self.data)
            .values()
            .map(|d| read_data(d))
            .fold((0, 0), |(k, e), m| (k + m.len(), e + m.expires()))
    }

    /// One active-expire cycle ([`crate::expiry`]): for each shard this node leads, proposes
    /// the removal of up to `max` keys expired at `now` (not waited for: a key still due
    /// next cycle is proposed again, and the removal is idempotent).
    pub fn expire_cycle(&self, now: u64, max: usize) {
        let shards: Vec<(u64, ShardData)> = lock(&self.data).iter().map(|(g, d)| (*g, d.clone())).collect();
        for (group, d) in shards {
            if !self.leads(group) {
                continue;
            }
            let due = read_data(&d).due(now, max);
            if !due.is_empty() {
                let _ = self.propose(group, crate::sm::WriteCmd::Purge(due).encode());
            }
        }
    }

    /// Keys held by the local replica of `group` (0 without one).
    pub fn shard_keys(&self, group: u64) -> u64 {
        let d = lock(&self.data).get(&group).cloned();
        d.map_or(0, |d| read_data(&d).len() as u64)
    }

    /// Keys held by local replicas (INFO).
    pub fn local_keys(&self) -> usize {
        lock(&self.data).values().map(|d| read_data(d).len()).sum()
    }

    /// Keys held by local replicas, and the bytes of their keys and values (INFO).
    pub fn keyspace_size(&self) -> (usize, u64) {
        let data: Vec<ShardData> = lock(&self.data).values().cloned().collect();
        data.iter().fold((0, 0), |(n, b), d| {
            let m = read_data(d);
            (n + m.len(), b + m.approx_bytes())
        })
    }

    /// What the server counts about its work.
    pub fn kv_metrics(&self) -> &crate::metrics::KvMetrics {
        &self.metrics
    }

    /// Starts a proposal of `cmd` to `group` here.
    /// A shard's entry carries this node's clock: it proposes it, so it leads the group.
    pub fn propose(&self, group: u64, cmd: Vec<u8>) -> Result<flotilla_engine::api::Proposal, ProposeError> {
        self.engine.propose(group, Bytes::from(self.stamped(group, cmd)))
    }

    /// Starts a proposal of `cmd` to `group` here, in the session of `tag` if any.
    pub fn propose_tagged(
        &self,
        group: u64,
        cmd: Vec<u8>,
        tag: Option<Tag>,
    ) -> Result<flotilla_engine::api::Proposal, ProposeError> {
        self.metrics.count_write(group, cmd.len());
        let Some(t) = tag else { return self.propose(group, cmd) };
        // A handle whose floor is the tag's: numbers below it count as answered.
        let s = flotilla_engine::api::Session::resume(group, t.session, t.floor);
        self.engine.propose_in_session(&s, t.seq, Bytes::from(self.stamped(group, cmd)))
    }

    /// `cmd` stamped with this node's clock when `group` is a shard ([`crate::sm::stamp`]).
    fn stamped(&self, group: u64, cmd: Vec<u8>) -> Vec<u8> {
        if group == META_GROUP {
            return cmd;
        }
        crate::sm::stamp(&cmd, crate::clock::now_ms())
    }

    /// The outcome of a submitted proposal's result.
    pub fn proposal_outcome(r: Result<Bytes, ProposeError>) -> Outcome {
        match r {
            Ok(b) => match parse_value(&b, usize::MAX >> 1, 16) {
                // The shard refused a slot it no longer serves (a split): not applied, so
                // the request may run again where the slot went (`shard_split`).
                Ok(Some((Value::Error(e), _))) if crate::shard_split::is_wrong_slot(&e) => {
                    Outcome::Retry(e, None)
                }
                Ok(Some((v, _))) => Outcome::Done(v),
                _ => Outcome::Done(Value::ok()),
            },
            Err(e) => propose_outcome(Stage::Waited, e),
        }
    }

    /// One attempt at `op` on this node, without forwarding.
    pub fn exec_local(&self, op: &Op) -> Outcome {
        let budget = self.cfg.retry_budget;
        match op {
            Op::Write { group, cmd, tag } => {
                let started = Instant::now();
                match self.propose_tagged(*group, cmd.clone(), *tag) {
                    Err(e) => propose_outcome(Stage::Submit, e),
                    Ok(p) => {
                        let r = p.wait_timeout(budget + Duration::from_secs(3));
                        self.metrics.observe_propose(started.elapsed());
                        match r {
                            Ok(r) => Node::proposal_outcome(r),
                            Err(_) => Outcome::Fail(indeterminate("not applied in time")),
                        }
                    }
                }
            }
            Op::OpenSession { group } => match self.engine.open_session(*group) {
                Ok(s) => Outcome::Done(Value::Int(i64::try_from(s.id()).unwrap_or(-1))),
                Err(e) => propose_outcome(Stage::Waited, e),
            },
            Op::Read { group, q } => match self.engine.read_index(*group) {
                Err(e) => read_outcome(e),
                Ok(b) => match b.wait_timeout(budget) {
                    Ok(Ok(_)) => Outcome::Done(self.read_local(*group, q)),
                    Ok(Err(e)) => read_outcome(e),
                    Err(_) => Outcome::Retry("read not confirmed in time".into(), None),
                },
            },
            Op::Member { group, change } => {
                let ch = match *change {
                    Member::AddLearner(n) => MembershipChange::AddLearner(n),
                    Member::Promote(n) => MembershipChange::Promote { node: n, force: false },
                    Member::AddVoter(n) => MembershipChange::AddVoter(n),
                    Member::Remove(n) => MembershipChange::Remove(n),
                };
                match self.engine.change_membership(*group, ch) {
                    Err(e) => member_outcome(Stage::Submit, e),
                    Ok(p) => match p.wait_timeout(budget + Duration::from_secs(3)) {
                        Ok(Ok(())) => Outcome::Done(Value::ok()),
                        Ok(Err(e)) => member_outcome(Stage::Waited, e),
                        Err(_) => Outcome::Fail(indeterminate("membership change not applied in time")),
                    },
                }
            }
            Op::Transfer { group, to } => match self.engine.transfer_leader(*group, *to) {
                Ok(()) => {
                    // Woken by the engine's leader-changed events, not polled.
                    let deadline = Instant::now() + budget;
                    while Instant::now() < deadline {
                        let seen = self.leaders.seen(*group);
                        if !self.engine.hosts(*group) {
                            break;
                        }
                        match self.engine.leader(*group) {
                            Some(l) if l.node == *to => return Outcome::Done(Value::ok()),
                            Some(l) if l.node != self.id() => {
                                return Outcome::Fail(Value::err(format!(
                                    "ERR leadership of group {group} moved to node {}, not {to}",
                                    l.node
                                )))
                            }
                            _ => {
                                let left = deadline.saturating_duration_since(Instant::now());
                                self.leaders.wait_change(*group, seen, left);
                            }
                        }
                    }
                    Outcome::Retry(format!("transfer of group {group} to node {to} did not complete"), None)
                }
                Err(e) => transfer_outcome(*group, e),
            },
        }
    }

    /// The node to try first for `op`.
    fn first_target(&self, op: &Op) -> Option<u64> {
        let g = op.group();
        if matches!(op, Op::Read { .. }) && self.engine.hosts(g) {
            return Some(self.id());
        }
        match self.engine.leader(g) {
            Some(l) => Some(l.node),
            None => self.engine.hosts(g).then_some(self.id()),
        }
    }

    /// Some node other than this one (round robin over the directory).
    fn any_other(&self) -> Option<u64> {
        let d = self.directory();
        let others: Vec<u64> = d.keys().copied().filter(|&n| n != self.id()).collect();
        if others.is_empty() {
            return None;
        }
        Some(others[(self.rr.fetch_add(1, Ordering::Relaxed) % others.len() as u64) as usize])
    }

    /// Runs `op` wherever it must run, retrying refusals and following leader hints until
    /// the retry budget is spent. Returns the reply. A write is run in this node's client
    /// session of its group (opened here on first use, [`crate::sessions`]) unless it
    /// carries a tag already: then an unknown outcome is retried with the same tag too.
    pub fn exec(&self, op: Op) -> Value {
        let deadline = Instant::now() + self.cfg.retry_budget;
        let op = match op {
            Op::Write { group, cmd, tag: None } => match self.session_tag(group, deadline) {
                Some(tag) => Op::Write { group, cmd, tag: Some(tag) },
                // No session could be opened: the write runs untagged, by the old rule.
                None => Op::Write { group, cmd, tag: None },
            },
            op => op,
        };
        self.run(op, deadline, None)
    }

    /// Continues a tagged write whose first attempt (the pipelined path's) gave `first`:
    /// as [`Node::exec`] from there on.
    pub fn resume(&self, op: Op, first: Outcome) -> Value {
        self.run(op, Instant::now() + self.cfg.retry_budget, Some(first))
    }

    /// A fresh tag in this node's session of `group`, opening one (at the group's leader,
    /// within `deadline`) if there is none. `None` if none could be opened.
    fn session_tag(&self, group: u64, deadline: Instant) -> Option<Tag> {
        if let Some(t) = self.sessions.tag(group) {
            return Some(t);
        }
        match self.run(Op::OpenSession { group }, deadline, None) {
            Value::Int(id) => Some(self.sessions.adopt(group, u64::try_from(id).ok()?)),
            v => {
                tracing::debug!("node {}: no client session on group {group}: {v:?}", self.id());
                None
            }
        }
    }

    /// A fresh tag in this node's session of `group`, if it has one (never waits).
    pub fn session_tag_now(&self, group: u64) -> Option<Tag> {
        self.sessions.tag(group)
    }

    /// The write tagged `tag` has its final reply `v`: the group may forget its answer.
    pub fn answered(&self, group: u64, tag: Option<Tag>, v: Value) -> Value {
        if let Some(t) = tag {
            self.sessions.answered(group, t);
        }
        v
    }

    /// The retry loop of [`Node::exec`]; `first` is an attempt already made.
    fn run(&self, mut op: Op, mut deadline: Instant, mut first: Option<Outcome>) -> Value {
        let mut target = self.first_target(&op);
        let mut last = String::from("no leader known");
        // An attempt of this (tagged) write may have been appended: the tag is kept.
        let mut uncertain = false;
        // Set on the first busy refusal: how long the request may be held for it.
        let mut busy_until: Option<Instant> = None;
        let mut group = op.group();
        for attempt in 0u32.. {
            // Taken before the attempt: a leader change during it ends the pause at once.
            let seen = self.leaders.seen(op.group());
            let t = match target {
                Some(t) => t,
                None if self.engine.hosts(op.group()) => self.id(),
                None => self.any_other().unwrap_or(self.id()),
            };
            let out = match first.take() {
                Some(o) => o,
                None if t == self.id() => self.exec_local(&op),
                None => self.forward(t, &op),
            };
            let mut pause = attempt >= 2;
            let tag = op.tag();
            match out {
                // A tagged write's unknown outcome: retried with the same tag, wherever
                // the group's leader is now (the group applies it at most once). An open
                // is retried too: a session opened twice is only one more to expire.
                Outcome::Fail(Value::Error(e))
                    if (tag.is_some() || matches!(op, Op::OpenSession { .. })) && is_indeterminate(&e) =>
                {
                    if !uncertain {
                        // Learning the outcome gets a full budget of its own.
                        deadline = deadline.max(Instant::now() + self.cfg.retry_budget);
                    }
                    uncertain = true;
                    last = e;
                    target = self.first_target(&op);
                    pause = true;
                }
                // The session is gone: this attempt was not applied. If no earlier one can
                // have been, a new session is as good; otherwise the outcome is unknown.
                Outcome::Done(Value::Error(e)) | Outcome::Fail(Value::Error(e))
                    if tag.is_some() && is_session_refused(&e) =>
                {
                    if let Some(old) = tag {
                        self.sessions.forget(group, old.session);
                    }
                    if uncertain {
                        return indeterminate(&format!("retried, then {e}"));
                    }
                    let Op::Write { cmd, .. } = &op else { return Value::err(format!("ERR {e}")) };
                    let cmd = cmd.clone();
                    let Some(new) = self.session_tag(group, deadline) else {
                        return Value::err(format!("TRYAGAIN group {group}: no client session ({e})"));
                    };
                    op = Op::Write { group, cmd, tag: Some(new) };
                    target = self.first_target(&op);
                    last = e;
                }
                // The shard no longer serves the slot (split meanwhile): nothing was
                // applied; the request goes where the slot is now (`shard_split`).
                Outcome::Done(Value::Error(e)) | Outcome::Retry(e, _)
                    if crate::shard_split::is_wrong_slot(&e) =>
                {
                    let refusal = self.answered(group, tag, Value::Error(e));
                    match crate::shard_split::reroute(self, &op, refusal, deadline) {
                        Ok(next) => {
                            group = next.group();
                            op = match next {
                                Op::Write { group, cmd, .. } => {
                                    Op::Write { group, cmd, tag: self.session_tag(group, deadline) }
                                }
                                other => other,
                            };
                            target = self.first_target(&op);
                            last = format!("slot moved to group {group}");
                        }
                        Err(v) => return v,
                    }
                }
                Outcome::Done(v) | Outcome::Fail(v) => return self.answered(group, tag, v),
                Outcome::Redirect(h) => {
                    last = format!("node {t} does not lead group {}", op.group());
                    // A hint naming the node just asked (or none) is stale: look again.
                    target = h.filter(|&h| h != t);
                    if target.is_none() {
                        pause = true;
                    }
                }
                Outcome::Retry(why, h) => {
                    // The engine's backpressure: held (and retried) up to busy_hold_ms.
                    if crate::outcome::is_busy(&why) {
                        deadline = deadline.max(
                            busy_until.get_or_insert_with(|| Instant::now() + self.cfg.busy_hold).to_owned(),
                        );
                    }
                    last = why;
                    target = h;
                    pause = true;
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            if pause {
                // Parked until the shard's leader changes (the engine's events), at most a
                // backoff; longer while this node's replica knows no leader, since only a
                // leader change helps then.
                let ms = (1u64 << attempt.min(6)).clamp(2, 50);
                let g = op.group();
                let wait = if self.engine.hosts(g) && self.engine.leader(g).is_none() {
                    Duration::from_millis(500)
                } else {
                    Duration::from_millis(ms)
                };
                let left = deadline.saturating_duration_since(Instant::now());
                self.leaders.wait_change(g, seen, wait.min(left));
            }
            if target.is_none() {
                target = self.first_target(&op).filter(|&n| n != t);
            }
        }
        let why = format!(
            "group {group} not served within the retry budget of {} ms: {last}",
            self.cfg.retry_budget.as_millis()
        );
        if uncertain {
            return self.answered(group, op.tag(), indeterminate(&why));
        }
        self.answered(group, op.tag(), Value::err(format!("TRYAGAIN {why}")))
    }

    /// One attempt at `op` on node `to` over its client port.
    fn forward(&self, to: u64, op: &Op) -> Outcome {
        self.forward_batch(to, std::slice::from_ref(op))
            .pop()
            .unwrap_or_else(|| Outcome::Retry(format!("node {to}: no reply"), None))
    }

    /// Runs `ops` at node `to` pipelined on one node channel connection (`FLOTILLA.LOCAL`
    /// each, executed there in order); one outcome per op. Nothing sent: every outcome is a retry. Sent
    /// and the connection broke before a reply: that write's outcome is unknown.
    pub fn forward_batch(&self, to: u64, ops: &[Op]) -> Vec<Outcome> {
        let not_sent =
            |why: String| ops.iter().map(|_| Outcome::Retry(why.clone(), None)).collect::<Vec<_>>();
        let Some(addr) = self.directory().get(&to).map(|i| i.peer.clone()) else {
            return not_sent(format!("address of node {to} unknown"));
        };
        let pooled = self.pooled(to);
        let mut c = match pooled {
            Some(c) => c,
            None => match self.connect(&addr, to) {
                Ok(c) => c,
                Err(e) => return ops.iter().map(|op| forward_failure(op.mutates(), false, to, &e)).collect(),
            },
        };
        let (out, reusable) = exchange(&mut c, to, ops);
        if reusable {
            lock(&self.pool).entry(to).or_default().push(c);
        }
        out
    }

    /// Where writes to `group` go now: `Some(me)` if this node leads it, the leader's node
    /// if another node leads it and its address is known, `None` if unknown.
    pub fn route(&self, group: u64) -> Option<u64> {
        let l = self.engine.leader(group)?.node;
        if l == self.id() {
            return Some(self.id());
        }
        self.dir.read().unwrap_or_else(|e| e.into_inner()).contains_key(&l).then_some(l)
    }

    /// A pooled connection to node `to` that is still open, if any.
    fn pooled(&self, to: u64) -> Option<Client> {
        let mut pool = lock(&self.pool);
        let conns = pool.get_mut(&to)?;
        while let Some(c) = conns.pop() {
            if !c.is_stale() {
                return Some(c);
            }
        }
        None
    }

    /// A node channel connection to node `to` at its advertised peer address `addr`
    /// (mutual TLS: it must present node `to`'s certificate, this node presents its own).
    fn connect(&self, addr: &str, to: u64) -> Result<Client, ClientError> {
        let c = crate::node_channel::connect(&self.tls, addr, to, Duration::from_secs(1))?;
        c.set_timeout(self.cfg.retry_budget + Duration::from_secs(5))?;
        Ok(c)
    }

    /// Stops the engine (everything acknowledged is durable) and the endpoint.
    pub fn shutdown(self) {
        let Node { engine, ep, .. } = self;
        engine.shutdown();
        if let Ok(ep) = Arc::try_unwrap(ep) {
            ep.shutdown(Duration::from_millis(200));
        }
    }
}

/// Sends `ops` to node `to` on `c` (pipelined) and reads one reply each; one outcome per
/// op, and whether the connection can be reused. Once anything was written, a failure
/// leaves every write not yet answered with an unknown outcome: it is never sent again.
pub(crate) fn exchange(c: &mut Client, to: u64, ops: &[Op]) -> (Vec<Outcome>, bool) {
    let mut buf = Vec::new();
    for op in ops {
        crate::resp::encode_command(&op.to_args(), &mut buf);
    }
    let mut out = Vec::with_capacity(ops.len());
    // A failed write may have sent part (or all) of the requests.
    let mut failed: Option<ClientError> = c.send_raw(&buf).err();
    for op in ops {
        if failed.is_none() {
            match c.read_reply() {
                Ok(v) => {
                    out.push(forwarded_reply(op.mutates(), to, v));
                    continue;
                }
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = &failed {
            out.push(forward_failure(op.mutates(), true, to, e));
        }
    }
    (out, failed.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn write(n: u8) -> Op {
        Op::write(1000, vec![n])
    }

    /// A fake leader's node on loopback: reads until it has seen `requests` complete
    /// commands, answers the first `answers` of them with `:1`, then closes. Returns its
    /// address and a handle giving the number of commands it received.
    fn fake_leader(requests: usize, answers: usize) -> (String, std::thread::JoinHandle<usize>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let (mut buf, mut seen) = (Vec::new(), 0usize);
            let mut chunk = [0u8; 4096];
            let limits = crate::resp::Limits { max_request: 1 << 20, max_args: 64 };
            while seen < requests {
                let n = s.read(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Ok(Some((_, used))) = crate::resp::parse_command(&buf, limits) {
                    buf.drain(..used);
                    seen += 1;
                }
            }
            for _ in 0..answers {
                s.write_all(b":1\r\n").unwrap();
            }
            seen
        });
        (addr, h)
    }

    /// The leader's node reads a forwarded write and closes without replying: the outcome
    /// is unknown (INDETERMINATE, never a retry), and it was sent exactly once.
    #[test]
    fn forwarded_write_whose_reply_is_lost_is_indeterminate() {
        let (addr, h) = fake_leader(1, 0);
        let mut c = Client::connect(&addr, Duration::from_secs(5)).unwrap();
        let (out, reusable) = exchange(&mut c, 2, &[write(1)]);
        assert!(!reusable);
        assert_eq!(h.join().unwrap(), 1, "sent once");
        match &out[..] {
            [Outcome::Fail(Value::Error(e))] => assert!(e.starts_with("INDETERMINATE"), "{e}"),
            o => panic!("a lost forwarded write must be INDETERMINATE, got {o:?}"),
        }
    }

    /// Pipelined: the first reply arrives, then the connection breaks; every later write is
    /// INDETERMINATE and every later read may be retried.
    #[test]
    fn forwarded_batch_broken_midway_leaves_later_writes_indeterminate() {
        let (addr, h) = fake_leader(3, 1);
        let mut c = Client::connect(&addr, Duration::from_secs(5)).unwrap();
        let read = Op::Read { group: 1000, q: ReadQ::Count };
        let (out, reusable) = exchange(&mut c, 2, &[write(1), write(2), read]);
        assert!(!reusable);
        assert_eq!(h.join().unwrap(), 3);
        assert_eq!(out[0], Outcome::Done(Value::Int(1)));
        assert!(
            matches!(&out[1], Outcome::Fail(Value::Error(e)) if e.starts_with("INDETERMINATE")),
            "{:?}",
            out[1]
        );
        assert!(out[2].retryable(), "{:?}", out[2]);
    }

    /// Nothing listens: nothing was sent, so the write may be retried elsewhere.
    #[test]
    fn forwarding_that_cannot_connect_is_a_retry() {
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let e = Client::connect(&addr, Duration::from_secs(1)).unwrap_err();
        assert!(forward_failure(true, false, 2, &e).retryable());
    }

    #[test]
    fn local_op_arguments_round_trip() {
        for op in [
            write(7),
            Op::Write { group: 1000, cmd: vec![1, 2], tag: Some(Tag { session: 9, seq: 12, floor: 10 }) },
            Op::OpenSession { group: 1002 },
            Op::Read { group: 1001, q: ReadQ::MGet(vec![b"a".to_vec(), b"b".to_vec()]) },
            Op::Read { group: 1001, q: ReadQ::Strlen(b"a".to_vec()) },
            Op::Read { group: 1001, q: ReadQ::Type(b"a".to_vec()) },
            Op::Read { group: 1001, q: ReadQ::Keys(b"a*".to_vec()) },
            Op::Read { group: 1001, q: ReadQ::Scan { from: 1 << 40, count: 10 } },
            Op::Read { group: 1001, q: ReadQ::Cmd(vec![b"HGET".to_vec(), b"h".to_vec(), b"f".to_vec()]) },
            Op::Read { group: 1001, q: ReadQ::Watch(vec![b"a".to_vec(), b"b".to_vec()]) },
            Op::Member { group: 1, change: Member::Remove(4) },
            Op::Transfer { group: 1002, to: 3 },
        ] {
            assert_eq!(Op::from_args(&op.to_args()[1..]), Some(op.clone()));
        }
        assert!(write(1).mutates() && Op::Member { group: 1, change: Member::AddLearner(2) }.mutates());
        assert!(!Op::Transfer { group: 1, to: 2 }.mutates());
        // Opening a session twice only leaves one more to expire: not a mutation to guard.
        assert!(!Op::OpenSession { group: 1 }.mutates());
        // A tag needs all three numbers.
        assert_eq!(Op::from_args(&[b"W".to_vec(), b"1000".to_vec(), vec![1], b"9".to_vec()]), None);
    }
}
