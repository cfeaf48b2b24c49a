//! The runs' HTTP handlers: create (plan, pin a version, queue its `train` job), estimate,
//! list, one run, its metrics, cancel.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use still_api::{MetricPoint, NewRun, RunEstimate, RunSummary, WorkerFit};

use super::plan::{Plan, plan, validate_run_name};
use super::store;
use crate::AppState;
use crate::error::{ApiJson, Error, Result};
use crate::http::Team;
use crate::jobs::queue;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/runs", get(list_runs).post(create_run))
        .route("/api/runs/estimate", post(estimate_route))
        .route("/api/runs/{run}", get(get_run))
        .route("/api/runs/{run}/metrics", get(get_metrics))
        .route("/api/runs/{run}/cancel", post(cancel))
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

async fn create_run(
    State(state): State<AppState>,
    team: Team,
    ApiJson(body): ApiJson<NewRun>,
) -> Result<(StatusCode, Json<RunSummary>)> {
    let name = validate_run_name(&body.name)?;
    let Plan {
        method,
        model,
        teacher,
        config,
        device,
        dataset,
        estimate,
    } = plan(&state, team, &body).await?;
    let team = team.id();
    super::evals::check_plans(&state, team, &body.evals).await?;
    if store::name_taken(&state.db, team, &name).await? {
        return Err(Error::Conflict(format!(
            "name: a run named '{name}' already exists"
        )));
    }
    let version = crate::data::versions::store::pin_current(
        &state.db,
        dataset.id,
        &format!("pinned by run '{name}'"),
    )
    .await?;
    if version.n_rows == 0 {
        return Err(Error::Unprocessable(format!(
            "dataset: '{}' has no rows to train on",
            dataset.name
        )));
    }
    let mut db = crate::db::write_tx(&state.db).await?;
    let run_id = store::insert(
        &mut db,
        &store::NewRunRow {
            team_id: team,
            name: &name,
            method,
            model_id: model.id,
            teacher_id: teacher.as_ref().map(|t| t.id),
            dataset_id: dataset.id,
            dataset_version_id: version.id,
            config: &config,
            evals: &body.evals,
        },
    )
    .await?;
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
            owner: queue::Owner::Run(run_id),
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
            method,
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
        Json(store::load_run(&state.db, team, &run_id.to_string()).await?),
    ))
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
    let status = filter.status.filter(|s| !s.is_empty());
    Ok(Json(
        store::list(&state.db, team.id(), status.as_deref()).await?,
    ))
}

async fn get_run(
    State(state): State<AppState>,
    team: Team,
    Path(run): Path<String>,
) -> Result<Json<RunSummary>> {
    Ok(Json(store::load_run(&state.db, team.id(), &run).await?))
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
    let run = store::load_run(&state.db, team.id(), &run).await?;
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
    let run = store::load_run(&state.db, team.id(), &run).await?;
    queue::cancel_for_run(&state.db, run.id).await?;
    state.events.touch(run.id);
    Ok(Json(
        store::load_run(&state.db, team.id(), &run.id.to_string()).await?,
    ))
}
