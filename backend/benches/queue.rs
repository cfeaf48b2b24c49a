//! Queue benchmark: 8 workers at once, each holding a job, heartbeating every second and posting
//! 1,000 metric points per second (10 batches of 10 steps × 10 metrics), against the real
//! `still serve` process and its SQLite file; two live run pages (SSE) follow along.
//!
//! `cargo bench -p still-backend --bench queue` (`-- --workers N --seconds S --points P`).
//! Prints per-request latency (p50 / p99 / max) next to the target from the runs issue: 1,000
//! points/s per worker sustained with p99 write latency printed.

use std::process::Command;

mod common;
use common::percentile;
use std::time::{Duration, Instant};

use serde_json::json;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn still(data: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_still"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .expect("still runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Latencies in ms by request kind.
#[derive(Default)]
struct Timings {
    claim: Vec<f64>,
    heartbeat: Vec<f64>,
    metrics: Vec<f64>,
}

/// Sends a request, checks it succeeded, and records how long the whole answer took.
async fn timed(request: reqwest::RequestBuilder, into: &mut Vec<f64>) -> axum::body::Bytes {
    let t = Instant::now();
    let response = request.send().await.expect("request");
    assert!(response.status().is_success(), "{}", response.status());
    let body = response.bytes().await.expect("body");
    into.push(t.elapsed().as_secs_f64() * 1000.0);
    body
}

/// One worker: claim its job, then heartbeat every second and post `points` per second.
async fn worker(
    client: reqwest::Client,
    base: String,
    token: String,
    seconds: u64,
    points: usize,
) -> (Timings, u64) {
    let auth = format!("Bearer {token}");
    let mut t = Timings::default();
    timed(
        client
            .post(format!("{base}/api/worker/register"))
            .header("Authorization", &auth)
            .json(&json!({"device": "cpu", "memory_bytes": 0})),
        &mut t.heartbeat,
    )
    .await;
    t.heartbeat.clear();
    let job: serde_json::Value = serde_json::from_slice(
        &timed(
            client
                .post(format!("{base}/api/worker/claim?wait_ms=5000"))
                .header("Authorization", &auth)
                .json(&json!({})),
            &mut t.claim,
        )
        .await,
    )
    .unwrap();
    let job = job["job_id"].as_i64().expect("a job for every worker");
    const NAMES: [&str; 10] = [
        "loss",
        "ce",
        "kd",
        "lr",
        "grad_norm",
        "tokens_per_s",
        "epoch",
        "total_steps",
        "elapsed_s",
        "extra",
    ];
    let per_batch = points / 10; // ten batches a second
    let steps_per_batch = (per_batch / NAMES.len()).max(1);
    let mut step = 0i64;
    let mut sent = 0u64;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_heartbeat = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let mut batch = Vec::with_capacity(per_batch);
        for _ in 0..steps_per_batch {
            step += 1;
            for name in NAMES {
                batch.push(json!({"step": step, "name": name, "value": 1.0 / step as f64}));
            }
        }
        sent += batch.len() as u64;
        timed(
            client
                .post(format!("{base}/api/worker/jobs/{job}/metrics"))
                .header("Authorization", &auth)
                .json(&batch),
            &mut t.metrics,
        )
        .await;
        if last_heartbeat.elapsed() >= Duration::from_secs(1) {
            last_heartbeat = Instant::now();
            timed(
                client
                    .post(format!("{base}/api/worker/jobs/{job}/heartbeat"))
                    .header("Authorization", &auth)
                    .json(&json!({})),
                &mut t.heartbeat,
            )
            .await;
        }
    }
    (t, sent)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let workers = arg(&args, "--workers", 8);
    let seconds = arg(&args, "--seconds", 20) as u64;
    let points = arg(&args, "--points", 1000);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let (server, base) = common::serve(&data, &["--local-workers", "0"], &client).await;

    // A dataset, a tiny model, and one queued run per worker.
    let rows: String = (0..64)
        .map(|i| {
            json!({"question": format!("{i} + {i}"), "thinking": format!("{i} plus {i}"), "answer": (2 * i).to_string()})
                .to_string()
                + "\n"
        })
        .collect();
    let form = reqwest::multipart::Form::new().text("name", "q").part(
        "file",
        reqwest::multipart::Part::bytes(rows.into_bytes()).file_name("q.jsonl"),
    );
    let r = client
        .post(format!("{base}/api/datasets/import"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = client
        .post(format!("{base}/api/models"))
        .json(&json!({"name": "m", "preset": "tiny", "tokenizer_dataset": "q", "vocab_size": 300}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mut runs = Vec::new();
    for i in 0..workers {
        let r: serde_json::Value = client
            .post(format!("{base}/api/runs"))
            .json(&json!({"name": format!("r{i}"), "method": "sft", "model": "m", "dataset": "q"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        runs.push(r["id"].as_i64().unwrap());
    }
    let tokens: Vec<String> = (0..workers)
        .map(|i| {
            still(
                &data,
                &["worker-token", "create", "--name", &format!("w{i}")],
            )
            .trim()
            .rsplit(' ')
            .next()
            .unwrap()
            .to_string()
        })
        .collect();

    // Two live pages follow the first runs (their streams wake on every write).
    let mut followers = Vec::new();
    for run in runs.iter().take(2) {
        let response = client
            .get(format!("{base}/api/runs/{run}/events"))
            .send()
            .await
            .unwrap();
        followers.push(tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut stream = response.bytes_stream();
            let mut bytes = 0usize;
            while let Some(Ok(chunk)) = stream.next().await {
                bytes += chunk.len();
            }
            bytes
        }));
    }

    let started = Instant::now();
    let tasks: Vec<_> = tokens
        .into_iter()
        .map(|token| tokio::spawn(worker(client.clone(), base.clone(), token, seconds, points)))
        .collect();
    let mut all = Timings::default();
    let mut sent = 0;
    for task in tasks {
        let (t, n) = task.await.unwrap();
        all.claim.extend(t.claim);
        all.heartbeat.extend(t.heartbeat);
        all.metrics.extend(t.metrics);
        sent += n;
    }
    let wall = started.elapsed().as_secs_f64();
    let mut stored = 0i64;
    for run in &runs {
        let points: Vec<serde_json::Value> = client
            .get(format!("{base}/api/runs/{run}/metrics"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stored += points.len() as i64;
    }
    assert_eq!(stored as u64, sent, "every point stored once");
    drop(server);
    for f in followers {
        f.abort();
    }

    println!(
        "\nQueue: {workers} workers × {points} points/s for {seconds} s, claim + heartbeat every 1 s, \
         2 live SSE pages, SQLite WAL, `still serve` process on loopback\n"
    );
    println!("| request | count | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, mut v) in [
        ("claim", all.claim),
        ("heartbeat", all.heartbeat),
        ("metrics batch (100 points)", all.metrics),
    ] {
        v.sort_by(f64::total_cmp);
        println!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} |",
            v.len(),
            percentile(&v, 0.5),
            percentile(&v, 0.99),
            v.last().copied().unwrap_or(0.0)
        );
    }
    println!(
        "\nSustained: {:.0} points/s stored ({} in {wall:.1} s; target {} points/s = {workers} × {points}); all stored exactly once.",
        sent as f64 / wall,
        sent,
        workers * points
    );
}
