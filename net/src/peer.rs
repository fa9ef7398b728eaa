//! One task per peer node: owns the single connection of the pair, its bounded send queue,
//! dialing with exponential backoff, the tie-break between simultaneous dials, incarnation
//! tracking and the up/down/dropped reports.
//!
//! Backoff: failed dials and lost connections both wait the next backoff step before the
//! redial. The backoff resets only when a connection is lost after it stayed up for at
//! least `backoff_max` (it was stable), so a peer that admits connections and drops them at
//! once is redialed on the exponential schedule, never in a tight loop, while the loss of a
//! long-lived connection is redialed after the first (shortest) step.
//!
//! The pair rule: at most one connection per node pair. When both nodes dial at once, the
//! connection dialed by the lower node id wins; a node always accepts a hello from a new
//! incarnation of its peer (the peer restarted) and from a peer that dials while the
//! current connection is one the peer itself dialed (the peer saw it die). Nothing is sent
//! on a connection before its hello is acknowledged, so the loser of a tie-break carries
//! no frames and loses none.
//!
//! Lanes of a connection: the message lane (the bidirectional stream of the hello), written
//! by the peer task; the control lane, a unidirectional stream each way at a higher
//! priority, written by a task of its own (`write_control`) so a message lane stalled by
//! flow control never holds back a heartbeat; bulk streams (`bulk.rs`).
//!
//! Also starts a peer's task on first use ([`handle`]). Never reads inbound frames
//! (`conn.rs`), admits inbound connections (`accept.rs`) nor runs bulk streams (`bulk.rs`);
//! the peer's queues and connection, which those share, live in `shared.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::certs::node_server_name;
use crate::config::ValidNetConfig;
use crate::conn::{self, Lane, CLOSE_REJECT_BASE, CLOSE_REPLACED};
use crate::event::{DownReason, DropReason, Event, NodeId};
use crate::frame::{encode_header, FrameKind, Hello, HelloReply, RejectReason, HEADER_LEN};
use crate::shared::{to_secs, Ctx, Incoming, PeerHandle};
use crate::verify::LeafInfo;

/// Priority of the message lane (bulk streams use 0; higher goes first).
pub(crate) const LANE_PRIORITY: i32 = 100;
/// Priority of the control lane: above the message lane.
pub(crate) const CONTROL_PRIORITY: i32 = 200;

/// The handle of peer `node`, created (with its task) on first use.
pub(crate) fn handle(ctx: &Arc<Ctx>, node: NodeId) -> Arc<PeerHandle> {
    // A poisoned lock means a task panicked while holding it; the map itself is still
    // consistent (inserts are single calls), so keep going.
    let mut peers = ctx.peers.lock().unwrap_or_else(|e| e.into_inner());
    peers
        .entry(node)
        .or_insert_with(|| {
            let (handle, incoming) = PeerHandle::new(node, &ctx.cfg);
            let handle = Arc::new(handle);
            ctx.rt.spawn(run(ctx.clone(), handle.clone(), incoming));
            handle
        })
        .clone()
}

