//! Chaos: under a write load from several clients, SIGKILL the leader node of a shard,
//! transfer leaders, add and remove a node, restart the killed node; then every
//! acknowledged write is readable through every node, and the recorded history of
//! SET / GET / INCR on a few keys is linearizable (operations with an unknown outcome count
//! as possibly applied).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Cluster;
use flotilla_kv::linearizability::{check, Kind, Op};

const KEYS: u32 = 3;

struct Shared {
    addrs: Vec<String>,
    start: Instant,
    history: Mutex<Vec<Op>>,
    acked: Mutex<Vec<(String, String)>>,
    stop: AtomicBool,
}

fn connect(addr: &str) -> Option<redis::Connection> {
    let c = redis::Client::open(format!("redis://{addr}/")).ok()?;
    let con = c.get_connection_with_timeout(Duration::from_millis(500)).ok()?;
    con.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    Some(con)
}

fn client(id: u64, sh: Arc<Shared>) {
    let mut rng = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut con: Option<redis::Connection> = None;
    let mut seq = 0u64;
    while !sh.stop.load(Ordering::Relaxed) {
        let Some(c) = con.as_mut() else {
            con = connect(&sh.addrs[(next() % sh.addrs.len() as u64) as usize]);
            if con.is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            continue;
        };
        seq += 1;
        let key = (next() % KEYS as u64) as u32;
        let name = format!("lin{key}");
        let now = || sh.start.elapsed().as_nanos() as u64;
        let call = now();
        let (kind, ok) = match next() % 3 {
            0 => {
                let v = (id << 32 | seq) as i64;
                let r: redis::RedisResult<()> = redis::cmd("SET").arg(&name).arg(v).query(c);
                (Kind::Set(v), r.is_ok())
            }
            1 => match redis::cmd("GET").arg(&name).query::<Option<i64>>(c) {
                Ok(v) => (Kind::Get(v), true),
                Err(_) => (Kind::Get(None), false),
            },
            _ => match redis::cmd("INCR").arg(&name).query::<i64>(c) {
                Ok(v) => (Kind::Incr(Some(v)), true),
                Err(_) => (Kind::Incr(None), false),
            },
        };
        let ret = ok.then(now);
        if !ok {
            con = None; // the node may be gone: pick another
        }
        sh.history.lock().unwrap().push(Op { key, call, ret, kind });
        // A durable write of its own key.
        if let Some(c) = con.as_mut() {
            let (k, v) = (format!("ack-{id}-{seq}"), seq.to_string());
            if redis::cmd("SET").arg(&k).arg(&v).query::<()>(c).is_ok() {
                sh.acked.lock().unwrap().push((k, v));
            } else {
                con = None;
            }
        }
    }
}

#[test]
fn kill_transfer_add_remove_restart_loses_nothing_and_stays_linearizable() {
    let mut c = Cluster::new(None, "shards = 3\ncompact_entries = 200");
    let seed = c.start(1, true);
    c.wait_writable(1, "w");
    for id in [2, 3] {
        c.start(id, false);
        c.admin().add_server(&seed, &c.addr(id), 3).unwrap();
    }
    let admin = c.admin();
    admin.transfer(&seed, 1001, 2).unwrap();
    admin.transfer(&seed, 1002, 3).unwrap();
    // Node 4 is started now so its address is known to the clients from the start.
    c.start(4, false);
    let sh = Arc::new(Shared {
        addrs: (1..=4).map(|i| c.addr(i)).collect(),
        start: Instant::now(),
        history: Mutex::new(Vec::new()),
        acked: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let clients: Vec<_> = (1..=4)
        .map(|i| {
            std::thread::spawn({
                let sh = sh.clone();
                move || client(i, sh)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));

    // SIGKILL the node leading group 1001 (node 2).
    let victim = admin.view(&seed).unwrap().groups[&1001].leader.unwrap();
    assert_ne!(victim, 1);
    c.kill(victim);
    std::thread::sleep(Duration::from_millis(800));
    // Leaders move among the live nodes.
    let live: Vec<u64> = [1, 2, 3].into_iter().filter(|&n| n != victim).collect();
    admin.transfer(&seed, 1000, live[1]).unwrap();
    admin.transfer(&seed, 1000, live[0]).unwrap();
    // Add node 4 to the cluster and to group 1000, while the victim is down.
    admin.add_server(&seed, &c.addr(4), 3).unwrap();
    admin.add_replica(&seed, 1000, 4).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // The killed node comes back and catches up.
    c.restart(victim);
    std::thread::sleep(Duration::from_millis(800));
    // Node 4 leaves group 1000 again, then the cluster.
    admin.remove_replica(&seed, 1000, 4).unwrap();
    admin.remove_server(&seed, 4).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    sh.stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.join().unwrap();
    }

    let history = sh.history.lock().unwrap().clone();
    let acked = sh.acked.lock().unwrap().clone();
    let known = history.iter().filter(|o| o.ret.is_some()).count();
    assert!(known > 100 && acked.len() > 100, "load ran: {known} ops, {} acked writes", acked.len());
    check(&history).unwrap();
    // Every acknowledged write is readable through every node of the cluster.
    for id in [1, 2, 3] {
        let mut con = c.redis(id);
        for chunk in acked.chunks(200) {
            let keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
            let got: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut con).unwrap();
            for ((k, v), g) in chunk.iter().zip(got) {
                assert_eq!(g.as_deref(), Some(v.as_str()), "node {id}: acknowledged {k} lost");
            }
        }
    }
    eprintln!(
        "chaos: {} operations ({} with unknown outcome), {} acknowledged writes, victim node {victim}",
        history.len(),
        history.len() - known,
        acked.len()
    );
}
