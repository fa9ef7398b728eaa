//! [`LogState`]: everything the WAL knows in memory: every group's index, every segment's
//! usage (live bytes, which groups keep it alive, which removals it carries) and the entry
//! cache. The sync queue applies each durable batch to it; recovery rebuilds it by
//! applying the same operations in log order.
//!
//! Owns: the semantics of applying a record (the same at run time and at recovery), and
//! the liveness rules of segments. Never: performs I/O.
//!
//! # Liveness (what keeps a segment)
//! A segment holds live data while it holds a live entry, the latest hard state, metadata
//! or compaction mark of a group, or a live removal. A removal of group `g` in segment `t`
//! is live while some older segment that still exists ever held a record of `g` (else
//! replaying that older segment after a restart would bring `g` back). Dead records that
//! survive in kept segments are harmless: every record that dropped entries (an overwrite,
//! a compaction, a rewrite) is superseded only by a later record that drops at least as
//! much, and the latest of them is always live (see `codec` for each kind's effect).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cache::EntryCache;
use crate::codec::ENTRY_HEADER_LEN;
use crate::hash::{IdMap, IdSet};
use crate::index::{EntryLoc, GroupIndex, RecLoc};
use crate::segment::Segment;
use crate::types::HardState;
use crate::types::Position;

/// Usage of one segment.
pub(crate) struct SegInfo {
    /// The segment (taken by the preallocator while it destroys or recycles it).
    pub seg: Option<Arc<Segment>>,
    /// End of the written part.
    pub written: u64,
    /// Bytes of live records.
    pub live: u64,
    /// Live bytes per group.
    pub groups_live: IdMap<u64>,
    /// Every group that ever wrote a record here.
    pub groups_ever: IdSet,
    /// Groups removed by a record here.
    pub tombstones: Vec<u64>,
    /// Dead: waiting to be deleted or recycled.
    pub retired: bool,
    /// The log's applied end when it was retired ([`LogState::applied_to`]): the
    /// operations that made it dead lie before it, and it is freed only once the log is
    /// durable that far (rounds are applied before their sync, so a dead segment can hold
    /// the only durable copy of what newer, not yet durable records replace).
    pub retired_at: Position,
}

impl SegInfo {
    pub(crate) fn new(seg: Arc<Segment>, written: u64) -> SegInfo {
        SegInfo {
            seg: Some(seg),
            written,
            live: 0,
            groups_live: IdMap::default(),
            groups_ever: IdSet::default(),
            tombstones: Vec::new(),
            retired: false,
            retired_at: Position::default(),
        }
    }
}

/// An operation to apply, with the locations its records were written at.
pub(crate) enum Applied<'a> {
    Entries {
        group: u64,
        first: u64,
        /// Borrowed from the writer's round; owned when recovery decoded them.
        locs: std::borrow::Cow<'a, [EntryLoc]>,
        /// `Some(last)` for rewritten entries.
        rewrite_last: Option<u64>,
    },
    HardState {
        group: u64,
        hs: HardState,
        rec: RecLoc,
    },
    Meta {
        group: u64,
        data: &'a [u8],
        rec: RecLoc,
    },
    Compact {
        group: u64,
        index: u64,
        last: u64,
        rec: RecLoc,
    },
    Remove {
        group: u64,
        seg: u64,
    },
}

/// The in-memory state of the log.
pub(crate) struct LogState {
    pub groups: IdMap<GroupIndex>,
    pub segs: BTreeMap<u64, SegInfo>,
    pub cache: EntryCache,
    /// Sequence number of the segment being written.
    pub active: u64,
    /// The end of the last round applied to this state (its records may not be durable
    /// yet: rounds are applied while their sync runs).
    pub applied_to: Position,
}

/// Most holes recovery leaves for entries whose records come later in the log.
const MAX_HOLES: u64 = 1 << 26;

