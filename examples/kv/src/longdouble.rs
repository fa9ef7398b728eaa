//! The x87 80-bit `long double` arithmetic of Redis's INCRBYFLOAT and HINCRBYFLOAT, in
//! software: parsing as `strtold` does (decimal, `inf`/`infinity`; round to nearest, even
//! on ties), one rounded addition, and the text `ld2string(..., LD_STR_HUMAN)` writes
//! (`%.17Lf` with trailing zeros and a trailing dot removed, `-0` written `0`), so replies
//! match a Redis built for x86-64 digit for digit.
//!
//! Owns numbers only; never touches the data. Not supported (answered as not a float):
//! subnormal magnitudes (below 2^-16382).

use num_bigint::{BigInt, BigUint, Sign};
use num_traits::{One, ToPrimitive, Zero};

/// Redis's longest float text (`MAX_LONG_DOUBLE_CHARS`).
const MAX_CHARS: usize = 5 * 1024;
/// Largest binary exponent of a finite value's top bit.
const MAX_EXP: i64 = 16383;
/// Smallest binary exponent of a normal value's top bit.
const MIN_EXP: i64 = -16382;

/// A finite 80-bit long double (`mant * 2^exp`, 64-bit mantissa with its top bit set, or
/// zero), or an infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongDouble {
    /// A finite value.
    Finite {
        /// Negative (also for -0).
        neg: bool,
        /// The 64-bit mantissa (0 for zero).
        mant: u64,
        /// Its power of two.
        exp: i64,
    },
    /// Plus or minus infinity (`true`: negative).
    Inf(bool),
}

impl LongDouble {
    /// Zero.
    pub const ZERO: LongDouble = LongDouble::Finite { neg: false, mant: 0, exp: 0 };

    /// Whether it is infinite.
    pub fn is_inf(&self) -> bool {
        matches!(self, LongDouble::Inf(_))
    }
}

/// Rounds `n * 2^exp` (n > 0) to 64 bits, ties to even; `None` past the finite range.
fn round(neg: bool, n: &BigUint, exp: i64, sticky: bool) -> Option<LongDouble> {
    let bits = n.bits() as i64;
    let (mant, e) = if bits <= 64 {
        // Exact (sticky bits were below the last of `n`: bits <= 64 only when unshifted).
        ((n << (64 - bits) as usize).to_u64()?, exp - (64 - bits))
    } else {
        let shift = (bits - 64) as usize;
        let q: BigUint = n >> shift;
        let rem: BigUint = n - (&q << shift);
        let half: BigUint = BigUint::one() << (shift - 1);
        let up = rem > half || (rem == half && (sticky || q.bit(0)));
        let q = if up { q + 1u32 } else { q };
        if q.bits() > 64 {
            ((q >> 1usize).to_u64()?, exp + shift as i64 + 1)
        } else {
            (q.to_u64()?, exp + shift as i64)
        }
    };
    let top = e + 63;
    if top > MAX_EXP {
        return Some(LongDouble::Inf(neg));
    }
    if top < MIN_EXP {
        return None;
    }
    Some(LongDouble::Finite { neg, mant, exp: e })
}

