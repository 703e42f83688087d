//! The modules of the `wirewatch` binary (src/main.rs), as a library so the fuzz targets
//! (fuzz/) reach the code that faces input: the config loader and the HTTP request path. Not
//! an API: everything here serves the binary.
pub mod analyze;
pub mod cli;
pub mod explain;
pub mod export;
pub mod generate;
mod live;
mod outputs;
pub mod profile;
pub mod run;
mod sources;
mod stats;
mod vantages;
