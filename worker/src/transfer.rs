//! File transfers: a model folder's files (shards included) and a job's dataset downloaded into
//! the work directory, checkpoints uploaded, and the names a transfer may use.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use still_api::{CHECKPOINT_FILES, ExampleFields, MODEL_FILES};

use crate::WorkerOptions;
use crate::client::{Client, status_of};
use crate::report::RunLog;

/// The weight shards a sharded model's index names (plain `*.safetensors` file names only).
pub fn shard_names(dir: &Path) -> anyhow::Result<Vec<String>> {
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        return Ok(Vec::new());
    }
    let text =
        std::fs::read_to_string(&index).with_context(|| format!("reading {}", index.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", index.display()))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .with_context(|| format!("{}: no 'weight_map' object", index.display()))?;
    let mut names: Vec<String> = Vec::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .with_context(|| format!("{}: '{tensor}' maps to a non-string", index.display()))?;
        if !is_plain_file_name(file) || !file.ends_with(".safetensors") {
            bail!(
                "{}: '{tensor}' maps to '{file}', which is not a .safetensors file in the folder",
                index.display()
            );
        }
        if !names.iter().any(|n| n == file) {
            names.push(file.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// A name that stays inside its folder: no separators, not `.`/`..`, not hidden.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0'])
}

/// Every file of a model folder that is transferred: the [`MODEL_FILES`] that exist, the one
/// `*.gguf` of a quantized teacher, then the shards its index names.
pub fn model_files_in(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut files: Vec<String> = MODEL_FILES
        .iter()
        .filter(|f| dir.join(f).is_file())
        .map(|f| f.to_string())
        .collect();
    if let Some(gguf) = still_teacher::gguf_file(dir)? {
        let name = gguf
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| is_plain_file_name(n))
            .with_context(|| format!("{}: not a plain file name", gguf.display()))?;
        files.push(name.to_string());
    }
    for shard in shard_names(dir)? {
        if !dir.join(&shard).is_file() {
            bail!(
                "{}: shard '{shard}' named by the index is missing",
                dir.display()
            );
        }
        files.push(shard);
    }
    Ok(files)
}

/// The SHA-256 of a file, hex, read in pieces.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Whether a folder holds a model: a `config.json`, or a quantized teacher's `*.gguf`.
pub fn is_model_folder(dir: &Path) -> bool {
    dir.join("config.json").is_file() || still_teacher::gguf_file(dir).is_ok_and(|g| g.is_some())
}

/// The model folders in `--models-dir` (sub-folders holding a model).
pub fn local_models(models_dir: Option<&Path>) -> Vec<String> {
    let Some(dir) = models_dir else {
        return Vec::new();
    };
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir() && is_model_folder(&e.path()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// The model's folder: this machine's copy in `--models-dir` when it has one, else a download
/// from the server (kept in the work dir).
pub fn fetch_model(
    client: &Client,
    options: &WorkerOptions,
    model_id: i64,
    (model_name, on_worker): (&str, bool),
    log: &RunLog,
) -> anyhow::Result<PathBuf> {
    // Only models registered as living on workers' disks come from --models-dir: a server
    // model is never silently swapped for a same-named local folder.
    if let Some(local) = options.models_dir.as_ref().map(|d| d.join(model_name))
        && on_worker
        && is_model_folder(&local)
    {
        log.info(format!(
            "model '{model_name}': using this worker's folder {}",
            local.display()
        ));
        return Ok(local);
    }
    let work_dir = &options.work_dir;
    let dir = work_dir.join("models").join(model_id.to_string());
    // The folder appears only by the rename below, once every file is there.
    if dir.is_dir() && is_model_folder(&dir) {
        log.info(format!(
            "model {model_id}: using the copy in {}",
            dir.display()
        ));
        return Ok(dir);
    }
    let mut bytes_total = 0u64;
    let partial = dir.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial)?;
    }
    std::fs::create_dir_all(&partial)?;
    let listing: Vec<String> = serde_json::from_slice(
        &client.get_bytes(&format!("/api/worker/models/{model_id}/files"))?,
    )?;
    for name in listing {
        if !is_plain_file_name(&name) {
            bail!("model {model_id}: the server listed '{name}', which is not a file name");
        }
        bytes_total += client.download(
            &format!("/api/worker/models/{model_id}/files/{name}"),
            &partial.join(&name),
        )?;
    }
    log.info(format!(
        "model {model_id}: downloaded {:.1} MiB",
        bytes_total as f64 / (1u64 << 20) as f64
    ));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&partial, &dir)?;
    Ok(dir)
}

/// Downloads the job's pinned dataset version to a file (streamed) and reads its rows from it.
pub fn fetch_dataset(
    client: &Client,
    job_id: i64,
    work_dir: &Path,
) -> anyhow::Result<Vec<ExampleFields>> {
    fetch_rows(client, job_id, "dataset", work_dir)
}

/// Downloads canonical JSONL rows from the job's route `route` (under `/api/worker/jobs/{id}/`).
pub fn fetch_rows(
    client: &Client,
    job_id: i64,
    route: &str,
    work_dir: &Path,
) -> anyhow::Result<Vec<ExampleFields>> {
    use std::io::BufRead;
    std::fs::create_dir_all(work_dir)?;
    let file = work_dir.join(format!("dataset-job-{job_id}.jsonl"));
    client.download(&format!("/api/worker/jobs/{job_id}/{route}"), &file)?;
    let reader = std::io::BufReader::new(std::fs::File::open(&file)?);
    let mut rows = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("dataset line {}", i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        rows.push(serde_json::from_str(&line).with_context(|| format!("dataset line {}", i + 1))?);
    }
    std::fs::remove_file(&file)?;
    Ok(rows)
}

/// Uploads a checkpoint folder, then makes it the job's resume point.
pub fn upload_checkpoint(
    client: &Client,
    job_id: i64,
    step: usize,
    dir: &Path,
) -> anyhow::Result<()> {
    for name in CHECKPOINT_FILES {
        let file = dir.join(name);
        if file.is_file() {
            client.put_file(
                &format!("/api/worker/jobs/{job_id}/checkpoints/{step}/{name}"),
                &file,
            )?;
        }
    }
    client.post::<_, serde_json::Value>(
        &format!("/api/worker/jobs/{job_id}/checkpoints/{step}"),
        &serde_json::json!({}),
    )?;
    Ok(())
}

/// Downloads the checkpoint the job resumes from into `dir` (a checkpoint may lack the optional
/// `generation_config.json`).
pub fn fetch_checkpoint(client: &Client, job_id: i64, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for name in CHECKPOINT_FILES {
        match client.download(
            &format!("/api/worker/jobs/{job_id}/checkpoint/{name}"),
            &dir.join(name),
        ) {
            Ok(_) => {}
            Err(e) if *name == "generation_config.json" && status_of(&e) == Some(404) => {}
            Err(e) => return Err(e.context(format!("downloading checkpoint file {name}"))),
        }
    }
    Ok(())
}
