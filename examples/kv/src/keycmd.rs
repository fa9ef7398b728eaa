//! The keyspace commands as Redis arguments: which are reads and which writes, their arity
//! and keys ([`SPECS`]), how a write is parsed ([`parse_write`]) and applied to a shard's
//! [`Keyspace`] ([`apply`]), and how a read is answered at a given clock ([`read`]).
//!
//! Owns the one place where a command's arguments become an effect, shared by the three
//! paths that run commands: a node's reads on its replica, the writes of the log (new
//! commands travel as their arguments, [`WriteCmd::Args`], parsed again at apply), and the
//! commands of a MULTI/EXEC transaction, applied together in one entry ([`run`]). Never
//! routes and never talks to the engine.

use crate::expiry::{self, ExpireCmd};
use crate::hashes::{self, HSetReply};
use crate::keyspace::Keyspace;
use crate::node::{Node, Op, ReadQ};
use crate::resp::Value;
use crate::sm::WriteCmd;
use crate::strings::{self, GetExChange, SetCmd};

/// Where a command's keys are among its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Keys {
    /// No key.
    None,
    /// The first argument.
    First,
    /// Every argument.
    All,
    /// Every other argument from the first (MSET).
    Pairs,
}

/// A keyspace command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// Name (upper case).
    pub name: &'static str,
    /// Redis's arity: exact argument count with the name when positive, else a minimum.
    pub arity: i32,
    /// Whether it writes (runs through the log).
    pub write: bool,
    /// Its keys.
    pub keys: Keys,
}

const fn s(name: &'static str, arity: i32, write: bool, keys: Keys) -> Spec {
    Spec { name, arity, write, keys }
}

/// Every command a transaction may hold (and the new single-key commands a node routes
/// through [`single_op`]).
pub const SPECS: &[Spec] = &[
    s("GET", 2, false, Keys::First),
    s("SET", -3, true, Keys::First),
    s("SETNX", 3, true, Keys::First),
    s("SETEX", 4, true, Keys::First),
    s("PSETEX", 4, true, Keys::First),
    s("GETSET", 3, true, Keys::First),
    s("GETDEL", 2, true, Keys::First),
    s("GETEX", -2, true, Keys::First),
    s("APPEND", 3, true, Keys::First),
    s("STRLEN", 2, false, Keys::First),
    s("INCR", 2, true, Keys::First),
    s("DECR", 2, true, Keys::First),
    s("INCRBY", 3, true, Keys::First),
    s("DECRBY", 3, true, Keys::First),
    s("INCRBYFLOAT", 3, true, Keys::First),
    s("MGET", -2, false, Keys::All),
    s("MSET", -3, true, Keys::Pairs),
    s("DEL", -2, true, Keys::All),
    s("EXISTS", -2, false, Keys::All),
    s("TYPE", 2, false, Keys::First),
    s("HSET", -4, true, Keys::First),
    s("HMSET", -4, true, Keys::First),
    s("HSETNX", 4, true, Keys::First),
    s("HGET", 3, false, Keys::First),
    s("HMGET", -3, false, Keys::First),
    s("HDEL", -3, true, Keys::First),
    s("HGETALL", 2, false, Keys::First),
    s("HLEN", 2, false, Keys::First),
    s("HEXISTS", 3, false, Keys::First),
    s("HKEYS", 2, false, Keys::First),
    s("HVALS", 2, false, Keys::First),
    s("HSTRLEN", 3, false, Keys::First),
    s("HINCRBY", 4, true, Keys::First),
    s("HINCRBYFLOAT", 4, true, Keys::First),
    s("EXPIRE", -3, true, Keys::First),
    s("PEXPIRE", -3, true, Keys::First),
    s("EXPIREAT", -3, true, Keys::First),
    s("PEXPIREAT", -3, true, Keys::First),
    s("PERSIST", 2, true, Keys::First),
    s("TTL", 2, false, Keys::First),
    s("PTTL", 2, false, Keys::First),
    s("EXPIRETIME", 2, false, Keys::First),
    s("PEXPIRETIME", 2, false, Keys::First),
    s("PING", -1, false, Keys::None),
    s("ECHO", 2, false, Keys::None),
];

