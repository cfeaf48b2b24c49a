//! Datasets: `store` (lookup by id or name, summaries, deletion, import records, statistics
//! from the kept counts) and `routes` (their handlers and the import and preview uploads).

pub mod routes;
pub mod store;

pub use routes::router;
