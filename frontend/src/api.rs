//! The one typed client for the Still API: every call returns `Result<T, ApiError>`.

use gloo_net::http::{Request, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use still_api::{
    DatasetStats, DatasetSummary, DatasetVersion, ErrorBody, Example, ExamplePage, ExamplePatch,
    ImportPreview, ImportRecord, ImportReport, NewVersion, TagRequest,
};

/// What went wrong with a call: the server's message when it sent one.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.status == 0 {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{} (HTTP {})", self.message, self.status)
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

fn network(e: impl std::fmt::Display) -> ApiError {
    ApiError {
        status: 0,
        message: format!("could not reach the server: {e}"),
    }
}

async fn decode<T: DeserializeOwned>(response: Response) -> ApiResult<T> {
    let status = response.status();
    if response.ok() {
        return response.json::<T>().await.map_err(|e| ApiError {
            status,
            message: format!("unexpected response: {e}"),
        });
    }
    let message = match response.json::<ErrorBody>().await {
        Ok(body) => body.message,
        Err(_) => response.status_text(),
    };
    Err(ApiError { status, message })
}

async fn get<T: DeserializeOwned>(url: &str) -> ApiResult<T> {
    decode(Request::get(url).send().await.map_err(network)?).await
}

async fn send_json<B: Serialize, T: DeserializeOwned>(
    method: &str,
    url: &str,
    body: &B,
) -> ApiResult<T> {
    let builder = match method {
        "POST" => Request::post(url),
        "PATCH" => Request::patch(url),
        _ => Request::put(url),
    };
    let request = builder.json(body).map_err(network)?;
    decode(request.send().await.map_err(network)?).await
}

async fn delete<T: DeserializeOwned>(url: &str) -> ApiResult<T> {
    decode(Request::delete(url).send().await.map_err(network)?).await
}

/// Percent-encodes a value for a query string or path segment.
pub fn encode(value: &str) -> String {
    String::from(js_sys::encode_uri_component(value))
}

pub async fn datasets() -> ApiResult<Vec<DatasetSummary>> {
    get("/api/datasets").await
}

pub async fn dataset(id: &str) -> ApiResult<DatasetSummary> {
    get(&format!("/api/datasets/{}", encode(id))).await
}

pub async fn delete_dataset(id: i64) -> ApiResult<()> {
    let response = Request::delete(&format!("/api/datasets/{id}"))
        .send()
        .await
        .map_err(network)?;
    if response.ok() {
        Ok(())
    } else {
        decode::<()>(response).await
    }
}

pub async fn stats(id: i64) -> ApiResult<DatasetStats> {
    get(&format!("/api/datasets/{id}/stats")).await
}

pub async fn imports(id: i64) -> ApiResult<Vec<ImportRecord>> {
    get(&format!("/api/datasets/{id}/imports")).await
}

pub async fn versions(id: i64) -> ApiResult<Vec<DatasetVersion>> {
    get(&format!("/api/datasets/{id}/versions")).await
}

pub async fn create_version(id: i64, message: String) -> ApiResult<DatasetVersion> {
    send_json(
        "POST",
        &format!("/api/datasets/{id}/versions"),
        &NewVersion { message },
    )
    .await
}

/// `query` is an already-encoded query string (see [`crate::pages::dataset::ExampleFilter`]).
pub async fn examples(id: i64, query: &str) -> ApiResult<ExamplePage> {
    get(&format!("/api/datasets/{id}/examples?{query}")).await
}

pub async fn example(id: i64) -> ApiResult<Example> {
    get(&format!("/api/examples/{id}")).await
}

pub async fn patch_example(id: i64, patch: &ExamplePatch) -> ApiResult<Example> {
    send_json("PATCH", &format!("/api/examples/{id}"), patch).await
}

pub async fn add_tag(id: i64, tag: String) -> ApiResult<Example> {
    send_json(
        "POST",
        &format!("/api/examples/{id}/tags"),
        &TagRequest { tag },
    )
    .await
}

pub async fn remove_tag(id: i64, tag: &str) -> ApiResult<Example> {
    delete(&format!("/api/examples/{id}/tags/{}", encode(tag))).await
}

pub async fn trash_example(id: i64) -> ApiResult<Example> {
    delete(&format!("/api/examples/{id}")).await
}

pub async fn restore_example(id: i64) -> ApiResult<Example> {
    send_json(
        "POST",
        &format!("/api/examples/{id}/restore"),
        &serde_json::json!({}),
    )
    .await
}

async fn post_form<T: DeserializeOwned>(url: &str, form: web_sys::FormData) -> ApiResult<T> {
    let request = Request::post(url).body(form).map_err(network)?;
    decode(request.send().await.map_err(network)?).await
}

pub async fn import(form: web_sys::FormData) -> ApiResult<ImportReport> {
    post_form("/api/datasets/import", form).await
}

pub async fn preview(form: web_sys::FormData) -> ApiResult<ImportPreview> {
    post_form("/api/datasets/preview", form).await
}

pub async fn models() -> ApiResult<Vec<still_api::ModelSummary>> {
    get("/api/models").await
}

pub async fn create_model(request: &still_api::NewModel) -> ApiResult<still_api::ModelSummary> {
    send_json("POST", "/api/models", request).await
}

/// Runs, newest first; `status` filters (empty: all).
pub async fn runs(status: &str) -> ApiResult<Vec<still_api::RunSummary>> {
    get(&format!("/api/runs?status={}", encode(status))).await
}

/// The s1 demo as a run request (the embedded default's one-click recipe).
pub async fn s1_demo_recipe() -> ApiResult<still_api::NewRun> {
    get("/api/recipes/s1-demo").await
}

pub async fn estimate_run(request: &still_api::NewRun) -> ApiResult<still_api::RunEstimate> {
    send_json("POST", "/api/runs/estimate", request).await
}

pub async fn run(id: &str) -> ApiResult<still_api::RunSummary> {
    get(&format!("/api/runs/{}", encode(id))).await
}

pub async fn create_run(request: &still_api::NewRun) -> ApiResult<still_api::RunSummary> {
    send_json("POST", "/api/runs", request).await
}

pub async fn cancel_run(id: i64) -> ApiResult<still_api::RunSummary> {
    send_json(
        "POST",
        &format!("/api/runs/{id}/cancel"),
        &serde_json::json!({}),
    )
    .await
}

pub async fn workers() -> ApiResult<Vec<still_api::WorkerSummary>> {
    get("/api/workers").await
}

pub async fn evals() -> ApiResult<Vec<still_api::EvalSummary>> {
    get("/api/evals").await
}

/// The evals a run made of its checkpoints and final model, in step order.
pub async fn run_evals(run: i64) -> ApiResult<Vec<still_api::EvalSummary>> {
    get(&format!("/api/evals?run={run}")).await
}

/// The questions evals `a` and `b` both graded, at budget `budget_a` of `a` and `budget_b` of
/// `b`, and which flipped.
pub async fn eval_flips(
    a: i64,
    b: i64,
    budget_a: i64,
    budget_b: i64,
) -> ApiResult<still_api::EvalFlips> {
    get(&format!(
        "/api/evals/{a}/flips/{b}?budget_a={budget_a}&budget_b={budget_b}"
    ))
    .await
}

pub async fn eval(id: &str) -> ApiResult<still_api::EvalSummary> {
    get(&format!("/api/evals/{}", encode(id))).await
}

pub async fn create_eval(request: &still_api::NewEval) -> ApiResult<still_api::EvalSummary> {
    send_json("POST", "/api/evals", request).await
}

pub async fn cancel_eval(id: i64) -> ApiResult<still_api::EvalSummary> {
    send_json(
        "POST",
        &format!("/api/evals/{id}/cancel"),
        &serde_json::json!({}),
    )
    .await
}

/// A page of an eval's graded examples; `query` is the route's query string.
pub async fn eval_examples(id: i64, query: &str) -> ApiResult<Vec<still_api::EvalExample>> {
    get(&format!("/api/evals/{id}/examples?{query}")).await
}

/// A chat completion streamed from the studio's own route (`/api/chat/completions`, the same
/// handler as `/v1/chat/completions`): `on_chunk` gets every `data:` payload but `[DONE]`, as
/// JSON, in order. An error answer (not a stream) is returned as the error.
pub async fn stream_chat(
    body: &serde_json::Value,
    mut on_chunk: impl FnMut(serde_json::Value),
) -> ApiResult<()> {
    use wasm_bindgen::JsCast;
    let response = Request::post("/api/chat/completions")
        .json(body)
        .map_err(network)?
        .send()
        .await
        .map_err(network)?;
    if !response.ok() {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or(text);
        return Err(ApiError { status, message });
    }
    let Some(stream) = response.body() else {
        return Err(network("the answer has no body"));
    };
    let reader: web_sys::ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let read = wasm_bindgen_futures::JsFuture::from(reader.read())
            .await
            .map_err(|e| network(format!("{e:?}")))?;
        let done = js_sys::Reflect::get(&read, &"done".into())
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        if let Ok(value) = js_sys::Reflect::get(&read, &"value".into())
            && !value.is_undefined()
        {
            pending.extend(js_sys::Uint8Array::new(&value).to_vec());
        }
        // Server-Sent Events: records end with a blank line; each `data:` line is a chunk.
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let record: Vec<u8> = pending.drain(..end + 2).collect();
            for line in String::from_utf8_lossy(&record).lines() {
                if let Some(data) = line.strip_prefix("data: ")
                    && data != "[DONE]"
                    && let Ok(value) = serde_json::from_str(data)
                {
                    on_chunk(value);
                }
            }
        }
        if done {
            return Ok(());
        }
    }
}

