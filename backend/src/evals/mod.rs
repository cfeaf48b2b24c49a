//! Evaluations: a model × a pinned dataset version × thinking budgets, graded by `still-grade`,
//! run as `eval` jobs on the queue. `store` keeps evals and their graded records, `routes` is the
//! user's API, `worker` the job's side of the worker protocol (reached through `crate::kinds`);
//! `compare` lines two evals up question by question.

pub mod compare;
pub mod routes;
pub mod store;
pub mod worker;

use axum::Router;

use crate::AppState;

pub fn router() -> Router<AppState> {
    routes::router().merge(worker::router())
}
