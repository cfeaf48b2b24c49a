//! The datasets API against a real server on a loopback port and a temporary SQLite file,
//! with the real files in tests/data.

use std::io::Write;

use serde_json::{Value, json};
use still_api::{
    DatasetStats, DatasetSummary, DatasetVersion, ErrorBody, Example, ExamplePage, ImportPreview,
    ImportReport, Preset,
};
use still_tests::{Api, S1kRow, TestServer, count_lines, test_data, write_s1k_parquet};

async fn import_ok(api: &Api, path: &std::path::Path, fields: &[(&str, &str)]) -> ImportReport {
    let reply = api.import(path, fields).await;
    assert_eq!(
        reply.status,
        201,
        "import of {} failed: {}",
        path.display(),
        reply.text
    );
    reply.ok()
}

async fn import_err(
    api: &Api,
    path: &std::path::Path,
    fields: &[(&str, &str)],
) -> (u16, ErrorBody) {
    let reply = api.import(path, fields).await;
    (reply.status, reply.error())
}

fn temp_file(name: &str, contents: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(contents)
        .unwrap();
    (dir, path)
}

#[tokio::test]
async fn health_answers_with_the_version() {
    let server = TestServer::start().await;
    let api = Api::new(&server);
    let health: Value = api.get("/api/health").await.ok();
    assert_eq!(
        health,
        json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")})
    );
    let missing = api.get("/api/nope").await;
    assert_eq!(missing.status, 404);
    let body: ErrorBody = missing.error();
    assert_eq!(body.code, "not_found");
    server.stop().await;
}

