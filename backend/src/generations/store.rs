//! Generations and their rows in SQLite. The API key column is read only by
//! [`teacher_secret`], for the worker that holds the job's lease.

use sqlx::{FromRow, SqliteConnection, SqlitePool};
use still_api::{GenerationCounts, GenerationRow};

use crate::error::{Error, Result};

/// A generation's row with what its summary shows of its datasets, teacher and job (never the
/// API key).
#[derive(Debug, Clone, FromRow)]
pub struct GenerationRowDb {
    pub id: i64,
    pub team_id: i64,
    pub name: String,
    pub dataset_id: i64,
    pub dataset_name: String,
    pub dataset_version_id: i64,
    pub dataset_version: i64,
    pub output_dataset_id: Option<i64>,
    pub output_dataset_name: Option<String>,
    pub teacher_kind: String,
    pub teacher_model: String,
    pub model_id: Option<i64>,
    pub model_origin: Option<String>,
    pub base_url: Option<String>,
    pub api_key_hint: Option<String>,
    pub settings: String,
    pub n_examples: i64,
    pub n_samples: i64,
    pub created_at: String,
    pub status: Option<String>,
    pub error: Option<String>,
    pub finished_at: Option<String>,
}

const SELECT: &str = "SELECT g.id, g.team_id, g.name, g.dataset_id, d.name AS dataset_name, \
     g.dataset_version_id, v.version AS dataset_version, g.output_dataset_id, \
     o.name AS output_dataset_name, g.teacher_kind, g.teacher_model, g.model_id, \
     m.origin AS model_origin, g.base_url, \
     CASE WHEN g.api_key IS NULL OR g.api_key = '' THEN NULL \
          WHEN length(g.api_key) < 12 THEN '…' \
          ELSE '…' || substr(g.api_key, -4) END AS api_key_hint, \
     g.settings, g.n_examples, g.n_samples, g.created_at, j.status, j.error, j.finished_at \
     FROM generations g JOIN datasets d ON d.id = g.dataset_id \
     JOIN dataset_versions v ON v.id = g.dataset_version_id \
     LEFT JOIN datasets o ON o.id = g.output_dataset_id \
     LEFT JOIN models m ON m.id = g.model_id \
     LEFT JOIN jobs j ON j.id = (SELECT max(id) FROM jobs WHERE generation_id = g.id)";

/// A generation of the team by id or name.
pub async fn load(pool: &SqlitePool, team_id: i64, reference: &str) -> Result<GenerationRowDb> {
    crate::db::by_id_or_name(pool, SELECT, "g.", team_id, reference, "generation").await
}

/// A generation by id, whatever its team (for the worker protocol).
pub async fn by_id(db: &mut SqliteConnection, id: i64) -> Result<GenerationRowDb> {
    sqlx::query_as(&format!("{SELECT} WHERE g.id = ?"))
        .bind(id)
        .fetch_optional(&mut *db)
        .await?
        .ok_or_else(|| Error::not_found(format!("generation {id}")))
}

/// The team's generations, newest first; with `dataset`, only those from or into it.
pub async fn list(
    pool: &SqlitePool,
    team_id: i64,
    dataset: Option<i64>,
) -> Result<Vec<GenerationRowDb>> {
    Ok(match dataset {
        None => {
            sqlx::query_as(&format!("{SELECT} WHERE g.team_id = ? ORDER BY g.id DESC"))
                .bind(team_id)
                .fetch_all(pool)
                .await?
        }
        Some(d) => {
            sqlx::query_as(&format!(
                "{SELECT} WHERE g.team_id = ? AND (g.dataset_id = ?2 OR g.output_dataset_id = ?2) \
             ORDER BY g.id DESC"
            ))
            .bind(team_id)
            .bind(d)
            .fetch_all(pool)
            .await?
        }
    })
}

pub async fn name_taken(pool: &SqlitePool, team_id: i64, name: &str) -> Result<bool> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT id FROM generations WHERE team_id = ? AND name = ?")
            .bind(team_id)
            .bind(name)
            .fetch_optional(pool)
            .await?;
    Ok(found.is_some())
}

