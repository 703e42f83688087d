//! The decoded TCP packet the tracker works on, made from a frame by the shared parser.
use std::net::IpAddr;

use dataplane_common::{
    classify, parse_tcp_options, tcp_flags, Outcome, TcpOffsets, TcpOptions, ETHERTYPE_IPV4,
    ETHERTYPE_IPV6, ETHERTYPE_MPLS, ETH_HLEN, IPPROTO_TCP, IPV6_HLEN, TCP_MIN_HLEN,
};

use crate::flow::FlowKey;
use crate::seq::SeqNumber;
use crate::vantage::Vantages;

#[derive(Clone, Debug)]
pub struct TcpPacket {
    pub ts_ns: u64,
    pub vantage: u16,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// Outermost VLAN ID, 0 when untagged.
    pub vlan: u16,
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
    /// The key holds both addresses: the packet keeps no copy of its own (see [`Self::src`]).
    pub key: FlowKey,
    pub side: u8,
    /// Where the frame evidence keeps starts (see [`Self::kept`]): 0 but in a tunnel, where
    /// it is the inner frame (whose headers the outer ones would otherwise crowd out of the
    /// history's snap).
    pub keep_off: u16,
    /// In a tunnel carrying IP (or MPLS) directly, such as GRE, `keep_off` is the inner IP
    /// header (or label stack), and evidence gets an Ethernet header made for it (the
    /// packet's MACs, this EtherType).
    pub keep_ethertype: u16,
}

/// The part of a frame evidence keeps (see [`TcpPacket::kept`]).
#[derive(Clone, Copy)]
pub enum Kept<'a> {
    /// An Ethernet frame as it is (the whole frame, or a tunnel's inner one).
    Frame(&'a [u8]),
    /// A tunnel's inner IP packet (or MPLS label stack), and the Ethernet header to put
    /// before it.
    Ip([u8; 14], &'a [u8]),
}

impl TcpPacket {
    /// What evidence keeps of `frame` (the frame this packet was decoded from): the frame
    /// itself, or in a tunnel the mirrored frame inside it, so that the history's snap holds
    /// the TCP header whatever the outer headers take.
    #[inline]
    pub fn kept<'a>(&self, frame: &'a [u8]) -> Kept<'a> {
        let off = (self.keep_off as usize).min(frame.len());
        if self.keep_ethertype == 0 {
            return Kept::Frame(&frame[off..]);
        }
        let mut eth = [0u8; 14];
        eth[..6].copy_from_slice(&self.dst_mac);
        eth[6..12].copy_from_slice(&self.src_mac);
        eth[12..].copy_from_slice(&self.keep_ethertype.to_be_bytes());
        Kept::Ip(eth, &frame[off..])
    }

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
    /// The flow's key and this packet's side in it: 0 if sent by the key's `lo` endpoint, 1
    /// if by `hi` (made once, when the packet was decoded).
    #[inline]
    pub fn flow(&self) -> (FlowKey, usize) {
        (self.key, self.side as usize)
    }
    /// The sender's address, read from the key (few packets need it: those a detector reports,
    /// a filter, a path note).
    #[inline]
    pub fn src(&self) -> IpAddr {
        self.key.endpoint(self.side as usize).0
    }
    /// The receiver's address, from the key.
    #[inline]
    pub fn dst(&self) -> IpAddr {
        self.key.endpoint(1 - self.side as usize).0
    }
}

