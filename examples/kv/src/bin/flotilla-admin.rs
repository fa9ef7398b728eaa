//! `flotilla-admin`: operates a flotilla-kv cluster through any node's client port.
//!
//! ```text
//! flotilla-admin --seed ADDR [--user NAME] [--password-file FILE] [--timeout SECS] status
//! flotilla-admin --seed ADDR add-servers ADDR... [--replicas N]
//! flotilla-admin --seed ADDR remove-servers ID...
//! flotilla-admin --seed ADDR transfer-leader --to ID (--group G | --from ID)
//! ```
//! `add-servers` registers each new node (started with `bootstrap = false`) in the
//! directory, makes it a voter of the meta group, and adds it (learner, catch up, promote)
//! to every shard with fewer than `--replicas` voters (default 3). `remove-servers` moves
//! each shard replica of the node to the node with the fewest replicas that lacks one (when
//! there is one), moves leaderships away, then removes the node from every group.
//! Every step follows leader hints and is retried until `--timeout` (default 30 s).
//!
//! Exit codes: 0 done; 1 an operation was refused or timed out (the message says which
//! step); 2 usage error; 3 a node could not be reached; 4 authentication failed.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use flotilla_kv::cluster::{Admin, AdminError};

/// Operates a flotilla-kv cluster.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Client address (ip:port) of any node of the cluster.
    #[arg(long)]
    seed: String,
    /// The admin user's name.
    #[arg(long, default_value = "admin")]
    user: String,
    /// A file holding the admin user's password (default: the FLOTILLA_ADMIN_PASSWORD
    /// environment variable). Never on the command line.
    #[arg(long)]
    password_file: Option<std::path::PathBuf>,
    /// Seconds each step is retried before giving up.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Nodes, groups, leaders, terms and follower lag.
    Status,
    /// Adds nodes (by client address) to the cluster.
    AddServers {
        /// Client addresses of the new nodes.
        #[arg(required = true)]
        addrs: Vec<String>,
        /// Voters each shard should have.
        #[arg(long, default_value_t = 3)]
        replicas: usize,
    },
    /// Removes nodes (by id), moving their replicas and leaderships away first.
    RemoveServers {
        /// Node ids.
        #[arg(required = true)]
        ids: Vec<u64>,
    },
    /// Moves the leadership of one shard, or of every shard led by a node, to a node.
    TransferLeader {
        /// Target node.
        #[arg(long)]
        to: u64,
        /// One group.
        #[arg(long, conflicts_with = "from", required_unless_present = "from")]
        group: Option<u64>,
        /// Every shard led by this node.
        #[arg(long)]
        from: Option<u64>,
    },
}

fn code(e: &AdminError) -> ExitCode {
    match e {
        AdminError::Unreachable { .. } => ExitCode::from(3),
        AdminError::Auth { .. } => ExitCode::from(4),
        _ => ExitCode::from(1),
    }
}

fn run(a: &Admin, args: &Args) -> Result<(), AdminError> {
    let seed = args.seed.as_str();
    match &args.cmd {
        Cmd::Status => {
            print!("{}", a.view(seed)?.render());
        }
        Cmd::AddServers { addrs, replicas } => {
            for addr in addrs {
                let id = a.add_server(seed, addr, *replicas)?;
                println!("added node {id} ({addr})");
            }
        }
        Cmd::RemoveServers { ids } => {
            for &id in ids {
                let me = a.node_status(seed)?.node;
                let seed_here = if me == id {
                    // Operate through another node.
                    let v = a.view(seed)?;
                    v.nodes
                        .iter()
                        .find(|(n, _)| **n != id && !v.unreachable.contains(n))
                        .map(|(_, addr)| addr.clone())
                        .ok_or_else(|| {
                            AdminError::Invalid(format!("no other node to operate through than {id}"))
                        })?
                } else {
                    seed.to_string()
                };
                a.remove_server(&seed_here, id)?;
                println!("removed node {id}");
            }
        }
        Cmd::TransferLeader { to, group: Some(g), .. } => {
            a.transfer(seed, *g, *to)?;
            println!("group {g} now led by node {to}");
        }
        Cmd::TransferLeader { to, from: Some(f), .. } => {
            let n = a.transfer_all(seed, *f, *to)?;
            println!("moved {n} leaderships from node {f} to node {to}");
        }
        Cmd::TransferLeader { .. } => return Err(AdminError::Invalid("give --group or --from".into())),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let password = match flotilla_kv::acl::tool_password(
        args.password_file.as_deref(),
        std::env::var(flotilla_kv::config::ADMIN_PASSWORD_ENV).ok(),
    ) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("flotilla-admin: {e}");
            return ExitCode::from(2);
        }
    };
    let mut a = Admin::new(password);
    a.user = args.user.clone();
    a.step_timeout = Duration::from_secs(args.timeout.max(1));
    match run(&a, &args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flotilla-admin: {e}");
            code(&e)
        }
    }
}
