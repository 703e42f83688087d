//! `wirewatch analyze`: the live engine over capture files. Each file is a vantage (and so
//! is each remote-mirror session inside one); frames are merged by timestamp, sharded by flow
//! over worker threads, and the packets' own timestamps are the clock.
use std::collections::binary_heap::{BinaryHeap, PeekMut};
use std::io::{IsTerminal, Write};
use std::net::IpAddr;

use anyhow::{Context as _, Result};
use crossbeam_channel::bounded;
use dataplane::anomaly::setup::PathNote;
use dataplane::anomaly::{Event, Kind, KIND_COUNT};
use dataplane::capture::CaptureError;
use dataplane::engine::{Engine, EngineConfig, EngineStats, Feed};
use dataplane::pipeline::shard_of;

use crate::cli::analyze::{AnalyzeArgs, Format};
use crate::cli::Usage;
use crate::sources::{InputHealth, Ready, Source, KEEP};

/// Analysis failed because an input is unreadable or corrupt (exit status 3).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BadInput(#[from] pub CaptureError);

/// Every input was analysed, but at least one ended inside a record (exit status 4): the
/// summary covers the complete records before each cut, which the warnings name.
#[derive(Debug, thiserror::Error)]
#[error("{files} input file(s) cut short: the results cover every complete record before the cut")]
pub struct Damaged {
    pub files: usize,
}

/// Frames for one worker: their first bytes back to back (the engine keeps headers only) and
/// what the reader decoded. Batches go back to the reader once processed, so reading
/// allocates nothing per frame.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    frames: Vec<BatchFrame>,
    /// The merged input's time when the batch was sent (0: not known).
    watermark_ns: u64,
}

/// Frames read between two watermarks sent to every worker.
const WATERMARK_EVERY: u64 = 1 << 16;

/// What a batch entry is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    Frame,
    /// Only carries the watermark.
    Watermark,
    /// The vantage's time went back to `to_ns` (a time jump): flows of that vantage start
    /// over, in the capture-gap state.
    TimeJump {
        from_ns: u64,
        to_ns: u64,
    },
}

struct BatchFrame {
    mark: Mark,
    /// Decoded by the reader (it needs the flow key to shard), or why not.
    pkt: Result<dataplane::packet::TcpPacket, dataplane_common::Outcome>,
    start: u32,
    len: u32,
    vantage: u16,
    frame_no: u64,
    /// Vantages expected to see it (several files only; learned from every packet in order).
    expected: u128,
}

/// Frames a batch holds before it is sent.
const BATCH: usize = 256;
/// A worker whose batches find nothing still tells the events writer its time every this many
/// batches (events of the other workers wait for it)...
const WATERMARK_BATCHES: u32 = 16;
/// ...and whenever its time moved this far (packet time) since it last did: the writer's
/// aggregator ends a flood or scan only when told time went on (a quiet gap between two
/// floods on one service must end the first).
const WATERMARK_STEP_NS: u64 = 100_000_000;
/// When a worker's queue is full, the reader sleeps until the worker has taken half of it:
/// blocking on each send woke both threads once a batch.
const REFILL_PAUSE: std::time::Duration = std::time::Duration::from_micros(500);

/// The next frame of a file, ordered by time (then by file) for the k-way merge; the frame
/// itself waits in that file's slot.
#[derive(PartialEq, Eq)]
struct Head {
    ts_ns: u64,
    vantage: u16,
}
impl PartialOrd for Head {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Head {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.ts_ns, o.vantage).cmp(&(self.ts_ns, self.vantage))
    }
}

struct WorkerResult {
    verdicts: Vec<(u16, u64, u32)>,
    stats: EngineStats,
    evidence_written: u64,
    evidence_failed: u64,
}

/// One engine on its thread, and what it hands on: events to the writer thread, evidence
/// files, verdicts.
struct Worker {
    w: usize,
    e: Engine,
    to_sink: crossbeam_channel::Sender<SinkMsg>,
    names: Vec<String>,
    verdicts: Vec<(u16, u64, u32)>,
    written: u64,
    failed: u64,
    /// The time of the last packet or time jump, or the last watermark, whichever is later.
    last_ts: u64,
    /// Batches since the last message to the events writer, and the time that message gave.
    quiet_batches: u32,
    sent_watermark: u64,
}

impl Worker {
    fn new(
        cfg: EngineConfig,
        w: usize,
        to_sink: crossbeam_channel::Sender<SinkMsg>,
        names: Vec<String>,
    ) -> Self {
        Self {
            w,
            e: Engine::new(cfg, w),
            to_sink,
            names,
            verdicts: Vec::new(),
            written: 0,
            failed: 0,
            last_ts: 0,
            quiet_batches: 0,
            sent_watermark: 0,
        }
    }

    fn batch(&mut self, batch: &Batch) {
        let bytes = &batch.bytes;
        let w = self.w;
        self.e.process_batch(
            &batch.frames,
            |f| {
                let (Mark::Frame, Ok(pkt)) = (&f.mark, &f.pkt) else { return None };
                Some(Feed {
                    pkt,
                    raw: &bytes[f.start as usize..(f.start + f.len) as usize],
                    // Frame numbers carry the vantage in their top 16 bits inside the engine.
                    frame_no: (f.vantage as u64) << 48 | f.frame_no,
                    expected: f.expected,
                })
            },
            |e, f| match (f.mark, &f.pkt) {
                (Mark::TimeJump { from_ns, to_ns }, _) => {
                    e.time_jump(f.vantage, from_ns, to_ns, w == 0);
                }
                (Mark::Frame, Err(o)) => e.undecodable(*o),
                _ => {}
            },
        );
        // The time of the batch's last packet or time jump, whichever came last.
        if let Some(t) = batch.frames.iter().rev().find_map(|f| match (f.mark, &f.pkt) {
            (Mark::TimeJump { to_ns, .. }, _) => Some(to_ns),
            (Mark::Frame, Ok(p)) => Some(p.ts_ns),
            _ => None,
        }) {
            self.last_ts = t;
        }
        // The merged input's time: deadlines before it fire now (one below it, so a packet at
        // exactly that time, still on its way, counts first).
        if batch.watermark_ns > 0 {
            self.e.tick(batch.watermark_ns - 1);
            self.last_ts = self.last_ts.max(batch.watermark_ns - 1);
        }
        self.flush(self.last_ts);
    }

