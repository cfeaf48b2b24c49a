//! Opening the SQLite database: pragmas on the pool options, migrations embedded in the binary.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

/// The migrations in `migrations/`, compiled in.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// How long a writer waits for the write lock. An import holds it for its whole transaction
/// (a 60,000-row import takes seconds), so this is generous.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Opens (creating when missing) the database file with WAL, foreign keys and a busy timeout,
/// and brings its schema up to date.
pub async fn open(path: &Path) -> anyhow::Result<SqlitePool> {
    let options = SqliteConnectOptions::from_str("sqlite:")?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .map_err(|e| anyhow::anyhow!("opening database {}: {e}", path.display()))?;
    MIGRATOR
        .run(&pool)
        .await
        .map_err(|e| anyhow::anyhow!("migrating database {}: {e}", path.display()))?;
    Ok(pool)
}

/// Reads a setting of this data directory.
pub async fn setting(pool: &SqlitePool, key: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
        .bind(key)
        .fetch_optional(pool)
        .await
}

/// Writes a setting of this data directory.
pub async fn set_setting(pool: &SqlitePool, key: &str, value: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
        .bind(key)
        .bind(value)
        .execute(pool)
        .await?;
    Ok(())
}

/// Starts a transaction that writes. `BEGIN IMMEDIATE` takes the write lock up front: a deferred
/// transaction that reads first and writes later cannot wait for the lock in WAL mode (SQLite
/// answers SQLITE_BUSY at once instead of calling the busy handler), so every writer starts here.
pub async fn write_tx(pool: &SqlitePool) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

/// Finds one row of a team by numeric id, else by unique name (every route that takes a
/// dataset, model or run accepts either). `select` is the query up to its WHERE; `alias` the
/// prefix of the table holding `id`, `name` and `team_id` (`""` or `"r."`).
pub async fn by_id_or_name<T>(
    pool: &SqlitePool,
    select: &str,
    alias: &str,
    team_id: i64,
    reference: &str,
    what: &str,
) -> crate::error::Result<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
{
    if let Ok(id) = reference.parse::<i64>() {
        let found = sqlx::query_as::<_, T>(&format!(
            "{select} WHERE {alias}id = ? AND {alias}team_id = ?"
        ))
        .bind(id)
        .bind(team_id)
        .fetch_optional(pool)
        .await?;
        if let Some(row) = found {
            return Ok(row);
        }
    }
    sqlx::query_as::<_, T>(&format!(
        "{select} WHERE {alias}name = ? AND {alias}team_id = ?"
    ))
    .bind(reference)
    .bind(team_id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| crate::error::Error::not_found(format!("{what} '{reference}'")))
}
