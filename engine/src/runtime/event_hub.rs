//! The publishing side of event subscriptions ([`EventHub`]): the list of subscribers,
//! read by every worker without a lock (an `ArcSwap` of the list, replaced whole on
//! subscribe and unsubscribe), and `publish`, a non-blocking try-send to each.
//!
//! Owns the subscriber list and the loss accounting of a full subscriber. Never blocks a
//! worker (a full channel loses the event and counts it), never decides what is an event
//! (the worker's `announce` and the files of each concern do), and costs one relaxed load
//! per event when nobody subscribes.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};

use crate::api::{EngineEvent, RecvError, SubscribeError, MAX_EVENT_CAPACITY, MAX_SUBSCRIBERS};

/// An event as it travels: the number of events this subscriber lost just before it
/// (reported as `Lagged` ahead of it), and the event.
pub(crate) type Published = (u64, EngineEvent);

/// One subscription, as the publishers see it.
struct Subscriber {
    id: u64,
    tx: Sender<Published>,
    /// Events lost at a full channel and not yet reported (shared with the stream).
    lost: Arc<AtomicU64>,
}

/// Every subscription of one node.
pub(crate) struct EventHub {
    subs: ArcSwap<Vec<Arc<Subscriber>>>,
    /// Subscriptions open: the publishers' fast path when it is 0.
    count: AtomicUsize,
    /// Serialises subscribe and unsubscribe (never taken by a publisher).
    write: Mutex<()>,
    next_id: AtomicU64,
}

impl Default for EventHub {
    fn default() -> EventHub {
        EventHub {
            subs: ArcSwap::from_pointee(Vec::new()),
            count: AtomicUsize::new(0),
            write: Mutex::new(()),
            next_id: AtomicU64::new(1),
        }
    }
}

impl EventHub {
    /// Opens a subscription buffering at most `capacity` events.
    pub(crate) fn subscribe(self: &Arc<Self>, capacity: usize) -> Result<EventStream, SubscribeError> {
        if capacity == 0 || capacity > MAX_EVENT_CAPACITY {
            return Err(SubscribeError::InvalidCapacity { capacity, max: MAX_EVENT_CAPACITY });
        }
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.subs.load_full();
        if cur.len() >= MAX_SUBSCRIBERS {
            return Err(SubscribeError::TooManySubscribers { max: MAX_SUBSCRIBERS });
        }
        let (tx, rx) = bounded(capacity);
        let lost = Arc::new(AtomicU64::new(0));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut next: Vec<Arc<Subscriber>> = cur.iter().cloned().collect();
        next.push(Arc::new(Subscriber { id, tx, lost: lost.clone() }));
        self.count.store(next.len(), Ordering::Release);
        self.subs.store(Arc::new(next));
        Ok(EventStream { rx, lost, id, hub: Arc::downgrade(self), stashed: None })
    }

    /// Closes subscription `id` (its stream was dropped).
    pub(crate) fn unsubscribe(&self, id: u64) {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.subs.load_full();
        let next: Vec<Arc<Subscriber>> = cur.iter().filter(|s| s.id != id).cloned().collect();
        self.count.store(next.len(), Ordering::Release);
        self.subs.store(Arc::new(next));
    }

    /// Whether anybody subscribes (publishers may skip building an event when not).
    #[inline]
    pub(crate) fn active(&self) -> bool {
        self.count.load(Ordering::Relaxed) != 0
    }

    /// Hands `ev` to every subscriber without blocking: a full subscriber loses it and
    /// counts the loss, reported before the next event it receives.
    #[inline]
    pub(crate) fn publish(&self, ev: EngineEvent) {
        if self.active() {
            self.publish_slow(ev);
        }
    }

    fn publish_slow(&self, ev: EngineEvent) {
        let subs = self.subs.load();
        for s in subs.iter() {
            let missed =
                if s.lost.load(Ordering::Relaxed) != 0 { s.lost.swap(0, Ordering::AcqRel) } else { 0 };
            match s.tx.try_send((missed, ev)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    s.lost.fetch_add(missed + 1, Ordering::AcqRel);
                }
                // The stream is being dropped; it unsubscribes itself.
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }
}

/// A subscription: a bounded stream of this node's [`EngineEvent`]s, in the order each
/// worker published them (events of groups on different workers are not ordered with
/// each other). Dropping it unsubscribes. As an [`Iterator`] it blocks for the next
/// event and ends when the engine shuts down.
pub struct EventStream {
    pub(crate) rx: Receiver<Published>,
    /// Events lost at a full channel and not yet reported (shared with the publishers).
    pub(crate) lost: Arc<AtomicU64>,
    pub(crate) id: u64,
    pub(crate) hub: Weak<EventHub>,
    /// An event received behind a `Lagged` report, delivered next.
    pub(crate) stashed: Option<EngineEvent>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").field("id", &self.id).field("queued", &self.rx.len()).finish()
    }
}

impl EventStream {
    /// The next event, waiting for it; `None` once the engine shut down and every event
    /// was received.
    pub fn recv(&mut self) -> Option<EngineEvent> {
        if let Some(ev) = self.ready() {
            return Some(ev);
        }
        match self.rx.recv() {
            Ok(p) => Some(self.unpack(p)),
            Err(_) => self.lagged(),
        }
    }

