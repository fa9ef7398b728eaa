//! The network thread: owns the [`Transport`], sends the batches the workers queue
//! ([`NetCmd`]; the control queue first, also between received events: `net_lanes`),
//! each split by lane (control items, [`is_control`], on `Transport::send_control`; the
//! rest on `send`), and routes what arrives to the workers:
//! Raft messages by group (`route`), the removal items (`WireItem::Tombstone`, `GcProbe`,
//! `TombstoneAck`) and snapshot progress reports (`WireItem::SnapshotProgress`) as their
//! own commands, snapshot-stream outcomes, and peer liveness (down, unreachable, restarted
//! as a new incarnation). Received control items (decided by their content, whatever lane
//! they came on) go to the workers' control mailboxes, which the workers drain first,
//! everything else to their mailboxes; coalesced heartbeats and their answers are never
//! expanded into messages: each worker gets its share of them as a `Cmd::Heartbeats` of
//! compact entries. Each `Cmd::Msgs` and `Cmd::Heartbeats` carries the batch's
//! `InboundHold`, so the bytes stay charged to the sender until the worker has stepped
//! them.
//!
//! It polls the transport (which is `Send` but not `Sync`) without waiting, and when
//! nothing arrived sleeps on the queue of batches the workers queued together with the
//! transport's event signal (`Transport::event_signal`): outgoing batches leave at once,
//! arriving ones wake it, and an idle node's network thread sleeps. A transport with no
//! signal is polled every 200 µs instead.
//!
//! Never touches a group, never blocks on a worker (a full mailbox drops the batch and
//! counts it in `messages_dropped`; Raft retries).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::command::{Cmd, NetCmd};
use super::net_lanes::{send_control_queued, send_queued, Queued};
use super::route::route;
use super::shared::{bump, Shared};
use crate::raft::types::{NodeId, ReplicaId};
use crate::transport::coalescer::{split_inbound, Inbound};
use crate::transport::{is_control, Transport, TransportEvent, WireItem};

/// How long the idle network thread waits for a batch to send before polling the
/// transport again (the most an arriving batch waits).
const NET_POLL: Duration = Duration::from_micros(200);
/// How long the network thread sleeps at most when the transport has an event signal
/// (a safety net only: the signal wakes it).
const NET_IDLE_WAIT: Duration = Duration::from_millis(100);
/// Events handled per network-thread turn before sending again.
const NET_EVENTS_PER_TURN: usize = 256;

/// The network thread's loop; returns on [`NetCmd::Stop`] or when every worker dropped
/// the queue.
pub(super) fn run(
    mut transport: Box<dyn Transport>,
    rx: Receiver<NetCmd>,
    ctl_rx: Receiver<NetCmd>,
    workers: Vec<Sender<Cmd>>,
    control: Vec<Sender<Cmd>>,
    sh: Arc<Shared>,
) {
    let n = workers.len();
    let mut snap_tags: HashMap<u64, (u64, ReplicaId)> = HashMap::new();
    // The last incarnation seen of each peer: a different one means it restarted.
    let mut incarnations: HashMap<NodeId, u64> = HashMap::new();
    let mut next_tag: u64 = 1;
    let signal = transport.event_signal();
    loop {
        // Clear the signal before polling: an event that arrives later sets it again.
        if let Some(s) = &signal {
            while s.try_recv().is_ok() {}
        }
        // Send everything queued, control batches first.
        let queued = send_queued(&*transport, &ctl_rx, &rx, |cmd| {
            if let NetCmd::Snapshot { to, group, replica, chunks } = cmd {
                let tag = next_tag;
                next_tag += 1;
                match transport.send_snapshot(to, tag, group, chunks) {
                    Ok(()) => {
                        snap_tags.insert(tag, (group, replica));
                    }
                    Err(e) => {
                        tracing::warn!("snapshot of group {group} to node {to} refused: {e}");
                        let _ = workers[route(group, n)].try_send(Cmd::SnapshotSent {
                            group,
                            replica,
                            ok: false,
                        });
                    }
                }
            }
        });
        if queued == Queued::Stop {
            return;
        }
        // Receive what has arrived, without waiting: the transport's timed wait may be
        // coarse (1 ms for QUIC) and would hold the sends queued meanwhile.
        let mut got = 0;
        for _ in 0..NET_EVENTS_PER_TURN {
            if !ctl_rx.is_empty() {
                send_control_queued(&*transport, &ctl_rx);
            }
            let Some(ev) = transport.recv_timeout(Duration::ZERO) else { break };
            got += 1;
            match ev {
                TransportEvent::Items { from, items, hold } => {
                    deliver(from, items, hold, &workers, &control, &sh);
                }
                TransportEvent::SnapshotSent { tag, ok, .. } => {
                    if let Some((group, replica)) = snap_tags.remove(&tag) {
                        let _ = workers[route(group, n)].try_send(Cmd::SnapshotSent { group, replica, ok });
                    }
                }
                TransportEvent::Malformed { from, error } => {
                    tracing::warn!("malformed batch from node {from}: {error}");
                }
                TransportEvent::PeerDown { node } => {
                    for w in &workers {
                        let _ = w.try_send(Cmd::PeerUnreachable { node });
                        let _ = w.try_send(Cmd::Liveness { node, restarted: false });
                    }
                }
                TransportEvent::Dropped { to: node, .. } => {
                    for w in &workers {
                        let _ = w.try_send(Cmd::PeerUnreachable { node });
                    }
                }
                TransportEvent::PeerUp { node, incarnation } => {
                    let before = incarnations.insert(node, incarnation);
                    if before.is_some_and(|b| b != incarnation) {
                        for w in &workers {
                            let _ = w.try_send(Cmd::Liveness { node, restarted: true });
                        }
                    }
                }
            }
        }
        if got < NET_EVENTS_PER_TURN {
            // Drained: wait for something to send or (with a signal) something to arrive.
            let mut sel = crossbeam_channel::Select::new();
            sel.recv(&rx);
            sel.recv(&ctl_rx);
            match &signal {
                Some(s) => {
                    sel.recv(s);
                    let _ = sel.ready_timeout(NET_IDLE_WAIT);
                }
                None if got == 0 => {
                    let _ = sel.ready_timeout(NET_POLL);
                }
                None => {}
            }
        }
    }
}

