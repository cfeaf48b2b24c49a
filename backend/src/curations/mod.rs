//! Curation: the s1 selection pipeline over a pinned dataset version. `routes` is the user's API
//! (start with a recipe, the funnel, dropped rows, saved recipes, previews, a version's
//! lineage), `store` its SQL, `runner` the server's background task that runs the stages (the
//! pure computation is `still-curate`'s) and queues the difficulty stage's evals through the
//! evals area.

pub mod routes;
pub mod runner;
pub mod store;

use axum::Router;

use crate::AppState;

pub fn router() -> Router<AppState> {
    routes::router()
}