    /// Events leave as they happen, with the time no later event of this worker can precede
    /// (see EventOrder); evidence files are written. A batch that found nothing sends no
    /// message, unless [`WATERMARK_BATCHES`] went by or the time moved [`WATERMARK_STEP_NS`]
    /// since the last (the other workers' events and the aggregates' ends wait for this
    /// worker's time), or this is the end (`u64::MAX`): a message per batch kept the writer
    /// thread waking, and spinning, for nothing.
    fn flush(&mut self, watermark: u64) {
        let events = self.e.drain_events_for_aggregation();
        let notes = self.e.drain_path_notes();
        self.quiet_batches += 1;
        if !events.is_empty()
            || !notes.is_empty()
            || self.quiet_batches >= WATERMARK_BATCHES
            || watermark.saturating_sub(self.sent_watermark) >= WATERMARK_STEP_NS
            || watermark == u64::MAX
        {
            self.quiet_batches = 0;
            self.sent_watermark = watermark;
            let _ = self.to_sink.send(SinkMsg::Events { worker: self.w, watermark, events, notes });
        }
        self.verdicts.extend(
            self.e
                .drain_verdicts()
                .into_iter()
                .map(|(n, v)| ((n >> 48) as u16, n & 0xffff_ffff_ffff, v)),
        );
        for job in self.e.drain_evidence() {
            match job.write(&self.names) {
                Ok(()) => self.written += 1,
                Err(err) => {
                    self.failed += 1;
                    log::warn!("evidence {}: {err}", job.path.display());
                }
            }
        }
    }

    /// End of input at `end_ns`, the whole input's last time: every worker's clock ends there,
    /// so deadlines after its own last packet still fire.
    fn finish(mut self, end_ns: u64) -> WorkerResult {
        self.e.tick(self.last_ts.max(end_ns));
        self.e.finish();
        self.flush(u64::MAX);
        WorkerResult {
            verdicts: self.verdicts,
            stats: self.e.stats(),
            evidence_written: self.written,
            evidence_failed: self.failed,
        }
    }
}

