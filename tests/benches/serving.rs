//! Serving benchmark: a tiny registry model behind `/v1/chat/completions` on loopback, at 1, 8
//! and 32 concurrent streaming requests (each greedy, a fixed number of tokens: thinking cut
//! at half of them). Prints tokens/s over all requests and the time to the first streamed piece
//! (p50 / p99); the reference is the engine's own budget forcing (`budget::think`) on the same
//! requests in one batch, in the same process, without HTTP.
//!
//! The same model on a worker's disk is then served by an in-process worker through the relay
//! (the request relayed, decoded there, its events posted back every 40 ms).
//!
//! `cargo bench -p still-tests --bench serving` (`-- --tokens N`). The server process is the
//! bench itself (release build), its decode loop on the machine's cores.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((p * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
}

/// One streamed request: (time to the first piece, completion tokens, total time).
async fn one(
    url: &str,
    token: &str,
    model: &str,
    tokens: u32,
    seed: u64,
) -> (Duration, u64, Duration) {
    let start = Instant::now();
    let body = json!({"model": model, "stream": true, "stream_options": {"include_usage": true},
                      "temperature": 0, "seed": seed, "max_tokens": tokens, "max_thinking_tokens": tokens / 2,
                      "messages": [{"role": "user", "content": format!("What is {} + {}?", seed % 50, seed % 37)}]});
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("a response");
    assert!(response.status().is_success(), "{}", response.status());
    let mut stream = response.bytes_stream();
    let (mut first, mut completion, mut buffer) = (None, 0u64, String::new());
    while let Some(bytes) = stream.next().await {
        buffer.push_str(&String::from_utf8_lossy(&bytes.expect("bytes")));
        while let Some(end) = buffer.find("\n\n") {
            let record: String = buffer.drain(..end + 2).collect();
            let Some(data) = record.trim().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                continue;
            }
            let chunk: serde_json::Value = serde_json::from_str(data).expect("a chunk");
            let delta = &chunk["choices"][0]["delta"];
            let text = delta["reasoning_content"]
                .as_str()
                .or(delta["content"].as_str());
            if first.is_none() && text.is_some_and(|t| !t.is_empty()) {
                first = Some(start.elapsed());
            }
            if let Some(n) = chunk["usage"]["completion_tokens"].as_u64() {
                completion = n;
            }
        }
    }
    (
        first.unwrap_or(start.elapsed()),
        completion,
        start.elapsed(),
    )
}

#[tokio::main]
async fn main() {
    let tokens: u32 = still_tests::bench_arg("--tokens", 64);
    let (server, _api) = still_tests::server_with_tiny_model(|_| {}).await;
    let (_, token) = still_backend::http::tokens::create(server.pool(), 1, "bench")
        .await
        .expect("a token");
    println!("{}", still_engine::simd::describe());
    // Warm: the model loads on its first request.
    one(&server.url, &token, "tiny", 8, 0).await;
    let model: still_api::ModelSummary = _api.get("/api/models/tiny").await.ok();
    let folder = still_engine::hf::load(
        std::path::Path::new(&model.path),
        still_engine::candle::DType::F32,
        &still_engine::candle::Device::Cpu,
    )
    .expect("the model");
    let template = still_engine::data::ChatTemplate::default();
    // The engine alone: the same requests as one batch, thinking and answer counted alike.
    let engine_rate = |n: usize| -> f64 {
        let forcing = still_engine::budget::Forcing {
            max_answer_tokens: (tokens - tokens / 2) as usize,
            ..still_engine::budget::Forcing::from_template(&template)
        };
        let requests: Vec<_> = (0..n)
            .map(|i| {
                let seed = i as u64 + 1;
                still_engine::budget::ThinkRequest {
                    prompt: template.prompt(&format!("What is {} + {}?", seed % 50, seed % 37)),
                    budget: still_engine::budget::Budget {
                        max_thinking_tokens: Some((tokens / 2) as usize),
                        ..Default::default()
                    },
                    sampling: Default::default(),
                }
            })
            .collect();
        let start = Instant::now();
        let thoughts = still_engine::budget::think(&folder, &requests, &forcing).expect("think");
        let made: usize = thoughts
            .iter()
            .map(|t| t.thinking_tokens + t.answer_tokens)
            .sum();
        made as f64 / start.elapsed().as_secs_f64()
    };
    // The same model on a worker's disk, served by an in-process worker through the relay.
    let models = tempfile::tempdir().expect("a models dir");
    let local = models.path().join("tiny-on-worker");
    std::fs::create_dir(&local).expect("a folder");
    for entry in std::fs::read_dir(&model.path).expect("the model folder") {
        let entry = entry.expect("an entry");
        std::fs::copy(entry.path(), local.join(entry.file_name())).expect("a copy");
    }
    let r = _api
        .create_model(json!({"name": "tiny-on-worker", "location": "workers"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let (_, worker_token) = still_backend::jobs::workers::create_worker(server.pool(), "bench")
        .await
        .expect("a worker");
    let work = tempfile::tempdir().expect("a work dir");
    let options = still_worker::WorkerOptions {
        server: server.url.clone(),
        token: worker_token,
        device: "cpu".into(),
        work_dir: work.path().to_path_buf(),
        models_dir: Some(models.path().to_path_buf()),
        max_jobs: None,
        parent_pid: None,
    };
    std::thread::spawn(move || still_worker::run(options));
    // Warm: wait until the worker serves it (its model loads on the first request).
    let probe = json!({"model": "tiny-on-worker", "max_tokens": 4,
                       "messages": [{"role": "user", "content": "1 + 1?"}]});
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", server.url))
            .bearer_auth(&token)
            .json(&probe)
            .send()
            .await
            .expect("a response");
        if r.status().is_success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never served the model"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "| served by | concurrent streams | completion tokens | wall | tokens/s (all streams) | first piece p50 | first piece p99 | engine alone, one batch (tokens/s) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (by, name) in [("server", "tiny"), ("worker (relay)", "tiny-on-worker")] {
        for concurrent in [1usize, 8, 32] {
            let start = Instant::now();
            let tasks: Vec<_> = (0..concurrent)
                .map(|i| {
                    let (url, token) = (server.url.clone(), token.clone());
                    tokio::spawn(async move { one(&url, &token, name, tokens, i as u64 + 1).await })
                })
                .collect();
            let mut firsts = Vec::new();
            let mut total = 0;
            for t in tasks {
                let (first, completion, _) = t.await.expect("a request");
                firsts.push(first.as_secs_f64() * 1000.0);
                total += completion;
            }
            let wall = start.elapsed().as_secs_f64();
            firsts.sort_by(f64::total_cmp);
            println!(
                "| {by} | {concurrent} | {total} | {wall:.2} s | {:.0} | {:.1} ms | {:.1} ms | {:.0} |",
                total as f64 / wall,
                percentile(&firsts, 0.5),
                percentile(&firsts, 0.99),
                engine_rate(concurrent)
            );
        }
    }
    server.stop().await;
}
