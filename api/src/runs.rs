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
    /// `server` (default: the folder is on the server's disk, or made there) or `workers`: the
    /// folder lives on workers' disks as `--models-dir DIR/<name>` and is never uploaded (a large
    /// teacher on a GPU box). `config` (its `config.json`) lets the server estimate memory.
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub config: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelSummary {
    pub id: i64,
    pub name: String,
    /// `scratch`, `folder`, `run` (a final model), `checkpoint` (a run's evaluated checkpoint),
    /// or `worker` (on workers' disks only).
    pub origin: String,
    pub path: String,
    pub run_id: Option<i64>,
    pub n_params: i64,
    pub vocab_size: i64,
    pub created_at: String,
    /// `qwen2`, `qwen3` or `llama`.
    #[serde(default = "default_arch")]
    pub arch: String,
    /// `safetensors` or `gguf`.
    #[serde(default = "default_format")]
    pub format: String,
}

fn default_arch() -> String {
    "qwen2".into()
}

fn default_format() -> String {
    "safetensors".into()
}

impl ModelSummary {
    /// A model the engine's own Qwen2 does not run (another architecture, or GGUF): it writes
    /// traces as a teacher of a generation (through candle-transformers) and nothing else.
    pub fn generation_only(&self) -> bool {
        !(self.arch == "qwen2" && self.format == "safetensors")
    }
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
    /// KD: distil against the teacher's top-k next tokens, computed once per (teacher, dataset)
    /// on the worker before training; the teacher then leaves memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_top_k: Option<usize>,
    /// The device kind a worker needs: `cpu` or `cuda` (absent: any).
    pub device: Option<String>,
    /// `f32` (default), or `bf16`: compute in bf16 over f32 master weights and optimizer state.
    pub precision: Option<String>,
    /// Rows longer than `max_seq_len`: `truncate` (default; the loss covers what fits) or
    /// `skip` (left out of training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_examples: Option<String>,
}

/// What a run's worker made of its dataset: how many rows trained, how many were cut to
/// `max_seq_len` and how many were left out as longer than it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct RunExamples {
    pub n_trained: i64,
    pub n_truncated: i64,
    pub n_skipped: i64,
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
    /// Evals of the run's checkpoints and final model, made as it trains.
    #[serde(default)]
    pub evals: Vec<crate::RunEval>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunSummary {
    pub id: i64,
    pub name: String,
    pub method: RunMethod,
    pub model_id: i64,
    pub model: String,
    pub teacher_id: Option<i64>,
    pub dataset_id: i64,
    pub dataset: String,
    pub dataset_version: i64,
    pub dataset_version_hash: String,
    pub status: RunStatus,
    pub attempts: i64,
    pub max_attempts: i64,
    pub cancel_requested: bool,
    pub error: Option<String>,
    pub worker_id: Option<i64>,
    /// The device kind the run needs (`cpu`, `cuda`; absent: any worker).
    pub device: Option<String>,
    /// Memory a worker must report to claim the run (its estimate; 0: unchecked).
    pub min_memory_bytes: i64,
    /// The final model, registered as `<run name>-final` once the run succeeded.
    pub output_model_id: Option<i64>,
    /// The engine's training config (s1 defaults with this run's overrides).
    pub config: serde_json::Value,
    /// The evals it makes of itself as it trains.
    #[serde(default)]
    pub evals: Vec<crate::RunEval>,
    /// Set once a worker has tokenised the dataset.
    #[serde(default)]
    pub examples: Option<RunExamples>,
    pub last_step: Option<i64>,
    pub last_loss: Option<f64>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// How a run trains (`runs.method`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum RunMethod {
    /// Supervised fine-tuning on the dataset's traces.
    Sft,
    /// Logit distillation from a teacher.
    Kd,
}

impl RunMethod {
    pub const ALL: &'static [RunMethod] = &[RunMethod::Sft, RunMethod::Kd];

    /// The name stored in `runs.method` and sent as `"method"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunMethod::Sft => "sft",
            RunMethod::Kd => "kd",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|m| m.as_str() == text)
    }
}

impl std::fmt::Display for RunMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a run stands: its job's state (`jobs.status`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting for a worker that can run it.
    Queued,
    /// Held by a worker's lease.
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub const ALL: &'static [RunStatus] = &[
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    /// The name stored in `jobs.status` and sent as `"status"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.as_str() == text)
    }

    /// Succeeded, failed or cancelled: the run will not change again.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
    /// Model folders on the worker's own disk.
    #[serde(default)]
    pub models: Vec<String>,
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
    /// Names of the model folders in the worker's `--models-dir`.
    #[serde(default)]
    pub models: Vec<String>,
}

/// The kinds of job the queue carries. The queue itself knows none of them: the server maps each
/// to its area in one `match` (`backend/src/kinds.rs`), the worker to its module in another.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Train a run (SFT or KD) and upload its checkpoints and final model.
    Train,
    /// Evaluate a model on a dataset version under budgets, uploading each graded example.
    Eval,
    /// Ask a teacher for traces of a dataset version's questions, uploading each row.
    Generate,
}

