//! A node's clean stop on SIGTERM or SIGINT, within `shutdown_timeout_ms`:
//! 1. the client port refuses new connections (clients reconnect to other nodes);
//! 2. every leadership this node holds moves to a caught-up voter on another node
//!    (`Engine::transfer_leader`, all groups in parallel, each waited for on the engine's
//!    leader-change events), so no shard waits for an election timeout;
//! 3. the client port drains: requests already received are run, their replies written,
//!    connections closed ([`crate::server::ServeControl`]);
//! 4. the engine shuts down (everything acknowledged is durable).
//!
//! Each step has its share of the bound; a step that does not finish in it is skipped
//! (logged), and the engine still shuts down. [`serve_until_signal`] is what `flotilla-kv`
//! runs; [`install_signal_handlers`] and [`signal_received`] are the signal plumbing.
//!
//! Owns the order of the stop, its bound and the signal flag. Never touches sockets (the
//! client port drains itself) and never decides where requests go.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_engine::api::{GroupStatus, TransferError};
use flotilla_engine::raft::Role;

use crate::node::Node;
use crate::server::{serve_controlled, ServeControl};

/// The first stop signal received (0: none).
static SIGNALLED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop_signal(sig: libc::c_int) {
    // Only an atomic operation: async-signal-safe. The first signal is kept.
    let _ = SIGNALLED.compare_exchange(0, sig, Ordering::Relaxed, Ordering::Relaxed);
}

/// Installs the SIGTERM and SIGINT handlers: each only records the signal
/// ([`signal_received`]).
pub fn install_signal_handlers() -> std::io::Result<()> {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only performs an atomic compare-exchange, which is
        // async-signal-safe; `sa` is fully initialised (zeroed, then the handler, an empty
        // mask and SA_RESTART so no call of the process is interrupted).
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The first SIGTERM or SIGINT received since the handlers were installed, if any.
pub fn signal_received() -> Option<i32> {
    match SIGNALLED.load(Ordering::Relaxed) {
        0 => None,
        s => Some(s),
    }
}

/// The signal's name, for logs.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "signal",
    }
}

/// Why the node stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopCause {
    /// A signal (its number).
    Signal(i32),
    /// The client port's loop ended by itself (its poller failed).
    ServerEnded,
}

/// What a stop did, and what it skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopReport {
    /// Why it stopped.
    pub cause: StopCause,
    /// (group, node) of each leadership handed off.
    pub handed_off: Vec<(u64, u64)>,
    /// Groups still led here when the hand-off ended, and why.
    pub kept: Vec<(u64, String)>,
    /// Every client connection was answered and closed in time.
    pub drained: bool,
    /// The engine shut down within the bound (else the process exits without waiting).
    pub engine_stopped: bool,
    /// How long the stop took.
    pub took: Duration,
    /// The client port's error, if its poller failed.
    pub server_error: Option<String>,
}

/// Shares of the bound: hand-off ends at half of it, the drain at 85%, the engine gets
/// the rest (and at least [`ENGINE_GRACE`]).
const HAND_OFF_SHARE: f64 = 0.5;
const DRAIN_SHARE: f64 = 0.85;
/// The least time the engine's own shutdown is given, even past the bound.
const ENGINE_GRACE: Duration = Duration::from_secs(1);
/// Groups handed off at once (each waits in its own thread).
const PARALLEL_HAND_OFFS: usize = 64;
/// How often the loops below look at the signal flag and the server thread.
const POLL: Duration = Duration::from_millis(20);

/// Serves clients on `listener` until SIGTERM or SIGINT (the handlers must be installed,
/// [`install_signal_handlers`]), then stops as the module describes within the node's
/// `shutdown_timeout`. Also returns if the client port fails by itself (then it stops
/// the same way).
pub fn serve_until_signal(node: Arc<Node>, listener: std::net::TcpListener) -> std::io::Result<StopReport> {
    let ctl = Arc::new(ServeControl::default());
    let (server_node, server_ctl) = (node.clone(), ctl.clone());
    let server = std::thread::Builder::new()
        .name("kv-server".into())
        .spawn(move || serve_controlled(server_node, listener, &server_ctl))?;
    let cause = loop {
        if let Some(sig) = signal_received() {
            break StopCause::Signal(sig);
        }
        if server.is_finished() {
            break StopCause::ServerEnded;
        }
        std::thread::sleep(POLL);
    };
    Ok(stop(node, &ctl, server, cause))
}

