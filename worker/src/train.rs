//! The `train` job: SFT or KD on the engine.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use still_api::{ClaimedJob, MODEL_FILES, MetricPoint, TrainWork};
use still_engine::train::{self, Event, Method, TrainConfig};

use crate::WorkerOptions;
use crate::client::Client;
use crate::report::{RunLog, flush_metrics};
use crate::transfer::{fetch_checkpoint, fetch_dataset, fetch_model, upload_checkpoint};

/// Trains the job's run: fetches the models and the pinned dataset (and the checkpoint an
/// earlier attempt left), trains while sending metrics, log lines and checkpoints, then uploads
/// the final model. Completion is reported by the caller.
pub fn run(
    client: &Client,
    options: &WorkerOptions,
    job: &ClaimedJob,
    work: &TrainWork,
    stop: Arc<AtomicBool>,
    log: &RunLog,
) -> anyhow::Result<()> {
    let mut config: TrainConfig =
        serde_json::from_value(work.config.clone()).context("the job's training config")?;
    if let Method::Kd { teacher, .. } = &mut config.method {
        let teacher_id = work.teacher_id.context("a kd job without a teacher")?;
        let name = work.teacher_name.clone().unwrap_or_default();
        let on_worker = work.teacher_origin.as_deref() == Some("worker");
        *teacher = fetch_model(client, options, teacher_id, (&name, on_worker), log)?;
    }
    let on_worker = work.model_origin == "worker";
    let model_dir = fetch_model(
        client,
        options,
        work.model_id,
        (&work.model_name, on_worker),
        log,
    )?;
    let rows = fetch_dataset(client, job.job_id, &options.work_dir.join("datasets"))?;
    log.info(format!(
        "dataset version {}: {} rows; device {}",
        work.dataset_version_id,
        rows.len(),
        options.device
    ));
    let device = still_engine::device(&options.device)?;
    let student = still_engine::hf::load(&model_dir, still_engine::candle::DType::F32, &device)?;
    let out = options.work_dir.join("runs").join(work.run_id.to_string());
    // A teacher's top-k table is kept across runs on this worker: once per (teacher, dataset).
    if matches!(config.method, Method::Kd { top_k: Some(_), .. }) {
        config.cache_dir = Some(options.work_dir.join("cache"));
    }
    // An earlier attempt's last checkpoint, fetched from the server: training continues there.
    let resume = match job.resume_step {
        Some(step) => {
            let dir = out.join(format!("resume-{step}"));
            fetch_checkpoint(client, job.job_id, &dir)?;
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
            let _ = flush_metrics(&quick, job.job_id, &buffer);
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
                let _ = flush_metrics(&quick, job.job_id, &buffer);
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
    flush_metrics(client, job.job_id, &buffer).context("sending the last metrics")?;
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
