//! Comparing runs through the API on a real server: 50 runs with metrics sent the way workers
//! send them, compared in one request (summaries, downsampled curves, the config fields that
//! differ), and saved comparisons.

use serde_json::json;
use still_api::{Comparison, SavedComparison};
use still_tests::{runs_with_metrics, server_with_tiny_model, sweep_loss};

#[tokio::test]
async fn fifty_runs_compare_in_one_request_and_a_comparison_saves_with_its_baseline() {
    let (server, api) = server_with_tiny_model(|_| {}).await;
    const RUNS: usize = 50;
    const STEPS: i64 = 120;
    let ids = runs_with_metrics(&server, &api, RUNS, STEPS).await;

    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    let c: Comparison = api
        .get(&format!(
            "/api/compare?runs={}&metrics=loss,lr&max_points=40",
            list.join(",")
        ))
        .await
        .ok();
    assert_eq!(c.runs.len(), RUNS);
    assert_eq!(
        c.runs.iter().map(|r| r.run.id).collect::<Vec<_>>(),
        ids,
        "in the order asked"
    );
    assert_eq!(c.metrics, vec!["elapsed_s", "loss", "lr", "tokens_per_s"]);
    for (i, r) in c.runs.iter().enumerate() {
        let floor = 0.1 * i as f64;
        // Only the asked-for curves, downsampled, ending on the true last point.
        let names: Vec<&str> = r.curves.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["loss", "lr"]);
        let curve = &r.curves[0];
        assert!(curve.steps.len() <= 42, "{}", curve.steps.len());
        assert_eq!(curve.steps.len(), curve.values.len());
        assert_eq!(*curve.steps.last().unwrap(), STEPS);
        assert!(curve.steps.windows(2).all(|w| w[0] < w[1]));
        // Every metric's summary, from all 120 points.
        let s = |name: &str| r.summary.iter().find(|s| s.name == name).unwrap().clone();
        let l = s("loss");
        assert_eq!((l.n, l.last_step), (STEPS, STEPS));
        assert!((l.last - sweep_loss(STEPS, floor)).abs() < 1e-12);
        assert!((l.min - sweep_loss(STEPS, floor)).abs() < 1e-12);
        assert_eq!(l.min_step, STEPS);
        assert!((l.max - sweep_loss(1, floor)).abs() < 1e-12);
        assert_eq!((l.max_step, l.best), (1, l.min));
        let t = s("tokens_per_s");
        assert_eq!(t.best, t.max, "throughput: higher is better");
        assert_eq!(t.max, 100.0 + STEPS as f64);
    }
    // The config diff: lr differs, the method and dataset version do not.
    let row = |f: &str| c.config.iter().find(|r| r.field == f).unwrap();
    assert!(row("config.lr").differs);
    assert_eq!(row("config.lr").values[0], json!(1e-4));
    assert_eq!(row("config.lr").values[1], json!(3e-4));
    assert!(!row("method").differs && !row("dataset_version").differs);
    assert_eq!(c.config[0].field, "method");

    // Names work as ids do; a repeat is compared once.
    let by_name: Comparison = api
        .get("/api/compare?runs=sweep-3,sweep-1,sweep-3")
        .await
        .ok();
    let names: Vec<&str> = by_name.runs.iter().map(|r| r.run.name.as_str()).collect();
    assert_eq!(names, vec!["sweep-3", "sweep-1"]);
    assert_eq!(by_name.runs[0].curves.len(), 4, "all metrics by default");

    // Bad requests name the problem.
    let unknown = api.get("/api/compare?runs=sweep-1,nope").await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    assert!(unknown.text.contains("run 'nope'"), "{}", unknown.text);
    let too_many: Vec<String> = (0..1001).map(|i| i.to_string()).collect();
    let refused = api
        .get(&format!("/api/compare?runs={}", too_many.join(",")))
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(refused.text.contains("1001 runs"), "{}", refused.text);
    let refused = api.get("/api/compare?runs=sweep-1&max_points=1").await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    let refused = api.get("/api/compare?runs=").await;
    assert_eq!(refused.status, 400, "{}", refused.text);

    // A saved comparison: its runs in order, the baseline, the view settings.
    let saved: SavedComparison = api
        .post(
            "/api/comparisons",
            json!({"name": "lr sweep", "runs": ["sweep-0", "sweep-1", ids[2].to_string()],
                   "baseline": "sweep-1", "settings": {"metric": "loss", "smoothing": 0.6}}),
        )
        .await
        .ok();
    assert_eq!(saved.runs, ids[..3].to_vec());
    assert_eq!(saved.baseline, Some(ids[1]));
    let again: SavedComparison = api
        .get(&format!("/api/comparisons/{}", saved.id))
        .await
        .ok();
    assert_eq!(again, saved);
    assert_eq!(again.settings["smoothing"], json!(0.6));
    let by_name: SavedComparison = api.get("/api/comparisons/lr%20sweep").await.ok();
    assert_eq!(by_name.id, saved.id);
    let listed: Vec<SavedComparison> = api.get("/api/comparisons").await.ok();
    assert_eq!(listed.len(), 1);
    for (body, status, says) in [
        (
            json!({"name": "lr sweep", "runs": ["sweep-0"]}),
            409,
            "exists already",
        ),
        (
            json!({"name": "b", "runs": ["sweep-0"], "baseline": "sweep-9"}),
            400,
            "not one of the compared runs",
        ),
        (json!({"name": "c", "runs": ["ghost"]}), 404, "run 'ghost'"),
        (json!({"name": "d", "runs": []}), 400, "at least one run"),
        (
            json!({"name": "e", "runs": ["sweep-0"], "settings": [1]}),
            400,
            "give an object",
        ),
        (
            json!({"name": "f", "runs": ["sweep-0"], "settings": {"x": "y".repeat(20_000)}}),
            400,
            "more than 16384",
        ),
        (
            json!({"name": "g", "runs": ["sweep-0"], "colour": "red"}),
            400,
            "colour",
        ),
    ] {
        let r = api.post("/api/comparisons", &body).await;
        assert_eq!(r.status, status, "{body}: {}", r.text);
        assert!(r.text.contains(says), "{body}: {}", r.text);
    }
    let listed: Vec<SavedComparison> = api.get("/api/comparisons").await.ok();
    assert_eq!(listed.len(), 1, "nothing saved by a refused request");
    let deleted = api.delete(&format!("/api/comparisons/{}", saved.id)).await;
    assert_eq!(deleted.status, 204);
    let gone = api.get(&format!("/api/comparisons/{}", saved.id)).await;
    assert_eq!(gone.status, 404);
    server.stop().await;
}
