//! Curations in SQLite: the curation rows, their finished stages (counts, the version each cut,
//! the kept rows), every dropped row with its rule, the difficulty stage's evals, saved recipes,
//! the trace-token cache, and the lineage of a version.

use std::collections::HashMap;

use sqlx::{FromRow, SqliteConnection, SqlitePool};
use still_api::LineageUse;

use crate::error::{Error, Result};

#[derive(Debug, Clone, FromRow)]
pub struct CurationRow {
    pub id: i64,
    pub team_id: i64,
    pub name: String,
    pub dataset_id: i64,
    pub dataset_name: String,
    pub dataset_version_id: i64,
    pub source_version: i64,
    pub source_rows: i64,
    pub output_dataset_id: Option<i64>,
    pub output_dataset_name: Option<String>,
    pub recipe: String,
    pub recipe_name: Option<String>,
    pub seed: i64,
    pub status: String,
    pub error: Option<String>,
    pub source_detail: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

const SELECT: &str = "SELECT c.id, c.team_id, c.name, c.dataset_id, d.name AS dataset_name, \
     c.dataset_version_id, v.version AS source_version, v.n_rows AS source_rows, \
     c.output_dataset_id, o.name AS output_dataset_name, c.recipe, c.recipe_name, c.seed, \
     c.status, c.error, c.source_detail, c.created_at, c.finished_at \
     FROM curations c JOIN datasets d ON d.id = c.dataset_id \
     JOIN dataset_versions v ON v.id = c.dataset_version_id \
     LEFT JOIN datasets o ON o.id = c.output_dataset_id";

pub async fn load(pool: &SqlitePool, team_id: i64, reference: &str) -> Result<CurationRow> {
    crate::db::by_id_or_name(pool, SELECT, "c.", team_id, reference, "curation").await
}

pub async fn by_id(pool: &SqlitePool, id: i64) -> Result<CurationRow> {
    sqlx::query_as(&format!("{SELECT} WHERE c.id = ?"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::not_found(format!("curation {id}")))
}

/// The team's curations, newest first (with `dataset`, those from or into it).
pub async fn list(
    pool: &SqlitePool,
    team_id: i64,
    dataset: Option<i64>,
) -> Result<Vec<CurationRow>> {
    Ok(match dataset {
        None => sqlx::query_as(&format!("{SELECT} WHERE c.team_id = ? ORDER BY c.id DESC"))
            .bind(team_id)
            .fetch_all(pool)
            .await?,
        Some(d) => sqlx::query_as(&format!(
            "{SELECT} WHERE c.team_id = ? AND (c.dataset_id = ?2 OR c.output_dataset_id = ?2) ORDER BY c.id DESC"
        ))
        .bind(team_id)
        .bind(d)
        .fetch_all(pool)
        .await?,
    })
}

pub async fn name_taken(pool: &SqlitePool, team_id: i64, name: &str) -> Result<bool> {
    Ok(sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM curations WHERE team_id = ? AND name = ?",
    )
    .bind(team_id)
    .bind(name)
    .fetch_one(pool)
    .await?
        > 0)
}

pub struct NewCurationRow<'a> {
    pub team_id: i64,
    pub name: &'a str,
    pub dataset_id: i64,
    pub dataset_version_id: i64,
    pub output_dataset_id: i64,
    pub recipe: &'a str,
    pub recipe_name: Option<&'a str>,
    pub seed: i64,
}

pub async fn insert(db: &mut SqliteConnection, c: &NewCurationRow<'_>) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO curations (team_id, name, dataset_id, dataset_version_id, output_dataset_id, \
         recipe, recipe_name, seed) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(c.team_id)
    .bind(c.name)
    .bind(c.dataset_id)
    .bind(c.dataset_version_id)
    .bind(c.output_dataset_id)
    .bind(c.recipe)
    .bind(c.recipe_name)
    .bind(c.seed)
    .fetch_one(&mut *db)
    .await?)
}

/// Moves an unfinished curation to `status` (finished ones keep theirs); true if it moved.
pub async fn set_status(
    db: &mut SqliteConnection,
    id: i64,
    status: &str,
    error: Option<&str>,
) -> Result<bool> {
    let finished = matches!(status, "succeeded" | "failed" | "cancelled");
    let done = sqlx::query(
        "UPDATE curations SET status = ?, error = ?, \
         finished_at = CASE WHEN ? THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now') END \
         WHERE id = ? AND status IN ('queued', 'running', 'waiting')",
    )
    .bind(status)
    .bind(error)
    .bind(finished)
    .bind(id)
    .execute(&mut *db)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn set_source_detail(pool: &SqlitePool, id: i64, detail: &str) -> Result<()> {
    sqlx::query("UPDATE curations SET source_detail = ? WHERE id = ?")
        .bind(detail)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Unfinished curations, oldest first.
pub async fn active(pool: &SqlitePool) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM curations WHERE status IN ('queued', 'running', 'waiting') ORDER BY id",
    )
    .fetch_all(pool)
    .await?)
}

