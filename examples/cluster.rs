//! A one-command local cluster demo: `cargo run --release --example cluster`.
//!
//! Starts a 3-node flotilla-kv cluster (the sharded key-value server, 16 shards, QUIC with
//! mutual TLS between nodes, a fsynced WAL per node) on loopback in a temporary directory,
//! bootstrapped as in production: node 1 founds every group, nodes 2 and 3 start empty and
//! are added (learner, catch up, promote). Then it writes and reads through the RESP port of
//! every node (forwarding to leaders), pipelined and not, rebalances leaders (transfers),
//! adds a fourth node and rebalances replicas onto it, removes it again (its replicas and
//! leaderships moved away first), checks every write is still there, and prints what
//! happened and the throughput it saw. It ends by itself.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_kv::client::Client;
use flotilla_kv::cluster::{plan_leaders, plan_replicas, Admin};
use flotilla_kv::config::NodeConfig;
use flotilla_kv::node::Node;
use flotilla_kv::resp::Value;

fn free(udp: bool) -> String {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
    }
}

/// Starts node `id` in this process; returns its client address.
fn start(dir: &std::path::Path, ca: &flotilla_net::ClusterCa, id: u64, bootstrap: bool) -> String {
    let pair = ca.issue_node(id).unwrap();
    std::fs::write(dir.join(format!("node-{id}.pem")), &pair.cert_pem).unwrap();
    std::fs::write(dir.join(format!("node-{id}.key")), &pair.key_pem).unwrap();
    let (client, peer) = (free(false), free(true));
    let d = dir.display();
    let toml = format!(
        "node_id = {id}\ndata_dir = \"{d}/data-{id}\"\npeer_addr = \"{peer}\"\nclient_addr = \"{client}\"\n\
         ca_cert = \"{d}/ca.pem\"\nnode_cert = \"{d}/node-{id}.pem\"\nnode_key = \"{d}/node-{id}.key\"\n\
         bootstrap = {bootstrap}\nengine_workers = 2\n"
    );
    let cfg = NodeConfig::from_toml(&toml).unwrap().validate().unwrap();
    let listener = std::net::TcpListener::bind(cfg.client_addr).unwrap();
    let node = Node::start(cfg).unwrap();
    std::thread::spawn(move || flotilla_kv::server::serve(node, listener, Arc::new(AtomicBool::new(false))));
    client
}

fn call(c: &mut Client, args: &[&str]) -> Value {
    c.call(args).unwrap()
}

