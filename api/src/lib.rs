//! Wire types shared by every part of Still.
//!
//! These structs are the JSON the HTTP API speaks, so the backend, the Leptos frontend (wasm32),
//! the worker and the command line agree on one definition. This crate depends on serde only:
//! **it must never depend on tokio, sqlx, axum or candle**, so it keeps building for wasm32.

use serde::{Deserialize, Serialize};

pub mod compare;
pub mod curation;
pub mod evals;
pub mod example;
pub mod files;
pub mod generations;
pub mod runs;
pub mod serving;

pub use compare::*;
pub use curation::*;
pub use evals::*;
pub use example::{Example, ExampleFields};
pub use files::{CHECKPOINT_FILES, MODEL_FILES};
pub use generations::*;
pub use runs::*;
pub use serving::*;

/// `GET /api/health`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Health {
    pub status: String,
    pub version: String,
}

/// The body of every error response: a stable machine code and a human message that names the
/// problem (file, line, field).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// One dataset as listed by `GET /api/datasets`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DatasetSummary {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub team_id: i64,
    /// Live rows (not in the trash).
    pub n_rows: i64,
    /// Rows in the trash, recoverable until the next version is cut.
    pub n_deleted: i64,
    /// UTF-8 bytes of question + thinking + answer + solution over live rows.
    pub size_bytes: i64,
    pub n_versions: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// Input file formats. `Auto` looks at the file name, then at the first bytes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    #[default]
    Auto,
    Jsonl,
    Json,
    Csv,
    Parquet,
}

impl FileFormat {
    pub const ALL: [FileFormat; 5] = [
        Self::Auto,
        Self::Jsonl,
        Self::Json,
        Self::Csv,
        Self::Parquet,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Jsonl => "jsonl",
            Self::Json => "json",
            Self::Csv => "csv",
            Self::Parquet => "parquet",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == text.trim().to_ascii_lowercase())
    }
}

/// How source rows map onto the canonical example. `Auto` detects from the first row's fields.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    #[default]
    Auto,
    /// Still's own export: `question`, `thinking`, `answer`, `solution`, `source`, `domain`,
    /// `tags`, `metadata` (an object, kept as is).
    Canonical,
    /// s1K / s1K-1.1: `question`, `thinking_trajectories` (or `deepseek_thinking_trajectory`),
    /// `attempt`, `solution`, `cot_type`, `source_type`, `metadata`.
    S1k,
    /// GSM8K: `question`, `answer` whose last line is `#### <final answer>`.
    Gsm8k,
    /// MATH / MATH-500: `problem`, `solution`, `answer`, `subject`, `level`.
    Math,
    /// Long-trace files whose one field holds thinking and answer, split at a marker
    /// (`question`, `solution`, `gold_answer`).
    Traces,
    /// Any other shape: the field mapping says which column is which.
    Generic,
}

impl Preset {
    pub const ALL: [Preset; 7] = [
        Self::Auto,
        Self::Canonical,
        Self::S1k,
        Self::Gsm8k,
        Self::Math,
        Self::Traces,
        Self::Generic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Canonical => "canonical",
            Self::S1k => "s1k",
            Self::Gsm8k => "gsm8k",
            Self::Math => "math",
            Self::Traces => "traces",
            Self::Generic => "generic",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == text.trim().to_ascii_lowercase())
    }
}

/// What an import does with a row it cannot read.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum BadRowPolicy {
    /// Import the good rows; list every bad one in the report (kept with the dataset).
    #[default]
    Skip,
    /// Any bad row rejects the whole file; nothing is stored.
    Reject,
}

impl BadRowPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Reject => "reject",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "skip" => Some(Self::Skip),
            "reject" => Some(Self::Reject),
            _ => None,
        }
    }
}

/// Whether an import makes a new dataset or adds to an existing one.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ImportMode {
    /// Fail with 409 when the name is taken.
    #[default]
    Create,
    /// Add the rows to the dataset of that name (created when missing).
    Append,
}

impl ImportMode {
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "create" => Some(Self::Create),
            "append" => Some(Self::Append),
            _ => None,
        }
    }
}

