//! Runs and the model registry: creating a run pins a dataset version and queues a `train` job.

use std::path::PathBuf;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sqlx::{FromRow, SqlitePool};
use still_api::{
    MemoryEstimate, MetricPoint, ModelSummary, NewModel, NewRun, RunEstimate, RunParams,
    RunSummary, WorkerFit,
};
use still_engine::loss::Divergence;
use still_engine::train::{Method, TrainConfig};

use crate::AppState;
use crate::datasets;
use crate::error::{ApiJson, Error, Result, on_unique};
use crate::queue;
use crate::versions;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/models", get(list_models).post(create_model))
        .route("/api/models/{model}", get(get_model))
        .route("/api/runs", get(list_runs).post(create_run))
        .route("/api/runs/estimate", post(estimate_route))
        .route("/api/runs/{run}", get(get_run))
        .route("/api/runs/{run}/metrics", get(get_metrics))
        .route("/api/runs/{run}/cancel", post(cancel))
}

#[derive(FromRow)]
struct ModelRow {
    id: i64,
    name: String,
    origin: String,
    path: String,
    run_id: Option<i64>,
    n_params: i64,
    vocab_size: i64,
    created_at: String,
}

impl From<ModelRow> for ModelSummary {
    fn from(r: ModelRow) -> Self {
        ModelSummary {
            id: r.id,
            name: r.name,
            origin: r.origin,
            path: r.path,
            run_id: r.run_id,
            n_params: r.n_params,
            vocab_size: r.vocab_size,
            created_at: r.created_at,
        }
    }
}

const MODEL_COLUMNS: &str = "id, name, origin, path, run_id, n_params, vocab_size, created_at";

/// Finds a model of the team by id or name.
pub async fn resolve_model(
    pool: &SqlitePool,
    team_id: i64,
    reference: &str,
) -> Result<ModelSummary> {
    let select = format!("SELECT {MODEL_COLUMNS} FROM models");
    let row: ModelRow =
        crate::db::by_id_or_name(pool, &select, "", team_id, reference, "model").await?;
    Ok(row.into())
}

async fn list_models(State(state): State<AppState>) -> Result<Json<Vec<ModelSummary>>> {
    let rows: Vec<ModelRow> = sqlx::query_as(&format!(
        "SELECT {MODEL_COLUMNS} FROM models WHERE team_id = ? ORDER BY id DESC"
    ))
    .bind(state.team_id())
    .fetch_all(&state.db)
    .await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

async fn get_model(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<ModelSummary>> {
    Ok(Json(
        resolve_model(&state.db, state.team_id(), &model).await?,
    ))
}

fn engine_error(e: still_engine::EngineError) -> Error {
    Error::Unprocessable(e.to_string())
}

async fn create_model(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewModel>,
) -> Result<(StatusCode, Json<ModelSummary>)> {
    let model = create(&state.db, &state.config.data_dir, state.team_id(), &body).await?;
    Ok((StatusCode::CREATED, Json(model)))
}

/// At most this much text (bytes, whole rows) trains a new model's tokenizer: the rows are read
/// in pages until it is reached, so a large dataset is never read into memory whole.
pub const MAX_TOKENIZER_TEXT_BYTES: usize = 64 << 20;
/// Largest vocabulary a tokenizer trained here may have (Qwen2.5's is 151,665).
pub const MAX_SCRATCH_VOCAB: usize = 262_144;

/// The dataset text a new tokenizer is trained on: live rows in id order, up to `budget` bytes.
async fn tokenizer_texts(pool: &SqlitePool, dataset_id: i64, budget: usize) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    let (mut after, mut used) = (0i64, 0usize);
    loop {
        let page: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, question || char(10) || thinking || char(10) || answer || char(10) || coalesce(solution, '') \
             FROM examples WHERE dataset_id = ? AND deleted_at IS NULL AND id > ? ORDER BY id LIMIT 500",
        )
        .bind(dataset_id)
        .bind(after)
        .fetch_all(pool)
        .await?;
        let Some((last, _)) = page.last() else {
            return Ok(texts);
        };
        after = *last;
        for (_, text) in page {
            used += text.len();
            if used > budget && !texts.is_empty() {
                return Ok(texts);
            }
            texts.push(text);
        }
    }
}

/// Whether the team already has a model of that name.
async fn model_name_taken(pool: &SqlitePool, team: i64, name: &str) -> Result<bool> {
    let taken: Option<i64> =
        sqlx::query_scalar("SELECT id FROM models WHERE team_id = ? AND name = ?")
            .bind(team)
            .bind(name)
            .fetch_optional(pool)
            .await?;
    Ok(taken.is_some())
}