/// Routes one received batch to the workers: removal items as their own commands, control
/// items to the control mailboxes, the rest to the mailboxes, each worker's share of
/// coalesced heartbeats and answers kept compact. Never blocks: a full mailbox drops its
/// part (counted in `messages_dropped`; Raft retries). Called on the network thread, or on
/// the transport's own receiving thread (`Transport::set_items_sink`).
pub(super) fn deliver(
    from: NodeId,
    mut items: Vec<WireItem>,
    hold: crate::transport::InboundHold,
    workers: &[Sender<Cmd>],
    control: &[Sender<Cmd>],
    sh: &Shared,
) {
    let n = workers.len();
    if items.iter().any(|it| {
        matches!(
            it,
            WireItem::Tombstone { .. }
                | WireItem::GcProbe { .. }
                | WireItem::TombstoneAck { .. }
                | WireItem::SnapshotProgress { .. }
        )
    }) {
        items.retain(|it| {
            let Some((group, cmd)) = removal_cmd(from, it) else { return true };
            if control[route(group, n)].try_send(cmd).is_err() {
                bump(&sh.counters.messages_dropped);
            }
            false
        });
    }
    let (ctl, data): (Vec<WireItem>, Vec<WireItem>) = items.into_iter().partition(is_control);
    for (items, to) in [(ctl, &control), (data, &workers)] {
        if items.is_empty() {
            continue;
        }
        // Coalesced heartbeats and answers stay compact: each worker steps
        // its share entry by entry, after the batch's messages.
        for (i, part) in split_inbound(items, n, |g| route(g, n)).into_iter().enumerate() {
            let Inbound { msgs, heartbeats, acks } = part;
            if !msgs.is_empty() && to[i].try_send(Cmd::Msgs { from, msgs, hold: hold.clone() }).is_err() {
                bump(&sh.counters.messages_dropped);
            }
            if (!heartbeats.is_empty() || !acks.is_empty())
                && to[i].try_send(Cmd::Heartbeats { from, heartbeats, acks, hold: hold.clone() }).is_err()
            {
                bump(&sh.counters.messages_dropped);
            }
        }
    }
}

/// The worker command for a removal item received from node `from` (with the group that
/// routes it), or `None` for an item that carries Raft messages.
fn removal_cmd(from: NodeId, item: &WireItem) -> Option<(u64, Cmd)> {
    Some(match *item {
        WireItem::Tombstone { group, replica, conf_index } => {
            (group, Cmd::Tombstone { from, group, replica, conf_index })
        }
        WireItem::TombstoneAck { group, replica } => (group, Cmd::TombstoneAck { from, group, replica }),
        WireItem::GcProbe { group, replica } => (group, Cmd::GcProbe { from, group, replica }),
        WireItem::SnapshotProgress { group, from: replica, to, leader_term, index, term, offset } => {
            (group, Cmd::SnapshotProgress { from, group, replica, to, leader_term, index, term, offset })
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_items_become_their_commands_routed_by_group() {
        let t = WireItem::Tombstone { group: 7, replica: 3, conf_index: 42 };
        match removal_cmd(9, &t) {
            Some((7, Cmd::Tombstone { from: 9, group: 7, replica: 3, conf_index: 42 })) => {}
            _ => panic!("tombstone not extracted"),
        }
        match removal_cmd(9, &WireItem::TombstoneAck { group: 8, replica: 4 }) {
            Some((8, Cmd::TombstoneAck { from: 9, group: 8, replica: 4 })) => {}
            _ => panic!("tombstone ack not extracted"),
        }
        match removal_cmd(9, &WireItem::GcProbe { group: 5, replica: 2 }) {
            Some((5, Cmd::GcProbe { from: 9, group: 5, replica: 2 })) => {}
            _ => panic!("gc probe not extracted"),
        }
    }

    #[test]
    fn raft_items_stay_for_the_group_messages() {
        assert!(removal_cmd(9, &WireItem::Heartbeats(Vec::new())).is_none());
        assert!(removal_cmd(9, &WireItem::HeartbeatAcks(Vec::new())).is_none());
    }
}
