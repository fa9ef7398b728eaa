//! The client port: a mio event loop that accepts RESP connections, parses requests, hands
//! each connection's pipelined commands to a pool of executor threads (one batch in flight
//! per connection, so replies keep request order), and writes the replies back. Batches of
//! operations forwarded by other nodes (`FLOTILLA.LOCAL`) go to a second pool of the same
//! size, so they never queue behind client requests that themselves wait on forwarding.
//!
//! Owns sockets, buffers and the client limits ([`ClientLimits`], as Redis holds them):
//! - Requests are parsed incrementally ([`RequestParser`]): a request read in pieces is
//!   never parsed again from its start.
//! - A malformed request gets one error reply after the replies to the commands before it,
//!   then the connection is closed cleanly; a request larger than `max_request_bytes` is
//!   refused the same way.
//! - Before AUTH (when a password is set) requests are parsed one at a time, each only
//!   after the previous one ran (so an AUTH lifts the bounds for the next), and must be
//!   small: more than `unauthenticated_max_args` arguments or a bulk longer than
//!   `unauthenticated_max_bulk_bytes` gets Redis's `Protocol error: unauthenticated
//!   multibulk length` / `bulk length` and the connection is closed.
//! - Input held per connection (parsed commands not yet answered, the request being read,
//!   bytes read and not yet parsed) stays under `client_query_buffer_bytes` and 4096
//!   commands: at the bound the loop stops reading from it and TCP pushes back.
//! - Reply bytes the client leaves unread are bounded by `client_output_buffer_bytes`
//!   (`unauthenticated_output_buffer_bytes` before AUTH): past it the connection is
//!   closed. Batches shrink to what fits in the room left, judged by the largest reply of
//!   the connection's previous batch (before any, `max_request_bytes`, the largest value a
//!   key can hold), so a batch of large replies overshoots the bound by at most one batch.
//! - A connection still unauthenticated after `auth_timeout_ms`, or idle (nothing received
//!   or sent and no command running) for `idle_timeout_ms`, is closed.
//! - Connections past `max_clients` get an error and are closed; a connection that is
//!   gone while a job of it is still queued for or running on an executor keeps counting
//!   until the job is done (`Conn::lease`), so clients that close with work queued cannot
//!   pile up jobs while the executors are busy. With no password set,
//!   clients from other hosts get protected mode's `-DENIED` and are closed
//!   ([`crate::acl`]).
//!
//! - Stopping ([`ServeControl`], driven by [`crate::shutdown`]): first the listener is
//!   closed (new connections are refused, served ones go on); then the loop drains: it
//!   stops reading, runs the requests already received, writes their replies, closes each
//!   connection once answered and returns when none is left, or at the drain deadline.
//!
//! Never blocks the loop on Raft: a run of single-key commands this node serves itself is
//! started here and completed when the engine wakes the loop ([`crate::inflight`]), with
//! no thread waiting for it; everything else waits on the executors.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::acl::{protected_mode_refuses, DENIED};
use crate::commands::{run_batch, Session};
use crate::config::{ClientLimits, ValidNodeConfig};
use crate::inflight::{Finish, InFlight};
use crate::joint::{Continuation, Joiner};
use crate::joint_read::ReadJoiner;
use crate::node::Node;
use crate::outcome::indeterminate;
use crate::resp::{Limits, Proto, RequestLimits, RequestParser, UnauthLimits, Value};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Most commands handed to an executor at once.
const MAX_BATCH: usize = 1024;
/// Most parsed commands a connection holds waiting for an executor.
const MAX_QUEUED: usize = 4 * MAX_BATCH;
/// Bytes read from a socket at once.
const READ_CHUNK: usize = 64 << 10;

struct Job {
    token: Token,
    cmds: Vec<Vec<Vec<u8>>>,
    sess: Session,
    /// A batch started by the loop that needs an executor to finish it (`cmds` is empty).
    finish: Option<Finish>,
    /// A batch started by the loop whose connection is gone: its writes are still seen
    /// through (their client session learns they were answered); nothing is sent back.
    abandoned: Option<InFlight>,
    /// A joint entry of several connections' writes to see through (its members are woken
    /// when done; nothing is sent back on the done channel).
    joint: Option<Continuation>,
    /// The connection's lease ([`Conn::lease`]), held while the job is queued or runs.
    _lease: Option<Arc<()>>,
}

