//! The versions' storage: cutting a version, finding one, and reading a dataset's rows (live,
//! or a version's) as JSONL.
//!
//! A version is an ordered list of content hashes; each hash names the canonical JSON of one
//! row, stored once in `example_blobs`. Cutting a version empties the trash (soft-deleted rows
//! become unrecoverable), and later edits never change what a version holds.

use axum::body::Bytes;
use sha2::{Digest, Sha256};
use sqlx::{FromRow, SqlitePool};
use still_api::{DatasetVersion, ExampleFields, ExportShape};
use tokio::sync::mpsc;

use crate::data::examples::store::{EXAMPLE_COLUMNS, ExampleRecord};
use crate::error::{Error, Result};

/// Rows read per round trip while snapshotting or exporting.
const BATCH: i64 = 1000;
/// Version rows per multi-row insert (4 bound values each).
const ROWS_PER_STATEMENT: usize = 300;
/// Row bodies per multi-row insert (kept small: each is a row's whole JSON).
const BLOBS_PER_STATEMENT: usize = 100;

#[derive(FromRow)]
struct VersionRow {
    id: i64,
    dataset_id: i64,
    version: i64,
    content_hash: String,
    n_rows: i64,
    message: String,
    created_at: String,
}

impl From<VersionRow> for DatasetVersion {
    fn from(r: VersionRow) -> Self {
        DatasetVersion {
            id: r.id,
            dataset_id: r.dataset_id,
            version: r.version,
            content_hash: r.content_hash,
            n_rows: r.n_rows,
            message: r.message,
            created_at: r.created_at,
        }
    }
}

/// The canonical JSON of a row: what a version stores and hashes. Keys are sorted (serde_json's
/// map is ordered), so equal rows give equal bytes.
pub fn canonical_json(fields: &ExampleFields) -> String {
    let value = serde_json::to_value(fields).expect("example fields serialise");
    serde_json::to_string(&value).expect("json values serialise")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn tags_for(
    db: &mut sqlx::SqliteConnection,
    ids: &[i64],
) -> Result<std::collections::HashMap<i64, Vec<String>>> {
    let mut out: std::collections::HashMap<i64, Vec<String>> = Default::default();
    if let (Some(first), Some(last)) = (ids.first(), ids.last()) {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT example_id, tag FROM example_tags WHERE example_id BETWEEN ? AND ? ORDER BY example_id, tag",
        )
        .bind(first)
        .bind(last)
        .fetch_all(&mut *db)
        .await?;
        for (id, tag) in rows {
            out.entry(id).or_default().push(tag);
        }
    }
    Ok(out)
}

