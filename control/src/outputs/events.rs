//! The event thread: events to the terminal (human lines or JSON) and a JSON-lines file
//! rotated by size, floods and scans folded into one event each, evidence files written and
//! handed to retention.
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;

use crossbeam_channel::Receiver;
use dataplane::anomaly::Event;
use dataplane::evidence::EvidenceJob;

use crate::outputs::failing::Failing;

/// What the workers send the event thread.
pub enum Output {
    Event(Box<Event>),
    Evidence(EvidenceJob),
    /// A handshake answered at a vantage (a few a second): for `service_blackhole`.
    Answered(dataplane::anomaly::setup::PathNote),
}

/// Where events go: the terminal (human lines or JSON), a JSON-lines file, and evidence files.
pub struct EventOutput {
    pub json_stdout: bool,
    pub events_file: Option<PathBuf>,
    pub vantages: dataplane::vantage::Vantages,
    pub retention: crate::outputs::evidence::Retention,
    /// Rotate the events file past this size: FILE → FILE.1 → … → FILE.{keep}.
    pub rotate_bytes: u64,
    pub rotate_keep: u32,
}

/// Set on SIGHUP (by `live::signals`): the events file is reopened at its path before the next event is
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
    seen: &crate::export::api::EventStore,
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
    let pages = std::cell::RefCell::new(crate::outputs::report::Pages::default());
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
            crate::export::metrics::aggregate_event(e.kind);
        }
        seen.push(e);
    };
    loop {
        // Pages drawn since (by events or evidence files) count against the evidence's size
        // limit with their files.
        for path in pages.borrow_mut().take_drawn() {
            cfg.retention.page_drawn(&path);
        }
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
            Output::Evidence(job) => {
                if cfg.retention.write(&job, &cfg.vantages.names()) {
                    written += 1;
                    pages.borrow_mut().evidence_written(&job.path);
                } else {
                    failed += 1;
                }
            }
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
