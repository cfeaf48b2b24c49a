//! Teacher trace generation on the queue: real server, real worker processes, real SQLite. A
//! generation asks the studio's own `/v1` (the endpoint teacher), a registry model (the engine
//! teacher) and a flaky third-party stand-in (429s and 500s, a refused row, a worker killed with
//! SIGKILL mid-way, rejection sampling); what is refused before anything is queued; the API key
//! never comes back.

use std::time::Duration;

use serde_json::{Value, json};
use still_api::{Example, ExamplePage, GenerationRow, GenerationSummary};
use still_tests::{Api, FakeTeacher, FakeTeacherConfig, TestServer, wait_until};

async fn generation(api: &Api, id: i64) -> GenerationSummary {
    api.get(&format!("/api/generations/{id}")).await.ok()
}

async fn wait_for_generation(api: &Api, id: i64, within: Duration) -> GenerationSummary {
    wait_until(
        within,
        || generation(api, id),
        |g| matches!(g.status.as_str(), "succeeded" | "failed" | "cancelled"),
    )
    .await
}

async fn output_rows(api: &Api, name: &str) -> Vec<Example> {
    let page: ExamplePage = api.examples(name, "limit=500").await;
    let mut out = Vec::new();
    for item in page.items {
        out.push(api.example(item.id).await);
    }
    out
}