/// Snapshots the dataset's live rows as its next version.
pub async fn create(pool: &SqlitePool, dataset_id: i64, message: &str) -> Result<DatasetVersion> {
    let mut db = crate::db::write_tx(pool).await?;
    sqlx::query("DELETE FROM examples WHERE dataset_id = ? AND deleted_at IS NOT NULL")
        .bind(dataset_id)
        .execute(&mut *db)
        .await?;
    // Counts that edits and the trash brought to 0 go with the trash (readers skip them anyway).
    sqlx::query("DELETE FROM example_counts WHERE dataset_id = ? AND n = 0")
        .bind(dataset_id)
        .execute(&mut *db)
        .await?;
    let version: i64 = sqlx::query_scalar(
        "SELECT coalesce(max(version), 0) + 1 FROM dataset_versions WHERE dataset_id = ?",
    )
    .bind(dataset_id)
    .fetch_one(&mut *db)
    .await?;
    let version_id: i64 = sqlx::query_scalar(
        "INSERT INTO dataset_versions (dataset_id, version, content_hash, n_rows, message, dataset_revision) \
         VALUES (?, ?, '', 0, ?, (SELECT revision FROM datasets WHERE id = ?)) RETURNING id",
    )
    .bind(dataset_id)
    .bind(version)
    .bind(message)
    .bind(dataset_id)
    .fetch_one(&mut *db)
    .await?;
    let mut whole = Sha256::new();
    let mut ordinal = 0i64;
    let mut after = 0i64;
    loop {
        let records: Vec<ExampleRecord> = sqlx::query_as(&format!(
            "SELECT {EXAMPLE_COLUMNS} FROM examples WHERE dataset_id = ? AND id > ? ORDER BY id LIMIT ?"
        ))
        .bind(dataset_id)
        .bind(after)
        .bind(BATCH)
        .fetch_all(&mut *db)
        .await?;
        let Some(last) = records.last() else { break };
        after = last.id();
        let ids: Vec<i64> = records.iter().map(ExampleRecord::id).collect();
        let mut tags = tags_for(&mut db, &ids).await?;
        // (ordinal, example id, hash, body), written a few hundred rows per statement.
        let mut batch = Vec::with_capacity(records.len());
        for record in records {
            let example_id = record.id();
            let example = record.into_example(tags.remove(&example_id).unwrap_or_default());
            let body = canonical_json(&example.fields);
            let hash = sha256_hex(body.as_bytes());
            whole.update(hash.as_bytes());
            whole.update(b"\n");
            batch.push((ordinal, example_id, hash, body));
            ordinal += 1;
        }
        for chunk in batch.chunks(BLOBS_PER_STATEMENT) {
            let mut q =
                sqlx::QueryBuilder::new("INSERT OR IGNORE INTO example_blobs (hash, body) ");
            q.push_values(chunk, |mut b, (_, _, hash, body)| {
                b.push_bind(hash).push_bind(body);
            });
            q.build().execute(&mut *db).await?;
        }
        for chunk in batch.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO dataset_version_rows (version_id, ordinal, example_id, blob_hash) ",
            );
            q.push_values(chunk, |mut b, (ordinal, example_id, hash, _)| {
                b.push_bind(version_id)
                    .push_bind(*ordinal)
                    .push_bind(*example_id)
                    .push_bind(hash);
            });
            q.build().execute(&mut *db).await?;
        }
    }
    let row: VersionRow = sqlx::query_as(
        "UPDATE dataset_versions SET content_hash = ?, n_rows = ? WHERE id = ? RETURNING *",
    )
    .bind(hex::encode(whole.finalize()))
    .bind(ordinal)
    .bind(version_id)
    .fetch_one(&mut *db)
    .await?;
    db.commit().await?;
    Ok(row.into())
}

/// The version a run or an eval pins: the latest one when the dataset has not changed since
/// it was cut, else a new one (with `message`).
pub async fn pin_current(
    pool: &SqlitePool,
    dataset_id: i64,
    message: &str,
) -> Result<DatasetVersion> {
    // The latest version is current when it was cut at the dataset's present revision.
    let current: Option<i64> = sqlx::query_scalar(
        "SELECT v.version FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id \
         WHERE v.dataset_id = ? AND v.dataset_revision = d.revision ORDER BY v.version DESC LIMIT 1",
    )
    .bind(dataset_id)
    .fetch_optional(pool)
    .await?;
    match current {
        Some(v) => find(pool, dataset_id, v).await,
        None => create(pool, dataset_id, message).await,
    }
}

pub async fn list(pool: &SqlitePool, dataset_id: i64) -> Result<Vec<DatasetVersion>> {
    let rows: Vec<VersionRow> =
        sqlx::query_as("SELECT * FROM dataset_versions WHERE dataset_id = ? ORDER BY version DESC")
            .bind(dataset_id)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Finds version `version` (1, 2, …) of a dataset.
pub async fn find(pool: &SqlitePool, dataset_id: i64, version: i64) -> Result<DatasetVersion> {
    let row: VersionRow =
        sqlx::query_as("SELECT * FROM dataset_versions WHERE dataset_id = ? AND version = ?")
            .bind(dataset_id)
            .bind(version)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| {
                Error::not_found(format!("version {version} of dataset {dataset_id}"))
            })?;
    Ok(row.into())
}

/// One exported line in the requested shape.
pub fn export_line(fields: &ExampleFields, shape: ExportShape) -> String {
    let mut line = match shape {
        ExportShape::Canonical => canonical_json(fields),
        ExportShape::S1k => fields.to_s1k_json().to_string(),
    };
    line.push('\n');
    line
}

