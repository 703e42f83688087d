//! Where every frame went: the drivers' and interfaces' drops against a baseline, each loss
//! place's counter, and `run`'s summary (logged, and written by --summary-json).
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use dataplane::anomaly::Kind;
use dataplane::nicstats::{DriverDrops, InterfaceDrops};
use dataplane::worker::QueueCounters;
use serde::Serialize;

use crate::stats::{QueueInfo, SharedStats, WorkerTotals};

/// An interface's driver counters when its sockets were bound: what the run reports is the
/// growth since (a veth or NIC keeps its counters across runs).
pub struct DriverBaseline {
    pub iface: String,
    queues: DriverDrops,
    iface_drops: InterfaceDrops,
    now_iface: InterfaceDrops,
}

impl DriverBaseline {
    /// The counters of `iface` now.
    pub fn new(iface: &str) -> Self {
        Self {
            iface: iface.to_string(),
            queues: DriverDrops::read(iface),
            iface_drops: InterfaceDrops::read(iface),
            now_iface: InterfaceDrops::default(),
        }
    }

    /// The interface's own drops since the baseline, as of the last `read_driver_losses`.
    pub fn summary(&self) -> InterfaceSummary {
        InterfaceSummary {
            iface: self.iface.clone(),
            rx_dropped: self.now_iface.rx_dropped.saturating_sub(self.iface_drops.rx_dropped),
            rx_missed: self.now_iface.rx_missed.saturating_sub(self.iface_drops.rx_missed),
            rx_fifo: self.now_iface.rx_fifo.saturating_sub(self.iface_drops.rx_fifo),
        }
    }
}

/// Reads the drivers' receive-drop counters and hands each queue its share (the workers put
/// their flows in the gap state when it grows).
pub fn read_driver_losses(queues: &[QueueInfo], base: &mut [DriverBaseline], non_tcp_drop: bool) {
    for b in base.iter_mut() {
        let now = DriverDrops::read(&b.iface);
        b.now_iface = InterfaceDrops::read(&b.iface);
        let before_queues =
            b.now_iface.before_queues().saturating_sub(b.iface_drops.before_queues());
        for q in queues.iter().filter(|q| q.iface == b.iface) {
            let (queue, c) = (q.queue, &q.counters);
            let drops = now.drops(queue).saturating_sub(b.queues.drops(queue));
            let xdp = now.xdp_drops(queue).saturating_sub(b.queues.xdp_drops(queue));
            c.driver_drops.store(drops, Relaxed);
            c.driver_xdp_drops.store(xdp, Relaxed);
            c.driver_lost.store(drops + if non_tcp_drop { 0 } else { xdp }, Relaxed);
            c.iface_lost.store(before_queues, Relaxed);
        }
    }
}

/// An interface's own receive drops during the run (sysfs statistics).
#[derive(Serialize)]
pub struct InterfaceSummary {
    pub iface: String,
    pub rx_dropped: u64,
    pub rx_missed: u64,
    pub rx_fifo: u64,
}

/// Where every TCP frame the XDP program saw went, summed over interfaces and queues: each
/// place a frame can be lost has its own counter.
#[derive(Serialize, Default)]
pub struct LossSummary {
    /// Frames the XDP program redirected into our sockets (with or without metadata).
    pub xdp_redirected: u64,
    /// TCP frames passed to the stack: no socket on the queue, the redirect refused, the
    /// frame could not be cut to the snap length.
    pub xdp_no_socket: u64,
    pub xdp_redirect_failed: u64,
    pub xdp_truncate_failed: u64,
    /// Host mode: TCP frames whose headers were copied into the ring buffer, and those the
    /// ring had no room for (or whose copy failed).
    pub host_copied: u64,
    pub host_ring_full: u64,
    /// Redirected frames the socket could not take (`XDP_STATISTICS`: no fill buffer, RX
    /// ring full).
    pub xsk_rx_dropped: u64,
    pub xsk_rx_ring_full: u64,
    /// Frames the workers read from their sockets (host mode: from the ring).
    pub socket_received: u64,
    /// Frames a worker could not hand to the worker owning their flow.
    pub handoff_dropped: u64,
    /// Frames the engines processed.
    pub engine_received: u64,
    /// Frames the interfaces dropped before any queue (rx_missed + rx_fifo).
    pub interface_missed: u64,
    /// The driver's per-queue drops (on veth these include the frames the socket could not
    /// take, so they are not added to `lost_total`).
    pub driver_queue_drops: u64,
    /// Sum of the counters above that are loss.
    pub lost_total: u64,
    /// Redirected (or copied) frames neither read from a socket (or the ring) nor counted lost
    /// by the socket: should always be 0.
    pub unattributed: u64,
}

