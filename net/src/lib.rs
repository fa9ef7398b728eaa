//! Flotilla's transport: authenticated, length-prefixed frames of bytes between node ids.
//!
//! Knows nothing of Raft. One QUIC connection (quinn, on this crate's own small tokio
//! runtime) per node pair, mutual TLS against a cluster CA with the node id bound to the
//! certificate, a low-latency in-order message lane, a control lane above it (its own
//! stream, writer and inbound budget, so a flood of data never delays a heartbeat), and
//! bulk lanes (one QUIC stream per snapshot, lower priority) so a large snapshot never
//! holds back the message lane. Memory taken from the network is bounded in bytes: each
//! peer's inbound frames are charged to its budget before they are read, and the budget
//! is released only when the consumer drops the frame's [`InboundPermit`].
//!
//! - [`frame`]: the versioned, length-prefixed frame and its typed-error decoder.
//! - [`NetConfig`] / [`ValidNetConfig`]: knobs, defaults, bounds.
//! - [`ClusterCa`] (rcgen) and [`NodeIdentity`]: certificates (finite validity) and TLS
//!   identity (several trusted CAs, for rotation; re-read from its files on reload).
//! - `verify`: the certificate profile and node allow-list checked in the handshake.
//! - `budget`: the per-peer inbound byte budgets and [`InboundPermit`].
//! - [`Endpoint`]: start, [`Endpoint::send`] (bounded per-peer queue),
//!   [`Endpoint::send_control`], [`Endpoint::open_bulk`],
//!   [`Endpoint::set_allowed_nodes`], [`Endpoint::reload_certs`]; inbound admission is
//!   address-validated (Retry) and capped (`max_handshakes`).
//! - [`Event`] / [`Inbox`]: frames, bulk chunks, peer up/down with incarnations, drop reports.
//! - [`fault`]: a UDP relay that cuts, heals and delays links between chosen nodes (tests).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod accept;
mod admission;
pub mod budget;
pub mod bulk;
pub mod certs;
pub mod config;
mod conn;
pub mod endpoint;
pub mod event;
pub mod fault;
pub mod frame;
mod peer;
mod shared;
pub mod tls;
#[cfg(feature = "serde")]
pub mod units;
mod verify;

pub use budget::{BudgetError, InboundPermit};
pub use bulk::{BulkError, BulkSender};
pub use certs::{
    node_server_name, CertError, ClusterCa, PemPair, DEFAULT_CA_VALIDITY, DEFAULT_NODE_VALIDITY, MAX_VALIDITY,
};
pub use config::{NetConfig, NetConfigError, ValidNetConfig};
pub use endpoint::{Endpoint, PeerInbound, ReloadError, SendError, StartError, Stats};
pub use event::{DownReason, DropReason, Event, FrameHook, Inbox, NodeId, RecvError};
pub use frame::{Frame, FrameError, FrameKind, FrameReader, FORMAT_VERSION};
pub use tls::{IdentityFiles, NodeIdentity, TlsError};
