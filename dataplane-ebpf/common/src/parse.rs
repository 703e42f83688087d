//! The one header parser: Ethernet → up to two VLAN tags → MPLS labels → IPv4/IPv6 (+ up to
//! four extension headers) → TCP, opening up to two tunnels on the way (GRE with IP, MPLS or
//! Ethernet inside, ERSPAN types I–III, VXLAN, GENEVE). The XDP program runs it over `data..data_end`, user space over
//! byte slices; both get the same verdict for the same frame.
//!
//! `classify` only locates headers and validates their lengths; field decoding for the
//! tracker lives in [`crate::parse::TcpView`] (user space only needs it, but it is `no_std`
//! so the fuzzers cover it too).

use crate::abi::Outcome;

/// Bounds-checked big-endian reads at an offset. The XDP side checks against `data_end`
/// with pointer arithmetic the verifier follows; the user side uses slice bounds.
pub trait Bytes {
    fn u8_at(&self, off: usize) -> Option<u8>;
    fn be16_at(&self, off: usize) -> Option<u16>;
    /// The `N` bytes at `off`, after one bounds check: the fast path reads every field of a
    /// common header from them at constant offsets, with no check per field.
    fn array_at<const N: usize>(&self, off: usize) -> Option<&[u8; N]>;
    /// `off` unchanged, but with everything the verifier knew about it forgotten except
    /// `off <= MAX_HEADER_OFF`: called where paths through different header shapes meet (each
    /// tunnel layer, the IP header), so the verifier sees one state there instead of one per
    /// shape (without it the tunnel layers multiply past its million-instruction limit).
    /// User space has nothing to forget.
    #[inline(always)]
    fn forget(&self, off: usize) -> usize {
        off
    }
}

impl Bytes for [u8] {
    #[inline(always)]
    fn u8_at(&self, off: usize) -> Option<u8> {
        self.get(off).copied()
    }
    #[inline(always)]
    fn be16_at(&self, off: usize) -> Option<u16> {
        self.get(off..off.checked_add(2)?).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    #[inline(always)]
    fn array_at<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
        self.get(off..off.checked_add(N)?)?.try_into().ok()
    }
}

#[inline(always)]
fn be16<const N: usize>(a: &[u8; N], off: usize) -> u16 {
    u16::from_be_bytes([a[off], a[off + 1]])
}

pub const ETH_HLEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
pub const IPPROTO_TCP: u8 = 6;
pub const IPV6_HLEN: usize = 40;
pub const TCP_MIN_HLEN: usize = 20;
pub const MAX_VLAN_TAGS: usize = 2;
pub const MAX_IPV6_EXT_HEADERS: usize = 4;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_GRE: u8 = 47;
pub const ETHERTYPE_MPLS: u16 = 0x8847;
pub const ETHERTYPE_MPLS_MULTICAST: u16 = 0x8848;
/// Transparent Ethernet bridging: an Ethernet frame inside GRE or GENEVE.
pub const ETHERTYPE_TEB: u16 = 0x6558;
/// The GRE protocol types of ERSPAN types I and II, and of type III.
pub const ETHERTYPE_ERSPAN_I_II: u16 = 0x88be;
pub const ETHERTYPE_ERSPAN_III: u16 = 0x22eb;
/// IANA's VXLAN and GENEVE ports.
pub const UDP_PORT_VXLAN: u16 = 4789;
pub const UDP_PORT_GENEVE: u16 = 6081;
/// Tunnels opened inside one another at most (a mirror session carried over a GRE or MPLS
/// core is two); a bounded loop the verifier walks.
pub const MAX_TUNNEL_DEPTH: usize = 2;
/// Label stack entries read at most before the bottom-of-stack bit (carrier stacks hold
/// 1–4: transport, service, entropy label and its indicator).
pub const MAX_MPLS_LABELS: usize = 8;
/// Headers of a frame end within its first 16 KiB (a tunnel layer or IP header starting
/// later is malformed): the bound [`Bytes::forget`] keeps.
pub const MAX_HEADER_OFF: usize = 0x3fff;

/// The tunnel a frame arrived in (`TcpOffsets::tunnel`): with its session and outer source
/// address, part of the vantage, so two mirror sessions are two vantages.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tunnel {
    None = 0,
    /// GRE carrying IP or MPLS; the session is the GRE key.
    Gre = 1,
    /// GRE carrying Ethernet (protocol 0x6558); the session is the GRE key.
    GreEthernet = 2,
    ErspanI = 3,
    ErspanII = 4,
    ErspanIII = 5,
    Vxlan = 6,
    Geneve = 7,
}

impl Tunnel {
    pub const fn from_u8(v: u8) -> Tunnel {
        match v {
            1 => Tunnel::Gre,
            2 => Tunnel::GreEthernet,
            3 => Tunnel::ErspanI,
            4 => Tunnel::ErspanII,
            5 => Tunnel::ErspanIII,
            6 => Tunnel::Vxlan,
            7 => Tunnel::Geneve,
            _ => Tunnel::None,
        }
    }
}

