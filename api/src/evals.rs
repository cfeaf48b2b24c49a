//! Evaluations: `POST /api/evals`, `GET /api/evals[/{id}[/examples]]`, and the `eval` job's
//! work. The budgets and decoding here have the engine's shapes (its `Budget` and `Sampling`),
//! so the settings a user posts are what a worker runs.

use serde::{Deserialize, Serialize};

/// One thinking budget (s1's budget forcing).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(default)]
pub struct BudgetSpec {
    /// Thinking is cut here and `Final Answer:` appended (`None`: uncut).
    pub max_thinking_tokens: Option<u32>,
    /// A try to stop before this is answered with `Wait`.
    pub min_thinking_tokens: u32,
    /// The model's first N tries to stop are answered with `Wait`.
    pub wait_extensions: u32,
}

/// How tokens are picked.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Decoding {
    /// 0 is greedy.
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: u32,
    pub seed: u64,
    /// Answer tokens after thinking.
    pub max_answer_tokens: u32,
}

impl Default for Decoding {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
            max_answer_tokens: 256,
        }
    }
}

/// `POST /api/evals`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewEval {
    /// A model's id or name, or a run's (its final model).
    pub model: String,
    /// A dataset's id or name; its current version is pinned.
    pub dataset: String,
    /// Pin this version (1, 2, …) instead of the current one.
    #[serde(default)]
    pub version: Option<i64>,
    #[serde(default)]
    pub name: Option<String>,
    pub budgets: Vec<BudgetSpec>,
    #[serde(default)]
    pub decoding: Option<Decoding>,
    /// How answers are extracted: `math` (default), `gsm8k` or `choice`.
    #[serde(default)]
    pub preset: Option<String>,
    /// Evaluate only the version's first N rows.
    #[serde(default)]
    pub limit: Option<u32>,
}

/// An eval a run makes of itself as it trains (`NewRun.evals`): the dataset and budgets of a
/// [`NewEval`], at every `every_steps`-th step's checkpoint (none: only the final model) and
/// at the end.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunEval {
    pub dataset: String,
    pub budgets: Vec<BudgetSpec>,
    #[serde(default)]
    pub decoding: Option<Decoding>,
    #[serde(default)]
    pub preset: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
    /// Evaluate the checkpoints of steps that are multiples of this (the run's
    /// `checkpoint_every` decides which steps have one).
    #[serde(default)]
    pub every_steps: Option<u32>,
}

impl RunEval {
    /// The eval of `model` this asks for.
    pub fn new_eval(&self, model: String, name: String) -> NewEval {
        NewEval {
            model,
            dataset: self.dataset.clone(),
            version: None,
            name: Some(name),
            budgets: self.budgets.clone(),
            decoding: self.decoding,
            preset: self.preset.clone(),
            limit: self.limit,
        }
    }
}

/// Accuracy and thinking under one budget.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BudgetResult {
    pub budget: BudgetSpec,
    /// Examples graded so far under this budget.
    pub n: i64,
    pub correct: i64,
    pub accuracy: f64,
    pub mean_thinking_tokens: f64,
    /// s1's Control: the share whose thinking stayed within the budget.
    pub control: f64,
}

/// `GET /api/evals/{id}` (and each item of `GET /api/evals`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalSummary {
    pub id: i64,
    pub name: String,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled` (its job's).
    pub status: String,
    pub model_id: i64,
    pub model_name: String,
    pub run_id: Option<i64>,
    /// The run's step its model was taken at (an eval the run made as it trained).
    #[serde(default)]
    pub step: Option<i64>,
    pub dataset_id: i64,
    pub dataset_name: String,
    pub dataset_version: i64,
    pub n_examples: i64,
    /// Graded (example, budget) pairs so far, of `n_examples × budgets.len()`.
    pub done: i64,
    pub budgets: Vec<BudgetResult>,
    pub decoding: Decoding,
    pub preset: String,
    /// s1's Scaling: the mean slope of accuracy against mean thinking tokens over all pairs of
    /// budgets, per thinking token (`None` with fewer than two distinct means).
    pub scaling: Option<f64>,
    /// s1's Performance: the best accuracy.
    pub performance: f64,
    /// s1's Control over every graded pair.
    pub control: f64,
    pub error: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

/// One graded (example, budget) pair: `record` is the engine's `EvalRecord` (question,
/// reference, thinking and answer apart with each forced `Wait` and the cut marked, extracted
/// answer, verdict, reason, token counts, seconds).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalExample {
    pub budget_index: i64,
    pub example_index: i64,
    pub correct: bool,
    pub thinking_tokens: i64,
    pub attempt: i64,
    pub record: serde_json::Value,
}

/// An eval job's inputs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalWork {
    pub eval_id: i64,
    pub model_id: i64,
    pub model_name: String,
    /// `worker`: the model lives only on workers' disks.
    pub model_origin: String,
    pub dataset_version_id: i64,
    pub n_examples: i64,
    /// The engine's `EvalSettings`.
    pub settings: serde_json::Value,
    /// `(budget_index, example_index)` pairs an earlier attempt already graded: skip them.
    pub done: Vec<(i64, i64)>,
}

/// One graded pair a worker uploads (`POST /api/worker/jobs/{id}/eval/records`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalRecordUpload {
    pub budget_index: i64,
    pub example_index: i64,
    pub correct: bool,
    pub thinking_tokens: i64,
    pub record: serde_json::Value,
}

/// `GET /api/evals/{a}/flips/{b}`: the questions two evals both graded, matched by question
/// text, at one budget of each, and which of them flipped.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalFlips {
    pub a: i64,
    pub b: i64,
    pub budget_a: i64,
    pub budget_b: i64,
    /// Questions graded in both.
    pub shared: i64,
    pub both_right: i64,
    pub both_wrong: i64,
    pub n_right_to_wrong: i64,
    pub n_wrong_to_right: i64,
    /// Right in `a`, wrong in `b` (the first [`MAX_FLIPS`], in `a`'s order).
    pub right_to_wrong: Vec<Flip>,
    /// Wrong in `a`, right in `b`.
    pub wrong_to_right: Vec<Flip>,
}

/// Flipped questions listed per direction (the counts are exact).
pub const MAX_FLIPS: usize = 500;

/// One question that flipped between two evals.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Flip {
    pub question: String,
    pub reference: String,
    pub a_example: i64,
    pub b_example: i64,
    pub a_extracted: Option<String>,
    pub b_extracted: Option<String>,
}
