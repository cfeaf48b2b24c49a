//! The job queue in SQLite, and the worker side of the protocol.
//!
//! A claim is one `UPDATE … WHERE id = (SELECT … LIMIT 1) … RETURNING`, so two workers racing for
//! one job cannot both get it. Every write a worker makes about a job (heartbeat, metrics,
//! completion) carries `AND lease_owner = ?`: a worker that lost its lease changes nothing. The
//! reaper puts expired leases back in the queue, or fails the job after `max_attempts`.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json, Router};
use sha2::{Digest, Sha256};
use sqlx::{FromRow, SqlitePool};
use still_api::{
    ClaimedJob, HeartbeatReply, JobFailure, MetricPoint, RegisterWorker, WorkerSummary,
};

use crate::AppState;
use crate::error::{ApiJson, Error, Result};

/// How long a lease lasts without a heartbeat.
pub const LEASE_SECONDS: i64 = 30;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/workers", get(list_workers))
        .route("/api/worker/register", post(register))
        .route("/api/worker/claim", post(claim_route))
        .route("/api/worker/jobs/{id}/heartbeat", post(heartbeat_route))
        .route("/api/worker/jobs/{id}/metrics", post(metrics_route))
        .route("/api/worker/jobs/{id}/logs", post(logs_route))
        .route("/api/worker/jobs/{id}/examples", post(examples_route))
        .route("/api/worker/jobs/{id}/complete", post(complete_route))
        .route("/api/worker/jobs/{id}/fail", post(fail_route))
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
        .route("/api/worker/models/{id}/files", get(model_files))
        .route("/api/worker/models/{id}/files/{file}", get(model_file))
}

/// The run a worker's job belongs to, if the worker holds the job's lease.
async fn leased_run(pool: &SqlitePool, job_id: i64, worker_id: i64) -> Result<i64> {
    Ok(leased_attempt(pool, job_id, worker_id).await?.0)
}

/// The run and attempt number of a job the worker holds.
async fn leased_attempt(pool: &SqlitePool, job_id: i64, worker_id: i64) -> Result<(i64, i64)> {
    let run: Option<(i64, i64)> = sqlx::query_as(
        "SELECT run_id, attempts FROM jobs WHERE id = ? AND lease_owner = ? AND status = 'running'",
    )
    .bind(job_id)
    .bind(worker_id)
    .fetch_optional(pool)
    .await?;
    run.ok_or_else(|| lease_lost(job_id))
}

/// The pinned dataset version of the job's run, as canonical JSONL.
async fn dataset_route(
    State(state): State<AppState>,
    WorkerAuth(id): WorkerAuth,
    Path(job): Path<i64>,
) -> Result<axum::response::Response> {
    use axum::response::IntoResponse;
    let run = leased_run(&state.db, job, id).await?;
    let (dataset_id, version_id): (i64, i64) =
        sqlx::query_as("SELECT dataset_id, dataset_version_id FROM runs WHERE id = ?")
            .bind(run)
            .fetch_one(&state.db)
            .await?;
    let version: i64 = sqlx::query_scalar("SELECT version FROM dataset_versions WHERE id = ?")
        .bind(version_id)
        .fetch_one(&state.db)
        .await?;
    let version = crate::versions::find(&state.db, dataset_id, version).await?;
    // Streamed as the worker reads it: the server never holds the whole dataset.
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        crate::versions::export_body(
            state.db.clone(),
            dataset_id,
            Some(version),
            still_api::ExportShape::Canonical,
        ),
    )
        .into_response())
}

/// Checks that `file` is one of `allowed` (the only names a worker may read or write).
fn allowed_file<'a>(file: &'a str, allowed: &[&str], kind: &str) -> Result<&'a str> {
    if allowed.contains(&file) {
        Ok(file)
    } else {
        Err(Error::BadRequest(format!(
            "'{file}' is not a {kind} file ({})",
            allowed.join(", ")
        )))
    }
}

fn model_file_name(file: &str) -> Result<&str> {
    allowed_file(file, still_worker::MODEL_FILES, "model")
}

fn checkpoint_file_name(file: &str) -> Result<&str> {
    allowed_file(file, still_worker::CHECKPOINT_FILES, "checkpoint")
}

