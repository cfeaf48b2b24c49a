//! Worker identities: tokens (only their hashes are stored), what each registered, and whether
//! it is idle, busy or offline.

use sqlx::{FromRow, SqlitePool};
use still_api::{RegisterWorker, WorkerSummary};

use crate::error::{Error, Result};
use crate::http::token_hash;
use crate::jobs::queue::LEASE_SECONDS;

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
pub async fn seen(pool: &SqlitePool, worker_id: i64) -> Result<()> {
    sqlx::query(
        "UPDATE workers SET last_seen_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?",
    )
    .bind(worker_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Stores what a worker registered (its device, memory and the models on its disk), marks it
/// seen and returns it as the workers page shows it.
pub async fn register_worker(
    pool: &SqlitePool,
    worker_id: i64,
    body: &RegisterWorker,
) -> Result<WorkerSummary> {
    sqlx::query("UPDATE workers SET device = ?, memory_bytes = ?, models = ?, last_seen_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?")
        .bind(&body.device)
        .bind(body.memory_bytes)
        .bind(serde_json::to_string(&body.models).map_err(|e| Error::Internal(e.to_string()))?)
        .bind(worker_id)
        .execute(pool)
        .await?;
    workers(pool)
        .await?
        .into_iter()
        .find(|w| w.id == worker_id)
        .ok_or_else(|| Error::not_found(format!("worker {worker_id}")))
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
