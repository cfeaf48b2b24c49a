//! s1's diversity sampling: until the target size, pick a domain uniformly among those with
//! rows left, then a row of it with weight 2^(−rank), rank 0 being its longest trace (ties: the
//! earlier row first). Rows carrying the keep tag are always kept and count towards the target.
//! The generator is SplitMix64 seeded by the recipe, so a seed picks the same rows everywhere.

use std::collections::BTreeMap;

use crate::{Pool, StageOut, text};

pub const NOT_SAMPLED: &str = "not_sampled";

/// SplitMix64: a portable, seedable generator (one `u64` of state).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        text::mix64(self.0)
    }

    /// Uniform in `0..n` (n ≥ 1), without modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - (u64::MAX % n + 1) % n;
        loop {
            let x = self.next_u64();
            if x <= zone {
                return x % n;
            }
        }
    }

    /// A rank in `0..n` with P(rank) ∝ 2^(−rank): a geometric count of fair coin flips,
    /// redrawn when it falls past the end.
    pub fn rank(&mut self, n: usize) -> usize {
        loop {
            let r = self.next_u64().trailing_ones() as usize;
            if r < n {
                return r;
            }
        }
    }
}

/// Samples `target` rows of `input`.
pub fn run(pool: &Pool, input: &[u32], target: usize, seed: u64) -> StageOut {
    let mut selected: Vec<u32> = input
        .iter()
        .copied()
        .filter(|&r| pool.rows[r as usize].keep)
        .collect();
    // Per domain its rows in ascending (trace tokens, later row first): the last is rank 0.
    let mut pools: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for &r in input {
        let f = &pool.rows[r as usize];
        if !f.keep {
            pools.entry(f.domain).or_default().push(r);
        }
    }
    for rows in pools.values_mut() {
        rows.sort_by_key(|&r| (pool.rows[r as usize].trace_tokens, std::cmp::Reverse(r)));
    }
    let mut domains: Vec<u32> = pools.keys().copied().collect();
    let mut rng = Rng::new(seed);
    while selected.len() < target && !domains.is_empty() {
        let at = rng.below(domains.len() as u64) as usize;
        let rows = pools.get_mut(&domains[at]).expect("listed");
        let rank = rng.rank(rows.len());
        let picked = rows.remove(rows.len() - 1 - rank);
        selected.push(picked);
        if rows.is_empty() {
            domains.remove(at);
        }
    }
    selected.sort_unstable();
    let mut kept = selected.into_iter().peekable();
    let mut out = StageOut::default();
    for &r in input {
        if kept.peek() == Some(&r) {
            out.kept.push(r);
            kept.next();
        } else {
            let domain = &pool.domains[pool.rows[r as usize].domain as usize];
            out.dropped.push(crate::Dropped {
                row: r,
                rule: NOT_SAMPLED,
                detail: format!("not sampled from domain '{domain}'"),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_and_rank_stay_in_range() {
        let mut rng = Rng::new(7);
        for n in 1..50u64 {
            assert!(rng.below(n) < n);
            assert!(rng.rank(n as usize) < n as usize);
        }
        assert_eq!(Rng::new(3).next_u64(), Rng::new(3).next_u64());
    }
}
