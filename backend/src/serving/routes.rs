//! `POST /v1/chat/completions` (whole or streamed as Server-Sent Events) and `GET /v1/models`,
//! for any registry model the server can load, authenticated with an API token; the studio's
//! playground posts to `/api/chat/completions`, the same handler for its own pages.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use still_engine::budget::Budget;
use still_engine::generate::Sampling;
use tokio::sync::mpsc;

use super::engine::{Event, Events, Job, Refused};
use super::openai::*;
use super::relay::RelayRefused;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(list_models))
        // The studio's playground: the same handler for its own pages (the Host/Origin guard
        // admits them, as it does every `/api` call; accounts will add the session).
        .route("/api/chat/completions", post(studio_chat))
        // Workers that hold models on their disks take those models' requests here.
        .route("/api/worker/serve/claim", post(worker_claim))
        .route("/api/worker/serve/events", post(worker_events))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// The largest request body.
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// The team of a request's API token (`Authorization: Bearer sta_…`).
pub struct Caller(pub i64);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "send 'Authorization: Bearer <token>' (make one with `still token create`)",
                )
            })?;
        let team = crate::http::tokens::team_of(&state.db, token)
            .await?
            .ok_or_else(|| ApiError::unauthorized("the API token is wrong or revoked"))?;
        Ok(Caller(team))
    }
}

/// A worker asks for requests for the models it registered (on its `--models-dir`), waiting up
/// to `wait_seconds` (at most 20) for the first.
async fn worker_claim(
    State(state): State<AppState>,
    crate::http::WorkerAuth(worker): crate::http::WorkerAuth,
    crate::error::ApiJson(body): crate::error::ApiJson<still_api::ServeClaim>,
) -> crate::error::Result<Json<Vec<still_api::ServeRequest>>> {
    let models = crate::models::store::worker_model_ids(&state.db, worker).await?;
    let wait = std::time::Duration::from_secs(u64::from(body.wait_seconds.unwrap_or(0)));
    let max = body.max.unwrap_or(8).clamp(1, 64) as usize;
    if models.is_empty() {
        return Ok(Json(Vec::new()));
    }
    Ok(Json(state.relay.claim(worker, &models, max, wait).await))
}

/// A worker posts the events of the requests it decodes; the answer names those to stop.
async fn worker_events(
    State(state): State<AppState>,
    crate::http::WorkerAuth(worker): crate::http::WorkerAuth,
    crate::error::ApiJson(body): crate::error::ApiJson<Vec<still_api::ServeEvents>>,
) -> Json<still_api::ServeDelivered> {
    Json(still_api::ServeDelivered {
        gone: state.relay.deliver(worker, body),
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn list_models(State(state): State<AppState>, Caller(team): Caller) -> Response {
    match crate::models::store::list(&state.db, team).await {
        Ok(models) => Json(ModelList {
            object: "list",
            data: models
                .into_iter()
                .filter(|m| !m.generation_only())
                .map(|m| ModelEntry {
                    id: m.name,
                    object: "model",
                    created: 0,
                    owned_by: "still",
                })
                .collect(),
        })
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// What a checked request asks for.
struct Asked {
    turns: Vec<(String, String)>,
    sampling: Sampling,
    budget: Budget,
    max_tokens: usize,
    stop: Vec<String>,
    n: u32,
    stream: bool,
    include_usage: bool,
}

fn check(request: ChatRequest) -> Result<(String, Asked), ApiError> {
    if request.messages.is_empty() || request.messages.len() > MAX_MESSAGES {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "give 1 to {MAX_MESSAGES} messages, not {}",
                request.messages.len()
            ),
        ));
    }
    let mut turns = Vec::with_capacity(request.messages.len());
    for (i, m) in request.messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            other => {
                return Err(ApiError::invalid(
                    &format!("messages[{i}].role"),
                    format!("role '{other}' is not one of system, developer, user, assistant"),
                ));
            }
        };
        let text = match &m.content {
            Some(c) => c
                .text()
                .map_err(|e| ApiError::invalid(&format!("messages[{i}].content"), e))?,
            None => String::new(),
        };
        turns.push((role.to_string(), text));
    }
    let n = request.n.unwrap_or(1);
    if !(1..=MAX_N).contains(&n) {
        return Err(ApiError::invalid(
            "n",
            format!("n is 1 to {MAX_N}, not {n}"),
        ));
    }
    let temperature = request.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            "temperature",
            format!("temperature is 0 to 2, not {temperature}"),
        ));
    }
    let top_p = request.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            "top_p",
            format!("top_p is in (0, 1], not {top_p}"),
        ));
    }
    let max_tokens = request
        .max_completion_tokens
        .or(request.max_tokens)
        .unwrap_or(MAX_TOKENS_DEFAULT);
    if max_tokens == 0 {
        return Err(ApiError::invalid(
            "max_tokens",
            "max_tokens must be at least 1",
        ));
    }
    let stop = request.stop.map(Stop::into_vec).unwrap_or_default();
    if stop.len() > MAX_STOP || stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "stop",
            format!("give at most {MAX_STOP} non-empty stop strings"),
        ));
    }
    if let (Some(max), Some(min)) = (request.max_thinking_tokens, request.min_thinking_tokens)
        && min > max
    {
        return Err(ApiError::invalid(
            "min_thinking_tokens",
            format!("min_thinking_tokens {min} is above max_thinking_tokens {max}"),
        ));
    }
    if request.max_thinking_tokens == Some(0) {
        return Err(ApiError::invalid(
            "max_thinking_tokens",
            "max_thinking_tokens must be at least 1",
        ));
    }
    let sampling = Sampling {
        temperature,
        top_p,
        top_k: 0,
        seed: request.seed.unwrap_or(0),
    };
    sampling
        .validate()
        .map_err(|e| ApiError::invalid("temperature", e.to_string()))?;
    Ok((
        request.model,
        Asked {
            turns,
            sampling,
            budget: Budget {
                max_thinking_tokens: request.max_thinking_tokens.map(|m| m as usize),
                min_thinking_tokens: request.min_thinking_tokens.unwrap_or(0) as usize,
                wait_extensions: request.wait_extensions.unwrap_or(0) as usize,
            },
            max_tokens: max_tokens as usize,
            stop,
            n,
            stream: request.stream.unwrap_or(false),
            include_usage: request
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
        },
    ))
}

