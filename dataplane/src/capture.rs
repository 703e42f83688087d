//! Reads pcap and pcapng files (either byte order; micro- or nanosecond timestamps, pcapng
//! `if_tsresol`), plain, gzip- or zstd-compressed (told by their magic bytes), from a file or
//! standard input: Ethernet, Linux cooked SLL/SLL2, raw IP and BSD loopback (NULL, LOOP) link
//! types. Every record comes out as an Ethernet frame (a synthetic header for the link types
//! without one), so one parser serves live and offline input, and frame numbers stay those
//! of tshark. Corrupt input is an error naming the byte offset — never a panic; a file that
//! ends inside a record is [`CaptureError::Truncated`], after every complete record.
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{path}: {source} (check the path and that it is readable)")]
    Io { path: String, source: io::Error },
    #[error("{path}: empty file, not a capture (was the capture started, or is it still being written?)")]
    Empty { path: String },
    #[error(
        "{path}: not a pcap or pcapng file{after} (magic {magic:#010x} at offset 0): give a capture written by tcpdump, dumpcap or Wireshark"
    )]
    BadMagic { path: String, magic: u32, after: &'static str },
    #[error(
        "{path}: corrupt at offset {offset}{of}: {what}; the file is damaged or not a capture (`capinfos` tells how much of it is readable)"
    )]
    Corrupt { path: String, offset: u64, of: &'static str, what: String },
    /// The input ends inside a record or block: everything before `offset` was complete.
    #[error(
        "{path}: cut short at offset {offset}{of}: {what} (the capture was interrupted: tcpdump killed, disk full, or a copy still in progress)"
    )]
    Truncated { path: String, offset: u64, of: &'static str, what: String },
    #[error(
        "{path}: link type {linktype} ({name}, at offset {offset}) is not supported; Ethernet, Linux cooked (SLL, SLL2), raw IP and BSD loopback (NULL, LOOP) are: capture on such an interface (e.g. `tcpdump -i any`)"
    )]
    LinkType { path: String, linktype: u32, name: &'static str, offset: u64 },
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
    /// Byte offset of the record in the file (in the decompressed data for a compressed one).
    pub offset: u64,
}

/// A frame lent by [`CaptureReader::next_frame_ref`].
#[derive(Clone, Copy, Debug)]
pub struct FrameRef<'a> {
    /// Ethernet frame bytes as captured.
    pub data: &'a [u8],
    /// Length on the wire (Ethernet, including the synthetic header where one was added).
    pub orig_len: u32,
    pub ts_ns: u64,
    /// Byte offset of the record in the file (in the decompressed data for a compressed one).
    pub offset: u64,
}

