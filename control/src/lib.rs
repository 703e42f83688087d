//! The modules of the `wirewatch` binary (src/main.rs), as a library so the fuzz targets
//! (fuzz/) reach the code that faces input: the config loader and the HTTP request path. Not
//! an API: everything here serves the binary.
pub mod analyze;
pub mod api;
mod caps;
pub mod config;
mod event_fields;
pub mod explain;
mod failing;
pub mod generate;
mod health;
mod host_iface;
mod live;
mod metrics;
pub mod options;
pub mod profile;
mod record;
mod report;
mod retention;
pub mod run;
mod sources;
mod thresholds;
mod vantages;