/// The team's trace generations; with `dataset`, only those from or into it.
pub async fn generations(dataset: Option<&str>) -> ApiResult<Vec<still_api::GenerationSummary>> {
    match dataset {
        Some(d) => get(&format!("/api/generations?dataset={}", encode(d))).await,
        None => get("/api/generations").await,
    }
}

pub async fn generation(id: &str) -> ApiResult<still_api::GenerationSummary> {
    get(&format!("/api/generations/{}", encode(id))).await
}

pub async fn create_generation(
    request: &still_api::NewGeneration,
) -> ApiResult<still_api::GenerationSummary> {
    send_json("POST", "/api/generations", request).await
}

pub async fn cancel_generation(id: i64) -> ApiResult<still_api::GenerationSummary> {
    send_json(
        "POST",
        &format!("/api/generations/{id}/cancel"),
        &serde_json::json!({}),
    )
    .await
}

/// A page of a generation's rows; `query` is the route's query string.
pub async fn generation_rows(id: i64, query: &str) -> ApiResult<Vec<still_api::GenerationRow>> {
    get(&format!("/api/generations/{id}/rows?{query}")).await
}

/// A generation's log lines.
pub async fn generation_logs(id: i64) -> ApiResult<Vec<still_api::RunLogEntry>> {
    get(&format!("/api/generations/{id}/logs?limit=200")).await
}