/// A new generation's columns.
pub struct NewGenerationRow<'a> {
    pub team_id: i64,
    pub name: &'a str,
    pub dataset_id: i64,
    pub dataset_version_id: i64,
    pub output_dataset_id: i64,
    pub teacher_kind: &'a str,
    pub teacher_model: &'a str,
    pub model_id: Option<i64>,
    pub base_url: Option<&'a str>,
    pub api_key: Option<&'a str>,
    pub settings: &'a str,
    pub n_examples: i64,
    pub n_samples: i64,
}

pub async fn insert(db: &mut SqliteConnection, g: &NewGenerationRow<'_>) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO generations (team_id, name, dataset_id, dataset_version_id, output_dataset_id, \
         teacher_kind, teacher_model, model_id, base_url, api_key, settings, n_examples, n_samples) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(g.team_id)
    .bind(g.name)
    .bind(g.dataset_id)
    .bind(g.dataset_version_id)
    .bind(g.output_dataset_id)
    .bind(g.teacher_kind)
    .bind(g.teacher_model)
    .bind(g.model_id)
    .bind(g.base_url)
    .bind(g.api_key)
    .bind(g.settings)
    .bind(g.n_examples)
    .bind(g.n_samples)
    .fetch_one(&mut *db)
    .await?)
}

/// The endpoint's API key, for the worker that holds the generation's lease.
pub async fn teacher_secret(db: &mut SqliteConnection, id: i64) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT api_key FROM generations WHERE id = ?")
            .bind(id)
            .fetch_one(&mut *db)
            .await?,
    )
}

/// Counts over a generation's rows.
pub async fn counts(db: &mut SqliteConnection, id: i64, total: i64) -> Result<GenerationCounts> {
    let (done, ok, kept, failed, graded, correct, prompt_tokens, completion_tokens): (
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
    ) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(status = 'ok'), 0), coalesce(sum(kept), 0), \
         coalesce(sum(status = 'failed'), 0), coalesce(sum(correct IS NOT NULL), 0), \
         coalesce(sum(correct = 1), 0), coalesce(sum(prompt_tokens), 0), \
         coalesce(sum(completion_tokens), 0) FROM generation_rows WHERE generation_id = ?",
    )
    .bind(id)
    .fetch_one(&mut *db)
    .await?;
    Ok(GenerationCounts {
        total,
        done,
        ok,
        kept,
        failed,
        graded,
        correct,
        prompt_tokens,
        completion_tokens,
    })
}

/// `(example_index, sample_index)` of every stored row.
pub async fn done_rows(db: &mut SqliteConnection, id: i64) -> Result<Vec<(i64, i64)>> {
    Ok(sqlx::query_as(
        "SELECT example_index, sample_index FROM generation_rows WHERE generation_id = ? \
         ORDER BY example_index, sample_index",
    )
    .bind(id)
    .fetch_all(&mut *db)
    .await?)
}

/// Whether a row is stored already.
pub async fn has_row(
    db: &mut SqliteConnection,
    id: i64,
    example: i64,
    sample: i64,
) -> Result<bool> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM generation_rows WHERE generation_id = ? AND example_index = ? AND sample_index = ?",
    )
    .bind(id)
    .bind(example)
    .bind(sample)
    .fetch_optional(&mut *db)
    .await?;
    Ok(found.is_some())
}

/// A row to store.
pub struct NewRow<'a> {
    pub example_index: i64,
    pub sample_index: i64,
    pub ok: bool,
    pub kept: bool,
    pub correct: Option<bool>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub record: &'a str,
    pub error: Option<&'a str>,
    pub example_id: Option<i64>,
}

