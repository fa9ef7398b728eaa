//! A node's side of backup and restore: the admin commands that export a shard's snapshot
//! at a linearizable point and stream it out in bounded chunks, and those that receive a
//! shard's snapshot in chunks and import it as a new group here.
//!
//! - `FLOTILLA.BACKUP <group>`: a read barrier (ReadIndex) on the group, then
//!   `Engine::export_snapshot` to `data_dir/backups/<id>.export`: the snapshot reflects at
//!   least every write acknowledged before the command arrived. Answers `[id, file bytes,
//!   index, term, checksum]`. Any replica serves it (the barrier makes a follower's
//!   snapshot as fresh as the leader's); the admin tool asks the leader.
//! - `FLOTILLA.BACKUPREAD <id> <offset> <len>`: up to [`MAX_CHUNK`] bytes of an export
//!   (client output buffers are bounded); the file is removed once its last byte was
//!   read, and any export older than [`EXPORT_TTL`] at the next backup command (of any
//!   admin tool: exports not read to their end are left by a tool that stopped).
//! - `FLOTILLA.RESTOREPART <group> <offset> <bytes>`: appends a chunk of a shard's export
//!   file to `data_dir/restore/<group>.export` (offset 0 starts it afresh); answers the
//!   length so far.
//! - `FLOTILLA.RESTORE <group>`: imports that file as the group's only replica, this node
//!   its founding voter (`Engine::import_snapshot` with a member list, so replica ids are
//!   never reused), then removes it. Only on a node started with `bootstrap = true` and
//!   `restore = true` (which founds the meta group and no shard), and only for a shard of
//!   its shard count that it does not host: a cluster holding data is never overwritten.
//!   The restored cluster grows with `add-servers` as any other.
//!
//! Owns the export and staging files and their names. Never decides which node backs up
//! which shard, nor what the backup directory holds (the admin tool's
//! [`crate::cluster_backup`]).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use flotilla_engine::api::{ImportError, ImportOptions};

use crate::node::Node;
use crate::resp::Value;
use crate::sm::{known_group, META_GROUP};

/// Largest chunk `FLOTILLA.BACKUPREAD` answers, and `FLOTILLA.RESTOREPART` accepts.
pub const MAX_CHUNK: usize = 1 << 20;
/// How long an export not read to its end is kept.
pub const EXPORT_TTL: Duration = Duration::from_secs(600);

fn exports_dir(node: &Node) -> PathBuf {
    node.config().data_dir.join("backups")
}

fn staging_path(node: &Node, group: u64) -> PathBuf {
    node.config().data_dir.join("restore").join(format!("{group}.export"))
}

/// An export id as [`backup`] makes them (`<group>-<nanos>`), or `None`: it names a file,
/// so nothing else (no path separator, no dot) is accepted.
fn valid_id(id: &[u8]) -> Option<&str> {
    let id = std::str::from_utf8(id).ok()?;
    let (g, t) = id.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 40 && s.bytes().all(|b| b.is_ascii_digit());
    (digits(g) && digits(t)).then_some(id)
}

fn export_path(node: &Node, id: &[u8]) -> Option<PathBuf> {
    valid_id(id).map(|id| exports_dir(node).join(format!("{id}.export")))
}

fn err(msg: impl std::fmt::Display) -> Value {
    Value::err(format!("ERR {msg}"))
}