const IPV6_EXT_HOPOPTS: u8 = 0;
const IPV6_EXT_ROUTING: u8 = 43;
const IPV6_EXT_FRAGMENT: u8 = 44;
const IPV6_EXT_DSTOPTS: u8 = 60;

/// Where the headers of a TCP frame are. Offsets are from the start of the Ethernet frame;
/// in a tunnel, the headers named are the innermost ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOffsets {
    /// The Ethernet header the MAC addresses are read from (a tunnel's inner frame, or the
    /// outer one when the tunnel carries IP directly).
    pub link_off: u16,
    /// Where the snap length counts from: the innermost Ethernet header, or the inner IP
    /// header of a tunnel that carries IP directly.
    pub snap_off: u16,
    /// The outermost tunnel opened ([`Tunnel`]), 0 for none.
    pub tunnel: u8,
    /// That tunnel's session: the VXLAN/GENEVE VNI, the ERSPAN session ID, the GRE key; 0
    /// without one.
    pub session: u32,
    /// That tunnel's outer IP header: its source address is the mirror's sender.
    pub outer_l3_off: u16,
    pub vlan_count: u8,
    /// VLAN IDs (12 bits) of the innermost frame, outermost first; 0 where absent.
    pub vlan_ids: [u16; MAX_VLAN_TAGS],
    /// 4 or 6.
    pub ip_version: u8,
    pub l3_off: u16,
    pub l4_off: u16,
    pub tcp_hdr_len: u16,
    /// Offset just past the IP packet (the frame may carry Ethernet padding after it).
    pub ip_end: u32,
}

impl TcpOffsets {
    /// TCP payload bytes on the wire.
    pub fn payload_len(&self) -> u32 {
        self.ip_end - self.l4_off as u32 - self.tcp_hdr_len as u32
    }
}

/// Locates the TCP header of an Ethernet frame.
///
/// `wire_len` is the frame's length on the wire: the IP length fields are checked against it,
/// so a capture cut to a snap length still parses while a frame that was cut on the wire does
/// not. The error is the [`Outcome`] the XDP program counts: `NonTcpPassed` for anything that
/// is simply not TCP, `LaterFragment`, or a `Malformed*` reason.
#[inline(always)]
pub fn classify<B: Bytes + ?Sized>(b: &B, wire_len: usize) -> Result<TcpOffsets, Outcome> {
    match classify_common(b, wire_len) {
        Some(r) => r,
        None => classify_reference(b, wire_len),
    }
}

/// The fast path of [`classify`]: the shapes nearly every frame has (up to two VLAN tags, an
/// IPv4 header without options or an IPv6 header directly followed by TCP, and anything that
/// is neither IP nor a tunnel) read with one bounds check per header block. `None` hands the frame to
/// [`classify_reference`]; where it answers, the answer is the reference's (the unit tests and
/// the `parser` fuzz target compare the two).
#[inline(always)]
fn classify_common<B: Bytes + ?Sized>(
    b: &B,
    wire_len: usize,
) -> Option<Result<TcpOffsets, Outcome>> {
    let eth = b.array_at::<ETH_HLEN>(0)?;
    match be16(eth, 12) {
        ETHERTYPE_IPV4 => common_ipv4(b, wire_len, ETH_HLEN, 0, [0; MAX_VLAN_TAGS]),
        ETHERTYPE_IPV6 => common_ipv6(b, wire_len, ETH_HLEN, 0, [0; MAX_VLAN_TAGS]),
        ETHERTYPE_VLAN | ETHERTYPE_QINQ => {
            let tags = b.array_at::<{ ETH_HLEN + 4 * MAX_VLAN_TAGS }>(0)?;
            let outer = be16(tags, ETH_HLEN) & 0x0fff;
            match be16(tags, ETH_HLEN + 2) {
                ETHERTYPE_IPV4 => common_ipv4(b, wire_len, ETH_HLEN + 4, 1, [outer, 0]),
                ETHERTYPE_IPV6 => common_ipv6(b, wire_len, ETH_HLEN + 4, 1, [outer, 0]),
                ETHERTYPE_VLAN | ETHERTYPE_QINQ => {
                    let inner = be16(tags, ETH_HLEN + 4) & 0x0fff;
                    match be16(tags, ETH_HLEN + 6) {
                        ETHERTYPE_IPV4 => common_ipv4(b, wire_len, ETH_HLEN + 8, 2, [outer, inner]),
                        ETHERTYPE_IPV6 => common_ipv6(b, wire_len, ETH_HLEN + 8, 2, [outer, inner]),
                        // A third tag is malformed; the reference path says so.
                        ETHERTYPE_VLAN | ETHERTYPE_QINQ => None,
                        ETHERTYPE_MPLS | ETHERTYPE_MPLS_MULTICAST => None,
                        _ => Some(Err(Outcome::NonTcpPassed)),
                    }
                }
                ETHERTYPE_MPLS | ETHERTYPE_MPLS_MULTICAST => None,
                _ => Some(Err(Outcome::NonTcpPassed)),
            }
        }
        ETHERTYPE_MPLS | ETHERTYPE_MPLS_MULTICAST => None,
        _ => Some(Err(Outcome::NonTcpPassed)),
    }
}