/// Streams a dataset's rows (live rows, or a version's) as JSONL into `out`, batch by batch.
pub async fn export_rows(
    pool: SqlitePool,
    dataset_id: i64,
    version: Option<DatasetVersion>,
    shape: ExportShape,
    max_rows: Option<usize>,
    out: mpsc::Sender<std::io::Result<Bytes>>,
) -> Result<()> {
    let mut cursor = -1i64;
    let mut left = max_rows.unwrap_or(usize::MAX);
    loop {
        let batch = left.min(BATCH as usize) as i64;
        if batch == 0 {
            return Ok(());
        }
        let mut chunk = String::new();
        let fetched = match &version {
            Some(v) => {
                let rows: Vec<(i64, String)> = sqlx::query_as(
                    "SELECT r.ordinal, b.body FROM dataset_version_rows r JOIN example_blobs b ON b.hash = r.blob_hash \
                     WHERE r.version_id = ? AND r.ordinal > ? ORDER BY r.ordinal LIMIT ?",
                )
                .bind(v.id)
                .bind(cursor)
                .bind(batch)
                .fetch_all(&pool)
                .await?;
                for (ordinal, body) in &rows {
                    cursor = *ordinal;
                    let fields: ExampleFields = serde_json::from_str(body)
                        .map_err(|e| Error::Internal(format!("version blob unreadable: {e}")))?;
                    chunk.push_str(&export_line(&fields, shape));
                }
                rows.len()
            }
            None => {
                let records: Vec<ExampleRecord> = sqlx::query_as(&format!(
                    "SELECT {EXAMPLE_COLUMNS} FROM examples WHERE dataset_id = ? AND deleted_at IS NULL AND id > ? ORDER BY id LIMIT ?"
                ))
                .bind(dataset_id)
                .bind(cursor)
                .bind(batch)
                .fetch_all(&pool)
                .await?;
                let ids: Vec<i64> = records.iter().map(ExampleRecord::id).collect();
                let mut conn = pool.acquire().await?;
                let mut tags = tags_for(&mut conn, &ids).await?;
                drop(conn);
                let n = records.len();
                for record in records {
                    cursor = record.id();
                    let example = record.into_example(tags.remove(&cursor).unwrap_or_default());
                    chunk.push_str(&export_line(&example.fields, shape));
                }
                n
            }
        };
        if !chunk.is_empty() && out.send(Ok(Bytes::from(chunk))).await.is_err() {
            return Ok(()); // the client went away
        }
        if fetched < batch as usize {
            return Ok(());
        }
        left -= fetched;
    }
}

/// Cuts a version of `dataset_id` from rows already stored as blobs (a curation stage's output),
/// in the caller's transaction: `(example_id, blob_hash)` in order. With `current`, the version
/// is the dataset's current one (its live rows are these), so a run or an eval pins it.
pub async fn cut(
    db: &mut sqlx::SqliteConnection,
    dataset_id: i64,
    rows: &[(Option<i64>, &str)],
    message: &str,
    current: bool,
) -> Result<DatasetVersion> {
    let version: i64 = sqlx::query_scalar(
        "SELECT coalesce(max(version), 0) + 1 FROM dataset_versions WHERE dataset_id = ?",
    )
    .bind(dataset_id)
    .fetch_one(&mut *db)
    .await?;
    let mut whole = Sha256::new();
    for (_, hash) in rows {
        whole.update(hash.as_bytes());
        whole.update(b"\n");
    }
    let row: VersionRow = sqlx::query_as(
        "INSERT INTO dataset_versions (dataset_id, version, content_hash, n_rows, message, dataset_revision) \
         VALUES (?, ?, ?, ?, ?, CASE WHEN ? THEN (SELECT revision FROM datasets WHERE id = ?) ELSE -1 END) \
         RETURNING id, dataset_id, version, content_hash, n_rows, message, created_at",
    )
    .bind(dataset_id)
    .bind(version)
    .bind(hex::encode(whole.finalize()))
    .bind(rows.len() as i64)
    .bind(message)
    .bind(current)
    .bind(dataset_id)
    .fetch_one(&mut *db)
    .await?;
    for (at, chunk) in rows.chunks(ROWS_PER_STATEMENT).enumerate() {
        let mut query = sqlx::QueryBuilder::new(
            "INSERT INTO dataset_version_rows (version_id, ordinal, example_id, blob_hash) ",
        );
        query.push_values(chunk.iter().enumerate(), |mut b, (i, (example, hash))| {
            b.push_bind(row.id)
                .push_bind((at * ROWS_PER_STATEMENT + i) as i64)
                .push_bind(*example)
                .push_bind(*hash);
        });
        query.build().execute(&mut *db).await?;
    }
    Ok(row.into())
}

