//! The datasets' HTTP handlers: list, get, delete, statistics, imports, and the import and
//! preview uploads (the form is read here, streamed to a temporary file).

use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use still_api::{
    BadRowPolicy, DatasetStats, DatasetSummary, FieldMapping, FileFormat, ImportMode,
    ImportPreview, ImportRecord, ImportReport, Preset,
};
use tokio::io::AsyncWriteExt;

use super::store;
use crate::AppState;
use crate::data::import::{self, ImportOptions};
use crate::error::{Error, Result};
use crate::http::Team;

pub fn router(max_upload_bytes: u64) -> Router<AppState> {
    // Multipart overhead on top of the file itself.
    let body_limit = (max_upload_bytes + 16 * 1024 * 1024).min(usize::MAX as u64) as usize;
    Router::new()
        .route("/api/datasets", get(list_datasets))
        .route(
            "/api/datasets/import",
            post(import_upload).layer(DefaultBodyLimit::max(body_limit)),
        )
        .route(
            "/api/datasets/preview",
            post(preview_upload).layer(DefaultBodyLimit::max(body_limit)),
        )
        .route(
            "/api/datasets/{dataset}",
            get(get_dataset).delete(delete_dataset),
        )
        .route("/api/datasets/{dataset}/stats", get(get_stats))
        .route("/api/datasets/{dataset}/imports", get(list_imports))
}

async fn list_datasets(
    State(state): State<AppState>,
    team: Team,
) -> Result<Json<Vec<DatasetSummary>>> {
    Ok(Json(store::list(&state.db, team.id()).await?))
}

async fn get_dataset(
    State(state): State<AppState>,
    team: Team,
    Path(dataset): Path<String>,
) -> Result<Json<DatasetSummary>> {
    let row = store::resolve(&state.db, team.id(), &dataset).await?;
    Ok(Json(store::summary(&state.db, row.id).await?))
}

async fn delete_dataset(
    State(state): State<AppState>,
    team: Team,
    Path(dataset): Path<String>,
) -> Result<StatusCode> {
    let row = store::resolve(&state.db, team.id(), &dataset).await?;
    store::delete(&state.db, &row).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An upload spooled to a temporary file under the data directory (removed on drop).
pub struct Upload {
    pub file: tempfile::NamedTempFile,
    pub file_name: String,
    pub options: ImportOptions,
}

fn multipart_error(e: axum::extract::multipart::MultipartError, max: u64) -> Error {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::TooLarge(format!(
            "upload exceeds the {} limit (serve --max-upload-bytes)",
            human_bytes(max)
        ))
    } else {
        Error::BadRequest(format!("upload: {}", e.body_text()))
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit]).replace(".0 ", " ")
    }
}

fn parse_choice<T>(
    field: &str,
    text: &str,
    parse: impl Fn(&str) -> Option<T>,
    allowed: &str,
) -> Result<T> {
    parse(text).ok_or_else(|| {
        Error::BadRequest(format!(
            "{field}: '{}' is not one of {allowed}",
            text.trim()
        ))
    })
}

/// Largest text field of an import form (name, format, preset, …).
pub const MAX_TEXT_FIELD_BYTES: usize = 4 << 10;

/// Largest hand mapping (JSON) of an import form.
pub const MAX_MAPPING_FIELD_BYTES: usize = 64 << 10;

