//! The engine reports through `tracing` only (issue 11 point 6): with a subscriber
//! installed, a three-engine cluster's election, transfer and membership change arrive as
//! tracing events with their fields, inside the `turn` and `ready` spans; no workspace
//! crate depends on the `log` crate or calls its macros (checked in `.ci/run`). One test per binary: the
//! subscriber is process-wide, since the events come from the engines' worker threads.

#![allow(clippy::unwrap_used, missing_docs)]

mod common_engine;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common_engine::*;
use flotilla_engine::api::MembershipChange;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Records every event's message with its span stack depth, and counts spans by name.
#[derive(Default)]
struct Recorder {
    next_id: AtomicU64,
    names: Mutex<BTreeMap<u64, &'static str>>,
    spans: Mutex<BTreeMap<&'static str, u64>>,
    events: Mutex<Vec<(String, String)>>,
}

struct Fields(String, String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        } else {
            self.1.push_str(&format!("{}={value:?} ", field.name()));
        }
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let name = attrs.metadata().name();
        self.names.lock().unwrap().insert(id, name);
        *self.spans.lock().unwrap().entry(name).or_default() += 1;
        Id::from_u64(id)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, e: &Event<'_>) {
        let mut f = Fields(String::new(), String::new());
        e.record(&mut f);
        self.events.lock().unwrap().push((f.0, f.1));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
    fn try_close(&self, id: Id) -> bool {
        self.names.lock().unwrap().remove(&id.into_u64());
        true
    }
}

#[test]
fn elections_transfers_and_membership_changes_are_tracing_events_in_spans() {
    let rec: &'static Recorder = Box::leak(Box::default());
    tracing::subscriber::set_global_default(Forward(rec)).unwrap();

    let c = Cluster::new(3, 10_000);
    c.create_group(7, &[1, 2]);
    let l = c.wait_leader(7, Duration::from_secs(30));
    let other = if l == 1 { 2 } else { 1 };
    c.propose(7, b"x");
    c.transfer(7, other, Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c
            .engine(other)
            .change_membership(7, MembershipChange::AddLearner(3))
            .unwrap()
            .wait_timeout(Duration::from_secs(10));
        if matches!(r, Ok(Ok(()))) {
            break;
        }
        assert!(Instant::now() < deadline, "learner not added: {r:?}");
        std::thread::sleep(Duration::from_millis(20));
    }

    let has = |msg: &str, field: &str| {
        let events = rec.events.lock().unwrap();
        events.iter().any(|(m, f)| m == msg && f.contains(field))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(has("became leader", "group=7") && has("membership change applied", "group=7")) {
        assert!(Instant::now() < deadline, "events seen: {:?}", rec.events.lock().unwrap());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(has("election started", "group=7"));
    assert!(has("leadership transfer started", &format!("to={other}")));
    assert!(has("became leader", "by_transfer=true"), "the transfer's winner reports it");
    let spans = rec.spans.lock().unwrap().clone();
    assert!(spans.get("turn").is_some_and(|&n| n > 0), "worker turn spans: {spans:?}");
    assert!(spans.get("ready").is_some_and(|&n| n > 0), "group ready spans: {spans:?}");
}

/// `set_global_default` takes the subscriber by value; this forwards to the leaked one
/// the test reads.
struct Forward(&'static Recorder);

impl Subscriber for Forward {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        self.0.enabled(m)
    }
    fn new_span(&self, a: &Attributes<'_>) -> Id {
        self.0.new_span(a)
    }
    fn record(&self, i: &Id, r: &Record<'_>) {
        self.0.record(i, r)
    }
    fn record_follows_from(&self, a: &Id, b: &Id) {
        self.0.record_follows_from(a, b)
    }
    fn event(&self, e: &Event<'_>) {
        self.0.event(e)
    }
    fn enter(&self, i: &Id) {
        self.0.enter(i)
    }
    fn exit(&self, i: &Id) {
        self.0.exit(i)
    }
    fn try_close(&self, id: Id) -> bool {
        self.0.try_close(id)
    }
}
