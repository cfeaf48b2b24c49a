//! An eval job's side of the worker protocol: the rows it reads, the graded records it uploads
//! (each pair stored once), and what happens when it is claimed and completed (reached through
//! `crate::kinds`).

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use sqlx::SqliteConnection;
use still_api::{EvalRecordUpload, EvalWork};

use super::store;
use crate::AppState;
use crate::error::{ApiJson, Error, Result};
use crate::http::WorkerAuth;
use crate::jobs::queue::{self, Leased, Owner};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/worker/jobs/{id}/eval/dataset", get(dataset_route))
        .route("/api/worker/jobs/{id}/eval/records", post(records_route))
}

/// The most records one upload may carry, and the most bytes of one record's JSON.
pub const MAX_RECORDS_PER_REQUEST: usize = 256;
pub const MAX_RECORD_BYTES: usize = 4 << 20;

/// What a claimed eval job's worker needs, read in the claim's transaction.
pub async fn claimed(db: &mut SqliteConnection, job: &Leased) -> Result<EvalWork> {
    let eval = store::by_id(db, job.eval()?).await?;
    let done = store::done_pairs(db, eval.id).await?;
    Ok(EvalWork {
        eval_id: eval.id,
        model_id: eval.model_id,
        model_name: eval.model_name,
        model_origin: eval.model_origin,
        dataset_version_id: eval.dataset_version_id,
        n_examples: eval.n_examples,
        settings: serde_json::from_str(&eval.settings)
            .map_err(|e| Error::Internal(format!("eval settings: {e}")))?,
        done,
    })
}

/// The eval's pinned dataset version, as canonical JSONL: only its first `n_examples` rows, so an
/// eval with a `limit` moves only the rows it grades.
async fn dataset_route(
    State(state): State<AppState>,
    WorkerAuth(id): WorkerAuth,
    Path(job): Path<i64>,
) -> Result<axum::response::Response> {
    let lease = queue::leased(&state.db, job, id).await?;
    let eval = {
        let mut db = state.db.acquire().await?;
        store::by_id(&mut db, lease.eval()?).await?
    };
    let version =
        crate::data::versions::store::find(&state.db, eval.dataset_id, eval.dataset_version)
            .await?;
    Ok(crate::data::versions::routes::canonical_jsonl(
        state.db.clone(),
        eval.dataset_id,
        version,
        usize::try_from(eval.n_examples).ok(),
    ))
}

/// Graded pairs from the worker: checked against the eval's shape and stored once each.
async fn records_route(
    State(state): State<AppState>,
    WorkerAuth(id): WorkerAuth,
    Path(job): Path<i64>,
    ApiJson(records): ApiJson<Vec<EvalRecordUpload>>,
) -> Result<Json<serde_json::Value>> {
    if records.len() > MAX_RECORDS_PER_REQUEST {
        return Err(Error::TooLarge(format!(
            "{} records in one request; the limit is {MAX_RECORDS_PER_REQUEST}",
            records.len()
        )));
    }
    let lease = queue::leased(&state.db, job, id).await?;
    let mut db = crate::db::write_tx(&state.db).await?;
    let eval = store::by_id(&mut db, lease.eval()?).await?;
    for (i, r) in records.iter().enumerate() {
        let bad = |m: String| Err(Error::BadRequest(format!("records[{i}]: {m}")));
        if !(0..eval.n_budgets).contains(&r.budget_index) {
            return bad(format!(
                "budget_index {} is not in 0..{}",
                r.budget_index, eval.n_budgets
            ));
        }
        if !(0..eval.n_examples).contains(&r.example_index) {
            return bad(format!(
                "example_index {} is not in 0..{}",
                r.example_index, eval.n_examples
            ));
        }
        if r.thinking_tokens < 0 {
            return bad(format!("thinking_tokens {} is negative", r.thinking_tokens));
        }
        let size = serde_json::to_string(&r.record)
            .map_err(|e| Error::Internal(e.to_string()))?
            .len();
        if size > MAX_RECORD_BYTES {
            return Err(Error::TooLarge(format!(
                "records[{i}]: {size} bytes; one record may have {MAX_RECORD_BYTES}"
            )));
        }
    }
    queue::check_held(&mut db, &lease, "uploading graded examples").await?;
    let inserted = store::insert_records(&mut db, eval.id, lease.attempt, &records).await?;
    db.commit().await?;
    Ok(Json(serde_json::json!({ "inserted": inserted })))
}

/// An eval job finished: every (example, budget) pair must be graded; then it succeeds.
pub async fn complete(state: &AppState, job: &Leased) -> Result<serde_json::Value> {
    let mut db = crate::db::write_tx(&state.db).await?;
    let eval = store::by_id(&mut db, job.eval()?).await?;
    let expected = eval.n_examples * eval.n_budgets;
    let stored = store::count(&mut db, eval.id).await?;
    if stored != expected {
        return Err(Error::Unprocessable(format!(
            "job {}: {stored} of {expected} graded pairs are stored; upload the rest before completing",
            job.job_id
        )));
    }
    queue::succeed(&mut db, job).await?;
    crate::store::logs::owner_line(
        &mut *db,
        Owner::Eval(eval.id),
        "info",
        &format!("succeeded: {stored} graded pairs"),
    )
    .await?;
    db.commit().await?;
    Ok(serde_json::json!({ "status": "succeeded", "graded": stored }))
}
