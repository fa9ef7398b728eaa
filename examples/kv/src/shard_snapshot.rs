//! A shard's background snapshot: the [`SnapshotSource`] its state machine hands the
//! engine. The apply thread only clones the keyspace (its table, not its data: see
//! [`crate::keyspace`]) and the slot set; the engine's snapshot writer then pulls the
//! encoding from here, chunk by chunk, while apply goes on.
//!
//! Owns the byte stream's shape (the slots header, then the keyspace encoding) and its
//! offsets. Never touches the live keyspace: what it encodes is the clone.

use flotilla_engine::api::SnapshotSource;

use crate::keyspace::{Keyspace, KeyspaceStream};
use crate::slots::SlotSet;

/// What a shard snapshot starts with since shards own slots; an older snapshot (the map
/// alone) restores with the slots the shard was created with.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"FKVSLOT1";

/// The slots header of a shard snapshot.
pub fn snapshot_head(slots: &SlotSet) -> Vec<u8> {
    let mut head = SNAPSHOT_MAGIC.to_vec();
    slots.encode(&mut head);
    head
}

/// A point-in-time shard snapshot, encoded on demand.
pub struct ShardSnapshot {
    at: (u64, u64),
    stream: KeyspaceStream,
    /// The chunk being read, which starts at stream offset `chunk_start`.
    chunk: Vec<u8>,
    chunk_start: u64,
    done: bool,
}

impl ShardSnapshot {
    /// The snapshot of `keyspace` (a clone) serving `slots`, as of the entry at `at`
    /// (index, term).
    pub fn new(at: (u64, u64), slots: &SlotSet, keyspace: Keyspace) -> ShardSnapshot {
        ShardSnapshot {
            at,
            stream: keyspace.into_stream(),
            chunk: snapshot_head(slots),
            chunk_start: 0,
            done: false,
        }
    }
}

impl SnapshotSource for ShardSnapshot {
    fn reflects(&self) -> (u64, u64) {
        self.at
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if offset < self.chunk_start {
                // The engine only asks again for the offset of a failed read, which is in
                // the current chunk: never reached, but answered rather than assumed.
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("snapshot offset {offset} is behind the stream ({})", self.chunk_start),
                ));
            }
            let end = self.chunk_start + self.chunk.len() as u64;
            if offset < end {
                // offset - chunk_start < chunk.len(), a usize.
                let at = (offset - self.chunk_start) as usize;
                let n = buf.len().min(self.chunk.len() - at);
                buf[..n].copy_from_slice(&self.chunk[at..at + n]);
                return Ok(n);
            }
            if self.done {
                return Ok(0);
            }
            self.chunk_start = end;
            match self.stream.next_chunk() {
                Some(c) => self.chunk = c,
                None => {
                    self.chunk = Vec::new();
                    self.done = true;
                }
            }
        }
    }
}