/// The header a worker sends with an upload: the file's SHA-256 (hex), checked on arrival.
pub const CONTENT_SHA256: &str = "x-content-sha256";

/// Stores an uploaded file of a run folder in the artifact store.
async fn store_upload(
    state: &AppState,
    lease: (i64, i64),
    run: i64,
    folder: &str,
    name: &str,
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Json<serde_json::Value>> {
    let expected = headers.get(CONTENT_SHA256).and_then(|v| v.to_str().ok());
    let (sha, size) = crate::artifacts::store(
        &state.config.data_dir,
        &state.config.tmp_dir(),
        body,
        expected,
        &format!("{folder}/{name}"),
    )
    .await?;
    crate::artifacts::put_run_file(&state.db, lease, run, folder, name, &sha, size).await?;
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
    let run = leased_run(&state.db, job, id).await?;
    let name = checkpoint_file_name(&file)?;
    // Checked before anything is stored: a bad step never leaves a file behind.
    if step < 0 {
        return Err(Error::BadRequest(format!(
            "checkpoint step {step} is negative"
        )));
    }
    store_upload(
        &state,
        (job, id),
        run,
        &format!("step-{step}"),
        name,
        &headers,
        body,
    )
    .await
}

/// Files a checkpoint must have before it can be a resume point.
fn required_checkpoint_files() -> Vec<&'static str> {
    still_worker::CHECKPOINT_FILES
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
    let run = leased_run(&state.db, job, id).await?;
    if step < 0 {
        return Err(Error::BadRequest(format!(
            "checkpoint step {step} is negative"
        )));
    }
    let folder = format!("step-{step}");
    let mut db = crate::db::write_tx(&state.db).await?;
    crate::artifacts::commit(&mut db, run, &folder, &required_checkpoint_files()).await?;
    let updated = sqlx::query(
        "UPDATE jobs SET resume_from = ? WHERE id = ? AND lease_owner = ? AND status = 'running'",
    )
    .bind(&folder)
    .bind(job)
    .bind(id)
    .execute(&mut *db)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(lease_lost(job));
    }
    let bytes: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(size), 0) FROM run_files WHERE run_id = ? AND folder = ?",
    )
    .bind(run)
    .bind(&folder)
    .fetch_one(&mut *db)
    .await?;
    crate::logs::server_line(
        &mut *db,
        run,
        "info",
        &format!("checkpoint step {step} stored ({bytes} bytes)"),
    )
    .await?;
    db.commit().await?;
    state.events.touch(run);
    Ok(Json(serde_json::json!({ "resume_step": step })))
}

/// A file of the checkpoint the job resumes from.
async fn checkpoint_file(
    State(state): State<AppState>,
    WorkerAuth(id): WorkerAuth,
    Path((job, file)): Path<(i64, String)>,
) -> Result<axum::response::Response> {
    let run = leased_run(&state.db, job, id).await?;
    let folder: Option<String> = sqlx::query_scalar("SELECT resume_from FROM jobs WHERE id = ?")
        .bind(job)
        .fetch_one(&state.db)
        .await?;
    let folder = folder.ok_or_else(|| Error::not_found(format!("job {job} has no checkpoint")))?;
    let name = checkpoint_file_name(&file)?;
    let path = crate::artifacts::file_path(&state.db, &state.config.data_dir, run, &folder, name)
        .await?
        .ok_or_else(|| Error::not_found(format!("checkpoint {folder} file {file}")))?;
    stream_file(&path, || format!("checkpoint file {file}")).await
}

/// Streams a file as the response body (never read whole into memory).
async fn stream_file(
    path: &std::path::Path,
    what: impl FnOnce() -> String,
) -> Result<axum::response::Response> {
    use axum::response::IntoResponse;
    let handle = tokio::fs::File::open(path)
        .await
        .map_err(|_| Error::not_found(what()))?;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(handle));
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        body,
    )
        .into_response())
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

