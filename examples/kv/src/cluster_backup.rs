//! `flotilla-admin backup DIR` and `restore DIR`: the admin tool's side of backups.
//!
//! A backup directory holds one export file per shard (`group-<id>.export`, the engine's
//! self-describing, checksummed snapshot format) and `manifest.json` ([`Manifest`]),
//! written last: a directory without a manifest is an unfinished backup. Each shard is
//! exported by its leader after a read barrier (`FLOTILLA.BACKUP`), so its snapshot holds
//! every write acknowledged before the backup asked for it; it is streamed in chunks of
//! [`crate::backup::MAX_CHUNK`] and checked against its CRC32C on arrival.
//!
//! A restore seeds a new cluster: its seed must be a bootstrap node started with
//! `restore = true` and the backup's shard count, holding no shard yet. Every file is
//! checked before anything is sent; each is then sent in chunks (`FLOTILLA.RESTOREPART`)
//! and imported (`FLOTILLA.RESTORE`), and the restore waits until every shard has a
//! leader. The cluster then grows with `add-servers` as any other.
//!
//! Owns the directory's layout and the manifest. Never reads or writes a node's files
//! (the node's side is [`crate::backup`]).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::backup::MAX_CHUNK;
use crate::cluster::{Admin, AdminError};
use crate::resp::Value;
use crate::sm::{shard_group, NodeInfo, SHARD_BASE};

/// The manifest's file name in a backup directory.
pub const MANIFEST: &str = "manifest.json";
/// The manifest format written (and the only one read).
pub const FORMAT: u32 = 1;

/// `manifest.json`: what a backup holds. Field names are stable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version ([`FORMAT`]).
    pub format: u32,
    /// When the backup began, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// When its last shard was written, ms since the Unix epoch.
    pub finished_unix_ms: u64,
    /// The cluster's shard count.
    pub shards: u32,
    /// One entry per shard, in shard order.
    pub groups: Vec<ShardBackup>,
    /// The cluster's directory (node id to advertised addresses) when the backup began:
    /// for the record; a restore founds a new directory.
    pub directory: BTreeMap<u64, NodeInfo>,
}

/// One shard in a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardBackup {
    /// Its Raft group.
    pub group: u64,
    /// Its shard number.
    pub shard: u32,
    /// Its export file, relative to the backup directory.
    pub file: String,
    /// The log index the snapshot reflects.
    pub index: u64,
    /// The term of that entry.
    pub term: u64,
    /// The export file's size in bytes.
    pub bytes: u64,
    /// The export file's CRC32C (Castagnoli), also its last 4 bytes (little-endian).
    pub checksum: u32,
    /// The node that exported it.
    pub node: u64,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> AdminError {
    AdminError::Invalid(format!("{}: {e}", path.display()))
}

/// Checks an export file: its CRC32C over every byte before the last 4 equals those 4
/// bytes and `expected`. Returns its size.
pub fn check_export(path: &Path, expected: u32) -> Result<u64, AdminError> {
    let mut f = File::open(path).map_err(|e| io_err(path, e))?;
    let size = f.metadata().map_err(|e| io_err(path, e))?.len();
    if size < 4 {
        return Err(io_err(path, "too short to be an export file"));
    }
    let (mut crc, mut left, mut buf) = (0u32, size - 4, vec![0u8; 256 << 10]);
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        f.read_exact(&mut buf[..want]).map_err(|e| io_err(path, e))?;
        crc = crc32c::crc32c_append(crc, &buf[..want]);
        left -= want as u64;
    }
    let mut tail = [0u8; 4];
    f.read_exact(&mut tail).map_err(|e| io_err(path, e))?;
    let stored = u32::from_le_bytes(tail);
    if crc != stored || crc != expected {
        return Err(io_err(
            path,
            format!(
                "checksum mismatch: computed {crc:#010x}, stored {stored:#010x}, manifest {expected:#010x}"
            ),
        ));
    }
    Ok(size)
}

fn refused(what: &str, v: Value) -> AdminError {
    let msg = match v {
        Value::Error(m) => m,
        v => format!("unexpected reply {v:?}"),
    };
    AdminError::Refused { what: what.into(), msg }
}

fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

