//! The replicated state machines: a shard's key-value map ([`ShardSm`]) and the meta
//! group's node directory ([`MetaSm`]), with their command encodings and snapshots.
//!
//! Owns what a committed entry does to the data and the reply it produces (RESP bytes, so
//! a forwarded request's reply passes through unchanged). Never talks to the network or
//! the engine; reads of the data go through the shared handles ([`ShardData`],
//! [`Directory`]) after a read barrier.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use flotilla_engine::api::{SnapshotSource, StateMachine};
use serde::{Deserialize, Serialize};

use crate::keyspace::{Keyspace, WatchState};
use crate::resp::{Proto, Value};
use crate::shard_snapshot::{snapshot_head, ShardSnapshot, SNAPSHOT_MAGIC};
use crate::slots::{key_slot, SlotSet, SLOTS};
use crate::strings;

/// The meta group (the node directory).
pub const META_GROUP: u64 = 1;
/// Shard `s` is group `SHARD_BASE + s`.
pub const SHARD_BASE: u64 = 1000;

/// 64-bit FNV-1a of `key`.
fn fnv1a(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The shard of `key` among `shards` in the default layout: the owner of its Redis
/// Cluster slot ([`crate::slots::key_slot`], [`crate::slots::default_owner`]).
pub fn shard_of(key: &[u8], shards: u32) -> u32 {
    crate::slots::default_owner(crate::slots::key_slot(key), shards)
}

/// A key's place in SCAN order within its shard: 48 bits of its FNV-1a hash, so a shard's
/// position fits in a cursor beside the shard's index (see [`scan_step`]).
pub fn scan_hash(key: &[u8]) -> u64 {
    fnv1a(key) >> (64 - SCAN_SHARD_SHIFT)
}

/// The largest [`scan_hash`].
pub const SCAN_HASH_MAX: u64 = (1 << SCAN_SHARD_SHIFT) - 1;

/// Where a SCAN cursor keeps the shard: its top 16 bits (16384 shards at most), the
/// position [`scan_hash`] below.
pub const SCAN_SHARD_SHIFT: u32 = 48;

/// One SCAN step over a shard's map: the keys whose [`scan_hash`] is at least `from`, in
/// hash order, at least `count` of them when there are (all keys of the last hash taken
/// stay together), and where the next step starts (`None` when the shard is done). Keys
/// present for the whole scan are returned exactly once whatever changes meanwhile, since
/// the order depends on the keys only. Costs O(keys in the shard) per step.
pub fn scan_step<'a>(
    keys: impl Iterator<Item = &'a [u8]>,
    from: u64,
    count: u64,
) -> (Option<u64>, Vec<Vec<u8>>) {
    let mut v: Vec<(u64, &[u8])> = keys.map(|k| (scan_hash(k), k)).filter(|(h, _)| *h >= from).collect();
    v.sort_unstable();
    let count = count.max(1) as usize;
    let mut end = v.len().min(count);
    while end < v.len() && end > 0 && v[end].0 == v[end - 1].0 {
        end += 1;
    }
    let next = if end < v.len() { Some(v[end].0) } else { None };
    (next, v[..end].iter().map(|(_, k)| k.to_vec()).collect())
}

/// The group of shard `s`.
pub fn shard_group(s: u32) -> u64 {
    SHARD_BASE + s as u64
}

/// Whether `group` is one of this cluster's groups: the meta group or one of its
/// `shards` shard groups. The node lets a peer's message create a replica only of these
/// (the engine's `CreatePolicy`), so a peer cannot make it host arbitrary group ids.
pub fn known_group(group: u64, shards: u32) -> bool {
    group == META_GROUP || (SHARD_BASE..SHARD_BASE + shards as u64).contains(&group)
}

/// A write to one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteCmd {
    /// SET with an optional condition.
    Set {
        /// Key.
        key: Vec<u8>,
        /// Value.
        val: Vec<u8>,
        /// 0: always, 1: NX (only if absent), 2: XX (only if present).
        cond: u8,
    },
    /// DEL of keys (all in this shard).
    Del(Vec<Vec<u8>>),
    /// INCRBY.
    Incr {
        /// Key.
        key: Vec<u8>,
        /// Amount.
        by: i64,
    },
    /// MSET of pairs (all in this shard; atomic within it).
    MSet(Vec<(Vec<u8>, Vec<u8>)>),
    /// APPEND: the value's new length.
    Append {
        /// Key.
        key: Vec<u8>,
        /// Bytes appended.
        val: Vec<u8>,
    },
    /// GETSET: sets and answers the old value (nil when absent).
    GetSet {
        /// Key.
        key: Vec<u8>,
        /// New value.
        val: Vec<u8>,
    },
    /// GETDEL: deletes and answers the old value (nil when absent).
    GetDel(Vec<u8>),
    /// FLUSHDB of this shard: removes every key.
    Flush,
    /// SETNX: sets only if absent; answers 1 if it set, else 0.
    SetNx {
        /// Key.
        key: Vec<u8>,
        /// Value.
        val: Vec<u8>,
    },
    /// A command as its Redis arguments (name first), parsed at apply
    /// ([`crate::keycmd::parse_write`]): the encoding of the commands added with types and
    /// expiry (SET's options, GETEX, INCRBYFLOAT, hashes, EXPIRE, ...).
    Args(Vec<Vec<u8>>),
    /// A MULTI/EXEC transaction ([`crate::multi::apply`]).
    Exec {
        /// The watched keys and what WATCH saw of each.
        watched: Vec<(Vec<u8>, WatchState)>,
        /// The queued commands, as arguments.
        cmds: Vec<Vec<Vec<u8>>>,
    },
    /// The replicated removal of expired keys ([`crate::expiry::purge`]).
    Purge(Vec<Vec<u8>>),
    /// A connection's pipelined writes to one shard (each an encoded `WriteCmd`, never a
    /// batch), applied in order as one entry: the reply is an array with each command's
    /// reply, and each command is checked against the shard's slots on its own
    /// ([`ShardSm`]). One entry instead of one per command is what makes a pipelined
    /// client cheap for the log, the sessions and the apply thread.
    Batch(Vec<Vec<u8>>),
}

/// The tag of a stamped entry: `[STAMPED, unix ms (8 bytes LE), command]`.
const STAMPED: u8 = 12;

/// `cmd` stamped with the proposing leader's clock `ms` (see [`crate::keyspace`]).
pub fn stamp(cmd: &[u8], ms: u64) -> Vec<u8> {
    let mut o = Vec::with_capacity(cmd.len() + 9);
    o.push(STAMPED);
    o.extend_from_slice(&ms.to_le_bytes());
    o.extend_from_slice(cmd);
    o
}

/// The stamp of an entry (if stamped) and its command.
pub fn unstamp(b: &[u8]) -> (Option<u64>, &[u8]) {
    match b {
        [STAMPED, rest @ ..] if rest.len() >= 8 => {
            let (t, cmd) = rest.split_at(8);
            (t.try_into().ok().map(u64::from_le_bytes), cmd)
        }
        _ => (None, b),
    }
}

/// The keys of a command given as its arguments ([`crate::keycmd::SPECS`]).
pub fn args_keys(args: &[Vec<u8>]) -> Vec<&[u8]> {
    let name = args.first().map(|n| String::from_utf8_lossy(n).to_ascii_uppercase()).unwrap_or_default();
    crate::keycmd::spec(&name).map(|s| crate::keycmd::keys_of(s, args)).unwrap_or_default()
}

fn encode_args(args: &[Vec<u8>]) -> Vec<u8> {
    let mut o = Vec::new();
    args.iter().for_each(|a| put(&mut o, a));
    o
}

fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Parts of a command kept inline by [`parts`] (SET has 3): decoding a single-key
/// command (every one applied on every replica) allocates nothing for them.
const INLINE_PARTS: usize = 4;

