//! A small blocking client for the worker routes: retries while the server is unreachable,
//! streams downloads to files and uploads from them, and turns a refusal into an [`HttpError`]
//! that callers match by status, not by its text.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::transfer::sha256_file;

/// The server answered with an error status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub path: String,
    pub status: u16,
    /// The error body's message (or the body as text).
    pub message: String,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: HTTP {}: {}", self.path, self.status, self.message)
    }
}

impl std::error::Error for HttpError {}

/// The HTTP status an error came from, if the server answered one (context layers are looked
/// through).
pub fn status_of(e: &anyhow::Error) -> Option<u16> {
    e.chain()
        .find_map(|c| c.downcast_ref::<HttpError>())
        .map(|h| h.status)
}

/// How long a request keeps being retried while the server cannot be reached (a restart, a
/// network blip); training goes on meanwhile and nothing sent is lost.
pub const RETRY_FOR: Duration = Duration::from_secs(600);

/// A small blocking client for the worker routes.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    server: String,
    auth: String,
    retry_for: Duration,
}

/// Whether a failed request is worth sending again: the server was unreachable or restarting.
fn transient(result: &Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> bool {
    match result {
        Ok(response) => matches!(response.status().as_u16(), 502..=504),
        Err(
            ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_),
        ) => true,
        Err(_) => false,
    }
}

impl Client {
    pub fn new(server: &str, token: &str) -> Self {
        // No overall limit (a checkpoint of several GB takes what it takes); a connection must
        // open within 5 s and the server must answer within 5 minutes of the request.
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_recv_response(Some(Duration::from_secs(300)))
            .http_status_as_error(false)
            .build();
        Self {
            agent: config.into(),
            server: server.trim_end_matches('/').to_string(),
            auth: format!("Bearer {token}"),
            retry_for: RETRY_FOR,
        }
    }

    /// For sends made between training steps: no retries and 10 s at most per request, so a
    /// slow or absent server costs the training loop little (what was not sent stays buffered).
    pub fn fast(&self) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .timeout_connect(Some(Duration::from_secs(2)))
            .http_status_as_error(false)
            .build();
        Self {
            agent: config.into(),
            server: self.server.clone(),
            auth: self.auth.clone(),
            retry_for: Duration::ZERO,
        }
    }

    /// The same client, retrying unreachable-server errors for `retry_for` at most.
    pub fn retrying_for(mut self, retry_for: Duration) -> Self {
        self.retry_for = retry_for;
        self
    }

    /// Sends a request, again and again (backing off to 5 s) while the server is unreachable.
    fn send(
        &self,
        path: &str,
        mut request: impl FnMut() -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(250);
        let mut warned = false;
        loop {
            let result = request();
            if !transient(&result) || started.elapsed() + pause > self.retry_for {
                return result.with_context(|| format!("{}{path}", self.server));
            }
            if !warned {
                eprintln!("worker: {}{path} unreachable; retrying", self.server);
                warned = true;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.server, path)
    }

    fn check(
        &self,
        path: &str,
        mut response: ureq::http::Response<ureq::Body>,
    ) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.body_mut().read_to_string().unwrap_or_default();
        let message = serde_json::from_str::<still_api::ErrorBody>(&body)
            .map(|b| b.message)
            .unwrap_or(body);
        Err(HttpError {
            path: path.to_string(),
            status: status.as_u16(),
            message,
        }
        .into())
    }

    pub fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let response = self.send(path, || {
            self.agent
                .post(self.url(path))
                .header("Authorization", &self.auth)
                .send_json(body)
        })?;
        Ok(self.check(path, response)?.body_mut().read_json()?)
    }

    /// Streams a GET's body into `dest` (through `dest.partial`, renamed once complete): never
    /// held in memory whatever its size. Returns the bytes written.
    pub fn download(&self, path: &str, dest: &Path) -> anyhow::Result<u64> {
        let response = self.get(path)?;
        let mut partial_name = dest.file_name().unwrap_or_default().to_os_string();
        partial_name.push(".partial");
        let partial = dest.with_file_name(partial_name);
        let mut out = std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        let mut reader = response.into_body().into_reader();
        let n =
            std::io::copy(&mut reader, &mut out).with_context(|| format!("downloading {path}"))?;
        out.sync_all()?;
        drop(out);
        std::fs::rename(&partial, dest)?;
        Ok(n)
    }

    /// An authorized GET whose status was a success.
    pub(crate) fn get(&self, path: &str) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let response = self.send(path, || {
            self.agent
                .get(self.url(path))
                .header("Authorization", &self.auth)
                .call()
        })?;
        self.check(path, response)
    }

    pub fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        Ok(self
            .get(path)?
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()?)
    }

    /// Streams a file up with its SHA-256 (the server checks it and stores the file under it).
    /// Returns the file's size.
    pub fn put_file(&self, path: &str, file: &Path) -> anyhow::Result<u64> {
        let sha = sha256_file(file)?;
        let response = self.send(path, || {
            let handle = std::fs::File::open(file)?;
            self.agent
                .put(self.url(path))
                .header("Authorization", &self.auth)
                .header("x-content-sha256", &sha)
                .send(handle)
        })?;
        self.check(path, response)?;
        Ok(std::fs::metadata(file)?.len())
    }
}
