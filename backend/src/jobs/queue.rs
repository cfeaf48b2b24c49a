//! The job queue in SQLite: enqueue, claim, heartbeat, finish, cancel and the reaper. It reads
//! and writes only `jobs` and `workers` (and the log of what a job reports to, a run or an eval,
//! in `store::logs`): what a kind of job needs claimed, done or completed is its area's, reached
//! through `crate::kinds`.
//!
//! A claim is one `UPDATE … WHERE id = (SELECT … LIMIT 1) … RETURNING`, so two workers racing for
//! one job cannot both get it. Every write a worker makes about a job (heartbeat, metrics,
//! completion) carries `AND lease_owner = ?`: a worker that lost its lease changes nothing. The
//! reaper puts expired leases back in the queue, or fails the job after `max_attempts`.

use sqlx::{FromRow, SqliteConnection, SqlitePool};
use still_api::{JobKind, MetricPoint, RunStatus};

use crate::AppState;
use crate::error::{Error, Result};
pub use crate::store::logs::Owner;
use crate::store::logs::owner_line;
use crate::store::logs::{OWNER_COLUMNS, OwnerKeys};

/// How long a lease lasts without a heartbeat.
pub const LEASE_SECONDS: i64 = 30;

/// A job to queue: its kind, what it reports to, and what a worker needs to claim it.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub team_id: i64,
    pub kind: JobKind,
    pub owner: Owner,
    pub max_attempts: i64,
    /// `cpu` or `cuda`; `None` runs anywhere.
    pub device: Option<&'a str>,
    pub min_memory_bytes: i64,
    /// Models the job uses that live only on workers' disks: a worker must have every one.
    pub worker_models: Vec<String>,
}

/// Queues a job in the caller's transaction; returns its id.
pub async fn enqueue(db: &mut SqliteConnection, job: &NewJob<'_>) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO jobs (team_id, kind, run_id, eval_id, generation_id, max_attempts, device, min_memory_bytes, worker_models) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(job.team_id)
    .bind(job.kind.as_str())
    .bind(job.owner.keys().run_id)
    .bind(job.owner.keys().eval_id)
    .bind(job.owner.keys().generation_id)
    .bind(job.max_attempts)
    .bind(job.device)
    .bind(job.min_memory_bytes)
    .bind(serde_json::to_string(&job.worker_models).map_err(|e| Error::Internal(e.to_string()))?)
    .fetch_one(&mut *db)
    .await?)
}

/// A job a worker holds the lease of.
#[derive(Debug, Clone, Copy)]
pub struct Leased {
    pub job_id: i64,
    pub worker_id: i64,
    pub kind: JobKind,
    pub owner: Owner,
    pub attempt: i64,
}

impl Leased {
    /// The run a train job reports to.
    pub fn run(&self) -> Result<i64> {
        match self.owner {
            Owner::Run(id) => Ok(id),
            _ => Err(Error::BadRequest(format!(
                "job {} is an {} job: it has no run",
                self.job_id, self.kind
            ))),
        }
    }

    /// The eval an eval job reports to.
    pub fn eval(&self) -> Result<i64> {
        match self.owner {
            Owner::Eval(id) => Ok(id),
            _ => Err(Error::BadRequest(format!(
                "job {} is a {} job: it has no eval",
                self.job_id, self.kind
            ))),
        }
    }

    /// The generation a generate job reports to.
    pub fn generation(&self) -> Result<i64> {
        match self.owner {
            Owner::Generation(id) => Ok(id),
            _ => Err(Error::BadRequest(format!(
                "job {} is a {} job: it has no trace generation",
                self.job_id, self.kind
            ))),
        }
    }
}

fn kind_of(job_id: i64, kind: &str) -> Result<JobKind> {
    JobKind::parse(kind)
        .ok_or_else(|| Error::Internal(format!("job {job_id} has an unknown kind '{kind}'")))
}

/// The job `job_id` if `worker_id` holds its lease; 409 otherwise.
pub async fn leased(pool: &SqlitePool, job_id: i64, worker_id: i64) -> Result<Leased> {
    let row: Option<LeasedRow> = sqlx::query_as(&format!(
        "SELECT kind, attempts, {OWNER_COLUMNS} FROM jobs WHERE id = ? AND lease_owner = ? AND status = 'running'"
    ))
    .bind(job_id)
    .bind(worker_id)
    .fetch_optional(pool)
    .await?;
    let row = row.ok_or_else(|| lease_lost(job_id))?;
    Ok(Leased {
        job_id,
        worker_id,
        kind: kind_of(job_id, &row.kind)?,
        owner: row.keys.owner(job_id)?,
        attempt: row.attempts,
    })
}