/// A UDP destination port the reference path opens a tunnel behind.
#[inline(always)]
fn is_tunnel_port(dport: u16) -> bool {
    dport == UDP_PORT_VXLAN || dport == UDP_PORT_GENEVE
}

/// IPv4 without options at `l3`, and the fixed TCP header right after it.
#[inline(always)]
fn common_ipv4<B: Bytes + ?Sized>(
    b: &B,
    wire_len: usize,
    l3: usize,
    vlan_count: u8,
    vlan_ids: [u16; MAX_VLAN_TAGS],
) -> Option<Result<TcpOffsets, Outcome>> {
    const IHL: usize = 20;
    let h = b.array_at::<{ IHL + TCP_MIN_HLEN }>(l3)?;
    if h[0] != 0x45 {
        return None; // options, or not version 4
    }
    let total = be16(h, 2) as usize;
    if total < IHL || l3 + total > wire_len {
        return Some(Err(Outcome::MalformedIpv4));
    }
    if be16(h, 6) & 0x1fff != 0 {
        return Some(Err(Outcome::LaterFragment));
    }
    match h[9] {
        IPPROTO_TCP => {}
        IPPROTO_UDP if is_tunnel_port(be16(h, IHL + 2)) => return None,
        IPPROTO_GRE => return None,
        _ => return Some(Err(Outcome::NonTcpPassed)),
    }
    let hlen = ((h[IHL + 12] >> 4) as usize) * 4;
    if hlen < TCP_MIN_HLEN || hlen > total - IHL {
        return Some(Err(Outcome::MalformedTcpDataOffset));
    }
    Some(Ok(TcpOffsets {
        vlan_count,
        vlan_ids,
        ip_version: 4,
        l3_off: l3 as u16,
        l4_off: (l3 + IHL) as u16,
        tcp_hdr_len: hlen as u16,
        ip_end: (l3 + total) as u32,
        ..TcpOffsets::default()
    }))
}

/// IPv6 at `l3`; TCP right after the fixed header (an extension header takes the reference
/// path).
#[inline(always)]
fn common_ipv6<B: Bytes + ?Sized>(
    b: &B,
    wire_len: usize,
    l3: usize,
    vlan_count: u8,
    vlan_ids: [u16; MAX_VLAN_TAGS],
) -> Option<Result<TcpOffsets, Outcome>> {
    let h = b.array_at::<{ IPV6_HLEN + TCP_MIN_HLEN }>(l3)?;
    if h[0] >> 4 != 6 {
        return Some(Err(Outcome::MalformedIpv6));
    }
    let payload = be16(h, 4) as usize;
    if l3 + IPV6_HLEN + payload > wire_len {
        return Some(Err(Outcome::MalformedIpv6));
    }
    match h[6] {
        IPPROTO_TCP => {}
        IPV6_EXT_HOPOPTS | IPV6_EXT_ROUTING | IPV6_EXT_DSTOPTS | IPV6_EXT_FRAGMENT => return None,
        IPPROTO_UDP if is_tunnel_port(be16(h, IPV6_HLEN + 2)) => return None,
        IPPROTO_GRE => return None,
        _ => return Some(Err(Outcome::NonTcpPassed)),
    }
    let hlen = ((h[IPV6_HLEN + 12] >> 4) as usize) * 4;
    if hlen < TCP_MIN_HLEN || hlen > payload {
        return Some(Err(Outcome::MalformedTcpDataOffset));
    }
    Some(Ok(TcpOffsets {
        vlan_count,
        vlan_ids,
        ip_version: 6,
        l3_off: l3 as u16,
        l4_off: (l3 + IPV6_HLEN) as u16,
        tcp_hdr_len: hlen as u16,
        ip_end: (l3 + IPV6_HLEN + payload) as u32,
        ..TcpOffsets::default()
    }))
}