/// Where the record just read left its frame.
enum Record {
    /// A clean end of file.
    End,
    /// In the caller's frame.
    InScratch,
    /// At `buf[start..start + len]`.
    InBuffer { start: usize, len: usize, orig_len: u32, ts_ns: u64, offset: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Pcap { big_endian: bool, nanos: bool, linktype: u32 },
    Pcapng { big_endian: bool },
}

#[derive(Clone, Copy, Debug)]
struct Iface {
    linktype: u32,
    /// Where its interface description block starts.
    offset: u64,
    /// ns per timestamp unit, or the divisor flag (see ts_to_ns).
    tsresol: u8,
}

/// How the capture bytes were packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Told by the first bytes (RFC 1952 §2.3.1; RFC 8878 §3.1.1), not by the file name.
    pub fn of_magic(m: &[u8]) -> Self {
        match m {
            [0x1f, 0x8b, ..] => Self::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Self::Zstd,
            _ => Self::None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }
}

/// The largest zstd window accepted (2^27 = 128 MiB, zstd's own default limit): a frame
/// asking for more is refused, so decompression memory stays bounded whatever the input.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// Counts the bytes read from the underlying file (before decompression), for progress.
struct Counted<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

pub struct CaptureReader<R: Read> {
    path: String,
    r: R,
    offset: u64,
    format: Format,
    ifaces: Vec<Iface>,
    /// The input read ahead: records are parsed where they lie in it, one read call per
    /// `READ_AHEAD` bytes rather than two per record (`pos..end` not yet consumed).
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    eof: bool,
    compression: Compression,
    /// Bytes read from the file itself (compressed bytes for a compressed file).
    raw_read: Arc<AtomicU64>,
}

/// How far ahead the input is read (it also holds the largest record whole).
const READ_AHEAD: usize = 1 << 20;

const LINKTYPE_NULL: u32 = 0;
const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_RAW_ALT: u32 = 12;
/// DLT_RAW as OpenBSD numbers it (libpcap pcap-common.c maps DLT 12 and 14 to LINKTYPE_RAW).
const LINKTYPE_RAW_OPENBSD: u32 = 14;
const LINKTYPE_LOOP: u32 = 108;
const LINKTYPE_IPV4: u32 = 228;
const LINKTYPE_IPV6: u32 = 229;
const LINKTYPE_SLL: u32 = 113;
const LINKTYPE_SLL2: u32 = 276;

fn supported(lt: u32) -> bool {
    matches!(
        lt,
        LINKTYPE_NULL
            | LINKTYPE_ETHERNET
            | LINKTYPE_RAW
            | LINKTYPE_RAW_ALT
            | LINKTYPE_RAW_OPENBSD
            | LINKTYPE_LOOP
            | LINKTYPE_IPV4
            | LINKTYPE_IPV6
            | LINKTYPE_SLL
            | LINKTYPE_SLL2
    )
}

/// The tcpdump.org name of a link type the reader refuses, for the error message.
pub fn linktype_name(lt: u32) -> &'static str {
    match lt {
        3 => "AX25",
        6 => "IEEE802_5 (Token Ring)",
        9 => "PPP",
        10 => "FDDI",
        50 => "PPP_HDLC",
        51 => "PPP_ETHER (PPPoE)",
        104 => "C_HDLC (Cisco HDLC)",
        105 => "IEEE802_11 (Wi-Fi)",
        107 => "FRELAY",
        119 => "PRISM_HEADER (Wi-Fi)",
        127 => "IEEE802_11_RADIOTAP (Wi-Fi)",
        143 => "DOCSIS",
        147..=162 => "USER0..USER15 (private)",
        163 => "IEEE802_11_AVS (Wi-Fi)",
        189 => "USB_LINUX",
        192 => "PPI",
        195 => "IEEE802_15_4",
        197 => "ERF",
        201 => "BLUETOOTH_HCI_H4_WITH_PHDR",
        220 => "USB_LINUX_MMAPPED",
        227 => "CAN_SOCKETCAN",
        249 => "USBPCAP",
        253 => "NETLINK",
        239 => "NFLOG",
        _ => "unknown",
    }
}

impl CaptureReader<Box<dyn Read>> {
    /// Opens a capture file, or standard input for `-`, decompressing gzip and zstd.
    pub fn open(path: &std::path::Path) -> Result<Self, CaptureError> {
        let p = path.display().to_string();
        let raw_read = Arc::new(AtomicU64::new(0));
        let input: Box<dyn Read> = if path.as_os_str() == "-" {
            Box::new(Counted { inner: io::stdin().lock(), read: raw_read.clone() })
        } else {
            let f = std::fs::File::open(path)
                .map_err(|source| CaptureError::Io { path: p.clone(), source })?;
            Box::new(Counted { inner: f, read: raw_read.clone() })
        };
        Self::decompressing(p, input, raw_read)
    }

