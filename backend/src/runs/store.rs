//! The runs area's storage: runs as their summaries (with their job's state and last loss),
//! a new run's row and pinned version, what planning reads (models' configs, the dataset's
//! longest row and size), and a train job's side: its run's dataset, example counts, final
//! model and what its worker needs.

use sqlx::{FromRow, SqliteConnection, SqlitePool};
use still_api::{DatasetVersion, RunExamples, RunMethod, RunStatus, RunSummary, TrainWork};
use still_engine::train::TrainConfig;

use crate::data::versions;
use crate::error::{Error, Result, on_unique};
use crate::jobs::queue::Leased;

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
    evals: String,
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
     r.output_model_id, r.params, r.evals, r.n_trained, r.n_truncated, r.n_skipped, \
     (SELECT max(step) FROM run_metrics x WHERE x.run_id = r.id AND x.name = 'loss') AS last_step, \
     (SELECT value FROM run_metrics x WHERE x.run_id = r.id AND x.name = 'loss' ORDER BY step DESC LIMIT 1) AS last_loss, \
     r.created_at, j.started_at, j.finished_at \
     FROM runs r JOIN jobs j ON j.run_id = r.id JOIN models m ON m.id = r.model_id \
     JOIN datasets d ON d.id = r.dataset_id JOIN dataset_versions v ON v.id = r.dataset_version_id";

/// A value the database holds as text, read back as its type (a CHECK keeps it one of them).
fn stored<T>(run: i64, column: &str, text: &str, parse: fn(&str) -> Option<T>) -> Result<T> {
    parse(text).ok_or_else(|| Error::Internal(format!("run {run}: {column} '{text}' is unknown")))
}

impl TryFrom<RunRow> for RunSummary {
    type Error = Error;
    fn try_from(r: RunRow) -> Result<Self> {
        Ok(RunSummary {
            config: serde_json::from_str(&r.params)
                .map_err(|e| Error::Internal(format!("run {}: params: {e}", r.id)))?,
            evals: serde_json::from_str(&r.evals)
                .map_err(|e| Error::Internal(format!("run {}: evals: {e}", r.id)))?,
            examples: r.n_trained.map(|n_trained| still_api::RunExamples {
                n_trained,
                n_truncated: r.n_truncated.unwrap_or(0),
                n_skipped: r.n_skipped.unwrap_or(0),
            }),
            id: r.id,
            name: r.name,
            method: stored(r.id, "method", &r.method, RunMethod::parse)?,
            model_id: r.model_id,
            model: r.model,
            teacher_id: r.teacher_id,
            dataset_id: r.dataset_id,
            dataset: r.dataset,
            dataset_version: r.dataset_version,
            dataset_version_hash: r.dataset_version_hash,
            status: stored(r.id, "status", &r.status, RunStatus::parse)?,
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

/// Every run of the team, newest first; `status` keeps those whose job is in that state.
pub async fn list(
    pool: &SqlitePool,
    team_id: i64,
    status: Option<&str>,
) -> Result<Vec<RunSummary>> {
    let rows: Vec<RunRow> = sqlx::query_as(&format!(
        "{RUN_SELECT} WHERE r.team_id = ? AND (?2 IS NULL OR j.status = ?2) ORDER BY r.id DESC"
    ))
    .bind(team_id)
    .bind(status)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

/// Which of `ids` are runs of the team (one query).
pub async fn existing(pool: &SqlitePool, team_id: i64, ids: &[i64]) -> Result<Vec<i64>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = sqlx::QueryBuilder::new("SELECT id FROM runs WHERE team_id = ");
    q.push_bind(team_id).push(" AND id IN (");
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    q.push(")");
    Ok(q.build_query_scalar().fetch_all(pool).await?)
}

/// Whether the team has a run of this name.
pub async fn name_taken(pool: &SqlitePool, team_id: i64, name: &str) -> Result<bool> {
    let taken: Option<i64> =
        sqlx::query_scalar("SELECT id FROM runs WHERE team_id = ? AND name = ?")
            .bind(team_id)
            .bind(name)
            .fetch_optional(pool)
            .await?;
    Ok(taken.is_some())
}

/// A new run's row: what it trains, on which pinned version, with which engine config.
pub struct NewRunRow<'a> {
    pub team_id: i64,
    pub name: &'a str,
    pub method: RunMethod,
    pub model_id: i64,
    pub teacher_id: Option<i64>,
    pub dataset_id: i64,
    pub dataset_version_id: i64,
    pub config: &'a TrainConfig,
    pub evals: &'a [still_api::RunEval],
}

/// Stores a new run in the caller's transaction; returns its id.
pub async fn insert(db: &mut SqliteConnection, run: &NewRunRow<'_>) -> Result<i64> {
    let name = run.name;
    sqlx::query_scalar(
        "INSERT INTO runs (team_id, name, method, model_id, teacher_id, dataset_id, dataset_version_id, params, evals) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(run.team_id)
    .bind(name)
    .bind(run.method.as_str())
    .bind(run.model_id)
    .bind(run.teacher_id)
    .bind(run.dataset_id)
    .bind(run.dataset_version_id)
    .bind(serde_json::to_string(run.config).map_err(|e| Error::Internal(e.to_string()))?)
    .bind(serde_json::to_string(run.evals).map_err(|e| Error::Internal(e.to_string()))?)
    .fetch_one(&mut *db)
    .await
    .map_err(|e| on_unique(e, || format!("name: a run named '{name}' already exists")))
}

/// A model's stored `config.json` (`{}` for a model on workers' disks registered without one).
pub async fn model_config_text(pool: &SqlitePool, model_id: i64) -> Result<String> {
    Ok(
        sqlx::query_scalar::<_, String>("SELECT config FROM models WHERE id = ?")
            .bind(model_id)
            .fetch_one(pool)
            .await?,
    )
}

/// The question, thinking and answer of a dataset's longest live row (in bytes).
pub async fn longest_example(
    pool: &SqlitePool,
    dataset_id: i64,
) -> Result<Option<(String, String, String)>> {
    Ok(sqlx::query_as(
        "SELECT question, thinking, answer FROM examples WHERE dataset_id = ? AND deleted_at IS NULL \
         ORDER BY n_bytes DESC LIMIT 1",
    )
    .bind(dataset_id)
    .fetch_optional(pool)
    .await?)
}

/// How many live rows a dataset has, and their bytes.
pub async fn live_size(pool: &SqlitePool, dataset_id: i64) -> Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(n_bytes), 0) FROM examples \
         WHERE dataset_id = ? AND deleted_at IS NULL",
    )
    .bind(dataset_id)
    .fetch_one(pool)
    .await?)
}

