//! Flotilla's engine.
//!
//! - [`raft`]: the Raft state machine of one group. Sans-IO and deterministic: no clock,
//!   socket, file or thread; time is ticks, randomness is a seeded RNG.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod raft;
pub mod transport;
