//! Prometheus metrics. Labels are bounded: kind, queue, vantage (an interface name from the
//! command line), reason — never addresses or ports. Names follow the Prometheus conventions
//! (base units, `_total` for counters). Per-flow detail goes to events and evidence.
use std::sync::atomic::Ordering::Relaxed;

use anyhow::Result;
use dataplane::anomaly::Kind;
use dataplane::flow::EvictReason;
use dataplane::worker::QueueCounters;
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const ANOMALIES: &str = "wirewatch_anomalies_total";
pub const PACKETS: &str = "wirewatch_packets_total";
pub const BYTES: &str = "wirewatch_bytes_total";
pub const XDP_PACKETS: &str = "wirewatch_xdp_packets_total";
pub const XSK_DROPPED: &str = "wirewatch_xsk_rx_dropped_total";
pub const XSK_RING_FULL: &str = "wirewatch_xsk_rx_ring_full_total";
pub const XSK_INVALID: &str = "wirewatch_xsk_rx_invalid_descs_total";
pub const XSK_FILL_EMPTY: &str = "wirewatch_xsk_rx_fill_ring_empty_total";
pub const FLOWS_ACTIVE: &str = "wirewatch_flows_active";
pub const FLOWS_CREATED: &str = "wirewatch_flows_created_total";
pub const FLOWS_EVICTED: &str = "wirewatch_flows_evicted_total";
pub const EVIDENCE_WRITTEN: &str = "wirewatch_evidence_files_written_total";
pub const EVIDENCE_SUPPRESSED: &str = "wirewatch_evidence_files_suppressed_total";
pub const EVIDENCE_FAILED: &str = "wirewatch_evidence_files_failed_total";
pub const EVIDENCE_REMOVED: &str = "wirewatch_evidence_files_removed_total";
pub const HANDOFF: &str = "wirewatch_handoff_packets_total";
/// Detector side state the engine could not give (`reason="pool_full"`) or took from a
/// handshake for another detector (`reason="reclaimed"`).
pub const SIDE_STATE: &str = "wirewatch_detector_state_total";
/// MAC addresses past the engine's MAC table, treated as unknown by the detectors.
pub const MACS_OVERFLOWED: &str = "wirewatch_mac_table_overflow_total";
pub const HANDSHAKE_RTT: &str = "wirewatch_handshake_rtt_seconds";
pub const ZERO_WINDOW_DURATION: &str = "wirewatch_zero_window_duration_seconds";
pub const BUILD_INFO: &str = "wirewatch_build_info";
pub const XDP_MODE: &str = "wirewatch_xdp_attached";

/// Installs the recorder; the handle renders the scrape page.
pub fn install() -> Result<PrometheusHandle> {
    let h = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(HANDSHAKE_RTT.into()),
            &[1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1.0],
        )?
        .set_buckets_for_metric(
            Matcher::Full(ZERO_WINDOW_DURATION.into()),
            &[0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0],
        )?
        .install_recorder()?;
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // Every series a dashboard or alert uses exists from the start, at 0.
    for k in Kind::ALL {
        counter!(ANOMALIES, "kind" => k.name()).absolute(0);
    }
    for c in [
        EVIDENCE_WRITTEN,
        EVIDENCE_SUPPRESSED,
        EVIDENCE_FAILED,
        EVIDENCE_REMOVED,
        FLOWS_CREATED,
        MACS_OVERFLOWED,
    ] {
        counter!(c).absolute(0);
    }
    for r in ["pool_full", "reclaimed"] {
        counter!(SIDE_STATE, "reason" => r).absolute(0);
    }
    Ok(h)
}

pub fn queue(c: &QueueCounters, vantage: &str, queue: u32) {
    let q = queue.to_string();
    let l = [("vantage", vantage.to_string()), ("queue", q)];
    counter!(PACKETS, &l).absolute(c.packets.load(Relaxed));
    counter!(BYTES, &l).absolute(c.bytes.load(Relaxed));
    counter!(XSK_DROPPED, &l).absolute(c.rx_dropped.load(Relaxed));
    counter!(XSK_RING_FULL, &l).absolute(c.rx_ring_full.load(Relaxed));
    counter!(XSK_INVALID, &l).absolute(c.rx_invalid_descs.load(Relaxed));
    counter!(XSK_FILL_EMPTY, &l).absolute(c.rx_fill_ring_empty_descs.load(Relaxed));
}

pub fn xdp(vantage: &str, outcomes: &[(&'static str, u64)]) {
    for (reason, n) in outcomes {
        counter!(XDP_PACKETS, "vantage" => vantage.to_string(), "reason" => *reason).absolute(*n);
    }
}

pub fn anomalies(per_kind: &[u64]) {
    for (k, n) in Kind::ALL.iter().zip(per_kind) {
        counter!(ANOMALIES, "kind" => k.name()).absolute(*n);
    }
}

pub fn flows(active: u64, created: u64, evicted: &[u64; 4]) {
    gauge!(FLOWS_ACTIVE).set(active as f64);
    counter!(FLOWS_CREATED).absolute(created);
    for r in EvictReason::ALL {
        counter!(FLOWS_EVICTED, "reason" => r.name()).absolute(evicted[r as usize]);
    }
}