/// Removes exports older than [`EXPORT_TTL`] (never read to their end).
fn sweep(node: &Node) {
    let Ok(entries) = fs::read_dir(exports_dir(node)) else { return };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > EXPORT_TTL);
        if old {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Whether `group` is a shard of this node's cluster.
fn is_shard(node: &Node, group: u64) -> bool {
    group != META_GROUP
        && (known_group(group, node.config().shards) || crate::shard_split::is_known_shard(node, group))
}

/// `FLOTILLA.BACKUP <group>`.
pub fn backup(node: &Node, group: u64) -> Value {
    if !is_shard(node, group) {
        return err(format!("group {group} is not a shard of this cluster"));
    }
    if !node.engine().hosts(group) {
        return err(format!("node {} has no replica of group {group}", node.id()));
    }
    let budget = node.config().retry_budget;
    match node.engine().read_index(group).map(|b| b.wait_timeout(budget)) {
        Ok(Ok(Ok(_))) => {}
        Ok(Ok(Err(e))) => return Value::err(format!("TRYAGAIN group {group}: read barrier: {e}")),
        Ok(Err(_)) => {
            return Value::err(format!("TRYAGAIN group {group}: read barrier not confirmed in time"))
        }
        Err(e) => return Value::err(format!("TRYAGAIN group {group}: read barrier: {e}")),
    }
    sweep(node);
    let dir = exports_dir(node);
    if let Err(e) = fs::create_dir_all(&dir) {
        return err(format!("{}: {e}", dir.display()));
    }
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let id = format!("{group}-{nanos}");
    let path = dir.join(format!("{id}.export"));
    match node.engine().export_snapshot(group, &path) {
        Ok(x) => {
            let size = fs::metadata(&path).map_or(0, |m| m.len());
            tracing::info!(group, index = x.index, term = x.term, size, "snapshot exported for a backup");
            Value::Array(Some(vec![
                Value::bulk(id),
                Value::Int(size as i64),
                Value::Int(x.index as i64),
                Value::Int(x.term as i64),
                Value::Int(i64::from(x.checksum)),
            ]))
        }
        Err(e) => {
            tracing::error!(group, "backup export failed: {e}");
            Value::err(format!("TRYAGAIN group {group}: export: {e}"))
        }
    }
}

/// `FLOTILLA.BACKUPREAD <id> <offset> <len>`.
pub fn backup_read(node: &Node, id: &[u8], offset: u64, len: usize) -> Value {
    let Some(path) = export_path(node, id) else { return err("malformed backup id") };
    sweep(node);
    if len == 0 || len > MAX_CHUNK {
        return err(format!("chunk length must be 1..={MAX_CHUNK}"));
    }
    let mut f = match File::open(&path) {
        Ok(f) => f,
        Err(_) => return err("no such backup export (read to its end already, or expired)"),
    };
    let size = match f.metadata() {
        Ok(m) => m.len(),
        Err(e) => return err(e),
    };
    if offset > size {
        return err(format!("offset {offset} past the export's {size} bytes"));
    }
    let want = (size - offset).min(len as u64) as usize;
    let mut buf = vec![0u8; want];
    if let Err(e) = f.seek(SeekFrom::Start(offset)).and_then(|_| f.read_exact(&mut buf)) {
        return err(e);
    }
    if offset + want as u64 >= size {
        let _ = fs::remove_file(&path);
    }
    Value::bulk(buf)
}

/// Refuses a restore of `group` here, with the reason, or `None`.
fn restore_refused(node: &Node, group: u64) -> Option<Value> {
    if !node.config().restore {
        return Some(err(format!(
            "node {} was not started with restore = true: a restore seeds a new cluster whose \
             bootstrap node founds no shard",
            node.id()
        )));
    }
    if !is_shard(node, group) {
        return Some(err(format!(
            "group {group} is not a shard of this cluster ({} shards)",
            node.config().shards
        )));
    }
    if node.engine().hosts(group) {
        return Some(err(format!("group {group} already holds data on node {}: not overwritten", node.id())));
    }
    None
}

/// `FLOTILLA.RESTOREPART <group> <offset> <bytes>`.
pub fn restore_part(node: &Node, group: u64, offset: u64, data: &[u8]) -> Value {
    if let Some(refused) = restore_refused(node, group) {
        return refused;
    }
    if data.len() > MAX_CHUNK {
        return err(format!("chunk longer than {MAX_CHUNK} bytes"));
    }
    let path = staging_path(node, group);
    if let Some(dir) = path.parent() {
        if let Err(e) = fs::create_dir_all(dir) {
            return err(format!("{}: {e}", dir.display()));
        }
    }
    let opened = if offset == 0 { File::create(&path) } else { OpenOptions::new().append(true).open(&path) };
    let mut f = match opened {
        Ok(f) => f,
        Err(e) => return err(format!("{}: {e}", path.display())),
    };
    let have = f.metadata().map_or(0, |m| m.len());
    if have != offset {
        return err(format!("offset {offset}, but {have} bytes received so far"));
    }
    match f.write_all(data).and_then(|_| f.sync_data()) {
        Ok(()) => Value::Int((have + data.len() as u64) as i64),
        Err(e) => err(format!("{}: {e}", path.display())),
    }
}

/// `FLOTILLA.RESTORE <group>`.
pub fn restore(node: &Node, group: u64) -> Value {
    if let Some(refused) = restore_refused(node, group) {
        return refused;
    }
    let path = staging_path(node, group);
    if !path.exists() {
        return err(format!("nothing received for group {group} (FLOTILLA.RESTOREPART first)"));
    }
    let opts = ImportOptions::new(group).with_members(vec![node.id()]);
    let r = node.engine().import_snapshot(&path, opts);
    let _ = fs::remove_file(&path);
    match r {
        Ok(x) => {
            tracing::info!(group, index = x.index, term = x.term, "shard restored from a backup");
            Value::Array(Some(vec![
                Value::Int(x.index as i64),
                Value::Int(x.term as i64),
                Value::Int(i64::from(x.checksum)),
            ]))
        }
        Err(ImportError::GroupExists(_)) => {
            err(format!("group {group} already holds data on node {}: not overwritten", node.id()))
        }
        Err(e) => {
            tracing::error!(group, "restore failed: {e}");
            err(format!("restore of group {group}: {e}"))
        }
    }
}

/// Runs one of this module's admin commands (`name` upper-cased), or `None` if `name`
/// is not one of them.
pub fn command(node: &Node, name: &str, args: &[Vec<u8>]) -> Option<Value> {
    // The split admin command rides this module's hook in the dispatcher (`commands`).
    if let Some(v) = crate::shard_split::command(node, name, args) {
        return Some(v);
    }
    let num = |b: &[u8]| std::str::from_utf8(b).ok().and_then(|s| s.parse::<u64>().ok());
    let bad = |usage: &str| Value::err(format!("ERR usage: {usage}"));
    Some(match (name, args) {
        ("FLOTILLA.BACKUP", [g]) => match num(g) {
            Some(g) => backup(node, g),
            None => bad("FLOTILLA.BACKUP <group>"),
        },
        ("FLOTILLA.BACKUPREAD", [id, off, len]) => match (num(off), num(len)) {
            (Some(off), Some(len)) => backup_read(node, id, off, usize::try_from(len).unwrap_or(usize::MAX)),
            _ => bad("FLOTILLA.BACKUPREAD <id> <offset> <len>"),
        },
        ("FLOTILLA.RESTOREPART", [g, off, data]) => match (num(g), num(off)) {
            (Some(g), Some(off)) => restore_part(node, g, off, data),
            _ => bad("FLOTILLA.RESTOREPART <group> <offset> <bytes>"),
        },
        ("FLOTILLA.RESTORE", [g]) => match num(g) {
            Some(g) => restore(node, g),
            None => bad("FLOTILLA.RESTORE <group>"),
        },
        ("FLOTILLA.BACKUP" | "FLOTILLA.BACKUPREAD" | "FLOTILLA.RESTOREPART" | "FLOTILLA.RESTORE", _) => {
            Value::err(format!("ERR wrong number of arguments for '{}' command", name.to_ascii_lowercase()))
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_ids_name_files_in_the_exports_directory_only() {
        assert_eq!(valid_id(b"1000-1733312345000000000"), Some("1000-1733312345000000000"));
        for bad in
            [&b""[..], b"1000", b"-1", b"1000-", b"../1-2", b"1-2/3", b"1-2.export", b"1-2-3", b"\xff-1"]
        {
            assert_eq!(valid_id(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
