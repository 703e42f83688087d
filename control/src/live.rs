//! The engine behind the live workers: flow ownership across workers, and the control thread
//! that prints events, writes them as JSON lines and writes evidence files.
use std::{
    io::Write,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use dataplane::{
    anomaly::{Event, KIND_COUNT},
    engine::{Engine, EngineStats},
    evidence::EvidenceJob,
    flow::FlowKey,
    packet::decode,
    worker::{FrameSink, RawFrame},
};

/// A frame handed to the worker that owns its flow.
pub struct OwnedFrame {
    data: Vec<u8>,
    orig_len: u32,
    ts_ns: u64,
    vantage: u16,
}

pub enum Output {
    Event(Box<Event>),
    Evidence(EvidenceJob),
}

/// One worker's counters, shared with the control plane (written by that worker only).
#[derive(Default)]
pub struct SharedStats {
    pub anomalies: [AtomicU64; KIND_COUNT],
    pub handed_off: AtomicU64,
    pub handoff_dropped: AtomicU64,
    pub output_dropped: AtomicU64,
    pub flows_active: AtomicU64,
    pub flows_created: AtomicU64,
    pub flows_evicted: [AtomicU64; 4],
    pub evidence_suppressed: AtomicU64,
}

pub struct EngineSink {
    pub engine: Engine,
    pub id: usize,
    pub peers: Vec<Sender<OwnedFrame>>,
    pub inbox: Receiver<OwnedFrame>,
    pub out: Sender<Output>,
    pub stats: Arc<SharedStats>,
    pub record: Option<Sender<crate::run::RecordFrame>>,
    pub record_dropped: u64,
}

impl EngineSink {
    fn owner(&self, f: &RawFrame<'_>) -> usize {
        if self.peers.len() <= 1 {
            return self.id;
        }
        match decode(f.data, f.orig_len, f.ts_ns, f.vantage) {
            Ok(p) => (FlowKey::of(&p).0.shard_hash() % self.peers.len() as u64) as usize,
            Err(_) => self.id,
        }
    }

    fn publish(&mut self) {
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
        if let Some(tx) = &self.record {
            let r = crate::run::RecordFrame { vantage: f.vantage, ts_ns: f.ts_ns, orig_len: f.orig_len, data: f.data.to_vec() };
            if let Err(TrySendError::Full(_)) = tx.try_send(r) {
                self.record_dropped += 1;
            }
        }
        let owner = self.owner(f);
        if owner == self.id {
            self.engine.process_frame(f.data, f.orig_len, f.ts_ns, f.vantage, 0);
        } else {
            let o = OwnedFrame { data: f.data.to_vec(), orig_len: f.orig_len, ts_ns: f.ts_ns, vantage: f.vantage };
            match self.peers[owner].try_send(o) {
                Ok(()) => self.stats.handed_off.fetch_add(1, Relaxed),
                Err(_) => self.stats.handoff_dropped.fetch_add(1, Relaxed),
            };
        }
    }

    fn capture_loss(&mut self, _vantage: u16, lost: u64, _now_ns: u64) {
        self.engine.capture_loss(lost);
    }

    fn batch_end(&mut self) {
        while let Ok(o) = self.inbox.try_recv() {
            self.engine.process_frame(&o.data, o.orig_len, o.ts_ns, o.vantage, 0);
        }
        self.publish();
    }

    fn tick(&mut self, now_ns: u64) {
        self.engine.tick(now_ns);
        self.publish();
    }

    fn finish(&mut self) {
        self.batch_end();
        self.engine.finish();
        self.publish();
    }
}

/// Where events go: the terminal (human lines or JSON), a JSON-lines file, and evidence files.
pub struct EventOutput {
    pub json_stdout: bool,
    pub events_file: Option<PathBuf>,
    pub vantage_names: Vec<String>,
    pub retention: crate::retention::Retention,
}

/// Runs until every sender is gone; returns (events, evidence written, evidence failed).
pub fn event_loop(rx: Receiver<Output>, mut cfg: EventOutput, seen: Arc<crate::api::EventStore>) -> (u64, u64, u64) {
    let mut file = cfg.events_file.as_ref().and_then(|p| match std::fs::OpenOptions::new().create(true).append(true).open(p) {
        Ok(f) => Some(std::io::BufWriter::new(f)),
        Err(e) => {
            log::error!("cannot open {} for events: {e}; events go to the terminal only", p.display());
            None
        }
    });
    let (mut events, mut written, mut failed) = (0u64, 0u64, 0u64);
    for o in rx {
        match o {
            Output::Event(e) => {
                events += 1;
                if let Some(f) = file.as_mut() {
                    let _ = serde_json::to_writer(&mut *f, &*e);
                    let _ = f.write_all(b"\n");
                    let _ = f.flush();
                }
                if cfg.json_stdout {
                    println!("{}", serde_json::to_string(&*e).unwrap_or_default());
                } else if !e.kind.is_sensor_health() || e.kind == dataplane::anomaly::Kind::OneSided {
                    print_event(&e);
                }
                seen.push(*e);
            }
            Output::Evidence(job) => match job.write(&cfg.vantage_names) {
                Ok(()) => {
                    written += 1;
                    metrics::counter!(crate::metrics::EVIDENCE_WRITTEN).increment(1);
                    cfg.retention.added(&job.path);
                }
                Err(err) => {
                    // A full or unwritable disk never stops monitoring.
                    failed += 1;
                    metrics::counter!(crate::metrics::EVIDENCE_FAILED).increment(1);
                    log::warn!("evidence {} not written: {err}", job.path.display());
                }
            },
        }
    }
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
        let _ = writeln!(out, "    evidence: {} (packet {})", ev.path, ev.packets.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","));
    }
    let _ = out.flush();
}
