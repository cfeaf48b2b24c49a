//! The model registry: HF folders on the server, models made from scratch, models that live
//! only on workers' disks, and every run's final model. `insert_model` is the one place a model
//! row is written. Workers download a server-side model's files from here.

use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use sqlx::{FromRow, SqlitePool};
use still_api::{ModelSummary, NewModel};

use crate::AppState;
use crate::error::{ApiJson, Error, Result, on_unique};
use crate::http::{Team, WorkerAuth, allowed_file, stream_file};
use crate::names::validate_name;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/models", get(list_models).post(create_model))
        .route("/api/models/{model}", get(get_model))
        .route("/api/worker/models/{id}/files", get(model_files))
        .route("/api/worker/models/{id}/files/{file}", get(model_file))
}

async fn model_path(pool: &SqlitePool, model_id: i64) -> Result<std::path::PathBuf> {
    let row: Option<(String, String, String)> =
        sqlx::query_as("SELECT path, origin, name FROM models WHERE id = ?")
            .bind(model_id)
            .fetch_optional(pool)
            .await?;
    let (path, origin, name) = row.ok_or_else(|| Error::not_found(format!("model {model_id}")))?;
    if origin == "worker" {
        return Err(Error::NotFound(format!(
            "model '{name}' lives on workers' disks, not on the server: start the worker with \
             --models-dir DIR where DIR/{name} is its folder"
        )));
    }
    Ok(std::path::PathBuf::from(path))
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
    let dir = model_path(&state.db, model).await?;
    Ok(Json(model_files_of(&dir)?))
}

async fn model_file(
    State(state): State<AppState>,
    WorkerAuth(_): WorkerAuth,
    Path((model, file)): Path<(i64, String)>,
) -> Result<axum::response::Response> {
    let dir = model_path(&state.db, model).await?;
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

async fn list_models(State(state): State<AppState>, team: Team) -> Result<Json<Vec<ModelSummary>>> {
    let rows: Vec<ModelRow> = sqlx::query_as(&format!(
        "SELECT {MODEL_COLUMNS} FROM models WHERE team_id = ? ORDER BY id DESC"
    ))
    .bind(team.id())
    .fetch_all(&state.db)
    .await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

async fn get_model(
    State(state): State<AppState>,
    team: Team,
    Path(model): Path<String>,
) -> Result<Json<ModelSummary>> {
    Ok(Json(resolve_model(&state.db, team.id(), &model).await?))
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

/// The dataset text a new tokenizer is trained on: live rows in id order, up to `budget` bytes.
pub(crate) async fn tokenizer_texts(
    pool: &SqlitePool,
    dataset_id: i64,
    budget: usize,
) -> Result<Vec<String>> {
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

/// What the registry records about a model's weights.
pub struct ModelFacts {
    pub n_params: i64,
    pub vocab_size: i64,
    /// The HF `config.json`, or `{}` when unknown.
    pub config: String,
}

impl From<&still_engine::hf::Inspected> for ModelFacts {
    fn from(inspected: &still_engine::hf::Inspected) -> Self {
        Self {
            n_params: inspected.n_params as i64,
            vocab_size: inspected.config.vocab_size as i64,
            config: inspected.config.to_hf_json().to_string(),
        }
    }
}

/// Inserts a model row (the one place a model is registered) and returns it.
pub async fn insert_model(
    db: &mut sqlx::SqliteConnection,
    team: i64,
    name: &str,
    origin: &str,
    path: &str,
    run_id: Option<i64>,
    facts: &ModelFacts,
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
    .bind(facts.n_params)
    .bind(facts.vocab_size)
    .bind(&facts.config)
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
            let model = insert_model(
                &mut db,
                team,
                &name,
                "folder",
                &path_text,
                None,
                &(&inspected).into(),
            )
            .await?;
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
        let room = crate::names::MAX_NAME_CHARS.saturating_sub(suffix.chars().count());
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
            return insert_model(
                db,
                team,
                &name,
                "run",
                &path,
                Some(run_id),
                &inspected.into(),
            )
            .await;
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
    let facts = match &body.config {
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
            }
        }
        None => ModelFacts {
            n_params: 0,
            vocab_size: 0,
            config: "{}".to_string(),
        },
    };
    let mut db = crate::db::write_tx(pool).await?;
    let path = format!("workers:{name}");
    let model = insert_model(&mut db, team, name, "worker", &path, None, &facts).await?;
    db.commit().await?;
    Ok(model)
}

/// The suffix of the model a finished run registers (`<run>-final`).
pub const FINAL_SUFFIX: &str = "-final";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_tokenizer_reads_rows_only_up_to_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::db::open(&dir.path().join("still.db")).await.unwrap();
        let mut db = crate::db::write_tx(&pool).await.unwrap();
        let dataset = crate::data::datasets::store::create_or_find(
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
            crate::data::examples::store::insert(&mut db, dataset, None, None, &row)
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
}
