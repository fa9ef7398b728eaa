//! A follower's append acknowledgements, sent the moment their WAL write is durable by
//! the thread that made it so (the WAL's writer, or the worker itself when it wrote
//! inline: `flotilla_wal::OnDurable`), instead of after the worker wakes to the write's
//! ticket. That takes one thread hand-over (the WAL writer waking the worker) off the
//! path of every commit that waits for a follower (issue 16 point 5).
//! `EngineConfig::acks_when_durable` turns it off.
//!
//! Owns which persisted messages go this way ([`goes_when_durable`]: acknowledgements of
//! appends, those for another node), the list a batch collects, and the hook that sends
//! them (through the transport's sender where the workers send directly, else on the
//! network thread's queues, as the worker would; what a hook holds is one write's
//! acknowledgements, bounded by the worker's writes in flight, and the queues are the
//! worker's own). Never sends before durability: the WAL runs the
//! hook only after the batch's sync succeeded (after every batch submitted before it),
//! and drops it unrun when the write fails. Never touches a group: its `on_persisted`
//! still runs on the worker afterwards, and every other persisted message (a vote, an
//! answer to a snapshot) still goes from the worker.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crossbeam_channel::Sender;
use flotilla_wal::OnDurable;

use super::command::NetCmd;
use super::shared::bump_by;
use crate::raft::message::{Message, MessageBody};
use crate::raft::types::NodeId;
use crate::transport::{TransportSender, WireItem};

/// Whether a persisted message goes out from the durability hook (to another node): an
/// answer to an append (accepted or rejected). Such an answer says only what is durable
/// in this replica's log, which is exactly what the hook waits for; the group's later
/// state cannot make it untrue.
pub(super) fn goes_when_durable(m: &Message) -> bool {
    matches!(m.body, MessageBody::AppendResponse { .. })
}

/// Where the hook sends: the transport's sender (the workers send directly), or the
/// network thread's queues (`net_lanes::hand_off`).
#[derive(Clone)]
enum Path {
    Direct(Arc<dyn TransportSender>),
    Queued { control: Sender<NetCmd>, data: Sender<NetCmd> },
}

/// Builds the durability hooks of one worker's writes.
#[derive(Clone)]
pub(super) struct DurableAcks {
    path: Path,
    /// Messages sent by hooks (`Metrics::acks_sent_when_durable`).
    sent: Arc<AtomicU64>,
}

impl DurableAcks {
    /// Hooks that send through `sender` when there is one, else on the network thread's
    /// `control` and `data` queues; each counts what it sent in `sent`.
    pub(super) fn new(
        sender: Option<Arc<dyn TransportSender>>,
        control: Sender<NetCmd>,
        data: Sender<NetCmd>,
        sent: Arc<AtomicU64>,
    ) -> DurableAcks {
        let path = match sender {
            Some(s) => Path::Direct(s),
            None => Path::Queued { control, data },
        };
        DurableAcks { path, sent }
    }

    /// The hook that sends `msgs` ((destination node, group, message), in the order the
    /// worker produced them) once their write is durable.
    pub(super) fn hook(&self, msgs: Vec<(NodeId, u64, Message)>) -> OnDurable {
        let this = self.clone();
        Box::new(move || this.send(msgs))
    }

    /// Sends `msgs`, one batch per destination node (each node's messages in order).
    fn send(&self, mut msgs: Vec<(NodeId, u64, Message)>) {
        // Crash tests: durable, nothing acknowledged or sent for it yet.
        fail::fail_point!("engine::after_fsync_before_send");
        bump_by(&self.sent, msgs.len() as u64);
        // Stable: each node's messages keep their order.
        msgs.sort_by_key(|(to, ..)| *to);
        let mut msgs = msgs.into_iter().peekable();
        while let Some((to, group, msg)) = msgs.next() {
            let mut items = vec![WireItem::Msg { group, msg }];
            while let Some((_, group, msg)) = msgs.next_if(|(t, ..)| *t == to) {
                items.push(WireItem::Msg { group, msg });
            }
            match &self.path {
                Path::Direct(s) => super::net_lanes::send_direct(&**s, to, items),
                Path::Queued { control, data } => {
                    super::net_lanes::hand_off(control, data, to, items);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use crossbeam_channel::unbounded;

    use super::*;

    fn ack(index: u64) -> Message {
        let body = MessageBody::AppendResponse { index, reject: false, reject_hint: 0, hint_term: 0 };
        Message { from: 1, to: 2, term: 3, body }
    }

    #[test]
    fn only_append_answers_go_when_durable() {
        assert!(goes_when_durable(&ack(5)));
        let vote = Message {
            from: 1,
            to: 2,
            term: 3,
            body: MessageBody::RequestVoteResponse {
                pre_vote: false,
                reject: false,
                commit: 0,
                commit_term: 0,
            },
        };
        assert!(!goes_when_durable(&vote), "a vote stays with the worker");
    }

    #[test]
    fn a_hook_sends_one_batch_per_node_in_order_and_counts_the_messages() {
        let (ctl_tx, ctl_rx) = unbounded();
        let (data_tx, data_rx) = unbounded();
        let sent = Arc::new(AtomicU64::new(0));
        let acks = DurableAcks::new(None, ctl_tx, data_tx, sent.clone());
        let hook = acks.hook(vec![(3, 10, ack(1)), (2, 11, ack(2)), (3, 12, ack(3))]);
        assert!(data_rx.is_empty(), "nothing goes before the hook runs");
        hook();
        let mut got: Vec<(NodeId, Vec<(u64, u64)>)> = data_rx
            .try_iter()
            .map(|c| match c {
                NetCmd::Send { to, items } => (
                    to,
                    items
                        .into_iter()
                        .map(|i| match i {
                            WireItem::Msg {
                                group,
                                msg: Message { body: MessageBody::AppendResponse { index, .. }, .. },
                            } => (group, index),
                            _ => panic!("not an acknowledgement"),
                        })
                        .collect(),
                ),
                _ => panic!("not a send"),
            })
            .collect();
        got.sort();
        assert_eq!(got, vec![(2, vec![(11, 2)]), (3, vec![(10, 1), (12, 3)])]);
        assert!(ctl_rx.is_empty(), "acknowledgements are data, not control");
        assert_eq!(sent.load(Ordering::Relaxed), 3);
    }
}
