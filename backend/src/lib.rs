//! Still's server: the JSON API under `/api`, the built UI, and the SQLite store.
//!
//! `main.rs` only calls [`cli::main`]; everything else lives here so tests can build the app
//! ([`app`]) or start a real server on a loopback port ([`start`]).

pub mod cli;
pub mod compare;
pub mod curations;
pub mod data;
pub mod db;
pub mod demo;
pub mod error;
pub mod evals;
pub mod failpoints;
pub mod generations;
pub mod http;
pub mod jobs;
pub mod kinds;
pub mod live;
pub mod models;
pub mod names;
pub mod runs;
pub mod serving;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::routing::{any, get};
use sqlx::SqlitePool;
use still_api::Health;
use tokio::net::TcpListener;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::trace::TraceLayer;

use crate::error::ApiJson;

/// The team every object belongs to until accounts exist.
pub const DEFAULT_TEAM: i64 = 1;
/// Default upload limit: 2 GiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Settings of a running server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Holds `still.db` and `tmp/` (spooled uploads).
    pub data_dir: PathBuf,
    /// The built UI (Trunk's `dist/`); the API works without it.
    pub ui_dir: PathBuf,
    pub max_upload_bytes: u64,
    pub limits: data::import::Limits,
    /// Import the demo datasets into an empty data directory.
    pub seed_demo: bool,
    /// How long a worker's lease lasts without a heartbeat.
    pub lease_seconds: i64,
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            ui_dir: PathBuf::from("dist"),
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            limits: data::import::Limits::default(),
            seed_demo: false,
            lease_seconds: jobs::LEASE_SECONDS,
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("still.db")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.data_dir.join("tmp")
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub db: SqlitePool,
    pub config: Arc<Config>,
    /// Change notices for live run pages.
    pub events: Arc<store::notices::Events>,
    /// Failures tests inject at named points (inert without the `failpoints` feature).
    pub failpoints: Arc<failpoints::Armed>,
    /// Models loaded for `/v1/chat/completions`.
    pub serving: Arc<serving::engine::Models>,
    /// Requests for models on workers' disks, waiting for or decoded by a worker.
    pub relay: Arc<serving::relay::Relay>,
}

async fn health() -> ApiJson<Health> {
    ApiJson(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// The whole application: API routes plus the UI with a single-page-app fallback.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/health", get(health))
        .merge(data::router(state.config.max_upload_bytes))
        .merge(models::router())
        .merge(runs::router())
        .merge(evals::router())
        .merge(generations::router())
        .merge(curations::router())
        .merge(compare::router())
        .merge(jobs::router())
        .merge(kinds::router())
        .merge(live::router())
        .merge(demo::router())
        .merge(serving::router())
        .route("/api", any(http::api_not_found))
        .route("/api/{*rest}", any(http::api_not_found));
    let index = state.config.ui_dir.join("index.html");
    let router = if index.is_file() {
        api.fallback_service(ServeDir::new(&state.config.ui_dir).fallback(ServeFile::new(index)))
    } else {
        api.fallback(http::ui_missing)
    };
    router.layer(TraceLayer::new_for_http()).with_state(state)
}

/// The exclusive lock one `still serve` holds on its data directory (`DATA_DIR/still.lock`,
/// released when dropped or when the process dies): a second server on the same directory is
/// refused before it touches anything, such as the first one's in-flight uploads.
pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    pub fn take(data_dir: &std::path::Path) -> anyhow::Result<Self> {
        use std::io::{Read, Seek, Write};
        std::fs::create_dir_all(data_dir)
            .map_err(|e| anyhow::anyhow!("creating data directory {}: {e}", data_dir.display()))?;
        let path = data_dir.join("still.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                anyhow::bail!(
                    "data directory {} is in use by another `still serve` (pid {}); stop it or \
                     pass another --data-dir",
                    data_dir.display(),
                    holder.trim()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                anyhow::bail!("locking {}: {e}", path.display())
            }
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(Self { _file: file })
    }
}

/// Opens the data directory: creates it, clears spooled uploads, opens and migrates the database.
/// A server takes the [`DataDirLock`] first ([`start`] does).
pub async fn open_state(config: Config) -> anyhow::Result<AppState> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        anyhow::anyhow!("creating data directory {}: {e}", config.data_dir.display())
    })?;
    let tmp = config.tmp_dir();
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    let db = db::open(&config.db_path()).await?;
    if config.seed_demo {
        demo::seed(&db, &config).await?;
    }
    Ok(AppState {
        db,
        config: Arc::new(config),
        events: Arc::new(store::notices::Events::default()),
        failpoints: Arc::default(),
        serving: Arc::default(),
        relay: Arc::default(),
    })
}

/// A server running on a background task.
pub struct Server {
    pub addr: SocketAddr,
    pub state: AppState,
    /// Held until the server is stopped and dropped.
    _lock: DataDirLock,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, finishes in-flight requests, and waits.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        // Live event streams never end by themselves: end them so the graceful stop can finish.
        self.state.events.close();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await??;
        self.state.db.close().await;
        Ok(())
    }
}

/// Binds `addr` (port 0 picks a free one) and serves on a background task.
pub async fn start(config: Config, addr: SocketAddr) -> anyhow::Result<Server> {
    let lock = DataDirLock::take(&config.data_dir)?;
    let state = open_state(config).await?;
    // Leases ran out while no server was there to renew them: give running jobs one lease
    // period to check in before the reaper may re-queue them.
    jobs::queue::renew_running_leases(&state.db, state.config.lease_seconds).await?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    let addr = listener.local_addr()?;
    let reaper = jobs::queue::spawn_reaper(state.clone());
    let relay_reaper = tokio::spawn(state.relay.clone().reap_forever());
    let curator = curations::runner::spawn(state.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // Host and Origin checked on every request (DNS rebinding, cross-site requests).
    let guard = std::sync::Arc::new(http::guard::Guard::new(addr));
    let app = app(state.clone()).layer(axum::middleware::from_fn_with_state(
        guard,
        http::guard::layer,
    ));
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
        reaper.abort();
        relay_reaper.abort();
        curator.abort();
        served
    });
    Ok(Server {
        addr,
        state,
        _lock: lock,
        shutdown: Some(tx),
        task,
    })
}
