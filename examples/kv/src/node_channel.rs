//! The node channel: how a node forwards requests (`FLOTILLA.LOCAL`) to the node that leads
//! a shard. RESP inside mutual TLS over TCP, served at the node's `peer_addr` (the same
//! ip:port as the QUIC transport's UDP socket: TCP and UDP ports are separate, so no new
//! address has to be configured, advertised or kept in the directory), authenticated both
//! ways by the node certificates the QUIC transport uses (`ca_cert`, `node_cert`,
//! `node_key`). No password travels between nodes.
//!
//! Why a separate TCP port with blocking rustls, and not QUIC: the engine's QUIC endpoint
//! carries Raft traffic for the engine only (its frames are the engine's wire batches, its
//! inbox the engine's), and forwarding must not queue behind or be budgeted with
//! replication; a request/reply exchange on a pooled connection is what forwarding needs,
//! and the forwarding side is a blocking executor thread already. So: rustls's
//! `StreamOwned` over a `std::net::TcpStream`, TLS 1.3 only, the same ring provider and
//! trust rules as `flotilla_net::tls`:
//! - the acceptor requires a client certificate chaining to the cluster CA; the peer's node
//!   id is the one its certificate names (`node-<id>.flotilla`, checked with
//!   [`flotilla_net::tls::cert_names_node`] as the QUIC transport binds it); a certificate
//!   naming no node (or several) is refused;
//! - the dialer checks that the acceptor's certificate names the node it dialed;
//! - the peer's node must be on this node's allow-list ([`crate::trust`]: the nodes of the
//!   directory): a removed node's still-valid certificate completes the handshake, but
//!   every request it sends is answered `-FLOTILLA.RETRY 0 NOPERM node <id> is not in the
//!   directory of node <me> ...` ([`not_allowed`]) and nothing runs. The check is made at
//!   each request, so a connection opened before the removal is refused too. (A refusal
//!   in the handshake would reach the forwarder only as a TLS alert; this names the
//!   cause, and as a retry it lets a forwarder whose registration this node has not
//!   applied yet try again.)
//!
//! An accepted connection's session runs internal commands only ([`crate::acl`]); the
//! client port never runs them. Bounds: `node_channel_max_connections` connections at once
//! (one thread each: forwarding nodes pool a few connections per peer), a TLS handshake
//! deadline (`node_channel_handshake_ms`), an idle timeout (`node_channel_idle_ms`), and
//! the client port's `max_request_bytes` per request. No session tickets are sent, so an
//! idle pooled connection never has unsolicited bytes pending (its staleness check stays
//! exact).
//!
//! Never retries and never decides the outcome of what it runs: [`crate::node`] does.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned};
use thiserror::Error;

use crate::acl::{Secret, User};
use crate::client::{tcp_connect, Client, ClientError, Transport};
use crate::commands::{run_batch, Session};
use crate::node::Node;
use crate::outcome::Outcome;
use crate::resp::{parse_command, Limits, Proto, Value};

/// The ALPN id of the node channel (distinct from the QUIC transport's).
pub const ALPN: &[u8] = b"flotilla-kv-node/1";

/// Why the node channel's TLS could not be set up.
#[derive(Debug, Error)]
pub enum ChannelError {
    /// A PEM input holds no certificate or key, or is not PEM.
    #[error("bad PEM for {what}: {detail}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// The parser's message.
        detail: String,
    },
    /// rustls refused the certificates, the key or the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(String),
}

/// The node channel's TLS configurations, both ways, from the node's identity. Clones
/// share them: [`NodeTls::replace`] (a certificate reload) changes them for every holder,
/// for the connections made after it.
#[derive(Clone)]
pub struct NodeTls {
    configs: Arc<RwLock<Configs>>,
}

#[derive(Clone)]
struct Configs {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeTls { .. }")
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    flotilla_net::tls::crypto_provider()
}