impl Job {
    fn batch(token: Token, cmds: Vec<Vec<Vec<u8>>>, sess: Session) -> Job {
        Job { token, cmds, sess, finish: None, abandoned: None, joint: None, _lease: None }
    }

    /// The job holds `lease` until it is done (dropped).
    fn leased(self, lease: &Arc<()>) -> Job {
        Job { _lease: Some(Arc::clone(lease)), ..self }
    }

    fn joint(c: Continuation) -> Job {
        Job { joint: Some(c), ..Job::batch(Token(0), Vec::new(), Session::default()) }
    }
}

/// Connections whose in-flight batch has a result to look at, and the loop's waker.
struct WakeQueue {
    ready: std::sync::Mutex<Vec<Token>>,
    mio: Arc<Waker>,
    /// Times a completion woke the loop (a system call each).
    wakes: std::sync::atomic::AtomicU64,
}

impl WakeQueue {
    fn new(mio: Arc<Waker>) -> WakeQueue {
        WakeQueue { ready: std::sync::Mutex::new(Vec::new()), mio, wakes: Default::default() }
    }

    /// Every connection woken since the last call (the loop calls it on every turn).
    fn take(&self) -> Vec<Token> {
        std::mem::take(&mut *self.ready.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The waker the engine's completions of a connection's in-flight batch call.
struct ConnWaker {
    token: Token,
    queue: Arc<WakeQueue>,
}

impl std::task::Wake for ConnWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    /// Only the completion that makes the list non-empty wakes the loop (a system call);
    /// the loop takes the whole list on every turn, so the others ride that wake-up.
    fn wake_by_ref(self: &Arc<Self>) {
        let first = {
            let mut ready = self.queue.ready.lock().unwrap_or_else(|e| e.into_inner());
            ready.push(self.token);
            ready.len() == 1
        };
        if first {
            self.queue.wakes.fetch_add(1, Ordering::Relaxed);
            let _ = self.queue.mio.wake();
        }
    }
}

struct Done {
    token: Token,
    replies: Vec<Value>,
    sess: Session,
}

/// The loop's view of the configured limits.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    limits: ClientLimits,
    /// Requests after AUTH (or with no password).
    authed: RequestLimits,
    /// Requests before AUTH.
    unauthed: RequestLimits,
    /// Whether a password is set (the AUTH deadline applies).
    password: bool,
    /// The reply size assumed before a connection's first batch.
    first_reply_hint: usize,
    /// How often the deadlines are checked.
    sweep_every: Duration,
}

impl Bounds {
    fn new(cfg: &ValidNodeConfig) -> Bounds {
        let l = cfg.limits;
        let request = Limits { max_request: cfg.max_request_bytes, max_args: l.max_request_args };
        let authed = RequestLimits { request, max_inline: l.max_inline_bytes, unauthenticated: None };
        let unauth =
            UnauthLimits { max_args: l.unauthenticated_max_args, max_bulk: l.unauthenticated_max_bulk_bytes };
        // A tenth of the shortest deadline: connections close at most 10% late.
        let sweep_every = (l.auth_timeout.min(l.idle_timeout) / 10)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        Bounds {
            limits: l,
            authed,
            unauthed: RequestLimits { unauthenticated: Some(unauth), ..authed },
            password: cfg.password.is_some(),
            first_reply_hint: cfg.max_request_bytes,
            sweep_every,
        }
    }
}

struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet fed to the parser (before AUTH, the requests after the one
    /// running).
    rbuf: Vec<u8>,
    parser: RequestParser,
    wbuf: Vec<u8>,
    /// Parsed commands waiting for an executor, with their size as received.
    queue: VecDeque<(Vec<Vec<u8>>, usize)>,
    /// Sum of the sizes in `queue`.
    queued_bytes: usize,
    /// The batch in flight on the loop itself ([`crate::inflight`]), if any.
    inflight: Option<InFlight>,
    /// The batch being answered, for the request metrics ([`crate::metrics`]).
    batch: Option<crate::metrics::Batch>,
    /// Wakes the loop for this connection when a result of `inflight` arrives.
    waker: std::task::Waker,
    /// Size as received of the batch at an executor.
    in_flight_bytes: usize,
    /// Shared with every job of this connection queued for or running on an executor: a
    /// connection that is gone while such a job is still held keeps counting against
    /// `max_clients` (as an orphan) until the job is done, so closing connections with
    /// work queued cannot pile up unbounded jobs while the executors are busy.
    lease: Arc<()>,
    /// `None` while a batch is at an executor.
    sess: Option<Session>,
    /// AUTH succeeded or no password is set (as of the last batch answered).
    authed: bool,
    /// Largest reply (encoded bytes) of the previous batch.
    reply_hint: usize,
    accepted: Instant,
    /// Last time bytes were received or sent, or a batch was answered.
    active: Instant,
    /// A protocol error to reply once the queued commands are answered; then close.
    poisoned: Option<String>,
    /// Close once the write buffer is flushed.
    closing: bool,
    eof: bool,
    /// The socket may hold unread bytes: set by a readable (or hang-up, or error) event,
    /// and when accepted; cleared by a read that found nothing (`WouldBlock`) or that
    /// returned less than it asked for, which drained the socket at that moment (its
    /// events are edge-triggered, so bytes arriving later raise a new event). A
    /// connection woken by its own results does not read again until then: that was
    /// two `recvfrom` calls answered `EAGAIN` per non-pipelined request.
    readable: bool,
    /// The server is stopping: nothing more is read; what was received is answered.
    draining: bool,
}

impl Conn {
    /// Input bytes this connection holds.
    /// Takes a batch's replies: written to the output buffer in the session's protocol.
    fn deliver(&mut self, node: &Node, replies: &[Value], sess: Session, now: Instant) {
        if let Some(b) = self.batch.take() {
            node.kv_metrics().end_batch(b, replies);
        }
        let mut largest = 1;
        for r in replies {
            let before = self.wbuf.len();
            r.encode(sess.proto, &mut self.wbuf);
            largest = largest.max(self.wbuf.len() - before);
        }
        self.reply_hint = largest;
        self.in_flight_bytes = 0;
        self.active = now;
        if sess.close {
            self.closing = true;
            self.queue.clear();
            self.queued_bytes = 0;
        }
        self.authed = sess.authed();
        self.sess = Some(sess);
    }

