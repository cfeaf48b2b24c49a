//! The versions' HTTP handlers: list, cut, and the streamed JSONL export.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use sqlx::SqlitePool;
use still_api::{DatasetVersion, ExportShape, NewVersion};
use tokio::sync::mpsc;

use super::store;
use crate::AppState;
use crate::data::datasets;
use crate::error::{Error, Result};
use crate::http::Team;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/datasets/{dataset}/versions",
            get(list_versions).post(create_version),
        )
        .route("/api/datasets/{dataset}/export", get(export))
        .route(
            "/api/datasets/{dataset}/versions/{a}/diff/{b}",
            get(diff_versions),
        )
}

/// Most rows each list of a diff holds.
pub const MAX_DIFF_ROWS: usize = 1000;

#[derive(Deserialize)]
struct DiffParams {
    limit: Option<usize>,
}

async fn diff_versions(
    State(state): State<AppState>,
    team: Team,
    Path((dataset, a, b)): Path<(String, i64, i64)>,
    Query(params): Query<DiffParams>,
) -> Result<Json<still_api::VersionDiff>> {
    let row = datasets::store::resolve(&state.db, team.id(), &dataset).await?;
    let limit = params.limit.unwrap_or(100);
    if limit > MAX_DIFF_ROWS {
        return Err(Error::BadRequest(format!(
            "limit: at most {MAX_DIFF_ROWS} rows per list, not {limit}"
        )));
    }
    let va = store::find(&state.db, row.id, a).await?;
    let vb = store::find(&state.db, row.id, b).await?;
    Ok(Json(store::diff(&state.db, va, vb, limit).await?))
}

async fn list_versions(
    State(state): State<AppState>,
    team: Team,
    Path(dataset): Path<String>,
) -> Result<Json<Vec<DatasetVersion>>> {
    let row = datasets::store::resolve(&state.db, team.id(), &dataset).await?;
    Ok(Json(store::list(&state.db, row.id).await?))
}

async fn create_version(
    State(state): State<AppState>,
    team: Team,
    Path(dataset): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<DatasetVersion>)> {
    let row = datasets::store::resolve(&state.db, team.id(), &dataset).await?;
    // The body is optional: an empty POST cuts a version without a message.
    let request: NewVersion = if body.iter().all(u8::is_ascii_whitespace) {
        NewVersion::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| Error::BadRequest(format!("request body: {e}")))?
    };
    let message = request.message;
    Ok((
        StatusCode::CREATED,
        Json(store::create(&state.db, row.id, &message).await?),
    ))
}

#[derive(Deserialize)]
struct ExportParams {
    #[serde(default)]
    shape: ExportShape,
    version: Option<i64>,
}

async fn export(
    State(state): State<AppState>,
    team: Team,
    Path(dataset): Path<String>,
    Query(params): Query<ExportParams>,
) -> Result<Response> {
    let row = datasets::store::resolve(&state.db, team.id(), &dataset).await?;
    let version = match params.version {
        Some(v) => Some(store::find(&state.db, row.id, v).await?),
        None => None,
    };
    let file_name = format!(
        "{}{}{}.jsonl",
        row.name.replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
            "_"
        ),
        version
            .as_ref()
            .map(|v| format!("-v{}", v.version))
            .unwrap_or_default(),
        if params.shape == ExportShape::S1k {
            "-s1k"
        } else {
            ""
        }
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}\""),
            ),
        ],
        export_body(state.db.clone(), row.id, version, params.shape, None),
    )
        .into_response())
}

/// A version's rows (its first `max_rows` when given) as canonical JSONL, streamed as the reader
/// (a worker) takes them: the server never holds the whole dataset, and a job that reads only a
/// prefix is sent only that prefix.
pub fn canonical_jsonl(
    pool: SqlitePool,
    dataset_id: i64,
    version: DatasetVersion,
    max_rows: Option<usize>,
) -> axum::response::Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        export_body(
            pool,
            dataset_id,
            Some(version),
            ExportShape::Canonical,
            max_rows,
        ),
    )
        .into_response()
}

/// A response body that streams the export batch by batch while the client reads it: at most a
/// few batches are ever in memory, however large the dataset.
pub fn export_body(
    pool: SqlitePool,
    dataset_id: i64,
    version: Option<DatasetVersion>,
    shape: ExportShape,
    max_rows: Option<usize>,
) -> Body {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let error_tx = tx.clone();
        if let Err(e) = store::export_rows(pool, dataset_id, version, shape, max_rows, tx).await {
            tracing::error!(error = %e, "export failed");
            let _ = error_tx
                .send(Err(std::io::Error::other(e.to_string())))
                .await;
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}