fn be16(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}
fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// The common frame, located with fixed offsets: untagged IPv4 without IP options, or
/// untagged IPv6 whose next header is TCP. `None` for every other frame, including every
/// frame [`classify`] refuses; where both accept a frame they return the same offsets (each
/// check below is one of `classify`'s, for the one layout; tested against it on every
/// header mutation in `fast_path_agrees_with_classify`). User space only: the XDP program
/// keeps the one shared parser.
#[inline(always)]
fn locate_common(frame: &[u8], wire_len: usize) -> Option<TcpOffsets> {
    const L3: usize = ETH_HLEN;
    let (ip_version, l4, ip_end) = match (frame.get(12..14)?, frame.get(L3)?) {
        // IPv4, IHL 5.
        ([0x08, 0x00], 0x45) => {
            if frame.len() < L3 + 20 + TCP_MIN_HLEN {
                return None;
            }
            let total = be16(frame, L3 + 2) as usize;
            let frag = be16(frame, L3 + 6);
            if frame[L3 + 9] != IPPROTO_TCP || frag & 0x1fff != 0 || total < 20 {
                return None;
            }
            (4, L3 + 20, L3 + total)
        }
        // IPv6, next header TCP.
        ([0x86, 0xdd], v) if v >> 4 == 6 => {
            if frame.len() < L3 + IPV6_HLEN + TCP_MIN_HLEN || frame[L3 + 6] != IPPROTO_TCP {
                return None;
            }
            (6, L3 + IPV6_HLEN, L3 + IPV6_HLEN + be16(frame, L3 + 4) as usize)
        }
        _ => return None,
    };
    let hlen = ((frame[l4 + 12] >> 4) as usize) * 4;
    if ip_end > wire_len || hlen < TCP_MIN_HLEN || hlen > ip_end - l4 {
        return None;
    }
    Some(TcpOffsets {
        vlan_count: 0,
        vlan_ids: [0; 2],
        ip_version,
        l3_off: L3 as u16,
        l4_off: l4 as u16,
        tcp_hdr_len: hlen as u16,
        ip_end: ip_end as u32,
        ..TcpOffsets::default()
    })
}

/// The options of a TCP header: none, or Linux's usual `NOP NOP TS` (every segment of a
/// connection that negotiated timestamps) read in place; anything else by the shared option
/// parser (which gives the same result for those two layouts).
#[inline(always)]
fn options_of(opts: &[u8], declared_len: usize) -> TcpOptions {
    if declared_len == 0 {
        return TcpOptions::default();
    }
    if declared_len == 12 && opts.len() == 12 && opts[..4] == [1, 1, 8, 10] {
        return TcpOptions {
            timestamp: Some((be32(opts, 4), be32(opts, 8))),
            ..TcpOptions::default()
        };
    }
    parse_tcp_options(opts, declared_len)
}

/// Decodes an Ethernet frame captured with `orig_len` bytes on the wire, at `vantage`.
pub fn decode(frame: &[u8], orig_len: u32, ts_ns: u64, vantage: u16) -> Result<TcpPacket, Outcome> {
    decode_with(frame, orig_len, ts_ns, vantage, |_| vantage)
}

/// Decodes a frame that arrived on the input `vantage`: a frame inside a mirror session is
/// at the session's own vantage (see [`Vantages`]).
pub fn decode_in(
    frame: &[u8],
    orig_len: u32,
    ts_ns: u64,
    vantage: u16,
    vantages: &Vantages,
) -> Result<TcpPacket, Outcome> {
    decode_with(frame, orig_len, ts_ns, vantage, |o| vantages.of_session(vantage, o, frame))
}

/// [`decode_in`] for a frame decoded while frames before it still wait to be processed:
/// `None` when the frame opens a mirror session not numbered yet. Numbering it now would
/// change the vantages those earlier frames are processed with; decode it with [`decode_in`]
/// when its turn comes.
#[inline]
pub fn decode_ahead(
    frame: &[u8],
    orig_len: u32,
    ts_ns: u64,
    vantage: u16,
    vantages: &Vantages,
) -> Option<Result<TcpPacket, Outcome>> {
    let mut new_session = false;
    let r = decode_with(frame, orig_len, ts_ns, vantage, |o| {
        vantages.known_session(vantage, o, frame).unwrap_or_else(|| {
            new_session = true;
            vantage
        })
    });
    if new_session {
        None
    } else {
        Some(r)
    }
}

