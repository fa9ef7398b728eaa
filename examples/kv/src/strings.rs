//! The string commands on a shard's [`Keyspace`]: reads judged at a given clock, writes at
//! the apply time, and the option syntax of SET, SETEX/PSETEX and GETEX, with Redis 7.0's
//! replies and errors (`WRONGTYPE` on a hash).
//!
//! Owns string semantics only; never routes, never encodes log entries (see
//! [`crate::keycmd`] and [`crate::sm`]).

use crate::expiry::{set_style_expire, ExpireArg};
use crate::keyspace::{Keyspace, Val, WRONGTYPE};
use crate::longdouble;
use crate::resp::Value;

/// SET's expiry option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetExpire {
    /// KEEPTTL.
    Keep,
    /// EX/PX/EXAT/PXAT.
    At(ExpireArg),
}

/// A parsed SET (or SETEX/PSETEX).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCmd {
    /// Key.
    pub key: Vec<u8>,
    /// Value.
    pub val: Vec<u8>,
    /// 0: always, 1: NX, 2: XX.
    pub cond: u8,
    /// Expiry option.
    pub expire: Option<SetExpire>,
    /// GET: answer the old value.
    pub get: bool,
}

/// GETEX's change of the expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetExChange {
    /// EX/PX/EXAT/PXAT.
    At(ExpireArg),
    /// PERSIST.
    Persist,
}

fn syntax() -> Value {
    Value::err("ERR syntax error")
}

fn is(o: &[u8], name: &str) -> bool {
    o.eq_ignore_ascii_case(name.as_bytes())
}

/// Parses `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]` (`args` from
/// the key on) with Redis 7.0's rules (`parseExtendedStringArgumentsOrReply`), or GETEX's
/// options when `getex` (then only EX/PX/EXAT/PXAT/PERSIST).
fn parse_opts(
    opts: &[Vec<u8>],
    getex: bool,
    cmd: &str,
) -> Result<(u8, Option<SetExpire>, bool, bool), Value> {
    let (mut cond, mut exp, mut get, mut persist) = (0u8, None::<(bool, bool, Vec<u8>)>, false, false);
    let mut keep = false;
    let mut j = 0;
    while j < opts.len() {
        let o = &opts[j];
        let next = opts.get(j + 1);
        let has_exp = exp.is_some();
        if is(o, "NX") && cond != 2 && !getex {
            cond = 1;
        } else if is(o, "XX") && cond != 1 && !getex {
            cond = 2;
        } else if is(o, "GET") && !getex {
            get = true;
        } else if is(o, "KEEPTTL") && !persist && !has_exp && !getex {
            keep = true;
        } else if is(o, "PERSIST") && getex && !has_exp && !keep {
            persist = true;
        } else if let (Some(n), Some((secs, abs))) = (next, unit(o)) {
            // The same option again is allowed (the last one counts), another is not.
            if keep || persist || exp.as_ref().is_some_and(|(s, a, _)| (*s, *a) != (secs, abs)) {
                return Err(syntax());
            }
            exp = Some((secs, abs, n.clone()));
            j += 1;
        } else {
            return Err(syntax());
        }
        j += 1;
    }
    let expire = match exp {
        Some((secs, abs, n)) => Some(SetExpire::At(set_style_expire(&n, secs, abs, cmd)?)),
        None if keep => Some(SetExpire::Keep),
        None => None,
    };
    Ok((cond, expire, get, persist))
}

/// EX, PX, EXAT, PXAT: (in seconds, absolute).
fn unit(o: &[u8]) -> Option<(bool, bool)> {
    [("EX", true, false), ("PX", false, false), ("EXAT", true, true), ("PXAT", false, true)]
        .into_iter()
        .find(|(n, ..)| is(o, n))
        .map(|(_, s, a)| (s, a))
}

/// Parses SET's arguments after the name.
pub fn parse_set(args: &[Vec<u8>]) -> Result<SetCmd, Value> {
    let [key, val, opts @ ..] = args else { return Err(crate::keycmd::arity_error("set")) };
    let (cond, expire, get, _) = parse_opts(opts, false, "set")?;
    Ok(SetCmd { key: key.clone(), val: val.clone(), cond, expire, get })
}

