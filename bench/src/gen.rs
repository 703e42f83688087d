//! The benchmark capture: a documented traffic model, deterministic from a seed.
//!
//! Per flow (client 10.a.b.c → server 10.200.x.1:80/443, start uniform over `duration`):
//! - 2 % are SYNs nobody answers (the SYN and two retransmissions, 1 s and 3 s later);
//! - the rest do the handshake (MSS, SACK-permitted, window scale), then request/response
//!   rounds until the flow has used its share of packets: a 100–700 B request, a response of
//!   1–4 segments (70 % full 1448 B, 30 % 200–1200 B), the client ACKing every second segment;
//! - anomalies, per flow: 1 % lose a response segment (retransmitted 200 ms later), 0.5 % get
//!   two response segments reordered, 0.2 % see the client advertise a zero window for 50 ms;
//! - the end: 80 % FIN/ACK both ways, 10 % a client RST, 10 % still open at the end.
//!
//! RTT per flow is 0.2–20 ms. Frames are full size (payload zeros) with valid checksums so
//! every tool reads the same file; the engine gets the first 128 bytes, as from the XDP program.
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use dataplane::worker::RawFrame;
use dataplane_common::tcp_flags::{ACK, FIN, PSH, RST, SYN};
use wirewatch_testkit::craft::TcpSegment;

#[derive(Clone, Copy, Debug)]
pub struct Model {
    pub flows: u32,
    pub packets: u64,
    pub seed: u64,
    pub duration_ns: u64,
}

/// One packet to build: compact so 10M of them sort in memory.
#[derive(Clone, Copy)]
struct Pkt {
    ts: u64,
    flow: u32,
    from_client: bool,
    flags: u8,
    seq: u32,
    ack: u32,
    win: u16,
    len: u16,
}

/// xorshift64*, deterministic from its seed (the capture models share it).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// The in-memory capture the engine replays: frames cut to `snap` bytes.
pub struct Capture {
    pub data: Vec<u8>,
    /// (offset, len in `data`, original length, timestamp ns)
    pub frames: Vec<(u32, u16, u32, u64)>,
    pub flows: u32,
}

impl Capture {
    pub fn frame(&self, i: usize) -> (&[u8], u32, u64) {
        let (off, len, orig, ts) = self.frames[i];
        (&self.data[off as usize..off as usize + len as usize], orig, ts)
    }

    /// Frame `i` as a receive ring hands it to the engine (at vantage 0), for `process_frames`.
    pub fn raw_frame(&self, i: usize) -> RawFrame<'_> {
        let (data, orig_len, ts_ns) = self.frame(i);
        RawFrame { data, orig_len, ts_ns, vantage: 0 }
    }
}

fn flow_packets(m: &Model, rng: &mut Rng, flow: u32, out: &mut Vec<Pkt>) {
    let per_flow = (m.packets / m.flows as u64).max(4);
    let start = rng.below(m.duration_ns);
    let rtt = 200_000 + rng.below(19_800_000);
    let mut t = start;
    let push = |out: &mut Vec<Pkt>,
                t: u64,
                from_client: bool,
                flags: u8,
                seq: u32,
                ack: u32,
                win: u16,
                len: u16| {
        out.push(Pkt { ts: t, flow, from_client, flags, seq, ack, win, len });
    };
    let (c_isn, s_isn) = (rng.next_u64() as u32, rng.next_u64() as u32);
    if rng.chance(20) {
        for back in [0, 1_000_000_000, 3_000_000_000] {
            push(out, t + back, true, SYN, c_isn, 0, 64240, 0);
        }
        return;
    }
    push(out, t, true, SYN, c_isn, 0, 64240, 0);
    t += rtt / 2;
    push(out, t, false, SYN | ACK, s_isn, c_isn.wrapping_add(1), 65160, 0);
    t += rtt / 2;
    let (mut cs, mut ss) = (c_isn.wrapping_add(1), s_isn.wrapping_add(1));
    push(out, t, true, ACK, cs, ss, 502, 0);
    let lose = rng.chance(10);
    let reorder = rng.chance(5);
    let zero_window = rng.chance(2);
    let mut used = 3u64;
    let mut round = 0;
    while used + 4 < per_flow {
        round += 1;
        t += 1_000 + rng.below(5_000_000);
        let req = 100 + rng.below(600) as u16;
        push(out, t, true, ACK | PSH, cs, ss, 502, req);
        cs = cs.wrapping_add(req as u32);
        t += rtt / 2;
        let segs = 1 + rng.below(4) as usize;
        let mut resp = Vec::with_capacity(segs);
        for _ in 0..segs {
            let len = if rng.chance(700) { 1448 } else { 200 + rng.below(1000) as u16 };
            resp.push((ss, len));
            ss = ss.wrapping_add(len as u32);
        }
        if reorder && round == 1 && resp.len() >= 2 {
            resp.swap(0, 1);
        }
        for (k, (seq, len)) in resp.iter().enumerate() {
            let tk = t + k as u64 * 12_000;
            if lose && round == 1 && k == 0 {
                // Lost before the sensor saw it; the retransmission comes after an RTO.
                push(out, tk + 200_000_000, false, ACK | PSH, *seq, cs, 509, *len);
                continue;
            }
            push(out, tk, false, ACK | PSH, *seq, cs, 509, *len);
            used += 1;
        }
        t += segs as u64 * 12_000 + rtt / 2;
        if zero_window && round == 1 {
            push(out, t, true, ACK, cs, ss, 0, 0);
            push(out, t + 50_000_000, true, ACK, cs, ss, 502, 0);
            t += 50_000_000;
            used += 2;
        } else {
            for _ in 0..segs.div_ceil(2) {
                push(out, t, true, ACK, cs, ss, 502, 0);
                used += 1;
            }
        }
        if lose && round == 1 {
            t += 200_000_000;
        }
        used += 1;
    }
    t += 1_000_000;
    match rng.below(10) {
        0 => push(out, t, true, RST | ACK, cs, ss, 0, 0),
        1 => {}
        _ => {
            push(out, t, true, FIN | ACK, cs, ss, 502, 0);
            push(out, t + rtt / 2, false, FIN | ACK, ss, cs.wrapping_add(1), 509, 0);
            push(out, t + rtt, true, ACK, cs.wrapping_add(1), ss.wrapping_add(1), 502, 0);
        }
    }
}

