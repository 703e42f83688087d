//! Builds Ethernet frames (VLAN tags, IPv4/IPv6 with extension headers, TCP with options)
//! with correct checksums: fixtures for the XDP program, synthetic captures for tests and
//! benchmarks, and crafted segments the lab injects through raw sockets.
use std::net::IpAddr;

use dataplane_common::{
    tcp_flags, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN, IPPROTO_TCP,
};

#[derive(Clone, Debug)]
pub struct TcpSegment {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// 802.1Q/802.1ad VLAN IDs, outermost first.
    pub vlans: Vec<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub ttl: u8,
    pub ip_id: u16,
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack_permitted: bool,
    pub timestamp: Option<(u32, u32)>,
    pub payload_len: usize,
    /// IPv6 extension headers to insert (next-header codes: 0, 43, 60 or 44).
    pub ipv6_ext: Vec<u8>,
    /// IPv4 options bytes (padded to a multiple of 4).
    pub ipv4_options: Vec<u8>,
}

impl TcpSegment {
    pub fn new(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Self {
        Self {
            src_mac: [0x02, 0, 0, 0, 0, 0x01],
            dst_mac: [0x02, 0, 0, 0, 0, 0x02],
            vlans: Vec::new(),
            src,
            dst,
            sport,
            dport,
            seq: 0,
            ack: 0,
            flags: tcp_flags::ACK,
            window: 65535,
            ttl: 64,
            ip_id: 0,
            mss: None,
            wscale: None,
            sack_permitted: false,
            timestamp: None,
            payload_len: 0,
            ipv6_ext: Vec::new(),
            ipv4_options: Vec::new(),
        }
    }

    fn tcp_options(&self) -> Vec<u8> {
        let mut o = Vec::new();
        if let Some(m) = self.mss {
            o.extend_from_slice(&[2, 4]);
            o.extend_from_slice(&m.to_be_bytes());
        }
        if self.sack_permitted {
            o.extend_from_slice(&[4, 2]);
        }
        if let Some((v, e)) = self.timestamp {
            o.extend_from_slice(&[1, 1, 8, 10]);
            o.extend_from_slice(&v.to_be_bytes());
            o.extend_from_slice(&e.to_be_bytes());
        }
        if let Some(w) = self.wscale {
            o.extend_from_slice(&[1, 3, 3, w]);
        }
        while o.len() % 4 != 0 {
            o.push(0);
        }
        o
    }

    /// The TCP header and payload (zero bytes) with the checksum over the pseudo-header.
    pub fn tcp_bytes(&self) -> Vec<u8> {
        let opts = self.tcp_options();
        let hlen = 20 + opts.len();
        let mut t = vec![0u8; hlen + self.payload_len];
        t[0..2].copy_from_slice(&self.sport.to_be_bytes());
        t[2..4].copy_from_slice(&self.dport.to_be_bytes());
        t[4..8].copy_from_slice(&self.seq.to_be_bytes());
        t[8..12].copy_from_slice(&self.ack.to_be_bytes());
        t[12] = ((hlen / 4) as u8) << 4;
        t[13] = self.flags;
        t[14..16].copy_from_slice(&self.window.to_be_bytes());
        t[20..hlen].copy_from_slice(&opts);
        let sum = pseudo_header_sum(self.src, self.dst, t.len() as u32);
        let c = checksum_finish(sum + checksum_add(&t));
        t[16..18].copy_from_slice(&c.to_be_bytes());
        t
    }

    /// The IP packet (header, extension headers, TCP).
    pub fn ip_bytes(&self) -> Vec<u8> {
        let tcp = self.tcp_bytes();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut opts = self.ipv4_options.clone();
                while !opts.len().is_multiple_of(4) {
                    opts.push(0);
                }
                let ihl = 20 + opts.len();
                let mut h = vec![0u8; ihl];
                h[0] = 0x40 | (ihl / 4) as u8;
                h[2..4].copy_from_slice(&((ihl + tcp.len()) as u16).to_be_bytes());
                h[4..6].copy_from_slice(&self.ip_id.to_be_bytes());
                h[6] = 0x40; // DF
                h[8] = self.ttl;
                h[9] = IPPROTO_TCP;
                h[12..16].copy_from_slice(&s.octets());
                h[16..20].copy_from_slice(&d.octets());
                h[20..].copy_from_slice(&opts);
                let c = checksum_finish(checksum_add(&h));
                h[10..12].copy_from_slice(&c.to_be_bytes());
                h.extend_from_slice(&tcp);
                h
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut ext = Vec::new();
                // Each extension header is 8 bytes: next header, length 0 (or, for a fragment
                // header, offset 0 = first fragment), padding.
                for i in 0..self.ipv6_ext.len() {
                    let next = self.ipv6_ext.get(i + 1).copied().unwrap_or(IPPROTO_TCP);
                    ext.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
                }
                let mut h = vec![0u8; 40];
                h[0] = 0x60;
                h[4..6].copy_from_slice(&((ext.len() + tcp.len()) as u16).to_be_bytes());
                h[6] = self.ipv6_ext.first().copied().unwrap_or(IPPROTO_TCP);
                h[7] = self.ttl;
                h[8..24].copy_from_slice(&s.octets());
                h[24..40].copy_from_slice(&d.octets());
                h.extend_from_slice(&ext);
                h.extend_from_slice(&tcp);
                h
            }
            _ => panic!("TcpSegment: source and destination must be of one address family"),
        }
    }

    /// The whole Ethernet frame.
    pub fn frame(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(14 + 8 + 60 + 60 + self.payload_len);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        // Each tag is TPID + TCI; a double-tagged frame has an 802.1ad outer tag.
        for (i, v) in self.vlans.iter().enumerate() {
            let tpid =
                if i == 0 && self.vlans.len() == 2 { ETHERTYPE_QINQ } else { ETHERTYPE_VLAN };
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(v & 0x0fff).to_be_bytes());
        }
        let et = if self.src.is_ipv4() { ETHERTYPE_IPV4 } else { ETHERTYPE_IPV6 };
        f.extend_from_slice(&et.to_be_bytes());
        f.extend_from_slice(&self.ip_bytes());
        f
    }
}

