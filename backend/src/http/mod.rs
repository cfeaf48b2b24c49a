//! What every area's handlers share about a request: who is calling (the [`Team`] whose objects
//! it may see, the [`WorkerAuth`] of a worker's token), the Host/Origin guard, and the answers
//! for unknown API paths and a missing UI. It imports no area: the accounts issue replaces the
//! body of [`Team`]'s extractor, not its ~30 callers.

pub mod guard;
pub mod tokens;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{Html, IntoResponse};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::{Error, Result};

/// The team a request acts for. Until accounts exist every request acts for the one team.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Team(i64);

impl Team {
    /// The one team of an install without accounts (and of the `still` commands run on the
    /// server's machine).
    pub const DEFAULT: Team = Team(crate::DEFAULT_TEAM);

    pub fn id(self) -> i64 {
        self.0
    }
}

impl FromRequestParts<AppState> for Team {
    type Rejection = Error;

    async fn from_request_parts(_parts: &mut Parts, _state: &AppState) -> Result<Self> {
        Ok(Team::DEFAULT)
    }
}

/// A worker token's stored form: only its SHA-256 is kept.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The authenticated worker of a request (`Authorization: Bearer <token>`): its id.
pub struct WorkerAuth(pub i64);

impl FromRequestParts<AppState> for WorkerAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Error::Unauthorized("worker routes need 'Authorization: Bearer <token>'".into())
            })?;
        let id = worker_of_token(&state.db, token)
            .await?
            .ok_or_else(|| Error::Unauthorized("worker token is wrong or revoked".into()))?;
        Ok(Self(id))
    }
}

/// The worker a token belongs to, unless it is unknown or revoked (the one lookup of a token:
/// `WorkerAuth` and the local workers' saved tokens).
pub async fn worker_of_token(pool: &sqlx::SqlitePool, token: &str) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM workers WHERE token_sha256 = ? AND revoked_at IS NULL")
            .bind(token_hash(token.trim()))
            .fetch_optional(pool)
            .await?,
    )
}

pub async fn api_not_found(uri: axum::http::Uri) -> Error {
    Error::NotFound(format!("no API route {}", uri.path()))
}

pub async fn ui_missing() -> impl IntoResponse {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(
            "<!doctype html><title>Still</title><p>The Still UI is not built. Run \
             <code>trunk build --release</code> (or <code>scripts/start</code>) and reload. \
             The API is up under <code>/api</code>.</p>",
        ),
    )
}

/// Streams a file as the response body (never read whole into memory).
pub async fn stream_file(
    path: &std::path::Path,
    what: impl FnOnce() -> String,
) -> Result<axum::response::Response> {
    use axum::response::IntoResponse;
    let handle = tokio::fs::File::open(path)
        .await
        .map_err(|_| Error::not_found(what()))?;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(handle));
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        body,
    )
        .into_response())
}

/// Checks that `file` is one of `allowed` (the only names a worker may read or write).
pub fn allowed_file<'a>(file: &'a str, allowed: &[&str], kind: &str) -> Result<&'a str> {
    if allowed.contains(&file) {
        Ok(file)
    } else {
        Err(Error::BadRequest(format!(
            "'{file}' is not a {kind} file ({})",
            allowed.join(", ")
        )))
    }
}
