//! The process's open-file limit against the connections the configuration allows, as
//! Redis adjusts it at start: the soft `RLIMIT_NOFILE` is raised (up to the hard limit)
//! to fit `max_clients`, the node channel's connections and a reserve for the engine's
//! own files; if it cannot be, `max_clients` is lowered to fit, with a warning.
//!
//! Owns that computation ([`plan`], pure) and the one call at start ([`adjust`]). Why it
//! matters: at the usual soft limit of 1,024 a flood of client connections takes every
//! descriptor, and then the write-ahead log cannot open its next segment: the engine
//! stops for good on a storage failure. Never changes anything after start.

/// Descriptors kept for everything but connections: WAL segments, snapshot files, the
/// QUIC sockets, the metrics endpoint, logs.
pub const RESERVED_FDS: u64 = 1024;

/// What [`adjust`] does: the soft limit to ask for (`None`: leave it) and the `max_clients`
/// that fits the limit then in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The soft limit to set, if it must be raised.
    pub raise_to: Option<u64>,
    /// `max_clients` once the limit is what it can be.
    pub max_clients: usize,
}

/// The plan for soft and hard limits `soft`, `hard` and the configured `max_clients` and
/// node-channel connections: raise the soft limit to what they and [`RESERVED_FDS`] need,
/// up to `hard`; lower `max_clients` (to at least 1) if even that is not enough.
pub fn plan(soft: u64, hard: u64, max_clients: usize, node_channel: usize) -> Plan {
    let need = (max_clients as u64).saturating_add(node_channel as u64).saturating_add(RESERVED_FDS);
    let limit = if soft >= need { soft } else { need.min(hard.max(soft)) };
    let raise_to = (limit > soft).then_some(limit);
    let room = limit.saturating_sub(node_channel as u64).saturating_sub(RESERVED_FDS);
    let max_clients =
        if limit >= need { max_clients } else { usize::try_from(room).unwrap_or(usize::MAX).max(1) };
    Plan { raise_to, max_clients }
}

/// Applies [`plan`] to this process: raises the soft limit if it must, and returns the
/// `max_clients` to serve with (logging a warning when it is lower than configured).
pub fn adjust(max_clients: usize, node_channel: usize) -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the limits into `lim`, a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "open-file limit not read; max_clients kept");
        return max_clients;
    }
    let p = plan(lim.rlim_cur, lim.rlim_max, max_clients, node_channel);
    let mut soft = lim.rlim_cur;
    if let Some(to) = p.raise_to {
        let new = libc::rlimit { rlim_cur: to, rlim_max: lim.rlim_max };
        // SAFETY: a valid rlimit whose soft value is at most its hard one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
            soft = to;
            tracing::info!(from = lim.rlim_cur, to, "open-file limit raised");
        } else {
            tracing::warn!(error = %std::io::Error::last_os_error(), "open-file limit not raised");
            return plan(soft, soft, max_clients, node_channel).max_clients;
        }
    }
    if p.max_clients < max_clients {
        tracing::warn!(
            open_files = soft,
            max_clients = p.max_clients,
            configured = max_clients,
            "the maximum of open files is too low for max_clients: it has been reduced to fit (raise `ulimit -n` for more)"
        );
    }
    p.max_clients
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_fit_and_max_clients_lowered_only_past_the_hard_limit() {
        // The usual systemd limits: soft 1,024, hard 524,288; the defaults 10,000 + 1,024.
        assert_eq!(plan(1024, 524_288, 10_000, 1024), Plan { raise_to: Some(12_048), max_clients: 10_000 });
        // Enough already: nothing changes.
        assert_eq!(plan(1 << 20, 1 << 20, 10_000, 1024), Plan { raise_to: None, max_clients: 10_000 });
        // A hard limit of 4,096: raised to it, and max_clients fits what is left.
        assert_eq!(plan(1024, 4096, 10_000, 1024), Plan { raise_to: Some(4096), max_clients: 2048 });
        // Nothing left for clients: still one.
        assert_eq!(plan(1024, 1024, 10_000, 1024), Plan { raise_to: None, max_clients: 1 });
        // A soft limit above the hard one cannot be; raising is never lowering.
        assert_eq!(plan(5000, 4096, 100, 10), Plan { raise_to: None, max_clients: 100 });
    }
}