    /// Looks at the batch in flight on the loop: once every result arrived, its replies
    /// are delivered, or it goes to an executor to be finished. Whether it was delivered.
    fn settle(&mut self, node: &Node, t: Token, jobs: &Sender<Job>, now: Instant) -> bool {
        let Some(mut inf) = self.inflight.take() else { return false };
        let mut cont = Vec::new();
        let all = inf.poll(node, &self.waker, &mut cont);
        for c in cont {
            let _ = jobs.send(Job::joint(c));
        }
        if !all {
            self.inflight = Some(inf);
            return false;
        }
        match inf.complete(node) {
            Ok((replies, sess)) => {
                self.deliver(node, &replies, sess, now);
                true
            }
            Err(f) => {
                // The executor answers through the done channel; if the pool is gone the
                // loop is stopping.
                let job = Job { finish: Some(f), ..Job::batch(t, Vec::new(), Session::default()) };
                let _ = jobs.send(job.leased(&self.lease));
                false
            }
        }
    }

    fn held(&self) -> usize {
        self.rbuf.len() + self.parser.held() + self.queued_bytes + self.in_flight_bytes
    }

    fn output_limit(&self, b: &Bounds) -> usize {
        if self.authed {
            b.limits.output_buffer_bytes
        } else {
            b.limits.unauthenticated_output_buffer_bytes
        }
    }

    /// Before AUTH a request is parsed only once the previous one has been answered.
    fn parse_paused(&self) -> bool {
        !self.authed && (!self.queue.is_empty() || self.sess.is_none())
    }