#[inline(always)]
fn decode_with(
    frame: &[u8],
    orig_len: u32,
    ts_ns: u64,
    vantage: u16,
    session: impl FnOnce(&TcpOffsets) -> u16,
) -> Result<TcpPacket, Outcome> {
    // The common frame carries no tunnel: only the full parser's frames can be a session's.
    let (o, vantage) = match locate_common(frame, orig_len as usize) {
        Some(o) => (o, vantage),
        None => {
            let o = classify(frame, orig_len as usize)?;
            (o, if o.tunnel == 0 { vantage } else { session(&o) })
        }
    };
    let l3 = o.l3_off as usize;
    let l4 = o.l4_off as usize;
    // A tunnel's inner frame carries the MACs of the mirrored traffic.
    let link = o.link_off as usize;
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
    let (sport, dport) = (be16(frame, l4), be16(frame, l4 + 2));
    let vlan = o.vlan_ids[0];
    let (key, side) = FlowKey::from_endpoints(s16, sport, d16, dport, vlan, v6, vantage);
    let hlen = o.tcp_hdr_len as usize;
    let opt_end = (l4 + hlen).min(frame.len());
    let opts = options_of(&frame[l4 + TCP_MIN_HLEN..opt_end], hlen - TCP_MIN_HLEN);
    // Evidence keeps a tunnel's inner frame: from its Ethernet header, or (a tunnel carrying
    // IP or MPLS directly) from its IP header or label stack, with an Ethernet header made
    // for it.
    let (keep_off, keep_ethertype) = match o.tunnel {
        0 => (0, 0),
        _ if o.snap_off == o.link_off => (o.link_off, 0),
        _ if o.snap_off == o.l3_off => {
            (o.snap_off, if v6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 })
        }
        _ => (o.snap_off, ETHERTYPE_MPLS),
    };
    Ok(TcpPacket {
        ts_ns,
        vantage,
        dst_mac: frame[link..link + 6].try_into().unwrap(),
        src_mac: frame[link + 6..link + 12].try_into().unwrap(),
        vlan,
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
        keep_off,
        keep_ethertype,
    })
}

/// Why a frame carries no TCP the engine can read: what the `analyze` summary counts, so a
/// capture with nothing readable never reports a bare zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unread {
    /// Not IPv4 or IPv6 (ARP, LLDP, STP…).
    NotIp,
    /// IP, but neither TCP nor a tunnel (UDP, ICMP…).
    NotTcp,
    /// TCP may be inside, but behind a header the parser does not open (PPPoE, PPTP's GRE,
    /// IP-in-IP, GTP-U, ESP…, or more VLAN tags or tunnels than it reads).
    Encapsulated,
    /// An IP fragment after the first: no TCP header in it.
    Fragment,
    /// The capture kept too few bytes of the frame to reach the end of the TCP header (snap
    /// length too small).
    CutShort,
    /// Headers inconsistent with themselves or with the frame's length on the wire.
    Malformed,
}

impl Unread {
    pub const ALL: [Unread; 6] = [
        Unread::NotIp,
        Unread::NotTcp,
        Unread::Encapsulated,
        Unread::Fragment,
        Unread::CutShort,
        Unread::Malformed,
    ];
    pub const fn name(self) -> &'static str {
        match self {
            Unread::NotIp => "not_ip",
            Unread::NotTcp => "not_tcp",
            Unread::Encapsulated => "encapsulated",
            Unread::Fragment => "fragment",
            Unread::CutShort => "cut_short",
            Unread::Malformed => "malformed",
        }
    }
}

/// EtherTypes of encapsulations the parser does not open (IEEE registry): MPLS unicast and
/// multicast (reached only when the stack ends in a pseudowire, not IP), PPPoE session,
/// transparent Ethernet bridging (opened inside GRE, not on a wire), MACsec, NSH.
const ENCAP_ETHERTYPES: [u16; 6] = [0x8847, 0x8848, 0x8864, 0x6558, 0x88e5, 0x894f];
/// IP protocols that carry other packets (IANA): IP-in-IP, IPv6-in-IP, GRE (reached for the
/// payloads the parser does not open), ESP, AH, EtherIP, L2TPv3, MPLS-in-IP.
const ENCAP_PROTOCOLS: [u8; 8] = [4, 41, 47, 50, 51, 97, 115, 137];
/// UDP ports of tunnels the parser does not open (IANA): L2TP, GTP-U, VXLAN-GPE, and Linux's
/// pre-IANA VXLAN port. (VXLAN and GENEVE reach here only carrying something not TCP.)
const ENCAP_UDP_PORTS: [u16; 4] = [1701, 2152, 4790, 8472];

