//! The OpenAI-compatible endpoint, spoken to by `async-openai` (a client someone else
//! maintains, so the wire shapes are checked by their code): whole and streamed completions of a
//! tiny registry model, the thinking apart from the answer, s1's budget forcing as extra body
//! fields, the same text as the engine's own budget forcing, errors in OpenAI's shape, and
//! concurrent streams decoded together.

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs, FinishReason,
};
use futures_util::StreamExt;
use serde_json::{Value, json};
use still_tests::{Api, TestServer};

async fn served() -> (TestServer, Api, Client<OpenAIConfig>) {
    let (server, api) = still_tests::server_with_tiny_model(|_| {}).await;
    let (_, token) = still_backend::http::tokens::create(server.pool(), 1, "test")
        .await
        .unwrap();
    let client = Client::with_config(
        OpenAIConfig::new()
            .with_api_base(format!("{}/v1", server.url))
            .with_api_key(token),
    );
    (server, api, client)
}

fn ask(question: &str, max_tokens: u32) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model("tiny")
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content(question)
            .build()
            .unwrap()
            .into()])
        .max_completion_tokens(max_tokens)
        .temperature(0.0)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_client_gets_whole_and_streamed_completions_with_the_thinking_apart() {
    let (server, _api, client) = served().await;
    let models = client.models().list().await.unwrap();
    assert!(models.data.iter().any(|m| m.id == "tiny"), "{models:?}");

    // Whole: the typed response parses; the raw one carries the thinking apart.
    let whole = client
        .chat()
        .create(ask("What is 12 + 7?", 24))
        .await
        .unwrap();
    let choice = &whole.choices[0];
    assert_eq!(whole.model, "tiny");
    assert!(whole.id.starts_with("chatcmpl-"));
    let usage = whole.usage.as_ref().unwrap();
    assert!(usage.prompt_tokens > 5);
    assert!((1..=24).contains(&usage.completion_tokens), "{usage:?}");
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
    let mut body = serde_json::to_value(ask("What is 12 + 7?", 24)).unwrap();
    body["max_thinking_tokens"] = json!(6);
    let raw: Value = client.chat().create_byot(body.clone()).await.unwrap();
    let thinking = raw["choices"][0]["message"]["reasoning_content"]
        .as_str()
        .unwrap()
        .to_string();
    let answer = raw["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    // Cut at 6 tokens, the answer opens with s1's `Final Answer:`.
    assert!(answer.starts_with("Final Answer:"), "{raw}");
    assert!(!thinking.is_empty());

    // The engine's own budget forcing on the same prompt gives the same thinking and answer,
    // for a cut and for a minimum with a `Wait` extension (the fields reach the `Forcer`).
    let model: still_api::ModelSummary = _api.get("/api/models/tiny").await.ok();
    let folder = still_engine::hf::load(
        std::path::Path::new(&model.path),
        still_engine::candle::DType::F32,
        &still_engine::candle::Device::Cpu,
    )
    .unwrap();
    let template = still_engine::data::ChatTemplate::default();
    let forcing = still_engine::budget::Forcing {
        max_answer_tokens: 24,
        ..still_engine::budget::Forcing::from_template(&template)
    };
    for (max, min, waits) in [(6, 0, 0), (20, 12, 1)] {
        let mut body = serde_json::to_value(ask("What is 12 + 7?", 64)).unwrap();
        body["max_thinking_tokens"] = json!(max);
        body["min_thinking_tokens"] = json!(min);
        body["wait_extensions"] = json!(waits);
        let served: Value = client.chat().create_byot(body).await.unwrap();
        let message = &served["choices"][0]["message"];
        let thought = still_engine::budget::think(
            &folder,
            &[still_engine::budget::ThinkRequest {
                prompt: template.prompt("What is 12 + 7?"),
                budget: still_engine::budget::Budget {
                    max_thinking_tokens: Some(max),
                    min_thinking_tokens: min,
                    wait_extensions: waits,
                },
                sampling: Default::default(),
            }],
            &forcing,
        )
        .unwrap()
        .remove(0);
        assert_eq!(
            message["reasoning_content"],
            json!(thought.thinking),
            "{served}"
        );
        let (served_answer, engine_answer) = (
            message["content"].as_str().unwrap(),
            thought.answer.trim_start_matches('\n'),
        );
        assert!(
            engine_answer.starts_with(served_answer) || served_answer.starts_with(engine_answer),
            "server {served_answer:?}, engine {engine_answer:?}"
        );
    }

    // Streamed: OpenAI's chunks, ending with [DONE]; the pieces add up to the whole answer.
    let mut streamed = ask("What is 12 + 7?", 24);
    streamed.stream = Some(true);
    let mut stream = client.chat().create_stream(streamed).await.unwrap();
    let (mut content, mut finish, mut chunks) = (String::new(), None, 0);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        chunks += 1;
        for c in chunk.choices {
            if let Some(t) = c.delta.content {
                content.push_str(&t);
            }
            if c.finish_reason.is_some() {
                finish = c.finish_reason;
            }
        }
    }
    assert!(chunks > 2);
    assert_eq!(content, choice.message.content.clone().unwrap_or_default());
    assert_eq!(finish, choice.finish_reason);
    assert!(matches!(
        finish,
        Some(FinishReason::Stop | FinishReason::Length)
    ));
    // The raw stream carries the thinking as `reasoning_content` deltas, and the usage asked for.
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let mut raw_stream = client
        .chat()
        .create_stream_byot::<Value, Value>(body)
        .await
        .unwrap();
    let (mut reasoning, mut usage) = (String::new(), None);
    while let Some(chunk) = raw_stream.next().await {
        let chunk = chunk.unwrap();
        if let Some(t) = chunk["choices"][0]["delta"]["reasoning_content"].as_str() {
            reasoning.push_str(t);
        }
        if chunk["usage"].is_object() {
            usage = Some(chunk["usage"].clone());
        }
    }
    assert_eq!(reasoning, thinking);
    assert_eq!(
        usage.unwrap()["completion_tokens"],
        raw["usage"]["completion_tokens"]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_extensions_and_bad_requests_answer_as_openai_does() {
    let (server, _api, client) = served().await;
    // n choices, each with `Wait` forced where the model tried to stop (if it did).
    let mut body = serde_json::to_value(ask("What is 3 + 4?", 40)).unwrap();
    body["n"] = json!(3);
    body["temperature"] = json!(0.8);
    body["seed"] = json!(5);
    body["wait_extensions"] = json!(1);
    body["max_thinking_tokens"] = json!(20);
    let raw: Value = client.chat().create_byot(body).await.unwrap();
    let choices = raw["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], json!(i));
        assert!(c["message"]["reasoning_content"].is_string());
    }

    // A wrong key, an unknown model, a bad field: OpenAI's error object and status.
    let bad_key = Client::with_config(
        OpenAIConfig::new()
            .with_api_base(format!("{}/v1", server.url))
            .with_api_key("sta_wrong"),
    );
    let refused = |e: OpenAIError| match e {
        OpenAIError::ApiError(r) => (r.status_code.as_u16(), r.api_error),
        other => panic!("not an API error: {other:?}"),
    };
    let (status, error) = refused(bad_key.chat().create(ask("hi", 4)).await.unwrap_err());
    assert_eq!(
        (status, error.code.as_deref()),
        (401, Some("invalid_api_key"))
    );
    let mut unknown = ask("hi", 4);
    unknown.model = "nope".into();
    let (status, error) = refused(client.chat().create(unknown).await.unwrap_err());
    assert_eq!(
        (status, error.code.as_deref()),
        (404, Some("model_not_found"))
    );
    assert_eq!(error.param.as_deref(), Some("model"));
    let mut too_many = serde_json::to_value(ask("hi", 4)).unwrap();
    too_many["n"] = json!(99);
    let (status, error) = refused(
        client
            .chat()
            .create_byot::<Value, Value>(too_many)
            .await
            .unwrap_err(),
    );
    assert_eq!((status, error.param.as_deref()), (400, Some("n")));
    assert_eq!(error.r#type.as_deref(), Some("invalid_request_error"));
    let long = "x ".repeat(5000);
    let (status, error) = refused(client.chat().create(ask(&long, 4)).await.unwrap_err());
    assert_eq!(status, 400);
    assert!(error.message.contains("context"), "{}", error.message);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_are_decoded_together_and_each_gets_its_own_answer() {
    let (server, _api, client) = served().await;
    // The same greedy request alone, then twelve at once (with others in between): each
    // concurrent stream ends with exactly the text the lone request got.
    let alone = client
        .chat()
        .create(ask("What is 5 + 9?", 16))
        .await
        .unwrap();
    let expected = alone.choices[0].message.content.clone().unwrap_or_default();
    let mut tasks = Vec::new();
    for i in 0..12 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let question = if i % 2 == 0 {
                "What is 5 + 9?"
            } else {
                "What is 31 + 8?"
            };
            let mut request = ask(question, 16);
            request.stream = Some(true);
            let mut stream = client.chat().create_stream(request).await.unwrap();
            let mut text = String::new();
            while let Some(chunk) = stream.next().await {
                for c in chunk.unwrap().choices {
                    text.push_str(&c.delta.content.unwrap_or_default());
                }
            }
            (i, text)
        }));
    }
    for task in tasks {
        let (i, text) = task.await.unwrap();
        if i % 2 == 0 {
            assert_eq!(text, expected, "stream {i}");
        }
    }
    server.stop().await;
}