async fn chat_completions(
    State(state): State<AppState>,
    Caller(team): Caller,
    body: Bytes,
) -> Response {
    match complete(state, team, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn studio_chat(
    State(state): State<AppState>,
    team: crate::http::Team,
    body: Bytes,
) -> Response {
    match complete(state, team.id(), body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn complete(state: AppState, team: i64, body: Bytes) -> Result<Response, ApiError> {
    let request: ChatRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(
            "body",
            format!("the body is not a chat completion request: {e}"),
        )
    })?;
    let (model_name, asked) = check(request)?;
    let model = match crate::models::resolve_model(&state.db, team, &model_name).await {
        Ok(m) => m,
        Err(crate::error::Error::NotFound(_)) => {
            return Err(ApiError::model_not_found(&model_name, "does not exist"));
        }
        Err(e) => return Err(e.into()),
    };
    if model.generation_only() {
        return Err(ApiError::model_not_found(
            &model_name,
            &format!(
                "is a generation-only teacher ({} in {}): it writes traces in a generation, and \
                 serving it over /v1 is not built yet",
                model.arch, model.format
            ),
        ));
    }
    let busy = || {
        ApiError::overloaded(format!(
            "model '{}' has {} requests waiting; retry later",
            model.name,
            super::engine::QUEUE
        ))
    };
    let mut receivers = Vec::with_capacity(asked.n as usize);
    if model.origin == "worker" {
        // A model on workers' disks: a worker that has it decodes the request (relay).
        for i in 0..asked.n {
            let (events, rx) = mpsc::unbounded_channel();
            let request = still_api::ServeRequest {
                id: 0,
                model: model.name.clone(),
                turns: asked.turns.clone(),
                temperature: asked.sampling.temperature,
                top_p: asked.sampling.top_p,
                top_k: asked.sampling.top_k,
                seed: asked.sampling.seed.wrapping_add(u64::from(i)),
                max_thinking_tokens: asked.budget.max_thinking_tokens,
                min_thinking_tokens: asked.budget.min_thinking_tokens,
                wait_extensions: asked.budget.wait_extensions,
                max_tokens: asked.max_tokens,
                stop: asked.stop.clone(),
            };
            state
                .relay
                .submit(model.id, request, events)
                .map_err(|e| match e {
                    RelayRefused::Busy => busy(),
                    RelayRefused::NoWorker => ApiError::overloaded(format!(
                        "model '{}' lives on workers' disks and no worker that has it is \
                         connected: start `still worker --models-dir DIR` with DIR/{} on a \
                         machine that has it",
                        model.name, model.name
                    )),
                })?;
            receivers.push(rx);
        }
    } else {
        let loaded = state
            .serving
            .get(model.id, &model.name, std::path::PathBuf::from(&model.path))
            .await
            .map_err(|e| ApiError::internal(format!("loading model '{}': {e:#}", model.name)))?;
        for i in 0..asked.n {
            let (events, rx) = mpsc::unbounded_channel();
            let job = Job {
                turns: asked.turns.clone(),
                sampling: Sampling {
                    seed: asked.sampling.seed.wrapping_add(u64::from(i)),
                    ..asked.sampling
                },
                budget: asked.budget,
                max_tokens: asked.max_tokens,
                stop: asked.stop.clone(),
                events: Box::new(Events(events)),
            };
            loaded.submit(job).map_err(|e| match e {
                Refused::Busy => busy(),
                Refused::Gone => ApiError::internal("the model's decode loop ended"),
            })?;
            receivers.push(rx);
        }
    }
    let id = format!("chatcmpl-{}", uuid_like());
    let created = now();
    if asked.stream {
        return Ok(stream(id, created, model.name, receivers, asked.include_usage).into_response());
    }
    let mut choices = Vec::with_capacity(receivers.len());
    let (mut prompt_tokens, mut completion_tokens) = (0, 0);
    for (index, mut rx) in receivers.into_iter().enumerate() {
        let (mut reasoning, mut content, mut finish) = (String::new(), String::new(), "stop");
        while let Some(event) = rx.recv().await {
            match event {
                Event::Reasoning(t) => reasoning.push_str(&t),
                Event::Content(t) => content.push_str(&t),
                Event::Done {
                    finish: f,
                    prompt_tokens: p,
                    completion_tokens: c,
                } => {
                    finish = f;
                    prompt_tokens = p;
                    completion_tokens += c;
                }
                Event::Failed(message) => return Err(ApiError::invalid("messages", message)),
            }
        }
        choices.push(Choice {
            index: index as u32,
            message: AssistantMessage {
                role: "assistant",
                content,
                reasoning_content: reasoning,
            },
            finish_reason: finish,
            logprobs: None,
        });
    }
    Ok(Json(Completion {
        id,
        object: "chat.completion",
        created,
        model: model.name,
        choices,
        usage: Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        },
    })
    .into_response())
}

/// 96 random bits as hex: a completion's id.
fn uuid_like() -> String {
    let mut bytes = [0u8; 12];
    let _ = getrandom::fill(&mut bytes);
    hex::encode(bytes)
}

/// The completion as OpenAI's stream: a first chunk with the role per choice, a chunk per
/// piece of thinking or answer, a last chunk per choice with its finish reason, the usage
/// when asked, then `data: [DONE]`.
fn stream(
    id: String,
    created: u64,
    model: String,
    receivers: Vec<mpsc::UnboundedReceiver<Event>>,
    include_usage: bool,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let chunk = move |choices: Vec<ChunkChoice>, usage: Option<Usage>| {
        let c = Chunk {
            id: id.clone(),
            object: "chat.completion.chunk",
            created,
            model: model.clone(),
            choices,
            usage,
        };
        SseEvent::default().data(serde_json::to_string(&c).unwrap_or_default())
    };
    let choice = |index: u32, delta: Delta, finish: Option<&'static str>| ChunkChoice {
        index,
        delta,
        finish_reason: finish,
        logprobs: None,
    };
    let n = receivers.len();
    let tagged = receivers
        .into_iter()
        .enumerate()
        .map(|(i, rx)| tokio_stream_of(rx).map(move |e| (i as u32, e)));
    let merged = futures_util::stream::select_all(tagged);
    let opening: Vec<SseEvent> = (0..n as u32)
        .map(|i| {
            chunk(
                vec![choice(
                    i,
                    Delta {
                        role: Some("assistant"),
                        content: Some(String::new()),
                        ..Default::default()
                    },
                    None,
                )],
                None,
            )
        })
        .collect();
    let totals = std::sync::Arc::new(std::sync::Mutex::new((0usize, 0usize, 0usize)));
    let totals_end = totals.clone();
    let chunk_end = chunk.clone();
    let body = merged.filter_map(move |(index, event)| {
        let totals = totals.clone();
        let chunk = chunk.clone();
        async move {
            let delta = match event {
                Event::Reasoning(t) => Delta {
                    reasoning_content: Some(t),
                    ..Default::default()
                },
                Event::Content(t) => Delta {
                    content: Some(t),
                    ..Default::default()
                },
                Event::Done {
                    finish,
                    prompt_tokens,
                    completion_tokens,
                } => {
                    let mut t = totals.lock().expect("totals");
                    t.0 = prompt_tokens;
                    t.1 += completion_tokens;
                    t.2 += 1;
                    return Some(chunk(
                        vec![choice(index, Delta::default(), Some(finish))],
                        None,
                    ));
                }
                Event::Failed(message) => {
                    let error = serde_json::json!({"error": {"message": message,
                        "type": "invalid_request_error", "param": "messages", "code": null}});
                    return Some(SseEvent::default().data(error.to_string()));
                }
            };
            Some(chunk(vec![choice(index, delta, None)], None))
        }
    });
    let closing = futures_util::stream::once(async move {
        let (prompt, completion, _) = *totals_end.lock().expect("totals");
        include_usage.then(|| {
            chunk_end(
                Vec::new(),
                Some(Usage {
                    prompt_tokens: prompt,
                    completion_tokens: completion,
                    total_tokens: prompt + completion,
                }),
            )
        })
    })
    .filter_map(|e| async move { e })
    .chain(futures_util::stream::once(async {
        SseEvent::default().data("[DONE]")
    }));
    let all = futures_util::stream::iter(opening)
        .chain(body)
        .chain(closing)
        .map(Ok);
    Sse::new(all).keep_alive(KeepAlive::default())
}

/// A tokio receiver as a stream.
fn tokio_stream_of<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
