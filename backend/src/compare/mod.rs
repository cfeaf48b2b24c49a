//! Comparing runs: `routes` answers `GET /api/compare` (any number of runs: configs side by
//! side, metric summaries, downsampled curves) and keeps saved comparisons; `store` is the
//! saved comparisons' SQL. Runs, their metrics and their models are read through the areas
//! that own them.

pub mod routes;
pub mod store;

use axum::Router;

use crate::AppState;

pub fn router() -> Router<AppState> {
    routes::router()
}