/// One row of a version, with its body.
pub struct VersionedRow {
    pub ordinal: i64,
    pub example_id: Option<i64>,
    pub hash: String,
    pub fields: ExampleFields,
}

/// Up to `limit` rows of a version after `after` (an ordinal; -1 for the first).
pub async fn rows_of(
    pool: &SqlitePool,
    version_id: i64,
    after: i64,
    limit: i64,
) -> Result<Vec<VersionedRow>> {
    let rows: Vec<(i64, Option<i64>, String, String)> = sqlx::query_as(
        "SELECT r.ordinal, r.example_id, r.blob_hash, b.body FROM dataset_version_rows r \
         JOIN example_blobs b ON b.hash = r.blob_hash \
         WHERE r.version_id = ? AND r.ordinal > ? ORDER BY r.ordinal LIMIT ?",
    )
    .bind(version_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(ordinal, example_id, hash, body)| {
            let fields = serde_json::from_str(&body)
                .map_err(|e| Error::Internal(format!("version blob {hash} unreadable: {e}")))?;
            Ok(VersionedRow {
                ordinal,
                example_id,
                hash,
                fields,
            })
        })
        .collect()
}

/// A version's rows at these ordinals, by ordinal.
pub async fn rows_at(
    pool: &SqlitePool,
    version_id: i64,
    ordinals: &[i64],
) -> Result<std::collections::HashMap<i64, ExampleFields>> {
    let mut out = std::collections::HashMap::new();
    for chunk in ordinals.chunks(500) {
        let mut query = sqlx::QueryBuilder::new(
            "SELECT r.ordinal, b.body FROM dataset_version_rows r \
             JOIN example_blobs b ON b.hash = r.blob_hash WHERE r.version_id = ",
        );
        query.push_bind(version_id).push(" AND r.ordinal IN ");
        query.push_tuples(chunk, |mut b, o| {
            b.push_bind(*o);
        });
        let rows: Vec<(i64, String)> = query.build_query_as().fetch_all(pool).await?;
        for (ordinal, body) in rows {
            let fields = serde_json::from_str(&body)
                .map_err(|e| Error::Internal(format!("version row {ordinal} unreadable: {e}")))?;
            out.insert(ordinal, fields);
        }
    }
    Ok(out)
}

/// The rows' bodies by blob hash.
pub async fn bodies(
    pool: &SqlitePool,
    hashes: &[&str],
) -> Result<std::collections::HashMap<String, ExampleFields>> {
    let mut out = std::collections::HashMap::new();
    for chunk in hashes.chunks(500) {
        let mut query =
            sqlx::QueryBuilder::new("SELECT hash, body FROM example_blobs WHERE hash IN ");
        query.push_tuples(chunk, |mut b, h| {
            b.push_bind(*h);
        });
        let rows: Vec<(String, String)> = query.build_query_as().fetch_all(pool).await?;
        for (hash, body) in rows {
            let fields = serde_json::from_str(&body)
                .map_err(|e| Error::Internal(format!("version blob {hash} unreadable: {e}")))?;
            out.insert(hash, fields);
        }
    }
    Ok(out)
}

