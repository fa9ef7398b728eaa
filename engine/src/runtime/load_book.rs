//! A worker's load bookkeeping ([`LoadBook`]): the clock reading of the turn, the
//! counting calls of the event paths (propose, read, local read, applied), which create a
//! replica's meter at its first event, and the list of replicas holding one (the worker's
//! publishing pass is in `load_worker`). Also [`LoadProbe`], the same calls for the cost
//! benchmark.
//!
//! Owns when a replica gets its meter. Never reads the clock per event (once per turn,
//! `LoadBook::turn`), never locks, never touches a worker or a group (it is handed the
//! replica's meter slot), and costs nothing for a replica without events: no timer, no
//! entry in any list, 8 bytes (`Group::load`).

use std::collections::HashSet;

use super::clock;
use super::load::{Ewma, LoadMeter};
use crate::api::EngineConfig;

/// A replica's meter slot: `None` until its first event (and again once idle).
pub(crate) type MeterSlot = Option<Box<LoadMeter>>;

/// One worker's load bookkeeping.
pub(crate) struct LoadBook {
    /// `EngineConfig::measure_load`.
    pub(super) measure: bool,
    pub(super) ewma: Ewma,
    /// The clock (`clock::now_nanos`) read at the start of the turn.
    pub(super) now: u64,
    /// Groups whose replica holds a meter (may name removed groups until the next pass).
    pub(super) metered: HashSet<u64>,
    /// When the next publishing pass is due.
    pub(super) next_pass: u64,
    /// The last list published was empty.
    pub(super) published_empty: bool,
}

impl LoadBook {
    /// The bookkeeping for `cfg` (validated).
    pub(crate) fn new(cfg: &EngineConfig) -> LoadBook {
        LoadBook {
            measure: cfg.measure_load,
            ewma: ewma_of(cfg),
            now: clock::now_nanos(),
            metered: HashSet::new(),
            next_pass: 0,
            published_empty: true,
        }
    }

    /// Reads the clock for this turn's events (nothing when measuring is off).
    #[inline]
    pub(crate) fn turn(&mut self) {
        if self.measure {
            self.now = clock::now_nanos();
        }
    }

    /// The meter of a replica of `group` to count an event in, rolled to the turn's
    /// clock; created on its first event; `None` when measuring is off.
    #[inline]
    fn meter<'a>(&mut self, slot: &'a mut MeterSlot, group: u64) -> Option<&'a mut LoadMeter> {
        if !self.measure {
            return None;
        }
        let m = slot.get_or_insert_with(|| {
            self.metered.insert(group);
            Box::new(LoadMeter::new(self.now))
        });
        m.roll(self.now, &self.ewma);
        Some(m)
    }

    /// A proposal was appended by the replica of `group` as leader.
    #[inline]
    pub(crate) fn proposal(&mut self, slot: &mut MeterSlot, group: u64) {
        if let Some(m) = self.meter(slot, group) {
            m.counts.proposals += 1;
        }
    }

    /// A read was accepted (ReadIndex) or answered (local read) by the replica of `group`.
    #[inline]
    pub(crate) fn read(&mut self, slot: &mut MeterSlot, group: u64) {
        if let Some(m) = self.meter(slot, group) {
            m.counts.reads += 1;
        }
    }

    /// The apply thread applied `bytes` payload bytes of `group`'s committed entries in
    /// `nanos` (nothing is counted for a batch of neither).
    #[inline]
    pub(crate) fn applied(&mut self, slot: &mut MeterSlot, group: u64, bytes: u64, nanos: u64) {
        if bytes == 0 && nanos == 0 {
            return;
        }
        if let Some(m) = self.meter(slot, group) {
            m.counts.bytes += bytes;
            m.counts.apply_nanos += nanos;
        }
    }
}

/// The decay rule of `cfg`.
pub(crate) fn ewma_of(cfg: &EngineConfig) -> Ewma {
    Ewma::new(cfg.load_fold_interval, cfg.load_half_life)
}

/// The worker's load accounting outside a worker, for the cost benchmark
/// (`benches/load.rs`): one replica's meter slot with the same calls the worker's event
/// paths make. Not part of the embedding API.
#[doc(hidden)]
pub struct LoadProbe {
    book: LoadBook,
    slot: MeterSlot,
    measure: bool,
}

impl LoadProbe {
    /// A probe with `cfg`'s measuring settings.
    pub fn new(cfg: &EngineConfig) -> LoadProbe {
        LoadProbe { book: LoadBook::new(cfg), slot: None, measure: cfg.measure_load }
    }

    /// What a worker does once per turn (one clock reading when measuring).
    pub fn turn(&mut self) {
        self.book.turn();
    }

    /// What the propose path does per proposal appended.
    pub fn proposal(&mut self) {
        self.book.proposal(&mut self.slot, 1);
    }

    /// What the apply thread and the worker do per applied batch of `bytes` payload
    /// bytes: time the batch (when measuring) and count it.
    pub fn applied_batch(&mut self, bytes: u64) {
        let started = self.measure.then(std::time::Instant::now);
        let nanos = started.map_or(0, |t| u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
        self.book.applied(&mut self.slot, 1, bytes, nanos);
    }

    /// The proposals per second measured so far.
    pub fn proposals_per_sec(&self) -> f64 {
        self.slot.as_ref().map_or(0.0, |m| m.view(clock::now_nanos(), &self.book.ewma).proposals_per_sec)
    }
}
