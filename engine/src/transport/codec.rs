//! The wire codec of every engine message: a compact hand-written format of LEB128
//! varints and length-prefixed byte strings.
//!
//! Owns the encoding of [`WireItem`] batches (one batch = one transport frame) and a
//! decoder that rejects malformed input with a typed [`DecodeError`], never panics, and
//! never allocates more than the input and [`DecodeLimits`] allow: every count is checked
//! against its limit and against the bytes left before anything is reserved, and payloads
//! are zero-copy slices of the input. Never sends anything.
//!
//! Why not protobuf (prost): the messages are small and numeric, so varints carry them in
//! a few bytes either way, but a hand-written codec (1) decodes straight into the engine's
//! own types with zero-copy `Bytes` payloads, with no generated intermediate structs and
//! the copy/conversion they need; (2) enforces allocation limits before reserving, which
//! prost does not offer; (3) needs no protoc or build script. The measurement is in the
//! test `codec_throughput_figures` (encode + decode of batched 128-byte appends), printed
//! with `--nocapture`.
//!
//! Layout:
//! ```text
//! batch   := version:u8 count:varint item{count}
//! item    := 1 group:varint message
//!          | 2 count:varint (group from to term commit round){count}      coalesced heartbeats
//!          | 3 count:varint (group from to term round){count}             coalesced responses
//!          | 4 count:varint (group from to term commit round quiesce:u8){count}
//!                                              coalesced heartbeats, some quiescing
//!          | 5 group:varint replica:varint conf_index:varint                  replica removed
//!          | 6 group:varint replica:varint                          stale-peer probe
//!          | 7 group:varint replica:varint               removed replica destroyed here
//!          | 8 group:varint from:varint to:varint leader_term:varint index:varint
//!            term:varint offset:varint                snapshot bytes durable at a follower
//! message := from:varint to:varint term:varint kind:u8 fields(kind)
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::raft::conf::{ChangeKind, ConfChange, ConfState, SingleChange, Transition};
use crate::raft::message::{Entry, EntryPayload, Message, MessageBody, SnapshotChunk, SnapshotMeta};
use crate::raft::types::Replica;
use crate::session::{SessionHeader, SessionOp};

/// The codec version this build writes and the newest it reads.
pub const CODEC_VERSION: u8 = 1;

/// One heartbeat inside a coalesced heartbeat item: what a `Heartbeat` message of one
/// group carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeartbeatEntry {
    /// The group.
    pub group: u64,
    /// The leader's replica id.
    pub from: u64,
    /// The follower's replica id.
    pub to: u64,
    /// The leader's term.
    pub term: u64,
    /// min(leader commit, follower's match).
    pub commit: u64,
    /// The leader's heartbeat round.
    pub round: u64,
    /// The leader quiesced the group (see `MessageBody::Heartbeat`).
    pub quiesce: bool,
}

/// One answer inside a coalesced heartbeat-response item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeartbeatAck {
    /// The group.
    pub group: u64,
    /// The follower's replica id.
    pub from: u64,
    /// The leader's replica id.
    pub to: u64,
    /// The follower's term.
    pub term: u64,
    /// The round being answered.
    pub round: u64,
}

/// One item of a wire batch.
#[derive(Debug, Clone, PartialEq, Eq)]
// `Msg` is the common variant and the large one (a snapshot chunk's metadata); boxing it
// would cost an allocation per message on the hot path.
#[allow(clippy::large_enum_variant)]
#[non_exhaustive]
pub enum WireItem {
    /// A message of one group.
    Msg {
        /// The group.
        group: u64,
        /// The message.
        msg: Message,
    },
    /// Every heartbeat from this node to one destination node in one tick.
    Heartbeats(Vec<HeartbeatEntry>),
    /// Every heartbeat answer from this node to one destination node in one round.
    HeartbeatAcks(Vec<HeartbeatAck>),
    /// A member's answer to a message from `replica` of `group`, which the member's
    /// applied configuration at `conf_index` no longer contains (and, replica ids never
    /// being reused, never will): the receiver destroys that replica if it is this exact
    /// replica and its own configuration is older (TiKV's stale-peer GC message).
    Tombstone {
        /// The group.
        group: u64,
        /// The removed replica.
        replica: u64,
        /// Index of the sender's applied configuration change that excludes `replica`.
        conf_index: u64,
    },
    /// A replica's stale-peer check (TiKV's): `replica` of `group`, idle or quiesced, asks
    /// a member of its configuration whether it still belongs to the group. A member whose
    /// applied configuration removed it answers with [`WireItem::Tombstone`]; any other
    /// receiver ignores it. Never stepped into Raft, so it wakes no quiesced group.
    GcProbe {
        /// The group.
        group: u64,
        /// The probing replica.
        replica: u64,
    },
    /// The answer to a leader's [`WireItem::Tombstone`]: `replica` of `group` does not
    /// exist on the sending node and never will (a durable tombstone record covers it),
    /// so the leader may forget its removal record (`ChangeKind::Forget`).
    TombstoneAck {
        /// The group.
        group: u64,
        /// The removed replica.
        replica: u64,
    },
    /// A follower's report on a snapshot stream: replica `from` of `group` holds the first
    /// `offset` data bytes of the snapshot at (`index`, `term`) that leader replica `to`
    /// streams in `leader_term`, durably. Sent as the durable offset advances and when a
    /// chunk does not continue it (a gap, a stream resumed past what the follower holds):
    /// the leader starts its next stream of that snapshot there. Never stepped into Raft.
    SnapshotProgress {
        /// The group.
        group: u64,
        /// The follower replica.
        from: u64,
        /// The leader replica.
        to: u64,
        /// The term of the stream's chunks.
        leader_term: u64,
        /// The snapshot's index.
        index: u64,
        /// The snapshot's term.
        term: u64,
        /// Data bytes durable at the follower.
        offset: u64,
    },
}

