//! Planning a run: the engine config (the s1 recipe, then the request's overrides, checked),
//! the device kind it asks for, the memory it needs, and what a request resolves to.

use std::path::PathBuf;

use sqlx::SqlitePool;
use still_api::{MemoryEstimate, ModelSummary, NewRun, RunMethod, RunParams};
use still_engine::loss::Divergence;
use still_engine::train::{Method, TrainConfig};

use super::store;
use crate::AppState;
use crate::data::datasets;
use crate::error::{Error, Result};
use crate::http::Team;
use crate::models::{FINAL_SUFFIX, resolve_model};
use crate::names::{MAX_NAME_CHARS, validate_name};

/// A run's name: a valid name that leaves room for its final model's `-final`.
pub fn validate_run_name(name: &str) -> Result<String> {
    let name = validate_name("run", name)?;
    let max = MAX_NAME_CHARS - FINAL_SUFFIX.len();
    if name.chars().count() > max {
        return Err(Error::BadRequest(format!(
            "name: a run name is at most {max} characters (its final model is named '<run>{FINAL_SUFFIX}')"
        )));
    }
    Ok(name)
}

/// The engine config for a run: the s1 recipe, then the request's overrides.
pub fn train_config(method: &str, teacher_id: Option<i64>, p: &RunParams) -> Result<TrainConfig> {
    let method = match RunMethod::parse(method) {
        Some(RunMethod::Sft) => Method::Sft,
        Some(RunMethod::Kd) => Method::Kd {
            // The worker replaces this with its local copy of the teacher.
            teacher: PathBuf::from(format!(
                "model:{}",
                teacher_id.ok_or_else(|| Error::BadRequest(
                    "teacher: method 'kd' needs a teacher".into()
                ))?
            )),
            alpha: p.alpha.unwrap_or(0.5),
            temperature: p.temperature.unwrap_or(2.0),
            divergence: match p.divergence.as_deref().unwrap_or("forward_kl") {
                "forward_kl" => Divergence::ForwardKl,
                "reverse_kl" => Divergence::ReverseKl,
                "jsd" => Divergence::Jsd {
                    beta: p.jsd_beta.unwrap_or(0.5),
                },
                other => {
                    return Err(Error::BadRequest(format!(
                        "params.divergence: '{other}' is not one of forward_kl, reverse_kl, jsd"
                    )));
                }
            },
            top_k: match p.teacher_top_k {
                Some(k) if k == 0 || k > still_engine::topk::MAX_K => {
                    return Err(Error::BadRequest(format!(
                        "params.teacher_top_k: {k} must be 1..={}",
                        still_engine::topk::MAX_K
                    )));
                }
                k => k,
            },
        },
        None => {
            return Err(Error::BadRequest(format!(
                "method: '{method}' is not one of sft, kd"
            )));
        }
    };
    if matches!(method, Method::Sft) && p.teacher_top_k.is_some() {
        return Err(Error::BadRequest(
            "params.teacher_top_k: only for method 'kd'".into(),
        ));
    }
    let mut c = TrainConfig {
        method,
        ..Default::default()
    };
    c.max_steps = p.max_steps.or(c.max_steps);
    c.epochs = p.epochs.unwrap_or(c.epochs);
    c.lr = p.lr.unwrap_or(c.lr);
    c.batch_size = p.batch_size.unwrap_or(c.batch_size);
    c.grad_accum = p.grad_accum.unwrap_or(c.grad_accum);
    c.max_seq_len = p.max_seq_len.unwrap_or(c.max_seq_len);
    c.warmup_ratio = p.warmup_ratio.unwrap_or(c.warmup_ratio);
    c.weight_decay = p.weight_decay.unwrap_or(c.weight_decay);
    c.seed = p.seed.unwrap_or(c.seed);
    c.checkpoint_every = p.checkpoint_every.or(c.checkpoint_every);
    if let Some(long) = p.long_examples.as_deref() {
        c.long_examples = match long {
            "truncate" => still_engine::data::LongExamples::Truncate,
            "skip" => still_engine::data::LongExamples::Skip,
            other => {
                return Err(Error::BadRequest(format!(
                    "params.long_examples: '{other}' is not one of truncate, skip"
                )));
            }
        };
    }
    if let Some(precision) = p.precision.as_deref() {
        c.precision = precision.parse().map_err(|_| {
            Error::BadRequest(format!(
                "params.precision: '{precision}' is not one of f32, bf16"
            ))
        })?;
    }
    let check = |ok: bool, field: &str, rule: &str| {
        if ok {
            Ok(())
        } else {
            Err(Error::BadRequest(format!("params.{field}: {rule}")))
        }
    };
    check(c.lr > 0.0 && c.lr < 1.0, "lr", "must be in (0, 1)")?;
    check(c.epochs >= 1, "epochs", "must be at least 1")?;
    check(
        c.batch_size >= 1 && c.batch_size <= 1024,
        "batch_size",
        "must be 1..=1024",
    )?;
    check(
        c.grad_accum >= 1 && c.grad_accum <= 1024,
        "grad_accum",
        "must be 1..=1024",
    )?;
    check(
        c.max_seq_len >= 8 && c.max_seq_len <= 131_072,
        "max_seq_len",
        "must be 8..=131072",
    )?;
    check(
        (0.0..1.0).contains(&c.warmup_ratio),
        "warmup_ratio",
        "must be in [0, 1)",
    )?;
    check(c.max_steps != Some(0), "max_steps", "must be at least 1")?;
    Ok(c)
}

