//! Shared harness of the engine integration tests: the counting (hash-chain) state machine
//! whose state the test can read, a cluster of engines in one process over the in-memory
//! transport (or QUIC on loopback), and the waits the tests use: conditions polled until a
//! deadline ([`wait_until`]), never a single read or a bare sleep.
#![allow(dead_code, clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla_engine::api::*;
use flotilla_engine::raft::{NodeId, Role};
use flotilla_engine::transport::MemoryNetwork;

/// What a replica has applied: its applied index, the number of commands, and a hash
/// chain over the commands in order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmState {
    pub index: u64,
    pub commands: u64,
    pub chain: u64,
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub type Registry = Arc<Mutex<HashMap<u64, Arc<Mutex<SmState>>>>>;

/// The counting state machine of the engine tests (the only one that counts: other test
/// state machines record values or files): counts the commands it applies and keeps a
/// hash chain over them, in a [`SmState`] shared with the test; asserts it never applies
/// an entry out of order or twice. Optionally it holds up the command "block" while a
/// gate is closed ([`ChainSm::gated`]) and turns "split:<id>" into a create-group effect
/// ([`ChainSm::splitting`]). Every other command is quick (`StateMachine::is_quick`).
pub struct ChainSm {
    st: Arc<Mutex<SmState>>,
    /// While closed (false), `apply` of the command "block" waits (bounded: it gives up
    /// after a minute so a broken test cannot hang CI).
    gate: Option<Arc<AtomicBool>>,
    /// "split:<id>" returns a create-group effect for group <id> on these nodes.
    split_to: Option<Vec<NodeId>>,
    effects: Vec<Effect>,
}

impl ChainSm {
    /// A state machine whose state is `st`.
    pub fn new(st: Arc<Mutex<SmState>>) -> ChainSm {
        ChainSm { st, gate: None, split_to: None, effects: Vec::new() }
    }

    /// A state machine for `group` registered in `reg`. If the registry already holds the
    /// group (the engine created the replica from its leader's first message before the
    /// test's `create_group`, which then keeps the engine's), the state is shared so the
    /// test reads the replica the engine runs.
    pub fn boxed(reg: &Registry, group: u64) -> Box<dyn StateMachine> {
        let st = reg.lock().unwrap().entry(group).or_default().clone();
        Box::new(ChainSm::new(st))
    }

    /// Holds up `apply` of the command "block" while `gate` is false (at most 300 s).
    pub fn gated(mut self, gate: Arc<AtomicBool>) -> ChainSm {
        self.gate = Some(gate);
        self
    }

    /// Applies "split:<id>" by returning a create-group effect for group <id> on `members`.
    pub fn splitting(mut self, members: Vec<NodeId>) -> ChainSm {
        self.split_to = Some(members);
        self
    }
}

impl StateMachine for ChainSm {
    fn apply(&mut self, index: u64, _term: u64, command: Option<&[u8]>) -> Bytes {
        if let (Some(gate), Some(b"block")) = (&self.gate, command) {
            // A guard against a test that never opens the gate, not a timing: on a busy
            // machine a test can take more than a minute to fill a backlog behind it.
            let deadline = Instant::now() + Duration::from_secs(300);
            while !gate.load(Ordering::Acquire) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if let (Some(members), Some(id)) = (&self.split_to, command.and_then(|c| c.strip_prefix(b"split:"))) {
            let group = std::str::from_utf8(id).unwrap().parse().unwrap();
            self.effects.push(Effect::CreateGroup { group, members: members.clone() });
        }
        let mut s = self.st.lock().unwrap();
        assert_eq!(index, s.index + 1, "applied out of order or twice");
        s.index = index;
        if let Some(c) = command {
            let mut h = s.chain;
            for b in c {
                h = mix(h ^ u64::from(*b));
            }
            s.chain = mix(h ^ index);
            s.commands += 1;
        }
        Bytes::copy_from_slice(&index.to_le_bytes())
    }

    /// Every command but "block" (which may wait for its gate): so the engine tests run
    /// most batches on the worker (`EngineConfig::inline_apply`), and the rest, and every
    /// batch behind a blocked one, on the apply thread.
    fn is_quick(&self, command: &[u8]) -> bool {
        command != b"block"
    }

    fn applied_index(&self) -> u64 {
        0
    }

    fn snapshot(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        let s = *self.st.lock().unwrap();
        for v in [s.index, s.commands, s.chain] {
            out.write_all(&v.to_le_bytes())?;
        }
        Ok(())
    }

    fn restore(&mut self, index: u64, _term: u64, input: &mut dyn Read) -> std::io::Result<()> {
        let mut b = [0u8; 24];
        input.read_exact(&mut b)?;
        let v = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!(v(0), index);
        *self.st.lock().unwrap() = SmState { index: v(0), commands: v(1), chain: v(2) };
        Ok(())
    }

    fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }
}