/// Limits the decoder enforces beyond the input length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most items in one batch. Default 65,536.
    pub max_items: usize,
    /// Most entries in one append. Default 65,536.
    pub max_entries: usize,
    /// Most heartbeats (or answers) in one coalesced item. Default 1,048,576.
    pub max_heartbeats: usize,
    /// Most replicas in one configuration list or changes in one change. Default 4,096.
    pub max_members: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_items: 1 << 16, max_entries: 1 << 16, max_heartbeats: 1 << 20, max_members: 4096 }
    }
}

/// Why a batch could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// `SendSnapshot` is an instruction to the local runtime, never sent on the wire.
    #[error("SendSnapshot is local to the runtime and has no wire form")]
    LocalOnly,
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended inside a value.
    #[error("input truncated at byte {at}")]
    Truncated {
        /// Offset where more bytes were needed.
        at: usize,
    },
    /// Written by a newer codec.
    #[error("unsupported codec version {0}")]
    UnsupportedVersion(u8),
    /// A varint longer than 10 bytes or overflowing 64 bits.
    #[error("bad varint at byte {at}")]
    BadVarint {
        /// Offset of the varint.
        at: usize,
    },
    /// A tag byte names nothing.
    #[error("unknown {what} tag {tag} at byte {at}")]
    UnknownTag {
        /// Which tag.
        what: &'static str,
        /// Its value.
        tag: u8,
        /// Offset.
        at: usize,
    },
    /// A count exceeds its limit.
    #[error("{what} count {count} exceeds limit {limit}")]
    TooMany {
        /// Which count.
        what: &'static str,
        /// Announced count.
        count: u64,
        /// The limit.
        limit: usize,
    },
    /// A value is out of range (index overflow, seq beyond u32, bool not 0/1).
    #[error("invalid {what} at byte {at}")]
    Invalid {
        /// Which value.
        what: &'static str,
        /// Offset.
        at: usize,
    },
    /// Bytes left over after the last item.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

// ---------------------------------------------------------------------------------------
// Encoding

/// Bytes `put_varint` writes for `v`.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes a list's entries take: exact up to 64 entries, else estimated from 64 of them
/// spread over the list, plus an eighth. Measuring every entry of a 100,000-entry list is
/// a pass over it that costs about as much as encoding it; the buffer grows if short.
fn sampled_size<T>(xs: &[T], size: impl Fn(&T) -> usize) -> usize {
    const SAMPLE: usize = 64;
    let n = xs.len();
    if n <= SAMPLE {
        return xs.iter().map(size).sum();
    }
    let step = n / SAMPLE;
    let sample: usize = (0..SAMPLE).filter_map(|i| xs.get(i * step)).map(size).sum();
    sample * n / SAMPLE * 9 / 8
}

/// Bytes an item takes, about (exact for small coalesced items), so the batch buffer is
/// allocated once.
fn item_size_hint(it: &WireItem) -> usize {
    match it {
        WireItem::Msg { .. }
        | WireItem::Tombstone { .. }
        | WireItem::GcProbe { .. }
        | WireItem::TombstoneAck { .. } => 32,
        WireItem::SnapshotProgress { .. } => 64,
        WireItem::Heartbeats(hs) => {
            10 + sampled_size(hs, |h| {
                // A flag byte per entry only in an item where some group quiesces.
                usize::from(h.quiesce)
                    + [h.group, h.from, h.to, h.term, h.commit, h.round].map(varint_len).iter().sum::<usize>()
            })
        }
        WireItem::HeartbeatAcks(hs) => {
            10 + sampled_size(hs, |h| {
                [h.group, h.from, h.to, h.term, h.round].map(varint_len).iter().sum::<usize>()
            })
        }
    }
}