/// The dataset a run trains on and the version it pinned.
pub async fn pinned_version(pool: &SqlitePool, run_id: i64) -> Result<(i64, DatasetVersion)> {
    let (dataset_id, version_id): (i64, i64) =
        sqlx::query_as("SELECT dataset_id, dataset_version_id FROM runs WHERE id = ?")
            .bind(run_id)
            .fetch_one(pool)
            .await?;
    let version: i64 = sqlx::query_scalar("SELECT version FROM dataset_versions WHERE id = ?")
        .bind(version_id)
        .fetch_one(pool)
        .await?;
    Ok((
        dataset_id,
        versions::store::find(pool, dataset_id, version).await?,
    ))
}

/// Records what the worker made of the run's dataset.
pub async fn set_examples(pool: &SqlitePool, run_id: i64, counts: &RunExamples) -> Result<()> {
    sqlx::query("UPDATE runs SET n_trained = ?, n_truncated = ?, n_skipped = ? WHERE id = ?")
        .bind(counts.n_trained)
        .bind(counts.n_truncated)
        .bind(counts.n_skipped)
        .bind(run_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// A run's team and name.
pub async fn team_and_name(pool: &SqlitePool, run_id: i64) -> Result<(i64, String)> {
    Ok(
        sqlx::query_as("SELECT team_id, name FROM runs WHERE id = ?")
            .bind(run_id)
            .fetch_one(pool)
            .await?,
    )
}

/// Links a run to its registered final model, in the caller's transaction.
pub async fn set_output_model(db: &mut SqliteConnection, run_id: i64, model_id: i64) -> Result<()> {
    sqlx::query("UPDATE runs SET output_model_id = ? WHERE id = ?")
        .bind(model_id)
        .bind(run_id)
        .execute(&mut *db)
        .await?;
    Ok(())
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

/// What a claimed training job's worker needs, read in the claim's transaction.
pub async fn claimed(db: &mut SqliteConnection, job: &Leased) -> Result<TrainWork> {
    let run: ClaimedRun = sqlx::query_as(
        "SELECT r.model_id, m.name AS model_name, m.origin AS model_origin, r.teacher_id, \
         t.name AS teacher_name, t.origin AS teacher_origin, r.dataset_version_id, r.params FROM runs r \
         JOIN models m ON m.id = r.model_id LEFT JOIN models t ON t.id = r.teacher_id WHERE r.id = ?",
    )
    .bind(job.run()?)
    .fetch_one(&mut *db)
    .await?;
    Ok(TrainWork {
        run_id: job.run()?,
        config: serde_json::from_str(&run.params)
            .map_err(|e| Error::Internal(format!("run params: {e}")))?,
        model_id: run.model_id,
        model_name: run.model_name,
        model_origin: run.model_origin,
        teacher_id: run.teacher_id,
        teacher_name: run.teacher_name,
        teacher_origin: run.teacher_origin,
        dataset_version_id: run.dataset_version_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values a `CHECK (column IN (...))` of the schema allows.
    fn allowed(schema: &str, column: &str) -> Vec<String> {
        let start = schema.find(&format!("{column} IN (")).expect("the CHECK") + column.len() + 5;
        let end = start + schema[start..].find(')').expect("its end");
        schema[start..end]
            .split(',')
            .map(|v| v.trim().trim_matches('\'').to_string())
            .collect()
    }

    #[test]
    fn the_methods_and_statuses_are_the_ones_the_schema_allows() {
        let schema = include_str!("../../../migrations/0002_runs.sql");
        let names = |all: Vec<&str>| all.into_iter().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            allowed(schema, "method"),
            names(RunMethod::ALL.iter().map(|m| m.as_str()).collect())
        );
        assert_eq!(
            allowed(schema, "status"),
            names(RunStatus::ALL.iter().map(|s| s.as_str()).collect())
        );
        let err = stored(7, "status", "paused", RunStatus::parse).unwrap_err();
        assert!(err.to_string().contains("run 7: status 'paused'"), "{err}");
    }
}
