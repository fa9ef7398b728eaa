//! `flotilla-certs`: creates a cluster CA and node certificates (rcgen).
//!
//! ```text
//! flotilla-certs init DIR [--nodes 1,2,3] [--days N] [--ca-days N]
//!                                   new CA in DIR (ca.pem, ca.key) + node certs
//! flotilla-certs node DIR ID [--days N]
//!                                   another node cert from the CA in DIR
//! ```
//! Node files are `node-ID.pem` and `node-ID.key`. Refuses to overwrite existing files.
//! Node certificates are valid for `--days` (default 365), the CA for `--ca-days` (default
//! 3650); both 1 ..= 36500. To rotate the CA, create a new one in another directory and
//! give nodes a CA bundle holding both `ca.pem` files (concatenated) until every node
//! certificate is reissued by the new CA.

use std::fs;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use flotilla_net::{ClusterCa, PemPair, DEFAULT_CA_VALIDITY, DEFAULT_NODE_VALIDITY};

const USAGE: &str = "usage:\n  flotilla-certs init DIR [--nodes 1,2,3] [--days N] [--ca-days N]\n  \
                     flotilla-certs node DIR ID [--days N]";
const DAY: u64 = 24 * 3600;

/// Creates `path` (never overwriting: `create_new` fails if it exists, with no window
/// between check and write). Private keys (`secret`) are readable by their owner only.
fn write_new(path: &Path, contents: &str, secret: bool) -> Result<(), String> {
    use std::io::Write;
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, if secret { 0o600 } else { 0o644 });
    let mut f = opts.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => format!("{} exists; refusing to overwrite", path.display()),
        _ => format!("{}: {e}", path.display()),
    })?;
    f.write_all(contents.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

fn write_node(dir: &Path, id: u64, pair: &PemPair) -> Result<(), String> {
    write_new(&dir.join(format!("node-{id}.pem")), &pair.cert_pem, false)?;
    write_new(&dir.join(format!("node-{id}.key")), &pair.key_pem, true)?;
    println!("wrote {}/node-{id}.pem and node-{id}.key", dir.display());
    Ok(())
}

fn parse_id(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) | Err(_) => Err(format!("bad node id {s:?} (a positive integer)")),
        Ok(id) => Ok(id),
    }
}

fn parse_days(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<u64>() {
        Ok(d @ 1..=36_500) => Ok(Duration::from_secs(d * DAY)),
        _ => Err(format!("bad number of days {s:?} (1 ..= 36500)")),
    }
}

/// Options after the positional arguments.
struct Opts {
    nodes: Vec<u64>,
    days: Duration,
    ca_days: Duration,
}

fn parse_opts(mut rest: &[String], allowed: &[&str]) -> Result<Opts, String> {
    let mut o = Opts { nodes: vec![], days: DEFAULT_NODE_VALIDITY, ca_days: DEFAULT_CA_VALIDITY };
    while let [flag, value, tail @ ..] = rest {
        if !allowed.contains(&flag.as_str()) {
            return Err(USAGE.into());
        }
        match flag.as_str() {
            "--nodes" => o.nodes = value.split(',').map(parse_id).collect::<Result<_, _>>()?,
            "--days" => o.days = parse_days(value)?,
            "--ca-days" => o.ca_days = parse_days(value)?,
            _ => return Err(USAGE.into()),
        }
        rest = tail;
    }
    if rest.is_empty() {
        Ok(o)
    } else {
        Err(USAGE.into())
    }
}

fn run(args: &[String]) -> Result<(), String> {
    match args {
        [cmd, dir, rest @ ..] if cmd == "init" => {
            let o = parse_opts(rest, &["--nodes", "--days", "--ca-days"])?;
            let dir = Path::new(dir);
            fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let ca = ClusterCa::generate_valid_for(o.ca_days).map_err(|e| e.to_string())?;
            write_new(&dir.join("ca.pem"), &ca.pem().cert_pem, false)?;
            write_new(&dir.join("ca.key"), &ca.pem().key_pem, true)?;
            println!("wrote {}/ca.pem and ca.key", dir.display());
            for id in o.nodes {
                write_node(dir, id, &ca.issue_node_valid_for(id, o.days).map_err(|e| e.to_string())?)?;
            }
            Ok(())
        }
        [cmd, dir, id, rest @ ..] if cmd == "node" => {
            let o = parse_opts(rest, &["--days"])?;
            let dir = Path::new(dir);
            let read =
                |f: &str| fs::read_to_string(dir.join(f)).map_err(|e| format!("{}/{f}: {e}", dir.display()));
            let ca = ClusterCa::from_pem(&read("ca.pem")?, &read("ca.key")?).map_err(|e| e.to_string())?;
            let id = parse_id(id)?;
            write_node(dir, id, &ca.issue_node_valid_for(id, o.days).map_err(|e| e.to_string())?)
        }
        _ => Err(USAGE.into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flotilla-certs: {e}");
            ExitCode::FAILURE
        }
    }
}
