//! The worker: registers with a server, long-polls for jobs, trains with the engine, streams
//! every optimizer step's metrics back, heartbeats its lease (and stops when the run is
//! cancelled or the lease is lost), uploads the final model and reports the outcome.
//!
//! **Invariant:** this crate talks to the server only over HTTP and never depends on axum or
//! sqlx, so a GPU machine runs it with the engine alone.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use still_api::{
    ClaimedJob, ExampleFields, HeartbeatReply, JobFailure, LogLine, MetricPoint, RegisterWorker,
};
use still_engine::train::{self, Event, Method, TrainConfig};

/// Files a model folder is made of (the ones that exist are transferred, with the shards a
/// `model.safetensors.index.json` names: [`model_files_in`]).
pub const MODEL_FILES: &[&str] = &[
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
];

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

/// Every file of a model folder that is transferred: the [`MODEL_FILES`] that exist, then the
/// shards its index names.
pub fn model_files_in(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut files: Vec<String> = MODEL_FILES
        .iter()
        .filter(|f| dir.join(f).is_file())
        .map(|f| f.to_string())
        .collect();
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

/// Files of a checkpoint: the model folder plus optimizer state and trainer state.
pub const CHECKPOINT_FILES: &[&str] = &[
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "optimizer.safetensors",
    "trainer_state.json",
];

/// How to reach the server and where to keep files.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub server: String,
    pub token: String,
    pub device: String,
    /// Downloaded models, datasets and run outputs.
    pub work_dir: PathBuf,
    /// Model folders on this machine, used by name instead of downloading (`DIR/<model name>`);
    /// the only way a worker gets a model registered with `location: workers`.
    pub models_dir: Option<PathBuf>,
    /// Stop after this many jobs (for tests); run forever when `None`.
    pub max_jobs: Option<usize>,
    /// A local worker's `still serve` process: when it is gone (even killed with SIGKILL, which
    /// gives it no chance to stop its children), this worker exits instead of retrying forever.
    pub parent_pid: Option<u32>,
}

/// How long a request keeps being retried while the server cannot be reached (a restart, a
/// network blip); training goes on meanwhile and nothing sent is lost.
pub const RETRY_FOR: Duration = Duration::from_secs(600);

/// A small blocking client for the worker routes.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    server: String,
    auth: String,
    retry_for: Duration,
}

/// Whether a failed request is worth sending again: the server was unreachable or restarting.
fn transient(result: &Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> bool {
    match result {
        Ok(response) => matches!(response.status().as_u16(), 502..=504),
        Err(
            ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_),
        ) => true,
        Err(_) => false,
    }
}

impl Client {
    pub fn new(server: &str, token: &str) -> Self {
        // No overall limit (a checkpoint of several GB takes what it takes); a connection must
        // open within 5 s and the server must answer within 5 minutes of the request.
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_recv_response(Some(Duration::from_secs(300)))
            .http_status_as_error(false)
            .build();
        Self {
            agent: config.into(),
            server: server.trim_end_matches('/').to_string(),
            auth: format!("Bearer {token}"),
            retry_for: RETRY_FOR,
        }
    }

