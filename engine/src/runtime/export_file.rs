//! The export file of one group's snapshot (`Engine::export_snapshot`, read back by
//! `Engine::import_snapshot`): a self-describing, checksummed file that can move between
//! engines and clusters.
//!
//! Format (integers little-endian): magic `FLOEXPRT` (8 bytes), format version (u32, 1),
//! group id (u64), metadata length (u64) and the metadata (index, term, configuration, in
//! the wire codec's snapshot-metadata encoding), data length (u64), the state machine's
//! bytes, then the CRC32C (Castagnoli, u32) of every byte before it.
//!
//! Owns the format, its crash-atomic write (temporary name, fsync, rename, directory
//! fsync) and its validation on read (magic, version, lengths, checksum). Both stream:
//! neither holds the state machine's bytes in memory. Never decides what is exported or
//! how an import becomes a replica (`runtime/import.rs`).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use super::snapfile::create_private;
use crate::raft::message::SnapshotMeta;
use crate::transport::codec::{decode_snapshot_meta, encode_snapshot_meta, DecodeLimits};

/// The file's first bytes.
pub(crate) const MAGIC: &[u8; 8] = b"FLOEXPRT";
/// The format version written (and the only one read).
pub(crate) const VERSION: u32 = 1;
/// Largest metadata accepted on read (a configuration is a few hundred bytes).
const MAX_META: u64 = 1 << 20;
/// Bytes copied per read.
const CHUNK: usize = 256 << 10;

/// What an export file holds, besides the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub group: u64,
    pub meta: SnapshotMeta,
    pub data_len: u64,
}

/// Why a file could not be read as an export.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// Not an intact export: what is wrong, and at which byte.
    Corrupt { offset: u64, why: String },
    /// A format version this code does not read.
    Version(u32),
    /// Reading failed.
    Io(io::Error),
}

/// The path `path` is written under before its rename.
fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Writes an export of `group` at `meta` to `path` crash-atomically, streaming exactly
/// `data_len` bytes of state-machine data from `data`. Returns the file's checksum.
pub(crate) fn write(
    path: &Path,
    group: u64,
    meta: &SnapshotMeta,
    data_len: u64,
    data: &mut dyn Read,
) -> io::Result<u32> {
    let tmp = tmp_path(path);
    let r = write_tmp(&tmp, group, meta, data_len, data);
    let crc = match r {
        Ok(crc) => crc,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()?;
    Ok(crc)
}

fn write_tmp(
    tmp: &Path,
    group: u64,
    meta: &SnapshotMeta,
    data_len: u64,
    data: &mut dyn Read,
) -> io::Result<u32> {
    let mut m = BytesMut::new();
    encode_snapshot_meta(&mut m, meta);
    let mut head = Vec::with_capacity(36 + m.len());
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&group.to_le_bytes());
    head.extend_from_slice(&(m.len() as u64).to_le_bytes());
    head.extend_from_slice(&m);
    head.extend_from_slice(&data_len.to_le_bytes());
    let mut f = io::BufWriter::with_capacity(CHUNK, create_private(tmp)?);
    f.write_all(&head)?;
    let mut crc = crc32c::crc32c(&head);
    let mut buf = vec![0u8; CHUNK];
    let mut left = data_len;
    while left > 0 {
        // min(left, CHUNK) fits in a usize.
        let want = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
        let n = data.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "snapshot data shorter than its length",
            ));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.write_all(&crc.to_le_bytes())?;
    let f = f.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    Ok(crc)
}

/// Reads an export file as a stream: [`Reader::open`] checks the header, [`Reader::data`]
/// yields the data (checksummed as it goes), [`Reader::finish`] checks the checksum and
/// that nothing follows it. Data read before `finish` succeeds is not yet proven intact.
pub(crate) struct Reader {
    f: io::BufReader<File>,
    crc: u32,
    pos: u64,
    header: Header,
    left: u64,
}

impl Reader {
    /// Opens `path` and validates its header against the file's size.
    pub(crate) fn open(path: &Path) -> Result<Reader, ReadError> {
        let file = File::open(path).map_err(ReadError::Io)?;
        let size = file.metadata().map_err(ReadError::Io)?.len();
        let mut r = Reader {
            f: io::BufReader::with_capacity(CHUNK, file),
            crc: 0,
            pos: 0,
            header: Header { group: 0, meta: SnapshotMeta::default(), data_len: 0 },
            left: 0,
        };
        let magic = r.take_bytes(8)?;
        if magic[..] != MAGIC[..] {
            return Err(ReadError::Corrupt {
                offset: 0,
                why: "not a flotilla snapshot export (magic)".into(),
            });
        }
        let version = u32::from_le_bytes(r.array::<4>()?);
        if version != VERSION {
            return Err(ReadError::Version(version));
        }
        let group = u64::from_le_bytes(r.array::<8>()?);
        let mlen_at = r.pos;
        let mlen = u64::from_le_bytes(r.array::<8>()?);
        if mlen > MAX_META || mlen > size {
            return Err(ReadError::Corrupt { offset: mlen_at, why: format!("metadata length {mlen}") });
        }
        // mlen <= MAX_META: fits in memory.
        let mbuf = r.take_bytes(mlen as usize)?;
        let meta = match decode_snapshot_meta(&Bytes::from(mbuf), DecodeLimits::default()) {
            Ok((m, used)) if used as u64 == mlen => m,
            Ok(_) => return Err(ReadError::Corrupt { offset: mlen_at + 8, why: "metadata length".into() }),
            Err(e) => return Err(ReadError::Corrupt { offset: mlen_at + 8, why: format!("metadata: {e}") }),
        };
        let dlen_at = r.pos;
        let data_len = u64::from_le_bytes(r.array::<8>()?);
        if r.pos.checked_add(data_len).and_then(|e| e.checked_add(4)) != Some(size) {
            return Err(ReadError::Corrupt {
                offset: dlen_at,
                why: format!("data length {data_len} does not match the file's size {size}"),
            });
        }
        r.header = Header { group, meta, data_len };
        r.left = data_len;
        Ok(r)
    }

