//! Serving from workers: a request for a model that lives on workers' disks (a GPU box serving
//! its own models) waits here until a worker that registered the model claims it; the worker
//! decodes it with the engine's serving loop and posts its events back, which go to the
//! request's handler as if the server had decoded it. Nothing here is stored: a request lives
//! as long as its client's connection.
//!
//! A model is served while a worker that has it asks for work (at least every few seconds while
//! it waits); a request for a model no worker serves is refused at once (503, saying how to
//! start one). A claimed request that hears nothing from its worker for [`SILENCE`] fails; a
//! request whose client went away is dropped, and its worker is told to stop decoding it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use still_api::{ServeEvent, ServeEvents, ServeRequest};
use tokio::sync::{Notify, mpsc};

use super::engine::{Event, QUEUE};

/// A model counts as served while a worker having it asked for work this recently.
pub const SERVING_WINDOW: Duration = Duration::from_secs(15);
/// A claimed request fails after this long without an event from its worker.
pub const SILENCE: Duration = Duration::from_secs(60);
/// The longest a claim waits before it is answered empty (the worker then asks again).
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// A waiting claim marks its models served again at least this often.
const REFRESH: Duration = Duration::from_secs(5);

struct Pending {
    model_id: i64,
    request: ServeRequest,
    events: mpsc::UnboundedSender<Event>,
}

struct Running {
    worker: i64,
    events: mpsc::UnboundedSender<Event>,
    touched: Instant,
}

#[derive(Default)]
struct State {
    next_id: u64,
    pending: VecDeque<Pending>,
    running: HashMap<u64, Running>,
    /// When a worker last asked for each model's requests.
    polled: HashMap<i64, Instant>,
}

impl State {
    fn served(&self, model_id: i64) -> bool {
        self.polled
            .get(&model_id)
            .is_some_and(|t| t.elapsed() < SERVING_WINDOW)
    }

    /// Fails claimed requests whose worker went silent, and waiting ones whose model lost its
    /// last worker; drops waiting ones whose client went away.
    fn reap(&mut self) {
        let silent: Vec<u64> = self
            .running
            .iter()
            .filter(|(_, r)| r.touched.elapsed() >= SILENCE || r.events.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in silent {
            if let Some(r) = self.running.remove(&id) {
                let _ = r.events.send(Event::Failed(format!(
                    "the worker serving it sent nothing for {} s",
                    SILENCE.as_secs()
                )));
            }
        }
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            if p.events.is_closed() {
                continue;
            }
            if !self.served(p.model_id) {
                let _ = p.events.send(Event::Failed(format!(
                    "no worker serves model '{}' any more",
                    p.request.model
                )));
                continue;
            }
            self.pending.push_back(p);
        }
    }
}

/// Why a request was not relayed.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayRefused {
    /// No worker that has the model asked for work lately.
    NoWorker,
    /// [`QUEUE`] requests for the model are already waiting.
    Busy,
}

#[derive(Default)]
pub struct Relay {
    state: Mutex<State>,
    arrived: Notify,
}

impl Relay {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a worker serves model `model_id` now.
    pub fn served(&self, model_id: i64) -> bool {
        self.lock().served(model_id)
    }

    /// Queues a request for a worker that has the model; its events arrive on `events`.
    pub fn submit(
        &self,
        model_id: i64,
        mut request: ServeRequest,
        events: mpsc::UnboundedSender<Event>,
    ) -> Result<(), RelayRefused> {
        {
            let mut s = self.lock();
            s.reap();
            if !s.served(model_id) {
                return Err(RelayRefused::NoWorker);
            }
            if s.pending.iter().filter(|p| p.model_id == model_id).count() >= QUEUE {
                return Err(RelayRefused::Busy);
            }
            s.next_id += 1;
            request.id = s.next_id;
            s.pending.push_back(Pending {
                model_id,
                request,
                events,
            });
        }
        self.arrived.notify_waiters();
        Ok(())
    }

    /// Requests for `models` (their ids) for worker `worker`, at most `max`, waiting up to `wait`
    /// for the first. Asking marks the models served.
    pub async fn claim(
        &self,
        worker: i64,
        models: &[i64],
        max: usize,
        wait: Duration,
    ) -> Vec<ServeRequest> {
        let deadline = Instant::now() + wait.min(MAX_WAIT);
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            {
                let mut s = self.lock();
                let now = Instant::now();
                for &m in models {
                    s.polled.insert(m, now);
                }
                s.reap();
                let mut out = Vec::new();
                let mut kept = VecDeque::new();
                while let Some(p) = s.pending.pop_front() {
                    if out.len() < max && models.contains(&p.model_id) {
                        s.running.insert(
                            p.request.id,
                            Running {
                                worker,
                                events: p.events,
                                touched: now,
                            },
                        );
                        out.push(p.request);
                    } else {
                        kept.push_back(p);
                    }
                }
                s.pending = kept;
                if !out.is_empty() {
                    return out;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Vec::new();
            }
            let _ = tokio::time::timeout(left.min(REFRESH), arrived).await;
        }
    }

