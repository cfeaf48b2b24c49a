//! Saved comparisons: a team's named selections of runs.

use sqlx::{FromRow, SqlitePool};
use still_api::SavedComparison;

use crate::error::{Error, Result};

#[derive(FromRow)]
pub struct ComparisonRow {
    pub id: i64,
    pub name: String,
    pub runs: String,
    pub baseline: Option<i64>,
    pub settings: String,
    pub created_at: String,
}

const SELECT: &str = "SELECT id, name, runs, baseline, settings, created_at FROM comparisons";

impl ComparisonRow {
    /// The saved comparison, with the runs that no longer exist moved to `missing`.
    pub fn into_saved(self, existing: &[i64]) -> Result<SavedComparison> {
        let ids: Vec<i64> = serde_json::from_str(&self.runs)
            .map_err(|e| Error::Internal(format!("comparison {} runs: {e}", self.id)))?;
        let (runs, missing) = ids.into_iter().partition(|id| existing.contains(id));
        Ok(SavedComparison {
            id: self.id,
            name: self.name,
            runs,
            missing,
            baseline: self.baseline,
            settings: serde_json::from_str(&self.settings)
                .map_err(|e| Error::Internal(format!("comparison {} settings: {e}", self.id)))?,
            created_at: self.created_at,
        })
    }

    pub fn run_ids(&self) -> Vec<i64> {
        serde_json::from_str(&self.runs).unwrap_or_default()
    }
}

/// Saves a comparison; a name the team already uses answers 409.
pub async fn insert(
    pool: &SqlitePool,
    team: i64,
    name: &str,
    runs: &[i64],
    baseline: Option<i64>,
    settings: &str,
) -> Result<ComparisonRow> {
    let runs = serde_json::to_string(runs).map_err(|e| Error::Internal(e.to_string()))?;
    let mut db = crate::db::write_tx(pool).await?;
    let taken: Option<i64> =
        sqlx::query_scalar("SELECT id FROM comparisons WHERE team_id = ? AND name = ?")
            .bind(team)
            .bind(name)
            .fetch_optional(&mut *db)
            .await?;
    if taken.is_some() {
        return Err(Error::Conflict(format!(
            "name: a comparison named '{name}' exists already"
        )));
    }
    let row: ComparisonRow = sqlx::query_as(
        "INSERT INTO comparisons (team_id, name, runs, baseline, settings) VALUES (?, ?, ?, ?, ?) \
         RETURNING id, name, runs, baseline, settings, created_at",
    )
    .bind(team)
    .bind(name)
    .bind(runs)
    .bind(baseline)
    .bind(settings)
    .fetch_one(&mut *db)
    .await?;
    db.commit().await?;
    Ok(row)
}

/// A comparison of the team by id or name.
pub async fn find(pool: &SqlitePool, team: i64, reference: &str) -> Result<ComparisonRow> {
    crate::db::by_id_or_name(pool, SELECT, "", team, reference, "comparison").await
}

/// The team's comparisons, newest first.
pub async fn list(pool: &SqlitePool, team: i64) -> Result<Vec<ComparisonRow>> {
    Ok(
        sqlx::query_as(&format!("{SELECT} WHERE team_id = ? ORDER BY id DESC"))
            .bind(team)
            .fetch_all(pool)
            .await?,
    )
}

pub async fn delete(pool: &SqlitePool, id: i64) -> Result<()> {
    let mut db = crate::db::write_tx(pool).await?;
    sqlx::query("DELETE FROM comparisons WHERE id = ?")
        .bind(id)
        .execute(&mut *db)
        .await?;
    db.commit().await?;
    Ok(())
}
