//! The model registry: HF folders on the server, models made from scratch, models that live
//! only on workers' disks, and every run's final model. `store` keeps its SQL
//! (`store::insert_model` is the one place a model row is written); `routes` holds the handlers,
//! which call it, creating a model, and the worker routes that serve a model's files. What other
//! areas use is named here.

pub mod routes;
pub mod store;

pub(crate) use routes::engine_error;
pub use routes::{create, model_file_name, router};
pub use store::{FINAL_SUFFIX, engine_model, register_final, resolve_model};
