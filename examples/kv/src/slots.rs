//! Redis Cluster's key slots: [`key_slot`] maps a key to one of [`SLOTS`] slots by CRC16
//! (XMODEM, as Redis's `crc16.c`) of the key or of its `{hash tag}`, and [`SlotSet`] is a
//! set of slot ranges, the unit in which shards own keys.
//!
//! Owns the mapping and the default layout ([`default_range`], [`default_owner`]: shard
//! `s` of `n` owns an even, contiguous share). Never decides which shard owns a slot at run
//! time: that is each shard's applied state ([`crate::sm`]), cached by the meta group.

use serde::{Deserialize, Serialize};

/// Number of slots, as in Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0, no reflection), Redis's.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

/// The part of `key` that is hashed: the bytes between its first `{` and the first `}`
/// after it when there is at least one byte between them, else the whole key (Redis
/// Cluster specification, "Hash tags").
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The slot of `key`: `crc16(hash_tag(key)) mod 16384`.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) % SLOTS
}

/// The first slot of shard `s` of `n` in the default layout.
fn default_start(s: u32, n: u32) -> u32 {
    (s as u64 * SLOTS as u64 / n.max(1) as u64) as u32
}

/// The slots shard `s` of `n` owns in the default layout: an even, contiguous share (none
/// when there are more shards than slots and `s` gets no share).
pub fn default_range(s: u32, n: u32) -> SlotSet {
    let (start, end) = (default_start(s, n), default_start(s + 1, n));
    if start >= end || s >= n {
        return SlotSet::default();
    }
    // Both below 16384: `end <= SLOTS` since `s + 1 <= n`.
    SlotSet { ranges: vec![(start as u16, (end - 1) as u16)] }
}

/// The shard (of `n`) that owns `slot` in the default layout: the last shard whose share
/// starts at or before it, `floor(((slot + 1) * n - 1) / 16384)`.
pub fn default_owner(slot: u16, n: u32) -> u32 {
    let n = n.max(1) as u64;
    (((slot as u64 + 1) * n - 1) / SLOTS as u64) as u32
}

/// A set of slots, as sorted, disjoint, non-adjacent inclusive ranges (serialized as the
/// list of ranges; a list that is not a valid set is refused when read).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<(u16, u16)>", into = "Vec<(u16, u16)>")]
pub struct SlotSet {
    ranges: Vec<(u16, u16)>,
}

impl TryFrom<Vec<(u16, u16)>> for SlotSet {
    type Error = String;

    fn try_from(ranges: Vec<(u16, u16)>) -> Result<SlotSet, String> {
        SlotSet::from_ranges(ranges).ok_or_else(|| format!("slot ranges must be within 0..={}", SLOTS - 1))
    }
}

impl From<SlotSet> for Vec<(u16, u16)> {
    fn from(s: SlotSet) -> Vec<(u16, u16)> {
        s.ranges
    }
}

impl SlotSet {
    /// The set of the given inclusive ranges (normalized: sorted and merged); `None` if a
    /// range is reversed or past the last slot.
    pub fn from_ranges(mut ranges: Vec<(u16, u16)>) -> Option<SlotSet> {
        if ranges.iter().any(|&(a, b)| a > b || b >= SLOTS) {
            return None;
        }
        ranges.sort_unstable();
        let mut out: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match out.last_mut() {
                Some(last) if a as u32 <= last.1 as u32 + 1 => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        Some(SlotSet { ranges: out })
    }

    /// Its ranges, sorted, each inclusive.
    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.ranges
    }

    /// Whether it holds `slot`.
    pub fn contains(&self, slot: u16) -> bool {
        // Ranges are sorted and disjoint: the candidate is the last starting at or before.
        let i = self.ranges.partition_point(|&(a, _)| a <= slot);
        i > 0 && self.ranges[i - 1].1 >= slot
    }

    /// Number of slots held.
    pub fn len(&self) -> usize {
        self.ranges.iter().map(|&(a, b)| (b - a) as usize + 1).sum()
    }

