//! RESP (the Redis serialization protocol, versions 2 and 3): the [`Value`] type and the
//! [`Proto`] a connection speaks, the request
//! parser the server runs on untrusted bytes, and the reply parser its clients use.
//!
//! Owns framing only. Never interprets commands. Every parser returns `Ok(None)` when the
//! buffer holds an incomplete frame and a typed [`RespError`] on malformed or oversized
//! input; none panics or allocates more than the limits allow.

use thiserror::Error;

/// The protocol a connection speaks: RESP2 until the client asks for RESP3 with `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Proto {
    /// RESP2, the default of every connection (Redis's too).
    #[default]
    Resp2,
    /// RESP3 (`HELLO 3`): maps, sets, doubles, booleans, verbatim strings and a null.
    Resp3,
}

impl Proto {
    /// The protocol version number `HELLO` names (2 or 3).
    pub fn version(self) -> i64 {
        match self {
            Proto::Resp2 => 2,
            Proto::Resp3 => 3,
        }
    }
}

/// One RESP value. The RESP3 types ([`Value::Map`], [`Value::Set`], [`Value::Double`],
/// [`Value::Bool`], [`Value::Verbatim`], [`Value::BigNumber`]) are written as Redis writes
/// them to a RESP2 connection when the connection speaks RESP2 (a map as a flat array, a
/// set as an array, a double, verbatim string or big number as a bulk string, a boolean as
/// an integer); both nulls are RESP3's `_`. Internal replies (a state machine's result, the
/// node channel) are always RESP3, so nothing is lost on the way to a client of either
/// protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `+text` (borrowed when static: `+OK` answers every SET on every replica)
    Simple(std::borrow::Cow<'static, str>),
    /// `-text`
    Error(String),
    /// `:n`
    Int(i64),
    /// `$len bytes`, or the null bulk string (`$-1`; RESP3 `_`) when `None`.
    Bulk(Option<Vec<u8>>),
    /// `*n values`, or the null array (`*-1`; RESP3 `_`) when `None`.
    Array(Option<Vec<Value>>),
    /// RESP3 `%n` key/value pairs (RESP2: a flat array of 2n values).
    Map(Vec<(Value, Value)>),
    /// RESP3 `~n` values (RESP2: an array).
    Set(Vec<Value>),
    /// RESP3 `,double` (RESP2: a bulk string of the same text).
    Double(f64),
    /// RESP3 `#t` / `#f` (RESP2: `:1` / `:0`).
    Bool(bool),
    /// RESP3 `=len fmt:text`, `fmt` three bytes such as `txt` (RESP2: a bulk string of the
    /// text alone).
    Verbatim(String, Vec<u8>),
    /// RESP3 `(digits` (RESP2: a bulk string of the digits).
    BigNumber(String),
}