/// Aborts the task when dropped.
struct TaskGuard(JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The connection of the pair, admitted on both sides.
struct Live {
    conn: quinn::Connection,
    send: quinn::SendStream,
    incarnation: u64,
    dialed_by_me: bool,
    /// When the connection was installed.
    since: Instant,
    _tasks: [TaskGuard; 4],
}

/// Exponential backoff with jitter.
struct Backoff {
    next: Duration,
    initial: Duration,
    max: Duration,
    seed: u64,
}

impl Backoff {
    fn new(cfg: &ValidNetConfig, seed: u64) -> Backoff {
        Backoff {
            next: cfg.backoff_initial,
            initial: cfg.backoff_initial,
            max: cfg.backoff_max,
            seed: seed | 1,
        }
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }

    /// When to redial after losing a connection installed at `since`: the next step, from
    /// the first one if the connection had been stable (up for at least `backoff_max`).
    fn after_loss(&mut self, since: Instant) -> Instant {
        let now = Instant::now();
        if now.saturating_duration_since(since) >= self.max {
            self.reset();
        }
        now + self.step()
    }

    /// The delay to wait now (between half and all of the current step), and doubles it.
    fn step(&mut self) -> Duration {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d / 2 + d.mul_f64((self.seed % 1000) as f64 / 2000.0)
    }
}

enum DialError {
    NoAddress,
    NotAllowed,
    Rejected(RejectReason),
    Failed,
}

async fn report(ctx: &Ctx, e: Event) {
    if let Event::Dropped { tags, .. } = &e {
        if tags.is_empty() {
            return;
        }
        ctx.stats.frames_dropped.add(tags.len() as u64);
    }
    let _ = ctx.events.send(e).await;
}

/// The peer task.
pub(crate) async fn run(ctx: Arc<Ctx>, peer: Arc<PeerHandle>, mut incoming: mpsc::Receiver<Incoming>) {
    let mut backoff = Backoff::new(&ctx.cfg, ctx.incarnation ^ peer.node.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut next_dial = Instant::now();
    let mut live: Option<Live> = None;
    loop {
        if let Some(mut l) = live.take() {
            // Connected: write what is queued, then wait for more, a new hello or a close.
            let batch = peer.take_batch();
            if !batch.is_empty() {
                if write_batch(&ctx, &mut l.send, &batch).await {
                    live = Some(l);
                } else {
                    let mut tags: Vec<u64> = batch.iter().map(|(t, _)| *t).collect();
                    tags.extend(peer.drain());
                    next_dial = backoff.after_loss(l.since);
                    down(&ctx, &peer, l, DownReason::ConnectionLost("write failed".into())).await;
                    report(&ctx, Event::Dropped { to: peer.node, tags, reason: DropReason::ConnectionLost })
                        .await;
                }
                continue;
            }
            tokio::select! {
                biased;
                inc = incoming.recv() => {
                    let Some(inc) = inc else { return };
                    let keep_mine = inc.hello.incarnation == l.incarnation && l.dialed_by_me && ctx.me < peer.node;
                    if keep_mine {
                        ctx.stats.duplicates.inc();
                        reject(inc).await;
                        live = Some(l);
                    } else {
                        let reason = if inc.hello.incarnation != l.incarnation {
                            DownReason::Restarted
                        } else {
                            DownReason::ConnectionLost("replaced by the peer's new connection".into())
                        };
                        down(&ctx, &peer, l, reason).await;
                        live = Some(admit(&ctx, &peer, inc).await);
                    }
                }
                e = l.conn.closed() => {
                    next_dial = backoff.after_loss(l.since);
                    down(&ctx, &peer, l, DownReason::ConnectionLost(e.to_string())).await;
                }
                _ = peer.wake.notified() => live = Some(l),
            }
            continue;
        }
        // Not connected.
        if peer.has_work() && Instant::now() >= next_dial {
            let dial = dial(&ctx, &peer);
            tokio::pin!(dial);
            let outcome = loop {
                tokio::select! {
                    res = &mut dial => break Some(res),
                    inc = incoming.recv() => {
                        let Some(inc) = inc else { return };
                        if ctx.me < peer.node {
                            // My dial wins the tie-break.
                            ctx.stats.duplicates.inc();
                            reject(inc).await;
                        } else {
                            live = Some(admit(&ctx, &peer, inc).await);
                            break None;
                        }
                    }
                }
            };
            // A connection, dialed or admitted, resets the backoff only once it proved
            // stable (see `Backoff::after_loss`).
            match outcome {
                None => {}
                Some(Ok(l)) => {
                    up(&ctx, &peer, &l).await;
                    live = Some(l);
                }
                Some(Err(DialError::Rejected(RejectReason::Duplicate))) => {
                    // The peer is dialing us; wait for its hello, keep the queue.
                    next_dial = Instant::now() + backoff.step();
                }
                Some(Err(e)) => {
                    let reason = match e {
                        DialError::NoAddress => DropReason::NoAddress,
                        DialError::NotAllowed => DropReason::NotAllowed,
                        _ => DropReason::Unreachable,
                    };
                    let mut tags = peer.drain();
                    tags.extend(peer.drain_control());
                    report(&ctx, Event::Dropped { to: peer.node, tags, reason }).await;
                    next_dial = Instant::now() + backoff.step();
                }
            }
            continue;
        }
        let want = peer.has_work();
        tokio::select! {
            inc = incoming.recv() => {
                let Some(inc) = inc else { return };
                live = Some(admit(&ctx, &peer, inc).await);
            }
            _ = peer.wake.notified() => {}
            _ = tokio::time::sleep_until(next_dial), if want => {}
        }
    }
}

async fn reject(mut inc: Incoming) {
    conn::reject(&inc.conn, &mut inc.send, RejectReason::Duplicate).await;
}

/// Accepts an inbound connection: acknowledges the hello and installs it.
async fn admit(ctx: &Arc<Ctx>, peer: &Arc<PeerHandle>, mut inc: Incoming) -> Live {
    let ack = HelloReply::Ack { incarnation: ctx.incarnation }.encode();
    // A failed ack write shows up as a closed connection on the next loop.
    let _ = inc.send.write_all(&ack).await;
    peer.cert_not_after.store(inc.cert_not_after, Ordering::Relaxed);
    let l = install(ctx, peer, inc.conn, inc.send, inc.recv, inc.hello.incarnation, false);
    up(ctx, peer, &l).await;
    l
}

fn install(
    ctx: &Arc<Ctx>,
    peer: &Arc<PeerHandle>,
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    incarnation: u64,
    dialed_by_me: bool,
) -> Live {
    let _ = send.set_priority(LANE_PRIORITY);
    let reader = tokio::spawn(conn::read_lane(ctx.clone(), peer.clone(), conn.clone(), recv, Lane::Message));
    let control_reader = tokio::spawn(conn::read_control(ctx.clone(), peer.clone(), conn.clone()));
    let control_writer = tokio::spawn(write_control(ctx.clone(), peer.clone(), conn.clone()));
    let bulk = tokio::spawn(crate::bulk::accept_streams(ctx.clone(), peer.clone(), conn.clone()));
    ctx.stats.connections.inc();
    peer.conn.send_replace(Some(conn.clone()));
    Live {
        conn,
        send,
        incarnation,
        dialed_by_me,
        since: Instant::now(),
        _tasks: [TaskGuard(reader), TaskGuard(control_reader), TaskGuard(control_writer), TaskGuard(bulk)],
    }
}

async fn up(ctx: &Ctx, peer: &PeerHandle, l: &Live) {
    report(ctx, Event::PeerUp { node: peer.node, incarnation: l.incarnation }).await;
}

async fn down(ctx: &Ctx, peer: &PeerHandle, l: Live, reason: DownReason) {
    peer.conn.send_replace(None);
    peer.cert_not_after.store(0, Ordering::Relaxed);
    l.conn.close(CLOSE_REPLACED.into(), b"closed");
    report(ctx, Event::PeerDown { node: peer.node, incarnation: l.incarnation, reason }).await;
}

/// Payloads shorter than this are copied next to their header into shared chunks of about
/// `CHUNK_BYTES`; longer ones are handed to quinn as chunks of their own, without a copy.
///
/// Why copy at all: quinn 0.11 keeps a stream's unacknowledged bytes as the list of chunks
/// it was given, and finds the bytes of every packet it builds by walking that list from
/// its start (`SendBuffer::get`), so each packet costs a step per chunk in flight. With
/// 8 KiB frames handed over as header and payload, a full 8 MiB connection window is some
/// 2,000 chunks, walked for each 1452-byte packet: 11% of the CPU of the net bench's
/// 1452-byte run. Gathered into 64 KiB chunks, the copy costs 3% and the walk 2%
/// (BENCHMARKS.md, Transport).
const COPY_MAX: usize = 64 * 1024;
/// Size of the chunks the copied frames are gathered into (a frame is never split, so one
/// holds at most `HEADER_LEN + COPY_MAX - 1` bytes when that is more). Below glibc's
/// default mmap threshold (128 KiB), so a chunk is not a fresh mapping to fault in, and an
/// 8 MiB window holds about 128 of them: a short walk for quinn.
const CHUNK_BYTES: usize = 64 * 1024;

/// Writes the control lane of connection `conn`: opens its stream, then writes what the
/// peer's control queue holds as it comes, until the stream fails (the frames of a failed
/// write are reported dropped) or the connection is replaced (the task is aborted).
///
/// A peer that grants no unidirectional stream within the connect timeout (a build from
/// before the control lane) gets its control frames on the message lane instead, where the
/// receiver takes them as ordinary frames.
async fn write_control(ctx: Arc<Ctx>, peer: Arc<PeerHandle>, conn: quinn::Connection) {
    let mut send = match tokio::time::timeout(ctx.cfg.connect_timeout, conn.open_uni()).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => return,
        Err(_) => loop {
            for (tag, payload) in peer.take_control_batch() {
                if peer.enqueue(&ctx.cfg, tag, payload).is_err() {
                    let e =
                        Event::Dropped { to: peer.node, tags: vec![tag], reason: DropReason::ConnectionLost };
                    report(&ctx, e).await;
                }
            }
            peer.control_wake.notified().await;
        },
    };
    let _ = send.set_priority(CONTROL_PRIORITY);
    loop {
        let batch = peer.take_control_batch();
        if batch.is_empty() {
            peer.control_wake.notified().await;
            continue;
        }
        if !write_batch(&ctx, &mut send, &batch).await {
            let tags = batch.iter().map(|(t, _)| *t).collect();
            report(&ctx, Event::Dropped { to: peer.node, tags, reason: DropReason::ConnectionLost }).await;
            return;
        }
    }
}

/// Writes one batch as consecutive frames in one write (see [`gather`]). Returns false if
/// the stream failed.
async fn write_batch(ctx: &Ctx, send: &mut quinn::SendStream, batch: &[(u64, Bytes)]) -> bool {
    let (mut chunks, total) = gather(batch);
    if send.write_all_chunks(&mut chunks).await.is_err() {
        return false;
    }
    ctx.stats.frames_sent.add(batch.len() as u64);
    ctx.stats.bytes_sent.add(total as u64);
    true
}

/// The chunks that carry a batch as consecutive frames, and their total length: the headers
/// and the payloads under `COPY_MAX` copied into chunks of about `CHUNK_BYTES`, larger
/// payloads as chunks of their own (not copied).
fn gather(batch: &[(u64, Bytes)]) -> (Vec<Bytes>, usize) {
    // The bytes of a frame that are copied: its header, and its payload if small.
    let copied = |p: &Bytes| HEADER_LEN + if p.len() < COPY_MAX { p.len() } else { 0 };
    let mut total = 0;
    // Bytes still to be copied, from the current frame on.
    let mut to_copy = 0;
    let mut large = 0;
    for (_, p) in batch {
        total += HEADER_LEN + p.len();
        to_copy += copied(p);
        large += usize::from(p.len() >= COPY_MAX);
    }
    let mut buf = BytesMut::new();
    let mut chunks = Vec::with_capacity(2 * large + to_copy / CHUNK_BYTES + 1);
    for (_, p) in batch {
        let need = copied(p);
        if buf.len() + need > buf.capacity() {
            if !buf.is_empty() {
                chunks.push(buf.freeze());
            }
            buf = BytesMut::with_capacity(need.max(to_copy.min(CHUNK_BYTES)));
        }
        to_copy -= need;
        buf.put_slice(&encode_header(FrameKind::Data, p.len()));
        if p.len() < COPY_MAX {
            buf.put_slice(p);
        } else {
            chunks.push(buf.split().freeze());
            chunks.push(p.clone());
        }
    }
    if !buf.is_empty() {
        chunks.push(buf.freeze());
    }
    (chunks, total)
}

async fn dial(ctx: &Arc<Ctx>, peer: &Arc<PeerHandle>) -> Result<Live, DialError> {
    let addr = (*peer.addr.lock().unwrap_or_else(|e| e.into_inner())).ok_or(DialError::NoAddress)?;
    if !ctx.policy.allows(peer.node) {
        return Err(DialError::NotAllowed);
    }
    let attempt = async {
        let connecting = ctx
            .endpoint
            .connect_with(ctx.client_config(), addr, &node_server_name(peer.node))
            .map_err(|_| DialError::Failed)?;
        let conn = connecting.await.map_err(|_| DialError::Failed)?;
        let not_after = conn
            .peer_identity()
            .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
            .and_then(|chain| chain.first().and_then(|c| LeafInfo::parse(c)))
            .map(|l| l.not_after);
        let (mut send, mut recv) = conn.open_bi().await.map_err(|_| DialError::Failed)?;
        let hello = Hello { from: ctx.me, incarnation: ctx.incarnation, to: peer.node };
        send.write_all(&hello.encode()).await.map_err(|_| DialError::Failed)?;
        let reply = match conn::read_frame(&mut recv, 64).await {
            Ok(f) => HelloReply::decode(&f).map_err(|_| DialError::Failed)?,
            Err(_) => {
                // A refusal may arrive only as the close code.
                if let Some(quinn::ConnectionError::ApplicationClosed(c)) = conn.close_reason() {
                    let code = c.error_code.into_inner();
                    if code == (CLOSE_REJECT_BASE + RejectReason::Duplicate as u32) as u64 {
                        return Err(DialError::Rejected(RejectReason::Duplicate));
                    }
                }
                return Err(DialError::Failed);
            }
        };
        match reply {
            HelloReply::Ack { incarnation } => {
                peer.cert_not_after.store(to_secs(not_after), Ordering::Relaxed);
                Ok(install(ctx, peer, conn, send, recv, incarnation, true))
            }
            HelloReply::Reject(r) => Err(DialError::Rejected(r)),
        }
    };
    match tokio::time::timeout(ctx.cfg.connect_timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(DialError::Failed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NetConfig;

    /// A batch of every size class: empty, small, around a chunk, and above `COPY_MAX`.
    fn mixed_batch() -> Vec<(u64, Bytes)> {
        let sizes = [
            0,
            1,
            100,
            8192,
            8192,
            CHUNK_BYTES - 3,
            70_000,
            5,
            COPY_MAX - 1,
            COPY_MAX,
            8192,
            3 * COPY_MAX,
            0,
        ];
        let mut batch = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            batch.push((i as u64, Bytes::from((0..*n).map(|b| (b as u8) ^ (i as u8)).collect::<Vec<u8>>())));
        }
        for i in 0..200u64 {
            batch.push((100 + i, Bytes::from(vec![i as u8; 8192])));
        }
        batch
    }

    #[test]
    fn gather_carries_every_frame_in_order_in_few_bounded_chunks() {
        let batch = mixed_batch();
        let (chunks, total) = gather(&batch);
        // The concatenation is exactly the frames, header then payload, in order.
        let mut want = Vec::new();
        for (_, p) in &batch {
            want.extend_from_slice(&encode_header(FrameKind::Data, p.len()));
            want.extend_from_slice(p);
        }
        let got: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(total, want.len());
        assert!(got == want, "the chunks do not carry the batch's frames");
        // Payloads of COPY_MAX and more are handed over as they are, without a copy.
        for (_, p) in batch.iter().filter(|(_, p)| p.len() >= COPY_MAX) {
            assert!(
                chunks.iter().any(|c| c.as_ptr() == p.as_ptr() && c.len() == p.len()),
                "large payload copied"
            );
        }
        // Copied chunks stay within their bound, and the 8 KiB frames share chunks: far
        // fewer chunks than frames (quinn walks them for every packet).
        let bound = CHUNK_BYTES.max(HEADER_LEN + COPY_MAX - 1);
        for c in chunks
            .iter()
            .filter(|c| !batch.iter().any(|(_, p)| p.len() >= COPY_MAX && p.as_ptr() == c.as_ptr()))
        {
            assert!(c.len() <= bound, "copied chunk of {} bytes", c.len());
        }
        assert!(chunks.len() < 50, "{} chunks for {} frames", chunks.len(), batch.len());
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_resets() {
        let mut c = NetConfig::new(1);
        c.backoff_initial = Duration::from_millis(10);
        c.backoff_max = Duration::from_millis(100);
        let mut b = Backoff::new(&c.validate().unwrap(), 42);
        let mut step = Duration::from_millis(10);
        let mut delays = Vec::new();
        for _ in 0..10 {
            let d = b.step();
            assert!(d >= step / 2 && d <= step, "{d:?} outside [{:?}, {step:?}]", step / 2);
            delays.push(d);
            step = (step * 2).min(Duration::from_millis(100));
        }
        assert!(delays[6..].iter().any(|d| *d > Duration::from_millis(50)), "never reached the cap");
        b.reset();
        assert!(b.step() <= Duration::from_millis(10));
    }

    #[test]
    fn losses_of_short_lived_connections_back_off_and_a_stable_one_resets() {
        let mut c = NetConfig::new(1);
        c.backoff_initial = Duration::from_millis(10);
        c.backoff_max = Duration::from_millis(100);
        let mut b = Backoff::new(&c.validate().unwrap(), 7);
        // Connections lost right after they came up: the delays grow as for failed dials.
        let mut step = Duration::from_millis(10);
        for _ in 0..6 {
            let now = Instant::now();
            let d = b.after_loss(now).saturating_duration_since(now);
            assert!(d >= step / 2, "{d:?} below {:?}", step / 2);
            step = (step * 2).min(Duration::from_millis(100));
        }
        // A connection that stayed up for backoff_max: its loss restarts from the first step.
        let since = Instant::now() - Duration::from_millis(100);
        let now = Instant::now();
        assert!(b.after_loss(since).saturating_duration_since(now) <= Duration::from_millis(11));
    }
}