    /// For sends made between training steps: no retries and 10 s at most per request, so a
    /// slow or absent server costs the training loop little (what was not sent stays buffered).
    pub fn fast(&self) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .timeout_connect(Some(Duration::from_secs(2)))
            .http_status_as_error(false)
            .build();
        Self {
            agent: config.into(),
            server: self.server.clone(),
            auth: self.auth.clone(),
            retry_for: Duration::ZERO,
        }
    }

    /// The same client, retrying unreachable-server errors for `retry_for` at most.
    pub fn retrying_for(mut self, retry_for: Duration) -> Self {
        self.retry_for = retry_for;
        self
    }

    /// Sends a request, again and again (backing off to 5 s) while the server is unreachable.
    fn send(
        &self,
        path: &str,
        mut request: impl FnMut() -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(250);
        let mut warned = false;
        loop {
            let result = request();
            if !transient(&result) || started.elapsed() + pause > self.retry_for {
                return result.with_context(|| format!("{}{path}", self.server));
            }
            if !warned {
                eprintln!("worker: {}{path} unreachable; retrying", self.server);
                warned = true;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.server, path)
    }

    fn check(
        &self,
        path: &str,
        mut response: ureq::http::Response<ureq::Body>,
    ) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.body_mut().read_to_string().unwrap_or_default();
        let message = serde_json::from_str::<still_api::ErrorBody>(&body)
            .map(|b| b.message)
            .unwrap_or(body);
        bail!("{path}: HTTP {}: {message}", status.as_u16())
    }

    pub fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let response = self.send(path, || {
            self.agent
                .post(self.url(path))
                .header("Authorization", &self.auth)
                .send_json(body)
        })?;
        Ok(self.check(path, response)?.body_mut().read_json()?)
    }

    /// Streams a GET's body into `dest` (through `dest.partial`, renamed once complete): never
    /// held in memory whatever its size. Returns the bytes written.
    pub fn download(&self, path: &str, dest: &Path) -> anyhow::Result<u64> {
        let response = self.get(path)?;
        let mut partial_name = dest.file_name().unwrap_or_default().to_os_string();
        partial_name.push(".partial");
        let partial = dest.with_file_name(partial_name);
        let mut out = std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        let mut reader = response.into_body().into_reader();
        let n =
            std::io::copy(&mut reader, &mut out).with_context(|| format!("downloading {path}"))?;
        out.sync_all()?;
        drop(out);
        std::fs::rename(&partial, dest)?;
        Ok(n)
    }

    /// An authorized GET whose status was a success.
    fn get(&self, path: &str) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let response = self.send(path, || {
            self.agent
                .get(self.url(path))
                .header("Authorization", &self.auth)
                .call()
        })?;
        self.check(path, response)
    }

    pub fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        Ok(self
            .get(path)?
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()?)
    }

    /// Streams a file up with its SHA-256 (the server checks it and stores the file under it).
    /// Returns the file's size.
    pub fn put_file(&self, path: &str, file: &Path) -> anyhow::Result<u64> {
        let sha = sha256_file(file)?;
        let response = self.send(path, || {
            let handle = std::fs::File::open(file)?;
            self.agent
                .put(self.url(path))
                .header("Authorization", &self.auth)
                .header("x-content-sha256", &sha)
                .send(handle)
        })?;
        self.check(path, response)?;
        Ok(std::fs::metadata(file)?.len())
    }
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

/// The worker's lines of one attempt's log, numbered so a resent line is stored once.
#[derive(Default)]
pub struct RunLog {
    lines: Mutex<(i64, Vec<LogLine>)>,
}

impl RunLog {
    pub fn line(&self, level: &str, message: impl Into<String>) {
        let message = message.into();
        eprintln!("worker: {message}");
        let mut guard = self.lines.lock().expect("log lock");
        let seq = guard.0;
        guard.0 += 1;
        guard.1.push(LogLine {
            seq,
            level: level.to_string(),
            message,
        });
    }

    pub fn info(&self, message: impl Into<String>) {
        self.line("info", message)
    }

    pub fn warn(&self, message: impl Into<String>) {
        self.line("warn", message)
    }

    /// Sends the buffered lines; keeps them when the server cannot take them.
    fn flush(&self, client: &Client, job_id: i64) -> anyhow::Result<()> {
        let lines = std::mem::take(&mut self.lines.lock().expect("log lock").1);
        if lines.is_empty() {
            return Ok(());
        }
        let sent =
            client.post::<_, serde_json::Value>(&format!("/api/worker/jobs/{job_id}/logs"), &lines);
        if sent.as_ref().is_err_and(|e| !refused(e)) {
            let mut guard = self.lines.lock().expect("log lock");
            let mut restored = lines;
            restored.append(&mut guard.1);
            guard.1 = restored;
        }
        sent.map(|_| ())
    }
}

