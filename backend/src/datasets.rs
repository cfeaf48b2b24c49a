//! Datasets: listing, lookup by id or name, import/preview uploads, statistics, deletion.

use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use sqlx::{FromRow, SqliteConnection, SqlitePool};
use still_api::{
    BadRowPolicy, DatasetStats, DatasetSummary, FieldMapping, FileFormat, ImportMode,
    ImportPreview, ImportRecord, ImportReport, LengthStats, Preset,
};
use tokio::io::AsyncWriteExt;

use crate::AppState;
use crate::error::{Error, Result, on_unique};
use crate::import::{self, ImportOptions};

/// Longest dataset name, in characters (also a CHECK in the schema).
pub const MAX_NAME_CHARS: usize = 200;

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

/// Trims and checks the name of a `kind` of object (dataset, run, model): the message names it.
pub fn validate_name(kind: &str, name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::BadRequest(format!("name: a {kind} needs a name")));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(Error::BadRequest(format!(
            "name: longer than {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::BadRequest(format!(
            "name: '{name}' is all digits, which would read as a {kind} id"
        )));
    }
    if name.contains('/') {
        return Err(Error::BadRequest(format!("name: '{name}' contains '/'")));
    }
    Ok(name.to_string())
}

#[derive(Debug, Clone, FromRow)]
pub struct DatasetRow {
    pub id: i64,
    pub team_id: i64,
    pub name: String,
}

/// Finds a dataset of the team by id or by name.
pub async fn resolve(pool: &SqlitePool, team_id: i64, reference: &str) -> Result<DatasetRow> {
    crate::db::by_id_or_name(
        pool,
        "SELECT id, team_id, name FROM datasets",
        "",
        team_id,
        reference,
        "dataset",
    )
    .await
}

/// Refuses access to a dataset of another team (a 404: other teams' ids are not disclosed).
pub async fn check_team(pool: &SqlitePool, dataset_id: i64, team_id: i64) -> Result<()> {
    let owner: Option<i64> = sqlx::query_scalar("SELECT team_id FROM datasets WHERE id = ?")
        .bind(dataset_id)
        .fetch_optional(pool)
        .await?;
    match owner {
        Some(t) if t == team_id => Ok(()),
        _ => Err(Error::not_found(format!("dataset {dataset_id}"))),
    }
}

/// In the caller's transaction: the dataset an import writes to.
pub async fn create_or_find(
    db: &mut SqliteConnection,
    team_id: i64,
    name: &str,
    mode: ImportMode,
) -> Result<i64> {
    let existing: Option<i64> =
        sqlx::query_scalar("SELECT id FROM datasets WHERE team_id = ? AND name = ?")
            .bind(team_id)
            .bind(name)
            .fetch_optional(&mut *db)
            .await?;
    match (existing, mode) {
        (Some(id), ImportMode::Append) => Ok(id),
        (Some(_), ImportMode::Create) => Err(Error::Conflict(format!(
            "name: a dataset named '{name}' already exists (import with mode=append to add rows to it)"
        ))),
        (None, _) => {
            sqlx::query_scalar("INSERT INTO datasets (team_id, name) VALUES (?, ?) RETURNING id")
                .bind(team_id)
                .bind(name)
                .fetch_one(&mut *db)
                .await
                .map_err(|e| {
                    on_unique(e, || {
                        format!("name: a dataset named '{name}' already exists")
                    })
                })
        }
    }
}

/// Marks a dataset's live rows as changed (a new revision): the next run cuts a new version.
pub async fn touch(db: &mut SqliteConnection, dataset_id: i64) -> Result<()> {
    sqlx::query(
        "UPDATE datasets SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), \
         revision = revision + 1 WHERE id = ?",
    )
    .bind(dataset_id)
    .execute(&mut *db)
    .await?;
    Ok(())
}

#[derive(FromRow)]
struct SummaryRow {
    id: i64,
    name: String,
    description: String,
    team_id: i64,
    n_rows: i64,
    n_deleted: i64,
    size_bytes: i64,
    n_versions: i64,
    created_at: String,
    updated_at: String,
}