#[expect(clippy::needless_pass_by_value, reason = "the command owns its parsed arguments")]
pub fn analyze(args: AnalyzeArgs) -> Result<()> {
    // Output paths first: a typo must not cost a whole analysis.
    for (flag, path) in [("--events", &args.events), ("--verdicts", &args.verdicts)] {
        if let Some(path) = path {
            crate::cli::options::output_file(flag, path).map_err(Usage)?;
        }
    }
    if args.files.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
        return Err(Usage(
            "`-` (standard input) given more than once: it can be read only once".into(),
        )
        .into());
    }
    let vantages = crate::vantages::group(&args.files, &args.vantage).map_err(|e| match e {
        crate::vantages::GroupError::Usage(m) => anyhow::Error::from(Usage(m)),
        crate::vantages::GroupError::Capture(c) => BadInput(c).into(),
    })?;
    let names: Vec<String> = vantages.iter().map(|v| v.name.clone()).collect();
    // The inputs, and the mirror sessions found in them (numbered in reading order: the same
    // in the first pass and in the analysis, at any worker count).
    let vantage_set = dataplane::vantage::Vantages::new(names.clone());
    let mut sources = Vec::new();
    let filter = args.filter.clone().map(std::sync::Arc::new);
    for (v, input) in vantages.iter().enumerate() {
        let mut src = Source::open_chain(&input.files, names[v].clone(), v as u16, &vantage_set)
            .map_err(BadInput)?;
        src.filter.clone_from(&filter);
        sources.push(src);
    }
    let workers = args
        .workers
        .unwrap_or_else(|| {
            std::thread::available_parallelism().map(std::num::NonZero::get).unwrap_or(1)
        })
        .clamp(1, 64);
    // A report draws evidence: kept beside it unless kept elsewhere.
    let evidence_dir = args.evidence_dir.clone().or_else(|| args.report.clone());
    let mut cfg = EngineConfig {
        evidence_dir: evidence_dir.clone(),
        vantages: vantage_set.clone(),
        record_verdicts: args.verdicts.is_some(),
        ..Default::default()
    };
    if evidence_dir.is_none() {
        // The history only serves evidence: without it, no frame is copied, and its 64 MiB
        // are never touched.
        cfg.history_bytes = 0;
        for s in &mut sources {
            s.keep_frames(false);
        }
    }
    args.thresholds.apply(&mut cfg);
    if names.len() > 1 {
        let serial = crate::vantages::serial_indices(&args.serial, &names)?;
        if vantages.iter().flat_map(|v| &v.files).any(|p| p.as_os_str() == "-") {
            // Standard input can be read once: the relations are learned as it is analysed
            // (the --serial pairs are given).
            let mut relations = dataplane::vantage::VantageRelations::default();
            for &(a, b) in &serial {
                relations.force_serial(a, b);
            }
            cfg.vantage_relations = relations;
            cfg.learn_vantage_relations = true;
        } else {
            let first =
                crate::vantages::first_pass(&vantages, &serial, &vantage_set).map_err(BadInput)?;
            cfg.vantage_relations = first.relations;
            // Learned from the whole input: every worker judges with the same answer.
            // Otherwise the rest of the input may still judge pairs the start left undecided.
            cfg.learn_vantage_relations = !first.complete;
            cfg.vantage_ranges = first.ranges;
            // Each vantage's clock is brought to the first one's before matching.
            for (src, &o) in sources.iter_mut().zip(&first.offsets) {
                src.shift_ns = o;
            }
        }
    } else if !args.serial.is_empty() {
        anyhow::bail!("--serial relates two capture files; only one was given");
    }
    let relations_cfg = cfg.vantage_relations.clone();
    args.event_fields.apply(&mut cfg);
    // One evidence budget for all workers: the files written do not depend on --workers.
    cfg.evidence_per_sec = args.evidence_rate;
    cfg.evidence_budget = Some(dataplane::budget::EvidenceBudget::new(cfg.evidence_per_sec));
    if let Some(d) = &evidence_dir {
        std::fs::create_dir_all(d)
            .with_context(|| format!("creating the evidence directory {}", d.display()))?;
    }
    // Before the analysis: a report directory that cannot be made must not cost it.
    if let Some(d) = &args.report {
        std::fs::create_dir_all(d)
            .with_context(|| format!("creating the report directory {}", d.display()))?;
    }

    // The whole input's last packet time: every worker's clock ends there, so deadlines after
    // its own last packet still fire (the same answer at any worker count).
    let end_ns = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (free_tx, free_rx) = bounded::<Batch>(workers * 72);
    // Events go to one writer thread as the workers produce them; only the few that may still
    // be overtaken wait (bounded by the lateness below), never the whole run's.
    let events_out: Option<Box<dyn Write + Send>> = match &args.events {
        None => None,
        Some(path) if path.as_os_str() == "-" => {
            Some(Box::new(std::io::BufWriter::new(std::io::stdout())))
        }
        Some(path) => Some(Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("creating the events file {}", path.display()))?,
        ))),
    };
    let (to_sink, sink_rx) = bounded::<SinkMsg>(workers * 64);
    let reporting = args.report.is_some();
    // With one vantage no event can precede its worker's watermark; across vantages a packet
    // is reported missing only when its wait (the vantage window, and for an opening SYN the
    // wait for an answer) ends, checked every 10 ms.
    // A mirror session inside an input makes a second vantage when the reader meets it: the
    // lateness is chosen as each batch of events arrives.
    let lateness = Lateness {
        vantages: vantage_set.clone(),
        across: cfg
            .vantage_window_ns
            .saturating_add(dataplane::anomaly::paths::OPENING_WAIT_NS)
            .saturating_add(50_000_000),
    };
    let sink = std::thread::Builder::new()
        .name("ww-analyze-events".into())
        .spawn(move || EventOrder::new(workers, lateness, events_out, reporting).run(sink_rx))?;
    let mut senders = Vec::new();
    let mut handles = Vec::new();
    for w in 0..workers {
        let (cfg, to_sink, names) = (cfg.per_worker(workers), to_sink.clone(), names.clone());
        let end_ns = end_ns.clone();
        let (tx, rx) = bounded::<Batch>(64);
        let free_tx = free_tx.clone();
        senders.push(tx);
        handles.push(std::thread::Builder::new().name(format!("ww-analyze-{w}")).spawn(
            move || {
                // Made on its own thread: its tables are that thread's memory.
                let mut worker = Worker::new(cfg, w, to_sink, names);
                for mut batch in rx {
                    worker.batch(&batch);
                    batch.bytes.clear();
                    batch.frames.clear();
                    let _ = free_tx.try_send(batch);
                }
                worker.finish(end_ns.load(std::sync::atomic::Ordering::Acquire))
            },
        )?);
    }

    // Read and merge; shard by flow. Each file's next frame waits in its slot.
    drop(free_tx);
    let mut heap = BinaryHeap::new();
    let mut slots: Vec<Option<Box<Ready>>> = (0..sources.len()).map(|_| None).collect();
    for (v, src) in sources.iter_mut().enumerate() {
        if let Some(r) = src.next().map_err(BadInput)? {
            heap.push(Head { ts_ns: r.ts_ns, vantage: v as u16 });
            slots[v] = Some(r);
        }
    }
    let progress_on = std::io::stderr().is_terminal();
    let mut progress = Progress::new(sources.iter().map(|s| s.size).sum());
    let new_batch = |free: &crossbeam_channel::Receiver<Batch>| {
        let mut b = free.try_recv().unwrap_or_else(|_| Batch {
            bytes: Vec::with_capacity(BATCH * KEEP),
            frames: Vec::with_capacity(BATCH),
            watermark_ns: 0,
        });
        b.watermark_ns = 0;
        b
    };
    let mut batches: Vec<Batch> = (0..workers).map(|_| new_batch(&free_rx)).collect();
    let mut read_frames = 0u64;
    let mut last_ns = 0u64;
    // Which vantages carry traffic for each address, learned here from every packet in time
    // order (not per worker), so lost_between_sensors does not depend on --workers.
    let mut learning = dataplane::anomaly::paths::VantageLearning::default();
    let send = |batches: &mut Vec<Batch>, shard: usize, watermark: u64| -> Result<()> {
        let b = &mut batches[shard];
        b.watermark_ns = watermark;
        let mut full = std::mem::replace(b, new_batch(&free_rx));
        let tx = &senders[shard];
        loop {
            match tx.try_send(full) {
                Ok(()) => return Ok(()),
                Err(crossbeam_channel::TrySendError::Full(back)) => full = back,
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                    anyhow::bail!("an analysis worker stopped early")
                }
            }
            // The worker is behind: let it take half its queue (or stop) before sending again.
            let half = tx.capacity().unwrap_or(0) / 2;
            while tx.len() > half && !handles[shard].is_finished() {
                std::thread::sleep(REFILL_PAUSE);
            }
        }
    };
    // The earliest file's frame is taken at the top of the heap, and that file's next frame
    // takes its place there (sifted down only past an earlier file's): no pop and push a frame.
    while let Some(mut top) = heap.peek_mut() {
        let vantage = top.vantage;
        let v = vantage as usize;
        let Some(f) = slots[v].take() else {
            PeekMut::pop(top);
            continue;
        };
        if let Some(from_ns) = f.jump_from_ns {
            // Every worker closes this vantage's flows before any frame of the new timeline;
            // the watermark follows time back.
            last_ns = f.ts_ns;
            for shard in 0..workers {
                batches[shard].frames.push(BatchFrame {
                    mark: Mark::TimeJump { from_ns, to_ns: f.ts_ns },
                    pkt: Err(dataplane_common::Outcome::NonTcpPassed),
                    start: 0,
                    len: 0,
                    vantage,
                    frame_no: 0,
                    expected: 0,
                });
                send(&mut batches, shard, 0)?;
            }
        }
        {
            // Frames that are not TCP go to worker 0, whose engine counts the undecodable ones.
            let shard = f.pkt.as_ref().map_or(0, |p| shard_of(p, workers));
            let expected = match (&f.pkt, vantage_set.len() > 1) {
                (Ok(p), true) => learning.learn(p),
                _ => 0,
            };
            last_ns = last_ns.max(f.ts_ns);
            let b = &mut batches[shard];
            let start = b.bytes.len() as u32;
            b.bytes.extend_from_slice(&f.bytes[..f.len as usize]);
            b.frames.push(BatchFrame {
                mark: Mark::Frame,
                pkt: f.pkt.clone(),
                start,
                len: f.len as u32,
                vantage,
                frame_no: f.frame_no,
                expected,
            });
            if b.frames.len() == BATCH {
                send(&mut batches, shard, last_ns)?;
            }
        }
        let src = &mut sources[v];
        src.recycle(f);
        if let Some(r) = src.next().map_err(BadInput)? {
            *top = Head { ts_ns: r.ts_ns, vantage };
            slots[v] = Some(r);
        } else {
            PeekMut::pop(top);
        }
        read_frames += 1;
        if read_frames.is_multiple_of(WATERMARK_EVERY) {
            // Every worker learns the merged input's time, also one that gets no frames.
            for shard in 0..workers {
                if batches[shard].frames.is_empty() {
                    batches[shard].frames.push(BatchFrame {
                        mark: Mark::Watermark,
                        pkt: Err(dataplane_common::Outcome::NonTcpPassed),
                        start: 0,
                        len: 0,
                        vantage: 0,
                        frame_no: 0,
                        expected: 0,
                    });
                }
                send(&mut batches, shard, last_ns)?;
            }
        }
        if progress_on && read_frames.is_multiple_of(4096) {
            progress.show(sources.iter().map(Source::bytes_read).sum(), read_frames);
        }
    }
    if progress_on {
        progress.finish();
    }
    for (b, tx) in batches.into_iter().zip(&senders) {
        if !b.frames.is_empty() {
            tx.send(b).map_err(|_| anyhow::anyhow!("an analysis worker stopped early"))?;
        }
    }
    end_ns.store(last_ns, std::sync::atomic::Ordering::Release);
    drop(senders);
    let mut results = Vec::new();
    for h in handles {
        results.push(h.join().map_err(|_| anyhow::anyhow!("an analysis worker panicked"))?);
    }
    drop(to_sink);
    let order = sink.join().map_err(|_| anyhow::anyhow!("the events writer panicked"))?;
    if let Some(e) = order.error {
        return Err(anyhow::anyhow!(e).context(format!(
            "writing the events to {}",
            args.events.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
        )));
    }
    // Aggregates (syn_flood, port_scan) are made from the events, after the engines.
    let mut counters = order.aggregator.reported;
    let mut packets = 0;
    let mut flows = 0;
    let (mut written, mut failed, mut suppressed) = (0, 0, 0);
    let mut limits = EngineLimits::default();
    for r in &results {
        for (i, c) in r.stats.anomalies.iter().enumerate() {
            counters[i] += c;
        }
        packets += r.stats.packets;
        flows += r.stats.flows_created;
        written += r.evidence_written;
        failed += r.evidence_failed;
        suppressed += r.stats.evidence_suppressed;
        limits.side_state_refused += r.stats.side_exhausted;
        limits.side_state_reclaimed += r.stats.side_reclaimed;
        limits.macs_overflowed += r.stats.macs_overflowed;
    }
    if let Some(path) = &args.verdicts {
        let mut all: Vec<(u16, u64, u32)> =
            results.iter_mut().flat_map(|r| std::mem::take(&mut r.verdicts)).collect();
        all.sort_unstable();
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        for (v, n, flags) in all {
            writeln!(
                out,
                "{v}\t{n}\t{}",
                dataplane::anomaly::loss::verdict::names(flags).collect::<Vec<_>>().join(",")
            )?;
        }
        out.flush()?;
    }
    let mut damaged = 0;
    for src in &sources {
        if let Some(e) = &src.damage {
            damaged += 1;
            eprintln!(
                "wirewatch: warning: {e}; the results cover the {} complete records before it: for the rest, analyse a complete copy",
                src.health.frames
            );
        }
    }
    let mut inputs: Vec<InputHealth> = sources.iter().map(|s| s.health.clone()).collect();
    for r in &results {
        for (v, c) in r.stats.capture.iter().enumerate() {
            // A mirror session's capture loss is its input's.
            if let Some(h) = inputs.get_mut(usize::from(vantage_set.input_of(v as u16))) {
                h.capture_loss.add(c);
            }
        }
    }
    for h in &mut inputs {
        h.capture_loss_percent = h.capture_loss.loss_percent();
    }
    let summary = Summary {
        limits,
        vantage_pairs: crate::vantages::describe(&relations_cfg, &vantage_set.names()),
        mirror_sessions: vantage_set
            .sessions()
            .into_iter()
            .map(|(name, input)| serde_json::json!({"vantage": name, "input": input}))
            .collect(),
        mirror_sessions_overflowed: vantage_set.overflowed(),
        inputs: &inputs,
        packets,
        flows,
        counters: &counters,
        event_counts: &order.per_kind,
        examples: &order.examples,
        endpoints: &order.endpoints,
        evidence_written: written,
        evidence_failed: failed,
        evidence_suppressed: suppressed,
    };
    // With the events on stdout, the summary must not mix into them.
    let mut out: Box<dyn Write> = if args.events.as_ref().is_some_and(|p| p.as_os_str() == "-") {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    match args.format {
        Format::Table => summary.print_table(&mut out)?,
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&summary.json())?)?,
    }
    if let Some(dir) = &args.report {
        let index = dataplane::report::write_report(dir, &order.report, order.report_omitted)
            .context("writing the report: check that the directory is writable")?;
        // After a table, one more line; a JSON summary stays one document.
        match args.format {
            Format::Table => writeln!(out, "report: {}", index.display())?,
            Format::Json => eprintln!("report: {}", index.display()),
        }
    }
    out.flush()?;
    if damaged > 0 {
        return Err(Damaged { files: damaged }.into());
    }
    Ok(())
}

