//! One integration test binary (matklad's layout): a module per area.

mod browser;
mod cli;
mod datasets_api;
mod runs_api;
