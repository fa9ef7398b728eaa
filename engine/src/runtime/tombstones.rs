//! Removed replicas (TiKV's stale-peer GC): a member that receives a message or a
//! stale-peer probe from a replica its applied configuration removed answers with a
//! `WireItem::Tombstone`; the receiver destroys itself only if the tombstone names its
//! exact replica id and a configuration newer than its own, so a replica cut off during
//! its removal is destroyed once healed; one that sends nothing (quiesced, or a learner)
//! asks in the periodic clean-up pass (`gc_pass`). A leader re-sends tombstones until the
//! removed replica's node confirms (`WireItem::TombstoneAck`, sent only once the tombstone
//! record is durable), then proposes to forget the removal record.
//!
//! A tombstone is believed only from a node hosting a voter of the replica's own applied
//! configuration; from any other node it only makes the replica probe its members.
//!
//! The rules are pure functions in `gc`; this file carries them out. Never destroys a
//! replica on an unproven claim.

use super::command::NetCmd;
use super::gc;
use super::shared::{bump, bump_by};
use super::store::GroupMeta;
use super::worker::Worker;
use crate::raft::conf::{ChangeKind, ConfChange, SingleChange, Transition};
use crate::raft::types::{NodeId, Replica, ReplicaId, Role};
use crate::transport::WireItem;

impl Worker {
    /// Node `from` said `replica` of `group` was removed by its configuration at
    /// `conf_index` (an answer to this replica's messages or probes, or a leader's
    /// re-send). The replica here is destroyed only if the message proves it: it names
    /// this exact replica and a configuration newer than the one applied here (a replica
    /// id is never reused, so a configuration that dropped it never takes it back), and it
    /// comes from a node that hosts a voter of the replica's applied configuration
    /// (`gc::hosts_voter`); from any other node it is not believed, and the replica asks
    /// its members instead (`probe_members`: a member that removed it answers with a
    /// tombstone). A replica that is not here is confirmed to the sender once a durable
    /// tombstone record covers it (`gc::judge_tombstone`); a record is written only for a
    /// sender the admission accepts (`CreatePolicy` and the creation caps).
    pub(super) fn on_tombstone(&mut self, from: NodeId, group: u64, replica: ReplicaId, conf_index: u64) {
        if self.failed || self.stopping {
            return;
        }
        let hosted = self.groups.get(&group).map(|g| (g.raft.id(), g.raft.conf_index()));
        let tombstone =
            self.tombstones.get(&group).map(|&t| (t, !self.tombstones_unsynced.contains_key(&group)));
        match gc::judge_tombstone(hosted, tombstone, self.creating(group), replica, conf_index) {
            gc::Verdict::Destroy => {
                let believed = self.groups.get(&group).is_some_and(|g| gc::hosts_voter(g.raft.conf(), from));
                if !believed {
                    bump(&self.sh.counters.tombstones_unproven);
                    tracing::info!(
                        group,
                        replica,
                        node = from,
                        "tombstone from a node hosting no voter of the replica's configuration: \
                         asking the members"
                    );
                    self.probe_members(group);
                } else if let Some(g) = self.groups.remove(&group) {
                    self.destroy(g);
                }
            }
            gc::Verdict::Ack => {
                let item = WireItem::TombstoneAck { group, replica };
                let _ = self.sh.net.send(NetCmd::Send { to: from, items: vec![item] });
            }
            gc::Verdict::Record => {
                let cfg = self.sh.cfg.get();
                // Only a new record counts (one replacing an older record of the group
                // takes no room, and must not be refused: the older one would let the
                // newer removed replica be created again).
                if !self.tombstones.contains_key(&group) && self.tombstones.len() >= cfg.max_tombstone_records
                {
                    bump(&self.sh.counters.creates_refused);
                    tracing::debug!(
                        group,
                        replica,
                        node = from,
                        "removal record refused: max_tombstone_records"
                    );
                    return;
                }
                if let Err(why) = self.admission.admit(cfg, &cfg.create_policy, group, from, false) {
                    bump(&self.sh.counters.creates_refused);
                    tracing::debug!(group, replica, node = from, ?why, "removal record refused");
                    return;
                }
                tracing::debug!("group {group}: recording the removal of replica {replica} (not hosted)");
                self.writes.batch.set_meta(group, &GroupMeta::Tombstone { replica }.encode());
                self.tombstones.insert(group, replica);
                self.tombstones_unsynced.insert(group, self.writes.next_seq());
            }
            gc::Verdict::Ignore => {
                tracing::debug!(
                    "group {group}: tombstone for replica {replica} at {conf_index} ignored \
                     (hosted {hosted:?}, tombstone {tombstone:?})"
                );
            }
        }
    }