/// Progress on a terminal: how far, how fast, how long still.
struct Progress {
    started: std::time::Instant,
    last: Option<std::time::Instant>,
    total: Option<u64>,
}

impl Progress {
    fn new(total: Option<u64>) -> Self {
        Self { started: std::time::Instant::now(), last: None, total }
    }

    /// Redraws the line at most 4 times a second, from the first second on.
    fn show(&mut self, done: u64, frames: u64) {
        let now = std::time::Instant::now();
        let elapsed = now.duration_since(self.started).as_secs_f64();
        if elapsed < 1.0 || self.last.is_some_and(|l| now.duration_since(l).as_millis() < 250) {
            return;
        }
        self.last = Some(now);
        eprint!("\r{}\x1b[K", progress_line(done, self.total, frames, elapsed));
    }

    fn finish(&self) {
        if self.last.is_some() {
            eprintln!();
        }
    }
}

/// `  42.0%  1234567 frames  310000 frames/s  12.5 MB/s  ETA 0:12` (no share or ETA without
/// a known size, e.g. on standard input).
fn progress_line(done: u64, total: Option<u64>, frames: u64, elapsed_s: f64) -> String {
    use std::fmt::Write as _;
    let elapsed_s = elapsed_s.max(1e-3);
    let rate = frames as f64 / elapsed_s;
    let bytes_rate = done as f64 / elapsed_s;
    let mut line = String::new();
    if let Some(t) = total.filter(|t| *t > 0) {
        let _ = write!(line, "  {:5.1}%", (done as f64 * 100.0 / t as f64).min(100.0));
    }
    let _ = write!(line, "  {frames} frames  {rate:.0} frames/s  {:.1} MB/s", bytes_rate / 1e6);
    if let Some(t) = total.filter(|t| *t > 0) {
        if bytes_rate > 0.0 {
            let left = (t.saturating_sub(done) as f64 / bytes_rate).round() as u64;
            let _ = write!(line, "  ETA {}:{:02}", left / 60, left % 60);
        }
    }
    line
}