#[derive(Debug, Clone, FromRow)]
pub struct StageRow {
    pub idx: i64,
    pub name: String,
    pub n_in: i64,
    pub n_out: i64,
    pub version_id: Option<i64>,
    pub version: Option<i64>,
    pub detail: String,
}

pub async fn stages(pool: &SqlitePool, curation_id: i64) -> Result<Vec<StageRow>> {
    Ok(sqlx::query_as(
        "SELECT s.idx, s.name, s.n_in, s.n_out, s.version_id, v.version, s.detail \
         FROM curation_stages s LEFT JOIN dataset_versions v ON v.id = s.version_id \
         WHERE s.curation_id = ? ORDER BY s.idx",
    )
    .bind(curation_id)
    .fetch_all(pool)
    .await?)
}

/// A finished stage's kept rows (source ordinals): the next stage's input.
pub async fn kept(pool: &SqlitePool, curation_id: i64, idx: i64) -> Result<Vec<u32>> {
    let json: String =
        sqlx::query_scalar("SELECT kept FROM curation_stages WHERE curation_id = ? AND idx = ?")
            .bind(curation_id)
            .bind(idx)
            .fetch_one(pool)
            .await?;
    serde_json::from_str(&json)
        .map_err(|e| Error::Internal(format!("curation {curation_id} stage {idx}: {e}")))
}

pub struct NewStage<'a> {
    pub curation_id: i64,
    pub idx: i64,
    pub name: &'a str,
    pub n_in: i64,
    pub n_out: i64,
    pub version_id: i64,
    pub detail: &'a str,
    pub kept: &'a str,
}

pub async fn insert_stage(db: &mut SqliteConnection, s: &NewStage<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO curation_stages (curation_id, idx, name, n_in, n_out, version_id, detail, kept) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(s.curation_id)
    .bind(s.idx)
    .bind(s.name)
    .bind(s.n_in)
    .bind(s.n_out)
    .bind(s.version_id)
    .bind(s.detail)
    .bind(s.kept)
    .execute(&mut *db)
    .await?;
    Ok(())
}

pub async fn insert_drops(
    db: &mut SqliteConnection,
    curation_id: i64,
    stage: i64,
    drops: &[(i64, &str, &str)],
) -> Result<()> {
    for chunk in drops.chunks(200) {
        let mut query = sqlx::QueryBuilder::new(
            "INSERT INTO curation_drops (curation_id, stage, ordinal, rule, detail) ",
        );
        query.push_values(chunk, |mut b, (ordinal, rule, detail)| {
            b.push_bind(curation_id)
                .push_bind(stage)
                .push_bind(*ordinal)
                .push_bind(*rule)
                .push_bind(*detail);
        });
        query.build().execute(&mut *db).await?;
    }
    Ok(())
}

/// A page of dropped rows: (stage, source ordinal, rule, detail), by stage then ordinal.
pub async fn drops(
    pool: &SqlitePool,
    curation_id: i64,
    stage: Option<i64>,
    rule: Option<&str>,
    offset: i64,
    limit: i64,
) -> Result<(i64, Vec<(i64, i64, String, String)>)> {
    const FILTER: &str =
        "curation_id = ?1 AND (?2 IS NULL OR stage = ?2) AND (?3 IS NULL OR rule = ?3)";
    let total: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM curation_drops WHERE {FILTER}"
    ))
    .bind(curation_id)
    .bind(stage)
    .bind(rule)
    .fetch_one(pool)
    .await?;
    let rows = sqlx::query_as(&format!(
        "SELECT stage, ordinal, rule, detail FROM curation_drops WHERE {FILTER} \
         ORDER BY stage, ordinal LIMIT ?4 OFFSET ?5"
    ))
    .bind(curation_id)
    .bind(stage)
    .bind(rule)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    Ok((total, rows))
}

pub async fn link_eval(
    db: &mut SqliteConnection,
    curation_id: i64,
    stage: i64,
    position: i64,
    eval_id: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO curation_evals (curation_id, stage, position, eval_id) VALUES (?, ?, ?, ?)",
    )
    .bind(curation_id)
    .bind(stage)
    .bind(position)
    .bind(eval_id)
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// The difficulty stage's evals, in the recipe's model order.
pub async fn evals(pool: &SqlitePool, curation_id: i64, stage: i64) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT eval_id FROM curation_evals WHERE curation_id = ? AND stage = ? ORDER BY position",
    )
    .bind(curation_id)
    .bind(stage)
    .fetch_all(pool)
    .await?)
}

/// Every eval a curation queued.
pub async fn all_evals(pool: &SqlitePool, curation_id: i64) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT eval_id FROM curation_evals WHERE curation_id = ? ORDER BY stage, position",
    )
    .bind(curation_id)
    .fetch_all(pool)
    .await?)
}

/// The example indices an eval graded right at any budget.
pub async fn solved(pool: &SqlitePool, eval_id: i64) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT example_index FROM eval_records WHERE eval_id = ? AND correct = 1 ORDER BY 1",
    )
    .bind(eval_id)
    .fetch_all(pool)
    .await?)
}

