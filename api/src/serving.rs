//! Serving from workers: a chat request for a model that lives on workers' disks is relayed to a
//! worker that has it (`POST /api/worker/serve/claim`), which decodes it and posts its events
//! back (`POST /api/worker/serve/events`); the server streams them to the client.

use serde::{Deserialize, Serialize};

/// `POST /api/worker/serve/claim`: wait up to `wait_seconds` for requests for this worker's
/// models (the ones it registered), at most `max` of them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ServeClaim {
    #[serde(default)]
    pub wait_seconds: Option<u32>,
    #[serde(default)]
    pub max: Option<u32>,
}

/// One chat completion choice for a worker to decode.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServeRequest {
    /// The relay's id for it (events are posted under it).
    pub id: u64,
    /// The registry model's name (its folder in the worker's `--models-dir`).
    pub model: String,
    /// `(role, content)` turns.
    pub turns: Vec<(String, String)>,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: usize,
    pub seed: u64,
    pub max_thinking_tokens: Option<usize>,
    pub min_thinking_tokens: usize,
    pub wait_extensions: usize,
    pub max_tokens: usize,
    pub stop: Vec<String>,
}

/// What a worker sends back for a request, in order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum ServeEvent {
    Reasoning(String),
    Content(String),
    Done {
        /// `stop` or `length`.
        finish: String,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Failed(String),
}

/// `POST /api/worker/serve/events`: a batch of events per request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServeEvents {
    pub id: u64,
    pub events: Vec<ServeEvent>,
}

/// The answer to a delivery: requests whose client went away (or that the relay no longer
/// knows): the worker stops decoding them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ServeDelivered {
    pub gone: Vec<u64>,
}
