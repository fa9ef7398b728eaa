//! `CONFIG GET pattern [pattern ...]`: the Redis parameters clients and tools probe
//! (redis-benchmark asks for `save` and `appendonly`; dashboards for `maxclients`,
//! `maxmemory`, `databases`, `timeout`), each with the value that describes this node
//! truthfully in Redis's terms: every write is in a fsynced log before it is acknowledged
//! (`appendonly yes`, `appendfsync always`), there are no RDB snapshots (`save ""`), one
//! database, no memory limit or eviction. Patterns are Redis globs matched ignoring case
//! ([`crate::glob`]); a parameter matched by several patterns is listed once; the reply is
//! a map (a flat array in RESP2), as Redis 7's.
//!
//! Owns the parameter list. Never changes the configuration (`CONFIG SET` is not served).

use crate::config::ValidNodeConfig;
use crate::glob;
use crate::resp::Value;

/// The parameters and their values for this node.
fn params(cfg: &ValidNodeConfig) -> Vec<(&'static str, String)> {
    let secs = |d: std::time::Duration| d.as_secs().to_string();
    vec![
        ("appendonly", "yes".into()),
        ("appendfsync", "always".into()),
        ("save", String::new()),
        ("databases", "1".into()),
        ("maxmemory", "0".into()),
        ("maxmemory-policy", "noeviction".into()),
        ("cluster-enabled", "no".into()),
        ("bind", cfg.client_addr.ip().to_string()),
        ("port", cfg.client_addr.port().to_string()),
        ("protected-mode", if cfg.protected_mode { "yes" } else { "no" }.into()),
        ("maxclients", cfg.max_clients.to_string()),
        ("timeout", secs(cfg.limits.idle_timeout)),
        ("proto-max-bulk-len", cfg.max_request_bytes.to_string()),
        ("client-query-buffer-limit", cfg.limits.query_buffer_bytes.to_string()),
        ("io-threads", "1".into()),
    ]
}

/// The reply to `CONFIG GET` with these patterns (at least one; the caller checks arity).
pub fn config_get(cfg: &ValidNodeConfig, patterns: &[Vec<u8>]) -> Value {
    Value::Map(
        params(cfg)
            .into_iter()
            .filter(|(name, _)| patterns.iter().any(|p| glob::matches(p, name.as_bytes(), true)))
            .map(|(name, v)| (Value::bulk(name.as_bytes()), Value::bulk(v.into_bytes())))
            .collect(),
    )
}
