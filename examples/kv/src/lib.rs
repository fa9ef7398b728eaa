//! `flotilla-kv`: a sharded key-value server on Flotilla, speaking RESP (the Redis
//! protocol), with its admin and rebalance tools.
//!
//! - [`config`]: the node's TOML configuration and its validation.
//! - [`acl`]: users, passwords, permissions, protected mode, [`acl::Secret`].
//! - [`node_channel`]: the mutually authenticated TLS channel nodes forward requests on.
//! - [`trust`]: which nodes are admitted (the directory's), and certificate reloads.
//! - [`resp`]: RESP framing (RESP2 and RESP3); [`hello`]: HELLO and CLIENT; [`command_table`]: COMMAND; [`client`]: a blocking RESP client.
//! - [`sm`]: the shard and meta state machines; [`keyspace`]: a shard's typed keys with
//!   expiry; [`keycmd`]: the keyspace commands ([`strings`], [`hashes`], [`expiry`],
//!   [`longdouble`]); [`multi`]: MULTI/EXEC; [`clock`]: the node's (skewable) clock.
//! - [`slots`]: Redis Cluster key slots (CRC16, hash tags).
//! - [`node`]: the engine, bootstrap, routing and retries ([`leader_watch`]: waiting for
//!   a leader change on the engine's events); [`outcome`]: which failures are
//!   retried and which are INDETERMINATE; [`sessions`]: the client sessions that make
//!   retried writes apply once; [`commands`]: command syntax;
//!   [`server`]: the mio client port; [`inflight`]: batches in flight on it without a thread.
//! - [`linearizability`]: the history checker of the chaos test.
//! - [`redis_cluster`]: the Redis Cluster protocol (cluster mode); [`routes`]: each shard's
//!   route published to the meta group.
//! - [`cluster`]: the cluster view and operations the admin and rebalance tools share;
//!   [`load_report`]: each replica's load in `FLOTILLA.STATUS`; [`load_plan`]: the
//!   load-aware rebalance plan.
//! - Operations: [`logging`] (the log subscriber, rate-limited client failures),
//!   [`event_log`] (the engine's events in the log), [`metrics`] and [`engine_metrics`]
//!   (the Prometheus series), [`http`] (`/metrics`, `/health`, `/ready`), [`info`] (INFO).
//! - [`shutdown`]: the clean stop on SIGTERM/SIGINT (leaderships handed off, clients
//!   drained); [`backup`]: a node's side of backup and restore (shard snapshots exported
//!   and streamed, imported); [`cluster_backup`]: the admin tool's backup directory.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod acl;
pub mod backup;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod cluster_backup;
pub mod command_table;
pub mod commands;
pub mod config;
pub mod config_get;
pub mod engine_metrics;
pub mod event_log;
pub mod expiry;
pub mod fd_limit;
pub mod glob;
pub mod hashes;
pub mod hello;
pub mod http;
pub mod inflight;
pub mod info;
pub mod joint;
pub mod joint_read;
pub mod keycmd;
pub mod keyspace;
pub mod leader_watch;
pub mod linearizability;
pub mod load_plan;
pub mod load_report;
pub mod logging;
pub mod longdouble;
pub mod metrics;
pub mod multi;
pub mod node;
pub mod node_channel;
pub mod outcome;
pub mod redis_cluster;
pub mod resp;
pub mod routes;
pub mod server;
pub mod sessions;
pub mod shard_snapshot;
pub mod shard_split;
pub mod shutdown;
pub mod slots;
pub mod sm;
pub mod strings;
pub mod trust;