/// Splits `b` into its length-prefixed parts; `None` unless `b` is a whole sequence of
/// them.
fn parts(b: &[u8]) -> Option<smallvec::SmallVec<[&[u8]; INLINE_PARTS]>> {
    let mut it = PartsIter(b);
    let p = it.by_ref().collect();
    it.0.is_empty().then_some(p)
}

/// The length-prefixed parts of a byte string, in order, without collecting them; it
/// stops at the end or at the first malformed part, leaving the rest in `.0`.
struct PartsIter<'a>(&'a [u8]);

impl<'a> Iterator for PartsIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let b = self.0;
        let (len, rest) = b.split_first_chunk::<4>()?;
        let n = u32::from_le_bytes(*len) as usize;
        let part = rest.get(..n)?;
        self.0 = &rest[n..];
        Some(part)
    }
}

/// Whether the encoded write `c` is a string write whose cost does not grow with what the
/// key holds: a plain SET (tag 0), SETNX (7), INCR (2), or one of the same family given as
/// arguments (tag 9; a SET with options, INCRBY, EXPIRE, ...). Not GETSET or APPEND (they
/// copy the old value), DEL (it may free a large hash), hashes, transactions or FLUSHDB.
fn quick_write(c: &[u8]) -> bool {
    /// Commands given as arguments that are quick (names as clients send them, any case).
    const QUICK_ARGS: &[&str] = &[
        "SET",
        "SETNX",
        "SETEX",
        "PSETEX",
        "INCR",
        "INCRBY",
        "DECR",
        "DECRBY",
        "INCRBYFLOAT",
        "EXPIRE",
        "PEXPIRE",
        "EXPIREAT",
        "PEXPIREAT",
        "PERSIST",
    ];
    match c.split_first() {
        Some((0 | 2 | 7, _)) => true,
        Some((9, rest)) => PartsIter(rest)
            .next()
            .is_some_and(|name| QUICK_ARGS.iter().any(|q| q.as_bytes().eq_ignore_ascii_case(name))),
        _ => false,
    }
}

/// A batch entry's commands (tag 13), each still encoded, without copying them; `None`
/// if `b` is not a well-formed batch (what [`WriteCmd::decode`] refuses as one).
fn batch_commands(b: &[u8]) -> Option<PartsIter<'_>> {
    let (&13, rest) = b.split_first()? else { return None };
    let mut check = PartsIter(rest);
    let count = check.by_ref().count();
    (count > 0 && check.0.is_empty()).then_some(PartsIter(rest))
}

impl WriteCmd {
    /// The key of a single-key command. Every variant is named, here and in
    /// [`WriteCmd::keys`], so that a new one is never left out of the slot check.
    fn single_key(&self) -> Option<&[u8]> {
        match self {
            WriteCmd::Set { key, .. }
            | WriteCmd::Incr { key, .. }
            | WriteCmd::Append { key, .. }
            | WriteCmd::GetSet { key, .. }
            | WriteCmd::GetDel(key)
            | WriteCmd::SetNx { key, .. } => Some(key),
            WriteCmd::Del(_)
            | WriteCmd::MSet(_)
            | WriteCmd::Flush
            | WriteCmd::Args(_)
            | WriteCmd::Exec { .. }
            | WriteCmd::Purge(_)
            | WriteCmd::Batch(_) => None,
        }
    }

    /// The keys it touches (none for FLUSHDB, which is the shard's whole keyspace).
    pub fn keys(&self) -> Vec<&[u8]> {
        match self {
            WriteCmd::Set { .. }
            | WriteCmd::Incr { .. }
            | WriteCmd::Append { .. }
            | WriteCmd::GetSet { .. }
            | WriteCmd::GetDel(_)
            | WriteCmd::SetNx { .. } => self.single_key().into_iter().collect(),
            WriteCmd::Del(keys) | WriteCmd::Purge(keys) => keys.iter().map(Vec::as_slice).collect(),
            WriteCmd::MSet(pairs) => pairs.iter().map(|(k, _)| k.as_slice()).collect(),
            WriteCmd::Args(args) => args_keys(args),
            WriteCmd::Exec { watched, cmds } => watched
                .iter()
                .map(|(k, _)| k.as_slice())
                .chain(cmds.iter().flat_map(|c| args_keys(c)))
                .collect(),
            // A batch's commands are checked one by one when it is applied.
            WriteCmd::Flush | WriteCmd::Batch(_) => Vec::new(),
        }
    }

    /// Whether every key it touches is in `slots` ([`check_slots`] over [`WriteCmd::keys`],
    /// without collecting the keys of the commands applied most).
    pub fn check_slots(&self, slots: &SlotSet) -> Result<(), Value> {
        if let Some(key) = self.single_key() {
            return check_slots(slots, [key]);
        }
        match self {
            WriteCmd::Del(keys) | WriteCmd::Purge(keys) => check_slots(slots, keys.iter().map(Vec::as_slice)),
            WriteCmd::MSet(pairs) => check_slots(slots, pairs.iter().map(|(k, _)| k.as_slice())),
            _ => check_slots(slots, self.keys()),
        }
    }

    /// Encodes for the log.
    pub fn encode(&self) -> Vec<u8> {
        // The commands written most (SET, and a turn's writes joined into one entry) are
        // sized first: growing a joint entry's buffer step by step cost a reallocation per
        // doubling, and past 1 KiB glibc's `malloc_consolidate` (1% of all samples in a
        // profile of SET, all of it on the client loop).
        let cap = match self {
            WriteCmd::Set { key, val, .. } => 1 + 3 * 4 + key.len() + val.len() + 1,
            WriteCmd::Batch(cmds) => 1 + cmds.iter().map(|c| 4 + c.len()).sum::<usize>(),
            _ => 0,
        };
        let mut o = Vec::with_capacity(cap);
        match self {
            WriteCmd::Set { key, val, cond } => {
                o.push(0);
                put(&mut o, key);
                put(&mut o, val);
                put(&mut o, &[*cond]);
            }
            WriteCmd::Del(keys) => {
                o.push(1);
                keys.iter().for_each(|k| put(&mut o, k));
            }
            WriteCmd::Incr { key, by } => {
                o.push(2);
                put(&mut o, key);
                put(&mut o, &by.to_le_bytes());
            }
            WriteCmd::MSet(pairs) => {
                o.push(3);
                for (k, v) in pairs {
                    put(&mut o, k);
                    put(&mut o, v);
                }
            }
            WriteCmd::Append { key, val } | WriteCmd::GetSet { key, val } | WriteCmd::SetNx { key, val } => {
                o.push(match self {
                    WriteCmd::Append { .. } => 4,
                    WriteCmd::GetSet { .. } => 5,
                    _ => 7,
                });
                put(&mut o, key);
                put(&mut o, val);
            }
            WriteCmd::GetDel(key) => {
                o.push(6);
                put(&mut o, key);
            }
            WriteCmd::Flush => o.push(8),
            WriteCmd::Args(args) => {
                o.push(9);
                args.iter().for_each(|a| put(&mut o, a));
            }
            WriteCmd::Exec { watched, cmds } => {
                o.push(10);
                put(&mut o, &(watched.len() as u64).to_le_bytes());
                for (k, w) in watched {
                    put(&mut o, k);
                    let mut st = vec![u8::from(w.present), u8::from(w.live)];
                    st.extend_from_slice(&w.index.to_le_bytes());
                    put(&mut o, &st);
                }
                cmds.iter().for_each(|c| put(&mut o, &encode_args(c)));
            }
            WriteCmd::Purge(keys) => {
                o.push(11);
                keys.iter().for_each(|k| put(&mut o, k));
            }
            WriteCmd::Batch(cmds) => {
                // 12 is taken by the stamp prefix (`STAMPED`).
                o.push(13);
                cmds.iter().for_each(|c| put(&mut o, c));
            }
        }
        o
    }