    /// The header.
    pub(crate) fn header(&self) -> &Header {
        &self.header
    }

    /// The data, exactly `data_len` bytes, checksummed as it is read.
    pub(crate) fn data(&mut self) -> &mut dyn Read {
        self
    }

    /// Checks the checksum (every data byte must have been read) and the file's end.
    pub(crate) fn finish(mut self) -> Result<u32, ReadError> {
        if self.left > 0 {
            // Read the rest so the checksum covers every byte.
            io::copy(&mut self, &mut io::sink()).map_err(ReadError::Io)?;
        }
        let at = self.pos;
        let want = self.crc;
        let mut stored = [0u8; 4];
        self.f
            .read_exact(&mut stored)
            .map_err(|_| ReadError::Corrupt { offset: at, why: "no checksum".into() })?;
        let stored = u32::from_le_bytes(stored);
        if stored != want {
            return Err(ReadError::Corrupt {
                offset: at,
                why: format!("checksum mismatch: stored {stored:#010x}, computed {want:#010x}"),
            });
        }
        Ok(stored)
    }

    fn take_bytes(&mut self, n: usize) -> Result<Vec<u8>, ReadError> {
        let mut b = vec![0u8; n];
        let at = self.pos;
        self.f.read_exact(&mut b).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => ReadError::Corrupt { offset: at, why: "truncated header".into() },
            _ => ReadError::Io(e),
        })?;
        self.crc = crc32c::crc32c_append(self.crc, &b);
        self.pos += n as u64;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ReadError> {
        let v = self.take_bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&v);
        Ok(a)
    }
}

impl Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.left).unwrap_or(usize::MAX).min(buf.len());
        let n = self.f.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "export data truncated"));
        }
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.pos += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::conf::ConfState;
    use crate::raft::types::Replica;

    fn meta() -> SnapshotMeta {
        SnapshotMeta { index: 42, term: 3, conf: ConfState::with_voters((1..=3).map(|i| Replica::new(i, i))) }
    }

    fn read_all(path: &Path) -> Result<(Header, Vec<u8>, u32), ReadError> {
        let mut r = Reader::open(path)?;
        let h = r.header().clone();
        let mut data = Vec::new();
        r.data().read_to_end(&mut data).map_err(ReadError::Io)?;
        let crc = r.finish()?;
        Ok((h, data, crc))
    }

    #[test]
    fn round_trip_and_every_flipped_byte_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g7.export");
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let crc = write(&p, 7, &meta(), data.len() as u64, &mut &data[..]).unwrap();
        assert!(!tmp_path(&p).exists());
        let (h, back, c) = read_all(&p).unwrap();
        assert_eq!((h.group, h.meta, h.data_len, back, c), (7, meta(), 1000, data.clone(), crc));
        let good = fs::read(&p).unwrap();
        assert_eq!(crc32c::crc32c(&good[..good.len() - 4]), crc);
        for at in (0..good.len()).step_by(37).chain([good.len() - 1]) {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            fs::write(&p, &bad).unwrap();
            match read_all(&p) {
                Err(ReadError::Corrupt { .. }) | Err(ReadError::Version(_)) => {}
                other => panic!("flipped byte {at} accepted: {:?}", other.map(|(h, _, c)| (h, c))),
            }
        }
        // Truncated, or with bytes appended: refused on the lengths.
        fs::write(&p, &good[..good.len() - 1]).unwrap();
        assert!(matches!(Reader::open(&p), Err(ReadError::Corrupt { .. })));
        let mut longer = good.clone();
        longer.push(0);
        fs::write(&p, &longer).unwrap();
        assert!(matches!(Reader::open(&p), Err(ReadError::Corrupt { .. })));
    }

    #[test]
    fn short_data_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.export");
        assert!(write(&p, 1, &meta(), 10, &mut &b"short"[..]).is_err());
        assert!(!p.exists() && !tmp_path(&p).exists());
    }
}
