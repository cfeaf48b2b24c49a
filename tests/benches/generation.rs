//! Trace generation benchmark: a `generate` job over addition questions, its worker in this
//! process (release build), against three teachers: the third-party stand-in on loopback
//! (`FakeTeacher`) answering at once and with 20 ms of latency per request, the studio's own
//! `/v1` serving the tiny registry model, and that model as a registry teacher run by the
//! engine, and two generation-only teachers through candle-transformers (a Qwen3 GGUF, a Llama
//! in safetensors). Prints rows/s from the request to the last row stored; the reference for the
//! stand-in with latency is the ideal `concurrency / latency` (what the endpoint allows), and
//! for the tiny model the engine's own batched budget forcing on the same rows.
//!
//! `cargo bench -p still-tests --bench generation` (`-- --rows N`).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use still_api::GenerationSummary;
use still_tests::{Api, FakeTeacher, FakeTeacherConfig, TestServer};

/// Runs one generation to its end with an in-process worker; returns (rows, seconds, summary).
async fn generate(server: &TestServer, api: &Api, body: Value) -> (i64, f64, GenerationSummary) {
    let (_, token) = still_backend::jobs::workers::create_worker(server.pool(), "bench")
        .await
        .expect("a worker");
    let dir = tempfile::tempdir().expect("a work dir");
    let options = still_worker::WorkerOptions {
        server: server.url.clone(),
        token,
        device: "cpu".into(),
        work_dir: dir.path().to_path_buf(),
        models_dir: None,
        max_jobs: Some(1),
        parent_pid: None,
    };
    let start = Instant::now();
    let created: GenerationSummary = api.post("/api/generations", &body).await.ok();
    let worker = std::thread::spawn(move || still_worker::run(options));
    let done: GenerationSummary = still_tests::wait_until(
        Duration::from_secs(1800),
        || async {
            api.get(&format!("/api/generations/{}", created.id))
                .await
                .ok()
        },
        |g: &GenerationSummary| matches!(g.status.as_str(), "succeeded" | "failed" | "cancelled"),
    )
    .await;
    let seconds = start.elapsed().as_secs_f64();
    worker
        .join()
        .expect("the worker thread")
        .expect("the worker");
    assert_eq!(done.status, "succeeded", "{done:?}");
    (done.counts.done, seconds, done)
}

