//! `flotilla-kv --config FILE`: runs one node of the sharded key-value server.
//!
//! Prints `ready node=<id> client=<addr> peer=<addr>` on stdout once it serves clients.
//! Passwords are never arguments: `password_file` / `admin_password_file` in the config, or
//! the `FLOTILLA_PASSWORD` / `FLOTILLA_ADMIN_PASSWORD` environment variables.
//! Exit codes: 0 after a clean stop, 2 for a bad configuration, 1 for any other failure.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

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
    println!(
        "ready node={} client={} peer={}",
        node.id(),
        node.config().advertise_client_addr,
        node.config().advertise_peer_addr
    );
    let stop = Arc::new(AtomicBool::new(false));
    match flotilla_kv::server::serve(node, listener, stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flotilla-kv: client port: {e}");
            ExitCode::from(1)
        }
    }
}