    /// Decodes; `None` if malformed.
    pub fn decode(b: &[u8]) -> Option<WriteCmd> {
        let (&tag, rest) = b.split_first()?;
        let p = parts(rest)?;
        Some(match (tag, p.as_slice()) {
            (0, [k, v, c]) if c.len() == 1 => WriteCmd::Set { key: k.to_vec(), val: v.to_vec(), cond: c[0] },
            (1, keys) => WriteCmd::Del(keys.iter().map(|k| k.to_vec()).collect()),
            (2, [k, by]) => {
                WriteCmd::Incr { key: k.to_vec(), by: i64::from_le_bytes((*by).try_into().ok()?) }
            }
            (3, kv) if kv.len() % 2 == 0 => {
                WriteCmd::MSet(kv.chunks(2).map(|c| (c[0].to_vec(), c[1].to_vec())).collect())
            }
            (4, [k, v]) => WriteCmd::Append { key: k.to_vec(), val: v.to_vec() },
            (5, [k, v]) => WriteCmd::GetSet { key: k.to_vec(), val: v.to_vec() },
            (6, [k]) => WriteCmd::GetDel(k.to_vec()),
            (7, [k, v]) => WriteCmd::SetNx { key: k.to_vec(), val: v.to_vec() },
            (8, []) => WriteCmd::Flush,
            (9, args) if !args.is_empty() => WriteCmd::Args(args.iter().map(|a| a.to_vec()).collect()),
            (10, [n, rest @ ..]) => {
                let n = u64::from_le_bytes((*n).try_into().ok()?) as usize;
                if rest.len() < n.checked_mul(2)? {
                    return None;
                }
                let (ws, cs) = rest.split_at(2 * n);
                let mut watched = Vec::with_capacity(n);
                for w in ws.chunks(2) {
                    let [present, live, ref idx @ ..] = *w[1] else { return None };
                    let index = u64::from_le_bytes(idx.try_into().ok()?);
                    watched
                        .push((w[0].to_vec(), WatchState { present: present == 1, index, live: live == 1 }));
                }
                let mut cmds = Vec::with_capacity(cs.len());
                for c in cs {
                    let args = parts(c)?;
                    if args.is_empty() {
                        return None;
                    }
                    cmds.push(args.iter().map(|a| a.to_vec()).collect());
                }
                WriteCmd::Exec { watched, cmds }
            }
            (11, keys) => WriteCmd::Purge(keys.iter().map(|k| k.to_vec()).collect()),
            (13, cmds) if !cmds.is_empty() => WriteCmd::Batch(cmds.iter().map(|c| c.to_vec()).collect()),
            _ => return None,
        })
    }
}

/// A shard's data, shared between its state machine and the request executors.
pub type ShardData = Arc<RwLock<Keyspace>>;

/// Applies one write to `ks` at its apply time ([`Keyspace::begin`]); returns the reply.
pub fn apply_write(ks: &mut Keyspace, cmd: WriteCmd) -> Value {
    match cmd {
        WriteCmd::Set { key, val, cond } => {
            strings::set(ks, strings::SetCmd { key, val, cond, expire: None, get: false })
        }
        WriteCmd::Del(keys) => strings::del(ks, &keys),
        WriteCmd::Incr { key, by } => strings::incr(ks, key, by),
        WriteCmd::MSet(pairs) => strings::mset(ks, pairs),
        WriteCmd::Append { key, val } => strings::append(ks, key, &val),
        WriteCmd::GetSet { key, val } => strings::getset(ks, key, val),
        WriteCmd::GetDel(key) => strings::getdel(ks, &key),
        WriteCmd::Flush => {
            ks.clear();
            Value::ok()
        }
        WriteCmd::SetNx { key, val } => strings::setnx(ks, key, val),
        WriteCmd::Args(args) => match crate::keycmd::parse_write(&args) {
            Ok(w) => crate::keycmd::apply(ks, w),
            Err(e) => e,
        },
        WriteCmd::Exec { watched, cmds } => crate::multi::apply(ks, &watched, &cmds),
        WriteCmd::Purge(keys) => crate::expiry::purge(ks, &keys),
        // Only a shard's state machine applies a batch, checking each command's slots.
        WriteCmd::Batch(_) => Value::err("ERR malformed log entry"),
    }
}

/// The slots a shard serves: its applied state (the authority on which keys it holds),
/// shared between its state machine and the request executors.
pub type ShardSlots = Arc<RwLock<SlotSet>>;

/// The reply to a command with a key in a slot the shard does not serve: Redis Cluster's
/// `-MOVED` without an address, since the shard cannot know where the slot went. The node
/// turns it into a redirect ([`crate::node`]). Nothing was applied.
pub fn wrong_slot(slot: u16) -> Value {
    Value::err(format!("WRONGSLOT {slot} is not served by this shard"))
}

/// The first key among `keys` whose slot `slots` does not hold, as a [`wrong_slot`] reply.
pub fn check_slots<'a>(slots: &SlotSet, keys: impl IntoIterator<Item = &'a [u8]>) -> Result<(), Value> {
    match keys.into_iter().map(key_slot).find(|&s| !slots.contains(s)) {
        Some(s) => Err(wrong_slot(s)),
        None => Ok(()),
    }
}

/// A shard's state machine: an in-memory map (rebuilt from the snapshot and the log on
/// restart, so `applied_index` is 0) and the slots it serves. A write with a key outside
/// them is refused at apply ([`wrong_slot`]), whatever the proposer believed.
pub struct ShardSm {
    data: ShardData,
    slots: ShardSlots,
    /// (index, term) of the last entry applied (or restored): what a snapshot reflects.
    at: (u64, u64),
    /// Splitting off slots into a new shard (`crate::shard_split`).
    split: crate::shard_split::SplitState,
}

impl ShardSm {
    /// A state machine over `data`, serving `slots` until its log says otherwise.
    pub fn new(data: ShardData, slots: ShardSlots) -> ShardSm {
        ShardSm { data, slots, at: (0, 0), split: Default::default() }
    }

    /// Sets how this shard splits and registers its children (`crate::shard_split`).
    pub fn set_split(&mut self, split: crate::shard_split::SplitState) {
        self.split = split;
    }
}

/// Applies one decoded command (`None`: it did not decode) to `ks`, whose apply time is
/// set, if its keys are in `slots`.
fn apply_checked(slots: &SlotSet, ks: &mut Keyspace, cmd: Option<WriteCmd>) -> Value {
    let Some(cmd) = cmd else { return Value::err("ERR malformed log entry") };
    match cmd.check_slots(slots) {
        Ok(()) => apply_write(ks, cmd),
        Err(moved) => moved,
    }
}

fn lock_w<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

fn lock_r<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// Reads a shard's data (a poisoned lock is recovered: the map is never left half-written).
pub fn read_data(d: &ShardData) -> std::sync::RwLockReadGuard<'_, Keyspace> {
    lock_r(d)
}

impl StateMachine for ShardSm {
    fn apply(&mut self, index: u64, term: u64, command: Option<&[u8]>) -> Bytes {
        self.at = (index, term);
        self.split.register(&self.data, &self.slots);
        let Some(c) = command else { return Bytes::new() };
        let (stamp, c) = unstamp(c);
        if let Some(split) = crate::shard_split::SplitCmd::decode(c) {
            return self.split.apply(index, split, &self.data, &self.slots);
        }
        // The entry is applied under one lock of the slots and the data (readers wait for
        // the whole entry); a batch's commands are decoded from the entry, one at a time.
        let slots = lock_r(&self.slots);
        let mut ks = lock_w(&self.data);
        ks.begin(index, stamp);
        let v = match batch_commands(c) {
            Some(cmds) => {
                let one = |c| WriteCmd::decode(c).filter(|c| !matches!(c, WriteCmd::Batch(_)));
                Value::Array(Some(cmds.map(|c| apply_checked(&slots, &mut ks, one(c))).collect()))
            }
            None => apply_checked(&slots, &mut ks, WriteCmd::decode(c)),
        };
        Bytes::from(v.to_bytes(Proto::Resp3))
    }

