//! The artifact store: checkpoint and model files named by their SHA-256 under
//! `DATA_DIR/artifacts/<2 hex>/<sha256>`, the run folders that name them (`step-N`, `final`),
//! and the tar archive a folder downloads as (the download routes are the runs area's).
//!
//! A file is hashed while it streams to a temporary file and then renamed into place, so the
//! store never holds a partial file under a hash name and an identical file is kept once.

use std::path::{Path, PathBuf};

use axum::body::Body;
use sha2::{Digest, Sha256};
use sqlx::SqlitePool;
use still_api::{ArtifactFile, ArtifactFolder};

use crate::error::{Error, Result};

/// Where the content with this hash lives.
pub fn blob_path(data_dir: &Path, sha256: &str) -> PathBuf {
    data_dir.join("artifacts").join(&sha256[..2]).join(sha256)
}

/// Streams `body` into the store and returns (sha256, size). When the sender named the hash
/// (`expected`), a body with another hash is refused and nothing is kept.
pub async fn store(
    data_dir: &Path,
    tmp_dir: &Path,
    body: Body,
    expected: Option<&str>,
    what: &str,
) -> Result<(String, u64)> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    tokio::fs::create_dir_all(tmp_dir).await?;
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| Error::Internal(format!("random name: {e}")))?;
    let tmp = tmp_dir.join(format!("artifact-{}.partial", hex::encode(nonce)));
    // Removed however this ends: an error, or the client going away mid-upload (the future is
    // dropped then, and code after an `.await` never runs).
    let _guard = RemoveOnDrop(tmp.clone());
    async {
        let mut out = tokio::fs::File::create(&tmp).await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::BadRequest(format!("upload of {what}: {e}")))?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            out.write_all(&chunk).await?;
        }
        out.sync_all().await?;
        let sha = hex::encode(hasher.finalize());
        if let Some(expected) = expected
            && !expected.eq_ignore_ascii_case(&sha)
        {
            return Err(Error::Unprocessable(format!(
                "upload of {what}: content hash {sha} differs from the announced {expected} \
                 (the file changed or was cut in transit); nothing was stored"
            )));
        }
        let dest = blob_path(data_dir, &sha);
        if !dest.is_file() {
            let parent = dest.parent().expect("blob has a parent").to_path_buf();
            tokio::fs::create_dir_all(&parent).await?;
            tokio::fs::rename(&tmp, &dest).await?;
            // The file was synced above; the folder's new entry is flushed too.
            let folder = parent.clone();
            tokio::task::spawn_blocking(move || still_engine::fsio::sync_dir(&folder))
                .await
                .map_err(|e| Error::Internal(e.to_string()))??;
        }
        Ok((sha, size))
    }
    .await
}

/// Deletes a temporary file when dropped (a no-op once it was renamed away).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Records that `folder/name` of a run is the stored content `sha256`. The folder stays
/// uncommitted (not a resume point, not offered for download) until [`commit`].
/// `lease` is (job, worker): the file is recorded only while that worker still holds the job
/// (an upload can take minutes; a worker that lost the lease meanwhile changes nothing).
pub async fn put_run_file(
    db: &mut sqlx::SqliteConnection,
    run: i64,
    folder: &str,
    name: &str,
    sha256: &str,
    size: u64,
) -> Result<()> {
    sqlx::query("INSERT OR IGNORE INTO artifacts (sha256, size) VALUES (?, ?)")
        .bind(sha256)
        .bind(size as i64)
        .execute(&mut *db)
        .await?;
    sqlx::query(
        "INSERT INTO run_files (run_id, folder, name, sha256, size, committed) VALUES (?, ?, ?, ?, ?, 0) \
         ON CONFLICT (run_id, folder, name) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size, \
         committed = 0, created_at = excluded.created_at",
    )
    .bind(run)
    .bind(folder)
    .bind(name)
    .bind(sha256)
    .bind(size as i64)
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// Marks a folder complete once every `required` file is there.
pub async fn commit(
    conn: &mut sqlx::SqliteConnection,
    run: i64,
    folder: &str,
    required: &[&str],
) -> Result<()> {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM run_files WHERE run_id = ? AND folder = ?")
            .bind(run)
            .bind(folder)
            .fetch_all(&mut *conn)
            .await?;
    if let Some(missing) = required.iter().find(|r| !names.iter().any(|n| n == *r)) {
        return Err(Error::Unprocessable(format!(
            "{folder}: '{missing}' was not uploaded"
        )));
    }
    sqlx::query("UPDATE run_files SET committed = 1 WHERE run_id = ? AND folder = ?")
        .bind(run)
        .bind(folder)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The bytes a folder of a run holds, in the caller's transaction.
pub async fn folder_bytes(db: &mut sqlx::SqliteConnection, run: i64, folder: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(sum(size), 0) FROM run_files WHERE run_id = ? AND folder = ?",
    )
    .bind(run)
    .bind(folder)
    .fetch_one(&mut *db)
    .await?)
}

/// The committed folders of a run: the final model first, then checkpoints, newest first.
pub async fn folders(pool: &SqlitePool, run: i64) -> Result<Vec<ArtifactFolder>> {
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT folder, name, size, sha256 FROM run_files WHERE run_id = ? AND committed = 1 \
         ORDER BY folder = 'final' DESC, CAST(substr(folder, 6) AS INTEGER) DESC, name",
    )
    .bind(run)
    .fetch_all(pool)
    .await?;
    let mut out: Vec<ArtifactFolder> = Vec::new();
    for (folder, name, size, sha256) in rows {
        if out.last().is_none_or(|f| f.folder != folder) {
            out.push(ArtifactFolder {
                step: folder.strip_prefix("step-").and_then(|s| s.parse().ok()),
                folder: folder.clone(),
                files: Vec::new(),
                total_bytes: 0,
            });
        }
        let last = out.last_mut().expect("pushed");
        last.total_bytes += size;
        last.files.push(ArtifactFile { name, size, sha256 });
    }
    Ok(out)
}