/// `threads` clients each sending `per` commands made by `cmd` (pipelined `depth` deep)
/// to the nodes in turn; returns requests per second.
fn load(addrs: &[String], threads: usize, per: usize, depth: usize, cmd: fn(usize) -> Vec<String>) -> f64 {
    let t0 = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let addr = addrs[t % addrs.len()].clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&addr, Duration::from_secs(5)).unwrap();
                let mut i = 0;
                while i < per {
                    let n = depth.min(per - i);
                    let mut buf = Vec::new();
                    for j in 0..n {
                        let args = cmd(t * per + i + j);
                        flotilla_kv::resp::encode_command(&args, &mut buf);
                    }
                    c.send_raw(&buf).unwrap();
                    for _ in 0..n {
                        let v = c.read_reply().unwrap();
                        assert!(!matches!(v, Value::Error(_)), "{v:?}");
                    }
                    i += n;
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    (threads * per) as f64 / t0.elapsed().as_secs_f64()
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = flotilla_net::ClusterCa::generate().unwrap();
    std::fs::write(dir.join("ca.pem"), &ca.pem().cert_pem).unwrap();
    let admin = Admin::new(None);
    println!("flotilla-kv demo in {}", dir.display());

    let t = Instant::now();
    let seed = start(dir, &ca, 1, true);
    let mut c1 = Client::connect(&seed, Duration::from_secs(5)).unwrap();
    while call(&mut c1, &["SET", "hello", "world"]) != Value::ok() {
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("node 1 founded the meta group and 16 shards ({:.0} ms)", t.elapsed().as_secs_f64() * 1e3);
    let mut addrs = vec![seed.clone()];
    for id in [2, 3] {
        let t = Instant::now();
        let a = start(dir, &ca, id, false);
        admin.add_server(&seed, &a, 3).unwrap();
        println!("node {id} added to every group ({:.0} ms)", t.elapsed().as_secs_f64() * 1e3);
        addrs.push(a);
    }

    let set = |i: usize| vec!["SET".to_string(), format!("key:{i}"), format!("value:{i}")];
    let get = |i: usize| vec!["GET".to_string(), format!("key:{i}")];
    let w = load(&addrs, 50, 200, 1, set);
    println!("SET, 50 clients over the 3 nodes, not pipelined: {w:.0} requests/s");
    let wp = load(&addrs, 50, 2000, 100, set);
    println!("SET, 50 clients, pipelined 100 deep:             {wp:.0} requests/s");
    let r = load(&addrs, 50, 2000, 1, get);
    println!("GET (ReadIndex), 50 clients, not pipelined:     {r:.0} requests/s");
    let rp = load(&addrs, 50, 2000, 100, get);
    println!("GET (ReadIndex), 50 clients, pipelined 100 deep: {rp:.0} requests/s");

    let mut c3 = Client::connect(&addrs[2], Duration::from_secs(5)).unwrap();
    assert_eq!(call(&mut c3, &["GET", "key:4242"]), Value::bulk("value:4242"));
    assert_eq!(call(&mut c3, &["INCR", "visits"]), Value::Int(1));
    println!("read key:4242 and INCR visits through node 3: ok");

    let v = admin.view(&seed).unwrap();
    println!("leaders per node before rebalancing: {:?}", v.leaders_per_node());
    let mut sim = v.clone();
    let t = Instant::now();
    let moves = plan_leaders(&mut sim);
    for m in &moves {
        admin.apply_move(&seed, *m).unwrap();
    }
    println!(
        "{} leadership transfers in {:.0} ms; leaders per node now {:?}",
        moves.len(),
        t.elapsed().as_secs_f64() * 1e3,
        admin.view(&seed).unwrap().leaders_per_node()
    );

    let t = Instant::now();
    let a4 = start(dir, &ca, 4, false);
    admin.add_server(&seed, &a4, 3).unwrap();
    let mut v = admin.view(&seed).unwrap();
    let moves = plan_replicas(&mut v);
    for m in &moves {
        admin.apply_move(&seed, *m).unwrap();
    }
    let mut v = admin.view(&seed).unwrap();
    for m in plan_leaders(&mut v.clone()) {
        admin.apply_move(&seed, m).unwrap();
    }
    v = admin.view(&seed).unwrap();
    println!(
        "node 4 added; {} replica moves (learner, catch up, promote, remove) in {:.0} ms; replicas per node {:?}, leaders {:?}",
        moves.len(),
        t.elapsed().as_secs_f64() * 1e3,
        v.replicas_per_node(),
        v.leaders_per_node()
    );

    let t = Instant::now();
    admin.remove_server(&seed, 4).unwrap();
    let v = admin.view(&seed).unwrap();
    println!(
        "node 4 removed (replicas and leaderships moved away first) in {:.0} ms; replicas per node {:?}",
        t.elapsed().as_secs_f64() * 1e3,
        v.replicas_per_node()
    );

    let mut missing = 0;
    for i in (0..50 * 2000).step_by(97) {
        if call(&mut c3, &["GET", &format!("key:{i}")]) != Value::bulk(format!("value:{i}")) {
            missing += 1;
        }
    }
    assert_eq!(missing, 0);
    println!("every sampled write readable after the moves; DBSIZE = {:?}", call(&mut c1, &["DBSIZE"]));
    print!("\n{}", v.render());
    println!("done");
}