    /// The string writes whose cost does not grow with what the key already holds (see
    /// `quick_write`), alone or in a pipelined batch, while no reader holds the shard's
    /// data (a write waits for its readers, and KEYS over a large keyspace reads for
    /// milliseconds). Everything else (FLUSHDB, DEL of what may be a large hash, a write
    /// to a hash that a snapshot still shares and that is copied first, a transaction, a
    /// split that waits for its child) is applied on the engine's apply thread.
    fn is_quick(&self, command: &[u8]) -> bool {
        let (_, c) = unstamp(command);
        let quick = match batch_commands(c) {
            Some(mut cmds) => cmds.all(quick_write),
            None => quick_write(c),
        };
        // A probe, not a guarantee: a reader may still come first.
        quick && self.data.try_write().is_ok()
    }

    fn applied_index(&self) -> u64 {
        0
    }

    fn snapshot(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(&snapshot_head(&lock_r(&self.slots)))?;
        lock_r(&self.data).write_to(out)
    }

    /// A clone of the keyspace (its table; entries are shared and copied on write),
    /// encoded by the engine's snapshot writer while apply goes on.
    fn snapshot_source(&mut self) -> Option<Box<dyn SnapshotSource>> {
        let slots = lock_r(&self.slots).clone();
        let ks = lock_r(&self.data).clone();
        Some(Box::new(ShardSnapshot::new(self.at, &slots, ks)))
    }

    fn restore(&mut self, index: u64, term: u64, input: &mut dyn Read) -> std::io::Result<()> {
        let (slots, ks) = decode_shard_snapshot(input)?;
        *lock_w(&self.data) = ks;
        if let Some(set) = slots {
            *lock_w(&self.slots) = set;
        }
        self.at = (index, term);
        self.split.register(&self.data, &self.slots);
        Ok(())
    }

    fn take_effects(&mut self) -> Vec<flotilla_engine::api::Effect> {
        self.split.take_effects()
    }

    fn take_split(&mut self, group: u64) -> Option<Box<dyn StateMachine>> {
        self.split.take_split(group)
    }
}

/// Whether `data` is a snapshot the state machine of `group` would restore: the engine's
/// `SnapshotCheck` of a snapshot received from a peer, before Raft may take it (a restore
/// that fails after would stop the engine). The same decoding as `restore`, into values
/// dropped at once (the meta group's directory and routes; a shard's slots and keyspace).
pub fn check_snapshot(group: u64, data: &mut dyn Read) -> std::io::Result<()> {
    if group == META_GROUP {
        decode_meta_snapshot(data).map(|_| ())
    } else {
        decode_shard_snapshot(data).map(|_| ())
    }
}

/// A shard snapshot decoded (what `ShardSm::restore` installs): its slots (absent in
/// snapshots from before slots were carried) and its keyspace.
fn decode_shard_snapshot(input: &mut dyn Read) -> std::io::Result<(Option<SlotSet>, Keyspace)> {
    let mut all = Vec::new();
    input.read_to_end(&mut all)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed shard snapshot");
    let mut slots = None;
    if let Some(rest) = all.strip_prefix(SNAPSHOT_MAGIC.as_slice()) {
        let (set, n) = SlotSet::decode(rest).ok_or_else(bad)?;
        slots = Some(set);
        all.drain(..SNAPSHOT_MAGIC.len() + n);
    }
    Ok((slots, Keyspace::read_from(&mut all.as_slice())?))
}

/// A meta snapshot decoded (what `MetaSm::restore` installs), and whether it carries
/// routes (a snapshot from before routes is the directory alone: then its routes are empty
/// and not to be installed).
fn decode_meta_snapshot(input: &mut dyn Read) -> std::io::Result<(MetaSnapshot, bool)> {
    let mut all = Vec::new();
    input.read_to_end(&mut all)?;
    let bad = |e| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    Ok(match serde_json::from_slice::<MetaSnapshot>(&all) {
        Ok(s) => (s, true),
        Err(_) => {
            let directory = serde_json::from_slice::<BTreeMap<u64, NodeInfo>>(&all).map_err(bad)?;
            (MetaSnapshot { directory, routes: BTreeMap::new(), next_shard: 0 }, false)
        }
    })
}

/// A node as the directory knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// QUIC address.
    pub peer: String,
    /// RESP address.
    pub client: String,
}

/// The node directory: id -> addresses.
pub type Directory = Arc<RwLock<BTreeMap<u64, NodeInfo>>>;

/// What the meta group knows of a shard, to route requests: a cache, published by the
/// shard's leader from its own state ([`crate::routes`]); the shard's applied slots stay
/// the authority ([`ShardSm`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The slots it serves.
    pub slots: SlotSet,
    /// The term of the leader that published it (0: the default layout, never published).
    pub term: u64,
    /// Its leader's node, when published.
    pub leader: Option<u64>,
    /// Nodes of its voters.
    pub voters: Vec<u64>,
    /// Nodes of its learners.
    pub learners: Vec<u64>,
}

/// The routes of every shard, and which shard group owns each slot by them.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: BTreeMap<u64, Route>,
    /// Group owning each slot (0: none).
    owner: Vec<u64>,
}

impl RouteTable {
    /// The default layout of `shards` shards ([`crate::slots::default_range`]), no leader known.
    pub fn new(shards: u32) -> RouteTable {
        let routes = (0..shards)
            .map(|s| {
                let slots = crate::slots::default_range(s, shards);
                (shard_group(s), Route { slots, term: 0, leader: None, voters: vec![], learners: vec![] })
            })
            .collect();
        RouteTable::from_routes(routes)
    }

    fn from_routes(routes: BTreeMap<u64, Route>) -> RouteTable {
        let mut owner = vec![0; SLOTS as usize];
        for (&g, r) in &routes {
            for &(a, b) in r.slots.ranges() {
                owner[a as usize..=b as usize].fill(g);
            }
        }
        RouteTable { routes, owner }
    }

    /// Every shard's route, by group.
    pub fn routes(&self) -> &BTreeMap<u64, Route> {
        &self.routes
    }

    /// The route of `group`.
    pub fn get(&self, group: u64) -> Option<&Route> {
        self.routes.get(&group)
    }

    /// The group owning `slot`, if any.
    pub fn owner(&self, slot: u16) -> Option<u64> {
        self.owner.get(slot as usize).copied().filter(|&g| g != 0)
    }

    /// Takes `route` for `group` unless the one held is from a newer term; whether it did.
    fn update(&mut self, group: u64, route: Route) -> bool {
        if self.routes.get(&group).is_some_and(|r| r.term > route.term) {
            return false;
        }
        let mut routes = std::mem::take(&mut self.routes);
        routes.insert(group, route);
        *self = RouteTable::from_routes(routes);
        true
    }
}

/// The route table, shared between the meta state machine and the request executors.
pub type Routes = Arc<RwLock<RouteTable>>;

/// Reads the route table.
pub fn read_routes(r: &Routes) -> std::sync::RwLockReadGuard<'_, RouteTable> {
    lock_r(r)
}

/// Reads a shard's slots.
pub fn read_slots(s: &ShardSlots) -> std::sync::RwLockReadGuard<'_, SlotSet> {
    lock_r(s)
}

