//! The keyspace of one shard: typed values (strings and hashes) with per-key metadata
//! (absolute expiry time in unix ms, and the log index of the entry that last modified the
//! key, for WATCH), the replicated apply clock, and the snapshot encoding.
//!
//! Owns what "expired" means on each side: a write entry is applied at the time
//! [`Keyspace::begin`] sets (the leader's stamp, never going backwards), so every replica
//! computes the same expiries and removes the same expired keys; a read judges expiry by
//! the serving node's own clock, passed in (an expired key stays in the map until the
//! replicated delete, as on a Redis replica). Never parses commands (see
//! [`crate::keycmd`]) and never talks to the engine.
//!
//! Keys are shared byte strings and entries are reference-counted: cloning a keyspace
//! copies the table, not the data (a few milliseconds for 100,000 keys), and a write after
//! the clone copies only the entry it changes. A snapshot is therefore a clone taken on
//! the apply thread and encoded elsewhere ([`KeyspaceStream`]), so apply never waits for
//! the encoding of the whole map.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;

use indexmap::IndexMap;

/// Redis's reply to a command on a key of another type.
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// A hash's fields, in insertion order (as Redis's small hashes answer HGETALL).
pub type Fields = IndexMap<Vec<u8>, Vec<u8>>;

/// A key's value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Val {
    /// A string.
    Str(Vec<u8>),
    /// A hash (never empty: removing its last field removes the key).
    Hash(Fields),
}

impl Val {
    /// The name TYPE answers.
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Str(_) => "string",
            Val::Hash(_) => "hash",
        }
    }
}

/// A key's value with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub val: Val,
    expire_at: Option<u64>,
    modified: u64,
}

impl Entry {
    /// When it expires (unix ms), if it does.
    pub fn expire_at(&self) -> Option<u64> {
        self.expire_at
    }

    /// Whether it is expired at `now` (Redis: expiry at or before now).
    pub fn expired(&self, now: u64) -> bool {
        self.expire_at.is_some_and(|t| t <= now)
    }
}

/// What WATCH observed of a key (see [`Keyspace::watch_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchState {
    /// The key is in the map (expired or not).
    pub present: bool,
    /// Its last-modified index when present, else the shard's last removal index.
    pub index: u64,
    /// The key was live (present and not expired) when observed.
    pub live: bool,
}

/// The keyspace of one shard.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Keyspace {
    map: HashMap<Bytes, Arc<Entry>>,
    /// (expiry, key) of every key with an expiry: the active-expire cycle's order.
    expiries: BTreeSet<(u64, Bytes)>,
    /// The apply time: the largest stamp applied so far (unix ms).
    now: u64,
    /// The index of the entry being applied.
    index: u64,
    /// The index of the last entry that removed a key (WATCH of an absent key).
    removed: u64,
}

const MAGIC: &[u8; 8] = b"FKVKS001";
const NO_EXPIRY: u64 = u64::MAX;

/// How many keys [`Keyspace::approx_bytes`] looks at.
pub const SIZE_SAMPLE: usize = 4096;
/// How many fields of one hash [`Keyspace::approx_bytes`] looks at.
pub const FIELD_SAMPLE: usize = 64;

impl Keyspace {
    /// Starts applying the entry at `index` stamped `stamp` (unix ms, `None` for an entry
    /// without one): the apply time becomes `max(stamp, last apply time)`.
    pub fn begin(&mut self, index: u64, stamp: Option<u64>) {
        self.index = index;
        if let Some(s) = stamp {
            self.now = self.now.max(s);
        }
    }

    /// The apply time of the entry being applied (unix ms).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The index of the entry being applied.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Keys in the map, expired or not (DBSIZE, as Redis counts them).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The bytes of the keys and values (INFO's `used_memory`, approximately): exact up to
    /// [`SIZE_SAMPLE`] keys (and [`FIELD_SAMPLE`] fields per hash), else the mean of that
    /// many times the count. Bounded work, as Redis's INFO is: it runs under the shard's
    /// read lock, which apply waits for, and monitoring calls INFO often.
    pub fn approx_bytes(&self) -> u64 {
        let val = |v: &Val| match v {
            Val::Str(s) => s.len() as u64,
            Val::Hash(h) => {
                let sampled =
                    h.iter().take(FIELD_SAMPLE).map(|(f, v)| (f.len() + v.len()) as u64).sum::<u64>();
                sampled * h.len() as u64 / h.len().clamp(1, FIELD_SAMPLE) as u64
            }
        };
        let sampled: u64 = self.map.iter().take(SIZE_SAMPLE).map(|(k, e)| k.len() as u64 + val(&e.val)).sum();
        sampled * self.map.len() as u64 / self.map.len().clamp(1, SIZE_SAMPLE) as u64
    }