/// Redis's text of a double in replies: `inf`, `-inf`, `nan`, else the shortest text that
/// reads back as the same double, with an exponent from 1e17 (`%.17g`'s switch) on.
pub fn format_double(d: f64) -> String {
    if d.is_nan() {
        "nan".into()
    } else if d.is_infinite() {
        if d > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else if d != 0.0 && (d.abs() >= 1e17 || d.abs() < 1e-4) {
        format!("{d:e}").replace("e", "e+").replace("e+-", "e-")
    } else {
        format!("{d}")
    }
}

fn line(out: &mut Vec<u8>, ty: u8, s: &str) {
    out.push(ty);
    out.extend(s.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
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

    /// The null reply (RESP2 `$-1`, RESP3 `_`).
    pub fn null() -> Value {
        Value::Bulk(None)
    }

    /// Appends the wire form in protocol `proto` to `out`.
    pub fn encode(&self, proto: Proto, out: &mut Vec<u8>) {
        let r3 = proto == Proto::Resp3;
        match self {
            Value::Simple(s) => line(out, b'+', s),
            Value::Error(s) => line(out, b'-', s),
            Value::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
            Value::Bulk(None) | Value::Array(None) if r3 => out.extend_from_slice(b"_\r\n"),
            Value::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Value::Bulk(Some(b)) => bulk(out, b),
            Value::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            Value::Array(Some(vs)) => {
                out.extend_from_slice(format!("*{}\r\n", vs.len()).as_bytes());
                for v in vs {
                    v.encode(proto, out);
                }
            }
            Value::Map(kvs) => {
                if r3 {
                    out.extend_from_slice(format!("%{}\r\n", kvs.len()).as_bytes());
                } else {
                    out.extend_from_slice(format!("*{}\r\n", kvs.len() * 2).as_bytes());
                }
                for (k, v) in kvs {
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
            Value::Set(vs) => {
                out.extend_from_slice(format!("{}{}\r\n", if r3 { '~' } else { '*' }, vs.len()).as_bytes());
                for v in vs {
                    v.encode(proto, out);
                }
            }
            Value::Double(d) if r3 => line(out, b',', &format_double(*d)),
            Value::Double(d) => bulk(out, format_double(*d).as_bytes()),
            Value::Bool(b) if r3 => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Value::Bool(b) => out.extend_from_slice(if *b { b":1\r\n" } else { b":0\r\n" }),
            Value::Verbatim(fmt, text) if r3 => {
                out.extend_from_slice(format!("={}\r\n", text.len() + 4).as_bytes());
                let mut f = fmt.as_bytes().to_vec();
                f.resize(3, b' ');
                out.extend_from_slice(&f);
                out.push(b':');
                out.extend_from_slice(text);
                out.extend_from_slice(b"\r\n");
            }
            Value::Verbatim(_, text) => bulk(out, text),
            Value::BigNumber(n) if r3 => line(out, b'(', n),
            Value::BigNumber(n) => bulk(out, n.as_bytes()),
        }
    }

    /// The wire form in protocol `proto`.
    pub fn to_bytes(&self, proto: Proto) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(proto, &mut v);
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
    /// Before AUTH, a multibulk of more arguments than allowed (Redis's reply, word for word).
    #[error("Protocol error: unauthenticated multibulk length")]
    UnauthenticatedMultibulk,
    /// Before AUTH, a bulk longer than allowed (Redis's reply, word for word).
    #[error("Protocol error: unauthenticated bulk length")]
    UnauthenticatedBulk,
}

/// Bounds on one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request (all of one command's bytes).
    pub max_request: usize,
    /// Most arguments in one command.
    pub max_args: usize,
}

/// Redis's `PROTO_INLINE_MAX_SIZE`: the longest inline request line when none is configured
/// (the default of the config key `max_inline_bytes`).
pub const DEFAULT_MAX_INLINE: usize = 64 * 1024;

/// Longest `*<count>` or `$<length>` line, type byte included. A sign and the 19 digits of
/// an `i64` fit; a longer line is never a valid length. A property of the protocol, not a
/// tunable bound.
const MAX_LENGTH_LINE: usize = 32;

/// The tighter bounds of a connection that has not authenticated yet (Redis: 10 arguments
/// of at most 16 KiB each, CVE-2021-32675).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnauthLimits {
    /// Most arguments of a multibulk request.
    pub max_args: usize,
    /// Largest bulk argument, bytes.
    pub max_bulk: usize,
}

/// Everything that bounds the requests of one connection.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Size and argument count of one request.
    pub request: Limits,
    /// Longest inline request line (also bounded by `request.max_request`).
    pub max_inline: usize,
    /// `Some` while the connection has not authenticated and a password is set.
    pub unauthenticated: Option<UnauthLimits>,
}

impl From<Limits> for RequestLimits {
    fn from(request: Limits) -> RequestLimits {
        RequestLimits { request, max_inline: DEFAULT_MAX_INLINE, unauthenticated: None }
    }
}

impl RequestLimits {
    fn inline_max(&self) -> usize {
        self.max_inline.min(self.request.max_request)
    }

    fn too_large(&self) -> RespError {
        RespError::TooLarge { limit: self.request.max_request }
    }

    /// The argument count of a `*<n>` line (its digits), checked: `0` for `n <= 0`.
    fn array_len(&self, digits: &[u8]) -> Result<usize, RespError> {
        let n = parse_int(digits)?;
        if let Some(u) = self.unauthenticated {
            if n > 0 && n as u64 > u.max_args as u64 {
                return Err(RespError::UnauthenticatedMultibulk);
            }
        }
        if n <= 0 {
            return Ok(0);
        }
        if n as u64 > self.request.max_args as u64 {
            return Err(self.too_large());
        }
        Ok(n as usize)
    }

    /// The length of a `$<len>` line (its digits) whose argument starts `at` bytes into
    /// the request, checked.
    fn bulk_len(&self, digits: &[u8], at: usize) -> Result<usize, RespError> {
        let len = parse_int(digits)?;
        if len < 0 {
            return Err(RespError::Malformed("invalid bulk length"));
        }
        let len = len as u64;
        if let Some(u) = self.unauthenticated {
            if len > u.max_bulk as u64 {
                return Err(RespError::UnauthenticatedBulk);
            }
        }
        if len.saturating_add(at as u64 + 2) > self.request.max_request as u64 {
            return Err(self.too_large());
        }
        Ok(len as usize)
    }

    /// The arguments of an inline request line (without its CRLF).
    fn inline_args(&self, line: &[u8]) -> Result<Vec<Vec<u8>>, RespError> {
        let words = line.split(|&b| b == b' ' || b == b'\t').filter(|w| !w.is_empty());
        if words.clone().count() > self.request.max_args {
            return Err(self.too_large());
        }
        if line.contains(&b'\n') || line.contains(&b'\r') {
            return Err(RespError::Malformed("invalid inline command"));
        }
        Ok(words.map(<[u8]>::to_vec).collect())
    }
}

/// Finds the CRLF ending a line that starts at `from` and whose content may be at most
/// `max` bytes; returns the index of its `\r`. The line is too long (`too_long`) once
/// `max + 2` bytes hold no CRLF ending the content within `max`; `Ok(None)` if fewer bytes
/// than that are here and none ends it.
fn line_end(buf: &[u8], from: usize, max: usize, too_long: RespError) -> Result<Option<usize>, RespError> {
    let from = from.min(buf.len());
    let hay = &buf[from..buf.len().min(from.saturating_add(max).saturating_add(2))];
    match hay.windows(2).position(|w| w == b"\r\n") {
        Some(p) => Ok(Some(from + p)),
        None if hay.len() >= max + 2 => Err(too_long),
        None => Ok(None),
    }
}

fn parse_int(b: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(RespError::Malformed("invalid length or integer"))
}

const MBULK_TOO_LONG: RespError = RespError::Malformed("too big mbulk count string");
const BULK_TOO_LONG: RespError = RespError::Malformed("too big bulk count string");
const EXPECTED_BULK: RespError = RespError::Malformed("expected '$'");
const BULK_NO_CRLF: RespError = RespError::Malformed("bulk string not terminated by CRLF");

/// Parses one command from the start of `buf`: an array of bulk strings, or an inline
/// command (a line of space-separated words). Returns the arguments and the bytes used,
/// `Ok(None)` if more bytes are needed. The one-shot parser: it starts from the first byte
/// every time, so a server reading a request in pieces uses [`RequestParser`] instead.
#[allow(clippy::type_complexity)]
pub fn parse_command(buf: &[u8], lim: Limits) -> Result<Option<(Vec<Vec<u8>>, usize)>, RespError> {
    parse_request(buf, &lim.into())
}

/// [`parse_command`] under every bound of [`RequestLimits`] (inline length, the bounds
/// before AUTH). [`RequestParser`] returns exactly what it returns, however the bytes are
/// split.
#[allow(clippy::type_complexity)]
pub fn parse_request(buf: &[u8], lim: &RequestLimits) -> Result<Option<(Vec<Vec<u8>>, usize)>, RespError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != b'*' {
        let Some(end) = line_end(buf, 0, lim.inline_max(), lim.too_large())? else {
            return Ok(None);
        };
        return Ok(Some((lim.inline_args(&buf[..end])?, end + 2)));
    }
    let Some(end) = line_end(buf, 0, MAX_LENGTH_LINE, MBULK_TOO_LONG)? else { return Ok(None) };
    let n = lim.array_len(&buf[1..end])?;
    let mut pos = end + 2;
    if pos > lim.request.max_request {
        return Err(lim.too_large());
    }
    let mut args = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        if pos >= buf.len() {
            return Ok(None);
        }
        if buf[pos] != b'$' {
            return Err(EXPECTED_BULK);
        }
        let Some(end) = line_end(buf, pos, MAX_LENGTH_LINE, BULK_TOO_LONG)? else { return Ok(None) };
        let start = end + 2;
        if start > lim.request.max_request {
            return Err(lim.too_large());
        }
        let len = lim.bulk_len(&buf[pos + 1..end], start)?;
        for (i, want) in [b'\r', b'\n'].into_iter().enumerate() {
            if buf.get(start + len + i).is_some_and(|&b| b != want) {
                return Err(BULK_NO_CRLF);
            }
        }
        if buf.len() < start + len + 2 {
            return Ok(None);
        }
        args.push(buf[start..start + len].to_vec());
        pos = start + len + 2;
    }
    Ok(Some((args, pos)))
}