#[tokio::main]
async fn main() {
    let rows: usize = still_tests::bench_arg("--rows", 200);
    let (server, api) = still_tests::server_with_tiny_model(|_| {}).await;
    api.import_addition("questions", rows).await;
    let (_, token) = still_backend::http::tokens::create(server.pool(), 1, "bench")
        .await
        .expect("a token");
    println!("{}", still_engine::simd::describe());
    println!("| teacher | concurrency | rows | wall | rows/s | reference |");
    println!("|---|---|---|---|---|---|");
    for (latency, concurrency) in [(0u64, 1u32), (0, 8), (20, 1), (20, 8), (20, 32)] {
        let teacher = FakeTeacher::start(FakeTeacherConfig {
            delay: Duration::from_millis(latency),
            ..Default::default()
        })
        .await;
        let (n, seconds, _) = generate(
            &server,
            &api,
            json!({"dataset": "questions", "keep": "correct", "concurrency": concurrency,
                   "teacher": {"base_url": teacher.url, "model": "fake",
                               "api_key": FakeTeacher::KEY}}),
        )
        .await;
        let reference = if latency == 0 {
            "—".to_string()
        } else {
            format!(
                "{:.0} rows/s (concurrency / latency)",
                f64::from(concurrency) * 1000.0 / latency as f64
            )
        };
        println!(
            "| stand-in, {latency} ms per request | {concurrency} | {n} | {seconds:.2} s | {:.0} | {reference} |",
            n as f64 / seconds
        );
        teacher.stop();
    }
    // The tiny model, 32 tokens a row (thinking cut at 16), through /v1 and as a registry teacher.
    let tiny_rows = rows.min(64) as u32;
    let forcing_body = |teacher: Value| {
        json!({"dataset": "questions", "limit": tiny_rows, "max_tokens": 16,
               "max_thinking_tokens": 16, "concurrency": 8, "teacher": teacher})
    };
    let model: still_api::ModelSummary = api.get("/api/models/tiny").await.ok();
    let folder = still_engine::hf::load(
        std::path::Path::new(&model.path),
        still_engine::candle::DType::F32,
        &still_engine::candle::Device::Cpu,
    )
    .expect("the model");
    let template = still_engine::data::ChatTemplate::default();
    let forcing = still_engine::budget::Forcing {
        max_answer_tokens: 16,
        ..still_engine::budget::Forcing::from_template(&template)
    };
    let questions: Vec<String> = still_engine::synth::addition(2, tiny_rows as usize, 1)
        .into_iter()
        .map(|r| template.prompt(&r.question))
        .collect();
    let start = Instant::now();
    for batch in questions.chunks(8) {
        let requests: Vec<_> = batch
            .iter()
            .map(|prompt| still_engine::budget::ThinkRequest {
                prompt: prompt.clone(),
                budget: still_engine::budget::Budget {
                    max_thinking_tokens: Some(16),
                    ..Default::default()
                },
                sampling: Default::default(),
            })
            .collect();
        still_engine::budget::think(&folder, &requests, &forcing).expect("think");
    }
    let engine = f64::from(tiny_rows) / start.elapsed().as_secs_f64();
    for (label, teacher) in [
        (
            "the studio's /v1, tiny",
            json!({"base_url": format!("{}/v1", server.url), "model": "tiny", "api_key": token}),
        ),
        ("registry teacher tiny (engine)", json!({"model": "tiny"})),
    ] {
        let (n, seconds, _) = generate(&server, &api, forcing_body(teacher)).await;
        println!(
            "| {label}, 32 tokens a row | 8 | {n} | {seconds:.2} s | {:.0} | {engine:.0} rows/s (engine alone, batches of 8) |",
            n as f64 / seconds
        );
    }
    // Generation-only teachers through candle-transformers (hidden 64, 2 layers, the Qwen2.5
    // vocabulary), 32 tokens a row; the reference is the teacher crate alone on the same rows.
    let models = tempfile::tempdir().expect("a models dir");
    let tokenizer = still_tests::test_data("tokenizers/qwen2.5/tokenizer.json");
    for (name, arch, format) in [
        (
            "qwen3-gguf",
            still_teacher::Arch::Qwen3,
            still_teacher::Format::Gguf,
        ),
        (
            "llama-st",
            still_teacher::Arch::Llama,
            still_teacher::Format::Safetensors,
        ),
    ] {
        let dir = models.path().join(name);
        still_teacher::tiny::Tiny::new(arch, format, 151_936)
            .write(&dir, &tokenizer)
            .expect("a tiny teacher");
        let _: still_api::ModelSummary = api
            .post(
                "/api/models",
                json!({"name": name, "path": dir.to_string_lossy()}),
            )
            .await
            .ok();
        let options = still_teacher::Options {
            max_tokens: 32,
            max_thinking_tokens: Some(16),
            sampling: Default::default(),
        };
        let mut teacher =
            still_teacher::Teacher::load(&dir, &still_engine::candle::Device::Cpu).expect("load");
        let start = Instant::now();
        for r in still_engine::synth::addition(2, tiny_rows as usize, 1) {
            teacher.write(None, &r.question, &options).expect("write");
        }
        let alone = f64::from(tiny_rows) / start.elapsed().as_secs_f64();
        let (n, seconds, _) = generate(
            &server,
            &api,
            json!({"dataset": "questions", "limit": tiny_rows, "max_tokens": 32,
                   "max_thinking_tokens": 16, "teacher": {"model": name}}),
        )
        .await;
        println!(
            "| {name} (candle-transformers), 32 tokens a row | 1 | {n} | {seconds:.2} s | {:.0} | {alone:.0} rows/s (still-teacher alone) |",
            n as f64 / seconds
        );
    }
    server.stop().await;
}
