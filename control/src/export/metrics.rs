//! Prometheus metrics. Labels are bounded: kind, queue, vantage (an interface name from the
//! command line), reason — never addresses or ports. Names follow the Prometheus conventions
//! (base units, `_total` for counters). Per-flow detail goes to events and evidence.
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use anyhow::Result;
use dataplane::anomaly::Kind;
use dataplane::flow::EvictReason;
use dataplane::loader::XdpProgram;
use dataplane::worker::QueueCounters;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::stats::{QueueInfo, SharedStats, WorkerTotals, EVICT_REASONS};

const ANOMALIES: &str = "wirewatch_anomalies_total";
const PACKETS: &str = "wirewatch_packets_total";
const BYTES: &str = "wirewatch_bytes_total";
const XDP_PACKETS: &str = "wirewatch_xdp_packets_total";
const XSK_DROPPED: &str = "wirewatch_xsk_rx_dropped_total";
const XSK_RING_FULL: &str = "wirewatch_xsk_rx_ring_full_total";
const XSK_INVALID: &str = "wirewatch_xsk_rx_invalid_descs_total";
const XSK_FILL_EMPTY: &str = "wirewatch_xsk_rx_fill_ring_empty_total";
const FLOWS_ACTIVE: &str = "wirewatch_flows_active";
const FLOWS_CREATED: &str = "wirewatch_flows_created_total";
const FLOWS_EVICTED: &str = "wirewatch_flows_evicted_total";
const EVIDENCE_WRITTEN: &str = "wirewatch_evidence_files_written_total";
const EVIDENCE_SUPPRESSED: &str = "wirewatch_evidence_files_suppressed_total";
const EVIDENCE_FAILED: &str = "wirewatch_evidence_files_failed_total";
const EVIDENCE_REMOVED: &str = "wirewatch_evidence_files_removed_total";
const HANDOFF: &str = "wirewatch_handoff_packets_total";
/// Detector side state the engine could not give (`reason="pool_full"`) or took from a
/// handshake for another detector (`reason="reclaimed"`).
const SIDE_STATE: &str = "wirewatch_detector_state_total";
/// MAC addresses past the engine's MAC table, treated as unknown by the detectors.
const MACS_OVERFLOWED: &str = "wirewatch_mac_table_overflow_total";
const HANDSHAKE_RTT: &str = "wirewatch_handshake_rtt_seconds";
const ZERO_WINDOW_DURATION: &str = "wirewatch_zero_window_duration_seconds";
/// Capture completeness per vantage (Zeek's capture_loss): ACKs that advanced, and those that
/// acknowledged data the vantage never saw.
const CAPTURE_ACKS: &str = "wirewatch_capture_acks_total";
const CAPTURE_GAP_ACKS: &str = "wirewatch_capture_gap_acks_total";
const CAPTURE_GAP_BYTES: &str = "wirewatch_capture_gap_bytes_total";
const BUILD_INFO: &str = "wirewatch_build_info";
/// Info-style: 1 per interface, its XDP attach mode and AF_XDP copy mode as labels.
const XDP_MODE: &str = "wirewatch_xdp_attached_info";
/// When each worker last went round its loop (a dead or wedged worker stops moving it).
const WORKER_HEARTBEAT: &str = "wirewatch_worker_heartbeat_timestamp_seconds";
/// Events and evidence jobs the output thread's queue had no room for.
const OUTPUT_DROPPED: &str = "wirewatch_output_dropped_total";
/// The interface's own receive drops (driver, NIC FIFO, missed), from its sysfs statistics.
const IFACE_RX_DROPPED: &str = "wirewatch_interface_rx_dropped_total";
/// The driver's per-queue receive drops (`ethtool -S`: rx_queue_N_drops, rx_queue_N_xdp_drops).
const DRIVER_RX_DROPS: &str = "wirewatch_driver_rx_drops_total";
/// Frames the engines processed (from their own queue or handed over by another worker).
const ENGINE_FRAMES: &str = "wirewatch_engine_frames_total";
/// Writes that failed, by output (`events`, `stdout`, `record`, `retention`, `report`); each is
/// logged too.
pub const OUTPUT_FAILED: &str = "wirewatch_output_failures_total";
/// The outputs of [`OUTPUT_FAILED`] (evidence files have their own counter).
const OUTPUTS: [&str; 5] = ["events", "stdout", "record", "retention", "report"];
/// Frames that did not reach the `--record` file (its queue was full or its writes failed).
const RECORD_DROPPED: &str = "wirewatch_record_frames_dropped_total";
/// Open connections of the HTTP server (metrics, health, API).
const HTTP_CONNECTIONS: &str = "wirewatch_http_connections";
/// Connections the HTTP server closed to protect itself, by reason.
const HTTP_CLOSED: &str = "wirewatch_http_connections_closed_total";
/// Failed `accept` calls of the HTTP server, by reason.
const HTTP_ACCEPT_ERRORS: &str = "wirewatch_http_accept_errors_total";