/// Where a [`RequestParser`] is in the current request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first byte of a request.
    Start,
    /// Collecting an inline request line.
    Inline,
    /// Collecting the `*<count>` line.
    ArrayHeader,
    /// Collecting a `$<length>` line; `left` arguments remain, this one included.
    BulkHeader { left: usize },
    /// Copying an argument of `len` bytes.
    BulkData { left: usize, len: usize },
    /// Expecting the CRLF after an argument (`seen` of its 2 bytes read).
    BulkEnd { left: usize, seen: u8 },
    /// An error was returned: the connection must be closed.
    Failed,
}

/// The incremental request parser of one connection: it keeps its place in the request
/// across reads (the line being read, the arguments so far, the current argument's
/// remaining length), so every byte is examined once whatever the pieces the bytes arrive
/// in; never re-parses from the start of a request. Returns what [`parse_request`]
/// returns on the same bytes.
///
/// Memory: the partial request ([`RequestParser::held`] bytes, at most the request limit);
/// an argument's buffer grows with the bytes received, never to more than its declared
/// length (a declared length alone allocates nothing), and the argument list to no more
/// than the declared count.
#[derive(Debug)]
pub struct RequestParser {
    state: State,
    /// The line being collected (a length line, or an inline request).
    line: Vec<u8>,
    args: Vec<Vec<u8>>,
    /// Bytes of the current request consumed so far.
    held: usize,
    /// Bytes looked at so far (scanned for a line end, copied, or parsed as a number).
    examined: u64,
}