/// Stores one file of the run's final model (folder `final`, committed on completion).
async fn upload_final(
    State(state): State<AppState>,
    WorkerAuth(id): WorkerAuth,
    Path((job, file)): Path<(i64, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Json<serde_json::Value>> {
    let run = leased_run(&state.db, job, id).await?;
    let name = model_file_name(&file)?;
    store_upload(&state, (job, id), run, "final", name, &headers, body).await
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Creates a worker identity and returns its secret token (only its hash is stored).
pub async fn create_worker(pool: &SqlitePool, name: &str) -> Result<(i64, String)> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("random token: {e}")))?;
    let token = format!("stw_{}", hex::encode(bytes));
    let id: i64 =
        sqlx::query_scalar("INSERT INTO workers (name, token_sha256) VALUES (?, ?) RETURNING id")
            .bind(name)
            .bind(token_hash(&token))
            .fetch_one(pool)
            .await?;
    Ok((id, token))
}

/// Revokes a worker's token: every later call with it gets 401.
pub async fn revoke_worker(pool: &SqlitePool, worker_id: i64) -> Result<()> {
    sqlx::query(
        "UPDATE workers SET revoked_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?",
    )
    .bind(worker_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records that a worker is alive (register, claim and heartbeat do; the hot metric and log
/// posts do not, to keep one write off every request).
async fn seen(pool: &SqlitePool, worker_id: i64) -> Result<()> {
    sqlx::query(
        "UPDATE workers SET last_seen_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?",
    )
    .bind(worker_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// The authenticated worker of a request (`Authorization: Bearer <token>`).
pub struct WorkerAuth(pub i64);

impl FromRequestParts<AppState> for WorkerAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Error::Unauthorized("worker routes need 'Authorization: Bearer <token>'".into())
            })?;
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM workers WHERE token_sha256 = ? AND revoked_at IS NULL",
        )
        .bind(token_hash(token.trim()))
        .fetch_optional(&state.db)
        .await?;
        let id =
            id.ok_or_else(|| Error::Unauthorized("worker token is wrong or revoked".into()))?;
        Ok(Self(id))
    }
}

#[derive(FromRow)]
struct ClaimRow {
    id: i64,
    kind: String,
    run_id: i64,
    attempts: i64,
    resume_from: Option<String>,
}

/// What a claimed job's worker needs to know about its run.
#[derive(FromRow)]
struct ClaimedRun {
    model_id: i64,
    model_name: String,
    model_origin: String,
    teacher_id: Option<i64>,
    teacher_name: Option<String>,
    teacher_origin: Option<String>,
    dataset_version_id: i64,
    params: String,
}