/// Parses SETEX/PSETEX's arguments after the name (`key seconds value`).
pub fn parse_setex(args: &[Vec<u8>], secs: bool) -> Result<SetCmd, Value> {
    let cmd = if secs { "setex" } else { "psetex" };
    let [key, t, val] = args else { return Err(crate::keycmd::arity_error(cmd)) };
    let at = set_style_expire(t, secs, false, cmd)?;
    Ok(SetCmd { key: key.clone(), val: val.clone(), cond: 0, expire: Some(SetExpire::At(at)), get: false })
}

/// Parses GETEX's arguments after the name.
pub fn parse_getex(args: &[Vec<u8>]) -> Result<(Vec<u8>, Option<GetExChange>), Value> {
    let [key, opts @ ..] = args else { return Err(crate::keycmd::arity_error("getex")) };
    let (_, expire, _, persist) = parse_opts(opts, true, "getex")?;
    let change = match expire {
        Some(SetExpire::At(a)) => Some(GetExChange::At(a)),
        _ if persist => Some(GetExChange::Persist),
        _ => None,
    };
    Ok((key.clone(), change))
}

/// The string value of `key` judged at `now`: `Ok(None)` when absent, `Err` WRONGTYPE.
pub fn string_at<'a>(ks: &'a Keyspace, key: &[u8], now: u64) -> Result<Option<&'a Vec<u8>>, Value> {
    match ks.get(key, now).map(|e| &e.val) {
        None => Ok(None),
        Some(Val::Str(v)) => Ok(Some(v)),
        Some(_) => Err(Value::err(WRONGTYPE)),
    }
}

/// GET.
pub fn get(ks: &Keyspace, key: &[u8], now: u64) -> Value {
    match string_at(ks, key, now) {
        Ok(v) => Value::Bulk(v.cloned()),
        Err(e) => e,
    }
}

/// MGET (a key of another type answers nil, as in Redis).
pub fn mget(ks: &Keyspace, keys: &[Vec<u8>], now: u64) -> Value {
    Value::Array(Some(
        keys.iter().map(|k| Value::Bulk(string_at(ks, k, now).ok().flatten().cloned())).collect(),
    ))
}

/// EXISTS.
pub fn exists(ks: &Keyspace, keys: &[Vec<u8>], now: u64) -> Value {
    Value::Int(keys.iter().filter(|k| ks.get(k, now).is_some()).count() as i64)
}

/// STRLEN.
pub fn strlen(ks: &Keyspace, key: &[u8], now: u64) -> Value {
    match string_at(ks, key, now) {
        Ok(v) => Value::Int(v.map_or(0, |v| v.len() as i64)),
        Err(e) => e,
    }
}

/// TYPE.
pub fn type_of(ks: &Keyspace, key: &[u8], now: u64) -> Value {
    Value::Simple(ks.get(key, now).map_or("none", |e| e.val.type_name()).into())
}

