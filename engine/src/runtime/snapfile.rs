//! Snapshot files: one file per (group, replica, index) under `data_dir/snap`, holding
//! the snapshot's metadata and the state machine's bytes.
//!
//! Owns the file format (magic, meta length, meta, data length, data), its mode (0600,
//! the directory 0700: a node's data is its owner's alone) and its crash-atomic write: the file is written under a temporary name, fsynced, renamed, and
//! the directory fsynced, so a file under its final name is always complete; lengths are
//! checked on load. A snapshot is written from a [`SnapshotSource`] chunk by chunk (by
//! offset, a failed read retried at the same offset) and read back for sending as a lazy
//! sequence of chunks ([`chunks`]), so neither holds the whole snapshot in memory. A
//! snapshot received from a leader is written in the same format to a `.partial` file
//! ([`partial_path`], [`partial_header`]: the data length is filled in last), which is
//! renamed into place only once complete and durable (a snapshot written here reaches the
//! disk in steps as it is written, [`super::writeback`]; a received one is synced in steps
//! by `snap_receive`); recovery never takes a `.partial`
//! (or `.tmp`) file for a snapshot and deletes it at open ([`remove_temporaries`]). Never
//! decides when to snapshot or which file is current: the WAL's group metadata names the
//! replica and index.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use super::writeback::WritebackPacer;
use crate::api::SnapshotSource;
use crate::raft::message::{Message, MessageBody, SnapshotChunk, SnapshotMeta};
use crate::raft::types::ReplicaId;
use crate::transport::codec::{decode_snapshot_meta, encode_snapshot_meta, DecodeLimits};

/// Reads of a source retried at the same offset before the snapshot is given up.
const READ_RETRIES: u32 = 3;

const MAGIC: &[u8; 8] = b"FLOSNAP1";

/// The path of the snapshot of replica `replica` of `group` at `index`.
pub(crate) fn path(dir: &Path, group: u64, replica: u64, index: u64) -> PathBuf {
    dir.join(format!("{group:016x}-{replica:016x}-{index:016x}.snap"))
}

/// The path of the partial file a snapshot for replica `replica` of `group` at `index` is
/// received into (never a name [`parse`] or recovery takes for a snapshot).
pub(crate) fn partial_path(dir: &Path, group: u64, replica: u64, index: u64) -> PathBuf {
    dir.join(format!("{group:016x}-{replica:016x}-{index:016x}.partial"))
}

/// The header of a snapshot file for `meta` whose data length is not known yet (written as
/// 0), and the file offset of that length (filled in by the receiver once the last chunk is
/// written). The data starts right after the header.
pub(crate) fn partial_header(meta: &SnapshotMeta) -> (Bytes, u64) {
    let mut m = BytesMut::new();
    encode_snapshot_meta(&mut m, meta);
    let mut h = BytesMut::with_capacity(MAGIC.len() + 16 + m.len());
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&(m.len() as u64).to_le_bytes());
    h.extend_from_slice(&m);
    let len_at = h.len() as u64;
    h.extend_from_slice(&0u64.to_le_bytes());
    (h.freeze(), len_at)
}

/// (group, replica, index) of a snapshot file name.
fn parse(name: &str) -> Option<(u64, u64, u64)> {
    let stem = name.strip_suffix(".snap")?;
    let mut it = stem.split('-').map(|p| u64::from_str_radix(p, 16).ok());
    let r = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(r)
}

/// Creates (or truncates) `path` for writing, readable and writable by its owner only
/// (mode 0600, also when it existed with another mode).
pub(crate) fn create_private(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(flotilla_wal::PRIVATE_FILE_MODE)
        .open(path)?;
    f.set_permissions(fs::Permissions::from_mode(flotilla_wal::PRIVATE_FILE_MODE))?;
    Ok(f)
}

