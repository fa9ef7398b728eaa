//! Human units in configuration files (behind the default-on `serde` feature): sizes as
//! an integer number of bytes or a string such as `"64MiB"`, `"512 KiB"` or `"1.5GiB"`
//! (parsed by the `bytesize` crate: `KiB`/`MiB`/`GiB`/`TiB` are powers of 1024, `KB`/`MB`/
//! `GB`/`TB` powers of 1000), and durations as strings such as `"10ms"` or `"1s 500ms"`
//! (the `humantime` crate, through `humantime-serde`). The same forms TiKV's configuration
//! accepts, except that TiKV reads `"MB"` as MiB: write `"MiB"` to be unambiguous.
//!
//! Owns the serde glue only (`#[serde(with = "...")]` modules); sizes are written back as
//! integers, so a configuration round-trips exactly. Never validates a value: the
//! configuration's own `check`/`validate` rules do.

/// Serde glue for a byte count held in a `u64` (see the module docs).
pub mod bytes_u64 {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the byte count as an integer.
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*v)
    }

    /// Reads an integer byte count or a size string such as `"64MiB"` (`bytesize` parses).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        Ok(bytesize::ByteSize::deserialize(d)?.as_u64())
    }
}

/// Serde glue for a byte count held in a `usize` (see the module docs).
pub mod bytes_usize {
    use serde::{Deserializer, Serializer};

    /// Writes the byte count as an integer.
    pub fn serialize<S: Serializer>(v: &usize, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*v as u64)
    }

    /// Reads an integer byte count or a size string such as `"64MiB"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        let v = super::bytes_u64::deserialize(d)?;
        usize::try_from(v)
            .map_err(|_| serde::de::Error::custom(format!("size {v} does not fit this platform")))
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq)]
    struct T {
        #[serde(with = "super::bytes_u64")]
        a: u64,
        #[serde(with = "super::bytes_usize")]
        b: usize,
    }

    fn parse(s: &str) -> Result<T, String> {
        serde_json::from_str(s).map_err(|e| e.to_string())
    }

    #[test]
    fn sizes_read_as_integers_or_human_strings() {
        assert_eq!(parse(r#"{"a": 4096, "b": "64MiB"}"#), Ok(T { a: 4096, b: 64 << 20 }));
        assert_eq!(parse(r#"{"a": "1 GiB", "b": "512KiB"}"#), Ok(T { a: 1 << 30, b: 512 << 10 }));
        assert_eq!(parse(r#"{"a": "1.5GiB", "b": "10KB"}"#), Ok(T { a: 3 << 29, b: 10_000 }));
        assert_eq!(parse(r#"{"a": "16", "b": 0}"#), Ok(T { a: 16, b: 0 }));
    }

    #[test]
    fn bad_sizes_are_refused_with_the_value() {
        let e = parse(r#"{"a": "lots", "b": 1}"#).unwrap_err();
        assert!(e.contains("lots"), "{e}");
        assert!(parse(r#"{"a": -1, "b": 1}"#).is_err(), "a negative size is refused");
        assert!(parse(r#"{"a": "12 parsecs", "b": 1}"#).is_err());
    }

    #[test]
    fn sizes_are_written_as_integers_and_round_trip() {
        let t = T { a: 1_000_001, b: 64 << 20 };
        let s = serde_json::to_string(&t).unwrap();
        assert_eq!(s, r#"{"a":1000001,"b":67108864}"#);
        assert_eq!(parse(&s), Ok(t));
    }
}