    /// Keys with an expiry (INFO keyspace's `expires=`).
    pub fn expires(&self) -> usize {
        self.expiries.len()
    }

    /// The live entry of `key` judged at `now` (reads: the serving node's clock).
    pub fn get(&self, key: &[u8], now: u64) -> Option<&Entry> {
        self.map.get(key).map(|e| &**e).filter(|e| !e.expired(now))
    }

    /// Every key live at `now`.
    pub fn live_keys(&self, now: u64) -> impl Iterator<Item = &[u8]> {
        self.map.iter().filter(move |(_, e)| !e.expired(now)).map(|(k, _)| &k[..])
    }

    /// Removes `key` if it is expired at the apply time (a replicated removal); whether it
    /// did.
    pub fn purge_if_expired(&mut self, key: &[u8]) -> bool {
        if self.map.get(key).is_some_and(|e| e.expired(self.now)) {
            self.take(key);
            return true;
        }
        false
    }

    /// The live value of `key` at the apply time, for a write that may change it (an
    /// expired key is removed first and counts as absent). Marks the key modified.
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut Val> {
        self.purge_if_expired(key);
        let index = self.index;
        self.map.get_mut(key).map(|e| {
            // Copied here if a snapshot still shares it.
            let e = Arc::make_mut(e);
            e.modified = index;
            &mut e.val
        })
    }

    /// The live value of `key` at the apply time, for a write (read-only access).
    pub fn live(&mut self, key: &[u8]) -> Option<&Entry> {
        self.purge_if_expired(key);
        self.map.get(key).map(|e| &**e)
    }

    /// Sets `key` to `val` with `expire_at`, replacing any value and expiry. A key expired
    /// at the apply time is removed first, as [`Keyspace::purge_if_expired`] would (a
    /// replicated removal), so callers need not purge it. One lookup of the map; an entry
    /// no snapshot shares is overwritten in place.
    pub fn put(&mut self, key: Vec<u8>, val: Val, expire_at: Option<u64>) {
        let (index, now) = (self.index, self.now);
        match self.map.entry(Bytes::from(key)) {
            MapEntry::Occupied(mut o) => {
                if o.get().expired(now) {
                    self.removed = index;
                }
                if let Some(old) = o.get().expire_at {
                    self.expiries.remove(&(old, o.key().clone()));
                }
                if let Some(t) = expire_at {
                    self.expiries.insert((t, o.key().clone()));
                }
                let e = o.get_mut();
                match Arc::get_mut(e) {
                    Some(e) => {
                        e.val = val;
                        e.expire_at = expire_at;
                        e.modified = index;
                    }
                    // Shared with a snapshot: the snapshot keeps the old entry.
                    None => *e = Arc::new(Entry { val, expire_at, modified: index }),
                }
            }
            MapEntry::Vacant(v) => {
                if let Some(t) = expire_at {
                    self.expiries.insert((t, v.key().clone()));
                }
                v.insert(Arc::new(Entry { val, expire_at, modified: index }));
            }
        }
    }

    /// Sets `key` to `val`, keeping a live key's expiry (KEEPTTL, and the writes that do
    /// not touch the expiry: APPEND, INCR, ...).
    pub fn put_keep_ttl(&mut self, key: Vec<u8>, val: Val) {
        self.purge_if_expired(&key);
        let exp = self.map.get(&key[..]).and_then(|e| e.expire_at);
        self.put(key, val, exp);
    }