impl JobKind {
    pub const ALL: &'static [JobKind] = &[JobKind::Train, JobKind::Eval, JobKind::Generate];

    /// The name stored in `jobs.kind` and sent as `"kind"`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Train => "train",
            JobKind::Eval => "eval",
            JobKind::Generate => "generate",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == text)
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job handed to a worker by `POST /api/worker/claim`: the lease, then the work of its kind
/// (`"kind"` and that kind's fields sit beside the lease's in the JSON object).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClaimedJob {
    pub job_id: i64,
    pub attempt: i64,
    /// The lease lasts this long without a heartbeat.
    pub lease_seconds: i64,
    /// The step of the last checkpoint an earlier attempt uploaded: resume from it
    /// (`GET /api/worker/jobs/{id}/checkpoint/{file}`).
    pub resume_step: Option<i64>,
    #[serde(flatten)]
    pub work: JobWork,
}

/// What a claimed job is to do, by kind.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobWork {
    Train(TrainWork),
    Eval(crate::evals::EvalWork),
    Generate(crate::generations::GenerationWork),
}

impl JobWork {
    pub fn kind(&self) -> JobKind {
        match self {
            JobWork::Train(_) => JobKind::Train,
            JobWork::Eval(_) => JobKind::Eval,
            JobWork::Generate(_) => JobKind::Generate,
        }
    }

    /// The run a train job reports to.
    pub fn run_id(&self) -> Option<i64> {
        match self {
            JobWork::Train(w) => Some(w.run_id),
            JobWork::Eval(_) | JobWork::Generate(_) => None,
        }
    }

    /// What the job reports to, for log lines: `run 5`, `eval 2`, `generation 3`.
    pub fn subject(&self) -> String {
        match self {
            JobWork::Train(w) => format!("run {}", w.run_id),
            JobWork::Eval(w) => format!("eval {}", w.eval_id),
            JobWork::Generate(w) => format!("generation {}", w.generation_id),
        }
    }
}

/// A training job's inputs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainWork {
    /// The run the job reports its metrics, log lines and files to.
    pub run_id: i64,
    /// The engine's `TrainConfig`.
    pub config: serde_json::Value,
    pub model_id: i64,
    /// The model's registered name (a worker with `--models-dir` looks for `DIR/<name>`).
    #[serde(default)]
    pub model_name: String,
    /// The model's origin; `worker` means it lives only on workers' disks.
    #[serde(default)]
    pub model_origin: String,
    pub teacher_id: Option<i64>,
    #[serde(default)]
    pub teacher_name: Option<String>,
    #[serde(default)]
    pub teacher_origin: Option<String>,
    pub dataset_version_id: i64,
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

/// One file of a run's checkpoint or final model, stored once by content hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArtifactFile {
    pub name: String,
    pub size: i64,
    pub sha256: String,
}

/// A complete folder of a run: a checkpoint (`step-N`) or the final model (`final`).
/// `GET /api/runs/{run}/artifacts/{folder}?format=tar` downloads it whole.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArtifactFolder {
    pub folder: String,
    /// The optimizer step of a checkpoint; `None` for the final model.
    pub step: Option<i64>,
    pub files: Vec<ArtifactFile>,
    pub total_bytes: i64,
}

/// A log line a worker sends (`POST /api/worker/jobs/{id}/logs`). `seq` numbers the lines of
/// one attempt from 0: a line sent twice is stored once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogLine {
    pub seq: i64,
    /// `info`, `warn` or `error`.
    pub level: String,
    pub message: String,
}

/// A line of a run's log (`GET /api/runs/{run}/logs`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunLogEntry {
    pub id: i64,
    pub attempt: i64,
    /// `server` or `worker`.
    pub source: String,
    pub level: String,
    pub message: String,
    pub created_at: String,
}

/// What training a model needs in memory, by part (bytes). An estimate: the engine's own
/// activation accounting, checked against measured peaks in the engine benchmark.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct MemoryEstimate {
    pub n_params: i64,
    pub params_bytes: i64,
    pub grads_bytes: i64,
    pub optimizer_bytes: i64,
    pub activations_bytes: i64,
    pub teacher_bytes: i64,
    pub total_bytes: i64,
}

/// The kind of a worker's device: `cpu` for `cpu`, `cuda` for `cuda` or `cuda:N`; `None` for
/// anything else. The server accepts only these at registration and matches runs on the kind
/// (its claim query maps `cuda…` to `cuda` the same way).
pub fn device_kind(device: &str) -> Option<&'static str> {
    match device.split_once(':') {
        None if device == "cpu" => Some("cpu"),
        None if device == "cuda" => Some("cuda"),
        Some(("cuda", n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => Some("cuda"),
        _ => None,
    }
}

/// A worker and whether a run's estimate fits its memory and device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerFit {
    pub id: i64,
    pub name: String,
    pub device: String,
    pub memory_bytes: i64,
    pub state: String,
    pub fits: bool,
}