/// A meta group command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCmd {
    /// Adds or updates a node's addresses.
    Register {
        /// Node id.
        id: u64,
        /// Its addresses.
        info: NodeInfo,
    },
    /// Removes a node from the directory (after it left every group).
    Unregister {
        /// Node id.
        id: u64,
    },
    /// A shard's route, published by its leader (kept unless a newer term's is held).
    Route {
        /// The shard's group.
        group: u64,
        /// Its route.
        route: Route,
    },
    /// Allocates a new shard's group (a split's child): the smallest id at or above
    /// `at_least` that is above every routed shard and every id allocated before. The
    /// meta group applies these one at a time, so two splits never pick the same child,
    /// whichever nodes propose them.
    AllocShard {
        /// The proposer's own lower bound (past the configured shards).
        at_least: u64,
    },
}

/// The meta group's snapshot: the directory and the routes.
#[derive(Serialize, Deserialize)]
struct MetaSnapshot {
    directory: BTreeMap<u64, NodeInfo>,
    routes: BTreeMap<u64, Route>,
    /// The next shard group `AllocShard` may give (absent before splits: 0).
    #[serde(default)]
    next_shard: u64,
}

/// Called with the directory after every change (the node points its transport at the
/// addresses).
pub type DirectoryHook = Arc<dyn Fn(&BTreeMap<u64, NodeInfo>) + Send + Sync>;

/// The meta group's state machine: the node directory and the shards' routes.
pub struct MetaSm {
    dir: Directory,
    hook: DirectoryHook,
    routes: Routes,
    /// The next shard group `MetaCmd::AllocShard` may give.
    next_shard: u64,
}

impl MetaSm {
    /// A state machine over `dir` and `routes`, calling `hook` after each change of `dir`.
    pub fn new(dir: Directory, hook: DirectoryHook, routes: Routes) -> MetaSm {
        MetaSm { dir, hook, routes, next_shard: 0 }
    }
}

impl StateMachine for MetaSm {
    fn apply(&mut self, _index: u64, _term: u64, command: Option<&[u8]>) -> Bytes {
        let Some(c) = command else { return Bytes::new() };
        let v = match serde_json::from_slice::<MetaCmd>(c) {
            Ok(MetaCmd::Register { id, info }) => {
                let mut d = lock_w(&self.dir);
                d.insert(id, info);
                (self.hook)(&d);
                Value::ok()
            }
            Ok(MetaCmd::Unregister { id }) => {
                let mut d = lock_w(&self.dir);
                d.remove(&id);
                (self.hook)(&d);
                Value::ok()
            }
            Ok(MetaCmd::Route { group, route }) => {
                Value::Int(lock_w(&self.routes).update(group, route) as i64)
            }
            Ok(MetaCmd::AllocShard { at_least }) => {
                let routed = lock_r(&self.routes).routes.keys().max().map_or(0, |g| g + 1);
                let id = at_least.max(routed).max(self.next_shard);
                match i64::try_from(id) {
                    Ok(v) => {
                        self.next_shard = id + 1;
                        Value::Int(v)
                    }
                    Err(_) => Value::err("ERR no shard id left"),
                }
            }
            Err(_) => Value::err("ERR malformed meta entry"),
        };
        Bytes::from(v.to_bytes(Proto::Resp3))
    }

    fn applied_index(&self) -> u64 {
        0
    }

    fn snapshot(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        let snap = MetaSnapshot {
            directory: lock_r(&self.dir).clone(),
            routes: lock_r(&self.routes).routes.clone(),
            next_shard: self.next_shard,
        };
        serde_json::to_writer(out, &snap).map_err(std::io::Error::other)
    }

