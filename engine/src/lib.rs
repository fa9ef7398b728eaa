//! Flotilla's engine.
//!
//! - [`raft`]: the Raft state machine of one group. Sans-IO and deterministic: no clock,
//!   socket, file or thread; time is ticks, randomness is a seeded RNG.
//! - [`runtime`]: thread-per-core workers that own groups, the ready loop over the shared
//!   WAL, apply and waiters.
//! - [`api`]: the embedding API ([`api::Engine`], [`api::StateMachine`], configuration).
//! - [`transport`]: the engine's network trait, wire codec and adapters.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod api;
pub mod raft;
pub mod runtime;
pub mod transport;