/// [`classify`] one field at a time: every shape, and the definition the fast path must match.
///
/// Tunnels are opened up to [`MAX_TUNNEL_DEPTH`] deep, each layer parsed like the outermost
/// one (link header, MPLS labels, IP) and bounded by the IP packet that carries it.
#[inline(always)]
pub fn classify_reference<B: Bytes + ?Sized>(
    b: &B,
    wire_len: usize,
) -> Result<TcpOffsets, Outcome> {
    let mut out = TcpOffsets::default();
    let mut off = 0usize;
    // What starts at `off`: an Ethernet header (`None`) or a header of this EtherType.
    let mut inner: Option<u16> = None;
    // The end of the packet this layer lies in: the wire length, then each tunnel's IP packet.
    let mut limit = wire_len;
    let mut depth = 0usize;
    loop {
        off = forget_bounded(b, off)?;
        out.snap_off = off as u16;
        let mut ethertype = match inner {
            None => {
                out.link_off = off as u16;
                let (et, after) = link_header(b, off, &mut out)?;
                off = after;
                et
            }
            Some(et) => et,
        };
        if ethertype == ETHERTYPE_MPLS || ethertype == ETHERTYPE_MPLS_MULTICAST {
            let (et, after) = mpls_stack(b, off)?;
            ethertype = et;
            off = after;
        }
        off = forget_bounded(b, off)?;
        out.l3_off = off as u16;
        let (proto, l4, end) = ip_header(b, off, limit, ethertype, &mut out)?;
        match proto {
            IPPROTO_TCP => return tcp_header(b, l4, end, out),
            IPPROTO_GRE | IPPROTO_UDP => {
                let t = tunnel_header(b, proto, l4, end)?;
                if depth == MAX_TUNNEL_DEPTH {
                    return Err(Outcome::TunnelTooDeep);
                }
                if depth == 0 {
                    out.tunnel = t.kind as u8;
                    out.session = t.session;
                    out.outer_l3_off = out.l3_off;
                }
                off = t.inner_off;
                inner = t.inner;
                limit = end;
                depth += 1;
            }
            _ => return Err(Outcome::NonTcpPassed),
        }
    }
}

/// `off` through [`Bytes::forget`], refused past [`MAX_HEADER_OFF`] (only a tunnel's lengths
/// can point that far).
#[inline(always)]
fn forget_bounded<B: Bytes + ?Sized>(b: &B, off: usize) -> Result<usize, Outcome> {
    if off > MAX_HEADER_OFF {
        return Err(Outcome::MalformedTunnel);
    }
    Ok(b.forget(off))
}

/// The Ethernet header at `off` and up to two VLAN tags: the EtherType after them and where
/// that header starts. The tags are recorded in `out` (the innermost frame's win).
#[inline(always)]
fn link_header<B: Bytes + ?Sized>(
    b: &B,
    off: usize,
    out: &mut TcpOffsets,
) -> Result<(u16, usize), Outcome> {
    let mut ethertype = b.be16_at(off + 12).ok_or(Outcome::MalformedEthernet)?;
    let mut off = off + ETH_HLEN;
    let mut tags = 0usize;
    out.vlan_ids = [0; MAX_VLAN_TAGS];
    while ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        if tags == MAX_VLAN_TAGS {
            return Err(Outcome::MalformedVlan);
        }
        let tci = b.be16_at(off).ok_or(Outcome::MalformedVlan)?;
        ethertype = b.be16_at(off + 2).ok_or(Outcome::MalformedVlan)?;
        out.vlan_ids[tags] = tci & 0x0fff;
        tags += 1;
        off += 4;
    }
    out.vlan_count = tags as u8;
    Ok((ethertype, off))
}

/// An MPLS label stack at `off` (RFC 3032 §2.1: 4 bytes per entry, bit 8 of the third byte
/// marks the bottom of the stack): the EtherType of what follows it and where that starts.
/// Like Wireshark's `dissect_mpls` (epan/dissectors/packet-mpls.c), the payload's first
/// nibble tells IPv4 from IPv6; anything else (a pseudowire control word) is not opened.
#[inline(always)]
fn mpls_stack<B: Bytes + ?Sized>(b: &B, mut off: usize) -> Result<(u16, usize), Outcome> {
    let mut bottom = false;
    for _ in 0..MAX_MPLS_LABELS {
        let lse = b.array_at::<4>(off).ok_or(Outcome::MalformedMpls)?;
        off += 4;
        if lse[2] & 0x01 != 0 {
            bottom = true;
            break;
        }
    }
    if !bottom {
        return Err(Outcome::MalformedMpls);
    }
    match b.u8_at(off).ok_or(Outcome::MalformedMpls)? >> 4 {
        4 => Ok((ETHERTYPE_IPV4, off)),
        6 => Ok((ETHERTYPE_IPV6, off)),
        _ => Err(Outcome::NonTcpPassed),
    }
}

