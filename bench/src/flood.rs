//! The SYN-flood capture: a documented model, deterministic from a seed.
//!
//! - The flood: `syns` SYNs evenly spaced at `rate` per second toward one server port
//!   (`SERVER`:80). Each has a source address drawn uniformly from all of IPv4 (never the real
//!   client's or the server's), a source port uniform in 1024–65535, a random ISN and IP ID,
//!   TTL 64, window 512 and no TCP options, as a spoofing flood tool sends them: one SYN per
//!   spoofed source, nothing ever answered.
//! - Inside it, one real connection (`REAL_CLIENT` → `SERVER`:80) starting at 40 % of the flood:
//!   handshake with options, a 300 B request, two 1448 B response segments, then the client
//!   advertises a zero window for 1.2 s while the server sends two one-byte zero-window probes
//!   (200 ms and 600 ms in); the client's window update ends the episode (a `zero_window` event,
//!   being ≥ 0.5 s), the server sends one more segment and both sides close with FIN.
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use dataplane_common::tcp_flags::{ACK, FIN, PSH, SYN};
use wirewatch_testkit::craft::TcpSegment;

use crate::pcap::PcapWriter;

pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
pub const SERVER_PORT: u16 = 80;
pub const REAL_CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
pub const REAL_CLIENT_PORT: u16 = 40000;

#[derive(Clone, Copy, Debug)]
pub struct FloodModel {
    pub syns: u64,
    /// SYNs per second.
    pub rate: u64,
    pub seed: u64,
}

pub struct FloodCapture {
    pub frames: u64,
    pub duration_ns: u64,
}

use bench::gen::Rng;

/// The real connection's frames, in time order, starting at `t0`.
fn real_connection(t0: u64) -> Vec<(u64, Vec<u8>)> {
    const MS: u64 = 1_000_000;
    let (c, s) = (IpAddr::V4(REAL_CLIENT), IpAddr::V4(SERVER));
    let (c_isn, s_isn) = (0x1000_0000u32, 0x2000_0000u32);
    let mut out = Vec::new();
    let mut push =
        |t: u64, from_client: bool, flags: u8, seq: u32, ack: u32, win: u16, len: usize| {
            let mut seg = if from_client {
                TcpSegment::new(c, REAL_CLIENT_PORT, s, SERVER_PORT)
            } else {
                TcpSegment::new(s, SERVER_PORT, c, REAL_CLIENT_PORT)
            };
            if !from_client {
                std::mem::swap(&mut seg.src_mac, &mut seg.dst_mac);
            }
            seg.flags = flags;
            seg.seq = seq;
            seg.ack = ack;
            seg.window = win;
            seg.payload_len = len;
            seg.ip_id = (t / MS) as u16;
            if flags & SYN != 0 {
                seg.mss = Some(1460);
                seg.sack_permitted = true;
                seg.wscale = Some(7);
            }
            out.push((t, seg.frame()));
        };
    let mut cs = c_isn.wrapping_add(1);
    let mut ss = s_isn.wrapping_add(1);
    push(t0, true, SYN, c_isn, 0, 64240, 0);
    push(t0 + MS / 2, false, SYN | ACK, s_isn, cs, 65160, 0);
    push(t0 + MS, true, ACK, cs, ss, 502, 0);
    push(t0 + 2 * MS, true, ACK | PSH, cs, ss, 502, 300);
    cs = cs.wrapping_add(300);
    push(t0 + 2 * MS + MS / 2, false, ACK, ss, cs, 509, 1448);
    push(t0 + 2 * MS + MS / 2 + 12_000, false, ACK | PSH, ss.wrapping_add(1448), cs, 509, 1448);
    ss = ss.wrapping_add(2 * 1448);
    // The client's application stops reading: it ACKs everything with a zero window.
    let zw = t0 + 3 * MS;
    push(zw, true, ACK, cs, ss, 0, 0);
    for probe_at in [200 * MS, 600 * MS] {
        push(zw + probe_at, false, ACK, ss, cs, 509, 1);
        push(zw + probe_at + MS / 2, true, ACK, cs, ss, 0, 0);
    }
    // The window opens again after 1.2 s: the episode ends here.
    let open = zw + 1200 * MS;
    push(open, true, ACK, cs, ss, 502, 0);
    push(open + MS / 2, false, ACK | PSH, ss, cs, 509, 1448);
    ss = ss.wrapping_add(1448);
    push(open + MS, true, ACK, cs, ss, 502, 0);
    push(open + 2 * MS, true, FIN | ACK, cs, ss, 502, 0);
    push(open + 2 * MS + MS / 2, false, FIN | ACK, ss, cs.wrapping_add(1), 509, 0);
    push(open + 3 * MS, true, ACK, cs.wrapping_add(1), ss.wrapping_add(1), 502, 0);
    out
}

/// Writes the flood capture (full frames) to `path`.
pub fn generate(m: &FloodModel, path: &Path) -> std::io::Result<FloodCapture> {
    let period = 1_000_000_000 / m.rate.max(1);
    let duration_ns = m.syns * period;
    let mut rng = Rng(m.seed | 1);
    let mut real = real_connection(duration_ns * 2 / 5).into_iter().peekable();
    let mut w = PcapWriter::create(path, 65535)?;
    let mut frames = 0u64;
    let mut seg = TcpSegment::new(IpAddr::V4(REAL_CLIENT), 1024, IpAddr::V4(SERVER), SERVER_PORT);
    seg.flags = SYN;
    seg.window = 512;
    for i in 0..m.syns {
        let ts = i * period;
        while let Some((t, f)) = real.next_if(|(t, _)| *t <= ts) {
            w.write(t, &f, f.len() as u32)?;
            frames += 1;
        }
        let src = loop {
            let a = Ipv4Addr::from(rng.next_u64() as u32);
            if a != REAL_CLIENT && a != SERVER {
                break a;
            }
        };
        let (a, b) = (rng.next_u64(), rng.next_u64());
        seg.src = IpAddr::V4(src);
        seg.sport = 1024 + (a % 64512) as u16;
        seg.seq = b as u32;
        seg.ip_id = (b >> 32) as u16;
        let f = seg.frame();
        w.write(ts, &f, f.len() as u32)?;
        frames += 1;
    }
    for (t, f) in real {
        w.write(t, &f, f.len() as u32)?;
        frames += 1;
    }
    w.finish()?;
    Ok(FloodCapture { frames, duration_ns })
}