pub async fn curations() -> ApiResult<Vec<still_api::CurationSummary>> {
    get("/api/curations").await
}

pub async fn curation(id: &str) -> ApiResult<still_api::CurationSummary> {
    get(&format!("/api/curations/{}", encode(id))).await
}

pub async fn create_curation(
    request: &still_api::NewCuration,
) -> ApiResult<still_api::CurationSummary> {
    send_json("POST", "/api/curations", request).await
}

pub async fn cancel_curation(id: i64) -> ApiResult<still_api::CurationSummary> {
    send_json(
        "POST",
        &format!("/api/curations/{id}/cancel"),
        &serde_json::json!({}),
    )
    .await
}

pub async fn curation_drops(id: i64, query: &str) -> ApiResult<still_api::DroppedPage> {
    get(&format!("/api/curations/{id}/drops?{query}")).await
}

pub async fn version_diff(dataset: i64, a: i64, b: i64) -> ApiResult<still_api::VersionDiff> {
    get(&format!(
        "/api/datasets/{dataset}/versions/{a}/diff/{b}?limit=50"
    ))
    .await
}

pub async fn preview_quality(
    request: &still_api::QualityPreviewRequest,
) -> ApiResult<still_api::QualityPreview> {
    send_json("POST", "/api/curations/preview", request).await
}

pub async fn curation_recipes() -> ApiResult<Vec<still_api::SavedRecipe>> {
    get("/api/curation-recipes").await
}

pub async fn save_curation_recipe(
    name: String,
    recipe: still_api::Recipe,
) -> ApiResult<still_api::SavedRecipe> {
    #[derive(serde::Serialize)]
    struct Body {
        name: String,
        recipe: still_api::Recipe,
    }
    send_json("POST", "/api/curation-recipes", &Body { name, recipe }).await
}

pub async fn version_lineage(dataset: i64, version: i64) -> ApiResult<still_api::VersionLineage> {
    get(&format!(
        "/api/datasets/{dataset}/versions/{version}/lineage"
    ))
    .await
}

/// `GET /api/compare?{query}` (`runs=…&metrics=…&max_points=…`).
pub async fn compare(query: &str) -> ApiResult<still_api::Comparison> {
    get(&format!("/api/compare?{query}")).await
}

pub async fn save_comparison(
    body: &still_api::NewComparison,
) -> ApiResult<still_api::SavedComparison> {
    send_json("POST", "/api/comparisons", body).await
}

pub async fn comparison(id: &str) -> ApiResult<still_api::SavedComparison> {
    get(&format!("/api/comparisons/{}", encode(id))).await
}
