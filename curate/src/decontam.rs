//! Decontamination: a row whose question shares a word n-gram (8 by default, as s1) with a
//! question of an eval dataset is dropped, with the eval row it matches and the shared n-grams.

use std::collections::HashMap;

use crate::{Pool, StageOut, text};

pub const CONTAMINATED: &str = "eval_overlap";

/// Shared n-grams quoted in a drop's detail.
const QUOTED: usize = 3;

/// An eval dataset's questions.
#[derive(Debug, Clone)]
pub struct EvalSet {
    pub name: String,
    pub questions: Vec<String>,
}

/// The n-grams of every eval question, pointing at the first (set, row) that has each.
#[derive(Debug)]
pub struct Index {
    n: usize,
    sets: Vec<EvalSet>,
    grams: HashMap<u64, (u32, u32)>,
}

/// A row's overlap with an eval row.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub set: String,
    pub row: u32,
    /// How many of the row's n-grams the eval row shares.
    pub n_shared: usize,
    /// The first few shared n-grams, as words.
    pub shared: Vec<String>,
}

impl Index {
    pub fn new(sets: Vec<EvalSet>, n: usize) -> Self {
        let n = n.max(1);
        let mut grams = HashMap::new();
        for (s, set) in sets.iter().enumerate() {
            for (r, q) in set.questions.iter().enumerate() {
                for g in text::grams(&text::word_hashes(q), n) {
                    grams.entry(g).or_insert((s as u32, r as u32));
                }
            }
        }
        Self { n, sets, grams }
    }

    /// The eval row `question` overlaps most with (the first in order among equals).
    pub fn check(&self, question: &str) -> Option<Hit> {
        let hashes = text::word_hashes(question);
        let grams = text::grams(&hashes, self.n);
        let mut by_row: HashMap<(u32, u32), Vec<usize>> = HashMap::new();
        for (i, g) in grams.iter().enumerate() {
            if let Some(&at) = self.grams.get(g) {
                by_row.entry(at).or_default().push(i);
            }
        }
        let (&(s, r), windows) = by_row
            .iter()
            .max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.0.cmp(a.0)))?;
        let words = text::words(question);
        let n = self.n.min(words.len());
        let shared = windows
            .iter()
            .take(QUOTED)
            .map(|&i| words[i..i + n].join(" "))
            .collect();
        Some(Hit {
            set: self.sets[s as usize].name.clone(),
            row: r,
            n_shared: windows.len(),
            shared,
        })
    }
}

/// Drops the rows of `input` whose question overlaps an eval question.
pub fn run(index: &Index, pool: &Pool, input: &[u32]) -> StageOut {
    StageOut::split(input, |row| {
        let hit = index.check(&pool.rows[row as usize].question)?;
        let quoted: Vec<String> = hit.shared.iter().map(|g| format!("\"{g}\"")).collect();
        Some((
            CONTAMINATED,
            format!(
                "shares {} {}-gram{} with {} row {}: {}",
                hit.n_shared,
                index.n,
                if hit.n_shared == 1 { "" } else { "s" },
                hit.set,
                hit.row,
                quoted.join(", ")
            ),
        ))
    })
}
