//! A state machine for the engine's durability tests: records every command it applies
//! (a u64 each), per group, asserts it never applies an entry out of order or twice, and
//! snapshots/restores that list.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flotilla_engine::api::StateMachine;

/// What each group applied, in order.
pub type Applied = Arc<Mutex<HashMap<u64, Vec<u64>>>>;

/// Records every command it applies (a u64 each), per group.
pub struct ListSm {
    pub group: u64,
    pub index: u64,
    pub applied: Applied,
}

impl StateMachine for ListSm {
    fn apply(&mut self, index: u64, _term: u64, command: Option<&[u8]>) -> Bytes {
        assert_eq!(index, self.index + 1, "applied out of order or twice");
        self.index = index;
        if let Some(c) = command {
            let v = u64::from_le_bytes(c.try_into().unwrap());
            self.applied.lock().unwrap().entry(self.group).or_default().push(v);
        }
        Bytes::new()
    }

    fn applied_index(&self) -> u64 {
        0
    }

    fn snapshot(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        let list = self.applied.lock().unwrap().get(&self.group).cloned().unwrap_or_default();
        out.write_all(&self.index.to_le_bytes())?;
        for v in list {
            out.write_all(&v.to_le_bytes())?;
        }
        Ok(())
    }

    fn restore(&mut self, index: u64, _term: u64, input: &mut dyn Read) -> std::io::Result<()> {
        let mut b = Vec::new();
        input.read_to_end(&mut b)?;
        let vals: Vec<u64> = b.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(vals[0], index);
        self.index = index;
        self.applied.lock().unwrap().insert(self.group, vals[1..].to_vec());
        Ok(())
    }
}