/// Claims the next queued job `worker_id` can run (its device kind, enough memory), or `None`.
pub async fn claim(
    pool: &SqlitePool,
    worker_id: i64,
    lease_seconds: i64,
) -> Result<Option<ClaimedJob>> {
    // One transaction: the claim, its log line and what the worker needs, or none of them.
    let mut db = crate::db::write_tx(pool).await?;
    let row: Option<ClaimRow> = sqlx::query_as(
        "UPDATE jobs SET status = 'running', lease_owner = ?1, last_worker = ?1, attempts = attempts + 1, \
         lease_expires_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?2), \
         started_at = coalesce(started_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) \
         WHERE id = (SELECT j.id FROM jobs j JOIN workers w ON w.id = ?1 \
                     JOIN runs r ON r.id = j.run_id JOIN models m ON m.id = r.model_id \
                     LEFT JOIN models t ON t.id = r.teacher_id \
                     WHERE j.status = 'queued' AND j.cancel_requested = 0 \
                     AND (m.origin != 'worker' OR m.name IN (SELECT value FROM json_each(w.models))) \
                     AND (t.id IS NULL OR t.origin != 'worker' OR t.name IN (SELECT value FROM json_each(w.models))) \
                     AND (j.device IS NULL OR j.device = CASE WHEN w.device LIKE 'cuda%' THEN 'cuda' ELSE w.device END) \
                     AND (w.memory_bytes = 0 OR j.min_memory_bytes <= w.memory_bytes) \
                     ORDER BY j.priority DESC, j.id LIMIT 1) AND status = 'queued' \
         RETURNING id, kind, run_id, attempts, resume_from",
    )
    .bind(worker_id)
    .bind(format!("+{lease_seconds} seconds"))
    .fetch_optional(&mut *db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let (worker, device): (String, String) =
        sqlx::query_as("SELECT name, device FROM workers WHERE id = ?")
            .bind(worker_id)
            .fetch_one(&mut *db)
            .await?;
    let resume = row
        .resume_from
        .as_deref()
        .map(|f| format!(", resuming from checkpoint {f}"))
        .unwrap_or_default();
    crate::logs::server_line(
        &mut *db,
        row.run_id,
        "info",
        &format!(
            "attempt {} started on worker '{worker}' (#{worker_id}, {device}){resume}",
            row.attempts
        ),
    )
    .await?;
    let run: ClaimedRun = sqlx::query_as(
        "SELECT r.model_id, m.name AS model_name, m.origin AS model_origin, r.teacher_id, \
         t.name AS teacher_name, t.origin AS teacher_origin, r.dataset_version_id, r.params FROM runs r \
         JOIN models m ON m.id = r.model_id LEFT JOIN models t ON t.id = r.teacher_id WHERE r.id = ?",
    )
    .bind(row.run_id)
    .fetch_one(&mut *db)
    .await?;
    db.commit().await?;
    Ok(Some(ClaimedJob {
        job_id: row.id,
        kind: row.kind,
        run_id: row.run_id,
        attempt: row.attempts,
        config: serde_json::from_str(&run.params)
            .map_err(|e| Error::Internal(format!("run params: {e}")))?,
        model_id: run.model_id,
        model_name: run.model_name,
        model_origin: run.model_origin,
        teacher_id: run.teacher_id,
        teacher_name: run.teacher_name,
        teacher_origin: run.teacher_origin,
        dataset_version_id: run.dataset_version_id,
        lease_seconds,
        resume_step: row
            .resume_from
            .as_deref()
            .and_then(|folder| folder.strip_prefix("step-"))
            .and_then(|s| s.parse().ok()),
    }))
}

fn lease_lost(job_id: i64) -> Error {
    Error::Conflict(format!(
        "job {job_id}: this worker does not hold its lease (expired or reassigned)"
    ))
}

/// Extends the lease; answers whether a cancel was requested.
pub async fn heartbeat(
    pool: &SqlitePool,
    job_id: i64,
    worker_id: i64,
    lease_seconds: i64,
) -> Result<bool> {
    let cancel: Option<i64> = sqlx::query_scalar(
        "UPDATE jobs SET lease_expires_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?) \
         WHERE id = ? AND lease_owner = ? AND status = 'running' RETURNING cancel_requested",
    )
    .bind(format!("+{lease_seconds} seconds"))
    .bind(job_id)
    .bind(worker_id)
    .fetch_optional(pool)
    .await?;
    cancel.map(|c| c != 0).ok_or_else(|| lease_lost(job_id))
}

/// Records metric points; a point already recorded for (run, name, step) is kept, not duplicated.
/// Returns the run and how many points were new.
pub async fn record_metrics(
    pool: &SqlitePool,
    job_id: i64,
    worker_id: i64,
    points: &[MetricPoint],
) -> Result<(i64, u64)> {
    let mut db = crate::db::write_tx(pool).await?;
    let run_id: Option<i64> = sqlx::query_scalar(
        "SELECT run_id FROM jobs WHERE id = ? AND lease_owner = ? AND status = 'running'",
    )
    .bind(job_id)
    .bind(worker_id)
    .fetch_optional(&mut *db)
    .await?;
    let run_id = run_id.ok_or_else(|| lease_lost(job_id))?;
    for p in points {
        if !p.value.is_finite() {
            return Err(Error::BadRequest(format!(
                "metric '{}' at step {} is not a finite number",
                p.name, p.step
            )));
        }
        if p.step < 0 {
            return Err(Error::BadRequest(format!(
                "metric '{}': step {} is negative",
                p.name, p.step
            )));
        }
    }
    let fresh = crate::metrics::insert(&mut db, run_id, points).await?;
    crate::metrics::roll_up(&mut db, run_id, &fresh).await?;
    db.commit().await?;
    Ok((run_id, fresh.len() as u64))
}

/// Ends a job the worker holds: `failed` or `cancelled` (success goes through completion).
/// Returns the job's run.
pub async fn finish(
    pool: &SqlitePool,
    job_id: i64,
    worker_id: i64,
    status: &str,
    error: Option<&str>,
) -> Result<i64> {
    let mut db = crate::db::write_tx(pool).await?;
    let run: Option<i64> = sqlx::query_scalar(
        "UPDATE jobs SET status = ?, error = ?, lease_owner = NULL, lease_expires_at = NULL, \
         finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
         WHERE id = ? AND lease_owner = ? AND status = 'running' RETURNING run_id",
    )
    .bind(status)
    .bind(error)
    .bind(job_id)
    .bind(worker_id)
    .fetch_optional(&mut *db)
    .await?;
    let run = run.ok_or_else(|| lease_lost(job_id))?;
    let (level, line) = match (status, error) {
        ("cancelled", _) => ("warn", "cancelled by the user".to_string()),
        (_, Some(e)) => ("error", format!("{status}: {e}")),
        _ => ("info", status.to_string()),
    };
    crate::logs::server_line(&mut *db, run, level, &line).await?;
    db.commit().await?;
    Ok(run)
}

/// Re-queues jobs whose lease expired (the next claim resumes them), or fails them after
/// `max_attempts`. Returns the runs it changed.
pub async fn reap(pool: &SqlitePool) -> Result<Vec<i64>> {
    let mut db = crate::db::write_tx(pool).await?;
    let failed: Vec<(i64, i64)> = sqlx::query_as(
        "UPDATE jobs SET status = 'failed', lease_owner = NULL, lease_expires_at = NULL, \
         error = 'the worker stopped answering ' || attempts || ' times (lease expired); giving up', \
         finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
         WHERE status = 'running' AND lease_expires_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
         AND attempts >= max_attempts RETURNING run_id, attempts",
    )
    .fetch_all(&mut *db)
    .await?;
    let requeued: Vec<(i64, i64, String)> = sqlx::query_as(
        "UPDATE jobs SET status = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'queued' END, \
         lease_owner = NULL, lease_expires_at = NULL, \
         finished_at = CASE WHEN cancel_requested = 1 THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now') END \
         WHERE status = 'running' AND lease_expires_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
         RETURNING run_id, attempts, status",
    )
    .fetch_all(&mut *db)
    .await?;
    for (run, attempts) in &failed {
        crate::logs::server_line(
            &mut *db,
            *run,
            "error",
            &format!(
                "the worker stopped answering (lease expired); giving up after {attempts} attempts"
            ),
        )
        .await?;
    }
    for (run, attempts, status) in &requeued {
        let line = if status == "cancelled" {
            "the worker stopped answering (lease expired); the run was being cancelled: cancelled"
                .to_string()
        } else {
            format!(
                "the worker stopped answering (lease expired); queued again for attempt {}",
                attempts + 1
            )
        };
        crate::logs::server_line(&mut *db, *run, "warn", &line).await?;
    }
    db.commit().await?;
    Ok(failed
        .into_iter()
        .map(|(r, _)| r)
        .chain(requeued.into_iter().map(|(r, _, _)| r))
        .collect())
}

/// Asks a run's job to stop: a queued job is cancelled at once, a running one at its worker's
/// next heartbeat.
pub async fn cancel_run(pool: &SqlitePool, run_id: i64) -> Result<()> {
    let mut db = crate::db::write_tx(pool).await?;
    let changed = sqlx::query(
        "UPDATE jobs SET cancel_requested = 1, \
         status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END, \
         finished_at = CASE WHEN status = 'queued' THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now') ELSE finished_at END \
         WHERE run_id = ? AND status IN ('queued', 'running')",
    )
    .bind(run_id)
    .execute(&mut *db)
    .await?
    .rows_affected();
    if changed > 0 {
        crate::logs::server_line(&mut *db, run_id, "warn", "cancel requested").await?;
    }
    db.commit().await?;
    Ok(())
}

/// Runs the reaper every few seconds until the server stops.
pub fn spawn_reaper(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            tick.tick().await;
            match reap(&state.db).await {
                Ok(runs) => runs.into_iter().for_each(|r| state.events.touch(r)),
                Err(e) => tracing::warn!(error = %e, "reaper"),
            }
        }
    })
}

