//! The engine behind the live workers: flow ownership across workers, and the control thread
//! that prints events, writes them as JSON lines and writes evidence files.
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use dataplane::anomaly::{Event, KIND_COUNT};
use dataplane::engine::{Engine, EngineStats};
use dataplane::evidence::EvidenceJob;
use dataplane::nicstats::{DriverDrops, InterfaceDrops};
use dataplane::packet::decode_in;
use dataplane::worker::{FrameSink, QueueCounters, RawFrame};
use serde::Serialize;

use crate::failing::Failing;

/// A frame handed to the worker that owns its flow: the decoded packet and the header bytes
/// the evidence history keeps, by value (no allocation, no second decode).
pub struct OwnedFrame {
    pkt: dataplane::packet::TcpPacket,
    len: u8,
    head: [u8; dataplane::evidence::HIST_SNAP],
}

pub enum Output {
    Event(Box<Event>),
    Evidence(EvidenceJob),
    /// A handshake answered at a vantage (a few a second): for `service_blackhole`.
    Answered(dataplane::anomaly::setup::PathNote),
}

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

pub struct EngineSink {
    pub engine: Engine,
    pub id: usize,
    pub peers: Vec<Sender<OwnedFrame>>,
    /// The other workers' counters, by worker id (a failed hand-off is counted at its owner).
    pub peer_stats: Vec<Arc<SharedStats>>,
    pub inbox: Receiver<OwnedFrame>,
    pub out: Sender<Output>,
    pub stats: Arc<SharedStats>,
    pub record: Option<Recorder>,
    pub record_dropped: u64,
    /// Frames processed by this engine, and the inbound hand-off losses already reported to it.
    pub received: u64,
    pub inbound_lost_seen: u64,
    /// With hand-off: this worker's frames and those handed to it, in receive-time order.
    pub reorder: Reorder,
    /// Symmetric RSS put both directions of every flow on this worker's queue: no hand-off.
    pub queue_owned: bool,
    /// Capture-completeness counters as last published (the metrics get the growth).
    pub capture_published: Vec<dataplane::engine::VantageCapture>,
}

