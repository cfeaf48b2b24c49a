//! Curation through the API on a real server: a recipe's stages on crafted rows (each rule's
//! drops browsable with its reason, the decontamination stage against the real MATH-500), the
//! output's versions with their diff and lineage, the same seed giving the same version, saved
//! recipes re-run on another dataset, bad requests; the difficulty stage with a tiny model on a
//! real worker; and the s1 recipe on the full GSM8K train split.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use still_api::{
    CurationSummary, DatasetVersion, DroppedPage, QualityPreview, SavedRecipe, VersionDiff,
    VersionLineage,
};
use still_tests::{Api, TestServer, test_data, wait_until};

async fn wait_for(api: &Api, id: i64, within: Duration) -> CurationSummary {
    wait_until(
        within,
        || async move { api.get(&format!("/api/curations/{id}")).await.ok() },
        |c: &CurationSummary| matches!(c.status.as_str(), "succeeded" | "failed" | "cancelled"),
    )
    .await
}

fn write_jsonl(dir: &Path, name: &str, rows: &[serde_json::Value]) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.jsonl"));
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

fn math500_problems() -> Vec<String> {
    std::fs::read_to_string(test_data("math500/test.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["problem"].as_str().unwrap().to_string()
        })
        .collect()
}

/// 40 clean rows in 4 domains with growing traces, and one row per rule.
fn crafted_rows() -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    let domains = ["algebra", "geometry", "counting", "number theory"];
    for i in 0..40 {
        let d = domains[i % 4];
        rows.push(json!({
            "question": format!("In {d} problem {i}, find the value of x when {i} x plus {} equals {}.", i + 3, 7 * i + 1),
            "thinking": "We move terms and divide. ".repeat(2 + i),
            "answer": format!("{i}"),
            "domain": d,
            "tags": if i < 3 { json!(["seed"]) } else { json!([]) },
        }));
    }
    let first = rows[0]["question"].as_str().unwrap().to_string();
    let math = math500_problems();
    let span: Vec<String> = math[10]
        .split_whitespace()
        .take(14)
        .map(String::from)
        .collect();
    rows.extend([
        json!({"question": "What is 5 + 5?", "thinking": "ten", "answer": "", "domain": "algebra"}),
        json!({"question": "What is 6 + 6?", "thinking": "Error code: 429 rate limit exceeded", "answer": "12", "domain": "algebra"}),
        json!({"question": "In ![figure](f.png) find the area.", "thinking": "area", "answer": "3", "domain": "geometry"}),
        json!({"question": "p1. Show that n^2 + n is even.", "thinking": "parity", "answer": "even", "domain": "number theory"}),
        json!({"question": format!("  {first} "), "thinking": "again", "answer": "0", "domain": "algebra"}),
        json!({"question": first.replace("find the value", "find the exact value"), "thinking": "again", "answer": "0", "domain": "algebra"}),
        json!({"question": format!("Warm up. {}", span.join(" ")), "thinking": "copied", "answer": "1", "domain": "geometry"}),
    ]);
    rows
}

fn recipe(target: u32) -> serde_json::Value {
    json!({"stages": [
        {"stage": "quality", "near_duplicates": {"threshold": 0.7, "shingle_words": 2}},
        {"stage": "decontamination", "against": ["math500"]},
        {"stage": "diversity", "domain": {"field": "domain"}, "target": target}
    ]})
}

