//! The client port: a mio event loop that accepts RESP connections, parses requests, hands
//! each connection's pipelined commands to a pool of executor threads (one batch in flight
//! per connection, so replies keep request order), and writes the replies back. Batches of
//! operations forwarded by other nodes (`FLOTILLA.LOCAL`) go to a second pool of the same
//! size, so they never queue behind client requests that themselves wait on forwarding.
//!
//! Owns sockets, buffers and limits: a malformed request gets one error reply after the
//! replies to the commands before it, then the connection is closed cleanly; a request
//! larger than `max_request_bytes` is refused the same way; connections past `max_clients`
//! get an error and are closed; with no password set, clients from other hosts get
//! protected mode's `-DENIED` and are closed ([`crate::acl`]). Never blocks the loop on
//! Raft: executors do that.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::acl::{protected_mode_refuses, DENIED};
use crate::commands::{run_batch, Session};
use crate::node::Node;
use crate::outcome::indeterminate;
use crate::resp::{parse_command, Limits, Value};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Most commands handed to an executor at once.
const MAX_BATCH: usize = 1024;

struct Job {
    token: Token,
    cmds: Vec<Vec<Vec<u8>>>,
    sess: Session,
}

struct Done {
    token: Token,
    replies: Vec<Value>,
    sess: Session,
}

struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    queue: VecDeque<Vec<Vec<u8>>>,
    sess: Option<Session>,
    /// A protocol error to reply once the queued commands are answered; then close.
    poisoned: Option<String>,
    /// Close once the write buffer is flushed.
    closing: bool,
    eof: bool,
}