#[derive(FromRow)]
struct LeasedRow {
    kind: String,
    attempts: i64,
    #[sqlx(flatten)]
    keys: OwnerKeys,
}

#[derive(FromRow)]
struct ClaimRow {
    id: i64,
    kind: String,
    #[sqlx(flatten)]
    keys: OwnerKeys,
    attempts: i64,
    resume_from: Option<String>,
}

/// A job just claimed, in the claim's transaction: its kind's area adds what the worker needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job: Leased,
    pub lease_seconds: i64,
    pub resume_step: Option<i64>,
}

/// Claims the next queued job `worker_id` can run (its device kind, enough memory, every model
/// it needs from workers' disks), or `None`, in the caller's transaction (with its log line).
pub async fn claim(
    db: &mut SqliteConnection,
    worker_id: i64,
    lease_seconds: i64,
) -> Result<Option<Claimed>> {
    let row: Option<ClaimRow> = sqlx::query_as(&format!(
        "UPDATE jobs SET status = 'running', lease_owner = ?1, last_worker = ?1, attempts = attempts + 1, \
         lease_expires_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?2), \
         started_at = coalesce(started_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) \
         WHERE id = (SELECT j.id FROM jobs j JOIN workers w ON w.id = ?1 \
                     WHERE j.status = 'queued' AND j.cancel_requested = 0 \
                     AND NOT EXISTS (SELECT 1 FROM json_each(j.worker_models) need \
                                     WHERE need.value NOT IN (SELECT value FROM json_each(w.models))) \
                     AND (j.device IS NULL OR j.device = CASE WHEN w.device LIKE 'cuda%' THEN 'cuda' ELSE w.device END) \
                     AND (w.memory_bytes = 0 OR j.min_memory_bytes <= w.memory_bytes) \
                     ORDER BY j.priority DESC, j.id LIMIT 1) AND status = 'queued' \
         RETURNING id, kind, {OWNER_COLUMNS}, attempts, resume_from",
    ))
    .bind(worker_id)
    .bind(format!("+{lease_seconds} seconds"))
    .fetch_optional(&mut *db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let (worker, device): (String, String) =
        sqlx::query_as("SELECT name, device FROM workers WHERE id = ?")
            .bind(worker_id)
            .fetch_one(&mut *db)
            .await?;
    let resume = row
        .resume_from
        .as_deref()
        .map(|f| format!(", resuming from checkpoint {f}"))
        .unwrap_or_default();
    let owner = row.keys.owner(row.id)?;
    owner_line(
        &mut *db,
        owner,
        "info",
        &format!(
            "attempt {} started on worker '{worker}' (#{worker_id}, {device}){resume}",
            row.attempts
        ),
    )
    .await?;
    Ok(Some(Claimed {
        job: Leased {
            job_id: row.id,
            worker_id,
            kind: kind_of(row.id, &row.kind)?,
            owner,
            attempt: row.attempts,
        },
        lease_seconds,
        resume_step: row
            .resume_from
            .as_deref()
            .and_then(|folder| folder.strip_prefix("step-"))
            .and_then(|s| s.parse().ok()),
    }))
}

/// Checks, in the caller's transaction, that the worker still holds the job's lease (what it
/// writes next is recorded only if so); `what` names the write for the 409.
pub async fn check_held(db: &mut SqliteConnection, job: &Leased, what: &str) -> Result<()> {
    let held: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM jobs WHERE id = ? AND lease_owner = ? AND status = 'running'",
    )
    .bind(job.job_id)
    .bind(job.worker_id)
    .fetch_optional(&mut *db)
    .await?;
    if held.is_none() {
        return Err(Error::Conflict(format!(
            "job {}: this worker lost its lease while {what}; nothing recorded",
            job.job_id
        )));
    }
    Ok(())
}

/// Marks a held job succeeded, in the caller's transaction (its area stored the results in it).
pub async fn succeed(db: &mut SqliteConnection, job: &Leased) -> Result<()> {
    let done = sqlx::query(
        "UPDATE jobs SET status = 'succeeded', lease_owner = NULL, lease_expires_at = NULL, \
         finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ? AND lease_owner = ? AND status = 'running'",
    )
    .bind(job.job_id)
    .bind(job.worker_id)
    .execute(&mut *db)
    .await?
    .rows_affected();
    if done == 0 {
        return Err(lease_lost(job.job_id));
    }
    Ok(())
}