#[tokio::test]
async fn a_recipe_drops_each_rule_s_rows_cuts_a_version_per_stage_and_reproduces_itself() {
    let server = TestServer::start().await;
    let api = Api::new(&server);
    let dir = tempfile::tempdir().unwrap();
    let rows = crafted_rows();
    let path = write_jsonl(dir.path(), "crafted", &rows);
    assert_eq!(api.import(&path, &[("name", "crafted")]).await.status, 201);
    assert_eq!(
        api.import(&test_data("math500/test.jsonl"), &[("name", "math500")])
            .await
            .status,
        201
    );

    // The preview counts each rule before anything runs.
    let preview: QualityPreview = api
        .post(
            "/api/curations/preview",
            json!({"dataset": "crafted", "quality": {"near_duplicates": {"threshold": 0.7, "shingle_words": 2}}}),
        )
        .await
        .ok();
    assert_eq!(preview.n_rows, 47);
    let count = |rule: &str| preview.rules.iter().find(|r| r.rule == rule).map(|r| r.n);
    for rule in [
        "missing_field",
        "api_error",
        "image_reference",
        "numbering_artifact",
        "exact_duplicate",
    ] {
        assert_eq!(count(rule), Some(1), "{rule}: {:?}", preview.rules);
    }
    assert!(count("near_duplicate").unwrap() >= 1, "{:?}", preview.rules);
    assert_eq!(preview.n_removed, 6);
    assert!(preview.trace_tokens.max > preview.trace_tokens.min);
    // Without a domain source it counts the `domain` field; no keep tag, no tagged rows.
    let domains = |p: &QualityPreview| -> Vec<(String, i64)> {
        p.domains.iter().map(|d| (d.domain.clone(), d.n)).collect()
    };
    let by_field = vec![
        ("algebra".to_string(), 14),
        ("geometry".to_string(), 12),
        ("number theory".to_string(), 11),
        ("counting".to_string(), 10),
    ];
    assert_eq!(domains(&preview), by_field);
    assert_eq!(preview.n_keep_tagged, 0);
    // A keyword classifier the user typed, and a seed set: counted over every row.
    let keywords: QualityPreview = api
        .post(
            "/api/curations/preview",
            json!({"dataset": "crafted",
                   "domain": {"keywords": {"domains": [
                       {"domain": "shapes", "keywords": ["AREA", "figure"]},
                       {"domain": "parity", "keywords": ["even"]}],
                       "fallback": "rest"}},
                   "keep_tag": "seed"}),
        )
        .await
        .ok();
    assert_eq!(
        domains(&keywords),
        vec![
            ("rest".to_string(), 45),
            ("parity".to_string(), 1),
            ("shapes".to_string(), 1)
        ]
    );
    assert_eq!(keywords.n_keep_tagged, 3);
    let bad = api
        .post(
            "/api/curations/preview",
            json!({"dataset": "crafted", "domain": {"keywords": {"domains": []}}}),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert!(bad.text.contains("domain.keywords.domains"), "{}", bad.text);

    let created: CurationSummary = api
        .post(
            "/api/curations",
            json!({"dataset": "crafted", "recipe": recipe(20), "seed": 11, "name": "pick"}),
        )
        .await
        .ok();
    let done = wait_for(&api, created.id, Duration::from_secs(60)).await;
    assert_eq!(done.status, "succeeded", "{:?}", done.error);
    let funnel: Vec<(&str, i64, i64)> = done
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s.n_in, s.n_out))
        .collect();
    assert_eq!(
        funnel,
        vec![
            ("quality", 47, 41),
            ("decontamination", 41, 40),
            ("diversity", 40, 20)
        ]
    );
    assert_eq!(done.source_domains.len(), 4);
    // Four domains of ten rows: the uniform domain pick gives each about a quarter.
    let last = done.stages.last().unwrap();
    assert_eq!(last.domains.iter().map(|d| d.n).sum::<i64>(), 20);
    assert!(
        last.domains.iter().all(|d| (2..=8).contains(&d.n)),
        "{:?}",
        last.domains
    );
    let output = done.output.clone().unwrap();
    assert_eq!(
        (output.dataset.as_str(), output.version, output.n_rows),
        ("pick", 3, 20)
    );
    // The output dataset holds the final rows live, and a version per stage.
    assert_eq!(api.dataset("pick").await.n_rows, 20);
    let versions: Vec<DatasetVersion> = api.get("/api/datasets/pick/versions").await.ok();
    assert_eq!(
        versions.iter().map(|v| v.n_rows).collect::<Vec<_>>(),
        vec![20, 40, 41]
    );

    // Dropped rows, each with its rule and reason.
    let drops: DroppedPage = api
        .get(&format!("/api/curations/{}/drops?stage=0", done.id))
        .await
        .ok();
    assert_eq!(drops.total, 6);
    let by_rule = |rule: &str| drops.rows.iter().find(|r| r.rule == rule).unwrap();
    assert_eq!(by_rule("missing_field").ordinal, 40);
    assert_eq!(by_rule("missing_field").detail, "answer is empty");
    assert_eq!(by_rule("api_error").fields.answer, "12");
    assert_eq!(
        by_rule("exact_duplicate").detail,
        "the same question as row 0"
    );
    assert!(by_rule("near_duplicate").detail.contains("of row 0"));
    let contaminated: DroppedPage = api
        .get(&format!(
            "/api/curations/{}/drops?rule=eval_overlap",
            done.id
        ))
        .await
        .ok();
    assert_eq!(contaminated.total, 1);
    assert_eq!(contaminated.rows[0].ordinal, 46);
    assert!(
        contaminated.rows[0].detail.contains("with math500 row 10"),
        "{}",
        contaminated.rows[0].detail
    );
    let sampled: DroppedPage = api
        .get(&format!(
            "/api/curations/{}/drops?stage=2&limit=500",
            done.id
        ))
        .await
        .ok();
    assert_eq!(sampled.total, 20);
    assert!(sampled.rows.iter().all(|r| r.rule == "not_sampled"));

    // The diff of stage 1's version and the final one: 21 rows removed, none added.
    let diff: VersionDiff = api.get("/api/datasets/pick/versions/1/diff/3").await.ok();
    assert_eq!(
        (
            diff.n_added,
            diff.n_removed,
            diff.n_changed,
            diff.n_unchanged
        ),
        (0, 21, 0, 20)
    );
    assert_eq!(diff.removed.len(), 21);
    // Lineage: the version names its curation, recipe and source.
    let lineage: VersionLineage = api.get("/api/datasets/pick/versions/3/lineage").await.ok();
    let made = lineage.made_by.unwrap();
    assert_eq!(
        (made.curation_name.as_str(), made.stage_name.as_str()),
        ("pick", "diversity")
    );
    assert_eq!(
        (made.source_dataset_name.as_str(), made.source_version),
        ("crafted", 1)
    );
    let source: VersionLineage = api
        .get("/api/datasets/crafted/versions/1/lineage")
        .await
        .ok();
    assert!(source.made_by.is_none());
    assert_eq!(source.curations.len(), 1);

    // The same recipe and seed reproduce the version exactly; another seed picks others.
    let again: CurationSummary = api
        .post(
            "/api/curations",
            json!({"dataset": "crafted", "recipe": recipe(20), "seed": 11}),
        )
        .await
        .ok();
    let again = wait_for(&api, again.id, Duration::from_secs(60)).await;
    assert_eq!(again.output.unwrap().content_hash, output.content_hash);
    let other: CurationSummary = api
        .post(
            "/api/curations",
            json!({"dataset": "crafted", "recipe": recipe(20), "seed": 12}),
        )
        .await
        .ok();
    let other = wait_for(&api, other.id, Duration::from_secs(60)).await;
    assert_ne!(other.output.unwrap().content_hash, output.content_hash);

    // A saved recipe runs by name on another dataset.
    let saved: SavedRecipe = api
        .post(
            "/api/curation-recipes",
            json!({"name": "mine", "recipe": recipe(5)}),
        )
        .await
        .ok();
    assert_eq!(saved.name, "mine");
    let copy = write_jsonl(dir.path(), "second", &rows[..30]);
    assert_eq!(api.import(&copy, &[("name", "second")]).await.status, 201);
    let by_name: CurationSummary = api
        .post(
            "/api/curations",
            json!({"dataset": "second", "recipe": "mine"}),
        )
        .await
        .ok();
    let by_name = wait_for(&api, by_name.id, Duration::from_secs(60)).await;
    assert_eq!(by_name.recipe_name.as_deref(), Some("mine"));
    assert_eq!(by_name.output.unwrap().n_rows, 5);
    let listed: Vec<SavedRecipe> = api.get("/api/curation-recipes").await.ok();
    assert_eq!(
        listed.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["s1", "mine"]
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_curations_are_refused_with_the_field_named_and_nothing_made() {
    let server = TestServer::start().await;
    let api = Api::new(&server);
    api.import_addition("add", 10).await;
    let cases = [
        (
            json!({"dataset": "nope", "recipe": "s1"}),
            404,
            "dataset 'nope'",
        ),
        (
            json!({"dataset": "add", "recipe": "unknown"}),
            404,
            "recipe 'unknown'",
        ),
        (
            json!({"dataset": "add", "recipe": {"stages": []}}),
            400,
            "recipe.stages: give 1 to",
        ),
        (
            json!({"dataset": "add", "recipe": {"stages": [{"stage": "quality", "near_duplicates": {"threshold": 1.5}}]}}),
            400,
            "recipe.stages[0].near_duplicates.threshold 1.5",
        ),
        (
            json!({"dataset": "add", "recipe": {"stages": [{"stage": "quality"}, {"stage": "quality"}]}}),
            400,
            "at most one quality stage",
        ),
        (
            json!({"dataset": "add", "recipe": {"stages": [{"stage": "decontamination", "against": ["missing"]}]}}),
            404,
            "recipe.stages[0].against[0]: dataset 'missing'",
        ),
        (
            json!({"dataset": "add", "recipe": {"stages": [{"stage": "difficulty", "models": ["ghost"]}]}}),
            404,
            "recipe.stages[0].models[0]",
        ),
        (
            json!({"dataset": "add", "recipe": {"stages": [{"stage": "quality"}]}, "target": 5}),
            400,
            "target: the recipe has no diversity stage",
        ),
        (
            json!({"dataset": "add", "recipe": {"stages": [{"stage": "quality"}], "tokenizer": "ghost"}}),
            404,
            "recipe.tokenizer",
        ),
    ];
    for (body, status, message) in cases {
        let reply = api.post("/api/curations", &body).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text);
        assert!(reply.message().contains(message), "{body}: {}", reply.text);
    }
    let unknown = api
        .post(
            "/api/curations",
            json!({"dataset": "add", "recipe": "s1", "colour": 1}),
        )
        .await;
    assert_eq!(unknown.status, 400, "{}", unknown.text);
    assert!(unknown.text.contains("colour"), "{}", unknown.text);
    let listed: Vec<CurationSummary> = api.get("/api/curations").await.ok();
    assert!(listed.is_empty());
    assert_eq!(api.datasets().await.len(), 1, "no output dataset was made");
    server.stop().await;
}