/// Downloads a model folder once into `work_dir/models/<id>`.
/// The model folders in `--models-dir` (sub-folders holding a `config.json`).
pub fn local_models(models_dir: Option<&Path>) -> Vec<String> {
    let Some(dir) = models_dir else {
        return Vec::new();
    };
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("config.json").is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// The model's folder: this machine's copy in `--models-dir` when it has one, else a download
/// from the server (kept in the work dir).
fn fetch_model(
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
        && local.join("config.json").is_file()
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
    if dir.join("config.json").is_file() {
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
    use std::io::BufRead;
    std::fs::create_dir_all(work_dir)?;
    let file = work_dir.join(format!("dataset-job-{job_id}.jsonl"));
    client.download(&format!("/api/worker/jobs/{job_id}/dataset"), &file)?;
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

/// Whether the server answered 400/413/422: the content itself was refused.
fn refused(e: &anyhow::Error) -> bool {
    let text = e.to_string();
    ["HTTP 400", "HTTP 413", "HTTP 422"]
        .iter()
        .any(|code| text.contains(code))
}

/// Sends buffered metric points; keeps them when the server cannot be reached.
fn flush(client: &Client, job_id: i64, buffer: &Mutex<Vec<MetricPoint>>) -> anyhow::Result<()> {
    let points: Vec<MetricPoint> = std::mem::take(&mut *buffer.lock().expect("metrics lock"));
    if points.is_empty() {
        return Ok(());
    }
    match client
        .post::<_, serde_json::Value>(&format!("/api/worker/jobs/{job_id}/metrics"), &points)
    {
        Ok(_) => Ok(()),
        // The server refused the batch itself: sending it again would be refused again.
        Err(e) if refused(&e) => Err(e.context(format!("{} metric points dropped", points.len()))),
        Err(e) => {
            // Put them back in front: the server keeps each (step, name) once, so a retry is safe.
            let mut guard = buffer.lock().expect("metrics lock");
            let mut restored = points;
            restored.append(&mut guard);
            *guard = restored;
            Err(e)
        }
    }
}

/// Uploads a checkpoint folder, then makes it the job's resume point.
fn upload_checkpoint(client: &Client, job_id: i64, step: usize, dir: &Path) -> anyhow::Result<()> {
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

/// Runs one claimed job to its end, reporting success or failure to the server.
pub fn run_job(client: &Client, options: &WorkerOptions, job: ClaimedJob) -> anyhow::Result<()> {
    let job_id = job.job_id;
    let log = RunLog::default();
    let stop = Arc::new(AtomicBool::new(false));
    let cancelled = Arc::new(AtomicBool::new(false));
    let lease_lost = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let heartbeat = {
        // Heartbeats come again soon: a failed one is not retried for long.
        let (client, stop, cancelled, lease_lost, done) = (
            client.clone().retrying_for(Duration::from_secs(5)),
            stop.clone(),
            cancelled.clone(),
            lease_lost.clone(),
            done.clone(),
        );
        let every = Duration::from_secs((job.lease_seconds / 4).clamp(1, 10) as u64);
        std::thread::spawn(move || {
            let mut last = Instant::now();
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() < every {
                    continue;
                }
                last = Instant::now();
                match client.post::<_, HeartbeatReply>(
                    &format!("/api/worker/jobs/{job_id}/heartbeat"),
                    &serde_json::json!({}),
                ) {
                    Ok(reply) if reply.cancel => {
                        cancelled.store(true, Ordering::Relaxed);
                        stop.store(true, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) if e.to_string().contains("HTTP 409") => {
                        lease_lost.store(true, Ordering::Relaxed);
                        stop.store(true, Ordering::Relaxed);
                    }
                    Err(_) => {} // the server may be restarting: keep training, retry later
                }
            }
        })
    };
    let result = train_job(client, options, &job, stop.clone(), &log);
    // The heartbeat goes on until the outcome is reported: a report that waits for a
    // restarting server must not let the lease expire under a finished run.
    let stop_heartbeat = || {
        done.store(true, Ordering::Relaxed);
    };
    if lease_lost.load(Ordering::Relaxed) {
        stop_heartbeat();
        let _ = heartbeat.join();
        return Ok(()); // another worker owns the job now; nothing to report
    }
    let path = format!("/api/worker/jobs/{job_id}/");
    if let Err(e) = &result
        && !cancelled.load(Ordering::Relaxed)
    {
        log.line("error", format!("{e:#}"));
    }
    if let Err(e) = log.flush(client, job_id) {
        eprintln!("worker: log lines not sent: {e:#}");
    }
    let reported = match result {
        Ok(()) => client
            .post::<_, serde_json::Value>(&format!("{path}complete"), &serde_json::json!({}))
            .map(|_| ()),
        Err(e) => {
            let cancelled = cancelled.load(Ordering::Relaxed);
            let error = if cancelled {
                "cancelled by the user".to_string()
            } else {
                format!("{e:#}")
            };
            client
                .post::<_, serde_json::Value>(
                    &format!("{path}fail"),
                    &JobFailure { error, cancelled },
                )
                .map(|_| ())
        }
    };
    stop_heartbeat();
    let _ = heartbeat.join();
    reported
}

fn train_job(
    client: &Client,
    options: &WorkerOptions,
    job: &ClaimedJob,
    stop: Arc<AtomicBool>,
    log: &RunLog,
) -> anyhow::Result<()> {
    if job.kind != "train" {
        bail!("this worker does not run '{}' jobs", job.kind);
    }
    let mut config: TrainConfig =
        serde_json::from_value(job.config.clone()).context("the job's training config")?;
    if let Method::Kd { teacher, .. } = &mut config.method {
        let teacher_id = job.teacher_id.context("a kd job without a teacher")?;
        let name = job.teacher_name.clone().unwrap_or_default();
        let on_worker = job.teacher_origin.as_deref() == Some("worker");
        *teacher = fetch_model(client, options, teacher_id, (&name, on_worker), log)?;
    }
    let on_worker = job.model_origin == "worker";
    let model_dir = fetch_model(
        client,
        options,
        job.model_id,
        (&job.model_name, on_worker),
        log,
    )?;
    let rows = fetch_dataset(client, job.job_id, &options.work_dir.join("datasets"))?;
    log.info(format!(
        "dataset version {}: {} rows; device {}",
        job.dataset_version_id,
        rows.len(),
        options.device
    ));
    let device = still_engine::device(&options.device)?;
    let student = still_engine::hf::load(&model_dir, still_engine::candle::DType::F32, &device)?;
    let out = options.work_dir.join("runs").join(job.run_id.to_string());
    // A teacher's top-k table is kept across runs on this worker: once per (teacher, dataset).
    if matches!(config.method, Method::Kd { top_k: Some(_), .. }) {
        config.cache_dir = Some(options.work_dir.join("cache"));
    }
    // An earlier attempt's last checkpoint, fetched from the server: training continues there.
    let resume = match job.resume_step {
        Some(step) => {
            let dir = out.join(format!("resume-{step}"));
            std::fs::create_dir_all(&dir)?;
            for name in CHECKPOINT_FILES {
                match client.download(
                    &format!("/api/worker/jobs/{}/checkpoint/{name}", job.job_id),
                    &dir.join(name),
                ) {
                    Ok(_) => {}
                    Err(e)
                        if *name == "generation_config.json"
                            && e.to_string().contains("HTTP 404") => {}
                    Err(e) => return Err(e.context(format!("downloading checkpoint file {name}"))),
                }
            }
            log.info(format!("resuming from the checkpoint at step {step}"));
            Some(dir)
        }
        None => None,
    };
    let buffer = Mutex::new(Vec::<MetricPoint>::new());
    let mut last_flush = Instant::now();
    // While training, a server that cannot be reached must not stall the steps: sends fail
    // fast and what was not sent stays buffered for the next try.
    let quick = client.fast();
    let mut observer = |event: &Event| {
        if let Event::Started {
            total_steps,
            start_step,
            n_examples,
            n_truncated,
            n_skipped,
            n_params,
        } = event
        {
            log.info(format!(
                "training {n_params} parameters on {n_examples} examples ({n_truncated} truncated, \
                 {n_skipped} skipped at max_seq_len {}): steps {} to {total_steps}",
                config.max_seq_len,
                start_step + 1
            ));
            let counts = still_api::RunExamples {
                n_trained: *n_examples as i64,
                n_truncated: *n_truncated as i64,
                n_skipped: *n_skipped as i64,
            };
            if let Err(e) = quick.post::<_, serde_json::Value>(
                &format!("/api/worker/jobs/{}/examples", job.job_id),
                &counts,
            ) {
                log.warn(format!("example counts not sent: {e:#}"));
            }
        }
        if let Event::TeacherTopK { .. } = event {
            log.info(event.message().unwrap_or_default());
        }
        if let Event::Checkpoint { step, path } = event {
            // Metrics up to the checkpoint first, so a resumed attempt never leaves a gap.
            let _ = flush(&quick, job.job_id, &buffer);
            last_flush = Instant::now();
            match upload_checkpoint(&quick, job.job_id, *step, path) {
                Ok(()) => log.info(format!("checkpoint step {step} uploaded")),
                Err(e) => log.warn(format!(
                    "checkpoint step {step} not uploaded ({e:#}); a retry would resume earlier"
                )),
            }
        }
        if let Event::Finished { steps, .. } = event {
            log.info(format!(
                "finished at step {steps}; uploading the final model"
            ));
        }
        if let Event::Step(m) = event {
            let step = m.step as i64;
            let mut points = vec![
                ("loss", m.loss),
                ("ce", m.ce),
                ("lr", m.lr),
                ("grad_norm", m.grad_norm),
                ("tokens_per_s", m.tokens_per_s),
                ("epoch", m.epoch),
                ("total_steps", m.total_steps as f64),
                ("elapsed_s", m.elapsed_s),
            ];
            if let Some(kd) = m.kd {
                points.push(("kd", kd));
            }
            // A diverged step (NaN or ∞) is said in the log; the store holds numbers only.
            points.retain(|(name, value)| {
                let finite = value.is_finite();
                if !finite {
                    log.warn(format!("step {step}: {name} is {value}; not recorded"));
                }
                finite
            });
            buffer
                .lock()
                .expect("metrics lock")
                .extend(points.into_iter().map(|(name, value)| MetricPoint {
                    step,
                    name: name.to_string(),
                    value,
                }));
            if last_flush.elapsed() > Duration::from_millis(500) || m.step == m.total_steps {
                let _ = flush(&quick, job.job_id, &buffer);
                let _ = log.flush(&quick, job.job_id);
                last_flush = Instant::now();
            }
        }
    };
    let final_dir = train::train(
        student,
        &rows,
        &config,
        &out,
        resume.as_deref(),
        &mut observer,
        Some(stop),
    )?;
    flush(client, job.job_id, &buffer).context("sending the last metrics")?;
    let mut uploaded = 0u64;
    for name in MODEL_FILES {
        let file = final_dir.join(name);
        if file.is_file() {
            uploaded += client.put_file(
                &format!("/api/worker/jobs/{}/final/{name}", job.job_id),
                &file,
            )?;
        }
    }
    log.info(format!(
        "final model uploaded ({:.1} MiB)",
        uploaded as f64 / (1u64 << 20) as f64
    ));
    Ok(())
}

/// The machine's RAM in bytes (`MemTotal`), 0 when unknown (the server then does not check).
fn host_memory() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|kb| kb.parse::<i64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A GPU's own memory, which is what bounds training on it (`nvidia-smi`, for `cuda:N`).
/// `None` for CPU workers or when the GPU cannot be asked; a GPU that cannot be asked reports 0
/// (unchecked) rather than the host's RAM, which would let it claim runs it cannot hold.
fn device_memory(device: &str) -> Option<i64> {
    let index = match device.split_once(':') {
        Some(("cuda", n)) => n,
        None if device == "cuda" => "0",
        _ => return None,
    };
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=memory.total",
            "--format=csv,noheader,nounits",
            "-i",
            index,
        ])
        .output();
    Some(
        out.ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|t| t.trim().parse::<i64>().ok())
            .map_or(0, |mib| mib << 20),
    )
}

/// Whether the process `pid` still runs (Linux `/proc`: present and not a zombie; elsewhere
/// assumed alive).
fn alive(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string))
        })
        .is_some_and(|state| state != "Z" && state != "X")
}

