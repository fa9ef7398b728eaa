//! A persistent state machine for the process-level crash tests: it keeps its own state
//! in its own fsynced file and reports `applied_index()` from it, so the engine must never
//! hand it an entry twice nor skip one across crashes.
//!
//! The file is a sequence of 16-byte records (index, value), one per applied entry from
//! index 1, written and fdatasynced at every apply: its record count is the counter, the
//! last record's index the applied index. It applies whatever it is given and records it,
//! so a duplicated or skipped index is visible to the checker ([`check`]) rather than a
//! panic in the engine's worker. A snapshot is the whole file; a restore replaces it
//! atomically (temporary file, fsync, rename, directory fsync).
#![allow(dead_code, clippy::unwrap_used)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use flotilla_engine::api::StateMachine;

/// Bytes of one record.
pub const RECORD: usize = 16;

/// The value a record holds for an entry without a command (no-op, membership change).
pub const NO_COMMAND: u64 = 0;

/// The state machine of one replica, backed by `dir/<group>.sm`.
pub struct FileSm {
    path: PathBuf,
    file: File,
    /// Records in the file.
    count: u64,
    /// Index of the last record.
    applied: u64,
}

/// The file of `group`'s state machine in `dir`.
pub fn path(dir: &Path, group: u64) -> PathBuf {
    dir.join(format!("{group}.sm"))
}

/// The records of a file: (index, value) pairs; a torn trailing record is ignored.
pub fn parse(bytes: &[u8]) -> Vec<(u64, u64)> {
    bytes
        .chunks_exact(RECORD)
        .map(|c| {
            (u64::from_le_bytes(c[..8].try_into().unwrap()), u64::from_le_bytes(c[8..].try_into().unwrap()))
        })
        .collect()
}

/// Reads `group`'s records in `dir` (empty if there is no file).
pub fn read(dir: &Path, group: u64) -> Vec<(u64, u64)> {
    std::fs::read(path(dir, group)).map(|b| parse(&b)).unwrap_or_default()
}

/// Checks that the records apply every index exactly once from 1, in order: returns the
/// values in index order, or a description of the first duplicate or gap.
pub fn check(records: &[(u64, u64)]) -> Result<Vec<u64>, String> {
    for (i, &(index, _)) in records.iter().enumerate() {
        if index != i as u64 + 1 {
            let around = &records[i.saturating_sub(3)..(i + 3).min(records.len())];
            return Err(format!(
                "record {i} holds index {index} (applied twice or skipped); (index, value) around it: {around:x?}"
            ));
        }
    }
    Ok(records.iter().map(|r| r.1).collect())
}

impl FileSm {
    /// Opens (or creates) `group`'s state machine in `dir`.
    pub fn open(dir: &Path, group: u64) -> FileSm {
        std::fs::create_dir_all(dir).unwrap();
        let path = path(dir, group);
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).unwrap();
        let mut bytes = Vec::new();
        (&file).read_to_end(&mut bytes).unwrap();
        let recs = parse(&bytes);
        let applied = recs.last().map_or(0, |r| r.0);
        FileSm { path, file, count: recs.len() as u64, applied }
    }

    pub fn boxed(dir: &Path, group: u64) -> Box<dyn StateMachine> {
        Box::new(FileSm::open(dir, group))
    }
}

impl StateMachine for FileSm {
    fn apply(&mut self, index: u64, _term: u64, command: Option<&[u8]>) -> Bytes {
        let value = command.map_or(NO_COMMAND, |c| {
            c.get(..8).map_or(u64::MAX, |b| u64::from_le_bytes(b.try_into().unwrap()))
        });
        let mut rec = [0u8; RECORD];
        rec[..8].copy_from_slice(&index.to_le_bytes());
        rec[8..].copy_from_slice(&value.to_le_bytes());
        self.file.write_all_at(&rec, self.count * RECORD as u64).unwrap();
        self.file.sync_data().unwrap();
        self.count += 1;
        self.applied = index;
        Bytes::copy_from_slice(&index.to_le_bytes())
    }

    fn applied_index(&self) -> u64 {
        self.applied
    }

    fn snapshot(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut buf = vec![0u8; self.count as usize * RECORD];
        self.file.read_exact_at(&mut buf, 0)?;
        out.write_all(&buf)
    }

    fn restore(&mut self, index: u64, _term: u64, input: &mut dyn Read) -> std::io::Result<()> {
        let mut buf = Vec::new();
        input.read_to_end(&mut buf)?;
        let recs = parse(&buf);
        if recs.last().map_or(0, |r| r.0) != index {
            return Err(std::io::Error::other(format!("snapshot does not end at {index}")));
        }
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        self.count = recs.len() as u64;
        self.applied = index;
        Ok(())
    }
}