#[tokio::test]
async fn a_generation_against_the_studios_own_v1_fills_a_dataset_with_thinking_and_answer_apart() {
    let (server, api) = still_tests::server_with_tiny_model(|_| {}).await;
    let (_, token) = still_backend::http::tokens::create(server.pool(), 1, "teacher")
        .await
        .unwrap();
    let created = api
        .post(
            "/api/generations",
            json!({"dataset": "add", "limit": 6, "n": 2, "temperature": 0.9, "seed": 7,
                   "max_tokens": 16, "max_thinking_tokens": 10,
                   "teacher": {"base_url": format!("{}/v1/", server.url), "model": "tiny",
                               "api_key": token}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let created: GenerationSummary = created.ok();
    assert_eq!(created.output_dataset_name.as_deref(), Some("add-traces"));
    assert_eq!(created.counts.total, 12);
    // The key is stored, never returned: only its last four characters.
    assert_eq!(
        created.teacher.api_key_hint.as_deref(),
        Some(format!("…{}", &token[token.len() - 4..]).as_str())
    );
    let listed = api.get("/api/generations").await;
    assert!(
        !listed.text.contains(&token),
        "the key leaked: {}",
        listed.text
    );
    assert_eq!(
        created.teacher.base_url.as_deref(),
        Some(format!("{}/v1", server.url).as_str())
    );

    let dir = tempfile::tempdir().unwrap();
    let mut worker = api.start_worker(&server, dir.path()).await;
    let done = wait_for_generation(&api, created.id, Duration::from_secs(180)).await;
    worker.kill().await.unwrap();
    assert_eq!(done.status, "succeeded", "{done:?}");
    assert_eq!(
        (
            done.counts.done,
            done.counts.ok,
            done.counts.kept,
            done.counts.failed
        ),
        (12, 12, 12, 0)
    );
    assert!(done.counts.prompt_tokens > 12 * 5, "{:?}", done.counts);
    assert!(done.counts.completion_tokens >= 12, "{:?}", done.counts);
    assert_eq!(done.output_version, Some(1));
    let single = api.get(&format!("/api/generations/{}", done.id)).await;
    assert!(!single.text.contains(&token));

    // The output dataset: one row per (question, sample), question and reference kept, the
    // thinking and answer the studio's /v1 returned apart, the provenance in the metadata.
    let source = output_rows(&api, "add").await;
    let rows = output_rows(&api, "add-traces").await;
    assert_eq!(rows.len(), 12);
    let generated: Vec<GenerationRow> = api
        .get(&format!("/api/generations/{}/rows?limit=100", done.id))
        .await
        .ok();
    assert_eq!(generated.len(), 12);
    for row in &rows {
        let meta = &row.fields.metadata["generation"];
        let index = meta["source"]["row"].as_u64().unwrap() as usize;
        assert!(index < 6, "{meta}");
        assert_eq!(row.fields.question, source[index].fields.question);
        assert_eq!(meta["reference_answer"], json!(source[index].fields.answer));
        assert_eq!(meta["teacher"]["kind"], "openai");
        assert_eq!(meta["teacher"]["model"], "tiny");
        assert_eq!(meta["sampling"]["temperature"], json!(0.9));
        assert_eq!(meta["sampling"]["max_thinking_tokens"], json!(10));
        assert_eq!(meta["source"]["dataset"], "add");
        // Still's /v1 returns the thinking in `reasoning_content`, so that is how it split.
        assert_eq!(meta["split"], "reasoning_content", "{meta}");
        let stored = generated
            .iter()
            .find(|g| g.example_id == Some(row.id))
            .expect("each output row comes from a generated row");
        assert_eq!(stored.record["thinking"], json!(row.fields.thinking));
        assert_eq!(stored.record["answer"], json!(row.fields.answer));
    }
    // Sampled at 0.9 with a seed per row and sample, the two samples of a question differ.
    let distinct: std::collections::HashSet<&str> =
        rows.iter().map(|r| r.fields.thinking.as_str()).collect();
    assert!(distinct.len() > 6, "{distinct:?}");
    // Budget forcing went through the extra body field: thinking was cut with s1's answer cue.
    assert!(
        rows.iter()
            .any(|r| r.fields.answer.starts_with("Final Answer:")),
        "{:?}",
        rows.iter().map(|r| &r.fields.answer).collect::<Vec<_>>()
    );
    // The source dataset lists the generation; so does the output.
    let from: Vec<GenerationSummary> = api.get("/api/generations?dataset=add").await.ok();
    let into: Vec<GenerationSummary> = api.get("/api/generations?dataset=add-traces").await.ok();
    assert_eq!((from.len(), into.len()), (1, 1));
    server.stop().await;
}

#[tokio::test]
async fn a_registry_teacher_writes_traces_with_the_engine_on_a_worker() {
    let (server, api) = still_tests::server_with_tiny_model(|_| {}).await;
    let created: GenerationSummary = api
        .post(
            "/api/generations",
            json!({"dataset": "add", "limit": 5, "teacher": {"model": "tiny"},
                   "max_tokens": 12, "max_thinking_tokens": 6, "output": "tiny-traces",
                   "name": "tiny teaches"}),
        )
        .await
        .ok();
    assert_eq!(created.teacher.kind, "model");
    assert_eq!(created.teacher.api_key_hint, None);
    let dir = tempfile::tempdir().unwrap();
    let mut worker = api.start_worker(&server, dir.path()).await;
    let done = wait_for_generation(&api, created.id, Duration::from_secs(180)).await;
    worker.kill().await.unwrap();
    assert_eq!(done.status, "succeeded", "{done:?}");
    assert_eq!((done.counts.ok, done.counts.kept), (5, 5));
    let rows = output_rows(&api, "tiny-traces").await;
    assert_eq!(rows.len(), 5);
    let generated: Vec<GenerationRow> = api
        .get(&format!("/api/generations/{}/rows", done.id))
        .await
        .ok();
    for g in &generated {
        assert_eq!(g.record["split"], "budget_forcing");
        // Thinking cut at 6 tokens at most; the answer up to 12.
        assert!(g.completion_tokens <= 6 + 12 + 8, "{g:?}");
        assert!(g.prompt_tokens > 0);
    }
    let log: Vec<still_api::RunLogEntry> = api
        .get(&format!("/api/generations/{}/logs", done.id))
        .await
        .ok();
    assert!(
        log.iter().any(|l| l
            .message
            .contains("asking registry model 'tiny' about 5 rows")),
        "{log:#?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_flaky_teacher_is_retried_and_a_killed_worker_resumes_without_paying_twice() {
    let (server, api) = still_tests::server_with_tiny_model(|c| c.lease_seconds = 2).await;
    let source = output_rows(&api, "add").await;
    // A stand-in that fails each question twice first and refuses one outright (400).
    let teacher = FakeTeacher::start(FakeTeacherConfig {
        fail_first: 2,
        delay: Duration::from_millis(40),
        refuse: Some(source[3].fields.question.clone()),
    })
    .await;
    let created: GenerationSummary = api
        .post(
            "/api/generations",
            json!({"dataset": "add", "limit": 40, "keep": "correct", "concurrency": 2,
                   "prompt": "Solve: {question}", "max_retries": 4,
                   "teacher": {"base_url": teacher.url, "model": "fake-r1",
                               "api_key": FakeTeacher::KEY}}),
        )
        .await
        .ok();
    let dir = tempfile::tempdir().unwrap();
    let mut first = api.start_worker(&server, dir.path()).await;
    let partway = wait_until(
        Duration::from_secs(120),
        || generation(&api, created.id),
        |g| g.counts.done >= 8 || !matches!(g.status.as_str(), "queued" | "running"),
    )
    .await;
    first.kill().await.unwrap(); // SIGKILL: the lease just stops being renewed
    assert!(
        partway.counts.done >= 8 && partway.counts.done < 40,
        "{partway:?}"
    );
    let before: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT example_index, sample_index FROM generation_rows WHERE generation_id = ? AND attempt = 1",
    )
    .bind(created.id)
    .fetch_all(server.pool())
    .await
    .unwrap();
    let mut second = api.start_worker(&server, dir.path()).await;
    let done = wait_for_generation(&api, created.id, Duration::from_secs(240)).await;
    second.kill().await.unwrap();
    assert_eq!(done.status, "succeeded", "{done:?}");

    // Every row stored once; the refused one recorded with the endpoint's message.
    assert_eq!(done.counts.done, 40);
    assert_eq!(done.counts.failed, 1, "{:?}", done.counts);
    let failed: Vec<GenerationRow> = api
        .get(&format!("/api/generations/{}/rows?status=failed", done.id))
        .await
        .ok();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].example_index, 3);
    assert!(
        failed[0]
            .error
            .as_deref()
            .unwrap()
            .contains("HTTP 400: This model's maximum context length"),
        "{failed:?}"
    );
    // Rejection sampling: the stand-in is right exactly when `a` is even.
    let right = |q: &str| {
        let a: u64 = q
            .trim_start_matches("What is ")
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        a.is_multiple_of(2)
    };
    let expected_kept = source[..40]
        .iter()
        .enumerate()
        .filter(|(i, r)| *i != 3 && right(&r.fields.question))
        .count() as i64;
    assert!(expected_kept > 5 && expected_kept < 35, "{expected_kept}");
    assert_eq!(done.counts.kept, expected_kept, "{:?}", done.counts);
    assert_eq!(done.counts.graded, 39);
    assert_eq!(done.counts.correct, expected_kept);
    let share = done.kept_share.unwrap();
    assert!((share - expected_kept as f64 / 39.0).abs() < 1e-9);
    let rows = output_rows(&api, &done.output_dataset_name.clone().unwrap()).await;
    assert_eq!(rows.len() as i64, expected_kept);
    for row in &rows {
        assert!(right(&row.fields.question), "{}", row.fields.question);
        let meta = &row.fields.metadata["generation"];
        assert_eq!(meta["correct"], json!(true));
        assert_eq!(meta["prompt"], "Solve: {question}");
        assert!(
            row.fields.thinking.starts_with("I add "),
            "{}",
            row.fields.thinking
        );
        assert!(
            row.fields.answer.contains("\\boxed{"),
            "{}",
            row.fields.answer
        );
        assert!(matches!(
            meta["split"].as_str(),
            Some("reasoning_content" | "think_tags")
        ));
    }
    let splits: std::collections::HashSet<&str> = rows
        .iter()
        .map(|r| r.fields.metadata["generation"]["split"].as_str().unwrap())
        .collect();
    assert_eq!(splits.len(), 2, "both kinds of thinking came apart");

    // Retried: each question failed twice (429, then 500) before it was answered.
    assert!(teacher.state.count(429) >= 40 && teacher.state.count(500) >= 40);
    let log: Vec<still_api::RunLogEntry> = api
        .get(&format!("/api/generations/{}/logs", done.id))
        .await
        .ok();
    assert!(
        log.iter().any(|l| l
            .message
            .contains("HTTP 429: Rate limit reached; retry 1 of 4")),
        "{log:#?}"
    );
    assert!(
        log.iter().any(|l| l.attempt == 2
            && l.message.contains(" of 40 already stored")
            && !l.message.contains(": 0 of 40")),
        "{log:#?}"
    );
    // Never paid twice for a stored row: each row the first attempt stored was answered once.
    for (example, _) in &before {
        let question = format!("Solve: {}", source[*example as usize].fields.question);
        if *example != 3 {
            assert_eq!(teacher.state.answered(&question), 1, "{question}");
        }
    }
    // Answered twice at most: the requests in flight at the kill (concurrency 2) and the rows
    // of the upload in transit (answered while the previous upload was sent: as many again).
    let answered = teacher.state.total_answered();
    assert!((39..=39 + 2 * 2).contains(&answered), "{answered}");
    teacher.stop();
    server.stop().await;
}

#[tokio::test]
async fn an_endpoint_that_refuses_the_key_fails_the_generation_with_the_reason() {
    let (server, api) = still_tests::server_with_tiny_model(|_| {}).await;
    let teacher = FakeTeacher::start(FakeTeacherConfig::default()).await;
    let created: GenerationSummary = api
        .post(
            "/api/generations",
            json!({"dataset": "add", "limit": 3,
                   "teacher": {"base_url": teacher.url, "model": "fake", "api_key": "sk-wrong"}}),
        )
        .await
        .ok();
    let dir = tempfile::tempdir().unwrap();
    let mut worker = api.start_worker(&server, dir.path()).await;
    let done = wait_for_generation(&api, created.id, Duration::from_secs(120)).await;
    worker.kill().await.unwrap();
    assert_eq!(done.status, "failed", "{done:?}");
    let error = done.error.unwrap_or_default();
    assert!(
        error.contains("HTTP 401: the endpoint refused the API key: Incorrect API key provided"),
        "{error}"
    );
    // Nothing was recorded as a row: a bad key is not the rows' fault.
    assert_eq!(done.counts.done, 0);
    teacher.stop();
    server.stop().await;
}

#[tokio::test]
async fn bad_generations_are_refused_with_the_field_named_and_nothing_queued() {
    let (server, api) = still_tests::server_with_tiny_model(|_| {}).await;
    let ok = json!({"dataset": "add", "teacher": {"model": "tiny"}});
    let with = |patch: Value| {
        let mut body = ok.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases = [
        (json!({"teacher": {"model": ""}}), 400, "teacher.model"),
        (
            json!({"teacher": {"model": "x", "base_url": "ftp://h/v1"}}),
            400,
            "teacher.base_url: 'ftp://h/v1' does not start with http:// or https://",
        ),
        (
            json!({"teacher": {"model": "x", "base_url": "http://h/v1/chat/completions"}}),
            400,
            "/chat/completions is added",
        ),
        (
            json!({"teacher": {"model": "tiny", "api_key": "sk-1"}}),
            400,
            "teacher.api_key: a key goes with teacher.base_url",
        ),
        (
            json!({"prompt": "Answer this."}),
            400,
            "prompt: the template has no {question}",
        ),
        (json!({"n": 17}), 400, "n: 17 is not in 1..=16"),
        (
            json!({"n": 3, "temperature": 0.0}),
            400,
            "3 samples at temperature 0 would be the same trace 3 times",
        ),
        (json!({"top_p": 0.0}), 400, "top_p: 0 is not in (0, 1]"),
        (json!({"max_tokens": 0}), 400, "max_tokens: 0 is not in"),
        (
            json!({"concurrency": 65}),
            400,
            "concurrency: 65 is not in 1..=64",
        ),
        (
            json!({"preset": "essay"}),
            400,
            "preset: unknown answer preset",
        ),
        (json!({"keep": "some"}), 400, "keep: unknown variant `some`"),
        (json!({"limit": 0}), 400, "limit: ask about at least 1 row"),
        (
            json!({"teacher": {"model": "nope"}}),
            404,
            "teacher.model: no registry model 'nope'",
        ),
        (json!({"dataset": "nope"}), 404, "dataset 'nope'"),
        (
            json!({"output": "add"}),
            409,
            "output: a dataset named 'add' exists",
        ),
    ];
    for (patch, status, message) in cases {
        let reply = api.post("/api/generations", with(patch.clone())).await;
        assert_eq!(reply.status, status, "{patch}: {}", reply.text);
        assert!(reply.text.contains(message), "{patch}: {}", reply.text);
    }
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(server.pool())
        .await
        .unwrap();
    let generations: i64 = sqlx::query_scalar("SELECT count(*) FROM generations")
        .fetch_one(server.pool())
        .await
        .unwrap();
    assert_eq!((jobs, generations), (0, 0));
    // The output dataset of a refused request was not left behind.
    assert_eq!(api.datasets().await.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_generation_that_is_not_running_lists_and_cancels() {
    let server = TestServer::start().await;
    let api = Api::new(&server);
    api.import_addition("q", 4).await;
    let teacher = FakeTeacher::start(FakeTeacherConfig::default()).await;
    let created: GenerationSummary = api
        .post(
            "/api/generations",
            json!({"dataset": "q", "teacher": {"base_url": teacher.url, "model": "m"}}),
        )
        .await
        .ok();
    assert_eq!(created.status, "queued");
    assert_eq!(created.name, "m on q");
    assert_eq!(created.teacher.api_key_hint, None);
    let cancelled: GenerationSummary = api
        .post_empty(&format!("/api/generations/{}/cancel", created.id))
        .await
        .ok();
    assert_eq!(cancelled.status, "cancelled");
    let again: GenerationSummary = api
        .post(
            "/api/generations",
            json!({"dataset": "q", "teacher": {"base_url": teacher.url, "model": "m", "api_key": "sk-short"}}),
        )
        .await
        .ok();
    assert_eq!(again.name, "m on q (2)");
    // A short key is not shown even in part.
    assert_eq!(again.teacher.api_key_hint.as_deref(), Some("…"));
    assert_eq!(again.output_dataset_name.as_deref(), Some("q-traces (2)"));
    teacher.stop();
    server.stop().await;
}

/// Registers a tiny generation-only teacher written by `still_teacher::tiny` with the Qwen2.5
/// tokenizer the repository carries.
async fn register_tiny_teacher(
    api: &Api,
    dir: &std::path::Path,
    name: &str,
    arch: still_teacher::Arch,
    format: still_teacher::Format,
) -> still_api::ModelSummary {
    let folder = dir.join(name);
    still_teacher::tiny::Tiny::new(arch, format, 151_936)
        .write(
            &folder,
            &still_tests::test_data("tokenizers/qwen2.5/tokenizer.json"),
        )
        .unwrap();
    api.post(
        "/api/models",
        json!({"name": name, "path": folder.to_string_lossy()}),
    )
    .await
    .ok()
}

#[tokio::test]
async fn generation_only_teachers_of_other_architectures_write_traces_through_candle_transformers()
{
    let (server, api) = still_tests::server_with_tiny_model(|_| {}).await;
    let models = tempfile::tempdir().unwrap();
    use still_teacher::{Arch, Format};
    let llama = register_tiny_teacher(
        &api,
        models.path(),
        "llama-teacher",
        Arch::Llama,
        Format::Safetensors,
    )
    .await;
    let qwen3 =
        register_tiny_teacher(&api, models.path(), "qwen3-q8", Arch::Qwen3, Format::Gguf).await;
    assert_eq!(
        (llama.arch.as_str(), llama.format.as_str()),
        ("llama", "safetensors")
    );
    assert_eq!(
        (qwen3.arch.as_str(), qwen3.format.as_str()),
        ("qwen3", "gguf")
    );
    assert!(llama.generation_only() && qwen3.generation_only());
    assert_eq!(qwen3.vocab_size, 151_936);
    let tiny = api.model("tiny").await;
    assert_eq!(
        (tiny.arch.as_str(), tiny.generation_only()),
        ("qwen2", false)
    );

    // Llama: two sampled answers per question; Qwen3 GGUF: greedy, thinking cut at 8 tokens.
    let sampled: GenerationSummary = api
        .post(
            "/api/generations",
            json!({"dataset": "add", "limit": 3, "n": 2, "teacher": {"model": "llama-teacher"},
                   "temperature": 0.9, "seed": 11, "max_tokens": 16, "output": "llama-traces"}),
        )
        .await
        .ok();
    let budgeted: GenerationSummary = api
        .post(
            "/api/generations",
            json!({"dataset": "add", "limit": 3, "teacher": {"model": qwen3.id.to_string()},
                   "max_tokens": 24, "max_thinking_tokens": 8, "output": "qwen3-traces",
                   "system": "Think step by step."}),
        )
        .await
        .ok();
    let dir = tempfile::tempdir().unwrap();
    let mut worker = api.start_worker(&server, dir.path()).await;
    let sampled = wait_for_generation(&api, sampled.id, Duration::from_secs(180)).await;
    let budgeted = wait_for_generation(&api, budgeted.id, Duration::from_secs(180)).await;
    worker.kill().await.unwrap();
    assert_eq!(sampled.status, "succeeded", "{sampled:?}");
    assert_eq!(budgeted.status, "succeeded", "{budgeted:?}");
    assert_eq!((sampled.counts.ok, sampled.counts.kept), (6, 6));
    assert_eq!((budgeted.counts.ok, budgeted.counts.kept), (3, 3));

    let rows = |id: i64| {
        let api = &api;
        async move {
            let rows: Vec<GenerationRow> =
                api.get(&format!("/api/generations/{id}/rows")).await.ok();
            rows
        }
    };
    let llama_rows = rows(sampled.id).await;
    assert_eq!(llama_rows.len(), 6);
    for g in &llama_rows {
        // A model with random weights writes no tags: all of it is the answer, 16 tokens.
        assert_eq!(g.record["split"], "none", "{g:?}");
        assert_eq!(g.record["finish"], "length", "{g:?}");
        assert_eq!(g.completion_tokens, 16);
        assert!(!g.record["answer"].as_str().unwrap().is_empty());
    }
    for pair in llama_rows.chunks(2) {
        assert_eq!(pair[0].example_index, pair[1].example_index);
        assert_ne!(
            pair[0].record["answer"], pair[1].record["answer"],
            "two samples of one question differ"
        );
    }
    let qwen3_rows = rows(budgeted.id).await;
    assert_eq!(qwen3_rows.len(), 3);
    for g in &qwen3_rows {
        assert_eq!(g.record["split"], "think_tags", "{g:?}");
        assert_eq!(g.record["finish"], "thinking_cut", "{g:?}");
        assert!(!g.record["thinking"].as_str().unwrap().is_empty(), "{g:?}");
        assert!(
            g.completion_tokens <= 24 && g.completion_tokens > 8,
            "{g:?}"
        );
    }
    // The output datasets carry thinking and answer, and the teacher in each row's metadata.
    let out = output_rows(&api, "qwen3-traces").await;
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|e| !e.fields.thinking.is_empty()));
    assert!(
        out[0].fields.metadata.to_string().contains("qwen3-q8"),
        "{}",
        out[0].fields.metadata
    );
    let log: Vec<still_api::RunLogEntry> = api
        .get(&format!("/api/generations/{}/logs", budgeted.id))
        .await
        .ok();
    assert!(
        log.iter().any(|l| l.message.contains("qwen3 model in gguf")
            && l.message.contains("candle-transformers")),
        "{log:#?}"
    );

    // Not a student, not a KD teacher, not evaluated here: each refusal names why.
    for body in [
        json!({"name": "s", "dataset": "add", "model": "llama-teacher", "method": "sft"}),
        json!({"name": "k", "dataset": "add", "model": "tiny", "method": "kd", "teacher": "qwen3-q8"}),
    ] {
        let r = api.post("/api/runs", body).await;
        assert_eq!(r.status, 422, "{}", r.text);
        assert!(r.message().contains("generation-only"), "{}", r.text);
    }
    let r = api
        .post(
            "/api/evals",
            json!({"model": "qwen3-q8", "dataset": "add", "budgets": [{"max_thinking_tokens": 4}]}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.message().contains("generation-only"), "{}", r.text);

    // A folder that is not a teacher is refused with the file and the reason.
    let bad = models.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("config.json"),
        r#"{"model_type": "gemma", "vocab_size": 10}"#,
    )
    .unwrap();
    let r = api
        .post(
            "/api/models",
            json!({"name": "bad", "path": bad.to_string_lossy()}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.message().contains("'gemma'") && r.message().contains("config.json"),
        "{}",
        r.text
    );
    server.stop().await;
}

#[tokio::test]
async fn the_full_gsm8k_test_split_twice_over_is_asked_once_per_row_and_graded() {
    let server = TestServer::start().await;
    let api = Api::new(&server);
    let path = still_tests::test_data("gsm8k/test.jsonl");
    let reply = api
        .import(&path, &[("name", "gsm8k-test"), ("preset", "gsm8k")])
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    // What the rejection sampling must keep, worked out here from the file itself.
    let mut expected_kept = 0i64;
    let mut questions = 0i64;
    for line in std::fs::read_to_string(&path).unwrap().lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        let label = row["answer"].as_str().unwrap();
        let label = label.rsplit("####").next().unwrap().trim().replace(',', "");
        if label.parse::<u64>().ok()
            == Some(FakeTeacher::answer(row["question"].as_str().unwrap()).2)
        {
            expected_kept += 2;
        }
        questions += 1;
    }
    assert_eq!(questions, 1319);
    assert!(
        expected_kept > 0,
        "the stand-in gets some GSM8K questions right"
    );

    let teacher = FakeTeacher::start(FakeTeacherConfig::default()).await;
    let created: GenerationSummary = api
        .post(
            "/api/generations",
            json!({"dataset": "gsm8k-test", "n": 2, "keep": "correct", "preset": "gsm8k",
                   "concurrency": 8, "output": "gsm8k-traces",
                   "teacher": {"base_url": teacher.url, "model": "fake-r1",
                               "api_key": FakeTeacher::KEY}}),
        )
        .await
        .ok();
    assert_eq!(created.counts.total, 2 * 1319);
    let dir = tempfile::tempdir().unwrap();
    let mut worker = api.start_worker(&server, dir.path()).await;
    let done = wait_for_generation(&api, created.id, Duration::from_secs(600)).await;
    worker.kill().await.unwrap();
    assert_eq!(done.status, "succeeded", "{done:?}");
    let c = done.counts;
    assert_eq!(
        (c.done, c.ok, c.failed, c.graded),
        (2638, 2638, 0, 2638),
        "{c:?}"
    );
    assert_eq!((c.correct, c.kept), (expected_kept, expected_kept), "{c:?}");
    // Asked once per (question, sample): nothing paid for twice.
    assert_eq!(teacher.state.total_answered(), 2638);

    // Every row, page by page through the `after` cursor, each sample once.
    let mut seen = std::collections::HashSet::new();
    let mut after = String::new();
    loop {
        let page: Vec<GenerationRow> = api
            .get(&format!(
                "/api/generations/{}/rows?limit=500{after}",
                done.id
            ))
            .await
            .ok();
        let Some(last) = page.last() else { break };
        after = format!("&after={}:{}", last.example_index, last.sample_index);
        for g in &page {
            assert!(
                seen.insert((g.example_index, g.sample_index)),
                "{g:?} twice"
            );
            assert_eq!(g.kept, g.correct == Some(true));
        }
    }
    assert_eq!(seen.len(), 2638);
    let output: still_api::DatasetSummary = api.get("/api/datasets/gsm8k-traces").await.ok();
    assert_eq!(output.n_rows, expected_kept, "{output:?}");
    teacher.stop();
    server.stop().await;
}
