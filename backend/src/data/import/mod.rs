//! Importing a file into a dataset: one code path for the browser upload and `still import`.
//!
//! The file is read on a blocking thread (streaming, one record in memory at a time) and mapped
//! to canonical examples there; the rows cross a bounded channel to the async side, which writes
//! them inside **one transaction**. Any failure rolls that transaction back, so a failed or
//! interrupted import leaves no half dataset and changes nothing already stored.

pub mod formats;
pub mod mapping;

use std::io::Read;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use sqlx::SqlitePool;
use still_api::{
    BadRowPolicy, FieldMapping, FileFormat, ImportMode, ImportReport, MAX_REPORTED_REJECTIONS,
    Preset, RejectedRow,
};
use tokio::sync::mpsc;

use crate::data::{datasets, examples};
use crate::error::{Error, Result};
pub use formats::Limits;
use formats::{FileError, Record};
use mapping::Mapper;

/// Everything an import needs besides the file.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    pub dataset: String,
    pub format: FileFormat,
    pub preset: Preset,
    pub policy: BadRowPolicy,
    pub mode: ImportMode,
    pub mapping: Option<FieldMapping>,
    pub split_marker: Option<String>,
    pub limits: Limits,
}

/// What the reading thread sends: a mapped row or the reason it was rejected.
struct Item {
    record: u64,
    line: Option<u64>,
    row: Result<still_api::ExampleFields, String>,
}