/// The device kind a run asks for (`params.device`).
fn run_device(p: &RunParams) -> Result<Option<&'static str>> {
    match p.device.as_deref().map(str::trim) {
        None | Some("") | Some("any") => Ok(None),
        Some("cpu") => Ok(Some("cpu")),
        Some(d) if d == "cuda" || d.starts_with("cuda:") => Ok(Some("cuda")),
        Some(other) => Err(Error::BadRequest(format!(
            "params.device: '{other}' is not one of any, cpu, cuda"
        ))),
    }
}

fn model_config(model: &ModelSummary, config: &str) -> Result<still_engine::config::Qwen2Config> {
    serde_json::from_str(config)
        .map_err(|e| Error::Internal(format!("model '{}': stored config.json: {e}", model.name)))
}

/// The memory a run needs: parameters, gradients, AdamW moments, a teacher, and activations at
/// its micro-batch × the tokens of the dataset's longest row (capped by `max_seq_len`). A run
/// that may land on a GPU (`device` any or cuda) is estimated with the GPU's larger attention.
async fn estimate_memory(
    pool: &SqlitePool,
    model: &ModelSummary,
    teacher: Option<&ModelSummary>,
    dataset_id: i64,
    config: &TrainConfig,
    device: Option<&str>,
) -> Result<MemoryEstimate> {
    let on_cpu = device == Some("cpu");
    let student_text = store::model_config_text(pool, model.id).await?;
    let teacher_text = match teacher {
        Some(t) => Some(store::model_config_text(pool, t.id).await?),
        None => None,
    };
    // A model on workers' disks registered without its config: the size is unknown.
    if student_text == "{}" || teacher_text.as_deref() == Some("{}") {
        return Ok(MemoryEstimate::default());
    }
    let student = model_config(model, &student_text)?;
    let teacher_config = match (teacher, &teacher_text) {
        (Some(t), Some(text)) => Some(model_config(t, text)?),
        _ => None,
    };
    let longest = store::longest_example(pool, dataset_id).await?;
    let seq = match longest {
        // The tokenizer is on the workers' disks: count with the longest row's characters / 3.
        Some((question, thinking, answer)) if model.origin == "worker" => {
            (question.len() + thinking.len() + answer.len()) / 3 + 16
        }
        Some((question, thinking, answer)) => {
            let (dir, template) = (PathBuf::from(&model.path), config.template.clone());
            let row = still_api::ExampleFields {
                question,
                thinking,
                answer,
                ..Default::default()
            };
            tokio::task::spawn_blocking(move || {
                still_engine::memory::sequence_tokens(&dir, &row, &template)
            })
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(crate::models::engine_error)?
        }
        None => config.max_seq_len,
    }
    .min(config.max_seq_len);
    let top_k = match &config.method {
        Method::Kd { top_k: Some(k), .. } => {
            // Target positions ≈ the dataset's tokens (bytes / 3), at most max_seq_len per row.
            let (rows, bytes) = store::live_size(pool, dataset_id).await?;
            let positions = (bytes as u64 / 3).min(rows as u64 * config.max_seq_len as u64);
            Some((*k, positions))
        }
        _ => None,
    };
    let e = still_engine::memory::estimate(
        &student,
        teacher_config.as_ref(),
        top_k,
        config.batch_size,
        seq,
        config.precision,
        on_cpu,
    );
    Ok(MemoryEstimate {
        n_params: e.n_params as i64,
        params_bytes: e.params_bytes as i64,
        grads_bytes: e.grads_bytes as i64,
        optimizer_bytes: e.optimizer_bytes as i64,
        activations_bytes: e.activations_bytes as i64,
        teacher_bytes: e.teacher_bytes as i64,
        total_bytes: e.total_bytes as i64,
    })
}