impl LossSummary {
    /// From the XDP programs' outcome counters, every queue's counters, the interfaces'
    /// baselines and the workers' counters.
    pub fn of(
        xdp: &[dataplane::loader::OutcomeCounters],
        queues: &[QueueInfo],
        interfaces: &[DriverBaseline],
        workers: &[Arc<SharedStats>],
    ) -> Self {
        use dataplane_common::Outcome;
        let o = |x: Outcome| xdp.iter().map(|c| c.get(x)).sum::<u64>();
        let q = |f: &dyn Fn(&QueueCounters) -> &AtomicU64| {
            queues.iter().map(|q| f(&q.counters).load(Relaxed)).sum::<u64>()
        };
        let w = WorkerTotals::of(workers);
        let mut l = Self {
            xdp_redirected: o(Outcome::TcpRedirected) + o(Outcome::MetaFailed),
            xdp_no_socket: o(Outcome::NoSocket),
            xdp_redirect_failed: o(Outcome::RedirectFailed),
            xdp_truncate_failed: o(Outcome::TruncateFailed),
            host_copied: o(Outcome::HostCopied),
            host_ring_full: o(Outcome::HostRingFull) + o(Outcome::HostCopyFailed),
            xsk_rx_dropped: q(&|c| &c.rx_dropped),
            xsk_rx_ring_full: q(&|c| &c.rx_ring_full),
            socket_received: q(&|c| &c.packets),
            handoff_dropped: w.handoff_dropped,
            engine_received: w.engine_received,
            interface_missed: interfaces
                .iter()
                .map(|b| {
                    let s = b.summary();
                    s.rx_missed + s.rx_fifo
                })
                .sum(),
            driver_queue_drops: q(&|c| &c.driver_drops),
            lost_total: 0,
            unattributed: 0,
        };
        l.lost_total = l.xdp_no_socket
            + l.xdp_redirect_failed
            + l.xdp_truncate_failed
            + l.host_ring_full
            + l.xsk_rx_dropped
            + l.xsk_rx_ring_full
            + l.handoff_dropped
            + l.interface_missed;
        l.unattributed = (l.xdp_redirected + l.host_copied)
            .saturating_sub(l.socket_received + l.xsk_rx_dropped + l.xsk_rx_ring_full);
        l
    }
}

/// What the summary reports per queue.
#[derive(Serialize)]
pub struct QueueSummary {
    pub iface: String,
    pub vantage: u16,
    pub queue: u32,
    pub xdp_mode: &'static str,
    pub copy_mode: &'static str,
    pub zero_copy_fallback: Option<String>,
    pub packets: u64,
    pub bytes: u64,
    pub no_meta: u64,
    pub rx_dropped: u64,
    pub rx_ring_full: u64,
    pub rx_invalid_descs: u64,
    pub rx_fill_ring_empty_descs: u64,
    /// The driver's `rx_queue_N_drops` / `rx_queue_N_xdp_drops` during the run.
    pub driver_drops: u64,
    pub driver_xdp_drops: u64,
}

