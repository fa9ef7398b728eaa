//! Logs what the engine reports through its event stream ([`EngineEvent`]): leader
//! changes as every node sees them, snapshots taken, replicas created, at `info`; the
//! events the engine already logs at `info` itself (membership changes applied, snapshots
//! sent and installed, replicas destroyed) and quiescence at `debug`; lost events at
//! `warn`.
//!
//! Owns one subscription and the thread that reads it. Never acts on an event: routing
//! waits on leader changes through [`crate::leader_watch`].

use std::time::Duration;

use flotilla_engine::api::{Engine, EngineEvent, EventStream, RecvError, SubscribeError};

/// Events buffered for the log thread.
const CAPACITY: usize = 16_384;

/// Why the log of engine events did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventLogError {
    /// The engine refused the subscription.
    #[error("subscribing to the engine's events: {0}")]
    Subscribe(#[from] SubscribeError),
    /// The thread could not be started.
    #[error("starting the event log thread: {0}")]
    Thread(std::io::Error),
}

/// Subscribes to `engine`'s events and logs them on a thread that ends when the engine
/// shuts down.
pub fn start(engine: &Engine) -> Result<(), EventLogError> {
    let stream = engine.subscribe(CAPACITY)?;
    std::thread::Builder::new()
        .name("kv-event-log".into())
        .spawn(move || run(stream))
        .map_err(EventLogError::Thread)?;
    Ok(())
}

fn run(mut stream: EventStream) {
    loop {
        match stream.recv_timeout(Duration::from_secs(1)) {
            Ok(ev) => log(&ev),
            Err(RecvError::Empty) => {}
            Err(_) => return,
        }
    }
}

/// Logs one event.
pub fn log(ev: &EngineEvent) {
    match *ev {
        EngineEvent::LeaderChanged { group, leader, term } => {
            tracing::info!(group, leader = leader.node, replica = leader.id, term, "leader changed")
        }
        EngineEvent::SnapshotTaken { group, index } => tracing::info!(group, index, "snapshot taken"),
        EngineEvent::ReplicaCreated { group, replica } => tracing::info!(group, replica, "replica created"),
        EngineEvent::MembershipApplied { group, index, joint } => {
            tracing::debug!(group, index, joint, "membership change applied")
        }
        EngineEvent::SnapshotSent { group, to, index } => {
            tracing::debug!(group, to = to.node, index, "snapshot sent")
        }
        EngineEvent::SnapshotInstalled { group, index } => {
            tracing::debug!(group, index, "snapshot installed")
        }
        EngineEvent::ReplicaDestroyed { group } => tracing::debug!(group, "replica destroyed"),
        EngineEvent::GroupQuiesced { group } => tracing::debug!(group, "group quiesced"),
        EngineEvent::GroupWoken { group } => tracing::debug!(group, "group woken"),
        EngineEvent::Lagged { missed } => tracing::warn!(missed, "engine events lost: the log missed some"),
        other => tracing::debug!(event = ?other, "engine event"),
    }
}
