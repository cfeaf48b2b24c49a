//! Runs, the job queue and workers: a real server, real worker processes, real SQLite.

use std::time::Duration;

use serde_json::json;
use still_api::{
    ArtifactFolder, ClaimedJob, HeartbeatReply, MetricPoint, ModelSummary, RunEstimate,
    RunSnapshot, RunStatus, RunSummary, WorkerSummary,
};
use still_tests::{Api, TestServer, run_finished, spawn_worker};

/// A server with a small synthetic dataset and a tiny model made from it.
async fn server_with_model() -> (TestServer, Api) {
    server_with_model_and(|_| {}).await
}

async fn server_with_model_and(
    adjust: impl FnOnce(&mut still_backend::Config),
) -> (TestServer, Api) {
    still_tests::server_with_tiny_model(adjust).await
}

async fn new_run(api: &Api, name: &str, max_steps: usize, max_attempts: i64) -> RunSummary {
    new_run_with(api, name, max_steps, max_attempts, None).await
}

async fn new_run_with(
    api: &Api,
    name: &str,
    max_steps: usize,
    max_attempts: i64,
    checkpoint_every: Option<usize>,
) -> RunSummary {
    let response = api
        .create_run(json!({"name": name, "method": "sft", "model": "tiny", "dataset": "add", "max_attempts": max_attempts,
                      "params": {"max_steps": max_steps, "epochs": 100000, "lr": 3e-3, "batch_size": 8, "grad_accum": 1,
                                 "max_seq_len": 128, "checkpoint_every": checkpoint_every}}))
        .await;
    assert_eq!(response.status, 201);
    response.ok()
}

/// The run's whole log as "source level message" lines.
async fn log_lines(api: &Api, id: i64) -> Vec<String> {
    api.logs(id)
        .await
        .into_iter()
        .map(|l| format!("{} {} {}", l.source, l.level, l.message))
        .collect()
}

fn has_line(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

/// Steps of a run's loss curve.
async fn loss_steps(api: &Api, id: i64) -> Vec<i64> {
    let loss = api.metrics(id, "name=loss").await;
    loss.iter().map(|p| p.step).collect()
}

/// Reads a run's Server-Sent Events until the stream ends: the snapshot and the points after it.
async fn read_all_events(response: reqwest::Response) -> (RunSnapshot, Vec<MetricPoint>) {
    read_events(response, false).await
}

/// Reads a run's Server-Sent Events until a `run` event says it finished: the first snapshot
/// and every metric point streamed after it.
async fn read_events_until_finished(
    response: reqwest::Response,
) -> (RunSnapshot, Vec<MetricPoint>) {
    read_events(response, true).await
}

async fn read_events(
    response: reqwest::Response,
    until_finished: bool,
) -> (RunSnapshot, Vec<MetricPoint>) {
    use futures_util::StreamExt;
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let (mut snapshot, mut points) = (None, Vec::new());
    while let Some(Ok(chunk)) = stream.next().await {
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let message: String = buffer.drain(..end + 2).collect();
            let mut name = "";
            let mut data = String::new();
            for line in message.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            match name {
                "snapshot" => snapshot = Some(serde_json::from_str::<RunSnapshot>(&data).unwrap()),
                "metrics" => {
                    points.extend(serde_json::from_str::<Vec<MetricPoint>>(&data).unwrap())
                }
                "run" => {
                    let run: RunSummary = serde_json::from_str(&data).unwrap();
                    if until_finished && run_finished(&run) {
                        return (snapshot.expect("the snapshot comes first"), points);
                    }
                }
                _ => {}
            }
        }
    }
    assert!(
        !until_finished,
        "the event stream ended before the run finished"
    );
    (snapshot.expect("the snapshot comes first"), points)
}