pub async fn insert_row(
    db: &mut SqliteConnection,
    id: i64,
    attempt: i64,
    r: &NewRow<'_>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO generation_rows (generation_id, example_index, sample_index, status, kept, \
         correct, prompt_tokens, completion_tokens, record, error, example_id, attempt) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(r.example_index)
    .bind(r.sample_index)
    .bind(if r.ok { "ok" } else { "failed" })
    .bind(r.kept)
    .bind(r.correct)
    .bind(r.prompt_tokens)
    .bind(r.completion_tokens)
    .bind(r.record)
    .bind(r.error)
    .bind(r.example_id)
    .bind(attempt)
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// Which rows a page shows.
#[derive(Debug, Default, serde::Deserialize)]
pub struct RowFilter {
    /// `ok` or `failed`.
    pub status: Option<String>,
    pub kept: Option<bool>,
    /// Rows after this `(example_index, sample_index)`, as `example:sample`.
    pub after: Option<String>,
    pub limit: Option<i64>,
}

/// The most rows one page returns.
pub const MAX_PAGE: i64 = 500;

pub async fn rows(pool: &SqlitePool, id: i64, filter: &RowFilter) -> Result<Vec<GenerationRow>> {
    let (after_example, after_sample) = match filter.after.as_deref() {
        None => (-1, -1),
        Some(text) => {
            let parsed = text
                .split_once(':')
                .and_then(|(e, s)| Some((e.parse::<i64>().ok()?, s.parse::<i64>().ok()?)));
            parsed.ok_or_else(|| {
                Error::BadRequest(format!(
                    "after: '{text}' is not example:sample (two whole numbers)"
                ))
            })?
        }
    };
    if let Some(status) = &filter.status
        && !matches!(status.as_str(), "ok" | "failed")
    {
        return Err(Error::BadRequest(format!(
            "status: '{status}' is not ok or failed"
        )));
    }
    let limit = filter.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let rows: Vec<DbRow> = sqlx::query_as(
        "SELECT example_index, sample_index, status, kept, correct, prompt_tokens, \
         completion_tokens, error, example_id, attempt, record FROM generation_rows \
         WHERE generation_id = ?1 AND (example_index, sample_index) > (?2, ?3) \
         AND (?4 IS NULL OR status = ?4) AND (?5 IS NULL OR kept = ?5) \
         ORDER BY example_index, sample_index LIMIT ?6",
    )
    .bind(id)
    .bind(after_example)
    .bind(after_sample)
    .bind(filter.status.as_deref())
    .bind(filter.kept)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(DbRow::into_api).collect()
}

#[derive(FromRow)]
struct DbRow {
    example_index: i64,
    sample_index: i64,
    status: String,
    kept: bool,
    correct: Option<bool>,
    prompt_tokens: i64,
    completion_tokens: i64,
    error: Option<String>,
    example_id: Option<i64>,
    attempt: i64,
    record: String,
}

impl DbRow {
    fn into_api(self) -> Result<GenerationRow> {
        Ok(GenerationRow {
            example_index: self.example_index,
            sample_index: self.sample_index,
            status: self.status,
            kept: self.kept,
            correct: self.correct,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            error: self.error,
            example_id: self.example_id,
            attempt: self.attempt,
            record: serde_json::from_str(&self.record)
                .map_err(|e| Error::Internal(format!("generation row record: {e}")))?,
        })
    }
}

/// The source row at `ordinal` of a pinned version, and its example's id.
pub async fn source_row(
    db: &mut SqliteConnection,
    version_id: i64,
    ordinal: i64,
) -> Result<(i64, still_api::ExampleFields)> {
    let (example_id, body): (i64, String) = sqlx::query_as(
        "SELECT r.example_id, b.body FROM dataset_version_rows r \
         JOIN example_blobs b ON b.hash = r.blob_hash WHERE r.version_id = ? AND r.ordinal = ?",
    )
    .bind(version_id)
    .bind(ordinal)
    .fetch_optional(&mut *db)
    .await?
    .ok_or_else(|| Error::not_found(format!("row {ordinal} of dataset version {version_id}")))?;
    let fields = serde_json::from_str(&body)
        .map_err(|e| Error::Internal(format!("version blob unreadable: {e}")))?;
    Ok((example_id, fields))
}
