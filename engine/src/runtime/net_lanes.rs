//! The two queues from the workers to the network thread: a bounded control queue for
//! liveness items (heartbeats, votes, their answers, TimeoutNow and the removal items:
//! [`is_control`]) beside the unbounded data queue, and the order the network thread sends
//! them in (every control batch first, and the control queue taken again after each data
//! batch), so a heartbeat or its answer never waits behind the appends queued before it.
//!
//! Owns the split of one outgoing batch ([`hand_off`]) and the send order
//! ([`send_queued`]). The control queue holds at most [`NET_CONTROL_BATCHES`] batches;
//! when it is full the control items go on the data queue as before (late, never lost),
//! so it is never a way around a memory bound: each control batch is one worker turn's
//! coalesced heartbeats and answers for one node, bounded by the groups that worker
//! hosts. Never decides which lane of the transport an item takes (the network thread
//! still sends control items with `Transport::send_control` whatever queue brought them),
//! never touches a group.

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};

use super::command::NetCmd;
use crate::raft::types::NodeId;
use crate::transport::{is_control, Transport, TransportError, TransportSender, WireItem};

/// Batches the control queue holds at most (then control items go on the data queue).
pub(super) const NET_CONTROL_BATCHES: usize = 1024;

/// Hands one worker's batch for node `to` to the network thread: its control items on
/// `control` (on `data` when `control` is full), the rest on `data`. Returns how many
/// control items went on the data queue because the control queue was full.
pub(super) fn hand_off(
    control: &Sender<NetCmd>,
    data: &Sender<NetCmd>,
    to: NodeId,
    items: Vec<WireItem>,
) -> usize {
    let (ctl, rest): (Vec<WireItem>, Vec<WireItem>) = items.into_iter().partition(is_control);
    let mut spilled = 0;
    if !ctl.is_empty() {
        match control.try_send(NetCmd::Send { to, items: ctl }) {
            Ok(()) => {}
            Err(TrySendError::Full(cmd) | TrySendError::Disconnected(cmd)) => {
                if let NetCmd::Send { items, .. } = &cmd {
                    spilled = items.len();
                }
                let _ = data.send(cmd);
            }
        }
    }
    if !rest.is_empty() {
        let _ = data.send(NetCmd::Send { to, items: rest });
    }
    spilled
}

/// Sends one batch, its control items on the control lane and the rest on the data lane.
pub(super) fn send_batch(transport: &dyn Transport, to: NodeId, items: Vec<WireItem>) {
    split_send(to, items, |c| transport.send_control(to, 0, c), |d| transport.send(to, 0, d));
}

/// Sends one batch from a worker's own thread through the transport's `sender`, split by
/// lane as [`send_batch`] does (`EngineConfig::direct_network`: no network-thread hop).
pub(super) fn send_direct(sender: &dyn TransportSender, to: NodeId, items: Vec<WireItem>) {
    split_send(to, items, |c| sender.send_control(to, 0, c), |d| sender.send(to, 0, d));
}

/// Splits `items` by lane and sends each part with its function; a failed send is
/// logged only (Raft retries; the transport reports drops as events).
fn split_send(
    to: NodeId,
    items: Vec<WireItem>,
    control: impl Fn(&[WireItem]) -> Result<(), TransportError>,
    data: impl Fn(&[WireItem]) -> Result<(), TransportError>,
) {
    let (ctl, rest): (Vec<WireItem>, Vec<WireItem>) = items.into_iter().partition(is_control);
    if !ctl.is_empty() {
        if let Err(e) = control(&ctl) {
            tracing::debug!("control send to node {to} failed: {e}");
        }
    }
    if !rest.is_empty() {
        if let Err(e) = data(&rest) {
            tracing::debug!("send to node {to} failed: {e}");
        }
    }
}

