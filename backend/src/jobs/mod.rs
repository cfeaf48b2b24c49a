//! The jobs area: the queue (`queue`), worker identities (`workers`) and the worker protocol's
//! shared routes (`routes`). It knows no job kind: `crate::kinds` maps each kind to its area.
//! It imports no area, only `store` (a job's run log) and `http` (the worker's token).

pub mod queue;
pub mod routes;
pub mod workers;

pub use queue::LEASE_SECONDS;
pub use routes::router;
