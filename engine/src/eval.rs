//! Evaluation with budget forcing: every row under every budget, generated in batches by
//! [`crate::budget::think`] and graded by `still-grade`; s1's Control, Scaling and Performance
//! computed from the graded records ([`summarize`], which the server also uses on stored rows).

use std::time::Instant;

use still_api::ExampleFields;
pub use still_grade::{Preset, Verdict, last_boxed};

use crate::Result;
use crate::budget::{self, Budget, Forcing, ThinkRequest, Thought};
use crate::data::ChatTemplate;
use crate::generate::Sampling;
use crate::hf::ModelFolder;

/// What an evaluation runs: budgets × decoding, graded with one answer preset.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalSettings {
    pub budgets: Vec<Budget>,
    pub forcing: Forcing,
    pub sampling: Sampling,
    pub preset: Preset,
    /// Sequences generated together.
    pub batch_size: usize,
}

impl Default for EvalSettings {
    fn default() -> Self {
        Self {
            budgets: vec![Budget::default()],
            forcing: Forcing::default(),
            sampling: Sampling::default(),
            preset: Preset::Math,
            batch_size: 8,
        }
    }
}

/// One row under one budget, graded.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalRecord {
    /// The row's index in the evaluated rows.
    pub index: usize,
    /// The budget's index in the settings.
    pub budget: usize,
    pub question: String,
    pub reference: String,
    pub thought: Thought,
    pub extracted: Option<String>,
    pub correct: bool,
    pub reason: String,
    /// The wall time of the batch it ran in, shared equally by the batch's records.
    pub seconds: f64,
}

/// Accuracy and thinking under one budget.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BudgetResult {
    pub budget: Budget,
    pub n: usize,
    pub correct: usize,
    pub accuracy: f64,
    pub mean_thinking_tokens: f64,
    /// s1's Control: the share of records whose thinking stayed within the budget
    /// (at most the maximum, at least the minimum).
    pub control: f64,
}

/// An evaluation's results.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub budgets: Vec<BudgetResult>,
    /// s1's Scaling: the mean slope of accuracy against mean thinking tokens over every pair of
    /// budgets (accuracy per thinking token; `None` with fewer than two distinct means).
    pub scaling: Option<f64>,
    /// s1's Performance: the best accuracy over the budgets.
    pub performance: f64,
    /// s1's Control over all records.
    pub control: f64,
}

/// The reference answer of a row: its `answer`, or, for GSM8K-shaped rows whose answer is the
/// worked solution, the label after `#### `.
pub fn reference(answer: &str) -> String {
    let answer = answer.trim();
    match answer.rsplit_once("\n#### ") {
        Some((_, label)) => label.trim().to_string(),
        None => answer.strip_prefix("#### ").unwrap_or(answer).to_string(),
    }
}

/// Whether thinking of `thinking_tokens` stayed within `budget` (s1's Control).
pub fn within_budget(budget: &Budget, thinking_tokens: usize) -> bool {
    budget
        .max_thinking_tokens
        .is_none_or(|max| thinking_tokens <= max)
        && thinking_tokens >= budget.min_thinking_tokens
}

/// s1's Scaling over `(mean thinking tokens, accuracy)` points, one per budget: the mean slope
/// over every pair of points with different means (`None` when there is no such pair).
pub fn scaling(points: &[(f64, f64)]) -> Option<f64> {
    let mut slopes = Vec::new();
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            let dx = b.0 - a.0;
            if dx.abs() > f64::EPSILON {
                slopes.push((b.1 - a.1) / dx);
            }
        }
    }
    (!slopes.is_empty()).then(|| slopes.iter().sum::<f64>() / slopes.len() as f64)
}

/// What the results are computed from: one graded pair's budget, verdict and thinking length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub budget: usize,
    pub correct: bool,
    pub thinking_tokens: usize,
}

pub fn summarize(budgets: &[Budget], records: &[EvalRecord]) -> Report {
    let outcomes: Vec<Outcome> = records
        .iter()
        .map(|r| Outcome {
            budget: r.budget,
            correct: r.correct,
            thinking_tokens: r.thought.thinking_tokens,
        })
        .collect();
    summarize_outcomes(budgets, &outcomes)
}

/// Per-budget accuracy, mean thinking tokens and Control, then s1's Scaling, Performance and
/// overall Control (what the server shows from stored outcomes, too).
pub fn summarize_outcomes(budgets: &[Budget], outcomes: &[Outcome]) -> Report {
    let results: Vec<BudgetResult> = budgets
        .iter()
        .enumerate()
        .map(|(b, budget)| {
            let mine: Vec<&Outcome> = outcomes.iter().filter(|o| o.budget == b).collect();
            let n = mine.len();
            let correct = mine.iter().filter(|o| o.correct).count();
            let share = |count: usize| if n == 0 { 0.0 } else { count as f64 / n as f64 };
            BudgetResult {
                budget: *budget,
                n,
                correct,
                accuracy: share(correct),
                mean_thinking_tokens: if n == 0 {
                    0.0
                } else {
                    mine.iter().map(|o| o.thinking_tokens as f64).sum::<f64>() / n as f64
                },
                control: share(
                    mine.iter()
                        .filter(|o| within_budget(budget, o.thinking_tokens))
                        .count(),
                ),
            }
        })
        .collect();
    let measured: Vec<&BudgetResult> = results.iter().filter(|r| r.n > 0).collect();
    let points: Vec<(f64, f64)> = measured
        .iter()
        .map(|r| (r.mean_thinking_tokens, r.accuracy))
        .collect();
    let all_within = outcomes
        .iter()
        .filter(|o| {
            budgets
                .get(o.budget)
                .is_some_and(|b| within_budget(b, o.thinking_tokens))
        })
        .count();
    Report {
        scaling: scaling(&points),
        performance: measured.iter().map(|r| r.accuracy).fold(0.0, f64::max),
        control: if outcomes.is_empty() {
            0.0
        } else {
            all_within as f64 / outcomes.len() as f64
        },
        budgets: results,
    }
}