async fn register(
    State(state): State<AppState>,
    WorkerAuth(id): WorkerAuth,
    ApiJson(body): ApiJson<RegisterWorker>,
) -> Result<Json<WorkerSummary>> {
    if still_api::device_kind(&body.device).is_none() {
        return Err(Error::BadRequest(format!(
            "device: '{}' is not cpu, cuda or cuda:N",
            body.device
        )));
    }
    if let Some(bad) = body
        .models
        .iter()
        .find(|m| m.is_empty() || m.contains(['/', '\\']) || m.starts_with('.'))
    {
        return Err(Error::BadRequest(format!(
            "models: '{bad}' is not a folder name"
        )));
    }
    sqlx::query("UPDATE workers SET device = ?, memory_bytes = ?, models = ?, last_seen_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?")
        .bind(&body.device)
        .bind(body.memory_bytes)
        .bind(serde_json::to_string(&body.models).map_err(|e| Error::Internal(e.to_string()))?)
        .bind(id)
        .execute(&state.db)
        .await?;
    let workers = workers(&state.db).await?;
    workers
        .into_iter()
        .find(|w| w.id == id)
        .map(Json)
        .ok_or_else(|| Error::not_found(format!("worker {id}")))
}

#[derive(serde::Deserialize)]
struct ClaimWait {
    /// How long to wait for a job, in milliseconds (default 20,000; at most 60,000).
    wait_ms: Option<u64>,
}

