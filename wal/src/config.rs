//! Configuration of the WAL: the raw [`WalConfig`] a user fills in, and the
//! [`CheckedConfig`] it is validated into exactly once, at open.
//!
//! Owns: defaults, bounds and the validation rules (one [`ConfigError`] variant per rule).
//! Never: touches the file system or reads the environment (see
//! [`BackendChoice::from_env`] for the one explicit, opt-in exception used by tests/CI).

use std::path::PathBuf;

use thiserror::Error;

use crate::codec::{BATCH_HEADER_LEN, SEGMENT_HEADER_LEN};

/// Which I/O path writes and syncs the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum BackendChoice {
    /// The default: pwrite + fdatasync, the faster path measured for how this log writes.
    /// Each round is one buffer written and waited for, so io_uring overlaps nothing, and
    /// a buffered write on ext4 is handed to an io-wq kernel thread and back: on the
    /// 3-node cluster bench, commit p50 with one proposal in flight was 0.55-0.59 ms with
    /// pwrite against 0.69-0.70 ms with io_uring (BENCHMARKS.md, "Both backends, side by
    /// side").
    Auto,
    /// io_uring writes, fdatasync; opening fails if the kernel refuses io_uring.
    IoUring,
    /// The portable path: pwrite + fdatasync.
    Pwrite,
}

impl BackendChoice {
    /// Reads `FLOTILLA_WAL_BACKEND` (`io_uring`/`uring`, `pwrite`, `auto`); `Auto` when the
    /// variable is unset or unrecognised. Used by tests and CI to run the suite once per
    /// backend; the library itself never calls it.
    pub fn from_env() -> BackendChoice {
        match std::env::var("FLOTILLA_WAL_BACKEND").as_deref() {
            Ok("io_uring") | Ok("uring") | Ok("io-uring") => BackendChoice::IoUring,
            Ok("pwrite") => BackendChoice::Pwrite,
            _ => BackendChoice::Auto,
        }
    }
}

/// Smallest allowed segment size (64 KiB): small segments are useful in tests.
pub const MIN_SEGMENT_SIZE: u64 = 64 * 1024;
/// Largest allowed segment size (2 GiB): offsets inside a segment are stored as `u32`.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 31;

/// The WAL's configuration as a user writes it. Validate it with [`WalConfig::check`]
/// (done by `Wal::open`).
///
/// With the default `serde` feature it reads from and writes to configuration files
/// (missing fields take their defaults; sizes as integers or strings such as `"64MiB"`,
/// durations as strings such as `"200us"`: see [`crate::units`]).
#[derive(Debug, Clone)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct WalConfig {
    /// Directory holding the segment files. Created if missing. No default.
    pub dir: PathBuf,
    /// Size of every segment file in bytes. Default 64 MiB; bounds
    /// [`MIN_SEGMENT_SIZE`]..=[`MAX_SEGMENT_SIZE`], multiple of 4096.
    #[cfg_attr(feature = "serde", serde(with = "crate::units::bytes_u64"))]
    pub segment_size: u64,
    /// I/O backend. Default [`BackendChoice::Auto`].
    pub backend: BackendChoice,
    /// Upper bound on the bytes merged into one group-commit write (one write, one fsync).
    /// Default 8 MiB; bounds 4 KiB..=`segment_size - headers`.
    #[cfg_attr(feature = "serde", serde(with = "crate::units::bytes_usize"))]
    pub max_write_bytes: usize,
    /// Capacity of the submission queue (batches waiting for the writer); submitters block
    /// (or `try_submit` fails with `Busy`) when it is full. Default 4096; bounds 1..=1,048,576.
    pub queue_len: usize,
    /// Bytes of the latest writes kept in memory to serve reads of recent entries (the
    /// written rounds themselves, oldest dropped first; a round larger than this is not
    /// kept). Default 64 MiB; bounds 0..=1 TiB (0 disables the cache).
    #[cfg_attr(feature = "serde", serde(with = "crate::units::bytes_usize"))]
    pub cache_bytes: usize,
    /// A sealed segment whose live bytes are below this fraction of its written bytes is
    /// rewritten (its live records copied to the head of the log) so it can be freed.
    /// Default 0.25; bounds 0.0..=1.0 (0.0 disables rewriting).
    pub rewrite_ratio: f64,
    /// Segments to keep preallocated ahead of the writer (created by writing zeros, or by
    /// recycling freed segments), off the write path. Default 2; bounds 1..=64.
    pub spare_segments: usize,
    /// Freed segments kept for recycling instead of being deleted (beyond the spares).
    /// Default 2; bounds 0..=64.
    pub recycle_pool: usize,
    /// Run compaction (free dead segments, rewrite sparse ones) automatically each time
    /// the writer moves to a new segment. Default true.
    pub auto_maintain: bool,
    /// Group commit: when fewer batches are queued than the previous write carried (their
    /// submitters are likely preparing the next ones), the writer waits up to this long,
    /// and at most half the last sync's duration, for them to join the same write.
    /// Default 200 µs; bounds 0..=10 ms (0 disables waiting).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub group_commit_wait: std::time::Duration,
}

