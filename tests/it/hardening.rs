//! Defects a new user met in the first hour, each pinned by a test that failed before its fix.

use std::time::Duration;

use serde_json::json;
use still_api::{DatasetSummary, ExamplePage, ModelSummary, RunStatus, RunSummary};
use still_tests::{Api, Reply, TestServer, spawn_worker};

fn sha256_of(path: &std::path::Path) -> String {
    still_worker::sha256_file(path).unwrap()
}

async fn server_with_addition(rows: usize) -> (TestServer, Api) {
    let server = TestServer::start().await;
    let api = Api::new(&server);
    api.import_addition("add", rows).await;
    (server, api)
}

async fn tiny_model(api: &Api, name: &str) -> ModelSummary {
    api.post(
        "/api/models",
        json!({"name": name, "preset": "tiny", "tokenizer_dataset": "add", "vocab_size": 300}),
    )
    .await
    .ok()
}

async fn sft_run(api: &Api, name: &str) -> RunSummary {
    api.post(
        "/api/runs",
        json!({"name": name, "method": "sft", "model": "tiny", "dataset": "add", "max_attempts": 1,
               "params": {"max_steps": 2, "lr": 3e-3, "batch_size": 4, "grad_accum": 1, "max_seq_len": 128}}),
    )
    .await
    .ok()
}

