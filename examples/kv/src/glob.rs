//! Redis's glob-style patterns (`stringmatchlen` in Redis's util.c), as `KEYS`, `SCAN
//! MATCH` and `CONFIG GET` use them: `*` any run of bytes, `?` any one byte, `[abc]`,
//! `[^abc]` and `[a-z]` classes, `\` quoting the next byte. Matching is on bytes, optionally
//! ignoring ASCII case.
//!
//! Owns matching only. Never allocates. The work is bounded as Redis bounds its own
//! since CVE-2022-36021 and CVE-2024-31228: a `*` whose rest of the pattern matched
//! nowhere in the rest of the string ends the search (no earlier `*` can do better by
//! taking more), which keeps a pattern like `*a*a*a…b` from exponential time; and at most
//! [`MAX_NESTING`] `*` deep (a deeper match is no match), which bounds the recursion, so a
//! long pattern cannot overflow a thread's stack.

/// The most `*` a match recurses through (Redis's limit): past it, no match.
pub const MAX_NESTING: u32 = 1000;

/// Whether `s` matches the Redis glob `p` (ASCII case ignored when `nocase`).
pub fn matches(p: &[u8], s: &[u8], nocase: bool) -> bool {
    let mut skip_longer = false;
    match_from(p, s, nocase, &mut skip_longer, 0)
}

/// `matches`, `nesting` stars deep; sets `skip_longer` once the rest of the pattern after a
/// `*` matched nowhere in the rest of the string.
fn match_from(p: &[u8], s: &[u8], nocase: bool, skip_longer: &mut bool, nesting: u32) -> bool {
    if nesting > MAX_NESTING {
        return false;
    }
    let eq = |a: u8, b: u8| if nocase { a.eq_ignore_ascii_case(&b) } else { a == b };
    let (mut p, mut s) = (p, s);
    while !p.is_empty() && !s.is_empty() {
        match p[0] {
            b'*' => {
                while p.len() > 1 && p[1] == b'*' {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                while !s.is_empty() {
                    if match_from(&p[1..], s, nocase, skip_longer, nesting + 1) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    s = &s[1..];
                }
                // The rest matched from nowhere in the rest of the string: an earlier `*`
                // taking more would only start it later.
                *skip_longer = true;
                return false;
            }
            b'?' => s = &s[1..],
            b'[' => {
                p = &p[1..];
                let not = p.first() == Some(&b'^');
                if not {
                    p = &p[1..];
                }
                let mut hit = false;
                loop {
                    match p {
                        [b'\\', q, ..] => {
                            p = &p[1..];
                            if *q == s[0] {
                                hit = true;
                            }
                        }
                        [b']', ..] => break,
                        [] => break,
                        [a, b'-', b, ..] => {
                            let (mut lo, mut hi) = (*a, *b);
                            if lo > hi {
                                std::mem::swap(&mut lo, &mut hi);
                            }
                            let mut c = s[0];
                            if nocase {
                                lo = lo.to_ascii_lowercase();
                                hi = hi.to_ascii_lowercase();
                                c = c.to_ascii_lowercase();
                            }
                            p = &p[2..];
                            if (lo..=hi).contains(&c) {
                                hit = true;
                            }
                        }
                        [a, ..] => {
                            if eq(*a, s[0]) {
                                hit = true;
                            }
                        }
                    }
                    if p.is_empty() {
                        break;
                    }
                    p = &p[1..];
                }
                if not {
                    hit = !hit;
                }
                if !hit {
                    return false;
                }
                s = &s[1..];
                // `p` is at the `]` (or exhausted); the step below moves past it.
                if p.is_empty() {
                    return s.is_empty();
                }
            }
            c => {
                let c = if c == b'\\' && p.len() >= 2 {
                    p = &p[1..];
                    p[0]
                } else {
                    c
                };
                if !eq(c, s[0]) {
                    return false;
                }
                s = &s[1..];
            }
        }
        p = &p[1..];
        if s.is_empty() {
            while p.first() == Some(&b'*') {
                p = &p[1..];
            }
            break;
        }
    }
    p.is_empty() && s.is_empty()
}

/// Whether a key is taken by KEYS or SCAN MATCH `pattern`: Redis takes every key for `*`
/// without matching (the empty key too), else matches the glob, case-sensitive.
pub fn key_matches(pattern: &[u8], key: &[u8]) -> bool {
    pattern == b"*" || matches(pattern, key, false)
}

#[cfg(test)]
mod tests {
    use super::{matches, MAX_NESTING};

    /// The cases of Redis's own util.c tests and its KEYS documentation.
    #[test]
    fn redis_glob_cases() {
        let yes = |p: &str, s: &str| assert!(matches(p.as_bytes(), s.as_bytes(), false), "{p} ~ {s}");
        let no = |p: &str, s: &str| assert!(!matches(p.as_bytes(), s.as_bytes(), false), "{p} !~ {s}");
        yes("h?llo", "hello");
        yes("h?llo", "hallo");
        no("h?llo", "hllo");
        yes("h*llo", "hllo");
        yes("h*llo", "heeeello");
        yes("h[ae]llo", "hello");
        no("h[ae]llo", "hillo");
        yes("h[^e]llo", "hallo");
        no("h[^e]llo", "hello");
        yes("h[a-b]llo", "hbllo");
        yes("h[b-a]llo", "hallo");
        no("h[a-b]llo", "hcllo");
        yes("h\\*llo", "h*llo");
        no("h\\*llo", "hello");
        // As in Redis's stringmatchlen, an empty string matches no non-empty pattern, not
        // even `*` (KEYS * takes every key by its own shortcut, before matching).
        no("*", "");
        assert!(super::key_matches(b"*", b""));
        yes("*", "anything");
        yes("**a", "ba");
        no("a", "");
        no("", "a");
        yes("", "");
        yes("a*", "a");
        yes("user:*:name", "user:42:name");
        no("user:*:name", "user:42:mail");
        yes("[\\]]", "]");
        assert!(matches(b"APPEND*", b"appendonly", true));
        assert!(!matches(b"APPEND*", b"appendonly", false));
        // Many stars on a long miss stay quick (collapsed runs).
        let long = "a".repeat(200);
        no(&format!("{}b", "*".repeat(50)), &long);
    }

    /// Patterns that take exponential time or overflow a stack with plain backtracking
    /// (Redis's CVE-2022-36021 and CVE-2024-31228) are answered as Redis answers them (with
    /// plain backtracking this test runs for hours or aborts on a stack overflow).
    #[test]
    fn abusive_patterns_are_bounded() {
        // Exponential with plain backtracking: 62 s for 12 stars against 40 bytes.
        let p = format!("{}b", "*a".repeat(30));
        assert!(!matches(p.as_bytes(), "a".repeat(60).as_bytes(), false));
        assert!(matches(p.as_bytes(), format!("{}b", "a".repeat(60)).as_bytes(), false));
        // Recursion as deep as the key with plain backtracking: a stack overflow.
        let key = "a".repeat(40_000);
        let deep = "*a".repeat(40_000);
        assert!(!matches(deep.as_bytes(), key.as_bytes(), false), "deeper than MAX_NESTING: no match");
        let within = "*a".repeat(MAX_NESTING as usize);
        assert!(matches(within.as_bytes(), key.as_bytes(), false));
        // Still a full matcher: the later stars find their matches.
        assert!(matches(b"*a*b*c", b"xxaxxbxxc", false));
        assert!(!matches(b"*a*b*c", b"xxaxxcxxb", false));
        assert!(matches(b"*ab*ab", b"abab", false));
        assert!(matches(b"a*b*", b"ab", false));
    }
}