    /// The next event, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<EngineEvent, RecvError> {
        if let Some(ev) = self.ready() {
            return Ok(ev);
        }
        match self.rx.recv_timeout(timeout) {
            Ok(p) => Ok(self.unpack(p)),
            Err(RecvTimeoutError::Timeout) => self.lagged().ok_or(RecvError::Empty),
            Err(RecvTimeoutError::Disconnected) => self.lagged().ok_or(RecvError::Closed),
        }
    }

    /// The next event if one is there.
    pub fn try_recv(&mut self) -> Result<EngineEvent, RecvError> {
        if let Some(ev) = self.ready() {
            return Ok(ev);
        }
        match self.rx.try_recv() {
            Ok(p) => Ok(self.unpack(p)),
            Err(TryRecvError::Empty) => self.lagged().ok_or(RecvError::Empty),
            Err(TryRecvError::Disconnected) => self.lagged().ok_or(RecvError::Closed),
        }
    }

    /// What is due before waiting: a stashed event, or a report of events lost while
    /// the channel is empty (nothing published after them yet).
    fn ready(&mut self) -> Option<EngineEvent> {
        if let Some(ev) = self.stashed.take() {
            return Some(ev);
        }
        if self.rx.is_empty() {
            return self.lagged();
        }
        None
    }

    /// `Lagged` with the events lost and not yet reported, if any.
    fn lagged(&mut self) -> Option<EngineEvent> {
        let missed = self.lost.swap(0, Ordering::AcqRel);
        (missed > 0).then_some(EngineEvent::Lagged { missed })
    }

    /// A published event: behind a `Lagged` report if events were lost before it.
    fn unpack(&mut self, (missed, ev): Published) -> EngineEvent {
        if missed == 0 {
            return ev;
        }
        self.stashed = Some(ev);
        EngineEvent::Lagged { missed }
    }
}

impl Iterator for EventStream {
    type Item = EngineEvent;

    fn next(&mut self) -> Option<EngineEvent> {
        self.recv()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.unsubscribe(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RecvError;

    fn ev(group: u64) -> EngineEvent {
        EngineEvent::GroupWoken { group }
    }

    #[test]
    fn a_full_subscriber_is_told_exactly_how_many_it_lost_before_its_next_event() {
        let hub = Arc::new(EventHub::default());
        let mut slow = hub.subscribe(2).unwrap();
        let mut fast = hub.subscribe(100).unwrap();
        for g in 0..10 {
            hub.publish(ev(g));
        }
        // Buffered first, then the loss (nothing published after it yet).
        assert_eq!(slow.try_recv(), Ok(ev(0)));
        assert_eq!(slow.try_recv(), Ok(ev(1)));
        assert_eq!(slow.try_recv(), Ok(EngineEvent::Lagged { missed: 8 }));
        assert_eq!(slow.try_recv(), Err(RecvError::Empty));
        for g in 0..10 {
            assert_eq!(fast.try_recv(), Ok(ev(g)), "the other subscriber lost nothing");
        }
        // A loss followed by a publication: reported just before it.
        for g in 10..15 {
            hub.publish(ev(g));
        }
        assert_eq!(slow.try_recv(), Ok(ev(10)));
        assert_eq!(slow.try_recv(), Ok(ev(11)));
        hub.publish(ev(15));
        assert_eq!(slow.try_recv(), Ok(EngineEvent::Lagged { missed: 3 }));
        assert_eq!(slow.try_recv(), Ok(ev(15)));
        assert_eq!(slow.try_recv(), Err(RecvError::Empty));
    }

    #[test]
    fn subscriptions_are_bounded_and_dropping_one_unsubscribes() {
        let hub = Arc::new(EventHub::default());
        assert_eq!(
            hub.subscribe(0).unwrap_err(),
            SubscribeError::InvalidCapacity { capacity: 0, max: MAX_EVENT_CAPACITY }
        );
        assert!(hub.subscribe(MAX_EVENT_CAPACITY + 1).is_err());
        let mut all: Vec<EventStream> = (0..MAX_SUBSCRIBERS).map(|_| hub.subscribe(1).unwrap()).collect();
        assert_eq!(
            hub.subscribe(1).unwrap_err(),
            SubscribeError::TooManySubscribers { max: MAX_SUBSCRIBERS }
        );
        all.pop();
        assert!(hub.active());
        let s = hub.subscribe(1).unwrap();
        drop(all);
        drop(s);
        assert!(!hub.active(), "every stream dropped: nobody subscribes");
    }

    #[test]
    fn a_stream_ends_when_the_hub_is_gone() {
        let hub = Arc::new(EventHub::default());
        let mut s = hub.subscribe(4).unwrap();
        hub.publish(ev(1));
        drop(hub);
        assert_eq!(s.recv(), Some(ev(1)));
        assert_eq!(s.recv(), None);
        assert_eq!(s.try_recv(), Err(RecvError::Closed));
    }
}
