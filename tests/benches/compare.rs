//! Compare benchmark: 20 and then 200 runs of 10,000 steps each (the loss recorded at every
//! step, sent the way workers send it). Times `GET /api/compare` for each selection and, in
//! headless Chromium, navigation → every run's curve drawn (a `performance.mark` the page sets
//! one frame after the curves are in the DOM), and a smoothing change → redrawn.
//!
//! `trunk build --release` first (or set STILL_UI_DIR), then
//! `cargo bench -p still-tests --bench compare` (`-- --steps N --runs N`). Targets from the
//! compare issue: 20 runs × 10,000 points load and draw in under 500 ms, the endpoint answers
//! in under 100 ms; 200 runs stay interactive.

use std::time::{Duration, Instant};

use serde_json::json;
use still_tests::{Browser, bench_arg, p50_p95 as summary, server_with_tiny_model};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let steps: i64 = bench_arg("--steps", 10_000);
    let n_runs: usize = bench_arg("--runs", 200);
    let (server, api) = server_with_tiny_model(|_| {}).await;
    let t = Instant::now();
    let mut ids = Vec::with_capacity(n_runs);
    for i in 0..n_runs {
        let run = api
            .create_run(
                json!({"name": format!("r{i}"), "method": "sft", "model": "tiny", "dataset": "add",
                               "params": {"lr": 1e-4 * (1 + i % 7) as f64, "max_steps": steps}}),
            )
            .await;
        assert_eq!(run.status, 201, "{}", run.text);
        ids.push(run.body["id"].as_i64().unwrap());
        let (worker, token) =
            still_backend::jobs::workers::create_worker(server.pool(), &format!("w{i}")).await?;
        let job = still_backend::kinds::claim(server.pool(), worker, 600)
            .await?
            .expect("the run's job");
        let worker = api.worker(&token);
        let floor = 0.01 * i as f64;
        let steps_list: Vec<i64> = (1..=steps).collect();
        for chunk in steps_list.chunks(2000) {
            let batch: Vec<still_api::MetricPoint> = chunk
                .iter()
                .map(|&step| {
                    let x = step as f64;
                    still_api::MetricPoint {
                        step,
                        name: "loss".into(),
                        value: floor + 3.0 / (1.0 + x / 500.0) + 0.05 * (x * 0.37).sin(),
                    }
                })
                .collect();
            let r = worker.metrics(job.job_id, &batch).await;
            assert!((200..300).contains(&r.status), "{}", r.status);
        }
    }
    eprintln!(
        "stored {n_runs} runs × {steps} points in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let browser = Browser::start().await?;
    let mut rows = Vec::new();
    for n in [20usize, n_runs] {
        let list: Vec<String> = ids[..n].iter().map(i64::to_string).collect();
        // The page's request (320 points per curve), then a denser one.
        for points in [320, 1000] {
            let query = format!("runs={}&metrics=loss&max_points={points}", list.join(","));
            let mut api_ms = Vec::new();
            let mut bytes = 0;
            for _ in 0..10 {
                let t = Instant::now();
                let body = api.get_bytes(&format!("/api/compare?{query}")).await;
                api_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                bytes = body.bytes.len();
            }
            let (a50, a95) = summary(api_ms);
            let target = if n == 20 && points == 320 {
                "< 100 ms"
            } else {
                "—"
            };
            rows.push(format!(
                "| {n} runs × {steps} points: GET /api/compare (loss, {points} points per run{}; {:.0} KiB) | {a50:.1} | {a95:.1} | {target} |",
                if points == 320 { ", as the page asks" } else { "" },
                bytes as f64 / 1024.0
            ));
        }
        let (mut page_ms, mut smooth_ms) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            browser.client.goto("about:blank").await?;
            browser
                .client
                .goto(&format!("{}/compare?runs={}", server.url, list.join(",")))
                .await?;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let v = browser
                    .client
                    .execute(
                        "const m = performance.getEntriesByName('still:compare-drawn'); \
                         const n = document.querySelectorAll('[data-test=overlay-series]').length; \
                         return m.length ? [m[0].startTime, n] : null;",
                        vec![],
                    )
                    .await?;
                if let Some(a) = v.as_array() {
                    assert_eq!(a[1].as_u64(), Some(n as u64), "every run's curve is drawn");
                    page_ms.push(a[0].as_f64().unwrap());
                    break;
                }
                assert!(Instant::now() < deadline, "the curves never appeared");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // A smoothing change, until the first run's path differs (checked every frame).
            let ms = browser
                .client
                .execute_async(
                    "const done = arguments[arguments.length - 1]; \
                     const path = () => document.querySelector('[data-test=smooth-path]').getAttribute('d'); \
                     const before = path(); const t = performance.now(); \
                     const s = document.querySelector('[data-test=smoothing]'); \
                     s.value = '0.6'; s.dispatchEvent(new Event('input', {bubbles: true})); \
                     const check = () => path() !== before ? done(performance.now() - t) : requestAnimationFrame(check); \
                     requestAnimationFrame(check);",
                    vec![],
                )
                .await?;
            smooth_ms.push(ms.as_f64().unwrap_or(f64::NAN));
        }
        let (p50, p95) = summary(page_ms);
        let (s50, s95) = summary(smooth_ms);
        let page_target = if n == 20 { "< 500 ms" } else { "interactive" };
        rows.push(format!(
            "| {n} runs: navigation → every curve drawn (browser) | {p50:.1} | {p95:.1} | {page_target} |"
        ));
        rows.push(format!(
            "| {n} runs: smoothing changed → redrawn (browser) | {s50:.1} | {s95:.1} | — |"
        ));
    }
    browser.close().await?;
    server.stop().await;
    println!("\n| measurement | p50 ms | p95 ms | target |");
    println!("|---|---:|---:|---|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}