/// A real model folder whose weights are set so that greedy decoding writes `answer` (one
/// token) at every position: the layers' output projections are zero, so each position's hidden
/// state is its token's embedding; every embedding points the same way, `answer`'s twice as far,
/// and the head is tied, so `answer` has the largest logit after any token.
fn constant_answer_model(dir: &Path, answer: &str) -> std::path::PathBuf {
    use still_engine::candle::{DType, Device, Tensor};
    let texts: Vec<String> = still_engine::synth::addition(2, 64, 1)
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    let path = dir.join(format!("answers-{answer}"));
    let folder = still_engine::hf::create(&path, "tiny", &texts, 300, 0).unwrap();
    let ids = still_engine::tokenizer::encode(&folder.tokenizer, answer).unwrap();
    assert_eq!(ids.len(), 1, "'{answer}' is one token: {ids:?}");
    for (name, var) in folder.model.named_vars() {
        let shape = var.as_tensor().dims().to_vec();
        let value = if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") {
            Tensor::zeros(shape.as_slice(), DType::F32, &Device::Cpu).unwrap()
        } else if name == "model.norm.weight" {
            Tensor::ones(shape.as_slice(), DType::F32, &Device::Cpu).unwrap()
        } else if name == "model.embed_tokens.weight" {
            let (vocab, hidden) = (shape[0], shape[1]);
            let rows: Vec<f32> = (0..vocab * hidden)
                .map(|i| {
                    if i / hidden == ids[0] as usize {
                        2.0
                    } else {
                        1.0
                    }
                })
                .collect();
            Tensor::from_vec(rows, (vocab, hidden), &Device::Cpu).unwrap()
        } else {
            continue;
        };
        var.set(&value).unwrap();
    }
    folder
        .model
        .save_weights(&path.join("model.safetensors"))
        .unwrap();
    path
}