/// The IPv4 or IPv6 header (and IPv6 extension chain) at `off`, whose packet must end by
/// `limit`: the protocol it carries, where that header starts and where the packet ends.
/// Sets `ip_version` and `ip_end`.
#[inline(always)]
fn ip_header<B: Bytes + ?Sized>(
    b: &B,
    mut off: usize,
    limit: usize,
    ethertype: u16,
    out: &mut TcpOffsets,
) -> Result<(u8, usize, usize), Outcome> {
    match ethertype {
        ETHERTYPE_IPV4 => {
            let vihl = b.u8_at(off).ok_or(Outcome::MalformedIpv4)?;
            if vihl >> 4 != 4 {
                return Err(Outcome::MalformedIpv4);
            }
            let ihl = ((vihl & 0x0f) as usize) * 4;
            if ihl < 20 {
                return Err(Outcome::MalformedIpv4Ihl);
            }
            let total = b.be16_at(off + 2).ok_or(Outcome::MalformedIpv4)? as usize;
            let frag = b.be16_at(off + 6).ok_or(Outcome::MalformedIpv4)?;
            let proto = b.u8_at(off + 9).ok_or(Outcome::MalformedIpv4)?;
            // The whole header must be present (options included) and fit in the total length.
            b.u8_at(off + ihl - 1).ok_or(Outcome::MalformedIpv4Ihl)?;
            if total < ihl || off + total > limit {
                return Err(Outcome::MalformedIpv4);
            }
            if frag & 0x1fff != 0 {
                return Err(Outcome::LaterFragment);
            }
            out.ip_version = 4;
            out.ip_end = (off + total) as u32;
            Ok((proto, off + ihl, off + total))
        }
        ETHERTYPE_IPV6 => {
            let v = b.u8_at(off).ok_or(Outcome::MalformedIpv6)?;
            if v >> 4 != 6 {
                return Err(Outcome::MalformedIpv6);
            }
            let payload = b.be16_at(off + 4).ok_or(Outcome::MalformedIpv6)? as usize;
            let mut next = b.u8_at(off + 6).ok_or(Outcome::MalformedIpv6)?;
            b.u8_at(off + IPV6_HLEN - 1).ok_or(Outcome::MalformedIpv6)?;
            let end = off + IPV6_HLEN + payload;
            if end > limit {
                return Err(Outcome::MalformedIpv6);
            }
            out.ip_version = 6;
            out.ip_end = end as u32;
            off += IPV6_HLEN;
            let mut skipped = 0usize;
            loop {
                match next {
                    IPV6_EXT_HOPOPTS | IPV6_EXT_ROUTING | IPV6_EXT_DSTOPTS | IPV6_EXT_FRAGMENT => {
                        if skipped == MAX_IPV6_EXT_HEADERS {
                            return Err(Outcome::Ipv6ExtChainTooLong);
                        }
                        let nh = b.u8_at(off).ok_or(Outcome::MalformedIpv6Ext)?;
                        let len = if next == IPV6_EXT_FRAGMENT {
                            let fo = b.be16_at(off + 2).ok_or(Outcome::MalformedIpv6Ext)?;
                            if fo & 0xfff8 != 0 {
                                return Err(Outcome::LaterFragment);
                            }
                            8
                        } else {
                            (b.u8_at(off + 1).ok_or(Outcome::MalformedIpv6Ext)? as usize + 1) * 8
                        };
                        if off + len > end {
                            return Err(Outcome::MalformedIpv6Ext);
                        }
                        next = nh;
                        off += len;
                        skipped += 1;
                    }
                    _ => return Ok((next, off, end)),
                }
            }
        }
        _ => Err(Outcome::NonTcpPassed),
    }
}

/// The TCP header at `off` of an IP packet ending at `end`.
#[inline(always)]
fn tcp_header<B: Bytes + ?Sized>(
    b: &B,
    off: usize,
    end: usize,
    mut out: TcpOffsets,
) -> Result<TcpOffsets, Outcome> {
    out.l4_off = off as u16;
    let doff_byte = b.u8_at(off + 12).ok_or(Outcome::MalformedTcp)?;
    b.u8_at(off + TCP_MIN_HLEN - 1).ok_or(Outcome::MalformedTcp)?;
    let hlen = ((doff_byte >> 4) as usize) * 4;
    if hlen < TCP_MIN_HLEN || hlen > end - off {
        return Err(Outcome::MalformedTcpDataOffset);
    }
    out.tcp_hdr_len = hlen as u16;
    Ok(out)
}

/// A tunnel header opened: what it is, its session, and the frame or packet inside.
struct Opened {
    kind: Tunnel,
    session: u32,
    inner_off: usize,
    /// `None`: an Ethernet frame starts at `inner_off`; else the EtherType of the header there.
    inner: Option<u16>,
}

/// The GRE header, or the UDP header of a VXLAN or GENEVE packet, at `off` in an IP packet
/// ending at `end`. `NonTcpPassed` for UDP to other ports and for GRE payloads not opened.
#[inline(always)]
fn tunnel_header<B: Bytes + ?Sized>(
    b: &B,
    proto: u8,
    off: usize,
    end: usize,
) -> Result<Opened, Outcome> {
    let opened = if proto == IPPROTO_GRE { gre(b, off)? } else { udp_tunnel(b, off)? };
    if opened.inner_off > end {
        return Err(Outcome::MalformedTunnel);
    }
    Ok(opened)
}