/// Reads the first bytes of a file (for format detection).
fn head_of(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut head = vec![0u8; 4096];
    let mut file = std::fs::File::open(path)?;
    let mut filled = 0;
    while filled < head.len() {
        let n = file.read(&mut head[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    head.truncate(filled);
    Ok(head)
}

/// Resolves `Auto` to a concrete format.
pub fn resolve_format(path: &Path, file_name: &str, format: FileFormat) -> Result<FileFormat> {
    Ok(match format {
        FileFormat::Auto => formats::detect_format(file_name, &head_of(path)?),
        f => f,
    })
}

fn file_stem(file_name: &str) -> String {
    Path::new(file_name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn describe(file_name: &str, record: u64, line: Option<u64>, reason: &str) -> String {
    match line {
        Some(line) => format!("{file_name} record {record} (line {line}): {reason}"),
        None => format!("{file_name} record {record}: {reason}"),
    }
}

/// Starts the reading thread. It resolves the preset on the first readable row, then maps each
/// row and sends it. Its result is the resolved mapper (None for a file without rows).
fn spawn_reader(
    path: PathBuf,
    file_name: String,
    format: FileFormat,
    opts: &ImportOptions,
    max_rows: Option<u64>,
    tx: mpsc::Sender<Item>,
) -> tokio::task::JoinHandle<Result<Option<Mapper>, FileError>> {
    let (preset, hand_mapping, split_marker, limits) = (
        opts.preset,
        opts.mapping.clone(),
        opts.split_marker.clone(),
        opts.limits,
    );
    tokio::task::spawn_blocking(move || {
        let mut mapper: Option<Mapper> = None;
        let mut fatal: Option<FileError> = None;
        let mut sent = 0u64;
        let stem = file_stem(&file_name);
        formats::read_records(&path, &file_name, format, limits, &mut |record: Record| {
            let row = match record.value {
                Err(reason) => Err(reason),
                Ok(object) => {
                    if mapper.is_none() {
                        match Mapper::resolve(
                            preset,
                            hand_mapping.clone(),
                            split_marker.clone(),
                            &stem,
                            &object,
                        ) {
                            Ok(m) => mapper = Some(m),
                            Err(reason) => {
                                fatal = Some(FileError(describe(
                                    &file_name,
                                    record.record,
                                    record.line,
                                    &reason,
                                )));
                                return ControlFlow::Break(());
                            }
                        }
                    }
                    mapper.as_ref().expect("resolved above").map(object)
                }
            };
            let item = Item {
                record: record.record,
                line: record.line,
                row,
            };
            sent += 1;
            if tx.blocking_send(item).is_err() || max_rows.is_some_and(|m| sent >= m) {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })?;
        match fatal {
            Some(e) => Err(e),
            None => Ok(mapper),
        }
    })
}

/// Imports `path` (shown to users as `file_name`) into a dataset, all or nothing.
pub async fn import_file(
    pool: &SqlitePool,
    team_id: i64,
    path: &Path,
    file_name: &str,
    opts: &ImportOptions,
) -> Result<ImportReport> {
    let dataset_name = crate::names::validate_name("dataset", &opts.dataset)?;
    let format = resolve_format(path, file_name, opts.format)?;
    let (tx, mut rx) = mpsc::channel::<Item>(512);
    let reader = spawn_reader(
        path.to_path_buf(),
        file_name.to_string(),
        format,
        opts,
        None,
        tx,
    );

    let mut db = crate::db::write_tx(pool).await?;
    let dataset_id =
        datasets::store::create_or_find(&mut db, team_id, &dataset_name, opts.mode).await?;
    // Every row this import stores gets an id above this one (the transaction writes alone).
    let after_id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM examples")
        .fetch_one(&mut *db)
        .await?;
    let mut imported = examples::store::ImportedRows::default();
    let import_id = sqlx::query_scalar::<_, i64>(
        "INSERT INTO imports (dataset_id, file_name, format, preset, policy) VALUES (?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(dataset_id)
    .bind(file_name)
    .bind(format.as_str())
    .bind(opts.preset.as_str())
    .bind(opts.policy.as_str())
    .fetch_one(&mut *db)
    .await?;

    let mut n_imported = 0u64;
    let mut rejected: Vec<RejectedRow> = Vec::new();
    let mut n_rejected = 0u64;
    // Untagged rows go in batches (in file order: a tagged row flushes the batch first).
    let mut batch: Vec<(i64, still_api::ExampleFields)> =
        Vec::with_capacity(examples::store::INSERT_BATCH);
    while let Some(item) = rx.recv().await {
        match item.row {
            Ok(example) if example.tags.is_empty() => {
                imported.add(&example);
                batch.push((item.record as i64, example));
                if batch.len() == examples::store::INSERT_BATCH {
                    examples::store::insert_batch(&mut db, dataset_id, Some(import_id), &batch)
                        .await?;
                    batch.clear();
                }
                n_imported += 1;
            }
            Ok(example) => {
                imported.add(&example);
                examples::store::insert_batch(&mut db, dataset_id, Some(import_id), &batch).await?;
                batch.clear();
                examples::store::insert(
                    &mut db,
                    dataset_id,
                    Some(import_id),
                    Some(item.record as i64),
                    &example,
                )
                .await?;
                n_imported += 1;
            }
            Err(reason) => {
                n_rejected += 1;
                if opts.policy == BadRowPolicy::Reject {
                    // Dropping the receiver stops the reader; the transaction rolls back on drop.
                    drop(rx);
                    let _ = reader.await;
                    return Err(Error::Unprocessable(format!(
                        "{}; the file was rejected and nothing was stored",
                        describe(file_name, item.record, item.line, &reason)
                    )));
                }
                if rejected.len() < MAX_REPORTED_REJECTIONS {
                    rejected.push(RejectedRow {
                        record: item.record,
                        line: item.line,
                        reason,
                    });
                }
            }
        }
    }
    examples::store::insert_batch(&mut db, dataset_id, Some(import_id), &batch).await?;
    let mapper = reader
        .await
        .map_err(|e| Error::Internal(format!("import reader panicked: {e}")))?
        .map_err(|e| Error::Unprocessable(e.0))?;
    let Some(mapper) = mapper else {
        return Err(match rejected.first() {
            Some(first) => Error::Unprocessable(format!(
                "no row of {file_name} could be read; first problem: {}",
                describe(file_name, first.record, first.line, &first.reason)
            )),
            None => Error::Unprocessable(format!("{file_name} has no rows")),
        });
    };
    if n_imported == 0 {
        let first = rejected
            .first()
            .map(|r| describe(file_name, r.record, r.line, &r.reason));
        return Err(Error::Unprocessable(format!(
            "no row of {file_name} could be imported; first problem: {}",
            first.unwrap_or_default()
        )));
    }

    imported
        .finish(&mut db, dataset_id, import_id, after_id)
        .await?;

    let mut report = ImportReport {
        import_id: Some(import_id),
        dataset_id: Some(dataset_id),
        dataset: dataset_name,
        file_name: file_name.to_string(),
        format,
        preset: mapper.preset,
        policy: opts.policy,
        mapping: Some(mapper.mapping),
        n_imported,
        n_rejected,
        rejected,
        created_at: None,
    };
    let created_at: String = sqlx::query_scalar(
        "UPDATE imports SET preset = ?, n_imported = ?, n_rejected = ?, report = ? WHERE id = ? RETURNING created_at",
    )
    .bind(report.preset.as_str())
    .bind(n_imported as i64)
    .bind(n_rejected as i64)
    .bind(serde_json::to_string(&report).map_err(|e| Error::Internal(e.to_string()))?)
    .bind(import_id)
    .fetch_one(&mut *db)
    .await?;
    datasets::store::touch(&mut db, dataset_id).await?;
    db.commit().await?;
    report.created_at = Some(created_at);
    Ok(report)
}

/// How many rows a preview maps.
pub const PREVIEW_ROWS: u64 = 20;

/// Maps the first rows of a file without storing anything: what the import would do.
pub async fn preview_file(
    path: &Path,
    file_name: &str,
    opts: &ImportOptions,
) -> Result<still_api::ImportPreview> {
    let format = resolve_format(path, file_name, opts.format)?;
    // Columns come from the raw rows, so the reader runs once more without mapping.
    let columns = {
        let path = path.to_path_buf();
        let name = file_name.to_string();
        let limits = opts.limits;
        tokio::task::spawn_blocking(move || {
            let mut columns: Vec<String> = Vec::new();
            let mut seen = 0u64;
            let _ = formats::read_records(&path, &name, format, limits, &mut |r| {
                if let Ok(object) = &r.value {
                    for key in object.keys() {
                        if !columns.contains(key) {
                            columns.push(key.clone());
                        }
                    }
                }
                seen += 1;
                if seen >= PREVIEW_ROWS {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            columns
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
    };
    let (tx, mut rx) = mpsc::channel::<Item>(PREVIEW_ROWS as usize);
    let reader = spawn_reader(
        path.to_path_buf(),
        file_name.to_string(),
        format,
        opts,
        Some(PREVIEW_ROWS),
        tx,
    );
    let mut rows = Vec::new();
    while let Some(item) = rx.recv().await {
        rows.push(item.row.map_err(|reason| RejectedRow {
            record: item.record,
            line: item.line,
            reason,
        }));
    }
    let mapper = reader
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(|e| Error::Unprocessable(e.0))?
        .ok_or_else(|| Error::Unprocessable(format!("{file_name} has no readable rows")))?;
    let warning = (opts.preset == Preset::Auto && mapper.preset == Preset::Generic).then(|| {
        "no known preset matched; the mapping below was guessed from column names — check it"
            .to_string()
    });
    Ok(still_api::ImportPreview {
        format,
        preset: mapper.preset,
        columns,
        mapping: mapper.mapping,
        rows,
        warning,
    })
}
