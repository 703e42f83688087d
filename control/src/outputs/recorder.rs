//! `run --record FILE`: every received frame (headers only, cut to the snap length) as pcapng,
//! rotated by size like the events file (FILE → FILE.1 → … → FILE.{keep}), so a long run
//! cannot fill the disk. A write that fails is counted and logged, never fatal: frames are
//! dropped (and counted) until the file can be written again.
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::pcapng::PcapngWriter;

use crate::outputs::failing::Failing;

/// Files kept besides the one being written.
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
                metrics::counter!(crate::export::metrics::RECORD_DROPPED).increment(1);
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
