//! The operations HTTP endpoint on `metrics_addr`: `GET /metrics` (Prometheus text,
//! [`crate::metrics::render`]), `GET /health` (200 while the node serves its client port
//! and its engine has not stopped on a storage failure) and `GET /ready` (200 once the
//! node can serve requests, see [`readiness`]; 503 with the reason otherwise).
//!
//! Owns the listener thread and the bounds of this endpoint: at most
//! [`MAX_CONNECTIONS`] requests handled at once (more get a 503 and are closed), requests
//! of at most [`MAX_REQUEST_BYTES`], [`IO_TIMEOUT`] in all to send the request and as much
//! again to take the reply (deadlines on the whole, not on each read or write, so a client
//! trickling bytes cannot hold a slot), one request per connection. A failed `accept` (out
//! of file descriptors) is retried after a pause, not at once. Never changes the node: it
//! only reads.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use flotilla_engine::raft::Role;

use crate::node::Node;
use crate::sm::META_GROUP;

/// Requests handled at once.
pub const MAX_CONNECTIONS: usize = 8;
/// The largest request head read (the request line and headers).
pub const MAX_REQUEST_BYTES: usize = 8 << 10;
/// How long a connection may take to send its whole request, and again to take the whole
/// reply.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause after a failed `accept` (the process out of file descriptors, say): the
/// connection stays queued, and an immediate retry would fail again at once, spinning.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Whether `node` can serve requests: it knows a leader of the meta group, and of every
/// group it hosts. `Err` says what is missing.
pub fn readiness(node: &Node) -> Result<(), String> {
    let e = node.engine();
    if e.leader(META_GROUP).is_none() {
        return Err("no leader known for the meta group".into());
    }
    let leaderless: Vec<u64> =
        e.status().iter().filter(|s| s.leader.is_none() && s.role != Role::Leader).map(|s| s.group).collect();
    match leaderless.as_slice() {
        [] => Ok(()),
        gs => {
            Err(format!("{} hosted group(s) without a known leader: {:?}", gs.len(), &gs[..gs.len().min(16)]))
        }
    }
}

/// Serves the endpoint on `listener` on a thread of its own, until the node is gone
/// (seen at the next connection).
/// `serving` is the client port's state: `/health` answers 200 while it is set.
pub fn start(listener: TcpListener, node: Weak<Node>, serving: Arc<AtomicBool>) -> std::io::Result<()> {
    std::thread::Builder::new().name("kv-http".into()).spawn(move || serve(listener, node, serving))?;
    Ok(())
}

fn serve(listener: TcpListener, node: Weak<Node>, serving: Arc<AtomicBool>) {
    let busy = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if node.strong_count() == 0 {
            return;
        }
        let Ok(mut stream) = stream else {
            std::thread::sleep(ACCEPT_RETRY);
            continue;
        };
        if busy.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            busy.fetch_sub(1, Ordering::AcqRel);
            let _ = reply(&mut stream, 503, "too many requests at once\n", "text/plain");
            continue;
        }
        let (node, serving, busy2) = (node.clone(), serving.clone(), busy.clone());
        let spawned = std::thread::Builder::new().name("kv-http-conn".into()).spawn(move || {
            handle(stream, &node, &serving);
            busy2.fetch_sub(1, Ordering::AcqRel);
        });
        if spawned.is_err() {
            busy.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The time left until `deadline`, as a socket timeout (`None` once it passed: a zero
/// timeout means none to the socket).
fn left(deadline: Instant) -> Option<Duration> {
    let d = deadline.saturating_duration_since(Instant::now());
    (!d.is_zero()).then_some(d)
}

/// Reads the request head: up to the blank line, at most [`MAX_REQUEST_BYTES`], all of it
/// within [`IO_TIMEOUT`].
fn read_head(stream: &mut TcpStream) -> Option<String> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        if buf.len() >= MAX_REQUEST_BYTES {
            return None;
        }
        stream.set_read_timeout(Some(left(deadline)?)).ok()?;
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n.min(MAX_REQUEST_BYTES - buf.len())]);
    }
    String::from_utf8(buf).ok()
}

fn handle(mut stream: TcpStream, node: &Weak<Node>, serving: &AtomicBool) {
    let Some(head) = read_head(&mut stream) else {
        let _ = reply(&mut stream, 400, "bad request\n", "text/plain");
        return;
    };
    let mut words = head.lines().next().unwrap_or("").split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" {
        let _ = reply(&mut stream, 405, "only GET\n", "text/plain");
        return;
    }
    let Some(node) = node.upgrade() else {
        let _ = reply(&mut stream, 503, "node stopped\n", "text/plain");
        return;
    };
    let (status, body, content_type) = answer(&node, path, serving);
    // The reply is written without the node: a reader that takes it slowly does not keep
    // the node alive past its shutdown.
    drop(node);
    let _ = reply(&mut stream, status, &body, content_type);
}

/// The answer to `GET path`: (status, body, content type).
fn answer(node: &Node, path: &str, serving: &AtomicBool) -> (u16, String, &'static str) {
    let text = |status, body: &str| (status, body.to_string(), "text/plain");
    match path {
        "/metrics" => match crate::metrics::render(node) {
            Ok(body) => (200, body, prometheus::TEXT_FORMAT),
            Err(e) => {
                tracing::error!(error = %e, "metrics not encoded");
                text(500, &format!("metrics not encoded: {e}\n"))
            }
        },
        "/health" if node.engine().storage_failed() => text(503, "engine stopped: storage failed\n"),
        "/health" if serving.load(Ordering::Relaxed) => text(200, "ok\n"),
        "/health" => text(503, "client port not serving\n"),
        "/ready" => match readiness(node) {
            Ok(()) if serving.load(Ordering::Relaxed) => text(200, "ready\n"),
            Ok(()) => text(503, "client port not serving\n"),
            Err(why) => text(503, &format!("{why}\n")),
        },
        _ => text(404, "not found: /metrics, /health, /ready\n"),
    }
}

fn reply(stream: &mut TcpStream, status: u16, body: &str, content_type: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let deadline = Instant::now() + IO_TIMEOUT;
    write_by(stream, head.as_bytes(), deadline)?;
    write_by(stream, body.as_bytes(), deadline)
}

/// Writes all of `bytes` by `deadline` (a reader that takes them slower is cut off).
fn write_by(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let Some(t) = left(deadline) else {
            return Err(std::io::ErrorKind::TimedOut.into());
        };
        stream.set_write_timeout(Some(t))?;
        match stream.write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
