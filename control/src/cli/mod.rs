//! The command line: each subcommand's arguments and the parsers of their values, checked
//! before anything is attached or written (bad usage is exit status 2).
pub mod config;
pub mod event_fields;
pub mod options;
pub mod thresholds;