#[tokio::test]
async fn the_difficulty_stage_evaluates_its_input_version_and_drops_the_rows_the_model_solves() {
    let server = TestServer::start().await;
    let api = Api::new(&server);
    let dir = tempfile::tempdir().unwrap();
    let folder = constant_answer_model(dir.path(), "7");
    let reply = api
        .create_model(json!({"name": "always-7", "path": folder.to_str().unwrap()}))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let mut worker = api.start_worker(&server, dir.path()).await;
    let model = "always-7".to_string();
    // 16 sums, every third one 7; the odd rows name an image, so the quality stage drops them
    // first and the difficulty stage's input is a subset of the source.
    let rows: Vec<serde_json::Value> = (0..16)
        .map(|j: i64| {
            let (a, b) = if j % 3 == 0 {
                (j % 8, 7 - j % 8)
            } else {
                (j, 8)
            };
            let question = format!("What is {a} + {b}?");
            let question = if j % 2 == 1 {
                format!("![figure] {question}")
            } else {
                question
            };
            json!({"question": question, "thinking": "t", "answer": (a + b).to_string()})
        })
        .collect();
    let path = write_jsonl(dir.path(), "probe", &rows);
    assert_eq!(api.import(&path, &[("name", "probe")]).await.status, 201);
    let created: CurationSummary = api
        .post(
            "/api/curations",
            json!({"dataset": "probe", "recipe": {"stages": [
                {"stage": "quality", "near_duplicates": null, "exact_duplicates": false},
                {"stage": "difficulty", "models": [model], "max_thinking_tokens": 4, "max_answer_tokens": 1}]}}),
        )
        .await
        .ok();
    let done = wait_for(&api, created.id, Duration::from_secs(180)).await;
    worker.kill().await.unwrap();
    assert_eq!(done.status, "succeeded", "{:?}", done.error);
    assert_eq!(done.stages[1].evals.len(), 1);
    assert_eq!((done.stages[0].n_out, done.stages[1].n_in), (8, 8));
    // The stage's eval graded the quality stage's output (version 1 of the output dataset):
    // the model answered 7 to each, right on the three even rows whose sum is 7.
    let eval_id = done.stages[1].evals[0];
    let eval: still_api::EvalSummary = api.get(&format!("/api/evals/{eval_id}")).await.ok();
    assert_eq!((eval.status.as_str(), eval.n_examples), ("succeeded", 8));
    let right: Vec<still_api::EvalExample> = api
        .get(&format!(
            "/api/evals/{eval_id}/examples?correct=true&limit=100"
        ))
        .await
        .ok();
    let mut right: Vec<i64> = right.iter().map(|e| e.example_index).collect();
    right.sort();
    // Input rows 0, 3 and 6 are source rows 0, 6 and 12.
    assert_eq!(right, vec![0, 3, 6]);
    let drops: DroppedPage = api
        .get(&format!(
            "/api/curations/{}/drops?stage=1&limit=100",
            done.id
        ))
        .await
        .ok();
    let dropped: Vec<i64> = drops.rows.iter().map(|r| r.ordinal).collect();
    assert_eq!(dropped, vec![0, 6, 12]);
    assert!(
        drops
            .rows
            .iter()
            .all(|r| r.detail == format!("model '{model}' answered it right"))
    );
    let output = done.output.unwrap();
    assert_eq!(output.n_rows, 5);
    let kept = api.examples(&output.dataset, "limit=100").await;
    assert!(
        kept.items.iter().all(|r| r.answer != "7"),
        "{:?}",
        kept.items
    );
    server.stop().await;
}

