//! Snapshot files: one file per (group, replica, index) under `data_dir/snap`, holding
//! the snapshot's metadata and the state machine's bytes.
//!
//! Owns the file format (magic, meta length, meta, data length, data) and its
//! crash-atomic write: the file is written under a temporary name, fsynced, renamed, and
//! the directory fsynced, so a file under its final name is always complete; lengths are
//! checked on load. Never decides when to snapshot or which file is current: the WAL's
//! group metadata names the replica and index.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use crate::raft::message::SnapshotMeta;
use crate::transport::codec::{decode_snapshot_meta, encode_snapshot_meta, DecodeLimits};

const MAGIC: &[u8; 8] = b"FLOSNAP1";

/// The path of the snapshot of replica `replica` of `group` at `index`.
pub(crate) fn path(dir: &Path, group: u64, replica: u64, index: u64) -> PathBuf {
    dir.join(format!("{group:016x}-{replica:016x}-{index:016x}.snap"))
}

/// (group, replica, index) of a snapshot file name.
fn parse(name: &str) -> Option<(u64, u64, u64)> {
    let stem = name.strip_suffix(".snap")?;
    let mut it = stem.split('-').map(|p| u64::from_str_radix(p, 16).ok());
    let r = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(r)
}

/// Writes the snapshot crash-atomically (temporary file, fsync, rename, directory fsync).
pub(crate) fn save(dir: &Path, group: u64, replica: u64, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let final_path = path(dir, group, replica, meta.index);
    let tmp = final_path.with_extension("tmp");
    let mut m = BytesMut::new();
    encode_snapshot_meta(&mut m, meta);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(&(m.len() as u64).to_le_bytes())?;
        f.write_all(&m)?;
        f.write_all(&(data.len() as u64).to_le_bytes())?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &final_path)?;
    File::open(dir)?.sync_all()
}

fn bad(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

/// Reads the snapshot of replica `replica` of `group` at `index`.
pub(crate) fn load(dir: &Path, group: u64, replica: u64, index: u64) -> io::Result<(SnapshotMeta, Bytes)> {
    let mut f = File::open(path(dir, group, replica, index))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let buf = Bytes::from(buf);
    if buf.len() < 16 || &buf[..8] != MAGIC {
        return Err(bad("not a snapshot file"));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&buf[8..16]);
    let mlen = usize::try_from(u64::from_le_bytes(n)).map_err(|_| bad("meta length"))?;
    let mend = 16usize
        .checked_add(mlen)
        .filter(|&e| e.checked_add(8).is_some_and(|x| x <= buf.len()))
        .ok_or_else(|| bad("meta length"))?;
    let (meta, _) = decode_snapshot_meta(&buf.slice(16..mend), DecodeLimits::default())
        .map_err(|e| bad(&e.to_string()))?;
    n.copy_from_slice(&buf[mend..mend + 8]);
    let dlen = usize::try_from(u64::from_le_bytes(n)).map_err(|_| bad("data length"))?;
    if (mend + 8).checked_add(dlen) != Some(buf.len()) {
        return Err(bad("data length"));
    }
    if meta.index != index {
        return Err(bad("index differs from the file name"));
    }
    Ok((meta, buf.slice(mend + 8..)))
}

/// Deletes the snapshot files of `group` that `doomed(replica, index)` selects.
pub(crate) fn prune(dir: &Path, group: u64, doomed: impl Fn(u64, u64) -> bool) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some((g, r, i)) = name.to_str().and_then(parse) else { continue };
        if g == group && doomed(r, i) {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::conf::ConfState;
    use crate::raft::types::Replica;

    #[test]
    fn save_load_prune() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SnapshotMeta { index: 7, term: 2, conf: ConfState::with_voters([Replica::new(1, 1)]) };
        save(dir.path(), 3, 1, &meta, b"hello").unwrap();
        let (m, d) = load(dir.path(), 3, 1, 7).unwrap();
        assert_eq!((m, &d[..]), (meta.clone(), &b"hello"[..]));
        assert!(load(dir.path(), 3, 1, 8).is_err());
        let p = path(dir.path(), 3, 1, 7);
        let mut bytes = fs::read(&p).unwrap();
        bytes.truncate(bytes.len() - 1);
        fs::write(&p, &bytes).unwrap();
        assert!(load(dir.path(), 3, 1, 7).is_err(), "a truncated file is refused");
        save(dir.path(), 3, 1, &SnapshotMeta { index: 9, ..meta.clone() }, b"x").unwrap();
        save(dir.path(), 4, 1, &meta, b"other group").unwrap();
        prune(dir.path(), 3, |_, i| i < 9);
        assert!(!p.exists());
        assert!(load(dir.path(), 3, 1, 9).is_ok());
        assert!(load(dir.path(), 4, 1, 7).is_ok(), "other groups untouched");
        assert_eq!(parse("zz.snap"), None);
    }
}