#[derive(Serialize)]
pub struct RunSummary {
    pub queues: Vec<QueueSummary>,
    pub interfaces: Vec<InterfaceSummary>,
    /// Every frame accounted for.
    pub loss: LossSummary,
    /// XDP outcomes per interface, by reason.
    pub xdp: Vec<(String, Vec<(&'static str, u64)>)>,
    pub recorded: u64,
    pub record_dropped: u64,
    pub events: u64,
    /// Occurrences per anomaly kind.
    pub anomalies: Vec<(&'static str, u64)>,
    pub evidence_written: u64,
    pub evidence_failed: u64,
    pub handed_off: u64,
    pub handoff_dropped: u64,
    /// Remote-mirror sessions found in the interfaces' traffic (each a vantage): its name,
    /// and the interface.
    pub mirror_sessions: Vec<(String, String)>,
    /// Frames of sessions past the vantage limit, analysed at their interface's vantage.
    pub mirror_sessions_overflowed: u64,
}

/// What the outputs and the XDP programs report at the end of a run.
pub struct Outputs {
    pub xdp: Vec<(String, Vec<(&'static str, u64)>)>,
    pub recorded: u64,
    pub record_dropped: u64,
    pub events: u64,
    pub evidence_written: u64,
    pub evidence_failed: u64,
}

impl RunSummary {
    pub fn collect(
        queues: &[QueueInfo],
        interfaces: &[DriverBaseline],
        loss: LossSummary,
        workers: &[Arc<SharedStats>],
        vantages: &dataplane::vantage::Vantages,
        out: Outputs,
    ) -> Self {
        let t = WorkerTotals::of(workers);
        Self {
            queues: queues
                .iter()
                .map(|q| {
                    let c = &q.counters;
                    QueueSummary {
                        iface: q.iface.clone(),
                        vantage: q.vantage,
                        queue: q.queue,
                        xdp_mode: q.xdp_mode,
                        copy_mode: q.copy_mode,
                        zero_copy_fallback: q.zero_copy_fallback.clone(),
                        packets: c.packets.load(Relaxed),
                        bytes: c.bytes.load(Relaxed),
                        no_meta: c.no_meta.load(Relaxed),
                        rx_dropped: c.rx_dropped.load(Relaxed),
                        rx_ring_full: c.rx_ring_full.load(Relaxed),
                        rx_invalid_descs: c.rx_invalid_descs.load(Relaxed),
                        rx_fill_ring_empty_descs: c.rx_fill_ring_empty_descs.load(Relaxed),
                        driver_drops: c.driver_drops.load(Relaxed),
                        driver_xdp_drops: c.driver_xdp_drops.load(Relaxed),
                    }
                })
                .collect(),
            interfaces: interfaces.iter().map(DriverBaseline::summary).collect(),
            loss,
            xdp: out.xdp,
            recorded: out.recorded,
            record_dropped: out.record_dropped,
            events: out.events,
            anomalies: Kind::ALL
                .iter()
                .map(|k| (k.name(), t.anomalies[*k as usize]))
                .filter(|(_, n)| *n > 0)
                .collect(),
            evidence_written: out.evidence_written,
            evidence_failed: out.evidence_failed,
            handed_off: t.handed_off,
            handoff_dropped: t.handoff_dropped,
            mirror_sessions: vantages.sessions(),
            mirror_sessions_overflowed: vantages.overflowed(),
        }
    }

    /// The loss accounting and each queue's counts, in the log.
    pub fn log(&self) {
        let l = &self.loss;
        log::info!(
            "frames: {} processed by the engines; lost: {} (XDP no socket {}, redirect failed {}, truncate failed {}; AF_XDP socket full {}, ring full {}; host ring full {}; hand-off {}; interface missed {}); driver queue drops {}; unattributed {}",
            l.engine_received, l.lost_total, l.xdp_no_socket, l.xdp_redirect_failed, l.xdp_truncate_failed,
            l.xsk_rx_dropped, l.xsk_rx_ring_full, l.host_ring_full, l.handoff_dropped, l.interface_missed, l.driver_queue_drops, l.unattributed
        );
        for q in &self.queues {
            log::info!(
                "{} queue {}: {} packets, {} bytes, lost in our rings {} (ring full {}), XDP {} / AF_XDP {}",
                q.iface, q.queue, q.packets, q.bytes, q.rx_dropped, q.rx_ring_full, q.xdp_mode, q.copy_mode
            );
        }
    }
}
