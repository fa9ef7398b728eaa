//! The hash commands on a shard's [`Keyspace`]: HSET/HMSET/HSETNX, HGET, HMGET, HDEL,
//! HGETALL, HLEN, HEXISTS, HKEYS, HVALS, HSTRLEN, HINCRBY, HINCRBYFLOAT, with Redis 7.0's
//! replies and errors (`WRONGTYPE` on a string; a hash whose last field goes is removed).
//!
//! Owns hash semantics only; never routes, never encodes log entries.

use crate::keyspace::{Fields, Keyspace, Val, WRONGTYPE};
use crate::longdouble;
use crate::resp::Value;

/// What HSET-like commands answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HSetReply {
    /// HSET: the number of fields added.
    Added,
    /// HMSET: OK.
    Ok,
    /// HSETNX: 1 if set, 0 if the field existed (and nothing changes).
    Nx,
}

fn hash_at<'a>(ks: &'a Keyspace, key: &[u8], now: u64) -> Result<Option<&'a Fields>, Value> {
    match ks.get(key, now).map(|e| &e.val) {
        None => Ok(None),
        Some(Val::Hash(h)) => Ok(Some(h)),
        Some(_) => Err(Value::err(WRONGTYPE)),
    }
}

/// The hash of `key` for a write at the apply time, created empty when absent (and removed
/// again by [`finish`] if it stays empty). `Err` WRONGTYPE.
fn hash_mut<'a>(ks: &'a mut Keyspace, key: &[u8]) -> Result<&'a mut Fields, Value> {
    match ks.live(key).map(|e| &e.val) {
        // Checked before taking it for writing: a refused write leaves the key unmodified
        // (WATCH sees no change).
        Some(Val::Hash(_)) => {}
        Some(_) => return Err(Value::err(WRONGTYPE)),
        None => ks.put(key.to_vec(), Val::Hash(Fields::new()), None),
    }
    match ks.get_mut(key) {
        Some(Val::Hash(h)) => Ok(h),
        _ => Err(Value::err(WRONGTYPE)),
    }
}

/// Removes the key of a hash left empty.
fn finish(ks: &mut Keyspace, key: &[u8]) {
    if matches!(ks.live(key).map(|e| &e.val), Some(Val::Hash(h)) if h.is_empty()) {
        ks.remove(key);
    }
}

/// HSET / HMSET / HSETNX.
pub fn hset(ks: &mut Keyspace, key: &[u8], pairs: Vec<(Vec<u8>, Vec<u8>)>, reply: HSetReply) -> Value {
    let h = match hash_mut(ks, key) {
        Ok(h) => h,
        Err(e) => return e,
    };
    let mut added = 0;
    for (f, v) in pairs {
        if reply == HSetReply::Nx && h.contains_key(&f) {
            return Value::Int(0);
        }
        if h.insert(f, v).is_none() {
            added += 1;
        }
    }
    match reply {
        HSetReply::Added => Value::Int(added),
        HSetReply::Ok => Value::ok(),
        HSetReply::Nx => Value::Int(1),
    }
}

/// HDEL: the number of fields removed.
pub fn hdel(ks: &mut Keyspace, key: &[u8], fields: &[Vec<u8>]) -> Value {
    let n = match ks.live(key).map(|e| &e.val) {
        None => return Value::Int(0),
        Some(Val::Hash(h)) => fields.iter().filter(|f| h.contains_key(*f)).count(),
        Some(_) => return Value::err(WRONGTYPE),
    };
    if n > 0 {
        if let Some(Val::Hash(h)) = ks.get_mut(key) {
            for f in fields {
                h.shift_remove(f);
            }
        }
        finish(ks, key);
    }
    Value::Int(n as i64)
}

/// HINCRBY.
pub fn hincrby(ks: &mut Keyspace, key: &[u8], field: Vec<u8>, by: i64) -> Value {
    let h = match hash_mut(ks, key) {
        Ok(h) => h,
        Err(e) => return e,
    };
    let cur = match h.get(&field) {
        None => 0,
        Some(v) => match crate::keycmd::strict_i64(v) {
            Some(n) => n,
            None => {
                finish(ks, key);
                return Value::err("ERR hash value is not an integer");
            }
        },
    };
    let Some(n) = cur.checked_add(by) else {
        finish(ks, key);
        return Value::err("ERR increment or decrement would overflow");
    };
    h.insert(field, n.to_string().into_bytes());
    Value::Int(n)
}

