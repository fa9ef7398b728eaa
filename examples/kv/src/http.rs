//! The operations HTTP endpoint on `metrics_addr`: `GET /metrics` (Prometheus text,
//! [`crate::metrics::render`]), `GET /health` (200 while the node serves its client port
//! and its engine has not stopped on a storage failure) and `GET /ready` (200 once the
//! node can serve requests, see [`readiness`]; 503 with the reason otherwise).
//!
//! Owns the listener thread and the bounds of this endpoint: at most
//! [`MAX_CONNECTIONS`] requests handled at once (more get a 503 and are closed), requests
//! of at most [`MAX_REQUEST_BYTES`], a read and write timeout of [`IO_TIMEOUT`], one
//! request per connection. Never changes the node: it only reads.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use flotilla_engine::raft::Role;

use crate::node::Node;
use crate::sm::META_GROUP;

/// Requests handled at once.
pub const MAX_CONNECTIONS: usize = 8;
/// The largest request head read (the request line and headers).
pub const MAX_REQUEST_BYTES: usize = 8 << 10;
/// How long a connection may take to send its request, or to take the reply.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

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
        let Ok(mut stream) = stream else { continue };
        if busy.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            busy.fetch_sub(1, Ordering::AcqRel);
            let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
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

/// Reads the request head: up to the blank line, bounded in size and time.
fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        if buf.len() >= MAX_REQUEST_BYTES {
            return None;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n.min(MAX_REQUEST_BYTES - buf.len())]);
    }
    String::from_utf8(buf).ok()
}

fn handle(mut stream: TcpStream, node: &Weak<Node>, serving: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
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
    let _ = match path {
        "/metrics" => match crate::metrics::render(&node) {
            Ok(text) => reply(&mut stream, 200, &text, prometheus::TEXT_FORMAT),
            Err(e) => {
                tracing::error!(error = %e, "metrics not encoded");
                reply(&mut stream, 500, &format!("metrics not encoded: {e}\n"), "text/plain")
            }
        },
        "/health" if node.engine().storage_failed() => {
            reply(&mut stream, 503, "engine stopped: storage failed\n", "text/plain")
        }
        "/health" if serving.load(Ordering::Relaxed) => reply(&mut stream, 200, "ok\n", "text/plain"),
        "/health" => reply(&mut stream, 503, "client port not serving\n", "text/plain"),
        "/ready" => match readiness(&node) {
            Ok(()) if serving.load(Ordering::Relaxed) => reply(&mut stream, 200, "ready\n", "text/plain"),
            Ok(()) => reply(&mut stream, 503, "client port not serving\n", "text/plain"),
            Err(why) => reply(&mut stream, 503, &format!("{why}\n"), "text/plain"),
        },
        _ => reply(&mut stream, 404, "not found: /metrics, /health, /ready\n", "text/plain"),
    };
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
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}