/// Exits the process once `parent` is gone (checked every second on a thread of its own, so a
/// worker in the middle of a job or a retry stops too).
fn watch_parent(parent: u32) {
    std::thread::spawn(move || {
        while alive(parent) {
            std::thread::sleep(Duration::from_secs(1));
        }
        eprintln!("worker: its server process {parent} is gone; exiting");
        std::process::exit(0);
    });
}

/// The worker's main loop.
pub fn run(options: WorkerOptions) -> anyhow::Result<()> {
    if let Some(parent) = options.parent_pid {
        watch_parent(parent);
    }
    std::fs::create_dir_all(&options.work_dir)?;
    let client = Client::new(&options.server, &options.token);
    let memory = device_memory(&options.device).unwrap_or_else(host_memory);
    let mut registered = false;
    let mut jobs = 0usize;
    loop {
        if !registered {
            match client.post::<_, serde_json::Value>(
                "/api/worker/register",
                &RegisterWorker {
                    device: options.device.clone(),
                    memory_bytes: memory,
                    models: local_models(options.models_dir.as_deref()),
                },
            ) {
                Ok(_) => registered = true,
                Err(e) if e.to_string().contains("HTTP 401") => return Err(e),
                Err(e) => {
                    eprintln!("worker: cannot reach {} ({e:#}); retrying", options.server);
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            }
        }
        match client.post::<_, Option<ClaimedJob>>("/api/worker/claim", &serde_json::json!({})) {
            Ok(Some(job)) => {
                eprintln!(
                    "worker: job {} (run {}, attempt {})",
                    job.job_id, job.run_id, job.attempt
                );
                if let Err(e) = run_job(&client, &options, job) {
                    eprintln!("worker: reporting the job failed: {e:#}");
                }
                jobs += 1;
                if options.max_jobs.is_some_and(|m| jobs >= m) {
                    return Ok(());
                }
            }
            Ok(None) => {}
            Err(e) if e.to_string().contains("HTTP 401") => return Err(e),
            Err(e) => {
                eprintln!("worker: claim failed ({e:#}); retrying");
                registered = false;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}