/// Waits until `f` holds, polling every 5 ms; fails the test naming `what` after
/// `timeout`. The harness's one way to wait: never a single read, never a bare sleep.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until engine `e`'s replica of `group` leads (a single-node group elects itself).
pub fn wait_engine_leads(e: &Engine, group: u64, timeout: Duration) {
    wait_until(&format!("group {group}: no leader"), timeout, || {
        e.group_status(group).is_some_and(|s| s.role == Role::Leader)
    });
}

pub struct Node {
    pub id: NodeId,
    pub dir: PathBuf,
    pub reg: Registry,
    pub engine: Option<Engine>,
}

/// Real QUIC on loopback: a cluster CA and a fixed 127.0.0.1 address per node (kept
/// across restarts).
pub struct Quic {
    pub ca: flotilla_net::ClusterCa,
    pub addrs: HashMap<NodeId, std::net::SocketAddr>,
}

impl Quic {
    fn transport(&self, id: NodeId) -> flotilla_engine::transport::QuicTransport {
        let pem = self.ca.issue_node(id).unwrap();
        let ident =
            flotilla_net::NodeIdentity::from_pem(&self.ca.pem().cert_pem, &pem.cert_pem, &pem.key_pem)
                .unwrap();
        let mut cfg = flotilla_net::NetConfig::new(id);
        cfg.listen = self.addrs[&id];
        let deadline = Instant::now() + Duration::from_secs(10);
        // A restarted node binds its old port, which the previous endpoint may still hold
        // for a moment.
        let (ep, inbox) = loop {
            match flotilla_net::Endpoint::start(cfg.clone().validate().unwrap(), &ident) {
                Ok(x) => break x,
                Err(e) => {
                    assert!(Instant::now() < deadline, "node {id}: cannot bind {}: {e}", cfg.listen);
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        for (&n, &a) in &self.addrs {
            if n != id {
                ep.set_peer_addr(n, a);
            }
        }
        flotilla_engine::transport::QuicTransport::new(ep, inbox, Default::default())
    }
}

pub struct Cluster {
    pub net: MemoryNetwork,
    /// Partitions and loss between the nodes (every node's transport is wrapped).
    pub fault: flotilla_engine::transport::FaultControl,
    /// The engines' tick interval.
    pub tick: Duration,
    pub quic: Option<Quic>,
    pub nodes: Vec<Node>,
    pub compact_entries: u64,
    /// Adjusts every node's configuration (see `Cluster::new_tweaked`).
    pub tweak: Option<fn(&mut EngineConfig)>,
    /// QUIC transports handed to the engines as they are, without the fault wrapper
    /// (which keeps every batch on the network thread): `Cluster::new_quic_plain`.
    pub plain: bool,
    _tmp: tempfile::TempDir,
}

pub fn config(id: NodeId, dir: PathBuf, compact_entries: u64) -> EngineConfig {
    let mut c = EngineConfig::new(id, dir);
    c.workers = 2;
    c.tick_interval = Duration::from_millis(5);
    c.wal.segment_size = 4 << 20;
    c.wal.max_write_bytes = 1 << 20;
    c.wal.cache_bytes = 4 << 20;
    c.max_uncommitted_bytes = 1 << 20;
    c.max_entry_bytes = 64 << 10;
    c.compact_entries = compact_entries;
    c
}

impl Cluster {
    /// `n` engines (node ids 1..=n) over one in-memory network.
    pub fn new(n: u64, compact_entries: u64) -> Cluster {
        Cluster::in_memory(n, compact_entries, None)
    }

    /// `n` engines over the in-memory network, each configuration adjusted by `tweak`.
    pub fn new_tweaked(n: u64, compact_entries: u64, tweak: fn(&mut EngineConfig)) -> Cluster {
        Cluster::in_memory(n, compact_entries, Some(tweak))
    }

    fn in_memory(n: u64, compact_entries: u64, tweak: Option<fn(&mut EngineConfig)>) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = Cluster {
            net: MemoryNetwork::new(),
            fault: Default::default(),
            tick: Duration::from_millis(5),
            quic: None,
            nodes: Vec::new(),
            compact_entries,
            tweak,
            plain: false,
            _tmp: tmp,
        };
        for id in 1..=n {
            c.add_node(id);
        }
        c
    }

    /// `n` engines over real QUIC (mutual TLS) on 127.0.0.1.
    pub fn new_quic(n: u64, compact_entries: u64) -> Cluster {
        Cluster::new_quic_tick(n, compact_entries, Duration::from_millis(5))
    }

    /// `n` engines over real QUIC with no fault wrapper (so the engine's direct network
    /// paths are used when its configuration allows), each configuration adjusted by
    /// `tweak`.
    pub fn new_quic_plain(n: u64, compact_entries: u64, tweak: Option<fn(&mut EngineConfig)>) -> Cluster {
        Cluster::new_quic_with(n, compact_entries, Duration::from_millis(5), tweak, true)
    }

    /// `n` engines over real QUIC ticking every `tick`.
    pub fn new_quic_tick(n: u64, compact_entries: u64, tick: Duration) -> Cluster {
        Cluster::new_quic_with(n, compact_entries, tick, None, false)
    }

    fn new_quic_with(
        n: u64,
        compact_entries: u64,
        tick: Duration,
        tweak: Option<fn(&mut EngineConfig)>,
        plain: bool,
    ) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let addrs = (1..=n)
            .map(|id| {
                // Reserve a free loopback port, then release it for the endpoint.
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                (id, s.local_addr().unwrap())
            })
            .collect();
        let quic = Quic { ca: flotilla_net::ClusterCa::generate().unwrap(), addrs };
        let mut c = Cluster {
            net: MemoryNetwork::new(),
            fault: Default::default(),
            tick,
            quic: Some(quic),
            nodes: Vec::new(),
            compact_entries,
            tweak,
            plain,
            _tmp: tmp,
        };
        for id in 1..=n {
            c.add_node(id);
        }
        c
    }

    pub fn add_node(&mut self, id: NodeId) {
        let dir = self._tmp.path().join(format!("n{id}"));
        self.nodes.push(Node { id, dir, reg: Registry::default(), engine: None });
        self.start(id);
    }

    pub fn node(&self, id: NodeId) -> &Node {
        self.nodes.iter().find(|n| n.id == id).unwrap()
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).unwrap()
    }