#[tokio::test]
async fn imports_every_real_file_with_its_preset_and_row_count() {
    let server = TestServer::start().await;
    let api = Api::new(&server);
    let cases = [
        ("gsm8k/test.jsonl", "gsm8k-test", Preset::Gsm8k),
        ("gsm8k/train.jsonl", "gsm8k-train", Preset::Gsm8k),
        ("math500/test.jsonl", "math500", Preset::Math),
        (
            "traces/limo_deepseek-r1-distill-qwen-32b.jsonl",
            "limo-r1",
            Preset::Traces,
        ),
        (
            "traces/limo_qwen2.5-32b-instruct.jsonl",
            "limo-qwen",
            Preset::Traces,
        ),
    ];
    for (file, name, preset) in cases {
        let path = test_data(file);
        let report = import_ok(&api, &path, &[("name", name)]).await;
        assert_eq!(report.preset, preset, "{file}");
        assert_eq!(report.n_rejected, 0, "{file}: {:?}", report.rejected);
        assert_eq!(report.n_imported as usize, count_lines(&path), "{file}");
    }
    let listed = api.datasets().await;
    for (file, name, _) in cases {
        let d = listed.iter().find(|d| d.name == name).expect("listed");
        assert_eq!(d.n_rows as usize, count_lines(&test_data(file)), "{name}");
    }

    // GSM8K: the final number after '####' is the answer, the worked solution the thinking.
    let page: ExamplePage = api.examples("gsm8k-train", "limit=1").await;
    let first: Example = api.example(page.items[0].id).await;
    assert_eq!(first.fields.answer, "72");
    assert!(
        first
            .fields
            .thinking
            .starts_with("Natalia sold 48/2 = <<48/2=24>>24 clips in May.")
    );
    assert_eq!(first.fields.source, "gsm8k");

    // MATH-500: subject becomes the domain; level and unique_id stay in metadata.
    let page: ExamplePage = api.examples("math500", "limit=1").await;
    let first: Example = api.example(page.items[0].id).await;
    let raw: Value = serde_json::from_str(
        std::fs::read_to_string(test_data("math500/test.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first.fields.question, raw["problem"].as_str().unwrap());
    assert_eq!(first.fields.answer, raw["answer"].as_str().unwrap());
    assert_eq!(first.fields.domain, raw["subject"].as_str().unwrap());
    assert_eq!(first.fields.metadata["level"], raw["level"]);
    assert_eq!(first.fields.metadata["unique_id"], raw["unique_id"]);

    // Long traces: split at **Final Answer**; the boxed answer is what remains.
    let page: ExamplePage = api.examples("limo-r1", "limit=5").await;
    for row in page.items {
        let ex: Example = api.example(row.id).await;
        assert!(
            ex.fields.thinking.len() > 1000,
            "thinking is the long trace"
        );
        assert!(
            ex.fields.answer.contains("\\boxed{"),
            "{}",
            ex.fields.answer
        );
        assert!(!ex.fields.thinking.contains("**Final Answer**"));
        assert!(ex.fields.metadata["gold_answer"].is_string());
    }
    server.stop().await;
}

#[tokio::test]
async fn json_array_csv_and_parquet_give_the_same_rows_as_jsonl() {
    let server = TestServer::start().await;
    let api = Api::new(&server);
    let math = std::fs::read_to_string(test_data("math500/test.jsonl")).unwrap();
    let rows: Vec<Value> = math
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    // JSON array, pretty-printed (multi-line elements).
    let (_d1, json_path) = temp_file(
        "math.json",
        serde_json::to_string_pretty(&rows).unwrap().as_bytes(),
    );
    let report = import_ok(&api, &json_path, &[("name", "math-json")]).await;
    assert_eq!((report.n_imported, report.preset), (500, Preset::Math));

    // CSV with quoting, commas and newlines inside fields.
    let mut csv_writer = csv::Writer::from_writer(Vec::new());
    csv_writer
        .write_record(["problem", "solution", "answer", "subject", "level"])
        .unwrap();
    for r in &rows {
        csv_writer
            .write_record(
                [&r["problem"], &r["solution"], &r["answer"], &r["subject"]]
                    .map(|v| v.as_str().unwrap().to_string())
                    .into_iter()
                    .chain([r["level"].to_string()]),
            )
            .unwrap();
    }
    let (_d2, csv_path) = temp_file("math.csv", &csv_writer.into_inner().unwrap());
    let report = import_ok(&api, &csv_path, &[("name", "math-csv")]).await;
    assert_eq!((report.n_imported, report.preset), (500, Preset::Math));

    // The same first row through all three formats.
    for name in ["math-json", "math-csv"] {
        let page: ExamplePage = api.examples(name, "limit=500").await;
        assert_eq!(page.items.len(), 500);
        let ex: Example = api.example(page.items[7].id).await;
        assert_eq!(
            ex.fields.question,
            rows[7]["problem"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            ex.fields.answer,
            rows[7]["answer"].as_str().unwrap(),
            "{name}"
        );
    }

    // Parquet in the s1K shape (thinking_trajectories is a LIST column), auto-detected.
    let traces =
        std::fs::read_to_string(test_data("traces/limo_deepseek-r1-distill-qwen-32b.jsonl"))
            .unwrap();
    let s1k: Vec<S1kRow> = traces
        .lines()
        .take(40)
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let sol = v["solution"].as_str().unwrap();
            let (thinking, attempt) = sol.rsplit_once("**Final Answer**").unwrap();
            S1kRow {
                question: v["question"].as_str().unwrap().into(),
                thinking: thinking.trim().into(),
                attempt: attempt.trim().into(),
                solution: v["gold_answer"].as_str().unwrap().into(),
                cot_type: "math".into(),
                source_type: "limo".into(),
                metadata: format!("{{'id': {}}}", v["id"]),
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let parquet_path = dir.path().join("s1k.parquet");
    write_s1k_parquet(&parquet_path, &s1k).unwrap();
    let report = import_ok(&api, &parquet_path, &[("name", "s1k-parquet")]).await;
    assert_eq!((report.n_imported, report.preset), (40, Preset::S1k));
    let page: ExamplePage = api.examples("s1k-parquet", "limit=1").await;
    let ex: Example = api.example(page.items[0].id).await;
    assert_eq!(ex.fields.thinking, s1k[0].thinking);
    assert_eq!(ex.fields.answer, s1k[0].attempt);
    assert_eq!(ex.fields.source, "limo");
    assert_eq!(ex.fields.metadata["metadata"], json!(s1k[0].metadata));
    server.stop().await;
}

fn bad_jsonl() -> Vec<u8> {
    let good = |i: u32| {
        format!(
            "{{\"question\": \"What is {i}+{i}?\", \"answer\": \"{i} plus {i}\\n#### {}\"}}\n",
            2 * i
        )
    };
    let mut text = String::new();
    text.push_str(&good(1));
    text.push_str(&good(2));
    text.push_str("{\"question\": \"broken\", \n"); // line 3: invalid JSON
    text.push_str(&good(4));
    text.push_str("{\"answer\": \"#### 5\"}\n"); // line 5: no question
    text.push('\n'); // line 6: blank, not a record
    text.push_str("{\"question\": \"no marker\", \"answer\": \"7\"}\n"); // line 7: no ####
    text.push_str(&good(8));
    text.into_bytes()
}

#[tokio::test]
async fn malformed_rows_are_reported_by_line_and_reason() {
    let server = TestServer::start().await;
    let api = Api::new(&server);
    let (_dir, path) = temp_file("mixed.jsonl", &bad_jsonl());

    let report = import_ok(&api, &path, &[("name", "mixed"), ("preset", "gsm8k")]).await;
    assert_eq!(report.n_imported, 4);
    assert_eq!(report.n_rejected, 3);
    let lines: Vec<Option<u64>> = report.rejected.iter().map(|r| r.line).collect();
    assert_eq!(lines, vec![Some(3), Some(5), Some(7)]);
    assert!(
        report.rejected[0].reason.starts_with("invalid JSON"),
        "{:?}",
        report.rejected[0]
    );
    assert_eq!(report.rejected[1].reason, "field 'question' is missing");
    assert_eq!(
        report.rejected[2].reason,
        "field 'answer' has no '####' marker"
    );

    // The report is kept with the dataset.
    let imports: Vec<still_api::ImportRecord> = api.get("/api/datasets/mixed/imports").await.ok();
    assert_eq!(imports.len(), 1);
    assert_eq!(imports[0].report.rejected, report.rejected);

    // "Reject the file": a 422 naming the first bad row, and no dataset.
    let (status, error) =
        import_err(&api, &path, &[("name", "strict"), ("policy", "reject")]).await;
    assert_eq!(status, 422);
    assert!(
        error
            .message
            .contains("mixed.jsonl record 3 (line 3): invalid JSON"),
        "{}",
        error.message
    );
    assert!(error.message.contains("nothing was stored"));
    assert!(api.datasets().await.iter().all(|d| d.name != "strict"));
    server.stop().await;
}

#[tokio::test]
async fn a_failed_import_changes_nothing_already_stored() {
    let server = TestServer::start().await;
    let api = Api::new(&server);
    let gsm8k = test_data("gsm8k/test.jsonl");
    import_ok(&api, &gsm8k, &[("name", "gsm8k")]).await;
    let before = api.datasets().await;
    let export_before = api.export("gsm8k", "").await.text();

    // Appending a bad file under "reject": refused, the dataset keeps its rows.
    let (_dir, bad) = temp_file("bad.jsonl", &bad_jsonl());
    let (status, _) = import_err(
        &api,
        &bad,
        &[("name", "gsm8k"), ("mode", "append"), ("policy", "reject")],
    )
    .await;
    assert_eq!(status, 422);
    // The name is taken without mode=append: 409.
    let (status, error) = import_err(&api, &gsm8k, &[("name", "gsm8k")]).await;
    assert_eq!(status, 409);
    assert!(
        error.message.contains("already exists"),
        "{}",
        error.message
    );
    // A file that is not what it claims: a clear file-level error.
    let (_dir2, not_parquet) = temp_file("data.parquet", b"{\"question\": \"x\"}\n");
    let (status, error) =
        import_err(&api, &not_parquet, &[("name", "gsm8k"), ("mode", "append")]).await;
    assert_eq!(status, 422);
    assert!(
        error
            .message
            .contains("data.parquet: not a readable Parquet file"),
        "{}",
        error.message
    );
    // A broken JSON array: the position is named.
    let (_dir3, broken) = temp_file(
        "rows.json",
        b"[{\"question\": \"a\", \"answer\": \"#### 1\"},\n{\"question\": ",
    );
    let (status, error) = import_err(&api, &broken, &[("name", "gsm8k"), ("mode", "append")]).await;
    assert_eq!(status, 422);
    assert!(
        error
            .message
            .contains("rows.json: not a JSON array of objects (line 2"),
        "{}",
        error.message
    );

    let after = api.datasets().await;
    assert_eq!(before, after);
    let export_after = api.export("gsm8k", "").await.text();
    assert_eq!(export_before, export_after);
    let imports: Vec<still_api::ImportRecord> = api.get("/api/datasets/gsm8k/imports").await.ok();
    assert_eq!(imports.len(), 1, "failed imports leave no import record");
    server.stop().await;
}

#[tokio::test]
async fn uploads_over_the_limit_get_413_and_rows_over_the_limit_are_rejected() {
    let server = TestServer::start_with(|c| {
        c.max_upload_bytes = 50_000;
        c.limits.max_row_bytes = 300;
    })
    .await;
    let api = Api::new(&server);
    let (status, error) =
        import_err(&api, &test_data("math500/test.jsonl"), &[("name", "big")]).await;
    assert_eq!(status, 413);
    assert!(
        error.message.contains("exceeds the 48.8 KiB limit"),
        "{}",
        error.message
    );

    let mut text = String::new();
    text.push_str("{\"question\": \"short\", \"answer\": \"1\"}\n");
    text.push_str(&format!(
        "{{\"question\": \"{}\", \"answer\": \"2\"}}\n",
        "long ".repeat(100)
    ));
    let (_dir, path) = temp_file("rows.jsonl", text.as_bytes());
    let report = import_ok(&api, &path, &[("name", "rows")]).await;
    assert_eq!((report.n_imported, report.n_rejected), (1, 1));
    assert_eq!(
        report.rejected[0].reason,
        "row is longer than the 300 byte limit"
    );
    assert!(api.datasets().await.iter().all(|d| d.name != "big"));
    server.stop().await;
}

fn words_of(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

#[tokio::test]
async fn search_pagination_filters_and_edits() {
    let server = TestServer::start().await;
    let api = Api::new(&server);
    let path = test_data("gsm8k/test.jsonl");
    import_ok(&api, &path, &[("name", "g")]).await;
    let raw: Vec<Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    // Full-text search: same count as a word match over the file, every hit highlighted.
    let expected = raw
        .iter()
        .filter(|r| {
            let text = format!(
                "{} {}",
                r["question"].as_str().unwrap(),
                r["answer"].as_str().unwrap()
            );
            words_of(&text).iter().any(|w| w == "janet")
        })
        .count();
    assert!(expected > 1);
    let page: ExamplePage = api.examples("g", "q=Janet&limit=500").await;
    assert_eq!(page.total as usize, expected);
    assert_eq!(page.items.len(), expected);
    for row in &page.items {
        let snippet = row.snippet.as_deref().unwrap();
        let hit: String = snippet
            .split(still_api::HIT_START)
            .nth(1)
            .unwrap()
            .split(still_api::HIT_END)
            .next()
            .unwrap()
            .to_string();
        assert_eq!(hit.to_lowercase(), "janet", "{snippet}");
    }
    // Two words: both must match.
    let both: ExamplePage = api.examples("g", "q=Janet%20ducks&limit=500").await;
    assert!(both.total >= 1 && both.total < page.total);
    // FTS operators typed by a user are taken literally, not as syntax errors.
    let odd = api
        .get("/api/datasets/g/examples?q=%22unbalanced%20OR%20(")
        .await;
    assert_eq!(odd.status, 200);

    // Keyset pagination walks every row once, in id order, and back.
    let mut seen = Vec::new();
    let mut after: Option<i64> = None;
    let mut pages = Vec::new();
    loop {
        let url = match after {
            Some(a) => format!("/api/datasets/g/examples?limit=100&after={a}"),
            None => "/api/datasets/g/examples?limit=100".to_string(),
        };
        let page: ExamplePage = api.get(&url).await.ok();
        assert_eq!(page.total, 1319);
        seen.extend(page.items.iter().map(|r| r.id));
        pages.push(page.clone());
        match page.next_after {
            Some(a) => after = Some(a),
            None => break,
        }
    }
    assert_eq!(seen.len(), 1319);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let back: ExamplePage = api
        .get(&format!(
            "/api/datasets/g/examples?limit=100&before={}",
            pages[2].prev_before.unwrap()
        ))
        .await
        .ok();
    assert_eq!(back.items, pages[1].items);

    // Edit: the search index follows, the lengths too.
    let id = pages[0].items[0].id;
    let patch = json!({"answer": "zyxwvut 18", "tags": ["checked", "easy"]});
    let edited: Example = api.patch(&format!("/api/examples/{id}"), &patch).await.ok();
    assert_eq!(edited.fields.answer, "zyxwvut 18");
    assert_eq!(edited.fields.tags, vec!["checked", "easy"]);
    let hits: ExamplePage = api.examples("g", "q=zyxwvut").await;
    assert_eq!(
        hits.items.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![id]
    );
    assert_eq!(hits.items[0].answer_words, 2);
    // Tag filter and tag removal.
    let tagged: ExamplePage = api.examples("g", "tag=easy").await;
    assert_eq!(tagged.total, 1);
    let untagged: Example = api
        .delete(&format!("/api/examples/{id}/tags/easy"))
        .await
        .ok();
    assert_eq!(untagged.fields.tags, vec!["checked"]);
    // Bad edits are refused with the field named.
    let bad = api
        .patch(&format!("/api/examples/{id}"), json!({"question": "  "}))
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.error().message, "question: must not be empty");
    // Raw on purpose: a body that is not JSON, which the typed `patch` cannot send.
    let bad = api
        .request(reqwest::Method::PATCH, &format!("/api/examples/{id}"))
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await;
    assert_eq!(bad.status, 400);

    // Source filter over facet values from the stats.
    let stats: DatasetStats = api.get("/api/datasets/g/stats").await.ok();
    assert_eq!(stats.n_rows, 1319);
    assert_eq!(stats.sources, vec![("gsm8k".to_string(), 1319)]);
    for l in &stats.lengths {
        assert_eq!(l.counts.iter().sum::<i64>(), 1319, "{}", l.field);
    }
    let by_source: ExamplePage = api.examples("g", "source=gsm8k&limit=1").await;
    assert_eq!(by_source.total, 1319);
    let none: ExamplePage = api.examples("g", "source=other").await;
    assert_eq!(none.total, 0);
    server.stop().await;
}

#[tokio::test]
async fn trash_versions_and_export_round_trip() {
    let server = TestServer::start().await;
    let api = Api::new(&server);
    let path = test_data("math500/test.jsonl");
    import_ok(&api, &path, &[("name", "m")]).await;
    let page: ExamplePage = api.examples("m", "limit=3").await;
    let (a, b) = (page.items[0].id, page.items[1].id);

    // Trash is recoverable until a version is cut.
    let trashed: Example = api.delete(&format!("/api/examples/{a}")).await.ok();
    assert!(trashed.deleted_at.is_some());
    let d: DatasetSummary = api.dataset("m").await;
    assert_eq!((d.n_rows, d.n_deleted), (499, 1));
    let trash: ExamplePage = api.examples("m", "deleted=true").await;
    assert_eq!(
        trash.items.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![a]
    );
    api.post_empty(&format!("/api/examples/{a}/restore")).await;
    api.delete(&format!("/api/examples/{b}")).await;

    let v1: DatasetVersion = api
        .post("/api/datasets/m/versions", json!({"message": "first"}))
        .await
        .ok();
    assert_eq!(
        (v1.version, v1.n_rows, v1.message.as_str()),
        (1, 499, "first")
    );
    let d: DatasetSummary = api.dataset("m").await;
    assert_eq!((d.n_rows, d.n_deleted, d.n_versions), (499, 0, 1));
    let gone = api.get(&format!("/api/examples/{b}")).await;
    assert_eq!(gone.status, 404, "the trash is emptied by a version");

    // A version without changes has the same content hash; after an edit it differs.
    let v2: DatasetVersion = api.post_empty("/api/datasets/m/versions").await.ok();
    assert_eq!(v2.content_hash, v1.content_hash);
    let v1_export = api.export("m", "version=1").await.text();
    api.patch(&format!("/api/examples/{a}"), json!({"answer": "changed"}))
        .await;
    let v3: DatasetVersion = api.post_empty("/api/datasets/m/versions").await.ok();
    assert_ne!(v3.content_hash, v1.content_hash);
    // Editing never changes what an old version holds.
    let v1_again = api.export("m", "version=1").await.text();
    assert_eq!(v1_export, v1_again);
    assert_eq!(v1_export.lines().count(), 499);
    let versions: Vec<DatasetVersion> = api.get("/api/datasets/m/versions").await.ok();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![3, 2, 1]
    );

    // Canonical export re-imports to the same rows.
    let live = api.export("m", "").await;
    assert_eq!(live.headers["content-type"], "application/x-ndjson");
    let live = live.text();
    assert!(live.contains("\"answer\":\"changed\""));
    let (_dir, exported) = temp_file("m.jsonl", live.as_bytes());
    let report = import_ok(&api, &exported, &[("name", "m-again")]).await;
    assert_eq!((report.n_imported, report.preset), (499, Preset::Canonical));
    let again = api.export("m-again", "").await.text();
    assert_eq!(
        again, live,
        "canonical export → import → export is the identity"
    );

    // s1K shape.
    let s1k = api.export("m", "shape=s1k").await.text();
    let first: Value = serde_json::from_str(s1k.lines().next().unwrap()).unwrap();
    for key in [
        "question",
        "thinking_trajectories",
        "attempt",
        "solution",
        "cot_type",
        "source_type",
        "metadata",
    ] {
        assert!(first.get(key).is_some(), "s1K export lacks {key}");
    }
    assert!(first["thinking_trajectories"].is_array());

    // Deleting the dataset removes it.
    let deleted = api.delete("/api/datasets/m").await;
    assert_eq!(deleted.status, 204);
    assert_eq!(api.get("/api/datasets/m").await.status, 404);
    server.stop().await;
}

#[tokio::test]
async fn preview_maps_the_first_rows_and_a_hand_mapping_imports() {
    let server = TestServer::start().await;
    let api = Api::new(&server);
    let text = "{\"prompt\": \"What is 2+2?\", \"reasoning\": \"2 and 2 make 4\", \"final\": \"4\", \"kind\": \"arith\"}\n";
    let (_dir, path) = temp_file("custom.jsonl", text.repeat(30).as_bytes());
    let preview: ImportPreview = api.upload("/api/datasets/preview", &path, &[]).await.ok();
    assert_eq!(preview.preset, Preset::Generic);
    assert_eq!(
        preview.columns,
        vec!["final", "kind", "prompt", "reasoning"]
    );
    assert_eq!(preview.mapping.question, "prompt");
    assert_eq!(preview.rows.len(), 20);
    assert!(preview.warning.is_some());

    let mapping =
        json!({"question": "prompt", "thinking": "reasoning", "answer": "final", "domain": "kind"})
            .to_string();
    let report = import_ok(&api, &path, &[("name", "custom"), ("mapping", &mapping)]).await;
    assert_eq!(report.n_imported, 30);
    let page: ExamplePage = api.examples("custom", "limit=1").await;
    let ex: Example = api.example(page.items[0].id).await;
    assert_eq!(
        (
            ex.fields.thinking.as_str(),
            ex.fields.answer.as_str(),
            ex.fields.domain.as_str()
        ),
        ("2 and 2 make 4", "4", "arith")
    );
    assert_eq!(ex.fields.metadata, json!({}));

    let bad = api.import(&path, &[("name", "x"), ("format", "xml")]).await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.error().message,
        "format: 'xml' is not one of auto, jsonl, json, csv, parquet"
    );
    server.stop().await;
}

#[tokio::test]
async fn demo_data_is_seeded_once() {
    let server = TestServer::start_with(|c| c.seed_demo = true).await;
    let api = Api::new(&server);
    let list = api.datasets().await;
    let mut seeded: Vec<(&str, i64)> = list.iter().map(|d| (d.name.as_str(), d.n_rows)).collect();
    seeded.sort();
    assert_eq!(
        seeded,
        [
            ("addition-demo", 2000),
            ("counting-demo", 4000),
            ("counting-held-out", 200),
            ("gsm8k-sample", 300)
        ]
    );
    let dir = server.data_dir.path().to_path_buf();
    // Deleting them and restarting on the same data directory does not bring them back.
    for name in [
        "gsm8k-sample",
        "addition-demo",
        "counting-demo",
        "counting-held-out",
    ] {
        let deleted = api.delete(&format!("/api/datasets/{name}")).await;
        assert_eq!(deleted.status, 204);
    }
    let TestServer {
        server: running,
        data_dir,
        ..
    } = server;
    running.unwrap().stop().await.unwrap();
    let mut config = still_backend::Config::new(&dir);
    config.seed_demo = true;
    let again = still_backend::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let list: Vec<DatasetSummary> = Api::at(&again.url()).datasets().await;
    assert!(list.is_empty());
    again.stop().await.unwrap();
    drop(data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_waits_for_another_writer_instead_of_failing() {
    // In WAL mode a deferred transaction that read first cannot wait for the write lock: SQLite
    // answers "database is locked" at once. Writers therefore begin IMMEDIATE; this holds the
    // lock (as the queue's reaper does every few seconds) while an import starts.
    let server = TestServer::start().await;
    let api = Api::new(&server);
    let mut conn = server.pool().acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *conn)
        .await
        .unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        sqlx::query("COMMIT").execute(&mut *conn).await.unwrap();
    });
    let report = import_ok(
        &api,
        &test_data("math500/test.jsonl"),
        &[("name", "waited")],
    )
    .await;
    assert_eq!(report.n_imported, 500);
    release.await.unwrap();
    server.stop().await;
}