    /// Removes `key` if live at the apply time; returns its entry. An expired key is
    /// removed too, and counts as absent.
    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        if self.purge_if_expired(key) {
            return None;
        }
        self.take(key)
    }

    fn take(&mut self, key: &[u8]) -> Option<Entry> {
        let e = self.map.remove(key)?;
        if let Some(t) = e.expire_at {
            self.expiries.remove(&(t, Bytes::copy_from_slice(key)));
        }
        self.removed = self.index;
        // Shared with a snapshot: the caller gets a copy.
        Some(Arc::try_unwrap(e).unwrap_or_else(|shared| (*shared).clone()))
    }

    /// Sets (or with `None` removes) the expiry of live `key`; false when it is absent.
    pub fn set_expire(&mut self, key: &[u8], at: Option<u64>) -> bool {
        self.purge_if_expired(key);
        let index = self.index;
        let Some(k) = self.map.get_key_value(key).map(|(k, _)| k.clone()) else { return false };
        let Some(e) = self.map.get_mut(key) else { return false };
        let e = Arc::make_mut(e);
        if let Some(old) = e.expire_at {
            self.expiries.remove(&(old, k.clone()));
        }
        if let Some(t) = at {
            self.expiries.insert((t, k.clone()));
        }
        e.expire_at = at;
        e.modified = index;
        true
    }

    /// Moves the keys for which `moves` holds (with their values, expiries and
    /// last-modified indexes) into a new keyspace at this one's apply time and index;
    /// a shard split hands them to the new shard (`crate::shard_split`).
    pub fn split_off(&mut self, moves: impl Fn(&[u8]) -> bool) -> Keyspace {
        let mut out =
            Keyspace { now: self.now, index: self.index, removed: self.removed, ..Keyspace::default() };
        let keys: Vec<Bytes> = self.map.keys().filter(|k| moves(k)).cloned().collect();
        for k in keys {
            if let Some(e) = self.map.remove(&k[..]) {
                if let Some(t) = e.expire_at {
                    self.expiries.remove(&(t, k.clone()));
                    out.expiries.insert((t, k.clone()));
                }
                out.map.insert(k, e);
            }
        }
        if !out.map.is_empty() {
            self.removed = self.index;
        }
        out
    }

    /// Removes every key.
    pub fn clear(&mut self) {
        if !self.map.is_empty() {
            self.removed = self.index;
        }
        self.map.clear();
        self.expiries.clear();
    }

    /// Up to `max` keys whose expiry is at or before `now`, earliest first (the leader's
    /// active-expire cycle proposes their removal).
    pub fn due(&self, now: u64, max: usize) -> Vec<Vec<u8>> {
        self.expiries.iter().take_while(|(t, _)| *t <= now).take(max).map(|(_, k)| k.to_vec()).collect()
    }

    /// What WATCH records of `key`, judged at `now` for liveness.
    pub fn watch_state(&self, key: &[u8], now: u64) -> WatchState {
        match self.map.get(key) {
            Some(e) => WatchState { present: true, index: e.modified, live: !e.expired(now) },
            None => WatchState { present: false, index: self.removed, live: false },
        }
    }

    /// Whether `key` is unchanged since WATCH observed `w` (at the apply time): still the
    /// same modification, and not expired since it was observed live (as Redis 7.0 judges
    /// a watched key that expired).
    pub fn watch_holds(&self, key: &[u8], w: &WatchState) -> bool {
        let now = self.watch_state(key, self.now);
        now.present == w.present && now.index == w.index && (now.live || !w.live)
    }

    /// Writes the keyspace (the shard's snapshot body).
    pub fn write_to(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(STREAM_CHUNK);
        self.encode_head(&mut buf);
        for (k, e) in &self.map {
            encode_entry(&mut buf, k, e);
            if buf.len() >= STREAM_CHUNK {
                out.write_all(&buf)?;
                buf.clear();
            }
        }
        out.write_all(&buf)
    }

    /// The encoding's head: magic, apply time, last removal, key count.
    fn encode_head(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(MAGIC);
        for n in [self.now, self.removed, self.map.len() as u64] {
            buf.extend_from_slice(&n.to_le_bytes());
        }
    }

    /// The same bytes as [`Keyspace::write_to`], produced chunk by chunk from this
    /// keyspace (a clone of the live one is O(1): see the module comment).
    pub fn into_stream(self) -> KeyspaceStream {
        let mut head = Vec::new();
        self.encode_head(&mut head);
        KeyspaceStream { pending: head, entries: self.map.into_iter() }
    }

    /// Reads a keyspace written by [`Keyspace::write_to`], or the older snapshot format
    /// (a count, then key/value pairs of strings without expiry).
    pub fn read_from(input: &mut dyn Read) -> std::io::Result<Keyspace> {
        let mut all = Vec::new();
        input.read_to_end(&mut all)?;
        let mut r = Reader(&all);
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed shard snapshot");
        let mut ks = Keyspace::default();
        if all.starts_with(MAGIC) {
            r.0 = &all[8..];
            let (now, removed, n) =
                (r.u64().ok_or_else(bad)?, r.u64().ok_or_else(bad)?, r.u64().ok_or_else(bad)?);
            ks.now = now;
            for _ in 0..n {
                let key = r.bytes().ok_or_else(bad)?;
                let ty = r.byte().ok_or_else(bad)?;
                let exp = r.u64().ok_or_else(bad)?;
                let modified = r.u64().ok_or_else(bad)?;
                let val = match ty {
                    0 => Val::Str(r.bytes().ok_or_else(bad)?),
                    1 => {
                        let n = r.u32().ok_or_else(bad)?;
                        let mut h = Fields::new();
                        for _ in 0..n {
                            h.insert(r.bytes().ok_or_else(bad)?, r.bytes().ok_or_else(bad)?);
                        }
                        Val::Hash(h)
                    }
                    _ => return Err(bad()),
                };
                ks.index = modified;
                ks.put(key, val, (exp != NO_EXPIRY).then_some(exp));
            }
            ks.removed = removed;
        } else {
            let n = r.u64().ok_or_else(bad)?;
            for _ in 0..n {
                let (k, v) = (r.bytes().ok_or_else(bad)?, r.bytes().ok_or_else(bad)?);
                ks.put(k, Val::Str(v), None);
            }
        }
        if !r.0.is_empty() {
            return Err(bad());
        }
        ks.index = 0;
        Ok(ks)
    }
}