    /// Whether a deadline has passed: the AUTH deadline, or the idle timeout.
    fn expired(&self, b: &Bounds, now: Instant) -> bool {
        let unauthed_too_long = b.password
            && !self.authed
            && now.saturating_duration_since(self.accepted) >= b.limits.auth_timeout;
        let idle_too_long =
            self.sess.is_some() && now.saturating_duration_since(self.active) >= b.limits.idle_timeout;
        unauthed_too_long || idle_too_long
    }
}

/// How a stopping node drives [`serve_controlled`]: refuse new connections, then drain.
#[derive(Debug, Default)]
pub struct ServeControl {
    refuse_new: AtomicBool,
    drain: Mutex<Option<Instant>>,
}

impl ServeControl {
    /// Closes the listener: new connections are refused; served ones go on.
    pub fn refuse_new(&self) {
        self.refuse_new.store(true, Ordering::Relaxed);
    }

    /// Drains (and refuses new connections): nothing more is read, requests received are
    /// answered, connections are closed once answered; at `deadline` the rest are closed.
    pub fn drain_until(&self, deadline: Instant) {
        self.refuse_new();
        *self.drain.lock().unwrap_or_else(|e| e.into_inner()) = Some(deadline);
    }

    fn refusing(&self) -> bool {
        self.refuse_new.load(Ordering::Relaxed)
    }

