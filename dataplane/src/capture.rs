//! Reads pcap and pcapng files (either byte order; micro- or nanosecond timestamps, pcapng
//! `if_tsresol`): Ethernet, Linux cooked SLL/SLL2 and raw IP link types. Every frame comes
//! out as Ethernet (a synthetic header for the link types without one), so one parser serves
//! live and offline input. Corrupt input is an error naming the byte offset — never a panic.
use std::io::{self, Read};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: empty file, not a capture")]
    Empty { path: String },
    #[error("{path}: not a pcap or pcapng file (magic {magic:#010x} at offset 0)")]
    BadMagic { path: String, magic: u32 },
    #[error("{path}: corrupt at offset {offset}: {what}")]
    Corrupt { path: String, offset: u64, what: String },
    #[error(
        "{path}: link type {linktype} is not supported (Ethernet, Linux SLL/SLL2 and raw IP are)"
    )]
    LinkType { path: String, linktype: u32 },
}

/// The largest frame a record may claim; anything larger is corruption, not a jumbo frame.
pub const MAX_CAPLEN: u32 = 262_144;

#[derive(Clone, Debug, Default)]
pub struct CapturedFrame {
    /// Ethernet frame bytes as captured.
    pub data: Vec<u8>,
    /// Length on the wire (Ethernet, including the synthetic header where one was added).
    pub orig_len: u32,
    pub ts_ns: u64,
    /// Byte offset of the record in the file.
    pub offset: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Pcap { big_endian: bool, nanos: bool, linktype: u32 },
    Pcapng { big_endian: bool },
}

#[derive(Clone, Copy, Debug)]
struct Iface {
    linktype: u32,
    /// ns per timestamp unit, or the divisor flag (see ts_to_ns).
    tsresol: u8,
}

pub struct CaptureReader<R: Read> {
    path: String,
    r: R,
    offset: u64,
    format: Format,
    ifaces: Vec<Iface>,
    /// Record bytes as read, reused for every record (no allocation per packet).
    scratch: Vec<u8>,
}

const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_RAW_ALT: u32 = 12;
const LINKTYPE_IPV4: u32 = 228;
const LINKTYPE_IPV6: u32 = 229;
const LINKTYPE_SLL: u32 = 113;
const LINKTYPE_SLL2: u32 = 276;

fn supported(lt: u32) -> bool {
    matches!(
        lt,
        LINKTYPE_ETHERNET
            | LINKTYPE_RAW
            | LINKTYPE_RAW_ALT
            | LINKTYPE_IPV4
            | LINKTYPE_IPV6
            | LINKTYPE_SLL
            | LINKTYPE_SLL2
    )
}

impl CaptureReader<io::BufReader<std::fs::File>> {
    pub fn open(path: &std::path::Path) -> Result<Self, CaptureError> {
        let p = path.display().to_string();
        let f = std::fs::File::open(path)
            .map_err(|source| CaptureError::Io { path: p.clone(), source })?;
        Self::new(p, io::BufReader::with_capacity(1 << 20, f))
    }
}

impl<R: Read> CaptureReader<R> {
    pub fn new(path: String, mut r: R) -> Result<Self, CaptureError> {
        let mut magic = [0u8; 4];
        let n = read_full(&mut r, &mut magic)
            .map_err(|source| CaptureError::Io { path: path.clone(), source })?;
        if n == 0 {
            return Err(CaptureError::Empty { path });
        }
        if n < 4 {
            return Err(CaptureError::Corrupt {
                path,
                offset: 0,
                what: "file ends inside the magic number".into(),
            });
        }
        let le = u32::from_le_bytes(magic);
        let mut me = Self {
            path,
            r,
            offset: 4,
            format: Format::Pcapng { big_endian: false },
            ifaces: Vec::new(),
            scratch: Vec::new(),
        };
        match le {
            0xa1b2c3d4 | 0xa1b23c4d | 0xd4c3b2a1 | 0x4d3cb2a1 => {
                let big_endian = matches!(le, 0xd4c3b2a1 | 0x4d3cb2a1);
                let nanos = matches!(le, 0xa1b23c4d | 0x4d3cb2a1);
                let mut h = [0u8; 20];
                me.read_exact_at(&mut h, "pcap file header")?;
                let linktype = read_u32(&h[16..20], big_endian) & 0x0fff_ffff;
                if !supported(linktype) {
                    return Err(CaptureError::LinkType { path: me.path, linktype });
                }
                me.format = Format::Pcap { big_endian, nanos, linktype };
            }
            0x0a0d0d0a => {
                let mut len = [0u8; 4];
                me.read_exact_at(&mut len, "pcapng section header")?;
                me.read_section_header(0, len)?;
            }
            magic => {
                return Err(CaptureError::BadMagic {
                    path: me.path,
                    magic: u32::from_be_bytes(magic.to_le_bytes()),
                })
            }
        }
        Ok(me)
    }