#[tokio::test]
async fn a_new_data_directory_holds_the_demo_the_readme_promises() {
    let server = TestServer::start_with(|c| c.seed_demo = true).await;
    let api = Api::new(&server);
    let datasets: Vec<DatasetSummary> = api.get("/api/datasets").await.ok();
    let rows = |name: &str| datasets.iter().find(|d| d.name == name).map(|d| d.n_rows);
    assert_eq!(rows("gsm8k-sample"), Some(300));
    assert_eq!(rows("addition-demo"), Some(2000));
    let model: ModelSummary = api.get("/api/models/tiny-addition").await.ok();
    assert!(model.n_params > 0 && model.vocab_size > 0, "{model:?}");
    assert!(
        std::path::Path::new(&model.path)
            .join("model.safetensors")
            .is_file()
    );
    // A first run starts from them with nothing else chosen.
    let run = api
        .post(
            "/api/runs",
            json!({"name": "first", "method": "sft", "model": "tiny-addition", "dataset": "addition-demo"}),
        )
        .await;
    assert_eq!(run.status, 201, "{}", run.body);

    // The s1 demo: its recipe names the counting traces, the held-out questions and the tiny
    // student, and evaluates the run at five thinking budgets as it trains.
    assert_eq!(rows("counting-demo"), Some(4000));
    assert_eq!(rows("counting-held-out"), Some(200));
    let student: ModelSummary = api.get("/api/models/tiny-counting").await.ok();
    assert!(student.n_params > 0);
    let mut recipe: still_api::NewRun = api.get("/api/recipes/s1-demo").await.ok();
    assert_eq!(recipe.name, "s1-demo");
    assert_eq!(
        (recipe.model.as_str(), recipe.dataset.as_str()),
        ("tiny-counting", "counting-demo")
    );
    let plan = &recipe.evals[0];
    assert_eq!(plan.dataset, "counting-held-out");
    let maxima: Vec<Option<u32>> = plan.budgets.iter().map(|b| b.max_thinking_tokens).collect();
    assert_eq!(maxima, [Some(4), Some(8), Some(16), Some(32), Some(64)]);
    assert_eq!(
        plan.every_steps.map(|n| n as usize),
        recipe.params.checkpoint_every
    );
    // Shortened here (the full demo's effect is the engine's counting test and the
    // benchmarks'): 20 steps, evaluated at step 10 and at the end, on 10 questions.
    recipe.params.max_steps = Some(20);
    recipe.params.checkpoint_every = Some(10);
    recipe.evals[0].every_steps = Some(10);
    recipe.evals[0].limit = Some(10);
    let demo: RunSummary = api.post("/api/runs", &recipe).await.ok();
    let again: still_api::NewRun = api.get("/api/recipes/s1-demo").await.ok();
    assert_eq!(again.name, "s1-demo-2", "a taken name is not offered again");
    // The first run goes first on the queue; cancel it so the worker takes the demo.
    api.cancel(run.ok::<RunSummary>().id).await;
    let dir = tempfile::tempdir().unwrap();
    let mut worker = api.start_worker(&server, dir.path()).await;
    let demo = api
        .wait_for_run(demo.id, Duration::from_secs(300), still_tests::run_finished)
        .await;
    assert_eq!(demo.status, RunStatus::Succeeded, "{demo:?}");
    let evals: Vec<still_api::EvalSummary> = still_tests::wait_until(
        Duration::from_secs(300),
        || async {
            api.get(&format!("/api/evals?run={}", demo.id))
                .await
                .ok::<Vec<still_api::EvalSummary>>()
        },
        |l: &Vec<still_api::EvalSummary>| l.len() == 2 && l.iter().all(|e| e.status == "succeeded"),
    )
    .await;
    worker.kill().await.unwrap();
    // Step 20's checkpoint holds the final weights: evaluated once, not again as "final".
    assert_eq!(
        evals.iter().map(|e| e.step).collect::<Vec<_>>(),
        [Some(10), Some(20)]
    );
    for e in &evals {
        assert_eq!((e.n_examples, e.done), (10, 50), "{e:?}");
        for (b, max) in e.budgets.iter().zip([4.0, 8.0, 16.0, 32.0, 64.0]) {
            assert!(b.mean_thinking_tokens <= max, "{b:?}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_refused_model_never_touches_another_model_s_files() {
    let (server, api) = server_with_addition(64).await;
    let first = tiny_model(&api, "a b").await;
    let weights = std::path::Path::new(&first.path).join("model.safetensors");
    let before = sha256_of(&weights);
    // The same name again: 409, and the first model's files are as they were.
    let again = api
        .post(
            "/api/models",
            json!({"name": "a b", "preset": "tiny", "tokenizer_dataset": "add", "vocab_size": 200}),
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(sha256_of(&weights), before);
    // Names that used to map to one folder get folders of their own.
    let second = tiny_model(&api, "a-b").await;
    assert_ne!(first.path, second.path);
    assert_eq!(sha256_of(&weights), before);
    // No staging folder is left behind.
    let models = server.data_dir.path().join("models");
    let names: Vec<String> = std::fs::read_dir(&models)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    server.stop().await;
}

#[tokio::test]
async fn deleting_a_dataset_a_run_used_answers_409_and_keeps_it() {
    let (server, api) = server_with_addition(32).await;
    tiny_model(&api, "tiny").await;
    sft_run(&api, "uses-add").await;
    let deleted = api.delete("/api/datasets/add").await;
    assert_eq!(deleted.status, 409, "{}", deleted.body);
    assert!(
        deleted.message().contains("used by run 'uses-add'"),
        "{}",
        deleted.message()
    );
    let still: DatasetSummary = api.get("/api/datasets/add").await.ok();
    assert_eq!(still.n_rows, 32);
    server.stop().await;
}

#[tokio::test]
async fn trash_restore_and_tags_mark_the_dataset_changed_for_the_next_run() {
    let (server, api) = server_with_addition(20).await;
    tiny_model(&api, "tiny").await;
    let first = sft_run(&api, "r1").await;
    // Nothing changed: the next run re-uses the version.
    let same = sft_run(&api, "r2").await;
    assert_eq!(same.dataset_version, first.dataset_version);
    let page: ExamplePage = api.get("/api/datasets/add/examples?limit=2").await.ok();
    let id = page.items[0].id;
    // Trash: the next run pins a new version without the row.
    assert_eq!(api.delete(&format!("/api/examples/{id}")).await.status, 200);
    let trashed = sft_run(&api, "r3").await;
    assert_eq!(trashed.dataset_version, first.dataset_version + 1);
    let versions: Vec<still_api::DatasetVersion> = api.get("/api/datasets/add/versions").await.ok();
    assert_eq!(versions[0].n_rows, 19);
    // A tag is a change too.
    let other = page.items[1].id;
    let tagged = api
        .post(
            &format!("/api/examples/{other}/tags"),
            json!({"tag": "hard"}),
        )
        .await;
    assert_eq!(tagged.status, 200);
    let after_tag = sft_run(&api, "r4").await;
    assert_eq!(after_tag.dataset_version, trashed.dataset_version + 1);
    // Restore: the trash was emptied by the version cut, so nothing comes back and nothing
    // changes; a later trash-and-restore pair is two changes.
    assert_eq!(
        api.post(&format!("/api/examples/{other}/restore"), json!({}))
            .await
            .status,
        200
    );
    let unchanged = sft_run(&api, "r5").await;
    assert_eq!(unchanged.dataset_version, after_tag.dataset_version);
    server.stop().await;
}

/// Claims `run`'s job as a fresh worker, uploads `model_dir` as its final model and completes.
async fn complete_with(server: &TestServer, api: &Api, model_dir: &std::path::Path) -> Reply {
    let (worker, token) = still_backend::jobs::workers::create_worker(server.pool(), "w")
        .await
        .unwrap();
    let job = still_backend::kinds::claim(server.pool(), worker, 30)
        .await
        .unwrap()
        .expect("a queued job");
    let worker = api.worker(&token);
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        let path = model_dir.join(file);
        let put = worker
            .put_final(
                job.job_id,
                file,
                std::fs::read(&path).unwrap(),
                &sha256_of(&path),
            )
            .await;
        assert_eq!(put.status, 200);
    }
    worker.complete(job.job_id).await
}

#[tokio::test]
async fn run_names_leave_room_for_the_final_model_and_a_taken_final_name_is_not_re_pointed() {
    let (server, api) = server_with_addition(16).await;
    let tiny = tiny_model(&api, "tiny").await;
    let long = "r".repeat(195);
    let refused = api
        .post(
            "/api/runs",
            json!({"name": long, "method": "sft", "model": "tiny", "dataset": "add"}),
        )
        .await;
    assert_eq!(refused.status, 400);
    assert!(
        refused.message().contains("at most 194 characters"),
        "{}",
        refused.message()
    );
    // 194 characters: its final model is exactly 200.
    let longest = sft_run(&api, &"r".repeat(194)).await;
    let done = complete_with(&server, &api, std::path::Path::new(&tiny.path)).await;
    assert_eq!(done.status, 200, "{}", done.text);
    let run = api.run(longest.id).await;
    assert_eq!(run.status, RunStatus::Succeeded);
    let model: ModelSummary = api.model(run.output_model_id.unwrap()).await;
    assert_eq!(model.name, format!("{}-final", "r".repeat(194)));

    // Someone already named a model `<run>-final`: the run registers another name and the
    // existing model keeps its files.
    let squatter = tiny_model(&api, "mine-final").await;
    let run = sft_run(&api, "mine").await;
    let done = complete_with(&server, &api, std::path::Path::new(&tiny.path)).await;
    assert_eq!(done.status, 200);
    let run = api.run(run.id).await;
    let model: ModelSummary = api.model(run.output_model_id.unwrap()).await;
    assert_eq!(model.name, format!("mine-final-run{}", run.id));
    let kept: ModelSummary = api.model("mine-final").await;
    assert_eq!((kept.id, kept.path), (squatter.id, squatter.path));
    server.stop().await;
}

/// Writes `tiny`'s weights as two shards and an index, with its other files, into `dir`.
fn shard(tiny: &std::path::Path, dir: &std::path::Path) {
    use still_engine::candle;
    std::fs::create_dir_all(dir).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tiny.join(f), dir.join(f)).unwrap();
    }
    let tensors =
        candle::safetensors::load(tiny.join("model.safetensors"), &candle::Device::Cpu).unwrap();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let (a, b) = names.split_at(names.len() / 2);
    let mut map = serde_json::Map::new();
    for (part, file) in [
        (a, "model-00001-of-00002.safetensors"),
        (b, "model-00002-of-00002.safetensors"),
    ] {
        let subset: std::collections::HashMap<String, candle::Tensor> = part
            .iter()
            .map(|n| ((*n).clone(), tensors[*n].clone()))
            .collect();
        candle::safetensors::save(&subset, dir.join(file)).unwrap();
        for n in part {
            map.insert((*n).clone(), json!(file));
        }
    }
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_model_trains_on_a_worker() {
    let (server, api) = server_with_addition(64).await;
    let tiny = tiny_model(&api, "tiny-single").await;
    let dir = server.data_dir.path().join("sharded");
    shard(std::path::Path::new(&tiny.path), &dir);
    let model: ModelSummary = api
        .post("/api/models", json!({"name": "tiny", "path": dir}))
        .await
        .ok();
    assert_eq!(model.n_params, tiny.n_params);
    let (_, token) = still_backend::jobs::workers::create_worker(server.pool(), "lister")
        .await
        .unwrap();
    let worker = api.worker(&token);
    let listing: Vec<String> = worker.model_files(model.id).await.ok();
    assert!(listing.contains(&"model.safetensors.index.json".to_string()));
    assert!(listing.contains(&"model-00002-of-00002.safetensors".to_string()));
    // A file the folder does not name is not served.
    let other = worker
        .get(&format!(
            "/api/worker/models/{}/files/../still.db",
            model.id
        ))
        .await;
    assert!((400..500).contains(&other.status));
    let run = sft_run(&api, "on-shards").await;
    let work = tempfile::tempdir().unwrap();
    let mut worker = spawn_worker(&server.url, &token, work.path(), &[]);
    let done = api
        .wait_for_run(run.id, Duration::from_secs(300), still_tests::run_finished)
        .await;
    assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.error);
    worker.kill().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_7b_sized_folder_registers_from_its_headers_without_reading_weights() {
    // Qwen2.5-7B's shapes in a sparse file of ~30 GB: registering reads only the header (it
    // used to load every weight in f32, which would need the whole 30 GB in memory).
    let server = TestServer::start().await;
    let api = Api::new(&server);
    let dir = server.data_dir.path().join("qwen-7b-shaped");
    std::fs::create_dir_all(&dir).unwrap();
    let config = json!({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
        "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
        "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": false
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        still_tests::test_data("tokenizers/qwen2.5/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let parsed: still_engine::config::Qwen2Config = serde_json::from_value(config).unwrap();
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, shape) in still_engine::hf::tensor_shapes(&parsed) {
        let bytes = 4 * shape.iter().product::<usize>() as u64;
        header.insert(
            name,
            json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let header = serde_json::Value::Object(header).to_string();
    let mut file = std::fs::File::create(dir.join("model.safetensors")).unwrap();
    use std::io::Write;
    file.write_all(&(header.len() as u64).to_le_bytes())
        .unwrap();
    file.write_all(header.as_bytes()).unwrap();
    file.set_len(8 + header.len() as u64 + offset).unwrap();
    drop(file);
    let started = std::time::Instant::now();
    let model: ModelSummary = api
        .post(
            "/api/models",
            json!({"name": "qwen-7b-shaped", "path": dir}),
        )
        .await
        .ok();
    assert_eq!(
        model.n_params, 7_615_616_512,
        "Qwen2.5-7B's parameter count"
    );
    assert_eq!(model.vocab_size, 152064);
    // Not a timing target: a read of 30 GB could not finish in a minute on this machine.
    assert!(started.elapsed() < Duration::from_secs(60));
    // A truncated weight file is refused with the reason.
    let short = server.data_dir.path().join("short");
    std::fs::create_dir_all(&short).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(dir.join(f), short.join(f)).unwrap();
    }
    let mut file = std::fs::File::create(short.join("model.safetensors")).unwrap();
    file.write_all(&(header.len() as u64).to_le_bytes())
        .unwrap();
    file.write_all(header.as_bytes()).unwrap();
    file.set_len(8 + header.len() as u64 + offset / 2).unwrap();
    drop(file);
    let refused = api
        .post("/api/models", json!({"name": "short", "path": short}))
        .await;
    assert_eq!(refused.status, 422);
    assert!(
        refused.message().contains("truncated"),
        "{}",
        refused.message()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_is_refused_and_changes_nothing() {
    let server = TestServer::start().await;
    let spooled = server.data_dir.path().join("tmp").join("upload-in-flight");
    std::fs::write(&spooled, b"half an upload").unwrap();
    let second = still_backend::start(
        still_backend::Config::new(server.data_dir.path()),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await;
    let err = second.err().expect("refused").to_string();
    assert!(err.contains("in use by another `still serve`"), "{err}");
    assert!(
        err.contains(&std::process::id().to_string()),
        "names the pid: {err}"
    );
    assert!(
        spooled.is_file(),
        "the first server's upload is still there"
    );
    server.stop().await;
}

#[tokio::test]
async fn other_sites_and_rebound_host_names_are_refused() {
    let (server, api) = server_with_addition(8).await;
    // Raw requests on purpose (through `Api::request`): each forges a header the guard checks.
    use reqwest::Method;
    // DNS rebinding: the request comes to 127.0.0.1 but names another host.
    let rebound = api
        .request(Method::GET, "/api/datasets")
        .header("host", "attacker.example:80")
        .send()
        .await;
    assert_eq!(rebound.status, 403);
    // A cross-site form post (a simple request: no preflight) changes nothing.
    let form = reqwest::multipart::Form::new()
        .text("name", "injected")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"{\"question\":\"x\",\"answer\":\"y\"}\n".to_vec())
                .file_name("x.jsonl"),
        );
    let posted = api
        .request(Method::POST, "/api/datasets/import")
        .header("origin", "https://attacker.example")
        .multipart(form)
        .send()
        .await;
    assert_eq!(posted.status, 403);
    let version = api
        .request(Method::POST, "/api/datasets/add/versions")
        .header("origin", "null")
        .send()
        .await;
    assert_eq!(version.status, 403);
    let versions: Vec<still_api::DatasetVersion> = api.get("/api/datasets/add/versions").await.ok();
    assert!(versions.is_empty());
    let datasets: Vec<DatasetSummary> = api.get("/api/datasets").await.ok();
    assert_eq!(datasets.len(), 1);
    // The studio's own page is answered.
    let own = api
        .request(Method::POST, "/api/datasets/add/versions")
        .header("origin", &api.base)
        .send()
        .await;
    assert_eq!(own.status, 201);
    server.stop().await;
}

#[tokio::test]
async fn small_ones_overflows_negative_steps_and_overlong_form_fields() {
    let (server, api) = server_with_addition(8).await;
    tiny_model(&api, "tiny").await;
    let run = sft_run(&api, "r").await;
    // max_points beyond the limit: a 400, not an overflow.
    let huge = api
        .get(&format!(
            "/api/runs/{}/metrics?max_points=18446744073709551615",
            run.id
        ))
        .await;
    assert_eq!(huge.status, 400, "{}", huge.body);
    // A client-given config whose sizes would overflow.
    let config = api
        .post(
            "/api/models",
            json!({"name": "big", "location": "workers", "config": {
                "model_type": "qwen2", "vocab_size": 1u64 << 40, "hidden_size": 1u64 << 40,
                "intermediate_size": 1u64 << 40, "num_hidden_layers": 1u64 << 40,
                "num_attention_heads": 1, "num_key_value_heads": 1}}),
        )
        .await;
    assert_eq!(config.status, 400, "{}", config.body);
    assert!(
        config.message().contains("must be 1..="),
        "{}",
        config.message()
    );
    // A negative checkpoint step is refused before anything is stored.
    let (worker, token) = still_backend::jobs::workers::create_worker(server.pool(), "w")
        .await
        .unwrap();
    let job = still_backend::kinds::claim(server.pool(), worker, 30)
        .await
        .unwrap()
        .unwrap();
    let put = api
        .worker(&token)
        .put(
            &format!("/api/worker/jobs/{}/checkpoints/-3/config.json", job.job_id),
            "{}",
        )
        .await;
    assert_eq!(put.status, 400);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM artifacts")
        .fetch_one(server.pool())
        .await
        .unwrap();
    assert_eq!(stored, 0);
    // Form text fields are read up to their limit, not whole. A raw form on purpose (through
    // `Api::request`): the long field comes before the file.
    let form = reqwest::multipart::Form::new()
        .text("name", "x".repeat(64 << 10))
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"{}\n".to_vec()).file_name("x.jsonl"),
        );
    let long = api
        .request(reqwest::Method::POST, "/api/datasets/import")
        .multipart(form)
        .send()
        .await;
    assert_eq!(long.status, 400);
    assert!(
        long.text
            .contains("form field 'name' is longer than 4096 bytes")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_parquet_row_over_the_row_limit_is_rejected_and_the_others_imported() {
    // Parquet rows had no size check at all.
    let server = TestServer::start_with(|c| c.limits.max_row_bytes = 64 << 10).await;
    let api = Api::new(&server);
    let row = |n: usize, thinking: String| still_tests::S1kRow {
        question: format!("question {n}"),
        thinking,
        attempt: "42".into(),
        solution: "42".into(),
        cot_type: "math".into(),
        source_type: "test".into(),
        metadata: "{}".into(),
    };
    let rows = vec![
        row(1, "short".into()),
        row(2, "x".repeat(100 << 10)),
        row(3, "short too".into()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big-row.parquet");
    still_tests::write_s1k_parquet(&path, &rows).unwrap();
    let report: still_api::ImportReport = api.import(&path, &[("name", "pq")]).await.ok();
    assert_eq!((report.n_imported, report.n_rejected), (2, 1));
    assert_eq!(report.rejected[0].record, 2);
    assert_eq!(
        report.rejected[0].reason,
        "row is longer than the 65536 byte limit"
    );
    server.stop().await;
}
