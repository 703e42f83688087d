//! The catalog's thresholds (../shared/DETECTIONS.md), settable on `run` and `analyze`.
//! Every one is bounded: a value outside its range is refused while the options are parsed,
//! so the nanoseconds handed to the engine can neither be zero nor wrap a deadline.
use std::time::Duration;

use clap::Args;
use dataplane::engine::EngineConfig;

use crate::cli::options::{nanos, whole, Bounds};

/// Up to the idle timeout (300 s): a flow idle longer is evicted before its handshake could
/// time out.
pub const HANDSHAKE_TIMEOUT: Bounds = Bounds { min: 0.001, max: 300.0, unit: "seconds" };
/// From the 1 ms floor the engine applies anyway to 10 s (far beyond any RTT/2 worth pairing).
pub const PAIRING_WINDOW: Bounds = Bounds { min: 1.0, max: 10_000.0, unit: "ms" };
/// Packets wait this long for their twin at the other vantages, so it bounds that buffer.
pub const VANTAGE_WINDOW: Bounds = Bounds { min: 0.01, max: 10_000.0, unit: "ms" };

#[derive(Args, Debug, Clone)]
pub struct Thresholds {
    /// A handshake not complete after this long is reported (syn_unanswered, synack_unacked);
    /// 0.001 to 300.
    #[arg(long, value_name = "SECS", default_value = "3", allow_negative_numbers = true,
          value_parser = HANDSHAKE_TIMEOUT.duration(1.0))]
    pub handshake_timeout: Duration,
    /// Upper bound of the window in which a RST is paired with the segment it answers
    /// (the window is min(RTT/2, this), at least 1 ms); 1 to 10000.
    #[arg(long, value_name = "MS", default_value = "50", allow_negative_numbers = true,
          value_parser = PAIRING_WINDOW.duration(1e-3))]
    pub pairing_window: Duration,
    /// How long a packet seen at one vantage may take to show up at another before it counts
    /// as lost between them; 0.01 to 10000.
    #[arg(long, value_name = "MS", default_value = "100", allow_negative_numbers = true,
          value_parser = VANTAGE_WINDOW.duration(1e-3))]
    pub vantage_window: Duration,
    /// Retransmissions of one segment that make a retransmission_storm.
    #[arg(long, value_name = "N", default_value_t = 5, allow_negative_numbers = true,
          value_parser = whole::<u32>(2, 1000, "retransmissions"))]
    pub storm_count: u32,
    /// Flows tracked per worker; beyond it closed, then half-open, then idle flows are evicted.
    #[arg(long, value_name = "N", default_value_t = 1 << 20, allow_negative_numbers = true,
          value_parser = whole::<u64>(1024, dataplane::flow::table::MAX_CAPACITY as i128, "flows"))]
    pub max_flows: u64,
}

impl Thresholds {
    pub fn apply(&self, c: &mut EngineConfig) {
        c.handshake_timeout_ns = nanos(self.handshake_timeout);
        c.pairing_window_max_ns = nanos(self.pairing_window);
        c.vantage_window_ns = nanos(self.vantage_window);
        c.storm_count = self.storm_count;
        // Bounded to the table's 2^26 above, so it fits usize on every target we build for.
        c.flow_capacity = usize::try_from(self.max_flows).unwrap_or(usize::MAX);
    }
}
