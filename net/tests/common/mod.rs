//! Shared helpers for the loopback tests: a CA, endpoints with short test timeouts, and
//! bounded waits on inboxes.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flotilla_net::{ClusterCa, Endpoint, Event, Inbox, NetConfig, NodeIdentity, ValidNetConfig};

pub mod raw;

pub fn identity(ca: &ClusterCa, id: u64) -> NodeIdentity {
    let node = ca.issue_node(id).unwrap();
    NodeIdentity::from_pem(&ca.pem().cert_pem, &node.cert_pem, &node.key_pem).unwrap()
}

pub fn test_config(id: u64, listen: SocketAddr) -> NetConfig {
    let mut c = NetConfig::new(id);
    c.listen = listen;
    c.idle_timeout = Duration::from_millis(1500);
    c.keep_alive = Duration::from_millis(250);
    c.connect_timeout = Duration::from_millis(1000);
    c.backoff_initial = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(300);
    c
}

pub fn start(cfg: ValidNetConfig, id: &NodeIdentity) -> (Endpoint, Inbox) {
    Endpoint::start(cfg, id).unwrap()
}

/// `n` endpoints with ids 1..=n on loopback ports, each knowing the others' addresses.
pub fn cluster(ca: &ClusterCa, n: u64) -> Vec<(Endpoint, Inbox)> {
    let eps: Vec<(Endpoint, Inbox)> = (1..=n)
        .map(|id| {
            start(test_config(id, "127.0.0.1:0".parse().unwrap()).validate().unwrap(), &identity(ca, id))
        })
        .collect();
    let addrs: Vec<SocketAddr> = eps.iter().map(|(e, _)| e.local_addr().unwrap()).collect();
    for (e, _) in &eps {
        for (j, a) in addrs.iter().enumerate() {
            e.set_peer_addr(j as u64 + 1, *a);
        }
    }
    eps
}

/// Waits (bounded by `limit`) for an event matching `pred`, returning the events skipped.
pub fn wait_for(inbox: &mut Inbox, limit: Duration, mut pred: impl FnMut(&Event) -> bool) -> Option<Event> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match inbox.recv_timeout(left) {
            Ok(e) if pred(&e) => return Some(e),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}
