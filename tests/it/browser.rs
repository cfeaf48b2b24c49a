//! The UI in headless Chromium: upload through the page, search, open, edit, reload.

use anyhow::Context;
use fantoccini::Locator;
use still_tests::{Api, Browser, TestServer, count_lines, test_data};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_search_open_edit_and_reload() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    assert!(
        still_tests::ui_dir().join("index.html").is_file(),
        "build the UI first (trunk build --release)"
    );
    let browser = Browser::start().await?;
    let c = &browser.client;

    // Upload GSM8K test through the import panel.
    let file = test_data("gsm8k/test.jsonl");
    let expected_rows = count_lines(&file);
    c.goto(&server.url).await?;
    browser
        .wait_for("[data-test=import-file]")
        .await?
        .send_keys(file.to_str().unwrap())
        .await?;
    let name = browser.wait_for("[data-test=import-name]").await?;
    browser.wait_for_text("h1", |t| t == "Datasets").await?;
    assert_eq!(
        name.prop("value").await?.as_deref(),
        Some("test"),
        "the name is suggested from the file"
    );
    name.clear().await?;
    name.send_keys("gsm8k-ui").await?;
    browser
        .wait_for("[data-test=preview-button]")
        .await?
        .click()
        .await?;
    browser
        .wait_for_text("[data-test=preview] p", |t| t.contains("preset gsm8k"))
        .await?;
    browser
        .wait_for("[data-test=import-button]")
        .await?
        .click()
        .await?;
    let imported = browser
        .wait_for_text("[data-test=report-imported]", |t| !t.is_empty())
        .await?;
    assert_eq!(imported.replace(',', ""), expected_rows.to_string());

    // The list shows its row count.
    let rows = browser
        .wait_for_text(
            "[data-test=dataset-row][data-name=gsm8k-ui] [data-test=dataset-rows]",
            |t| !t.is_empty(),
        )
        .await?;
    assert_eq!(rows.replace(',', ""), expected_rows.to_string());

    // Open it, search, see the highlighted hit.
    browser
        .wait_for("[data-test=dataset-row][data-name=gsm8k-ui] a")
        .await?
        .click()
        .await?;
    browser
        .wait_for_text("[data-test=dataset-name]", |t| t == "gsm8k-ui")
        .await?;
    browser
        .wait_for("[data-test=search-input]")
        .await?
        .send_keys("ducks")
        .await?;
    browser
        .wait_for("[data-test=search-button]")
        .await?
        .click()
        .await?;
    let mark = browser.wait_for("[data-test=snippet] mark").await?;
    assert_eq!(mark.text().await?.to_lowercase(), "ducks");
    let count = browser
        .wait_for_text("[data-test=match-count]", |t| t.ends_with("rows"))
        .await?;
    assert_ne!(count, format!("{} rows", expected_rows));

    // Open the first hit and edit its answer.
    let first_row = browser.wait_for("[data-test=example-row]").await?;
    let example_id = first_row
        .attr("data-id")
        .await?
        .expect("rows carry their id");
    first_row.find(Locator::Css("td a")).await?.click().await?;
    browser
        .wait_for_text("h1", |t| t == format!("Example #{example_id}"))
        .await?;
    let question = browser
        .wait_for_text("[data-test=question]", |t| !t.is_empty())
        .await?;
    assert!(question.to_lowercase().contains("ducks"), "{question}");
    browser
        .wait_for("[data-test=edit-button]")
        .await?
        .click()
        .await?;
    let answer_box = browser.wait_for("[data-test=edit-answer]").await?;
    answer_box.clear().await?;
    answer_box.send_keys("EDITED-ANSWER-42").await?;
    browser
        .wait_for("[data-test=save-button]")
        .await?
        .click()
        .await?;
    browser
        .wait_for_text("[data-test=answer]", |t| t.contains("EDITED-ANSWER-42"))
        .await?;

    // Add a tag, then reload: both persisted.
    browser
        .wait_for("[data-test=tag-input]")
        .await?
        .send_keys("reviewed")
        .await?;
    browser
        .wait_for("[data-test=tag-add]")
        .await?
        .click()
        .await?;
    browser
        .wait_for_text("[data-test=tag]", |t| t.contains("reviewed"))
        .await?;
    c.refresh().await?;
    browser
        .wait_for_text("[data-test=answer]", |t| t.contains("EDITED-ANSWER-42"))
        .await?;
    browser
        .wait_for_text("[data-test=tag]", |t| t.contains("reviewed"))
        .await?;

    // The server agrees.
    let example: still_api::Example = Api::new(&server)
        .get(&format!("/api/examples/{example_id}"))
        .await
        .ok();
    assert_eq!(example.fields.answer, "EDITED-ANSWER-42");
    assert_eq!(example.fields.tags, vec!["reviewed"]);

    browser.close().await?;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latex_renders_as_mathml_and_thinking_shows_apart() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let api = Api::new(&server);
    let response = api
        .import(&test_data("math500/test.jsonl"), &[("name", "math")])
        .await;
    assert_eq!(response.status, 201);
    let page = api.examples("math", "q=frac&limit=1").await;
    let id = page.items[0].id;

    let browser = Browser::start().await?;
    browser
        .client
        .goto(&format!("{}/examples/{id}", server.url))
        .await?;
    browser.wait_for("[data-test=question] math").await?;
    let fractions = browser
        .client
        .find_all(Locator::Css("[data-test=solution] math mfrac"))
        .await?;
    assert!(!fractions.is_empty(), "\\frac renders as <mfrac>");
    // No thinking in MATH: the page says so instead of an empty box.
    browser
        .wait_for_text(".field.thinking .empty", |t| t == "No reasoning trace.")
        .await?;
    browser.close().await?;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playground_streams_an_answer_with_its_thinking_apart() -> anyhow::Result<()> {
    let (server, _api) = still_tests::server_with_tiny_model(|_| {}).await;
    let browser = Browser::start().await?;
    let c = &browser.client;
    c.goto(&format!("{}/playground", server.url)).await?;
    browser
        .wait_for("[data-test=playground-model] option[value='tiny']")
        .await?;
    browser
        .wait_for("[data-test=playground-model]")
        .await?
        .select_by_value("tiny")
        .await?;
    for (field, value) in [("max-tokens", "24"), ("max-thinking", "6")] {
        let input = browser
            .wait_for(&format!("[data-test=playground-{field}]"))
            .await?;
        input.clear().await?;
        input.send_keys(value).await?;
    }
    browser
        .wait_for("[data-test=playground-input]")
        .await?
        .send_keys("What is 2 + 2?")
        .await?;
    // The request to copy is the one the page sends, as a `curl` of /v1.
    let curl = browser
        .wait_for_text("[data-test=playground-curl]", |t| t.contains("2 + 2"))
        .await?;
    assert!(curl.contains("/v1/chat/completions"), "{curl}");
    assert!(curl.contains("\"max_thinking_tokens\":6"), "{curl}");
    browser
        .wait_for("[data-test=playground-send]")
        .await?
        .click()
        .await?;
    let status = browser
        .wait_for_text("[data-test=playground-status]", |t| {
            t.starts_with("finished") && t.contains("completion tokens")
        })
        .await?;
    assert!(status.contains("prompt"), "{status}");
    // Cut at 6 thinking tokens: thinking apart, the answer opening with `Final Answer:`. The
    // stream has ended, so both are complete; the tiny model's thinking may be all whitespace,
    // which rendered text drops, so it is read as the element's text content.
    let thinking = browser
        .wait_for("[data-test=playground-thinking]")
        .await?
        .prop("textContent")
        .await?
        .unwrap_or_default();
    assert!(!thinking.is_empty(), "no thinking streamed");
    let answer = browser
        .wait_for_text("[data-test=playground-answer]", |t| !t.is_empty())
        .await?;
    assert!(answer.starts_with("Final Answer:"), "{answer}");
    assert!(!thinking.contains("Final Answer:"), "{thinking}");
    // The turn joins the conversation.
    browser
        .wait_for_text("[data-test=playground-history]", |t| {
            t.contains("assistant")
        })
        .await?;
    browser.close().await?;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_generated_from_a_dataset_page_end_in_a_new_dataset() -> anyhow::Result<()> {
    let (server, api) = still_tests::server_with_tiny_model(|_| {}).await;
    let source = api.dataset("add").await;
    let model = api.model("tiny").await;
    let dir = tempfile::tempdir()?;
    let mut worker = api.start_worker(&server, dir.path()).await;
    let browser = Browser::start().await?;
    let c = &browser.client;
    c.goto(&format!("{}/datasets/{}", server.url, source.id))
        .await?;
    browser
        .wait_for_text("[data-test=dataset-generations]", |t| {
            t.contains("No traces generated")
        })
        .await?;
    browser
        .wait_for("[data-test=generate-traces]")
        .await?
        .click()
        .await?;
    // The form comes pre-filled with the dataset; an endpoint teacher asks for its URL and a
    // key typed into a password field.
    browser
        .wait_for_value("[data-test=gen-dataset]", |v| v == "add")
        .await?;
    browser
        .wait_for("[data-test=gen-kind]")
        .await?
        .select_by_value("openai")
        .await?;
    let key_type = browser
        .wait_for("[data-test=gen-api-key]")
        .await?
        .attr("type")
        .await?;
    assert_eq!(key_type.as_deref(), Some("password"));
    browser.wait_for("[data-test=gen-base-url]").await?;
    browser
        .wait_for("[data-test=gen-kind]")
        .await?
        .select_by_value("model")
        .await?;
    browser
        .wait_for(&format!(
            "[data-test=gen-model] option[value='{}']",
            model.id
        ))
        .await?;
    browser
        .wait_for("[data-test=gen-model]")
        .await?
        .select_by_value(&model.id.to_string())
        .await?;
    for (field, value) in [
        ("limit", "3"),
        ("max-tokens", "12"),
        ("max-thinking", "6"),
        ("output", "add-from-ui"),
    ] {
        let input = browser
            .wait_for(&format!("[data-test=gen-{field}]"))
            .await?;
        input.clear().await?;
        input.send_keys(value).await?;
    }
    browser
        .wait_for("[data-test=start-generation]")
        .await?
        .click()
        .await?;
    // Its page follows it to the end, with the counts.
    browser
        .wait_for_text("[data-test=generation-status]", |t| t == "succeeded")
        .await?;
    let done = browser
        .wait_for_text("[data-test=count-done]", |t| t == "3 / 3")
        .await?;
    assert_eq!(done, "3 / 3");
    let kept = browser
        .wait_for_text("[data-test=count-kept]", |t| !t.is_empty())
        .await?;
    assert_eq!(kept, "3");
    browser
        .wait_for_text("[data-test=generation-rows]", |t| {
            t.contains("right") || t.contains("wrong")
        })
        .await?;
    browser
        .wait_for_text("[data-test=generation-log]", |t| {
            t.contains("succeeded: 3 rows answered")
        })
        .await?;
    // The new dataset, linked from its generation, holds the three traces.
    browser
        .wait_for("[data-test=generation-output]")
        .await?
        .click()
        .await?;
    browser
        .wait_for_text("[data-test=dataset-name]", |t| t == "add-from-ui")
        .await?;
    browser
        .wait_for_text("[data-test=dataset-row-count]", |t| t == "3")
        .await?;
    browser
        .wait_for_text("[data-test=dataset-generations]", |t| {
            t.contains("tiny on add")
        })
        .await?;
    // And the source's page lists it too.
    c.goto(&format!("{}/datasets/{}", server.url, source.id))
        .await?;
    browser
        .wait_for_text("[data-test=dataset-generations]", |t| {
            t.contains("tiny on add") && t.contains("add-from-ui")
        })
        .await?;
    worker.kill().await?;
    browser.close().await?;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_only_teacher_is_marked_and_offered_only_for_traces() -> anyhow::Result<()> {
    let (server, api) = still_tests::server_with_tiny_model(|_| {}).await;
    let dir = tempfile::tempdir()?;
    let folder = dir.path().join("qwen3-q8");
    still_teacher::tiny::Tiny::new(
        still_teacher::Arch::Qwen3,
        still_teacher::Format::Gguf,
        151_936,
    )
    .write(&folder, &test_data("tokenizers/qwen2.5/tokenizer.json"))?;
    let teacher: still_api::ModelSummary = api
        .post(
            "/api/models",
            serde_json::json!({"name": "qwen3-q8", "path": folder.to_string_lossy()}),
        )
        .await
        .ok();
    let browser = Browser::start().await?;
    let c = &browser.client;
    c.goto(&format!("{}/models", server.url)).await?;
    browser
        .wait_for_text(
            "[data-test=model-row][data-name='qwen3-q8'] [data-test=model-arch]",
            |t| t.contains("qwen3 · gguf") && t.contains("generation only"),
        )
        .await?;
    let tiny_arch = browser
        .wait_for_text(
            "[data-test=model-row][data-name='tiny'] [data-test=model-arch]",
            |t| t.contains("qwen2 · safetensors"),
        )
        .await?;
    assert!(!tiny_arch.contains("generation only"), "{tiny_arch}");
    // The teacher is offered for traces, not for an eval; its link opens the form with it chosen.
    let evaluate = c
        .find_all(Locator::Css(
            "[data-test=model-row][data-name='qwen3-q8'] [data-test=evaluate-model]",
        ))
        .await?;
    assert!(evaluate.is_empty());
    browser
        .wait_for("[data-test=model-row][data-name='qwen3-q8'] [data-test=teach-with-model]")
        .await?
        .click()
        .await?;
    browser
        .wait_for_value("[data-test=gen-model]", |v| v == teacher.id.to_string())
        .await?;
    // The runs form offers trainable models only.
    c.goto(&format!("{}/runs", server.url)).await?;
    browser.wait_for("[data-test=run-model] option").await?;
    let options = c
        .find_all(Locator::Css("[data-test=run-model] option"))
        .await?;
    let mut labels = Vec::new();
    for o in options {
        labels.push(o.text().await?);
    }
    assert!(labels.iter().any(|l| l.starts_with("tiny")), "{labels:?}");
    assert!(!labels.iter().any(|l| l.contains("qwen3-q8")), "{labels:?}");
    browser.close().await?;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_a_run_from_the_form_and_watch_it_finish() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let api = Api::new(&server);
    api.import_addition("add", 64).await;
    let dir = tempfile::tempdir()?;
    let (_, token) =
        still_backend::jobs::workers::create_worker(server.pool(), "browser-test").await?;

    let browser = Browser::start().await?;
    let c = &browser.client;
    c.goto(&format!("{}/runs", server.url)).await?;
    // Pick the dataset, make a tiny model from it, then start a short run.
    let dataset_select = browser.wait_for("[data-test=run-dataset]").await?;
    browser
        .wait_for("[data-test=run-dataset] option[value='1']")
        .await?;
    dataset_select.select_by_value("1").await?;
    browser
        .wait_for("[data-test=make-model]")
        .await?
        .click()
        .await?;
    browser
        .wait_for_text("[data-test=run-model] option:checked", |t| {
            t.starts_with("tiny")
        })
        .await?;
    for (field, value) in [
        ("name", "from-ui"),
        ("max_steps", "8"),
        ("lr", "3e-3"),
        ("batch_size", "8"),
        ("grad_accum", "1"),
        ("max_seq_len", "128"),
    ] {
        let input = browser
            .wait_for(&format!("[data-test=run-{field}]"))
            .await?;
        input.clear().await?;
        input.send_keys(value).await?;
    }
    // Long rows are left out by choice (none of these is long).
    browser
        .wait_for("[data-test=run-long_examples]")
        .await?
        .select_by_value("skip")
        .await?;
    // The form estimated the run's memory against the pool (one worker, not yet started).
    browser
        .wait_for_text("[data-test=run-estimate]", |t| {
            t.contains("Memory estimate")
                && t.contains("AdamW")
                && t.contains("1 of 1 workers can run it")
        })
        .await?;
    browser
        .wait_for("[data-test=start-run]")
        .await?
        .click()
        .await?;
    browser
        .wait_for_text("[data-test=run-name]", |t| t == "from-ui")
        .await?;
    // The page is live before any worker exists: queued, no points yet.
    browser
        .wait_for_text("[data-test=live]", |t| t.contains("live"))
        .await?;
    assert_eq!(
        browser
            .wait_for("[data-test=run-status]")
            .await?
            .text()
            .await?,
        "queued"
    );
    let mut worker =
        still_tests::spawn_worker(&server.url, &token, &dir.path().join("worker"), &[]);
    // Without a reload, the stream brings the status, every point, the log and the downloads.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let status = browser
            .wait_for("[data-test=run-status]")
            .await?
            .text()
            .await?;
        if status == "succeeded" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "run still {status}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let curve = browser.wait_for("[data-test=chart-loss] polyline").await?;
    let n = browser
        .wait_for_text("[data-test=progress] span", |t| t.starts_with("step 8 / 8"))
        .await?;
    assert!(n.starts_with("step 8 / 8"), "{n}");
    assert_eq!(curve.attr("data-points").await?.as_deref(), Some("8"));
    browser
        .wait_for_text("[data-test=run-log]", |t| {
            t.contains("attempt 1 started on worker 'browser-test'")
                && t.contains("succeeded; the final model is registered as 'from-ui-final'")
        })
        .await?;
    // What the worker made of the dataset, on the page.
    browser
        .wait_for_text("[data-test=run-examples]", |t| {
            t.contains("64 examples train · 0 truncated · 0 skipped (longer than max_seq_len 128)")
        })
        .await?;
    // Download the final model folder from its link: a tar holding a loadable HF folder.
    let link = browser.wait_for("[data-test=download-final]").await?;
    let href = link.attr("href").await?.expect("a download link");
    let tar = api.get_bytes(&href).await.ok();
    let unpacked = tempfile::tempdir()?;
    tar::Archive::new(&tar[..]).unpack(unpacked.path())?;
    still_engine::hf::load(
        &unpacked.path().join("from-ui-final"),
        still_engine::candle::DType::F32,
        &still_engine::candle::Device::Cpu,
    )?;
    // "Clone config" fills the form from this run.
    browser
        .wait_for("[data-test=clone-run]")
        .await?
        .click()
        .await?;
    browser
        .wait_for_value("[data-test=run-name]", |v| v == "from-ui-2")
        .await?;
    for (field, value) in [
        ("max_steps", "8"),
        ("lr", "0.003"),
        ("max_seq_len", "128"),
        ("long_examples", "skip"),
    ] {
        browser
            .wait_for_value(&format!("[data-test=run-{field}]"), |v| v == value)
            .await
            .with_context(|| format!("cloned {field}"))?;
    }
    // The status filters.
    browser
        .wait_for("[data-test=filter-failed]")
        .await?
        .click()
        .await?;
    browser
        .wait_for_text(".empty", |t| t == "No runs match.")
        .await?;
    browser
        .wait_for("[data-test=filter-succeeded]")
        .await?
        .click()
        .await?;
    browser
        .wait_for_text("[data-test=run-row]", |t| t.contains("from-ui"))
        .await?;

    // Evaluate the run's final model from its page, at two thinking budgets.
    let run: still_api::RunSummary = api.get("/api/runs/from-ui").await.ok();
    c.goto(&format!("{}/runs/{}", server.url, run.id)).await?;
    browser
        .wait_for("[data-test=evaluate-run]")
        .await?
        .click()
        .await?;
    browser
        .wait_for_value("[data-test=eval-model]", |v| {
            Some(v) == run.output_model_id.map(|m| m.to_string()).as_deref()
        })
        .await?;
    browser
        .wait_for("[data-test=eval-dataset] option[value='add']")
        .await?;
    browser
        .wait_for("[data-test=eval-dataset]")
        .await?
        .select_by_value("add")
        .await?;
    for (field, value) in [
        ("budgets", "4, 8"),
        ("waits", "0"),
        ("limit", "3"),
        ("answer-tokens", "6"),
    ] {
        let input = browser
            .wait_for(&format!("[data-test=eval-{field}]"))
            .await?;
        input.clear().await?;
        input.send_keys(value).await?;
    }
    browser
        .wait_for("[data-test=start-eval]")
        .await?
        .click()
        .await?;
    browser
        .wait_for_text("[data-test=eval-name]", |t| t == "from-ui-final on add")
        .await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let status = browser
            .wait_for("[data-test=eval-status]")
            .await?
            .text()
            .await?;
        if status == "succeeded" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "eval still {status}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    browser
        .wait_for_text("[data-test=eval-progress]", |t| t.contains("6 / 6 graded"))
        .await?;
    // The test-time-scaling plot: accuracy at each budget's mean thinking tokens.
    let plot = browser
        .wait_for("[data-test=chart-accuracy] polyline")
        .await?;
    assert_eq!(plot.attr("data-points").await?.as_deref(), Some("2"));
    let rows = c.find_all(Locator::Css("[data-test=budget-row]")).await?;
    assert_eq!(rows.len(), 2);
    assert!(rows[0].text().await?.contains("≤ 4 thinking"));
    browser
        .wait_for_text("[data-test=eval-control]", |t| t.starts_with("100.0%"))
        .await?;
    // Graded examples: wrong ones only, then one opened with its thinking and answer apart.
    browser
        .wait_for_text("[data-test=example-list]", |t| !t.is_empty())
        .await?;
    browser
        .wait_for("[data-test=wrong-only]")
        .await?
        .click()
        .await?;
    let wrong: i64 = sqlx::query_scalar("SELECT count(*) FROM eval_records WHERE correct = 0")
        .fetch_one(server.pool())
        .await?;
    if wrong > 0 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let shown = c.find_all(Locator::Css("[data-test=eval-example]")).await?;
            let mut all_wrong = !shown.is_empty();
            for row in &shown {
                all_wrong &= row.attr("data-correct").await?.as_deref() == Some("false");
            }
            if all_wrong && shown.len() as i64 == wrong {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "wrong-only shows {} rows",
                shown.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        browser
            .wait_for("[data-test=eval-example]")
            .await?
            .click()
            .await?;
        let summary = browser
            .wait_for_text("[data-test=example-summary]", |t| {
                t.contains("thinking tokens")
            })
            .await?;
        browser.wait_for("[data-test=example-thinking]").await?;
        browser.wait_for("[data-test=example-answer]").await?;
        if summary.contains("cut at") {
            browser.wait_for("[data-test=cut-mark]").await?;
        }
    }

    // A second eval (the untrained base model, same rows and budgets), then both compared:
    // ticked on the evals list, their scaling curves overlaid, the flipped questions counted
    // as the API counts them.
    let all: Vec<still_api::EvalSummary> = api.get("/api/evals").await.ok();
    let final_eval = all
        .into_iter()
        .find(|e| e.name == "from-ui-final on add")
        .unwrap();
    let base: still_api::EvalSummary = api
        .post(
            "/api/evals",
            serde_json::json!({"model": "tiny", "dataset": "add", "limit": 3,
                               "budgets": [{"max_thinking_tokens": 4}, {"max_thinking_tokens": 8}],
                               "decoding": {"max_answer_tokens": 6}}),
        )
        .await
        .ok();
    still_tests::wait_until(
        std::time::Duration::from_secs(90),
        || async {
            api.get(&format!("/api/evals/{}", base.id))
                .await
                .ok::<still_api::EvalSummary>()
        },
        |e| e.status == "succeeded",
    )
    .await;
    // The models page lists the registry; its Evaluate link opens the form with the model chosen.
    let tiny: still_api::ModelSummary = api.get("/api/models/tiny").await.ok();
    c.goto(&format!("{}/models", server.url)).await?;
    browser
        .wait_for("[data-test=model-row][data-name='tiny'] [data-test=evaluate-model]")
        .await?
        .click()
        .await?;
    browser
        .wait_for_value("[data-test=eval-model]", |v| v == tiny.id.to_string())
        .await?;
    c.goto(&format!("{}/evals", server.url)).await?;
    for id in [final_eval.id, base.id] {
        let row = browser
            .wait_for(&format!("[data-test=eval-row] a[href='/evals/{id}']"))
            .await?;
        let check = row
            .find(Locator::XPath("../..//input[@data-test='compare-check']"))
            .await?;
        check.click().await?;
    }
    browser
        .wait_for_text("[data-test=compare-evals]", |t| t.contains("(2)"))
        .await?;
    browser
        .wait_for("[data-test=compare-evals]")
        .await?
        .click()
        .await?;
    browser
        .wait_for_text("[data-test=flip-counts]", |t| {
            t.contains("questions in both")
        })
        .await?;
    let compare_url = c.current_url().await?;
    assert!(
        compare_url
            .as_str()
            .ends_with(&format!("/compare/evals?ids={},{}", final_eval.id, base.id)),
        "{compare_url}"
    );
    let flips: still_api::EvalFlips = api
        .get(&format!("/api/evals/{}/flips/{}", final_eval.id, base.id))
        .await
        .ok();
    // The link is the comparison: reloaded, it shows the same.
    c.goto(compare_url.as_str()).await?;
    let counts = browser
        .wait_for_text("[data-test=flip-counts]", |t| {
            t.contains("questions in both")
        })
        .await?;
    assert_eq!(
        counts,
        format!(
            "{} questions in both · both right {} · both wrong {} · right → wrong {} · wrong → right {}",
            flips.shared,
            flips.both_right,
            flips.both_wrong,
            flips.n_right_to_wrong,
            flips.n_wrong_to_right
        )
    );
    assert_eq!(flips.shared, 3);
    let series = c.find_all(Locator::Css("[data-test=chart-series]")).await?;
    assert_eq!(series.len(), 2);
    assert_eq!(
        c.find_all(Locator::Css("[data-test=compare-eval-row]"))
            .await?
            .len(),
        2
    );
    let shown = c.find_all(Locator::Css("[data-test=flip-row]")).await?;
    assert_eq!(
        shown.len() as i64,
        flips.n_right_to_wrong + flips.n_wrong_to_right
    );
    browser.close().await?;
    worker.kill().await?;
    server.stop().await;
    Ok(())
}

/// The curation pages on the seeded demo: the form counts what each quality rule removes before
/// anything runs (the same numbers the API gives), the curation's funnel, the rows a rule dropped
/// with its reason, a diff of two versions of the output (an edited row's fields side by side) and
/// the version's lineage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curate_the_gsm8k_sample_see_the_funnel_a_dropped_row_and_a_version_diff()
-> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.seed_demo = true).await;
    let api = Api::new(&server);
    let source = api.dataset("gsm8k-sample").await;
    // The cut the test types in: the sample's median trace length, so about half is too short.
    let counted: still_api::QualityPreview = api
        .post(
            "/api/curations/preview",
            serde_json::json!({"dataset": "gsm8k-sample"}),
        )
        .await
        .ok();
    let min_tokens = counted.trace_tokens.p50;
    let expected: still_api::QualityPreview = api
        .post(
            "/api/curations/preview",
            serde_json::json!({"dataset": "gsm8k-sample", "quality": {"min_trace_tokens": min_tokens}}),
        )
        .await
        .ok();
    let too_short = expected
        .rules
        .iter()
        .find(|r| r.rule == "trace_too_short")
        .map_or(0, |r| r.n);
    assert!(too_short > 50, "{:?}", expected.rules);
    let kept_by_quality = expected.n_rows - expected.n_removed;
    assert!(kept_by_quality > 100, "{kept_by_quality}");
    // The keyword classifier the test types in, counted by the API over every row.
    let keywords = "money: dollars, $, cents\ntime: hours, minutes, days";
    let classifier = serde_json::json!({"keywords": {"domains": [
        {"domain": "money", "keywords": ["dollars", "$", "cents"]},
        {"domain": "time", "keywords": ["hours", "minutes", "days"]}],
        "fallback": "everyday"}});
    let by_keywords: still_api::QualityPreview = api
        .post(
            "/api/curations/preview",
            serde_json::json!({"dataset": "gsm8k-sample", "domain": classifier}),
        )
        .await
        .ok();
    let expected_domains: Vec<String> = by_keywords
        .domains
        .iter()
        .map(|d| format!("{} {}", d.domain, d.n))
        .collect();
    assert_eq!(expected_domains.len(), 3, "{expected_domains:?}");

    let browser = Browser::start().await?;
    let c = &browser.client;
    // From the dataset page's Curate button, the form has the dataset filled in.
    c.goto(&format!("{}/datasets/{}", server.url, source.id))
        .await?;
    browser
        .wait_for("[data-test=curate]")
        .await?
        .click()
        .await?;
    browser
        .wait_for_value("[data-test=cur-dataset]", |v| v == "gsm8k-sample")
        .await?;
    let min_box = browser.wait_for("[data-test=cur-min-tokens]").await?;
    min_box.send_keys(&min_tokens.to_string()).await?;
    let target = browser.wait_for("[data-test=cur-target]").await?;
    target.clear().await?;
    target.send_keys("100").await?;
    let seed = browser.wait_for("[data-test=cur-seed]").await?;
    seed.clear().await?;
    seed.send_keys("7").await?;
    browser
        .wait_for("[data-test=preview-quality]")
        .await?
        .click()
        .await?;
    let total = browser
        .wait_for_text("[data-test=preview-total]", |t| t.contains("rows"))
        .await?;
    assert!(
        total.contains(&format!(
            "removes {} of {} rows",
            expected.n_removed, expected.n_rows
        )),
        "{total}"
    );
    let shown = browser
        .wait_for_text("[data-test=count-exact_duplicate]", |t| {
            t.contains("removes")
        })
        .await?;
    let exact = expected
        .rules
        .iter()
        .find(|r| r.rule == "exact_duplicate")
        .map_or(0, |r| r.n);
    assert_eq!(shown.trim(), format!("— removes {exact}"));

    // Domains from a keyword classifier typed into the form: counted before anything runs, the
    // same as the API counts them.
    let kind = browser.wait_for("[data-test=cur-domain-kind]").await?;
    kind.select_by_value("keywords").await?;
    browser
        .wait_for("[data-test=cur-keywords]")
        .await?
        .send_keys(keywords)
        .await?;
    let fallback = browser.wait_for("[data-test=cur-fallback]").await?;
    fallback.clear().await?;
    fallback.send_keys("everyday").await?;
    browser
        .wait_for("[data-test=preview-domains]")
        .await?
        .click()
        .await?;
    browser
        .wait_for_text("[data-test=preview-domains-table]", |t| t.contains("money"))
        .await?;
    let mut shown_domains = Vec::new();
    for row in c
        .find_all(Locator::Css("[data-test=preview-domain]"))
        .await?
    {
        shown_domains.push(row.text().await?.replace('\t', " "));
    }
    assert_eq!(shown_domains, expected_domains);

    // Save the settings as a recipe: the API lists it with the classifier.
    browser
        .wait_for("[data-test=save-recipe-name]")
        .await?
        .send_keys("gsm8k-by-keywords")
        .await?;
    browser
        .wait_for("[data-test=save-recipe]")
        .await?
        .click()
        .await?;
    browser
        .wait_for_text("[data-test=saved-note]", |t| {
            t.contains("gsm8k-by-keywords")
        })
        .await?;
    let recipes: Vec<still_api::SavedRecipe> = api.get("/api/curation-recipes").await.ok();
    let saved = recipes
        .iter()
        .find(|r| r.name == "gsm8k-by-keywords")
        .expect("the saved recipe is listed");
    let diversity = saved
        .recipe
        .stages
        .iter()
        .find_map(|s| match s {
            still_api::Stage::Diversity(d) => Some(d.clone()),
            _ => None,
        })
        .expect("a diversity stage");
    assert_eq!(diversity.target, 100);
    assert_eq!(
        serde_json::to_value(&diversity.domain)?,
        classifier,
        "{diversity:?}"
    );

    // Start it: the curation page shows the funnel through to the target.
    browser
        .wait_for("[data-test=start-curation]")
        .await?
        .click()
        .await?;
    browser
        .wait_for_text("[data-test=curation-name]", |t| !t.is_empty())
        .await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = browser
            .wait_for_text("[data-test=curation-status]", |t| !t.is_empty())
            .await?;
        if status == "succeeded" {
            break;
        }
        assert!(
            !matches!(status.as_str(), "failed" | "cancelled"),
            "the curation ended {status}"
        );
        assert!(std::time::Instant::now() < deadline, "still {status}");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let funnel = browser
        .wait_for_text("[data-test=curation-funnel]", |t| t.ends_with("100"))
        .await?;
    assert_eq!(funnel, format!("300 → {kept_by_quality} → 100"));
    // The output's domains are the classifier's.
    browser
        .wait_for_text("[data-test=curation-domains]", |t| {
            t.contains("money") && t.contains("everyday")
        })
        .await?;
    let curations: Vec<still_api::CurationSummary> = api.get("/api/curations").await.ok();
    let curation = &curations[0];
    assert_eq!(curation.status, "succeeded");
    let output = curation.output.clone().expect("an output version");

    // The rule's button lists the rows it dropped, each with its reason.
    browser
        .wait_for("[data-test=rule-trace_too_short]")
        .await?
        .click()
        .await?;
    let detail = browser
        .wait_for_text("[data-test=drop-detail]", |t| !t.is_empty())
        .await?;
    assert!(
        detail.contains(&format!("fewer than {min_tokens}")),
        "{detail}"
    );
    let range = browser
        .wait_for_text("[data-test=drops-range]", |t| t.contains(" of "))
        .await?;
    assert!(range.contains(&format!("of {too_short}")), "{range}");
    let first_page = c
        .find_all(Locator::Css("[data-test=curation-drop]"))
        .await?
        .len() as i64;
    assert_eq!(first_page, too_short.min(100));
    if too_short > 100 {
        browser
            .wait_for("[data-test=drops-next]")
            .await?
            .click()
            .await?;
        browser
            .wait_for_text("[data-test=drops-range]", |t| t.starts_with("rows 101"))
            .await?;
        let second = c
            .find_all(Locator::Css("[data-test=curation-drop]"))
            .await?
            .len() as i64;
        assert_eq!(first_page + second, too_short.min(200));
    }
    // Open a dropped row: its whole trace shows.
    browser
        .wait_for("[data-test=drop-row] summary")
        .await?
        .click()
        .await?;
    let thinking = browser
        .wait_for_text("[data-test=drop-thinking]", |t| t.len() > "Thinking ".len())
        .await?;
    assert!(thinking.starts_with("Thinking "), "{thinking}");

    // Edit a row of the output and cut a version: the diff of the last two shows it side by side.
    let page = api.examples(&output.dataset, "limit=1").await;
    let edited = api.example(page.items[0].id).await;
    let _: still_api::Example = api
        .patch(
            &format!("/api/examples/{}", edited.id),
            serde_json::json!({"answer": "EDITED-IN-REVIEW"}),
        )
        .await
        .ok();
    let v3: still_api::DatasetVersion = api
        .post(
            &format!("/api/datasets/{}/versions", output.dataset_id),
            serde_json::json!({"message": "reviewed one answer"}),
        )
        .await
        .ok();
    assert_eq!(v3.version, output.version + 1);
    // Stage 1's version against the output: the rows the diversity stage left out.
    browser
        .wait_for("[data-test=diff-versions]")
        .await?
        .click()
        .await?;
    let counts = browser
        .wait_for_text("[data-test=diff-counts]", |t| t.contains("added"))
        .await?;
    assert_eq!(
        counts,
        format!(
            "0 added · {} removed · 0 changed · 100 unchanged",
            kept_by_quality - 100
        )
    );
    let a = browser.wait_for("[data-test=diff-a]").await?;
    a.clear().await?;
    a.send_keys(&output.version.to_string()).await?;
    let b = browser.wait_for("[data-test=diff-b]").await?;
    b.clear().await?;
    b.send_keys(&v3.version.to_string()).await?;
    browser
        .wait_for("[data-test=diff-versions]")
        .await?
        .click()
        .await?;
    browser
        .wait_for_text("[data-test=diff-counts]", |t| {
            t.starts_with("0 added · 0 removed · 1 changed")
        })
        .await?;
    let changed = browser
        .wait_for_text("[data-test=diff-changed]", |t| {
            t.contains("EDITED-IN-REVIEW")
        })
        .await?;
    assert!(changed.contains("answer"), "{changed}");
    assert!(changed.contains(&edited.fields.answer), "{changed}");

    // The output's version names the curation, stage and source version that made it.
    c.goto(&format!(
        "{}/datasets/{}/versions/{}",
        server.url, output.dataset_id, output.version
    ))
    .await?;
    let made_by = browser
        .wait_for_text("[data-test=made-by]", |t| t.contains("curation"))
        .await?;
    assert!(made_by.contains("diversity"), "{made_by}");
    assert!(made_by.contains(&curation.name), "{made_by}");
    browser
        .wait_for_text("[data-test=lineage-source]", |t| t == "gsm8k-sample v1")
        .await?;

    // A curation waiting on its difficulty evals (no worker here claims them) is cancelled from
    // its page, and so are the evals it queued.
    c.goto(&format!("{}/curations?dataset=gsm8k-sample", server.url))
        .await?;
    browser
        .wait_for_value("[data-test=cur-dataset]", |v| v == "gsm8k-sample")
        .await?;
    browser
        .wait_for("[data-test=cur-models]")
        .await?
        .send_keys(still_backend::demo::TINY_MODEL_NAME)
        .await?;
    browser
        .wait_for("[data-test=start-curation]")
        .await?
        .click()
        .await?;
    browser
        .wait_for_text("[data-test=curation-stages]", |t| t.contains("eval "))
        .await?;
    browser
        .wait_for("[data-test=cancel-curation]")
        .await?
        .click()
        .await?;
    browser
        .wait_for_text("[data-test=curation-status]", |t| t == "cancelled")
        .await?;
    let curations: Vec<still_api::CurationSummary> = api.get("/api/curations").await.ok();
    let waiting = curations
        .iter()
        .find(|c| c.id != curation.id)
        .expect("the second curation");
    assert_eq!(waiting.status, "cancelled");
    assert_eq!(waiting.recipe_name.as_deref(), Some("s1"));
    let evals: Vec<i64> = waiting
        .stages
        .iter()
        .flat_map(|s| s.evals.clone())
        .collect();
    assert!(!evals.is_empty(), "{:?}", waiting.stages);
    for e in evals {
        let eval: still_api::EvalSummary = api.get(&format!("/api/evals/{e}")).await.ok();
        assert_eq!(eval.status, "cancelled", "eval {e}");
    }

    browser.close().await?;
    server.stop().await;
    Ok(())
}