impl Admin {
    /// Backs the cluster at `seed` up into `dir` (created; must be empty): every shard at
    /// a read barrier taken after this call began. Returns the manifest written.
    pub fn backup(&self, seed: &str, dir: &Path) -> Result<Manifest, AdminError> {
        let started_unix_ms = unix_ms();
        if fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(AdminError::Invalid(format!("backup directory {} is not empty", dir.display())));
        }
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let st = self.node_status(seed)?;
        // Shards split off since the cluster was created follow on the configured ones
        // (`crate::shard_split`): the view names them.
        let split_off = self.view(seed)?.shard_groups().map(|g| g.group.saturating_sub(SHARD_BASE) + 1).max();
        let shards = split_off.map_or(st.shards, |n| st.shards.max(u32::try_from(n).unwrap_or(u32::MAX)));
        let mut groups = Vec::with_capacity(shards as usize);
        for shard in 0..shards {
            groups.push(self.backup_shard(seed, dir, shard)?);
        }
        let m = Manifest {
            format: FORMAT,
            started_unix_ms,
            finished_unix_ms: unix_ms(),
            shards,
            groups,
            directory: st.directory,
        };
        let json = serde_json::to_vec_pretty(&m).map_err(|e| AdminError::Invalid(e.to_string()))?;
        let (path, tmp) = (dir.join(MANIFEST), dir.join(format!("{MANIFEST}.tmp")));
        let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        f.write_all(&json).and_then(|_| f.sync_all()).map_err(|e| io_err(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err(dir, e))?;
        Ok(m)
    }

