//! `flotilla-kv --config FILE`: runs one node of the sharded key-value server.
//!
//! Prints `ready node=<id> client=<addr> peer=<addr>` on stdout once it serves clients.
//! Passwords are never arguments: `password_file` / `admin_password_file` in the config, or
//! the `FLOTILLA_PASSWORD` / `FLOTILLA_ADMIN_PASSWORD` environment variables.
//! Exit codes: 0 after a clean stop, 2 for a bad configuration, 1 for any other failure.
//! Logs go to stderr (`log_level`, overridden by `RUST_LOG`; `log_format = "json"` for
//! JSON lines); with `metrics_addr` set, `/metrics`, `/health` and `/ready` are served
//! there over HTTP.
//! SIGTERM and SIGINT stop the node cleanly within `shutdown_timeout_ms`: leaderships
//! handed off, requests in flight answered, engine shut down (`flotilla_kv::shutdown`).
//! SIGHUP re-reads the certificate files (`ca_cert`, `node_cert`, `node_key`), as the
//! admin command `FLOTILLA.RELOADCERTS` does; the outcome is logged.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use clap::Parser;
use flotilla_kv::config::NodeConfig;
use flotilla_kv::node::Node;

/// Runs a flotilla-kv node.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The node's TOML configuration (see kv.example.toml).
    #[arg(long, short)]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut cfg = match NodeConfig::from_file(&args.config).and_then(NodeConfig::validate) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flotilla-kv: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = flotilla_kv::logging::init(&cfg.observability.log_level, cfg.observability.log_format) {
        eprintln!("flotilla-kv: logs: {e}");
        return ExitCode::from(2);
    }
    // The open-file limit fits the connections allowed, or max_clients fits the limit.
    cfg.max_clients = flotilla_kv::fd_limit::adjust(cfg.max_clients, cfg.node_channel_max_connections);
    let metrics_listener = match cfg.observability.metrics_addr.map(std::net::TcpListener::bind).transpose() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "metrics_addr not bound");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = flotilla_kv::shutdown::install_signal_handlers() {
        eprintln!("flotilla-kv: SIGTERM/SIGINT handlers: {e}");
        return ExitCode::from(1);
    }
    let listener = match std::net::TcpListener::bind(cfg.client_addr) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "client_addr {} not bound", cfg.client_addr);
            return ExitCode::from(1);
        }
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    tracing::info!(
        node = cfg.node_id,
        client = %cfg.advertise_client_addr,
        peer = %cfg.advertise_peer_addr,
        data_dir = %cfg.data_dir.display(),
        shards = cfg.shards,
        bootstrap = cfg.bootstrap,
        engine_workers = cfg.engine_workers,
        executor_threads = cfg.executor_threads,
        passwords = cfg.password.is_some(),
        metrics = %metrics_addr.map_or("off".to_string(), |a| a.to_string()),
        version = env!("CARGO_PKG_VERSION"),
        "flotilla-kv starting"
    );
    let node = match Node::start(cfg) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "node not started");
            return ExitCode::from(1);
        }
    };
    let serving = Arc::new(AtomicBool::new(false));
    if let Some(l) = metrics_listener {
        if let Err(e) = flotilla_kv::http::start(l, Arc::downgrade(&node), serving.clone()) {
            tracing::error!(error = %e, "metrics endpoint not started");
            return ExitCode::from(1);
        }
    }
    watch_sighup(Arc::downgrade(&node));
    println!(
        "ready node={} client={} peer={}",
        node.id(),
        node.config().advertise_client_addr,
        node.config().advertise_peer_addr
    );
    tracing::info!(node = node.id(), client = %node.config().advertise_client_addr, "serving clients");
    serving.store(true, Ordering::Relaxed);
    let served = flotilla_kv::shutdown::serve_until_signal(node, listener);
    serving.store(false, Ordering::Relaxed);
    match served {
        Ok(r) => {
            let sig = match r.cause {
                flotilla_kv::shutdown::StopCause::Signal(s) => flotilla_kv::shutdown::signal_name(s),
                _ => "client port failure",
            };
            tracing::info!(
                took_ms = r.took.as_millis() as u64,
                handed_off = r.handed_off.len(),
                kept = ?r.kept,
                drained = r.drained,
                engine_stopped = r.engine_stopped,
                "stopped on {sig}"
            );
            match r.server_error {
                Some(e) => {
                    tracing::error!(error = %e, "client port failed");
                    ExitCode::from(1)
                }
                None => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "client port failed");
            ExitCode::from(1)
        }
    }
}

/// Set by the SIGHUP handler, taken by the reload thread.
static HANGUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hangup(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    HANGUP.store(true, Ordering::Relaxed);
}

/// Installs the SIGHUP handler and a thread that reloads the node's certificates after
/// each SIGHUP (checked every 100 ms; several signals in that time make one reload). The
/// thread ends once the node is gone.
fn watch_sighup(node: Weak<Node>) {
    // SAFETY: `on_hangup` only stores to an atomic, which is async-signal-safe; glibc's
    // `signal` installs it with BSD semantics (SA_RESTART), so no call is interrupted.
    let prev =
        unsafe { libc::signal(libc::SIGHUP, on_hangup as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    if prev == libc::SIG_ERR {
        tracing::error!("SIGHUP handler not installed: certificates reload by FLOTILLA.RELOADCERTS only");
        return;
    }
    let spawned = std::thread::Builder::new().name("kv-sighup".into()).spawn(move || loop {
        std::thread::sleep(Duration::from_millis(100));
        let Some(node) = node.upgrade() else { return };
        if HANGUP.swap(false, Ordering::Relaxed) {
            match node.reload_certs() {
                Ok(()) => tracing::info!("SIGHUP: certificates reloaded"),
                Err(e) => tracing::error!(
                    error = %e,
                    "SIGHUP: certificates not reloaded, the current ones stay in use"
                ),
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "SIGHUP thread not started");
    }
}
