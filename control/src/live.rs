//! The engine behind the live workers: flow ownership across workers, and the control thread
//! that prints events, writes them as JSON lines and writes evidence files.
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use dataplane::anomaly::{Event, KIND_COUNT};
use dataplane::engine::{Engine, EngineStats};
use dataplane::evidence::EvidenceJob;
use dataplane::packet::decode;
use dataplane::worker::{FrameSink, RawFrame};

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
    pub inbox: Receiver<OwnedFrame>,
    pub out: Sender<Output>,
    pub stats: Arc<SharedStats>,
    pub record: Option<Sender<crate::run::RecordFrame>>,
    pub record_dropped: u64,
    /// Symmetric RSS put both directions of every flow on this worker's queue: no hand-off.
    pub queue_owned: bool,
    /// Capture-completeness counters as last published (the metrics get the growth).
    pub capture_published: Vec<dataplane::engine::VantageCapture>,
}

impl EngineSink {
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
        self.stats.side_exhausted.store(s.side_exhausted, Relaxed);
        self.stats.side_reclaimed.store(s.side_reclaimed, Relaxed);
        self.stats.macs_overflowed.store(s.macs_overflowed, Relaxed);
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
                let name = self.engine.cfg.vantage_names.get(v).map_or("unknown", String::as_str);
                crate::metrics::capture(name, &delta);
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
        if let Some(tx) = &self.record {
            let r = crate::run::RecordFrame {
                vantage: f.vantage,
                ts_ns: f.ts_ns,
                orig_len: f.orig_len,
                data: f.data.to_vec(),
            };
            if let Err(TrySendError::Full(_)) = tx.try_send(r) {
                self.record_dropped += 1;
                metrics::counter!(crate::metrics::RECORD_DROPPED).increment(1);
            }
        }
        if self.peers.len() <= 1 || self.queue_owned {
            self.engine.process_frame(f.data, f.orig_len, f.ts_ns, f.vantage, 0);
            return;
        }
        // Decoded once: the flow key picks the owner, and the owner's engine gets the packet.
        let Ok(p) = decode(f.data, f.orig_len, f.ts_ns, f.vantage) else {
            return self.engine.process_frame(f.data, f.orig_len, f.ts_ns, f.vantage, 0);
        };
        let owner = dataplane::pipeline::shard_of(&p, self.peers.len());
        if owner == self.id {
            self.engine.process(&p, f.data, 0);
        } else {
            let len = f.data.len().min(dataplane::evidence::HIST_SNAP);
            let mut head = [0u8; dataplane::evidence::HIST_SNAP];
            head[..len].copy_from_slice(&f.data[..len]);
            let o = OwnedFrame { pkt: p, len: len as u8, head };
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
            self.engine.process(&o.pkt, &o.head[..o.len as usize], 0);
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

/// A run of failed writes to one output: counted every time, logged when it starts, every
/// minute while it lasts, and when the output works again (not once per event).
pub struct Failing {
    output: &'static str,
    since: Option<(std::time::Instant, u64)>,
}

impl Failing {
    pub fn new(output: &'static str) -> Self {
        Self { output, since: None }
    }

    pub fn failed(&mut self, what: &dyn std::fmt::Display) {
        metrics::counter!(crate::metrics::OUTPUT_FAILED, "output" => self.output).increment(1);
        match &mut self.since {
            Some((t, n)) if t.elapsed() < std::time::Duration::from_mins(1) => *n += 1,
            Some((t, n)) => {
                log::error!(
                    "{} output still failing ({} more failed write(s)): {what}",
                    self.output,
                    *n + 1
                );
                *t = std::time::Instant::now();
                *n = 0;
            }
            None => {
                log::error!(
                    "{} output failed: {what}; monitoring goes on, failures are counted in {}{{output=\"{}\"}}",
                    self.output,
                    crate::metrics::OUTPUT_FAILED,
                    self.output
                );
                self.since = Some((std::time::Instant::now(), 0));
            }
        }
    }

    pub fn ok(&mut self) {
        if self.since.take().is_some() {
            log::info!("{} output works again", self.output);
        }
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
    let mut write_event = |e: Event| {
        events += 1;
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
