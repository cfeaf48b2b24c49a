//! The s1 selection pipeline's stages, over rows held as compact [`Features`] (never the whole
//! dataset's text): quality rules ([`quality`]), MinHash near-duplicates ([`minhash`]),
//! difficulty from models' results ([`difficulty`]), s1's domain-uniform 2^(−rank) sampling
//! ([`diversity`]) and n-gram decontamination ([`decontam`]); trace tokens are counted by
//! [`tokens`]. Every stage is a pure function of its input rows (and a seed): the same input
//! gives the same output on every machine.

pub mod decontam;
pub mod difficulty;
pub mod diversity;
pub mod minhash;
pub mod quality;
pub mod text;
pub mod tokens;

use still_api::{DomainSource, ExampleFields, Field};

/// What the stages read of one row (its position in the source version is its index in
/// [`Pool::rows`]).
#[derive(Debug, Clone)]
pub struct Features {
    pub question: Box<str>,
    /// Which fields are empty (or whitespace): bit `Field as u8`.
    pub empty: u8,
    /// The API-error phrase the thinking or the answer holds.
    pub api_error: Option<&'static str>,
    /// The image reference the question holds.
    pub image_ref: Option<&'static str>,
    /// The numbering artefact at the start of a line of the question (`p1.`).
    pub numbering: Option<Box<str>>,
    pub trace_tokens: u32,
    /// The row's domain, an index into [`Pool::domains`].
    pub domain: u32,
    /// Whether the row carries the diversity stage's keep tag.
    pub keep: bool,
}

/// The rows of a source version.
#[derive(Debug, Default, Clone)]
pub struct Pool {
    pub rows: Vec<Features>,
    /// Domain names, sorted (so sampling never depends on the order rows arrive in).
    pub domains: Vec<String>,
}

/// How a row's domain and keep flag are read (from the recipe's diversity stage).
#[derive(Debug, Clone)]
pub struct Labels {
    pub domain: DomainSource,
    pub keep_tag: Option<String>,
}

impl Default for Labels {
    fn default() -> Self {
        Self {
            domain: DomainSource::Field("domain".into()),
            keep_tag: None,
        }
    }
}

impl Labels {
    /// A row's domain: the field's text (`unknown` when empty), or the keyword classifier's.
    pub fn domain_of(&self, fields: &ExampleFields) -> String {
        match &self.domain {
            DomainSource::Field(name) => {
                let value = match name.as_str() {
                    "domain" => fields.domain.clone(),
                    "source" => fields.source.clone(),
                    other => {
                        let key = other.strip_prefix("metadata.").unwrap_or(other);
                        match fields.metadata.get(key) {
                            Some(serde_json::Value::String(s)) => s.clone(),
                            Some(serde_json::Value::Null) | None => String::new(),
                            Some(v) => v.to_string(),
                        }
                    }
                };
                let value = value.trim();
                if value.is_empty() {
                    "unknown".into()
                } else {
                    value.to_string()
                }
            }
            DomainSource::Keywords { domains, fallback } => {
                let question = fields.question.to_lowercase();
                let mut best: Option<(&str, usize)> = None;
                for d in domains {
                    let hits: usize = d
                        .keywords
                        .iter()
                        .map(|k| k.trim().to_lowercase())
                        .filter(|k| !k.is_empty())
                        .map(|k| question.matches(k.as_str()).count())
                        .sum();
                    if hits > 0 && best.is_none_or(|(_, b)| hits > b) {
                        best = Some((&d.domain, hits));
                    }
                }
                best.map_or_else(|| fallback.clone(), |(d, _)| d.to_string())
            }
        }
    }
}

/// Builds a [`Pool`] row by row.
#[derive(Debug, Default)]
pub struct PoolBuilder {
    labels: Labels,
    rows: Vec<(Features, String)>,
}

impl PoolBuilder {
    pub fn new(labels: Labels) -> Self {
        Self {
            labels,
            rows: Vec::new(),
        }
    }

    /// Adds the next row with its trace's token count.
    pub fn push(&mut self, fields: &ExampleFields, trace_tokens: u32) {
        let mut empty = 0u8;
        for (field, text) in [
            (Field::Question, fields.question.as_str()),
            (Field::Thinking, fields.thinking.as_str()),
            (Field::Answer, fields.answer.as_str()),
            (Field::Solution, fields.solution.as_deref().unwrap_or("")),
        ] {
            if text.trim().is_empty() {
                empty |= 1 << field as u8;
            }
        }
        let keep = self
            .labels
            .keep_tag
            .as_deref()
            .is_some_and(|t| fields.tags.iter().any(|x| x == t));
        let features = Features {
            question: fields.question.as_str().into(),
            empty,
            api_error: quality::api_error(&fields.thinking)
                .or_else(|| quality::api_error(&fields.answer)),
            image_ref: quality::image_ref(&fields.question),
            numbering: quality::numbering(&fields.question).map(Into::into),
            trace_tokens,
            domain: 0,
            keep,
        };
        self.rows.push((features, self.labels.domain_of(fields)));
    }

    pub fn finish(self) -> Pool {
        let mut domains: Vec<String> = self.rows.iter().map(|(_, d)| d.clone()).collect();
        domains.sort();
        domains.dedup();
        let rows = self
            .rows
            .into_iter()
            .map(|(mut f, d)| {
                f.domain = domains.binary_search(&d).expect("listed") as u32;
                f
            })
            .collect();
        Pool { rows, domains }
    }
}

/// A row a stage removed, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Dropped {
    /// The row's index in the pool (its position in the source version).
    pub row: u32,
    pub rule: &'static str,
    pub detail: String,
}

/// What a stage keeps (pool indices, in source order) and what it drops.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageOut {
    pub kept: Vec<u32>,
    pub dropped: Vec<Dropped>,
}

impl StageOut {
    /// Splits `input` by `verdict` (None keeps the row).
    pub fn split(
        input: &[u32],
        mut verdict: impl FnMut(u32) -> Option<(&'static str, String)>,
    ) -> Self {
        let mut out = StageOut::default();
        for &row in input {
            match verdict(row) {
                None => out.kept.push(row),
                Some((rule, detail)) => out.dropped.push(Dropped { row, rule, detail }),
            }
        }
        out
    }
}

/// Rows per domain among `rows`, by domain name.
pub fn domain_counts(pool: &Pool, rows: &[u32]) -> Vec<(String, i64)> {
    let mut counts = vec![0i64; pool.domains.len()];
    for &r in rows {
        counts[pool.rows[r as usize].domain as usize] += 1;
    }
    pool.domains
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(d, n)| (d.clone(), n))
        .collect()
}