/// Why [`decode`] refused `frame` with `o`. Runs only for refused frames.
pub fn unread_cause(frame: &[u8], orig_len: u32, o: Outcome) -> Unread {
    match o {
        Outcome::LaterFragment => return Unread::Fragment,
        Outcome::NonTcpPassed | Outcome::NonTcpDropped => return not_tcp_cause(frame),
        _ => {}
    }
    // Malformed: because the capture stopped early, or on the wire already? The same frame
    // with its missing bytes zero-filled fails differently (or not at all) only in the first
    // case. Headers end within the first 4 KiB (bounded extension chain).
    let wire = (orig_len as usize).min(4096);
    if frame.len() < wire {
        let mut padded = frame.to_vec();
        padded.resize(wire, 0);
        if classify(&padded[..], orig_len as usize) != Err(o) {
            return Unread::CutShort;
        }
    }
    if matches!(o, Outcome::MalformedVlan | Outcome::TunnelTooDeep) {
        // More tags (or tunnels) than the parser reads is a stack it does not open, not a
        // broken frame.
        return Unread::Encapsulated;
    }
    Unread::Malformed
}

fn not_tcp_cause(frame: &[u8]) -> Unread {
    let mut off = 12;
    let mut et = frame.get(off..off + 2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    off += 2;
    while matches!(et, 0x8100 | 0x88a8) && frame.len() >= off + 4 {
        et = u16::from_be_bytes([frame[off + 2], frame[off + 3]]);
        off += 4;
    }
    if ENCAP_ETHERTYPES.contains(&et) {
        return Unread::Encapsulated;
    }
    let (proto, l4) = match et {
        0x0800 if frame.len() > off + 9 => {
            (frame[off + 9], off + ((frame[off] & 0x0f) as usize) * 4)
        }
        0x86dd if frame.len() >= off + 40 => {
            let (mut next, mut at) = (frame[off + 6], off + 40);
            // Extension headers (RFC 8200 §4): hop-by-hop, routing, fragment, destination.
            for _ in 0..8 {
                if !matches!(next, 0 | 43 | 44 | 60) || frame.len() < at + 2 {
                    break;
                }
                let len = if next == 44 { 8 } else { (frame[at + 1] as usize + 1) * 8 };
                next = frame[at];
                at += len;
            }
            (next, at)
        }
        0x0800 | 0x86dd => return Unread::CutShort,
        _ => return Unread::NotIp,
    };
    if ENCAP_PROTOCOLS.contains(&proto) {
        return Unread::Encapsulated;
    }
    if proto == 17 {
        if let Some(p) = frame.get(l4..l4 + 4) {
            let (s, d) = (u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]]));
            if ENCAP_UDP_PORTS.contains(&s) || ENCAP_UDP_PORTS.contains(&d) {
                return Unread::Encapsulated;
            }
        }
    }
    Unread::NotTcp
}

#[cfg(test)]
mod tests {
    use wirewatch_testkit::craft::TcpSegment;

    use super::*;

    fn cause(frame: &[u8], orig_len: usize) -> Unread {
        let e = decode(frame, orig_len as u32, 0, 0).unwrap_err();
        unread_cause(frame, orig_len as u32, e)
    }

    /// An IPv4 frame of `seg` with protocol `proto` (checksums are not checked).
    fn with_proto(seg: &TcpSegment, proto: u8) -> Vec<u8> {
        let mut f = seg.frame();
        f[14 + 9] = proto;
        f
    }