impl Default for RequestParser {
    fn default() -> Self {
        RequestParser::new()
    }
}

/// A line buffer grown past this (a long inline request) is freed once the line is done,
/// so idle connections do not keep it.
const LINE_KEEP: usize = 4096;

impl RequestParser {
    /// A parser before its first request.
    pub fn new() -> RequestParser {
        RequestParser { state: State::Start, line: Vec::new(), args: Vec::new(), held: 0, examined: 0 }
    }

    /// Bytes of the request in progress consumed so far (0 between requests).
    pub fn held(&self) -> usize {
        self.held
    }

    /// Bytes examined since the parser was made: each input byte once, plus the digits of
    /// each length and the words of each inline line parsed once more. A measure of the
    /// parser's work that does not depend on how the input was split.
    pub fn examined(&self) -> u64 {
        self.examined
    }

    /// Bytes of memory the partial request holds (argument buffers, argument list and
    /// line buffer capacities). O(arguments); meant for tests and diagnostics.
    pub fn allocated(&self) -> usize {
        self.line.capacity()
            + self.args.capacity() * std::mem::size_of::<Vec<u8>>()
            + self.args.iter().map(Vec::capacity).sum::<usize>()
    }

    /// Feeds bytes. Returns how many of `input` were consumed and, when a request was
    /// completed, its arguments (empty for an empty line or `*0`); it stops right after a
    /// completed request, so the caller feeds the rest again. Without a completed request
    /// all of `input` is consumed. After an error the parser stays failed.
    #[allow(clippy::type_complexity)]
    pub fn feed(
        &mut self,
        input: &[u8],
        lim: &RequestLimits,
    ) -> Result<(usize, Option<Vec<Vec<u8>>>), RespError> {
        let r = self.step(input, lim);
        if r.is_err() {
            self.state = State::Failed;
        }
        r
    }

