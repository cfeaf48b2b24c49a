//! Run, eval and generation logs: the server's lines (claims, checkpoints, lease expiries,
//! outcomes) and the workers' lines in one table per owner (`run_logs`, `eval_logs`,
//! `generation_logs`, the same shape), read as a tail.

use sqlx::SqlitePool;
use still_api::{LogLine, RunLogEntry};

use crate::error::{Error, Result};

/// A longer line is cut here (and says so).
pub const MAX_LINE_CHARS: usize = 4_000;
/// The most lines one worker request may carry.
pub const MAX_LINES_PER_REQUEST: usize = 1_000;
/// The most lines one read returns.
pub const MAX_TAIL: i64 = 1_000;

fn clip(message: &str) -> String {
    match message.char_indices().nth(MAX_LINE_CHARS) {
        None => message.to_string(),
        Some((cut, _)) => format!("{}… [cut at {MAX_LINE_CHARS} characters]", &message[..cut]),
    }
}

/// What a log belongs to (a job reports to one of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Run(i64),
    Eval(i64),
    Generation(i64),
}

/// A job row's owner columns (select them with [`OWNER_COLUMNS`]): exactly one is set.
#[derive(Debug, Clone, Copy, Default, sqlx::FromRow)]
pub struct OwnerKeys {
    pub run_id: Option<i64>,
    pub eval_id: Option<i64>,
    pub generation_id: Option<i64>,
}

/// The owner columns of `jobs`, in [`OwnerKeys`]' order.
pub const OWNER_COLUMNS: &str = "run_id, eval_id, generation_id";

impl OwnerKeys {
    /// The one owner these columns name.
    pub fn owner(self, job_id: i64) -> Result<Owner> {
        match (self.run_id, self.eval_id, self.generation_id) {
            (Some(run), None, None) => Ok(Owner::Run(run)),
            (None, Some(eval), None) => Ok(Owner::Eval(eval)),
            (None, None, Some(generation)) => Ok(Owner::Generation(generation)),
            _ => Err(Error::Internal(format!(
                "job {job_id} reports to {self:?}: not exactly one owner"
            ))),
        }
    }
}

impl Owner {
    /// The owner columns that name it (one set, the rest `NULL`).
    pub fn keys(self) -> OwnerKeys {
        let mut keys = OwnerKeys::default();
        match self {
            Owner::Run(id) => keys.run_id = Some(id),
            Owner::Eval(id) => keys.eval_id = Some(id),
            Owner::Generation(id) => keys.generation_id = Some(id),
        }
        keys
    }

    /// Its key column in `jobs` (a fixed name, never user input), and its id.
    pub fn column(self) -> (&'static str, i64) {
        let (_, key, id) = self.table();
        (key, id)
    }

    /// Its log table and key column (fixed names, never user input), and its id.
    fn table(self) -> (&'static str, &'static str, i64) {
        match self {
            Owner::Run(id) => ("run_logs", "run_id", id),
            Owner::Eval(id) => ("eval_logs", "eval_id", id),
            Owner::Generation(id) => ("generation_logs", "generation_id", id),
        }
    }
}

/// Appends a line the server writes to a run's log (to the attempt its job is on).
pub async fn server_line<'e, E>(db: E, run: i64, level: &str, message: &str) -> Result<()>
where
    E: sqlx::SqliteExecutor<'e>,
{
    owner_line(db, Owner::Run(run), level, message).await
}

/// Appends a line the server writes to a run's or an eval's log.
pub async fn owner_line<'e, E>(db: E, owner: Owner, level: &str, message: &str) -> Result<()>
where
    E: sqlx::SqliteExecutor<'e>,
{
    let (table, key, id) = owner.table();
    sqlx::query(&format!(
        "INSERT INTO {table} ({key}, attempt, source, level, message) \
         VALUES (?1, coalesce((SELECT max(attempts) FROM jobs WHERE {key} = ?1), 0), 'server', ?2, ?3)"
    ))
    .bind(id)
    .bind(level)
    .bind(clip(message))
    .execute(db)
    .await?;
    Ok(())
}

/// Stores a worker's lines for one attempt; a line already stored (same seq) is kept once.
pub async fn worker_lines(
    pool: &SqlitePool,
    owner: Owner,
    attempt: i64,
    lines: &[LogLine],
) -> Result<u64> {
    let (table, key, id) = owner.table();
    if lines.len() > MAX_LINES_PER_REQUEST {
        return Err(Error::TooLarge(format!(
            "{} log lines in one request; the limit is {MAX_LINES_PER_REQUEST}",
            lines.len()
        )));
    }
    let mut db = crate::db::write_tx(pool).await?;
    let mut inserted = 0;
    for line in lines {
        if !matches!(line.level.as_str(), "info" | "warn" | "error") {
            return Err(Error::BadRequest(format!(
                "log line {}: level '{}' is not one of info, warn, error",
                line.seq, line.level
            )));
        }
        inserted += sqlx::query(&format!(
            "INSERT OR IGNORE INTO {table} ({key}, attempt, seq, source, level, message) \
             VALUES (?, ?, ?, 'worker', ?, ?)"
        ))
        .bind(id)
        .bind(attempt)
        .bind(line.seq)
        .bind(&line.level)
        .bind(clip(&line.message))
        .execute(&mut *db)
        .await?
        .rows_affected();
    }
    db.commit().await?;
    Ok(inserted)
}

/// Lines after `after` (by id), oldest first; without `after`, the last `limit` lines.
pub async fn tail(
    pool: &SqlitePool,
    owner: Owner,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<RunLogEntry>> {
    let limit = limit.clamp(1, MAX_TAIL);
    let (table, key, id) = owner.table();
    let rows: Vec<(i64, i64, String, String, String, String)> = match after {
        Some(after) => {
            sqlx::query_as(&format!(
                "SELECT id, attempt, source, level, message, created_at FROM {table} \
                 WHERE {key} = ? AND id > ? ORDER BY id LIMIT ?"
            ))
            .bind(id)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }
        None => {
            let mut rows: Vec<_> = sqlx::query_as(&format!(
                "SELECT id, attempt, source, level, message, created_at FROM {table} \
                 WHERE {key} = ? ORDER BY id DESC LIMIT ?"
            ))
            .bind(id)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            rows.reverse();
            rows
        }
    };
    Ok(rows
        .into_iter()
        .map(
            |(id, attempt, source, level, message, created_at)| RunLogEntry {
                id,
                attempt,
                source,
                level,
                message,
                created_at,
            },
        )
        .collect())
}