impl EngineSink {
    fn publish(&mut self) {
        // Notes first: an event after them in time may need them.
        for n in self.engine.drain_path_notes() {
            if self.out.try_send(Output::Answered(n)).is_err() {
                self.stats.output_dropped.fetch_add(1, Relaxed);
            }
        }
        for e in self.engine.drain_events() {
            if self.out.try_send(Output::Event(Box::new(e))).is_err() {
                self.stats.output_dropped.fetch_add(1, Relaxed);
            }
        }
        for j in self.engine.drain_evidence() {
            if self.out.try_send(Output::Evidence(j)).is_err() {
                self.stats.output_dropped.fetch_add(1, Relaxed);
            }
        }
        let s: EngineStats = self.engine.stats();
        for (i, c) in s.anomalies.iter().enumerate() {
            self.stats.anomalies[i].store(*c, Relaxed);
        }
        self.stats.flows_active.store(s.flows_active, Relaxed);
        self.stats.flows_created.store(s.flows_created, Relaxed);
        for (i, c) in s.flows_evicted.iter().enumerate() {
            self.stats.flows_evicted[i].store(*c, Relaxed);
        }
        self.stats.evidence_suppressed.store(s.evidence_suppressed, Relaxed);
        self.stats.side_exhausted.store(s.side_exhausted, Relaxed);
        self.stats.side_reclaimed.store(s.side_reclaimed, Relaxed);
        self.stats.macs_overflowed.store(s.macs_overflowed, Relaxed);
        self.stats.engine_received.store(self.received, Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        self.stats.heartbeat_ns.store(now, Relaxed);
        if self.capture_published.len() < s.capture.len() {
            self.capture_published.resize(s.capture.len(), Default::default());
        }
        for (v, now) in s.capture.iter().enumerate() {
            let was = self.capture_published[v];
            if *now != was {
                let delta = dataplane::engine::VantageCapture {
                    ack_events: now.ack_events - was.ack_events,
                    ack_bytes: now.ack_bytes - was.ack_bytes,
                    gap_events: now.gap_events - was.gap_events,
                    gap_bytes: now.gap_bytes - was.gap_bytes,
                };
                crate::metrics::capture(&self.engine.cfg.vantages.name(v as u16), &delta);
                self.capture_published[v] = *now;
            }
        }
        let (rtts, zero_windows) = self.engine.drain_samples();
        for r in rtts {
            metrics::histogram!(crate::metrics::HANDSHAKE_RTT).record(r as f64 / 1e9);
        }
        for z in zero_windows {
            metrics::histogram!(crate::metrics::ZERO_WINDOW_DURATION).record(z as f64 / 1e9);
        }
    }
}

impl FrameSink for EngineSink {
    fn frame(&mut self, f: &RawFrame<'_>) {
        if self.peers.len() <= 1 || self.queue_owned {
            if let Some(r) = &mut self.record {
                r.push(f);
            }
            self.received += 1;
            self.engine.process_frame(f.data, f.orig_len, f.ts_ns, f.vantage, 0);
            return;
        }
        // Decoded once: the flow key picks the owner, and the owner's engine gets the packet.
        let Ok(p) = decode_in(f.data, f.orig_len, f.ts_ns, f.vantage, &self.engine.cfg.vantages)
        else {
            if let Some(r) = &mut self.record {
                r.push(f);
            }
            self.received += 1;
            return self.engine.process_frame(f.data, f.orig_len, f.ts_ns, f.vantage, 0);
        };
        let owner = dataplane::pipeline::shard_of(&p, self.peers.len());
        let len = f.data.len().min(dataplane::evidence::HIST_SNAP);
        let mut head = [0u8; dataplane::evidence::HIST_SNAP];
        head[..len].copy_from_slice(&f.data[..len]);
        let o = OwnedFrame { pkt: p, len: len as u8, head };
        if owner == self.id {
            // Held until the frames other workers hand over for the same time have arrived.
            self.reorder.push(o);
        } else {
            match self.peers[owner].try_send(o) {
                Ok(()) => self.stats.handed_off.fetch_add(1, Relaxed),
                Err(_) => {
                    // The owner's flow misses a frame: its engine is told (gap state) at its
                    // next batch.
                    self.peer_stats[owner].handoff_lost_inbound.fetch_add(1, Relaxed);
                    self.stats.handoff_dropped.fetch_add(1, Relaxed)
                }
            };
        }
    }

    fn capture_loss(&mut self, _vantage: u16, lost: u64, _now_ns: u64) {
        self.engine.capture_loss(lost);
    }

    fn batch_end(&mut self) {
        while let Ok(o) = self.inbox.try_recv() {
            self.reorder.push(o);
        }
        self.release(dataplane::worker::realtime_ns().saturating_sub(REORDER_WINDOW_NS));
        let lost = self.stats.handoff_lost_inbound.load(Relaxed);
        if lost > self.inbound_lost_seen {
            self.engine.capture_loss(lost - self.inbound_lost_seen);
            self.inbound_lost_seen = lost;
        }
        if let Some(r) = self.record.as_mut().filter(|r| r.cur.frames.len() >= RECORD_FLUSH_FRAMES)
        {
            self.record_dropped += r.flush();
        }
        self.publish();
    }

    fn tick(&mut self, now_ns: u64) {
        // With hand-off the engine runs REORDER_WINDOW_NS behind: its clock must not pass
        // frames still held.
        let now =
            if self.handing_off() { now_ns.saturating_sub(REORDER_WINDOW_NS) } else { now_ns };
        self.release(now);
        self.engine.tick(now);
        if let Some(r) = &mut self.record {
            self.record_dropped += r.flush();
        }
        self.publish();
    }

