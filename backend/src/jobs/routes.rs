//! The worker protocol's routes that every job kind shares: register, heartbeat, metric points,
//! log lines, failure, and the workers page's list. Claiming and completing a job need its kind's
//! area and live in `crate::kinds`.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use still_api::{
    HeartbeatReply, JobFailure, MetricPoint, RegisterWorker, RunStatus, WorkerSummary,
};

use super::queue::{finish, heartbeat, leased, record_metrics};
use super::workers::{register_worker, seen, workers};
use crate::AppState;
use crate::error::{ApiJson, Error, Result};
use crate::http::WorkerAuth;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/workers", get(list_workers))
        .route("/api/worker/register", post(register))
        .route("/api/worker/jobs/{id}/heartbeat", post(heartbeat_route))
        .route("/api/worker/jobs/{id}/metrics", post(metrics_route))
        .route("/api/worker/jobs/{id}/logs", post(logs_route))
        .route("/api/worker/jobs/{id}/fail", post(fail_route))
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
    Ok(Json(register_worker(&state.db, id, &body).await?))
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

async fn logs_route(
    State(state): State<AppState>,
    WorkerAuth(id): WorkerAuth,
    Path(job): Path<i64>,
    ApiJson(lines): ApiJson<Vec<still_api::LogLine>>,
) -> Result<Json<serde_json::Value>> {
    let job = leased(&state.db, job, id).await?;
    let inserted =
        crate::store::logs::worker_lines(&state.db, job.owner, job.attempt, &lines).await?;
    state.events.touch_owner(job.owner);
    Ok(Json(serde_json::json!({ "inserted": inserted })))
}

async fn fail_route(
    State(state): State<AppState>,
    WorkerAuth(id): WorkerAuth,
    Path(job): Path<i64>,
    ApiJson(body): ApiJson<JobFailure>,
) -> Result<Json<serde_json::Value>> {
    let status = if body.cancelled {
        RunStatus::Cancelled
    } else {
        RunStatus::Failed
    };
    let owner = finish(&state.db, job, id, status, Some(&body.error)).await?;
    state.events.touch_owner(owner);
    Ok(Json(serde_json::json!({ "status": status })))
}

async fn list_workers(State(state): State<AppState>) -> Result<Json<Vec<WorkerSummary>>> {
    Ok(Json(workers(&state.db).await?))
}
