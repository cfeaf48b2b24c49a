//! Evaluations on the queue: a real server, real worker processes, real SQLite. An eval of a
//! tiny model on addition rows under several budgets, its per-budget results and graded
//! examples, the checks on what is posted, and a worker killed mid-eval.

use std::time::Duration;

use serde_json::json;
use still_api::{EvalExample, EvalSummary};
use still_tests::{Api, TestServer, wait_until};

async fn server_with_model(adjust: impl FnOnce(&mut still_backend::Config)) -> (TestServer, Api) {
    still_tests::server_with_tiny_model(adjust).await
}

async fn eval(api: &Api, id: i64) -> EvalSummary {
    api.get(&format!("/api/evals/{id}")).await.ok()
}

async fn wait_for_eval(api: &Api, id: i64, within: Duration) -> EvalSummary {
    wait_until(
        within,
        || eval(api, id),
        |e| matches!(e.status.as_str(), "succeeded" | "failed" | "cancelled"),
    )
    .await
}

async fn examples(api: &Api, id: i64, query: &str) -> Vec<EvalExample> {
    api.get(&format!("/api/evals/{id}/examples?{query}"))
        .await
        .ok()
}

#[tokio::test]
async fn an_eval_grades_every_example_under_every_budget() {
    let (server, api) = server_with_model(|_| {}).await;
    let body = json!({
        "model": "tiny", "dataset": "add", "limit": 5,
        "budgets": [{"max_thinking_tokens": 6}, {"max_thinking_tokens": 12, "wait_extensions": 1}],
        "decoding": {"max_answer_tokens": 6}
    });
    let created: EvalSummary = api.post("/api/evals", &body).await.ok();
    assert_eq!(created.status, "queued");
    assert_eq!(created.name, "tiny on add");
    assert_eq!((created.n_examples, created.done), (5, 0));
    assert_eq!(created.budgets.len(), 2);
    // The same again gets the next free name.
    let second: EvalSummary = api.post("/api/evals", &body).await.ok();
    assert_eq!(second.name, "tiny on add (2)");
    api.post_empty(&format!("/api/evals/{}/cancel", second.id))
        .await
        .ok::<EvalSummary>();

    let dir = tempfile::tempdir().unwrap();
    let mut worker = api.start_worker(&server, dir.path()).await;
    let done = wait_for_eval(&api, created.id, Duration::from_secs(120)).await;
    worker.kill().await.unwrap();
    assert_eq!(done.status, "succeeded", "{done:?}");
    assert_eq!(done.done, 10);
    for (b, max) in done.budgets.iter().zip([6.0, 12.0]) {
        assert_eq!(b.n, 5);
        assert!(b.mean_thinking_tokens <= max, "{b:?}");
        assert_eq!(b.control, 1.0, "{b:?}");
        assert!((0.0..=1.0).contains(&b.accuracy));
        assert_eq!(b.accuracy, b.correct as f64 / 5.0);
    }
    assert_eq!(done.control, 1.0);
    assert_eq!(
        done.performance,
        done.budgets.iter().map(|b| b.accuracy).fold(0.0, f64::max)
    );

    // Graded examples: thinking and answer apart, the cut marked, every pair once.
    let all = examples(&api, created.id, "limit=200").await;
    assert_eq!(all.len(), 10);
    let mut pairs: Vec<(i64, i64)> = all
        .iter()
        .map(|e| (e.budget_index, e.example_index))
        .collect();
    pairs.sort();
    pairs.dedup();
    assert_eq!(pairs.len(), 10);
    for e in &all {
        let thought = &e.record["thought"];
        assert_eq!(thought["thinking_tokens"].as_i64(), Some(e.thinking_tokens));
        if let Some(cut) = thought["cut"]["token"].as_i64() {
            assert_eq!(cut, e.thinking_tokens);
            assert!(
                thought["answer"]
                    .as_str()
                    .unwrap()
                    .starts_with("Final Answer:")
            );
        }
        assert!(e.record["question"].as_str().unwrap().contains('+'));
        assert!(e.record["reason"].is_string());
    }
    let first_budget = examples(&api, created.id, "budget=0").await;
    assert_eq!(first_budget.len(), 5);
    assert!(first_budget.iter().all(|e| e.budget_index == 0));
    let wrong = examples(&api, created.id, "correct=false").await;
    let right = examples(&api, created.id, "correct=true").await;
    assert_eq!(wrong.len() + right.len(), 10);
    assert!(wrong.iter().all(|e| !e.correct));
    let page = examples(&api, created.id, "budget=1&after=2").await;
    assert_eq!(
        page.iter().map(|e| e.example_index).collect::<Vec<_>>(),
        vec![3, 4]
    );
    // The log says what ran.
    let log: Vec<still_api::RunLogEntry> = api
        .get(&format!("/api/evals/{}/logs", created.id))
        .await
        .ok();
    assert!(
        log.iter()
            .any(|l| l.message.contains("succeeded: 10 graded pairs")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.source == "worker" && l.message.contains("0 of 10 pairs already graded")),
        "{log:?}"
    );
    // Listed, newest first.
    let listed: Vec<EvalSummary> = api.get("/api/evals").await.ok();
    assert_eq!(
        listed.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![second.id, created.id]
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_evals_are_refused_with_the_field_named_and_nothing_queued() {
    let (server, api) = server_with_model(|_| {}).await;
    let cases = [
        (
            json!({"model": "tiny", "dataset": "add", "budgets": []}),
            400,
            "budgets: give 1 to 32",
        ),
        (
            json!({"model": "tiny", "dataset": "add", "budgets": [{"max_thinking_tokens": 0}]}),
            400,
            "budgets[0]: max_thinking_tokens 0",
        ),
        (
            json!({"model": "tiny", "dataset": "add", "budgets": [{"max_thinking_tokens": 8, "min_thinking_tokens": 9}]}),
            400,
            "budgets[0]: min_thinking_tokens 9 is above max_thinking_tokens 8",
        ),
        (
            json!({"model": "tiny", "dataset": "add", "budgets": [{}], "decoding": {"top_p": 0.0}}),
            400,
            "decoding: ",
        ),
        (
            json!({"model": "tiny", "dataset": "add", "budgets": [{}], "preset": "essay"}),
            400,
            "preset: unknown answer preset \"essay\"",
        ),
        (
            json!({"model": "nope", "dataset": "add", "budgets": [{}]}),
            404,
            "model or run 'nope'",
        ),
        (
            json!({"model": "tiny", "dataset": "nope", "budgets": [{}]}),
            404,
            "dataset 'nope'",
        ),
    ];
    for (body, status, message) in cases {
        let reply = api.post("/api/evals", &body).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text);
        assert!(
            reply.message().contains(message),
            "{body}: {}",
            reply.message()
        );
    }
    let listed: Vec<EvalSummary> = api.get("/api/evals").await.ok();
    assert!(listed.is_empty());
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = 'eval'")
        .fetch_one(server.pool())
        .await
        .unwrap();
    assert_eq!(queued, 0);
    server.stop().await;
}

#[tokio::test]
async fn an_eval_worker_killed_mid_way_resumes_and_grades_every_pair_once() {
    let (server, api) = server_with_model(|c| c.lease_seconds = 2).await;
    let body = json!({
        "model": "tiny", "dataset": "add", "limit": 24,
        "budgets": [{"max_thinking_tokens": 48}, {"max_thinking_tokens": 96}],
        "decoding": {"max_answer_tokens": 16}
    });
    let created: EvalSummary = api.post("/api/evals", &body).await.ok();
    let dir = tempfile::tempdir().unwrap();
    let mut first = api.start_worker(&server, dir.path()).await;
    let partway = wait_until(
        Duration::from_secs(120),
        || eval(&api, created.id),
        |e| e.done >= 4 || e.status != "queued" && e.status != "running",
    )
    .await;
    first.kill().await.unwrap(); // SIGKILL: the lease just stops being renewed
    assert!(partway.done >= 4 && partway.done < 48, "{partway:?}");
    // What the first attempt stored before it died.
    let before: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT budget_index, example_index FROM eval_records WHERE eval_id = ? AND attempt = 1",
    )
    .bind(created.id)
    .fetch_all(server.pool())
    .await
    .unwrap();
    let mut second = api.start_worker(&server, dir.path()).await;
    let done = wait_for_eval(&api, created.id, Duration::from_secs(240)).await;
    second.kill().await.unwrap();
    assert_eq!(done.status, "succeeded", "{done:?}");
    assert_eq!(done.done, 48);
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT budget_index, example_index, attempt FROM eval_records WHERE eval_id = ?",
    )
    .bind(created.id)
    .fetch_all(server.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 48);
    // Every pair the first attempt graded is still its (not graded again), the rest the second's.
    let first_rows: Vec<(i64, i64)> = rows
        .iter()
        .filter(|r| r.2 == 1)
        .map(|r| (r.0, r.1))
        .collect();
    assert!(first_rows.len() >= before.len());
    assert!(before.iter().all(|p| first_rows.contains(p)));
    assert!(rows.iter().all(|r| r.2 == 1 || r.2 == 2), "{rows:?}");
    // The second attempt was told what was done and said how much it skipped.
    let log: Vec<still_api::RunLogEntry> = api
        .get(&format!("/api/evals/{}/logs", created.id))
        .await
        .ok();
    let skipped = format!("{} of 48 pairs already graded", first_rows.len());
    assert!(
        log.iter()
            .any(|l| l.attempt == 2 && l.message.contains(&skipped)),
        "{skipped}: {log:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_run_evaluates_its_checkpoints_and_its_final_model_as_it_trains() {
    let (server, api) = server_with_model(|_| {}).await;
    let body = |name: &str, evals: serde_json::Value| {
        json!({"name": name, "method": "sft", "model": "tiny", "dataset": "add",
               "params": {"max_steps": 6, "epochs": 1000, "lr": 3e-3, "batch_size": 8, "grad_accum": 1,
                          "max_seq_len": 128, "checkpoint_every": 2},
               "evals": evals})
    };
    // Bad plans are refused with the field named, and no run is stored.
    for (evals, field) in [
        (
            json!([{"dataset": "add", "budgets": [{}], "every_steps": 0}]),
            "evals[0].every_steps",
        ),
        (
            json!([{"dataset": "nope", "budgets": [{}]}]),
            "evals[0].dataset",
        ),
        (
            json!([{"dataset": "add", "budgets": []}]),
            "evals[0].budgets",
        ),
    ] {
        let bad = api.create_run(body("bad", evals)).await;
        assert_eq!(bad.status, 400, "{}", bad.text);
        let message = bad.error().message;
        assert!(message.contains(field), "{field}: {message}");
    }
    let runs: Vec<still_api::RunSummary> = api.get("/api/runs").await.ok();
    assert!(runs.is_empty());

    let plan = json!([{"dataset": "add", "limit": 3, "every_steps": 4,
                       "budgets": [{"max_thinking_tokens": 4}, {"max_thinking_tokens": 8}],
                       "decoding": {"max_answer_tokens": 4}}]);
    let run: still_api::RunSummary = api.create_run(body("watched", plan)).await.ok();
    assert_eq!(run.evals.len(), 1);
    assert_eq!(run.evals[0].every_steps, Some(4));
    let dir = tempfile::tempdir().unwrap();
    let mut worker = api.start_worker(&server, dir.path()).await;
    let run = api
        .wait_for_run(run.id, Duration::from_secs(180), still_tests::run_finished)
        .await;
    assert_eq!(run.status, still_api::RunStatus::Succeeded, "{run:?}");
    // Checkpoints at steps 2, 4 and 6: only step 4 is a multiple of 4; then the final model.
    let evals: Vec<EvalSummary> = wait_until(
        Duration::from_secs(180),
        || async {
            api.get(&format!("/api/evals?run={}", run.id))
                .await
                .ok::<Vec<EvalSummary>>()
        },
        |list: &Vec<EvalSummary>| list.len() == 2 && list.iter().all(|e| e.status == "succeeded"),
    )
    .await;
    worker.kill().await.unwrap();
    let names: Vec<&str> = evals.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["watched @ step 4 on add", "watched @ final on add"]);
    assert_eq!(evals[0].step, Some(4));
    assert_eq!(evals[1].step, run.last_step);
    assert_eq!(evals[0].model_name, "watched-step4");
    assert_eq!(evals[1].model_id, run.output_model_id.unwrap());
    for e in &evals {
        assert_eq!(e.run_id, Some(run.id));
        assert_eq!((e.n_examples, e.done), (3, 6), "{e:?}");
        assert!(e.budgets[0].mean_thinking_tokens <= 4.0);
    }
    // The checkpoint is a registered model of the run, usable like any other.
    let models: Vec<still_api::ModelSummary> = api.get("/api/models").await.ok();
    let checkpoint = models.iter().find(|m| m.name == "watched-step4").unwrap();
    assert_eq!(
        (checkpoint.origin.as_str(), checkpoint.run_id),
        ("checkpoint", Some(run.id))
    );
    // The run's log says what was queued.
    let log = api.logs(run.id).await;
    assert!(
        log.iter()
            .any(|l| l.message.contains("queued: 'add' at step 4")),
        "{log:?}"
    );
}

