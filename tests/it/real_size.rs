//! The core loop at real size: the full GSM8K training split and the long LIMO traces, imported
//! through the API and trained on by a real worker process.

use std::time::Duration;

use serde_json::json;
use still_api::{ImportReport, MetricPoint, RunStatus, RunSummary};
use still_tests::{Api, TestServer, count_lines, run_finished, test_data};

/// Imports `file` as `name` and makes a tiny model whose tokenizer is trained on it.
async fn dataset_and_model(api: &Api, file: &str, name: &str, vocab: usize) -> ImportReport {
    let report: ImportReport = api.import(&test_data(file), &[("name", name)]).await.ok();
    assert_eq!(report.n_rejected, 0, "{:?}", report.rejected);
    let model = api
        .post(
            "/api/models",
            json!({"name": "tiny", "preset": "tiny", "tokenizer_dataset": name, "vocab_size": vocab}),
        )
        .await;
    assert_eq!(model.status, 201, "{}", model.body);
    report
}

async fn start_run(api: &Api, name: &str, dataset: &str, params: serde_json::Value) -> RunSummary {
    api.post(
        "/api/runs",
        json!({"name": name, "method": "sft", "model": "tiny", "dataset": dataset, "max_attempts": 1,
               "params": params}),
    )
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_gsm8k_training_split_trains_on_a_worker() {
    // 7,473 rows: the worker's dataset download streams (it hung past 4,000 rows when the
    // server buffered the export into a 4-slot channel before sending).
    let server = TestServer::start().await;
    let api = Api::new(&server);
    let report = dataset_and_model(&api, "gsm8k/train.jsonl", "gsm8k-train", 512).await;
    assert_eq!(report.n_imported as usize, 7473);
    assert_eq!(
        report.n_imported as usize,
        count_lines(&test_data("gsm8k/train.jsonl"))
    );
    let run = start_run(
        &api,
        "gsm8k-full",
        "gsm8k-train",
        json!({"max_steps": 3, "lr": 1e-3, "batch_size": 4, "grad_accum": 1, "max_seq_len": 384}),
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let mut worker = api.start_worker(&server, work.path()).await;
    let done = api
        .wait_for_run(run.id, Duration::from_secs(600), run_finished)
        .await;
    assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.error);
    let examples = done.examples.expect("the worker reported its examples");
    assert_eq!(
        examples.n_trained + examples.n_skipped,
        7473,
        "every row of the pinned version reached the worker: {examples:?}"
    );
    let loss: Vec<MetricPoint> = api
        .get(&format!("/api/runs/{}/metrics?name=loss", run.id))
        .await
        .ok();
    assert_eq!(loss.iter().map(|p| p.step).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(loss.iter().all(|p| p.value.is_finite() && p.value > 0.0));
    worker.kill().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_limo_traces_are_truncated_or_skipped_by_choice_and_counted() {
    // Thinking up to ~15k Qwen tokens: a max_seq_len cuts some rows; the run chooses whether
    // they are truncated or left out, and the run reports how many.
    let server = TestServer::start().await;
    let api = Api::new(&server);
    let file = "traces/limo_deepseek-r1-distill-qwen-32b.jsonl";
    let report = dataset_and_model(&api, file, "limo", 512).await;
    assert_eq!(report.n_imported, 291);
    let params = |long: &str| {
        json!({"max_steps": 1, "lr": 1e-3, "batch_size": 1, "grad_accum": 1, "max_seq_len": 4096,
               "long_examples": long})
    };
    let cut = start_run(&api, "limo-truncate", "limo", params("truncate")).await;
    let drop = start_run(&api, "limo-skip", "limo", params("skip")).await;
    let bad = api
        .post(
            "/api/runs",
            json!({"name": "x", "method": "sft", "model": "tiny", "dataset": "limo",
                   "params": {"long_examples": "shorten"}}),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.message().contains("params.long_examples: 'shorten'"));
    // Past the model's positions: refused at once, not on the worker.
    let past = api
        .post(
            "/api/runs",
            json!({"name": "y", "method": "sft", "model": "tiny", "dataset": "limo",
                   "params": {"max_seq_len": 6144}}),
        )
        .await;
    assert_eq!(past.status, 400);
    assert!(
        past.message().contains("max_position_embeddings 4096"),
        "{}",
        past.message()
    );
    let work = tempfile::tempdir().unwrap();
    let mut worker = api.start_worker(&server, work.path()).await;
    let mut counts = Vec::new();
    for run in [&cut, &drop] {
        let done = api
            .wait_for_run(run.id, Duration::from_secs(600), run_finished)
            .await;
        assert_eq!(
            done.status,
            RunStatus::Succeeded,
            "{}: {:?}",
            done.name,
            done.error
        );
        counts.push(done.examples.expect("counts reported"));
    }
    let (cut, drop) = (&counts[0], &counts[1]);
    let long = cut.n_truncated;
    assert!(
        long > 0 && long < 291,
        "some rows but not all are long: {cut:?}"
    );
    assert_eq!((cut.n_trained, cut.n_skipped), (291, 0));
    assert_eq!(
        (drop.n_trained, drop.n_truncated, drop.n_skipped),
        (291 - long, 0, long)
    );
    worker.kill().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_gsm8k_test_split_is_evaluated_on_a_worker() {
    // 1,319 questions graded once each by a real worker (GSM8K's `####` answers as references),
    // the results read back through the examples pages and the summary.
    let server = TestServer::start().await;
    let api = Api::new(&server);
    let report = dataset_and_model(&api, "gsm8k/test.jsonl", "gsm8k-test", 512).await;
    assert_eq!(report.n_imported, 1319);
    let eval: still_api::EvalSummary = api
        .post(
            "/api/evals",
            json!({"model": "tiny", "dataset": "gsm8k-test", "preset": "gsm8k",
                   "budgets": [{"max_thinking_tokens": 4}], "decoding": {"max_answer_tokens": 4}}),
        )
        .await
        .ok();
    assert_eq!(eval.n_examples, 1319);
    let work = tempfile::tempdir().unwrap();
    let mut worker = api.start_worker(&server, work.path()).await;
    let done: still_api::EvalSummary = still_tests::wait_until(
        Duration::from_secs(600),
        || async {
            api.get(&format!("/api/evals/{}", eval.id))
                .await
                .ok::<still_api::EvalSummary>()
        },
        |e| matches!(e.status.as_str(), "succeeded" | "failed" | "cancelled"),
    )
    .await;
    worker.kill().await.unwrap();
    assert_eq!(done.status, "succeeded", "{:?}", done.error);
    assert_eq!((done.done, done.budgets[0].n), (1319, 1319));
    assert_eq!(done.budgets[0].control, 1.0);
    // Every question once, with its GSM8K reference (the number after `####`).
    let mut seen = Vec::new();
    let mut after = -1i64;
    loop {
        let page: Vec<still_api::EvalExample> = api
            .get(&format!(
                "/api/evals/{}/examples?limit=200&after={after}",
                eval.id
            ))
            .await
            .ok();
        let Some(last) = page.last() else { break };
        after = last.example_index;
        for e in &page {
            let reference = e.record["reference"].as_str().unwrap_or("");
            assert!(
                !reference.is_empty() && reference.replace(',', "").parse::<f64>().is_ok(),
                "example {}: reference {reference:?}",
                e.example_index
            );
            assert!(e.thinking_tokens <= 4);
            seen.push(e.example_index);
        }
    }
    assert_eq!(seen, (0..1319).collect::<Vec<i64>>());
    server.stop().await;
}