/// HELP text and unit of every metric above: one place, so none is exported without.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        CAPTURE_ACKS,
        "ACKs that moved the acknowledged point forward, per vantage (the base of capture loss)"
    );
    describe_counter!(
        CAPTURE_GAP_ACKS,
        "ACKs that acknowledged data the vantage never saw: capture loss, as Zeek's capture_loss counts it (divide by wirewatch_capture_acks_total)"
    );
    describe_counter!(
        CAPTURE_GAP_BYTES,
        Unit::Bytes,
        "Bytes acknowledged that the vantage never saw (the holes in what it captured)"
    );
    describe_counter!(
        ANOMALIES,
        Unit::Count,
        "Anomalies detected, by kind (the detection catalog); sensor-health kinds included."
    );
    describe_counter!(
        PACKETS,
        Unit::Count,
        "Frames received from the AF_XDP socket, by interface and queue."
    );
    describe_counter!(
        BYTES,
        Unit::Bytes,
        "Bytes on the wire of the frames received, by interface and queue."
    );
    describe_counter!(
        XDP_PACKETS,
        Unit::Count,
        "Frames the XDP program (and in host mode the TC egress program) handled, by interface and outcome (reason)."
    );
    describe_counter!(
        XSK_DROPPED,
        Unit::Count,
        "Frames the kernel dropped because the AF_XDP socket had no buffer (our own capture loss)."
    );
    describe_counter!(
        XSK_RING_FULL,
        Unit::Count,
        "Frames dropped because the AF_XDP RX ring was full (our own capture loss)."
    );
    describe_counter!(XSK_INVALID, Unit::Count, "Invalid descriptors the AF_XDP RX path met.");
    describe_counter!(
        XSK_FILL_EMPTY,
        Unit::Count,
        "Times the AF_XDP fill ring was empty when the kernel needed a buffer."
    );
    describe_gauge!(FLOWS_ACTIVE, Unit::Count, "Flows tracked now, all workers.");
    describe_counter!(FLOWS_CREATED, Unit::Count, "Flows created in the flow tables.");
    describe_counter!(FLOWS_EVICTED, Unit::Count, "Flows removed from the flow tables, by reason.");
    describe_counter!(EVIDENCE_WRITTEN, Unit::Count, "Evidence pcapng files written.");
    describe_counter!(
        EVIDENCE_SUPPRESSED,
        Unit::Count,
        "Evidence files not written because of the files-per-second limit."
    );
    describe_counter!(
        EVIDENCE_FAILED,
        Unit::Count,
        "Evidence files that could not be written (disk full, permissions)."
    );
    describe_counter!(
        EVIDENCE_REMOVED,
        Unit::Count,
        "Evidence files removed by the size and age retention."
    );
    describe_counter!(HANDOFF, Unit::Count, "Frames handed to the worker owning their flow (reason=handed_off) or dropped because its inbox was full (reason=dropped).");
    describe_counter!(SIDE_STATE, Unit::Count, "Detector side state refused because the pool was full (reason=pool_full) or reclaimed from a handshake (reason=reclaimed).");
    describe_counter!(
        MACS_OVERFLOWED,
        Unit::Count,
        "MAC addresses seen after the MAC table filled (treated as unknown by the detectors)."
    );
    describe_histogram!(
        HANDSHAKE_RTT,
        Unit::Seconds,
        "Handshake round-trip time, SYN to the client's ACK of the SYN-ACK, as seen at the sensor."
    );
    describe_histogram!(
        ZERO_WINDOW_DURATION,
        Unit::Seconds,
        "How long receivers advertised a zero window."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the wirewatch version as a label.");
    describe_gauge!(XDP_MODE, "Always 1 per interface; XDP attach mode (native, generic) and AF_XDP mode (zero-copy, copy) as labels.");
    describe_gauge!(
        WORKER_HEARTBEAT,
        Unit::Seconds,
        "Unix time at which each worker (by interface and queue) last went round its receive loop."
    );
    describe_counter!(
        OUTPUT_DROPPED,
        Unit::Count,
        "Events and evidence jobs dropped because the output thread fell behind."
    );
    describe_counter!(DRIVER_RX_DROPS, Unit::Count, "Frames the driver dropped on a receive queue since wirewatch attached, by interface, queue and reason: drops (ethtool -S rx_queue_N_drops; on veth this includes frames the AF_XDP socket had no room for, which wirewatch_xsk_* count too), xdp_drops (rx_queue_N_xdp_drops: XDP_DROP verdicts, i.e. --non-tcp drop). Each growth puts the queue's flows in the gap state.");
    describe_counter!(
        ENGINE_FRAMES,
        Unit::Count,
        "Frames the detection engines processed, all workers (received from a socket or handed over)."
    );
    describe_counter!(
        OUTPUT_FAILED,
        Unit::Count,
        "Writes that failed, by output: events (the --events file), stdout, record (the --record file), retention (evidence files it could not remove). Each failure is logged."
    );
    describe_counter!(
        RECORD_DROPPED,
        Unit::Count,
        "Frames not written to the --record file: its queue was full or the file could not be written."
    );
    describe_gauge!(HTTP_CONNECTIONS, Unit::Count, "Open connections of the metrics/API server.");
    describe_counter!(HTTP_CLOSED, Unit::Count, "Connections the metrics/API server closed to stay available: reason=evicted (the quietest, to make room at the connection cap or when out of file descriptors), stalled (no byte moved for 20 s).");
    describe_counter!(HTTP_ACCEPT_ERRORS, Unit::Count, "accept() failures of the metrics/API server: reason=out_of_resources (EMFILE, ENFILE, ENOBUFS, ENOMEM; raise LimitNOFILE), other. The server backs off and retries.");
    describe_counter!(IFACE_RX_DROPPED, Unit::Count, "Receive drops the interface itself counts (sysfs statistics): reason=dropped, missed (rx_missed_errors), fifo (rx_fifo_errors).");
}

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
    describe();
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
        OUTPUT_DROPPED,
        ENGINE_FRAMES,
        RECORD_DROPPED,
    ] {
        counter!(c).absolute(0);
    }
    for o in OUTPUTS {
        counter!(OUTPUT_FAILED, "output" => o).absolute(0);
    }
    for r in ["evicted", "stalled"] {
        counter!(HTTP_CLOSED, "reason" => r).absolute(0);
    }
    for r in ["out_of_resources", "other"] {
        counter!(HTTP_ACCEPT_ERRORS, "reason" => r).absolute(0);
    }
    gauge!(HTTP_CONNECTIONS).set(0.0);
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
    for (reason, v) in [("drops", &c.driver_drops), ("xdp_drops", &c.driver_xdp_drops)] {
        counter!(DRIVER_RX_DROPS, "vantage" => vantage.to_string(), "queue" => queue.to_string(), "reason" => reason)
            .absolute(v.load(Relaxed));
    }
}

