//! The quality stage: row rules (missing fields, API-error text, image references, numbering
//! artefacts, trace length in tokens), then exact and near-duplicate questions among the rows
//! that passed them. A row is dropped by the first rule that matches, in that order.

use std::collections::HashMap;

use still_api::{Field, QualityStage};

use crate::{Pool, StageOut, minhash, text};

pub const MISSING_FIELD: &str = "missing_field";
pub const API_ERROR: &str = "api_error";
pub const IMAGE_REFERENCE: &str = "image_reference";
pub const NUMBERING_ARTIFACT: &str = "numbering_artifact";
pub const TRACE_TOO_SHORT: &str = "trace_too_short";
pub const TRACE_TOO_LONG: &str = "trace_too_long";
pub const EXACT_DUPLICATE: &str = "exact_duplicate";
pub const NEAR_DUPLICATE: &str = "near_duplicate";

/// Every rule, in the order they are applied.
pub const RULES: [&str; 8] = [
    MISSING_FIELD,
    API_ERROR,
    IMAGE_REFERENCE,
    NUMBERING_ARTIFACT,
    TRACE_TOO_SHORT,
    TRACE_TOO_LONG,
    EXACT_DUPLICATE,
    NEAR_DUPLICATE,
];

/// Text an API answers with instead of a completion (matched without case).
const API_ERROR_PHRASES: [&str; 16] = [
    "rate limit exceeded",
    "rate_limit_exceeded",
    "error code: 4",
    "error code: 5",
    "internal server error",
    "service unavailable",
    "502 bad gateway",
    "request timed out",
    "context_length_exceeded",
    "maximum context length",
    "overloaded_error",
    "invalid_request_error",
    "insufficient_quota",
    "an error occurred while processing your request",
    "<!doctype html",
    "apierror",
];

/// The API-error phrase `text` holds.
pub fn api_error(text: &str) -> Option<&'static str> {
    if text.is_empty() {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    API_ERROR_PHRASES
        .iter()
        .copied()
        .find(|p| lower.contains(p))
}

const IMAGE_MARKERS: [&str; 4] = ["![", "[asy]", "<img", "\\includegraphics"];

/// The image reference `question` holds (Markdown images, Asymptote figures, HTML, LaTeX).
pub fn image_ref(question: &str) -> Option<&'static str> {
    IMAGE_MARKERS.iter().copied().find(|m| question.contains(m))
}

/// A numbering artefact left from scraping a problem set: `p1.`, `P12.` starting a line.
pub fn numbering(question: &str) -> Option<&str> {
    question.lines().find_map(|line| {
        let line = line.trim_start();
        let rest = line.strip_prefix(['p', 'P'])?;
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return None;
        }
        let after = &rest[digits..];
        let tail = after.strip_prefix('.')?;
        if tail.is_empty() || tail.starts_with(char::is_whitespace) {
            Some(&line[..1 + digits + 1])
        } else {
            None
        }
    })
}

fn field_name(f: Field) -> &'static str {
    match f {
        Field::Question => "question",
        Field::Thinking => "thinking",
        Field::Answer => "answer",
        Field::Solution => "solution",
    }
}

/// The row rules' verdict on one row: the first that matches, with its detail.
fn row_rule(stage: &QualityStage, pool: &Pool, row: u32) -> Option<(&'static str, String)> {
    row_rules(stage, pool, row).next()
}