/// The fields in which two rows differ.
fn changed_fields(a: &ExampleFields, b: &ExampleFields) -> Vec<String> {
    let (a, b) = (
        serde_json::to_value(a).expect("fields serialise"),
        serde_json::to_value(b).expect("fields serialise"),
    );
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return Vec::new();
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// Rows added, removed and changed from version `a` to `b` of one dataset: rows taken from the
/// same live example are the same row (changed when their contents differ); the rest are
/// matched by content. Counts are exact; each list holds at most `limit` rows.
pub async fn diff(
    pool: &SqlitePool,
    a: DatasetVersion,
    b: DatasetVersion,
    limit: usize,
) -> Result<still_api::VersionDiff> {
    use std::collections::HashMap;
    let load = |id: i64| async move {
        let rows: Vec<(i64, Option<i64>, String)> = sqlx::query_as(
            "SELECT ordinal, example_id, blob_hash FROM dataset_version_rows WHERE version_id = ? ORDER BY ordinal",
        )
        .bind(id)
        .fetch_all(pool)
        .await?;
        Ok::<_, Error>(rows)
    };
    let (ra, rb) = (load(a.id).await?, load(b.id).await?);
    let b_by_example: HashMap<i64, usize> = rb
        .iter()
        .enumerate()
        .filter_map(|(i, (_, e, _))| e.map(|e| (e, i)))
        .collect();
    let mut b_taken = vec![false; rb.len()];
    let mut a_left = Vec::new();
    let mut changed: Vec<(usize, usize)> = Vec::new();
    let mut n_unchanged = 0i64;
    for (i, (_, example, hash)) in ra.iter().enumerate() {
        match example.and_then(|e| b_by_example.get(&e)) {
            Some(&j) => {
                b_taken[j] = true;
                if rb[j].2 == *hash {
                    n_unchanged += 1;
                } else {
                    changed.push((i, j));
                }
            }
            None => a_left.push(i),
        }
    }
    let mut b_by_hash: HashMap<&str, Vec<usize>> = HashMap::new();
    for (j, (_, _, hash)) in rb.iter().enumerate().rev() {
        if !b_taken[j] {
            b_by_hash.entry(hash.as_str()).or_default().push(j);
        }
    }
    let mut removed = Vec::new();
    for i in a_left {
        match b_by_hash.get_mut(ra[i].2.as_str()).and_then(Vec::pop) {
            Some(j) => {
                b_taken[j] = true;
                n_unchanged += 1;
            }
            None => removed.push(i),
        }
    }
    let added: Vec<usize> = (0..rb.len()).filter(|&j| !b_taken[j]).collect();
    let mut wanted: Vec<&str> = Vec::new();
    wanted.extend(removed.iter().take(limit).map(|&i| ra[i].2.as_str()));
    wanted.extend(added.iter().take(limit).map(|&j| rb[j].2.as_str()));
    for &(i, j) in changed.iter().take(limit) {
        wanted.push(ra[i].2.as_str());
        wanted.push(rb[j].2.as_str());
    }
    wanted.sort_unstable();
    wanted.dedup();
    let bodies = bodies(pool, &wanted).await?;
    let row = |(ordinal, _, hash): &(i64, Option<i64>, String)| -> Result<still_api::DiffRow> {
        Ok(still_api::DiffRow {
            ordinal: *ordinal,
            fields: bodies
                .get(hash)
                .cloned()
                .ok_or_else(|| Error::Internal(format!("version blob {hash} is missing")))?,
        })
    };
    Ok(still_api::VersionDiff {
        n_added: added.len() as i64,
        n_removed: removed.len() as i64,
        n_changed: changed.len() as i64,
        n_unchanged,
        added: added
            .iter()
            .take(limit)
            .map(|&j| row(&rb[j]))
            .collect::<Result<_>>()?,
        removed: removed
            .iter()
            .take(limit)
            .map(|&i| row(&ra[i]))
            .collect::<Result<_>>()?,
        changed: changed
            .iter()
            .take(limit)
            .map(|&(i, j)| {
                let (before, after) = (row(&ra[i])?, row(&rb[j])?);
                Ok(still_api::ChangedRow {
                    example_id: ra[i].1.expect("matched by example"),
                    fields: changed_fields(&before.fields, &after.fields),
                    before,
                    after,
                })
            })
            .collect::<Result<_>>()?,
        a,
        b,
    })
}