/// Makes the checkpoint folder `folder` where a later attempt of a held job resumes.
pub async fn set_resume_point(db: &mut SqliteConnection, job: &Leased, folder: &str) -> Result<()> {
    let updated = sqlx::query(
        "UPDATE jobs SET resume_from = ? WHERE id = ? AND lease_owner = ? AND status = 'running'",
    )
    .bind(folder)
    .bind(job.job_id)
    .bind(job.worker_id)
    .execute(&mut *db)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(lease_lost(job.job_id));
    }
    Ok(())
}

/// The checkpoint folder a job resumes from, if any.
pub async fn resume_point(pool: &SqlitePool, job_id: i64) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT resume_from FROM jobs WHERE id = ?")
            .bind(job_id)
            .fetch_one(pool)
            .await?,
    )
}

pub fn lease_lost(job_id: i64) -> Error {
    Error::Conflict(format!(
        "job {job_id}: this worker does not hold its lease (expired or reassigned)"
    ))
}

/// Extends the lease; answers whether a cancel was requested.
pub async fn heartbeat(
    pool: &SqlitePool,
    job_id: i64,
    worker_id: i64,
    lease_seconds: i64,
) -> Result<bool> {
    let cancel: Option<i64> = sqlx::query_scalar(
        "UPDATE jobs SET lease_expires_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?) \
         WHERE id = ? AND lease_owner = ? AND status = 'running' RETURNING cancel_requested",
    )
    .bind(format!("+{lease_seconds} seconds"))
    .bind(job_id)
    .bind(worker_id)
    .fetch_optional(pool)
    .await?;
    cancel.map(|c| c != 0).ok_or_else(|| lease_lost(job_id))
}

/// Records metric points of a run's job; a point already recorded for (run, name, step) is kept,
/// not duplicated. Returns the run and how many points were new.
pub async fn record_metrics(
    pool: &SqlitePool,
    job_id: i64,
    worker_id: i64,
    points: &[MetricPoint],
) -> Result<(i64, u64)> {
    let mut db = crate::db::write_tx(pool).await?;
    let run_id: Option<Option<i64>> = sqlx::query_scalar(
        "SELECT run_id FROM jobs WHERE id = ? AND lease_owner = ? AND status = 'running'",
    )
    .bind(job_id)
    .bind(worker_id)
    .fetch_optional(&mut *db)
    .await?;
    let run_id = run_id.ok_or_else(|| lease_lost(job_id))?.ok_or_else(|| {
        Error::BadRequest(format!(
            "job {job_id} reports to no run: it keeps no metric curves"
        ))
    })?;
    for p in points {
        if !p.value.is_finite() {
            return Err(Error::BadRequest(format!(
                "metric '{}' at step {} is not a finite number",
                p.name, p.step
            )));
        }
        if p.step < 0 {
            return Err(Error::BadRequest(format!(
                "metric '{}': step {} is negative",
                p.name, p.step
            )));
        }
    }
    let fresh = crate::store::metrics::insert(&mut db, run_id, points).await?;
    crate::store::metrics::roll_up(&mut db, run_id, &fresh).await?;
    db.commit().await?;
    Ok((run_id, fresh.len() as u64))
}

/// Ends a job the worker holds: `failed` or `cancelled` (success goes through completion).
/// Returns what the job reported to.
pub async fn finish(
    pool: &SqlitePool,
    job_id: i64,
    worker_id: i64,
    status: RunStatus,
    error: Option<&str>,
) -> Result<Owner> {
    let mut db = crate::db::write_tx(pool).await?;
    let row: Option<OwnerKeys> = sqlx::query_as(&format!(
        "UPDATE jobs SET status = ?, error = ?, lease_owner = NULL, lease_expires_at = NULL, \
         finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
         WHERE id = ? AND lease_owner = ? AND status = 'running' RETURNING {OWNER_COLUMNS}"
    ))
    .bind(status.as_str())
    .bind(error)
    .bind(job_id)
    .bind(worker_id)
    .fetch_optional(&mut *db)
    .await?;
    let owner = row.ok_or_else(|| lease_lost(job_id))?.owner(job_id)?;
    let (level, line) = match (status, error) {
        (RunStatus::Cancelled, _) => ("warn", "cancelled by the user".to_string()),
        (_, Some(e)) => ("error", format!("{status}: {e}")),
        _ => ("info", status.to_string()),
    };
    owner_line(&mut *db, owner, level, &line).await?;
    db.commit().await?;
    Ok(owner)
}