/// HINCRBYFLOAT (long double arithmetic as Redis's, [`crate::longdouble`]).
pub fn hincrbyfloat(ks: &mut Keyspace, key: &[u8], field: Vec<u8>, by: &[u8]) -> Value {
    let Some(by) = longdouble::parse(by) else { return Value::err("ERR value is not a valid float") };
    if by.is_inf() {
        return Value::err("ERR value is NaN or Infinity");
    }
    let h = match hash_mut(ks, key) {
        Ok(h) => h,
        Err(e) => return e,
    };
    let cur = match h.get(&field) {
        None => longdouble::LongDouble::ZERO,
        Some(v) => match longdouble::parse(v) {
            Some(x) => x,
            None => {
                finish(ks, key);
                return Value::err("ERR hash value is not a float");
            }
        },
    };
    match longdouble::add(cur, by) {
        Some(v) if !v.is_inf() => {
            let text = longdouble::to_human(v).into_bytes();
            h.insert(field, text.clone());
            Value::Bulk(Some(text))
        }
        _ => {
            finish(ks, key);
            Value::err("ERR increment would produce NaN or Infinity")
        }
    }
}

/// The read-only hash commands judged at `now` (`name` upper case, `args` after it; the
/// arity is checked by the caller). `None` for another command.
pub fn read(ks: &Keyspace, name: &str, args: &[Vec<u8>], now: u64) -> Option<Value> {
    let key = args.first()?;
    let h = match hash_at(ks, key, now) {
        Ok(h) => h,
        Err(e) => return Some(e),
    };
    let field = |i: usize| args.get(i).and_then(|f| h.and_then(|h| h.get(f)));
    let all = |f: &dyn Fn(&Vec<u8>, &Vec<u8>) -> Value| -> Vec<Value> {
        h.map(|h| h.iter().map(|(k, v)| f(k, v)).collect()).unwrap_or_default()
    };
    Some(match name {
        "HGET" => Value::Bulk(field(1).cloned()),
        "HMGET" => Value::Array(Some((1..args.len()).map(|i| Value::Bulk(field(i).cloned())).collect())),
        "HLEN" => Value::Int(h.map_or(0, |h| h.len() as i64)),
        "HEXISTS" => Value::Int(i64::from(field(1).is_some())),
        "HSTRLEN" => Value::Int(field(1).map_or(0, |v| v.len() as i64)),
        "HKEYS" => Value::Array(Some(all(&|k, _| Value::bulk(k.clone())))),
        "HVALS" => Value::Array(Some(all(&|_, v| Value::bulk(v.clone())))),
        "HGETALL" => Value::Map(
            h.map(|h| h.iter().map(|(k, v)| (Value::bulk(k.clone()), Value::bulk(v.clone()))).collect())
                .unwrap_or_default(),
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn hashes_follow_redis_semantics() {
        let mut ks = Keyspace::default();
        ks.begin(1, Some(1));
        let pairs = vec![(b("f"), b("1")), (b("g"), b("x")), (b("f"), b("2"))];
        assert_eq!(hset(&mut ks, b"h", pairs, HSetReply::Added), Value::Int(2));
        assert_eq!(hset(&mut ks, b"h", vec![(b("f"), b("3"))], HSetReply::Nx), Value::Int(0));
        assert_eq!(read(&ks, "HGET", &[b("h"), b("f")], 1), Some(Value::bulk("2")));
        assert_eq!(hincrby(&mut ks, b"h", b("f"), 5), Value::Int(7));
        assert_eq!(hincrby(&mut ks, b"h", b("g"), 5), Value::err("ERR hash value is not an integer"));
        assert_eq!(hincrbyfloat(&mut ks, b"h", b("f"), b"0.5"), Value::bulk("7.5"));
        assert_eq!(
            read(&ks, "HGETALL", &[b("h")], 1),
            Some(Value::Map(vec![
                (Value::bulk("f"), Value::bulk("7.5")),
                (Value::bulk("g"), Value::bulk("x"))
            ]))
        );
        assert_eq!(hdel(&mut ks, b"h", &[b("f"), b("g"), b("z")]), Value::Int(2));
        assert_eq!(ks.len(), 0, "the last field removed removes the key");
        assert_eq!(hincrby(&mut ks, b"n", b("f"), 1), Value::Int(1));
        ks.put(b("s"), Val::Str(b("v")), None);
        assert_eq!(hset(&mut ks, b"s", vec![(b("f"), b("1"))], HSetReply::Added), Value::err(WRONGTYPE));
        assert_eq!(read(&ks, "HLEN", &[b("s")], 1), Some(Value::err(WRONGTYPE)));
        assert_eq!(hincrby(&mut ks, b"e", b("f"), i64::MAX), Value::Int(i64::MAX));
        assert!(matches!(hincrby(&mut ks, b"e", b("f"), 1), Value::Error(_)));
    }
}