/// Where the engine ran out of room and detectors went without (never silently).
#[derive(Default, serde::Serialize)]
struct EngineLimits {
    /// A detector could not arm: its side-state pool was full.
    side_state_refused: u64,
    /// Handshake timing given up so another flow's detector could arm.
    side_state_reclaimed: u64,
    /// MAC addresses past the per-worker MAC table, treated as unknown.
    macs_overflowed: u64,
}

struct Summary<'a> {
    limits: EngineLimits,
    /// How each pair of vantages was judged (serial, parallel, unknown), with the evidence.
    vantage_pairs: Vec<serde_json::Value>,
    /// Remote-mirror sessions found in the inputs, each a vantage of its own.
    mirror_sessions: Vec<serde_json::Value>,
    /// Frames of sessions past the vantage limit, analysed at their input's vantage.
    mirror_sessions_overflowed: u64,
    inputs: &'a [InputHealth],
    packets: u64,
    flows: u64,
    counters: &'a [u64; KIND_COUNT],
    /// Events written per kind, and the first of each kind.
    event_counts: &'a [u64; KIND_COUNT],
    examples: &'a [Option<Event>],
    endpoints: &'a [TopEndpoints],
    evidence_written: u64,
    evidence_failed: u64,
    evidence_suppressed: u64,
}

