//! Teacher trace generation: a pinned dataset version's questions answered by a teacher (a
//! registry model the engine runs, or an OpenAI-compatible endpoint), run as `generate` jobs on
//! the queue; kept traces fill an output dataset linked to its source. `store` keeps
//! generations and their rows, `routes` is the user's API, `worker` the job's side of the
//! worker protocol (reached through `crate::kinds`).

pub mod routes;
pub mod store;
pub mod worker;

use axum::Router;

use crate::AppState;

pub fn router() -> Router<AppState> {
    routes::router().merge(worker::router())
}