    fn finish(&mut self) {
        self.batch_end();
        self.release(u64::MAX);
        if let Some(r) = &mut self.record {
            self.record_dropped += r.flush();
        }
        self.engine.finish();
        self.publish();
    }
}

/// How long a worker that shares flows with others holds its frames before its engine sees
/// them: frames of one flow arrive on different queues (RSS is not symmetric) and reach the
/// owner through the hand-off later than its own queue's; holding every frame this long and
/// releasing them in receive-time order gives the engine each flow in receive-time order. An
/// idle worker checks its inbox every 10 ms; 50 ms was seen too short on a loaded two-CPU
/// machine (a SYN handed over after its RST had been released). Held frames are bounded by
/// `REORDER_MAX`; detections come this much later.
pub const REORDER_WINDOW_NS: u64 = 200_000_000;
/// Frames held at most; past it the oldest are released early (order may suffer, nothing is
/// lost).
const REORDER_MAX: usize = 1 << 18;

/// Frames waiting for their turn, oldest receive time first (ties in arrival order).
#[derive(Default)]
pub struct Reorder {
    heap: std::collections::BinaryHeap<std::cmp::Reverse<Held>>,
    seq: u64,
}

pub struct Held(u64, u64, OwnedFrame);

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        (self.0, self.1) == (o.0, o.1)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(o.0, o.1))
    }
}

impl Reorder {
    fn push(&mut self, o: OwnedFrame) {
        self.seq += 1;
        self.heap.push(std::cmp::Reverse(Held(o.pkt.ts_ns, self.seq, o)));
    }

    /// The oldest frame, if it was received at or before `until` (or too many are held).
    fn pop(&mut self, until: u64) -> Option<OwnedFrame> {
        let std::cmp::Reverse(Held(ts, _, _)) = self.heap.peek()?;
        if *ts <= until || self.heap.len() > REORDER_MAX {
            self.heap.pop().map(|std::cmp::Reverse(Held(_, _, o))| o)
        } else {
            None
        }
    }
}

impl EngineSink {
    fn handing_off(&self) -> bool {
        self.peers.len() > 1 && !self.queue_owned
    }

    /// Gives the engine every held frame received at or before `until`, oldest first.
    fn release(&mut self, until: u64) {
        while let Some(o) = self.reorder.pop(until) {
            // Recorded in the order the engine takes them, so an analysis of the recording
            // sees each flow as the run did (frames of one flow from different queues can
            // carry receive times out of wire order: software timestamps per queue). With
            // hand-off the recording keeps the first HIST_SNAP bytes of each frame.
            if let Some(r) = &mut self.record {
                let data = &o.head[..o.len as usize];
                r.push(&RawFrame {
                    data,
                    orig_len: o.pkt.orig_len,
                    ts_ns: o.pkt.ts_ns,
                    vantage: o.pkt.vantage,
                });
            }
            self.received += 1;
            self.engine.process(&o.pkt, &o.head[..o.len as usize], 0);
        }
    }
}

/// Where events go: the terminal (human lines or JSON), a JSON-lines file, and evidence files.
pub struct EventOutput {
    pub json_stdout: bool,
    pub events_file: Option<PathBuf>,
    pub vantages: dataplane::vantage::Vantages,
    pub retention: crate::retention::Retention,
    /// Rotate the events file past this size: FILE → FILE.1 → … → FILE.{keep}.
    pub rotate_bytes: u64,
    pub rotate_keep: u32,
}

/// Set on SIGHUP (by `run`): the events file is reopened at its path before the next event is
/// written, so it can be moved away (logrotate, an operator) without losing events.
pub static REOPEN_EVENTS: AtomicBool = AtomicBool::new(false);

/// The events file, rotated by size.
struct EventsFile {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    size: u64,
    max: u64,
    keep: u32,
}

impl EventsFile {
    fn open(path: PathBuf, max: u64, keep: u32) -> std::io::Result<Self> {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        let size = f.metadata()?.len();
        Ok(Self { path, out: std::io::BufWriter::new(f), size, max, keep })
    }

    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max {
            self.out.flush()?;
            for i in (1..self.keep).rev() {
                let _ = std::fs::rename(self.rotated(i), self.rotated(i + 1));
            }
            if self.keep > 0 {
                std::fs::rename(&self.path, self.rotated(1))?;
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.path)?;
            self.out = std::io::BufWriter::new(f);
            self.size = 0;
        }
        self.out.write_all(line)?;
        self.out.flush()?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// Opens the file at its path again (a new one if it was moved away).
    fn reopen(&mut self) -> std::io::Result<()> {
        *self = Self::open(self.path.clone(), self.max, self.keep)?;
        Ok(())
    }