impl Default for WalConfig {
    /// Every default, with no directory (which [`WalConfig::check`] refuses until one is set).
    fn default() -> WalConfig {
        WalConfig::new(PathBuf::new())
    }
}

impl WalConfig {
    /// A configuration with every default, writing into `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> WalConfig {
        WalConfig {
            dir: dir.into(),
            segment_size: 64 << 20,
            backend: BackendChoice::Auto,
            max_write_bytes: 8 << 20,
            queue_len: 4096,
            cache_bytes: 64 << 20,
            rewrite_ratio: 0.25,
            spare_segments: 2,
            recycle_pool: 2,
            auto_maintain: true,
            group_commit_wait: std::time::Duration::from_micros(200),
        }
    }

    /// Validates every rule once, producing the checked value the WAL runs on.
    pub fn check(&self) -> Result<CheckedConfig, ConfigError> {
        if self.dir.as_os_str().is_empty() {
            return Err(ConfigError::EmptyDir);
        }
        if self.segment_size < MIN_SEGMENT_SIZE || self.segment_size > MAX_SEGMENT_SIZE {
            return Err(ConfigError::SegmentSizeOutOfBounds(self.segment_size));
        }
        if self.segment_size % 4096 != 0 {
            return Err(ConfigError::SegmentSizeNotAligned(self.segment_size));
        }
        let room = self.segment_size as usize - SEGMENT_HEADER_LEN - 2 * BATCH_HEADER_LEN;
        if self.max_write_bytes < 4096 || self.max_write_bytes > room {
            return Err(ConfigError::MaxWriteBytesOutOfBounds(self.max_write_bytes));
        }
        if self.queue_len == 0 || self.queue_len > 1 << 20 {
            return Err(ConfigError::QueueLenOutOfBounds(self.queue_len));
        }
        if self.cache_bytes > 1 << 40 {
            return Err(ConfigError::CacheBytesOutOfBounds(self.cache_bytes));
        }
        if !(0.0..=1.0).contains(&self.rewrite_ratio) {
            return Err(ConfigError::RewriteRatioOutOfBounds(self.rewrite_ratio));
        }
        if self.spare_segments == 0 || self.spare_segments > 64 {
            return Err(ConfigError::SpareSegmentsOutOfBounds(self.spare_segments));
        }
        if self.recycle_pool > 64 {
            return Err(ConfigError::RecyclePoolOutOfBounds(self.recycle_pool));
        }
        if self.group_commit_wait > std::time::Duration::from_millis(10) {
            return Err(ConfigError::GroupCommitWaitOutOfBounds(self.group_commit_wait));
        }
        Ok(CheckedConfig { raw: self.clone() })
    }
}