/// Serves `listener` until `stop` is set. Returns an error only if the poller fails.
pub fn serve(node: Arc<Node>, listener: std::net::TcpListener, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (job_tx, job_rx) = unbounded::<Job>();
    // Forwarded operations (`FLOTILLA.LOCAL`) get their own pool: they never forward
    // further, so they never wait on another node, and client requests that wait on
    // forwarded ones elsewhere can never hold every thread that would serve them.
    let (local_tx, local_rx) = unbounded::<Job>();
    let (done_tx, done_rx) = unbounded::<Done>();
    let mut threads = Vec::new();
    let n = node.config().executor_threads;
    for (i, rx) in (0..2 * n).map(|i| (i, if i < n { job_rx.clone() } else { local_rx.clone() })) {
        let (node, tx, waker): (Arc<Node>, Sender<Done>, Arc<Waker>) =
            (node.clone(), done_tx.clone(), waker.clone());
        let rx: Receiver<Job> = rx;
        threads.push(std::thread::Builder::new().name(format!("kv-exec-{i}")).spawn(move || {
            while let Ok(mut job) = rx.recv() {
                // A bug in a command must not take the connection's replies with it. Its
                // writes may have been proposed: their outcome is unknown.
                let n = job.cmds.len();
                let replies = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_batch(&node, &job.cmds, &mut job.sess)
                }))
                .unwrap_or_else(|_| vec![indeterminate("internal error"); n]);
                if tx.send(Done { token: job.token, replies, sess: job.sess }).is_err() {
                    return;
                }
                let _ = waker.wake();
            }
        })?);
    }
    drop(local_rx);
    drop(job_rx);
    let limits = Limits { max_request: node.config().max_request_bytes, max_args: 1 << 20 };
    let max_clients = node.config().max_clients;
    let fresh = Session::client(node.acl());
    let protected = node.config().protected_mode;
    let mut conns: HashMap<Token, Conn> = HashMap::new();
    let mut next = 2usize;
    let mut events = Events::with_capacity(1024);
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(100))) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut touched: Vec<Token> = Vec::new();
        for ev in events.iter() {
            match ev.token() {
                LISTENER => loop {
                    match listener.accept() {
                        Ok((mut stream, peer)) => {
                            if protected_mode_refuses(protected, node.acl().required(), peer.ip()) {
                                let _ = stream.write_all(format!("-{DENIED}\r\n").as_bytes());
                                continue;
                            }
                            if conns.len() >= max_clients {
                                let _ = stream.write_all(b"-ERR max number of clients reached\r\n");
                                continue;
                            }
                            let _ = stream.set_nodelay(true);
                            let t = Token(next);
                            next += 1;
                            if poll
                                .registry()
                                .register(&mut stream, t, Interest::READABLE | Interest::WRITABLE)
                                .is_ok()
                            {
                                conns.insert(
                                    t,
                                    Conn {
                                        stream,
                                        rbuf: Vec::new(),
                                        wbuf: Vec::new(),
                                        queue: VecDeque::new(),
                                        sess: Some(fresh.clone()),
                                        poisoned: None,
                                        closing: false,
                                        eof: false,
                                    },
                                );
                                touched.push(t);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    }
                },
                WAKER => {}
                t => touched.push(t),
            }
        }
        while let Ok(d) = done_rx.try_recv() {
            if let Some(c) = conns.get_mut(&d.token) {
                for r in &d.replies {
                    r.encode(&mut c.wbuf);
                }
                if d.sess.close {
                    c.closing = true;
                    c.queue.clear();
                }
                c.sess = Some(d.sess);
                touched.push(d.token);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for t in touched {
            let Some(c) = conns.get_mut(&t) else { continue };
            let alive = drive(c, t, limits, &job_tx, &local_tx);
            if !alive {
                if let Some(mut c) = conns.remove(&t) {
                    let _ = poll.registry().deregister(&mut c.stream);
                }
            }
        }
    }
    drop(job_tx);
    drop(local_tx);
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Reads, parses, dispatches and writes what it can for one connection. Returns false
/// when the connection is finished.
fn drive(c: &mut Conn, t: Token, limits: Limits, jobs: &Sender<Job>, local: &Sender<Job>) -> bool {
    // Read while we accept more input.
    let mut chunk = [0u8; 64 << 10];
    while !c.eof && c.poisoned.is_none() && !c.closing && c.queue.len() < 4 * MAX_BATCH {
        match c.stream.read(&mut chunk) {
            Ok(0) => c.eof = true,
            Ok(n) => {
                c.rbuf.extend_from_slice(&chunk[..n]);
                // Parse as we go so the buffer never holds more than one partial request.
                let mut used = 0;
                loop {
                    match parse_command(&c.rbuf[used..], limits) {
                        Ok(Some((args, n))) => {
                            used += n;
                            if !args.is_empty() {
                                c.queue.push_back(args);
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            c.poisoned = Some(e.to_string());
                            break;
                        }
                    }
                }
                c.rbuf.drain(..used);
                if c.rbuf.len() > limits.max_request + 64 && c.poisoned.is_none() {
                    c.poisoned = Some(format!(
                        "Protocol error: request too large (limit {} bytes)",
                        limits.max_request
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    // Dispatch.
    if !c.closing && !c.queue.is_empty() {
        if let Some(sess) = c.sess.take() {
            let n = c.queue.len().min(MAX_BATCH);
            let cmds: Vec<_> = c.queue.drain(..n).collect();
            let internal = cmds.iter().all(|a| {
                a.first().is_some_and(|n| {
                    n.eq_ignore_ascii_case(b"FLOTILLA.LOCAL") || n.eq_ignore_ascii_case(b"AUTH")
                })
            });
            let pool = if internal { local } else { jobs };
            if pool.send(Job { token: t, cmds, sess }).is_err() {
                return false;
            }
        }
    }
    let idle = c.sess.is_some() && c.queue.is_empty();
    if idle && !c.closing {
        if let Some(e) = c.poisoned.take() {
            Value::err(format!("ERR {e}")).encode(&mut c.wbuf);
            c.closing = true;
        } else if c.eof {
            c.closing = true;
        }
    }
    // Write.
    while !c.wbuf.is_empty() {
        match c.stream.write(&c.wbuf) {
            Ok(0) => return false,
            Ok(n) => {
                c.wbuf.drain(..n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    if c.closing && c.wbuf.is_empty() && c.sess.is_some() {
        let _ = c.stream.shutdown(std::net::Shutdown::Write);
        return false;
    }
    true
}