    #[allow(clippy::type_complexity)]
    fn step(
        &mut self,
        input: &[u8],
        lim: &RequestLimits,
    ) -> Result<(usize, Option<Vec<Vec<u8>>>), RespError> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            if rest.is_empty() && !matches!(self.state, State::Failed) {
                return Ok((pos, None));
            }
            match self.state {
                State::Failed => return Err(RespError::Malformed("request after a protocol error")),
                State::Start => {
                    self.state = if rest[0] == b'*' { State::ArrayHeader } else { State::Inline };
                }
                State::Inline => {
                    let (used, done) = self.take_line(rest, lim.inline_max(), lim.too_large())?;
                    pos += used;
                    self.held += used;
                    if done {
                        self.examined += self.line.len() as u64;
                        let args = lim.inline_args(&self.line)?;
                        return Ok((pos, Some(self.finish(args))));
                    }
                }
                State::ArrayHeader => {
                    let (used, done) = self.take_line(rest, MAX_LENGTH_LINE, MBULK_TOO_LONG)?;
                    pos += used;
                    self.held += used;
                    if done {
                        self.examined += self.line.len() as u64;
                        let n = lim.array_len(&self.line[1..])?;
                        self.clear_line();
                        if self.held > lim.request.max_request {
                            return Err(lim.too_large());
                        }
                        if n == 0 {
                            return Ok((pos, Some(self.finish(Vec::new()))));
                        }
                        self.args = Vec::with_capacity(n.min(1024));
                        self.state = State::BulkHeader { left: n };
                    }
                }
                State::BulkHeader { left } => {
                    if self.line.is_empty() && rest[0] != b'$' {
                        return Err(EXPECTED_BULK);
                    }
                    let (used, done) = self.take_line(rest, MAX_LENGTH_LINE, BULK_TOO_LONG)?;
                    pos += used;
                    self.held += used;
                    if done {
                        if self.held > lim.request.max_request {
                            return Err(lim.too_large());
                        }
                        self.examined += self.line.len() as u64;
                        let len = lim.bulk_len(&self.line[1..], self.held)?;
                        self.clear_line();
                        if self.args.len() == self.args.capacity() {
                            // Never beyond the declared count.
                            self.args.reserve_exact(self.args.capacity().max(1).min(left));
                        }
                        self.args.push(Vec::new());
                        self.state = if len == 0 {
                            State::BulkEnd { left, seen: 0 }
                        } else {
                            State::BulkData { left, len }
                        };
                    }
                }
                State::BulkData { left, len } => {
                    let Some(arg) = self.args.last_mut() else {
                        return Err(RespError::Malformed("parser state lost its argument"));
                    };
                    let take = rest.len().min(len - arg.len());
                    let want = arg.len() + take;
                    if want > arg.capacity() {
                        // Grow with the bytes received, doubling, never past the declared length.
                        let cap = want.max(arg.capacity() * 2).min(len);
                        arg.reserve_exact(cap - arg.len());
                    }
                    arg.extend_from_slice(&rest[..take]);
                    self.examined += take as u64;
                    pos += take;
                    self.held += take;
                    if arg.len() == len {
                        self.state = State::BulkEnd { left, seen: 0 };
                    }
                }
                State::BulkEnd { left, seen } => {
                    self.examined += 1;
                    if rest[0] != [b'\r', b'\n'][usize::from(seen)] {
                        return Err(BULK_NO_CRLF);
                    }
                    pos += 1;
                    self.held += 1;
                    if seen == 0 {
                        self.state = State::BulkEnd { left, seen: 1 };
                    } else if left > 1 {
                        self.state = State::BulkHeader { left: left - 1 };
                    } else {
                        let args = std::mem::take(&mut self.args);
                        return Ok((pos, Some(self.finish(args))));
                    }
                }
            }
        }
    }

    /// Ends the current request: back to the start, nothing held.
    fn finish(&mut self, args: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        self.clear_line();
        self.state = State::Start;
        self.held = 0;
        self.args = Vec::new();
        args
    }

    fn clear_line(&mut self) {
        if self.line.capacity() > LINE_KEEP {
            self.line = Vec::new();
        } else {
            self.line.clear();
        }
    }

    /// Collects the current line from `input`, looking only at as many bytes as the line
    /// may still take (`max` bytes of content and its CRLF). Returns the bytes consumed and
    /// whether the line is complete (then `self.line` holds it without its CRLF).
    fn take_line(
        &mut self,
        input: &[u8],
        max: usize,
        too_long: RespError,
    ) -> Result<(usize, bool), RespError> {
        let room = (max + 2).saturating_sub(self.line.len());
        let window = &input[..input.len().min(room)];
        let mut from = 0;
        while let Some(p) = window[from..].iter().position(|&b| b == b'\n') {
            let j = from + p;
            let cr = if j > 0 { window[j - 1] == b'\r' } else { self.line.last() == Some(&b'\r') };
            if cr {
                self.examined += (j + 1) as u64;
                self.line.extend_from_slice(&window[..=j]);
                self.line.truncate(self.line.len() - 2);
                return Ok((j + 1, true));
            }
            from = j + 1;
        }
        self.examined += window.len() as u64;
        self.line.extend_from_slice(window);
        if self.line.len() >= max + 2 {
            return Err(too_long);
        }
        Ok((window.len(), false))
    }
}

