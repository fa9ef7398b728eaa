//! Leadership under a saturating write load (issue 16 point 2): three engines over real
//! QUIC on loopback with the default tick (10 ms, so the default 100–200 ms election
//! timeout), 24 groups led evenly by the three, 4 client threads keeping 1,024 proposals
//! of 256 bytes each in flight as fast as the engines take them for 3 s; every group keeps
//! its leader and its term throughout (checked every 50 ms and at the end), no proposal is
//! answered `NotLeader` and no replica wins a leadership. With the cargo feature
//! `failpoints`, a second phase repeats it with node 3's workers slowed on data.
//! Heartbeats, votes and their answers travel on the control lanes (the network thread's
//! control queue, the transport's control stream, the workers' control mailboxes), so
//! they do not wait behind the appends. Throughput is printed, never asserted.
#![allow(clippy::unwrap_used, missing_docs)]

mod common_engine;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common_engine::*;
use flotilla_engine::api::*;
use flotilla_engine::raft::NodeId;

const GROUPS: u64 = 24;
/// Client threads, each with `WINDOW` proposals in flight on its share of the groups.
const CLIENTS: u64 = 4;
const WINDOW: usize = 1024;
const LOAD: Duration = Duration::from_secs(3);
/// Bytes per proposal.
const PAYLOAD: usize = 256;
/// Node 3's sleep per MiB of entry data stepped, in the slowed phase (failpoints only).
#[cfg(feature = "failpoints")]
const SLOW_MS: u64 = 200;

/// What one client thread saw.
#[derive(Default)]
struct Seen {
    committed: u64,
    not_leader: u64,
    busy: u64,
}

/// Keeps `WINDOW` proposals in flight on `groups` (each at `leader_of(g)`) until `stop`.
fn client(c: &Cluster, groups: &[u64], leader_of: &[NodeId], stop: &AtomicBool) -> Seen {
    let mut seen = Seen::default();
    let data = Bytes::from(vec![0x5au8; PAYLOAD]);
    let mut next = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let mut wave = Vec::with_capacity(WINDOW);
        while wave.len() < WINDOW {
            let g = groups[next % groups.len()];
            next += 1;
            match c.engine(leader_of[g as usize]).propose(g, data.clone()) {
                Ok(p) => wave.push(p),
                Err(ProposeError::NotLeader { .. }) => seen.not_leader += 1,
                Err(ProposeError::Busy(_)) => {
                    seen.busy += 1;
                    break;
                }
                Err(e) => panic!("group {g}: {e}"),
            }
        }
        if wave.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        for p in wave {
            if matches!(p.wait_timeout(Duration::from_secs(30)), Ok(Ok(_))) {
                seen.committed += 1;
            }
        }
    }
    seen
}

/// Each group's (node, term, still leading) as the node that led it at the start reports.
fn leaderships(c: &Cluster, leader_of: &[NodeId]) -> Vec<(NodeId, u64, bool)> {
    (1..=GROUPS)
        .map(|g| {
            let l = leader_of[g as usize];
            let s = c.engine(l).group_status(g).unwrap();
            (l, s.term, s.role == flotilla_engine::raft::Role::Leader)
        })
        .collect()
}

/// Runs the load for `LOAD` and asserts that every group kept its leader and term
/// throughout (`what` names the phase in the messages).
fn saturate(c: &Cluster, groups: &[u64], leader_of: &[NodeId], what: &str) {
    let before = leaderships(c, leader_of);
    let elected = |c: &Cluster| (1..=3).map(|n| c.engine(n).metrics().leaders_elected).sum::<u64>();
    let elected_before = elected(c);
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let max_gap = AtomicU64::new(0);
    let seen: Vec<Seen> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|t| {
                let share: Vec<u64> = groups.iter().copied().filter(|g| g % CLIENTS == t).collect();
                let stop = &stop;
                s.spawn(move || client(c, &share, leader_of, stop))
            })
            .collect();
        // Watch the leaders while the load runs: a term change at any moment fails (after
        // the clients stopped, so a failure never leaves them running).
        let mut changed = None;
        while t0.elapsed() < LOAD && changed.is_none() {
            let w = Instant::now();
            let now = leaderships(c, leader_of);
            if now != before {
                changed = Some(now);
            }
            max_gap.fetch_max(w.elapsed().as_millis() as u64, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, Ordering::Relaxed);
        let seen = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(changed, None, "{what}: a leadership changed under load (before: {before:?})");
        seen
    });
    let secs = t0.elapsed().as_secs_f64();
    let committed: u64 = seen.iter().map(|s| s.committed).sum();
    let not_leader: u64 = seen.iter().map(|s| s.not_leader).sum();
    let busy: u64 = seen.iter().map(|s| s.busy).sum();
    eprintln!(
        "{what}: {committed} proposals of {PAYLOAD} B committed in {secs:.1} s ({:.0}/s), {busy} busy \
         refusals, longest status poll {} ms",
        committed as f64 / secs,
        max_gap.load(Ordering::Relaxed)
    );
    assert!(committed > 0, "{what}: the load committed nothing");
    assert_eq!(not_leader, 0, "{what}: proposals refused as NotLeader: a leadership moved");
    assert_eq!(leaderships(c, leader_of), before, "{what}: terms after the load");
    assert_eq!(elected(c), elected_before, "{what}: no replica became leader during the load");
}

#[test]
fn leaders_keep_their_leadership_under_a_saturating_write_load() {
    // The engine's default tick: the election timeout is the default 100-200 ms.
    let c = Cluster::new_quic_tick(3, 100_000, EngineConfig::new(1, std::path::PathBuf::new()).tick_interval);
    let groups: Vec<u64> = (1..=GROUPS).collect();
    create_led(&c, &groups, |g| g % 3 + 1);
    let mut leader_of = vec![0; GROUPS as usize + 1];
    for &g in &groups {
        wait_engine_leads(c.engine(g % 3 + 1), g, Duration::from_secs(30));
        leader_of[g as usize] = g % 3 + 1;
    }
    // Every replica has heard its leader (the first commits are done) before the load.
    for &g in &groups {
        c.propose(g, b"warm");
    }
    saturate(&c, &groups, &leader_of, "saturating load");
    // The same with node 3's workers slowed on data (failpoint `engine::slow_step`: they
    // sleep SLOW_MS per MiB of entry data in each batch of messages they step), so its
    // mailbox backs up with appends: the heartbeats behind them in arrival order are
    // still handled (control mailbox) and answered in time.
    #[cfg(feature = "failpoints")]
    {
        fail::cfg("engine::slow_step", &format!("return(3:{SLOW_MS})")).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            saturate(&c, &groups, &leader_of, "node 3 slow on data")
        }));
        fail::remove("engine::slow_step");
        if let Err(e) = r {
            std::panic::resume_unwind(e);
        }
    }
}
