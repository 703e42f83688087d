//! What `run`'s workers and queues count, shared with the control plane: the metrics,
//! `/healthz` and the summary read it (a leaf: it imports no other module of the binary).
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use dataplane::anomaly::KIND_COUNT;
use dataplane::worker::QueueCounters;

/// One worker's counters, shared with the control plane (written by that worker only).
#[derive(Default)]
pub struct SharedStats {
    pub anomalies: [AtomicU64; KIND_COUNT],
    pub handed_off: AtomicU64,
    /// Frames this worker could not hand to their owner (its inbox was full).
    pub handoff_dropped: AtomicU64,
    /// Frames of this worker's flows that another worker could not hand over: loss for this
    /// worker's engine (written by the other workers).
    pub handoff_lost_inbound: AtomicU64,
    /// Frames this worker's engine processed: its own queue's, and those handed to it.
    pub engine_received: AtomicU64,
    pub output_dropped: AtomicU64,
    pub flows_active: AtomicU64,
    pub flows_created: AtomicU64,
    pub flows_evicted: [AtomicU64; 4],
    pub evidence_suppressed: AtomicU64,
    /// Detector side state refused (pool full) and reclaimed from handshakes.
    pub side_exhausted: AtomicU64,
    pub side_reclaimed: AtomicU64,
    /// MAC addresses seen after the engine's MAC table filled (treated as unknown).
    pub macs_overflowed: AtomicU64,
    /// When the worker last published (Unix ns): it does so after every receive batch and
    /// every tick, so a worker that died or hangs stops moving it.
    pub heartbeat_ns: AtomicU64,
}

/// One queue a worker reads (host mode: an interface's ring, as queue 0), for the metrics,
/// `/healthz` and the summary.
#[derive(Clone)]
pub struct QueueInfo {
    pub iface: String,
    pub vantage: u16,
    pub queue: u32,
    pub xdp_mode: &'static str,
    /// "zero-copy", "copy" or "host".
    pub copy_mode: &'static str,
    /// Why zero-copy was refused, when it was asked for.
    pub zero_copy_fallback: Option<String>,
    pub counters: Arc<QueueCounters>,
}