impl NodeTls {
    /// Builds both configurations from the cluster CA, the node certificate (chain) and
    /// its key, all PEM.
    pub fn new(ca_pem: &str, cert_pem: &str, key_pem: &Secret) -> Result<NodeTls, ChannelError> {
        let pem_err =
            |what| move |e: rustls::pki_types::pem::Error| ChannelError::Pem { what, detail: e.to_string() };
        // Every CA certificate in the file is trusted (several during a CA rotation).
        let cas = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_err("CA certificate"))?;
        if cas.is_empty() {
            return Err(ChannelError::Pem { what: "CA certificate", detail: "no certificate".into() });
        }
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_err("node certificate"))?;
        if chain.is_empty() {
            return Err(ChannelError::Pem { what: "node certificate", detail: "no certificate".into() });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.expose().as_bytes()).map_err(pem_err("node key"))?;
        let mut roots = RootCertStore::empty();
        for ca in cas {
            roots.add(ca)?;
        }
        let roots = Arc::new(roots);
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| ChannelError::Verifier(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        server.alpn_protocols = vec![ALPN.to_vec()];
        server.send_tls13_tickets = 0;
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        client.alpn_protocols = vec![ALPN.to_vec()];
        client.resumption = rustls::client::Resumption::disabled();
        let configs = Configs { server: Arc::new(server), client: Arc::new(client) };
        Ok(NodeTls { configs: Arc::new(RwLock::new(configs)) })
    }

    fn configs(&self) -> Configs {
        self.configs.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The acceptor's configuration now.
    fn server(&self) -> Arc<ServerConfig> {
        self.configs().server
    }

    /// The dialer's configuration now.
    fn client(&self) -> Arc<ClientConfig> {
        self.configs().client
    }

    /// Makes this (and every clone) use `other`'s configurations from now on; connections
    /// already made keep theirs.
    pub fn replace(&self, other: &NodeTls) {
        let new = other.configs();
        // The value is replaced whole: consistent even after a panic elsewhere.
        *self.configs.write().unwrap_or_else(|e| e.into_inner()) = new;
    }
}

impl Transport for StreamOwned<ClientConnection, TcpStream> {
    fn socket(&self) -> &TcpStream {
        &self.sock
    }
}

/// The node id a verified peer certificate chain names: the one `node-<id>.flotilla` among
/// its DNS names that [`flotilla_net::tls::cert_names_node`] confirms; `None` if it names
/// none or more than one.
pub fn peer_node_id(chain: &[CertificateDer<'_>]) -> Option<u64> {
    let leaf = chain.first()?;
    let ee = webpki::EndEntityCert::try_from(leaf).ok()?;
    let mut ids = ee
        .valid_dns_names()
        .filter_map(|n| n.strip_prefix("node-")?.strip_suffix(".flotilla")?.parse::<u64>().ok());
    let id = ids.next()?;
    if ids.next().is_some() || !flotilla_net::tls::cert_names_node(chain, id) {
        return None;
    }
    Some(id)
}

/// Dials node `to` at `addr` (its advertised peer address), completes the TLS handshake
/// (checking the acceptor is node `to`) within `timeout`, and returns a RESP client on it
/// with `timeout` for each read and write.
pub fn connect(tls: &NodeTls, addr: &str, to: u64, timeout: Duration) -> Result<Client, ClientError> {
    let cerr = |error| ClientError::Connect { addr: addr.to_string(), error };
    let name = ServerName::try_from(flotilla_net::node_server_name(to))
        .map_err(|e| cerr(std::io::Error::other(e.to_string())))?;
    let conn = ClientConnection::new(tls.client(), name).map_err(|e| cerr(std::io::Error::other(e)))?;
    let sock = tcp_connect(addr, timeout)?;
    let mut s = StreamOwned::new(conn, sock);
    // Nothing of a request was sent yet: a failed handshake is a connect failure.
    handshake(&mut s.conn, &mut s.sock, Instant::now() + timeout).map_err(cerr)?;
    s.sock.set_read_timeout(Some(timeout)).map_err(cerr)?;
    Ok(Client::from_transport(Box::new(s)))
}

/// Drives a TLS handshake on a blocking socket until done or `deadline` (each read waits at
/// most until the deadline, so a peer trickling bytes cannot stretch it).
fn handshake<C, S>(conn: &mut C, sock: &mut TcpStream, deadline: Instant) -> std::io::Result<()>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<S>>,
{
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake deadline");
    while conn.is_handshaking() || conn.wants_write() {
        while conn.wants_write() {
            conn.write_tls(sock)?;
        }
        if !conn.is_handshaking() {
            break;
        }
        let left =
            deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()).ok_or_else(timed_out)?;
        sock.set_read_timeout(Some(left))?;
        if conn.read_tls(sock)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if let Err(e) = conn.process_new_packets() {
            // Tell the peer why (the alert), then fail.
            let _ = conn.write_tls(sock);
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
        }
    }
    Ok(())
}

