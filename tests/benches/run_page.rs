//! Run-page benchmark: a run with 100,000 optimizer steps of 8 metrics (800,000 stored points)
//! opened in headless Chromium. Measures the server's downsampled read, the live stream's first
//! snapshot, and in the browser the time from the snapshot's arrival to the curves in the DOM
//! (`performance.mark`s the page sets), and from navigation to the curves.
//!
//! `trunk build --release` first (or set STILL_UI_DIR), then
//! `cargo bench -p still-tests --bench run_page` (`-- --steps N`). Target from the runs issue:
//! the curve renders in under 200 ms.

use std::time::{Duration, Instant};

use serde_json::json;
use still_tests::{Api, Browser, TestServer, p50_p95 as summary};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let steps: i64 = args
        .iter()
        .position(|a| a == "--steps")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let server = TestServer::start().await;
    let api = Api::new(&server);
    api.import_addition("add", 64).await;
    let r = api
        .create_model(json!({"name": "tiny", "preset": "tiny", "tokenizer_dataset": "add", "vocab_size": 300}))
        .await;
    assert_eq!(r.status, 201);
    let run: serde_json::Value = api
        .create_run(json!({"name": "long", "method": "sft", "model": "tiny", "dataset": "add"}))
        .await
        .body;
    let run_id = run["id"].as_i64().unwrap();

    // A 100k-step run's points, sent the way a worker sends them (batches of 125 steps).
    let t = Instant::now();
    let names = [
        "loss",
        "ce",
        "lr",
        "grad_norm",
        "tokens_per_s",
        "epoch",
        "total_steps",
        "elapsed_s",
    ];
    let (worker, token) =
        still_backend::jobs::workers::create_worker(server.pool(), "bench").await?;
    let job = still_backend::kinds::claim(server.pool(), worker, 600)
        .await?
        .expect("the run's job");
    let worker = api.worker(&token);
    let steps_list: Vec<i64> = (1..=steps).collect();
    for chunk in steps_list.chunks(125) {
        let batch: Vec<still_api::MetricPoint> = chunk
            .iter()
            .flat_map(|&step| {
                names.iter().map(move |&name| {
                    let x = step as f64;
                    let value = match name {
                        "loss" | "ce" => 3.0 / (1.0 + x / 500.0) + 0.05 * (x * 0.37).sin(),
                        "lr" => 1e-4 * (1.0 - x / steps as f64),
                        "total_steps" => steps as f64,
                        "elapsed_s" => x * 0.1,
                        _ => 1.0 + (x * 0.11).cos(),
                    };
                    still_api::MetricPoint {
                        step,
                        name: name.to_string(),
                        value,
                    }
                })
            })
            .collect();
        let r = worker.metrics(job.job_id, &batch).await;
        assert!((200..300).contains(&r.status), "{}", r.status);
    }
    eprintln!(
        "stored {} points in {:.1} s",
        steps * names.len() as i64,
        t.elapsed().as_secs_f64()
    );

    // Server: the downsampled read and the event stream's first message.
    let mut api_ms = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let body = api
            .get_bytes(&format!("/api/runs/{run_id}/metrics?max_points=1000"))
            .await;
        api_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(!body.bytes.is_empty());
    }
    let mut sse_ms = Vec::new();
    for _ in 0..5 {
        use futures_util::StreamExt;
        let t = Instant::now();
        let mut stream = api.events(run_id).await.bytes_stream();
        let mut seen = String::new();
        while let Some(chunk) = stream.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk?));
            if seen.contains("\n\n") {
                break;
            }
        }
        sse_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    // Browser: snapshot arrival → curves in the DOM, and navigation → curves.
    let browser = Browser::start().await?;
    let (mut render_ms, mut page_ms) = (Vec::new(), Vec::new());
    let mut drawn_points = 0;
    for _ in 0..5 {
        browser.client.goto("about:blank").await?;
        browser
            .client
            .goto(&format!("{}/runs/{run_id}", server.url))
            .await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = browser
                .client
                .execute(
                    "const c = performance.getEntriesByName('still:curve'); \
                     const s = performance.getEntriesByName('still:snapshot'); \
                     const p = document.querySelector('[data-test=chart-loss] polyline'); \
                     return c.length && s.length && p ? [c[0].startTime, s[0].startTime, +p.getAttribute('data-points')] : null;",
                    vec![],
                )
                .await?;
            if let Some(a) = v.as_array() {
                let (curve, snap) = (a[0].as_f64().unwrap(), a[1].as_f64().unwrap());
                render_ms.push(curve - snap);
                page_ms.push(curve);
                drawn_points = a[2].as_i64().unwrap();
                break;
            }
            assert!(Instant::now() < deadline, "the curve never appeared");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    browser.close().await?;
    server.stop().await;

    let (api50, api95) = summary(api_ms);
    let (sse50, sse95) = summary(sse_ms);
    let (r50, r95) = summary(render_ms);
    let (p50, p95) = summary(page_ms);
    println!(
        "\nRun page: {steps} steps × {} metrics = {} points stored; loss curve drawn with {drawn_points} points\n",
        names.len(),
        steps * names.len() as i64
    );
    println!("| measurement | p50 ms | p95 ms | target |");
    println!("|---|---:|---:|---|");
    println!("| GET metrics?max_points=1000 (all 8 metrics) | {api50:.1} | {api95:.1} | |");
    println!("| event stream: first snapshot received | {sse50:.1} | {sse95:.1} | |");
    println!("| browser: snapshot → 4 curves in the DOM | {r50:.1} | {r95:.1} | < 200 ms |");
    println!("| browser: navigation → 4 curves in the DOM | {p50:.1} | {p95:.1} | |");
    Ok(())
}
