//! What a run made, for people: its artifact folders (listing, one file, a folder as a tar
//! archive) and its log tail. Storage is `store::artifacts` and `store::logs`.

use std::path::PathBuf;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use still_api::{ArtifactFolder, RunLogEntry};

use crate::AppState;
use crate::error::{Error, Result};
use crate::http::Team;
use crate::store::artifacts::{blob_path, folders, safe_name, tar_header, tar_size, tar_stream};
use crate::store::logs::tail;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/runs/{run}/artifacts", get(list_route))
        .route("/api/runs/{run}/artifacts/{folder}", get(folder_route))
        .route("/api/runs/{run}/artifacts/{folder}/{file}", get(file_route))
        .route("/api/runs/{run}/logs", get(tail_route))
}

async fn list_route(
    State(state): State<AppState>,
    team: Team,
    UrlPath(run): UrlPath<String>,
) -> Result<Json<Vec<ArtifactFolder>>> {
    let run = crate::runs::store::load_run(&state.db, team.id(), &run).await?;
    Ok(Json(folders(&state.db, run.id).await?))
}

async fn committed_folder(
    state: &AppState,
    team: Team,
    run: &str,
    folder: &str,
) -> Result<(String, ArtifactFolder)> {
    let run = crate::runs::store::load_run(&state.db, team.id(), run).await?;
    let found = folders(&state.db, run.id)
        .await?
        .into_iter()
        .find(|f| f.folder == folder)
        .ok_or_else(|| Error::not_found(format!("run '{}' folder '{folder}'", run.name)))?;
    Ok((run.name, found))
}

#[derive(serde::Deserialize)]
struct FolderQuery {
    /// `tar` downloads the folder as one archive; otherwise the listing.
    format: Option<String>,
}

async fn folder_route(
    State(state): State<AppState>,
    team: Team,
    UrlPath((run, folder)): UrlPath<(String, String)>,
    Query(query): Query<FolderQuery>,
) -> Result<Response> {
    let (run_name, found) = committed_folder(&state, team, &run, &folder).await?;
    match query.format.as_deref() {
        None | Some("json") => Ok(Json(found).into_response()),
        Some("tar") => {
            // At most 100 + 1 + the folder's name: always fits a ustar prefix.
            let base = format!(
                "{}-{}",
                safe_name(&run_name).chars().take(100).collect::<String>(),
                found.folder
            );
            let entries: Vec<(String, PathBuf, u64)> = found
                .files
                .iter()
                .map(|f| {
                    (
                        format!("{base}/{}", f.name),
                        blob_path(&state.config.data_dir, &f.sha256),
                        f.size as u64,
                    )
                })
                .collect();
            // Every header is checked before the response starts, not halfway through it.
            for (name, _, size) in &entries {
                tar_header(name, *size)?;
            }
            Ok((
                [
                    (header::CONTENT_TYPE, "application/x-tar".to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{base}.tar\""),
                    ),
                    (
                        header::CONTENT_LENGTH,
                        tar_size(found.files.iter().map(|f| f.size as u64)).to_string(),
                    ),
                ],
                tar_stream(entries),
            )
                .into_response())
        }
        Some(other) => Err(Error::BadRequest(format!(
            "format: '{other}' is not one of json, tar"
        ))),
    }
}

async fn file_route(
    State(state): State<AppState>,
    team: Team,
    UrlPath((run, folder, file)): UrlPath<(String, String, String)>,
) -> Result<Response> {
    let (_, found) = committed_folder(&state, team, &run, &folder).await?;
    let entry = found
        .files
        .iter()
        .find(|f| f.name == file)
        .ok_or_else(|| Error::not_found(format!("file '{file}' in folder '{folder}'")))?;
    let handle = tokio::fs::File::open(blob_path(&state.config.data_dir, &entry.sha256)).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}\"", entry.name),
            ),
            (header::CONTENT_LENGTH, entry.size.to_string()),
            (header::ETAG, format!("\"{}\"", entry.sha256)),
        ],
        Body::from_stream(tokio_util::io::ReaderStream::new(handle)),
    )
        .into_response())
}

#[derive(serde::Deserialize)]
struct TailQuery {
    after: Option<i64>,
    limit: Option<i64>,
}

async fn tail_route(
    State(state): State<AppState>,
    team: Team,
    UrlPath(run): UrlPath<String>,
    Query(q): Query<TailQuery>,
) -> Result<Json<Vec<RunLogEntry>>> {
    let run = crate::runs::store::load_run(&state.db, team.id(), &run).await?;
    Ok(Json(
        tail(
            &state.db,
            crate::store::logs::Owner::Run(run.id),
            q.after,
            q.limit.unwrap_or(200),
        )
        .await?,
    ))
}