/// Sends every batch on the control queue (the network thread also calls it between
/// received events, so answers to them leave at once).
pub(super) fn send_control_queued(transport: &dyn Transport, control: &Receiver<NetCmd>) {
    while let Ok(cmd) = control.try_recv() {
        // Only `hand_off` feeds the control queue, and only with sends.
        if let NetCmd::Send { to, items } = cmd {
            send_batch(transport, to, items);
        }
    }
}

/// What [`send_queued`] found at the end.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Queued {
    /// Both queues are empty.
    Drained,
    /// `NetCmd::Stop`, or every sender of the data queue is gone: the thread ends.
    Stop,
}

/// Sends everything queued: every control batch first, then the data batches one at a
/// time, taking every control batch queued meanwhile before the next one. Commands other
/// than `Send` on the data queue (snapshots) go to `other`.
pub(super) fn send_queued(
    transport: &dyn Transport,
    control: &Receiver<NetCmd>,
    data: &Receiver<NetCmd>,
    mut other: impl FnMut(NetCmd),
) -> Queued {
    loop {
        send_control_queued(transport, control);
        match data.try_recv() {
            Ok(NetCmd::Send { to, items }) => send_batch(transport, to, items),
            Ok(NetCmd::Stop) | Err(TryRecvError::Disconnected) => return Queued::Stop,
            Ok(cmd) => other(cmd),
            Err(TryRecvError::Empty) => {
                if control.is_empty() {
                    return Queued::Drained;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use crossbeam_channel::{bounded, unbounded};

    use super::*;
    use crate::raft::message::{Entry, EntryPayload, Message, MessageBody};
    use crate::transport::{HeartbeatEntry, SnapshotChunks, TransportError, TransportEvent};

    /// Records each send, in order: (control lane?, items); optionally queues one more
    /// control batch on `inject` when the data send numbered `inject_after` happens.
    struct Recorder {
        sent: Mutex<Vec<(bool, Vec<WireItem>)>>,
        inject: Option<(Sender<NetCmd>, usize)>,
    }

    impl Transport for Recorder {
        fn node_id(&self) -> NodeId {
            1
        }

        fn send(&self, _to: NodeId, _tag: u64, items: &[WireItem]) -> Result<(), TransportError> {
            let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
            sent.push((false, items.to_vec()));
            let data_sends = sent.iter().filter(|(c, _)| !c).count();
            if let Some((tx, n)) = &self.inject {
                if data_sends == *n {
                    tx.send(NetCmd::Send { to: 2, items: vec![heartbeats(99)] }).unwrap();
                }
            }
            Ok(())
        }

        fn send_control(&self, _to: NodeId, _tag: u64, items: &[WireItem]) -> Result<(), TransportError> {
            self.sent.lock().unwrap_or_else(|e| e.into_inner()).push((true, items.to_vec()));
            Ok(())
        }

        fn send_snapshot(&self, _: NodeId, _: u64, _: u64, _: SnapshotChunks) -> Result<(), TransportError> {
            Ok(())
        }

        fn recv_timeout(&mut self, _timeout: Duration) -> Option<TransportEvent> {
            None
        }
    }

    fn heartbeats(group: u64) -> WireItem {
        WireItem::Heartbeats(vec![HeartbeatEntry {
            group,
            from: 1,
            to: 2,
            term: 3,
            commit: 10,
            round: 4,
            quiesce: false,
        }])
    }

    fn append(group: u64, index: u64) -> WireItem {
        let entry = Entry { index, term: 3, payload: EntryPayload::Normal(vec![7u8; 256].into()) };
        let msg = Message {
            from: 1,
            to: 2,
            term: 3,
            body: MessageBody::Append {
                prev_index: index - 1,
                prev_term: 3,
                entries: vec![entry],
                commit: 0,
            },
        };
        WireItem::Msg { group, msg }
    }

    /// A heartbeat round handed off after a backlog of 100 append batches is the first
    /// thing sent, on the control lane; the appends follow in their order.
    #[test]
    fn a_heartbeat_behind_a_backlog_of_appends_is_sent_first() {
        let (ctl_tx, ctl_rx) = bounded(NET_CONTROL_BATCHES);
        let (data_tx, data_rx) = unbounded();
        for i in 1..=100 {
            assert_eq!(hand_off(&ctl_tx, &data_tx, 2, vec![append(i, i)]), 0);
        }
        // One worker turn's batch: an append and the heartbeat round together.
        assert_eq!(hand_off(&ctl_tx, &data_tx, 2, vec![append(101, 101), heartbeats(7)]), 0);
        let t = Recorder { sent: Mutex::new(Vec::new()), inject: None };
        let mut others = 0;
        assert_eq!(send_queued(&t, &ctl_rx, &data_rx, |_| others += 1), Queued::Drained);
        let sent = t.sent.into_inner().unwrap();
        assert_eq!(sent.len(), 102);
        assert_eq!(sent[0], (true, vec![heartbeats(7)]), "the heartbeat goes first");
        for (i, (control, items)) in sent[1..].iter().enumerate() {
            let i = i as u64 + 1;
            assert!(!control);
            assert_eq!(items, &vec![append(i, i)], "the appends keep their order");
        }
        assert_eq!(others, 0);
    }

    /// A control batch queued while the backlog is being sent goes out before the next
    /// data batch, not after the backlog.
    #[test]
    fn a_heartbeat_queued_during_a_backlog_overtakes_the_rest_of_it() {
        let (ctl_tx, ctl_rx) = bounded(NET_CONTROL_BATCHES);
        let (data_tx, data_rx) = unbounded();
        for i in 1..=50 {
            hand_off(&ctl_tx, &data_tx, 2, vec![append(i, i)]);
        }
        let t = Recorder { sent: Mutex::new(Vec::new()), inject: Some((ctl_tx.clone(), 3)) };
        assert_eq!(send_queued(&t, &ctl_rx, &data_rx, |_| {}), Queued::Drained);
        let sent = t.sent.into_inner().unwrap();
        assert_eq!(sent.len(), 51);
        assert_eq!(sent[3], (true, vec![heartbeats(99)]), "sent right after the 3rd append");
        assert!(sent.iter().enumerate().all(|(i, (c, _))| *c == (i == 3)));
    }

    /// The control queue is bounded: once full, control items go on the data queue (later,
    /// not lost), and the data queue still gets the data items.
    #[test]
    fn a_full_control_queue_spills_to_the_data_queue() {
        let (ctl_tx, ctl_rx) = bounded(1);
        let (data_tx, data_rx) = unbounded();
        assert_eq!(hand_off(&ctl_tx, &data_tx, 2, vec![heartbeats(1)]), 0);
        assert_eq!(hand_off(&ctl_tx, &data_tx, 2, vec![heartbeats(2), append(3, 1)]), 1);
        assert_eq!(ctl_rx.len(), 1);
        let data: Vec<Vec<WireItem>> = data_rx
            .try_iter()
            .map(|c| match c {
                NetCmd::Send { items, .. } => items,
                _ => panic!("only sends"),
            })
            .collect();
        assert_eq!(data, vec![vec![heartbeats(2)], vec![append(3, 1)]]);
    }

    /// `Stop` on the data queue ends the thread; snapshots go to `other`.
    #[test]
    fn stop_ends_and_other_commands_are_handed_back() {
        let (_ctl_tx, ctl_rx) = bounded::<NetCmd>(4);
        let (data_tx, data_rx) = unbounded();
        data_tx.send(NetCmd::Stop).unwrap();
        let t = Recorder { sent: Mutex::new(Vec::new()), inject: None };
        assert_eq!(send_queued(&t, &ctl_rx, &data_rx, |_| {}), Queued::Stop);
        drop(data_tx);
        assert_eq!(send_queued(&t, &ctl_rx, &data_rx, |_| {}), Queued::Stop, "disconnected");
    }
}