    fn restore(&mut self, _index: u64, _term: u64, input: &mut dyn Read) -> std::io::Result<()> {
        // Before routes, the snapshot was the directory alone: the routes stay as created.
        let (snap, has_routes) = decode_meta_snapshot(input)?;
        let map = snap.directory;
        if has_routes {
            self.next_shard = snap.next_shard;
            *lock_w(&self.routes) = RouteTable::from_routes(snap.routes);
        }
        let mut d = lock_w(&self.dir);
        *d = map;
        (self.hook)(&d);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn only_the_meta_group_and_the_configured_shards_are_known() {
        assert!(known_group(META_GROUP, 16));
        assert!(known_group(shard_group(0), 16));
        assert!(known_group(shard_group(15), 16));
        assert!(!known_group(shard_group(16), 16), "a shard past the count");
        assert!(!known_group(SHARD_BASE - 1, 16));
        assert!(!known_group(0, 16));
        assert!(!known_group(u64::MAX, 16));
        assert!(!known_group(shard_group(0), 0), "no shards: only the meta group");
    }

    /// A key present for a whole scan is returned exactly once, whatever is added and
    /// removed between steps.
    #[test]
    fn scan_returns_every_lasting_key_once_under_changes() {
        let mut m: HashMap<Vec<u8>, Vec<u8>> =
            (0..200).map(|i| (format!("k{i}").into_bytes(), vec![])).collect();
        let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
        let (mut from, mut steps) = (0u64, 0usize);
        loop {
            let (next, keys) = scan_step(m.keys().map(|k| &k[..]), from, 7);
            for k in keys {
                *seen.entry(k).or_default() += 1;
            }
            steps += 1;
            // Churn: add new keys and remove some of the transient ones.
            m.insert(format!("new{steps}").into_bytes(), vec![]);
            m.remove(format!("new{}", steps.saturating_sub(3)).as_bytes());
            match next {
                Some(n) => from = n,
                None => break,
            }
            assert!(steps < 1000);
        }
        for i in 0..200 {
            assert_eq!(seen.get(format!("k{i}").as_bytes()), Some(&1), "k{i}");
        }
        assert!(steps >= 200 / 7, "{steps}");
    }

    #[test]
    fn commands_round_trip_and_garbage_is_refused() {
        let cmds = [
            WriteCmd::Set { key: b"k".to_vec(), val: b"".to_vec(), cond: 1 },
            WriteCmd::Del(vec![b"a".to_vec(), b"b".to_vec()]),
            WriteCmd::Incr { key: b"n".to_vec(), by: -7 },
            WriteCmd::MSet(vec![(b"a".to_vec(), b"1".to_vec())]),
            WriteCmd::Append { key: b"a".to_vec(), val: b"x".to_vec() },
            WriteCmd::GetSet { key: b"a".to_vec(), val: b"y".to_vec() },
            WriteCmd::GetDel(b"a".to_vec()),
            WriteCmd::SetNx { key: b"a".to_vec(), val: b"z".to_vec() },
            WriteCmd::Flush,
            WriteCmd::Args(vec![b"HSET".to_vec(), b"h".to_vec(), b"f".to_vec(), b"".to_vec()]),
            WriteCmd::Exec {
                watched: vec![(b"w".to_vec(), WatchState { present: true, index: 7, live: false })],
                cmds: vec![vec![b"INCR".to_vec(), b"n".to_vec()], vec![b"PING".to_vec()]],
            },
            WriteCmd::Exec { watched: vec![], cmds: vec![] },
            WriteCmd::Purge(vec![b"a".to_vec()]),
            // More parts than fit inline.
            WriteCmd::Del((0..9u8).map(|i| vec![b'k', i]).collect()),
            WriteCmd::MSet((0..5u8).map(|i| (vec![b'k', i], vec![i; 3])).collect()),
            WriteCmd::Args((0..7u8).map(|i| vec![b'a' + i]).collect()),
        ];
        for c in cmds {
            assert_eq!(WriteCmd::decode(&c.encode()), Some(c));
        }
        assert_eq!(WriteCmd::decode(&[99, 0, 0, 0, 0]), None);
        assert_eq!(WriteCmd::decode(&[0, 5, 0]), None);
        assert_eq!(WriteCmd::decode(&[]), None);
        assert_eq!(WriteCmd::decode(&[9]), None, "a command needs its name");
        let c = WriteCmd::Del(vec![b"k".to_vec()]).encode();
        assert_eq!(unstamp(&stamp(&c, 42)), (Some(42), c.as_slice()));
        assert_eq!(unstamp(&c), (None, c.as_slice()), "an entry of older nodes has no stamp");
    }

    /// A SET and a joint entry are encoded into a buffer sized once (no growth by
    /// reallocation), and round-trip.
    #[test]
    fn sets_and_joint_entries_are_encoded_in_one_allocation() {
        let set = WriteCmd::Set { key: vec![b'k'; 22], val: vec![b'v'; 3], cond: 0 };
        let one = set.encode();
        assert_eq!(one.capacity(), one.len());
        let batch = WriteCmd::Batch((0..30).map(|_| one.clone()).collect());
        let b = batch.encode();
        assert!(b.len() > 1024, "{}: past glibc's small sizes", b.len());
        assert_eq!(b.capacity(), b.len(), "the joint entry's buffer grew");
        assert_eq!(WriteCmd::decode(&b), Some(batch));
        assert_eq!(WriteCmd::decode(&one), Some(set));
    }

    /// A command's parts are split without allocating up to [`INLINE_PARTS`], and spill in
    /// order past it; a batch's commands are walked in place, and a batch that is not a
    /// whole sequence of parts is not one.
    #[test]
    fn parts_stay_inline_for_single_key_commands_and_batches_are_walked_in_place() {
        let set = WriteCmd::Set { key: b"k".to_vec(), val: b"v".to_vec(), cond: 0 }.encode();
        let p = parts(&set[1..]).unwrap();
        assert_eq!(p.as_slice(), [&b"k"[..], &b"v"[..], &[0u8][..]]);
        assert!(!p.spilled(), "nothing allocated for a SET's parts");
        let del = WriteCmd::Del((0..6u8).map(|i| vec![i]).collect()).encode();
        let p = parts(&del[1..]).unwrap();
        assert_eq!(p.as_slice(), (0..6u8).map(|i| vec![i]).collect::<Vec<_>>());
        assert!(parts(&del[1..del.len() - 1]).is_none(), "a cut part");
        assert!(
            parts(&[1, 0]).is_none() && parts(&[&set[1..], &[0, 0][..]].concat()).is_none(),
            "a cut header"
        );
        let cmds = vec![set.clone(), del.clone()];
        let batch = WriteCmd::Batch(cmds.clone()).encode();
        assert_eq!(batch_commands(&batch).unwrap().collect::<Vec<_>>(), cmds);
        assert!(batch_commands(&batch[..batch.len() - 1]).is_none());
        assert!(batch_commands(&[&batch[..], &[0, 0][..]].concat()).is_none(), "a cut header");
        assert!(batch_commands(&[13]).is_none(), "an empty batch is malformed");
        assert!(batch_commands(&set).is_none(), "not a batch");
    }

    /// The slot check without collecting keys refuses what the collected one refuses.
    #[test]
    fn every_key_of_a_multi_key_write_is_checked_against_the_slots() {
        let own = crate::slots::default_range(0, 2);
        let (inside, outside) = (b"x{hello}".to_vec(), b"foo".to_vec());
        assert!(own.contains(key_slot(&inside)) && !own.contains(key_slot(&outside)));
        let o = || outside.clone();
        let cmds = [
            WriteCmd::Set { key: o(), val: vec![], cond: 0 },
            WriteCmd::Incr { key: o(), by: 1 },
            WriteCmd::Append { key: o(), val: vec![] },
            WriteCmd::GetSet { key: o(), val: vec![] },
            WriteCmd::GetDel(o()),
            WriteCmd::SetNx { key: o(), val: vec![] },
            WriteCmd::Del(vec![inside.clone(), o()]),
            WriteCmd::MSet(vec![(inside.clone(), vec![]), (o(), vec![])]),
            WriteCmd::Purge(vec![o()]),
            WriteCmd::Args(vec![b"HSET".to_vec(), o(), b"f".to_vec(), b"v".to_vec()]),
            WriteCmd::Exec {
                watched: vec![(o(), WatchState { present: true, index: 1, live: true })],
                cmds: vec![vec![b"INCR".to_vec(), inside.clone()]],
            },
            WriteCmd::Exec { watched: vec![], cmds: vec![vec![b"INCR".to_vec(), o()]] },
        ];
        for c in &cmds {
            assert!(c.check_slots(&own).is_err(), "{c:?}");
            assert_eq!(c.check_slots(&own), check_slots(&own, c.keys()));
        }
        for c in [WriteCmd::Flush, WriteCmd::Batch(vec![b"anything".to_vec()])] {
            assert_eq!(c.check_slots(&own), Ok(()), "no keys of its own: {c:?}");
        }
        let fine = WriteCmd::Del(vec![inside.clone(), b"y{hello}".to_vec()]);
        assert_eq!(fine.check_slots(&own), Ok(()));
    }

    /// The engine may apply a write on its worker thread only if the write is quick: the
    /// string writes whose cost does not depend on what the key holds, alone or in a
    /// pipelined batch, stamped or not, and only while no reader holds the shard's data.
    #[test]
    fn string_writes_are_quick_and_the_rest_is_not() {
        let d: ShardData = Default::default();
        let sm = ShardSm::new(d.clone(), Arc::new(RwLock::new(crate::slots::default_range(0, 1))));
        let args = |a: &[&str]| WriteCmd::Args(a.iter().map(|a| a.as_bytes().to_vec()).collect()).encode();
        let set = WriteCmd::Set { key: b"k".to_vec(), val: b"v".to_vec(), cond: 0 }.encode();
        let incr = args(&["incr", "n"]);
        let hset = args(&["HSET", "h", "f", "v"]);
        let flush = WriteCmd::Flush.encode();
        assert!(sm.is_quick(&set));
        assert!(sm.is_quick(&stamp(&set, 5)));
        assert!(sm.is_quick(&incr));
        assert!(sm.is_quick(&stamp(&args(&["SET", "k", "v", "EX", "10"]), 5)));
        assert!(sm.is_quick(&WriteCmd::Incr { key: b"n".to_vec(), by: 1 }.encode()));
        assert!(sm.is_quick(&WriteCmd::Batch(vec![set.clone(), incr.clone()]).encode()));
        assert!(!sm.is_quick(&hset));
        assert!(!sm.is_quick(&WriteCmd::Del(vec![b"h".to_vec()]).encode()));
        assert!(!sm.is_quick(&WriteCmd::Append { key: b"k".to_vec(), val: b"v".to_vec() }.encode()));
        assert!(!sm.is_quick(&WriteCmd::Batch(vec![set.clone(), hset]).encode()));
        assert!(!sm.is_quick(&flush));
        assert!(!sm.is_quick(&stamp(&flush, 5)));
        assert!(!sm.is_quick(&WriteCmd::Batch(vec![set.clone(), flush]).encode()));
        {
            // A reader (KEYS, say) holds the data: the write would wait for it.
            let _reader = d.read().unwrap();
            assert!(!sm.is_quick(&set));
        }
        assert!(sm.is_quick(&set));
        let split = crate::shard_split::SplitCmd {
            child: 9,
            slots: crate::slots::default_range(0, 2),
            first_leader: 1,
            members: vec![1, 2, 3],
        };
        assert!(!sm.is_quick(&split.encode()));
        assert!(!sm.is_quick(&stamp(&split.encode(), 5)));
        assert!(!sm.is_quick(&[]));
    }

    /// Every replica computes the same expiry from the entry's stamp, whatever its own
    /// clock, and the apply time never goes backwards across leaders with skewed clocks.
    #[test]
    fn expiry_is_computed_from_the_stamp_at_apply() {
        let d: ShardData = Default::default();
        let mut sm = ShardSm::new(d.clone(), Arc::new(RwLock::new(crate::slots::default_range(0, 1))));
        let set =
            WriteCmd::Args(["SET", "k", "v", "EX", "10"].iter().map(|a| a.as_bytes().to_vec()).collect());
        sm.apply(1, 1, Some(&stamp(&set.encode(), 5_000)));
        assert_eq!(d.read().unwrap().get(b"k", 0).unwrap().expire_at(), Some(15_000));
        // A leader whose clock is behind: the apply time stays at 5 000.
        let px = WriteCmd::Args(["PEXPIRE", "k", "100"].iter().map(|a| a.as_bytes().to_vec()).collect());
        sm.apply(2, 2, Some(&stamp(&px.encode(), 1_000)));
        assert_eq!(d.read().unwrap().get(b"k", 0).unwrap().expire_at(), Some(5_100));
    }

    #[test]
    fn writes_follow_redis_semantics() {
        let mut m = Keyspace::default();
        let set = |k: &str, v: &str, cond| WriteCmd::Set { key: k.into(), val: v.into(), cond };
        assert_eq!(apply_write(&mut m, set("a", "1", 2)), Value::Bulk(None));
        assert_eq!(apply_write(&mut m, set("a", "1", 1)), Value::ok());
        assert_eq!(apply_write(&mut m, set("a", "2", 1)), Value::Bulk(None));
        assert_eq!(apply_write(&mut m, set("a", "5", 2)), Value::ok());
        assert_eq!(apply_write(&mut m, WriteCmd::Incr { key: b"a".to_vec(), by: 2 }), Value::Int(7));
        assert_eq!(apply_write(&mut m, WriteCmd::Incr { key: b"z".to_vec(), by: 1 }), Value::Int(1));
        apply_write(&mut m, set("s", "x", 0));
        assert!(matches!(apply_write(&mut m, WriteCmd::Incr { key: b"s".to_vec(), by: 1 }), Value::Error(_)));
        assert_eq!(apply_write(&mut m, WriteCmd::Del(vec![b"a".to_vec(), b"q".to_vec()])), Value::Int(1));
    }

    /// A shard's applied slots are the authority: a write with a key outside them is
    /// refused at apply and changes nothing, whatever the proposer believed.
    #[test]
    fn a_write_outside_the_shards_slots_is_refused_at_apply() {
        let d: ShardData = Default::default();
        let own = crate::slots::default_range(0, 2);
        let mut sm = ShardSm::new(d.clone(), Arc::new(RwLock::new(own.clone())));
        let (inside, outside) = (b"x{hello}".to_vec(), b"foo".to_vec());
        assert!(own.contains(key_slot(&inside)) && !own.contains(key_slot(&outside)));
        let set = |k: &[u8]| WriteCmd::Set { key: k.to_vec(), val: b"v".to_vec(), cond: 0 }.encode();
        assert_eq!(sm.apply(1, 1, Some(&set(&inside))).as_ref(), b"+OK\r\n");
        let refused = sm.apply(2, 1, Some(&set(&outside)));
        assert!(refused.starts_with(b"-WRONGSLOT 12182 "), "{refused:?}");
        let mset = WriteCmd::MSet(vec![(inside.clone(), b"2".to_vec()), (outside.clone(), b"2".to_vec())]);
        assert!(sm.apply(3, 1, Some(&mset.encode())).starts_with(b"-WRONGSLOT"));
        let m = d.read().unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(
            m.get(&inside, 0).map(|e| e.val.clone()),
            Some(crate::keyspace::Val::Str(b"v".to_vec())),
            "the refused MSET wrote nothing"
        );
    }

    /// A batch of a connection's writes is one entry with a reply per command, in order;
    /// each command is checked against the slots on its own, and a malformed or nested
    /// one fails alone.
    #[test]
    fn a_batch_applies_each_command_in_order_with_its_own_reply_and_slot_check() {
        let d: ShardData = Default::default();
        let own = crate::slots::default_range(0, 2);
        let mut sm = ShardSm::new(d.clone(), Arc::new(RwLock::new(own)));
        let (a, b, outside) = (b"x{hello}".to_vec(), b"y{hello}".to_vec(), b"foo".to_vec());
        let set = |k: &[u8], v: &[u8]| WriteCmd::Set { key: k.to_vec(), val: v.to_vec(), cond: 0 }.encode();
        let incr = |k: &[u8]| WriteCmd::Incr { key: k.to_vec(), by: 1 }.encode();
        let batch = WriteCmd::Batch(vec![
            set(&a, b"1"),
            incr(&a),
            set(&outside, b"no"),
            incr(&a),
            vec![99, 1, 2],
            WriteCmd::Batch(vec![set(&b, b"nested")]).encode(),
            set(&b, b"v"),
        ]);
        let decoded = WriteCmd::decode(&batch.encode()).unwrap();
        assert!(matches!(&decoded, WriteCmd::Batch(c) if c.len() == 7), "round trip");
        let reply = sm.apply(1, 1, Some(&batch.encode()));
        let Ok(Some((Value::Array(Some(vs)), _))) = crate::resp::parse_value(&reply, 1 << 20, 8) else {
            panic!("an array reply: {reply:?}")
        };
        assert_eq!(vs.len(), 7);
        assert_eq!(vs[0], Value::ok());
        assert_eq!(vs[1], Value::Int(2));
        assert!(matches!(&vs[2], Value::Error(e) if e.starts_with("WRONGSLOT")), "{:?}", vs[2]);
        assert_eq!(vs[3], Value::Int(3), "the refused command in the middle did not stop the rest");
        assert!(matches!(&vs[4], Value::Error(e) if e.contains("malformed")));
        assert!(matches!(&vs[5], Value::Error(e) if e.contains("malformed")), "no batch inside a batch");
        assert_eq!(vs[6], Value::ok());
        let m = d.read().unwrap();
        assert_eq!(m.len(), 2, "a and b; nothing outside the slots, nothing from the nested batch");
        assert_eq!(m.get(&b, 0).map(|e| e.val.clone()), Some(crate::keyspace::Val::Str(b"v".to_vec())));
    }

    /// The background snapshot is the state as of the entry it names: later writes do not
    /// leak into it, it restores to exactly that state (slots included), and it carries the
    /// same bytes as the apply-thread snapshot taken at the same point.
    #[test]
    fn a_snapshot_source_is_the_state_at_its_entry_whatever_is_applied_after() {
        let d: ShardData = Default::default();
        let own = crate::slots::default_range(0, 1);
        let mut sm = ShardSm::new(d.clone(), Arc::new(RwLock::new(own.clone())));
        let set =
            |k: String, v: &[u8]| WriteCmd::Set { key: k.into_bytes(), val: v.to_vec(), cond: 0 }.encode();
        // Enough data for several chunks of the stream.
        for i in 1..=3_000u64 {
            sm.apply(i, 2, Some(&set(format!("k{i}"), &[b'a'; 100])));
        }
        sm.apply(3_001, 3, None);
        let mut direct = Vec::new();
        sm.snapshot(&mut direct).unwrap();
        let mut src = sm.snapshot_source().expect("shards snapshot in the background");
        assert_eq!(src.reflects(), (3_001, 3), "the last entry applied, a no-op included");
        // Apply goes on: overwrite, delete and add after the source was taken.
        for i in 1..=3_000u64 {
            let c = if i % 2 == 0 {
                set(format!("k{i}"), b"new")
            } else {
                WriteCmd::Del(vec![format!("k{i}").into_bytes()]).encode()
            };
            sm.apply(3_001 + i, 3, Some(&c));
        }
        sm.apply(6_002, 3, Some(&set("late".into(), b"x")));
        let (mut streamed, mut buf) = (Vec::new(), [0u8; 1_000]);
        for _ in 0..10_000 {
            let n = src.read_at(streamed.len() as u64, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            streamed.extend_from_slice(&buf[..n]);
        }
        assert_eq!(streamed.len(), direct.len());
        assert_eq!(streamed, direct, "the same bytes as the snapshot taken on the apply thread");
        let d2: ShardData = Default::default();
        let slots2 = Arc::new(RwLock::new(SlotSet::default()));
        let mut restored = ShardSm::new(d2.clone(), slots2.clone());
        restored.restore(3_001, 3, &mut streamed.as_slice()).unwrap();
        let m = d2.read().unwrap();
        assert_eq!(m.len(), 3_000);
        assert!(m.get(b"late", 0).is_none(), "written after the source was taken");
        assert_eq!(m.get(b"k2", 0).map(|e| e.val.clone()), Some(crate::keyspace::Val::Str(vec![b'a'; 100])));
        assert_eq!(*slots2.read().unwrap(), own);
        assert_eq!(restored.snapshot_source().unwrap().reflects(), (3_001, 3), "restore sets the position");
    }

    /// Shard groups for split children come from the meta group, one at a time: two
    /// allocations with the same lower bound (two splits proposed at once from nodes that
    /// know the same shards) get different groups, above every routed shard, and the
    /// counter survives a snapshot.
    #[test]
    fn shard_allocations_never_repeat_and_survive_snapshots() {
        let (dir, routes): (Directory, Routes) =
            (Default::default(), Arc::new(RwLock::new(RouteTable::new(4))));
        let mut sm = MetaSm::new(dir, Arc::new(|_: &BTreeMap<u64, NodeInfo>| {}), routes);
        let alloc = |sm: &mut MetaSm, at_least: u64| {
            let c = serde_json::to_vec(&MetaCmd::AllocShard { at_least }).unwrap();
            match crate::resp::parse_value(&sm.apply(1, 1, Some(&c)), 1 << 10, 2) {
                Ok(Some((Value::Int(v), _))) => v as u64,
                other => panic!("{other:?}"),
            }
        };
        let a = alloc(&mut sm, shard_group(4));
        let b = alloc(&mut sm, shard_group(4));
        assert_eq!(a, shard_group(4), "past the 4 routed shards");
        assert_eq!(b, a + 1, "the same bound twice: a different group");
        assert_eq!(alloc(&mut sm, shard_group(10)), shard_group(10), "never below the bound");
        let mut snap = Vec::new();
        sm.snapshot(&mut snap).unwrap();
        let (dir2, routes2): (Directory, Routes) =
            (Default::default(), Arc::new(RwLock::new(RouteTable::new(4))));
        let mut sm2 = MetaSm::new(dir2, Arc::new(|_: &BTreeMap<u64, NodeInfo>| {}), routes2);
        sm2.restore(1, 1, &mut snap.as_slice()).unwrap();
        assert_eq!(alloc(&mut sm2, shard_group(4)), shard_group(11), "the counter came with the snapshot");
    }

    /// The meta group's routes keep the newest term's route of each shard, index every
    /// slot to its shard, and survive a snapshot (an old directory-only snapshot restores).
    #[test]
    fn routes_keep_the_newest_term_and_survive_snapshots() {
        let (dir, routes): (Directory, Routes) =
            (Default::default(), Arc::new(RwLock::new(RouteTable::new(4))));
        let mut sm = MetaSm::new(dir.clone(), Arc::new(|_: &BTreeMap<u64, NodeInfo>| {}), routes.clone());
        assert_eq!(routes.read().unwrap().owner(0), Some(shard_group(0)));
        assert_eq!(routes.read().unwrap().owner(SLOTS - 1), Some(shard_group(3)));
        let route = |term, leader| Route {
            slots: crate::slots::default_range(1, 4),
            term,
            leader: Some(leader),
            voters: vec![1, 2, 3],
            learners: vec![],
        };
        let put = |sm: &mut MetaSm, r: Route| {
            let c = serde_json::to_vec(&MetaCmd::Route { group: shard_group(1), route: r }).unwrap();
            sm.apply(1, 1, Some(&c))
        };
        assert_eq!(put(&mut sm, route(5, 2)).as_ref(), b":1\r\n");
        assert_eq!(put(&mut sm, route(4, 3)).as_ref(), b":0\r\n", "an older term's route is ignored");
        assert_eq!(routes.read().unwrap().get(shard_group(1)).unwrap().leader, Some(2));
        let mut snap = Vec::new();
        sm.snapshot(&mut snap).unwrap();
        let routes2 = Arc::new(RwLock::new(RouteTable::new(4)));
        let mut sm2 =
            MetaSm::new(Default::default(), Arc::new(|_: &BTreeMap<u64, NodeInfo>| {}), routes2.clone());
        sm2.restore(1, 1, &mut snap.as_slice()).unwrap();
        assert_eq!(routes2.read().unwrap().get(shard_group(1)), Some(&route(5, 2)));
        // A snapshot from before routes: the directory alone.
        let old =
            serde_json::to_vec(&BTreeMap::from([(7u64, NodeInfo { peer: "a".into(), client: "b".into() })]))
                .unwrap();
        sm2.restore(1, 1, &mut old.as_slice()).unwrap();
        assert!(routes2.read().unwrap().get(shard_group(1)).is_some());
    }

    #[test]
    fn shard_snapshot_restores_the_same_map() {
        let d: ShardData = Default::default();
        let slots: ShardSlots = Arc::new(RwLock::new(crate::slots::default_range(0, 1)));
        let mut sm = ShardSm::new(d.clone(), slots);
        for i in 0..1000u32 {
            let c = WriteCmd::Set { key: i.to_le_bytes().to_vec(), val: vec![i as u8; 100], cond: 0 };
            sm.apply(i as u64 + 1, 1, Some(&c.encode()));
        }
        let mut snap = Vec::new();
        sm.snapshot(&mut snap).unwrap();
        let d2: ShardData = Default::default();
        let slots2: ShardSlots = Default::default();
        let mut sm2 = ShardSm::new(d2.clone(), slots2.clone());
        sm2.restore(1000, 1, &mut snap.as_slice()).unwrap();
        let (a, b) = (d.read().unwrap(), d2.read().unwrap());
        assert_eq!(a.len(), b.len());
        for i in 0..1000u32 {
            assert_eq!(a.get(&i.to_le_bytes(), 0), b.get(&i.to_le_bytes(), 0));
        }
        drop((a, b));
        assert_eq!(slots2.read().unwrap().len(), SLOTS as usize, "the slots come back with the data");
        assert!(sm2.restore(1, 1, &mut &snap[..snap.len() - 1]).is_err());
        // The engine's check of a received snapshot says what restore would do.
        let g = shard_group(0);
        assert!(check_snapshot(g, &mut snap.as_slice()).is_ok());
        assert!(check_snapshot(g, &mut &snap[..snap.len() - 1]).is_err());
        assert!(check_snapshot(g, &mut &b"not a snapshot"[..]).is_err());
        assert!(sm2.restore(1, 1, &mut &b"not a snapshot"[..]).is_err());
        // The meta group's, likewise.
        let (dir, routes): (Directory, Routes) =
            (Default::default(), Arc::new(RwLock::new(RouteTable::new(4))));
        let mut meta = MetaSm::new(dir, Arc::new(|_: &BTreeMap<u64, NodeInfo>| {}), routes);
        let mut msnap = Vec::new();
        meta.snapshot(&mut msnap).unwrap();
        assert!(check_snapshot(META_GROUP, &mut msnap.as_slice()).is_ok());
        assert!(meta.restore(1, 1, &mut msnap.as_slice()).is_ok());
        assert!(
            check_snapshot(META_GROUP, &mut &snap[..]).is_err(),
            "a shard's snapshot is no meta snapshot"
        );
        assert!(meta.restore(1, 1, &mut &snap[..]).is_err());
    }
}
