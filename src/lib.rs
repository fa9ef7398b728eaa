//! Flotilla: a high-performance multi-raft engine.
//!
//! This root crate re-exports the public surface of the workspace crates. It owns the
//! examples, benchmarks and integration tests (simulation, crash/recovery, clusters).

pub use flotilla_engine as engine;
pub use flotilla_engine::raft;