/// Long-polls for a job; `null` when none came in time.
async fn claim_route(
    State(state): State<AppState>,
    WorkerAuth(id): WorkerAuth,
    axum::extract::Query(wait): axum::extract::Query<ClaimWait>,
) -> Result<Json<Option<ClaimedJob>>> {
    let wait = std::time::Duration::from_millis(wait.wait_ms.unwrap_or(20_000).min(60_000));
    let deadline = tokio::time::Instant::now() + wait;
    seen(&state.db, id).await?;
    loop {
        if let Some(job) = claim(&state.db, id, state.config.lease_seconds).await? {
            state.events.touch(job.run_id);
            return Ok(Json(Some(job)));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Json(None));
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

async fn heartbeat_route(
    State(state): State<AppState>,
    WorkerAuth(id): WorkerAuth,
    Path(job): Path<i64>,
) -> Result<Json<HeartbeatReply>> {
    let cancel = heartbeat(&state.db, job, id, state.config.lease_seconds).await?;
    seen(&state.db, id).await?;
    Ok(Json(HeartbeatReply { cancel }))
}

async fn metrics_route(
    State(state): State<AppState>,
    WorkerAuth(id): WorkerAuth,
    Path(job): Path<i64>,
    ApiJson(points): ApiJson<Vec<MetricPoint>>,
) -> Result<Json<serde_json::Value>> {
    let (run, inserted) = record_metrics(&state.db, job, id, &points).await?;
    state.events.touch(run);
    Ok(Json(serde_json::json!({ "inserted": inserted })))
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
    let run = leased_run(&state.db, job, id).await?;
    sqlx::query("UPDATE runs SET n_trained = ?, n_truncated = ?, n_skipped = ? WHERE id = ?")
        .bind(body.n_trained)
        .bind(body.n_truncated)
        .bind(body.n_skipped)
        .bind(run)
        .execute(&state.db)
        .await?;
    state.events.touch(run);
    Ok(Json(serde_json::json!({ "run": run })))
}

async fn logs_route(
    State(state): State<AppState>,
    WorkerAuth(id): WorkerAuth,
    Path(job): Path<i64>,
    ApiJson(lines): ApiJson<Vec<still_api::LogLine>>,
) -> Result<Json<serde_json::Value>> {
    let (run, attempt) = leased_attempt(&state.db, job, id).await?;
    let inserted = crate::logs::worker_lines(&state.db, run, attempt, &lines).await?;
    state.events.touch(run);
    Ok(Json(serde_json::json!({ "inserted": inserted })))
}

/// The worker finished: its uploaded final model is committed, laid out as a folder under
/// `DATA_DIR/runs/<run>/final/` (links into the store) and registered as `<run name>-final`.
async fn complete_route(
    State(state): State<AppState>,
    WorkerAuth(id): WorkerAuth,
    Path(job): Path<i64>,
) -> Result<Json<serde_json::Value>> {
    let run = leased_run(&state.db, job, id).await?;
    let data_dir = &state.config.data_dir;
    let config_path =
        crate::artifacts::file_path(&state.db, data_dir, run, "final", "config.json").await?;
    let weights =
        crate::artifacts::file_path(&state.db, data_dir, run, "final", "model.safetensors").await?;
    let (Some(_), Some(_)) = (config_path, weights) else {
        return Err(Error::Unprocessable(format!(
            "job {job}: upload the final model (config.json, model.safetensors) before completing"
        )));
    };
    let dir = data_dir.join("runs").join(run.to_string()).join("final");
    crate::artifacts::materialize(&state.db, data_dir, run, "final", &dir).await?;
    let (team, name): (i64, String) = sqlx::query_as("SELECT team_id, name FROM runs WHERE id = ?")
        .bind(run)
        .fetch_one(&state.db)
        .await?;
    // The uploaded folder must be a model that loads (headers checked, weights not read).
    let inspected = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || still_engine::hf::inspect(&dir))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| Error::Unprocessable(format!("job {job}: the final model: {e}")))?
    };
    let mut db = crate::db::write_tx(&state.db).await?;
    crate::artifacts::commit(&mut db, run, "final", &["config.json", "model.safetensors"]).await?;
    let model = crate::runs::register_final(&mut db, team, run, &name, &dir, &inspected).await?;
    let (model_id, model_name) = (model.id, model.name);
    sqlx::query("UPDATE runs SET output_model_id = ? WHERE id = ?")
        .bind(model_id)
        .bind(run)
        .execute(&mut *db)
        .await?;
    let done = sqlx::query(
        "UPDATE jobs SET status = 'succeeded', lease_owner = NULL, lease_expires_at = NULL, \
         finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ? AND lease_owner = ? AND status = 'running'",
    )
    .bind(job)
    .bind(id)
    .execute(&mut *db)
    .await?
    .rows_affected();
    if done == 0 {
        return Err(lease_lost(job));
    }
    crate::logs::server_line(
        &mut *db,
        run,
        "info",
        &format!("succeeded; the final model is registered as '{model_name}'"),
    )
    .await?;
    db.commit().await?;
    state.events.touch(run);
    Ok(Json(
        serde_json::json!({ "status": "succeeded", "model_id": model_id }),
    ))
}