/// A blob read: its bytes (`None` for a negative length) and the bytes used.
type Blob = (Option<Vec<u8>>, usize);

/// Reads a length-prefixed blob (`$`, `=` and `!`) whose length line ends at `next`.
fn blob(buf: &[u8], line: &[u8], next: usize, max: usize) -> Result<Option<Blob>, RespError> {
    let len = parse_int(line)?;
    if len < 0 {
        return Ok(Some((None, next)));
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
    Ok(Some((Some(buf[next..next + len].to_vec()), next + len + 2)))
}

/// Reads `n` values after `next`.
fn values(
    buf: &[u8],
    n: usize,
    mut pos: usize,
    max: usize,
    depth: u32,
) -> Result<Option<(Vec<Value>, usize)>, RespError> {
    if n > max {
        return Err(RespError::TooLarge { limit: max });
    }
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
    Ok(Some((vs, pos)))
}

/// Parses one reply value, RESP2 or RESP3, from the start of `buf` (nesting bounded by
/// `depth`). Returns the value and the bytes used, `Ok(None)` if more bytes are needed.
/// RESP3's null is read as [`Value::Bulk`]`(None)`, a push (`>`) as an array, a blob error
/// (`!`) as an error; attributes (`|`) are refused.
pub fn parse_value(buf: &[u8], max: usize, depth: u32) -> Result<Option<(Value, usize)>, RespError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if depth == 0 {
        return Err(RespError::Malformed("nesting too deep"));
    }
    let Some(end) = line_end(buf, 1, max, RespError::TooLarge { limit: max })? else { return Ok(None) };
    let line = &buf[1..end];
    let next = end + 2;
    let text = || String::from_utf8_lossy(line).into_owned();
    let count = |line: &[u8]| -> Result<Option<usize>, RespError> {
        let n = parse_int(line)?;
        Ok(if n < 0 { None } else { Some(n as usize) })
    };
    match buf[0] {
        b'+' => Ok(Some((Value::Simple(text().into()), next))),
        b'-' => Ok(Some((Value::Error(text()), next))),
        b':' => Ok(Some((Value::Int(parse_int(line)?), next))),
        b'_' if line.is_empty() => Ok(Some((Value::Bulk(None), next))),
        b'#' => match line {
            b"t" => Ok(Some((Value::Bool(true), next))),
            b"f" => Ok(Some((Value::Bool(false), next))),
            _ => Err(RespError::Malformed("boolean is neither t nor f")),
        },
        b',' => {
            let t = std::str::from_utf8(line).map_err(|_| RespError::Malformed("double is not text"))?;
            let d = match t {
                "inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                _ => t.parse().map_err(|_| RespError::Malformed("not a double"))?,
            };
            Ok(Some((Value::Double(d), next)))
        }
        b'(' => {
            let ok = !line.is_empty()
                && line
                    .iter()
                    .enumerate()
                    .all(|(i, c)| c.is_ascii_digit() || (i == 0 && *c == b'-' && line.len() > 1));
            if !ok {
                return Err(RespError::Malformed("big number is not digits"));
            }
            Ok(Some((Value::BigNumber(text()), next)))
        }
        b'$' => Ok(blob(buf, line, next, max)?.map(|(b, used)| (Value::Bulk(b), used))),
        b'!' => Ok(blob(buf, line, next, max)?.map(|(b, used)| {
            (Value::Error(String::from_utf8_lossy(&b.unwrap_or_default()).into_owned()), used)
        })),
        b'=' => match blob(buf, line, next, max)? {
            None => Ok(None),
            Some((Some(b), used)) if b.len() >= 4 && b[3] == b':' => Ok(Some((
                Value::Verbatim(String::from_utf8_lossy(&b[..3]).into_owned(), b[4..].to_vec()),
                used,
            ))),
            Some(_) => Err(RespError::Malformed("verbatim string without its format")),
        },
        b'*' | b'>' | b'~' => match count(line)? {
            None if buf[0] == b'*' => Ok(Some((Value::Array(None), next))),
            None => Err(RespError::Malformed("negative length")),
            Some(n) => Ok(values(buf, n, next, max, depth)?.map(|(vs, used)| {
                (if buf[0] == b'~' { Value::Set(vs) } else { Value::Array(Some(vs)) }, used)
            })),
        },
        b'%' => match count(line)? {
            None => Err(RespError::Malformed("negative length")),
            Some(n) => Ok(values(buf, n.saturating_mul(2), next, max, depth)?.map(|(vs, used)| {
                let mut it = vs.into_iter();
                let mut kvs = Vec::with_capacity(n.min(1024));
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    kvs.push((k, v));
                }
                (Value::Map(kvs), used)
            })),
        },
        _ => Err(RespError::Malformed("unknown type byte")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `+OK` answers every SET on every replica; it costs no allocation.
    #[test]
    fn the_ok_reply_is_borrowed() {
        assert!(matches!(Value::ok(), Value::Simple(std::borrow::Cow::Borrowed("OK"))));
        assert_eq!(Value::ok().to_bytes(Proto::Resp2), b"+OK\r\n");
    }

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
    fn incremental_parser_byte_by_byte_and_the_bounds_before_auth() {
        let lim: RequestLimits = LIM.into();
        let mut b = Vec::new();
        encode_command(&["SET", "k", "v"], &mut b);
        b.extend_from_slice(b"PING  x\r\n*0\r\n");
        encode_command(&["GET", "k"], &mut b);
        let mut p = RequestParser::new();
        let mut got = Vec::new();
        for byte in b.chunks(1) {
            let (used, cmd) = p.feed(byte, &lim).unwrap();
            assert_eq!(used, 1);
            got.extend(cmd);
        }
        let words = |ws: &[&str]| ws.iter().map(|w| w.as_bytes().to_vec()).collect::<Vec<_>>();
        assert_eq!(got, vec![words(&["SET", "k", "v"]), words(&["PING", "x"]), vec![], words(&["GET", "k"])]);
        assert_eq!(p.held(), 0);

        let big = Limits { max_request: 1 << 20, max_args: 1 << 20 };
        let unauth = RequestLimits {
            unauthenticated: Some(UnauthLimits { max_args: 10, max_bulk: 16384 }),
            ..big.into()
        };
        let feed = |b: &[u8], lim: &RequestLimits| RequestParser::new().feed(b, lim).map(|(_, c)| c);
        assert_eq!(feed(b"*11\r\n", &unauth), Err(RespError::UnauthenticatedMultibulk));
        assert_eq!(feed(b"*1\r\n$16385\r\n", &unauth), Err(RespError::UnauthenticatedBulk));
        assert_eq!(feed(b"*10\r\n$16384\r\n", &unauth), Ok(None));
        assert_eq!(feed(b"*11\r\n$16385\r\n", &big.into()), Ok(None));
        assert_eq!(
            RespError::UnauthenticatedMultibulk.to_string(),
            "Protocol error: unauthenticated multibulk length"
        );
        // A declared length allocates nothing until its bytes arrive.
        let mut p = RequestParser::new();
        p.feed(b"*1\r\n$1000000\r\nab", &big.into()).unwrap();
        assert!(p.allocated() < 1024, "{}", p.allocated());
        assert_eq!(p.held(), 16);
        // After an error the parser stays failed.
        let mut p = RequestParser::new();
        assert!(p.feed(b"*x\r\n", &lim).is_err());
        assert!(p.feed(b"*1\r\n$1\r\na\r\n", &lim).is_err());
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
        let b = v.to_bytes(Proto::Resp2);
        assert_eq!(parse_value(&b, 1024, 8).unwrap(), Some((v, b.len())));
        for cut in 0..b.len() {
            assert_eq!(parse_value(&b[..cut], 1024, 8).unwrap(), None);
        }
        assert!(parse_value(b"*1\r\n*1\r\n*1\r\n:1\r\n", 1024, 2).is_err());
    }

    /// RESP3 values survive the trip (the internal replies' protocol), and each is written
    /// to a RESP2 connection as Redis writes it.
    #[test]
    fn resp3_values_round_trip_and_downgrade_as_redis_does() {
        let v = Value::Array(Some(vec![
            Value::Map(vec![
                (Value::bulk("f"), Value::Int(1)),
                (Value::Simple("g".into()), Value::Bulk(None)),
            ]),
            Value::Set(vec![Value::bulk("a")]),
            Value::Double(1.5),
            Value::Double(f64::INFINITY),
            Value::Bool(true),
            Value::Bool(false),
            Value::Verbatim("txt".into(), b"a:b\r\nc".to_vec()),
            Value::BigNumber("-12345678901234567890".into()),
        ]));
        let b = v.to_bytes(Proto::Resp3);
        assert_eq!(parse_value(&b, 1024, 8).unwrap(), Some((v.clone(), b.len())));
        for cut in 0..b.len() {
            assert_eq!(parse_value(&b[..cut], 1024, 8).unwrap(), None);
        }
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "*8\r\n%2\r\n$1\r\nf\r\n:1\r\n+g\r\n_\r\n~1\r\n$1\r\na\r\n,1.5\r\n,inf\r\n#t\r\n#f\r\n\
             =10\r\ntxt:a:b\r\nc\r\n(-12345678901234567890\r\n"
        );
        assert_eq!(
            String::from_utf8(v.to_bytes(Proto::Resp2)).unwrap(),
            "*8\r\n*4\r\n$1\r\nf\r\n:1\r\n+g\r\n$-1\r\n*1\r\n$1\r\na\r\n$3\r\n1.5\r\n$3\r\ninf\r\n:1\r\n:0\r\n\
             $6\r\na:b\r\nc\r\n$21\r\n-12345678901234567890\r\n"
        );
        assert_eq!(Value::Array(None).to_bytes(Proto::Resp3), b"_\r\n");
        assert_eq!(Value::Array(None).to_bytes(Proto::Resp2), b"*-1\r\n");
        assert_eq!(format_double(1e17), "1e+17");
        assert_eq!(format_double(0.1), "0.1");
        assert_eq!(format_double(-2.0), "-2");
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
                b.push(b"*$:+-\r\n0123456789ab_#,(=%~!>tf"[(x % 30) as usize]);
            }
            let _ = parse_command(&b, LIM);
            let _ = parse_value(&b, 1024, 8);
        }
    }
}