#[tokio::test]
async fn two_evals_show_the_questions_that_flipped_between_them() {
    // Two evals graded by workers speaking the protocol, with known verdicts: question q1 is
    // right in A and wrong in B, q2 the other way round. B graded the questions in another
    // order; they are matched by text.
    let (server, api) = server_with_model(|_| {}).await;
    let body = json!({"model": "tiny", "dataset": "add", "limit": 4,
                      "budgets": [{"max_thinking_tokens": 4}, {"max_thinking_tokens": 8}]});
    let a: EvalSummary = api.post("/api/evals", &body).await.ok();
    let b: EvalSummary = api.post("/api/evals", &body).await.ok();
    let grade = |order: [usize; 4], verdicts: [bool; 4]| {
        (0..2)
            .flat_map(move |budget| {
                order.into_iter().enumerate().map(move |(i, q)| {
                    let correct = verdicts[q] && budget == 1;
                    json!({"budget_index": budget, "example_index": i, "correct": correct, "thinking_tokens": 3,
                           "record": {"question": format!("q{q}"), "reference": format!("{q}"),
                                      "extracted": if correct { format!("{q}") } else { "7".to_string() }}})
                })
            })
            .collect::<Vec<_>>()
    };
    for (eval, records) in [
        (&a, grade([0, 1, 2, 3], [true, true, false, false])),
        (&b, grade([3, 2, 1, 0], [true, false, true, false])),
    ] {
        let (_, token) = still_backend::jobs::workers::create_worker(server.pool(), "grader")
            .await
            .unwrap();
        let worker = api.worker(&token);
        let job: still_api::ClaimedJob = worker.claim().await.ok();
        assert_eq!(job.work.subject(), format!("eval {}", eval.id));
        let sent = worker
            .post(
                &format!("/api/worker/jobs/{}/eval/records", job.job_id),
                &records,
            )
            .await;
        assert_eq!(sent.status, 200, "{}", sent.text);
    }
    let flips: still_api::EvalFlips = api
        .get(&format!("/api/evals/{}/flips/{}", a.id, b.id))
        .await
        .ok();
    // The last budget of each by default.
    assert_eq!((flips.budget_a, flips.budget_b), (1, 1));
    assert_eq!(flips.shared, 4);
    assert_eq!((flips.both_right, flips.both_wrong), (1, 1));
    assert_eq!((flips.n_right_to_wrong, flips.n_wrong_to_right), (1, 1));
    let r2w = &flips.right_to_wrong[0];
    assert_eq!(
        (r2w.question.as_str(), r2w.a_example, r2w.b_example),
        ("q1", 1, 2)
    );
    assert_eq!(
        (r2w.a_extracted.as_deref(), r2w.b_extracted.as_deref()),
        (Some("1"), Some("7"))
    );
    assert_eq!(flips.wrong_to_right[0].question, "q2");
    // At budget 0 everything was wrong in both: nothing flipped.
    let first: still_api::EvalFlips = api
        .get(&format!(
            "/api/evals/{}/flips/{}?budget_a=0&budget_b=0",
            a.id, b.id
        ))
        .await
        .ok();
    assert_eq!(
        (
            first.both_wrong,
            first.n_right_to_wrong,
            first.n_wrong_to_right
        ),
        (4, 0, 0)
    );
    // A budget an eval does not have is named; an unknown eval is a 404.
    let bad = api
        .get(&format!("/api/evals/{}/flips/{}?budget_b=2", a.id, b.id))
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.error().message.contains("budget_b"), "{}", bad.text);
    assert_eq!(
        api.get(&format!("/api/evals/{}/flips/999", a.id))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn an_eval_with_a_limit_sends_its_worker_only_the_rows_it_grades() {
    let (server, api) = server_with_model(|_| {}).await;
    let created: EvalSummary = api
        .post(
            "/api/evals",
            json!({"model": "tiny", "dataset": "add", "limit": 5,
                   "budgets": [{"max_thinking_tokens": 8}]}),
        )
        .await
        .ok();
    let (worker, token) = still_backend::jobs::workers::create_worker(server.pool(), "reader")
        .await
        .unwrap();
    let claimed = still_backend::kinds::claim(server.pool(), worker, 30)
        .await
        .unwrap()
        .expect("the eval job is queued");
    assert!(
        matches!(&claimed.work, still_api::JobWork::Eval(w) if w.eval_id == created.id),
        "{claimed:?}"
    );
    let rows = api
        .worker(&token)
        .get(&format!("/api/worker/jobs/{}/eval/dataset", claimed.job_id))
        .await;
    assert_eq!(rows.status, 200, "{}", rows.text);
    // The dataset holds 64 rows; the eval grades 5, and only those 5 travel.
    assert_eq!(api.dataset("add").await.n_rows, 64);
    let lines: Vec<&str> = rows.text.lines().collect();
    assert_eq!(lines.len(), 5, "{}", rows.text);
    let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert!(first["question"].is_string(), "{first}");
    server.stop().await;
}
