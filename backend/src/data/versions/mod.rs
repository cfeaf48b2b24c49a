//! Dataset versions: `store` (cutting a version, finding one, reading rows as JSONL) and
//! `routes` (list, cut, and the streamed export).

pub mod routes;
pub mod store;

pub use routes::router;