    /// A reader over `input`, decompressed when its first bytes say it is gzip or zstd.
    pub fn decompressing(
        path: String,
        mut input: Box<dyn Read>,
        raw_read: Arc<AtomicU64>,
    ) -> Result<Self, CaptureError> {
        let mut magic = [0u8; 4];
        let n = read_full(&mut input, &mut magic)
            .map_err(|source| CaptureError::Io { path: path.clone(), source })?;
        let compression = Compression::of_magic(&magic[..n]);
        let input = io::Cursor::new(magic[..n].to_vec()).chain(input);
        let decoded: Box<dyn Read> = match compression {
            // The reader reads ahead itself (READ_AHEAD): no buffer in between.
            Compression::None => Box::new(input),
            // Several gzip members back to back are one stream (RFC 1952 §2.2, as gzip -d).
            Compression::Gzip => {
                Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(input)))
            }
            Compression::Zstd => {
                let mut d = zstd::stream::read::Decoder::new(input)
                    .map_err(|source| CaptureError::Io { path: path.clone(), source })?;
                d.window_log_max(ZSTD_WINDOW_LOG_MAX)
                    .map_err(|source| CaptureError::Io { path: path.clone(), source })?;
                Box::new(d)
            }
        };
        let mut me = CaptureReader::start(path, decoded, compression).map_err(|e| match e {
            CaptureError::BadMagic { path, magic, .. } if compression != Compression::None => {
                CaptureError::BadMagic {
                    path,
                    magic,
                    after: match compression {
                        Compression::Gzip => " after gzip decompression",
                        _ => " after zstd decompression",
                    },
                }
            }
            e => e,
        })?;
        me.raw_read = raw_read;
        Ok(me)
    }
}

impl<R: Read> CaptureReader<R> {
    pub fn new(path: String, r: R) -> Result<Self, CaptureError> {
        Self::start(path, r, Compression::None)
    }