/// About how many bytes of entries are encoded at a time.
const STREAM_CHUNK: usize = 64 << 10;

/// One entry of the snapshot encoding.
fn encode_entry(buf: &mut Vec<u8>, k: &[u8], e: &Entry) {
    put(buf, k);
    buf.push(match e.val {
        Val::Str(_) => 0,
        Val::Hash(_) => 1,
    });
    buf.extend_from_slice(&e.expire_at.unwrap_or(NO_EXPIRY).to_le_bytes());
    buf.extend_from_slice(&e.modified.to_le_bytes());
    match &e.val {
        Val::Str(v) => put(buf, v),
        Val::Hash(h) => {
            buf.extend_from_slice(&(h.len() as u32).to_le_bytes());
            for (f, v) in h {
                put(buf, f);
                put(buf, v);
            }
        }
    }
}

/// A keyspace's snapshot encoding, produced in chunks of about 64 KiB from an owned
/// (usually shared, copy-on-write) keyspace: what a background snapshot reads.
pub struct KeyspaceStream {
    pending: Vec<u8>,
    entries: std::collections::hash_map::IntoIter<Bytes, Arc<Entry>>,
}

impl KeyspaceStream {
    /// The next chunk of the encoding (never empty), or `None` at its end.
    pub fn next_chunk(&mut self) -> Option<Vec<u8>> {
        let mut buf = std::mem::take(&mut self.pending);
        while buf.len() < STREAM_CHUNK {
            let Some((k, e)) = self.entries.next() else { break };
            encode_entry(&mut buf, &k, &e);
        }
        (!buf.is_empty()).then_some(buf)
    }
}

fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.u32()? as usize;
        self.take(n).map(<[u8]>::to_vec)
    }
}

#[cfg(test)]
mod tests {
    /// INFO's size: exact for a small keyspace, and for a large one an estimate from a
    /// bounded sample (equal here, every key and value being the same size).
    #[test]
    fn approx_bytes_is_exact_when_small_and_sampled_when_large() {
        let mut ks = Keyspace::default();
        ks.begin(1, Some(1));
        for i in 0..100u32 {
            ks.put(format!("k{i:05}").into_bytes(), Val::Str(vec![b'v'; 10]), None);
        }
        assert_eq!(ks.approx_bytes(), 100 * (6 + 10));
        for i in 100..20_000u32 {
            ks.put(format!("k{i:05}").into_bytes(), Val::Str(vec![b'v'; 10]), None);
        }
        assert_eq!(ks.approx_bytes(), 20_000 * (6 + 10));
    }

    use super::*;

    fn sample() -> Keyspace {
        let mut ks = Keyspace::default();
        ks.begin(1, Some(1_000));
        ks.put(b"s".to_vec(), Val::Str(b"v".to_vec()), None);
        ks.begin(2, Some(1_500));
        let h: Fields =
            [(b"f".to_vec(), b"1".to_vec()), (b"a".to_vec(), b"2".to_vec())].into_iter().collect();
        ks.put(b"h".to_vec(), Val::Hash(h), Some(5_000));
        ks.begin(3, Some(1_200));
        ks.put(b"gone".to_vec(), Val::Str(vec![]), None);
        ks.begin(4, Some(1_300));
        ks.remove(b"gone");
        ks
    }