/// The stored file behind `folder/name` of a run (committed or not: a worker resuming reads a
/// committed folder, the server materialises the one it is committing).
pub async fn file_path(
    pool: &SqlitePool,
    data_dir: &Path,
    run: i64,
    folder: &str,
    name: &str,
) -> Result<Option<PathBuf>> {
    let sha: Option<String> = sqlx::query_scalar(
        "SELECT sha256 FROM run_files WHERE run_id = ? AND folder = ? AND name = ?",
    )
    .bind(run)
    .bind(folder)
    .bind(name)
    .fetch_optional(pool)
    .await?;
    Ok(sha.map(|sha| blob_path(data_dir, &sha)))
}

/// Lays a run folder out as an ordinary directory (hard links into the store, copies where
/// links are not possible), for code that loads a model folder from disk.
pub async fn materialize(
    pool: &SqlitePool,
    data_dir: &Path,
    run: i64,
    folder: &str,
    dest: &Path,
) -> Result<()> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT name, sha256 FROM run_files WHERE run_id = ? AND folder = ?")
            .bind(run)
            .bind(folder)
            .fetch_all(pool)
            .await?;
    tokio::fs::create_dir_all(dest).await?;
    for (name, sha) in rows {
        let target = dest.join(&name);
        let _ = tokio::fs::remove_file(&target).await;
        let blob = blob_path(data_dir, &sha);
        if tokio::fs::hard_link(&blob, &target).await.is_err() {
            tokio::fs::copy(&blob, &target).await?;
        }
    }
    Ok(())
}

/// A name safe as a file name in a download (letters, digits, `-`, `_`, `.`).
pub fn safe_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

const BLOCK: u64 = 512;

/// The size of a tar archive holding files of these sizes (header + padded content each, then
/// two zero blocks).
pub fn tar_size(sizes: impl Iterator<Item = u64>) -> u64 {
    sizes
        .map(|s| BLOCK + s.div_ceil(BLOCK) * BLOCK)
        .sum::<u64>()
        + 2 * BLOCK
}

/// A POSIX ustar header for a regular file (sizes of 8 GiB and more in GNU base-256 form).
/// A path over 100 bytes goes in two parts: the folder in `prefix` (≤ 155), the file in `name`.
pub fn tar_header(path: &str, size: u64) -> Result<[u8; 512]> {
    let mut h = [0u8; 512];
    let (prefix, name) = if path.len() <= 100 {
        ("", path)
    } else {
        path.rsplit_once('/')
            .filter(|(dir, file)| dir.len() <= 155 && file.len() <= 100)
            .ok_or_else(|| {
                Error::Internal(format!("tar entry '{path}' does not fit a ustar header"))
            })?
    };
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    if size < 8 << 30 {
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    } else {
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    h[136..148].copy_from_slice(format!("{mtime:011o}\0").as_bytes());
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(h)
}

/// Streams files as a tar archive without reading any of them whole.
pub fn tar_stream(entries: Vec<(String, PathBuf, u64)>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<axum::body::Bytes>>(4);
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        for (name, path, size) in entries {
            let header = match tar_header(&name, size) {
                Ok(h) => h,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            if tx
                .send(Ok(axum::body::Bytes::copy_from_slice(&header)))
                .await
                .is_err()
            {
                return;
            }
            let mut file = match tokio::fs::File::open(&path).await {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let mut sent = 0u64;
            let mut buf = vec![0u8; 256 * 1024];
            while sent < size {
                match file.read(&mut buf).await {
                    Ok(0) => {
                        let _ = tx
                            .send(Err(std::io::Error::other(format!(
                                "{name}: the stored file is shorter than recorded"
                            ))))
                            .await;
                        return;
                    }
                    Ok(n) => {
                        let n = n.min((size - sent) as usize);
                        sent += n as u64;
                        if tx
                            .send(Ok(axum::body::Bytes::copy_from_slice(&buf[..n])))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            let pad = (size.div_ceil(BLOCK) * BLOCK - size) as usize;
            if pad > 0
                && tx
                    .send(Ok(axum::body::Bytes::from(vec![0u8; pad])))
                    .await
                    .is_err()
            {
                return;
            }
        }
        let _ = tx
            .send(Ok(axum::body::Bytes::from(vec![0u8; 2 * BLOCK as usize])))
            .await;
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_headers_have_valid_checksums_and_octal_sizes() {
        let h = tar_header("run-final/config.json", 1234).unwrap();
        assert_eq!(&h[..21], b"run-final/config.json");
        assert_eq!(&h[124..136], b"00000002322\0");
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        let mut blank = h;
        blank[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, blank.iter().map(|&b| b as u32).sum::<u32>());
        assert_eq!(
            tar_size([1234u64, 512].into_iter()),
            512 + 1536 + 512 + 512 + 1024
        );
        assert!(tar_header(&"x".repeat(101), 1).is_err());
        // A long folder goes in the prefix field.
        let long = format!("{}-final/model.safetensors", "r".repeat(100));
        let h = tar_header(&long, 1).unwrap();
        assert_eq!(&h[..17], b"model.safetensors");
        assert_eq!(
            &h[345..345 + 106],
            format!("{}-final", "r".repeat(100)).as_bytes()
        );
    }
}