/// Evaluates every `(row, budget)` pair `done` does not already hold, in batches; `each` gets
/// every graded record as its batch finishes (a job reports them there, so a restart loses only
/// the batch in flight).
pub fn evaluate(
    folder: &ModelFolder,
    rows: &[ExampleFields],
    template: &ChatTemplate,
    settings: &EvalSettings,
    done: impl Fn(usize, usize) -> bool,
    mut each: impl FnMut(&EvalRecord) -> Result<()>,
) -> Result<Vec<EvalRecord>> {
    settings.sampling.validate()?;
    let pending: Vec<(usize, usize)> = (0..settings.budgets.len())
        .flat_map(|b| (0..rows.len()).map(move |i| (i, b)))
        .filter(|&(i, b)| !done(i, b))
        .collect();
    let mut records = Vec::with_capacity(pending.len());
    for batch in pending.chunks(settings.batch_size.max(1)) {
        let started = Instant::now();
        let requests: Vec<ThinkRequest> = batch
            .iter()
            .map(|&(i, b)| ThinkRequest {
                prompt: template.prompt(&rows[i].question),
                budget: settings.budgets[b],
                sampling: Sampling {
                    // Each row its own stream, the same whatever the batch it lands in.
                    seed: settings.sampling.seed ^ ((i as u64) << 20) ^ b as u64,
                    ..settings.sampling
                },
            })
            .collect();
        let thoughts = budget::think(folder, &requests, &settings.forcing)?;
        let seconds = started.elapsed().as_secs_f64() / batch.len() as f64;
        for (&(i, b), thought) in batch.iter().zip(thoughts) {
            let reference = reference(&rows[i].answer);
            let verdict = still_grade::grade(&reference, &thought.answer, settings.preset);
            let record = EvalRecord {
                index: i,
                budget: b,
                question: rows[i].question.clone(),
                reference,
                thought,
                extracted: verdict.extracted,
                correct: verdict.correct,
                reason: verdict.reason,
                seconds,
            };
            each(&record)?;
            records.push(record);
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::Finish;

    fn record(budget: usize, thinking_tokens: usize, correct: bool) -> EvalRecord {
        EvalRecord {
            index: 0,
            budget,
            question: String::new(),
            reference: String::new(),
            thought: Thought {
                thinking: String::new(),
                answer: String::new(),
                thinking_tokens,
                answer_tokens: 0,
                waits: Vec::new(),
                cut: None,
                stop_attempts: 0,
                finish: Finish::Stop,
            },
            extracted: None,
            correct,
            reason: String::new(),
            seconds: 0.0,
        }
    }

    #[test]
    fn control_scaling_and_performance_as_s1_defines_them() {
        let budgets = [
            Budget {
                max_thinking_tokens: Some(100),
                ..Default::default()
            },
            Budget {
                max_thinking_tokens: Some(200),
                ..Default::default()
            },
            Budget {
                max_thinking_tokens: Some(400),
                ..Default::default()
            },
        ];
        let records = vec![
            record(0, 100, false),
            record(0, 100, true),
            record(1, 200, true),
            record(1, 200, true),
            record(2, 400, true),
            record(2, 500, false), // over its budget
        ];
        let r = summarize(&budgets, &records);
        assert_eq!(r.budgets[0].accuracy, 0.5);
        assert_eq!(r.budgets[1].accuracy, 1.0);
        assert_eq!(r.budgets[2].mean_thinking_tokens, 450.0);
        assert_eq!(r.budgets[2].control, 0.5);
        assert!((r.control - 5.0 / 6.0).abs() < 1e-12);
        assert_eq!(r.performance, 1.0);
        // Slopes: (1 - .5)/100, (.5 - .5)/350, (.5 - 1)/250.
        let expect = (0.5 / 100.0 + 0.0 - 0.5 / 250.0) / 3.0;
        assert!((r.scaling.unwrap() - expect).abs() < 1e-12, "{r:?}");
    }

    #[test]
    fn gsm8k_rows_are_graded_against_their_label() {
        assert_eq!(reference("She has 3 + 4 = 7\n#### 7"), "7");
        assert_eq!(reference("#### 1,080"), "1,080");
        assert_eq!(reference(" \\frac{1}{2} "), "\\frac{1}{2}");
    }
}