fn taken_message(name: &str) -> String {
    format!("name: a model named '{name}' already exists")
}

/// Checks a model folder without loading its weights (headers only): what registering stores.
async fn inspect_folder(dir: PathBuf) -> Result<still_engine::hf::Inspected> {
    tokio::task::spawn_blocking(move || still_engine::hf::inspect(&dir))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(engine_error)
}

/// Inserts a model row (the one place a model is registered) and returns it.
pub async fn insert_model(
    db: &mut sqlx::SqliteConnection,
    team: i64,
    name: &str,
    origin: &str,
    path: &str,
    run_id: Option<i64>,
    inspected: &still_engine::hf::Inspected,
) -> Result<ModelSummary> {
    let row: ModelRow = sqlx::query_as(&format!(
        "INSERT INTO models (team_id, name, origin, path, run_id, n_params, vocab_size, config) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING {MODEL_COLUMNS}"
    ))
    .bind(team)
    .bind(name)
    .bind(origin)
    .bind(path)
    .bind(run_id)
    .bind(inspected.n_params as i64)
    .bind(inspected.config.vocab_size as i64)
    .bind(inspected.config.to_hf_json().to_string())
    .fetch_one(&mut *db)
    .await
    .map_err(|e| on_unique(e, || taken_message(name)))?;
    Ok(row.into())
}

/// Makes a model from scratch (`preset` + `tokenizer_dataset`) or registers an HF folder
/// (`path`); either way it must load (checked from its headers, without reading the weights).
///
/// A scratch model is written into a fresh staging folder and moved to `DATA_DIR/models/<id>-…`
/// only once its row is inserted, so a refused request (a taken name, a folder that does not
/// load) never touches another model's files.
pub async fn create(
    pool: &SqlitePool,
    data_dir: &std::path::Path,
    team: i64,
    body: &NewModel,
) -> Result<ModelSummary> {
    let name = datasets::validate_name("model", &body.name)?;
    match body.location.as_deref() {
        None | Some("server") => {}
        Some("workers") => return register_on_workers(pool, team, &name, body).await,
        Some(other) => {
            return Err(Error::BadRequest(format!(
                "location: '{other}' is not one of server, workers"
            )));
        }
    }
    if model_name_taken(pool, team, &name).await? {
        return Err(Error::Conflict(taken_message(&name)));
    }
    match (&body.path, &body.preset) {
        (Some(path), None) => {
            let path = PathBuf::from(path);
            let inspected = inspect_folder(path.clone()).await?;
            let path_text = path
                .canonicalize()
                .unwrap_or(path)
                .to_string_lossy()
                .into_owned();
            let mut db = crate::db::write_tx(pool).await?;
            let model =
                insert_model(&mut db, team, &name, "folder", &path_text, None, &inspected).await?;
            db.commit().await?;
            Ok(model)
        }
        (None, Some(preset)) => create_scratch(pool, data_dir, team, &name, preset, body).await,
        _ => Err(Error::BadRequest(
            "give either 'path' (an HF folder on the server) or 'preset' with 'tokenizer_dataset'"
                .into(),
        )),
    }
}