    /// `put` over a key expired at the apply time is the replicated removal and a fresh
    /// write, as purging it first was: an absent key's WATCH sees the removal, the old
    /// expiry leaves the active-expire order, and a snapshot taken before keeps the old
    /// entry while the live one is overwritten.
    #[test]
    fn put_over_an_expired_key_removes_it_first_and_spares_a_snapshot() {
        let mut ks = sample();
        let absent = ks.watch_state(b"nope", 6_000);
        ks.begin(5, Some(6_000));
        let before = ks.clone();
        ks.put(b"h".to_vec(), Val::Str(b"new".to_vec()), Some(9_000));
        assert!(!ks.watch_holds(b"nope", &absent), "the expired key's removal is seen by WATCH");
        assert_eq!(ks.due(8_999, 10), Vec::<Vec<u8>>::new(), "the old expiry (5,000) is gone");
        assert_eq!(ks.due(9_000, 10), vec![b"h".to_vec()]);
        assert_eq!(ks.expires(), 1);
        assert_eq!(ks.get(b"h", 6_000).map(|e| e.val.clone()), Some(Val::Str(b"new".to_vec())));
        assert_eq!(ks.watch_state(b"h", 6_000).index, 5);
        assert!(matches!(before.get(b"h", 4_000).map(|e| &e.val), Some(Val::Hash(_))), "the snapshot's copy");
        // A live key is overwritten without a removal: an absent key's WATCH holds.
        let absent = ks.watch_state(b"nope", 6_000);
        ks.begin(6, Some(6_100));
        ks.put(b"s".to_vec(), Val::Str(b"w".to_vec()), None);
        assert!(ks.watch_holds(b"nope", &absent));
        assert_eq!(ks.get(b"s", 6_100).map(|e| e.val.clone()), Some(Val::Str(b"w".to_vec())));
    }

    #[test]
    fn apply_time_never_goes_backwards() {
        let ks = sample();
        assert_eq!(ks.now(), 1_500, "a smaller stamp after a larger one keeps the larger");
    }

    #[test]
    fn reads_judge_expiry_by_the_given_clock_and_keep_the_key_until_removed() {
        let ks = sample();
        assert!(ks.get(b"h", 4_999).is_some());
        assert!(ks.get(b"h", 5_000).is_none(), "expired at its expiry time");
        assert_eq!(ks.len(), 2, "still in the map (DBSIZE counts it)");
        assert_eq!(ks.live_keys(5_000).count(), 1);
        assert_eq!(ks.due(5_000, 10), vec![b"h".to_vec()]);
        assert!(ks.due(4_999, 10).is_empty());
    }

    #[test]
    fn a_write_after_expiry_treats_the_key_as_absent() {
        let mut ks = sample();
        ks.begin(5, Some(6_000));
        assert!(ks.get_mut(b"h").is_none());
        assert_eq!(ks.len(), 1);
        assert_eq!(ks.expires(), 0);
    }

    #[test]
    fn watch_sees_modification_removal_and_expiry() {
        let mut ks = sample();
        let w = ks.watch_state(b"s", 1_600);
        let absent = ks.watch_state(b"nope", 1_600);
        let exp = ks.watch_state(b"h", 1_600);
        ks.begin(6, Some(1_700));
        assert!(ks.watch_holds(b"s", &w) && ks.watch_holds(b"nope", &absent) && ks.watch_holds(b"h", &exp));
        ks.put(b"s".to_vec(), Val::Str(b"x".to_vec()), None);
        assert!(!ks.watch_holds(b"s", &w), "modified");
        ks.put(b"nope".to_vec(), Val::Str(b"x".to_vec()), None);
        assert!(!ks.watch_holds(b"nope", &absent), "created");
        ks.begin(7, Some(5_000));
        assert!(!ks.watch_holds(b"h", &exp), "expired since it was watched live");
    }

    #[test]
    fn snapshot_round_trips_types_expiry_and_indexes_and_reads_the_old_format() {
        let ks = sample();
        let mut b = Vec::new();
        ks.write_to(&mut b).unwrap();
        let back = Keyspace::read_from(&mut b.as_slice()).unwrap();
        assert_eq!(back.map, ks.map);
        assert_eq!(back.expiries, ks.expiries);
        assert_eq!((back.now, back.removed), (ks.now, ks.removed));
        assert!(Keyspace::read_from(&mut &b[..b.len() - 1]).is_err());
        // The format before types: a count, then key/value pairs.
        let mut old = 1u64.to_le_bytes().to_vec();
        put(&mut old, b"k");
        put(&mut old, b"v");
        let o = Keyspace::read_from(&mut old.as_slice()).unwrap();
        assert_eq!(o.get(b"k", 0).map(|e| e.val.clone()), Some(Val::Str(b"v".to_vec())));
    }
}
