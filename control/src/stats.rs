//! What `run`'s workers and queues count, shared with the control plane: the metrics,
//! `/healthz` and the summary read it (a leaf: it imports no other module of the binary).
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use dataplane::anomaly::KIND_COUNT;
use dataplane::worker::QueueCounters;

/// How many reasons a flow can be evicted for (`dataplane::flow::EvictReason`).
pub const EVICT_REASONS: usize = dataplane::flow::EvictReason::ALL.len();

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
    pub flows_evicted: [AtomicU64; EVICT_REASONS],
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

/// Every worker's counters summed: what the metrics and the summary report.
pub struct WorkerTotals {
    pub anomalies: [u64; KIND_COUNT],
    pub handed_off: u64,
    pub handoff_dropped: u64,
    pub engine_received: u64,
    pub output_dropped: u64,
    pub flows_active: u64,
    pub flows_created: u64,
    pub flows_evicted: [u64; EVICT_REASONS],
    pub evidence_suppressed: u64,
    pub side_exhausted: u64,
    pub side_reclaimed: u64,
    pub macs_overflowed: u64,
}

impl WorkerTotals {
    pub fn of(workers: &[Arc<SharedStats>]) -> Self {
        let sum = |f: &dyn Fn(&SharedStats) -> &AtomicU64| {
            workers.iter().map(|w| f(w).load(Relaxed)).sum::<u64>()
        };
        Self {
            anomalies: std::array::from_fn(|i| sum(&|w| &w.anomalies[i])),
            handed_off: sum(&|w| &w.handed_off),
            handoff_dropped: sum(&|w| &w.handoff_dropped),
            engine_received: sum(&|w| &w.engine_received),
            output_dropped: sum(&|w| &w.output_dropped),
            flows_active: sum(&|w| &w.flows_active),
            flows_created: sum(&|w| &w.flows_created),
            flows_evicted: std::array::from_fn(|i| sum(&|w| &w.flows_evicted[i])),
            evidence_suppressed: sum(&|w| &w.evidence_suppressed),
            side_exhausted: sum(&|w| &w.side_exhausted),
            side_reclaimed: sum(&|w| &w.side_reclaimed),
            macs_overflowed: sum(&|w| &w.macs_overflowed),
        }
    }
}