async fn fail_route(
    State(state): State<AppState>,
    WorkerAuth(id): WorkerAuth,
    Path(job): Path<i64>,
    ApiJson(body): ApiJson<JobFailure>,
) -> Result<Json<serde_json::Value>> {
    let status = if body.cancelled {
        "cancelled"
    } else {
        "failed"
    };
    let run = finish(&state.db, job, id, status, Some(&body.error)).await?;
    state.events.touch(run);
    Ok(Json(serde_json::json!({ "status": status })))
}

#[derive(FromRow)]
struct WorkerRow {
    id: i64,
    name: String,
    device: String,
    memory_bytes: i64,
    last_seen_at: Option<String>,
    revoked_at: Option<String>,
    current_run: Option<i64>,
    fresh: bool,
    models: String,
}

pub async fn workers(pool: &SqlitePool) -> Result<Vec<WorkerSummary>> {
    let rows: Vec<WorkerRow> = sqlx::query_as(
        "SELECT w.id, w.name, w.device, w.memory_bytes, w.last_seen_at, w.revoked_at, w.models, \
         (SELECT run_id FROM jobs j WHERE j.lease_owner = w.id AND j.status = 'running' LIMIT 1) AS current_run, \
         coalesce(w.last_seen_at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?), 0) AS fresh \
         FROM workers w ORDER BY w.id",
    )
    .bind(format!("-{LEASE_SECONDS} seconds"))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| WorkerSummary {
            state: if r.revoked_at.is_some() {
                "revoked"
            } else if r.current_run.is_some() {
                "busy"
            } else if r.fresh {
                "idle"
            } else {
                "offline"
            }
            .to_string(),
            id: r.id,
            name: r.name,
            device: r.device,
            memory_bytes: r.memory_bytes,
            models: serde_json::from_str(&r.models).unwrap_or_default(),
            current_run: r.current_run,
            last_seen_at: r.last_seen_at,
        })
        .collect())
}

async fn list_workers(State(state): State<AppState>) -> Result<Json<Vec<WorkerSummary>>> {
    Ok(Json(workers(&state.db).await?))
}