    pub fn engine(&self, id: NodeId) -> &Engine {
        self.node(id).engine.as_ref().unwrap()
    }

    /// Starts (or restarts from its directory) node `id`.
    pub fn start(&mut self, id: NodeId) {
        let compact = self.compact_entries;
        let tweak = self.tweak;
        let transport: Box<dyn flotilla_engine::transport::Transport> = match &self.quic {
            Some(q) if self.plain => Box::new(q.transport(id)),
            Some(q) => Box::new(self.fault.wrap(q.transport(id))),
            None => Box::new(self.fault.wrap(self.net.join(id, 1 << 16))),
        };
        let tick = self.tick;
        let n = self.node_mut(id);
        n.reg = Registry::default();
        let reg = n.reg.clone();
        let factory: StateMachineFactory = Arc::new(move |g| ChainSm::boxed(&reg, g));
        let mut cfg = config(id, n.dir.clone(), compact);
        cfg.tick_interval = tick;
        if let Some(t) = tweak {
            t(&mut cfg);
        }
        let e = Engine::open(cfg, transport, factory).unwrap();
        n.engine = Some(e);
    }

    /// Gracefully stops node `id`.
    pub fn stop(&mut self, id: NodeId) {
        if let Some(e) = self.node_mut(id).engine.take() {
            e.shutdown();
        }
    }