/// A queued run whose job a fresh worker ("w") has claimed: the run, the worker's token, the job.
async fn run_claimed(
    server: &TestServer,
    api: &Api,
    name: &str,
) -> (RunSummary, String, ClaimedJob) {
    let run = new_run(api, name, 5, 1).await;
    let (worker, token) = still_backend::jobs::workers::create_worker(server.pool(), "w")
        .await
        .unwrap();
    let job = still_backend::kinds::claim(server.pool(), worker, 30)
        .await
        .unwrap()
        .unwrap();
    (run, token, job)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_hands_a_job_to_one_worker_and_guards_its_lease() {
    let (server, api) = server_with_model().await;
    let models = api.models().await;
    assert_eq!(models[0].origin, "scratch");
    assert!(models[0].n_params > 0);
    let run = new_run(&api, "race", 5, 3).await;
    assert_eq!(
        (
            run.status.as_str(),
            run.dataset_version,
            run.config["lr"].as_f64()
        ),
        ("queued", 1, Some(3e-3))
    );
    assert_eq!(run.config["grad_accum"], 1);
    let pool = server.pool().clone();
    let (_, token_a) = still_backend::jobs::workers::create_worker(&pool, "a")
        .await
        .unwrap();
    let (b_id, token_b) = still_backend::jobs::workers::create_worker(&pool, "b")
        .await
        .unwrap();

    // Two workers race for the one job: exactly one wins.
    let claim = |token: String| {
        let worker = api.worker(&token);
        async move {
            let r = worker.claim().await;
            assert_eq!(r.status, 200);
            r.ok::<Option<ClaimedJob>>()
        }
    };
    let (a, b) = tokio::join!(claim(token_a.clone()), claim(token_b.clone()));
    assert_eq!(a.is_some() as u8 + b.is_some() as u8, 1, "{a:?} {b:?}");
    let (job, owner, other) = match (a, b) {
        (Some(job), None) => (job, token_a.clone(), token_b.clone()),
        (None, Some(job)) => (job, token_b.clone(), token_a.clone()),
        _ => unreachable!(),
    };
    assert_eq!((job.work.run_id(), job.attempt), (Some(run.id), 1));

    // The loser touches nothing; a wrong token gets 401.
    let job_id = job.job_id;
    let hb = |token: String| {
        let worker = api.worker(&token);
        async move { worker.heartbeat(job_id).await }
    };
    assert_eq!(hb(other.clone()).await.status, 409);
    let wrong = hb("stw_not_a_token".into()).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.error().message, "worker token is wrong or revoked");
    let reply: HeartbeatReply = hb(owner.clone()).await.ok();
    assert!(!reply.cancel);

    // Metrics: a retried batch is stored once.
    let points: Vec<MetricPoint> = (1..=3)
        .map(|s| MetricPoint {
            step: s,
            name: "loss".into(),
            value: 1.0 / s as f64,
        })
        .collect();
    for _ in 0..2 {
        let r = api.worker(&owner).metrics(job.job_id, &points).await;
        assert_eq!(r.status, 200);
    }
    let r = api.worker(&other).metrics(job.job_id, &points).await;
    assert_eq!(r.status, 409, "only the lease owner writes metrics");
    let stored = api.metrics(run.id, "").await;
    assert_eq!(stored, points);

    // Cancel reaches the worker through its heartbeat.
    let cancelled: RunSummary = api.cancel(run.id).await.ok();
    assert!(cancelled.cancel_requested);
    let reply: HeartbeatReply = hb(owner.clone()).await.ok();
    assert!(reply.cancel);

    // Revoked: 401 and nothing changes.
    still_backend::jobs::workers::revoke_worker(&pool, b_id)
        .await
        .unwrap();
    let r = api.worker(&token_b).claim().await;
    assert_eq!(r.status, 401);
    let workers = api.workers().await;
    assert_eq!(
        workers.iter().find(|w| w.id == b_id).unwrap().state,
        "revoked"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_leases_are_requeued_then_failed_after_max_attempts() {
    let (server, api) = server_with_model().await;
    let pool = server.pool().clone();
    let run = new_run(&api, "flaky", 5, 2).await;
    let (worker, _) = still_backend::jobs::workers::create_worker(&pool, "w")
        .await
        .unwrap();
    // A zero-second lease expires at once: the worker "died".
    let first = still_backend::kinds::claim(&pool, worker, 0)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        still_backend::jobs::queue::reap(&pool).await.unwrap(),
        vec![still_backend::jobs::queue::Owner::Run(run.id)]
    );
    assert_eq!(api.run(run.id).await.status, RunStatus::Queued);
    let lines = log_lines(&api, run.id).await;
    assert!(
        has_line(&lines, "server info attempt 1 started on worker 'w'")
            && has_line(
                &lines,
                "server warn the worker stopped answering (lease expired); queued again for attempt 2"
            ),
        "{lines:#?}"
    );
    // The old owner lost its lease: it can change nothing.
    let err = still_backend::jobs::queue::heartbeat(&pool, first.job_id, worker, 30)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not hold its lease"), "{err}");
    let second = still_backend::kinds::claim(&pool, worker, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((second.job_id, second.attempt), (first.job_id, 2));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        still_backend::jobs::queue::reap(&pool).await.unwrap(),
        vec![still_backend::jobs::queue::Owner::Run(run.id)]
    );
    assert!(has_line(
        &log_lines(&api, run.id).await,
        "giving up after 2 attempts"
    ));
    let failed = api.run(run.id).await;
    assert_eq!((failed.status.as_str(), failed.attempts), ("failed", 2));
    assert!(failed.error.unwrap().contains("lease expired"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_trains_a_run_and_a_cancel_stops_it() {
    let (server, api) = server_with_model().await;
    let (_, token) = still_backend::jobs::workers::create_worker(server.pool(), "proc")
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let run = new_run_with(&api, "short", 6, 3, Some(3)).await;
    // A live page subscribed before the worker exists sees the whole run go by.
    let events = api.events(run.id).await;
    assert_eq!(events.status(), 200);
    assert!(
        events.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let live = tokio::spawn(read_events_until_finished(events));
    let mut worker = spawn_worker(&server.url, &token, work.path(), &[]);
    let done = api
        .wait_for_run(run.id, Duration::from_secs(60), run_finished)
        .await;
    assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.error);
    assert_eq!(
        loss_steps(&api, run.id).await,
        vec![1, 2, 3, 4, 5, 6],
        "every step exactly once"
    );
    let (snapshot, streamed) = tokio::time::timeout(Duration::from_secs(20), live)
        .await
        .expect("the stream reports the end of the run")
        .unwrap();
    assert_eq!(snapshot.run.status, RunStatus::Queued);
    assert!(snapshot.metrics.is_empty());
    let live_steps: Vec<i64> = streamed
        .iter()
        .filter(|p| p.name == "loss")
        .map(|p| p.step)
        .collect();
    assert_eq!(
        live_steps,
        vec![1, 2, 3, 4, 5, 6],
        "each step streamed once, in order"
    );

    // The log tells the story: server lines and worker lines, one attempt.
    let lines = log_lines(&api, run.id).await;
    for needle in [
        "server info queued: sft of model 'tiny' on dataset 'add' v1",
        "server info attempt 1 started on worker 'proc'",
        "worker info training ",
        "worker info checkpoint step 3 uploaded",
        "server info checkpoint step 3 stored",
        "worker info final model uploaded",
        "server info succeeded; the final model is registered as 'short-final'",
    ] {
        assert!(
            has_line(&lines, needle),
            "{needle:?} missing from {lines:#?}"
        );
    }

    // Artifacts: the final model and both checkpoints, each file named by its content hash.
    let folders: Vec<ArtifactFolder> = api.artifacts(run.id).await;
    assert_eq!(
        folders
            .iter()
            .map(|f| f.folder.as_str())
            .collect::<Vec<_>>(),
        vec!["final", "step-6", "step-3"]
    );
    let final_folder = &folders[0];
    let local_final = work
        .path()
        .join("runs")
        .join(run.id.to_string())
        .join("final");
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
        let file = final_folder.files.iter().find(|f| f.name == name).unwrap();
        assert_eq!(
            file.sha256,
            still_worker::sha256_file(&local_final.join(name)).unwrap(),
            "{name}"
        );
        let blob = server
            .data_dir
            .path()
            .join("artifacts")
            .join(&file.sha256[..2])
            .join(&file.sha256);
        assert_eq!(std::fs::metadata(&blob).unwrap().len() as i64, file.size);
    }
    // One file, then the whole folder as a tar that unpacks into a loadable HF folder.
    let config = api
        .get_bytes(&format!("/api/runs/{}/artifacts/final/config.json", run.id))
        .await;
    assert_eq!(config.status, 200);
    assert!(
        config.headers["content-disposition"]
            .to_str()
            .unwrap()
            .contains("config.json")
    );
    assert_eq!(
        config.bytes,
        std::fs::read(local_final.join("config.json")).unwrap()
    );
    let tar = api
        .get_bytes(&format!("/api/runs/{}/artifacts/final?format=tar", run.id))
        .await;
    assert_eq!(tar.status, 200);
    let tar = tar.bytes;
    let unpacked = tempfile::tempdir().unwrap();
    tar::Archive::new(&tar[..]).unpack(unpacked.path()).unwrap();
    let folder = unpacked.path().join("short-final");
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert_eq!(
            std::fs::read(folder.join(name)).unwrap(),
            std::fs::read(local_final.join(name)).unwrap(),
            "{name} in the tar"
        );
    }
    still_engine::hf::load(
        &folder,
        still_engine::candle::DType::F32,
        &still_engine::candle::Device::Cpu,
    )
    .expect("the downloaded folder loads as a model");
    let missing = api
        .get_bytes(&format!("/api/runs/{}/artifacts/step-4?format=tar", run.id))
        .await;
    assert_eq!(missing.status, 404);
    let model: ModelSummary = api.model("short-final").await;
    assert_eq!((model.origin.as_str(), model.run_id), ("run", Some(run.id)));
    assert!(
        std::path::Path::new(&model.path)
            .join("model.safetensors")
            .is_file()
    );

    // A long run, cancelled once it has started: the worker stops within seconds.
    let long = new_run(&api, "long", 100_000, 3).await;
    api.wait_for_run(long.id, Duration::from_secs(30), |r| r.last_step.is_some())
        .await;
    api.cancel(long.id).await;
    let asked = std::time::Instant::now();
    let status = api
        .wait_for_run(long.id, Duration::from_secs(20), run_finished)
        .await
        .status;
    assert_eq!(status, RunStatus::Cancelled);
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "stopped after {:?}",
        asked.elapsed()
    );
    let lines = log_lines(&api, long.id).await;
    assert!(
        has_line(&lines, "server warn cancel requested")
            && has_line(&lines, "server warn cancelled by the user"),
        "{lines:#?}"
    );
    worker.kill().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_run_resumes_from_its_last_checkpoint_without_gaps() {
    // A short lease so the test does not wait 30 s for the reaper.
    let (server, api) = server_with_model_and(|c| c.lease_seconds = 2).await;
    let (_, token) = still_backend::jobs::workers::create_worker(server.pool(), "doomed")
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let spawn_worker = |dir: &str| spawn_worker(&server.url, &token, &work.path().join(dir), &[]);
    let total = 150;
    let run = new_run_with(&api, "resumable", total, 3, Some(20)).await;
    let mut first = spawn_worker("a");
    let killed_at = api
        .wait_for_run(run.id, Duration::from_secs(120), |r| {
            r.last_step >= Some(45)
        })
        .await
        .last_step
        .unwrap_or(0);
    assert!(
        killed_at >= 45 && killed_at < total as i64,
        "the run must be mid-way: step {killed_at}"
    );
    first.kill().await.unwrap(); // SIGKILL: no goodbye, the lease just stops being renewed

    let mut second = spawn_worker("b");
    let done = api
        .wait_for_run(run.id, Duration::from_secs(120), run_finished)
        .await;
    assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.error);
    assert_eq!(done.attempts, 2);
    let loss = api.metrics(run.id, "name=loss").await;
    let steps: Vec<i64> = loss.iter().map(|p| p.step).collect();
    assert_eq!(
        steps,
        (1..=total as i64).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    // The second worker started from an uploaded checkpoint, not from step 0.
    let resumed: Vec<String> =
        std::fs::read_dir(work.path().join("b/runs").join(run.id.to_string()))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.starts_with("resume-"))
            .collect();
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    let lines = log_lines(&api, run.id).await;
    assert!(
        has_line(&lines, "queued again for attempt 2")
            && has_line(&lines, "attempt 2 started on worker 'doomed'")
            && has_line(&lines, "worker info resuming from the checkpoint at step"),
        "{lines:#?}"
    );
    let resume_step: i64 = resumed[0].trim_start_matches("resume-").parse().unwrap();
    assert!(
        resume_step >= 20 && resume_step <= killed_at,
        "resumed at {resume_step}, killed at {killed_at}"
    );
    // Training continued there: the second worker wrote no checkpoint at or before it.
    let written: Vec<i64> = std::fs::read_dir(
        work.path()
            .join("b/runs")
            .join(run.id.to_string())
            .join("checkpoints"),
    )
    .unwrap()
    .filter_map(|e| {
        e.ok()?
            .file_name()
            .to_string_lossy()
            .strip_prefix("step-")?
            .parse()
            .ok()
    })
    .collect();
    assert!(
        !written.is_empty() && written.iter().all(|&s| s > resume_step),
        "{written:?} after resuming at {resume_step}"
    );
    second.kill().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_after_a_claim_before_a_checkpoint_commit_and_before_completion_are_recovered() {
    use still_backend::failpoints::FailPoint;
    let (server, api) = server_with_model_and(|c| c.lease_seconds = 2).await;
    // Each point fails once, deterministically: the first claim's answer is lost (attempt 1
    // never starts), the step-20 checkpoint is uploaded but never committed, and attempt 2's
    // completion is never recorded (attempt 3 resumes from its last committed checkpoint, the
    // one the trainer writes at its final step, and completes).
    server.arm(FailPoint::AfterClaim);
    server.arm(FailPoint::BetweenUploadAndCommit);
    server.arm(FailPoint::BeforeCompletion);
    let (_, token) = still_backend::jobs::workers::create_worker(server.pool(), "steady")
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let total = 50;
    let run = new_run_with(&api, "crashes", total, 5, Some(20)).await;
    let mut worker = spawn_worker(&server.url, &token, work.path(), &[]);
    let done = api
        .wait_for_run(run.id, Duration::from_secs(180), run_finished)
        .await;
    assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.error);
    assert_eq!(
        done.attempts, 3,
        "a lost claim and a lost completion: two retries"
    );
    assert_eq!(
        loss_steps(&api, run.id).await,
        (1..=total as i64).collect::<Vec<_>>(),
        "every step once"
    );
    // The uncommitted checkpoint is never offered; the committed one and the final model are.
    let folders: Vec<ArtifactFolder> = api.artifacts(run.id).await;
    let names: Vec<&str> = folders.iter().map(|f| f.folder.as_str()).collect();
    assert!(
        names.contains(&"final") && names.contains(&"step-40"),
        "{names:?}"
    );
    assert!(!names.contains(&"step-20"), "{names:?}");
    let lines = log_lines(&api, run.id).await;
    for needle in [
        "queued again for attempt 2",
        "worker warn checkpoint step 20 not uploaded",
        "checkpoint step 40 stored",
        "queued again for attempt 3",
        "worker info resuming from the checkpoint at step 50",
        "succeeded; the final model is registered as 'crashes-final'",
    ] {
        assert!(has_line(&lines, needle), "{needle}: {lines:#?}");
    }
    // One final model, registered once although two attempts uploaded one.
    let models: Vec<ModelSummary> = api.models().await;
    let finals: Vec<&ModelSummary> = models.iter().filter(|m| m.run_id == Some(run.id)).collect();
    assert_eq!(finals.len(), 1, "{finals:?}");
    assert_eq!(finals[0].name, "crashes-final");
    worker.kill().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_run_loses_nothing_and_the_worker_carries_on() {
    let (mut server, api) = server_with_model_and(|c| c.lease_seconds = 20).await;
    let (_, token) = still_backend::jobs::workers::create_worker(server.pool(), "steady")
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let total = 150;
    let run = new_run_with(&api, "through-restart", total, 3, Some(25)).await;
    let mut worker = spawn_worker(&server.url, &token, work.path(), &[]);
    let before = api
        .wait_for_run(run.id, Duration::from_secs(120), |r| {
            r.last_step >= Some(30)
        })
        .await;
    assert!(
        before.last_step < Some(total as i64 - 20),
        "mid-way: {:?}",
        before.last_step
    );
    // A page opened mid-run gets the history, then live points; the server's stop ends it.
    let events = api.events(run.id).await;
    let live = tokio::spawn(read_all_events(events));
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Down for 3 s while the worker keeps training and buffering.
    server.restart(Duration::from_secs(3)).await;
    let (snapshot, streamed) = tokio::time::timeout(Duration::from_secs(10), live)
        .await
        .expect("the stream ended with the server")
        .unwrap();
    let history: Vec<i64> = snapshot
        .metrics
        .iter()
        .filter(|p| p.name == "loss")
        .map(|p| p.step)
        .collect();
    assert_eq!(snapshot.run.status, RunStatus::Running);
    assert!(
        history.first() == Some(&1) && history.last() >= before.last_step.as_ref(),
        "history 1..={:?}: {history:?}",
        before.last_step
    );
    let after_snapshot: Vec<i64> = streamed
        .iter()
        .filter(|p| p.name == "loss")
        .map(|p| p.step)
        .collect();
    assert!(
        !after_snapshot.is_empty() && after_snapshot.iter().all(|s| s > history.last().unwrap()),
        "live points continue after the history: {after_snapshot:?}"
    );
    let done = api
        .wait_for_run(run.id, Duration::from_secs(120), run_finished)
        .await;
    assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.error);
    assert_eq!(
        done.attempts, 1,
        "the worker kept its lease through the restart"
    );
    assert_eq!(
        loss_steps(&api, run.id).await,
        (1..=total as i64).collect::<Vec<_>>(),
        "every step recorded once, none lost while the server was down"
    );
    let folders: Vec<ArtifactFolder> = api.artifacts(run.id).await;
    assert_eq!(folders[0].folder, "final");
    assert!(
        folders
            .iter()
            .any(|f| f.step.is_some_and(|s| s <= before.last_step.unwrap())),
        "checkpoints from before the restart survive: {folders:?}"
    );
    let lines = log_lines(&api, run.id).await;
    assert!(
        has_line(&lines, "worker info training ")
            && has_line(&lines, "worker info final model uploaded")
            && has_line(&lines, "succeeded;"),
        "{lines:#?}"
    );
    worker.kill().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_claim_only_runs_their_device_and_memory_can_hold() {
    let (server, api) = server_with_model().await;
    let pool = server.pool().clone();
    let register = |token: String, device: &'static str, memory: i64| {
        let worker = api.worker(&token);
        async move {
            worker
                .register(json!({"device": device, "memory_bytes": memory}))
                .await
        }
    };
    let (cpu, cpu_token) = still_backend::jobs::workers::create_worker(&pool, "cpu")
        .await
        .unwrap();
    let (gpu, gpu_token) = still_backend::jobs::workers::create_worker(&pool, "gpu")
        .await
        .unwrap();
    let (small, small_token) = still_backend::jobs::workers::create_worker(&pool, "small")
        .await
        .unwrap();
    assert_eq!(register(cpu_token, "cpu", 8 << 30).await.status, 200);
    assert_eq!(register(gpu_token, "cuda:0", 80 << 30).await.status, 200);
    assert_eq!(
        register(small_token.clone(), "cpu", 1 << 20).await.status,
        200
    );
    let bad = register(small_token, "tpu", 1).await;
    assert_eq!(bad.status, 400);
    assert!(bad.text.contains("'tpu' is not cpu, cuda or cuda:N"));

    let body = |device: &str| {
        json!({"name": format!("on-{device}"), "method": "sft", "model": "tiny", "dataset": "add",
               "params": {"max_steps": 5, "batch_size": 64, "max_seq_len": 256, "device": device}})
    };
    // The estimate names the parts and the workers that can take the run.
    let estimate: RunEstimate = api.estimate(body("cuda")).await.ok();
    let e = &estimate.estimate;
    assert!(e.n_params > 0 && e.activations_bytes > 0);
    assert_eq!(e.optimizer_bytes, 2 * e.params_bytes);
    assert!(
        e.total_bytes > 1 << 20,
        "more than the small worker has: {e:?}"
    );
    let fits: Vec<(String, bool)> = estimate
        .workers
        .iter()
        .map(|w| (w.name.clone(), w.fits))
        .collect();
    assert_eq!(
        fits,
        vec![
            ("cpu".into(), false),
            ("gpu".into(), true),
            ("small".into(), false)
        ]
    );
    assert!(estimate.feasible, "{}", estimate.message);

    let on_cuda: RunSummary = api.create_run(body("cuda")).await.ok();
    assert_eq!(on_cuda.device.as_deref(), Some("cuda"));
    assert_eq!(on_cuda.min_memory_bytes, e.total_bytes);
    // The CPU workers pass it by; the GPU worker takes it.
    assert!(
        still_backend::kinds::claim(&pool, cpu, 30)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        still_backend::kinds::claim(&pool, small, 30)
            .await
            .unwrap()
            .is_none()
    );
    let job = still_backend::kinds::claim(&pool, gpu, 30)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.work.run_id(), Some(on_cuda.id));
    // A run for any device is still too big for the small CPU worker, but not for the other.
    let any = api.create_run(body("any")).await;
    assert_eq!(any.status, 201);
    assert!(
        still_backend::kinds::claim(&pool, small, 30)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        still_backend::kinds::claim(&pool, cpu, 30)
            .await
            .unwrap()
            .is_some()
    );
    let bad = api.estimate(body("tpu")).await;
    assert_eq!(bad.status, 400);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_curves_are_downsampled_from_rollups_with_spikes_and_ends_kept() {
    let (server, api) = server_with_model().await;
    let pool = server.pool().clone();
    let (run, token, job) = run_claimed(&server, &api, "long-curve").await;
    let value = |step: i64| {
        if step == 3333 {
            50.0
        } else {
            1.0 / step as f64
        }
    };
    // 5,000 steps in batches of 500, the second batch sent twice (a retry): stored once.
    for start in (1..=5000).step_by(500).chain([501]) {
        let points: Vec<MetricPoint> = (start..start + 500)
            .map(|step| MetricPoint {
                step,
                name: "loss".into(),
                value: value(step),
            })
            .collect();
        let r = api.worker(&token).metrics(job.job_id, &points).await;
        assert_eq!(r.status, 200);
    }
    let all = api.metrics(run.id, "name=loss").await;
    assert_eq!(all.len(), 5000);
    let small = api.metrics(run.id, "name=loss&max_points=100").await;
    assert!(
        small.len() <= 102 && small.len() >= 50,
        "{} points",
        small.len()
    );
    assert!(
        small.windows(2).all(|w| w[0].step < w[1].step),
        "steps increase"
    );
    let fake: Vec<&MetricPoint> = small.iter().filter(|p| p.value != value(p.step)).collect();
    assert!(fake.is_empty(), "real points only: {fake:?}");
    assert!(small.iter().any(|p| p.step == 3333), "the spike survives");
    assert_eq!(small.last().unwrap().step, 5000, "the last point is there");
    assert_eq!(small.first().unwrap().step, 1, "the first point is there");
    // The rollups counted each stored point once, retry included.
    let counted: i64 =
        sqlx::query_scalar("SELECT sum(n) FROM run_metric_buckets WHERE run_id = ? AND width = 64")
            .bind(run.id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(counted, 5000);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_on_a_worker_s_disk_trains_only_where_it_is() {
    let (server, api) = server_with_model().await;
    let pool = server.pool().clone();
    let tiny: ModelSummary = api.model("tiny").await;
    // The worker's own copy, under --models-dir; the server registers it by name only.
    let models = tempfile::tempdir().unwrap();
    let local = models.path().join("big");
    std::fs::create_dir(&local).unwrap();
    for entry in std::fs::read_dir(&tiny.path).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), local.join(entry.file_name())).unwrap();
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(local.join("config.json")).unwrap()).unwrap();
    let r = api
        .create_model(json!({"name": "big", "location": "workers", "config": config}))
        .await;
    assert_eq!(r.status, 201);
    let big: ModelSummary = r.ok();
    assert_eq!(
        (big.origin.as_str(), big.n_params),
        ("worker", tiny.n_params)
    );

    let run = api
        .create_run(json!({"name": "on-disk", "method": "sft", "model": "big", "dataset": "add",
                      "params": {"max_steps": 4, "lr": 3e-3, "batch_size": 8, "grad_accum": 1, "max_seq_len": 128}}))
        .await;
    assert_eq!(run.status, 201);
    let run: RunSummary = run.ok();
    assert!(
        run.min_memory_bytes > 0,
        "estimated from the registered config"
    );

    // A worker without the folder never claims it, and cannot download it.
    let (without, token) = still_backend::jobs::workers::create_worker(&pool, "without")
        .await
        .unwrap();
    let r = api
        .worker(&token)
        .register(json!({"device": "cpu", "memory_bytes": 0, "models": []}))
        .await;
    assert_eq!(r.status, 200);
    assert!(
        still_backend::kinds::claim(&pool, without, 30)
            .await
            .unwrap()
            .is_none()
    );
    let r = api.worker(&token).model_files(big.id).await;
    assert_eq!(r.status, 404);
    assert!(r.text.contains("--models-dir DIR where DIR/big"));

    // A worker started with --models-dir has it, claims the run and trains from its own copy.
    let (_, token) = still_backend::jobs::workers::create_worker(&pool, "with")
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut worker = spawn_worker(
        &server.url,
        &token,
        work.path(),
        &["--models-dir".as_ref(), models.path().as_os_str()],
    );
    let done = api
        .wait_for_run(run.id, Duration::from_secs(60), run_finished)
        .await;
    assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.error);
    let lines = log_lines(&api, run.id).await;
    assert!(
        has_line(&lines, "attempt 1 started on worker 'with'")
            && has_line(&lines, "model 'big': using this worker's folder"),
        "{lines:#?}"
    );
    assert!(
        !work.path().join("models").exists(),
        "nothing was downloaded"
    );
    let workers: Vec<WorkerSummary> = api.workers().await;
    assert_eq!(
        workers.iter().find(|w| w.name == "with").unwrap().models,
        vec!["big".to_string()]
    );
    worker.kill().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_checked_against_their_hash_and_log_lines_are_stored_once() {
    let (server, api) = server_with_model().await;
    let pool = server.pool().clone();
    let (run, token, job) = run_claimed(&server, &api, "checked").await;
    let (worker, job_id) = (api.worker(&token), job.job_id);
    let put = |file: &'static str, body: &'static [u8], sha: String| {
        let worker = worker.clone();
        async move { worker.put_final(job_id, file, body, &sha).await }
    };
    let wrong = put("config.json", b"{}", "0".repeat(64)).await;
    assert_eq!(wrong.status, 422);
    assert!(wrong.text.contains("differs from the announced"));
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM artifacts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 0, "nothing kept");
    let tmp = server.data_dir.path().join("tmp");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "no partial file left"
    );
    // The right hash is accepted and the file is stored under it.
    let sha = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a".to_string(); // sha256("{}")
    assert_eq!(put("config.json", b"{}", sha.clone()).await.status, 200);
    assert!(
        server
            .data_dir
            .path()
            .join("artifacts")
            .join(&sha[..2])
            .join(&sha)
            .is_file()
    );

    // Log lines: a resent batch is stored once; a bad level is refused.
    let lines = json!([{"seq": 0, "level": "info", "message": "one"}, {"seq": 1, "level": "warn", "message": "two"}]);
    for _ in 0..2 {
        let r = worker.logs(job.job_id, &lines).await;
        assert_eq!(r.status, 200);
    }
    let worker_lines: Vec<String> = log_lines(&api, run.id)
        .await
        .into_iter()
        .filter(|l| l.starts_with("worker "))
        .collect();
    assert_eq!(worker_lines, vec!["worker info one", "worker warn two"]);
    let bad = worker
        .logs(
            job.job_id,
            &json!([{"seq": 2, "level": "loud", "message": "x"}]),
        )
        .await;
    assert_eq!(bad.status, 400);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teacher_top_k_table_is_computed_once_per_dataset_on_a_worker() {
    let (server, api) = server_with_model().await;
    let teacher = api
        .create_model(json!({"name": "teacher", "preset": "tiny", "tokenizer_dataset": "add", "vocab_size": 300}))
        .await;
    assert_eq!(teacher.status, 201, "{}", teacher.text);
    let body = |name: &str, top_k: serde_json::Value| {
        json!({"name": name, "method": "kd", "model": "tiny", "teacher": "teacher", "dataset": "add",
               "params": {"max_steps": 2, "epochs": 100, "lr": 3e-3, "batch_size": 8, "grad_accum": 1,
                          "max_seq_len": 128, "alpha": 0.5, "temperature": 2.0, "teacher_top_k": top_k}})
    };
    // Out-of-range k is refused with the field named; nothing is queued.
    let bad = api.create_run(body("bad", json!(0))).await;
    assert_eq!(bad.status, 400);
    let message = bad.error().message;
    assert!(message.contains("params.teacher_top_k"), "{message}");
    // The estimate counts the table instead of the teacher's forward.
    let estimate = |top_k: serde_json::Value| {
        let (api, body) = (api.clone(), body("e", top_k));
        async move { api.estimate(body).await.ok::<RunEstimate>() }
    };
    let (full, sparse) = (estimate(json!(null)).await, estimate(json!(8)).await);
    assert!(sparse.estimate.teacher_bytes > 0);
    assert_ne!(sparse.estimate.teacher_bytes, full.estimate.teacher_bytes);

    let (_, token) = still_backend::jobs::workers::create_worker(server.pool(), "kd")
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut worker = spawn_worker(&server.url, &token, work.path(), &[]);
    let mut ids = Vec::new();
    for name in ["first", "second"] {
        let response = api.create_run(body(name, json!(8))).await;
        assert_eq!(response.status, 201, "{}", response.text);
        let run: RunSummary = response.ok();
        let done = api
            .wait_for_run(run.id, Duration::from_secs(90), run_finished)
            .await;
        assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.error);
        assert_eq!(loss_steps(&api, run.id).await, vec![1, 2]);
        ids.push(run.id);
    }
    let first = log_lines(&api, ids[0]).await;
    assert!(
        has_line(&first, "worker info teacher top-8: ")
            && first.iter().any(|l| l.contains("computed in")),
        "{first:#?}"
    );
    let second = log_lines(&api, ids[1]).await;
    assert!(
        second
            .iter()
            .any(|l| l.contains("teacher top-8: ") && l.contains("found in")),
        "{second:#?}"
    );
    let cached: Vec<_> = std::fs::read_dir(work.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(cached[0].starts_with("teacher-top8-"), "{cached:?}");
    worker.kill().await.unwrap();
}
