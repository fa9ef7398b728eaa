//! The node's logs: the `tracing` subscriber writing to stderr ([`init`]), and the
//! rate limit on logging errors answered to clients ([`ClientErrorLog`]).
//!
//! Owns the filter (the config's `log_level`, overridden by `RUST_LOG`), the line format
//! (`text` or `json`) and which client replies count as failures worth a warning. Never
//! decides what happens on an error: it only reports it.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use thiserror::Error;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Why the subscriber was not installed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LogInitError {
    /// The filter did not parse.
    #[error("log filter {filter:?}: {error}")]
    Filter {
        /// The directives.
        filter: String,
        /// The parser's message.
        error: String,
    },
    /// Another global subscriber is installed already.
    #[error("a log subscriber is installed already: {0}")]
    Installed(String),
}

/// The filter: `RUST_LOG` when set (and not empty), else `level` (the config's).
pub fn filter(level: &str, rust_log: Option<&str>) -> Result<EnvFilter, LogInitError> {
    let directives = rust_log.filter(|s| !s.trim().is_empty()).unwrap_or(level);
    EnvFilter::try_new(directives)
        .map_err(|e| LogInitError::Filter { filter: directives.to_string(), error: e.to_string() })
}

/// Installs the process's subscriber: lines on stderr in `format`, filtered by `RUST_LOG`
/// if set, else by `level`. Call once, before the node starts.
pub fn init(level: &str, format: LogFormat) -> Result<(), LogInitError> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = filter(level, rust_log.as_deref())?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Json => builder.json().with_current_span(false).with_span_list(false).try_init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
    installed.map_err(|e| LogInitError::Installed(e.to_string()))
}

/// Whether an error reply means the server failed the request (as opposed to a redirect,
/// a refusal of the client's own making, or a syntax error): unknown outcomes, retries
/// given up, unavailable groups and internal errors.
pub fn is_failure(error: &str) -> bool {
    const FAILURES: [&str; 7] =
        ["INDETERMINATE", "TRYAGAIN", "CLUSTERDOWN", "SESSIONREFUSED", "BUSY", "LOADING", "MASTERDOWN"];
    const INTERNAL: [&str; 4] =
        ["ERR internal", "ERR node unavailable", "ERR shard data missing", "ERR malformed"];
    let word = error.split(' ').next().unwrap_or("");
    FAILURES.contains(&word) || INTERNAL.iter().any(|p| error.starts_with(p))
}

/// Logs failures answered to clients at `warn`, at most `per_window` lines per window;
/// the lines suppressed meanwhile are counted in the next line logged, so a client
/// cannot flood the log.
#[derive(Debug)]
pub struct ClientErrorLog {
    per_window: u64,
    window: Duration,
    /// (window start, lines logged in it).
    state: Mutex<(Instant, u64)>,
    suppressed: AtomicU64,
}

impl Default for ClientErrorLog {
    fn default() -> Self {
        ClientErrorLog::new(10, Duration::from_secs(1))
    }
}

impl ClientErrorLog {
    /// A limit of `per_window` lines per `window`.
    pub fn new(per_window: u64, window: Duration) -> ClientErrorLog {
        ClientErrorLog {
            per_window,
            window,
            state: Mutex::new((Instant::now(), 0)),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Logs `error`, answered to `command`, if it is a failure ([`is_failure`]) and the
    /// limit allows; returns whether a line was logged.
    pub fn report(&self, command: &str, error: &str) -> bool {
        if !is_failure(error) {
            return false;
        }
        let Some(suppressed) = self.allow() else { return false };
        let error: String = error.chars().take(256).collect();
        tracing::warn!(command, error = %error, suppressed, "request failed");
        true
    }

    /// Whether the limit allows a line now; if so, how many were suppressed since the last
    /// one (counted here otherwise). For any line a client can cause again and again.
    pub fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let allowed = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if now.saturating_duration_since(st.0) >= self.window {
                *st = (now, 0);
            }
            st.1 += 1;
            st.1 <= self.per_window
        };
        if !allowed {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_told_from_redirects_and_user_errors() {
        for e in [
            "INDETERMINATE outcome unknown: the write may or may not have been applied (x)",
            "TRYAGAIN group 1001 busy",
            "CLUSTERDOWN no leader",
            "ERR internal error",
            "ERR node unavailable",
        ] {
            assert!(is_failure(e), "{e}");
        }
        for e in [
            "MOVED 12 127.0.0.1:7000",
            "ERR syntax error",
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "NOAUTH Authentication required.",
            "ERR unknown command 'x', with args beginning with: ",
            "ERR value is not an integer or out of range",
        ] {
            assert!(!is_failure(e), "{e}");
        }
    }

    #[test]
    fn client_errors_are_rate_limited_per_window() {
        let log = ClientErrorLog::new(3, Duration::from_secs(3600));
        let logged = (0..100).filter(|_| log.report("SET", "TRYAGAIN busy")).count();
        assert_eq!(logged, 3);
        assert_eq!(log.suppressed.load(Ordering::Relaxed), 97);
        assert!(!log.report("SET", "ERR syntax error"), "not a failure: never logged");
        // A new window logs again and reports what was suppressed.
        let log = ClientErrorLog::new(1, Duration::ZERO);
        assert!(log.report("GET", "TRYAGAIN busy"));
        assert!(log.report("GET", "TRYAGAIN busy"));
    }

    /// Any line a client can cause again and again goes through the same limit: the
    /// first `per_window` pass, the rest are counted and reported with the next one.
    #[test]
    fn allow_counts_what_it_suppresses() {
        let log = ClientErrorLog::new(2, Duration::from_secs(3600));
        assert_eq!((log.allow(), log.allow(), log.allow(), log.allow()), (Some(0), Some(0), None, None));
        let log = ClientErrorLog::new(1, Duration::ZERO);
        log.suppressed.store(5, Ordering::Relaxed);
        assert_eq!(log.allow(), Some(5));
        assert_eq!(log.allow(), Some(0));
    }

    #[test]
    fn rust_log_overrides_the_configured_level() {
        let f = filter("info", Some("error")).unwrap();
        assert_eq!(f.to_string(), "error");
        let f = filter("warn", None).unwrap();
        assert_eq!(f.to_string(), "warn");
        let f = filter("warn", Some("  ")).unwrap();
        assert_eq!(f.to_string(), "warn");
        assert!(matches!(filter("info", Some("[oops")), Err(LogInitError::Filter { .. })));
    }
}