/// A hand-made (or detected) mapping from source columns to canonical fields. Every value is a
/// source column name; `None` leaves the canonical field empty.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct FieldMapping {
    pub question: String,
    #[serde(default)]
    pub thinking: Option<String>,
    #[serde(default)]
    pub answer: Option<String>,
    #[serde(default)]
    pub solution: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub tags: Option<String>,
    /// A column that holds thinking and answer in one string, split at `split_marker`:
    /// the text before it is the thinking, the text after it the answer.
    #[serde(default)]
    pub combined: Option<String>,
    #[serde(default)]
    pub split_marker: Option<String>,
}

/// One rejected source row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RejectedRow {
    /// 1-based record number in the file (JSONL line, JSON array element, CSV record, Parquet row).
    pub record: u64,
    /// 1-based line in the file where the record starts, for text formats.
    pub line: Option<u64>,
    pub reason: String,
}

/// What an import did. Kept with the dataset and shown in the UI.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImportReport {
    pub import_id: Option<i64>,
    pub dataset_id: Option<i64>,
    pub dataset: String,
    pub file_name: String,
    pub format: FileFormat,
    pub preset: Preset,
    pub policy: BadRowPolicy,
    pub mapping: Option<FieldMapping>,
    pub n_imported: u64,
    pub n_rejected: u64,
    /// The first rejected rows (at most [`MAX_REPORTED_REJECTIONS`]); `n_rejected` counts all.
    pub rejected: Vec<RejectedRow>,
    pub created_at: Option<String>,
}

/// How many rejected rows a report lists one by one.
pub const MAX_REPORTED_REJECTIONS: usize = 1000;

impl ImportReport {
    /// The one-line summary the CLI prints.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{}: {} rows imported into '{}', {} rejected (format {}, preset {})",
            self.file_name,
            self.n_imported,
            self.dataset,
            self.n_rejected,
            self.format.as_str(),
            self.preset.as_str()
        );
        for row in &self.rejected {
            match row.line {
                Some(l) => line.push_str(&format!(
                    "; record {} (line {l}): {}",
                    row.record, row.reason
                )),
                None => line.push_str(&format!("; record {}: {}", row.record, row.reason)),
            }
        }
        if (self.rejected.len() as u64) < self.n_rejected {
            line.push_str(&format!(
                "; … {} more",
                self.n_rejected - self.rejected.len() as u64
            ));
        }
        line
    }
}

/// `POST /api/datasets/preview`: what an import of this file would do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImportPreview {
    pub format: FileFormat,
    pub preset: Preset,
    /// Every column seen in the sampled rows, in first-seen order.
    pub columns: Vec<String>,
    /// The mapping `preset` implies (the starting point for a hand mapping).
    pub mapping: FieldMapping,
    /// The first rows mapped to canonical examples, or the reason each failed.
    pub rows: Vec<Result<ExampleFields, RejectedRow>>,
    /// Set when the detected preset needed a guess the user should confirm.
    pub warning: Option<String>,
}

/// `GET /api/datasets/{id}/examples` query.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ExampleQuery {
    /// Full-text search over question, thinking and answer (every word must match).
    pub q: Option<String>,
    pub source: Option<String>,
    pub domain: Option<String>,
    pub tag: Option<String>,
    /// Show the trash (soft-deleted rows) instead of live rows.
    pub deleted: Option<bool>,
    /// Page size, 1..=500 (default 50).
    pub limit: Option<u32>,
    /// Keyset cursor: rows with an id greater than this.
    pub after: Option<i64>,
    /// Keyset cursor: rows with an id less than this (the previous page).
    pub before: Option<i64>,
}

/// One row of the examples table: long fields are cut to a preview (open the example for all).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExampleRow {
    pub id: i64,
    /// The question, cut at [`PREVIEW_CHARS`] characters.
    pub question: String,
    /// The answer, cut at [`PREVIEW_CHARS`] characters.
    pub answer: String,
    pub question_words: i64,
    pub thinking_words: i64,
    pub answer_words: i64,
    pub source: String,
    pub domain: String,
    pub tags: Vec<String>,
    pub deleted_at: Option<String>,
    /// With `q`: the best matching passage, hits wrapped in [`HIT_START`] / [`HIT_END`].
    pub snippet: Option<String>,
}

/// How many characters of question and answer a table row carries.
pub const PREVIEW_CHARS: usize = 400;