/// Writes the varints of `vs` (at most 6) with one capacity check, straight into the
/// buffer (heartbeat entries: a hot loop). Writing them to a scratch array first and
/// copying it costs a stalled load (the bytes were just stored one by one) or a call to
/// `memcpy`.
#[inline(always)]
fn put_varints<const N: usize>(b: &mut BytesMut, vs: [u64; N]) {
    // At most 6 varints of at most 10 bytes: every index below stays under 60.
    let len = b.len();
    // Zeroed room (constant-length stores, no call), then the bytes written in place.
    b.extend_from_slice(&[0u8; 64]);
    let out = &mut b[len..];
    let mut n = 0;
    for mut v in vs.into_iter().take(6) {
        while v >= 0x80 {
            out[n] = (v as u8) | 0x80;
            v >>= 7;
            n += 1;
        }
        out[n] = v as u8;
        n += 1;
    }
    b.truncate(len + n);
}

fn put_varint(b: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        b.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

fn put_bytes(b: &mut impl BufMut, d: &[u8]) {
    put_varint(b, d.len() as u64);
    b.put_slice(d);
}

fn put_replicas(b: &mut BytesMut, rs: &[Replica]) {
    put_varint(b, rs.len() as u64);
    for r in rs {
        put_varint(b, r.node);
        put_varint(b, r.id);
    }
}

fn put_conf(b: &mut BytesMut, c: &ConfState) {
    put_replicas(b, &c.voters);
    put_replicas(b, &c.voters_outgoing);
    put_replicas(b, &c.learners);
    put_replicas(b, &c.learners_next);
    b.put_u8(c.auto_leave as u8);
    put_varint(b, c.max_replica_id);
    put_replicas(b, &c.removed);
}

fn put_meta(b: &mut BytesMut, m: &SnapshotMeta) {
    put_varint(b, m.index);
    put_varint(b, m.term);
    put_conf(b, &m.conf);
}

fn put_conf_change(b: &mut impl BufMut, cc: &ConfChange) {
    b.put_u8(match cc.transition {
        Transition::Auto => 0,
        Transition::JointAuto => 1,
        Transition::JointExplicit => 2,
    });
    put_varint(b, cc.changes.len() as u64);
    for c in &cc.changes {
        b.put_u8(match c.kind {
            ChangeKind::AddVoter => 0,
            ChangeKind::AddLearner => 1,
            ChangeKind::Remove => 2,
            ChangeKind::Forget => 3,
        });
        put_varint(b, c.replica.node);
        put_varint(b, c.replica.id);
    }
}

const K_APPEND: u8 = 1;
const K_APPEND_RESP: u8 = 2;
const K_HEARTBEAT: u8 = 3;
const K_HEARTBEAT_RESP: u8 = 4;
const K_VOTE: u8 = 5;
const K_VOTE_RESP: u8 = 6;
const K_TIMEOUT_NOW: u8 = 7;
const K_SNAPSHOT_CHUNK: u8 = 8;
const K_READ_INDEX: u8 = 9;
const K_READ_INDEX_RESP: u8 = 10;
/// A heartbeat with the quiesce flag set.
const K_HEARTBEAT_QUIESCE: u8 = 11;
const K_COMMIT: u8 = 12;

const P_NOOP: u8 = 0;
const P_NORMAL: u8 = 1;
const P_CONF: u8 = 2;
const P_SESSION: u8 = 3;

const S_REGISTER: u8 = 0;
const S_PROPOSE: u8 = 1;
const S_CLOSE: u8 = 2;

/// A session entry: op tag, its fields, the stamp, then the data.
fn put_session(b: &mut impl BufMut, h: &SessionHeader, data: &Bytes) {
    match h.op {
        SessionOp::Register { ttl_ms, max_sessions } => {
            b.put_u8(S_REGISTER);
            put_varint(b, ttl_ms);
            put_varint(b, max_sessions);
        }
        SessionOp::Propose { session, seq, floor } => {
            b.put_u8(S_PROPOSE);
            put_varint(b, session);
            put_varint(b, seq);
            put_varint(b, floor);
        }
        SessionOp::Close { session } => {
            b.put_u8(S_CLOSE);
            put_varint(b, session);
        }
    }
    put_varint(b, h.stamp_ms);
    put_bytes(b, data);
}

fn flags(bits: &[bool]) -> u8 {
    bits.iter().enumerate().fold(0u8, |acc, (i, &b)| acc | ((b as u8) << i))
}

/// Appends the encoding of one message.
pub fn encode_message(b: &mut BytesMut, m: &Message) -> Result<(), EncodeError> {
    put_varint(b, m.from);
    put_varint(b, m.to);
    put_varint(b, m.term);
    match &m.body {
        MessageBody::Append { prev_index, prev_term, entries, commit } => {
            b.put_u8(K_APPEND);
            put_varint(b, *prev_index);
            put_varint(b, *prev_term);
            put_varint(b, *commit);
            put_varint(b, entries.len() as u64);
            let mut prev = *prev_index;
            for e in entries {
                put_varint(b, e.index.wrapping_sub(prev));
                prev = e.index;
                put_varint(b, e.term);
                match &e.payload {
                    EntryPayload::Noop => b.put_u8(P_NOOP),
                    EntryPayload::Normal(d) => {
                        b.put_u8(P_NORMAL);
                        put_bytes(b, d);
                    }
                    EntryPayload::ConfChange(cc) => {
                        b.put_u8(P_CONF);
                        put_conf_change(b, cc);
                    }
                    EntryPayload::Session { header, data } => {
                        b.put_u8(P_SESSION);
                        put_session(b, header, data);
                    }
                }
            }
        }
        MessageBody::Commit { commit } => {
            b.put_u8(K_COMMIT);
            put_varint(b, *commit);
        }
        MessageBody::AppendResponse { index, reject, reject_hint, hint_term } => {
            b.put_u8(K_APPEND_RESP);
            put_varint(b, *index);
            b.put_u8(*reject as u8);
            put_varint(b, *reject_hint);
            put_varint(b, *hint_term);
        }
        MessageBody::Heartbeat { commit, round, quiesce } => {
            b.put_u8(if *quiesce { K_HEARTBEAT_QUIESCE } else { K_HEARTBEAT });
            put_varint(b, *commit);
            put_varint(b, *round);
        }
        MessageBody::HeartbeatResponse { round } => {
            b.put_u8(K_HEARTBEAT_RESP);
            put_varint(b, *round);
        }
        MessageBody::RequestVote { pre_vote, last_index, last_term, transfer, commit, commit_term } => {
            b.put_u8(K_VOTE);
            b.put_u8(flags(&[*pre_vote, *transfer]));
            put_varint(b, *last_index);
            put_varint(b, *last_term);
            put_varint(b, *commit);
            put_varint(b, *commit_term);
        }
        MessageBody::RequestVoteResponse { pre_vote, reject, commit, commit_term } => {
            b.put_u8(K_VOTE_RESP);
            b.put_u8(flags(&[*pre_vote, *reject]));
            put_varint(b, *commit);
            put_varint(b, *commit_term);
        }
        MessageBody::TimeoutNow => b.put_u8(K_TIMEOUT_NOW),
        MessageBody::ReadIndex { ctx } => {
            b.put_u8(K_READ_INDEX);
            put_varint(b, *ctx);
        }
        MessageBody::ReadIndexResponse { ctx, index } => {
            b.put_u8(K_READ_INDEX_RESP);
            put_varint(b, *ctx);
            put_varint(b, *index);
        }
        MessageBody::SendSnapshot { .. } => return Err(EncodeError::LocalOnly),
        MessageBody::SnapshotChunk(c) => {
            b.put_u8(K_SNAPSHOT_CHUNK);
            put_meta(b, &c.meta);
            put_varint(b, c.seq.into());
            put_varint(b, c.offset);
            b.put_u8(c.last as u8);
            put_bytes(b, &c.data);
        }
    }
    Ok(())
}

/// Encodes a batch of items as one frame payload. On error nothing useful is returned
/// (the caller keeps its items).
pub fn encode_batch(items: &[WireItem]) -> Result<Bytes, EncodeError> {
    let mut b = BytesMut::with_capacity(64 + items.iter().map(item_size_hint).sum::<usize>());
    b.put_u8(CODEC_VERSION);
    put_varint(&mut b, items.len() as u64);
    for it in items {
        match it {
            WireItem::Msg { group, msg } => {
                b.put_u8(1);
                put_varint(&mut b, *group);
                encode_message(&mut b, msg)?;
            }
            WireItem::Heartbeats(hs) => {
                // One pass: written without flags, noting whether any group quiesces.
                let start = b.len();
                b.put_u8(2);
                put_varint(&mut b, hs.len() as u64);
                let mut quiesce = false;
                for h in hs {
                    put_varints(&mut b, [h.group, h.from, h.to, h.term, h.commit, h.round]);
                    quiesce |= h.quiesce;
                }
                if quiesce {
                    // Rare (a group quiesces once per idle period): written again, with
                    // one flag byte per entry.
                    b.truncate(start);
                    b.put_u8(4);
                    put_varint(&mut b, hs.len() as u64);
                    for h in hs {
                        put_varints(&mut b, [h.group, h.from, h.to, h.term, h.commit, h.round]);
                        b.put_u8(u8::from(h.quiesce));
                    }
                }
            }
            WireItem::HeartbeatAcks(hs) => {
                b.put_u8(3);
                put_varint(&mut b, hs.len() as u64);
                for h in hs {
                    put_varints(&mut b, [h.group, h.from, h.to, h.term, h.round]);
                }
            }
            WireItem::Tombstone { group, replica, conf_index } => {
                b.put_u8(5);
                put_varints(&mut b, [*group, *replica, *conf_index]);
            }
            WireItem::GcProbe { group, replica } => {
                b.put_u8(6);
                put_varints(&mut b, [*group, *replica]);
            }
            WireItem::TombstoneAck { group, replica } => {
                b.put_u8(7);
                put_varints(&mut b, [*group, *replica]);
            }
            WireItem::SnapshotProgress { group, from, to, leader_term, index, term, offset } => {
                b.put_u8(8);
                put_varints(&mut b, [*group, *from, *to, *leader_term, *index, *term]);
                put_varint(&mut b, *offset);
            }
        }
    }
    Ok(b.freeze())
}

// ---------------------------------------------------------------------------------------
// Decoding

/// Elements reserved ahead of decoding them: a count that lies about the input costs at
/// most this many, and lists then grow only with elements actually decoded.
const RESERVE_AHEAD: usize = 1024;

fn reserve(n: usize) -> usize {
    n.min(RESERVE_AHEAD)
}

struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    limits: DecodeLimits,
}

