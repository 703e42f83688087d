//! The engine's configuration: every threshold of the catalog, the vantages and the outputs,
//! shared by the engine and the detectors it runs.
use std::path::PathBuf;

use crate::budget::EvidenceBudget;
use crate::vantage::{VantageRelations, Vantages};

/// Every threshold of the catalog, with its default.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub handshake_timeout_ns: u64,
    /// Upper bound of the RST pairing window (default 50 ms; the window is min(RTT/2, this)).
    pub pairing_window_max_ns: u64,
    /// Lower bound: the local processing time of a middlebox answering (default 1 ms).
    pub pairing_window_floor_ns: u64,
    pub vantage_window_ns: u64,
    pub storm_count: u32,
    pub reorder_default_ns: u64,
    pub mirror_window_ns: u64,
    pub flow_capacity: usize,
    /// The flow index starts small and doubles with the flows (analyze, the benchmarks) rather
    /// than being allocated for `flow_capacity` at once (`run`): each doubling rehashes every
    /// flow, a pause of milliseconds near a million flows that a live receive ring may not
    /// cover at line rate.
    pub flow_index_grows: bool,
    /// Flows that can have a detector armed at once (side-state pool entries).
    pub side_capacity: usize,
    pub idle_timeout_ns: u64,
    pub closed_timeout_ns: u64,
    /// The evidence history's memory for the whole process (default 64 MiB), shared out
    /// equally among the workers by [`per_worker`](Self::per_worker): each worker sees its
    /// share of the packets, so on average a share reaches as far back in time as one worker's
    /// whole history would (a worker given more than its share of the traffic, by skewed RSS
    /// or one huge flow, reaches less far back). 0: no history at all (no frame is copied;
    /// evidence, if kept, then holds only the packets from its detection on).
    pub history_bytes: usize,
    pub evidence_dir: Option<PathBuf>,
    pub evidence_before_packets: usize,
    pub evidence_before_ns: u64,
    pub evidence_after_packets: usize,
    pub evidence_after_ns: u64,
    pub evidence_per_sec: f64,
    /// The budget shared by every worker of the process; `None`: this engine's own, at
    /// `evidence_per_sec`.
    pub evidence_budget: Option<EvidenceBudget>,
    /// The vantages (interfaces or files, and the mirror sessions found in them), shared by
    /// every engine of the process.
    pub vantages: Vantages,
    /// How vantage pairs relate (serial or parallel): pairs the operator named serial, and
    /// what a first pass learned. `learn_vantage_relations` keeps learning from the traffic.
    pub vantage_relations: VantageRelations,
    pub learn_vantage_relations: bool,
    /// Each vantage's capture time range, when known (capture files): no loss is inferred at
    /// a vantage outside its range.
    pub vantage_ranges: Option<Vec<(u64, u64)>>,
    /// Record a per-packet verdict (for `analyze --verdicts`).
    pub record_verdicts: bool,
    /// The seed of the events' Community ID (0 unless the other tools use another).
    pub community_id_seed: u16,
    /// The sensor's name in events (default: the host name).
    pub host: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            handshake_timeout_ns: 3_000_000_000,
            pairing_window_max_ns: 50_000_000,
            pairing_window_floor_ns: 1_000_000,
            vantage_window_ns: 100_000_000,
            storm_count: 5,
            reorder_default_ns: 3_000_000,
            mirror_window_ns: 1_000_000,
            flow_capacity: 1 << 20,
            flow_index_grows: true,
            side_capacity: 1 << 14,
            idle_timeout_ns: 300_000_000_000,
            closed_timeout_ns: 10_000_000_000,
            history_bytes: 64 << 20,
            evidence_dir: None,
            evidence_before_packets: 32,
            evidence_before_ns: 5_000_000_000,
            evidence_after_packets: 32,
            evidence_after_ns: 2_000_000_000,
            evidence_per_sec: 10.0,
            evidence_budget: None,
            vantages: Vantages::default(),
            vantage_relations: VantageRelations::default(),
            learn_vantage_relations: true,
            vantage_ranges: None,
            record_verdicts: false,
            community_id_seed: 0,
            host: host_name(),
        }
    }
}

impl EngineConfig {
    /// The configuration of one of `workers` engines: the process-wide budgets (the evidence
    /// history) shared out. Flow capacity is per worker already (`--max-flows`).
    pub fn per_worker(&self, workers: usize) -> Self {
        let mut c = self.clone();
        c.history_bytes = self.history_bytes / workers.max(1);
        c
    }
}

/// The host name (uname's node name), or "unknown" if the kernel gives none.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
