//! A training job's side of the worker protocol: the pinned dataset it reads, the example
//! counts it reports, its checkpoint and final-model uploads, and what completing it means
//! (reached through `crate::kinds`; what a claimed one's worker needs is `store::claimed`).

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use still_api::RunStatus;

use super::store;
use crate::AppState;
use crate::error::{ApiJson, Error, Result};
use crate::failpoints::FailPoint;
use crate::http::{WorkerAuth, allowed_file, stream_file};
use crate::jobs::queue::{self, Leased};
use crate::models::model_file_name;
use crate::store::{artifacts, logs};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/worker/jobs/{id}/examples", post(examples_route))
        .route("/api/worker/jobs/{id}/dataset", get(dataset_route))
        .route(
            "/api/worker/jobs/{id}/final/{file}",
            axum::routing::put(upload_final).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route(
            "/api/worker/jobs/{id}/checkpoints/{step}/{file}",
            axum::routing::put(upload_checkpoint).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route(
            "/api/worker/jobs/{id}/checkpoints/{step}",
            post(commit_checkpoint),
        )
        .route(
            "/api/worker/jobs/{id}/checkpoint/{file}",
            get(checkpoint_file),
        )
}

/// The pinned dataset version of the job's run, as canonical JSONL.
async fn dataset_route(
    State(state): State<AppState>,
    WorkerAuth(id): WorkerAuth,
    Path(job): Path<i64>,
) -> Result<axum::response::Response> {
    let lease = queue::leased(&state.db, job, id).await?;
    let (dataset_id, version) = store::pinned_version(&state.db, lease.run()?).await?;
    Ok(crate::data::versions::routes::canonical_jsonl(
        state.db.clone(),
        dataset_id,
        version,
        None,
    ))
}

fn checkpoint_file_name(file: &str) -> Result<&str> {
    allowed_file(file, still_api::CHECKPOINT_FILES, "checkpoint")
}

/// The header a worker sends with an upload: the file's SHA-256 (hex), checked on arrival.
pub const CONTENT_SHA256: &str = "x-content-sha256";

/// Stores an uploaded file of a run folder in the artifact store.
async fn store_upload(
    state: &AppState,
    lease: &Leased,
    folder: &str,
    name: &str,
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Json<serde_json::Value>> {
    let expected = headers.get(CONTENT_SHA256).and_then(|v| v.to_str().ok());
    let (sha, size) = artifacts::store(
        &state.config.data_dir,
        &state.config.tmp_dir(),
        body,
        expected,
        &format!("{folder}/{name}"),
    )
    .await?;
    let mut db = crate::db::write_tx(&state.db).await?;
    queue::check_held(&mut db, lease, &format!("uploading {folder}/{name}")).await?;
    artifacts::put_run_file(&mut db, lease.run()?, folder, name, &sha, size).await?;
    db.commit().await?;
    Ok(Json(
        serde_json::json!({ "file": name, "bytes": size, "sha256": sha }),
    ))
}

/// Stores one file of a checkpoint; `POST …/checkpoints/{step}` then makes it the resume point.
async fn upload_checkpoint(
    State(state): State<AppState>,
    WorkerAuth(id): WorkerAuth,
    Path((job, step, file)): Path<(i64, i64, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Json<serde_json::Value>> {
    let lease = queue::leased(&state.db, job, id).await?;
    let name = checkpoint_file_name(&file)?;
    // Checked before anything is stored: a bad step never leaves a file behind.
    if step < 0 {
        return Err(Error::BadRequest(format!(
            "checkpoint step {step} is negative"
        )));
    }
    store_upload(
        &state,
        &lease,
        &format!("step-{step}"),
        name,
        &headers,
        body,
    )
    .await
}

/// Files a checkpoint must have before it can be a resume point.
fn required_checkpoint_files() -> Vec<&'static str> {
    still_api::CHECKPOINT_FILES
        .iter()
        .copied()
        .filter(|f| *f != "generation_config.json")
        .collect()
}

/// Marks a fully uploaded checkpoint as where a later attempt resumes.
async fn commit_checkpoint(
    State(state): State<AppState>,
    WorkerAuth(id): WorkerAuth,
    Path((job, step)): Path<(i64, i64)>,
) -> Result<Json<serde_json::Value>> {
    let lease = queue::leased(&state.db, job, id).await?;
    let run = lease.run()?;
    if step < 0 {
        return Err(Error::BadRequest(format!(
            "checkpoint step {step} is negative"
        )));
    }
    let folder = format!("step-{step}");
    state.failpoints.hit(FailPoint::BetweenUploadAndCommit)?;
    let mut db = crate::db::write_tx(&state.db).await?;
    artifacts::commit(&mut db, run, &folder, &required_checkpoint_files()).await?;
    queue::set_resume_point(&mut db, &lease, &folder).await?;
    let bytes = artifacts::folder_bytes(&mut db, run, &folder).await?;
    logs::server_line(
        &mut *db,
        run,
        "info",
        &format!("checkpoint step {step} stored ({bytes} bytes)"),
    )
    .await?;
    db.commit().await?;
    state.events.touch(run);
    super::evals::at_checkpoint(&state, run, step).await;
    Ok(Json(serde_json::json!({ "resume_step": step })))
}

/// A file of the checkpoint the job resumes from.
async fn checkpoint_file(
    State(state): State<AppState>,
    WorkerAuth(id): WorkerAuth,
    Path((job, file)): Path<(i64, String)>,
) -> Result<axum::response::Response> {
    let lease = queue::leased(&state.db, job, id).await?;
    let run = lease.run()?;
    let folder = queue::resume_point(&state.db, job).await?;
    let folder = folder.ok_or_else(|| Error::not_found(format!("job {job} has no checkpoint")))?;
    let name = checkpoint_file_name(&file)?;
    let path = artifacts::file_path(&state.db, &state.config.data_dir, run, &folder, name)
        .await?
        .ok_or_else(|| Error::not_found(format!("checkpoint {folder} file {file}")))?;
    stream_file(&path, || format!("checkpoint file {file}")).await
}

/// Stores one file of the run's final model (folder `final`, committed on completion).
async fn upload_final(
    State(state): State<AppState>,
    WorkerAuth(id): WorkerAuth,
    Path((job, file)): Path<(i64, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Json<serde_json::Value>> {
    let lease = queue::leased(&state.db, job, id).await?;
    let name = model_file_name(&file)?;
    store_upload(&state, &lease, "final", name, &headers, body).await
}

/// The worker tokenised the run's dataset: how many rows train, were truncated, were skipped.
async fn examples_route(
    State(state): State<AppState>,
    WorkerAuth(id): WorkerAuth,
    Path(job): Path<i64>,
    ApiJson(body): ApiJson<still_api::RunExamples>,
) -> Result<Json<serde_json::Value>> {
    if body.n_trained < 0 || body.n_truncated < 0 || body.n_skipped < 0 {
        return Err(Error::BadRequest(
            "example counts must not be negative".into(),
        ));
    }
    let lease = queue::leased(&state.db, job, id).await?;
    let run = lease.run()?;
    store::set_examples(&state.db, run, &body).await?;
    state.events.touch(run);
    Ok(Json(serde_json::json!({ "run": run })))
}

/// A training job finished: its uploaded final model is committed, laid out as a folder under
/// `DATA_DIR/runs/<run>/final/` (links into the store) and registered as `<run name>-final`,
/// and the job marked succeeded, in one transaction.
pub async fn complete(state: &AppState, job: &Leased) -> Result<serde_json::Value> {
    let run = job.run()?;
    let job_id = job.job_id;
    let data_dir = &state.config.data_dir;
    let config_path =
        artifacts::file_path(&state.db, data_dir, run, "final", "config.json").await?;
    let weights =
        artifacts::file_path(&state.db, data_dir, run, "final", "model.safetensors").await?;
    let (Some(_), Some(_)) = (config_path, weights) else {
        return Err(Error::Unprocessable(format!(
            "job {job_id}: upload the final model (config.json, model.safetensors) before completing"
        )));
    };
    let dir = data_dir.join("runs").join(run.to_string()).join("final");
    artifacts::materialize(&state.db, data_dir, run, "final", &dir).await?;
    let (team, name) = store::team_and_name(&state.db, run).await?;
    // The uploaded folder must be a model that loads (headers checked, weights not read).
    let inspected = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || still_engine::hf::inspect(&dir))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| Error::Unprocessable(format!("job {job_id}: the final model: {e}")))?
    };
    state.failpoints.hit(FailPoint::BeforeCompletion)?;
    let mut db = crate::db::write_tx(&state.db).await?;
    artifacts::commit(&mut db, run, "final", &["config.json", "model.safetensors"]).await?;
    let model = crate::models::register_final(&mut db, team, run, &name, &dir, &inspected).await?;
    let (model_id, model_name) = (model.id, model.name);
    store::set_output_model(&mut db, run, model_id).await?;
    queue::succeed(&mut db, job).await?;
    logs::server_line(
        &mut *db,
        run,
        "info",
        &format!("succeeded; the final model is registered as '{model_name}'"),
    )
    .await?;
    db.commit().await?;
    super::evals::at_end(state, run, model_id).await;
    Ok(serde_json::json!({ "status": RunStatus::Succeeded, "model_id": model_id }))
}
