//! The data area: datasets, their editable examples, immutable versions and streamed exports,
//! and imports (`import/`: file readers and presets without a database, then one transaction).
//! Each of `datasets/`, `examples/` and `versions/` keeps its SQL in `store` and its HTTP
//! handlers, which call it, in `routes`.

pub mod datasets;
pub mod examples;
pub mod import;
pub mod versions;

use axum::Router;

use crate::AppState;

pub fn router(max_upload_bytes: u64) -> Router<AppState> {
    Router::new()
        .merge(datasets::router(max_upload_bytes))
        .merge(examples::router())
        .merge(versions::router())
}