/// Writes the snapshot crash-atomically (temporary file, fsync, rename, directory fsync).
pub(crate) fn save(dir: &Path, group: u64, replica: u64, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
    flotilla_wal::create_private_dir(dir)?;
    let final_path = path(dir, group, replica, meta.index);
    let tmp = final_path.with_extension("tmp");
    let mut m = BytesMut::new();
    encode_snapshot_meta(&mut m, meta);
    {
        let mut f = create_private(&tmp)?;
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

/// Writes the snapshot from `source` crash-atomically, reading it by offset in chunks of
/// `chunk` bytes (a failed read is retried at the same offset, [`READ_RETRIES`] times).
/// Returns the data's length.
pub(crate) fn save_from(
    dir: &Path,
    group: u64,
    replica: u64,
    meta: &SnapshotMeta,
    source: &mut dyn SnapshotSource,
    chunk: usize,
) -> io::Result<u64> {
    flotilla_wal::create_private_dir(dir)?;
    let final_path = path(dir, group, replica, meta.index);
    let tmp = final_path.with_extension("tmp");
    let mut m = BytesMut::new();
    encode_snapshot_meta(&mut m, meta);
    let mut len = 0u64;
    {
        let mut f = io::BufWriter::with_capacity(chunk.max(4096), create_private(&tmp)?);
        f.write_all(MAGIC)?;
        f.write_all(&(m.len() as u64).to_le_bytes())?;
        f.write_all(&m)?;
        let len_at = (MAGIC.len() + 8 + m.len()) as u64;
        f.write_all(&0u64.to_le_bytes())?;
        // The data's bytes reach the disk in steps as they are written, not in one burst
        // at the fsync below that would hold every other write of the disk (the WAL's).
        let mut pacer = WritebackPacer::new(0);
        let data_at = len_at + 8;
        let mut buf = vec![0u8; chunk.max(1)];
        let mut failures = 0;
        loop {
            match source.read_at(len, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let n = n.min(buf.len());
                    f.write_all(&buf[..n])?;
                    len += n as u64;
                    failures = 0;
                    if pacer.due(data_at + len) {
                        f.flush()?;
                        pacer.written_to(f.get_ref(), data_at + len);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failures += 1;
                    if failures > READ_RETRIES {
                        drop(f);
                        let _ = fs::remove_file(&tmp);
                        return Err(e);
                    }
                }
            }
        }
        let mut f = f.into_inner().map_err(|e| e.into_error())?;
        f.seek(SeekFrom::Start(len_at))?;
        f.write_all(&len.to_le_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &final_path)?;
    File::open(dir)?.sync_all()?;
    Ok(len)
}

/// Reads a file's header: its metadata and the data's offset and length, checking the
/// lengths against the file's size.
fn header(f: &mut File, index: u64) -> io::Result<(SnapshotMeta, u64, u64)> {
    let size = f.metadata()?.len();
    let mut head = [0u8; 16];
    f.read_exact(&mut head).map_err(|_| bad("not a snapshot file"))?;
    if &head[..8] != MAGIC {
        return Err(bad("not a snapshot file"));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&head[8..16]);
    let mlen = u64::from_le_bytes(n);
    if mlen.checked_add(24).map_or(true, |e| e > size) {
        return Err(bad("meta length"));
    }
    // mlen <= size: fits in memory as the file does.
    let mut mbuf = vec![0u8; usize::try_from(mlen).map_err(|_| bad("meta length"))?];
    f.read_exact(&mut mbuf)?;
    let (meta, _) =
        decode_snapshot_meta(&Bytes::from(mbuf), DecodeLimits::default()).map_err(|e| bad(&e.to_string()))?;
    f.read_exact(&mut n)?;
    let dlen = u64::from_le_bytes(n);
    let start = 24 + mlen;
    if start.checked_add(dlen) != Some(size) {
        return Err(bad("data length"));
    }
    if meta.index != index {
        return Err(bad("index differs from the file name"));
    }
    Ok((meta, start, dlen))
}

/// Reads the header of the open snapshot file `f` (named for `index`) and returns its
/// metadata and a reader of exactly its data (restoring a received snapshot from the file
/// handle taken when it was installed, so pruning the name meanwhile does not matter).
pub(crate) fn read_file(f: File, index: u64) -> io::Result<(SnapshotMeta, impl Read)> {
    read_file_len(f, index).map(|(meta, _, data)| (meta, data))
}

/// As [`read_file`], with the data's length (an export streams the data after a header
/// that states it).
pub(crate) fn read_file_len(mut f: File, index: u64) -> io::Result<(SnapshotMeta, u64, impl Read)> {
    f.seek(SeekFrom::Start(0))?;
    let (meta, start, len) = header(&mut f, index)?;
    f.seek(SeekFrom::Start(start))?;
    Ok((meta, len, io::BufReader::new(f).take(len)))
}

/// Opens the snapshot of replica `replica` of `group` at `index` for reading its data as
/// a stream (restore on open): its metadata and a reader of exactly the data.
pub(crate) fn open(
    dir: &Path,
    group: u64,
    replica: u64,
    index: u64,
) -> io::Result<(SnapshotMeta, impl Read)> {
    let mut f = File::open(path(dir, group, replica, index))?;
    let (meta, start, len) = header(&mut f, index)?;
    f.seek(SeekFrom::Start(start))?;
    Ok((meta, io::BufReader::new(f).take(len)))
}

/// The chunks of a snapshot stream from replica `from` to `to` in `term`, read lazily from
/// the file (`chunk` data bytes each, from data offset `offset` rounded down to a multiple
/// of `chunk`). The last chunk is always sent, even from an offset at or past the end, so
/// a receiver that no longer holds what it reported sees the stream and says so.
/// Fails at once if the file is missing or is not the snapshot `meta` names.
pub(crate) fn chunks(
    dir: &Path,
    group: u64,
    (from, to, term): (ReplicaId, ReplicaId, u64),
    meta: &SnapshotMeta,
    offset: u64,
    chunk: usize,
) -> io::Result<impl Iterator<Item = io::Result<Message>> + Send + 'static> {
    let mut f = File::open(path(dir, group, from, meta.index))?;
    let (file_meta, start, len) = header(&mut f, meta.index)?;
    if &file_meta != meta {
        return Err(bad("snapshot file holds other metadata"));
    }
    let chunk = chunk.max(1) as u64;
    let offset = offset.min(len.saturating_sub(1)) / chunk * chunk;
    f.seek(SeekFrom::Start(start + offset))?;
    let count = len.div_ceil(chunk).max(1);
    let meta = meta.clone();
    let mut seq = offset / chunk;
    Ok(std::iter::from_fn(move || {
        if seq >= count {
            return None;
        }
        let at = seq * chunk;
        let n = chunk.min(len - at);
        // n <= chunk, which came from a usize.
        let mut data = vec![0u8; n as usize];
        let r = f.read_exact(&mut data).map(|()| Message {
            from,
            to,
            term,
            body: MessageBody::SnapshotChunk(SnapshotChunk {
                meta: meta.clone(),
                seq: u32::try_from(seq).unwrap_or(u32::MAX),
                offset: at,
                last: seq + 1 == count,
                data: Bytes::from(data),
            }),
        });
        // A failed read ends the stream after reporting it.
        seq = if r.is_ok() { seq + 1 } else { count };
        Some(r)
    }))
}

fn bad(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

/// Reads the whole snapshot of replica `replica` of `group` at `index` (tests; the engine
/// streams with [`open`] and [`chunks`]).
#[cfg(test)]
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

/// Deletes the temporary files a crash left behind (snapshots whose write never
/// finished, and partially received snapshots: their durable length is not proven, so
/// they are never resumed). Called at open, before anything writes snapshots.
pub(crate) fn remove_temporaries(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if e.path().extension().is_some_and(|x| x == "tmp" || x == "partial") {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Tests (failpoint `engine::snapshot_prune`, `return(<part>:<ms>)`): deleting files in a
/// directory whose path contains `<part>` first sleeps `<ms>`, as unlinking a large file
/// on a busy disk does.
fn slow_prune_hook(dir: &Path) {
    let _ = dir;
    fail::fail_point!("engine::snapshot_prune", |arg: Option<String>| {
        let Some((part, ms)) = arg.as_deref().and_then(|a| a.rsplit_once(':')) else { return };
        if dir.to_string_lossy().contains(part) {
            std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap_or(0)));
        }
    });
}

/// Deletes the snapshot files of `group` that `doomed(replica, index)` selects.
pub(crate) fn prune(dir: &Path, group: u64, doomed: impl Fn(u64, u64) -> bool) {
    slow_prune_hook(dir);
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
        let tmp = path(dir.path(), 3, 1, 11).with_extension("tmp");
        fs::write(&tmp, b"half a snapshot").unwrap();
        let partial = partial_path(dir.path(), 3, 1, 12);
        fs::write(&partial, b"half a received snapshot").unwrap();
        assert_eq!(parse("0000000000000003-0000000000000001-000000000000000c.partial"), None);
        remove_temporaries(dir.path());
        assert!(!tmp.exists() && !partial.exists());
        assert!(!p.exists());
        assert!(load(dir.path(), 3, 1, 9).is_ok());
        assert!(load(dir.path(), 4, 1, 7).is_ok(), "other groups untouched");
        assert_eq!(parse("zz.snap"), None);
    }

    /// A partial file written as the receiver writes it (header, data at the header's end,
    /// the length filled in last) is a valid snapshot file, read back by handle.
    #[test]
    fn partial_header_then_length_makes_a_snapshot_file() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let meta = SnapshotMeta { index: 9, term: 3, conf: ConfState::with_voters([Replica::new(1, 1)]) };
        let (h, len_at) = partial_header(&meta);
        let p = partial_path(dir.path(), 5, 2, 9);
        let f = create_private(&p).unwrap();
        f.write_all_at(&h, 0).unwrap();
        f.write_all_at(b"world", h.len() as u64 + 5).unwrap();
        f.write_all_at(b"hello", h.len() as u64).unwrap();
        assert!(read_file(File::open(&p).unwrap(), 9).is_err(), "length not filled in yet");
        f.write_all_at(&10u64.to_le_bytes(), len_at).unwrap();
        drop(f);
        let (m, mut r) = read_file(File::open(&p).unwrap(), 9).unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!((m, &back[..]), (meta, &b"helloworld"[..]));
    }

    /// Gives its bytes in reads of at most 7, failing every third read once (the writer
    /// retries at the same offset).
    struct Flaky {
        data: Vec<u8>,
        calls: u32,
    }

    impl SnapshotSource for Flaky {
        fn reflects(&self) -> (u64, u64) {
            (7, 2)
        }
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls % 3 == 0 {
                return Err(io::Error::other("transient"));
            }
            let at = (offset as usize).min(self.data.len());
            let n = buf.len().min(7).min(self.data.len() - at);
            buf[..n].copy_from_slice(&self.data[at..at + n]);
            Ok(n)
        }
    }

    /// Gives `len` bytes of a pattern, in reads as large as asked.
    struct Pattern {
        len: u64,
    }

    impl SnapshotSource for Pattern {
        fn reflects(&self) -> (u64, u64) {
            (7, 2)
        }
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
            let n = (buf.len() as u64).min(self.len.saturating_sub(offset)) as usize;
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = ((offset + i as u64) % 251) as u8;
            }
            Ok(n)
        }
    }

    /// A large snapshot reaches the disk in steps as it is written (see `writeback`), and
    /// reads back byte for byte.
    #[test]
    fn a_large_snapshot_is_written_back_in_steps() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SnapshotMeta { index: 7, term: 2, conf: ConfState::with_voters([Replica::new(1, 1)]) };
        let len = 3 * super::super::writeback::WRITEBACK_STEP + 12_345;
        let steps = &super::super::writeback::STEPS_STARTED;
        let before = steps.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(save_from(dir.path(), 3, 1, &meta, &mut Pattern { len }, 256 << 10).unwrap(), len);
        // Other tests may write back steps meanwhile: at least this file's three.
        assert!(steps.load(std::sync::atomic::Ordering::Relaxed) - before >= 3);
        let (m, d) = load(dir.path(), 3, 1, 7).unwrap();
        assert_eq!(m, meta);
        assert_eq!(d.len() as u64, len);
        assert!(d.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    }

    #[test]
    fn streamed_save_resumes_reads_and_chunks_read_lazily() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SnapshotMeta { index: 7, term: 2, conf: ConfState::with_voters([Replica::new(1, 1)]) };
        let data: Vec<u8> = (0..100u8).collect();
        let mut src = Flaky { data: data.clone(), calls: 0 };
        assert_eq!(save_from(dir.path(), 3, 1, &meta, &mut src, 16).unwrap(), 100);
        let (m, d) = load(dir.path(), 3, 1, 7).unwrap();
        assert_eq!((m, &d[..]), (meta.clone(), &data[..]));
        let mut r = open(dir.path(), 3, 1, 7).unwrap().1;
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        // Chunks of 30 bytes: 4 of them, the last flagged; from offset 60 only the last 2.
        let all: Vec<Message> =
            chunks(dir.path(), 3, (1, 2, 5), &meta, 0, 30).unwrap().map(|m| m.unwrap()).collect();
        assert_eq!(all.len(), 4);
        let mut joined = Vec::new();
        for (i, m) in all.iter().enumerate() {
            let MessageBody::SnapshotChunk(c) = &m.body else { panic!("not a chunk") };
            assert_eq!((c.seq as usize, c.offset, c.last), (i, i as u64 * 30, i == 3));
            assert_eq!((m.from, m.to, m.term), (1, 2, 5));
            joined.extend_from_slice(&c.data);
        }
        assert_eq!(joined, data);
        let tail: Vec<Message> =
            chunks(dir.path(), 3, (1, 2, 5), &meta, 60, 30).unwrap().map(|m| m.unwrap()).collect();
        assert_eq!(tail.len(), 2);
        assert!(matches!(&tail[0].body, MessageBody::SnapshotChunk(c) if c.seq == 2 && c.offset == 60));
        // From the end (or past it): the last chunk still goes.
        for from in [100, 1000] {
            let end: Vec<Message> =
                chunks(dir.path(), 3, (1, 2, 5), &meta, from, 30).unwrap().map(|m| m.unwrap()).collect();
            assert!(
                matches!(&end[..], [m] if matches!(&m.body, MessageBody::SnapshotChunk(c) if c.last && c.offset == 90))
            );
        }
        // Metadata other than the file's is refused.
        let other = SnapshotMeta { term: 3, ..meta.clone() };
        assert!(chunks(dir.path(), 3, (1, 2, 5), &other, 0, 30).is_err());
        // A source that keeps failing gives the snapshot up and leaves no file.
        struct Broken;
        impl SnapshotSource for Broken {
            fn reflects(&self) -> (u64, u64) {
                (9, 2)
            }
            fn read_at(&mut self, _: u64, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("gone"))
            }
        }
        let m9 = SnapshotMeta { index: 9, ..meta };
        assert!(save_from(dir.path(), 3, 1, &m9, &mut Broken, 16).is_err());
        assert!(
            !path(dir.path(), 3, 1, 9).exists() && !path(dir.path(), 3, 1, 9).with_extension("tmp").exists()
        );
    }
}