/// What to do about frames that carry no readable TCP, by their main cause.
fn unread_advice(h: &InputHealth) -> &'static str {
    let causes = [
        (h.encapsulated, "the TCP is inside a tunnel or label stack wirewatch does not open (MPLS, PPPoE, GRE, VXLAN, IP-in-IP…): capture at the tunnel endpoint, or strip the encapsulation first"),
        (h.cut_short, "the snap length cut the frames before the end of the TCP header: capture again with a larger one (tcpdump -s 128 or more)"),
        (h.fragment, "the TCP was fragmented; only first fragments carry its header"),
        (h.not_tcp + h.not_ip, "the capture holds no TCP: check the capture filter and the interface"),
        (h.malformed, "the headers are inconsistent: the capture may be damaged"),
    ];
    causes.iter().max_by_key(|(n, _)| *n).map_or("", |(_, a)| a)
}

fn span(ns: u64) -> String {
    let s = ns as f64 / 1e9;
    if s < 120.0 {
        format!("{s:.3} s")
    } else {
        let t = s.round() as u64;
        format!("{}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
    }
}

impl Summary<'_> {
    fn example(&self, k: Kind) -> Option<&Event> {
        self.examples[k as usize].as_ref()
    }

    fn time_span(&self) -> Option<(u64, u64)> {
        let first = self.inputs.iter().filter_map(|h| h.first_ns).min()?;
        let last = self.inputs.iter().filter_map(|h| h.last_ns).max()?;
        Some((first, last))
    }

    fn print_table(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let files: Vec<&str> = self.inputs.iter().map(|h| h.file.as_str()).collect();
        writeln!(
            out,
            "wirewatch analyze: {} TCP packets in {} flows from {}",
            self.packets,
            self.flows,
            files.join(", ")
        )?;
        if let Some((first, last)) = self.time_span() {
            writeln!(
                out,
                "time span: {} to {} ({})",
                dataplane::anomaly::rfc3339(first),
                dataplane::anomaly::rfc3339(last),
                span(last - first)
            )?;
        }
        writeln!(out, "\ncapture health")?;
        for h in self.inputs {
            let compressed = if h.compression == "none" {
                String::new()
            } else {
                format!(" ({})", h.compression)
            };
            writeln!(out, "  {}{compressed}: {} frames, {} TCP", h.file, h.frames, h.tcp)?;
            if !h.files.is_empty() {
                writeln!(
                    out,
                    "    one vantage of {} files read in time order (one sensor's rotated captures, or --vantage): {}",
                    h.files.len(),
                    h.files.join(", ")
                )?;
            }
            if h.unread() > 0 {
                writeln!(
                    out,
                    "    without readable TCP: {} not IP, {} not TCP, {} encapsulation not understood, {} fragments, {} cut short (snap length), {} malformed",
                    h.not_ip, h.not_tcp, h.encapsulated, h.fragment, h.cut_short, h.malformed
                )?;
                if h.tcp == 0 {
                    writeln!(out, "    no TCP could be read: {}", unread_advice(h))?;
                }
            }
            let c = &h.capture_loss;
            writeln!(
                out,
                "    capture loss: {:.2}% ({} of {} ACKs acknowledged data this file never showed, about {} of {} bytes){}",
                h.capture_loss_percent,
                c.gap_events,
                c.ack_events,
                c.gap_bytes,
                c.ack_bytes,
                if c.gap_events > 0 {
                    "; the capture itself is lossy: verdicts on the affected flows say so"
                } else {
                    ""
                }
            )?;
            writeln!(
                out,
                "    time: {} jumps back (over 1 s; each handled as a capture gap), {} frames re-sorted{}",
                h.time_jumps,
                h.resorted,
                if h.resort_overflow > 0 {
                    format!(", {} too late to re-sort", h.resort_overflow)
                } else {
                    String::new()
                }
            )?;
            if let Some(at) = h.cut_at {
                writeln!(
                    out,
                    "    cut short at offset {at}: only the records before it were read"
                )?;
            }
        }
        let mut any = false;
        for k in Kind::ALL {
            let n = self.counters[*k as usize];
            let events = self.event_counts[*k as usize];
            if n == 0 && events == 0 {
                continue;
            }
            any = true;
            let health = if k.is_sensor_health() { "  (sensor health)" } else { "" };
            writeln!(out, "\n{:<24} {n:>8}{health}", k.name())?;
            if let Some(e) = self.example(*k) {
                writeln!(
                    out,
                    "  e.g. {}:{} → {}:{} at {} [{}]",
                    e.flow.src, e.flow.sport, e.flow.dst, e.flow.dport, e.time_last, e.vantage
                )?;
                writeln!(out, "  {}", e.explanation)?;
                if let Some(ev) = &e.evidence {
                    writeln!(
                        out,
                        "  evidence: {} (packet {})",
                        ev.path,
                        ev.packets.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                    )?;
                }
            }
            let top = self.endpoints[*k as usize].top(3);
            if !top.is_empty() {
                let list: Vec<String> = top.iter().map(|(e, n)| format!("{e} ({n})")).collect();
                writeln!(out, "  top endpoints: {}", list.join(", "))?;
            }
        }
        if !any {
            writeln!(out, "\nno anomalies")?;
        }
        for m in &self.mirror_sessions {
            writeln!(
                out,
                "\nmirror session {} in {}: a vantage of its own",
                m["vantage"].as_str().unwrap_or("?"),
                m["input"].as_str().unwrap_or("?"),
            )?;
        }
        if self.mirror_sessions_overflowed > 0 {
            writeln!(
                out,
                "\n{} frames of mirror sessions past the limit of {} vantages were analysed at their input's vantage",
                self.mirror_sessions_overflowed,
                dataplane::flow::MAX_VANTAGES
            )?;
        }
        for p in &self.vantage_pairs {
            writeln!(
                out,
                "\nvantages {} and {}: {} ({} of {} packets of the connections both carry seen at both)",
                p["vantages"][0].as_str().unwrap_or("?"),
                p["vantages"][1].as_str().unwrap_or("?"),
                p["relation"].as_str().unwrap_or("?"),
                p["seen_at_both"],
                p["shared_packets"],
            )?;
        }
        let l = &self.limits;
        if l.side_state_refused + l.side_state_reclaimed + l.macs_overflowed > 0 {
            writeln!(
                out,
                "\nengine limits: {} detector arms refused (side-state pool full), {} handshake timings reclaimed, {} MACs past the MAC table",
                l.side_state_refused, l.side_state_reclaimed, l.macs_overflowed
            )?;
        }
        writeln!(
            out,
            "\nevidence files: {} written, {} suppressed by the rate limit{}, {} failed",
            self.evidence_written,
            self.evidence_suppressed,
            if self.evidence_suppressed > 0 { " (raise it with --evidence-rate)" } else { "" },
            self.evidence_failed
        )
    }

    fn json(&self) -> serde_json::Value {
        let kinds: serde_json::Map<String, serde_json::Value> = Kind::ALL
            .iter()
            .filter(|k| self.counters[**k as usize] > 0 || self.example(**k).is_some())
            .map(|k| {
                let ex = self.example(*k);
                let top: Vec<serde_json::Value> = self.endpoints[*k as usize]
                    .top(3)
                    .into_iter()
                    .map(|(e, n)| serde_json::json!({"endpoint": e, "events": n}))
                    .collect();
                (
                    k.name().to_string(),
                    serde_json::json!({
                        "count": self.counters[*k as usize],
                        "events": self.event_counts[*k as usize],
                        "sensor_health": k.is_sensor_health(),
                        "example": ex,
                        "top_endpoints": top,
                    }),
                )
            })
            .collect();
        let files: Vec<&str> = self.inputs.iter().map(|h| h.file.as_str()).collect();
        let span = self.time_span().map(|(a, b)| {
            serde_json::json!({
                "first": dataplane::anomaly::rfc3339(a),
                "last": dataplane::anomaly::rfc3339(b),
                "seconds": (b - a) as f64 / 1e9,
            })
        });
        let undecodable: u64 = self.inputs.iter().map(InputHealth::unread).sum();
        serde_json::json!({
            "files": files,
            "packets": self.packets,
            "flows": self.flows,
            "time_span": span,
            "undecodable": undecodable,
            "inputs": self.inputs,
            "kinds": kinds,
            "evidence": {"written": self.evidence_written, "suppressed": self.evidence_suppressed, "failed": self.evidence_failed},
            "engine_limits": self.limits,
            "vantage_pairs": self.vantage_pairs,
            "mirror_sessions": self.mirror_sessions,
            "mirror_sessions_overflowed": self.mirror_sessions_overflowed,
        })
    }
}

