//! The live path behind `run`: attaching, the engine behind each worker (flow ownership
//! across workers, the hand-off), signals, and the accounting of every frame.
pub mod attach;
pub mod caps;
pub mod host_iface;
pub mod signals;
pub mod summary;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use dataplane::engine::{Engine, EngineStats};
use dataplane::packet::decode_in;
use dataplane::worker::{realtime_ns, FrameSink, RawFrame};

use crate::outputs::events::Output;
use crate::outputs::recorder::RecordSender;
use crate::stats::SharedStats;

/// A frame handed to the worker that owns its flow: the decoded packet and the header bytes
/// the evidence history keeps, by value (no allocation, no second decode).
pub struct OwnedFrame {
    pkt: dataplane::packet::TcpPacket,
    len: u16,
    head: [u8; dataplane::evidence::FRAME_KEEP],
}

pub struct EngineSink {
    engine: Engine,
    id: usize,
    peers: Vec<Sender<OwnedFrame>>,
    /// The other workers' counters, by worker id (a failed hand-off is counted at its owner).
    peer_stats: Vec<Arc<SharedStats>>,
    inbox: Receiver<OwnedFrame>,
    out: Sender<Output>,
    stats: Arc<SharedStats>,
    record: Option<RecordSender>,
    pub record_dropped: u64,
    /// Frames processed by this engine, and the inbound hand-off losses already reported to it.
    received: u64,
    inbound_lost_seen: u64,
    /// With hand-off: this worker's frames and those handed to it, in receive-time order.
    reorder: Reorder,
    /// Symmetric RSS put both directions of every flow on this worker's queue: no hand-off.
    queue_owned: bool,
    /// Capture-completeness counters as last published (the metrics get the growth).
    capture_published: Vec<dataplane::engine::VantageCapture>,
}

/// What one worker's engine is connected to.
pub struct SinkWiring {
    /// Every worker's inbox, by worker id (frames of a flow another worker owns go there).
    pub peers: Vec<Sender<OwnedFrame>>,
    pub peer_stats: Vec<Arc<SharedStats>>,
    pub out: Sender<Output>,
    /// Symmetric RSS put both directions of every flow on each worker's queue: no hand-off.
    pub queue_owned: bool,
}

impl EngineSink {
    pub fn new(
        engine: Engine,
        id: usize,
        inbox: Receiver<OwnedFrame>,
        record: Option<RecordSender>,
        wiring: &SinkWiring,
    ) -> Self {
        Self {
            engine,
            id,
            peers: wiring.peers.clone(),
            peer_stats: wiring.peer_stats.clone(),
            inbox,
            out: wiring.out.clone(),
            stats: wiring.peer_stats[id].clone(),
            record,
            record_dropped: 0,
            received: 0,
            inbound_lost_seen: 0,
            reorder: Reorder::default(),
            queue_owned: wiring.queue_owned,
            capture_published: Vec::new(),
        }
    }

    fn publish(&mut self) {
        // Notes first: an event after them in time may need them.
        for n in self.engine.drain_path_notes() {
            if self.out.try_send(Output::Answered(n)).is_err() {
                self.stats.output_dropped.fetch_add(1, Relaxed);
            }
        }
        for e in self.engine.drain_events_for_aggregation() {
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
        self.stats.heartbeat_ns.store(realtime_ns(), Relaxed);
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
                crate::export::metrics::capture(&self.engine.cfg.vantages.name(v as u16), &delta);
                self.capture_published[v] = *now;
            }
        }
        let (rtts, zero_windows) = self.engine.drain_samples();
        for r in rtts {
            crate::export::metrics::handshake_rtt(r);
        }
        for z in zero_windows {
            crate::export::metrics::zero_window_duration(z);
        }
    }

    /// Every flow this worker's queue brings is its own (one worker, or a queue of its own):
    /// nothing is handed to another worker.
    fn owns_every_flow(&self) -> bool {
        self.peers.len() <= 1 || self.queue_owned
    }
}

impl FrameSink for EngineSink {
    fn frames(&mut self, fs: &[RawFrame<'_>]) {
        if !self.owns_every_flow() {
            for f in fs {
                self.frame(f);
            }
            return;
        }
        // This worker owns every flow its queue brings: the lot in one batch.
        if let Some(r) = &mut self.record {
            for f in fs {
                r.push(f);
            }
        }
        self.received += fs.len() as u64;
        self.engine.process_frames(fs, 0);
    }

    fn frame(&mut self, f: &RawFrame<'_>) {
        if self.owns_every_flow() {
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
        let len = dataplane::evidence::keep_len(Some(&p), f.data);
        let mut head = [0u8; dataplane::evidence::FRAME_KEEP];
        head[..len].copy_from_slice(&f.data[..len]);
        let o = OwnedFrame { pkt: p, len: len as u16, head };
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
        self.release(realtime_ns().saturating_sub(REORDER_WINDOW_NS));
        let lost = self.stats.handoff_lost_inbound.load(Relaxed);
        if lost > self.inbound_lost_seen {
            self.engine.capture_loss(lost - self.inbound_lost_seen);
            self.inbound_lost_seen = lost;
        }
        if let Some(r) = self.record.as_mut().filter(|r| r.wants_flush()) {
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
struct Reorder {
    heap: std::collections::BinaryHeap<std::cmp::Reverse<Held>>,
    seq: u64,
}

struct Held(u64, u64, OwnedFrame);

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
            // hand-off the recording keeps what the history may need of each frame
            // (`evidence::keep_len`).
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