    /// Hands a worker's events to their requests; answers the ids it should stop decoding
    /// (the client went away, or the request is not this worker's).
    pub fn deliver(&self, worker: i64, batches: Vec<ServeEvents>) -> Vec<u64> {
        let mut s = self.lock();
        let mut gone = Vec::new();
        for batch in batches {
            let Some(r) = s.running.get_mut(&batch.id).filter(|r| r.worker == worker) else {
                gone.push(batch.id);
                continue;
            };
            r.touched = Instant::now();
            let mut ended = false;
            let mut closed = false;
            for event in batch.events {
                let event = match event {
                    ServeEvent::Reasoning(t) => Event::Reasoning(t),
                    ServeEvent::Content(t) => Event::Content(t),
                    ServeEvent::Done {
                        finish,
                        prompt_tokens,
                        completion_tokens,
                    } => {
                        ended = true;
                        Event::Done {
                            finish: if finish == "length" { "length" } else { "stop" },
                            prompt_tokens,
                            completion_tokens,
                        }
                    }
                    ServeEvent::Failed(m) => {
                        ended = true;
                        Event::Failed(m)
                    }
                };
                closed |= r.events.send(event).is_err();
            }
            if ended || closed {
                s.running.remove(&batch.id);
            }
            if closed && !ended {
                gone.push(batch.id);
            }
        }
        gone
    }

    /// Reaps every few seconds (what no claim or delivery triggers: a worker that died).
    pub async fn reap_forever(self: std::sync::Arc<Self>) {
        loop {
            tokio::time::sleep(REFRESH).await;
            self.lock().reap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(model: &str) -> ServeRequest {
        ServeRequest {
            id: 0,
            model: model.into(),
            turns: vec![("user".into(), "hi".into())],
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
            max_thinking_tokens: None,
            min_thinking_tokens: 0,
            wait_extensions: 0,
            max_tokens: 4,
            stop: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_request_reaches_the_worker_that_asks_for_its_model_and_its_events_come_back() {
        let relay = std::sync::Arc::new(Relay::default());
        let (tx, mut rx) = mpsc::unbounded_channel();
        // No worker yet: refused at once.
        assert_eq!(
            relay.submit(7, request("big"), tx.clone()),
            Err(RelayRefused::NoWorker)
        );
        // A worker waiting for model 7 gets a request submitted meanwhile.
        let waiting = {
            let relay = relay.clone();
            tokio::spawn(async move { relay.claim(1, &[7], 8, Duration::from_secs(10)).await })
        };
        while !relay.served(7) {
            tokio::task::yield_now().await;
        }
        relay.submit(7, request("big"), tx).unwrap();
        let claimed = waiting.await.unwrap();
        assert_eq!(claimed.len(), 1);
        let id = claimed[0].id;
        // Another worker may not post for it; the owner's events arrive in order.
        assert_eq!(
            relay.deliver(
                2,
                vec![ServeEvents {
                    id,
                    events: vec![ServeEvent::Content("x".into())]
                }]
            ),
            vec![id]
        );
        let gone = relay.deliver(
            1,
            vec![ServeEvents {
                id,
                events: vec![
                    ServeEvent::Reasoning("think".into()),
                    ServeEvent::Content("42".into()),
                    ServeEvent::Done {
                        finish: "length".into(),
                        prompt_tokens: 3,
                        completion_tokens: 2,
                    },
                ],
            }],
        );
        assert!(gone.is_empty());
        assert_eq!(rx.recv().await, Some(Event::Reasoning("think".into())));
        assert_eq!(rx.recv().await, Some(Event::Content("42".into())));
        assert_eq!(
            rx.recv().await,
            Some(Event::Done {
                finish: "length",
                prompt_tokens: 3,
                completion_tokens: 2
            })
        );
        // Done: the request is forgotten, later events are refused.
        assert_eq!(
            relay.deliver(1, vec![ServeEvents { id, events: vec![] }]),
            vec![id]
        );
    }

    #[tokio::test]
    async fn a_client_that_went_away_stops_its_worker_and_other_models_wait() {
        let relay = Relay::default();
        assert!(relay.claim(1, &[7, 8], 8, Duration::ZERO).await.is_empty());
        let (tx, rx) = mpsc::unbounded_channel();
        relay.submit(7, request("a"), tx).unwrap();
        let (tx8, _rx8) = mpsc::unbounded_channel();
        relay.submit(8, request("b"), tx8).unwrap();
        // A worker with only model 8 leaves model 7's request waiting.
        let claimed = relay.claim(2, &[8], 8, Duration::ZERO).await;
        assert_eq!(
            claimed.iter().map(|r| r.model.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        let claimed = relay.claim(1, &[7], 8, Duration::ZERO).await;
        assert_eq!(claimed.len(), 1);
        drop(rx);
        let gone = relay.deliver(
            1,
            vec![ServeEvents {
                id: claimed[0].id,
                events: vec![ServeEvent::Content("x".into())],
            }],
        );
        assert_eq!(gone, vec![claimed[0].id]);
    }
}
