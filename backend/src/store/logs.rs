//! Run logs: the server's lines (claims, checkpoints, lease expiries, outcomes) and the
//! workers' lines in one table, read as a tail.

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

/// Appends a line the server writes (to the attempt the job is on).
pub async fn server_line<'e, E>(db: E, run: i64, level: &str, message: &str) -> Result<()>
where
    E: sqlx::SqliteExecutor<'e>,
{
    sqlx::query(
        "INSERT INTO run_logs (run_id, attempt, source, level, message) \
         VALUES (?1, coalesce((SELECT max(attempts) FROM jobs WHERE run_id = ?1), 0), 'server', ?2, ?3)",
    )
    .bind(run)
    .bind(level)
    .bind(clip(message))
    .execute(db)
    .await?;
    Ok(())
}

/// Stores a worker's lines for one attempt; a line already stored (same seq) is kept once.
pub async fn worker_lines(
    pool: &SqlitePool,
    run: i64,
    attempt: i64,
    lines: &[LogLine],
) -> Result<u64> {
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
        inserted += sqlx::query(
            "INSERT OR IGNORE INTO run_logs (run_id, attempt, seq, source, level, message) \
             VALUES (?, ?, ?, 'worker', ?, ?)",
        )
        .bind(run)
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
    run: i64,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<RunLogEntry>> {
    let limit = limit.clamp(1, MAX_TAIL);
    let rows: Vec<(i64, i64, String, String, String, String)> = match after {
        Some(after) => {
            sqlx::query_as(
                "SELECT id, attempt, source, level, message, created_at FROM run_logs \
                 WHERE run_id = ? AND id > ? ORDER BY id LIMIT ?",
            )
            .bind(run)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }
        None => {
            let mut rows: Vec<_> = sqlx::query_as(
                "SELECT id, attempt, source, level, message, created_at FROM run_logs \
                 WHERE run_id = ? ORDER BY id DESC LIMIT ?",
            )
            .bind(run)
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