const SUMMARY_SELECT: &str = "SELECT d.id, d.name, d.description, d.team_id, \
     (SELECT count(*) FROM examples e WHERE e.dataset_id = d.id AND e.deleted_at IS NULL) AS n_rows, \
     (SELECT count(*) FROM examples e WHERE e.dataset_id = d.id AND e.deleted_at IS NOT NULL) AS n_deleted, \
     (SELECT coalesce(sum(n_bytes), 0) FROM examples e WHERE e.dataset_id = d.id AND e.deleted_at IS NULL) AS size_bytes, \
     (SELECT count(*) FROM dataset_versions v WHERE v.dataset_id = d.id) AS n_versions, \
     d.created_at, d.updated_at FROM datasets d";

impl From<SummaryRow> for DatasetSummary {
    fn from(r: SummaryRow) -> Self {
        DatasetSummary {
            id: r.id,
            name: r.name,
            description: r.description,
            team_id: r.team_id,
            n_rows: r.n_rows,
            n_deleted: r.n_deleted,
            size_bytes: r.size_bytes,
            n_versions: r.n_versions,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Every dataset of a team, newest first.
pub async fn list(pool: &SqlitePool, team_id: i64) -> Result<Vec<DatasetSummary>> {
    let rows: Vec<SummaryRow> = sqlx::query_as(&format!(
        "{SUMMARY_SELECT} WHERE d.team_id = ? ORDER BY d.id DESC"
    ))
    .bind(team_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub async fn summary(pool: &SqlitePool, dataset_id: i64) -> Result<DatasetSummary> {
    let row: SummaryRow = sqlx::query_as(&format!("{SUMMARY_SELECT} WHERE d.id = ?"))
        .bind(dataset_id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::not_found(format!("dataset {dataset_id}")))?;
    Ok(row.into())
}

async fn list_datasets(State(state): State<AppState>) -> Result<Json<Vec<DatasetSummary>>> {
    Ok(Json(list(&state.db, state.team_id()).await?))
}

async fn get_dataset(
    State(state): State<AppState>,
    Path(dataset): Path<String>,
) -> Result<Json<DatasetSummary>> {
    let row = resolve(&state.db, state.team_id(), &dataset).await?;
    Ok(Json(summary(&state.db, row.id).await?))
}

async fn delete_dataset(
    State(state): State<AppState>,
    Path(dataset): Path<String>,
) -> Result<StatusCode> {
    let row = resolve(&state.db, state.team_id(), &dataset).await?;
    let mut db = crate::db::write_tx(&state.db).await?;
    let runs: Vec<String> =
        sqlx::query_scalar("SELECT name FROM runs WHERE dataset_id = ? ORDER BY id LIMIT 4")
            .bind(row.id)
            .fetch_all(&mut *db)
            .await?;
    if !runs.is_empty() {
        return Err(Error::Conflict(format!(
            "dataset '{}' is used by run{} {}{}: delete the runs first",
            row.name,
            if runs.len() > 1 { "s" } else { "" },
            runs.iter()
                .take(3)
                .map(|r| format!("'{r}'"))
                .collect::<Vec<_>>()
                .join(", "),
            if runs.len() > 3 { " and more" } else { "" }
        )));
    }
    sqlx::query("DELETE FROM datasets WHERE id = ?")
        .bind(row.id)
        .execute(&mut *db)
        .await?;
    db.commit().await?;
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
    mut multipart: Multipart,
) -> Result<(StatusCode, Json<ImportReport>)> {
    let upload = read_upload(&state, &mut multipart).await?;
    let report = import::import_file(
        &state.db,
        state.team_id(),
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
    Path(dataset): Path<String>,
) -> Result<Json<Vec<ImportRecord>>> {
    let row = resolve(&state.db, state.team_id(), &dataset).await?;
    let records: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, report FROM imports WHERE dataset_id = ? ORDER BY id DESC")
            .bind(row.id)
            .fetch_all(&state.db)
            .await?;
    let mut out = Vec::with_capacity(records.len());
    for (id, report) in records {
        let report: ImportReport = serde_json::from_str(&report)
            .map_err(|e| Error::Internal(format!("import {id} has an unreadable report: {e}")))?;
        out.push(ImportRecord { id, report });
    }
    Ok(Json(out))
}

/// Bins for a length histogram: equal width over [0, p99] plus everything above in the last bin.
pub fn length_stats(field: &str, mut values: Vec<i64>, n_bins: usize) -> LengthStats {
    values.sort_unstable();
    let n = values.len();
    let pct = |p: f64| -> i64 {
        if n == 0 {
            0
        } else {
            values[((p * (n - 1) as f64).round() as usize).min(n - 1)]
        }
    };
    let max = values.last().copied().unwrap_or(0);
    let top = pct(0.99).max(1);
    let width = (top + n_bins as i64 - 1) / n_bins as i64;
    let width = width.max(1);
    let mut edges: Vec<i64> = (0..=n_bins as i64).map(|i| i * width).collect();
    if let Some(last) = edges.last_mut() {
        *last = (*last).max(max);
    }
    let mut counts = vec![0i64; n_bins];
    for v in &values {
        let bin = ((*v / width) as usize).min(n_bins - 1);
        counts[bin] += 1;
    }
    LengthStats {
        field: field.to_string(),
        min: values.first().copied().unwrap_or(0),
        p50: pct(0.5),
        p90: pct(0.9),
        p99: pct(0.99),
        max,
        mean: if n == 0 {
            0.0
        } else {
            values.iter().sum::<i64>() as f64 / n as f64
        },
        edges,
        counts,
    }
}

/// Length histograms and facet counts over a dataset's live rows.
pub async fn stats(pool: &SqlitePool, dataset_id: i64) -> Result<DatasetStats> {
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT question_words, thinking_words, answer_words FROM examples WHERE dataset_id = ? AND deleted_at IS NULL",
    )
    .bind(dataset_id)
    .fetch_all(pool)
    .await?;
    let n_rows = rows.len() as i64;
    let lengths = vec![
        length_stats("question", rows.iter().map(|r| r.0).collect(), 20),
        length_stats("thinking", rows.iter().map(|r| r.1).collect(), 20),
        length_stats("answer", rows.iter().map(|r| r.2).collect(), 20),
    ];
    let facet = |column: &'static str| {
        let sql = format!(
            "SELECT {column}, count(*) FROM examples WHERE dataset_id = ? AND deleted_at IS NULL \
             GROUP BY {column} ORDER BY count(*) DESC, {column} LIMIT 100"
        );
        async move {
            sqlx::query_as::<_, (String, i64)>(&sql)
                .bind(dataset_id)
                .fetch_all(pool)
                .await
        }
    };
    let sources = facet("source").await?;
    let domains = facet("domain").await?;
    let tags: Vec<(String, i64)> = sqlx::query_as(
        "SELECT t.tag, count(*) FROM example_tags t JOIN examples e ON e.id = t.example_id \
         WHERE e.dataset_id = ? AND e.deleted_at IS NULL GROUP BY t.tag ORDER BY count(*) DESC, t.tag LIMIT 200",
    )
    .bind(dataset_id)
    .fetch_all(pool)
    .await?;
    Ok(DatasetStats {
        dataset_id,
        n_rows,
        unit: "words".into(),
        lengths,
        sources,
        domains,
        tags,
    })
}

async fn get_stats(
    State(state): State<AppState>,
    Path(dataset): Path<String>,
) -> Result<Json<DatasetStats>> {
    let row = resolve(&state.db, state.team_id(), &dataset).await?;
    Ok(Json(stats(&state.db, row.id).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(validate_name("dataset", "  gsm8k ").unwrap(), "gsm8k");
        assert!(validate_name("dataset", "").is_err());
        assert!(
            validate_name("run", "123")
                .unwrap_err()
                .to_string()
                .contains("all digits, which would read as a run id")
        );
        assert!(validate_name("model", &"x".repeat(201)).is_err());
    }

    #[test]
    fn histogram_counts_every_value_once() {
        let stats = length_stats("q", vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1000], 5);
        assert_eq!(stats.counts.iter().sum::<i64>(), 11);
        assert_eq!(stats.max, 1000);
        assert_eq!(*stats.edges.last().unwrap(), 1000);
        assert_eq!(stats.p50, 5);
        assert_eq!(stats.min, 0);
    }

    #[test]
    fn bytes_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(2 * 1024 * 1024 * 1024), "2 GiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
