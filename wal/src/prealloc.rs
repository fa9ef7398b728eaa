//! [`Preallocator`]: the background thread that keeps spare segments ready ahead of the
//! writer and frees retired ones, so that neither zero-filling nor deleting happens on the
//! write path.
//!
//! Owns: turning retired segments into spares (recycling: new sequence number and salt)
//! or deleting them, and creating zero-filled spares when none can be recycled. A segment
//! is recycled or deleted only once no reader holds its map (its `Arc` is unique) and the
//! log is durable past the operations that retired it (never while the log is poisoned:
//! after a failed sync those operations may never be durable, and the retired segment
//! may hold the only durable copy of its records), and only then leaves the log state,
//! after its old identity is durably gone. A spare finished
//! after the writer gave up waiting and created a later segment itself is deleted, not
//! published: it would sit below the active segment. Never: touches the active segment,
//! or truncates a file.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::segment::Segment;
use crate::shared::Shared;

/// The preallocator thread.
pub(crate) struct Preallocator {
    shared: Arc<Shared>,
}

impl Preallocator {
    pub(crate) fn new(shared: Arc<Shared>) -> Preallocator {
        Preallocator { shared }
    }

    /// Runs until asked to stop.
    pub(crate) fn run(self) {
        let mut backoff = Duration::from_millis(10);
        while !self.shared.stop.load(Ordering::Acquire) {
            let r = self.step();
            self.shared.prealloc_failing.store(r.is_err(), Ordering::Release);
            if r.is_err() {
                // Let a writer waiting for a spare know it should not wait any longer.
                self.shared.spares_cv.notify_all();
            }
            match r {
                Ok(true) => {
                    backoff = Duration::from_millis(10);
                    continue;
                }
                Ok(false) => {
                    backoff = Duration::from_millis(10);
                }
                Err(e) => {
                    tracing::warn!("preallocator i/o error (will retry): {e}");
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
            self.shared.wait_kick(backoff.max(Duration::from_millis(100)));
        }
    }

    /// One unit of work; returns whether it did something.
    pub(crate) fn step(&self) -> std::io::Result<bool> {
        let cfg = &self.shared.cfg;
        let fs = &*self.shared.fs;
        // Take one retired segment no reader maps any more, once what retired it is
        // durable.
        let taken = {
            let poisoned = self.shared.is_poisoned();
            let durable = self.shared.sync.durable();
            let mut st = self.shared.state.write();
            let seq = st
                .segs
                .iter()
                .find(|(_, s)| {
                    s.retired
                        && !poisoned
                        && s.retired_at <= durable
                        && s.seg.as_ref().is_some_and(|a| Arc::strong_count(a) == 1)
                })
                .map(|(k, _)| *k);
            seq.and_then(|k| st.segs.get_mut(&k).and_then(|s| s.seg.take().map(|a| (k, a))))
        };
        if let Some((seq, arc)) = taken {
            let seg = match Arc::try_unwrap(arc) {
                Ok(s) => s,
                Err(a) => {
                    // Cannot happen (count was 1 under the lock); put it back.
                    if let Some(s) = self.shared.state.write().segs.get_mut(&seq) {
                        s.seg = Some(a);
                    }
                    return Ok(false);
                }
            };
            let keep = self.shared.spares.lock().len() < cfg.spare_segments + cfg.recycle_pool;
            let path = seg.path.clone();
            let result = if keep {
                let new_seq = self.shared.next_seq.fetch_add(1, Ordering::SeqCst);
                seg.recycle(fs, &cfg.dir, new_seq).map(Some)
            } else {
                drop(seg);
                fs.remove(&path).and_then(|_| fs.sync_dir(&cfg.dir)).map(|_| None)
            };
            match result {
                Ok(spare) => {
                    // The old identity is durably gone: forget the segment.
                    self.shared.state.write().segs.remove(&seq);
                    if let Some(s) = spare {
                        if self.publish(s)? {
                            self.shared.recycled.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    return Ok(true);
                }
                Err(e) => {
                    tracing::warn!("freeing {} failed: {e}", path.display());
                    return Err(e);
                }
            }
        }
        if self.shared.spares.lock().len() < cfg.spare_segments {
            let seq = self.shared.next_seq.fetch_add(1, Ordering::SeqCst);
            let seg = Segment::create(fs, &cfg.dir, seq, cfg.segment_size, self.shared.wal_id)?;
            if self.publish(seg)? {
                self.shared.created.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Hands a finished spare to the writer; returns false when it was deleted instead
    /// because the writer overtook it: it took a later sequence number itself (which it
    /// does under the spares lock, after a last look at the queue) while this spare was
    /// being made. Published, such a spare would be an empty segment below the active one
    /// until the writer's next rotation dropped it. (A crash before the deletion below
    /// leaves it behind all the same: recovery deletes such a skipped spare.)
    fn publish(&self, seg: Segment) -> std::io::Result<bool> {
        let active = self.shared.state.read().active;
        {
            let mut q = self.shared.spares.lock();
            if seg.seq > active && self.shared.next_seq.load(Ordering::SeqCst) == seg.seq + 1 {
                q.push_back(seg);
                self.shared.spares_cv.notify_all();
                return Ok(true);
            }
        }
        tracing::warn!(
            "deleting spare {} (the writer created a later segment while it was made)",
            seg.path.display()
        );
        let path = seg.path.clone();
        drop(seg);
        let fs = &*self.shared.fs;
        fs.remove(&path)?;
        fs.sync_dir(&self.shared.cfg.dir)?;
        Ok(false)
    }
}