async fn create_scratch(
    pool: &SqlitePool,
    data_dir: &std::path::Path,
    team: i64,
    name: &str,
    preset: &str,
    body: &NewModel,
) -> Result<ModelSummary> {
    let reference = body.tokenizer_dataset.as_deref().ok_or_else(|| {
        Error::BadRequest(
            "tokenizer_dataset: a model from scratch trains its tokenizer on a dataset".into(),
        )
    })?;
    let vocab = body.vocab_size.unwrap_or(4096);
    if !(64..=MAX_SCRATCH_VOCAB).contains(&vocab) {
        return Err(Error::BadRequest(format!(
            "vocab_size: {vocab} must be 64..={MAX_SCRATCH_VOCAB}"
        )));
    }
    let dataset = datasets::resolve(pool, team, reference).await?;
    let texts = tokenizer_texts(pool, dataset.id, MAX_TOKENIZER_TEXT_BYTES).await?;
    if texts.is_empty() {
        return Err(Error::Unprocessable(format!(
            "tokenizer_dataset: dataset '{}' has no rows",
            dataset.name
        )));
    }
    let models = data_dir.join("models");
    std::fs::create_dir_all(&models)?;
    let suffix = random_suffix()?;
    let staging = models.join(format!(".staging-{suffix}"));
    let (preset, dir) = (preset.to_string(), staging.clone());
    let made = tokio::task::spawn_blocking(move || {
        still_engine::hf::create(&dir, &preset, &texts, vocab, 0).map(|_| ())
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()));
    let result = async {
        made?.map_err(engine_error)?;
        let inspected = inspect_folder(staging.clone()).await?;
        let mut db = crate::db::write_tx(pool).await?;
        let model = insert_model(&mut db, team, name, "scratch", "", None, &inspected).await?;
        let dest = models.join(format!("{}-{suffix}", model.id));
        still_engine::fsio::rename_durably(&staging, &dest)?;
        let path = dest.to_string_lossy().into_owned();
        let moved = async {
            sqlx::query("UPDATE models SET path = ? WHERE id = ?")
                .bind(&path)
                .bind(model.id)
                .execute(&mut *db)
                .await?;
            db.commit().await?;
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = moved {
            let _ = std::fs::remove_dir_all(&dest);
            return Err(e);
        }
        Ok(ModelSummary { path, ..model })
    }
    .await;
    if staging.exists() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// Registers a finished run's final model (in the completing transaction): `<run>-final`, or,
/// when another model already has that name, `<run>-final-run<id>` (the run name shortened to
/// fit the name limit). Never re-points a model that is not this run's; a retried completion
/// finds the run's own model again.
pub async fn register_final(
    db: &mut sqlx::SqliteConnection,
    team: i64,
    run_id: i64,
    run_name: &str,
    dir: &std::path::Path,
    inspected: &still_engine::hf::Inspected,
) -> Result<ModelSummary> {
    let path = dir.to_string_lossy().into_owned();
    let own: Option<ModelRow> = sqlx::query_as(&format!(
        "UPDATE models SET path = ? WHERE team_id = ? AND run_id = ? AND origin = 'run' RETURNING {MODEL_COLUMNS}"
    ))
    .bind(&path)
    .bind(team)
    .bind(run_id)
    .fetch_optional(&mut *db)
    .await?;
    if let Some(row) = own {
        return Ok(row.into());
    }
    let fit = |suffix: &str| -> String {
        let room = datasets::MAX_NAME_CHARS.saturating_sub(suffix.chars().count());
        let base: String = run_name.chars().take(room).collect();
        format!("{base}{suffix}")
    };
    let mut candidates = vec![
        fit(FINAL_SUFFIX),
        fit(&format!("{FINAL_SUFFIX}-run{run_id}")),
    ];
    candidates.extend((2..100).map(|n| fit(&format!("{FINAL_SUFFIX}-run{run_id}-{n}"))));
    for name in candidates {
        let taken: Option<i64> =
            sqlx::query_scalar("SELECT id FROM models WHERE team_id = ? AND name = ?")
                .bind(team)
                .bind(&name)
                .fetch_optional(&mut *db)
                .await?;
        if taken.is_none() {
            return insert_model(db, team, &name, "run", &path, Some(run_id), inspected).await;
        }
    }
    Err(Error::Conflict(format!(
        "run {run_id}: every name for its final model is taken"
    )))
}

/// Eight random bytes as hex: a folder name no other request can pick.
fn random_suffix() -> Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("random name: {e}")))?;
    Ok(hex::encode(bytes))
}

/// Registers a model whose folder lives only on workers' disks (`--models-dir DIR/<name>`).
/// Its `config.json`, when given, is checked and lets the server estimate memory.
async fn register_on_workers(
    pool: &SqlitePool,
    team: i64,
    name: &str,
    body: &NewModel,
) -> Result<ModelSummary> {
    if name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(Error::BadRequest(format!(
            "name: '{name}' must be usable as a folder name on the workers"
        )));
    }
    let (n_params, vocab_size, config) = match &body.config {
        Some(value) => {
            let config: still_engine::config::Qwen2Config =
                serde_json::from_value(value.clone())
                    .map_err(|e| Error::BadRequest(format!("config: {e}")))?;
            config
                .validate()
                .map_err(|e| Error::BadRequest(format!("config: {e}")))?;
            (
                still_engine::memory::n_params(&config) as i64,
                config.vocab_size as i64,
                config.to_hf_json().to_string(),
            )
        }
        None => (0, 0, "{}".to_string()),
    };
    let row: ModelRow = sqlx::query_as(&format!(
        "INSERT INTO models (team_id, name, origin, path, n_params, vocab_size, config) VALUES (?, ?, 'worker', ?, ?, ?, ?) RETURNING {MODEL_COLUMNS}"
    ))
    .bind(team)
    .bind(name)
    .bind(format!("workers:{name}"))
    .bind(n_params)
    .bind(vocab_size)
    .bind(config)
    .fetch_one(pool)
    .await
    .map_err(|e| on_unique(e, || format!("name: a model named '{name}' already exists")))?;
    Ok(row.into())
}

