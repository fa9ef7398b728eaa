//! Helpers shared by the integration tests.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use flotilla_wal::fault::FaultFs;
use flotilla_wal::{BackendChoice, BackendKind, HardState, Wal, WalConfig, WriteBatch};

/// The backend under test: `FLOTILLA_WAL_BACKEND` (io_uring | pwrite), default pwrite.
pub fn backend() -> BackendChoice {
    match BackendChoice::from_env() {
        BackendChoice::Auto => BackendChoice::Pwrite,
        b => b,
    }
}

/// Small segments so tests cross segment boundaries quickly.
pub fn config(dir: &Path) -> WalConfig {
    let mut c = WalConfig::new(dir);
    c.segment_size = 64 * 1024;
    c.max_write_bytes = 32 * 1024;
    c.backend = backend();
    c.cache_bytes = 1 << 20;
    c
}

/// Asserts the WAL runs on the backend asked for (proves io_uring really is in use).
pub fn assert_backend(wal: &Wal) {
    match backend() {
        BackendChoice::IoUring => assert_eq!(wal.backend(), BackendKind::IoUring),
        BackendChoice::Pwrite => assert_eq!(wal.backend(), BackendKind::Pwrite),
        BackendChoice::Auto => {}
        other => panic!("backend choice {other:?} is not covered by the WAL tests"),
    }
}

/// A scratch directory in memory (tmpfs) when available: durability is simulated by
/// `FaultFs` in the tests that need it, and tmpfs keeps the many fsyncs cheap.
pub fn scratch() -> tempfile::TempDir {
    if Path::new("/dev/shm").is_dir() {
        if let Ok(d) = tempfile::Builder::new().prefix("flotilla-wal-").tempdir_in("/dev/shm") {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

pub fn open_fault(dir: &Path, seed: u64) -> (Arc<FaultFs>, Wal) {
    let fs = Arc::new(FaultFs::new(dir.join("trash"), seed).unwrap());
    let wal = Wal::open_with_fs(config(&dir.join("wal")), fs.clone()).unwrap();
    assert_backend(&wal);
    (fs, wal)
}

/// The in-memory model of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelGroup {
    pub first: u64,
    pub entries: Vec<(u64, Vec<u8>)>,
    pub hs: Option<HardState>,
    pub meta: Option<Vec<u8>>,
}

impl Default for ModelGroup {
    fn default() -> Self {
        ModelGroup { first: 1, entries: Vec::new(), hs: None, meta: None }
    }
}

impl ModelGroup {
    pub fn last(&self) -> u64 {
        self.first + self.entries.len() as u64 - 1
    }
}

/// A model operation (mirrors `WriteBatch`).
#[derive(Debug, Clone)]
pub enum MOp {
    Append(u64, u64, Vec<(u64, Vec<u8>)>),
    Hs(u64, HardState),
    Meta(u64, Vec<u8>),
    Compact(u64, u64),
    Remove(u64),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    pub groups: BTreeMap<u64, ModelGroup>,
}

impl Model {
    pub fn apply(&mut self, op: &MOp) {
        match op {
            MOp::Append(g, first, es) => {
                let m = self.groups.entry(*g).or_default();
                assert!(*first >= m.first && *first <= m.last() + 1, "model: bad append");
                m.entries.truncate((*first - m.first) as usize);
                m.entries.extend(es.iter().cloned());
            }
            MOp::Hs(g, hs) => self.groups.entry(*g).or_default().hs = Some(*hs),
            MOp::Meta(g, d) => self.groups.entry(*g).or_default().meta = Some(d.clone()),
            MOp::Compact(g, idx) => {
                let m = self.groups.entry(*g).or_default();
                if *idx > m.first {
                    let n = ((*idx - m.first) as usize).min(m.entries.len());
                    m.entries.drain(..n);
                    m.first = *idx;
                }
            }
            MOp::Remove(g) => {
                self.groups.remove(g);
            }
        }
    }

    pub fn batch(ops: &[MOp]) -> WriteBatch {
        let mut b = WriteBatch::new();
        for op in ops {
            match op {
                MOp::Append(g, first, es) => b.add_entries(*g, *first, es.iter().map(|(t, d)| (*t, &d[..]))),
                MOp::Hs(g, hs) => b.set_hard_state(*g, *hs),
                MOp::Meta(g, d) => b.set_meta(*g, d),
                MOp::Compact(g, i) => b.compact_to(*g, *i),
                MOp::Remove(g) => b.remove_group(*g),
            }
        }
        b
    }

    /// Reads everything back from the WAL into a model.
    pub fn read(wal: &Wal) -> Model {
        let mut groups = BTreeMap::new();
        for g in wal.groups() {
            let first = wal.first_index(g).unwrap();
            let last = wal.last_index(g).unwrap();
            let entries = wal
                .entries(g, first, last + 1, None)
                .unwrap()
                .into_iter()
                .map(|e| (e.term, e.data))
                .collect();
            groups.insert(
                g,
                ModelGroup { first, entries, hs: wal.hard_state(g).unwrap(), meta: wal.meta(g).unwrap() },
            );
        }
        Model { groups }
    }
}

/// A short description of how two models differ.
pub fn diff(got: &Model, want: &Model) -> String {
    let mut out = String::new();
    let keys: std::collections::BTreeSet<u64> =
        got.groups.keys().chain(want.groups.keys()).copied().collect();
    for g in keys {
        match (got.groups.get(&g), want.groups.get(&g)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => {
                let idx = a.entries.iter().zip(b.entries.iter()).position(|(x, y)| x != y);
                out += &format!(
                    "group {g}: got first {} last {} hs {:?} meta {:?}; want first {} last {} hs {:?} meta {:?}; first differing entry offset {:?}\n",
                    a.first, a.last(), a.hs, a.meta.as_ref().map(|m| m.len()),
                    b.first, b.last(), b.hs, b.meta.as_ref().map(|m| m.len()), idx
                );
            }
            (Some(_), None) => out += &format!("group {g}: present, should not be\n"),
            (None, Some(_)) => out += &format!("group {g}: missing\n"),
            (None, None) => {}
        }
    }
    out
}

/// A tiny deterministic RNG for test workloads.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A random batch of operations valid against `model` (which it updates).
pub fn random_ops(rng: &mut Rng, model: &mut Model, groups: u64, max_entry: usize) -> Vec<MOp> {
    let mut ops = Vec::new();
    let n = 1 + rng.below(4);
    for _ in 0..n {
        let g = rng.below(groups);
        let m = model.groups.get(&g).cloned().unwrap_or_default();
        let op = match rng.below(20) {
            0..=11 => {
                // Mostly appends at the end; sometimes an overwrite of the tail.
                let first = if m.entries.is_empty() || rng.below(4) != 0 {
                    m.last() + 1
                } else {
                    m.first + rng.below(m.entries.len() as u64 + 1)
                };
                let term = 1 + rng.below(5);
                let cnt = 1 + rng.below(4);
                let es = (0..cnt)
                    .map(|_| {
                        let len = rng.below(max_entry as u64 + 1) as usize;
                        (term, rng.bytes(len))
                    })
                    .collect();
                MOp::Append(g, first, es)
            }
            12..=14 => {
                MOp::Hs(g, HardState { term: rng.below(100), vote: rng.below(5), commit: rng.below(100) })
            }
            15 => {
                let len = rng.below(40) as usize;
                MOp::Meta(g, rng.bytes(len))
            }
            16..=18 => MOp::Compact(g, m.first + rng.below(m.entries.len() as u64 + 3)),
            _ => MOp::Remove(g),
        };
        model.apply(&op);
        ops.push(op);
    }
    ops
}
