//! The embedder's say over replicas created from network messages: [`CreatePolicy`], a
//! hook the engine asks before it creates a replica of a group it does not host because
//! a peer's message names one (or records the removal of a replica it never hosted).
//!
//! Owns the hook's shape and its default (allow every request, the behaviour before the
//! hook existed). Never counts or rate-limits: the bounds (`max_creates_per_tick`,
//! `max_creates_per_node_per_tick`, `max_unconfirmed_replicas`, ...) live in
//! [`EngineConfig`](super::EngineConfig) and the runtime enforces them whatever the hook
//! answers.

use std::sync::Arc;

use crate::raft::types::NodeId;

/// The decision function: `(group, from_node) -> allow`.
type Decide = dyn Fn(u64, NodeId) -> bool + Send + Sync;

/// Decides whether a message from node `from` may create this node's replica of `group`
/// (set in [`EngineConfig::create_policy`](super::EngineConfig::create_policy)).
///
/// The engine asks it on a worker thread for every admission (at most
/// `max_creates_per_tick` times per worker tick), so it must be cheap and must not block:
/// look the group up in a map the embedder keeps current (e.g. the kv server's directory
/// of groups and their nodes), never ask the network.
///
/// ```
/// use std::collections::HashSet;
/// use std::sync::{Arc, RwLock};
/// use flotilla_engine::api::{CreatePolicy, EngineConfig};
///
/// // The groups (and their member nodes) this node's directory knows.
/// let directory: Arc<RwLock<HashSet<(u64, u64)>>> = Default::default();
/// directory.write().unwrap().insert((7, 2));
/// let mut cfg = EngineConfig::new(1, "/tmp/flotilla-doc");
/// let dir = directory.clone();
/// cfg.create_policy = CreatePolicy::new(move |group, from| {
///     dir.read().map(|d| d.contains(&(group, from))).unwrap_or(false)
/// });
/// assert!(cfg.create_policy.allows(7, 2));
/// assert!(!cfg.create_policy.allows(7, 3));
/// ```
#[derive(Clone, Default)]
pub struct CreatePolicy {
    /// `None`: allow every request.
    decide: Option<Arc<Decide>>,
}

impl CreatePolicy {
    /// A policy that allows every request (the default): any peer that passes the
    /// transport's authentication may create replicas here, within the configured caps.
    pub fn allow_all() -> CreatePolicy {
        CreatePolicy { decide: None }
    }

    /// A policy that refuses every request: replicas exist here only through
    /// `Engine::create_group` (and create-group effects of local state machines).
    pub fn deny_all() -> CreatePolicy {
        CreatePolicy::new(|_, _| false)
    }

    /// A policy deciding with `f(group, from_node)`.
    pub fn new(f: impl Fn(u64, NodeId) -> bool + Send + Sync + 'static) -> CreatePolicy {
        CreatePolicy { decide: Some(Arc::new(f)) }
    }

    /// Whether a message from node `from` may create this node's replica of `group`.
    pub fn allows(&self, group: u64, from: NodeId) -> bool {
        self.decide.as_ref().map_or(true, |f| f(group, from))
    }
}

impl std::fmt::Debug for CreatePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.decide.is_some() { "custom" } else { "allow_all" };
        f.debug_tuple("CreatePolicy").field(&kind).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_allows_and_a_hook_decides() {
        assert!(CreatePolicy::default().allows(1, 2));
        assert!(!CreatePolicy::deny_all().allows(1, 2));
        let p = CreatePolicy::new(|g, n| g == 5 && n == 2);
        assert!(p.allows(5, 2) && !p.allows(5, 3) && !p.allows(6, 2));
        assert_eq!(format!("{p:?}"), "CreatePolicy(\"custom\")");
    }
}
