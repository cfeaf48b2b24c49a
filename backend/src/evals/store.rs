//! Evals and their graded records in SQLite.

use sqlx::{FromRow, SqliteConnection, SqlitePool};
use still_api::{EvalExample, EvalRecordUpload};

use crate::error::{Error, Result};

/// An eval's row with what its summary shows of its model, dataset and job.
#[derive(Debug, Clone, FromRow)]
pub struct EvalRow {
    pub id: i64,
    pub team_id: i64,
    pub name: String,
    pub model_id: i64,
    pub model_name: String,
    pub model_origin: String,
    pub run_id: Option<i64>,
    pub step: Option<i64>,
    pub dataset_id: i64,
    pub dataset_name: String,
    pub dataset_version_id: i64,
    pub dataset_version: i64,
    pub settings: String,
    pub n_examples: i64,
    pub n_budgets: i64,
    pub created_at: String,
    pub status: Option<String>,
    pub error: Option<String>,
    pub finished_at: Option<String>,
}

const SELECT: &str = "SELECT e.id, e.team_id, e.name, e.model_id, m.name AS model_name, \
     m.origin AS model_origin, e.run_id, e.step, e.dataset_id, d.name AS dataset_name, \
     e.dataset_version_id, v.version AS dataset_version, e.settings, e.n_examples, e.n_budgets, \
     e.created_at, j.status, j.error, j.finished_at \
     FROM evals e JOIN models m ON m.id = e.model_id JOIN datasets d ON d.id = e.dataset_id \
     JOIN dataset_versions v ON v.id = e.dataset_version_id \
     LEFT JOIN jobs j ON j.id = (SELECT max(id) FROM jobs WHERE eval_id = e.id)";

/// An eval of the team by id or name.
pub async fn load(pool: &SqlitePool, team_id: i64, reference: &str) -> Result<EvalRow> {
    crate::db::by_id_or_name(pool, SELECT, "e.", team_id, reference, "eval").await
}

/// An eval by id, whatever its team (for the worker protocol).
pub async fn by_id(db: &mut SqliteConnection, id: i64) -> Result<EvalRow> {
    sqlx::query_as(&format!("{SELECT} WHERE e.id = ?"))
        .bind(id)
        .fetch_optional(&mut *db)
        .await?
        .ok_or_else(|| Error::not_found(format!("eval {id}")))
}

/// The team's evals, newest first; with `run`, only that run's, in step order.
pub async fn list(pool: &SqlitePool, team_id: i64, run: Option<i64>) -> Result<Vec<EvalRow>> {
    Ok(match run {
        None => {
            sqlx::query_as(&format!("{SELECT} WHERE e.team_id = ? ORDER BY e.id DESC"))
                .bind(team_id)
                .fetch_all(pool)
                .await?
        }
        Some(run) => sqlx::query_as(&format!(
            "{SELECT} WHERE e.team_id = ? AND e.run_id = ? ORDER BY e.step IS NULL, e.step, e.id"
        ))
        .bind(team_id)
        .bind(run)
        .fetch_all(pool)
        .await?,
    })
}

pub async fn name_taken(pool: &SqlitePool, team_id: i64, name: &str) -> Result<bool> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT id FROM evals WHERE team_id = ? AND name = ?")
            .bind(team_id)
            .bind(name)
            .fetch_optional(pool)
            .await?;
    Ok(found.is_some())
}

/// A new eval's columns.
pub struct NewEvalRow<'a> {
    pub team_id: i64,
    pub name: &'a str,
    pub model_id: i64,
    pub run_id: Option<i64>,
    pub step: Option<i64>,
    pub dataset_id: i64,
    pub dataset_version_id: i64,
    pub settings: &'a str,
    pub n_examples: i64,
    pub n_budgets: i64,
}

pub async fn insert(db: &mut SqliteConnection, e: &NewEvalRow<'_>) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO evals (team_id, name, model_id, run_id, step, dataset_id, \
         dataset_version_id, settings, n_examples, n_budgets) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(e.team_id)
    .bind(e.name)
    .bind(e.model_id)
    .bind(e.run_id)
    .bind(e.step)
    .bind(e.dataset_id)
    .bind(e.dataset_version_id)
    .bind(e.settings)
    .bind(e.n_examples)
    .bind(e.n_budgets)
    .fetch_one(&mut *db)
    .await?)
}

