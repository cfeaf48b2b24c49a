//! The embedded CPU workers `still serve` starts: child processes running `still worker`
//! against this server, the same protocol as remote workers, restarted when they die.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::SqlitePool;

use crate::jobs::workers;

/// Reads the local worker's token from `DATA_DIR/local-worker-N.token`, or makes a new worker.
async fn local_token(pool: &SqlitePool, data_dir: &Path, n: usize) -> anyhow::Result<String> {
    let file = data_dir.join(format!("local-worker-{n}.token"));
    if let Ok(token) = std::fs::read_to_string(&file) {
        // Files written before tokens were kept private.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        if crate::http::worker_of_token(pool, &token).await?.is_some() {
            return Ok(token.trim().to_string());
        }
    }
    let (_, token) = workers::create_worker(pool, &format!("local-{n}")).await?;
    write_private(&file, &token)?;
    Ok(token)
}

/// Writes a secret readable by its owner only (mode 0600, also when the file existed before).
pub fn write_private(file: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)?;
    out.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    out.write_all(secret.as_bytes())?;
    out.sync_all()
}

/// Starts `count` local workers and keeps them running until the returned task is aborted.
pub async fn spawn(
    pool: &SqlitePool,
    data_dir: &Path,
    server_url: String,
    count: usize,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let exe = std::env::current_exe()?;
    let mut tasks = Vec::new();
    for n in 1..=count {
        let token = local_token(pool, data_dir, n).await?;
        let work_dir: PathBuf = data_dir.join(format!("worker-{n}"));
        let (exe, url) = (exe.clone(), server_url.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let child = tokio::process::Command::new(&exe)
                    // The token goes through the environment, never the command line (which
                    // every user of the machine can read in `ps`).
                    .env("STILL_WORKER_TOKEN", &token)
                    .args(["worker", "--server", &url, "--device", "cpu", "--work-dir"])
                    .arg(&work_dir)
                    // Gone with this process even when it is killed without a chance to stop it.
                    .arg("--parent-pid")
                    .arg(std::process::id().to_string())
                    .kill_on_drop(true)
                    .spawn();
                match child {
                    Ok(mut child) => {
                        let status = child.wait().await;
                        tracing::warn!(worker = n, ?status, "local worker exited; restarting");
                    }
                    Err(e) => {
                        tracing::error!(worker = n, error = %e, "cannot start a local worker")
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
    Ok(tasks)
}
