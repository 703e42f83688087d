//! What wirewatch publishes while it runs: Prometheus metrics (every metric is named, described
//! and emitted in `metrics`), the HTTP API and `/healthz`.
pub mod api;
pub(crate) mod health;
pub(crate) mod metrics;
