//! `flotilla-certs`: creates a cluster CA and node certificates (rcgen).
//!
//! ```text
//! flotilla-certs init DIR [--nodes 1,2,3]   new CA in DIR (ca.pem, ca.key) + node certs
//! flotilla-certs node DIR ID                another node cert from the CA in DIR
//! ```
//! Node files are `node-ID.pem` and `node-ID.key`. Refuses to overwrite existing files.

use std::fs;
use std::path::Path;
use std::process::ExitCode;

use flotilla_net::{ClusterCa, PemPair};

const USAGE: &str = "usage:\n  flotilla-certs init DIR [--nodes 1,2,3]\n  flotilla-certs node DIR ID";

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

fn run(args: &[String]) -> Result<(), String> {
    match args {
        [cmd, dir, rest @ ..] if cmd == "init" => {
            let ids = match rest {
                [] => vec![],
                [flag, list] if flag == "--nodes" => {
                    list.split(',').map(parse_id).collect::<Result<_, _>>()?
                }
                _ => return Err(USAGE.into()),
            };
            let dir = Path::new(dir);
            fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let ca = ClusterCa::generate().map_err(|e| e.to_string())?;
            write_new(&dir.join("ca.pem"), &ca.pem().cert_pem, false)?;
            write_new(&dir.join("ca.key"), &ca.pem().key_pem, true)?;
            println!("wrote {}/ca.pem and ca.key", dir.display());
            for id in ids {
                write_node(dir, id, &ca.issue_node(id).map_err(|e| e.to_string())?)?;
            }
            Ok(())
        }
        [cmd, dir, id] if cmd == "node" => {
            let dir = Path::new(dir);
            let read =
                |f: &str| fs::read_to_string(dir.join(f)).map_err(|e| format!("{}/{f}: {e}", dir.display()));
            let ca = ClusterCa::from_pem(&read("ca.pem")?, &read("ca.key")?).map_err(|e| e.to_string())?;
            let id = parse_id(id)?;
            write_node(dir, id, &ca.issue_node(id).map_err(|e| e.to_string())?)
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
