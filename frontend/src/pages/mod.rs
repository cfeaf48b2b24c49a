//! One module per route.

pub mod compare;
pub mod curations;
pub mod dataset;
pub mod datasets;
pub mod eval_compare;
pub mod evals;
pub mod example;
pub mod generations;
pub mod import;
pub mod lineage;
pub mod models;
pub mod playground;
pub mod run;
pub mod runs;
