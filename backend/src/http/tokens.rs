//! API tokens (`api_tokens`): made by `still token create`, shown once, stored as their SHA-256;
//! a request carrying one acts for the token's team. The one lookup of an API token.

use sqlx::SqlitePool;

use super::token_hash;
use crate::error::{Error, Result};

/// The prefix of an API token (a worker's is `stw_`).
pub const PREFIX: &str = "sta_";

/// A new API token of `team` named `name`: its id and the secret, which is not stored.
pub async fn create(pool: &SqlitePool, team: i64, name: &str) -> Result<(i64, String)> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("random token: {e}")))?;
    let token = format!("{PREFIX}{}", hex::encode(bytes));
    let id = sqlx::query_scalar(
        "INSERT INTO api_tokens (team_id, name, token_sha256) VALUES (?, ?, ?) RETURNING id",
    )
    .bind(team)
    .bind(name)
    .bind(token_hash(&token))
    .fetch_one(pool)
    .await?;
    Ok((id, token))
}

/// The team of a live token (unknown or revoked: none); its last use is recorded.
pub async fn team_of(pool: &SqlitePool, token: &str) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "UPDATE api_tokens SET last_used_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
         WHERE token_sha256 = ? AND revoked_at IS NULL RETURNING team_id",
    )
    .bind(token_hash(token.trim()))
    .fetch_optional(pool)
    .await?)
}

/// Revokes a live token: every later request with it is refused. An unknown or already revoked
/// id is an error naming it.
pub async fn revoke(pool: &SqlitePool, id: i64) -> Result<()> {
    let done = sqlx::query(
        "UPDATE api_tokens SET revoked_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
         WHERE id = ? AND revoked_at IS NULL",
    )
    .bind(id)
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(format!("no live API token with id {id}")));
    }
    Ok(())
}