/// Stops `node` whose client port runs in `server` under `ctl` (the steps of the module),
/// within the node's `shutdown_timeout` from now.
pub fn stop(
    node: Arc<Node>,
    ctl: &ServeControl,
    server: std::thread::JoinHandle<std::io::Result<()>>,
    cause: StopCause,
) -> StopReport {
    let started = Instant::now();
    let bound = node.config().shutdown_timeout;
    let end = started + bound;
    tracing::info!(node = node.id(), ?cause, bound_ms = bound.as_millis() as u64, "stopping");
    ctl.refuse_new();
    let HandOff { moved: handed_off, kept } =
        hand_off_leaderships(&node, started + bound.mul_f64(HAND_OFF_SHARE));
    for (g, why) in &kept {
        tracing::warn!(group = g, "leadership not handed off: {why}");
    }
    let drain_end = started + bound.mul_f64(DRAIN_SHARE);
    ctl.drain_until(drain_end);
    while !server.is_finished() && Instant::now() < drain_end {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut server_error = None;
    let drained = server.is_finished();
    if drained {
        if let Ok(Err(e)) = server.join() {
            server_error = Some(e.to_string());
        }
    } else {
        tracing::warn!("client connections not drained within the bound: closed unanswered");
    }
    let engine_end = end.max(Instant::now() + ENGINE_GRACE);
    let engine_stopped = shut_engine_down(node, engine_end);
    let report = StopReport {
        cause,
        handed_off,
        kept,
        drained,
        engine_stopped,
        took: started.elapsed(),
        server_error,
    };
    tracing::info!(?report, "stopped");
    report
}

/// Shuts the engine down once this is the last reference to the node (the client port's
/// executors hold theirs until their batch ends), waiting until `end`. Returns whether it
/// finished in time.
fn shut_engine_down(mut node: Arc<Node>, end: Instant) -> bool {
    let node = loop {
        match Arc::try_unwrap(node) {
            Ok(n) => break n,
            Err(shared) if Instant::now() < end => {
                node = shared;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => {
                tracing::warn!("requests still running at the bound: exiting without the engine's shutdown");
                return false;
            }
        }
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name("kv-engine-stop".into()).spawn(move || {
        node.shutdown();
        let _ = tx.send(());
    });
    if spawned.is_err() {
        tracing::warn!("engine shutdown thread not started");
        return false;
    }
    let done = rx.recv_timeout(end.saturating_duration_since(Instant::now())).is_ok();
    if !done {
        tracing::warn!("engine shutdown not finished within the bound");
    }
    done
}

/// What [`hand_off_leaderships`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandOff {
    /// (group, new leader's node) of each leadership moved.
    pub moved: Vec<(u64, u64)>,
    /// Groups still led here, and why.
    pub kept: Vec<(u64, String)>,
}

/// Moves every leadership this node holds to another voter, all groups at once, until
/// `deadline`.
pub fn hand_off_leaderships(node: &Node, deadline: Instant) -> HandOff {
    let led: Vec<GroupStatus> =
        node.engine().status().into_iter().filter(|s| s.role == Role::Leader).collect();
    let (mut moved, mut kept) = (Vec::new(), Vec::new());
    for batch in led.chunks(PARALLEL_HAND_OFFS) {
        let results: Vec<(u64, Result<u64, String>)> = std::thread::scope(|sc| {
            let hs: Vec<_> =
                batch.iter().map(|s| (s.group, sc.spawn(move || hand_off(node, s, deadline)))).collect();
            hs.into_iter()
                .map(|(g, h)| (g, h.join().unwrap_or_else(|_| Err("hand-off thread panicked".into()))))
                .collect()
        });
        for (g, r) in results {
            match r {
                Ok(to) => {
                    tracing::info!(group = g, to, "leadership handed off");
                    moved.push((g, to));
                }
                Err(why) => kept.push((g, why)),
            }
        }
    }
    HandOff { moved, kept }
}

/// The voters of `s` other than `me`, most caught up first (their lag at this leader).
pub fn hand_off_targets(s: &GroupStatus, me: u64) -> Vec<u64> {
    let lag = |n: u64| s.peers.iter().find(|p| p.replica.node == n).map_or(u64::MAX, |p| p.lag);
    let mut v: Vec<(u64, u64)> =
        s.members.voters.iter().filter(|r| r.node != me).map(|r| (lag(r.node), r.node)).collect();
    v.sort_unstable();
    v.into_iter().map(|(_, n)| n).collect()
}

/// Moves the leadership of `s.group` away from this node: to its most caught-up voter,
/// then the next if that one does not take over within two election timeouts, until
/// `deadline`. Returns the new leader's node.
fn hand_off(node: &Node, s: &GroupStatus, deadline: Instant) -> Result<u64, String> {
    let (group, me) = (s.group, node.id());
    let targets = hand_off_targets(s, me);
    if targets.is_empty() {
        return Err("no other voter".into());
    }
    let cfg = node.config();
    let per_try = (cfg.tick * cfg.election_ticks * 2).max(Duration::from_millis(200));
    let watch = node.leader_watch();
    let mut last = String::from("deadline reached before any attempt");
    for to in targets.iter().cycle() {
        if Instant::now() >= deadline {
            break;
        }
        let seen = watch.seen(group);
        match node.engine().leader(group) {
            Some(l) if l.node != me => return Ok(l.node),
            _ if !node.engine().hosts(group) => return Err("replica gone".into()),
            _ => {}
        }
        if let Err(e) = node.engine().transfer_leader(group, *to) {
            if let TransferError::NotLeader { leader_hint } = e {
                // Lost the leadership meanwhile (e.g. check-quorum): nothing left to hand off.
                return Err(format!("no longer leads it (leader hint: {leader_hint:?})"));
            }
            last = format!("transfer to node {to}: {e}");
            // Refused (busy, a membership change pending): wait for a change, briefly.
            let left = deadline.saturating_duration_since(Instant::now());
            watch.wait_change(group, seen, left.min(Duration::from_millis(50)));
            continue;
        }
        let try_end = deadline.min(Instant::now() + per_try);
        loop {
            let seen = watch.seen(group);
            if let Some(l) = node.engine().leader(group).filter(|l| l.node != me) {
                return Ok(l.node);
            }
            let left = try_end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                last = format!("node {to} did not take over in {} ms", per_try.as_millis());
                break;
            }
            watch.wait_change(group, seen, left);
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_engine::api::PeerStatus;
    use flotilla_engine::raft::conf::ConfState;
    use flotilla_engine::raft::types::Replica;

    fn r(node: u64) -> Replica {
        Replica { node, id: node + 10 }
    }

    /// The other voters, most caught up first; learners never; a voter the leader has no
    /// progress for last.
    #[test]
    fn hand_off_targets_are_other_voters_most_caught_up_first() {
        let s = GroupStatus {
            group: 1000,
            replica: 11,
            role: Role::Leader,
            term: 3,
            leader: Some(r(1)),
            commit: 50,
            applied: 50,
            last_index: 50,
            members: ConfState {
                voters: vec![r(1), r(2), r(3), r(4)],
                learners: vec![r(5)],
                ..Default::default()
            },
            peers: vec![
                PeerStatus { replica: r(2), matched: 40, lag: 10 },
                PeerStatus { replica: r(3), matched: 50, lag: 0 },
                PeerStatus { replica: r(5), matched: 50, lag: 0 },
            ],
            load: Default::default(),
        };
        assert_eq!(hand_off_targets(&s, 1), vec![3, 2, 4]);
        let alone = GroupStatus { members: ConfState { voters: vec![r(1)], ..Default::default() }, ..s };
        assert!(hand_off_targets(&alone, 1).is_empty());
    }

    /// The handlers record the first stop signal only.
    #[test]
    fn the_first_stop_signal_is_kept() {
        install_signal_handlers().unwrap();
        assert_eq!(signal_received(), None);
        // SAFETY: raise(3) delivers the signal to this thread; the handler only stores it.
        unsafe {
            libc::raise(libc::SIGINT);
            libc::raise(libc::SIGTERM);
        }
        assert_eq!(signal_received(), Some(libc::SIGINT));
        assert_eq!(signal_name(libc::SIGINT), "SIGINT");
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        // SAFETY: back to the default dispositions, so the test binary stays interruptible.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
        }
    }
}
