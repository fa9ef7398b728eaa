//! Received coalesced heartbeats and heartbeat answers on a worker (`Cmd::Heartbeats`: its
//! share of a `WireItem::Heartbeats` / `WireItem::HeartbeatAcks`), stepped entry by entry
//! into their groups without building a `Message` each (`Raft::step_heartbeat`,
//! `Raft::step_heartbeat_response`).
//!
//! Owns that loop only. Each entry passes exactly the checks `step` (`lifecycle`) applies
//! to the whole message, in the same order: nothing once the engine failed; an entry for a
//! group not hosted here takes `step` itself with the message built (a heartbeat may
//! create the replica); one from a replica this member's configuration removed is answered
//! with a tombstone (`answer_removed`); one whose sender replica lives on another node
//! than the sending node is dropped and counted (`Group::check_sender`); the group is
//! credited its idle ticks and the clock, stepped and touched. Never adds a rule.

use super::gc;
use super::group::SenderCheck;
use super::shared::bump;
use super::store::WalStore;
use super::worker::Worker;
use crate::raft::error::StepError;
use crate::raft::message::{Message, MessageBody};
use crate::raft::types::{NodeId, ReplicaId};
use crate::raft::Raft;
use crate::transport::{HeartbeatAck, HeartbeatEntry};

impl Worker {
    /// Steps heartbeats and then answers received from node `from`, in order.
    pub(super) fn step_heartbeats(
        &mut self,
        from: NodeId,
        heartbeats: Vec<HeartbeatEntry>,
        acks: Vec<HeartbeatAck>,
    ) {
        let max_peers = self.sh.cfg.get().max_learned_peers;
        for h in heartbeats {
            let hosted = self.step_entry(from, h.group, h.from, max_peers, "Heartbeat", |r| {
                r.step_heartbeat(h.from, h.to, h.term, h.commit, h.round, h.quiesce)
            });
            if !hosted {
                let body = MessageBody::Heartbeat { commit: h.commit, round: h.round, quiesce: h.quiesce };
                self.step(from, h.group, Message { from: h.from, to: h.to, term: h.term, body });
            }
        }
        for a in acks {
            let hosted = self.step_entry(from, a.group, a.from, max_peers, "HeartbeatResponse", |r| {
                r.step_heartbeat_response(a.from, a.to, a.term, a.round)
            });
            if !hosted {
                let body = MessageBody::HeartbeatResponse { round: a.round };
                self.step(from, a.group, Message { from: a.from, to: a.to, term: a.term, body });
            }
        }
    }

    /// One entry from replica `sender` of `group` on node `from`, handed to Raft by
    /// `raft_step` once it passed the checks of `step`. Returns `false`, having done
    /// nothing, if the group is not hosted here (the caller takes `step`).
    fn step_entry(
        &mut self,
        from: NodeId,
        group: u64,
        sender: ReplicaId,
        max_peers: usize,
        kind: &'static str,
        raft_step: impl FnOnce(&mut Raft<WalStore>) -> Result<(), StepError>,
    ) -> bool {
        if self.failed {
            return true;
        }
        let Some(g) = self.groups.get_mut(&group) else { return false };
        if gc::removed_by(g.raft.conf(), g.raft.id(), sender) {
            // Answered with a tombstone, not stepped (as `step`).
            self.answer_removed(from, group, sender);
            return true;
        }
        let check = g.check_sender(sender, from, max_peers);
        if check != SenderCheck::Ok {
            bump(&self.sh.counters.dropped_wrong_sender);
            tracing::debug!(
                group,
                replica = sender,
                node = from,
                ?check,
                kind,
                "message dropped: its sender replica is not on the sending node"
            );
            return true;
        }
        Self::credit_idle(g, self.ticks);
        if let Err(e) = raft_step(&mut g.raft) {
            tracing::debug!("group {group}: message refused: {e}");
        }
        Self::wake_if_commit_waits(&mut self.writes, group, &g.raft);
        Self::touch(&mut self.touched, g);
        true
    }
}