/// Events per endpoint for one kind: the side a detection points at (the server of a flow
/// with a known direction, else its destination). Bounded: past `TOP_ENDPOINTS_TRACKED`
/// distinct endpoints, new ones are only counted as `others`.
#[derive(Default)]
struct TopEndpoints {
    counts: std::collections::HashMap<String, u64>,
    others: u64,
}

const TOP_ENDPOINTS_TRACKED: usize = 4096;

impl TopEndpoints {
    fn add(&mut self, e: &Event) {
        let (addr, port) = if e.flow.direction == "server_to_client" {
            (e.flow.src, e.flow.sport)
        } else {
            (e.flow.dst, e.flow.dport)
        };
        let key = std::net::SocketAddr::new(addr, port).to_string();
        if let Some(n) = self.counts.get_mut(&key) {
            *n += 1;
        } else if self.counts.len() < TOP_ENDPOINTS_TRACKED {
            self.counts.insert(key, 1);
        } else {
            self.others += 1;
        }
    }

    /// The `n` endpoints with the most events (ties by name).
    fn top(&self, n: usize) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self.counts.iter().map(|(k, c)| (k.clone(), *c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

enum SinkMsg {
    /// Events and notes of answered handshakes a worker produced; it will produce none
    /// earlier than `watermark` − lateness.
    Events { worker: usize, watermark: u64, events: Vec<Event>, notes: Vec<PathNote> },
}

/// How far behind its watermark a worker's event can be: 0 with one vantage, the
/// cross-vantage wait with a margin once there are several (inputs, or mirror sessions found
/// in them).
struct Lateness {
    vantages: dataplane::vantage::Vantages,
    across: u64,
}

impl Lateness {
    fn now(&self) -> u64 {
        if self.vantages.len() > 1 {
            self.across
        } else {
            0
        }
    }
}

/// Writes the workers' events in time order (then kind, flow, arrival) as soon as every
/// worker has moved past them, and keeps what the summary needs: counts and the first event
/// of each kind. A worker's events can trail its watermark only by the cross-vantage window
/// (a packet reported missing when its wait ends) plus the engine's 10 ms housekeeping step;
/// `lateness` covers that with a margin (and is 0 with one vantage).
struct EventOrder {
    out: Option<Box<dyn Write + Send>>,
    aggregator: dataplane::anomaly::aggregate::Aggregator,
    ready: Vec<Event>,
    pending: BinaryHeap<std::cmp::Reverse<Pending>>,
    watermarks: Vec<u64>,
    lateness: Lateness,
    seq: u64,
    per_kind: [u64; KIND_COUNT],
    examples: Vec<Option<Event>>,
    endpoints: Vec<TopEndpoints>,
    error: Option<std::io::Error>,
    /// The events `--report` draws (as their JSON): every one with evidence, and the index's
    /// rows of the rest up to its limit; `report_omitted` counts the rows left out.
    report: Vec<serde_json::Value>,
    report_omitted: u64,
    reporting: bool,
}

struct Pending {
    /// Time, kind, flow (its 5-tuple, then its id, which tells VLANs and vantages apart),
    /// arrival: nothing that depends on the worker count, so that events at the same time
    /// (the flows still open at the end of input, say) leave in the same order at any number
    /// of workers. Arrival orders only one flow's own events of a kind at one time, and one
    /// flow's events all come from one worker, in its order.
    key: (u64, &'static str, FlowOrder, u64, u64),
    item: Item,
}

/// An event's flat 5-tuple (a note's service), as far as the order needs it.
type FlowOrder = (IpAddr, u16, IpAddr, u16);
const NO_PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// What waits for its time: an event, or a note the aggregator needs before later events.
/// Boxed: every heap operation moves items up and down its levels, and an event is ~0.5 KB
/// (a SYN flood keeps one pending per SYN: the moves cost more than the box).
enum Item {
    Event(Box<Event>),
    Answered(PathNote),
}
impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        self.key == o.key
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.key.cmp(&o.key)
    }
}

impl EventOrder {
    fn new(
        workers: usize,
        lateness: Lateness,
        out: Option<Box<dyn Write + Send>>,
        reporting: bool,
    ) -> Self {
        Self {
            out,
            aggregator: dataplane::anomaly::aggregate::Aggregator::holding_all(),
            ready: Vec::new(),
            pending: BinaryHeap::new(),
            watermarks: vec![0; workers],
            lateness,
            seq: 0,
            per_kind: [0; KIND_COUNT],
            examples: (0..KIND_COUNT).map(|_| None).collect(),
            endpoints: (0..KIND_COUNT).map(|_| TopEndpoints::default()).collect(),
            error: None,
            report: Vec::new(),
            report_omitted: 0,
            reporting,
        }
    }

    fn run(mut self, rx: crossbeam_channel::Receiver<SinkMsg>) -> Self {
        for msg in rx {
            let SinkMsg::Events { worker, watermark, events, notes } = msg;
            // A note sorts before an event at the same time ("" before every kind name).
            for n in notes {
                self.seq += 1;
                let flow = (n.service.0, n.service.1, NO_PEER, 0);
                self.pending.push(std::cmp::Reverse(Pending {
                    key: (n.at_ns, "", flow, 0, self.seq),
                    item: Item::Answered(n),
                }));
            }
            for e in events {
                self.seq += 1;
                let flow = (e.src_ip, e.src_port, e.dest_ip, e.dest_port);
                self.pending.push(std::cmp::Reverse(Pending {
                    key: (e.time_last_ns, e.kind.name(), flow, e.flow_id, self.seq),
                    item: Item::Event(Box::new(e)),
                }));
            }
            self.watermarks[worker] = self.watermarks[worker].max(watermark);
            let safe = self
                .watermarks
                .iter()
                .copied()
                .min()
                .unwrap_or(0)
                .saturating_sub(self.lateness.now());
            self.release(safe);
        }
        self.release(u64::MAX);
        if let Some(out) = self.out.as_mut() {
            if let Err(e) = out.flush() {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// Writes every pending event earlier than `before` (all of them for u64::MAX), through
    /// the aggregator (floods and scans become one event each).
    fn release(&mut self, before: u64) {
        let mut ready = std::mem::take(&mut self.ready);
        while self.pending.peek().is_some_and(|p| before == u64::MAX || p.0.key.0 < before) {
            let Some(std::cmp::Reverse(p)) = self.pending.pop() else { break };
            match p.item {
                Item::Event(e) => self.aggregator.push(*e, &mut ready),
                Item::Answered(n) => self.aggregator.note_answered(&n),
            }
            self.write(&mut ready);
        }
        if before == u64::MAX {
            self.aggregator.finish(&mut ready);
        } else {
            self.aggregator.advance(before, &mut ready);
        }
        self.write(&mut ready);
        self.ready = ready;
    }

    fn write(&mut self, ready: &mut Vec<Event>) {
        for e in ready.drain(..) {
            self.per_kind[e.kind as usize] += 1;
            self.endpoints[e.kind as usize].add(&e);
            if self.reporting {
                if e.evidence.is_some() || self.report.len() < dataplane::report::INDEX_ROWS {
                    self.report.extend(serde_json::to_value(&e).ok());
                } else {
                    self.report_omitted += 1;
                }
            }
            if let (Some(out), None) = (self.out.as_mut(), self.error.as_ref()) {
                let r = serde_json::to_writer(&mut *out, &e)
                    .map_err(std::io::Error::from)
                    .and_then(|()| out.write_all(b"\n"));
                if let Err(err) = r {
                    self.error = Some(err);
                }
            }
            let slot = &mut self.examples[e.kind as usize];
            if slot.is_none() {
                *slot = Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::progress_line;

    #[test]
    fn progress_shows_rate_and_eta() {
        // 100 MB of 400 MB in 10 s, 1M frames: 25 %, 100k frames/s, 10 MB/s, 30 s left.
        let l = progress_line(100_000_000, Some(400_000_000), 1_000_000, 10.0);
        assert_eq!(l, "   25.0%  1000000 frames  100000 frames/s  10.0 MB/s  ETA 0:30");
        // Standard input: no size, so no share and no ETA, but the rate.
        let l = progress_line(5_000_000, None, 20_000, 2.0);
        assert_eq!(l, "  20000 frames  10000 frames/s  2.5 MB/s");
    }
}
