//! Embedding flotilla in your own program: `cargo run --example embed`.
//!
//! Three nodes in one process, talking QUIC with mutual TLS on 127.0.0.1, each with its own
//! fsynced WAL in a temporary directory. It opens the engines, creates a group with a tiny
//! key-value state machine, proposes writes, reads linearizably from a follower, transfers
//! leadership, changes membership (node 3 leaves, then comes back as a learner and is
//! promoted) and shuts down. In a real deployment each node is its own process on its own
//! machine: everything below except the loop over three nodes stays the same. It ends by
//! itself; CI runs it.
//!
//! The README's "Embedding" section walks through this file.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla::engine::api::{Engine, EngineConfig, ErrorClass, MembershipChange, StateMachine};
use flotilla::engine::raft::types::NodeId;
use flotilla::engine::transport::QuicTransport;

type Error = Box<dyn std::error::Error>;

/// The application's state: a map every replica builds from the log. The engine owns the
/// `KvMachine` (it applies entries on its apply thread); the application keeps a handle to
/// the same map to serve reads.
type Map = Arc<Mutex<BTreeMap<String, String>>>;

/// A state machine applying `key=value` commands. Its result is the previous value.
struct KvMachine {
    map: Map,
}

impl StateMachine for KvMachine {
    fn apply(&mut self, _index: u64, _term: u64, command: Option<&[u8]>) -> Bytes {
        let Some(cmd) = command.and_then(|c| std::str::from_utf8(c).ok()) else {
            return Bytes::new(); // a no-op or membership entry: nothing to apply
        };
        let Some((k, v)) = cmd.split_once('=') else {
            return Bytes::from_static(b"ERR not key=value");
        };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let old = map.insert(k.to_owned(), v.to_owned()).unwrap_or_default();
        Bytes::from(old)
    }

    fn applied_index(&self) -> u64 {
        0 // in memory only: on restart the engine rebuilds it from the snapshot and the log
    }

    fn snapshot(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for (k, v) in map.iter() {
            writeln!(out, "{k}={v}")?;
        }
        Ok(())
    }

    fn restore(&mut self, _index: u64, _term: u64, input: &mut dyn Read) -> std::io::Result<()> {
        let mut text = String::new();
        input.read_to_string(&mut text)?;
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.clear();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                map.insert(k.to_owned(), v.to_owned());
            }
        }
        Ok(())
    }
}

/// One node of the example: its engine and the maps of its replicas, by group.
struct Node {
    engine: Engine,
    maps: Arc<Mutex<BTreeMap<u64, Map>>>,
}

impl Node {
    /// A fresh state machine for `group` whose map this node can read.
    fn machine(maps: &Arc<Mutex<BTreeMap<u64, Map>>>, group: u64) -> Box<dyn StateMachine> {
        let map = Map::default();
        maps.lock().unwrap_or_else(|e| e.into_inner()).insert(group, map.clone());
        Box::new(KvMachine { map })
    }

    fn read(&self, group: u64, key: &str) -> Option<String> {
        let maps = self.maps.lock().unwrap_or_else(|e| e.into_inner());
        let map = maps.get(&group)?.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).cloned()
    }
}

/// Starts node `id`: a QUIC endpoint with its certificate (signed by the cluster CA), the
/// engine over it, and a factory for the replicas the engine creates by itself (recovered
/// on restart, or created when a leader adds this node).
fn open_node(
    dir: &std::path::Path,
    ca: &flotilla_net::ClusterCa,
    id: NodeId,
    addrs: &[(NodeId, std::net::SocketAddr)],
) -> Result<Node, Error> {
    let pem = ca.issue_node(id)?;
    let identity = flotilla_net::NodeIdentity::from_pem(&ca.pem().cert_pem, &pem.cert_pem, &pem.key_pem)?;
    let mut net = flotilla_net::NetConfig::new(id);
    net.listen = addrs.iter().find(|(n, _)| *n == id).map(|(_, a)| *a).ok_or("no address")?;
    let (endpoint, inbox) = flotilla_net::Endpoint::start(net.validate()?, &identity)?;
    for &(peer, addr) in addrs {
        if peer != id {
            endpoint.set_peer_addr(peer, addr);
        }
    }
    let transport = QuicTransport::new(endpoint, inbox, Default::default());

    let mut config = EngineConfig::new(id, dir.join(format!("node-{id}")));
    config.workers = 2;
    let maps: Arc<Mutex<BTreeMap<u64, Map>>> = Arc::default();
    let factory_maps = maps.clone();
    let factory = Arc::new(move |group: u64| Node::machine(&factory_maps, group));
    let engine = Engine::open(config, Box::new(transport), factory)?;
    Ok(Node { engine, maps })
}

