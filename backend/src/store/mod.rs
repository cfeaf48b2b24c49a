//! Storage every area shares, keyed by ids it is given: the artifact store and run folders,
//! metric points and their rollups, log lines, and the change notices live pages wake on.
//! It imports no area.

pub mod artifacts;
pub mod logs;
pub mod metrics;
pub mod notices;
