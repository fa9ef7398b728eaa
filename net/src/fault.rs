//! A fault-injecting network for tests: a UDP relay between real QUIC endpoints that cuts,
//! heals and delays the links between chosen nodes at run time.
//!
//! Owns one relay socket per ordered node pair (a -> b): node a is told that b lives at the
//! relay's address; the relay forwards a's datagrams to b's real address from a dedicated
//! upstream socket and b's answers back to a. Cutting a link drops every datagram on it in
//! both directions (QUIC then times out: peer down, frames dropped, redials fail until
//! healed); a delay holds each datagram before forwarding. Never touches the endpoints
//! themselves: they run unmodified. Loopback only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::event::NodeId;

#[derive(Debug, Clone, Copy, Default)]
struct LinkState {
    cut: bool,
    delay: Duration,
}

type Links = Arc<Mutex<HashMap<(NodeId, NodeId), LinkState>>>;
/// (from, to) -> datagrams forwarded from node `from` to node `to`.
type Counts = Arc<Mutex<HashMap<(NodeId, NodeId), u64>>>;

fn count(counts: &Counts, from: NodeId, to: NodeId) {
    *counts.lock().unwrap_or_else(|e| e.into_inner()).entry((from, to)).or_default() += 1;
}

fn key(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}

fn state(links: &Links, a: NodeId, b: NodeId) -> LinkState {
    links.lock().unwrap_or_else(|e| e.into_inner()).get(&key(a, b)).copied().unwrap_or_default()
}

/// A relay network between nodes with known real addresses.
pub struct FaultyNet {
    rt: Option<tokio::runtime::Runtime>,
    links: Links,
    counts: Counts,
    /// (from, to) -> the relay address `from` must use to reach `to`.
    relays: HashMap<(NodeId, NodeId), SocketAddr>,
}

impl std::fmt::Debug for FaultyNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyNet").field("relays", &self.relays).finish_non_exhaustive()
    }
}

impl FaultyNet {
    /// Starts relays between every ordered pair of `nodes` (id, real address), on loopback.
    pub fn start(nodes: &[(NodeId, SocketAddr)]) -> std::io::Result<FaultyNet> {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let links: Links = Arc::default();
        let counts: Counts = Arc::default();
        let mut relays = HashMap::new();
        for &(a, _) in nodes {
            for &(b, b_addr) in nodes {
                if a == b {
                    continue;
                }
                let (front, back) = rt.block_on(async {
                    let front = UdpSocket::bind("127.0.0.1:0").await?;
                    let back = UdpSocket::bind("127.0.0.1:0").await?;
                    Ok::<_, std::io::Error>((front, back))
                })?;
                relays.insert((a, b), front.local_addr()?);
                let link = Link { a, b, links: links.clone(), counts: counts.clone() };
                rt.spawn(relay(Arc::new(front), Arc::new(back), b_addr, link));
            }
        }
        Ok(FaultyNet { rt: Some(rt), links, counts, relays })
    }

    /// The address node `from` must use for node `to`.
    pub fn addr(&self, from: NodeId, to: NodeId) -> Option<SocketAddr> {
        self.relays.get(&(from, to)).copied()
    }

    /// Every (peer, address) node `from` must use.
    pub fn address_book(&self, from: NodeId) -> Vec<(NodeId, SocketAddr)> {
        self.relays.iter().filter(|((f, _), _)| *f == from).map(|((_, t), a)| (*t, *a)).collect()
    }

    /// Datagrams forwarded so far from node `from` to node `to` (on every relay between
    /// them, whichever side dialed).
    pub fn datagrams(&self, from: NodeId, to: NodeId) -> u64 {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).get(&(from, to)).copied().unwrap_or(0)
    }

    fn update(&self, a: NodeId, b: NodeId, f: impl FnOnce(&mut LinkState)) {
        let mut l = self.links.lock().unwrap_or_else(|e| e.into_inner());
        f(l.entry(key(a, b)).or_default());
    }

    /// Drops every datagram between `a` and `b`, both ways.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        self.update(a, b, |s| s.cut = true);
    }

    /// Restores the link between `a` and `b`.
    pub fn heal(&self, a: NodeId, b: NodeId) {
        self.update(a, b, |s| s.cut = false);
    }

    /// Delays every datagram between `a` and `b` by `d` (zero removes the delay).
    pub fn delay(&self, a: NodeId, b: NodeId, d: Duration) {
        self.update(a, b, |s| s.delay = d);
    }

    /// Cuts `a` from every other node.
    pub fn isolate(&self, a: NodeId) {
        let peers: Vec<NodeId> = self.relays.keys().filter(|(f, _)| *f == a).map(|(_, t)| *t).collect();
        for b in peers {
            self.cut(a, b);
        }
    }
}

impl Drop for FaultyNet {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn forward(sock: Arc<UdpSocket>, data: Vec<u8>, to: SocketAddr, delay: Duration) {
    if delay.is_zero() {
        let _ = sock.send_to(&data, to).await;
    } else {
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = sock.send_to(&data, to).await;
        });
    }
}

/// The relay of one ordered pair: node `a` reaches node `b` through it.
struct Link {
    a: NodeId,
    b: NodeId,
    links: Links,
    counts: Counts,
}

/// Relays datagrams of the link a -> b: `front` faces a, `back` faces b.
async fn relay(front: Arc<UdpSocket>, back: Arc<UdpSocket>, b_addr: SocketAddr, link: Link) {
    let Link { a, b, links, counts } = link;
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let (f2, b2, c2, l2, n2) = (front.clone(), back.clone(), client.clone(), links.clone(), counts.clone());
    // b -> a: answers coming back to the upstream socket.
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, _)) = b2.recv_from(&mut buf).await {
            let s = state(&l2, a, b);
            let to = *c2.lock().unwrap_or_else(|e| e.into_inner());
            if let (false, Some(to)) = (s.cut, to) {
                count(&n2, b, a);
                forward(f2.clone(), buf[..n].to_vec(), to, s.delay).await;
            }
        }
    });
    // a -> b.
    let mut buf = vec![0u8; 65_536];
    while let Ok((n, from)) = front.recv_from(&mut buf).await {
        *client.lock().unwrap_or_else(|e| e.into_inner()) = Some(from);
        let s = state(&links, a, b);
        if !s.cut {
            count(&counts, a, b);
            forward(back.clone(), buf[..n].to_vec(), b_addr, s.delay).await;
        }
    }
}