/// A job the reaper changed.
#[derive(FromRow)]
struct Reaped {
    id: i64,
    #[sqlx(flatten)]
    keys: OwnerKeys,
    attempts: i64,
    status: String,
}

/// Re-queues jobs whose lease expired (the next claim resumes them), or fails them after
/// `max_attempts`. Returns what the changed jobs report to.
pub async fn reap(pool: &SqlitePool) -> Result<Vec<Owner>> {
    let mut db = crate::db::write_tx(pool).await?;
    let failed: Vec<Reaped> = sqlx::query_as(&format!(
        "UPDATE jobs SET status = 'failed', lease_owner = NULL, lease_expires_at = NULL, \
         error = 'the worker stopped answering ' || attempts || ' times (lease expired); giving up', \
         finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
         WHERE status = 'running' AND lease_expires_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
         AND attempts >= max_attempts RETURNING id, {OWNER_COLUMNS}, attempts, status"
    ))
    .fetch_all(&mut *db)
    .await?;
    let requeued: Vec<Reaped> = sqlx::query_as(&format!(
        "UPDATE jobs SET status = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'queued' END, \
         lease_owner = NULL, lease_expires_at = NULL, \
         finished_at = CASE WHEN cancel_requested = 1 THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now') END \
         WHERE status = 'running' AND lease_expires_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
         RETURNING id, {OWNER_COLUMNS}, attempts, status"
    ))
    .fetch_all(&mut *db)
    .await?;
    let mut changed = Vec::new();
    for job in &failed {
        let owner = job.keys.owner(job.id)?;
        changed.push(owner);
        owner_line(
            &mut *db,
            owner,
            "error",
            &format!(
                "the worker stopped answering (lease expired); giving up after {} attempts",
                job.attempts
            ),
        )
        .await?;
    }
    for job in &requeued {
        let owner = job.keys.owner(job.id)?;
        changed.push(owner);
        let line = if job.status == "cancelled" {
            "the worker stopped answering (lease expired); it was being cancelled: cancelled"
                .to_string()
        } else {
            format!(
                "the worker stopped answering (lease expired); queued again for attempt {}",
                job.attempts + 1
            )
        };
        owner_line(&mut *db, owner, "warn", &line).await?;
    }
    db.commit().await?;
    Ok(changed)
}

/// Asks a run's job to stop: a queued job is cancelled at once, a running one at its worker's
/// next heartbeat.
pub async fn cancel_for_run(pool: &SqlitePool, run_id: i64) -> Result<()> {
    cancel(pool, Owner::Run(run_id)).await
}

/// Asks the job of a run, an eval or a generation to stop (as [`cancel_for_run`]).
pub async fn cancel(pool: &SqlitePool, owner: Owner) -> Result<()> {
    let mut db = crate::db::write_tx(pool).await?;
    let (key, id) = owner.column();
    let changed = sqlx::query(&format!(
        "UPDATE jobs SET cancel_requested = 1, \
         status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END, \
         finished_at = CASE WHEN status = 'queued' THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now') ELSE finished_at END \
         WHERE {key} = ? AND status IN ('queued', 'running')"
    ))
    .bind(id)
    .execute(&mut *db)
    .await?
    .rows_affected();
    if changed > 0 {
        owner_line(&mut *db, owner, "warn", "cancel requested").await?;
    }
    db.commit().await?;
    Ok(())
}

/// Gives every running job a fresh lease of `lease_seconds` (a starting server: leases ran out
/// while no server was there to renew them).
pub async fn renew_running_leases(pool: &SqlitePool, lease_seconds: i64) -> Result<()> {
    sqlx::query(
        "UPDATE jobs SET lease_expires_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?) WHERE status = 'running'",
    )
    .bind(format!("+{lease_seconds} seconds"))
    .execute(pool)
    .await?;
    Ok(())
}

/// Runs the reaper every few seconds until the server stops.
pub fn spawn_reaper(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            tick.tick().await;
            match reap(&state.db).await {
                Ok(owners) => owners.into_iter().for_each(|o| state.events.touch_owner(o)),
                Err(e) => tracing::warn!(error = %e, "reaper"),
            }
        }
    })
}
