//! `flotilla-admin`: operates a flotilla-kv cluster through any node's client port.
//!
//! ```text
//! flotilla-admin --seed ADDR [--user NAME] [--password-file FILE] [--timeout SECS] status
//!     [--json] [--watch [SECONDS]] [--count N]
//! flotilla-admin --seed ADDR backup DIR
//! flotilla-admin --seed ADDR restore DIR
//! flotilla-admin --seed ADDR add-servers ADDR... [--replicas N]
//! flotilla-admin --seed ADDR remove-servers ID...
//! flotilla-admin --seed ADDR transfer-leader --to ID (--group G | --from ID)
//! flotilla-admin --seed ADDR reload-certs
//! flotilla-admin --seed ADDR split SHARD [SLOT]
//! ```
//! `split SHARD [SLOT]` splits shard group SHARD by slot range (`FLOTILLA.SPLIT`,
//! `flotilla_kv::shard_split`): its slots from SLOT on (default: its middle slot) go to a
//! new shard on the same nodes; sent once, never retried.
//! `add-servers` registers each new node (started with `bootstrap = false`) in the
//! directory, makes it a voter of the meta group, and adds it (learner, catch up, promote)
//! to every shard with fewer than `--replicas` voters (default 3). `remove-servers` moves
//! each shard replica of the node to the node with the fewest replicas that lacks one (when
//! there is one), moves leaderships away, then removes the node from every group.
//! Every step follows leader hints and is retried until `--timeout` (default 30 s).
//! `reload-certs` makes every node of the directory re-read its certificate files
//! (`FLOTILLA.RELOADCERTS`; after a certificate renewal or while rotating the CA): every
//! node is tried, one line each; the exit code is that of the first failure.
//!
//! `status --json` prints one JSON document of the cluster view
//! (`flotilla_kv::cluster::StatusDoc`: `nodes` [{id, client, state, leaders, replicas}],
//! `meta` and `shards` [{group, leader, term, commit, voters, learners, lag [{node,
//! entries}], max_lag}]); `--watch` redraws every SECONDS (default 2) until Ctrl-C or
//! `--count` frames, one JSON document per line with `--json`.
//! `backup DIR` writes a snapshot of every shard (each at a read barrier taken after the
//! command began) and `manifest.json` into DIR (new or empty); `restore DIR` seeds a new
//! cluster from it: the seed is a node started with `bootstrap = true`, `restore = true`
//! and the backup's `shards`; then grow it with `add-servers` (see
//! `flotilla_kv::cluster_backup`).
//!
//! Exit codes: 0 done; 1 an operation was refused or timed out (the message says which
//! step); 2 usage error; 3 a node could not be reached; 4 authentication failed.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flotilla_kv::cluster::{Admin, AdminError, ToolArgs};

/// Operates a flotilla-kv cluster.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    tool: ToolArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Nodes, groups, leaders, terms and follower lag.
    Status {
        /// One JSON document (stable field names) instead of the table.
        #[arg(long)]
        json: bool,
        /// Redraw every SECONDS (default 2) until Ctrl-C.
        #[arg(long, num_args = 0..=1, default_missing_value = "2", value_name = "SECONDS")]
        watch: Option<f64>,
        /// With --watch: stop after this many frames.
        #[arg(long, requires = "watch")]
        count: Option<u64>,
    },
    /// Writes a consistent snapshot of every shard and a manifest into DIR.
    Backup {
        /// The backup directory (created; must be empty).
        dir: std::path::PathBuf,
    },
    /// Seeds a new cluster (its bootstrap node runs with restore = true) from a backup.
    Restore {
        /// The backup directory.
        dir: std::path::PathBuf,
    },
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
    /// Makes every node re-read its certificate files (new connections use them).
    ReloadCerts,
    /// Splits a shard: its slots from SLOT on (default: from its middle slot) go to a new
    /// shard (the next free group id) on the same nodes, led first by the shard's leader.
    /// Sent once (never retried: a retry could split twice); prints the new shard's group.
    Split {
        /// The shard's group (e.g. 1000).
        shard: u64,
        /// The first slot that moves.
        slot: Option<u16>,
    },
}