    fn draining(&self) -> Option<Instant> {
        *self.drain.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Serves `listener` until `stop` is set, then drains as [`ServeControl::drain_until`]
/// does, within the node's `shutdown_timeout`. Returns an error only if the poller fails.
pub fn serve(node: Arc<Node>, listener: std::net::TcpListener, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    run(node, listener, &ServeControl::default(), &stop)
}

/// Serves `listener` until `ctl` has drained every connection (or its drain deadline
/// passed). Returns an error only if the poller fails.
pub fn serve_controlled(
    node: Arc<Node>,
    listener: std::net::TcpListener,
    ctl: &ServeControl,
) -> std::io::Result<()> {
    run(node, listener, ctl, &AtomicBool::new(false))
}

// The accept loop keeps its `loop` form (one `let-else` added for the closed listener).
#[allow(clippy::while_let_loop)]
fn run(
    node: Arc<Node>,
    listener: std::net::TcpListener,
    ctl: &ServeControl,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    raise_backlog(&listener);
    let mut listener = Some(TcpListener::from_std(listener));
    // When to accept again after a failed `accept`.
    let mut accept_retry: Option<Instant> = None;
    let mut poll = Poll::new()?;
    if let Some(l) = listener.as_mut() {
        poll.registry().register(l, LISTENER, Interest::READABLE)?;
    }
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
                if let Some(inf) = job.abandoned.take() {
                    crate::inflight::abandon(&node, inf);
                    continue;
                }
                if let Some(Continuation(j)) = job.joint.take() {
                    j.run_on_executor(&node);
                    continue;
                }
                let (replies, sess) = match job.finish.take() {
                    Some(f) => crate::inflight::finish(&node, f),
                    None => {
                        // A bug in a command must not take the connection's replies with
                        // it. Its writes may have been proposed: their outcome is unknown.
                        let n = job.cmds.len();
                        let replies = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            run_batch(&node, &job.cmds, &mut job.sess)
                        }))
                        .unwrap_or_else(|_| {
                            tracing::error!(
                                commands = n,
                                "a command panicked: its batch is answered INDETERMINATE"
                            );
                            vec![indeterminate("internal error"); n]
                        });
                        (replies, job.sess)
                    }
                };
                if tx.send(Done { token: job.token, replies, sess }).is_err() {
                    return;
                }
                let _ = waker.wake();
            }
        })?);
    }
    drop(local_rx);
    drop(job_rx);
    let bounds = Bounds::new(node.config());
    let max_clients = node.config().max_clients;
    let fresh = Session::client(node.acl());
    let wakes = Arc::new(WakeQueue::new(waker.clone()));
    let protected = node.config().protected_mode;
    let mut conns: HashMap<Token, Conn> = HashMap::new();
    // Leases of gone connections with jobs still held (`Conn::lease`).
    let mut orphans: Vec<Arc<()>> = Vec::new();
    let mut next = 2usize;
    let mut events = Events::with_capacity(1024);
    let mut next_sweep = Instant::now() + bounds.sweep_every;
    // The read buffer every connection reads into (zeroed once, not on every event).
    let mut chunk = vec![0u8; READ_CHUNK];
    let clients = &node.kv_metrics().clients;
    let mut drain: Option<Instant> = None;
    let mut joiner = Joiner::default();
    let mut reads = ReadJoiner::default();
    loop {
        clients.connected.store(conns.len() as u64, Ordering::Relaxed);
        if stop.load(Ordering::Relaxed) && ctl.draining().is_none() {
            ctl.drain_until(Instant::now() + node.config().shutdown_timeout);
        }
        if ctl.refusing() {
            if let Some(mut l) = listener.take() {
                let _ = poll.registry().deregister(&mut l);
                tracing::info!("client port closed to new connections");
            }
        }
        let mut touched: Vec<Token> = Vec::new();
        if drain.is_none() {
            if let Some(d) = ctl.draining() {
                tracing::info!(connections = conns.len(), "draining client connections");
                drain = Some(d);
                for (t, c) in conns.iter_mut() {
                    c.draining = true;
                    touched.push(*t);
                }
            }
        }
        if let Some(d) = drain {
            if conns.is_empty() {
                break;
            }
            if Instant::now() >= d {
                tracing::warn!(connections = conns.len(), "drain deadline passed: closing the rest");
                for (t, c) in conns.drain() {
                    retire(c, t, poll.registry(), &job_tx, &mut orphans);
                }
                break;
            }
        }
        if accept_retry.is_some_and(|at| Instant::now() >= at) {
            // Re-armed: readable again at once if connections still wait.
            accept_retry = None;
            if let Some(l) = listener.as_mut() {
                poll.registry().reregister(l, LISTENER, Interest::READABLE)?;
            }
        }
        let mut wait = next_sweep.saturating_duration_since(Instant::now()).min(Duration::from_millis(100));
        if let Some(at) = accept_retry {
            wait = wait.min(at.saturating_duration_since(Instant::now()));
        }
        if let Err(e) = poll.poll(&mut events, Some(wait)) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let now = Instant::now();
        for ev in events.iter() {
            match ev.token() {
                LISTENER => loop {
                    let Some(listener) = listener.as_ref() else { break };
                    match listener.accept() {
                        Ok((mut stream, peer)) => {
                            clients.received.fetch_add(1, Ordering::Relaxed);
                            if protected_mode_refuses(protected, node.acl().required(), peer.ip()) {
                                let _ = stream.write_all(format!("-{DENIED}\r\n").as_bytes());
                                clients.rejected.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            // Gone connections whose jobs are still queued or running count.
                            orphans.retain(|l| Arc::strong_count(l) > 1);
                            if conns.len() + orphans.len() >= max_clients {
                                let _ = stream.write_all(b"-ERR max number of clients reached\r\n");
                                clients.rejected.fetch_add(1, Ordering::Relaxed);
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
                                        parser: RequestParser::new(),
                                        wbuf: Vec::new(),
                                        queue: VecDeque::new(),
                                        queued_bytes: 0,
                                        in_flight_bytes: 0,
                                        lease: Arc::new(()),
                                        sess: Some(Session {
                                            id: crate::hello::next_client_id(),
                                            ..fresh.clone()
                                        }),
                                        inflight: None,
                                        batch: None,
                                        waker: std::task::Waker::from(Arc::new(ConnWaker {
                                            token: t,
                                            queue: wakes.clone(),
                                        })),
                                        authed: fresh.authed(),
                                        reply_hint: bounds.first_reply_hint,
                                        accepted: now,
                                        active: now,
                                        poisoned: None,
                                        closing: false,
                                        eof: false,
                                        readable: true,
                                        draining: drain.is_some(),
                                    },
                                );
                                touched.push(t);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            // Out of file descriptors, say: the connection stays queued,
                            // and no new event comes for it (edge-triggered). Tried again
                            // after a pause, not at once (that would spin).
                            if let Some(suppressed) = ACCEPT_LOG.allow() {
                                tracing::warn!(error = %e, suppressed, "accept failed; trying again in 50 ms");
                            }
                            accept_retry = Some(now + ACCEPT_RETRY);
                            break;
                        }
                    }
                },
                WAKER => {}
                t => {
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        if let Some(c) = conns.get_mut(&t) {
                            c.readable = true;
                        }
                    }
                    touched.push(t)
                }
            }
        }
        while let Ok(d) = done_rx.try_recv() {
            if let Some(c) = conns.get_mut(&d.token) {
                c.deliver(&node, &d.replies, d.sess, now);
                touched.push(d.token);
            }
        }
        // Batches in flight on the loop whose results arrived.
        let woken: Vec<Token> = wakes.take();
        for t in woken {
            let Some(c) = conns.get_mut(&t) else { continue };
            if c.settle(&node, t, &job_tx, now) {
                touched.push(t);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for t in touched {
            let Some(c) = conns.get_mut(&t) else { continue };
            let alive =
                drive(c, t, &node, &bounds, &job_tx, &local_tx, now, &mut chunk, &mut joiner, &mut reads);
            if !alive {
                if let Some(c) = conns.remove(&t) {
                    retire(c, t, poll.registry(), &job_tx, &mut orphans);
                }
            }
        }
        // The writes this turn started, one entry per shard; its reads, one barrier per shard.
        for c in joiner.flush(&node) {
            let _ = job_tx.send(Job::joint(c));
        }
        reads.flush(&node);
        if now >= next_sweep {
            next_sweep = now + bounds.sweep_every;
            let expired: Vec<Token> =
                conns.iter().filter(|(_, c)| c.expired(&bounds, now)).map(|(t, _)| *t).collect();
            for t in expired {
                if let Some(c) = conns.remove(&t) {
                    retire(c, t, poll.registry(), &job_tx, &mut orphans);
                }
            }
        }
    }
    drop(job_tx);
    drop(local_tx);
    // Executors still running a batch (the drain deadline passed) are left to finish on
    // their own: joining them could outlast the deadline.
    let until = drain.unwrap_or_else(Instant::now);
    for t in threads {
        while !t.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        if t.is_finished() {
            let _ = t.join();
        }
    }
    Ok(())
}

