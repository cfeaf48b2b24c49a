//! The runs area: creating a run plans it (the s1 recipe and overrides, the memory estimate,
//! where it may run), pins a dataset version and queues a `train` job; listing, metrics and
//! cancel. `files` serves what a run made; `worker` is the train job's side of the protocol.

pub mod files;
pub mod worker;

use std::path::PathBuf;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sqlx::{FromRow, SqlitePool};
use still_api::{
    MemoryEstimate, MetricPoint, ModelSummary, NewRun, RunEstimate, RunParams, RunSummary,
    WorkerFit,
};
use still_engine::loss::Divergence;
use still_engine::train::{Method, TrainConfig};

use crate::AppState;
use crate::data::{datasets, versions};
use crate::error::{ApiJson, Error, Result, on_unique};
use crate::http::Team;
use crate::jobs::queue;
use crate::models::{FINAL_SUFFIX, resolve_model};
use crate::names::{MAX_NAME_CHARS, validate_name};

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(files::router())
        .merge(worker::router())
        .route("/api/runs", get(list_runs).post(create_run))
        .route("/api/runs/estimate", post(estimate_route))
        .route("/api/runs/{run}", get(get_run))
        .route("/api/runs/{run}/metrics", get(get_metrics))
        .route("/api/runs/{run}/cancel", post(cancel))
}