#[tokio::test]
async fn the_s1_recipe_on_the_full_gsm8k_train_split_reproduces_its_version() {
    let server = TestServer::start().await;
    let api = Api::new(&server);
    let train = test_data("gsm8k/train.jsonl");
    assert_eq!(
        api.import(&train, &[("name", "gsm8k-train")]).await.status,
        201
    );
    let test = test_data("gsm8k/test.jsonl");
    assert_eq!(
        api.import(&test, &[("name", "gsm8k-test")]).await.status,
        201
    );
    let body = json!({"dataset": "gsm8k-train", "recipe": "s1", "target": 1000, "seed": 3,
                      "decontaminate_against": ["gsm8k-test"]});
    let first: CurationSummary = api.post("/api/curations", &body).await.ok();
    let first = wait_for(&api, first.id, Duration::from_secs(300)).await;
    assert_eq!(first.status, "succeeded", "{:?}", first.error);
    assert_eq!(first.source_rows, 7473);
    let names: Vec<&str> = first.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["quality", "decontamination", "diversity"]);
    assert_eq!(first.stages[0].n_in, 7473);
    assert!(
        first.stages[0].n_out < 7473 && first.stages[0].n_out > 7000,
        "{:?}",
        first.stages[0]
    );
    assert_eq!(first.stages[2].n_out, 1000);
    let second: CurationSummary = api.post("/api/curations", &body).await.ok();
    let second = wait_for(&api, second.id, Duration::from_secs(300)).await;
    assert_eq!(
        second.output.unwrap().content_hash,
        first.output.unwrap().content_hash
    );
    server.stop().await;
}