fn run(a: &Admin, args: &Args) -> Result<(), AdminError> {
    let seed = args.tool.seed.as_str();
    match &args.cmd {
        Cmd::Status { json, watch: None, .. } => {
            let v = a.view(seed)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v.doc()).unwrap_or_default());
            } else {
                print!("{}", v.render());
            }
        }
        Cmd::Status { json, watch: Some(secs), count } => watch(a, seed, *json, *secs, *count)?,
        Cmd::Backup { dir } => {
            let m = a.backup(seed, dir)?;
            for g in &m.groups {
                println!(
                    "group {} (shard {}): index {}, {} bytes from node {}",
                    g.group, g.shard, g.index, g.bytes, g.node
                );
            }
            println!("backed up {} shards to {}", m.shards, dir.display());
        }
        Cmd::Restore { dir } => {
            let m = a.restore(seed, dir)?;
            println!("restored {} shards from {}", m.shards, dir.display());
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
        Cmd::Split { shard, slot } => {
            let (g, s) = (shard.to_string(), slot.map(|s| s.to_string()));
            let mut argv = vec!["FLOTILLA.SPLIT", g.as_str()];
            argv.extend(s.as_deref());
            match a.call(seed, &argv)? {
                flotilla_kv::resp::Value::Int(child) => {
                    println!("shard {shard} split: new shard group {child}")
                }
                flotilla_kv::resp::Value::Error(msg) => {
                    return Err(AdminError::Refused { what: format!("split of {shard}"), msg })
                }
                v => return Err(AdminError::Invalid(format!("unexpected reply {v:?}"))),
            }
        }
        Cmd::ReloadCerts => {
            let mut failed = Vec::new();
            for (id, r) in a.reload_certs(seed)? {
                match r {
                    Ok(()) => println!("node {id} reloaded its certificates"),
                    Err(e) => failed.push((id, e)),
                }
            }
            let mut failed = failed.into_iter();
            if let Some((_, first)) = failed.next() {
                for (id, e) in failed {
                    eprintln!("flotilla-admin: node {id}: {e}");
                }
                return Err(first);
            }
        }
    }
    Ok(())
}

/// `status --watch`: a frame every `secs` seconds (at least 0.1), `count` frames at most.
/// A frame that fails prints its error and the watch goes on.
fn watch(a: &Admin, seed: &str, json: bool, secs: f64, count: Option<u64>) -> Result<(), AdminError> {
    use std::io::{IsTerminal, Write};
    let every = std::time::Duration::from_secs_f64(if secs.is_finite() { secs.max(0.1) } else { 2.0 });
    let tty = std::io::stdout().is_terminal();
    for frame in 0u64.. {
        if count.is_some_and(|c| frame >= c) {
            break;
        }
        if frame > 0 {
            std::thread::sleep(every);
        }
        let mut out = std::io::stdout().lock();
        match a.view(seed) {
            Ok(v) if json => {
                let _ = writeln!(out, "{}", serde_json::to_string(&v.doc()).unwrap_or_default());
            }
            Ok(v) => {
                // A terminal is redrawn in place; a pipe gets frames separated by a blank line.
                let _ = if tty {
                    write!(out, "\x1b[2J\x1b[H")
                } else if frame > 0 {
                    writeln!(out)
                } else {
                    Ok(())
                };
                let _ = write!(out, "{}", v.render());
            }
            Err(e @ AdminError::Auth { .. }) => return Err(e),
            Err(e) => eprintln!("flotilla-admin: {e}"),
        }
        let _ = out.flush();
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let a = match args.tool.admin() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("flotilla-admin: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&a, &args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flotilla-admin: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
