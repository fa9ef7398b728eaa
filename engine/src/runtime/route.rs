//! Routing: which worker owns a group (by its id alone, so every thread of a node agrees
//! without asking anyone).
//!
//! Owns the mixing of ids. Never looks at a group's state or load.

/// The worker owning `group` among `n`.
pub(crate) fn route(group: u64, n: usize) -> usize {
    // Mix the id so that ids with a common stride still spread over the workers.
    let mut z = group.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % n.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_in_range_and_never_divides_by_zero() {
        for g in 0..1000 {
            assert!(route(g, 3) < 3);
            assert_eq!(route(g, 1), 0);
            assert_eq!(route(g, 0), 0);
        }
    }

    #[test]
    fn ids_with_a_common_stride_spread_over_the_workers() {
        // Ids 0, 4, 8, ... would all land on one worker of 4 with `id % n`.
        let mut per = [0u32; 4];
        for k in 0..4000u64 {
            per[route(k * 4, 4)] += 1;
        }
        assert!(per.iter().all(|&c| c > 800), "uneven spread: {per:?}");
    }
}