impl Reader<'_> {
    fn left(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        let v = *self.buf.get(self.pos).ok_or(DecodeError::Truncated { at: self.pos })?;
        self.pos += 1;
        Ok(v)
    }

    fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        let at = self.pos;
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid { what, at }),
        }
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<u64, DecodeError> {
        // Fast paths, inlined: most ids, terms and counts fit one byte, group ids and
        // indexes up to 2^21 three.
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let (v, n) = match *rest {
            [b0, ..] if b0 < 0x80 => (u64::from(b0), 1),
            [b0, b1, ..] if b1 < 0x80 => (u64::from(b0 & 0x7f) | u64::from(b1) << 7, 2),
            [b0, b1, b2, ..] if b2 < 0x80 => {
                (u64::from(b0 & 0x7f) | u64::from(b1 & 0x7f) << 7 | u64::from(b2) << 14, 3)
            }
            _ => return self.varint_long(),
        };
        self.pos += n;
        Ok(v)
    }

    /// A varint of more than three bytes, or one cut short by the end of the input: over
    /// a slice, no per-byte check of the position.
    fn varint_long(&mut self) -> Result<u64, DecodeError> {
        let at = self.pos;
        let rest = self.buf.get(at..).unwrap_or_default();
        let mut v: u64 = 0;
        for (i, &b) in rest.iter().take(10).enumerate() {
            let part = (b & 0x7f) as u64;
            if i == 9 && part > 1 {
                return Err(DecodeError::BadVarint { at });
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                self.pos = at + i + 1;
                return Ok(v);
            }
        }
        if rest.len() < 10 {
            // Every byte left continued the varint.
            return Err(DecodeError::Truncated { at: self.buf.len() });
        }
        Err(DecodeError::BadVarint { at })
    }

    /// A count, checked against `limit` and against the bytes left (each element takes at
    /// least `min_size` bytes), so a capacity reserved from it is bounded by the input.
    fn count(&mut self, what: &'static str, limit: usize, min_size: usize) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.varint()?;
        if n > limit as u64 {
            return Err(DecodeError::TooMany { what, count: n, limit });
        }
        let n = n as usize;
        if n.saturating_mul(min_size) > self.left() {
            return Err(DecodeError::Truncated { at });
        }
        Ok(n)
    }

    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let at = self.pos;
        let n = self.varint()?;
        if n > self.left() as u64 {
            return Err(DecodeError::Truncated { at });
        }
        let n = n as usize;
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    fn replicas(&mut self) -> Result<Vec<Replica>, DecodeError> {
        let n = self.count("replica", self.limits.max_members, 2)?;
        let mut v = Vec::with_capacity(reserve(n));
        for _ in 0..n {
            v.push(Replica { node: self.varint()?, id: self.varint()? });
        }
        Ok(v)
    }

    fn conf(&mut self) -> Result<ConfState, DecodeError> {
        Ok(ConfState {
            voters: self.replicas()?,
            voters_outgoing: self.replicas()?,
            learners: self.replicas()?,
            learners_next: self.replicas()?,
            auto_leave: self.bool("auto_leave")?,
            max_replica_id: self.varint()?,
            removed: self.replicas()?,
        })
    }

    fn meta(&mut self) -> Result<SnapshotMeta, DecodeError> {
        Ok(SnapshotMeta { index: self.varint()?, term: self.varint()?, conf: self.conf()? })
    }

    fn session(&mut self) -> Result<EntryPayload, DecodeError> {
        let at = self.pos;
        let op = match self.u8()? {
            S_REGISTER => SessionOp::Register { ttl_ms: self.varint()?, max_sessions: self.varint()? },
            S_PROPOSE => {
                SessionOp::Propose { session: self.varint()?, seq: self.varint()?, floor: self.varint()? }
            }
            S_CLOSE => SessionOp::Close { session: self.varint()? },
            tag => return Err(DecodeError::UnknownTag { what: "session op", tag, at }),
        };
        let header = SessionHeader { op, stamp_ms: self.varint()? };
        Ok(EntryPayload::Session { header, data: self.bytes()? })
    }

    fn conf_change(&mut self) -> Result<ConfChange, DecodeError> {
        let at = self.pos;
        let transition = match self.u8()? {
            0 => Transition::Auto,
            1 => Transition::JointAuto,
            2 => Transition::JointExplicit,
            tag => return Err(DecodeError::UnknownTag { what: "transition", tag, at }),
        };
        let n = self.count("change", self.limits.max_members, 3)?;
        let mut changes = Vec::with_capacity(reserve(n));
        for _ in 0..n {
            let at = self.pos;
            let kind = match self.u8()? {
                0 => ChangeKind::AddVoter,
                1 => ChangeKind::AddLearner,
                2 => ChangeKind::Remove,
                3 => ChangeKind::Forget,
                tag => return Err(DecodeError::UnknownTag { what: "change kind", tag, at }),
            };
            changes
                .push(SingleChange { kind, replica: Replica { node: self.varint()?, id: self.varint()? } });
        }
        Ok(ConfChange { transition, changes })
    }

    fn flags(&mut self, n: u32) -> Result<u8, DecodeError> {
        let at = self.pos;
        let f = self.u8()?;
        if f >> n != 0 {
            return Err(DecodeError::Invalid { what: "flags", at });
        }
        Ok(f)
    }

    fn message(&mut self) -> Result<Message, DecodeError> {
        let from = self.varint()?;
        let to = self.varint()?;
        let term = self.varint()?;
        let at = self.pos;
        let body = match self.u8()? {
            K_APPEND => {
                let prev_index = self.varint()?;
                let prev_term = self.varint()?;
                let commit = self.varint()?;
                let n = self.count("entry", self.limits.max_entries, 3)?;
                let mut entries = Vec::with_capacity(reserve(n));
                let mut prev = prev_index;
                for _ in 0..n {
                    let at = self.pos;
                    let index = prev
                        .checked_add(self.varint()?)
                        .ok_or(DecodeError::Invalid { what: "entry index", at })?;
                    prev = index;
                    let term = self.varint()?;
                    let at = self.pos;
                    let payload = match self.u8()? {
                        P_NOOP => EntryPayload::Noop,
                        P_NORMAL => EntryPayload::Normal(self.bytes()?),
                        P_CONF => EntryPayload::ConfChange(self.conf_change()?),
                        P_SESSION => self.session()?,
                        tag => return Err(DecodeError::UnknownTag { what: "entry payload", tag, at }),
                    };
                    entries.push(Entry { term, index, payload });
                }
                MessageBody::Append { prev_index, prev_term, entries, commit }
            }
            K_APPEND_RESP => MessageBody::AppendResponse {
                index: self.varint()?,
                reject: self.bool("reject")?,
                reject_hint: self.varint()?,
                hint_term: self.varint()?,
            },
            K_HEARTBEAT => {
                MessageBody::Heartbeat { commit: self.varint()?, round: self.varint()?, quiesce: false }
            }
            K_HEARTBEAT_QUIESCE => {
                MessageBody::Heartbeat { commit: self.varint()?, round: self.varint()?, quiesce: true }
            }
            K_HEARTBEAT_RESP => MessageBody::HeartbeatResponse { round: self.varint()? },
            K_COMMIT => MessageBody::Commit { commit: self.varint()? },
            K_VOTE => {
                let f = self.flags(2)?;
                MessageBody::RequestVote {
                    pre_vote: f & 1 != 0,
                    transfer: f & 2 != 0,
                    last_index: self.varint()?,
                    last_term: self.varint()?,
                    commit: self.varint()?,
                    commit_term: self.varint()?,
                }
            }
            K_VOTE_RESP => {
                let f = self.flags(2)?;
                MessageBody::RequestVoteResponse {
                    pre_vote: f & 1 != 0,
                    reject: f & 2 != 0,
                    commit: self.varint()?,
                    commit_term: self.varint()?,
                }
            }
            K_TIMEOUT_NOW => MessageBody::TimeoutNow,
            K_READ_INDEX => MessageBody::ReadIndex { ctx: self.varint()? },
            K_READ_INDEX_RESP => {
                MessageBody::ReadIndexResponse { ctx: self.varint()?, index: self.varint()? }
            }
            K_SNAPSHOT_CHUNK => {
                let meta = self.meta()?;
                let at = self.pos;
                let seq =
                    u32::try_from(self.varint()?).map_err(|_| DecodeError::Invalid { what: "seq", at })?;
                let offset = self.varint()?;
                let last = self.bool("last")?;
                MessageBody::SnapshotChunk(SnapshotChunk { meta, seq, offset, last, data: self.bytes()? })
            }
            tag => return Err(DecodeError::UnknownTag { what: "message kind", tag, at }),
        };
        Ok(Message { from, to, term, body })
    }

    fn item(&mut self) -> Result<WireItem, DecodeError> {
        let at = self.pos;
        match self.u8()? {
            1 => Ok(WireItem::Msg { group: self.varint()?, msg: self.message()? }),
            tag @ (2 | 4) => {
                let flagged = tag == 4;
                let n = self.count("heartbeat", self.limits.max_heartbeats, if flagged { 7 } else { 6 })?;
                // Reserved whole: `count` bounds n by the input (each entry takes at least 6
                // bytes there, 48 here), so at most 8 bytes per input byte.
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(HeartbeatEntry {
                        group: self.varint()?,
                        from: self.varint()?,
                        to: self.varint()?,
                        term: self.varint()?,
                        commit: self.varint()?,
                        round: self.varint()?,
                        quiesce: if flagged { self.bool("quiesce")? } else { false },
                    });
                }
                Ok(WireItem::Heartbeats(v))
            }
            3 => {
                let n = self.count("heartbeat ack", self.limits.max_heartbeats, 5)?;
                // Reserved whole, as heartbeats: at least 5 input bytes per 40-byte answer.
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(HeartbeatAck {
                        group: self.varint()?,
                        from: self.varint()?,
                        to: self.varint()?,
                        term: self.varint()?,
                        round: self.varint()?,
                    });
                }
                Ok(WireItem::HeartbeatAcks(v))
            }
            5 => Ok(WireItem::Tombstone {
                group: self.varint()?,
                replica: self.varint()?,
                conf_index: self.varint()?,
            }),
            6 => Ok(WireItem::GcProbe { group: self.varint()?, replica: self.varint()? }),
            7 => Ok(WireItem::TombstoneAck { group: self.varint()?, replica: self.varint()? }),
            8 => Ok(WireItem::SnapshotProgress {
                group: self.varint()?,
                from: self.varint()?,
                to: self.varint()?,
                leader_term: self.varint()?,
                index: self.varint()?,
                term: self.varint()?,
                offset: self.varint()?,
            }),
            tag => Err(DecodeError::UnknownTag { what: "item", tag, at }),
        }
    }
}

