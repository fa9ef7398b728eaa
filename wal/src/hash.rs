//! [`IdHasher`]: a fast hasher for the WAL's `u64` keys (group ids), and the map and set
//! types built on it.
//!
//! Owns: hashing of integer keys. Never: hashes untrusted variable-length data (group ids
//! are chosen by the engine, not by clients; the multiply-xorshift mix spreads sequential
//! and strided ids evenly).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Hasher for integer keys: a multiply-xorshift mix of the written value.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        let mut x = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 32;
        x
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ *b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(29) ^ n;
    }
}

/// A map keyed by `u64` ids.
pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;
/// A set of `u64` ids.
pub(crate) type IdSet = HashSet<u64, BuildHasherDefault<IdHasher>>;
