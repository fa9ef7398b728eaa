//! The node's incarnation: a number persisted in the data directory and bumped (durably)
//! at every open, so that anything a life of the node names — ReadIndex request contexts —
//! is unique across restarts whatever the wall clock does.
//!
//! Owns the file `incarnation` in the data directory and the layout of read contexts
//! (incarnation in the high bits, a per-worker counter in the low bits). Never reads a
//! clock, and never writes the file anywhere but at open (temporary file, fsync, rename,
//! directory fsync: a crash leaves the old or the new number, never a torn one).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

/// The file's name in the data directory.
pub(crate) const FILE: &str = "incarnation";
const MAGIC: &[u8; 8] = b"FLINCv1\0";
/// Bits of a read context that hold the counter; the incarnation takes the rest.
pub(crate) const COUNTER_BITS: u32 = 40;
const COUNTER_MASK: u64 = (1 << COUNTER_BITS) - 1;

/// Reads the previous incarnation (0 if the file does not exist), stores the next one
/// durably and returns it. An unreadable or corrupt file is an error, not a reset: a reset
/// could repeat an earlier life's numbers.
pub(crate) fn bump(dir: &Path) -> io::Result<u64> {
    let path = dir.join(FILE);
    let prev = match File::open(&path) {
        Ok(mut f) => {
            let mut buf = Vec::with_capacity(24);
            Read::by_ref(&mut f).take(64).read_to_end(&mut buf)?;
            decode(&buf).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{} is corrupt", path.display()))
            })?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    let next = prev.checked_add(1).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{}: incarnation exhausted", path.display()))
    })?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    {
        let mut f = super::snapfile::create_private(&tmp)?;
        f.write_all(&encode(next))?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(next)
}

fn encode(n: u64) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[..8].copy_from_slice(MAGIC);
    b[8..16].copy_from_slice(&n.to_le_bytes());
    b[16..24].copy_from_slice(&check(n).to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Option<u64> {
    if b.len() != 24 || &b[..8] != MAGIC {
        return None;
    }
    let n = u64::from_le_bytes(b[8..16].try_into().ok()?);
    let c = u64::from_le_bytes(b[16..24].try_into().ok()?);
    (c == check(n)).then_some(n)
}

fn check(n: u64) -> u64 {
    // Any bit flip in the number changes this (a multiply by an odd constant is a
    // bijection; the xor keeps 0 from checking as 0).
    (n ^ 0x5bd1_e995_9e37_79b9).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Read contexts of one worker in one life: `incarnation` in the high bits, a counter in
/// the low [`COUNTER_BITS`] bits. The counter wraps within the life's range (after 2^40
/// reads, long after any earlier read with the same context timed out), never into
/// another life's.
#[derive(Debug)]
pub(crate) struct ReadCtx {
    base: u64,
    next: u64,
}

impl ReadCtx {
    /// Contexts of life `incarnation` (its low 24 bits: lives 2^24 opens apart share a
    /// range, long after any answer to the earlier one could arrive).
    pub(crate) fn new(incarnation: u64) -> ReadCtx {
        ReadCtx { base: incarnation << COUNTER_BITS, next: 0 }
    }

    /// The next context (never 0 within a life's first 2^40 reads).
    pub(crate) fn next(&mut self) -> u64 {
        self.next = (self.next + 1) & COUNTER_MASK;
        self.base | self.next
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bumped_durably_at_every_open() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(bump(dir.path()).unwrap(), 1);
        assert_eq!(bump(dir.path()).unwrap(), 2);
        assert_eq!(bump(dir.path()).unwrap(), 3);
        assert!(!dir.path().join(format!("{FILE}.tmp")).exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn corrupt_file_refused_not_reset() {
        let dir = tempfile::tempdir().unwrap();
        bump(dir.path()).unwrap();
        let p = dir.path().join(FILE);
        let mut b = fs::read(&p).unwrap();
        b[9] ^= 1;
        fs::write(&p, &b).unwrap();
        assert_eq!(bump(dir.path()).unwrap_err().kind(), io::ErrorKind::InvalidData);
        fs::write(&p, b"").unwrap();
        assert!(bump(dir.path()).is_err());
    }

    #[test]
    fn contexts_of_two_lives_never_meet() {
        let (mut a, mut b) = (ReadCtx::new(1), ReadCtx::new(2));
        let first_a = a.next();
        assert_eq!(b.next() >> COUNTER_BITS, 2);
        // Wrapping stays within the life's range.
        a.next = COUNTER_MASK - 1;
        assert_eq!(a.next(), (1 << COUNTER_BITS) | COUNTER_MASK);
        assert_eq!(a.next() >> COUNTER_BITS, 1);
        assert_eq!(a.next(), first_a);
    }
}
