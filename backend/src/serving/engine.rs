//! Models loaded for serving in the server process.
//!
//! A request finds its model here when the server runs it (a registry model on the server's
//! disk): a bounded cache keeps the most recently used [`MAX_LOADED`] models in memory, each on
//! a thread of its own that owns the weights and runs the engine's decode loop
//! ([`still_engine::serve`]: continuous batching with s1's budget forcing). Requests for one
//! model go to its thread through a bounded queue. A model evicted from the cache finishes the
//! requests it holds, then its thread ends. Models on workers' disks go through
//! [`super::relay`] instead.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};

pub use still_engine::serve::{Event, Job, Sink};
use tokio::sync::{Mutex, mpsc};

/// Models kept loaded at once.
pub const MAX_LOADED: usize = 2;
/// Requests one model's queue holds before new ones are refused (503).
pub const QUEUE: usize = 64;

/// A request's events into a tokio channel, which the HTTP handler reads.
pub struct Events(pub mpsc::UnboundedSender<Event>);

impl Sink for Events {
    fn send(&self, event: Event) {
        let _ = self.0.send(event);
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// A loaded model: its queue, and how much room its positions leave.
pub struct Loaded {
    pub name: String,
    pub positions: usize,
    queue: SyncSender<Job>,
}

/// Why a job was not queued.
pub enum Refused {
    Busy,
    Gone,
}

impl Loaded {
    pub fn submit(&self, job: Job) -> Result<(), Refused> {
        self.queue.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => Refused::Busy,
            TrySendError::Disconnected(_) => Refused::Gone,
        })
    }
}

/// The serving cache (most recently used first).
#[derive(Default)]
pub struct Models {
    loaded: Mutex<Vec<(i64, Arc<Loaded>)>>,
}

impl Models {
    /// Model `id` (at `path`), loaded on its first use.
    pub async fn get(&self, id: i64, name: &str, path: PathBuf) -> anyhow::Result<Arc<Loaded>> {
        let mut loaded = self.loaded.lock().await;
        if let Some(at) = loaded.iter().position(|(m, _)| *m == id) {
            let entry = loaded.remove(at);
            let model = entry.1.clone();
            loaded.insert(0, entry);
            return Ok(model);
        }
        let folder = tokio::task::spawn_blocking(move || {
            still_engine::hf::load(
                &path,
                still_engine::candle::DType::F32,
                &still_engine::candle::Device::Cpu,
            )
        })
        .await??;
        let positions = folder.model.config.max_position_embeddings;
        let (queue, jobs) = std::sync::mpsc::sync_channel(QUEUE);
        let thread_name = format!("serve-{id}");
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || still_engine::serve::serve(folder, jobs))?;
        let model = Arc::new(Loaded {
            name: name.to_string(),
            positions,
            queue,
        });
        loaded.insert(0, (id, model.clone()));
        loaded.truncate(MAX_LOADED);
        Ok(model)
    }
}
