//! The `eval` job: the model under every budget on the eval's pinned rows, each batch's graded
//! records uploaded in one request when the batch is graded (so a restart redoes only the batch
//! in flight), pairs an earlier attempt graded skipped.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use still_api::{ClaimedJob, EvalRecordUpload, EvalWork};
use still_engine::EngineError;
use still_engine::data::ChatTemplate;
use still_engine::eval::{self, EvalSettings};

use crate::WorkerOptions;
use crate::client::Client;
use crate::report::RunLog;
use crate::transfer::{fetch_model, fetch_rows};

pub fn run(
    client: &Client,
    options: &WorkerOptions,
    job: &ClaimedJob,
    work: &EvalWork,
    stop: Arc<AtomicBool>,
    log: &RunLog,
) -> anyhow::Result<()> {
    let settings: EvalSettings =
        serde_json::from_value(work.settings.clone()).context("the eval's settings")?;
    let model_dir = fetch_model(
        client,
        options,
        work.model_id,
        (&work.model_name, work.model_origin == "worker"),
        log,
    )?;
    let mut rows = fetch_rows(
        client,
        job.job_id,
        "eval/dataset",
        &options.work_dir.join("datasets"),
    )?;
    let n = usize::try_from(work.n_examples).context("n_examples")?;
    if rows.len() < n {
        anyhow::bail!(
            "dataset version {} has {} rows; the eval needs {n}",
            work.dataset_version_id,
            rows.len()
        );
    }
    rows.truncate(n);
    let done: HashSet<(usize, usize)> = work
        .done
        .iter()
        .map(|&(b, i)| (b as usize, i as usize))
        .collect();
    let total = n * settings.budgets.len();
    log.info(format!(
        "evaluating {n} rows under {} budgets on {}: {} of {total} pairs already graded",
        settings.budgets.len(),
        options.device,
        done.len()
    ));
    let device = still_engine::device(&options.device)?;
    let folder = still_engine::hf::load(&model_dir, still_engine::candle::DType::F32, &device)?;
    let path = format!("/api/worker/jobs/{}/eval/records", job.job_id);
    // A batch's records go up in one request when the batch is graded (`evaluate` hands them
    // over one by one, a batch at a time): a restart loses at most the batch in flight.
    let mut pending: Vec<EvalRecordUpload> = Vec::new();
    let mut sent = 0usize;
    let upload = |pending: &mut Vec<EvalRecordUpload>| -> Result<usize, EngineError> {
        if pending.is_empty() {
            return Ok(0);
        }
        client
            .post::<_, serde_json::Value>(&path, &*pending)
            .map_err(|e| EngineError::Data(format!("uploading graded examples: {e:#}")))?;
        let n = pending.len();
        pending.clear();
        Ok(n)
    };
    let batch = settings.batch_size.max(1);
    eval::evaluate(
        &folder,
        &rows,
        &ChatTemplate::default(),
        &settings,
        |index, budget| done.contains(&(budget, index)),
        |record| {
            if stop.load(Ordering::Relaxed) {
                return Err(EngineError::Cancelled);
            }
            pending.push(EvalRecordUpload {
                budget_index: record.budget as i64,
                example_index: record.index as i64,
                correct: record.correct,
                thinking_tokens: record.thought.thinking_tokens as i64,
                record: serde_json::to_value(record)
                    .map_err(|e| EngineError::Data(e.to_string()))?,
            });
            if pending.len() >= batch {
                sent += upload(&mut pending)?;
            }
            Ok(())
        },
    )?;
    sent += upload(&mut pending)?;
    log.info(format!("graded and uploaded {sent} pairs"));
    Ok(())
}