/// A model on a worker's disk is served by that worker: the request is relayed to it, decoded
/// there, and streamed back as if the server had decoded it (the same text, since the same
/// engine decodes it); with no worker that has it, the request is refused at once with what to
/// start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_on_a_worker_s_disk_is_served_by_that_worker() {
    let (server, api, client) = served().await;
    let tiny: still_api::ModelSummary = api.model("tiny").await;
    let models = tempfile::tempdir().unwrap();
    let local = models.path().join("gpu-box-model");
    std::fs::create_dir(&local).unwrap();
    for entry in std::fs::read_dir(&tiny.path).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), local.join(entry.file_name())).unwrap();
    }
    let r = api
        .create_model(json!({"name": "gpu-box-model", "location": "workers"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let listed = client.models().list().await.unwrap();
    assert!(
        listed.data.iter().any(|m| m.id == "gpu-box-model"),
        "{listed:?}"
    );
    let ask_it = |stream: bool| {
        let mut body = serde_json::to_value(ask("What is 12 + 7?", 24)).unwrap();
        body["model"] = json!("gpu-box-model");
        body["max_thinking_tokens"] = json!(6);
        body["stream"] = json!(stream);
        body
    };

    // No worker has it yet: 503 in OpenAI's shape, saying what to start.
    let refused = client
        .chat()
        .create_byot::<Value, Value>(ask_it(false))
        .await
        .unwrap_err();
    let OpenAIError::ApiError(e) = refused else {
        panic!("{refused:?}")
    };
    assert_eq!(e.status_code.as_u16(), 503, "{e:?}");
    assert!(
        e.api_error
            .message
            .contains("`still worker --models-dir DIR` with DIR/gpu-box-model"),
        "{e:?}"
    );

    let (_, token) = still_backend::jobs::workers::create_worker(server.pool(), "gpu-box")
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut worker = still_tests::spawn_worker(
        &server.url,
        &token,
        work.path(),
        &["--models-dir".as_ref(), models.path().as_os_str()],
    );
    // The same request served by the server from its own copy, for comparison.
    let mut own = ask_it(false);
    own["model"] = json!("tiny");
    let expected: Value = client.chat().create_byot(own).await.unwrap();
    let whole: Value = still_tests::wait_until(
        std::time::Duration::from_secs(60),
        || async {
            client
                .chat()
                .create_byot::<Value, Value>(ask_it(false))
                .await
                .ok()
        },
        Option::is_some,
    )
    .await
    .unwrap();
    assert_eq!(whole["model"], "gpu-box-model");
    assert_eq!(
        whole["choices"][0]["message"], expected["choices"][0]["message"],
        "{whole}"
    );
    assert_eq!(whole["usage"], expected["usage"]);

    // Streamed, and two at once (n = 2): every piece arrives, thinking apart from the answer.
    let mut body = ask_it(true);
    body["n"] = json!(2);
    let mut stream = client
        .chat()
        .create_stream_byot::<Value, Value>(body)
        .await
        .unwrap();
    let mut texts = [
        (String::new(), String::new()),
        (String::new(), String::new()),
    ];
    let mut finishes = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        for c in chunk["choices"].as_array().unwrap() {
            let i = c["index"].as_u64().unwrap() as usize;
            if let Some(t) = c["delta"]["reasoning_content"].as_str() {
                texts[i].0.push_str(t);
            }
            if let Some(t) = c["delta"]["content"].as_str() {
                texts[i].1.push_str(t);
            }
            if !c["finish_reason"].is_null() {
                finishes += 1;
            }
        }
    }
    assert_eq!(finishes, 2);
    let message = &expected["choices"][0]["message"];
    for (thinking, answer) in &texts {
        assert_eq!(
            thinking.as_str(),
            message["reasoning_content"].as_str().unwrap()
        );
        assert_eq!(answer.as_str(), message["content"].as_str().unwrap());
    }
    worker.kill().await.unwrap();
    server.stop().await;
}