/// The suffix of the model a finished run registers (`<run>-final`).
pub const FINAL_SUFFIX: &str = "-final";

/// A run's name: a valid name that leaves room for its final model's `-final`.
fn validate_run_name(name: &str) -> Result<String> {
    let name = datasets::validate_name("run", name)?;
    let max = datasets::MAX_NAME_CHARS - FINAL_SUFFIX.len();
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
            .map_err(engine_error)?
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
async fn plan(state: &AppState, body: &NewRun) -> Result<Plan> {
    let team = state.team_id();
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
    ApiJson(body): ApiJson<NewRun>,
) -> Result<Json<RunEstimate>> {
    let Plan {
        model,
        teacher,
        device,
        estimate,
        ..
    } = plan(&state, &body).await?;
    let workers: Vec<WorkerFit> = queue::workers(&state.db)
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
    ApiJson(body): ApiJson<NewRun>,
) -> Result<(StatusCode, Json<RunSummary>)> {
    let team = state.team_id();
    let name = validate_run_name(&body.name)?;
    let Plan {
        model,
        teacher,
        config,
        device,
        dataset,
        estimate,
    } = plan(&state, &body).await?;
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
    sqlx::query(
        "INSERT INTO jobs (team_id, kind, run_id, max_attempts, device, min_memory_bytes) \
         VALUES (?, 'train', ?, ?, ?, ?)",
    )
    .bind(team)
    .bind(run_id)
    .bind(body.max_attempts.unwrap_or(3).clamp(1, 20))
    .bind(device)
    .bind(estimate.total_bytes)
    .execute(&mut *db)
    .await?;
    crate::logs::server_line(
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
    Query(filter): Query<RunFilter>,
) -> Result<Json<Vec<RunSummary>>> {
    let rows: Vec<RunRow> = sqlx::query_as(&format!(
        "{RUN_SELECT} WHERE r.team_id = ? AND (?2 IS NULL OR j.status = ?2) ORDER BY r.id DESC"
    ))
    .bind(state.team_id())
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
    Path(run): Path<String>,
) -> Result<Json<RunSummary>> {
    Ok(Json(load_run(&state.db, state.team_id(), &run).await?))
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
    Path(run): Path<String>,
    Query(query): Query<MetricQuery>,
) -> Result<Json<Vec<MetricPoint>>> {
    let run = load_run(&state.db, state.team_id(), &run).await?;
    let name = query.name.as_deref();
    if let Some(max) = query.max_points
        && !(2..=MAX_POINTS).contains(&max)
    {
        return Err(Error::BadRequest(format!(
            "max_points: {max} must be 2..={MAX_POINTS}"
        )));
    }
    Ok(Json(match query.max_points {
        Some(max) => crate::metrics::downsampled(&state.db, run.id, name, max).await?,
        None => crate::metrics::all(&state.db, run.id, name).await?,
    }))
}

async fn cancel(
    State(state): State<AppState>,
    Path(run): Path<String>,
) -> Result<Json<RunSummary>> {
    let run = load_run(&state.db, state.team_id(), &run).await?;
    queue::cancel_run(&state.db, run.id).await?;
    state.events.touch(run.id);
    Ok(Json(
        load_run(&state.db, state.team_id(), &run.id.to_string()).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_tokenizer_reads_rows_only_up_to_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::db::open(&dir.path().join("still.db")).await.unwrap();
        let mut db = crate::db::write_tx(&pool).await.unwrap();
        let dataset = datasets::create_or_find(
            &mut db,
            crate::DEFAULT_TEAM,
            "d",
            still_api::ImportMode::Create,
        )
        .await
        .unwrap();
        for i in 0..100 {
            let row = still_api::ExampleFields {
                question: format!("q{i:02} {}", "x".repeat(1000)),
                ..Default::default()
            };
            crate::examples::insert(&mut db, dataset, None, None, &row)
                .await
                .unwrap();
        }
        db.commit().await.unwrap();
        // Each row's text is 1,007 bytes: a 10,000-byte budget takes the first nine, in order.
        let texts = tokenizer_texts(&pool, dataset, 10_000).await.unwrap();
        assert_eq!(texts.len(), 9);
        assert!(texts[8].starts_with("q08 "));
        assert!(texts.iter().map(String::len).sum::<usize>() <= 10_000);
        // A first row larger than the budget is still taken (a tokenizer needs some text).
        assert_eq!(tokenizer_texts(&pool, dataset, 10).await.unwrap().len(), 1);
    }

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
