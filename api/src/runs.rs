//! Runs, models, workers and the worker protocol.

use serde::{Deserialize, Serialize};

/// `POST /api/models`: make a model from scratch (`preset` + `tokenizer_dataset`) or register an
/// HF folder on the server's disk (`path`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct NewModel {
    pub name: String,
    #[serde(default)]
    pub preset: Option<String>,
    #[serde(default)]
    pub tokenizer_dataset: Option<String>,
    #[serde(default)]
    pub vocab_size: Option<usize>,
    #[serde(default)]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelSummary {
    pub id: i64,
    pub name: String,
    /// `scratch`, `folder` or `run`.
    pub origin: String,
    pub path: String,
    pub run_id: Option<i64>,
    pub n_params: i64,
    pub vocab_size: i64,
    pub created_at: String,
}

/// Overrides of the s1 defaults; absent fields keep them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct RunParams {
    pub max_steps: Option<usize>,
    pub epochs: Option<usize>,
    pub lr: Option<f64>,
    pub batch_size: Option<usize>,
    pub grad_accum: Option<usize>,
    pub max_seq_len: Option<usize>,
    pub warmup_ratio: Option<f64>,
    pub weight_decay: Option<f64>,
    pub seed: Option<u64>,
    pub checkpoint_every: Option<usize>,
    /// KD only.
    pub alpha: Option<f64>,
    pub temperature: Option<f64>,
    /// `forward_kl`, `reverse_kl` or `jsd`.
    pub divergence: Option<String>,
    pub jsd_beta: Option<f64>,
}

/// `POST /api/runs`. `model`, `teacher` and `dataset` take an id or a name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewRun {
    pub name: String,
    /// `sft` or `kd`.
    pub method: String,
    pub model: String,
    #[serde(default)]
    pub teacher: Option<String>,
    pub dataset: String,
    #[serde(default)]
    pub params: RunParams,
    #[serde(default)]
    pub max_attempts: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunSummary {
    pub id: i64,
    pub name: String,
    pub method: String,
    pub model_id: i64,
    pub model: String,
    pub teacher_id: Option<i64>,
    pub dataset_id: i64,
    pub dataset: String,
    pub dataset_version: i64,
    pub dataset_version_hash: String,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub cancel_requested: bool,
    pub error: Option<String>,
    pub worker_id: Option<i64>,
    /// The engine's training config (s1 defaults with this run's overrides).
    pub config: serde_json::Value,
    pub last_step: Option<i64>,
    pub last_loss: Option<f64>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// One metric value at one optimizer step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricPoint {
    pub step: i64,
    pub name: String,
    pub value: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerSummary {
    pub id: i64,
    pub name: String,
    pub device: String,
    pub memory_bytes: i64,
    /// `idle`, `busy`, `offline` (no contact for a lease period) or `revoked`.
    pub state: String,
    pub current_run: Option<i64>,
    pub last_seen_at: Option<String>,
}

/// `POST /api/worker/register` (with the worker's bearer token).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct RegisterWorker {
    pub device: String,
    pub memory_bytes: i64,
}

/// A job handed to a worker by `POST /api/worker/claim`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClaimedJob {
    pub job_id: i64,
    pub kind: String,
    pub run_id: i64,
    pub attempt: i64,
    pub config: serde_json::Value,
    pub model_id: i64,
    pub teacher_id: Option<i64>,
    pub dataset_version_id: i64,
    /// The lease lasts this long without a heartbeat.
    pub lease_seconds: i64,
    /// The step of the last checkpoint an earlier attempt uploaded: resume from it
    /// (`GET /api/worker/jobs/{id}/checkpoint/{file}`).
    pub resume_step: Option<i64>,
}

/// The answer to a heartbeat: whether the user asked to cancel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeartbeatReply {
    pub cancel: bool,
}

/// `POST /api/worker/jobs/{id}/fail`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobFailure {
    pub error: String,
    /// True when the worker stopped because the run was cancelled.
    #[serde(default)]
    pub cancelled: bool,
}