/// Every outcome (zeros included, so alerts on no_socket or redirect_failed see a series).
pub fn xdp(vantage: &str, outcomes: &[(&'static str, u64)]) {
    for (reason, n) in outcomes {
        counter!(XDP_PACKETS, "vantage" => vantage.to_string(), "reason" => *reason).absolute(*n);
    }
}

pub fn anomalies(per_kind: &[u64]) {
    // Aggregates are counted where they are made (the events thread), not by the engines.
    for (k, n) in Kind::ALL.iter().zip(per_kind).filter(|(k, _)| !k.is_aggregate()) {
        counter!(ANOMALIES, "kind" => k.name()).absolute(*n);
    }
}

pub fn flows(active: u64, created: u64, evicted: &[u64; EVICT_REASONS]) {
    gauge!(FLOWS_ACTIVE).set(active as f64);
    counter!(FLOWS_CREATED).absolute(created);
    for r in EvictReason::ALL {
        counter!(FLOWS_EVICTED, "reason" => r.name()).absolute(evicted[r as usize]);
    }
}

/// The interface's receive drops from /sys/class/net/IF/statistics (absent files are skipped:
/// not every driver counts every one).
pub fn interface_drops(vantage: &str) {
    for (reason, file) in
        [("dropped", "rx_dropped"), ("missed", "rx_missed_errors"), ("fifo", "rx_fifo_errors")]
    {
        let path = format!("/sys/class/net/{vantage}/statistics/{file}");
        if let Some(n) = std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse().ok()) {
            counter!(IFACE_RX_DROPPED, "vantage" => vantage.to_string(), "reason" => reason)
                .absolute(n);
        }
    }
}

/// The standard `process_*` metrics (as the Prometheus client libraries name them), read from
/// /proc/self (proc(5): `stat`, `fd/`) at scrape time and rendered as exposition text: the
/// `metrics` crate's counters are integers, and CPU seconds are not.
pub fn process_text() -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut put = |name: &str, kind: &str, help: &str, v: f64| {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n");
    };
    // SAFETY: sysconf and getrlimit have no preconditions; `lim` is a valid out-pointer.
    let (ticks, page, max_fds) = unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) == 0 {
            Some(lim.rlim_cur as f64)
        } else {
            None
        };
        (libc::sysconf(libc::_SC_CLK_TCK) as f64, libc::sysconf(libc::_SC_PAGESIZE) as f64, max)
    };
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces; the
    // first one after it is field 3 (state).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse::<f64>().ok())
    });
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        put(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, in seconds.",
            (utime + stime) / ticks,
        );
    }
    if let (Some(start), Some(boot)) = (field(22), boot) {
        put(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
            boot + start / ticks,
        );
    }
    if let Some(v) = field(23) {
        put("process_virtual_memory_bytes", "gauge", "Virtual memory size, in bytes.", v);
    }
    if let Some(rss) = field(24) {
        put(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size, in bytes.",
            rss * page,
        );
    }
    if let Some(n) = field(20) {
        put("process_threads", "gauge", "Threads in the process.", n);
    }
    if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
        // The directory handle being read is one of the descriptors; it is not counted.
        let n = d.count().saturating_sub(1);
        put("process_open_fds", "gauge", "Open file descriptors.", n as f64);
    }
    if let Some(m) = max_fds {
        put(
            "process_max_fds",
            "gauge",
            "The limit of open file descriptors (RLIMIT_NOFILE, soft).",
            m,
        );
    }
    out
}

