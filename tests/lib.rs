//! Helpers for the end-to-end tests: a real server on a loopback port over a temporary data
//! directory, paths to the shared real data, the `still` binary, Parquet fixtures and a headless
//! Chromium session.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use still_backend::{Config, Server};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A real third-party data file the repository carries for its tests: `tests/data/<relative>`
/// (or under `STILL_TEST_DATA`, an override for trying other copies).
pub fn test_data(relative: &str) -> PathBuf {
    let base = std::env::var_os("STILL_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("tests/data"));
    let path = base.join(relative);
    assert!(
        path.is_file(),
        "test data file {} is missing",
        path.display()
    );
    // Canonical: chromedriver refuses file paths with `..` in them.
    path.canonicalize().expect("canonical path")
}

/// Counts the non-blank lines of a file.
pub fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .expect("readable")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// The built UI: `STILL_UI_DIR` or `dist/` at the repository root.
pub fn ui_dir() -> PathBuf {
    std::env::var_os("STILL_UI_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("dist"))
}

/// The `still` binary built by `cargo build` (scripts/test builds it before the tests).
pub fn still_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("STILL_BIN") {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/it-<hash> → target/<profile>/still
    let exe = std::env::current_exe().expect("test binary path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("still");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p still-backend --bin still` first",
        path.display()
    );
    path
}

/// A server over a fresh data directory, stopped (and the directory removed) on drop.
pub struct TestServer {
    pub server: Option<Server>,
    pub url: String,
    pub data_dir: tempfile::TempDir,
    config: Config,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        // Server errors (5xx details go only to the log) show up in a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("still_backend=info")
            .with_test_writer()
            .try_init();
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::new(data_dir.path());
        config.ui_dir = ui_dir();
        adjust(&mut config);
        let server = still_backend::start(config.clone(), "127.0.0.1:0".parse().unwrap())
            .await
            .expect("server starts");
        let url = server.url();
        Self {
            server: Some(server),
            url,
            data_dir,
            config,
        }
    }

    /// Stops the server, waits `down`, and starts a new one on the same address over the same
    /// data directory (what a crash-free restart of `still serve` does).
    pub async fn restart(&mut self, down: Duration) {
        let server = self.server.take().expect("running");
        let addr = server.addr;
        server.stop().await.expect("server stops cleanly");
        tokio::time::sleep(down).await;
        let server = still_backend::start(self.config.clone(), addr)
            .await
            .expect("server starts again on the same address");
        self.server = Some(server);
    }

    pub fn pool(&self) -> &sqlx::SqlitePool {
        &self.server.as_ref().expect("running").state.db
    }

    /// Makes the running server fail once at `point`, as if it crashed there.
    pub fn arm(&self, point: still_backend::failpoints::FailPoint) {
        self.server
            .as_ref()
            .expect("running")
            .state
            .failpoints
            .arm(point);
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("server stops cleanly");
        }
    }
}

/// Starts `still worker` against `server_url` with `token`, working in `work_dir`, plus `extra`
/// arguments; killed when dropped.
pub fn spawn_worker(
    server_url: &str,
    token: &str,
    work_dir: &Path,
    extra: &[&std::ffi::OsStr],
) -> tokio::process::Child {
    tokio::process::Command::new(still_bin())
        .args([
            "worker",
            "--server",
            server_url,
            "--token",
            token,
            "--work-dir",
        ])
        .arg(work_dir)
        .args(extra)
        .kill_on_drop(true)
        .spawn()
        .expect("still worker starts")
}