/// A configuration that passed every rule of [`WalConfig::check`].
#[derive(Debug, Clone)]
pub struct CheckedConfig {
    raw: WalConfig,
}

impl CheckedConfig {
    /// The validated values.
    pub fn get(&self) -> &WalConfig {
        &self.raw
    }
}

/// A rule of [`WalConfig`] that a value broke.
#[derive(Debug, Error, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `dir` is empty.
    #[error("wal dir is empty")]
    EmptyDir,
    /// `segment_size` is outside its bounds.
    #[error("segment_size {0} outside {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE}")]
    SegmentSizeOutOfBounds(u64),
    /// `segment_size` is not a multiple of 4096.
    #[error("segment_size {0} is not a multiple of 4096")]
    SegmentSizeNotAligned(u64),
    /// `max_write_bytes` is outside its bounds.
    #[error("max_write_bytes {0} outside 4096..=segment_size minus headers")]
    MaxWriteBytesOutOfBounds(usize),
    /// `queue_len` is outside its bounds.
    #[error("queue_len {0} outside 1..=1048576")]
    QueueLenOutOfBounds(usize),
    /// `cache_bytes` is outside its bounds.
    #[error("cache_bytes {0} above 1 TiB")]
    CacheBytesOutOfBounds(usize),
    /// `rewrite_ratio` is outside 0.0..=1.0.
    #[error("rewrite_ratio {0} outside 0.0..=1.0")]
    RewriteRatioOutOfBounds(f64),
    /// `spare_segments` is outside its bounds.
    #[error("spare_segments {0} outside 1..=64")]
    SpareSegmentsOutOfBounds(usize),
    /// `recycle_pool` is outside its bounds.
    #[error("recycle_pool {0} above 64")]
    RecyclePoolOutOfBounds(usize),
    /// `group_commit_wait` is above 10 ms.
    #[error("group_commit_wait {0:?} above 10 ms")]
    GroupCommitWaitOutOfBounds(std::time::Duration),
}

#[cfg(all(test, feature = "serde"))]
mod serde_tests {
    use super::*;

    #[test]
    fn reads_human_units_and_defaults_from_toml() {
        let c: WalConfig = toml::from_str(
            "dir = \"/var/lib/x/wal\"\nsegment_size = \"128MiB\"\ncache_bytes = 1048576\n\
             group_commit_wait = \"1ms\"\nbackend = \"io_uring\"\n",
        )
        .unwrap();
        assert_eq!(c.segment_size, 128 << 20);
        assert_eq!(c.cache_bytes, 1 << 20);
        assert_eq!(c.group_commit_wait, std::time::Duration::from_millis(1));
        assert_eq!(c.backend, BackendChoice::IoUring);
        // Fields not given keep their defaults.
        assert_eq!(c.max_write_bytes, WalConfig::new("d").max_write_bytes);
        assert!(c.check().is_ok());
    }

    #[test]
    fn round_trips_and_still_validates() {
        let mut c = WalConfig::new("/tmp/w");
        c.rewrite_ratio = 0.5;
        c.group_commit_wait = std::time::Duration::from_micros(350);
        let text = toml::to_string(&c).unwrap();
        let back: WalConfig = toml::from_str(&text).unwrap();
        assert_eq!(format!("{back:?}"), format!("{c:?}"));
        // Deserializing never bypasses the rules.
        let bad: WalConfig = toml::from_str("dir = \"/d\"\nsegment_size = \"1KiB\"\n").unwrap();
        assert!(matches!(bad.check(), Err(ConfigError::SegmentSizeOutOfBounds(1024))));
        let empty: WalConfig = toml::from_str("").unwrap();
        assert!(matches!(empty.check(), Err(ConfigError::EmptyDir)));
        assert!(toml::from_str::<WalConfig>("segment_sise = 1\n").is_err(), "unknown fields are refused");
    }
}