/// The client port's accept backlog: Redis's `tcp-backlog` default. The standard library
/// listens with 128, so a burst of connections (a benchmark's or a cluster client's, one
/// per node each) overflows it and the kernel drops SYNs, which the clients retry only
/// after 1 s, then 3 s.
const ACCEPT_BACKLOG: libc::c_int = 511;

/// Raises the listener's accept backlog to [`ACCEPT_BACKLOG`] (Linux takes a second
/// `listen` on a listening socket as a new backlog; the kernel caps it at somaxconn). On
/// failure the listener keeps its backlog.
fn raise_backlog(listener: &std::net::TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: `listen` on a socket this listener owns, which stays open for the call; it
    // changes only the length of the queue of pending connections.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), ACCEPT_BACKLOG) };
    if rc != 0 {
        tracing::warn!("client port: accept backlog not raised: {}", std::io::Error::last_os_error());
    }
}

/// The log of clients closed at their output limit: at most 10 lines a second.
static OUTPUT_LIMIT_LOG: std::sync::LazyLock<crate::logging::ClientErrorLog> =
    std::sync::LazyLock::new(crate::logging::ClientErrorLog::default);

/// The rate limit of the failed-accept warning (one per failure, every 50 ms at most).
static ACCEPT_LOG: std::sync::LazyLock<crate::logging::ClientErrorLog> =
    std::sync::LazyLock::new(crate::logging::ClientErrorLog::default);