/// Parses `s` as Redis's `string2ld` does (`strtold` on the whole text, no leading space,
/// no NaN, no overflow or underflow); `None` when it is not a valid float.
pub fn parse(s: &[u8]) -> Option<LongDouble> {
    if s.is_empty() || s.len() >= MAX_CHARS {
        return None;
    }
    let (neg, body) = match s[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    if lower == b"inf" || lower == b"infinity" {
        return Some(LongDouble::Inf(neg));
    }
    if let Some(hex) = lower.strip_prefix(b"0x") {
        return parse_hex(neg, hex);
    }
    let mut digits = BigUint::zero();
    let (mut any, mut scale, mut i) = (false, 0i64, 0);
    let mut seen_dot = false;
    while i < body.len() {
        match body[i] {
            c @ b'0'..=b'9' => {
                digits = digits * 10u32 + (c - b'0') as u32;
                any = true;
                if seen_dot {
                    scale -= 1;
                }
            }
            b'.' if !seen_dot => seen_dot = true,
            _ => break,
        }
        i += 1;
    }
    if !any {
        return None;
    }
    if i < body.len() {
        if body[i] != b'e' && body[i] != b'E' {
            return None;
        }
        let e = std::str::from_utf8(&body[i + 1..]).ok()?;
        let digits_only = e.strip_prefix(['+', '-']).unwrap_or(e);
        if digits_only.is_empty() || !digits_only.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        scale += e.parse::<i64>().ok().filter(|x| x.abs() < 100_000)?;
    }
    if digits.is_zero() {
        return Some(LongDouble::Finite { neg, mant: 0, exp: 0 });
    }
    // Values far outside the range need no big powers: they over- or underflow.
    let mag = digits.bits() as i64 + scale * 10 / 3;
    if !(-20_000..=20_000).contains(&mag) {
        return None;
    }
    let v = if scale >= 0 {
        round(neg, &(digits * BigUint::from(10u32).pow(scale as u32)), 0, false)?
    } else {
        let p = BigUint::from(10u32).pow((-scale) as u32);
        let s = (66 + p.bits() as i64 - digits.bits() as i64).max(0) as usize;
        let num: BigUint = digits << s;
        let (q, r) = (&num / &p, &num % &p);
        round(neg, &q, -(s as i64), !r.is_zero())?
    };
    match v {
        LongDouble::Inf(_) => None,
        v => Some(v),
    }
}

/// A hexadecimal float after `0x` (`hh[.hh][p[+-]dd]`), as `strtold` reads it.
fn parse_hex(neg: bool, s: &[u8]) -> Option<LongDouble> {
    let (mut digits, mut any, mut scale, mut seen_dot, mut i) = (BigUint::zero(), false, 0i64, false, 0);
    while i < s.len() {
        match s[i] {
            c if c.is_ascii_hexdigit() => {
                digits = (digits << 4usize) + (c as char).to_digit(16)?;
                any = true;
                if seen_dot {
                    scale -= 4;
                }
            }
            b'.' if !seen_dot => seen_dot = true,
            _ => break,
        }
        i += 1;
    }
    if !any {
        return None;
    }
    if i < s.len() {
        if s[i] != b'p' {
            return None;
        }
        let e = std::str::from_utf8(&s[i + 1..]).ok()?;
        let digits_only = e.strip_prefix(['+', '-']).unwrap_or(e);
        if digits_only.is_empty() || !digits_only.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        scale += e.parse::<i64>().ok().filter(|x| x.abs() < 100_000)?;
    }
    if digits.is_zero() {
        return Some(LongDouble::Finite { neg, mant: 0, exp: 0 });
    }
    match round(neg, &digits, scale, false)? {
        LongDouble::Inf(_) => None,
        v => Some(v),
    }
}

fn signed(v: LongDouble) -> (BigInt, i64) {
    match v {
        LongDouble::Finite { neg, mant, exp } => {
            (BigInt::from_biguint(if neg { Sign::Minus } else { Sign::Plus }, BigUint::from(mant)), exp)
        }
        LongDouble::Inf(_) => (BigInt::zero(), 0),
    }
}

/// `a + b` rounded to a long double (NaN, from opposite infinities, is `None`).
pub fn add(a: LongDouble, b: LongDouble) -> Option<LongDouble> {
    match (a, b) {
        (LongDouble::Inf(x), LongDouble::Inf(y)) if x != y => return None,
        (LongDouble::Inf(x), _) | (_, LongDouble::Inf(x)) => return Some(LongDouble::Inf(x)),
        _ => {}
    }
    let ((x, ex), (y, ey)) = (signed(a), signed(b));
    if x.is_zero() && y.is_zero() {
        let both_neg =
            matches!((a, b), (LongDouble::Finite { neg: true, .. }, LongDouble::Finite { neg: true, .. }));
        return Some(LongDouble::Finite { neg: both_neg, mant: 0, exp: 0 });
    }
    if x.is_zero() {
        return Some(b);
    }
    if y.is_zero() {
        return Some(a);
    }
    let e = ex.min(ey);
    let sum: BigInt = (x << (ex - e) as usize) + (y << (ey - e) as usize);
    if sum.is_zero() {
        return Some(LongDouble::ZERO);
    }
    let neg = sum.sign() == Sign::Minus;
    // An exact sum below the normal range is refused like an underflow.
    round(neg, sum.magnitude(), e, false)
}

/// Redis's text of a long double in human form (`ld2string`'s `LD_STR_HUMAN`).
pub fn to_human(v: LongDouble) -> String {
    let (neg, mant, exp) = match v {
        LongDouble::Inf(n) => return if n { "-inf".into() } else { "inf".into() },
        LongDouble::Finite { neg, mant, exp } => (neg, mant, exp),
    };
    let x: BigUint = BigUint::from(mant) * BigUint::from(10u32).pow(17);
    let q = if exp >= 0 {
        x << exp as usize
    } else {
        let s = (-exp) as usize;
        let q: BigUint = &x >> s;
        let rem: BigUint = &x - (&q << s);
        let half: BigUint = BigUint::one() << (s - 1);
        if rem > half || (rem == half && q.bit(0)) {
            q + 1u32
        } else {
            q
        }
    };
    let mut digits = q.to_string();
    if digits.len() < 18 {
        digits = format!("{}{digits}", "0".repeat(18 - digits.len()));
    }
    let (int, frac) = digits.split_at(digits.len() - 17);
    let frac = frac.trim_end_matches('0');
    let mut out = String::with_capacity(digits.len() + 2);
    if neg {
        out.push('-');
    }
    out.push_str(int);
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    if out == "-0" {
        out = "0".into();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incr(cur: &str, by: &str) -> Option<String> {
        let v = add(parse(cur.as_bytes())?, parse(by.as_bytes())?)?;
        (!v.is_inf()).then(|| to_human(v))
    }

    /// Figures from redis-server 7.0.15 on x86-64 (`redis-cli INCRBYFLOAT`).
    #[test]
    fn sums_print_as_redis_prints_them() {
        assert_eq!(incr("10.5", "0.1").as_deref(), Some("10.6"));
        assert_eq!(incr("10.6", "3.0e3").as_deref(), Some("3010.60000000000000009"));
        assert_eq!(
            incr("3010.60000000000000009", "5.0e200").as_deref(),
            Some(
                "500000000000000000003993901533043142390515524472867692134612609972144053361928316382483148\
                 057820177406268876638904053604256569029866671360574436328338355712526437350181689439455100\
                 285339542386678693888"
            )
        );
        assert_eq!(incr("0", "-0").as_deref(), Some("0"));
        assert_eq!(incr("1", "-1.00000000000000000001").as_deref(), Some("0"));
        assert_eq!(incr("1.5", "1").as_deref(), Some("2.5"));
        assert_eq!(incr("1e400", "1").map(|s| s.len()), Some(401));
        assert_eq!(incr("5", "-7.25").as_deref(), Some("-2.25"));
        assert_eq!(incr("0", "0x10").as_deref(), Some("16"));
        assert_eq!(incr("0", "-0X1.8p1").as_deref(), Some("-3"));
    }

    #[test]
    fn what_strtold_refuses_or_overflows_is_not_a_float() {
        for bad in ["nan", "abc", " 1", "1 ", "", "1e", "5e4932", "1e-5000", ".", "--1", "0x", "0x1p", "0xg"]
        {
            assert_eq!(parse(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(parse(b"inf"), Some(LongDouble::Inf(false)));
        assert_eq!(parse(b"-Infinity"), Some(LongDouble::Inf(true)));
        assert!(parse(b".5").is_some() && parse(b"5.").is_some() && parse(b"+1E+3").is_some());
        assert_eq!(add(LongDouble::Inf(true), LongDouble::Inf(false)), None);
    }
}