    /// Exports one shard at its leader and copies the file into `dir`.
    fn backup_shard(&self, seed: &str, dir: &Path, shard: u32) -> Result<ShardBackup, AdminError> {
        let group = shard_group(shard);
        let what = format!("backup of group {group}");
        let deadline = Instant::now() + self.step_timeout;
        loop {
            let view = self.view(seed)?;
            let g = view.groups.get(&group).cloned().unwrap_or_default();
            let node = g.leader.or_else(|| g.voters.first().copied());
            let addr = node.and_then(|n| view.nodes.get(&n).cloned());
            let (Some(node), Some(addr)) = (node, addr) else {
                if Instant::now() >= deadline {
                    return Err(AdminError::Invalid(format!("{what}: no replica found")));
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            match self.export_from(&addr, node, dir, shard, &what) {
                // The export moved away (read to its end by someone else, the node
                // restarted): try again while time is left.
                Err(AdminError::Refused { msg, .. }) if msg.contains("no such backup export") => {}
                Err(AdminError::Unreachable { .. }) if Instant::now() < deadline => {}
                r => return r,
            }
            if Instant::now() >= deadline {
                return Err(AdminError::Invalid(format!("{what}: gave up")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn export_from(
        &self,
        addr: &str,
        node: u64,
        dir: &Path,
        shard: u32,
        what: &str,
    ) -> Result<ShardBackup, AdminError> {
        let group = shard_group(shard);
        let v = self.retry(addr, what, &["FLOTILLA.BACKUP", &group.to_string()])?;
        let Value::Array(Some(parts)) = &v else { return Err(refused(what, v)) };
        let [Value::Bulk(Some(id)), size, index, term, checksum] = parts.as_slice() else {
            return Err(refused(what, v.clone()));
        };
        let (Some(size), Some(index), Some(term), Some(checksum)) =
            (int(size), int(index), int(term), int(checksum))
        else {
            return Err(refused(what, v.clone()));
        };
        let id = String::from_utf8_lossy(id).into_owned();
        let file = format!("group-{group}.export");
        let path = dir.join(&file);
        let mut out = File::create(&path).map_err(|e| io_err(&path, e))?;
        let unreachable = |error| AdminError::Unreachable { addr: addr.to_string(), error };
        let mut c = self.connect(addr)?;
        let mut offset = 0u64;
        while offset < size {
            let (off, len) = (offset.to_string(), MAX_CHUNK.to_string());
            match c
                .call(&["FLOTILLA.BACKUPREAD", id.as_str(), off.as_str(), len.as_str()])
                .map_err(unreachable)?
            {
                Value::Bulk(Some(b)) if !b.is_empty() => {
                    out.write_all(&b).map_err(|e| io_err(&path, e))?;
                    offset += b.len() as u64;
                }
                other => return Err(refused(what, other)),
            }
        }
        out.sync_all().map_err(|e| io_err(&path, e))?;
        let checksum =
            u32::try_from(checksum).map_err(|_| AdminError::Invalid(format!("{what}: bad checksum")))?;
        let bytes = check_export(&path, checksum)?;
        Ok(ShardBackup { group, shard, file, index, term, bytes, checksum, node })
    }

    /// Reads and checks `dir`'s manifest and files.
    pub fn read_backup(dir: &Path) -> Result<(Manifest, Vec<PathBuf>), AdminError> {
        let mp = dir.join(MANIFEST);
        let text = fs::read(&mp).map_err(|e| io_err(&mp, format!("{e} (not a finished backup?)")))?;
        let m: Manifest = serde_json::from_slice(&text).map_err(|e| io_err(&mp, e))?;
        if m.format != FORMAT {
            return Err(io_err(&mp, format!("format {} is not supported (only {FORMAT})", m.format)));
        }
        let complete = m.groups.len() == m.shards as usize
            && m.groups
                .iter()
                .enumerate()
                .all(|(i, g)| g.shard as usize == i && g.group == shard_group(g.shard));
        if !complete {
            return Err(io_err(&mp, "the manifest does not list every shard once, in order"));
        }
        let mut paths = Vec::with_capacity(m.groups.len());
        for g in &m.groups {
            if g.file.contains('/') || g.file.contains("..") {
                return Err(io_err(&mp, format!("bad file name {:?}", g.file)));
            }
            let p = dir.join(&g.file);
            let size = check_export(&p, g.checksum)?;
            if size != g.bytes {
                return Err(io_err(&p, format!("{size} bytes, the manifest says {}", g.bytes)));
            }
            paths.push(p);
        }
        Ok((m, paths))
    }

    /// Seeds the new cluster at `seed` (a bootstrap node started with `restore = true`)
    /// from the backup in `dir`, then waits until every shard has a leader. Refused before
    /// anything is sent if the shard counts differ or the cluster holds a shard already.
    pub fn restore(&self, seed: &str, dir: &Path) -> Result<Manifest, AdminError> {
        let (m, paths) = Admin::read_backup(dir)?;
        let st = self.node_status(seed)?;
        if st.shards != m.shards {
            return Err(AdminError::Invalid(format!(
                "the backup holds {} shards, the cluster at {seed} is configured with {}",
                m.shards, st.shards
            )));
        }
        let view = self.view(seed)?;
        let existing: Vec<u64> = view.shard_groups().map(|g| g.group).collect();
        if !existing.is_empty() {
            return Err(AdminError::Invalid(format!(
                "the cluster at {seed} already holds data (shard groups {existing:?}): a restore seeds a new \
                 cluster whose bootstrap node runs with restore = true"
            )));
        }
        let unreachable = |error| AdminError::Unreachable { addr: seed.to_string(), error };
        for (g, path) in m.groups.iter().zip(&paths) {
            let what = format!("restore of group {}", g.group);
            let mut c = self.connect(seed)?;
            let mut f = File::open(path).map_err(|e| io_err(path, e))?;
            let (mut offset, mut buf) = (0u64, vec![0u8; MAX_CHUNK]);
            loop {
                let n = read_full(&mut f, &mut buf).map_err(|e| io_err(path, e))?;
                if n == 0 && offset > 0 {
                    break;
                }
                let (gs, os) = (g.group.to_string(), offset.to_string());
                let args: [&[u8]; 4] = [b"FLOTILLA.RESTOREPART", gs.as_bytes(), os.as_bytes(), &buf[..n]];
                match c.call(&args).map_err(unreachable)? {
                    Value::Int(_) => offset += n as u64,
                    other => return Err(refused(&what, other)),
                }
                if n == 0 {
                    break;
                }
            }
            match c.call(&["FLOTILLA.RESTORE", g.group.to_string().as_str()]).map_err(unreachable)? {
                Value::Array(Some(_)) => {}
                other => return Err(refused(&what, other)),
            }
        }
        let deadline = Instant::now() + self.step_timeout;
        loop {
            let v = self.view(seed)?;
            let led = m.groups.iter().all(|g| v.groups.get(&g.group).is_some_and(|x| x.leader.is_some()));
            if led {
                return Ok(m);
            }
            if Instant::now() >= deadline {
                return Err(AdminError::Timeout {
                    what: "restored shards electing their leaders".into(),
                    secs: self.step_timeout.as_secs(),
                    msg: format!("{v:?}"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An export file's last 4 bytes are the CRC32C of the rest: a file that matches (and
    /// matches the manifest) passes; a flipped byte, a wrong manifest checksum or a short
    /// file are refused.
    #[test]
    fn check_export_verifies_the_stored_and_expected_checksum() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("g.export");
        let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let crc = crc32c::crc32c(&body);
        let mut file = body.clone();
        file.extend_from_slice(&crc.to_le_bytes());
        fs::write(&p, &file).unwrap();
        assert_eq!(check_export(&p, crc).unwrap(), file.len() as u64);
        assert!(check_export(&p, crc ^ 1).unwrap_err().to_string().contains("checksum mismatch"));
        file[1234] ^= 0x40;
        fs::write(&p, &file).unwrap();
        assert!(check_export(&p, crc).is_err());
        fs::write(&p, [1u8, 2]).unwrap();
        assert!(check_export(&p, crc).unwrap_err().to_string().contains("too short"));
    }
}
