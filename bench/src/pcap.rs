//! A minimal pcap writer for the benchmark's own captures: nanosecond-resolution classic pcap,
//! Ethernet link type, each record's captured length up to the file's snap length.
//!
//! Format: the pcap file format (draft-ietf-opsawg-pcap, §4 file header with magic 0xA1B23C4D
//! for nanosecond timestamps, §5 packet record with CapLen ≤ SnapLen and OriginalLen).
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// LINKTYPE_ETHERNET (draft-ietf-opsawg-pcaplinktype).
const LINKTYPE_ETHERNET: u32 = 1;
const MAGIC_NANOS: u32 = 0xa1b2_3c4d;

pub struct PcapWriter {
    out: BufWriter<File>,
    snap: usize,
}

impl PcapWriter {
    /// Creates `path` and writes the file header with snap length `snap`.
    pub fn create(path: &Path, snap: usize) -> std::io::Result<Self> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        out.write_all(&MAGIC_NANOS.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?; // version 2.4
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&[0u8; 8])?; // reserved (thiszone, sigfigs)
        out.write_all(&u32::try_from(snap).unwrap_or(u32::MAX).to_le_bytes())?;
        out.write_all(&LINKTYPE_ETHERNET.to_le_bytes())?;
        Ok(Self { out, snap })
    }

    /// One record: at most the snap length of `data`, `orig_len` as the frame's length on the
    /// wire (at least what is written).
    pub fn write(&mut self, ts_ns: u64, data: &[u8], orig_len: u32) -> std::io::Result<()> {
        let cut = data.len().min(self.snap);
        let cap = cut as u32;
        self.out.write_all(&((ts_ns / 1_000_000_000) as u32).to_le_bytes())?;
        self.out.write_all(&((ts_ns % 1_000_000_000) as u32).to_le_bytes())?;
        self.out.write_all(&cap.to_le_bytes())?;
        self.out.write_all(&orig_len.max(cap).to_le_bytes())?;
        self.out.write_all(&data[..cut])
    }

    pub fn finish(mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Writes the in-memory capture (already cut to its snap length by `gen::generate`) as a pcap
/// whose records keep each frame's original length: the same frames as the full file, cut.
pub fn write_capture(cap: &bench::gen::Capture, path: &Path, snap: usize) -> std::io::Result<()> {
    let mut w = PcapWriter::create(path, snap)?;
    for i in 0..cap.frames.len() {
        let (data, orig, ts) = cap.frame(i);
        w.write(ts, data, orig)?;
    }
    w.finish()
}
