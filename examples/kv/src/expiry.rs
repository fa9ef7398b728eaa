//! Key expiry: EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT (NX/XX/GT/LT as Redis 7.0), PERSIST,
//! TTL/PTTL/EXPIRETIME/PEXPIRETIME, the replicated removal of expired keys, and the
//! leader's active-expire cycle that proposes it.
//!
//! Owns the time rules: relative times become absolute at apply, from the entry's stamp
//! ([`Keyspace::now`]), so every replica computes the same expiry; reads (TTL, ...) are
//! judged by the serving node's clock. An expired key is removed only by a replicated
//! [`crate::sm::WriteCmd::Purge`] entry, which removes it only if it is still expired at
//! the entry's time (a key set again meanwhile survives). Never parses RESP.

use std::sync::Weak;
use std::time::Duration;

use crate::keyspace::Keyspace;
use crate::node::Node;
use crate::resp::Value;

/// An expiry time as given: relative to the apply time, or absolute (unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireArg {
    /// Milliseconds from the apply time (EX, PX, EXPIRE, PEXPIRE).
    Rel(i64),
    /// Unix milliseconds (EXAT, PXAT, EXPIREAT, PEXPIREAT).
    Abs(i64),
}

impl ExpireArg {
    /// The absolute time at apply time `now`; `None` when it overflows.
    pub fn resolve(self, now: u64) -> Option<i64> {
        match self {
            ExpireArg::Rel(ms) => ms.checked_add(now as i64),
            ExpireArg::Abs(ms) => Some(ms),
        }
    }
}

/// Redis's `invalid expire time in '<cmd>' command`.
pub fn invalid_expire(cmd: &str) -> Value {
    Value::err(format!("ERR invalid expire time in '{cmd}' command"))
}

fn not_integer() -> Value {
    Value::err("ERR value is not an integer or out of range")
}

/// The expiry argument of SET/SETEX/GETEX (`getExpireMillisecondsOrReply`): an integer
/// above 0, in seconds or milliseconds.
pub fn set_style_expire(arg: &[u8], secs: bool, abs: bool, cmd: &str) -> Result<ExpireArg, Value> {
    let n = crate::keycmd::strict_i64(arg).ok_or_else(not_integer)?;
    if n <= 0 || (secs && n > i64::MAX / 1000) {
        return Err(invalid_expire(cmd));
    }
    let ms = if secs { n * 1000 } else { n };
    Ok(if abs { ExpireArg::Abs(ms) } else { ExpireArg::Rel(ms) })
}

/// EXPIRE's condition (Redis 7.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExpireCond {
    /// NX: only without an expiry.
    pub nx: bool,
    /// XX: only with an expiry.
    pub xx: bool,
    /// GT: only to a later expiry (none counts as infinite).
    pub gt: bool,
    /// LT: only to an earlier expiry.
    pub lt: bool,
}

/// A parsed EXPIRE-family command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpireCmd {
    /// Key.
    pub key: Vec<u8>,
    /// When.
    pub when: ExpireArg,
    /// Condition.
    pub cond: ExpireCond,
    /// The command's name (lower case) for errors.
    pub cmd: &'static str,
}

/// Parses `<name> key time [NX|XX|GT|LT ...]` (arguments after the name) as
/// `expireGenericCommand` does.
pub fn parse_expire(name: &'static str, args: &[Vec<u8>]) -> Result<ExpireCmd, Value> {
    let [key, t, opts @ ..] = args else { return Err(crate::keycmd::arity_error(name)) };
    let mut cond = ExpireCond::default();
    for o in opts {
        match o.to_ascii_uppercase().as_slice() {
            b"NX" => cond.nx = true,
            b"XX" => cond.xx = true,
            b"GT" => cond.gt = true,
            b"LT" => cond.lt = true,
            _ => return Err(Value::err(format!("ERR Unsupported option {}", String::from_utf8_lossy(o)))),
        }
    }
    if cond.nx && (cond.xx || cond.gt || cond.lt) {
        return Err(Value::err("ERR NX and XX, GT or LT options at the same time are not compatible"));
    }
    if cond.gt && cond.lt {
        return Err(Value::err("ERR GT and LT options at the same time are not compatible"));
    }
    let n = crate::keycmd::strict_i64(t).ok_or_else(not_integer)?;
    let secs = name == "expire" || name == "expireat";
    if secs && !(i64::MIN / 1000..=i64::MAX / 1000).contains(&n) {
        return Err(invalid_expire(name));
    }
    let ms = if secs { n * 1000 } else { n };
    let when = if name.ends_with("at") { ExpireArg::Abs(ms) } else { ExpireArg::Rel(ms) };
    Ok(ExpireCmd { key: key.clone(), when, cond, cmd: name })
}

/// EXPIRE and family at the apply time: 1 if the expiry was set (or the key removed, for
/// a time already past), 0 if the key is absent or the condition failed.
pub fn expire(ks: &mut Keyspace, c: ExpireCmd) -> Value {
    let now = ks.now();
    let when = match c.when {
        ExpireArg::Rel(ms) if ms > i64::MAX - now as i64 => return invalid_expire(c.cmd),
        w => w.resolve(now).unwrap_or(i64::MAX),
    };
    let Some(e) = ks.live(&c.key) else { return Value::Int(0) };
    let cur = e.expire_at().map(|t| t as i64);
    let refused = (c.cond.nx && cur.is_some())
        || (c.cond.xx && cur.is_none())
        || (c.cond.gt && cur.map_or(true, |cur| when <= cur))
        || (c.cond.lt && cur.is_some_and(|cur| when >= cur));
    if refused {
        return Value::Int(0);
    }
    if when <= now as i64 {
        ks.remove(&c.key);
    } else {
        ks.set_expire(&c.key, Some(when as u64));
    }
    Value::Int(1)
}

