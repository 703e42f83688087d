//! The command line: each subcommand's arguments and the parsers of their values, checked
//! before anything is attached or written (bad usage is exit status 2).
pub mod analyze;
pub mod config;
pub(crate) mod event_fields;
pub mod explain;
pub mod generate;
pub mod options;
pub mod profile;
pub mod run;
pub(crate) mod thresholds;

/// Bad usage found once the arguments were parsed (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);