// Saved recipes.

pub async fn recipes(pool: &SqlitePool, team_id: i64) -> Result<Vec<(String, String, String)>> {
    Ok(sqlx::query_as(
        "SELECT name, recipe, created_at FROM curation_recipes WHERE team_id = ? ORDER BY name",
    )
    .bind(team_id)
    .fetch_all(pool)
    .await?)
}

pub async fn recipe(pool: &SqlitePool, team_id: i64, name: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT recipe FROM curation_recipes WHERE team_id = ? AND name = ?")
            .bind(team_id)
            .bind(name)
            .fetch_optional(pool)
            .await?,
    )
}

/// Saves (or replaces) a named recipe.
pub async fn save_recipe(pool: &SqlitePool, team_id: i64, name: &str, recipe: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO curation_recipes (team_id, name, recipe) VALUES (?, ?, ?) \
         ON CONFLICT (team_id, name) DO UPDATE SET recipe = excluded.recipe",
    )
    .bind(team_id)
    .bind(name)
    .bind(recipe)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn delete_recipe(pool: &SqlitePool, team_id: i64, name: &str) -> Result<bool> {
    Ok(
        sqlx::query("DELETE FROM curation_recipes WHERE team_id = ? AND name = ?")
            .bind(team_id)
            .bind(name)
            .execute(pool)
            .await?
            .rows_affected()
            > 0,
    )
}

// The trace-token cache.

pub async fn cached_tokens(
    pool: &SqlitePool,
    tokenizer: &str,
    hashes: &[&str],
) -> Result<HashMap<String, u32>> {
    let mut out = HashMap::new();
    for chunk in hashes.chunks(500) {
        let mut query =
            sqlx::QueryBuilder::new("SELECT hash, n FROM trace_tokens WHERE tokenizer = ");
        query.push_bind(tokenizer).push(" AND hash IN ");
        query.push_tuples(chunk, |mut b, h| {
            b.push_bind(*h);
        });
        let rows: Vec<(String, i64)> = query.build_query_as().fetch_all(pool).await?;
        out.extend(rows.into_iter().map(|(h, n)| (h, n as u32)));
    }
    Ok(out)
}

pub async fn cache_tokens(
    pool: &SqlitePool,
    tokenizer: &str,
    counts: &[(&str, u32)],
) -> Result<()> {
    if counts.is_empty() {
        return Ok(());
    }
    let mut db = crate::db::write_tx(pool).await?;
    for chunk in counts.chunks(300) {
        let mut query =
            sqlx::QueryBuilder::new("INSERT OR IGNORE INTO trace_tokens (tokenizer, hash, n) ");
        query.push_values(chunk, |mut b, (hash, n)| {
            b.push_bind(tokenizer)
                .push_bind(*hash)
                .push_bind(i64::from(*n));
        });
        query.build().execute(&mut *db).await?;
    }
    db.commit().await?;
    Ok(())
}

// Lineage.

/// The curation stage that cut a version: (curation id, stage index, stage name).
pub async fn made_by(pool: &SqlitePool, version_id: i64) -> Result<Option<(i64, i64, String)>> {
    Ok(sqlx::query_as(
        "SELECT curation_id, idx, name FROM curation_stages WHERE version_id = ? LIMIT 1",
    )
    .bind(version_id)
    .fetch_optional(pool)
    .await?)
}

/// What pinned a version: runs, evals, curations (as their source) and generations.
pub async fn uses(pool: &SqlitePool, version_id: i64) -> Result<[Vec<LineageUse>; 4]> {
    let fetch = |sql: &'static str| async move {
        let rows: Vec<(i64, String, Option<String>)> =
            sqlx::query_as(sql).bind(version_id).fetch_all(pool).await?;
        Ok::<_, Error>(
            rows.into_iter()
                .map(|(id, name, status)| LineageUse { id, name, status })
                .collect::<Vec<_>>(),
        )
    };
    Ok([
        fetch(
            "SELECT r.id, r.name, (SELECT status FROM jobs WHERE run_id = r.id ORDER BY id DESC LIMIT 1) \
             FROM runs r WHERE r.dataset_version_id = ? ORDER BY r.id",
        )
        .await?,
        fetch(
            "SELECT e.id, e.name, (SELECT status FROM jobs WHERE eval_id = e.id ORDER BY id DESC LIMIT 1) \
             FROM evals e WHERE e.dataset_version_id = ? ORDER BY e.id",
        )
        .await?,
        fetch("SELECT id, name, status FROM curations WHERE dataset_version_id = ? ORDER BY id").await?,
        fetch(
            "SELECT g.id, g.name, (SELECT status FROM jobs WHERE generation_id = g.id ORDER BY id DESC LIMIT 1) \
             FROM generations g WHERE g.dataset_version_id = ? ORDER BY g.id",
        )
        .await?,
    ])
}
