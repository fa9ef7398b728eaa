//! `flotilla-kv --config FILE`: runs one node of the sharded key-value server.
//!
//! Prints `ready node=<id> client=<addr> peer=<addr>` on stdout once it serves clients.
//! Passwords are never arguments: `password_file` / `admin_password_file` in the config, or
//! the `FLOTILLA_PASSWORD` / `FLOTILLA_ADMIN_PASSWORD` environment variables.
//! Exit codes: 0 after a clean stop, 2 for a bad configuration, 1 for any other failure.
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
    let cfg = match NodeConfig::from_file(&args.config).and_then(NodeConfig::validate) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flotilla-kv: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = flotilla_kv::shutdown::install_signal_handlers() {
        eprintln!("flotilla-kv: SIGTERM/SIGINT handlers: {e}");
        return ExitCode::from(1);
    }
    let listener = match std::net::TcpListener::bind(cfg.client_addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("flotilla-kv: client_addr {}: {e}", cfg.client_addr);
            return ExitCode::from(1);
        }
    };
    let node = match Node::start(cfg) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("flotilla-kv: {e}");
            return ExitCode::from(1);
        }
    };
    watch_sighup(Arc::downgrade(&node));
    println!(
        "ready node={} client={} peer={}",
        node.id(),
        node.config().advertise_client_addr,
        node.config().advertise_peer_addr
    );
    match flotilla_kv::shutdown::serve_until_signal(node, listener) {
        Ok(r) => {
            let sig = match r.cause {
                flotilla_kv::shutdown::StopCause::Signal(s) => flotilla_kv::shutdown::signal_name(s),
                _ => "client port failure",
            };
            eprintln!(
                "flotilla-kv: stopped on {sig} in {} ms: {} leaderships handed off, {} kept {:?}, \
                 clients drained: {}, engine stopped: {}",
                r.took.as_millis(),
                r.handed_off.len(),
                r.kept.len(),
                r.kept,
                r.drained,
                r.engine_stopped
            );
            match r.server_error {
                Some(e) => {
                    eprintln!("flotilla-kv: client port: {e}");
                    ExitCode::from(1)
                }
                None => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("flotilla-kv: client port: {e}");
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
        eprintln!(
            "flotilla-kv: SIGHUP handler not installed: certificates reload by FLOTILLA.RELOADCERTS only"
        );
        return;
    }
    let spawned = std::thread::Builder::new().name("kv-sighup".into()).spawn(move || loop {
        std::thread::sleep(Duration::from_millis(100));
        let Some(node) = node.upgrade() else { return };
        if HANGUP.swap(false, Ordering::Relaxed) {
            match node.reload_certs() {
                Ok(()) => eprintln!("flotilla-kv: SIGHUP: certificates reloaded"),
                Err(e) => eprintln!(
                    "flotilla-kv: SIGHUP: certificates not reloaded, the current ones stay in use: {e}"
                ),
            }
        }
    });
    if let Err(e) = spawned {
        eprintln!("flotilla-kv: SIGHUP thread not started: {e}");
    }
}