/// One worker's growth of the capture-completeness counters since its last report.
pub fn capture(vantage: &str, delta: &dataplane::engine::VantageCapture) {
    let v = vantage.to_string();
    counter!(CAPTURE_ACKS, "vantage" => v.clone()).increment(delta.ack_events);
    counter!(CAPTURE_GAP_ACKS, "vantage" => v.clone()).increment(delta.gap_events);
    counter!(CAPTURE_GAP_BYTES, "vantage" => v).increment(delta.gap_bytes);
}

/// An HTTP connection the server closed to protect itself (`evicted`, `stalled`).
pub fn http_closed(reason: &'static str) {
    counter!(HTTP_CLOSED, "reason" => reason).increment(1);
}

pub fn http_connections(open: usize) {
    gauge!(HTTP_CONNECTIONS).set(open as f64);
}

pub fn http_accept_error(out_of_resources: bool) {
    let reason = if out_of_resources { "out_of_resources" } else { "other" };
    counter!(HTTP_ACCEPT_ERRORS, "reason" => reason).increment(1);
}

/// Frames that did not reach the `--record` file.
pub fn record_dropped(frames: u64) {
    counter!(RECORD_DROPPED).increment(frames);
}

/// An aggregate event (a flood, a scan, a black-holed service): made by the event thread,
/// not by a worker, so the workers' per-kind counts never include it.
pub fn aggregate_event(kind: Kind) {
    counter!(ANOMALIES, "kind" => kind.name()).increment(1);
}