pub(crate) fn checksum_add(b: &[u8]) -> u32 {
    let mut sum = 0u32;
    let mut chunks = b.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    if let [last] = chunks.remainder() {
        sum += (*last as u32) << 8;
    }
    sum
}

pub(crate) fn checksum_finish(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo_header_sum(src: IpAddr, dst: IpAddr, len: u32) -> u32 {
    let mut s = 0u32;
    match (src, dst) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            s += checksum_add(&a.octets()) + checksum_add(&b.octets());
            s += IPPROTO_TCP as u32 + len;
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            s += checksum_add(&a.octets()) + checksum_add(&b.octets());
            s += (len >> 16) + (len & 0xffff) + IPPROTO_TCP as u32;
        }
        _ => {}
    }
    s
}

/// A one-line description, used in fixture names.
pub fn describe(flags: u8) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (tcp_flags::SYN, 'S'),
        (tcp_flags::FIN, 'F'),
        (tcp_flags::RST, 'R'),
        (tcp_flags::PSH, 'P'),
        (tcp_flags::ACK, '.'),
    ] {
        if flags & bit != 0 {
            s.push(c);
        }
    }
    s
}

/// Writes a classic pcap (microsecond timestamps, Ethernet) of `frames`, each (time in ns,
/// bytes), as tcpdump would.
pub fn write_pcap(path: &std::path::Path, frames: &[(u64, Vec<u8>)]) -> std::io::Result<()> {
    let mut b = Vec::new();
    // Magic, version 2.4 (two little-endian u16s), thiszone, sigfigs, snaplen, Ethernet.
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 262_144, 1] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for (ts, f) in frames {
        let (sec, usec) = (ts / 1_000_000_000, ts % 1_000_000_000 / 1000);
        for v in [sec as u32, usec as u32, f.len() as u32, f.len() as u32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(f);
    }
    std::fs::write(path, b)
}

#[cfg(test)]
mod tests {
    use dataplane_common::classify;

    use super::*;

    #[test]
    fn crafted_frames_parse_back() {
        let mut s =
            TcpSegment::new("10.0.0.1".parse().unwrap(), 1234, "10.0.0.2".parse().unwrap(), 80);
        s.mss = Some(1460);
        s.timestamp = Some((7, 0));
        s.vlans = vec![10, 20];
        s.payload_len = 100;
        let f = s.frame();
        let o = classify(&f[..], f.len()).unwrap();
        assert_eq!(o.vlan_ids, [10, 20]);
        assert_eq!(o.payload_len(), 100);
        assert_eq!(o.tcp_hdr_len, 20 + 4 + 12);
    }

    #[test]
    fn tcp_checksum_verifies() {
        let mut s = TcpSegment::new("10.0.0.1".parse().unwrap(), 1, "10.0.0.2".parse().unwrap(), 2);
        s.payload_len = 3;
        let t = s.tcp_bytes();
        let sum = pseudo_header_sum(s.src, s.dst, t.len() as u32) + checksum_add(&t);
        assert_eq!(checksum_finish(sum), 0);
    }
}