/// Marks the start of a search hit inside a snippet (a private-use character, so no HTML is sent).
pub const HIT_START: char = '\u{E000}';
/// Marks the end of a search hit inside a snippet.
pub const HIT_END: char = '\u{E001}';

/// A page of examples.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExamplePage {
    pub items: Vec<ExampleRow>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next_after: Option<i64>,
    /// Pass as `before` for the previous page; `None` on the first page.
    pub prev_before: Option<i64>,
    /// Rows matching the query, counted up to [`COUNT_CAP`].
    pub total: i64,
    /// True when `total` stopped at the cap.
    pub total_capped: bool,
}

/// Counting matches stops here, so a common search word stays fast on big datasets.
pub const COUNT_CAP: i64 = 10_000;

/// `PATCH /api/examples/{id}`: fields to change; absent fields stay.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ExamplePatch {
    pub question: Option<String>,
    pub thinking: Option<String>,
    pub answer: Option<String>,
    /// `Some(None)` is not expressible in JSON merge style; an empty string clears it.
    pub solution: Option<String>,
    pub source: Option<String>,
    pub domain: Option<String>,
    pub tags: Option<Vec<String>>,
}

/// `POST /api/examples/{id}/tags`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TagRequest {
    pub tag: String,
}

/// Length histogram of one field.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LengthStats {
    pub field: String,
    pub min: i64,
    pub p50: i64,
    pub p90: i64,
    pub p99: i64,
    pub max: i64,
    pub mean: f64,
    /// Bin `i` covers `[edges[i], edges[i+1])`; the last bin includes its right edge.
    pub edges: Vec<i64>,
    pub counts: Vec<i64>,
}

/// `GET /api/datasets/{id}/stats`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DatasetStats {
    pub dataset_id: i64,
    pub n_rows: i64,
    /// What a length counts. Until a tokenizer is chosen per dataset this is
    /// `"words"`: runs of non-whitespace characters.
    pub unit: String,
    pub lengths: Vec<LengthStats>,
    pub sources: Vec<(String, i64)>,
    pub domains: Vec<(String, i64)>,
    pub tags: Vec<(String, i64)>,
}

/// `POST /api/datasets/{id}/versions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct NewVersion {
    #[serde(default)]
    pub message: String,
}

/// An immutable snapshot of a dataset's live rows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DatasetVersion {
    pub id: i64,
    pub dataset_id: i64,
    /// 1, 2, 3 … per dataset.
    pub version: i64,
    /// SHA-256 over the rows' canonical JSON, in order: equal hashes mean equal data.
    pub content_hash: String,
    pub n_rows: i64,
    pub message: String,
    pub created_at: String,
}

/// One past import of a dataset, with its report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImportRecord {
    pub id: i64,
    pub report: ImportReport,
}

/// Which JSONL shape an export writes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExportShape {
    /// `question`, `thinking`, `answer`, `solution`, `source`, `domain`, `tags`, `metadata`.
    #[default]
    Canonical,
    /// The s1K columns: `question`, `thinking_trajectories` (a list), `attempt`, `solution`,
    /// `cot_type`, `source_type`, `metadata`.
    S1k,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_parse_their_own_names() {
        for f in FileFormat::ALL {
            assert_eq!(FileFormat::parse(f.as_str()), Some(f));
        }
        for p in Preset::ALL {
            assert_eq!(Preset::parse(p.as_str()), Some(p));
        }
        assert_eq!(Preset::parse("S1K"), Some(Preset::S1k));
        assert_eq!(FileFormat::parse("xml"), None);
    }

    #[test]
    fn summary_names_each_rejected_row() {
        let report = ImportReport {
            import_id: Some(1),
            dataset_id: Some(2),
            dataset: "d".into(),
            file_name: "f.jsonl".into(),
            format: FileFormat::Jsonl,
            preset: Preset::Gsm8k,
            policy: BadRowPolicy::Skip,
            mapping: None,
            n_imported: 3,
            n_rejected: 1,
            rejected: vec![RejectedRow {
                record: 4,
                line: Some(4),
                reason: "bad json".into(),
            }],
            created_at: None,
        };
        let line = report.summary();
        assert!(
            line.contains("3 rows imported into 'd', 1 rejected"),
            "{line}"
        );
        assert!(line.contains("record 4 (line 4): bad json"), "{line}");
    }
}