/// The node channel's bounds (from the configuration).
#[derive(Debug, Clone, Copy)]
pub struct ChannelLimits {
    /// Most connections at once.
    pub max_connections: usize,
    /// TLS handshake deadline.
    pub handshake: Duration,
    /// Idle timeout.
    pub idle: Duration,
    /// Request limits.
    pub request: Limits,
}

/// Serves the node channel on `listener` (blocking accepts, one thread per connection up to
/// the limit) until the node is dropped. Runs on the calling thread.
pub fn serve(node: Weak<Node>, tls: NodeTls, listener: TcpListener, limits: ChannelLimits) {
    let open = Arc::new(AtomicUsize::new(0));
    let handshaking = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if node.strong_count() == 0 {
            return;
        }
        let Ok(stream) = stream else {
            // Out of file descriptors, say: the connection stays queued, and accepting
            // again at once would fail at once, spinning.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        // Connections not yet authenticated take at most an eighth of the slots: anyone
        // who reaches the port can hold a handshake until its deadline, and reconnect.
        if open.load(Ordering::Acquire) >= limits.max_connections
            || handshaking.load(Ordering::Acquire) >= max_handshaking(limits.max_connections)
        {
            drop(stream);
            continue;
        }
        open.fetch_add(1, Ordering::AcqRel);
        handshaking.fetch_add(1, Ordering::AcqRel);
        let (node, tls, open2, hs) = (node.clone(), tls.server(), open.clone(), handshaking.clone());
        let spawned = std::thread::Builder::new().name("kv-node-chan".into()).spawn(move || {
            serve_conn(&node, tls, stream, limits, &hs);
            open2.fetch_sub(1, Ordering::AcqRel);
        });
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::AcqRel);
            handshaking.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Takes one from its counter when dropped.
struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The most a node off the allow-list may have buffered before it is refused and closed.
const NOT_ALLOWED_BUFFER: usize = 64 << 10;

/// Connections in their handshake at once, of `max_connections`: an eighth (at least 1).
pub fn max_handshaking(max_connections: usize) -> usize {
    (max_connections / 8).max(1)
}

/// One accepted connection: handshake, identify the peer node, then read requests and
/// answer them in order until the peer closes, goes idle, or sends something malformed.
/// `handshaking` counts it until its handshake ended.
fn serve_conn(
    node: &Weak<Node>,
    tls: Arc<ServerConfig>,
    mut sock: TcpStream,
    limits: ChannelLimits,
    handshaking: &AtomicUsize,
) {
    let peer = {
        let _counted = Decrement(handshaking);
        let Ok(mut conn) = ServerConnection::new(tls) else { return };
        let _ = sock.set_nodelay(true);
        if sock.set_write_timeout(Some(limits.handshake)).is_err()
            || handshake(&mut conn, &mut sock, Instant::now() + limits.handshake).is_err()
        {
            return;
        }
        let Some(peer) = conn.peer_certificates().and_then(peer_node_id) else { return };
        (peer, conn)
    };
    let (peer, conn) = peer;
    if sock.set_read_timeout(Some(limits.idle)).is_err() || sock.set_write_timeout(Some(limits.idle)).is_err()
    {
        return;
    }
    let mut s = StreamOwned::new(conn, sock);
    let mut sess = Session { user: User::Node(peer), proto: Proto::Resp3, ..Session::default() };
    let mut warned = false;
    let (mut buf, mut chunk) = (Vec::new(), vec![0u8; 64 << 10]);
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        // A node off the allow-list (removed, its certificate still valid) is refused, not
        // buffered: it could otherwise park a request of up to `max_request_bytes` on each
        // of its connections.
        let refused = (buf.len() > NOT_ALLOWED_BUFFER)
            .then(|| match node.upgrade() {
                None => Some("node stopped".to_string()),
                Some(n) => (!n.allow_list().allows(peer)).then(|| not_allowed(peer, n.id())),
            })
            .flatten();
        if let Some(why) = refused {
            let mut out = Vec::new();
            Outcome::Retry(why, None).to_value().encode(Proto::Resp3, &mut out);
            let _ = s.write_all(&out).and_then(|()| s.flush());
            s.conn.send_close_notify();
            let _ = s.flush();
            return;
        }
        let (mut cmds, mut used, mut bad) = (Vec::new(), 0, None);
        loop {
            match parse_command(&buf[used..], limits.request) {
                Ok(Some((args, k))) => {
                    used += k;
                    if !args.is_empty() {
                        cmds.push(args);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    bad = Some(e.to_string());
                    break;
                }
            }
        }
        buf.drain(..used);
        if bad.is_none() && buf.len() > limits.request.max_request + 64 {
            bad = Some(format!(
                "Protocol error: request too large (limit {} bytes)",
                limits.request.max_request
            ));
        }
        let mut out = Vec::new();
        if !cmds.is_empty() {
            let Some(node) = node.upgrade() else { return };
            if node.allow_list().allows(peer) {
                for r in run_batch(&node, &cmds, &mut sess) {
                    r.encode(Proto::Resp3, &mut out);
                }
            } else {
                // Checked at every request, so a connection made before the node was
                // removed is refused from then on. Nothing ran: the forwarder may retry.
                let why = not_allowed(peer, node.id());
                if !warned {
                    tracing::warn!("node channel: {why}");
                    warned = true;
                }
                for _ in &cmds {
                    Outcome::Retry(why.clone(), None).to_value().encode(Proto::Resp3, &mut out);
                }
            }
        }
        if let Some(e) = &bad {
            Value::err(format!("ERR {e}")).encode(Proto::Resp3, &mut out);
        }
        if s.write_all(&out).and_then(|()| s.flush()).is_err() || bad.is_some() {
            s.conn.send_close_notify();
            let _ = s.flush();
            return;
        }
    }
}

/// Why node `peer`'s requests are refused by node `me`: it is off the allow-list
/// ([`crate::trust`]).
pub fn not_allowed(peer: u64, me: u64) -> String {
    format!(
        "NOPERM node {peer} is not in the directory of node {me} (removed from the cluster, or not registered yet)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The peer's node id comes from its certificate; one from another CA never gets that
    /// far (the handshake fails), and one from this CA names exactly its node.
    #[test]
    fn peer_node_id_is_the_certificate_s_node() {
        let ca = flotilla_net::ClusterCa::generate().unwrap();
        let pair = ca.issue_node(42).unwrap();
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes()).collect::<Result<_, _>>().unwrap();
        assert_eq!(peer_node_id(&chain), Some(42));
        assert_eq!(peer_node_id(&[]), None);
        let ca_chain = [CertificateDer::from_pem_slice(ca.pem().cert_pem.as_bytes()).unwrap()];
        assert_eq!(peer_node_id(&ca_chain), None, "the CA certificate names no node");
    }

    /// A dialer checks the acceptor is the node it dialed: a valid cluster certificate of
    /// another node is refused.
    #[test]
    fn dialer_refuses_an_acceptor_that_is_not_the_dialed_node() {
        let ca = flotilla_net::ClusterCa::generate().unwrap();
        let tls_of = |id| {
            let p = ca.issue_node(id).unwrap();
            NodeTls::new(&ca.pem().cert_pem, &p.cert_pem, &Secret::new(p.key_pem)).unwrap()
        };
        let (acceptor, dialer) = (tls_of(3), tls_of(1));
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let h = std::thread::spawn(move || {
            let (mut sock, _) = l.accept().unwrap();
            let mut conn = ServerConnection::new(acceptor.server()).unwrap();
            handshake(&mut conn, &mut sock, Instant::now() + Duration::from_secs(5)).is_ok()
        });
        let e = connect(&dialer, &addr, 2, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(e, ClientError::Connect { .. }), "{e}");
        assert!(!h.join().unwrap(), "the acceptor saw the handshake fail too");
    }
}
