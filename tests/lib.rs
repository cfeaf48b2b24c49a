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

    pub fn api(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("server stops cleanly");
        }
    }
}

/// Posts a file to `/api/datasets/import` with extra form fields.
pub async fn upload(
    client: &reqwest::Client,
    server: &TestServer,
    route: &str,
    path: &Path,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let bytes = std::fs::read(path).expect("readable fixture");
    let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes).file_name(file_name),
    );
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    client
        .post(server.api(route))
        .multipart(form)
        .send()
        .await
        .expect("request sent")
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

/// Imports `rows` synthetic two-digit addition rows (canonical JSONL, seed 1) as dataset
/// `name` through the upload route.
pub async fn import_addition(
    client: &reqwest::Client,
    server: &TestServer,
    name: &str,
    rows: usize,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(format!("{name}.jsonl"));
    let text: String = still_engine::synth::addition(2, rows, 1)
        .iter()
        .map(|r| serde_json::to_string(r).expect("row serialises") + "\n")
        .collect();
    std::fs::write(&path, text).expect("fixture written");
    let response = upload(
        client,
        server,
        "/api/datasets/import",
        &path,
        &[("name", name)],
    )
    .await;
    assert_eq!(response.status(), 201, "importing {name}");
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

/// A typed client for the studio's API, over one server: the request shapes in one place.
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
}

/// A response's status and JSON body (`Null` when the body is not JSON).
pub struct Reply {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Reply {
    /// The body as `T`, asserting the status was a success.
    pub fn ok<T: serde::de::DeserializeOwned>(self) -> T {
        assert!(
            (200..300).contains(&self.status),
            "HTTP {}: {}",
            self.status,
            self.body
        );
        serde_json::from_value(self.body).expect("the body has the expected shape")
    }

    /// The error message of a failed request.
    pub fn message(&self) -> String {
        self.body["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Api {
    pub fn new(server: &TestServer) -> Self {
        Self {
            client: reqwest::Client::new(),
            base: server.url.clone(),
        }
    }

    async fn reply(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        Self::reply(request.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> Reply {
        self.send(self.client.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.client.delete(format!("{}{path}", self.base)))
            .await
    }

    /// Imports a file through the upload route with extra form fields.
    pub async fn import(&self, path: &Path, fields: &[(&str, &str)]) -> Reply {
        let bytes = std::fs::read(path).expect("readable fixture");
        let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(file_name),
        );
        for (k, v) in fields {
            form = form.text(k.to_string(), v.to_string());
        }
        self.send(
            self.client
                .post(format!("{}/api/datasets/import", self.base))
                .multipart(form),
        )
        .await
    }

    pub async fn run(&self, id: i64) -> still_api::RunSummary {
        self.get(&format!("/api/runs/{id}")).await.ok()
    }

    /// Polls a run every 100 ms until `done` holds or `within` passed; the last state seen.
    pub async fn wait_for_run(
        &self,
        id: i64,
        within: Duration,
        done: impl Fn(&still_api::RunSummary) -> bool,
    ) -> still_api::RunSummary {
        let deadline = std::time::Instant::now() + within;
        loop {
            let run = self.run(id).await;
            if done(&run) || std::time::Instant::now() >= deadline {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
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

/// Whether a run has ended (succeeded, failed or cancelled).
pub fn run_finished(run: &still_api::RunSummary) -> bool {
    matches!(run.status.as_str(), "succeeded" | "failed" | "cancelled")
}
