//! Sampled evidence: a per-worker ring of recent headers, bounded by memory, linked per flow so
//! a detection can collect the flow's packets before it in O(packets); the packets after it
//! are gathered as they arrive. A finished slice becomes one pcapng file whose triggering
//! packets carry a comment naming the kind and the explanation.
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::packet::{Kept, TcpPacket};
use crate::pcapng::PcapngWriter;

/// Bytes of each frame the history keeps (headers only), counted from the frame evidence
/// keeps (a tunnel's inner one: [`TcpPacket::kept`]).
pub const HIST_SNAP: usize = 128;

/// Bytes of a frame to hold on to for the history, at most: its snap after a tunnel's outer
/// headers (up to as many again; beyond, the inner headers are cut).
pub const FRAME_KEEP: usize = 2 * HIST_SNAP;

/// How many of `frame`'s first bytes the history may need of the frame `p` was decoded from
/// (`None`: not decoded).
pub fn keep_len(p: Option<&TcpPacket>, frame: &[u8]) -> usize {
    let outer = p.map_or(0, |p| usize::from(p.keep_off));
    frame.len().min(outer + HIST_SNAP).min(FRAME_KEEP)
}

#[derive(Clone, Copy)]
struct HistEntry {
    ts_ns: u64,
    /// Absolute packet counter of this entry (low 32 bits), to validate links.
    id: u32,
    /// Previous entry of the same flow (absolute counter), u32::MAX if none.
    prev: u32,
    orig_len: u32,
    vantage: u16,
    len: u16,
    data: [u8; HIST_SNAP],
}

pub struct History {
    ring: Vec<HistEntry>,
    next: u64,
    /// Slot `next` goes to (`next % capacity`, kept without a division per packet).
    pos: usize,
}

impl History {
    pub const ENTRY_BYTES: usize = size_of::<HistEntry>();

    pub fn with_memory(bytes: usize) -> Self {
        let n = (bytes / Self::ENTRY_BYTES).max(64);
        let ring: Vec<HistEntry> = Vec::with_capacity(n);
        crate::mem::advise_huge_pages(ring.as_ptr().cast(), n * Self::ENTRY_BYTES);
        Self { ring, next: 0, pos: 0 }
    }

    fn cap(&self) -> usize {
        self.ring.capacity()
    }

    /// Stores what evidence keeps ([`TcpPacket::kept`]) of `frame`, the frame `p` was decoded
    /// from; `prev` is the flow's previous entry. Its length on the wire is the frame's, less
    /// the outer headers left out.
    #[inline]
    pub fn push_packet(&mut self, p: &TcpPacket, frame: &[u8], prev: u32) -> u32 {
        let (ts_ns, vantage) = (p.ts_ns, p.vantage);
        let orig_len = p.orig_len.saturating_sub(p.keep_off.into());
        match p.kept(frame) {
            Kept::Frame(f) => self.push(f, orig_len, ts_ns, vantage, prev),
            Kept::Ip(eth, ip) => {
                let mut frame = [0u8; HIST_SNAP];
                let n = ip.len().min(HIST_SNAP - eth.len());
                frame[..eth.len()].copy_from_slice(&eth);
                frame[eth.len()..eth.len() + n].copy_from_slice(&ip[..n]);
                let orig = orig_len.saturating_add(eth.len() as u32);
                self.push(&frame[..eth.len() + n], orig, ts_ns, vantage, prev)
            }
        }
    }

    /// Stores a frame; `prev` is the flow's previous entry. Returns this entry's id.
    #[inline]
    pub fn push(&mut self, data: &[u8], orig_len: u32, ts_ns: u64, vantage: u16, prev: u32) -> u32 {
        let id = self.next as u32;
        let len = data.len().min(HIST_SNAP);
        if self.pos < self.ring.len() {
            // Overwrite in place: no 160-byte entry built and copied per packet.
            let e = &mut self.ring[self.pos];
            e.ts_ns = ts_ns;
            e.id = id;
            e.prev = prev;
            e.orig_len = orig_len;
            e.vantage = vantage;
            e.len = len as u16;
            e.data[..len].copy_from_slice(&data[..len]);
        } else {
            let mut e = HistEntry {
                ts_ns,
                id,
                prev,
                orig_len,
                vantage,
                len: len as u16,
                data: [0; HIST_SNAP],
            };
            e.data[..len].copy_from_slice(&data[..len]);
            self.ring.push(e);
        }
        self.next += 1;
        self.pos += 1;
        if self.pos == self.cap() {
            self.pos = 0;
        }
        id
    }

    fn get(&self, id: u32) -> Option<&HistEntry> {
        if id == u32::MAX {
            return None;
        }
        // Reconstruct the absolute counter nearest below `next`.
        let next = self.next;
        let back = (next as u32).wrapping_sub(id) as u64;
        if back == 0 || back > self.cap() as u64 || back > next {
            return None;
        }
        let abs = next - back;
        let e = &self.ring[(abs % self.cap() as u64) as usize];
        (e.id == id).then_some(e)
    }