    /// Whether it holds no slot.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Encodes as `count (u32 LE)` then `start, end (u16 LE each)` per range.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.ranges.len() as u32).to_le_bytes());
        for &(a, b) in &self.ranges {
            out.extend_from_slice(&a.to_le_bytes());
            out.extend_from_slice(&b.to_le_bytes());
        }
    }

    /// Decodes what [`SlotSet::encode`] wrote at the start of `b`: the set and the bytes
    /// read; `None` if malformed (short, unsorted, overlapping or out of range).
    pub fn decode(b: &[u8]) -> Option<(SlotSet, usize)> {
        let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
        if n > SLOTS as usize {
            return None;
        }
        let body = b.get(4..4 + 4 * n)?;
        let ranges: Vec<(u16, u16)> = body
            .chunks_exact(4)
            .map(|c| (u16::from_le_bytes([c[0], c[1]]), u16::from_le_bytes([c[2], c[3]])))
            .collect();
        let set = SlotSet::from_ranges(ranges.clone())?;
        // Only the normalized form is accepted, so a set encodes to the bytes it came from.
        (set.ranges == ranges).then_some((set, 4 + 4 * n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CRC16 check value and slots Redis computes (`CLUSTER KEYSLOT` on redis-server
    /// 7.0 gives these; the integration test `cluster_mode` compares more keys live).
    #[test]
    fn slots_are_redis_clusters() {
        assert_eq!(crc16(b"123456789"), 0x31C3, "the XMODEM check value");
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"hello"), 866);
        assert_eq!(key_slot(b""), 0);
        // Hash tags: the first `{...}` with something inside.
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"{user1000}.followers"), key_slot(b"user1000"));
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}", "an empty first tag hashes the key");
        assert_eq!(
            hash_tag(b"foo{{bar}}zap"),
            b"{bar",
            "from the first opening brace to the first closing one after it"
        );
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"{"), b"{");
        assert_eq!(hash_tag(b"a}b{c"), b"a}b{c", "no closing brace after the opening one");
    }

    #[test]
    fn the_default_layout_covers_every_slot_once_and_owner_agrees() {
        for n in [1u32, 2, 3, 7, 16, 1000, 16_384, 20_000] {
            let sets: Vec<SlotSet> = (0..n).map(|s| default_range(s, n)).collect();
            let total: usize = sets.iter().map(SlotSet::len).sum();
            assert_eq!(total, SLOTS as usize, "n={n}");
            for slot in (0..SLOTS).step_by(97).chain([0, SLOTS - 1]) {
                let owner = default_owner(slot, n);
                assert!(sets[owner as usize].contains(slot), "n={n} slot={slot} owner={owner}");
            }
        }
        assert_eq!(default_range(0, 16).ranges(), &[(0, 1023)]);
        assert_eq!(default_range(15, 16).ranges(), &[(15_360, 16_383)]);
        assert!(default_range(16, 16).is_empty());
    }

    #[test]
    fn sets_normalize_and_round_trip_and_garbage_is_refused() {
        let s = SlotSet::from_ranges(vec![(10, 20), (0, 5), (6, 8), (30, 30)]).unwrap();
        assert_eq!(s.ranges(), &[(0, 8), (10, 20), (30, 30)]);
        assert!(s.contains(0) && s.contains(8) && !s.contains(9) && s.contains(30) && !s.contains(31));
        assert_eq!(s.len(), 9 + 11 + 1);
        let mut b = Vec::new();
        s.encode(&mut b);
        assert_eq!(SlotSet::decode(&b), Some((s, b.len())));
        assert_eq!(SlotSet::from_ranges(vec![(5, 4)]), None);
        assert_eq!(SlotSet::from_ranges(vec![(0, SLOTS)]), None);
        for cut in 0..b.len() {
            assert_eq!(SlotSet::decode(&b[..cut]), None, "cut at {cut}");
        }
        // Overlapping or unsorted ranges are not a normalized encoding.
        let mut bad = Vec::new();
        SlotSet { ranges: vec![(5, 9), (0, 6)] }.encode(&mut bad);
        assert_eq!(SlotSet::decode(&bad), None);
    }
}