fn endpoints(flow: u32) -> (IpAddr, u16, IpAddr, u16) {
    let c = Ipv4Addr::new(10, (flow >> 16) as u8 & 0x7f, (flow >> 8) as u8, flow as u8);
    let s = Ipv4Addr::new(10, 200, (flow % 200) as u8, 1);
    (
        IpAddr::V4(c),
        1024 + (flow % 60000) as u16,
        IpAddr::V4(s),
        if flow.is_multiple_of(3) { 443 } else { 80 },
    )
}

fn frame(p: &Pkt) -> Vec<u8> {
    let (c, cp, s, sp) = endpoints(p.flow);
    let mut seg =
        if p.from_client { TcpSegment::new(c, cp, s, sp) } else { TcpSegment::new(s, sp, c, cp) };
    if !p.from_client {
        std::mem::swap(&mut seg.src_mac, &mut seg.dst_mac);
    }
    seg.seq = p.seq;
    seg.ack = p.ack;
    seg.flags = p.flags;
    seg.window = p.win;
    seg.payload_len = p.len as usize;
    seg.ip_id = (p.seq as u16) ^ (p.flow as u16);
    if p.flags & SYN != 0 {
        seg.mss = Some(1460);
        seg.sack_permitted = true;
        seg.wscale = Some(7);
    }
    seg.frame()
}

/// Generates the capture: writes the full frames to `pcap` (nanosecond pcap, Ethernet) and
/// returns the snapped frames for the engine.
pub fn generate(m: &Model, pcap: &Path, snap: usize) -> std::io::Result<Capture> {
    let mut rng = Rng(m.seed | 1);
    let mut pkts = Vec::with_capacity(m.packets as usize + m.flows as usize * 4);
    for f in 0..m.flows {
        flow_packets(m, &mut rng, f, &mut pkts);
    }
    pkts.sort_by_key(|p| p.ts);
    let mut w = BufWriter::with_capacity(1 << 20, File::create(pcap)?);
    // pcap global header, nanosecond magic, linktype 1.
    w.write_all(&0xa1b2_3c4du32.to_le_bytes())?;
    w.write_all(&2u16.to_le_bytes())?;
    w.write_all(&4u16.to_le_bytes())?;
    w.write_all(&[0u8; 8])?;
    w.write_all(&65535u32.to_le_bytes())?;
    w.write_all(&1u32.to_le_bytes())?;
    let mut cap = Capture {
        data: Vec::with_capacity(pkts.len() * snap),
        frames: Vec::with_capacity(pkts.len()),
        flows: m.flows,
    };
    for p in &pkts {
        let f = frame(p);
        w.write_all(&((p.ts / 1_000_000_000) as u32).to_le_bytes())?;
        w.write_all(&((p.ts % 1_000_000_000) as u32).to_le_bytes())?;
        w.write_all(&(f.len() as u32).to_le_bytes())?;
        w.write_all(&(f.len() as u32).to_le_bytes())?;
        w.write_all(&f)?;
        let cut = f.len().min(snap);
        cap.frames.push((cap.data.len() as u32, cut as u16, f.len() as u32, p.ts));
        cap.data.extend_from_slice(&f[..cut]);
    }
    w.flush()?;
    Ok(cap)
}
