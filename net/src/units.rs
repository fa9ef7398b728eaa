//! Human units in the transport's configuration files (behind the default-on `serde`
//! feature): sizes as an integer number of bytes or a string such as `"16MiB"` (parsed by
//! `bytesize`: `KiB`/`MiB`/`GiB` are powers of 1024, `KB`/`MB`/`GB` powers of 1000), and
//! durations as strings such as `"5s"` or `"50ms"` (`humantime-serde`), as in TiKV's files.
//!
//! Owns the serde glue only; sizes are written back as integers so a configuration
//! round-trips exactly. Never validates a value: [`crate::config::NetConfig::validate`] does.

/// Serde glue for a byte count held in a `usize`.
pub mod bytes_usize {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the byte count as an integer.
    pub fn serialize<S: Serializer>(v: &usize, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*v as u64)
    }

    /// Reads an integer byte count or a size string such as `"16MiB"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        let v = bytesize::ByteSize::deserialize(d)?.as_u64();
        usize::try_from(v)
            .map_err(|_| serde::de::Error::custom(format!("size {v} does not fit this platform")))
    }
}
