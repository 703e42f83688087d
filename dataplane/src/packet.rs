//! The decoded TCP packet the tracker works on, made from a frame by the shared parser.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dataplane_common::{classify, parse_tcp_options, tcp_flags, Outcome, TcpOptions, TCP_MIN_HLEN};

use crate::flow::FlowKey;
use crate::seq::SeqNumber;

#[derive(Clone, Debug)]
pub struct TcpPacket {
    pub ts_ns: u64,
    pub vantage: u16,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// Outermost VLAN ID, 0 when untagged.
    pub vlan: u16,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: SeqNumber,
    pub ack: SeqNumber,
    pub flags: u8,
    /// Raw window field (unscaled).
    pub window: u16,
    pub payload_len: u32,
    /// IPv4 identification; 0 for IPv6 (no ID outside fragments).
    pub ip_id: u16,
    /// TTL / hop limit.
    pub ttl: u8,
    pub opts: TcpOptions,
    pub orig_len: u32,
    /// The flow this packet belongs to (as its vantage sees it), and the sender's side in it.
    pub key: FlowKey,
    pub side: u8,
}

impl TcpPacket {
    #[inline]
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
    /// Sequence space the segment occupies: payload plus one for SYN and for FIN.
    #[inline]
    pub fn seq_len(&self) -> u32 {
        self.payload_len + self.has(tcp_flags::SYN) as u32 + self.has(tcp_flags::FIN) as u32
    }
    #[inline]
    pub fn seq_end(&self) -> SeqNumber {
        self.seq + self.seq_len()
    }
}

fn be16(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}
fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// Decodes an Ethernet frame captured with `orig_len` bytes on the wire.
pub fn decode(frame: &[u8], orig_len: u32, ts_ns: u64, vantage: u16) -> Result<TcpPacket, Outcome> {
    let o = classify(frame, orig_len as usize)?;
    let l3 = o.l3_off as usize;
    let l4 = o.l4_off as usize;
    let (s16, d16, ip_id, ttl) = if o.ip_version == 4 {
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s[10..12].copy_from_slice(&[0xff, 0xff]);
        d[10..12].copy_from_slice(&[0xff, 0xff]);
        s[12..16].copy_from_slice(&frame[l3 + 12..l3 + 16]);
        d[12..16].copy_from_slice(&frame[l3 + 16..l3 + 20]);
        (s, d, be16(frame, l3 + 4), frame[l3 + 8])
    } else {
        let s: [u8; 16] = frame[l3 + 8..l3 + 24].try_into().unwrap();
        let d: [u8; 16] = frame[l3 + 24..l3 + 40].try_into().unwrap();
        (s, d, 0, frame[l3 + 7])
    };
    let v6 = o.ip_version != 4;
    let to_ip = |b: [u8; 16]| -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::from(b))
        } else {
            IpAddr::V4(Ipv4Addr::new(b[12], b[13], b[14], b[15]))
        }
    };
    let (src, dst) = (to_ip(s16), to_ip(d16));
    let (sport, dport) = (be16(frame, l4), be16(frame, l4 + 2));
    let vlan = o.vlan_ids[0];
    let (key, side) = FlowKey::from_endpoints(s16, sport, d16, dport, vlan, v6, vantage);
    let hlen = o.tcp_hdr_len as usize;
    let opt_end = (l4 + hlen).min(frame.len());
    let opts = parse_tcp_options(&frame[l4 + TCP_MIN_HLEN..opt_end], hlen - TCP_MIN_HLEN);
    Ok(TcpPacket {
        ts_ns,
        vantage,
        dst_mac: frame[0..6].try_into().unwrap(),
        src_mac: frame[6..12].try_into().unwrap(),
        vlan,
        src,
        dst,
        sport,
        dport,
        seq: SeqNumber(be32(frame, l4 + 4)),
        ack: SeqNumber(be32(frame, l4 + 8)),
        flags: frame[l4 + 13],
        window: be16(frame, l4 + 14),
        payload_len: o.payload_len(),
        ip_id,
        ttl,
        opts,
        orig_len,
        key,
        side: side as u8,
    })
}