/// A run's name: a valid name that leaves room for its final model's `-final`.
fn validate_run_name(name: &str) -> Result<String> {
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
    let method = match method {
        "sft" => Method::Sft,
        "kd" => Method::Kd {
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
        other => {
            return Err(Error::BadRequest(format!(
                "method: '{other}' is not one of sft, kd"
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
    let stored = |id: i64| {
        sqlx::query_scalar::<_, String>("SELECT config FROM models WHERE id = ?")
            .bind(id)
            .fetch_one(pool)
    };
    let student_text = stored(model.id).await?;
    let teacher_text = match teacher {
        Some(t) => Some(stored(t.id).await?),
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
    let longest: Option<(String, String, String)> = sqlx::query_as(
        "SELECT question, thinking, answer FROM examples WHERE dataset_id = ? AND deleted_at IS NULL \
         ORDER BY n_bytes DESC LIMIT 1",
    )
    .bind(dataset_id)
    .fetch_optional(pool)
    .await?;
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
            let (rows, bytes): (i64, i64) = sqlx::query_as(
                "SELECT COUNT(*), COALESCE(SUM(n_bytes), 0) FROM examples \
                 WHERE dataset_id = ? AND deleted_at IS NULL",
            )
            .bind(dataset_id)
            .fetch_one(pool)
            .await?;
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
struct Plan {
    model: ModelSummary,
    teacher: Option<ModelSummary>,
    config: TrainConfig,
    device: Option<&'static str>,
    dataset: datasets::DatasetRow,
    estimate: MemoryEstimate,
}

/// Resolves and checks a run request (the same for creating a run and estimating one).
async fn plan(state: &AppState, team: Team, body: &NewRun) -> Result<Plan> {
    let team = team.id();
    let model = resolve_model(&state.db, team, &body.model).await?;
    let teacher = match &body.teacher {
        Some(t) if !t.is_empty() => Some(resolve_model(&state.db, team, t).await?),
        _ => None,
    };
    let config = train_config(&body.method, teacher.as_ref().map(|t| t.id), &body.params)?;
    // A sequence past the model's positions has no rotary embedding: refuse it now, not on
    // the worker after the dataset was downloaded.
    for m in [Some(&model), teacher.as_ref()].into_iter().flatten() {
        let stored: String = sqlx::query_scalar("SELECT config FROM models WHERE id = ?")
            .bind(m.id)
            .fetch_one(&state.db)
            .await?;
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
    let dataset = datasets::resolve(&state.db, team, &body.dataset).await?;
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
        model,
        teacher,
        config,
        device,
        dataset,
        estimate,
    })
}

/// `POST /api/runs/estimate`: what the run would need, and which workers could run it.
async fn estimate_route(
    State(state): State<AppState>,
    team: Team,
    ApiJson(body): ApiJson<NewRun>,
) -> Result<Json<RunEstimate>> {
    let Plan {
        model,
        teacher,
        device,
        estimate,
        ..
    } = plan(&state, team, &body).await?;
    let workers: Vec<WorkerFit> = crate::jobs::workers::workers(&state.db)
        .await?
        .into_iter()
        .filter(|w| w.state != "revoked")
        .map(|w| WorkerFit {
            fits: device.is_none_or(|d| still_api::device_kind(&w.device) == Some(d))
                && (w.memory_bytes == 0 || estimate.total_bytes <= w.memory_bytes)
                && [Some(&model), teacher.as_ref()]
                    .into_iter()
                    .flatten()
                    .all(|m| m.origin != "worker" || w.models.contains(&m.name)),
            id: w.id,
            name: w.name,
            device: w.device,
            memory_bytes: w.memory_bytes,
            state: w.state,
        })
        .collect();
    let feasible = workers.iter().any(|w| w.fits);
    let mib = |b: i64| b / (1 << 20);
    let message = if estimate.total_bytes == 0 {
        "the model lives on workers' disks and was registered without its config: memory \
         cannot be estimated"
            .to_string()
    } else if workers.is_empty() {
        "no worker is registered yet; the run waits in the queue until one is".to_string()
    } else if feasible {
        format!(
            "needs about {} MiB; {} of {} workers can run it",
            mib(estimate.total_bytes),
            workers.iter().filter(|w| w.fits).count(),
            workers.len()
        )
    } else {
        let largest = workers.iter().map(|w| w.memory_bytes).max().unwrap_or(0);
        format!(
            "needs about {} MiB but no {}worker can run it (the largest has {} MiB): lower \
             batch_size or max_seq_len, or add a bigger worker",
            mib(estimate.total_bytes),
            device.map(|d| format!("{d} ")).unwrap_or_default(),
            mib(largest)
        )
    };
    Ok(Json(RunEstimate {
        estimate,
        workers,
        feasible,
        message,
    }))
}

/// The version a new run trains on: the latest one when the dataset has not changed since,
/// else a new one.
async fn pin_version(
    pool: &SqlitePool,
    dataset_id: i64,
    run_name: &str,
) -> Result<still_api::DatasetVersion> {
    // The latest version is current when it was cut at the dataset's present revision.
    let current: Option<i64> = sqlx::query_scalar(
        "SELECT v.version FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id \
         WHERE v.dataset_id = ? AND v.dataset_revision = d.revision ORDER BY v.version DESC LIMIT 1",
    )
    .bind(dataset_id)
    .fetch_optional(pool)
    .await?;
    match current {
        Some(v) => versions::find(pool, dataset_id, v).await,
        None => versions::create(pool, dataset_id, &format!("pinned by run '{run_name}'")).await,
    }
}

async fn create_run(
    State(state): State<AppState>,
    team: Team,
    ApiJson(body): ApiJson<NewRun>,
) -> Result<(StatusCode, Json<RunSummary>)> {
    let name = validate_run_name(&body.name)?;
    let Plan {
        model,
        teacher,
        config,
        device,
        dataset,
        estimate,
    } = plan(&state, team, &body).await?;
    let team = team.id();
    let taken: Option<i64> =
        sqlx::query_scalar("SELECT id FROM runs WHERE team_id = ? AND name = ?")
            .bind(team)
            .bind(&name)
            .fetch_optional(&state.db)
            .await?;
    if taken.is_some() {
        return Err(Error::Conflict(format!(
            "name: a run named '{name}' already exists"
        )));
    }
    let version = pin_version(&state.db, dataset.id, &name).await?;
    if version.n_rows == 0 {
        return Err(Error::Unprocessable(format!(
            "dataset: '{}' has no rows to train on",
            dataset.name
        )));
    }
    let mut db = crate::db::write_tx(&state.db).await?;
    let run_id: i64 = sqlx::query_scalar(
        "INSERT INTO runs (team_id, name, method, model_id, teacher_id, dataset_id, dataset_version_id, params) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(team)
    .bind(&name)
    .bind(&body.method)
    .bind(model.id)
    .bind(teacher.as_ref().map(|t| t.id))
    .bind(dataset.id)
    .bind(version.id)
    .bind(serde_json::to_string(&config).map_err(|e| Error::Internal(e.to_string()))?)
    .fetch_one(&mut *db)
    .await
    .map_err(|e| on_unique(e, || format!("name: a run named '{name}' already exists")))?;
    // What a worker needs to claim the job: the device, the memory, the models only workers have.
    let worker_models = std::iter::once(&model)
        .chain(teacher.as_ref())
        .filter(|m| m.origin == "worker")
        .map(|m| m.name.clone())
        .collect();
    queue::enqueue(
        &mut db,
        &queue::NewJob {
            team_id: team,
            kind: still_api::JobKind::Train,
            run_id,
            max_attempts: body.max_attempts.unwrap_or(3).clamp(1, 20),
            device,
            min_memory_bytes: estimate.total_bytes,
            worker_models,
        },
    )
    .await?;
    crate::store::logs::server_line(
        &mut *db,
        run_id,
        "info",
        &format!(
            "queued: {} of model '{}' on dataset '{}' v{} ({} rows, {}); needs a {} worker with {} MiB",
            body.method,
            model.name,
            dataset.name,
            version.version,
            version.n_rows,
            &version.content_hash[..12.min(version.content_hash.len())],
            device.unwrap_or("any"),
            estimate.total_bytes / (1 << 20)
        ),
    )
    .await?;
    db.commit().await?;
    state.events.touch(run_id);
    Ok((
        StatusCode::CREATED,
        Json(load_run(&state.db, team, &run_id.to_string()).await?),
    ))
}

#[derive(FromRow)]
struct RunRow {
    id: i64,
    name: String,
    method: String,
    model_id: i64,
    model: String,
    teacher_id: Option<i64>,
    dataset_id: i64,
    dataset: String,
    dataset_version: i64,
    dataset_version_hash: String,
    status: String,
    attempts: i64,
    max_attempts: i64,
    cancel_requested: bool,
    error: Option<String>,
    worker_id: Option<i64>,
    device: Option<String>,
    min_memory_bytes: i64,
    output_model_id: Option<i64>,
    params: String,
    n_trained: Option<i64>,
    n_truncated: Option<i64>,
    n_skipped: Option<i64>,
    last_step: Option<i64>,
    last_loss: Option<f64>,
    created_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
}

const RUN_SELECT: &str = "SELECT r.id, r.name, r.method, r.model_id, m.name AS model, r.teacher_id, r.dataset_id, \
     d.name AS dataset, v.version AS dataset_version, v.content_hash AS dataset_version_hash, j.status, j.attempts, \
     j.max_attempts, j.cancel_requested, j.error, coalesce(j.lease_owner, j.last_worker) AS worker_id, j.device, j.min_memory_bytes, \
     r.output_model_id, r.params, r.n_trained, r.n_truncated, r.n_skipped, \
     (SELECT max(step) FROM run_metrics x WHERE x.run_id = r.id AND x.name = 'loss') AS last_step, \
     (SELECT value FROM run_metrics x WHERE x.run_id = r.id AND x.name = 'loss' ORDER BY step DESC LIMIT 1) AS last_loss, \
     r.created_at, j.started_at, j.finished_at \
     FROM runs r JOIN jobs j ON j.run_id = r.id JOIN models m ON m.id = r.model_id \
     JOIN datasets d ON d.id = r.dataset_id JOIN dataset_versions v ON v.id = r.dataset_version_id";

impl TryFrom<RunRow> for RunSummary {
    type Error = Error;
    fn try_from(r: RunRow) -> Result<Self> {
        Ok(RunSummary {
            config: serde_json::from_str(&r.params)
                .map_err(|e| Error::Internal(format!("run {}: params: {e}", r.id)))?,
            examples: r.n_trained.map(|n_trained| still_api::RunExamples {
                n_trained,
                n_truncated: r.n_truncated.unwrap_or(0),
                n_skipped: r.n_skipped.unwrap_or(0),
            }),
            id: r.id,
            name: r.name,
            method: r.method,
            model_id: r.model_id,
            model: r.model,
            teacher_id: r.teacher_id,
            dataset_id: r.dataset_id,
            dataset: r.dataset,
            dataset_version: r.dataset_version,
            dataset_version_hash: r.dataset_version_hash,
            status: r.status,
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            cancel_requested: r.cancel_requested,
            error: r.error,
            worker_id: r.worker_id,
            device: r.device,
            min_memory_bytes: r.min_memory_bytes,
            output_model_id: r.output_model_id,
            last_step: r.last_step,
            last_loss: r.last_loss,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
        })
    }
}

/// A run of the team by id or name.
pub async fn load_run(pool: &SqlitePool, team_id: i64, reference: &str) -> Result<RunSummary> {
    let row: RunRow =
        crate::db::by_id_or_name(pool, RUN_SELECT, "r.", team_id, reference, "run").await?;
    row.try_into()
}

#[derive(Deserialize)]
struct RunFilter {
    status: Option<String>,
}

async fn list_runs(
    State(state): State<AppState>,
    team: Team,
    Query(filter): Query<RunFilter>,
) -> Result<Json<Vec<RunSummary>>> {
    let rows: Vec<RunRow> = sqlx::query_as(&format!(
        "{RUN_SELECT} WHERE r.team_id = ? AND (?2 IS NULL OR j.status = ?2) ORDER BY r.id DESC"
    ))
    .bind(team.id())
    .bind(filter.status.filter(|s| !s.is_empty()))
    .fetch_all(&state.db)
    .await?;
    Ok(Json(
        rows.into_iter()
            .map(TryInto::try_into)
            .collect::<Result<_>>()?,
    ))
}

async fn get_run(
    State(state): State<AppState>,
    team: Team,
    Path(run): Path<String>,
) -> Result<Json<RunSummary>> {
    Ok(Json(load_run(&state.db, team.id(), &run).await?))
}

/// The most points a downsampled curve may ask for (per metric).
pub const MAX_POINTS: usize = 1_000_000;

#[derive(Deserialize)]
struct MetricQuery {
    name: Option<String>,
    /// Downsample to about this many points per metric (min and max of each bucket kept).
    max_points: Option<usize>,
}

async fn get_metrics(
    State(state): State<AppState>,
    team: Team,
    Path(run): Path<String>,
    Query(query): Query<MetricQuery>,
) -> Result<Json<Vec<MetricPoint>>> {
    let run = load_run(&state.db, team.id(), &run).await?;
    let name = query.name.as_deref();
    if let Some(max) = query.max_points
        && !(2..=MAX_POINTS).contains(&max)
    {
        return Err(Error::BadRequest(format!(
            "max_points: {max} must be 2..={MAX_POINTS}"
        )));
    }
    Ok(Json(match query.max_points {
        Some(max) => crate::store::metrics::downsampled(&state.db, run.id, name, max).await?,
        None => crate::store::metrics::all(&state.db, run.id, name).await?,
    }))
}

async fn cancel(
    State(state): State<AppState>,
    team: Team,
    Path(run): Path<String>,
) -> Result<Json<RunSummary>> {
    let run = load_run(&state.db, team.id(), &run).await?;
    queue::cancel_for_run(&state.db, run.id).await?;
    state.events.touch(run.id);
    Ok(Json(
        load_run(&state.db, team.id(), &run.id.to_string()).await?,
    ))
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