/// `POST /api/runs/estimate` (a `NewRun` body): memory by part and which workers can run it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunEstimate {
    pub estimate: MemoryEstimate,
    pub workers: Vec<WorkerFit>,
    /// True when at least one registered, non-revoked worker fits.
    pub feasible: bool,
    pub message: String,
}

/// The first message of a run's event stream (`GET /api/runs/{run}/events`, Server-Sent
/// Events): everything so far. Then `metrics`, `logs`, `run` and `artifacts` events carry what
/// changed. A reconnecting client gets a fresh snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunSnapshot {
    pub run: RunSummary,
    /// Downsampled to at most about 1,000 points per metric (extremes kept).
    pub metrics: Vec<MetricPoint>,
    /// The last lines of the log.
    pub logs: Vec<RunLogEntry>,
    pub artifacts: Vec<ArtifactFolder>,
}

/// Keeps the first and last point and, per bucket of steps, the points with the smallest and
/// largest value, so a downsampled curve still shows every spike. `points` are one metric's,
/// in step order.
pub fn downsample(points: Vec<MetricPoint>, max_points: usize) -> Vec<MetricPoint> {
    if points.len() <= max_points || max_points < 4 {
        return points;
    }
    let buckets = max_points / 2;
    let per = points.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(max_points + 2);
    for chunk in points.chunks(per) {
        let (mut lo, mut hi) = (&chunk[0], &chunk[0]);
        for p in chunk {
            if p.value < lo.value {
                lo = p;
            }
            if p.value > hi.value {
                hi = p;
            }
        }
        let (a, b) = if lo.step <= hi.step {
            (lo, hi)
        } else {
            (hi, lo)
        };
        out.push(a.clone());
        if b.step != a.step {
            out.push(b.clone());
        }
    }
    if out.first().map(|p| p.step) != points.first().map(|p| p.step) {
        out.insert(0, points[0].clone());
    }
    if out.last().map(|p| p.step) != points.last().map(|p| p.step) {
        out.push(points.last().expect("non-empty").clone());
    }
    out
}

/// [`downsample`] for points of several metrics, sorted by (name, step).
pub fn downsample_each(points: Vec<MetricPoint>, max_points: usize) -> Vec<MetricPoint> {
    let mut out = Vec::with_capacity(points.len().min(max_points * 12));
    for chunk in points.chunk_by(|a, b| a.name == b.name) {
        out.extend(downsample(chunk.to_vec(), max_points));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_methods_and_statuses_are_sent_as_their_stored_names() {
        for m in RunMethod::ALL {
            assert_eq!(serde_json::to_string(m).unwrap(), format!("\"{m}\""));
            assert_eq!(RunMethod::parse(m.as_str()), Some(*m));
        }
        for s in RunStatus::ALL {
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{s}\""));
            assert_eq!(RunStatus::parse(s.as_str()), Some(*s));
        }
        assert_eq!(
            (RunMethod::parse("SFT"), RunStatus::parse("done")),
            (None, None)
        );
        let finished: Vec<&str> = RunStatus::ALL
            .iter()
            .filter(|s| s.is_finished())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(finished, ["succeeded", "failed", "cancelled"]);
    }

    #[test]
    fn device_kinds() {
        assert_eq!(device_kind("cpu"), Some("cpu"));
        assert_eq!(device_kind("cuda"), Some("cuda"));
        assert_eq!(device_kind("cuda:1"), Some("cuda"));
        for bad in ["cuda:", "cuda:x", "cuda1", "metal", "tpu", ""] {
            assert_eq!(device_kind(bad), None, "{bad}");
        }
    }

    #[test]
    fn downsampling_keeps_extremes_and_ends() {
        let points: Vec<MetricPoint> = (0..1000)
            .map(|i| MetricPoint {
                step: i,
                name: "loss".into(),
                value: if i == 500 { 99.0 } else { 1.0 / (i + 1) as f64 },
            })
            .collect();
        let small = downsample(points.clone(), 100);
        assert!(small.len() <= 102, "{}", small.len());
        assert!(small.iter().any(|p| p.value == 99.0), "the spike survives");
        assert_eq!(small.first().unwrap().step, 0);
        assert_eq!(small.last().unwrap().step, 999);
        assert!(small.windows(2).all(|w| w[0].step < w[1].step));
        // A first point that is no extreme of its bucket is kept too.
        let rising: Vec<MetricPoint> = points
            .iter()
            .map(|p| MetricPoint {
                value: (p.step as f64).sin() + p.step as f64 * 0.01,
                ..p.clone()
            })
            .collect();
        let small = downsample(rising, 100);
        assert_eq!(small.first().unwrap().step, 0);
        assert_eq!(small.last().unwrap().step, 999);
    }
}
