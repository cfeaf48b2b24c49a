//! The runs area: creating a run plans it (`plan`: the s1 recipe and overrides, the memory
//! estimate, where it may run), pins a dataset version and queues a `train` job; listing,
//! metrics and cancel (`routes`, the handlers; `store`, their SQL). `files` serves what a run
//! made; `worker` is the train job's side of the protocol; `evals` starts the evals a run
//! makes of its checkpoints and final model.

pub mod evals;
pub mod files;
pub mod plan;
pub mod routes;
pub mod store;
pub mod worker;

use axum::Router;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(files::router())
        .merge(worker::router())
        .merge(routes::router())
}