    /// The replica of `group` asks the other nodes of its applied configuration whether it
    /// still belongs to the group (a stale-peer probe, as in the clean-up pass), at most
    /// once per group per tick.
    fn probe_members(&mut self, group: u64) {
        let Some(g) = self.groups.get(&group) else { return };
        if !self.probed.insert(group) {
            return;
        }
        for (to, item) in gc::probes(group, g.raft.id(), g.raft.conf(), self.sh.node) {
            bump(&self.sh.counters.gc_probes_sent);
            let _ = self.sh.net.send(NetCmd::Send { to, items: vec![item] });
        }
    }

    /// Node `from` confirmed that `replica` of `group` is destroyed there: a leader whose
    /// configuration records that removal forgets it on the next tick.
    pub(super) fn on_tombstone_ack(&mut self, from: NodeId, group: u64, replica: ReplicaId) {
        let Some(g) = self.groups.get(&group) else { return };
        let r = Replica::new(from, replica);
        if g.raft.role() == Role::Leader && g.raft.conf().removed.contains(&r) {
            let list = self.forget.entry(group).or_default();
            if !list.contains(&r) {
                list.push(r);
            }
        }
    }

    /// Proposes the forgetting of the confirmed removal records (one `Forget` change per
    /// group). A refusal (a membership change pending, leadership lost) drops them: the
    /// next re-send is confirmed again.
    pub(super) fn propose_forgets(&mut self) {
        for (gid, list) in std::mem::take(&mut self.forget) {
            let Some(g) = self.groups.get_mut(&gid) else { continue };
            let n = list.len() as u64;
            let cc = ConfChange {
                transition: Transition::Auto,
                changes: list
                    .into_iter()
                    .map(|replica| SingleChange { kind: ChangeKind::Forget, replica })
                    .collect(),
            };
            match g.raft.propose_conf_change(cc) {
                Ok(_) => {
                    bump_by(&self.sh.counters.removals_confirmed, n);
                    Self::touch(&mut self.touched, g);
                }
                Err(e) => tracing::debug!("group {gid}: forgetting removal records refused: {e}"),
            }
        }
    }

    /// Answers a message from a replica that this member's applied configuration removed:
    /// ids at or below the configuration's highest id that it no longer holds were removed
    /// for good. Returns whether `m` came from such a replica (it is then not stepped).
    /// Answers a message or a stale-peer probe (`gc`) from `replica` on node `from`.
    pub(super) fn answer_removed(&mut self, from: NodeId, group: u64, replica: ReplicaId) -> bool {
        let Some(g) = self.groups.get(&group) else { return false };
        if !gc::removed_by(g.raft.conf(), g.raft.id(), replica) {
            return false;
        }
        let item = WireItem::Tombstone { group, replica, conf_index: g.raft.conf_index() };
        tracing::debug!("group {group}: message from removed replica {replica} on node {from}");
        bump(&self.sh.counters.tombstones_sent);
        let _ = self.sh.net.send(NetCmd::Send { to: from, items: vec![item] });
        true
    }

    /// The clean-up pass (`gc`) over `groups`, this tick's slice of the pass over every
    /// group that begins each `gc_interval_elections` election timeouts (`gc::GcPacer`):
    /// replicas that send nothing ask the other members whether they still belong to
    /// their group (the stale-peer check), and leaders re-send a tombstone to every
    /// removed replica that has not confirmed its destruction. What a slice produces is
    /// held and sent with the next slices', once `gc::GC_SEND_BATCH` items are held or the
    /// pass is `done`: a pass paced over many ticks then costs a few sends, not one per tick
    /// (each wakes the network threads and the receiving worker of every node).
    pub(super) fn gc_pass(&mut self, groups: &[u64], done: bool) {
        let me = self.sh.node;
        for g in groups.iter().filter_map(|id| self.groups.get(id)) {
            let r = &g.raft;
            if r.role() == Role::Leader {
                if !r.conf().removed.is_empty() {
                    let (items, local) = gc::resends(g.id, r.conf(), r.conf_index(), me);
                    for (node, item) in items {
                        self.gc_out.hold_resent(node, item);
                    }
                    if !local.is_empty() {
                        self.forget.entry(g.id).or_default().extend(local);
                    }
                }
            } else if gc::should_probe(r.role(), r.is_quiesced(), r.conf().is_voter(r.id())) {
                for (node, item) in gc::probes(g.id, r.id(), r.conf(), me) {
                    self.gc_out.hold_probe(node, item);
                }
            }
        }
        if !done && self.gc_out.held() < gc::GC_SEND_BATCH {
            return;
        }
        let (probes, resent) = std::mem::take(&mut self.gc_out).into_parts();
        for (to, items) in probes {
            bump_by(&self.sh.counters.gc_probes_sent, items.len() as u64);
            let _ = self.sh.net.send(NetCmd::Send { to, items });
        }
        for (to, items) in resent {
            bump_by(&self.sh.counters.tombstones_resent, items.len() as u64);
            let _ = self.sh.net.send(NetCmd::Send { to, items });
        }
    }
}
