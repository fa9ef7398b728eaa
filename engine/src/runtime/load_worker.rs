//! The worker's publishing pass of load measuring: once per fold interval, the replicas
//! holding a meter go to the load board (`load_board`) and the meters of replicas that
//! went idle are dropped; and a replica's status with its load.
//!
//! Owns when a replica loses its meter and what a worker publishes. Never counts events
//! (`load_book`) and costs nothing while no replica of the worker holds a meter.

use super::clock;
use super::load_board::Published;
use super::worker::Worker;
use crate::api::GroupStatus;
use crate::raft::types::Role;

impl Worker {
    /// Once per fold interval (called every tick): publishes the measured replicas to the
    /// load board and drops the meters that went idle. Costs nothing while no replica of
    /// this worker holds a meter.
    pub(super) fn publish_loads(&mut self) {
        let book = &mut self.load;
        if !book.measure || book.now < book.next_pass {
            return;
        }
        book.next_pass = book.now.saturating_add(book.ewma.interval);
        if book.metered.is_empty() && book.published_empty {
            return;
        }
        let (now, ewma) = (book.now, book.ewma);
        let mut list = Vec::with_capacity(book.metered.len());
        let groups = &mut self.groups;
        book.metered.retain(|gid| {
            let Some(g) = groups.get_mut(gid) else { return false };
            let Some(m) = g.load.as_deref_mut() else { return false };
            m.roll(now, &ewma);
            if m.is_idle() {
                g.load = None;
                return false;
            }
            list.push(Published { group: *gid, leader: g.raft.role() == Role::Leader, meter: m.clone() });
            true
        });
        book.published_empty = list.is_empty();
        self.sh.loads.publish(self.idx, list);
    }

    /// A replica's status with its load as of now.
    pub(super) fn status_with_load(&self, g: &super::group::Group) -> GroupStatus {
        let mut s = g.status();
        if let Some(m) = &g.load {
            s.load = m.view(clock::now_nanos(), &self.load.ewma);
        }
        s
    }
}