/// Every row rule that matches one row, in order.
fn row_rules<'a>(
    stage: &'a QualityStage,
    pool: &'a Pool,
    row: u32,
) -> impl Iterator<Item = (&'static str, String)> + 'a {
    let f = &pool.rows[row as usize];
    let missing = stage
        .required_fields
        .iter()
        .find(|field| f.empty & (1 << **field as u8) != 0)
        .map(|field| (MISSING_FIELD, format!("{} is empty", field_name(*field))));
    let api = f
        .api_error
        .filter(|_| stage.api_errors)
        .map(|p| (API_ERROR, format!("the trace or answer holds '{p}'")));
    let image = f.image_ref.filter(|_| stage.image_refs).map(|m| {
        (
            IMAGE_REFERENCE,
            format!("the question references an image ('{m}')"),
        )
    });
    let numbering = f
        .numbering
        .as_deref()
        .filter(|_| stage.numbering_artifacts)
        .map(|n| {
            (
                NUMBERING_ARTIFACT,
                format!("a line of the question starts with '{n}'"),
            )
        });
    let short = stage
        .min_trace_tokens
        .filter(|&min| f.trace_tokens < min)
        .map(|min| {
            (
                TRACE_TOO_SHORT,
                format!("the trace has {} tokens, fewer than {min}", f.trace_tokens),
            )
        });
    let long = stage
        .max_trace_tokens
        .filter(|&max| f.trace_tokens > max)
        .map(|max| {
            (
                TRACE_TOO_LONG,
                format!("the trace has {} tokens, more than {max}", f.trace_tokens),
            )
        });
    [missing, api, image, numbering, short, long]
        .into_iter()
        .flatten()
}

/// Later copies of a question among `input`: (row, the first row it copies).
pub fn exact_duplicates(pool: &Pool, input: &[u32]) -> Vec<(u32, u32)> {
    let mut first: HashMap<String, u32> = HashMap::with_capacity(input.len());
    let mut out = Vec::new();
    for &row in input {
        let key = text::collapse_whitespace(&pool.rows[row as usize].question);
        if key.is_empty() {
            continue;
        }
        match first.get(&key) {
            Some(&of) => out.push((row, of)),
            None => {
                first.insert(key, row);
            }
        }
    }
    out
}

/// Runs the quality stage over `input`.
pub fn run(stage: &QualityStage, pool: &Pool, input: &[u32]) -> StageOut {
    let mut out = StageOut::split(input, |row| row_rule(stage, pool, row));
    if stage.exact_duplicates {
        let dups = exact_duplicates(pool, &out.kept);
        out = remove(
            out,
            dups.into_iter().map(|(row, of)| {
                (
                    row,
                    EXACT_DUPLICATE,
                    format!("the same question as row {of}"),
                )
            }),
        );
    }
    if let Some(near) = &stage.near_duplicates {
        let dups = minhash::near_duplicates(pool, &out.kept, near);
        out = remove(
            out,
            dups.into_iter().map(|d| {
                (
                    d.row,
                    NEAR_DUPLICATE,
                    format!(
                        "a near-duplicate of row {} (Jaccard {:.3})",
                        d.of, d.jaccard
                    ),
                )
            }),
        );
    }
    out.dropped.sort_by_key(|d| d.row);
    out
}

fn remove(mut out: StageOut, drops: impl Iterator<Item = (u32, &'static str, String)>) -> StageOut {
    let mut gone = std::collections::HashSet::new();
    for (row, rule, detail) in drops {
        gone.insert(row);
        out.dropped.push(crate::Dropped { row, rule, detail });
    }
    out.kept.retain(|r| !gone.contains(r));
    out
}

/// How many rows of `input` each rule matches on its own (duplicates: later copies among all of
/// `input`), and how many the whole stage removes.
pub fn preview(
    stage: &QualityStage,
    pool: &Pool,
    input: &[u32],
) -> (Vec<(&'static str, i64)>, i64) {
    let mut counts: HashMap<&'static str, i64> = HashMap::new();
    for &row in input {
        let mut seen = std::collections::HashSet::new();
        for (rule, _) in row_rules(stage, pool, row) {
            if seen.insert(rule) {
                *counts.entry(rule).or_default() += 1;
            }
        }
    }
    if stage.exact_duplicates {
        counts.insert(EXACT_DUPLICATE, exact_duplicates(pool, input).len() as i64);
    }
    if let Some(near) = &stage.near_duplicates {
        counts.insert(
            NEAR_DUPLICATE,
            minhash::near_duplicates(pool, input, near).len() as i64,
        );
    }
    let enabled = |rule: &str| match rule {
        MISSING_FIELD => !stage.required_fields.is_empty(),
        API_ERROR => stage.api_errors,
        IMAGE_REFERENCE => stage.image_refs,
        NUMBERING_ARTIFACT => stage.numbering_artifacts,
        TRACE_TOO_SHORT => stage.min_trace_tokens.is_some(),
        TRACE_TOO_LONG => stage.max_trace_tokens.is_some(),
        EXACT_DUPLICATE => stage.exact_duplicates,
        _ => stage.near_duplicates.is_some(),
    };
    let rules = RULES
        .iter()
        .filter(|r| enabled(r))
        .map(|r| (*r, counts.get(r).copied().unwrap_or(0)))
        .collect();
    let removed = run(stage, pool, input).dropped.len() as i64;
    (rules, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detectors() {
        assert_eq!(
            api_error("Error code: 429 - Rate limit"),
            Some("error code: 4")
        );
        assert_eq!(api_error("Let x = 2. Then the answer is 4."), None);
        assert_eq!(image_ref("In the figure ![fig](a.png) find x"), Some("!["));
        assert_eq!(image_ref("[asy] draw((0,0)--(1,1)); [/asy]"), Some("[asy]"));
        assert_eq!(image_ref("Find [x] where x = 2.5"), None);
        assert_eq!(numbering("p1. Find all n."), Some("p1."));
        assert_eq!(numbering("Intro\n  P12.\tShow that"), Some("P12."));
        assert_eq!(numbering("p1.5 is a number; pi. is not; p. neither"), None);
        assert_eq!(numbering("Let p1 and p2 be primes."), None);
    }
}
