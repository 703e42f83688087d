//! `run --record FILE`: every received frame (headers only, cut to the snap length) as pcapng,
//! rotated by size like the events file (FILE → FILE.1 → … → FILE.{keep}), so a long run
//! cannot fill the disk. A write that fails is counted and logged, never fatal: frames are
//! dropped (and counted) until the file can be written again. Workers hand frames over in
//! batches (`RecordSender`); one thread writes them (`write_record`).
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use dataplane::pcapng::PcapngWriter;
use dataplane::worker::RawFrame;

use crate::outputs::failing::Failing;

/// Files kept besides the one being written (the events file keeps as many).
pub const KEEP: u32 = 5;
/// How often a file that cannot be written is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Counts what goes through, so the file's size is known without a stat per frame.
struct Counting<W> {
    inner: W,
    bytes: Arc<AtomicU64>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes.fetch_add(n as u64, Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// One frame to record, borrowed from the worker's batch.
pub struct RecordFrame<'a> {
    pub vantage: u16,
    pub ts_ns: u64,
    pub orig_len: u32,
    pub data: &'a [u8],
}

pub struct Recorder {
    path: PathBuf,
    vantages: Vec<String>,
    snaplen: u32,
    max_bytes: u64,
    keep: u32,
    out: Option<PcapngWriter<Counting<BufWriter<File>>>>,
    /// Bytes written to the current file.
    size: Arc<AtomicU64>,
    next_try: Instant,
    failing: Failing,
    pub recorded: u64,
    pub dropped: u64,
}

fn rotated(path: &Path, i: u32) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{i}"));
    PathBuf::from(p)
}

impl Recorder {
    /// Creates the file now: a path that cannot be written is an error before anything is
    /// attached.
    pub fn create(
        path: PathBuf,
        vantages: Vec<String>,
        snaplen: u32,
        max_bytes: u64,
        keep: u32,
    ) -> io::Result<Self> {
        let mut r = Self {
            path,
            vantages,
            snaplen,
            max_bytes,
            keep,
            out: None,
            size: Arc::default(),
            next_try: Instant::now(),
            failing: Failing::new("record"),
            recorded: 0,
            dropped: 0,
        };
        r.out = Some(r.open()?);
        Ok(r)
    }

    fn open(&self) -> io::Result<PcapngWriter<Counting<BufWriter<File>>>> {
        let f = File::create(&self.path)?;
        self.size.store(0, Relaxed);
        let counting = Counting { inner: BufWriter::new(f), bytes: self.size.clone() };
        let mut w = PcapngWriter::new(counting)?;
        for n in &self.vantages {
            w.interface(n, self.snaplen)?;
        }
        Ok(w)
    }