/// Writes s1K-shaped rows (`thinking_trajectories` as a Parquet LIST) to a Parquet file.
pub fn write_s1k_parquet(path: &Path, rows: &[S1kRow]) -> anyhow::Result<()> {
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    let schema = parse_message_type(
        "message s1k {
            REQUIRED BYTE_ARRAY question (UTF8);
            OPTIONAL group thinking_trajectories (LIST) {
                REPEATED group list { OPTIONAL BYTE_ARRAY element (UTF8); }
            }
            REQUIRED BYTE_ARRAY attempt (UTF8);
            OPTIONAL BYTE_ARRAY solution (UTF8);
            REQUIRED BYTE_ARRAY cot_type (UTF8);
            REQUIRED BYTE_ARRAY source_type (UTF8);
            REQUIRED BYTE_ARRAY metadata (UTF8);
        }",
    )?;
    let props = Arc::new(WriterProperties::builder().build());
    let file = std::fs::File::create(path)?;
    let mut writer = SerializedFileWriter::new(file, Arc::new(schema), props)?;
    let mut group = writer.next_row_group()?;
    let text = |s: &str| ByteArray::from(s.as_bytes().to_vec());
    let columns: [fn(&S1kRow) -> &str; 7] = [
        |r| &r.question,
        |r| &r.thinking,
        |r| &r.attempt,
        |r| &r.solution,
        |r| &r.cot_type,
        |r| &r.source_type,
        |r| &r.metadata,
    ];
    for (i, column) in columns.iter().enumerate() {
        let mut col = group.next_column()?.context("schema has seven columns")?;
        let values: Vec<ByteArray> = rows.iter().map(|r| text(column(r))).collect();
        match i {
            // The list: one element per row; def level 3 = element present, rep 0 = new row.
            1 => {
                let def = vec![3i16; rows.len()];
                let rep = vec![0i16; rows.len()];
                col.typed::<ByteArrayType>()
                    .write_batch(&values, Some(&def), Some(&rep))?;
            }
            3 => {
                let def = vec![1i16; rows.len()];
                col.typed::<ByteArrayType>()
                    .write_batch(&values, Some(&def), None)?;
            }
            _ => {
                col.typed::<ByteArrayType>()
                    .write_batch(&values, None, None)?;
            }
        }
        col.close()?;
    }
    group.close()?;
    writer.close()?;
    Ok(())
}

/// One s1K row for [`write_s1k_parquet`].
#[derive(Debug, Clone)]
pub struct S1kRow {
    pub question: String,
    pub thinking: String,
    pub attempt: String,
    pub solution: String,
    pub cot_type: String,
    pub source_type: String,
    pub metadata: String,
}