    /// The rest of a section header block whose type (at `at`) and raw length bytes were
    /// read: the byte-order magic decides the endianness of this section.
    fn read_section_header(&mut self, at: u64, raw_len: [u8; 4]) -> Result<(), CaptureError> {
        let mut m = [0u8; 4];
        self.read_exact_at(&mut m, "pcapng section header")?;
        let big_endian = match u32::from_le_bytes(m) {
            0x1a2b3c4d => false,
            0x4d3c2b1a => true,
            x => return Err(self.corrupt(at + 8, format!("bad byte-order magic {x:#x}"))),
        };
        let len =
            if big_endian { u32::from_be_bytes(raw_len) } else { u32::from_le_bytes(raw_len) };
        if len < 28 || len % 4 != 0 || len > 1 << 20 {
            return Err(self.corrupt(at + 4, format!("section header length {len}")));
        }
        let mut rest = vec![0u8; len as usize - 12];
        self.read_exact_at(&mut rest, "pcapng section header")?;
        self.format = Format::Pcapng { big_endian };
        Ok(())
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn corrupt(&self, offset: u64, what: String) -> CaptureError {
        CaptureError::Corrupt { path: self.path.clone(), offset, what }
    }

    fn read_exact_at(&mut self, buf: &mut [u8], what: &str) -> Result<(), CaptureError> {
        let at = self.offset;
        let n = read_full(&mut self.r, buf)
            .map_err(|source| CaptureError::Io { path: self.path.clone(), source })?;
        self.offset += n as u64;
        if n < buf.len() {
            return Err(self
                .corrupt(at, format!("file ends inside the {what} ({n} of {} bytes)", buf.len())));
        }
        Ok(())
    }

    /// The next frame, `None` at a clean end of file.
    pub fn next_frame(&mut self) -> Result<Option<CapturedFrame>, CaptureError> {
        let mut f = CapturedFrame::default();
        Ok(self.next_frame_into(&mut f)?.then_some(f))
    }

    /// The next frame into `out` (its buffer is reused: no allocation per record once it has
    /// grown to the largest frame); false at a clean end of file.
    pub fn next_frame_into(&mut self, out: &mut CapturedFrame) -> Result<bool, CaptureError> {
        loop {
            let at = self.offset;
            match self.format {
                Format::Pcap { big_endian, nanos, linktype } => {
                    let mut h = [0u8; 16];
                    let n = read_full(&mut self.r, &mut h)
                        .map_err(|source| CaptureError::Io { path: self.path.clone(), source })?;
                    self.offset += n as u64;
                    if n == 0 {
                        return Ok(false);
                    }
                    if n < 16 {
                        return Err(self.corrupt(
                            at,
                            format!("file ends inside a record header ({n} of 16 bytes)"),
                        ));
                    }
                    let sec = read_u32(&h[0..4], big_endian) as u64;
                    let frac = read_u32(&h[4..8], big_endian) as u64;
                    let caplen = read_u32(&h[8..12], big_endian);
                    let origlen = read_u32(&h[12..16], big_endian);
                    if caplen > MAX_CAPLEN {
                        return Err(self.corrupt(
                            at,
                            format!("record claims {caplen} captured bytes (max {MAX_CAPLEN})"),
                        ));
                    }
                    let mut data = std::mem::take(&mut self.scratch);
                    data.resize(caplen as usize, 0);
                    let read = self.read_exact_at(&mut data, "packet data").map_err(|e| match e {
                        // Name the record, not the middle of it.
                        CaptureError::Corrupt { path, what, .. } => CaptureError::Corrupt {
                            path,
                            offset: at,
                            what: format!("record: {what}"),
                        },
                        e => e,
                    });
                    let ts_ns = sec.saturating_mul(1_000_000_000).saturating_add(if nanos {
                        frac
                    } else {
                        frac * 1000
                    });
                    let ok = read.is_ok()
                        && if linktype == LINKTYPE_ETHERNET {
                            // The record is the frame: hand over the buffer, take the old one back.
                            std::mem::swap(&mut data, &mut out.data);
                            out.orig_len = origlen.max(caplen);
                            out.ts_ns = ts_ns;
                            out.offset = at;
                            true
                        } else {
                            to_ethernet(linktype, &data, origlen.max(caplen), ts_ns, at, out)
                        };
                    self.scratch = data;
                    read?;
                    if ok {
                        return Ok(true);
                    }
                }
                Format::Pcapng { big_endian } => {
                    let mut h = [0u8; 8];
                    let n = read_full(&mut self.r, &mut h)
                        .map_err(|source| CaptureError::Io { path: self.path.clone(), source })?;
                    self.offset += n as u64;
                    if n == 0 {
                        return Ok(false);
                    }
                    if n < 8 {
                        return Err(self.corrupt(
                            at,
                            format!("file ends inside a block header ({n} of 8 bytes)"),
                        ));
                    }
                    let kind = read_u32(&h[0..4], big_endian);
                    let len = read_u32(&h[4..8], big_endian);
                    if kind == 0x0a0d0d0a {
                        // A new section: byte order may change and interfaces restart.
                        self.read_section_header(at, [h[4], h[5], h[6], h[7]])?;
                        self.ifaces.clear();
                        continue;
                    }
                    if len < 12 || !len.is_multiple_of(4) || len > MAX_CAPLEN + 4096 {
                        return Err(self.corrupt(at, format!("block length {len}")));
                    }
                    let mut block = std::mem::take(&mut self.scratch);
                    block.resize(len as usize - 8, 0);
                    let read = self.read_exact_at(&mut block, "block");
                    let found = match read {
                        Ok(()) => {
                            self.pcapng_block(kind, &block[..block.len() - 4], big_endian, at, out)
                        }
                        Err(e) => Err(e),
                    };
                    self.scratch = block;
                    if found? {
                        return Ok(true);
                    }
                }
            }
        }
    }

    /// One pcapng block's body (without its trailing length): true if it held a frame, now in
    /// `out`.
    fn pcapng_block(
        &mut self,
        kind: u32,
        body: &[u8],
        big_endian: bool,
        at: u64,
        out: &mut CapturedFrame,
    ) -> Result<bool, CaptureError> {
        match kind {
            1 => {
                if body.len() < 8 {
                    return Err(self.corrupt(at, "interface block too short".into()));
                }
                let linktype = read_u16(&body[0..2], big_endian) as u32;
                let tsresol = find_option(body, 8, 9, big_endian)
                    .and_then(|v| v.first().copied())
                    .unwrap_or(6);
                self.ifaces.push(Iface { linktype, tsresol });
            }
            6 => {
                if body.len() < 20 {
                    return Err(self.corrupt(at, "packet block too short".into()));
                }
                let ifid = read_u32(&body[0..4], big_endian) as usize;
                let Some(iface) = self.ifaces.get(ifid).copied() else {
                    return Err(self.corrupt(at, format!("packet on undeclared interface {ifid}")));
                };
                let ts = ((read_u32(&body[4..8], big_endian) as u64) << 32)
                    | read_u32(&body[8..12], big_endian) as u64;
                let caplen = read_u32(&body[12..16], big_endian);
                let origlen = read_u32(&body[16..20], big_endian);
                if caplen as usize > body.len() - 20 {
                    return Err(self.corrupt(
                        at,
                        format!("packet claims {caplen} bytes, block holds {}", body.len() - 20),
                    ));
                }
                if !supported(iface.linktype) {
                    return Err(CaptureError::LinkType {
                        path: self.path.clone(),
                        linktype: iface.linktype,
                    });
                }
                let data = &body[20..20 + caplen as usize];
                return Ok(to_ethernet(
                    iface.linktype,
                    data,
                    origlen.max(caplen),
                    ts_to_ns(ts, iface.tsresol),
                    at,
                    out,
                ));
            }
            3 => {
                // Simple packet block: no timestamp, first interface.
                if body.len() < 4 || self.ifaces.is_empty() {
                    return Err(self.corrupt(at, "simple packet block without an interface".into()));
                }
                let origlen = read_u32(&body[0..4], big_endian);
                let data = &body[4..4 + (origlen as usize).min(body.len() - 4)];
                let lt = self.ifaces[0].linktype;
                return Ok(to_ethernet(lt, data, origlen, 0, at, out));
            }
            _ => {} // statistics, name resolution, custom blocks: skipped
        }
        Ok(false)
    }
}

fn find_option(body: &[u8], start: usize, code: u16, big: bool) -> Option<&[u8]> {
    let mut i = start;
    while i + 4 <= body.len() {
        let rd = |b: &[u8]| {
            if big {
                u16::from_be_bytes([b[0], b[1]])
            } else {
                u16::from_le_bytes([b[0], b[1]])
            }
        };
        let c = rd(&body[i..]);
        let l = rd(&body[i + 2..]) as usize;
        if c == 0 {
            break;
        }
        let v = body.get(i + 4..i + 4 + l)?;
        if c == code {
            return Some(v);
        }
        i += 4 + ((l + 3) & !3);
    }
    None
}

fn ts_to_ns(ts: u64, tsresol: u8) -> u64 {
    if tsresol & 0x80 == 0 {
        let exp = (tsresol & 0x7f) as u32;
        if exp <= 9 {
            ts.saturating_mul(10u64.pow(9 - exp))
        } else {
            ts / 10u64.pow((exp - 9).min(19))
        }
    } else {
        let exp = (tsresol & 0x7f) as u32;
        if exp >= 64 {
            return 0;
        }
        ((ts as u128 * 1_000_000_000u128) >> exp) as u64
    }
}

/// Turns a frame of any supported link type into an Ethernet frame in `out` (its buffer
/// reused). False for frames that cannot be IP (skipped: they carry no TCP).
fn to_ethernet(
    linktype: u32,
    data: &[u8],
    orig_len: u32,
    ts_ns: u64,
    offset: u64,
    out: &mut CapturedFrame,
) -> bool {
    out.ts_ns = ts_ns;
    out.offset = offset;
    let mut synth = |src_mac: [u8; 6], ethertype: u16, payload: &[u8], wire_payload: u32| {
        out.data.clear();
        out.data.extend_from_slice(&[0; 6]);
        out.data.extend_from_slice(&src_mac);
        out.data.extend_from_slice(&ethertype.to_be_bytes());
        out.data.extend_from_slice(payload);
        out.orig_len = 14u32.saturating_add(wire_payload);
        true
    };
    match linktype {
        LINKTYPE_ETHERNET => {
            out.data.clear();
            out.data.extend_from_slice(data);
            out.orig_len = orig_len;
            true
        }
        LINKTYPE_RAW | LINKTYPE_RAW_ALT | LINKTYPE_IPV4 | LINKTYPE_IPV6 => {
            let et = match data.first().map(|b| b >> 4) {
                Some(4) => 0x0800,
                Some(6) => 0x86dd,
                _ => return false,
            };
            synth([0; 6], et, data, orig_len)
        }
        LINKTYPE_SLL => {
            // pkttype(2) hatype(2) halen(2) addr(8) protocol(2)
            if data.len() < 16 {
                return false;
            }
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&data[6..12]);
            let et = u16::from_be_bytes([data[14], data[15]]);
            synth(mac, et, &data[16..], orig_len.saturating_sub(16))
        }
        LINKTYPE_SLL2 => {
            // protocol(2) reserved(2) ifindex(4) hatype(2) pkttype(1) halen(1) addr(8)
            if data.len() < 20 {
                return false;
            }
            let et = u16::from_be_bytes([data[0], data[1]]);
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&data[12..18]);
            synth(mac, et, &data[20..], orig_len.saturating_sub(20))
        }
        _ => false,
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn read_u32(b: &[u8], big: bool) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    if big {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    }
}

