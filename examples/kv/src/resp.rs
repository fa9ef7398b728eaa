//! RESP (the Redis serialization protocol, version 2): the [`Value`] type, the request
//! parser the server runs on untrusted bytes, and the reply parser its clients use.
//!
//! Owns framing only. Never interprets commands. Every parser returns `Ok(None)` when the
//! buffer holds an incomplete frame and a typed [`RespError`] on malformed or oversized
//! input; none panics or allocates more than the limits allow.

use thiserror::Error;

/// One RESP value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+text`
    Simple(String),
    /// `-text`
    Error(String),
    /// `:n`
    Int(i64),
    /// `$len bytes`, or `$-1` (nil) when `None`.
    Bulk(Option<Vec<u8>>),
    /// `*n values`, or `*-1` (nil) when `None`.
    Array(Option<Vec<Value>>),
}

impl Value {
    /// `+OK`.
    pub fn ok() -> Value {
        Value::Simple("OK".into())
    }

    /// An error reply.
    pub fn err(s: impl Into<String>) -> Value {
        Value::Error(s.into())
    }

    /// A bulk string.
    pub fn bulk(b: impl Into<Vec<u8>>) -> Value {
        Value::Bulk(Some(b.into()))
    }

    /// Appends the wire form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Simple(s) => {
                out.push(b'+');
                out.extend(s.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
                out.extend_from_slice(b"\r\n");
            }
            Value::Error(s) => {
                out.push(b'-');
                out.extend(s.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
                out.extend_from_slice(b"\r\n");
            }
            Value::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
            Value::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Value::Bulk(Some(b)) => {
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Value::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            Value::Array(Some(vs)) => {
                out.extend_from_slice(format!("*{}\r\n", vs.len()).as_bytes());
                for v in vs {
                    v.encode(out);
                }
            }
        }
    }

    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

/// Encodes a command (an array of bulk strings).
pub fn encode_command<A: AsRef<[u8]>>(args: &[A], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Why bytes are not valid RESP.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RespError {
    /// A byte sequence that RESP does not allow here.
    #[error("Protocol error: {0}")]
    Malformed(&'static str),
    /// The request (or one argument, or the argument count) exceeds the limits.
    #[error("Protocol error: request too large (limit {limit} bytes)")]
    TooLarge {
        /// The byte limit in force.
        limit: usize,
    },
}

/// Bounds on one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request (all of one command's bytes).
    pub max_request: usize,
    /// Most arguments in one command.
    pub max_args: usize,
}

/// Finds `\r\n` from `from`; returns the line's end (index of `\r`).
fn line_end(buf: &[u8], from: usize, max: usize) -> Result<Option<usize>, RespError> {
    let hay = &buf[from.min(buf.len())..];
    match hay.windows(2).position(|w| w == b"\r\n") {
        Some(p) => Ok(Some(from + p)),
        None if hay.len() > max => Err(RespError::TooLarge { limit: max }),
        None => Ok(None),
    }
}

fn parse_int(b: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(RespError::Malformed("invalid length or integer"))
}

/// Parses one command from the start of `buf`: an array of bulk strings, or an inline
/// command (a line of space-separated words). Returns the arguments and the bytes used,
/// `Ok(None)` if more bytes are needed.
#[allow(clippy::type_complexity)]
pub fn parse_command(buf: &[u8], lim: Limits) -> Result<Option<(Vec<Vec<u8>>, usize)>, RespError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != b'*' {
        // Inline command.
        let Some(end) = line_end(buf, 0, lim.max_request.min(64 * 1024))? else {
            return Ok(None);
        };
        let args: Vec<Vec<u8>> = buf[..end]
            .split(|&b| b == b' ' || b == b'\t')
            .filter(|w| !w.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        if args.len() > lim.max_args {
            return Err(RespError::TooLarge { limit: lim.max_request });
        }
        if args.iter().any(|a| a.contains(&b'\n') || a.contains(&b'\r')) {
            return Err(RespError::Malformed("invalid inline command"));
        }
        return Ok(Some((args, end + 2)));
    }
    let Some(end) = line_end(buf, 1, 32)? else { return Ok(None) };
    let n = parse_int(&buf[1..end])?;
    if n < 0 {
        return Err(RespError::Malformed("invalid multibulk length"));
    }
    let n = n as usize;
    if n > lim.max_args {
        return Err(RespError::TooLarge { limit: lim.max_request });
    }
    let mut pos = end + 2;
    let mut args = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        if pos >= buf.len() {
            return Ok(None);
        }
        if buf[pos] != b'$' {
            return Err(RespError::Malformed("expected '$'"));
        }
        let Some(end) = line_end(buf, pos + 1, 32)? else { return Ok(None) };
        let len = parse_int(&buf[pos + 1..end])?;
        if len < 0 {
            return Err(RespError::Malformed("invalid bulk length"));
        }
        let len = len as usize;
        let start = end + 2;
        if len > lim.max_request || start.saturating_add(len) > lim.max_request {
            return Err(RespError::TooLarge { limit: lim.max_request });
        }
        if buf.len() < start + len + 2 {
            return Ok(None);
        }
        if &buf[start + len..start + len + 2] != b"\r\n" {
            return Err(RespError::Malformed("bulk string not terminated by CRLF"));
        }
        args.push(buf[start..start + len].to_vec());
        pos = start + len + 2;
    }
    Ok(Some((args, pos)))
}

/// Parses one reply value from the start of `buf` (nesting bounded by `depth`). Returns the
/// value and the bytes used, `Ok(None)` if more bytes are needed.
pub fn parse_value(buf: &[u8], max: usize, depth: u32) -> Result<Option<(Value, usize)>, RespError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if depth == 0 {
        return Err(RespError::Malformed("nesting too deep"));
    }
    let Some(end) = line_end(buf, 1, max)? else { return Ok(None) };
    let line = &buf[1..end];
    let next = end + 2;
    let text = || String::from_utf8_lossy(line).into_owned();
    match buf[0] {
        b'+' => Ok(Some((Value::Simple(text()), next))),
        b'-' => Ok(Some((Value::Error(text()), next))),
        b':' => Ok(Some((Value::Int(parse_int(line)?), next))),
        b'$' => {
            let len = parse_int(line)?;
            if len < 0 {
                return Ok(Some((Value::Bulk(None), next)));
            }
            let len = len as usize;
            if len > max {
                return Err(RespError::TooLarge { limit: max });
            }
            if buf.len() < next + len + 2 {
                return Ok(None);
            }
            if &buf[next + len..next + len + 2] != b"\r\n" {
                return Err(RespError::Malformed("bulk string not terminated by CRLF"));
            }
            Ok(Some((Value::Bulk(Some(buf[next..next + len].to_vec())), next + len + 2)))
        }
        b'*' => {
            let n = parse_int(line)?;
            if n < 0 {
                return Ok(Some((Value::Array(None), next)));
            }
            let n = n as usize;
            if n > max {
                return Err(RespError::TooLarge { limit: max });
            }
            let mut pos = next;
            let mut vs = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                match parse_value(&buf[pos..], max, depth - 1)? {
                    Some((v, used)) => {
                        vs.push(v);
                        pos += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Value::Array(Some(vs)), pos)))
        }
        _ => Err(RespError::Malformed("unknown type byte")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: Limits = Limits { max_request: 1024, max_args: 16 };

    #[test]
    fn commands_parse_whole_partial_and_inline() {
        let mut b = Vec::new();
        encode_command(&["SET", "k", "v"], &mut b);
        let (args, used) = parse_command(&b, LIM).unwrap().unwrap();
        assert_eq!(args, vec![b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()]);
        assert_eq!(used, b.len());
        for cut in 0..b.len() {
            assert_eq!(parse_command(&b[..cut], LIM).unwrap(), None, "cut {cut}");
        }
        let (args, used) = parse_command(b"PING  x\r\nrest", LIM).unwrap().unwrap();
        assert_eq!(args, vec![b"PING".to_vec(), b"x".to_vec()]);
        assert_eq!(used, 9);
    }

    #[test]
    fn malformed_and_oversized_are_refused() {
        assert!(matches!(parse_command(b"*x\r\n", LIM), Err(RespError::Malformed(_))));
        assert!(matches!(parse_command(b"*1\r\n+a\r\n", LIM), Err(RespError::Malformed(_))));
        assert!(matches!(parse_command(b"*1\r\n$1\r\nab\r\n", LIM), Err(RespError::Malformed(_))));
        assert!(matches!(parse_command(b"*1\r\n$-5\r\n", LIM), Err(RespError::Malformed(_))));
        assert!(matches!(parse_command(b"*100\r\n", LIM), Err(RespError::TooLarge { .. })));
        assert!(matches!(parse_command(b"*1\r\n$5000\r\n", LIM), Err(RespError::TooLarge { .. })));
        assert!(parse_command(b"*99999999999999999999999\r\n", LIM).is_err());
        let long = vec![b'a'; 70 * 1024];
        assert!(matches!(parse_command(&long, LIM), Err(RespError::TooLarge { .. })));
    }

    #[test]
    fn values_round_trip() {
        let v = Value::Array(Some(vec![
            Value::ok(),
            Value::err("ERR x"),
            Value::Int(-3),
            Value::Bulk(None),
            Value::bulk("a\r\nb"),
            Value::Array(None),
        ]));
        let b = v.to_bytes();
        assert_eq!(parse_value(&b, 1024, 8).unwrap(), Some((v, b.len())));
        for cut in 0..b.len() {
            assert_eq!(parse_value(&b[..cut], 1024, 8).unwrap(), None);
        }
        assert!(parse_value(b"*1\r\n*1\r\n*1\r\n:1\r\n", 1024, 2).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut b = Vec::new();
            for _ in 0..(x % 40) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.push(b"*$:+-\r\n0123456789ab"[(x % 19) as usize]);
            }
            let _ = parse_command(&b, LIM);
            let _ = parse_value(&b, 1024, 8);
        }
    }
}