/// The pause before accepting again after a failed `accept`.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Forgets a finished connection; a batch it had in flight on the loop goes to an executor
/// to be seen through. While a job of it is still held, its lease joins `orphans`.
fn retire(mut c: Conn, t: Token, registry: &mio::Registry, jobs: &Sender<Job>, orphans: &mut Vec<Arc<()>>) {
    let _ = registry.deregister(&mut c.stream);
    if let Some(inf) = c.inflight.take() {
        let job = Job { abandoned: Some(inf), ..Job::batch(t, Vec::new(), Session::default()) };
        let _ = jobs.send(job.leased(&c.lease));
    }
    if Arc::strong_count(&c.lease) > 1 {
        orphans.push(c.lease);
    }
}

/// Feeds the bytes read to the parser: all of them, or before AUTH one request at a time.
fn parse(c: &mut Conn, b: &Bounds) {
    let mut used = 0;
    while used < c.rbuf.len() && c.poisoned.is_none() && !c.closing && !c.parse_paused() {
        let before = c.parser.held();
        let lim = if c.authed { &b.authed } else { &b.unauthed };
        match c.parser.feed(&c.rbuf[used..], lim) {
            Ok((n, cmd)) => {
                used += n;
                match cmd {
                    Some(args) if !args.is_empty() => {
                        c.queue.push_back((args, before + n));
                        c.queued_bytes += before + n;
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            Err(e) => c.poisoned = Some(e.to_string()),
        }
    }
    c.rbuf.drain(..used);
}

/// Reads, parses, dispatches and writes what it can for one connection. Returns false
/// when the connection is finished.
#[allow(clippy::too_many_arguments)]
fn drive(
    c: &mut Conn,
    t: Token,
    node: &Node,
    b: &Bounds,
    jobs: &Sender<Job>,
    local: &Sender<Job>,
    now: Instant,
    chunk: &mut [u8],
    joiner: &mut Joiner,
    reads: &mut ReadJoiner,
) -> bool {
    // Read while we accept more input (a draining connection only parses what it holds).
    loop {
        parse(c, b);
        if c.draining
            || c.eof
            || c.poisoned.is_some()
            || c.closing
            || c.parse_paused()
            || c.queue.len() >= MAX_QUEUED
            || !c.readable
        {
            break;
        }
        let room = b.limits.query_buffer_bytes.saturating_sub(c.held()).min(chunk.len());
        if room == 0 {
            if c.queue.is_empty() && c.sess.is_some() {
                // Nothing will drain: what is held can never become a request (unreachable
                // while the limit exceeds the largest request, as the config requires).
                c.poisoned = Some("Protocol error: query buffer limit reached".into());
            }
            break;
        }
        match c.stream.read(&mut chunk[..room]) {
            Ok(0) => c.eof = true,
            Ok(n) => {
                c.rbuf.extend_from_slice(&chunk[..n]);
                c.active = now;
                // Less than asked for: the socket is drained (see `Conn::readable`).
                c.readable = n == room;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                c.readable = false;
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    // Dispatch, as many commands as the output room left is likely to hold.
    if !c.closing && !c.queue.is_empty() {
        if let Some(sess) = c.sess.take() {
            let room = c.output_limit(b).saturating_sub(c.wbuf.len());
            let mut n = c.queue.len().min(MAX_BATCH).min((room / c.reply_hint.max(1)).max(1));
            // HELLO may switch the protocol, and a batch's replies are written in one: a
            // HELLO runs in a batch of its own, after the commands before it.
            let hello = |a: &Vec<Vec<u8>>| a.first().is_some_and(|n| n.eq_ignore_ascii_case(b"HELLO"));
            if let Some(k) = c.queue.iter().take(n).position(|(a, _)| hello(a)) {
                n = k.max(1);
            }
            let mut cmds = Vec::with_capacity(n);
            for (cmd, bytes) in c.queue.drain(..n) {
                c.queued_bytes -= bytes;
                c.in_flight_bytes += bytes;
                cmds.push(cmd);
            }
            c.batch = Some(node.kv_metrics().start_batch(&cmds));
            let internal = cmds.iter().all(|a| {
                a.first().is_some_and(|n| {
                    n.eq_ignore_ascii_case(b"FLOTILLA.LOCAL") || n.eq_ignore_ascii_case(b"AUTH")
                })
            });
            if internal {
                if local.send(Job::batch(t, cmds, sess).leased(&c.lease)).is_err() {
                    return false;
                }
            } else {
                // Started here when this node serves the first commands itself; else (or
                // for what follows them) an executor runs them.
                let joiner = node.config().joint_writes.then_some(&mut *joiner);
                let reads = node.config().joint_reads.then_some(&mut *reads);
                match InFlight::start(node, cmds, sess, joiner, reads, &c.waker) {
                    Ok(inf) => {
                        c.inflight = Some(inf);
                        c.settle(node, t, jobs, now);
                    }
                    Err((cmds, sess)) => {
                        if jobs.send(Job::batch(t, cmds, sess).leased(&c.lease)).is_err() {
                            return false;
                        }
                    }
                }
            }
        }
    }
    let idle = c.sess.is_some() && c.queue.is_empty();
    if idle && !c.closing {
        if let Some(e) = c.poisoned.take() {
            Value::err(format!("ERR {e}")).encode(Proto::Resp2, &mut c.wbuf);
            c.closing = true;
        } else if c.eof || c.draining {
            c.closing = true;
        }
    }
    // Write.
    while !c.wbuf.is_empty() {
        match c.stream.write(&c.wbuf) {
            Ok(0) => return false,
            Ok(n) => {
                c.wbuf.drain(..n);
                c.active = now;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    // Replies the client leaves unread past its limit: close (as Redis's
    // client-output-buffer-limit does), dropping them.
    if c.wbuf.len() > c.output_limit(b) {
        // Rate-limited: a client (even before AUTH) can cause this at its connect rate.
        if let Some(suppressed) = OUTPUT_LIMIT_LOG.allow() {
            tracing::warn!(
                unread = c.wbuf.len(),
                limit = c.output_limit(b),
                authenticated = c.authed,
                suppressed,
                "closing a client that reached its output buffer limit"
            );
        }
        return false;
    }
    if c.closing && c.wbuf.is_empty() && c.sess.is_some() {
        if c.draining {
            // Requests sent after the drain began are dropped unanswered; reading them
            // away (a bounded amount) lets the close be a FIN, not a reset that could
            // discard replies the client has not read yet.
            for _ in 0..16 {
                match c.stream.read(chunk) {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
        }
        let _ = c.stream.shutdown(std::net::Shutdown::Write);
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use std::task::Wake;

    use super::*;

    fn conn_waker(token: usize, queue: &Arc<WakeQueue>) -> Arc<ConnWaker> {
        Arc::new(ConnWaker { token: Token(token), queue: queue.clone() })
    }

    #[test]
    fn completions_before_the_loop_takes_them_share_one_wake_up_and_none_is_lost() {
        let mut poll = Poll::new().expect("poll");
        let waker = Arc::new(Waker::new(poll.registry(), Token(1)).expect("waker"));
        let q = Arc::new(WakeQueue::new(waker));
        let (a, b, c) = (conn_waker(10, &q), conn_waker(11, &q), conn_waker(12, &q));
        a.wake_by_ref();
        b.wake_by_ref();
        a.clone().wake();
        assert_eq!(q.wakes.load(Ordering::Relaxed), 1, "one system wake-up for three completions");
        let mut events = Events::with_capacity(8);
        poll.poll(&mut events, Some(Duration::from_secs(5))).expect("poll");
        assert!(events.iter().any(|e| e.token() == Token(1)), "the loop was woken");
        assert_eq!(q.take(), vec![Token(10), Token(11), Token(10)]);
        // Taken: the next completion wakes the loop again.
        c.wake_by_ref();
        assert_eq!(q.wakes.load(Ordering::Relaxed), 2);
        poll.poll(&mut events, Some(Duration::from_secs(5))).expect("poll");
        assert!(events.iter().any(|e| e.token() == Token(1)), "woken again after the take");
        assert_eq!(q.take(), vec![Token(12)]);
    }
}
