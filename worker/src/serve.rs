//! Serving the models on this worker's disks: a GPU box answers `/v1/chat/completions` for its
//! own models. The server relays each request for a model that lives on workers' disks to a
//! worker that registered it; this thread asks for them (a long poll), runs each model's engine
//! decode loop ([`still_engine::serve`], continuous batching with budget forcing) on a thread
//! of its own, loaded on first use and kept, and a second thread posts every request's events
//! back in small batches (every [`FLUSH`]), stopping requests whose client went away.
//!
//! It runs beside the job loop, only when `--models-dir` holds models: serving and a training
//! job on one device share it.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use still_api::{ServeClaim, ServeDelivered, ServeEvent, ServeEvents, ServeRequest};
use still_engine::budget::Budget;
use still_engine::generate::Sampling;
use still_engine::serve::{Event, Job, MAX_BATCH, Sink};

use crate::WorkerOptions;
use crate::client::Client;
use crate::transfer::local_models;

/// How long events wait before they are posted (a streamed piece's extra latency at most).
pub const FLUSH: Duration = Duration::from_millis(40);
/// How long one claim waits on the server.
const CLAIM_WAIT_SECONDS: u32 = 20;
/// Requests one model's queue holds on this worker.
const QUEUE: usize = 64;

/// Events waiting to be posted, and requests to stop.
#[derive(Default)]
struct Outbox {
    pending: Mutex<HashMap<u64, Vec<ServeEvent>>>,
    gone: Mutex<HashSet<u64>>,
    wake: Condvar,
}

impl Outbox {
    fn push(&self, id: u64, event: ServeEvent) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.entry(id).or_default().push(event);
        self.wake.notify_one();
    }
}

/// A relayed request's events: into the outbox under its id.
struct Relayed {
    id: u64,
    outbox: Arc<Outbox>,
}

impl Sink for Relayed {
    fn send(&self, event: Event) {
        let event = match event {
            Event::Reasoning(t) => ServeEvent::Reasoning(t),
            Event::Content(t) => ServeEvent::Content(t),
            Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            } => ServeEvent::Done {
                finish: finish.to_string(),
                prompt_tokens,
                completion_tokens,
            },
            Event::Failed(m) => ServeEvent::Failed(m),
        };
        self.outbox.push(self.id, event);
    }

    fn is_closed(&self) -> bool {
        self.outbox
            .gone
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&self.id)
    }
}

/// Starts serving when `--models-dir` has models; returns whether it did.
pub fn spawn(client: &Client, options: &WorkerOptions) -> bool {
    let names = local_models(options.models_dir.as_deref());
    let Some(models_dir) = options.models_dir.clone() else {
        return false;
    };
    if names.is_empty() {
        return false;
    }
    let outbox = Arc::new(Outbox::default());
    let poster = (client.clone(), outbox.clone());
    let spawned = std::thread::Builder::new()
        .name("serve-events".into())
        .spawn(move || post_events(poster.0, poster.1))
        .is_ok();
    let claimer = (client.clone(), options.device.clone());
    spawned
        && std::thread::Builder::new()
            .name("serve-claims".into())
            .spawn(move || claim_loop(claimer.0, &claimer.1, &models_dir, outbox))
            .is_ok()
}

fn claim_loop(client: Client, device: &str, models_dir: &std::path::Path, outbox: Arc<Outbox>) {
    let mut loops: HashMap<String, SyncSender<Job>> = HashMap::new();
    let body = ServeClaim {
        wait_seconds: Some(CLAIM_WAIT_SECONDS),
        max: Some(MAX_BATCH as u32),
    };
    loop {
        let requests: Vec<ServeRequest> = match client.post("/api/worker/serve/claim", &body) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("worker: serving claim failed ({e:#}); retrying");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        for request in requests {
            let id = request.id;
            let fail = |m: String| outbox.push(id, ServeEvent::Failed(m));
            let queue = match loops.get(&request.model) {
                Some(q) => q.clone(),
                None => match start_model(device, &models_dir.join(&request.model)) {
                    Ok(q) => {
                        eprintln!("worker: serving model '{}'", request.model);
                        loops.insert(request.model.clone(), q.clone());
                        q
                    }
                    Err(e) => {
                        fail(format!(
                            "loading model '{}' on the worker: {e:#}",
                            request.model
                        ));
                        continue;
                    }
                },
            };
            let job = Job {
                turns: request.turns,
                sampling: Sampling {
                    temperature: request.temperature,
                    top_p: request.top_p,
                    top_k: request.top_k,
                    seed: request.seed,
                },
                budget: Budget {
                    max_thinking_tokens: request.max_thinking_tokens,
                    min_thinking_tokens: request.min_thinking_tokens,
                    wait_extensions: request.wait_extensions,
                },
                max_tokens: request.max_tokens,
                stop: request.stop,
                events: Box::new(Relayed {
                    id,
                    outbox: outbox.clone(),
                }),
            };
            match queue.try_send(job) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => fail(format!(
                    "model '{}' has {QUEUE} requests waiting on the worker",
                    request.model
                )),
                Err(TrySendError::Disconnected(_)) => {
                    loops.remove(&request.model);
                    fail(format!("model '{}': its decode loop ended", request.model));
                }
            }
        }
    }
}

/// Loads a model folder and starts its decode loop; returns the loop's queue.
fn start_model(device: &str, dir: &std::path::Path) -> anyhow::Result<SyncSender<Job>> {
    let device = still_engine::device(device)?;
    let dtype = if device.is_cpu() {
        still_engine::candle::DType::F32
    } else {
        still_engine::candle::DType::BF16
    };
    let folder = still_engine::hf::load(dir, dtype, &device)?;
    let (queue, jobs) = std::sync::mpsc::sync_channel(QUEUE);
    std::thread::Builder::new()
        .name("serve-decode".into())
        .spawn(move || still_engine::serve::serve(folder, jobs))?;
    Ok(queue)
}

/// Posts what the decode loops sent, every [`FLUSH`] while there is any; marks the requests the
/// server says are gone.
fn post_events(client: Client, outbox: Arc<Outbox>) {
    let client = client.fast();
    loop {
        let batch: Vec<ServeEvents> = {
            let mut pending = outbox.pending.lock().unwrap_or_else(|e| e.into_inner());
            while pending.is_empty() {
                pending = outbox.wake.wait(pending).unwrap_or_else(|e| e.into_inner());
            }
            drop(pending);
            std::thread::sleep(FLUSH);
            let mut pending = outbox.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending
                .drain()
                .map(|(id, events)| ServeEvents { id, events })
                .collect()
        };
        let ended: Vec<u64> = batch
            .iter()
            .filter(|b| {
                b.events
                    .iter()
                    .any(|e| matches!(e, ServeEvent::Done { .. } | ServeEvent::Failed(_)))
            })
            .map(|b| b.id)
            .collect();
        match client.post::<_, ServeDelivered>("/api/worker/serve/events", &batch) {
            Ok(delivered) => {
                let mut gone = outbox.gone.lock().unwrap_or_else(|e| e.into_inner());
                gone.extend(delivered.gone);
                for id in ended {
                    gone.remove(&id);
                }
            }
            Err(e) => eprintln!("worker: posting served events failed ({e:#}); they are lost"),
        }
    }
}
