//! A minimal pcapng writer: section header naming wirewatch, one interface block per vantage
//! (Ethernet, nanosecond timestamps, its snap length), enhanced packet blocks with the
//! original length and an optional comment.
use std::io::{self, Write};

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 0x0000_0001;
const EPB: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;
const LINKTYPE_ETHERNET: u16 = 1;

pub struct PcapngWriter<W: Write> {
    out: W,
    interfaces: u32,
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

fn option(buf: &mut Vec<u8>, code: u16, value: &[u8]) {
    buf.extend_from_slice(&code.to_le_bytes());
    buf.extend_from_slice(&(value.len() as u16).to_le_bytes());
    buf.extend_from_slice(value);
    buf.resize(pad4(buf.len()), 0);
}

fn block(out: &mut impl Write, kind: u32, body: &[u8]) -> io::Result<()> {
    let total = (12 + body.len()) as u32;
    out.write_all(&kind.to_le_bytes())?;
    out.write_all(&total.to_le_bytes())?;
    out.write_all(body)?;
    out.write_all(&total.to_le_bytes())
}

impl<W: Write> PcapngWriter<W> {
    /// Writes the section header.
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&(-1i64).to_le_bytes());
        let appl = format!("wirewatch {}", env!("CARGO_PKG_VERSION"));
        option(&mut b, SHB_USERAPPL, appl.as_bytes());
        option(&mut b, OPT_END, &[]);
        block(&mut out, SHB, &b)?;
        Ok(Self { out, interfaces: 0 })
    }

    /// Adds an interface (vantage) and returns its id for [`Self::packet`].
    pub fn interface(&mut self, name: &str, snaplen: u32) -> io::Result<u32> {
        let mut b = Vec::with_capacity(32 + name.len());
        b.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&snaplen.to_le_bytes());
        option(&mut b, IF_NAME, name.as_bytes());
        option(&mut b, IF_TSRESOL, &[9]);
        option(&mut b, OPT_END, &[]);
        block(&mut self.out, IDB, &b)?;
        self.interfaces += 1;
        Ok(self.interfaces - 1)
    }

    /// Writes one packet: `data` as captured, `orig_len` on the wire, time in ns since the
    /// Unix epoch, and an optional comment.
    pub fn packet(
        &mut self,
        iface: u32,
        ts_ns: u64,
        data: &[u8],
        orig_len: u32,
        comment: Option<&str>,
    ) -> io::Result<()> {
        let mut b = Vec::with_capacity(32 + pad4(data.len()) + comment.map_or(0, |c| c.len() + 8));
        b.extend_from_slice(&iface.to_le_bytes());
        b.extend_from_slice(&((ts_ns >> 32) as u32).to_le_bytes());
        b.extend_from_slice(&(ts_ns as u32).to_le_bytes());
        b.extend_from_slice(&(data.len() as u32).to_le_bytes());
        b.extend_from_slice(&orig_len.max(data.len() as u32).to_le_bytes());
        b.extend_from_slice(data);
        b.resize(pad4(b.len()), 0);
        if let Some(c) = comment {
            // Option values are at most 65535 bytes.
            let c = &c.as_bytes()[..c.len().min(65000)];
            option(&mut b, OPT_COMMENT, c);
            option(&mut b, OPT_END, &[]);
        }
        block(&mut self.out, EPB, &b)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}
