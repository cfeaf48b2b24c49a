//! Examples: `store` (inserts, the paginated and searchable table, edits, tags, the trash)
//! and `routes` (their handlers).

pub mod routes;
pub mod store;

pub use routes::router;
