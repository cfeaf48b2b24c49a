//! The worker: registers with a server, long-polls for jobs, runs each with the module of its
//! kind (`train`, `eval`: the engine; `generate`: the engine or a remote teacher), heartbeats its lease (`lease`; it stops when the job is cancelled
//! or the lease is lost), reports metrics and log lines (`report`), moves files (`transfer`)
//! and reports the outcome. `client` is the HTTP client with a typed error; `host` the
//! machine's facts.
//!
//! **Invariant:** this crate talks to the server only over HTTP and never depends on axum or
//! sqlx, so a GPU machine runs it with the engine alone.

pub mod client;
pub mod eval;
pub mod generate;
pub mod host;
pub mod lease;
pub mod report;
pub mod serve;
pub mod train;
pub mod transfer;

use std::path::PathBuf;
use std::time::Duration;

use still_api::{ClaimedJob, JobFailure, JobWork, RegisterWorker};

pub use client::{Client, HttpError, RETRY_FOR, status_of};
use host::{device_memory, host_memory, watch_parent};
use lease::Lease;
use report::RunLog;
pub use transfer::{
    fetch_dataset, is_plain_file_name, local_models, model_files_in, sha256_file, shard_names,
};

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

/// Runs one claimed job to its end under its lease, reporting success or failure to the server.
pub fn run_job(client: &Client, options: &WorkerOptions, job: ClaimedJob) -> anyhow::Result<()> {
    let job_id = job.job_id;
    let log = RunLog::default();
    let lease = Lease::hold(client, job_id, job.lease_seconds);
    // The one place a job kind meets its module.
    let result = match &job.work {
        JobWork::Train(work) => train::run(client, options, &job, work, lease.stop_flag(), &log),
        JobWork::Eval(work) => eval::run(client, options, &job, work, lease.stop_flag(), &log),
        JobWork::Generate(work) => {
            generate::run(client, options, &job, work, lease.stop_flag(), &log)
        }
    };
    if lease.lost() {
        lease.release();
        return Ok(()); // another worker owns the job now; nothing to report
    }
    let path = format!("/api/worker/jobs/{job_id}/");
    if let Err(e) = &result
        && !lease.cancelled()
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
            let cancelled = lease.cancelled();
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
    // Heartbeats went on until the outcome was reported.
    lease.release();
    reported
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
    let mut serving = false;
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
                Ok(_) => {
                    registered = true;
                    // Once the server knows this worker's models, take their chat requests.
                    if !serving {
                        serving = true;
                        if serve::spawn(&client, &options) {
                            eprintln!("worker: serving the models in --models-dir");
                        }
                    }
                }
                Err(e) if status_of(&e) == Some(401) => return Err(e),
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
                    "worker: {} job {} ({}, attempt {})",
                    job.work.kind(),
                    job.job_id,
                    job.work.subject(),
                    job.attempt
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
            Err(e) if status_of(&e) == Some(401) => return Err(e),
            Err(e) => {
                eprintln!("worker: claim failed ({e:#}); retrying");
                registered = false;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}