    /// The fixed-offset fast path never accepts a frame `classify` refuses, and never
    /// disagrees with it: every header byte of IPv4 and IPv6 frames (with and without the
    /// timestamp option, with payload) set to values that move each check across its edge,
    /// at every capture cut and several wire lengths.
    #[test]
    fn fast_path_agrees_with_classify() {
        let v4 = TcpSegment::new("10.0.0.1".parse().unwrap(), 1, "10.0.0.2".parse().unwrap(), 2);
        let v6 = TcpSegment::new("fd00::1".parse().unwrap(), 1, "fd00::2".parse().unwrap(), 2);
        let mut frames = Vec::new();
        for base in [v4, v6] {
            let mut ts = base.clone();
            ts.timestamp = Some((7, 9));
            ts.payload_len = 30;
            let mut syn = base.clone();
            syn.flags = tcp_flags::SYN;
            syn.mss = Some(1460);
            syn.wscale = Some(7);
            syn.sack_permitted = true;
            frames.extend([base.frame(), ts.frame(), syn.frame()]);
        }
        let values = [
            0u8, 1, 2, 4, 5, 6, 0x08, 0x11, 0x20, 0x3f, 0x40, 0x45, 0x46, 0x4f, 0x50, 0x60, 0x80,
            0x86, 0xdd, 0xf0, 0xff,
        ];
        let (mut fast, mut checked) = (0, 0);
        for f in &frames {
            for at in 0..f.len().min(90) {
                for &v in &values {
                    let mut m = f.clone();
                    m[at] = v;
                    for cut in [m.len(), 74, 66, 54, 40] {
                        let g = &m[..cut.min(m.len())];
                        for wire in [m.len(), m.len() - 1, m.len() + 100, cut] {
                            checked += 1;
                            if let Some(o) = locate_common(g, wire) {
                                fast += 1;
                                assert_eq!(
                                    classify(g, wire),
                                    Ok(o),
                                    "byte {at} = {v:#x}, cut {cut}, wire {wire}"
                                );
                            }
                        }
                    }
                }
            }
        }
        // The fast path does take the common frames (else the test proves nothing).
        assert!(fast > checked / 10, "fast path taken {fast} of {checked}");
    }

    /// The in-place read of `NOP NOP TS` equals the shared option parser on that layout and
    /// on every one-byte change of it.
    #[test]
    fn timestamp_fast_path_agrees_with_the_option_parser() {
        let opts = [1u8, 1, 8, 10, 0, 0, 0, 7, 0x80, 0, 0, 9];
        for at in 0..opts.len() {
            for v in [0u8, 1, 2, 3, 8, 9, 10, 11, 0xff] {
                let mut o = opts;
                o[at] = v;
                for (len, declared) in [(12, 12), (12, 16), (8, 12), (0, 0), (0, 12)] {
                    assert_eq!(
                        options_of(&o[..len], declared),
                        parse_tcp_options(&o[..len], declared)
                    );
                }
            }
        }
    }

    #[test]
    fn every_refused_frame_has_a_cause() {
        let seg = TcpSegment::new("10.0.0.1".parse().unwrap(), 1, "10.0.0.2".parse().unwrap(), 2);
        let f = seg.frame();
        assert!(decode(&f, f.len() as u32, 0, 0).is_ok());
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(cause(&arp, arp.len()), Unread::NotIp);
        let mut pppoe = f.clone();
        pppoe[12..14].copy_from_slice(&0x8864u16.to_be_bytes());
        assert_eq!(cause(&pppoe, pppoe.len()), Unread::Encapsulated);
        for proto in [47, 4, 41, 50] {
            assert_eq!(cause(&with_proto(&seg, proto), f.len()), Unread::Encapsulated, "{proto}");
        }
        assert_eq!(cause(&with_proto(&seg, 1), f.len()), Unread::NotTcp);
        let mut udp = with_proto(&seg, 17);
        assert_eq!(cause(&udp, f.len()), Unread::NotTcp);
        udp[34 + 2..34 + 4].copy_from_slice(&2152u16.to_be_bytes()); // GTP-U, not opened
        assert_eq!(cause(&udp, f.len()), Unread::Encapsulated);
        let mut frag = f.clone();
        frag[14 + 6..14 + 8].copy_from_slice(&185u16.to_be_bytes());
        assert_eq!(cause(&frag, f.len()), Unread::Fragment);
        // Snapped inside the TCP header: cut short; the same bytes on the wire: malformed.
        assert_eq!(cause(&f[..40], f.len()), Unread::CutShort);
        assert_eq!(cause(&f[..10], f.len()), Unread::CutShort);
        let mut bad_ihl = f.clone();
        bad_ihl[14] = 0x44;
        assert_eq!(cause(&bad_ihl, f.len()), Unread::Malformed);
        assert_eq!(cause(&f[..40], 40), Unread::Malformed);
    }
}