/// GRE (RFC 2784, with RFC 2890's key and sequence number) and what rides on it, as
/// Wireshark's `dissect_gre` (packet-gre.c) and `dissect_erspan` (packet-erspan.c) read it:
/// protocol 0x6558 is an Ethernet frame (transparent Ethernet bridging); 0x88BE is ERSPAN
/// type I when the sequence-number flag is clear (the Ethernet frame right after GRE) and
/// type II when it is set (an 8-byte ERSPAN header, version 1); 0x22EB is ERSPAN type III (a
/// 12-byte header, version 2, then an 8-byte platform subheader when its O flag is set, then
/// the frame when its frame type is 0, Ethernet). IPv4, IPv6 and MPLS are carried directly.
#[inline(always)]
fn gre<B: Bytes + ?Sized>(b: &B, off: usize) -> Result<Opened, Outcome> {
    use gre_flags::{CHECKSUM, KEY, ROUTING, SEQUENCE};
    let h = b.array_at::<4>(off).ok_or(Outcome::MalformedTunnel)?;
    let (flags, ptype) = (be16(h, 0), be16(h, 2));
    // Version 1 is PPTP's enhanced GRE (PPP inside); RFC 1701 source routing is obsolete.
    if flags & 0x0007 != 0 || flags & ROUTING != 0 {
        return Err(Outcome::NonTcpPassed);
    }
    let key_off = off + 4 + if flags & CHECKSUM != 0 { 4 } else { 0 };
    let mut inner_off = key_off;
    let mut session = 0;
    if flags & KEY != 0 {
        let k = b.array_at::<4>(key_off).ok_or(Outcome::MalformedTunnel)?;
        session = u32::from_be_bytes(*k);
        inner_off += 4;
    }
    if flags & SEQUENCE != 0 {
        inner_off += 4;
    }
    let (kind, inner) = match ptype {
        ETHERTYPE_TEB => (Tunnel::GreEthernet, None),
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 | ETHERTYPE_MPLS | ETHERTYPE_MPLS_MULTICAST => {
            (Tunnel::Gre, Some(ptype))
        }
        ETHERTYPE_ERSPAN_I_II if flags & SEQUENCE == 0 => (Tunnel::ErspanI, None),
        ETHERTYPE_ERSPAN_I_II => {
            let e = b.array_at::<8>(inner_off).ok_or(Outcome::MalformedTunnel)?;
            if e[0] >> 4 != 1 {
                return Err(Outcome::MalformedTunnel);
            }
            session = (be16(e, 2) & 0x03ff) as u32;
            inner_off += 8;
            (Tunnel::ErspanII, None)
        }
        ETHERTYPE_ERSPAN_III => {
            let e = b.array_at::<12>(inner_off).ok_or(Outcome::MalformedTunnel)?;
            if e[0] >> 4 != 2 {
                return Err(Outcome::MalformedTunnel);
            }
            session = (be16(e, 2) & 0x03ff) as u32;
            let last = be16(e, 10);
            inner_off += 12 + if last & 0x0001 != 0 { 8 } else { 0 };
            if (last >> 10) & 0x1f != 0 {
                return Err(Outcome::NonTcpPassed);
            }
            (Tunnel::ErspanIII, None)
        }
        _ => return Err(Outcome::NonTcpPassed),
    };
    Ok(Opened { kind, session, inner_off, inner })
}

/// VXLAN (RFC 7348 §5: an 8-byte header, the VNI in bytes 4–6, then an Ethernet frame) and
/// GENEVE (RFC 8926 §3.4: version 0, options of `opt_len` 4-byte words, then the payload
/// named by its protocol type) behind the UDP header at `off`, told by destination port as
/// Wireshark's `dissect_vxlan` and `dissect_geneve` are registered (packet-vxlan.c,
/// packet-geneve.c). A UDP header cut before its ports is just not TCP.
#[inline(always)]
fn udp_tunnel<B: Bytes + ?Sized>(b: &B, off: usize) -> Result<Opened, Outcome> {
    let dport = b.be16_at(off + 2).ok_or(Outcome::NonTcpPassed)?;
    let t = off + 8;
    match dport {
        UDP_PORT_VXLAN => {
            let h = b.array_at::<{ 8 + 8 }>(off).ok_or(Outcome::MalformedTunnel)?;
            let vni = u32::from_be_bytes([0, h[12], h[13], h[14]]);
            Ok(Opened { kind: Tunnel::Vxlan, session: vni, inner_off: t + 8, inner: None })
        }
        UDP_PORT_GENEVE => {
            let h = b.array_at::<{ 8 + 8 }>(off).ok_or(Outcome::MalformedTunnel)?;
            if h[8] >> 6 != 0 {
                return Err(Outcome::MalformedTunnel);
            }
            let vni = u32::from_be_bytes([0, h[12], h[13], h[14]]);
            let inner_off = t + 8 + ((h[8] & 0x3f) as usize) * 4;
            let inner = match be16(h, 10) {
                ETHERTYPE_TEB => None,
                et @ (ETHERTYPE_IPV4 | ETHERTYPE_IPV6) => Some(et),
                _ => return Err(Outcome::NonTcpPassed),
            };
            Ok(Opened { kind: Tunnel::Geneve, session: vni, inner_off, inner })
        }
        _ => Err(Outcome::NonTcpPassed),
    }
}