/// Decodes one batch. Payload bytes in the result are slices of `buf` (no copy).
pub fn decode_batch(buf: &Bytes, limits: DecodeLimits) -> Result<Vec<WireItem>, DecodeError> {
    let mut r = Reader { buf, pos: 0, limits };
    let v = r.u8()?;
    if v == 0 || v > CODEC_VERSION {
        return Err(DecodeError::UnsupportedVersion(v));
    }
    // An item takes at least 2 bytes (tag and a count or group).
    let n = r.count("item", limits.max_items, 2)?;
    let mut items = Vec::with_capacity(reserve(n));
    for _ in 0..n {
        items.push(r.item()?);
    }
    if r.left() != 0 {
        return Err(DecodeError::Trailing(r.left()));
    }
    Ok(items)
}

// ---------------------------------------------------------------------------------------
// Storage forms (used by the runtime's WAL adapter): an entry payload and a snapshot's
// metadata, each on its own, in the same encoding as inside a message.

/// Encodes an entry's payload as stored in the WAL (the WAL keeps index and term).
pub fn encode_payload(p: &EntryPayload) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + if let EntryPayload::Normal(d) = p { d.len() } else { 32 });
    encode_payload_into(&mut b, p);
    b.freeze()
}

/// Appends the encoding of [`encode_payload`] to `b` (the WAL adapter writes it straight
/// into its write batch: no buffer of its own per entry).
pub fn encode_payload_into(b: &mut impl BufMut, p: &EntryPayload) {
    match p {
        EntryPayload::Noop => b.put_u8(P_NOOP),
        EntryPayload::Normal(d) => {
            b.put_u8(P_NORMAL);
            put_bytes(b, d);
        }
        EntryPayload::ConfChange(cc) => {
            b.put_u8(P_CONF);
            put_conf_change(b, cc);
        }
        EntryPayload::Session { header, data } => {
            b.put_u8(P_SESSION);
            put_session(b, header, data);
        }
    }
}