#[tokio::test]
async fn the_readme_s_curation_runs_on_the_seeded_demo_data() {
    let server = TestServer::start_with(|c| c.seed_demo = true).await;
    let api = Api::new(&server);
    // The README's request, as written there.
    let created: CurationSummary = api
        .post(
            "/api/curations",
            json!({"dataset": "gsm8k-sample", "recipe": "s1", "target": 100, "seed": 1}),
        )
        .await
        .ok();
    let done = wait_for(&api, created.id, Duration::from_secs(120)).await;
    assert_eq!(done.status, "succeeded", "{:?}", done.error);
    assert_eq!(done.source_rows, 300);
    let output = done.output.unwrap();
    assert_eq!(
        (output.dataset.as_str(), output.n_rows),
        ("gsm8k-sample-s1", 100)
    );
    server.stop().await;
}

#[tokio::test]
async fn a_dataset_a_running_curation_reads_or_writes_is_not_deleted_until_it_is_cancelled() {
    let server = TestServer::start().await;
    let api = Api::new(&server);
    let dir = tempfile::tempdir().unwrap();
    let folder = constant_answer_model(dir.path(), "7");
    let reply = api
        .create_model(json!({"name": "always-7", "path": folder.to_str().unwrap()}))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let rows: Vec<serde_json::Value> = (0..12)
        .map(|j| json!({"question": format!("What is {j} + 7?"), "thinking": "t", "answer": (j + 7).to_string()}))
        .collect();
    let path = write_jsonl(dir.path(), "source", &rows);
    assert_eq!(api.import(&path, &[("name", "source")]).await.status, 201);
    // No worker claims the difficulty stage's eval: the curation waits on it.
    let created: CurationSummary = api
        .post(
            "/api/curations",
            json!({"dataset": "source", "name": "held", "recipe": {"stages": [
                {"stage": "quality", "near_duplicates": null},
                {"stage": "difficulty", "models": ["always-7"], "max_thinking_tokens": 4}]}}),
        )
        .await
        .ok();
    let waiting: CurationSummary = wait_until(
        Duration::from_secs(30),
        || async {
            api.get(&format!("/api/curations/{}", created.id))
                .await
                .ok()
        },
        |c: &CurationSummary| c.status == "waiting",
    )
    .await;
    assert_eq!(waiting.stages[1].evals.len(), 1);
    let output = api
        .datasets()
        .await
        .into_iter()
        .find(|d| d.name != "source")
        .expect("the output dataset");

    // Neither the dataset it reads nor the one it writes can go while it runs.
    let refused = api.delete("/api/datasets/source").await;
    assert_eq!(refused.status, 409, "{}", refused.text);
    assert!(
        refused.message().contains("curation 'held'")
            && refused.message().contains("cancel or delete them first"),
        "{}",
        refused.message()
    );
    let refused = api.delete(&format!("/api/datasets/{}", output.id)).await;
    assert_eq!(refused.status, 409, "{}", refused.text);
    assert!(
        refused.message().contains("curation 'held'"),
        "{}",
        refused.message()
    );
    // The output's version 1 is pinned by the stage's eval: that keeps it after the curation.
    assert!(
        refused.message().contains("eval '"),
        "{}",
        refused.message()
    );
    assert_eq!(api.dataset("source").await.n_rows, 12);

    let cancelled = api
        .post_empty(&format!("/api/curations/{}/cancel", created.id))
        .await;
    assert!(cancelled.status < 300, "{}", cancelled.text);
    let refused = api.delete(&format!("/api/datasets/{}", output.id)).await;
    assert_eq!(refused.status, 409, "{}", refused.text);
    assert!(
        !refused.message().contains("curation"),
        "{}",
        refused.message()
    );
    // The source goes, and its curation with it.
    let deleted = api.delete("/api/datasets/source").await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let gone = api.get(&format!("/api/curations/{}", created.id)).await;
    assert_eq!(gone.status, 404, "{}", gone.text);
    server.stop().await;
}
