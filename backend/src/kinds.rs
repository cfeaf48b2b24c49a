//! The one place that maps a job kind to its area. The queue (`jobs`) claims and completes jobs
//! without knowing what they are; here each kind's area adds what a claimed job's worker needs
//! and checks and stores what a finished one made. Matches are exhaustive: a new `JobKind`
//! does not compile until every step has its area.

use axum::extract::{Path, Query, State};
use axum::routing::post;
use axum::{Json, Router};
use sqlx::SqlitePool;
use still_api::{ClaimedJob, JobKind, JobWork};

use crate::AppState;
use crate::error::Result;
use crate::failpoints::FailPoint;
use crate::http::WorkerAuth;
use crate::jobs::queue::{self, Claimed};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/worker/claim", post(claim_route))
        .route("/api/worker/jobs/{id}/complete", post(complete_route))
}

/// Claims a job and asks its area what the worker needs, in one transaction: the claim, its log
/// line and the work, or none of them.
pub async fn claim(
    pool: &SqlitePool,
    worker_id: i64,
    lease_seconds: i64,
) -> Result<Option<ClaimedJob>> {
    let mut db = crate::db::write_tx(pool).await?;
    let Some(Claimed {
        job,
        lease_seconds,
        resume_step,
    }) = queue::claim(&mut db, worker_id, lease_seconds).await?
    else {
        return Ok(None);
    };
    let work = match job.kind {
        JobKind::Train => JobWork::Train(crate::runs::store::claimed(&mut db, &job).await?),
        JobKind::Eval => JobWork::Eval(crate::evals::worker::claimed(&mut db, &job).await?),
        JobKind::Generate => {
            JobWork::Generate(crate::generations::worker::claimed(&mut db, &job).await?)
        }
    };
    db.commit().await?;
    Ok(Some(ClaimedJob {
        job_id: job.job_id,
        attempt: job.attempt,
        lease_seconds,
        resume_step,
        work,
    }))
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
    Query(wait): Query<ClaimWait>,
) -> Result<Json<Option<ClaimedJob>>> {
    let wait = std::time::Duration::from_millis(wait.wait_ms.unwrap_or(20_000).min(60_000));
    let deadline = tokio::time::Instant::now() + wait;
    crate::jobs::workers::seen(&state.db, id).await?;
    loop {
        if let Some(job) = claim(&state.db, id, state.config.lease_seconds).await? {
            if let JobWork::Train(work) = &job.work {
                state.events.touch(work.run_id);
            }
            state.failpoints.hit(FailPoint::AfterClaim)?;
            return Ok(Json(Some(job)));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Json(None));
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// The worker finished a job: its area checks and stores the results and marks it succeeded.
async fn complete_route(
    State(state): State<AppState>,
    WorkerAuth(id): WorkerAuth,
    Path(job): Path<i64>,
) -> Result<Json<serde_json::Value>> {
    let job = queue::leased(&state.db, job, id).await?;
    let reply = match job.kind {
        JobKind::Train => crate::runs::worker::complete(&state, &job).await?,
        JobKind::Eval => crate::evals::worker::complete(&state, &job).await?,
        JobKind::Generate => crate::generations::worker::complete(&state, &job).await?,
    };
    state.events.touch_owner(job.owner);
    Ok(Json(reply))
}