    fn rotated(&self, i: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{i}"));
        PathBuf::from(p)
    }
}

/// How often a missing events file is tried again without a SIGHUP.
const EVENTS_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs until every sender is gone; returns (events, evidence written, evidence failed).
pub fn event_loop(
    rx: &Receiver<Output>,
    mut cfg: EventOutput,
    seen: &crate::api::EventStore,
) -> (u64, u64, u64) {
    let (rotate_bytes, rotate_keep) = (cfg.rotate_bytes, cfg.rotate_keep);
    let open = |p: &PathBuf| EventsFile::open(p.clone(), rotate_bytes, rotate_keep);
    let mut events_failing = Failing::new("events");
    let mut stdout_failing = Failing::new("stdout");
    let mut file = cfg.events_file.as_ref().and_then(|p| match open(p) {
        Ok(f) => Some(f),
        Err(e) => {
            events_failing.failed(&format_args!("cannot open {}: {e}", p.display()));
            None
        }
    });
    let mut next_try = std::time::Instant::now() + EVENTS_RETRY;
    let mut reopen_pending = false;
    let (mut events, mut written, mut failed) = (0u64, 0u64, 0u64);
    // Floods and scans become one event each: handshake failures wait up to the aggregate
    // window; the rest leave at once.
    let mut aggregator = dataplane::anomaly::aggregate::Aggregator::default();
    let mut ready: Vec<Event> = Vec::new();
    let mut last_event: Option<(u64, std::time::Instant)> = None;
    // Both the events and the evidence files draw pages: shared by the writer and the loop.
    let pages = std::cell::RefCell::new(crate::report::Pages::default());
    let mut write_event = |e: Event| {
        events += 1;
        pages.borrow_mut().event(&e);
        if let Some(path) = cfg.events_file.as_ref() {
            // A SIGHUP's reopen, or a file that could not be (re)opened before, tried again
            // every few seconds.
            let hup = REOPEN_EVENTS.swap(false, Relaxed);
            reopen_pending |= hup;
            if hup || ((reopen_pending || file.is_none()) && std::time::Instant::now() >= next_try)
            {
                next_try = std::time::Instant::now() + EVENTS_RETRY;
                let result = match file.as_mut() {
                    Some(f) => f.reopen(),
                    None => open(path).map(|f| file = Some(f)),
                };
                match result {
                    Ok(()) => {
                        if reopen_pending {
                            log::info!("events file {} reopened", path.display());
                        }
                        reopen_pending = false;
                    }
                    // Until then events go on to the file already open, if any.
                    Err(err) => events_failing
                        .failed(&format_args!("cannot open {}: {err}", path.display())),
                }
            }
            let mut line = serde_json::to_vec(&e).unwrap_or_default();
            line.push(b'\n');
            match file.as_mut().map(|f| f.write(&line)) {
                Some(Ok(())) if !reopen_pending => events_failing.ok(),
                Some(Ok(())) => {}
                Some(Err(err)) => {
                    events_failing.failed(&format_args!("writing {}: {err}", path.display()));
                }
                None => events_failing.failed(&format_args!(
                    "{} is not open; an event was not written",
                    path.display()
                )),
            }
        }
        if cfg.json_stdout {
            let mut out = std::io::stdout().lock();
            let written = serde_json::to_writer(&mut out, &e)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
                .and_then(|()| out.flush());
            match written {
                Ok(()) => stdout_failing.ok(),
                Err(err) => stdout_failing.failed(&format_args!("writing an event: {err}")),
            }
        } else if !e.kind.is_sensor_health() || e.kind == dataplane::anomaly::Kind::OneSided {
            print_event(&e);
        }
        if e.kind.is_aggregate() {
            metrics::counter!(crate::metrics::ANOMALIES, "kind" => e.kind.name()).increment(1);
        }
        seen.push(e);
    };
    loop {
        let o = match rx.recv_timeout(std::time::Duration::from_millis(500)) {
            Ok(o) => o,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                // Packet time moves on while no event comes: what has waited long enough leaves.
                if let Some((t, at)) = last_event {
                    let now = t.saturating_add(at.elapsed().as_nanos() as u64);
                    aggregator.advance(now, &mut ready);
                    ready.drain(..).for_each(&mut write_event);
                }
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        match o {
            Output::Event(e) => {
                last_event = Some((e.time_last_ns, std::time::Instant::now()));
                aggregator.push(*e, &mut ready);
                ready.drain(..).for_each(&mut write_event);
            }
            Output::Answered(n) => aggregator.note_answered(&n),
            Output::Evidence(job) => match job.write(&cfg.vantages.names()) {
                Ok(()) => {
                    written += 1;
                    metrics::counter!(crate::metrics::EVIDENCE_WRITTEN).increment(1);
                    pages.borrow_mut().evidence_written(&job.path);
                    cfg.retention.added(&job.path);
                }
                Err(err) => {
                    // A full or unwritable disk never stops monitoring.
                    failed += 1;
                    metrics::counter!(crate::metrics::EVIDENCE_FAILED).increment(1);
                    crate::retention::Retention::failed(&job.path);
                    log::warn!("evidence {} not written: {err}", job.path.display());
                }
            },
        }
    }
    aggregator.finish(&mut ready);
    ready.drain(..).for_each(&mut write_event);
    (events, written, failed)
}

pub fn print_event(e: &Event) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}  {:<24} {}:{} → {}:{}  [{}]\n    {}",
        e.time_last,
        e.kind.name(),
        e.flow.src,
        e.flow.sport,
        e.flow.dst,
        e.flow.dport,
        e.vantage,
        e.explanation
    );
    if let Some(ev) = &e.evidence {
        let _ = writeln!(
            out,
            "    evidence: {} (packet {})",
            ev.path,
            ev.packets.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
        );
    }
    let _ = out.flush();
}

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
pub fn read_driver_losses(
    queues: &[(&str, u32, &QueueCounters)],
    base: &mut [DriverBaseline],
    non_tcp_drop: bool,
) {
    for b in base.iter_mut() {
        let now = DriverDrops::read(&b.iface);
        b.now_iface = InterfaceDrops::read(&b.iface);
        let before_queues =
            b.now_iface.before_queues().saturating_sub(b.iface_drops.before_queues());
        for &(_, queue, c) in queues.iter().filter(|q| q.0 == b.iface) {
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
        queues: &[&QueueCounters],
        interfaces: &[DriverBaseline],
        workers: &[Arc<SharedStats>],
    ) -> Self {
        use dataplane_common::Outcome;
        let o = |x: Outcome| xdp.iter().map(|c| c.get(x)).sum::<u64>();
        let q = |f: &dyn Fn(&QueueCounters) -> &AtomicU64| {
            queues.iter().map(|c| f(c).load(Relaxed)).sum::<u64>()
        };
        let w = |f: &dyn Fn(&SharedStats) -> &AtomicU64| {
            workers.iter().map(|s| f(s).load(Relaxed)).sum::<u64>()
        };
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
            handoff_dropped: w(&|s| &s.handoff_dropped),
            engine_received: w(&|s| &s.engine_received),
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

/// Frames headed for the `--record` file: a worker copies each frame into a batch (one byte
/// buffer, one list of headers) and hands the batch to the writer at the end of its receive
/// batch; the writer sends emptied batches back for reuse. Nothing is allocated per frame and
/// the worker never waits: a batch the writer has no room for is dropped and counted.
#[derive(Default)]
pub struct RecordBatch {
    /// (vantage, receive time ns, length on the wire, offset in `data`, captured length)
    frames: Vec<(u16, u64, u32, u32, u32)>,
    data: Vec<u8>,
}

impl RecordBatch {
    fn clear(&mut self) {
        self.frames.clear();
        self.data.clear();
    }
}

/// Batches waiting for the writer at most (up to 1,024 frames each; a receive batch hands its
/// frames over from 256 on, a tick whatever waits).
pub const RECORD_QUEUE_BATCHES: usize = 256;
const RECORD_BATCH_FRAMES: usize = 1024;
/// A receive batch hands its frames to the writer once this many are waiting (or at the next
/// tick, 100 ms at most).
const RECORD_FLUSH_FRAMES: usize = 256;

/// A worker's end of the recorder.
pub struct Recorder {
    pub tx: Sender<RecordBatch>,
    pub free: Receiver<RecordBatch>,
    pub cur: RecordBatch,
    /// Frames of batches the writer had no room for, not yet reported by `flush`.
    pub dropped: u64,
}

impl Recorder {
    pub fn push(&mut self, f: &RawFrame<'_>) {
        let off = self.cur.data.len() as u32;
        self.cur.data.extend_from_slice(f.data);
        self.cur.frames.push((f.vantage, f.ts_ns, f.orig_len, off, f.data.len() as u32));
        if self.cur.frames.len() >= RECORD_BATCH_FRAMES {
            self.dropped += self.send();
        }
    }

    /// Hands the frames so far to the writer; returns the frames dropped since the last call.
    pub fn flush(&mut self) -> u64 {
        let n = self.send();
        n + std::mem::take(&mut self.dropped)
    }

    fn send(&mut self) -> u64 {
        if self.cur.frames.is_empty() {
            return 0;
        }
        let next = self.free.try_recv().unwrap_or_default();
        let full = std::mem::replace(&mut self.cur, next);
        match self.tx.try_send(full) {
            Ok(()) => 0,
            Err(e) => {
                let mut b = e.into_inner();
                let n = b.frames.len() as u64;
                b.clear();
                self.cur = b;
                metrics::counter!(crate::metrics::RECORD_DROPPED).increment(n);
                n
            }
        }
    }
}

/// The recorder thread: writes every batch through `recorder` (pcapng, one interface per
/// vantage in `--iface` order, rotated by size) and sends the emptied batches back for reuse;
/// returns the frames written and those it could not write.
pub fn write_record(
    rx: &Receiver<RecordBatch>,
    free: &Sender<RecordBatch>,
    mut recorder: crate::record::Recorder,
) -> (u64, u64) {
    for mut b in rx {
        for &(vantage, ts_ns, orig_len, off, len) in &b.frames {
            let data = &b.data[off as usize..(off + len) as usize];
            recorder.write(&crate::record::RecordFrame { vantage, ts_ns, orig_len, data });
        }
        b.clear();
        let _ = free.try_send(b);
    }
    recorder.flush();
    (recorder.recorded, recorder.dropped)
}

#[cfg(test)]
mod tests {
    use super::EventsFile;

    #[test]
    fn events_file_rotates_by_size_and_keeps_n() {
        let dir = std::env::temp_dir().join(format!("ww-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("events.jsonl");
        let mut f = EventsFile::open(p.clone(), 250, 2).unwrap();
        for i in 0..7u8 {
            f.write(&[b'0' + i; 100]).unwrap();
        }
        // 7 lines of 100 B, 2 per file: the live file holds line 6, .1 lines 4–5, .2 lines 2–3;
        // lines 0–1 were rotated out.
        assert_eq!(std::fs::read(&p).unwrap(), vec![b'6'; 100]);
        assert_eq!(std::fs::read(dir.join("events.jsonl.1")).unwrap().len(), 200);
        assert_eq!(std::fs::read(dir.join("events.jsonl.2")).unwrap()[0], b'2');
        assert!(!dir.join("events.jsonl.3").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_reopened_events_file_follows_its_path() {
        let dir = std::env::temp_dir().join(format!("ww-reopen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("events.jsonl");
        let mut f = EventsFile::open(p.clone(), 1 << 20, 2).unwrap();
        f.write(b"before\n").unwrap();
        std::fs::rename(&p, dir.join("moved")).unwrap();
        f.reopen().unwrap();
        f.write(b"after\n").unwrap();
        assert_eq!(std::fs::read(dir.join("moved")).unwrap(), b"before\n");
        assert_eq!(std::fs::read(&p).unwrap(), b"after\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