/// Reads an import form: the file is streamed to disk chunk by chunk, never held in memory.
pub async fn read_upload(state: &AppState, multipart: &mut Multipart) -> Result<Upload> {
    let max = state.config.max_upload_bytes;
    let mut options = ImportOptions {
        limits: state.config.limits,
        ..Default::default()
    };
    let mut spooled: Option<(tempfile::NamedTempFile, String)> = None;
    let mut file_name_override: Option<String> = None;
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(e, max))?
    {
        let key = field.name().unwrap_or_default().to_string();
        if key == "file" {
            let file_name = field.file_name().unwrap_or("upload").to_string();
            let tmp = tempfile::Builder::new()
                .prefix("upload-")
                .tempfile_in(state.config.tmp_dir())?;
            let mut out = tokio::fs::File::from_std(tmp.reopen()?);
            let mut written = 0u64;
            while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, max))? {
                written += chunk.len() as u64;
                if written > max {
                    return Err(Error::TooLarge(format!(
                        "{file_name}: upload exceeds the {} limit (serve --max-upload-bytes)",
                        human_bytes(max)
                    )));
                }
                out.write_all(&chunk).await?;
            }
            out.flush().await?;
            spooled = Some((tmp, file_name));
            continue;
        }
        // Text fields are read chunk by chunk up to their limit, never whole.
        let limit = if key == "mapping" {
            MAX_MAPPING_FIELD_BYTES
        } else {
            MAX_TEXT_FIELD_BYTES
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, max))? {
            if bytes.len() + chunk.len() > limit {
                return Err(Error::BadRequest(format!(
                    "form field '{key}' is longer than {limit} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::BadRequest(format!("form field '{key}' is not UTF-8")))?;
        match key.as_str() {
            "name" | "dataset" => options.dataset = text,
            "format" => {
                options.format = parse_choice(
                    "format",
                    &text,
                    FileFormat::parse,
                    "auto, jsonl, json, csv, parquet",
                )?
            }
            "preset" => {
                options.preset = parse_choice(
                    "preset",
                    &text,
                    Preset::parse,
                    "auto, s1k, gsm8k, math, traces, generic",
                )?
            }
            "policy" => {
                options.policy = parse_choice("policy", &text, BadRowPolicy::parse, "skip, reject")?
            }
            "mode" => {
                options.mode = parse_choice("mode", &text, ImportMode::parse, "create, append")?
            }
            "mapping" if text.trim().is_empty() => {}
            "mapping" => {
                let mapping: FieldMapping = serde_json::from_str(&text).map_err(|e| {
                    Error::BadRequest(format!("mapping: not a field mapping ({e})"))
                })?;
                options.mapping = Some(mapping);
            }
            "split_marker" => options.split_marker = Some(text).filter(|t| !t.is_empty()),
            "file_name" => file_name_override = Some(text).filter(|t| !t.trim().is_empty()),
            other => return Err(Error::BadRequest(format!("unknown form field '{other}'"))),
        }
    }
    let (file, file_name) =
        spooled.ok_or_else(|| Error::BadRequest("file: the form has no 'file' field".into()))?;
    Ok(Upload {
        file,
        file_name: file_name_override.unwrap_or(file_name),
        options,
    })
}

async fn import_upload(
    State(state): State<AppState>,
    team: Team,
    mut multipart: Multipart,
) -> Result<(StatusCode, Json<ImportReport>)> {
    let upload = read_upload(&state, &mut multipart).await?;
    let report = import::import_file(
        &state.db,
        team.id(),
        upload.file.path(),
        &upload.file_name,
        &upload.options,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(report)))
}

async fn preview_upload(
    State(state): State<AppState>,
    mut multipart: Multipart,
) -> Result<Json<ImportPreview>> {
    let upload = read_upload(&state, &mut multipart).await?;
    Ok(Json(
        import::preview_file(upload.file.path(), &upload.file_name, &upload.options).await?,
    ))
}

async fn list_imports(
    State(state): State<AppState>,
    team: Team,
    Path(dataset): Path<String>,
) -> Result<Json<Vec<ImportRecord>>> {
    let row = store::resolve(&state.db, team.id(), &dataset).await?;
    Ok(Json(store::imports(&state.db, row.id).await?))
}

async fn get_stats(
    State(state): State<AppState>,
    team: Team,
    Path(dataset): Path<String>,
) -> Result<Json<DatasetStats>> {
    let row = store::resolve(&state.db, team.id(), &dataset).await?;
    Ok(Json(store::stats(&state.db, row.id).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(2 * 1024 * 1024 * 1024), "2 GiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