    pub fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.engine.is_some())
    }

    /// Creates `group` on every given node with those nodes as members.
    pub fn create_group(&self, group: u64, members: &[NodeId]) {
        for &m in members {
            let n = self.node(m);
            let sm = ChainSm::boxed(&n.reg, group);
            self.engine(m).create_group(group, members, sm).unwrap();
        }
    }

    /// The node whose replica of `group` leads, if any live node says so.
    pub fn leader(&self, group: u64) -> Option<NodeId> {
        self.live()
            .find(|n| n.engine.as_ref().unwrap().group_status(group).is_some_and(|s| s.role == Role::Leader))
            .map(|n| n.id)
    }

    pub fn wait_leader(&self, group: u64, timeout: Duration) -> NodeId {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader(group) {
                return l;
            }
            assert!(Instant::now() < deadline, "group {group}: no leader within {timeout:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Proposes `data` at the group's leader until it is applied (bounded in tries and
    /// time). Returns the applied index.
    pub fn propose(&self, group: u64, data: &[u8]) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        for _ in 0..2000 {
            assert!(Instant::now() < deadline, "group {group}: proposal not applied in time");
            let Some(l) = self.leader(group) else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let p = match self.engine(l).propose(group, Bytes::copy_from_slice(data)) {
                Ok(p) => p,
                Err(e) if e.class() == ErrorClass::Fatal => panic!("group {group}: {e}"),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            };
            match p.wait_timeout(Duration::from_secs(5)) {
                Ok(Ok(b)) => return u64::from_le_bytes(b[..8].try_into().unwrap()),
                Ok(Err(e)) if e.class() == ErrorClass::Fatal => panic!("group {group}: {e}"),
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        panic!("group {group}: proposal never applied");
    }

    /// Moves `group`'s leadership to `to`, retrying (a transfer aborts after an election
    /// timeout, e.g. when the target has not applied a recent membership change yet).
    pub fn transfer(&self, group: u64, to: NodeId, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last_try: Option<Instant> = None;
        loop {
            let leader = self.leader(group);
            if leader == Some(to) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "group {group}: leadership not moved to {to} (leader {leader:?})"
            );
            if let Some(l) = leader {
                if last_try.map_or(true, |t| t.elapsed() > Duration::from_millis(300)) {
                    let _ = self.engine(l).transfer_leader(group, to);
                    last_try = Some(Instant::now());
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Makes membership change `ch` of `group` at its leader until it is applied, within
    /// `timeout`: an answer for which `retry` holds, a refused submission or a wait that
    /// timed out is tried again; any other error fails the test.
    pub fn change(
        &self,
        group: u64,
        ch: MembershipChange,
        timeout: Duration,
        retry: impl Fn(&MembershipError) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            assert!(Instant::now() < deadline, "group {group}: change {ch:?} not applied");
            let Some(l) = self.leader(group) else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            match self
                .engine(l)
                .change_membership(group, ch.clone())
                .map(|p| p.wait_timeout(Duration::from_secs(5)))
            {
                Ok(Ok(Ok(()))) => return,
                // A transfer in progress or a full mailbox passes whatever the test
                // expects: both are transient on any loaded machine.
                Ok(Ok(Err(e)))
                    if retry(&e)
                        || matches!(e, MembershipError::TransferInProgress | MembershipError::Busy) => {}
                Ok(Ok(Err(e))) => panic!("group {group}: {ch:?}: {e}"),
                Ok(Err(_)) | Err(_) => {}
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn state(&self, node: NodeId, group: u64) -> Option<SmState> {
        self.node(node).reg.lock().unwrap().get(&group).map(|s| *s.lock().unwrap())
    }

    /// Waits until every given node's replica of `group` has the same state with at least
    /// `commands` commands.
    pub fn wait_converged(&self, group: u64, nodes: &[NodeId], commands: u64, timeout: Duration) -> SmState {
        let deadline = Instant::now() + timeout;
        loop {
            let states: Vec<Option<SmState>> = nodes.iter().map(|&n| self.state(n, group)).collect();
            if let Some(Some(first)) = states.first() {
                if first.commands >= commands
                    && states
                        .iter()
                        .all(|s| s.map(|s| (s.commands, s.chain)) == Some((first.commands, first.chain)))
                {
                    return *first;
                }
            }
            assert!(
                Instant::now() < deadline,
                "group {group}: replicas on {nodes:?} did not converge: {states:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        for id in ids {
            self.stop(id);
        }
    }
}

/// Resident memory of this process, in KiB (0 where /proc is not there).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Creates `groups` on nodes 1..=3, the first leader of group g on node `leader(g)`,
/// followers first, from several threads (each creation waits for one WAL write).
pub fn create_led(c: &Cluster, groups: &[u64], leader: impl Fn(u64) -> NodeId + Sync) {
    let members = [1, 2, 3];
    std::thread::scope(|s| {
        for chunk in groups.chunks(groups.len().div_ceil(12).max(1)) {
            let leader = &leader;
            s.spawn(move || {
                for &g in chunk {
                    let l = leader(g);
                    for &m in members.iter().filter(|&&m| m != l).chain(std::iter::once(&l)) {
                        let n = c.node(m);
                        let sm = ChainSm::boxed(&n.reg, g);
                        c.engine(m).create_group_led_by(g, &members, l, sm).unwrap();
                    }
                }
            });
        }
    });
}

/// (role, term) of `group` on engine `e`.
pub fn role_term(e: &Engine, group: u64) -> (flotilla_engine::raft::Role, u64) {
    let s = e.group_status(group).unwrap();
    (s.role, s.term)
}

/// Creates each group of `groups` on the engines of nodes 1..=3 (`nodes[i]` is node
/// `i + 1`: its engine and its state machines' registry), led by node 1, and waits until
/// node 1 leads it.
pub fn create_led_by_node1(nodes: &[(&Engine, &Registry)], groups: &[u64]) {
    let members = [1, 2, 3];
    for &g in groups {
        for (engine, reg) in nodes.iter().rev() {
            engine.create_group_led_by(g, &members, 1, ChainSm::boxed(reg, g)).unwrap();
        }
        wait_engine_leads(nodes[0].0, g, Duration::from_secs(20));
    }
}

/// Waits until nodes 1..=3 each report `n` quiesced groups (no event or message of those
/// groups is in flight then).
pub fn wait_all_quiesced(c: &Cluster, n: u64, timeout: Duration) {
    wait_until(&format!("{n} groups quiesced on every node"), timeout, || {
        (1..=3).all(|id| c.engine(id).metrics().quiesced_groups == n)
    });
}