fn read_u16(b: &[u8], big: bool) -> u16 {
    if big {
        u16::from_be_bytes([b[0], b[1]])
    } else {
        u16::from_le_bytes([b[0], b[1]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcapng::PcapngWriter;

    fn read_all(bytes: &[u8]) -> Result<Vec<CapturedFrame>, CaptureError> {
        let mut r = CaptureReader::new("t".into(), bytes)?;
        let mut v = Vec::new();
        while let Some(f) = r.next_frame()? {
            v.push(f);
        }
        Ok(v)
    }

    fn pcap(nanos: bool, records: &[(&[u8], u32)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(if nanos { 0xa1b23c4du32 } else { 0xa1b2c3d4 }).to_le_bytes());
        b.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        b.extend_from_slice(&65535u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        for (d, caplen) in records {
            b.extend_from_slice(&5u32.to_le_bytes());
            b.extend_from_slice(&7u32.to_le_bytes());
            b.extend_from_slice(&caplen.to_le_bytes());
            b.extend_from_slice(&(d.len() as u32).to_le_bytes());
            b.extend_from_slice(d);
        }
        b
    }

    #[test]
    fn pcap_micro_and_nano() {
        let f = read_all(&pcap(false, &[(&[1u8; 60], 60)])).unwrap();
        assert_eq!((f[0].ts_ns, f[0].data.len()), (5_000_007_000, 60));
        let f = read_all(&pcap(true, &[(&[1u8; 60], 60)])).unwrap();
        assert_eq!(f[0].ts_ns, 5_000_000_007);
    }

    #[test]
    fn pcapng_round_trip() {
        let mut w = PcapngWriter::new(Vec::new()).unwrap();
        w.interface("a", 128).unwrap();
        w.interface("b", 128).unwrap();
        w.packet(1, 1_700_000_000_123_456_789, &[9u8; 70], 1500, Some("hi")).unwrap();
        let f = read_all(&w.into_inner()).unwrap();
        assert_eq!(
            (f[0].ts_ns, f[0].orig_len, f[0].data.len()),
            (1_700_000_000_123_456_789, 1500, 70)
        );
    }

    fn pcap_linktype(linktype: u32, records: &[&[u8]]) -> Vec<u8> {
        let mut b = pcap(false, &[]);
        b[20..24].copy_from_slice(&linktype.to_le_bytes());
        for d in records {
            b.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
            b.extend_from_slice(&(d.len() as u32).to_le_bytes());
            b.extend_from_slice(&(d.len() as u32).to_le_bytes());
            b.extend_from_slice(d);
        }
        b
    }

    #[test]
    fn cooked_and_raw_link_types_become_ethernet() {
        use crate::craft::TcpSegment;
        let seg = TcpSegment::new("10.0.0.1".parse().unwrap(), 1, "10.0.0.2".parse().unwrap(), 2);
        let ip = seg.ip_bytes();
        let want = crate::packet::decode(&seg.frame(), seg.frame().len() as u32, 0, 0).unwrap();
        let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 0x42, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&ip);
        let mut sll2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 2, 0, 0, 0, 0, 0x43, 0, 0];
        sll2.extend_from_slice(&ip);
        for (lt, rec, mac) in [(101u32, ip.clone(), 0u8), (113, sll, 0x42), (276, sll2, 0x43)] {
            let f = read_all(&pcap_linktype(lt, &[&rec])).unwrap();
            let p = crate::packet::decode(&f[0].data, f[0].orig_len, 0, 0).unwrap();
            assert_eq!(
                (p.src, p.dst, p.sport, p.dport, p.seq),
                (want.src, want.dst, want.sport, want.dport, want.seq),
                "linktype {lt}"
            );
            assert_eq!(
                p.src_mac[5], mac,
                "linktype {lt}: the cooked header's address is the source MAC"
            );
        }
        assert!(matches!(
            read_all(&pcap_linktype(147, &[])),
            Err(CaptureError::LinkType { linktype: 147, .. })
        ));
    }

    #[test]
    fn corrupt_inputs_are_errors_with_offsets() {
        assert!(matches!(read_all(&[]), Err(CaptureError::Empty { .. })));
        assert!(matches!(
            read_all(b"GIF89a.........................."),
            Err(CaptureError::BadMagic { .. })
        ));
        let mut absurd = pcap(false, &[]);
        absurd.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]);
        match read_all(&absurd) {
            Err(CaptureError::Corrupt { offset, what, .. }) => {
                assert_eq!(offset, 24);
                assert!(what.contains("captured bytes"), "{what}");
            }
            other => panic!("{other:?}"),
        }
        let mut cut = pcap(false, &[(&[1u8; 60], 60)]);
        cut.truncate(cut.len() - 10);
        assert!(matches!(read_all(&cut), Err(CaptureError::Corrupt { offset: 24, .. })));
        // every prefix of a valid pcapng either reads or fails cleanly
        let mut w = PcapngWriter::new(Vec::new()).unwrap();
        w.interface("a", 128).unwrap();
        w.packet(0, 1, &[9u8; 70], 70, Some("c")).unwrap();
        let full = w.into_inner();
        for n in 0..full.len() {
            let _ = read_all(&full[..n]);
        }
    }
}
