//! The catalog's thresholds (../shared/DETECTIONS.md), settable on `run` and `analyze`.
use clap::Args;
use dataplane::engine::EngineConfig;

#[derive(Args, Debug, Clone)]
pub struct Thresholds {
    /// A handshake not complete after this long is reported (syn_unanswered, synack_unacked).
    #[arg(long, value_name = "SECS", default_value_t = 3.0, value_parser = positive)]
    pub handshake_timeout: f64,
    /// Upper bound of the window in which a RST is paired with the segment it answers
    /// (the window is min(RTT/2, this), at least 1 ms).
    #[arg(long, value_name = "MS", default_value_t = 50.0, value_parser = positive)]
    pub pairing_window: f64,
    /// How long a packet seen at one vantage may take to show up at another before it counts
    /// as lost between them.
    #[arg(long, value_name = "MS", default_value_t = 100.0, value_parser = positive)]
    pub vantage_window: f64,
    /// Retransmissions of one segment that make a retransmission_storm.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub storm_count: u32,
    /// Flows tracked per worker; beyond it closed, then half-open, then idle flows are evicted.
    #[arg(long, value_name = "N", default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1024..=1 << 28))]
    pub max_flows: u64,
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("`{s}` is not a positive number")),
    }
}

impl Thresholds {
    pub fn apply(&self, c: &mut EngineConfig) {
        c.handshake_timeout_ns = (self.handshake_timeout * 1e9) as u64;
        c.pairing_window_max_ns = (self.pairing_window * 1e6) as u64;
        c.vantage_window_ns = (self.vantage_window * 1e6) as u64;
        c.storm_count = self.storm_count;
        c.flow_capacity = self.max_flows as usize;
    }
}