/// Decodes a payload written by [`encode_payload`]; data is a slice of `buf` (no copy).
pub fn decode_payload(buf: &Bytes, limits: DecodeLimits) -> Result<EntryPayload, DecodeError> {
    let mut r = Reader { buf, pos: 0, limits };
    let at = r.pos;
    let p = match r.u8()? {
        P_NOOP => EntryPayload::Noop,
        P_NORMAL => EntryPayload::Normal(r.bytes()?),
        P_CONF => EntryPayload::ConfChange(r.conf_change()?),
        P_SESSION => r.session()?,
        tag => return Err(DecodeError::UnknownTag { what: "entry payload", tag, at }),
    };
    if r.left() != 0 {
        return Err(DecodeError::Trailing(r.left()));
    }
    Ok(p)
}

/// Appends the encoding of a snapshot's metadata (index, term, configuration).
pub fn encode_snapshot_meta(b: &mut BytesMut, m: &SnapshotMeta) {
    put_meta(b, m);
}

/// Decodes metadata written by [`encode_snapshot_meta`] at the start of `buf`; returns it
/// with the number of bytes it took.
pub fn decode_snapshot_meta(buf: &Bytes, limits: DecodeLimits) -> Result<(SnapshotMeta, usize), DecodeError> {
    let mut r = Reader { buf, pos: 0, limits };
    let m = r.meta()?;
    Ok((m, r.pos))
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn tombstone_round_trips_and_rejects_truncation() {
        let items = vec![
            WireItem::Tombstone { group: 7, replica: 3, conf_index: 1 << 40 },
            WireItem::Tombstone { group: u64::MAX, replica: 0, conf_index: 0 },
            WireItem::GcProbe { group: 7, replica: 1 << 40 },
            WireItem::TombstoneAck { group: 7, replica: 3 },
        ];
        let b = encode_batch(&items).unwrap();
        assert_eq!(decode_batch(&b, DecodeLimits::default()).unwrap(), items);
        // Every strict prefix is refused with an error, never a panic or a partial batch.
        for n in 0..b.len() {
            assert!(decode_batch(&b.slice(..n), DecodeLimits::default()).is_err(), "prefix {n}");
        }
        // A varint overflowing 64 bits in the conf index is refused.
        let mut bad = BytesMut::new();
        bad.put_u8(CODEC_VERSION);
        put_varint(&mut bad, 1);
        bad.put_u8(5);
        put_varint(&mut bad, 1);
        put_varint(&mut bad, 2);
        bad.extend_from_slice(&[0xff; 11]);
        assert!(matches!(
            decode_batch(&bad.freeze(), DecodeLimits::default()),
            Err(DecodeError::BadVarint { .. })
        ));
    }

    #[test]
    fn snapshot_progress_round_trips_and_rejects_truncation() {
        let items = vec![
            WireItem::SnapshotProgress {
                group: 7,
                from: 3,
                to: 1,
                leader_term: 9,
                index: 1 << 40,
                term: 8,
                offset: 0,
            },
            WireItem::SnapshotProgress {
                group: u64::MAX,
                from: u64::MAX,
                to: 0,
                leader_term: u64::MAX,
                index: u64::MAX,
                term: u64::MAX,
                offset: u64::MAX,
            },
        ];
        let b = encode_batch(&items).unwrap();
        assert!(b.len() <= 64 + items.iter().map(item_size_hint).sum::<usize>());
        assert_eq!(decode_batch(&b, DecodeLimits::default()).unwrap(), items);
        for n in 0..b.len() {
            assert!(decode_batch(&b.slice(..n), DecodeLimits::default()).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn varint_len_matches_put_varint_and_hint_fits_heartbeats() {
        for v in [0, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX >> 1, u64::MAX] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(varint_len(v), b.len(), "{v}");
        }
        let hs: Vec<HeartbeatEntry> = (0..1000u64)
            .map(|g| HeartbeatEntry {
                group: g * 997,
                from: 1,
                to: 2,
                term: g,
                commit: g << 20,
                round: 3,
                quiesce: false,
            })
            .collect();
        // Up to 64 entries the hint is exact: version, item count, tag and entry count
        // all fit in the 10 + 64 bytes of slack.
        let small = WireItem::Heartbeats(hs[..64].to_vec());
        let encoded = encode_batch(std::slice::from_ref(&small)).unwrap();
        assert!(encoded.len() <= 64 + item_size_hint(&small));
        assert!(encoded.len() + 20 >= item_size_hint(&small));
        // Beyond, it is sampled with an eighth of margin: enough, and not far over.
        let item = WireItem::Heartbeats(hs);
        let encoded = encode_batch(std::slice::from_ref(&item)).unwrap();
        assert!(encoded.len() <= 64 + item_size_hint(&item));
        assert!(item_size_hint(&item) <= encoded.len() * 5 / 4);
    }
}
