//! Serving: an OpenAI-compatible chat-completions endpoint for the registry's models.
//! `openai` holds the wire shapes and errors, `engine` the cache of loaded models and their
//! decode loops (continuous batching with budget forcing), `routes` the `/v1` handlers and
//! their API-token authentication (`http::tokens`).

pub mod engine;
pub mod openai;
pub mod routes;

pub use routes::router;