    /// Up to `max` packets of a flow ending at entry `last`, no older than `since_ns`,
    /// oldest first.
    pub fn flow_before(&self, last: u32, max: usize, since_ns: u64) -> Vec<EvidencePacket> {
        let mut out = Vec::new();
        let mut cur = last;
        while out.len() < max {
            let Some(e) = self.get(cur) else { break };
            if e.ts_ns < since_ns {
                break;
            }
            out.push(EvidencePacket::from_entry(e));
            cur = e.prev;
        }
        out.reverse();
        out
    }
}

#[derive(Clone, Debug)]
pub struct EvidencePacket {
    pub id: u32,
    pub ts_ns: u64,
    pub vantage: u16,
    pub orig_len: u32,
    pub data: Vec<u8>,
    pub comment: Option<String>,
}

impl EvidencePacket {
    fn from_entry(e: &HistEntry) -> Self {
        Self {
            id: e.id,
            ts_ns: e.ts_ns,
            vantage: e.vantage,
            orig_len: e.orig_len,
            data: e.data[..e.len as usize].to_vec(),
            comment: None,
        }
    }
}

/// One evidence file in the making.
#[derive(Clone, Debug)]
pub struct EvidenceJob {
    pub path: PathBuf,
    pub packets: Vec<EvidencePacket>,
    /// Packets still to collect after the trigger, and until when.
    pub after_left: usize,
    pub after_until_ns: u64,
}

impl EvidenceJob {
    /// Adds a comment to the packet with history id `id` (appending if already commented).
    pub fn comment(&mut self, id: u32, text: &str) -> Option<u32> {
        let i = self.packets.iter().position(|p| p.id == id)?;
        let p = &mut self.packets[i];
        p.comment = Some(match p.comment.take() {
            Some(c) => format!("{c}\n{text}"),
            None => text.to_string(),
        });
        Some(i as u32 + 1)
    }

    /// Writes the file: one interface per vantage, packets in capture order.
    pub fn write(&self, vantage_names: &[String]) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("pcapng.tmp");
        let f = std::fs::File::create(&tmp)?;
        let mut w = PcapngWriter::new(BufWriter::new(f))?;
        let mut ids = Vec::new();
        for name in vantage_names {
            ids.push(w.interface(name, HIST_SNAP as u32)?);
        }
        if ids.is_empty() {
            ids.push(w.interface("wirewatch", HIST_SNAP as u32)?);
        }
        for p in &self.packets {
            let iface = ids.get(p.vantage as usize).copied().unwrap_or(0);
            w.packet(iface, p.ts_ns, &p.data, p.orig_len, p.comment.as_deref())?;
        }
        w.flush()?;
        drop(w);
        std::fs::rename(&tmp, &self.path)
    }
}

/// A file name for an event's evidence: time, kind, a per-process sequence number.
pub fn evidence_path(dir: &Path, ts_ns: u64, kind: &str, seq: u64, worker: usize) -> PathBuf {
    dir.join(format!("{}-{kind}-w{worker}-{seq}.pcapng", ts_ns / 1_000_000))
}

/// Whether `name` is a file name wirewatch gives evidence: `{ms}-{kind}-w{worker}-{seq}.pcapng`
/// with a known detection kind and decimal numbers.
pub fn is_evidence_name(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    let Some(stem) = name.strip_suffix(".pcapng") else { return false };
    let mut parts = stem.rsplitn(3, '-');
    let (Some(seq), Some(worker), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Some((ms, kind)) = rest.split_once('-') else { return false };
    digits(seq)
        && worker.strip_prefix('w').is_some_and(digits)
        && digits(ms)
        && crate::anomaly::Kind::from_name(kind).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_links_survive_until_overwritten() {
        let mut h = History::with_memory(History::ENTRY_BYTES * 64);
        let mut last_a = u32::MAX;
        let mut last_b = u32::MAX;
        for i in 0..100u64 {
            if i % 2 == 0 {
                last_a = h.push(&[1, i as u8], 2, i, 0, last_a);
            } else {
                last_b = h.push(&[2, i as u8], 2, i, 0, last_b);
            }
        }
        let a = h.flow_before(last_a, 10, 0);
        assert_eq!(a.len(), 10);
        assert!(a.iter().all(|p| p.data[0] == 1));
        assert_eq!(a.last().unwrap().ts_ns, 98);
        // the ring holds 64 entries: flow a has 32 of them
        assert_eq!(h.flow_before(last_a, 100, 0).len(), 32);
        assert_eq!(h.flow_before(last_a, 100, 90).len(), 5);
    }
}