/// What a run request resolves to: its models, engine config, device kind, dataset and memory.
pub struct Plan {
    pub method: RunMethod,
    pub model: ModelSummary,
    pub teacher: Option<ModelSummary>,
    pub config: TrainConfig,
    pub device: Option<&'static str>,
    pub dataset: datasets::store::DatasetRow,
    pub estimate: MemoryEstimate,
}

/// Resolves and checks a run request (the same for creating a run and estimating one).
pub async fn plan(state: &AppState, team: Team, body: &NewRun) -> Result<Plan> {
    let team = team.id();
    let model = resolve_model(&state.db, team, &body.model).await?;
    let teacher = match &body.teacher {
        Some(t) if !t.is_empty() => Some(resolve_model(&state.db, team, t).await?),
        _ => None,
    };
    let instead = "use it as the teacher of a trace generation, then train on its traces";
    crate::models::engine_model(&model, "model", instead)?;
    if let Some(t) = &teacher {
        crate::models::engine_model(t, "teacher", instead)?;
    }
    let config = train_config(&body.method, teacher.as_ref().map(|t| t.id), &body.params)?;
    let method = match config.method {
        Method::Sft => RunMethod::Sft,
        Method::Kd { .. } => RunMethod::Kd,
    };
    // A sequence past the model's positions has no rotary embedding: refuse it now, not on
    // the worker after the dataset was downloaded.
    for m in [Some(&model), teacher.as_ref()].into_iter().flatten() {
        let stored = store::model_config_text(&state.db, m.id).await?;
        if stored != "{}" {
            let positions = model_config(m, &stored)?.max_position_embeddings;
            if config.max_seq_len > positions {
                return Err(Error::BadRequest(format!(
                    "params.max_seq_len: {} is more than model '{}' has positions for \
                     (max_position_embeddings {positions})",
                    config.max_seq_len, m.name
                )));
            }
        }
    }
    let device = run_device(&body.params)?;
    let dataset = datasets::store::resolve(&state.db, team, &body.dataset).await?;
    let estimate = estimate_memory(
        &state.db,
        &model,
        teacher.as_ref(),
        dataset.id,
        &config,
        device,
    )
    .await?;
    Ok(Plan {
        method,
        model,
        teacher,
        config,
        device,
        dataset,
        estimate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_params_override_the_s1_recipe_and_are_checked() {
        let c = train_config("sft", None, &RunParams::default()).unwrap();
        assert_eq!((c.lr, c.epochs, c.batch_size * c.grad_accum), (1e-5, 5, 16));
        let c = train_config(
            "sft",
            None,
            &RunParams {
                lr: Some(3e-3),
                max_steps: Some(20),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((c.lr, c.max_steps), (3e-3, Some(20)));
        assert_eq!(c.precision, still_engine::train::Precision::F32);
        let bf16 = |p: &str| {
            train_config(
                "sft",
                None,
                &RunParams {
                    precision: Some(p.into()),
                    ..Default::default()
                },
            )
        };
        assert_eq!(
            bf16("bf16").unwrap().precision,
            still_engine::train::Precision::Bf16
        );
        let err = bf16("fp8").unwrap_err().to_string();
        assert!(err.contains("params.precision: 'fp8'"), "{err}");
        let err = train_config("kd", None, &RunParams::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs a teacher"), "{err}");
        let err = train_config(
            "sft",
            None,
            &RunParams {
                batch_size: Some(0),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, "params.batch_size: must be 1..=1024");
    }
}