/// PERSIST: 1 if an expiry was removed.
pub fn persist(ks: &mut Keyspace, key: &[u8]) -> Value {
    match ks.live(key) {
        Some(e) if e.expire_at().is_some() => Value::Int(i64::from(ks.set_expire(key, None))),
        _ => Value::Int(0),
    }
}

/// TTL (`ms`: PTTL; `abs`: EXPIRETIME/PEXPIRETIME) judged at `now`: -2 when absent, -1
/// without an expiry.
pub fn ttl(ks: &Keyspace, key: &[u8], now: u64, ms: bool, abs: bool) -> Value {
    let Some(e) = ks.get(key, now) else { return Value::Int(-2) };
    let Some(at) = e.expire_at() else { return Value::Int(-1) };
    let t = if abs { at as i64 } else { (at as i64 - now as i64).max(0) };
    Value::Int(if ms { t } else { (t + 500) / 1000 })
}

/// The replicated removal of expired keys: removes each key only if it is still expired
/// at the entry's apply time; answers how many it removed.
pub fn purge(ks: &mut Keyspace, keys: &[Vec<u8>]) -> Value {
    Value::Int(keys.iter().filter(|k| ks.purge_if_expired(k)).count() as i64)
}

/// How many keys one cycle proposes to remove per shard at most (Redis's
/// `ACTIVE_EXPIRE_CYCLE_KEYS_PER_LOOP` is 20; a cycle here is one entry per shard).
pub const KEYS_PER_CYCLE: usize = 64;
/// The pause between cycles (Redis runs its cycle 10 times a second).
pub const CYCLE: Duration = Duration::from_millis(100);

/// The active-expire loop of a node: every [`CYCLE`], for each shard this node leads,
/// proposes the removal of up to [`KEYS_PER_CYCLE`] keys expired by this node's clock.
/// Returns when the node is gone.
pub fn active_expire_loop(node: Weak<Node>) {
    loop {
        std::thread::sleep(CYCLE);
        let Some(n) = node.upgrade() else { return };
        n.expire_cycle(crate::clock::now_ms(), KEYS_PER_CYCLE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::Val;

    fn args(a: &[&str]) -> Vec<Vec<u8>> {
        a.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn relative_times_become_absolute_at_the_apply_time() {
        let mut ks = Keyspace::default();
        ks.begin(1, Some(10_000));
        ks.put(b"k".to_vec(), Val::Str(vec![]), None);
        ks.begin(2, Some(20_000));
        assert_eq!(expire(&mut ks, parse_expire("expire", &args(&["k", "5"])).unwrap()), Value::Int(1));
        assert_eq!(ks.get(b"k", 0).unwrap().expire_at(), Some(25_000));
        assert_eq!(ttl(&ks, b"k", 21_000, false, false), Value::Int(4));
        assert_eq!(ttl(&ks, b"k", 21_000, true, false), Value::Int(4_000));
        assert_eq!(ttl(&ks, b"k", 25_000, false, false), Value::Int(-2), "expired by the reader's clock");
    }

    #[test]
    fn conditions_follow_redis_7() {
        let mut ks = Keyspace::default();
        ks.begin(1, Some(1_000));
        ks.put(b"k".to_vec(), Val::Str(vec![]), None);
        let run = |ks: &mut Keyspace, a: &[&str]| expire(ks, parse_expire("pexpire", &args(a)).unwrap());
        assert_eq!(run(&mut ks, &["k", "100", "XX"]), Value::Int(0));
        assert_eq!(run(&mut ks, &["k", "100", "GT"]), Value::Int(0), "no expiry is infinite for GT");
        assert_eq!(run(&mut ks, &["k", "100", "LT"]), Value::Int(1));
        assert_eq!(run(&mut ks, &["k", "200", "NX"]), Value::Int(0));
        assert_eq!(run(&mut ks, &["k", "50", "GT"]), Value::Int(0));
        assert_eq!(run(&mut ks, &["k", "200", "GT"]), Value::Int(1));
        assert_eq!(run(&mut ks, &["k", "-1"]), Value::Int(1));
        assert_eq!(ks.len(), 0, "a time already past removes the key");
        assert!(parse_expire("expire", &args(&["k", "1", "NX", "GT"])).is_err());
        assert!(parse_expire("expire", &args(&["k", "1", "GT", "LT"])).is_err());
        assert!(parse_expire("expire", &args(&["k", "1", "BAD"])).is_err());
    }

    #[test]
    fn purge_spares_a_key_set_again_meanwhile() {
        let mut ks = Keyspace::default();
        ks.begin(1, Some(1_000));
        ks.put(b"a".to_vec(), Val::Str(vec![]), Some(1_500));
        ks.put(b"b".to_vec(), Val::Str(vec![]), Some(1_500));
        ks.begin(2, Some(1_400));
        ks.put(b"b".to_vec(), Val::Str(vec![]), None);
        ks.begin(3, Some(1_600));
        assert_eq!(purge(&mut ks, &[b"a".to_vec(), b"b".to_vec()]), Value::Int(1));
        assert!(ks.get(b"b", 2_000).is_some());
    }
}