/// `(budget_index, correct, thinking_tokens)` of every graded pair.
pub async fn outcomes(pool: &SqlitePool, eval_id: i64) -> Result<Vec<(i64, bool, i64)>> {
    Ok(sqlx::query_as(
        "SELECT budget_index, correct, thinking_tokens FROM eval_records WHERE eval_id = ?",
    )
    .bind(eval_id)
    .fetch_all(pool)
    .await?)
}

/// One graded question of an eval at one budget, for comparing evals.
#[derive(Debug, Clone, FromRow)]
pub struct Graded {
    pub example_index: i64,
    pub correct: bool,
    pub question: String,
    pub reference: String,
    pub extracted: Option<String>,
}

/// An eval's graded questions at one budget, in example order (their texts read from the
/// stored records by SQLite, not parsed here).
pub async fn graded(pool: &SqlitePool, eval_id: i64, budget: i64) -> Result<Vec<Graded>> {
    Ok(sqlx::query_as(
        "SELECT example_index, correct, \
         coalesce(json_extract(record, '$.question'), '') AS question, \
         coalesce(json_extract(record, '$.reference'), '') AS reference, \
         json_extract(record, '$.extracted') AS extracted \
         FROM eval_records WHERE eval_id = ? AND budget_index = ? ORDER BY example_index",
    )
    .bind(eval_id)
    .bind(budget)
    .fetch_all(pool)
    .await?)
}

/// The `(budget_index, example_index)` pairs already graded.
pub async fn done_pairs(db: &mut SqliteConnection, eval_id: i64) -> Result<Vec<(i64, i64)>> {
    Ok(sqlx::query_as(
        "SELECT budget_index, example_index FROM eval_records WHERE eval_id = ? \
         ORDER BY budget_index, example_index",
    )
    .bind(eval_id)
    .fetch_all(&mut *db)
    .await?)
}

pub async fn count(db: &mut SqliteConnection, eval_id: i64) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM eval_records WHERE eval_id = ?")
            .bind(eval_id)
            .fetch_one(&mut *db)
            .await?,
    )
}

/// Stores graded pairs in the caller's transaction; a pair already stored is kept as it was.
/// Returns how many were new.
pub async fn insert_records(
    db: &mut SqliteConnection,
    eval_id: i64,
    attempt: i64,
    records: &[EvalRecordUpload],
) -> Result<u64> {
    let mut inserted = 0;
    for r in records {
        let json = serde_json::to_string(&r.record).map_err(|e| Error::Internal(e.to_string()))?;
        inserted += sqlx::query(
            "INSERT OR IGNORE INTO eval_records (eval_id, budget_index, example_index, correct, \
             thinking_tokens, record, attempt) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(eval_id)
        .bind(r.budget_index)
        .bind(r.example_index)
        .bind(r.correct)
        .bind(r.thinking_tokens)
        .bind(json)
        .bind(attempt)
        .execute(&mut *db)
        .await?
        .rows_affected();
    }
    Ok(inserted)
}

/// Which graded pairs a page of examples shows.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ExampleFilter {
    pub budget: Option<i64>,
    pub correct: Option<bool>,
    /// Text the question, thinking or answer contains (case-insensitive).
    pub q: Option<String>,
    /// Examples after this example index (with `budget`: within the budget).
    pub after: Option<i64>,
    pub limit: Option<i64>,
}

/// The most examples one page returns.
pub const MAX_PAGE: i64 = 200;

pub async fn examples(
    pool: &SqlitePool,
    eval_id: i64,
    filter: &ExampleFilter,
) -> Result<Vec<EvalExample>> {
    let limit = filter.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let rows: Vec<(i64, i64, bool, i64, i64, String)> = sqlx::query_as(
        "SELECT budget_index, example_index, correct, thinking_tokens, attempt, record \
         FROM eval_records WHERE eval_id = ?1 \
         AND (?2 IS NULL OR budget_index = ?2) AND (?3 IS NULL OR correct = ?3) \
         AND (?4 IS NULL OR instr(lower(record), lower(?4)) > 0) \
         AND (?5 IS NULL OR example_index > ?5) \
         ORDER BY example_index, budget_index LIMIT ?6",
    )
    .bind(eval_id)
    .bind(filter.budget)
    .bind(filter.correct)
    .bind(filter.q.as_deref().filter(|q| !q.is_empty()))
    .bind(filter.after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(
            |(budget_index, example_index, correct, thinking_tokens, attempt, record)| {
                Ok(EvalExample {
                    budget_index,
                    example_index,
                    correct,
                    thinking_tokens,
                    attempt,
                    record: serde_json::from_str(&record)
                        .map_err(|e| Error::Internal(format!("eval record: {e}")))?,
                })
            },
        )
        .collect()
}