/// The live string at the apply time for a write: `Err` WRONGTYPE.
fn live_string(ks: &mut Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, Value> {
    match ks.live(key).map(|e| &e.val) {
        None => Ok(None),
        Some(Val::Str(v)) => Ok(Some(v.clone())),
        Some(_) => Err(Value::err(WRONGTYPE)),
    }
}

/// SET with its options, at the apply time.
pub fn set(ks: &mut Keyspace, c: SetCmd) -> Value {
    let at = match c.expire {
        Some(SetExpire::At(a)) => match a.resolve(ks.now()) {
            Some(t) => Some(t.max(0) as u64),
            None => return crate::expiry::invalid_expire("set"),
        },
        _ => None,
    };
    let old = if c.get {
        match live_string(ks, &c.key) {
            Ok(v) => Some(v),
            Err(e) => return e,
        }
    } else {
        None
    };
    // Only NX and XX look: `put` removes an expired key itself.
    let found = c.cond != 0 && ks.live(&c.key).is_some();
    let reply = |old: Option<Option<Vec<u8>>>| match old {
        Some(v) => Value::Bulk(v),
        None => Value::ok(),
    };
    if (c.cond == 1 && found) || (c.cond == 2 && !found) {
        return Value::Bulk(old.flatten());
    }
    if c.expire == Some(SetExpire::Keep) {
        ks.put_keep_ttl(c.key, Val::Str(c.val));
    } else {
        ks.put(c.key, Val::Str(c.val), at);
    }
    reply(old)
}

/// GETEX.
pub fn getex(ks: &mut Keyspace, key: Vec<u8>, change: Option<GetExChange>) -> Value {
    let at = match change {
        Some(GetExChange::At(a)) => match a.resolve(ks.now()) {
            Some(t) => Some(t),
            None => return crate::expiry::invalid_expire("getex"),
        },
        _ => None,
    };
    let v = match live_string(ks, &key) {
        Ok(Some(v)) => v,
        Ok(None) => return Value::Bulk(None),
        Err(e) => return e,
    };
    match (change, at) {
        (_, Some(t)) if t <= ks.now() as i64 => {
            ks.remove(&key);
        }
        (_, Some(t)) => {
            ks.set_expire(&key, Some(t as u64));
        }
        (Some(GetExChange::Persist), _) if ks.live(&key).is_some_and(|e| e.expire_at().is_some()) => {
            ks.set_expire(&key, None);
        }
        _ => {}
    }
    Value::Bulk(Some(v))
}

/// INCRBYFLOAT: long double arithmetic and text as Redis's ([`crate::longdouble`]).
pub fn incrbyfloat(ks: &mut Keyspace, key: Vec<u8>, by: &[u8]) -> Value {
    let cur = match live_string(ks, &key) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let not_float = || Value::err("ERR value is not a valid float");
    let cur = match cur {
        None => longdouble::LongDouble::ZERO,
        Some(v) => match longdouble::parse(&v) {
            Some(x) => x,
            None => return not_float(),
        },
    };
    let Some(by) = longdouble::parse(by) else { return not_float() };
    match longdouble::add(cur, by) {
        Some(v) if !v.is_inf() => {
            let text = longdouble::to_human(v).into_bytes();
            ks.put_keep_ttl(key, Val::Str(text.clone()));
            Value::Bulk(Some(text))
        }
        _ => Value::err("ERR increment would produce NaN or Infinity"),
    }
}

/// SETNX.
pub fn setnx(ks: &mut Keyspace, key: Vec<u8>, val: Vec<u8>) -> Value {
    if ks.live(&key).is_some() {
        return Value::Int(0);
    }
    ks.put(key, Val::Str(val), None);
    Value::Int(1)
}

/// GETSET (clears the expiry, as SET does).
pub fn getset(ks: &mut Keyspace, key: Vec<u8>, val: Vec<u8>) -> Value {
    match live_string(ks, &key) {
        Ok(old) => {
            ks.put(key, Val::Str(val), None);
            Value::Bulk(old)
        }
        Err(e) => e,
    }
}

/// GETDEL.
pub fn getdel(ks: &mut Keyspace, key: &[u8]) -> Value {
    match live_string(ks, key) {
        Ok(Some(v)) => {
            ks.remove(key);
            Value::Bulk(Some(v))
        }
        Ok(None) => Value::Bulk(None),
        Err(e) => e,
    }
}

/// APPEND: the new length (keeps the expiry).
pub fn append(ks: &mut Keyspace, key: Vec<u8>, val: &[u8]) -> Value {
    match live_string(ks, &key) {
        Ok(old) => {
            let mut v = old.unwrap_or_default();
            v.extend_from_slice(val);
            let n = v.len() as i64;
            ks.put_keep_ttl(key, Val::Str(v));
            Value::Int(n)
        }
        Err(e) => e,
    }
}

/// INCRBY (keeps the expiry).
pub fn incr(ks: &mut Keyspace, key: Vec<u8>, by: i64) -> Value {
    let cur = match live_string(ks, &key) {
        Ok(None) => 0,
        Ok(Some(v)) => match crate::keycmd::strict_i64(&v) {
            Some(n) => n,
            None => return Value::err("ERR value is not an integer or out of range"),
        },
        Err(e) => return e,
    };
    match cur.checked_add(by) {
        Some(n) => {
            ks.put_keep_ttl(key, Val::Str(n.to_string().into_bytes()));
            Value::Int(n)
        }
        None => Value::err("ERR increment or decrement would overflow"),
    }
}

/// DEL (any type).
pub fn del(ks: &mut Keyspace, keys: &[Vec<u8>]) -> Value {
    Value::Int(keys.iter().filter(|k| ks.remove(k).is_some()).count() as i64)
}

/// MSET (clears expiries, as SET does).
pub fn mset(ks: &mut Keyspace, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Value {
    for (k, v) in pairs {
        ks.put(k, Val::Str(v), None);
    }
    Value::ok()
}