    /// Reads the file header of `r`, whose bytes were decompressed as `compression` says.
    fn start(path: String, r: R, compression: Compression) -> Result<Self, CaptureError> {
        let mut me = Self {
            path,
            r,
            offset: 0,
            format: Format::Pcapng { big_endian: false },
            ifaces: Vec::new(),
            buf: Vec::new(),
            pos: 0,
            end: 0,
            eof: false,
            compression,
            raw_read: Arc::new(AtomicU64::new(0)),
        };
        let mut magic = [0u8; 4];
        let n = me.fill(&mut magic)?;
        if n == 0 {
            return Err(CaptureError::Empty { path: me.path });
        }
        if n < 4 {
            return Err(me.truncated(0, "file ends inside the magic number".into()));
        }
        let le = u32::from_le_bytes(magic);
        match le {
            0xa1b2c3d4 | 0xa1b23c4d | 0xd4c3b2a1 | 0x4d3cb2a1 => {
                let big_endian = matches!(le, 0xd4c3b2a1 | 0x4d3cb2a1);
                let nanos = matches!(le, 0xa1b23c4d | 0x4d3cb2a1);
                let mut h = [0u8; 20];
                me.read_exact_at(&mut h, "pcap file header")?;
                let linktype = read_u32(&h[16..20], big_endian) & 0x0fff_ffff;
                if !supported(linktype) {
                    return Err(CaptureError::LinkType {
                        path: me.path,
                        linktype,
                        name: linktype_name(linktype),
                        offset: 20,
                    });
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
                    after: "",
                })
            }
        }
        Ok(me)
    }

    /// How the input was compressed.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Bytes read from the file itself so far (compressed bytes when it is compressed; 0 for
    /// a reader made with [`CaptureReader::new`]).
    pub fn raw_read(&self) -> u64 {
        self.raw_read.load(Ordering::Relaxed)
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

    /// Where offsets count from, for messages about a compressed file.
    fn of(&self) -> &'static str {
        match self.compression {
            Compression::None => "",
            Compression::Gzip => " of the gzip-decompressed data",
            Compression::Zstd => " of the zstd-decompressed data",
        }
    }

    fn corrupt(&self, offset: u64, what: String) -> CaptureError {
        CaptureError::Corrupt { path: self.path.clone(), offset, of: self.of(), what }
    }

    fn truncated(&self, offset: u64, what: String) -> CaptureError {
        CaptureError::Truncated { path: self.path.clone(), offset, of: self.of(), what }
    }

    /// A read error at `at`: a compressed stream that ends early is a cut capture, one that
    /// does not decompress is corrupt; anything else is the system's error.
    fn io_error(&self, at: u64, source: io::Error) -> CaptureError {
        match (self.compression, source.kind()) {
            (_, io::ErrorKind::UnexpectedEof) => {
                self.truncated(at, format!("the compressed stream ends early ({source})"))
            }
            (Compression::Gzip | Compression::Zstd, _) => {
                self.corrupt(at, format!("the compressed data does not decompress ({source})"))
            }
            (Compression::None, _) => CaptureError::Io { path: self.path.clone(), source },
        }
    }

    /// Makes the next `n` bytes of the input readable at `buf[pos..]`, reading ahead; how
    /// many are (fewer only at the end of the input). Nearly always they are there already:
    /// that check is inlined, the read is not.
    #[inline]
    fn ensure(&mut self, n: usize) -> Result<usize, CaptureError> {
        if self.end - self.pos >= n {
            return Ok(n);
        }
        self.read_ahead(n)
    }

    #[cold]
    fn read_ahead(&mut self, n: usize) -> Result<usize, CaptureError> {
        let have = self.end - self.pos;
        if self.eof {
            return Ok(have.min(n));
        }
        if self.pos + n > self.buf.len() {
            // Not enough room behind the unread bytes: move them to the front.
            self.buf.copy_within(self.pos..self.end, 0);
            self.pos = 0;
            self.end = have;
            if self.buf.len() < n.max(READ_AHEAD) {
                self.buf.resize(n.max(READ_AHEAD), 0);
            }
        }
        while self.end - self.pos < n {
            match self.r.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    let at = self.offset + (self.end - self.pos) as u64;
                    return Err(self.io_error(at, source));
                }
            }
        }
        Ok((self.end - self.pos).min(n))
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        self.offset += n as u64;
    }

    /// Fills `buf`; the number of bytes read (short only at the end of the input).
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, CaptureError> {
        let n = self.ensure(buf.len())?;
        buf[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.consume(n);
        Ok(n)
    }

    fn read_exact_at(&mut self, buf: &mut [u8], what: &str) -> Result<(), CaptureError> {
        let at = self.offset;
        let n = self.fill(buf)?;
        if n < buf.len() {
            return Err(self.truncated(
                at,
                format!("file ends inside the {what} ({n} of {} bytes)", buf.len()),
            ));
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
        match self.next_record(out)? {
            Record::End => Ok(false),
            Record::InScratch => Ok(true),
            Record::InBuffer { start, len, orig_len, ts_ns, offset } => {
                out.data.clear();
                out.data.extend_from_slice(&self.buf[start..start + len]);
                out.orig_len = orig_len;
                out.ts_ns = ts_ns;
                out.offset = offset;
                Ok(true)
            }
        }
    }

    /// The next frame, lent where it lies: an Ethernet frame of a classic pcap in the reader's
    /// read-ahead buffer (no copy), any other in `scratch` (rebuilt as Ethernet, or taken out
    /// of a pcapng block); `None` at a clean end of file. Valid until the next read.
    pub fn next_frame_ref<'a>(
        &'a mut self,
        scratch: &'a mut CapturedFrame,
    ) -> Result<Option<FrameRef<'a>>, CaptureError> {
        Ok(match self.next_record(scratch)? {
            Record::End => None,
            Record::InScratch => Some(FrameRef {
                data: &scratch.data,
                orig_len: scratch.orig_len,
                ts_ns: scratch.ts_ns,
                offset: scratch.offset,
            }),
            Record::InBuffer { start, len, orig_len, ts_ns, offset } => {
                Some(FrameRef { data: &self.buf[start..start + len], orig_len, ts_ns, offset })
            }
        })
    }

    /// Reads the next record: a frame left where it lies in the buffer (consumed, but not
    /// overwritten before the next read), or one written to `out`.
    fn next_record(&mut self, out: &mut CapturedFrame) -> Result<Record, CaptureError> {
        loop {
            let at = self.offset;
            match self.format {
                Format::Pcap { big_endian, nanos, linktype } => {
                    let n = self.ensure(16)?;
                    if n == 0 {
                        return Ok(Record::End);
                    }
                    if n < 16 {
                        self.consume(n);
                        return Err(self.truncated(
                            at,
                            format!("file ends inside a record header ({n} of 16 bytes)"),
                        ));
                    }
                    let h: [u8; 16] = self.buf[self.pos..self.pos + 16].try_into().unwrap();
                    self.consume(16);
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
                    let len = caplen as usize;
                    let n = self.ensure(len)?;
                    if n < len {
                        // Name the record, not the middle of it.
                        self.consume(n);
                        return Err(self.truncated(
                            at,
                            format!(
                                "record: file ends inside the packet data ({n} of {len} bytes)"
                            ),
                        ));
                    }
                    let ts_ns = sec.saturating_mul(1_000_000_000).saturating_add(if nanos {
                        frac
                    } else {
                        frac * 1000
                    });
                    let start = self.pos;
                    self.consume(len);
                    if linktype == LINKTYPE_ETHERNET {
                        return Ok(Record::InBuffer {
                            start,
                            len,
                            orig_len: origlen.max(caplen),
                            ts_ns,
                            offset: at,
                        });
                    }
                    let data = &self.buf[start..start + len];
                    to_ethernet(linktype, data, origlen.max(caplen), ts_ns, at, out);
                    return Ok(Record::InScratch);
                }
                Format::Pcapng { big_endian } => {
                    let n = self.ensure(8)?;
                    if n == 0 {
                        return Ok(Record::End);
                    }
                    if n < 8 {
                        self.consume(n);
                        return Err(self.truncated(
                            at,
                            format!("file ends inside a block header ({n} of 8 bytes)"),
                        ));
                    }
                    let h: [u8; 8] = self.buf[self.pos..self.pos + 8].try_into().unwrap();
                    self.consume(8);
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
                    let body = len as usize - 8;
                    let n = self.ensure(body)?;
                    if n < body {
                        self.consume(n);
                        return Err(self.truncated(
                            at,
                            format!("file ends inside the block ({n} of {body} bytes)"),
                        ));
                    }
                    // Parsed where it lies (the buffer lent out for the call).
                    let buf = std::mem::take(&mut self.buf);
                    let found = self.pcapng_block(
                        kind,
                        &buf[self.pos..self.pos + body - 4],
                        big_endian,
                        at,
                        out,
                    );
                    self.buf = buf;
                    self.consume(body);
                    if found? {
                        return Ok(Record::InScratch);
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
                self.ifaces.push(Iface { linktype, offset: at, tsresol });
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
                        name: linktype_name(iface.linktype),
                        offset: iface.offset,
                    });
                }
                let data = &body[20..20 + caplen as usize];
                to_ethernet(
                    iface.linktype,
                    data,
                    origlen.max(caplen),
                    ts_to_ns(ts, iface.tsresol),
                    at,
                    out,
                );
                return Ok(true);
            }
            3 => {
                // Simple packet block: no timestamp, first interface.
                if body.len() < 4 || self.ifaces.is_empty() {
                    return Err(self.corrupt(at, "simple packet block without an interface".into()));
                }
                let origlen = read_u32(&body[0..4], big_endian);
                let data = &body[4..4 + (origlen as usize).min(body.len() - 4)];
                let lt = self.ifaces[0].linktype;
                to_ethernet(lt, data, origlen, 0, at, out);
                return Ok(true);
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

/// EtherType 0 (reserved): the synthetic header of a record that is not IP, so the parser
/// counts it as not IP and the record keeps its frame number.
const ETHERTYPE_NOT_IP: u16 = 0;

/// The BSD address family of a NULL/LOOP header as an EtherType. IPv6 is 24 (NetBSD,
/// OpenBSD, BSD/OS), 28 (FreeBSD, DragonFly) or 30 (macOS), as Wireshark's packet-null.c
/// lists them; 10 is Linux's AF_INET6, seen in captures that hand-wrote the header.
fn bsd_af_ethertype(af: u32) -> u16 {
    match af {
        2 => 0x0800,
        10 | 24 | 28 | 30 => 0x86dd,
        _ => ETHERTYPE_NOT_IP,
    }
}

/// Turns a frame of any supported link type into an Ethernet frame in `out` (its buffer
/// reused). A record that cannot be IP gets EtherType 0; one too short for its link header
/// becomes an empty frame with its wire length (the parser counts it as cut short, or as
/// malformed when it was that short on the wire too).
fn to_ethernet(
    linktype: u32,
    data: &[u8],
    orig_len: u32,
    ts_ns: u64,
    offset: u64,
    out: &mut CapturedFrame,
) {
    out.ts_ns = ts_ns;
    out.offset = offset;
    let mut synth = |src_mac: [u8; 6], ethertype: u16, payload: &[u8], wire_payload: u32| {
        out.data.clear();
        out.data.extend_from_slice(&[0; 6]);
        out.data.extend_from_slice(&src_mac);
        out.data.extend_from_slice(&ethertype.to_be_bytes());
        out.data.extend_from_slice(payload);
        out.orig_len = 14u32.saturating_add(wire_payload);
    };
    let ip_version = |b: &[u8]| match b.first().map(|b| b >> 4) {
        Some(4) => 0x0800,
        Some(6) => 0x86dd,
        _ => ETHERTYPE_NOT_IP,
    };
    let link_header = |len: usize| data.len() >= len;
    match linktype {
        LINKTYPE_ETHERNET => {
            out.data.clear();
            out.data.extend_from_slice(data);
            out.orig_len = orig_len;
        }
        LINKTYPE_RAW | LINKTYPE_RAW_ALT | LINKTYPE_RAW_OPENBSD | LINKTYPE_IPV4 | LINKTYPE_IPV6 => {
            synth([0; 6], ip_version(data), data, orig_len);
        }
        LINKTYPE_NULL | LINKTYPE_LOOP if link_header(4) => {
            // NULL: the family in the capturing host's byte order, which the file does not
            // record; families are small, so a value with high bits set is the other order
            // (Wireshark's rule). LOOP: network byte order (OpenBSD).
            let be = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            let af = if linktype == LINKTYPE_LOOP || be & 0xffff_0000 == 0 {
                be
            } else {
                be.swap_bytes()
            };
            let mut et = bsd_af_ethertype(af);
            // The family must agree with the IP header behind it.
            if et != ip_version(&data[4..]) {
                et = ETHERTYPE_NOT_IP;
            }
            synth([0; 6], et, &data[4..], orig_len.saturating_sub(4));
        }
        LINKTYPE_SLL if link_header(16) => {
            // pkttype(2) hatype(2) halen(2) addr(8) protocol(2)
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&data[6..12]);
            let et = u16::from_be_bytes([data[14], data[15]]);
            synth(mac, et, &data[16..], orig_len.saturating_sub(16));
        }
        LINKTYPE_SLL2 if link_header(20) => {
            // protocol(2) reserved(2) ifindex(4) hatype(2) pkttype(1) halen(1) addr(8)
            let et = u16::from_be_bytes([data[0], data[1]]);
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&data[12..18]);
            synth(mac, et, &data[20..], orig_len.saturating_sub(20));
        }
        _ => {
            // Shorter than its link header (or a link type `supported` let through by
            // mistake): no Ethernet header can be made.
            out.data.clear();
            out.orig_len = orig_len;
        }
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

    /// Frames lent where they lie are the frames a copying read gives, record for record:
    /// across several refills of the read-ahead buffer (records of every length straddle its
    /// end), for a link type rebuilt as Ethernet and for pcapng, and both stop at a record
    /// cut short.
    #[test]
    fn lent_frames_equal_copied_frames() {
        let frames: Vec<Vec<u8>> =
            (0..9000u32).map(|i| (0..60 + i % 1400).map(|j| (i ^ j) as u8).collect()).collect();
        let records: Vec<(&[u8], u32)> = frames.iter().map(|f| (&f[..], f.len() as u32)).collect();
        let classic = pcap(true, &records);
        assert!(classic.len() > 3 * READ_AHEAD, "the capture outgrows the read-ahead buffer");
        let raw_ip = pcap_linktype(101, &[&frames[7][..], &frames[8][..]]);
        let mut w = PcapngWriter::new(Vec::new()).unwrap();
        w.interface("a", 65535).unwrap();
        for (i, f) in frames.iter().take(50).enumerate() {
            w.packet(0, i as u64, f, f.len() as u32 + 4, None).unwrap();
        }
        let ng = w.into_inner();
        let cut = &classic[..classic.len() - 10];
        for (bytes, records) in [(&classic[..], 9000), (&raw_ip[..], 2), (&ng[..], 50), (cut, 8999)]
        {
            let copied = read_all(bytes);
            let mut r = CaptureReader::new("t".into(), bytes).unwrap();
            let mut scratch = CapturedFrame::default();
            let mut lent = Vec::new();
            let end = loop {
                match r.next_frame_ref(&mut scratch) {
                    Ok(Some(f)) => lent.push((f.data.to_vec(), f.orig_len, f.ts_ns, f.offset)),
                    Ok(None) => break None,
                    Err(e) => break Some(e.to_string()),
                }
            };
            let mut c = CaptureReader::new("t".into(), bytes).unwrap();
            let mut want = Vec::new();
            let want_end = loop {
                match c.next_frame() {
                    Ok(Some(f)) => want.push((f.data, f.orig_len, f.ts_ns, f.offset)),
                    Ok(None) => break None,
                    Err(e) => break Some(e.to_string()),
                }
            };
            assert_eq!(lent.len(), records);
            assert_eq!(lent, want);
            assert_eq!(end, want_end);
            assert_eq!(end.is_some(), copied.is_err());
        }
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
        use wirewatch_testkit::craft::TcpSegment;
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
                (p.src(), p.dst(), p.sport, p.dport, p.seq),
                (want.src(), want.dst(), want.sport, want.dport, want.seq),
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
        assert!(matches!(read_all(&cut), Err(CaptureError::Truncated { offset: 24, .. })));
        // every prefix of a valid pcapng either reads or fails cleanly
        let mut w = PcapngWriter::new(Vec::new()).unwrap();
        w.interface("a", 128).unwrap();
        w.packet(0, 1, &[9u8; 70], 70, Some("c")).unwrap();
        let full = w.into_inner();
        for n in 0..full.len() {
            let _ = read_all(&full[..n]);
        }
    }

    fn open_bytes(bytes: Vec<u8>) -> Result<Vec<CapturedFrame>, CaptureError> {
        let mut r = CaptureReader::decompressing(
            "t".into(),
            Box::new(io::Cursor::new(bytes)),
            Arc::new(AtomicU64::new(0)),
        )?;
        let mut v = Vec::new();
        while let Some(f) = r.next_frame()? {
            v.push(f);
        }
        Ok(v)
    }

    #[test]
    fn bsd_loopback_link_types_in_either_byte_order() {
        use wirewatch_testkit::craft::TcpSegment;
        let v4 = TcpSegment::new("10.0.0.1".parse().unwrap(), 1, "10.0.0.2".parse().unwrap(), 2);
        let v6 = TcpSegment::new("fd00::1".parse().unwrap(), 3, "fd00::2".parse().unwrap(), 4);
        for (seg, lt, header, ok) in [
            (&v4, 0u32, 2u32.to_le_bytes(), true), // NULL from a little-endian host
            (&v4, 0, 2u32.to_be_bytes(), true),    // NULL from a big-endian host
            (&v6, 0, 30u32.to_le_bytes(), true),   // macOS
            (&v6, 0, 28u32.to_be_bytes(), true),   // FreeBSD, big-endian
            (&v6, 0, 24u32.to_le_bytes(), true),   // NetBSD/OpenBSD
            (&v4, 108, 2u32.to_be_bytes(), true),  // LOOP: network byte order
            (&v6, 108, 24u32.to_be_bytes(), true),
            (&v4, 0, 24u32.to_le_bytes(), false), // family says IPv6, header is IPv4
            (&v4, 0, 7u32.to_le_bytes(), false),  // not an IP family
        ] {
            let mut rec = header.to_vec();
            rec.extend_from_slice(&seg.ip_bytes());
            let f = read_all(&pcap_linktype(lt, &[&rec])).unwrap();
            let got = crate::packet::decode(&f[0].data, f[0].orig_len, 0, 0);
            if ok {
                let p = got.unwrap_or_else(|e| panic!("linktype {lt} {header:?}: {e:?}"));
                assert_eq!((p.sport, p.dport, p.payload_len), (seg.sport, seg.dport, 0));
            } else {
                let e = got.unwrap_err();
                assert_eq!(
                    crate::packet::unread_cause(&f[0].data, f[0].orig_len, e),
                    crate::packet::Unread::NotIp
                );
            }
        }
        // DLT_RAW as OpenBSD numbers it.
        let f = read_all(&pcap_linktype(14, &[&v4.ip_bytes()])).unwrap();
        assert!(crate::packet::decode(&f[0].data, f[0].orig_len, 0, 0).is_ok());
        // A record shorter than its link header is still a frame (numbering stays tshark's).
        let f = read_all(&pcap_linktype(0, &[&[2, 0]])).unwrap();
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn gzip_and_zstd_are_told_by_their_magic() {
        use std::io::Write as _;
        let plain = pcap(false, &[(&[1u8; 60], 60), (&[2u8; 70], 70)]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::stream::encode_all(&plain[..], 3).unwrap();
        for bytes in [plain.clone(), gz.clone(), zst.clone()] {
            let f = open_bytes(bytes).unwrap();
            assert_eq!(f.iter().map(|f| f.data.len()).collect::<Vec<_>>(), [60, 70]);
        }
        // Two gzip members are one stream (as `cat a.gz b.gz` makes).
        let mut two = gz.clone();
        let mut more = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        more.write_all(&[5, 0, 0, 0, 7, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 9, 9, 9, 9]).unwrap();
        two.extend_from_slice(&more.finish().unwrap());
        assert_eq!(open_bytes(two).unwrap().len(), 3);
        // A compressed stream cut short is a cut capture, after the records before the cut
        // (zstd hands out whole blocks of up to 128 KiB: the capture spans several).
        let records: Vec<Vec<u8>> = (0..3000u32).map(|i| i.to_le_bytes().repeat(25)).collect();
        let big = pcap(false, &records.iter().map(|r| (&r[..], 100)).collect::<Vec<_>>());
        let zst = zstd::stream::encode_all(&big[..], 1).unwrap();
        let cut = &zst[..zst.len() - 20];
        let mut r = CaptureReader::decompressing(
            "t.zst".into(),
            Box::new(io::Cursor::new(cut.to_vec())),
            Arc::new(AtomicU64::new(0)),
        )
        .unwrap();
        let mut frames = 0;
        let err = loop {
            match r.next_frame() {
                Ok(Some(_)) => frames += 1,
                Ok(None) => panic!("a cut zstd stream ended cleanly"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, CaptureError::Truncated { .. }), "{err} after {frames} frames");
        assert!(frames > 1000 && frames < 3000, "{frames} frames before the cut");
        // Garbage after a gzip header does not decompress: corrupt, named.
        let mut bad = gz.clone();
        for b in &mut bad[12..40] {
            *b ^= 0x5a;
        }
        match open_bytes(bad) {
            Err(CaptureError::Corrupt { what, .. } | CaptureError::Truncated { what, .. }) => {
                assert!(what.contains("compressed"), "{what}");
            }
            other => panic!("{other:?}"),
        }
        // Compressed, but not a capture inside.
        let junk = zstd::stream::encode_all(&b"hello, not a capture"[..], 3).unwrap();
        assert!(
            matches!(open_bytes(junk), Err(CaptureError::BadMagic { after, .. }) if after.contains("zstd"))
        );
    }
}