    /// FILE → FILE.1 → … ; the oldest beyond `keep` is overwritten by the rename.
    fn rotate(&mut self) -> io::Result<()> {
        if let Some(mut w) = self.out.take() {
            w.flush()?;
        }
        for i in (1..self.keep).rev() {
            let _ = std::fs::rename(rotated(&self.path, i), rotated(&self.path, i + 1));
        }
        if self.keep > 0 {
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        self.out = Some(self.open()?);
        Ok(())
    }

    fn try_write(&mut self, r: &RecordFrame<'_>) -> io::Result<()> {
        if self.out.is_none() {
            if Instant::now() < self.next_try {
                return Err(io::Error::other("not open (waiting to retry)"));
            }
            self.next_try = Instant::now() + RETRY;
            self.out = Some(self.open()?);
        }
        // An enhanced packet block: 32 bytes of header and trailer around the padded data.
        let block = 32 + r.data.len().next_multiple_of(4) as u64;
        let size = self.size.load(Relaxed);
        if size + block > self.max_bytes && size > 0 {
            self.rotate()?;
        }
        let w = self.out.as_mut().expect("opened above");
        w.packet(u32::from(r.vantage), r.ts_ns, r.data, r.orig_len, None)
    }

    pub fn write(&mut self, r: &RecordFrame<'_>) {
        match self.try_write(r) {
            Ok(()) => {
                self.recorded += 1;
                self.failing.ok();
            }
            Err(e) => {
                // Start again with a fresh file once it can be written.
                if self.out.is_some() {
                    self.out = None;
                    self.next_try = Instant::now() + RETRY;
                }
                self.dropped += 1;
                crate::export::metrics::record_dropped(1);
                self.failing.failed(&format_args!("{}: {e}", self.path.display()));
            }
        }
    }

    pub fn flush(&mut self) {
        if let Some(w) = self.out.as_mut() {
            if let Err(e) = w.flush() {
                self.failing.failed(&format_args!("{}: {e}", self.path.display()));
            }
        }
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
pub struct RecordSender {
    tx: Sender<RecordBatch>,
    free: Receiver<RecordBatch>,
    cur: RecordBatch,
    /// Frames of batches the writer had no room for, not yet reported by `flush`.
    dropped: u64,
}

impl RecordSender {
    /// A worker's end of the recorder thread's queues.
    pub fn new(thread: &RecorderThread) -> Self {
        let (tx, free, _) = thread;
        Self { tx: tx.clone(), free: free.clone(), cur: RecordBatch::default(), dropped: 0 }
    }

    pub fn push(&mut self, f: &RawFrame<'_>) {
        let off = self.cur.data.len() as u32;
        self.cur.data.extend_from_slice(f.data);
        self.cur.frames.push((f.vantage, f.ts_ns, f.orig_len, off, f.data.len() as u32));
        if self.cur.frames.len() >= RECORD_BATCH_FRAMES {
            self.dropped += self.send();
        }
    }

    /// Enough frames wait to be handed over at the end of a receive batch.
    pub fn wants_flush(&self) -> bool {
        self.cur.frames.len() >= RECORD_FLUSH_FRAMES
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
                crate::export::metrics::record_dropped(n);
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
    mut recorder: Recorder,
) -> (u64, u64) {
    for mut b in rx {
        for &(vantage, ts_ns, orig_len, off, len) in &b.frames {
            let data = &b.data[off as usize..(off + len) as usize];
            recorder.write(&RecordFrame { vantage, ts_ns, orig_len, data });
        }
        b.clear();
        let _ = free.try_send(b);
    }
    recorder.flush();
    (recorder.recorded, recorder.dropped)
}

/// The recorder thread and both ends of its batch queues: full batches go to it, emptied
/// ones come back.
pub type RecorderThread =
    (Sender<RecordBatch>, Receiver<RecordBatch>, std::thread::JoinHandle<(u64, u64)>);

/// Creates the `--record` file and starts its thread. Frames reach it in batches (no
/// allocation or send per frame).
pub fn start(path: &Path, args: &crate::cli::run::RunArgs) -> anyhow::Result<RecorderThread> {
    use anyhow::Context as _;
    let recorder = Recorder::create(
        path.to_path_buf(),
        args.ifaces.clone(),
        args.snaplen,
        args.record_max_bytes,
        KEEP,
    )
    .with_context(|| format!("--record {}: cannot create it", path.display()))?;
    let (tx, rx) = crossbeam_channel::bounded::<RecordBatch>(RECORD_QUEUE_BATCHES);
    let (free_tx, free_rx) = crossbeam_channel::bounded::<RecordBatch>(RECORD_QUEUE_BATCHES);
    let h = std::thread::Builder::new()
        .name("ww-record".into())
        .spawn(move || write_record(&rx, &free_tx, recorder))
        .context("starting the recorder thread")?;
    Ok((tx, free_rx, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_file_rotates_by_size_and_keeps_n() {
        let dir = std::env::temp_dir().join(format!("ww-record-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rec.pcapng");
        let mut r = Recorder::create(path.clone(), vec!["tap0".into()], 128, 4096, 2).unwrap();
        for i in 0..200u64 {
            r.write(&RecordFrame { vantage: 0, ts_ns: i, orig_len: 60, data: &[0u8; 60] });
        }
        r.flush();
        assert_eq!((r.recorded, r.dropped), (200, 0));
        for p in [path.clone(), rotated(&path, 1), rotated(&path, 2)] {
            let len = std::fs::metadata(&p).unwrap().len();
            assert!(len <= 4096, "{} is {len} bytes", p.display());
        }
        assert!(!rotated(&path, 3).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