/// A headless Chromium driven through chromedriver; both processes end on drop.
pub struct Browser {
    pub client: fantoccini::Client,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    pub async fn start() -> anyhow::Result<Self> {
        let driver_bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = free_port();
        let driver = tokio::process::Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!("starting {driver_bin} (install chromium-driver; scripts/test does)")
            })?;
        let profile = tempfile::tempdir()?;
        let binary = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .context("chromium is not installed (scripts/test installs it)")?;
        let caps: serde_json::Map<String, serde_json::Value> =
            serde_json::from_value(serde_json::json!({
                "goog:chromeOptions": {
                    "binary": binary,
                    "args": [
                        "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--disable-quic", "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                        format!("--user-data-dir={}", profile.path().display()),
                    ]
                }
            }))?;
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut last_error = None;
        for _ in 0..50 {
            match fantoccini::ClientBuilder::new(connector.clone())
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => {
                    return Ok(Self {
                        client,
                        _driver: driver,
                        _profile: profile,
                    });
                }
                Err(e) => {
                    last_error = Some(e);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        bail!("chromedriver did not start a session: {last_error:?}")
    }

    /// Waits up to 20 s for an element matching `css`.
    pub async fn wait_for(&self, css: &str) -> anyhow::Result<fantoccini::elements::Element> {
        self.client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(fantoccini::Locator::Css(css))
            .await
            .with_context(|| format!("waiting for `{css}`"))
    }

    /// Waits up to 20 s until the text of the first `css` element satisfies `check`.
    pub async fn wait_for_text(
        &self,
        css: &str,
        check: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        self.wait_until(css, false, check).await
    }

    /// Waits up to 20 s until the `value` of the first `css` input satisfies `check`.
    pub async fn wait_for_value(
        &self,
        css: &str,
        check: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        self.wait_until(css, true, check).await
    }

    async fn wait_until(
        &self,
        css: &str,
        value: bool,
        check: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut last = String::new();
        while std::time::Instant::now() < deadline {
            if let Ok(el) = self.client.find(fantoccini::Locator::Css(css)).await {
                let seen = if value {
                    el.prop("value").await.ok().flatten()
                } else {
                    el.text().await.ok()
                };
                if let Some(seen) = seen {
                    if check(&seen) {
                        return Ok(seen);
                    }
                    last = seen;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let what = if value { "value" } else { "text" };
        bail!("`{css}` never had the expected {what}; last seen: {last:?}")
    }

    pub async fn close(self) -> anyhow::Result<()> {
        self.client.close().await?;
        Ok(())
    }
}

/// Calls `probe` every 50 ms until `done` holds for what it returned or `within` has passed;
/// the last value seen.
pub async fn wait_until<T, F, Fut>(within: Duration, mut probe: F, done: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        let seen = probe().await;
        if done(&seen) || std::time::Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A typed client for the studio's API, over one server: the request shapes in one place.
/// Every test request goes through it; what the typed methods do not cover (a guard test's
/// forged header, a malformed body, a multipart edge case, a stream) goes through
/// [`Api::request`], so the base URL and the way a reply is read stay here.
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
}

/// A response's status and body: as JSON (`Null` when the body is not JSON) and as text.
pub struct Reply {
    /// The request, as "METHOD /path", for failure messages.
    pub what: String,
    pub status: u16,
    pub body: serde_json::Value,
    pub text: String,
}

impl Reply {
    /// The body as `T`, asserting the status was a success.
    pub fn ok<T: serde::de::DeserializeOwned>(self) -> T {
        assert!(
            (200..300).contains(&self.status),
            "{}: HTTP {}: {}",
            self.what,
            self.status,
            self.text
        );
        let (what, text) = (self.what, self.text);
        serde_json::from_value(self.body).unwrap_or_else(|e| {
            panic!("{what}: the body does not have the expected shape ({e}): {text}")
        })
    }

    /// The error body of a failed request (a panic if the body is not one).
    pub fn error(&self) -> still_api::ErrorBody {
        serde_json::from_value(self.body.clone())
            .unwrap_or_else(|e| panic!("{}: not an error body ({e}): {}", self.what, self.text))
    }

    /// The error message of a failed request.
    pub fn message(&self) -> String {
        self.body["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A download: status, headers and the body's bytes as they came.
pub struct Download {
    /// The request, as "METHOD /path", for failure messages.
    pub what: String,
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Download {
    /// The bytes, asserting the status was a success.
    pub fn ok(self) -> Vec<u8> {
        assert!(
            (200..300).contains(&self.status),
            "{}: HTTP {}: {}",
            self.what,
            self.status,
            self.text()
        );
        self.bytes
    }

    /// The body as text (invalid UTF-8 replaced, as `reqwest::Response::text` does).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// A request being built through [`Api::request`]: for headers, raw bodies and forms the typed
/// methods do not send.
pub struct Request {
    what: String,
    builder: reqwest::RequestBuilder,
}

impl Request {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }

    /// The worker protocol's `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn json(mut self, body: &impl serde::Serialize) -> Self {
        self.builder = self.builder.json(body);
        self
    }

    pub fn body(mut self, body: impl Into<reqwest::Body>) -> Self {
        self.builder = self.builder.body(body);
        self
    }

    pub fn multipart(mut self, form: reqwest::multipart::Form) -> Self {
        self.builder = self.builder.multipart(form);
        self
    }

    /// Sends it and reads the whole body as a [`Reply`].
    pub async fn send(self) -> Reply {
        let what = self.what.clone();
        let response = self.response().await;
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        Reply {
            what,
            status,
            body: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
            text,
        }
    }

    /// Sends it and reads the whole body as bytes.
    pub async fn bytes(self) -> Download {
        let what = self.what.clone();
        let response = self.response().await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("a body").to_vec();
        Download {
            what,
            status,
            headers,
            bytes,
        }
    }

    /// Sends it and hands back the response unread (for streams).
    pub async fn response(self) -> reqwest::Response {
        self.builder
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: request not sent: {e}", self.what))
    }
}

/// `path`, with `?query` when there is one.
fn with_query(path: String, query: &str) -> String {
    if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    }
}

impl Api {
    pub fn new(server: &TestServer) -> Self {
        Self::at(&server.url)
    }

    /// A client for the server at `base` (`http://127.0.0.1:PORT`).
    pub fn at(base: &str) -> Self {
        Self {
            client: reqwest::Client::new(),
            base: base.to_string(),
        }
    }

    /// A request to `path` (under the server's address) to finish by hand.
    pub fn request(&self, method: reqwest::Method, path: &str) -> Request {
        Request {
            what: format!("{method} {path}"),
            builder: self.client.request(method, format!("{}{path}", self.base)),
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(reqwest::Method::GET, path).send().await
    }

    /// A download: the body's bytes and the headers.
    pub async fn get_bytes(&self, path: &str) -> Download {
        self.request(reqwest::Method::GET, path).bytes().await
    }

    /// A POST with a JSON body.
    pub async fn post(&self, path: &str, body: impl serde::Serialize) -> Reply {
        self.request(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
    }

    /// A POST without a body.
    pub async fn post_empty(&self, path: &str) -> Reply {
        self.request(reqwest::Method::POST, path).send().await
    }

    /// A PATCH with a JSON body.
    pub async fn patch(&self, path: &str, body: impl serde::Serialize) -> Reply {
        self.request(reqwest::Method::PATCH, path)
            .json(&body)
            .send()
            .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.request(reqwest::Method::DELETE, path).send().await
    }

    /// Posts a file to an upload `route` (import or preview) with extra form fields.
    pub async fn upload(&self, route: &str, path: &Path, fields: &[(&str, &str)]) -> Reply {
        let bytes = std::fs::read(path).expect("readable fixture");
        let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(file_name),
        );
        for (k, v) in fields {
            form = form.text(k.to_string(), v.to_string());
        }
        self.request(reqwest::Method::POST, route)
            .multipart(form)
            .send()
            .await
    }

    /// Imports a file through the upload route with extra form fields.
    pub async fn import(&self, path: &Path, fields: &[(&str, &str)]) -> Reply {
        self.upload("/api/datasets/import", path, fields).await
    }

    /// Imports `rows` synthetic two-digit addition rows (canonical JSONL, seed 1) as dataset
    /// `name` through the upload route.
    pub async fn import_addition(&self, name: &str, rows: usize) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(format!("{name}.jsonl"));
        let text: String = still_engine::synth::addition(2, rows, 1)
            .iter()
            .map(|r| serde_json::to_string(r).expect("row serialises") + "\n")
            .collect();
        std::fs::write(&path, text).expect("fixture written");
        let reply = self.import(&path, &[("name", name)]).await;
        assert_eq!(reply.status, 201, "importing {name}");
    }

    pub async fn datasets(&self) -> Vec<still_api::DatasetSummary> {
        self.get("/api/datasets").await.ok()
    }

    pub async fn dataset(&self, name: &str) -> still_api::DatasetSummary {
        self.get(&format!("/api/datasets/{name}")).await.ok()
    }

    /// A page of a dataset's rows; `query` as in the URL (`q=frac&limit=1`).
    pub async fn examples(&self, dataset: &str, query: &str) -> still_api::ExamplePage {
        self.get(&with_query(
            format!("/api/datasets/{dataset}/examples"),
            query,
        ))
        .await
        .ok()
    }

    pub async fn example(&self, id: i64) -> still_api::Example {
        self.get(&format!("/api/examples/{id}")).await.ok()
    }

    /// A dataset's export; `query` as in the URL (`version=1`, `shape=s1k`, or empty).
    pub async fn export(&self, dataset: &str, query: &str) -> Download {
        self.get_bytes(&with_query(
            format!("/api/datasets/{dataset}/export"),
            query,
        ))
        .await
    }

    pub async fn create_model(&self, body: serde_json::Value) -> Reply {
        self.post("/api/models", body).await
    }

    /// A model by name or id.
    pub async fn model(&self, key: impl std::fmt::Display) -> still_api::ModelSummary {
        self.get(&format!("/api/models/{key}")).await.ok()
    }

    pub async fn models(&self) -> Vec<still_api::ModelSummary> {
        self.get("/api/models").await.ok()
    }

    pub async fn create_run(&self, body: serde_json::Value) -> Reply {
        self.post("/api/runs", body).await
    }

    pub async fn estimate(&self, body: serde_json::Value) -> Reply {
        self.post("/api/runs/estimate", body).await
    }

    pub async fn run(&self, id: i64) -> still_api::RunSummary {
        self.get(&format!("/api/runs/{id}")).await.ok()
    }

    pub async fn cancel(&self, id: i64) -> Reply {
        self.post_empty(&format!("/api/runs/{id}/cancel")).await
    }

    /// A run's metric points; `query` as in the URL (`name=loss&max_points=100`, or empty).
    pub async fn metrics(&self, id: i64, query: &str) -> Vec<still_api::MetricPoint> {
        self.get(&with_query(format!("/api/runs/{id}/metrics"), query))
            .await
            .ok()
    }

    /// A run's whole log (up to 1,000 lines).
    pub async fn logs(&self, id: i64) -> Vec<still_api::RunLogEntry> {
        self.get(&format!("/api/runs/{id}/logs?limit=1000"))
            .await
            .ok()
    }

    pub async fn artifacts(&self, id: i64) -> Vec<still_api::ArtifactFolder> {
        self.get(&format!("/api/runs/{id}/artifacts")).await.ok()
    }

    /// A run's Server-Sent Events: the response unread, to be streamed.
    pub async fn events(&self, id: i64) -> reqwest::Response {
        self.request(reqwest::Method::GET, &format!("/api/runs/{id}/events"))
            .response()
            .await
    }

    pub async fn workers(&self) -> Vec<still_api::WorkerSummary> {
        self.get("/api/workers").await.ok()
    }

    /// Polls a run until `done` holds or `within` passed; the last state seen.
    pub async fn wait_for_run(
        &self,
        id: i64,
        within: Duration,
        done: impl Fn(&still_api::RunSummary) -> bool,
    ) -> still_api::RunSummary {
        wait_until(within, || self.run(id), done).await
    }

    /// The worker protocol as the worker holding `token`.
    pub fn worker(&self, token: &str) -> WorkerApi {
        WorkerApi {
            api: self.clone(),
            token: token.to_string(),
        }
    }

    /// Creates a worker identity on the server and starts a `still worker` process for it.
    pub async fn start_worker(
        &self,
        server: &TestServer,
        work_dir: &Path,
    ) -> tokio::process::Child {
        let (_, token) = still_backend::jobs::workers::create_worker(server.pool(), "test-worker")
            .await
            .expect("worker created");
        spawn_worker(&server.url, &token, work_dir, &[])
    }
}

/// The worker protocol (`/api/worker/...`) as one worker: every request carries its token.
#[derive(Clone)]
pub struct WorkerApi {
    api: Api,
    token: String,
}

impl WorkerApi {
    /// A request with the worker's token, to finish by hand.
    pub fn request(&self, method: reqwest::Method, path: &str) -> Request {
        self.api.request(method, path).bearer(&self.token)
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(reqwest::Method::GET, path).send().await
    }

    /// A POST with a JSON body.
    pub async fn post(&self, path: &str, body: impl serde::Serialize) -> Reply {
        self.request(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
    }

    /// A PUT of raw bytes.
    pub async fn put(&self, path: &str, body: impl Into<reqwest::Body>) -> Reply {
        self.request(reqwest::Method::PUT, path)
            .body(body)
            .send()
            .await
    }

    /// Announces the worker's device, memory and (optionally) models.
    pub async fn register(&self, body: serde_json::Value) -> Reply {
        self.post("/api/worker/register", body).await
    }

    /// Asks for a job without waiting.
    pub async fn claim(&self) -> Reply {
        self.post("/api/worker/claim?wait_ms=0", serde_json::json!({}))
            .await
    }

    pub async fn heartbeat(&self, job_id: i64) -> Reply {
        self.post(
            &format!("/api/worker/jobs/{job_id}/heartbeat"),
            serde_json::json!({}),
        )
        .await
    }

    pub async fn metrics(&self, job_id: i64, points: &[still_api::MetricPoint]) -> Reply {
        self.post(&format!("/api/worker/jobs/{job_id}/metrics"), points)
            .await
    }

    pub async fn logs(&self, job_id: i64, lines: &serde_json::Value) -> Reply {
        self.post(&format!("/api/worker/jobs/{job_id}/logs"), lines)
            .await
    }

    /// Uploads one file of the final model, announcing its SHA-256.
    pub async fn put_final(
        &self,
        job_id: i64,
        file: &str,
        body: impl Into<reqwest::Body>,
        sha256: &str,
    ) -> Reply {
        self.request(
            reqwest::Method::PUT,
            &format!("/api/worker/jobs/{job_id}/final/{file}"),
        )
        .header("x-content-sha256", sha256)
        .body(body)
        .send()
        .await
    }

    pub async fn complete(&self, job_id: i64) -> Reply {
        self.post(
            &format!("/api/worker/jobs/{job_id}/complete"),
            serde_json::json!({}),
        )
        .await
    }

    /// The files of a model's folder, as a worker downloads them.
    pub async fn model_files(&self, model_id: i64) -> Reply {
        self.get(&format!("/api/worker/models/{model_id}/files"))
            .await
    }
}

/// A server with 64 synthetic addition rows (dataset `add`) and a tiny model made from them
/// (`tiny`), what the run and eval tests start from.
pub async fn server_with_tiny_model(adjust: impl FnOnce(&mut Config)) -> (TestServer, Api) {
    let server = TestServer::start_with(adjust).await;
    let api = Api::new(&server);
    api.import_addition("add", 64).await;
    let model = api
        .create_model(serde_json::json!({"name": "tiny", "preset": "tiny", "tokenizer_dataset": "add", "vocab_size": 300}))
        .await;
    assert_eq!(model.status, 201, "{}", model.text);
    (server, api)
}

/// A run's loss at `step` in [`runs_with_metrics`]: falls towards `floor`, with a bump at step
/// 40.
pub fn sweep_loss(step: i64, floor: f64) -> f64 {
    floor + 2.0 / (1.0 + step as f64 / 10.0) + if step == 40 { 0.5 } else { 0.0 }
}

/// `n` SFT runs of the tiny model on `add` (from [`server_with_tiny_model`]) named `sweep-<i>`,
/// lr 1e-4 for even `i` and 3e-4 for odd, each claimed by a worker of its own that reports
/// `steps` steps of `loss` ([`sweep_loss`] with floor `0.1 i`), `lr`, `tokens_per_s` (100 +
/// step) and `elapsed_s` (step / 2) the way workers send them. Returns the run ids.
pub async fn runs_with_metrics(server: &TestServer, api: &Api, n: usize, steps: i64) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..n {
        let lr = if i % 2 == 0 { 1e-4 } else { 3e-4 };
        let run = api
            .create_run(
                serde_json::json!({"name": format!("sweep-{i}"), "method": "sft",
                "model": "tiny", "dataset": "add", "params": {"lr": lr, "max_steps": steps}}),
            )
            .await;
        assert_eq!(run.status, 201, "{}", run.text);
        let id = run.body["id"].as_i64().unwrap();
        ids.push(id);
        let (worker, token) =
            still_backend::jobs::workers::create_worker(server.pool(), &format!("w{i}"))
                .await
                .unwrap();
        let job = still_backend::kinds::claim(server.pool(), worker, 600)
            .await
            .unwrap()
            .expect("the run's job");
        assert_eq!(job.work.run_id(), Some(id));
        let floor = 0.1 * i as f64;
        let points: Vec<still_api::MetricPoint> = (1..=steps)
            .flat_map(|step| {
                [
                    ("loss", sweep_loss(step, floor)),
                    ("lr", lr),
                    ("tokens_per_s", 100.0 + step as f64),
                    ("elapsed_s", step as f64 / 2.0),
                ]
                .map(|(name, value)| still_api::MetricPoint {
                    step,
                    name: name.into(),
                    value,
                })
            })
            .collect();
        for chunk in points.chunks(4000) {
            let sent = api.worker(&token).metrics(job.job_id, chunk).await;
            assert!(sent.status < 300, "{}", sent.text);
        }
    }
    ids
}

/// Whether a run has ended (succeeded, failed or cancelled).
pub fn run_finished(run: &still_api::RunSummary) -> bool {
    run.status.is_finished()
}

/// A stand-in for a third-party OpenAI-compatible teacher (a hosted API, vLLM) on a loopback
/// port: it answers `What is a + b?` rows, right when `a` is even and one off when it is odd,
/// thinking in `reasoning_content` when `b` is even and in inline `<think>` tags when it is
/// odd. It asks for the bearer key [`FakeTeacher::KEY`], refuses (400) any question containing
/// [`FakeTeacherConfig::refuse`], fails each question's first `fail_first` requests (429 with
/// `Retry-After: 0`, then 500, alternately), waits `delay` before each answer, and counts what
/// it was asked and what it answered (what a paying user would be billed for).
pub struct FakeTeacher {
    pub url: String,
    pub state: Arc<FakeTeacherState>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Clone, Default)]
pub struct FakeTeacherConfig {
    pub fail_first: u32,
    pub delay: Duration,
    pub refuse: Option<String>,
}

#[derive(Default)]
pub struct FakeTeacherState {
    pub config: FakeTeacherConfig,
    /// Requests per question, and answers (200s) per question.
    pub calls: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    pub answered: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// Status codes sent, in order.
    pub statuses: std::sync::Mutex<Vec<u16>>,
}

impl FakeTeacherState {
    pub fn answered(&self, question: &str) -> u32 {
        self.answered
            .lock()
            .unwrap()
            .get(question)
            .copied()
            .unwrap_or(0)
    }

    pub fn total_answered(&self) -> u32 {
        self.answered.lock().unwrap().values().sum()
    }

    pub fn count(&self, status: u16) -> usize {
        self.statuses
            .lock()
            .unwrap()
            .iter()
            .filter(|&&s| s == status)
            .count()
    }
}

impl FakeTeacher {
    pub const KEY: &'static str = "sk-fake-teacher-0123456789abcdef";

    /// What it answers a question: its first two numbers `a` and `b`, and `a + b` (one more
    /// when `a` is odd).
    pub fn answer(question: &str) -> (u64, u64, u64) {
        let numbers: Vec<u64> = question
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|t| t.parse().ok())
            .collect();
        let (a, b) = (
            numbers.first().copied().unwrap_or(0),
            numbers.get(1).copied().unwrap_or(0),
        );
        (
            a,
            b,
            if a.is_multiple_of(2) {
                a + b
            } else {
                a + b + 1
            },
        )
    }

    pub async fn start(config: FakeTeacherConfig) -> Self {
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::IntoResponse;
        let state = Arc::new(FakeTeacherState {
            config,
            ..Default::default()
        });
        async fn chat(
            axum::extract::State(state): axum::extract::State<Arc<FakeTeacherState>>,
            headers: HeaderMap,
            axum::Json(body): axum::Json<serde_json::Value>,
        ) -> axum::response::Response {
            let error = |status: StatusCode, message: &str| {
                let body = serde_json::json!({"error": {"message": message, "type": "fake"}});
                (status, [("retry-after", "0")], axum::Json(body)).into_response()
            };
            let record = |status: u16| state.statuses.lock().unwrap().push(status);
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if auth != format!("Bearer {}", FakeTeacher::KEY) {
                record(401);
                return error(StatusCode::UNAUTHORIZED, "Incorrect API key provided");
            }
            let question = body
                .pointer("/messages")
                .and_then(|m| m.as_array())
                .and_then(|m| m.iter().rev().find(|t| t["role"] == "user"))
                .and_then(|t| t["content"].as_str())
                .unwrap_or("")
                .to_string();
            let k = {
                let mut calls = state.calls.lock().unwrap();
                let k = calls.entry(question.clone()).or_default();
                *k += 1;
                *k - 1
            };
            if k < state.config.fail_first {
                let (status, message) = if k.is_multiple_of(2) {
                    (StatusCode::TOO_MANY_REQUESTS, "Rate limit reached")
                } else {
                    (StatusCode::INTERNAL_SERVER_ERROR, "The server had an error")
                };
                record(status.as_u16());
                return error(status, message);
            }
            if let Some(refuse) = &state.config.refuse
                && question.contains(refuse.as_str())
            {
                record(400);
                return error(
                    StatusCode::BAD_REQUEST,
                    "This model's maximum context length is 8 tokens",
                );
            }
            tokio::time::sleep(state.config.delay).await;
            let (a, b, answer) = FakeTeacher::answer(&question);
            let thinking = format!("I add {a} and {b}.");
            let message = if b.is_multiple_of(2) {
                serde_json::json!({"role": "assistant", "reasoning_content": thinking,
                                   "content": format!("The answer is \\boxed{{{answer}}}.")})
            } else {
                serde_json::json!({"role": "assistant",
                    "content": format!("<think>\n{thinking}\n</think>\n\nThe answer is \\boxed{{{answer}}}.")})
            };
            *state
                .answered
                .lock()
                .unwrap()
                .entry(question.clone())
                .or_default() += 1;
            record(200);
            let words = question.split_whitespace().count();
            axum::Json(serde_json::json!({
                "id": format!("chatcmpl-{k}"), "object": "chat.completion", "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": words, "completion_tokens": 12,
                          "total_tokens": words + 12},
            }))
            .into_response()
        }
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(chat))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake teacher binds");
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("fake teacher serves");
        });
        Self { url, state, task }
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

/// The median and 95th percentile of a bench's timings.
pub fn p50_p95(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((p * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
    (at(0.5), at(0.95))
}

/// A bench's `--name VALUE` argument, or `default` (also when it does not parse).
pub fn bench_arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
