//! The model registry's HTTP handlers: list, one model, create (an HF folder on the server, a
//! model from scratch, a model on workers' disks), and the worker routes that list and serve a
//! server-side model's files.

use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use sqlx::SqlitePool;
use still_api::{ModelSummary, NewModel};

use super::store::{self, ModelFacts, insert_model};
use crate::AppState;
use crate::error::{ApiJson, Error, Result};
use crate::http::{Team, WorkerAuth, allowed_file, stream_file};
use crate::names::validate_name;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/models", get(list_models).post(create_model))
        .route("/api/models/{model}", get(get_model))
        .route("/api/worker/models/{id}/files", get(model_files))
        .route("/api/worker/models/{id}/files/{file}", get(model_file))
}

/// The files of a server-side model folder a worker downloads (shards included).
fn model_files_of(dir: &std::path::Path) -> Result<Vec<String>> {
    still_worker::model_files_in(dir).map_err(|e| Error::Unprocessable(format!("{e:#}")))
}

async fn model_files(
    State(state): State<AppState>,
    WorkerAuth(_): WorkerAuth,
    Path(model): Path<i64>,
) -> Result<Json<Vec<String>>> {
    let dir = store::model_path(&state.db, model).await?;
    Ok(Json(model_files_of(&dir)?))
}

async fn model_file(
    State(state): State<AppState>,
    WorkerAuth(_): WorkerAuth,
    Path((model, file)): Path<(i64, String)>,
) -> Result<axum::response::Response> {
    let dir = store::model_path(&state.db, model).await?;
    // The fixed files of a model folder, or a shard its index names: nothing else is served.
    if !model_files_of(&dir)?.contains(&file) {
        model_file_name(&file)?;
        return Err(Error::not_found(format!("model {model} file {file}")));
    }
    stream_file(&dir.join(&file), || format!("model {model} file {file}")).await
}

pub fn model_file_name(file: &str) -> Result<&str> {
    allowed_file(file, still_api::MODEL_FILES, "model")
}

async fn list_models(State(state): State<AppState>, team: Team) -> Result<Json<Vec<ModelSummary>>> {
    Ok(Json(store::list(&state.db, team.id()).await?))
}

async fn get_model(
    State(state): State<AppState>,
    team: Team,
    Path(model): Path<String>,
) -> Result<Json<ModelSummary>> {
    Ok(Json(
        store::resolve_model(&state.db, team.id(), &model).await?,
    ))
}

pub(crate) fn engine_error(e: still_engine::EngineError) -> Error {
    Error::Unprocessable(e.to_string())
}

async fn create_model(
    State(state): State<AppState>,
    team: Team,
    ApiJson(body): ApiJson<NewModel>,
) -> Result<(StatusCode, Json<ModelSummary>)> {
    let model = create(&state.db, &state.config.data_dir, team.id(), &body).await?;
    Ok((StatusCode::CREATED, Json(model)))
}

/// At most this much text (bytes, whole rows) trains a new model's tokenizer: the rows are read
/// in pages until it is reached, so a large dataset is never read into memory whole.
pub const MAX_TOKENIZER_TEXT_BYTES: usize = 64 << 20;

/// Largest vocabulary a tokenizer trained here may have (Qwen2.5's is 151,665).
pub const MAX_SCRATCH_VOCAB: usize = 262_144;

/// Checks a model folder without loading its weights (headers only): what registering stores.
async fn inspect_folder(dir: PathBuf) -> Result<still_engine::hf::Inspected> {
    tokio::task::spawn_blocking(move || still_engine::hf::inspect(&dir))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(engine_error)
}

/// Checks a folder the way what runs it will: the engine's own Qwen2 (safetensors, `model_type`
/// `qwen2`), or candle-transformers for a generation-only teacher (Qwen3, Llama, any GGUF).
async fn inspect_any(dir: PathBuf) -> Result<ModelFacts> {
    let engine_native = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || still_teacher::engine_native(&dir))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| Error::Unprocessable(format!("{e:#}")))?
    };
    if engine_native {
        return Ok((&inspect_folder(dir).await?).into());
    }
    let inspected = tokio::task::spawn_blocking(move || still_teacher::inspect(&dir))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(|e| Error::Unprocessable(format!("{e:#}")))?;
    Ok((&inspected).into())
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
    let name = validate_name("model", &body.name)?;
    match body.location.as_deref() {
        None | Some("server") => {}
        Some("workers") => return register_on_workers(pool, team, &name, body).await,
        Some(other) => {
            return Err(Error::BadRequest(format!(
                "location: '{other}' is not one of server, workers"
            )));
        }
    }
    if store::name_taken(pool, team, &name).await? {
        return Err(Error::Conflict(store::taken_message(&name)));
    }
    match (&body.path, &body.preset) {
        (Some(path), None) => {
            let path = PathBuf::from(path);
            let facts = inspect_any(path.clone()).await?;
            let path_text = path
                .canonicalize()
                .unwrap_or(path)
                .to_string_lossy()
                .into_owned();
            let mut db = crate::db::write_tx(pool).await?;
            let model =
                insert_model(&mut db, team, &name, "folder", &path_text, None, &facts).await?;
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
    let dataset = crate::data::datasets::store::resolve(pool, team, reference).await?;
    let texts = store::tokenizer_texts(pool, dataset.id, MAX_TOKENIZER_TEXT_BYTES).await?;
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
        let model = insert_model(
            &mut db,
            team,
            name,
            "scratch",
            "",
            None,
            &(&inspected).into(),
        )
        .await?;
        let dest = models.join(format!("{}-{suffix}", model.id));
        still_engine::fsio::rename_durably(&staging, &dest)?;
        let path = dest.to_string_lossy().into_owned();
        let moved = async {
            store::set_path(&mut db, model.id, &path).await?;
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
    let model_type = body
        .config
        .as_ref()
        .and_then(|c| c.get("model_type"))
        .and_then(|t| t.as_str());
    let facts = match &body.config {
        // A generation-only teacher of another architecture on the workers' disks.
        Some(value) if model_type.is_some_and(|t| t != "qwen2") => {
            let arch = still_teacher::Arch::parse(model_type.unwrap_or_default())
                .map_err(|e| Error::BadRequest(format!("config: model_type: {e}")))?;
            ModelFacts {
                n_params: 0,
                vocab_size: value
                    .get("vocab_size")
                    .and_then(|v| v.as_i64())
                    .unwrap_or(0),
                config: value.to_string(),
                arch: arch.as_str(),
                format: "safetensors",
            }
        }
        Some(value) => {
            let config: still_engine::config::Qwen2Config =
                serde_json::from_value(value.clone())
                    .map_err(|e| Error::BadRequest(format!("config: {e}")))?;
            config
                .validate()
                .map_err(|e| Error::BadRequest(format!("config: {e}")))?;
            ModelFacts {
                n_params: still_engine::memory::n_params(&config) as i64,
                vocab_size: config.vocab_size as i64,
                config: config.to_hf_json().to_string(),
                arch: "qwen2",
                format: "safetensors",
            }
        }
        None => ModelFacts {
            n_params: 0,
            vocab_size: 0,
            config: "{}".to_string(),
            arch: "qwen2",
            format: "safetensors",
        },
    };
    let mut db = crate::db::write_tx(pool).await?;
    let path = format!("workers:{name}");
    let model = insert_model(&mut db, team, name, "worker", &path, None, &facts).await?;
    db.commit().await?;
    Ok(model)
}