pub fn evidence_written() {
    counter!(EVIDENCE_WRITTEN).increment(1);
}

pub fn evidence_failed() {
    counter!(EVIDENCE_FAILED).increment(1);
}

pub fn evidence_removed() {
    counter!(EVIDENCE_REMOVED).increment(1);
}

/// A failed write of one of [`OUTPUTS`].
pub fn output_failed(output: &'static str) {
    counter!(OUTPUT_FAILED, "output" => output).increment(1);
}

pub fn handshake_rtt(ns: u64) {
    histogram!(HANDSHAKE_RTT).record(ns as f64 / 1e9);
}

pub fn zero_window_duration(ns: u64) {
    histogram!(ZERO_WINDOW_DURATION).record(ns as f64 / 1e9);
}

/// Publishes everything the workers and the XDP program count (bounded labels only).
pub fn publish_run(
    queues: &[QueueInfo],
    programs: &[(String, XdpProgram)],
    workers: &[Arc<SharedStats>],
) {
    // Workers were made in the order of `queues`: worker i reads queue i.
    for (q, w) in queues.iter().zip(workers) {
        queue(&q.counters, &q.iface, q.queue);
        gauge!(XDP_MODE, "vantage" => q.iface.clone(), "mode" => q.xdp_mode, "copy" => q.copy_mode)
            .set(1.0);
        let beat = w.heartbeat_ns.load(Relaxed);
        if beat > 0 {
            gauge!(WORKER_HEARTBEAT, "vantage" => q.iface.clone(), "queue" => q.queue.to_string())
                .set(beat as f64 / 1e9);
        }
    }
    for (iface, p) in programs {
        interface_drops(iface);
        if let Ok(c) = p.counters() {
            let all: Vec<_> =
                dataplane_common::Outcome::ALL.iter().map(|o| (o.name(), c.get(*o))).collect();
            xdp(iface, &all);
        }
    }
    let t = WorkerTotals::of(workers);
    anomalies(&t.anomalies);
    flows(t.flows_active, t.flows_created, &t.flows_evicted);
    counter!(EVIDENCE_SUPPRESSED).absolute(t.evidence_suppressed);
    counter!(SIDE_STATE, "reason" => "pool_full").absolute(t.side_exhausted);
    counter!(SIDE_STATE, "reason" => "reclaimed").absolute(t.side_reclaimed);
    counter!(MACS_OVERFLOWED).absolute(t.macs_overflowed);
    counter!(HANDOFF, "reason" => "handed_off").absolute(t.handed_off);
    counter!(HANDOFF, "reason" => "dropped").absolute(t.handoff_dropped);
    counter!(OUTPUT_DROPPED).absolute(t.output_dropped);
    counter!(ENGINE_FRAMES).absolute(t.engine_received);
}