/// GRE flag bits (RFC 2784 §2, RFC 2890 §2; routing from RFC 1701 §2.1); the low three bits
/// are the version.
pub mod gre_flags {
    pub const CHECKSUM: u16 = 0x8000;
    pub const ROUTING: u16 = 0x4000;
    pub const KEY: u16 = 0x2000;
    pub const SEQUENCE: u16 = 0x1000;
}

/// TCP flag bits (RFC 9293 §3.1).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// TCP options the tracker uses (RFC 9293 §3.2, RFC 7323, RFC 2018).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOptions {
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack_permitted: bool,
    pub has_sack: bool,
    /// (TSval, TSecr)
    pub timestamp: Option<(u32, u32)>,
    /// The option list was cut by the snap length or ended inside an option.
    pub truncated: bool,
}

/// Decodes the TCP option list `opts` (the bytes after the fixed header that were captured).
pub fn parse_tcp_options(opts: &[u8], declared_len: usize) -> TcpOptions {
    let mut o = TcpOptions { truncated: opts.len() < declared_len, ..Default::default() };
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let Some(&len) = opts.get(i + 1) else {
                    o.truncated = true;
                    break;
                };
                let len = len as usize;
                if len < 2 || i + len > opts.len() {
                    o.truncated = true;
                    break;
                }
                let body = &opts[i + 2..i + len];
                match (kind, body.len()) {
                    (2, 2) => o.mss = Some(u16::from_be_bytes([body[0], body[1]])),
                    (3, 1) => o.wscale = Some(body[0].min(14)),
                    (4, 0) => o.sack_permitted = true,
                    (5, _) => o.has_sack = true,
                    (8, 8) => {
                        let v = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                        let e = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                        o.timestamp = Some((v, e));
                    }
                    _ => {}
                }
                i += len;
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(ethertype: u16) -> [u8; 14] {
        let mut h = [0u8; 14];
        h[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        h[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        h[12..14].copy_from_slice(&ethertype.to_be_bytes());
        h
    }

    fn ipv4_tcp(payload: usize, ihl_words: u8, doff_words: u8) -> [u8; 1600] {
        let mut f = [0u8; 1600];
        f[..14].copy_from_slice(&eth(ETHERTYPE_IPV4));
        let ihl = ihl_words as usize * 4;
        let thl = doff_words as usize * 4;
        let total = (ihl.max(20) + thl.max(20) + payload) as u16;
        f[14] = 0x40 | ihl_words;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[23] = IPPROTO_TCP;
        f[14 + ihl.max(20) + 12] = doff_words << 4;
        f
    }

    #[test]
    fn ipv4_tcp_with_ip_options() {
        let f = ipv4_tcp(10, 6, 8);
        let total = 24 + 32 + 10;
        let o = classify(&f[..14 + total], 14 + total).unwrap();
        assert_eq!((o.ip_version, o.l3_off, o.l4_off, o.tcp_hdr_len), (4, 14, 38, 32));
        assert_eq!(o.payload_len(), 10);
    }

    #[test]
    fn snapped_capture_still_parses_but_wire_truncation_does_not() {
        let f = ipv4_tcp(1000, 5, 5);
        let wire = 14 + 20 + 20 + 1000;
        assert!(classify(&f[..64], wire).is_ok());
        assert_eq!(classify(&f[..500], 500), Err(Outcome::MalformedIpv4));
    }

    #[test]
    fn bogus_lengths() {
        let f = ipv4_tcp(0, 4, 5);
        assert_eq!(classify(&f[..54], 54), Err(Outcome::MalformedIpv4Ihl));
        let f = ipv4_tcp(0, 5, 4);
        assert_eq!(classify(&f[..54], 54), Err(Outcome::MalformedTcpDataOffset));
        // data offset larger than the segment
        let mut f = ipv4_tcp(0, 5, 5);
        f[14 + 20 + 12] = 15 << 4;
        assert_eq!(classify(&f[..54], 54), Err(Outcome::MalformedTcpDataOffset));
    }

    #[test]
    fn truncated_at_every_boundary_never_panics_and_is_malformed() {
        let f = ipv4_tcp(0, 5, 5);
        for cut in 0..54 {
            let r = classify(&f[..cut], cut);
            assert!(matches!(r, Err(o) if o.is_malformed()), "cut {cut}: {r:?}");
        }
    }

    #[test]
    fn vlan_tags() {
        let inner = ipv4_tcp(0, 5, 5);
        let mut f = [0u8; 200];
        f[..12].copy_from_slice(&inner[..12]);
        f[12..14].copy_from_slice(&ETHERTYPE_QINQ.to_be_bytes());
        f[14..16].copy_from_slice(&100u16.to_be_bytes());
        f[16..18].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        f[18..20].copy_from_slice(&(0x2000u16 | 0x00c8).to_be_bytes());
        f[20..22].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f[22..62].copy_from_slice(&inner[14..54]);
        let o = classify(&f[..62], 62).unwrap();
        assert_eq!((o.vlan_count, o.vlan_ids, o.l3_off, o.l4_off), (2, [100, 200], 22, 42));
        // a third tag is refused
        f[20..22].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        assert_eq!(classify(&f[..62], 62), Err(Outcome::MalformedVlan));
    }

    #[test]
    fn ipv6_extension_chain() {
        let mut f = [0u8; 300];
        f[..14].copy_from_slice(&eth(ETHERTYPE_IPV6));
        f[14] = 0x60;
        let exts = [IPV6_EXT_HOPOPTS, IPV6_EXT_DSTOPTS, IPV6_EXT_ROUTING, IPV6_EXT_FRAGMENT];
        f[14 + 6] = exts[0];
        let mut off = 54;
        for (i, _) in exts.iter().enumerate() {
            f[off] = if i + 1 < exts.len() { exts[i + 1] } else { IPPROTO_TCP };
            off += 8; // hdr_ext_len 0 (8 bytes); fragment header offset 0 = first fragment
        }
        f[off + 12] = 5 << 4;
        let payload = (off + 20 - 54) as u16;
        f[18..20].copy_from_slice(&payload.to_be_bytes());
        let len = off + 20;
        let o = classify(&f[..len], len).unwrap();
        assert_eq!((o.ip_version, o.l4_off), (6, off as u16));
        // a later fragment carries no TCP header
        f[54 + 24 + 2..54 + 24 + 4].copy_from_slice(&(185u16 << 3).to_be_bytes());
        assert_eq!(classify(&f[..len], len), Err(Outcome::LaterFragment));
    }

    /// The fast path answers exactly as the reference parser does: every base shape, cut at
    /// every length, with wire lengths around the IP length fields, and with the bytes the
    /// fast path reads flipped at random (xorshift, fixed seed).
    #[test]
    fn fast_path_matches_the_reference() {
        let mut bases: [([u8; 200], usize); 6] = [([0; 200], 0); 6];
        let v4 = ipv4_tcp(18, 5, 8);
        bases[0].0[..84].copy_from_slice(&v4[..84]);
        bases[0].1 = 84;
        let v4opt = ipv4_tcp(0, 6, 5);
        bases[1].0[..58].copy_from_slice(&v4opt[..58]);
        bases[1].1 = 58;
        // IPv6 + TCP, no extension headers, 12 bytes of payload.
        let f = &mut bases[2].0;
        f[..14].copy_from_slice(&eth(ETHERTYPE_IPV6));
        f[14] = 0x60;
        f[18..20].copy_from_slice(&32u16.to_be_bytes());
        f[20] = IPPROTO_TCP;
        f[54 + 12] = 5 << 4;
        bases[2].1 = 86;
        // The IPv4 frame behind one and two tags, and the IPv6 one behind two.
        for (i, tags, src) in [(3, 1, 0), (4, 2, 0), (5, 2, 2)] {
            let (from, len) = bases[src];
            let mut f = [0u8; 200];
            f[..12].copy_from_slice(&from[..12]);
            for t in 0..tags {
                let tpid = if t == 0 && tags == 2 { ETHERTYPE_QINQ } else { ETHERTYPE_VLAN };
                f[12 + 4 * t..14 + 4 * t].copy_from_slice(&tpid.to_be_bytes());
                f[14 + 4 * t..16 + 4 * t].copy_from_slice(&(0x1000u16 + t as u16).to_be_bytes());
            }
            f[12 + 4 * tags..len + 4 * tags].copy_from_slice(&from[12..len]);
            bases[i] = (f, len + 4 * tags);
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut compared = 0u32;
        for (base, len) in bases {
            assert!(classify(&base[..len], len).is_ok(), "base frame of {len} B");
            for round in 0..3000 {
                let mut f = base;
                if round > 0 {
                    for _ in 0..=(next() % 3) {
                        let at = (next() % (len as u64 + 4)) as usize;
                        f[at] = match next() % 4 {
                            0 => 0,
                            1 => 0xff,
                            2 => f[at] ^ (1 << (next() % 8)),
                            _ => next() as u8,
                        };
                    }
                }
                for cut in
                    [len, len - 1, len.saturating_sub(20), (next() % (len as u64 + 1)) as usize]
                {
                    for wire in [cut, len, len + 1, cut + (next() % 64) as usize] {
                        assert_eq!(
                            classify(&f[..cut], wire),
                            classify_reference(&f[..cut], wire),
                            "frame {:02x?} cut {cut} wire {wire}",
                            &f[..cut]
                        );
                        compared += 1;
                    }
                }
            }
        }
        assert!(compared > 250_000);
    }

    #[test]
    fn options() {
        let opts = [2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];
        let o = parse_tcp_options(&opts, opts.len());
        assert_eq!(o.mss, Some(1460));
        assert!(o.sack_permitted);
        assert_eq!(o.timestamp, Some((1, 0)));
        assert_eq!(o.wscale, Some(7));
        assert!(!o.truncated);
        let o = parse_tcp_options(&opts[..9], opts.len());
        assert!(o.truncated && o.timestamp.is_none());
    }
}
