//! Serving: an OpenAI-compatible chat-completions endpoint for the registry's models.
//! `openai` holds the wire shapes and errors, `engine` the cache of loaded models and their
//! decode loops (continuous batching with budget forcing), `relay` the requests for models on
//! workers' disks (claimed and decoded by a worker that has the model), `routes` the `/v1`
//! handlers, their API-token authentication (`http::tokens`) and the workers' serving routes.

pub mod engine;
pub mod openai;
pub mod relay;
pub mod routes;

pub use routes::router;