/// The commands [`single_op`] routes (the others of [`SPECS`] keep their own paths in
/// [`crate::commands`]).
const ROUTED: &[&str] = &[
    "SET",
    "SETEX",
    "PSETEX",
    "GETEX",
    "INCRBYFLOAT",
    "HSET",
    "HMSET",
    "HSETNX",
    "HGET",
    "HMGET",
    "HDEL",
    "HGETALL",
    "HLEN",
    "HEXISTS",
    "HKEYS",
    "HVALS",
    "HSTRLEN",
    "HINCRBY",
    "HINCRBYFLOAT",
    "EXPIRE",
    "PEXPIRE",
    "EXPIREAT",
    "PEXPIREAT",
    "PERSIST",
    "TTL",
    "PTTL",
    "EXPIRETIME",
    "PEXPIRETIME",
];

/// The spec of `name` (upper case).
pub fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

/// Whether `argc` arguments (with the name) fit `spec`'s arity.
pub fn arity_ok(spec: &Spec, argc: usize) -> bool {
    let a = spec.arity.unsigned_abs() as usize;
    if spec.arity >= 0 {
        argc == a
    } else {
        argc >= a
    }
}

/// Redis's arity error for `name`.
pub fn arity_error(name: &str) -> Value {
    Value::err(format!("ERR wrong number of arguments for '{}' command", name.to_ascii_lowercase()))
}

/// The keys of a command (`args` with the name).
pub fn keys_of<'a>(spec: &Spec, args: &'a [Vec<u8>]) -> Vec<&'a [u8]> {
    let rest = args.get(1..).unwrap_or_default();
    match spec.keys {
        Keys::None => vec![],
        Keys::First => rest.first().map(Vec::as_slice).into_iter().collect(),
        Keys::All => rest.iter().map(Vec::as_slice).collect(),
        Keys::Pairs => rest.iter().step_by(2).map(Vec::as_slice).collect(),
    }
}