fn entry_bytes(l: &EntryLoc) -> u64 {
    (ENTRY_HEADER_LEN as u64) + l.len as u64
}

impl LogState {
    pub(crate) fn new(cache_bytes: usize) -> LogState {
        LogState {
            groups: IdMap::default(),
            segs: BTreeMap::new(),
            cache: EntryCache::new(cache_bytes),
            active: 0,
            applied_to: Position::default(),
        }
    }

    /// Notes a record of `group` in `seg` holding `bytes` live bytes (0: a record that
    /// keeps nothing alive, still noted in `groups_ever`). One map lookup in the common
    /// case: a group already live in `seg` is already in its `groups_ever`.
    fn add_live(segs: &mut BTreeMap<u64, SegInfo>, seg: u64, group: u64, bytes: u64) {
        if let Some(s) = segs.get_mut(&seg) {
            if bytes == 0 {
                s.groups_ever.insert(group);
                return;
            }
            s.live += bytes;
            match s.groups_live.entry(group) {
                std::collections::hash_map::Entry::Occupied(mut o) => *o.get_mut() += bytes,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(bytes);
                    s.groups_ever.insert(group);
                }
            }
        }
    }

    fn sub_live(segs: &mut BTreeMap<u64, SegInfo>, seg: u64, group: u64, bytes: u64) {
        if let Some(s) = segs.get_mut(&seg) {
            s.live = s.live.saturating_sub(bytes);
            if let Some(v) = s.groups_live.get_mut(&group) {
                *v = v.saturating_sub(bytes);
                if *v == 0 {
                    s.groups_live.remove(&group);
                }
            }
        }
    }

    fn drop_entries(segs: &mut BTreeMap<u64, SegInfo>, group: u64, removed: &[EntryLoc]) {
        // Runs of entries in one segment are accounted at once.
        let mut run: Option<(u64, u64)> = None;
        for r in removed.iter().filter(|r| !r.is_hole()) {
            match run {
                Some((seg, ref mut bytes)) if seg == r.seg => *bytes += entry_bytes(r),
                _ => {
                    if let Some((seg, bytes)) = run {
                        Self::sub_live(segs, seg, group, bytes);
                    }
                    run = Some((r.seg, entry_bytes(r)));
                }
            }
        }
        if let Some((seg, bytes)) = run {
            Self::sub_live(segs, seg, group, bytes);
        }
    }

    /// Applies one operation (see the module documentation and `codec` for semantics).
    pub(crate) fn apply(&mut self, op: Applied<'_>) {
        match op {
            Applied::Entries { group, first, locs, rewrite_last } => {
                let segs = &mut self.segs;
                let g = self.groups.entry(group).or_default();
                match rewrite_last {
                    None => {
                        if first <= g.last() {
                            let removed = g.truncate_from(first);
                            Self::drop_entries(segs, group, &removed);
                        }
                        if first > g.last() + 1 && !g.pad_to(first - 1, MAX_HOLES) {
                            // Never accepted at run time; bounded so that no input can
                            // make recovery allocate without limit: restart the log here.
                            let removed = g.compact_below(first);
                            Self::drop_entries(segs, group, &removed);
                        }
                        // Entries below the first index are skipped (recovery only).
                        let skip = g.first.saturating_sub(first).min(locs.len() as u64) as usize;
                        let kept = &locs[skip..];
                        match kept {
                            // The common case (one entry per record): `extend` is not
                            // inlined, `push_back` is.
                            [one] => g.entries.push_back(*one),
                            _ => g.entries.extend(kept.iter().copied()),
                        }
                        let added: u64 = kept.iter().map(entry_bytes).sum();
                        // All entries of one record are in the same segment.
                        if let Some(l) = locs.first() {
                            Self::add_live(segs, l.seg, group, added);
                        }
                    }
                    Some(last) => {
                        // At replay, records of earlier entries may come later in the
                        // log (rewritten after this one): leave holes for them.
                        if let Some(l) = locs.first() {
                            Self::add_live(segs, l.seg, group, 0);
                        }
                        let end = (first + locs.len() as u64).saturating_sub(1);
                        g.pad_to(last.max(end), MAX_HOLES);
                        for (i, loc) in locs.iter().enumerate() {
                            let index = first + i as u64;
                            if let Some(old) = g.get_mut(index) {
                                let prev = *old;
                                *old = *loc;
                                Self::sub_live(segs, prev.seg, group, entry_bytes(&prev));
                                Self::add_live(segs, loc.seg, group, entry_bytes(loc));
                            }
                        }
                        let removed = g.truncate_from(last.saturating_add(1));
                        Self::drop_entries(segs, group, &removed);
                    }
                }
            }
            Applied::HardState { group, hs, rec } => {
                let g = self.groups.entry(group).or_default();
                if let Some((_, old)) = g.hard_state.replace((hs, rec)) {
                    Self::sub_live(&mut self.segs, old.seg, group, old.len as u64);
                }
                Self::add_live(&mut self.segs, rec.seg, group, rec.len as u64);
            }
            Applied::Meta { group, data, rec } => {
                let g = self.groups.entry(group).or_default();
                if let Some((_, old)) = g.meta.replace((data.into(), rec)) {
                    Self::sub_live(&mut self.segs, old.seg, group, old.len as u64);
                }
                Self::add_live(&mut self.segs, rec.seg, group, rec.len as u64);
            }
            Applied::Compact { group, index, last, rec } => {
                let segs = &mut self.segs;
                let g = self.groups.entry(group).or_default();
                let removed = g.compact_below(index);
                Self::drop_entries(segs, group, &removed);
                let cut = last.saturating_add(1).max(g.first);
                let removed = g.truncate_from(cut);
                Self::drop_entries(segs, group, &removed);
                if let Some(old) = g.compact.replace(rec) {
                    Self::sub_live(segs, old.seg, group, old.len as u64);
                }
                Self::add_live(segs, rec.seg, group, rec.len as u64);
            }
            Applied::Remove { group, seg } => {
                if let Some(g) = self.groups.remove(&group) {
                    let removed: Vec<EntryLoc> = g.entries.iter().copied().collect();
                    Self::drop_entries(&mut self.segs, group, &removed);
                    if let Some((_, r)) = g.hard_state {
                        Self::sub_live(&mut self.segs, r.seg, group, r.len as u64);
                    }
                    if let Some((_, r)) = g.meta {
                        Self::sub_live(&mut self.segs, r.seg, group, r.len as u64);
                    }
                    if let Some(r) = g.compact {
                        Self::sub_live(&mut self.segs, r.seg, group, r.len as u64);
                    }
                }
                if let Some(s) = self.segs.get_mut(&seg) {
                    s.tombstones.push(group);
                    s.groups_ever.insert(group);
                }
            }
        }
    }

    /// Whether the removal of `group` recorded in segment `seq` is still needed.
    pub(crate) fn tombstone_live(&self, seq: u64, group: u64) -> bool {
        self.segs.range(..seq).any(|(_, s)| s.groups_ever.contains(&group))
    }

    /// Whether segment `seq` can be freed: not the active one, no live record, no live
    /// removal.
    pub(crate) fn is_dead(&self, seq: u64) -> bool {
        match self.segs.get(&seq) {
            Some(s) => {
                seq != self.active
                    && s.live == 0
                    && s.tombstones.iter().all(|g| !self.tombstone_live(seq, *g))
            }
            None => false,
        }
    }

    /// Whether segment `seq` has a live removal (such a segment is not rewritten: it is
    /// freed once the older segments go).
    pub(crate) fn has_live_tombstone(&self, seq: u64) -> bool {
        match self.segs.get(&seq) {
            Some(s) => s.tombstones.iter().any(|g| self.tombstone_live(seq, *g)),
            None => false,
        }
    }
}
