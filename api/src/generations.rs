//! Teacher trace generation: `POST /api/generations`, `GET /api/generations[/{id}[/rows]]`, and
//! the `generate` job's work. A teacher is a registry model (run by the engine on a worker) or
//! an OpenAI-compatible endpoint; the API key of an endpoint is stored by the server, handed
//! only to the worker holding the job's lease, and never returned (`api_key_hint` instead).

use serde::{Deserialize, Serialize};

/// Who writes the traces. Without `base_url`, `model` is a registry model's id or name; with
/// it, `model` is the name the endpoint serves and `api_key` its key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct TeacherSpec {
    pub model: String,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub api_key: Option<String>,
}

/// Which traces go into the output dataset.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Keep {
    /// Every trace the teacher wrote.
    #[default]
    All,
    /// Only traces whose extracted answer matches the reference (rejection sampling).
    Correct,
}

impl Keep {
    pub fn as_str(self) -> &'static str {
        match self {
            Keep::All => "all",
            Keep::Correct => "correct",
        }
    }
}

/// `POST /api/generations`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct NewGeneration {
    /// A dataset's id or name; its current version is pinned.
    pub dataset: String,
    pub teacher: TeacherSpec,
    #[serde(default)]
    pub name: Option<String>,
    /// The output dataset's name (default: `<dataset>-traces`, numbered when taken).
    #[serde(default)]
    pub output: Option<String>,
    /// The user turn, with `{question}` where the question goes (default: the question).
    #[serde(default)]
    pub prompt: Option<String>,
    /// A system turn before it.
    #[serde(default)]
    pub system: Option<String>,
    /// Samples per question (default 1).
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub seed: Option<u64>,
    /// Tokens the teacher may write per sample, thinking and answer together.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// A registry teacher's thinking is cut here (s1's budget forcing); sent to an endpoint
    /// as the same extra body field, which Still's own `/v1` honours.
    #[serde(default)]
    pub max_thinking_tokens: Option<u32>,
    #[serde(default)]
    pub keep: Option<Keep>,
    /// How answers are extracted for `keep: correct`: `math` (default), `gsm8k` or `choice`.
    #[serde(default)]
    pub preset: Option<String>,
    /// Ask only about the version's first N rows.
    #[serde(default)]
    pub limit: Option<u32>,
    /// Requests in flight at once to an endpoint (default 4).
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Seconds one request may take before it is retried (default 600).
    #[serde(default)]
    pub timeout_seconds: Option<u32>,
    /// Retries of one request on 429, 5xx, timeouts and dropped connections (default 6).
    #[serde(default)]
    pub max_retries: Option<u32>,
}

/// A generation's settings, checked, as stored and as its worker reads them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GenerationSettings {
    pub prompt: String,
    pub system: Option<String>,
    pub n: u32,
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
    pub max_tokens: u32,
    pub max_thinking_tokens: Option<u32>,
    pub keep: Keep,
    pub preset: String,
    pub concurrency: u32,
    pub timeout_seconds: u32,
    pub max_retries: u32,
}

/// The teacher as the API shows it: an endpoint's key only as its last four characters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TeacherInfo {
    /// `model` (a registry model) or `openai` (an OpenAI-compatible endpoint).
    pub kind: String,
    pub model: String,
    pub model_id: Option<i64>,
    pub base_url: Option<String>,
    /// `…abcd` (its last four characters; `…` alone for a key under 12), or `None` without one.
    pub api_key_hint: Option<String>,
}

/// How far a generation is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct GenerationCounts {
    /// `n_examples × n_samples`.
    pub total: i64,
    /// Rows answered or failed.
    pub done: i64,
    /// Rows the teacher answered.
    pub ok: i64,
    /// Rows that went into the output dataset.
    pub kept: i64,
    /// Rows the teacher did not answer (after retries); each has its error.
    pub failed: i64,
    /// Answered rows the grader judged against their reference, and how many were right.
    pub graded: i64,
    pub correct: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

/// `GET /api/generations/{id}` (and each item of `GET /api/generations`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GenerationSummary {
    pub id: i64,
    pub name: String,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled` (its job's).
    pub status: String,
    pub dataset_id: i64,
    pub dataset_name: String,
    pub dataset_version: i64,
    pub output_dataset_id: Option<i64>,
    pub output_dataset_name: Option<String>,
    /// The output dataset's version cut when the generation succeeded.
    pub output_version: Option<i64>,
    pub teacher: TeacherInfo,
    pub settings: GenerationSettings,
    pub n_examples: i64,
    pub n_samples: i64,
    pub counts: GenerationCounts,
    /// `kept / ok`: the share of answered traces kept (rejection sampling's yield).
    pub kept_share: Option<f64>,
    pub error: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

/// One (question, sample) of a generation (`GET /api/generations/{id}/rows`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GenerationRow {
    pub example_index: i64,
    pub sample_index: i64,
    /// `ok` or `failed`.
    pub status: String,
    pub kept: bool,
    pub correct: Option<bool>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub error: Option<String>,
    /// The output dataset's example made from it.
    pub example_id: Option<i64>,
    pub attempt: i64,
    /// `GenerationRecord`: question, thinking, answer, extracted answer, reason, finish,
    /// retries, seconds.
    pub record: serde_json::Value,
}

/// What a `generate` job's worker asks and how.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TeacherWork {
    /// `model` or `openai`.
    pub kind: String,
    pub model: String,
    pub model_id: Option<i64>,
    /// `worker`: the registry model lives only on workers' disks.
    pub model_origin: Option<String>,
    pub base_url: Option<String>,
    /// Sent only to the worker holding the lease.
    pub api_key: Option<String>,
}

/// A `generate` job's inputs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GenerationWork {
    pub generation_id: i64,
    pub teacher: TeacherWork,
    pub dataset_version_id: i64,
    pub n_examples: i64,
    pub settings: GenerationSettings,
    /// `(example_index, sample_index)` rows an earlier attempt stored: never ask for them again.
    pub done: Vec<(i64, i64)>,
}

/// What the teacher wrote for one (question, sample), or why it did not.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct GenerationRecord {
    pub thinking: String,
    pub answer: String,
    /// How the thinking came apart from the answer: `reasoning_content`, `think_tags`,
    /// `budget_forcing` (a registry teacher) or `none` (no thinking found).
    pub split: String,
    /// The teacher's finish reason (`stop`, `length`, …).
    pub finish: Option<String>,
    /// The grader's extracted answer and reason (when the row has a reference).
    pub extracted: Option<String>,
    pub reason: Option<String>,
    /// Requests retried before this one answered (or before giving up).
    pub retries: u32,
    pub seconds: f64,
}

/// One row a worker uploads (`POST /api/worker/jobs/{id}/generation/rows`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GenerationRowUpload {
    pub example_index: i64,
    pub sample_index: i64,
    /// `None`: answered; `Some`: why not.
    pub error: Option<String>,
    /// The grader's verdict against the reference (`None` when the row has none).
    pub correct: Option<bool>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub record: GenerationRecord,
}
