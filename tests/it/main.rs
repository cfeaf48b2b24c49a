//! One integration test binary (matklad's layout): a module per area.

mod browser;
mod cli;
mod compare;
mod curation;
mod datasets_api;
mod evals_api;
mod generations;
mod hardening;
mod layout;
mod real_size;
mod repo;
mod runs_api;
mod serving;
mod tool_shapes;