/// Waits until a node knows itself as the leader of `group`; returns its node id.
/// `Engine::leader` reads a lock-free view the workers keep current (no round trip); an
/// application that wants to be told instead subscribes to `EngineEvent::LeaderChanged`
/// with `Engine::subscribe`.
fn wait_leader(nodes: &[Node], group: u64) -> Result<NodeId, Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for n in nodes {
            let me = n.engine.node_id();
            if n.engine.leader(group).is_some_and(|l| l.node == me) {
                return Ok(me);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!("no leader for group {group} within 30 s").into())
}

fn node(nodes: &[Node], id: NodeId) -> &Node {
    &nodes[(id - 1) as usize]
}

// README:begin (README.md shows this function; CI checks that the two are the same)
fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    // 1. A cluster CA and a loopback address per node.
    let ca = flotilla_net::ClusterCa::generate()?;
    let mut addrs = Vec::new();
    for id in 1..=3 {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        addrs.push((id, socket.local_addr()?));
    }
    // 2. Open three engines.
    let nodes: Vec<Node> =
        (1..=3).map(|id| open_node(dir.path(), &ca, id, &addrs)).collect::<Result<_, _>>()?;

    // 3. Create group 7 on every founding node (same member list everywhere).
    let group = 7;
    for n in &nodes {
        n.engine.create_group(group, &[1, 2, 3], Node::machine(&n.maps, group))?;
    }
    let leader = wait_leader(&nodes, group)?;
    println!("group {group}: node {leader} leads");

    // 4. Propose on the leader; `wait` returns the state machine's result once applied.
    for (i, word) in ["alpha", "beta", "gamma"].iter().enumerate() {
        let previous =
            node(&nodes, leader).engine.propose(group, Bytes::from(format!("k{i}={word}")))?.wait()?;
        println!("set k{i}={word} (previous value {:?})", String::from_utf8_lossy(&previous));
    }

    // 5. A linearizable read on a follower: wait for the read barrier, then read locally.
    let follower = if leader == 1 { 2 } else { 1 };
    let applied = node(&nodes, follower).engine.read_index(group)?.wait()?;
    let value = node(&nodes, follower).read(group, "k2");
    println!("node {follower} read k2 = {value:?} at applied index {applied}");
    assert_eq!(value.as_deref(), Some("gamma"));

    // 6. Transfer leadership to the follower and wait until it leads.
    node(&nodes, leader).engine.transfer_leader(group, follower)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while wait_leader(&nodes, group)? != follower {
        if Instant::now() > deadline {
            return Err("the transfer did not complete".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("leadership moved to node {follower}");
    let leader = follower;
    // Once this write is applied, the new leader has committed an entry of its term, so it
    // also accepts membership changes (before that they answer `LeaderNotReady`, class Retry).
    node(&nodes, leader).engine.propose(group, Bytes::from_static(b"leader=moved"))?.wait()?;

    // 7. Membership: move node 3 out (a voter is demoted to learner, then removed), then
    //    add it back as a learner and promote it once it has caught up.
    let other = (1..=3).find(|&n| n != leader && n != 3).ok_or("no third node")?;
    let target = if leader == 3 { other } else { 3 };
    let lead = &node(&nodes, leader).engine;
    lead.change_membership(group, MembershipChange::Remove(target))?.wait()?;
    let voters =
        lead.group_status(group).map(|s| s.members.voters.iter().map(|r| r.node).collect::<Vec<_>>());
    println!("node {target} removed: voters {voters:?}");
    // Its replica destroyed itself when it applied the removal; a new replica id is used when
    // it comes back, so it can never vote twice in one term.
    let deadline = Instant::now() + Duration::from_secs(30);
    while node(&nodes, target).engine.group_status(group).is_some() {
        if Instant::now() > deadline {
            return Err("the removed replica was not destroyed".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // The leader may still be settling the removal (it forgets the removed replica once
    // that one confirms): `ChangePending`, class Retry, until then. Try again shortly.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match lead.change_membership(group, MembershipChange::AddLearner(target)).and_then(|p| p.wait()) {
            Ok(()) => break,
            Err(e) if e.class() == ErrorClass::Retry && Instant::now() < deadline => {
                println!("add learner: {e}; retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e.into()),
        }
    }
    lead.propose(group, Bytes::from_static(b"after=rejoin"))?.wait()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match lead.change_membership(group, MembershipChange::Promote { node: target, force: false })?.wait()
        {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                // LearnerNotCaughtUp until the learner has the log: try again shortly.
                println!("promote: {e}; retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let applied = node(&nodes, target).engine.read_index(group)?.wait()?;
    println!(
        "node {target} is a voter again and reads after = {:?} at index {applied}",
        node(&nodes, target).read(group, "after")
    );
    assert_eq!(node(&nodes, target).read(group, "after").as_deref(), Some("rejoin"));

    // 8. Shut down: every acknowledged write is durable in each node's WAL.
    for n in nodes {
        n.engine.shutdown();
    }
    println!("done");
    Ok(())
}
// README:end