/// Parses an integer as Redis's `string2ll` does: an optional `-`, no `+`, no leading zero,
/// no spaces, within `i64`.
pub fn strict_i64(b: &[u8]) -> Option<i64> {
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    if digits.is_empty() || digits.len() > 20 || (digits[0] == b'0' && b.len() > 1) {
        return None;
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn int(b: &[u8]) -> Result<i64, Value> {
    strict_i64(b).ok_or_else(|| Value::err("ERR value is not an integer or out of range"))
}

/// A parsed write.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Write {
    /// SET, SETEX, PSETEX.
    Set(SetCmd),
    /// GETEX.
    GetEx(Vec<u8>, Option<GetExChange>),
    /// INCRBYFLOAT (the increment parsed at apply, after the type check, as Redis).
    IncrByFloat(Vec<u8>, Vec<u8>),
    /// HSET, HMSET, HSETNX.
    HSet(Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>, HSetReply),
    /// HDEL.
    HDel(Vec<u8>, Vec<Vec<u8>>),
    /// HINCRBY.
    HIncrBy(Vec<u8>, Vec<u8>, i64),
    /// HINCRBYFLOAT.
    HIncrByFloat(Vec<u8>, Vec<u8>, Vec<u8>),
    /// EXPIRE and family.
    Expire(ExpireCmd),
    /// PERSIST.
    Persist(Vec<u8>),
    /// A command with its own log encoding (SETNX, INCR, DEL, MSET, ...).
    Cmd(WriteCmd),
}

/// Parses a write command (`args` with the name); `Err` is Redis's error reply.
pub fn parse_write(args: &[Vec<u8>]) -> Result<Write, Value> {
    let Some(first) = args.first() else { return Err(Value::err("ERR empty command")) };
    let name = String::from_utf8_lossy(first).to_ascii_uppercase();
    let spec =
        spec(&name).filter(|s| s.write).ok_or_else(|| crate::commands::unknown_command(first, &args[1..]))?;
    if !arity_ok(spec, args.len()) {
        return Err(arity_error(&name));
    }
    let a = &args[1..];
    let k = || a[0].clone();
    Ok(match name.as_str() {
        "SET" => Write::Set(strings::parse_set(a)?),
        "SETEX" | "PSETEX" => Write::Set(strings::parse_setex(a, name == "SETEX")?),
        "GETEX" => {
            let (key, ch) = strings::parse_getex(a)?;
            Write::GetEx(key, ch)
        }
        "INCRBYFLOAT" => Write::IncrByFloat(k(), a[1].clone()),
        "HSET" | "HMSET" | "HSETNX" => {
            if a.len() % 2 == 0 {
                return Err(arity_error(&name));
            }
            let pairs = a[1..].chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect();
            let reply = match name.as_str() {
                "HSET" => HSetReply::Added,
                "HMSET" => HSetReply::Ok,
                _ => HSetReply::Nx,
            };
            Write::HSet(k(), pairs, reply)
        }
        "HDEL" => Write::HDel(k(), a[1..].to_vec()),
        "HINCRBY" => Write::HIncrBy(k(), a[1].clone(), int(&a[2])?),
        "HINCRBYFLOAT" => Write::HIncrByFloat(k(), a[1].clone(), a[2].clone()),
        "EXPIRE" => Write::Expire(expiry::parse_expire("expire", a)?),
        "PEXPIRE" => Write::Expire(expiry::parse_expire("pexpire", a)?),
        "EXPIREAT" => Write::Expire(expiry::parse_expire("expireat", a)?),
        "PEXPIREAT" => Write::Expire(expiry::parse_expire("pexpireat", a)?),
        "PERSIST" => Write::Persist(k()),
        "SETNX" => Write::Cmd(WriteCmd::SetNx { key: k(), val: a[1].clone() }),
        "GETSET" => Write::Cmd(WriteCmd::GetSet { key: k(), val: a[1].clone() }),
        "GETDEL" => Write::Cmd(WriteCmd::GetDel(k())),
        "APPEND" => Write::Cmd(WriteCmd::Append { key: k(), val: a[1].clone() }),
        "INCR" => Write::Cmd(WriteCmd::Incr { key: k(), by: 1 }),
        "DECR" => Write::Cmd(WriteCmd::Incr { key: k(), by: -1 }),
        "INCRBY" => Write::Cmd(WriteCmd::Incr { key: k(), by: int(&a[1])? }),
        "DECRBY" => Write::Cmd(WriteCmd::Incr {
            key: k(),
            by: int(&a[1])?.checked_neg().ok_or_else(|| Value::err("ERR decrement would overflow"))?,
        }),
        "DEL" => Write::Cmd(WriteCmd::Del(a.to_vec())),
        "MSET" => {
            if a.len() % 2 != 0 {
                return Err(arity_error(&name));
            }
            Write::Cmd(WriteCmd::MSet(a.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect()))
        }
        _ => return Err(crate::commands::unknown_command(first, a)),
    })
}

/// Applies a parsed write at the keyspace's apply time; returns the reply.
pub fn apply(ks: &mut Keyspace, w: Write) -> Value {
    match w {
        Write::Set(c) => strings::set(ks, c),
        Write::GetEx(k, ch) => strings::getex(ks, k, ch),
        Write::IncrByFloat(k, by) => strings::incrbyfloat(ks, k, &by),
        Write::HSet(k, pairs, r) => hashes::hset(ks, &k, pairs, r),
        Write::HDel(k, fs) => hashes::hdel(ks, &k, &fs),
        Write::HIncrBy(k, f, by) => hashes::hincrby(ks, &k, f, by),
        Write::HIncrByFloat(k, f, by) => hashes::hincrbyfloat(ks, &k, f, &by),
        Write::Expire(c) => expiry::expire(ks, c),
        Write::Persist(k) => expiry::persist(ks, &k),
        Write::Cmd(c) => crate::sm::apply_write(ks, c),
    }
}

/// Answers a read command (`args` with the name) judged at `now`.
pub fn read(ks: &Keyspace, args: &[Vec<u8>], now: u64) -> Value {
    let Some(first) = args.first() else { return Value::err("ERR empty command") };
    let name = String::from_utf8_lossy(first).to_ascii_uppercase();
    let Some(spec) = spec(&name).filter(|s| !s.write) else {
        return crate::commands::unknown_command(first, &args[1..]);
    };
    if !arity_ok(spec, args.len()) {
        return arity_error(&name);
    }
    let a = &args[1..];
    match name.as_str() {
        "GET" => strings::get(ks, &a[0], now),
        "MGET" => strings::mget(ks, a, now),
        "EXISTS" => strings::exists(ks, a, now),
        "STRLEN" => strings::strlen(ks, &a[0], now),
        "TYPE" => strings::type_of(ks, &a[0], now),
        "TTL" => expiry::ttl(ks, &a[0], now, false, false),
        "PTTL" => expiry::ttl(ks, &a[0], now, true, false),
        "EXPIRETIME" => expiry::ttl(ks, &a[0], now, false, true),
        "PEXPIRETIME" => expiry::ttl(ks, &a[0], now, true, true),
        "PING" if a.is_empty() => Value::Simple("PONG".into()),
        "PING" if a.len() == 1 => Value::bulk(a[0].clone()),
        "PING" => arity_error("ping"),
        "ECHO" => Value::bulk(a[0].clone()),
        _ => hashes::read(ks, &name, a, now).unwrap_or_else(|| crate::commands::unknown_command(first, a)),
    }
}

/// Runs any command of [`SPECS`] at the apply time (a transaction's commands).
pub fn run(ks: &mut Keyspace, args: &[Vec<u8>]) -> Value {
    let name = args.first().map(|n| String::from_utf8_lossy(n).to_ascii_uppercase()).unwrap_or_default();
    match spec(&name) {
        Some(s) if s.write => match parse_write(args) {
            Ok(w) => apply(ks, w),
            Err(e) => e,
        },
        _ => {
            let now = ks.now();
            read(ks, args, now)
        }
    }
}

/// The operation of one of the commands this module routes (`name` upper case, `args`
/// with the name): a read of the key's shard, or a write proposed there. Syntax errors are
/// answered here, before anything is proposed. `None` for another command.
pub fn single_op(node: &Node, name: &str, args: &[Vec<u8>]) -> Option<Result<Op, Value>> {
    if !ROUTED.contains(&name) {
        return None;
    }
    let spec = spec(name)?;
    if !arity_ok(spec, args.len()) {
        return Some(Err(arity_error(name)));
    }
    let group = node.group_of(&args[1]);
    if !spec.write {
        return Some(Ok(Op::Read { group, q: ReadQ::Cmd(args.to_vec()) }));
    }
    Some(parse_write(args).map(|w| {
        let cmd = match w {
            // A plain SET keeps its older, shorter log encoding.
            Write::Set(SetCmd { key, val, cond, expire: None, get: false }) => {
                WriteCmd::Set { key, val, cond }
            }
            _ => WriteCmd::Args(args.to_vec()),
        };
        Op::write(group, cmd.encode())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &[&str]) -> Vec<Vec<u8>> {
        s.iter().map(|x| x.as_bytes().to_vec()).collect()
    }

    #[test]
    fn strict_integers_as_redis_parses_them() {
        assert_eq!(strict_i64(b"-12"), Some(-12));
        assert_eq!(strict_i64(b"0"), Some(0));
        for bad in ["+1", "01", " 1", "1 ", "", "-", "99999999999999999999", "1.0", "-0"] {
            assert_eq!(strict_i64(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn set_options_follow_redis_syntax_rules() {
        let syntax = Value::err("ERR syntax error");
        assert_eq!(parse_write(&a(&["SET", "k", "v", "EX", "10", "KEEPTTL"])), Err(syntax.clone()));
        assert_eq!(parse_write(&a(&["SET", "k", "v", "NX", "XX"])), Err(syntax.clone()));
        assert_eq!(parse_write(&a(&["SET", "k", "v", "EX", "1", "PX", "1"])), Err(syntax.clone()));
        assert_eq!(parse_write(&a(&["SET", "k", "v", "EX"])), Err(syntax.clone()));
        assert_eq!(parse_write(&a(&["GETEX", "k", "KEEPTTL"])), Err(syntax));
        assert_eq!(
            parse_write(&a(&["SET", "k", "v", "EX", "0"])),
            Err(Value::err("ERR invalid expire time in 'set' command"))
        );
        assert!(parse_write(&a(&["SET", "k", "v", "NX", "GET", "PXAT", "5", "EX", "1"])).is_err());
        assert!(parse_write(&a(&["SET", "k", "v", "nx", "get", "ex", "5", "ex", "6"])).is_ok());
    }

    #[test]
    fn a_transaction_s_reads_see_its_writes_at_the_apply_time() {
        let mut ks = Keyspace::default();
        ks.begin(1, Some(1_000));
        assert_eq!(run(&mut ks, &a(&["SET", "k", "v", "PX", "100"])), Value::ok());
        assert_eq!(run(&mut ks, &a(&["GET", "k"])), Value::bulk("v"));
        assert_eq!(run(&mut ks, &a(&["PTTL", "k"])), Value::Int(100));
        assert_eq!(run(&mut ks, &a(&["HGET", "k", "f"])), Value::err(crate::keyspace::WRONGTYPE));
        assert_eq!(run(&mut ks, &a(&["INCRBYFLOAT", "n", "1.5"])), Value::bulk("1.5"));
        ks.begin(2, Some(1_100));
        assert_eq!(run(&mut ks, &a(&["GET", "k"])), Value::Bulk(None), "expired at the apply time");
    }
}
