//! Near-duplicate questions: MinHash signatures over word shingles, banded into an LSH index
//! whose bands are chosen so a pair at the threshold becomes a candidate with probability at
//! least 0.999; every candidate is then checked by its exact Jaccard similarity, so what is
//! reported is exact (no pair below the threshold is ever called a duplicate).

use std::collections::HashMap;

use still_api::NearDuplicates;

use crate::{Pool, text};

/// Largest number of permutations a recipe may ask for.
pub const MAX_PERM: u32 = 1024;

/// A later row whose question is a near-copy of an earlier kept one.
#[derive(Debug, Clone, PartialEq)]
pub struct NearDuplicate {
    pub row: u32,
    pub of: u32,
    pub jaccard: f64,
}

/// The (bands, rows per band) for `num_perm` permutations and a Jaccard `threshold`: the most
/// rows per band (fewest false candidates) whose recall at the threshold is ≥ 0.999.
pub fn bands(num_perm: u32, threshold: f64) -> (usize, usize) {
    let n = num_perm.max(1) as usize;
    let mut best = (n, 1);
    for r in 1..=n {
        let b = n / r;
        let recall = 1.0 - (1.0 - threshold.powi(r as i32)).powi(b as i32);
        if recall >= 0.999 {
            best = (b, r);
        }
    }
    best
}

/// A question's shingle set: hashes of its `k`-word windows, sorted and deduplicated.
pub fn shingles(question: &str, k: usize) -> Vec<u64> {
    let mut s = text::grams(&text::word_hashes(question), k);
    s.sort_unstable();
    s.dedup();
    s
}

/// Exact Jaccard similarity of two sorted sets.
pub fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    let (mut i, mut j, mut both) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - both;
    if union == 0 {
        0.0
    } else {
        both as f64 / union as f64
    }
}

/// The MinHash signature of a shingle set: per permutation seed, the least mixed hash.
fn signature(set: &[u64], seeds: &[u64], out: &mut [u64]) {
    out.fill(u64::MAX);
    for &s in set {
        for (o, &seed) in out.iter_mut().zip(seeds) {
            let h = text::mix64(s ^ seed);
            if h < *o {
                *o = h;
            }
        }
    }
}

/// The rows of `input` (in order) whose question's shingles have Jaccard ≥ `threshold` with an
/// earlier row's that is kept; each is reported with the first such row.
pub fn near_duplicates(pool: &Pool, input: &[u32], cfg: &NearDuplicates) -> Vec<NearDuplicate> {
    let k = cfg.shingle_words.max(1) as usize;
    let n_perm = cfg.num_perm.clamp(1, MAX_PERM) as usize;
    let (n_bands, r) = bands(n_perm as u32, cfg.threshold);
    let seeds: Vec<u64> = (0..n_perm as u64)
        .map(|i| text::mix64(i.wrapping_add(0x5851_f42d_4c95_7f2d)))
        .collect();
    let mut buckets: HashMap<(u32, u64), Vec<u32>> = HashMap::new();
    // The shingle sets of the kept rows, by their position in `kept`.
    let mut kept_sets: Vec<Vec<u64>> = Vec::new();
    let mut kept_rows: Vec<u32> = Vec::new();
    let mut sig = vec![0u64; n_perm];
    let mut out = Vec::new();
    let mut candidates: Vec<u32> = Vec::new();
    for &row in input {
        let set = shingles(&pool.rows[row as usize].question, k);
        if set.is_empty() {
            continue;
        }
        signature(&set, &seeds, &mut sig);
        let keys: Vec<(u32, u64)> = (0..n_bands)
            .map(|b| (b as u32, text::gram(&sig[b * r..(b + 1) * r])))
            .collect();
        candidates.clear();
        for key in &keys {
            if let Some(list) = buckets.get(key) {
                candidates.extend_from_slice(list);
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        let hit = candidates.iter().find_map(|&c| {
            let j = jaccard(&set, &kept_sets[c as usize]);
            (j >= cfg.threshold - 1e-12).then_some((c, j))
        });
        match hit {
            Some((c, jaccard)) => out.push(NearDuplicate {
                row,
                of: kept_rows[c as usize],
                jaccard,
            }),
            None => {
                let index = kept_sets.len() as u32;
                for key in keys {
                    buckets.entry(key).or_default().push(index);
                }
                kept_sets.push(set);
                kept_rows.push(row);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_reach_the_recall_they_promise() {
        let (b, r) = bands(128, 0.8);
        assert!(b * r <= 128);
        assert!(1.0 - (1.0 - 0.8f64.powi(r as i32)).powi(b as i32) >= 0.999);
        assert_eq!(bands(128, 0.8), (25, 5));
    }

    #[test]
    fn jaccard_is_exact() {
        assert_eq!(jaccard(&[1, 2, 3, 4], &[2, 3, 4, 5]), 0.6);
        assert_eq!(jaccard(&[], &[]), 0.0);
    }
}