/// The `d` of each drawn smoothed path, by run.
async fn smooth_paths(c: &fantoccini::Client) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for g in c
        .find_all(Locator::Css("[data-test=overlay-series]"))
        .await?
    {
        let run = g.attr("data-run").await?.unwrap_or_default();
        let d = g
            .find(Locator::Css("[data-test=smooth-path]"))
            .await?
            .attr("d")
            .await?
            .unwrap_or_default();
        out.push((run, d));
    }
    out.sort();
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_three_runs_smooth_diff_pin_a_baseline_reload_and_export() -> anyhow::Result<()> {
    let (server, api) = still_tests::server_with_tiny_model(|_| {}).await;
    let ids = still_tests::runs_with_metrics(&server, &api, 4, 200).await;
    let chosen = &ids[..3];
    let expected: still_api::Comparison = api
        .get(&format!(
            "/api/compare?runs={},{},{}&metrics=loss",
            chosen[0], chosen[1], chosen[2]
        ))
        .await
        .ok();
    let differing: Vec<String> = expected
        .config
        .iter()
        .filter(|r| r.differs)
        .map(|r| r.field.clone())
        .collect();
    assert!(
        differing.contains(&"config.lr".to_string()),
        "{differing:?}"
    );

    let browser = Browser::start().await?;
    let c = &browser.client;
    // Tick three runs on the runs page and compare them.
    c.goto(&format!("{}/runs", server.url)).await?;
    browser.wait_for("[data-test=run-row]").await?;
    for name in ["sweep-0", "sweep-1", "sweep-2"] {
        browser
            .wait_for(&format!(
                "[data-test=run-row][data-name={name}] [data-test=select-run]"
            ))
            .await?
            .click()
            .await?;
    }
    browser
        .wait_for_text("[data-test=compare-selected]", |t| t == "Compare 3 runs")
        .await?;
    browser
        .wait_for("[data-test=compare-selected]")
        .await?
        .click()
        .await?;
    browser
        .wait_for_text("[data-test=compare-count]", |t| t == "3 runs")
        .await?;
    browser.wait_for("[data-test=overlay-series]").await?;
    let raw = smooth_paths(c).await?;
    assert_eq!(raw.len(), 3, "{raw:?}");
    let mut runs: Vec<String> = chosen.iter().map(i64::to_string).collect();
    runs.sort();
    assert_eq!(raw.iter().map(|r| r.0.clone()).collect::<Vec<_>>(), runs);
    assert!(
        c.find_all(Locator::Css("[data-test=raw-path]"))
            .await?
            .is_empty(),
        "no faint raw curve without smoothing"
    );

    // Smoothing redraws every path, with the raw curve faint behind.
    c.execute(
        "const s = document.querySelector('[data-test=smoothing]'); s.value = '0.8'; \
         s.dispatchEvent(new Event('input', {bubbles: true}));",
        vec![],
    )
    .await?;
    browser
        .wait_for("[data-test=raw-path]")
        .await
        .context("the raw curve shows behind the smoothed one")?;
    let smoothed = smooth_paths(c).await?;
    for (a, b) in raw.iter().zip(&smoothed) {
        assert_eq!(a.0, b.0);
        assert_ne!(a.1, b.1, "run {}'s path is redrawn smoothed", a.0);
    }

    // The config diff lists only the fields that differ; "show all" lists every one.
    let mut shown = Vec::new();
    for row in c.find_all(Locator::Css("[data-test=config-row]")).await? {
        shown.push(row.attr("data-field").await?.unwrap_or_default());
    }
    assert_eq!(shown, differing);
    browser
        .wait_for("[data-test=config-show-all]")
        .await?
        .click()
        .await?;
    let all = c
        .find_all(Locator::Css("[data-test=config-row]"))
        .await?
        .len();
    assert_eq!(all, expected.config.len());

    // Pin sweep-1 as the baseline: the others show their final loss against it.
    let base_row = format!("[data-test=metric-row][data-run='{}']", chosen[1]);
    browser
        .wait_for(&format!("{base_row} [data-test=baseline]"))
        .await?
        .click()
        .await?;
    let other_row = format!("[data-test=metric-row][data-run='{}']", chosen[2]);
    let delta = browser
        .wait_for_text(&format!("{other_row} [data-test=delta-last]"), |t| {
            !t.is_empty()
        })
        .await?;
    let last = |i: usize| {
        expected.runs[i]
            .summary
            .iter()
            .find(|s| s.name == "loss")
            .unwrap()
            .last
    };
    // sweep-2's floor is 0.1 above sweep-1's.
    let want = last(2) - last(1);
    assert!((want - 0.1).abs() < 1e-9, "{want}");
    assert_eq!(delta, format!("+{:.3}", want));
    let own = browser
        .wait_for(&format!("{base_row} [data-test=delta-last]"))
        .await?
        .text()
        .await?;
    assert_eq!(own, "", "the baseline has no delta against itself");

    // The URL is the view: reloaded, the same runs, smoothing and baseline.
    let url = c.current_url().await?;
    assert!(url.as_str().contains("smooth=0.8"), "{url}");
    assert!(
        url.as_str().contains(&format!("baseline={}", chosen[1])),
        "{url}"
    );
    c.goto(url.as_str()).await?;
    browser
        .wait_for_text("[data-test=compare-count]", |t| t == "3 runs")
        .await?;
    browser.wait_for("[data-test=raw-path]").await?;
    assert_eq!(smooth_paths(c).await?, smoothed);
    browser
        .wait_for_text(&format!("{other_row} [data-test=delta-last]"), |t| {
            t == format!("+{:.3}", want)
        })
        .await?;

    // Export the metrics table as CSV: a line per run and metric, values as the API gives them.
    browser
        .wait_for("[data-test=export-summary]")
        .await?
        .click()
        .await?;
    let link = browser.wait_for("[data-test=csv-link]").await?;
    let href = link.attr("href").await?.unwrap_or_default();
    assert!(href.starts_with("blob:"), "{href}");
    let csv = c
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             fetch(arguments[0]).then(r => r.text()).then(done);",
            vec![serde_json::json!(href)],
        )
        .await?;
    let csv = csv.as_str().unwrap_or_default().to_string();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "run_id,run,metric,n,last_step,last,best,min,min_step,max,max_step"
    );
    assert_eq!(lines.len(), 1 + 3 * 4, "{csv}");
    let loss_of_2 = lines
        .iter()
        .find(|l| l.starts_with(&format!("{},sweep-2,loss,", chosen[2])))
        .expect("sweep-2's loss line");
    assert!(
        loss_of_2.contains(&format!(",200,200,{},", last(2))),
        "{loss_of_2}"
    );

    // Save the view; its link opens the same comparison.
    browser
        .wait_for("[data-test=comparison-name]")
        .await?
        .send_keys("three sweeps")
        .await?;
    browser
        .wait_for("[data-test=save-comparison]")
        .await?
        .click()
        .await?;
    browser
        .wait_for_text("[data-test=saved-comparison]", |t| {
            t.contains("three sweeps")
        })
        .await?;
    let saved: Vec<still_api::SavedComparison> = api.get("/api/comparisons").await.ok();
    assert_eq!(saved[0].runs, chosen.to_vec());
    assert_eq!(saved[0].baseline, Some(chosen[1]));
    c.goto(&format!(
        "{}/compare?comparison={}",
        server.url, saved[0].id
    ))
    .await?;
    browser
        .wait_for_text("[data-test=compare-count]", |t| t == "3 runs")
        .await?;
    browser.wait_for("[data-test=raw-path]").await?;
    assert_eq!(smooth_paths(c).await?, smoothed);
    let versions = c.find_all(Locator::Css("[data-test=data-version]")).await?;
    assert_eq!(versions.len(), 1, "the three runs trained on one version");

    // A run on an edited version of the data: the comparison lists both versions and their diff.
    let page = api.examples("add", "limit=1").await;
    let _: still_api::Example = api
        .patch(
            &format!("/api/examples/{}", page.items[0].id),
            serde_json::json!({"answer": "changed for the comparison"}),
        )
        .await
        .ok();
    let later = api
        .create_run(serde_json::json!({"name": "on-v2", "method": "sft", "model": "tiny", "dataset": "add"}))
        .await;
    assert_eq!(later.status, 201, "{}", later.text);
    let later_id = later.body["id"].as_i64().unwrap();
    c.goto(&format!(
        "{}/compare?runs={},{later_id}",
        server.url, chosen[0]
    ))
    .await?;
    let diff = browser
        .wait_for_text("[data-test=data-diff]", |t| t.contains("→"))
        .await?;
    assert_eq!(
        diff,
        "add v1 → v2: 0 added · 0 removed · 1 changed · 63 unchanged"
    );
    let mut rows = Vec::new();
    for row in c.find_all(Locator::Css("[data-test=data-version]")).await? {
        rows.push(row.text().await?);
    }
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows[0].starts_with("add v1") && rows[0].ends_with("sweep-0"),
        "{rows:?}"
    );
    assert!(
        rows[1].starts_with("add v2") && rows[1].ends_with("on-v2"),
        "{rows:?}"
    );

    browser.close().await?;
    server.stop().await;
    Ok(())
}
