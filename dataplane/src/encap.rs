//! Wraps Ethernet frames in the tunnels the shared parser opens (GRE with IP or Ethernet,
//! ERSPAN types I–III, VXLAN, GENEVE, MPLS), as a switch or a cloud mirror would send them:
//! fixtures for the XDP program, captures for the offline tests, benchmark frames.
use std::net::IpAddr;

use dataplane_common::{
    gre_flags, ETHERTYPE_ERSPAN_III, ETHERTYPE_ERSPAN_I_II, ETHERTYPE_IPV4, ETHERTYPE_IPV6,
    ETHERTYPE_MPLS, ETHERTYPE_TEB, IPPROTO_GRE, IPPROTO_UDP, UDP_PORT_GENEVE, UDP_PORT_VXLAN,
};

use crate::craft::{checksum_add, checksum_finish};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encap {
    /// Labels (20 bits each) in front of the IP packet, on the frame's own Ethernet header.
    Mpls(Vec<u32>),
    /// GRE carrying the IP packet (the frame's Ethernet header dropped), with the optional
    /// checksum, key and sequence number fields of RFC 2784/2890.
    Gre {
        checksum: bool,
        key: Option<u32>,
        seq: Option<u32>,
    },
    /// GRE carrying the whole frame (transparent Ethernet bridging, 0x6558).
    GreEthernet {
        key: Option<u32>,
    },
    ErspanI,
    ErspanII {
        session: u16,
    },
    /// With `platform`, the optional 8-byte platform-specific subheader (O flag).
    ErspanIII {
        session: u16,
        platform: bool,
    },
    Vxlan {
        vni: u32,
    },
    /// The whole frame behind `option_words` 4-byte words of options.
    Geneve {
        vni: u32,
        option_words: u8,
    },
}

impl Encap {
    /// One of each shape, for tables that cover them all.
    pub fn all() -> Vec<(&'static str, Encap)> {
        vec![
            ("erspan1", Encap::ErspanI),
            ("erspan2", Encap::ErspanII { session: 100 }),
            ("erspan3", Encap::ErspanIII { session: 200, platform: false }),
            ("erspan3 platform", Encap::ErspanIII { session: 201, platform: true }),
            ("gre", Encap::Gre { checksum: false, key: None, seq: None }),
            ("gre csum key seq", Encap::Gre { checksum: true, key: Some(7), seq: Some(1) }),
            ("gre teb", Encap::GreEthernet { key: Some(9) }),
            ("vxlan", Encap::Vxlan { vni: 4242 }),
            ("geneve", Encap::Geneve { vni: 77, option_words: 2 }),
            ("mpls", Encap::Mpls(vec![16, 17, 18])),
        ]
    }
}

/// The mirror's outer addresses: the IP version of `src` picks the outer header.
#[derive(Clone, Debug)]
pub struct Outer {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: IpAddr,
    pub dst: IpAddr,
}

impl Outer {
    pub fn new(src: IpAddr, dst: IpAddr) -> Self {
        Self { src_mac: [0x02, 0, 0, 0, 0xee, 1], dst_mac: [0x02, 0, 0, 0, 0xee, 2], src, dst }
    }
}

/// `frame` (untagged Ethernet carrying IP) inside `encap`, sent from `outer`.
pub fn wrap(frame: &[u8], encap: &Encap, outer: &Outer) -> Vec<u8> {
    let ip_packet = &frame[14..];
    let inner_ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let gre = |flags: u16, ptype: u16, fields: &[u32], rest: &[&[u8]]| {
        let mut g = Vec::new();
        g.extend_from_slice(&flags.to_be_bytes());
        g.extend_from_slice(&ptype.to_be_bytes());
        for f in fields {
            g.extend_from_slice(&f.to_be_bytes());
        }
        for r in rest {
            g.extend_from_slice(r);
        }
        g
    };
    let (proto, payload) = match encap {
        Encap::Mpls(labels) => {
            let mut f = frame[..12].to_vec();
            f.extend_from_slice(&ETHERTYPE_MPLS.to_be_bytes());
            for (i, l) in labels.iter().enumerate() {
                let bottom = (i + 1 == labels.len()) as u32;
                f.extend_from_slice(&((l << 12) | (bottom << 8) | 64).to_be_bytes());
            }
            f.extend_from_slice(ip_packet);
            return f;
        }
        Encap::Gre { checksum, key, seq } => {
            let flags = if *checksum { gre_flags::CHECKSUM } else { 0 }
                | if key.is_some() { gre_flags::KEY } else { 0 }
                | if seq.is_some() { gre_flags::SEQUENCE } else { 0 };
            let mut fields = Vec::new();
            if *checksum {
                fields.push(0);
            }
            fields.extend(key);
            fields.extend(seq);
            let mut g = gre(flags, inner_ethertype, &fields, &[ip_packet]);
            if *checksum {
                // RFC 2784 §2.5: over the GRE header and payload, checksum field zero.
                let c = checksum_finish(checksum_add(&g));
                g[4..6].copy_from_slice(&c.to_be_bytes());
            }
            (IPPROTO_GRE, g)
        }
        Encap::GreEthernet { key } => {
            let flags = if key.is_some() { gre_flags::KEY } else { 0 };
            let fields: Vec<u32> = key.iter().copied().collect();
            (IPPROTO_GRE, gre(flags, ETHERTYPE_TEB, &fields, &[frame]))
        }
        Encap::ErspanI => (IPPROTO_GRE, gre(0, ETHERTYPE_ERSPAN_I_II, &[], &[frame])),
        Encap::ErspanII { session } => {
            // Version 1, VLAN 0, COS 0, En 0, T 0, session; index 0.
            let e = (1u64 << 60) | ((*session as u64 & 0x3ff) << 32);
            (
                IPPROTO_GRE,
                gre(gre_flags::SEQUENCE, ETHERTYPE_ERSPAN_I_II, &[1], &[&e.to_be_bytes(), frame]),
            )
        }
        Encap::ErspanIII { session, platform } => {
            let mut e = [0u8; 12];
            e[0] = 2 << 4; // version 2
            e[2..4].copy_from_slice(&(session & 0x3ff).to_be_bytes());
            e[4..8].copy_from_slice(&123_456u32.to_be_bytes()); // timestamp
            e[11] = *platform as u8; // O flag; frame type 0 (Ethernet)
            let sub: &[u8] = if *platform { &[0x08, 0, 0, 0, 0, 0, 0, 1] } else { &[] };
            (IPPROTO_GRE, gre(gre_flags::SEQUENCE, ETHERTYPE_ERSPAN_III, &[1], &[&e, sub, frame]))
        }
        Encap::Vxlan { vni } => {
            let mut v = vec![0x08, 0, 0, 0];
            v.extend_from_slice(&(vni << 8).to_be_bytes());
            v.extend_from_slice(frame);
            (IPPROTO_UDP, udp(UDP_PORT_VXLAN, &v))
        }
        Encap::Geneve { vni, option_words } => {
            let mut g = vec![*option_words & 0x3f, 0];
            g.extend_from_slice(&ETHERTYPE_TEB.to_be_bytes());
            g.extend_from_slice(&(vni << 8).to_be_bytes());
            for w in 0..*option_words {
                // Option class 0x0103, type w, length 0 words past its own header.
                g.extend_from_slice(&[0x01, 0x03, w, 0]);
            }
            g.extend_from_slice(frame);
            (IPPROTO_UDP, udp(UDP_PORT_GENEVE, &g))
        }
    };
    let mut f = Vec::with_capacity(14 + 40 + payload.len());
    f.extend_from_slice(&outer.dst_mac);
    f.extend_from_slice(&outer.src_mac);
    match (outer.src, outer.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            let mut h = [0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
            h[8] = 64;
            h[9] = proto;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let c = checksum_finish(checksum_add(&h));
            h[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&h);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
            let mut h = [0u8; 40];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
            h[6] = proto;
            h[7] = 64;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
            f.extend_from_slice(&h);
        }
        _ => panic!("Outer: source and destination must be of one address family"),
    }
    f.extend_from_slice(&payload);
    f
}

/// A UDP header to `dport` in front of `payload`, checksum 0 (none: RFC 768 for IPv4,
/// RFC 6935 for tunnels over IPv6).
fn udp(dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&49_152u16.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

#[cfg(test)]
mod tests {
    use dataplane_common::{classify, classify_reference, tcp_flags, Outcome, Tunnel};

    use super::*;
    use crate::craft::TcpSegment;
    use crate::packet::{decode, unread_cause, TcpPacket, Unread};

    fn inner_frames() -> Vec<Vec<u8>> {
        let mut syn =
            TcpSegment::new("10.9.0.1".parse().unwrap(), 40000, "10.9.0.2".parse().unwrap(), 80);
        syn.flags = tcp_flags::SYN;
        syn.seq = 1000;
        syn.mss = Some(1460);
        syn.wscale = Some(7);
        syn.src_mac = [0x02, 0xaa, 0, 0, 0, 1];
        let mut data =
            TcpSegment::new("fd00::1".parse().unwrap(), 443, "fd00::2".parse().unwrap(), 50000);
        data.timestamp = Some((5, 6));
        data.payload_len = 1200;
        data.seq = 7;
        data.ack = 9;
        data.dst_mac = [0x02, 0xbb, 0, 0, 0, 2];
        vec![syn.frame(), data.frame()]
    }

    fn outers() -> [Outer; 2] {
        [
            Outer::new("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()),
            Outer::new("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap()),
        ]
    }

    /// What the tracker reads of a packet, without the wire length.
    fn seen(p: &TcpPacket) -> String {
        format!(
            "{:?} {:?} {} {} {} {}:{} > {}:{} {} {} {} {} {} {} {:?}",
            p.src_mac,
            p.dst_mac,
            p.vlan,
            p.ip_id,
            p.ttl,
            p.src,
            p.sport,
            p.dst,
            p.dport,
            p.seq.0,
            p.ack.0,
            p.flags,
            p.window,
            p.payload_len,
            p.side,
            p.opts
        )
    }

    fn expected_tunnel(e: &Encap) -> (Tunnel, u32) {
        match e {
            Encap::Mpls(_) => (Tunnel::None, 0),
            Encap::Gre { key, .. } => (Tunnel::Gre, key.unwrap_or(0)),
            Encap::GreEthernet { key } => (Tunnel::GreEthernet, key.unwrap_or(0)),
            Encap::ErspanI => (Tunnel::ErspanI, 0),
            Encap::ErspanII { session } => (Tunnel::ErspanII, *session as u32),
            Encap::ErspanIII { session, .. } => (Tunnel::ErspanIII, *session as u32),
            Encap::Vxlan { vni } | Encap::Geneve { vni, .. } => (
                if matches!(e, Encap::Vxlan { .. }) { Tunnel::Vxlan } else { Tunnel::Geneve },
                *vni,
            ),
        }
    }

    /// Every encapsulation, over IPv4 and IPv6, of an IPv4 SYN and IPv6 data: the decoded
    /// packet is the plain frame's (MACs of the mirrored frame, not of the mirror), the
    /// tunnel and its session are reported, and the frame cut 128 B past the inner frame's
    /// start (the XDP snap) still decodes the same.
    #[test]
    fn every_encapsulation_decodes_as_the_plain_frame() {
        let mut checked = 0;
        for inner in inner_frames() {
            let plain = decode(&inner, inner.len() as u32, 0, 0).unwrap();
            for outer in outers() {
                for (name, e) in Encap::all() {
                    let w = wrap(&inner, &e, &outer);
                    let o = classify(&w[..], w.len()).unwrap_or_else(|x| panic!("{name}: {x:?}"));
                    assert_eq!(Ok(o), classify_reference(&w[..], w.len()), "{name}");
                    assert_eq!(
                        (Tunnel::from_u8(o.tunnel), o.session),
                        expected_tunnel(&e),
                        "{name}"
                    );
                    let p = decode(&w, w.len() as u32, 0, 0).unwrap();
                    let mut plain = plain.clone();
                    if matches!(e, Encap::Gre { .. }) {
                        // No inner Ethernet header: the MACs are the mirror's.
                        (plain.src_mac, plain.dst_mac) = (outer.src_mac, outer.dst_mac);
                    }
                    assert_eq!(seen(&p), seen(&plain), "{name}");
                    let snap = (o.snap_off as usize + 128).min(w.len());
                    let cut = decode(&w[..snap], w.len() as u32, 0, 0)
                        .unwrap_or_else(|x| panic!("{name} cut at {snap}: {x:?}"));
                    assert_eq!(seen(&cut), seen(&plain), "{name} cut at {snap}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 2 * 2 * Encap::all().len());
    }

    /// Cut at every length below the end of the inner fixed TCP header, as captured
    /// (snapped) and as sent (cut on the wire): refused with a malformed outcome, never a
    /// panic. A snapped frame's cause is `cut_short`, except where `unread_cause`'s
    /// zero-filling cannot tell (a cut inside an IP header's first four bytes: a zero total
    /// length is malformed either way), where it is `malformed`, and a cut before a UDP
    /// header's destination port, which cannot tell a tunnel from other UDP (`not_tcp`).
    #[test]
    fn truncated_tunnels_are_refused_and_counted() {
        let (mut short, mut cuts) = (0, 0);
        for outer in outers() {
            for (name, e) in Encap::all() {
                let inner = &inner_frames()[0];
                let w = wrap(inner, &e, &outer);
                let o = classify(&w[..], w.len()).unwrap();
                for cut in 0..o.l4_off as usize + 20 {
                    let on_wire = decode(&w[..cut], cut as u32, 0, 0).unwrap_err();
                    assert!(on_wire.is_malformed(), "{name} cut {cut}: {on_wire:?}");
                    let snapped = decode(&w[..cut], w.len() as u32, 0, 0).unwrap_err();
                    let c = unread_cause(&w[..cut], w.len() as u32, snapped);
                    assert!(
                        matches!(c, Unread::CutShort | Unread::Malformed | Unread::NotTcp),
                        "{name} {cut}: {c:?}"
                    );
                    short += (c == Unread::CutShort) as u32;
                    cuts += 1;
                }
            }
        }
        assert!(short * 10 > cuts * 9, "{short} of {cuts} snapped cuts read as cut short");
    }

    /// Hostile tunnel headers: each byte of every encapsulated frame's headers set to edge
    /// values, at several cuts and wire lengths. The fast path and the reference agree, and
    /// decoding never panics.
    #[test]
    fn mutated_tunnels_never_panic_and_both_paths_agree() {
        let values = [0u8, 1, 0x08, 0x10, 0x20, 0x3f, 0x40, 0x45, 0x60, 0x80, 0xff];
        let mut refused = 0;
        for outer in outers() {
            for (name, e) in Encap::all() {
                let w = wrap(&inner_frames()[0], &e, &outer);
                let headers = w.len() - 20;
                for at in 0..headers {
                    for &v in &values {
                        let mut m = w.clone();
                        m[at] = v;
                        for cut in [m.len(), m.len() - 10, headers] {
                            for wire in [cut, m.len(), m.len() + 64] {
                                let g = &m[..cut];
                                assert_eq!(
                                    classify(g, wire),
                                    classify_reference(g, wire),
                                    "{name} byte {at} = {v:#x} cut {cut} wire {wire}"
                                );
                                if let Err(o) = decode(g, wire as u32, 0, 0) {
                                    refused += 1;
                                    unread_cause(g, wire as u32, o);
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(refused > 1000, "the mutations reach the refusals: {refused}");
    }

    #[test]
    fn bogus_lengths_and_endless_stacks() {
        let outer = &outers()[0];
        let syn = &inner_frames()[0];
        let mut endless = wrap(syn, &Encap::Mpls(vec![1; 12]), outer);
        endless[14 + 11 * 4 + 2] &= !1;
        assert_eq!(classify(&endless[..], endless.len()), Err(Outcome::MalformedMpls));
        let nine = wrap(syn, &Encap::Mpls(vec![1; 9]), outer);
        assert_eq!(classify(&nine[..], nine.len()), Err(Outcome::MalformedMpls));
        let eight = wrap(syn, &Encap::Mpls(vec![1; 8]), outer);
        assert!(classify(&eight[..], eight.len()).is_ok());
        let mut geneve = wrap(syn, &Encap::Geneve { vni: 1, option_words: 1 }, outer);
        geneve[14 + 20 + 8] = 0x3f;
        assert_eq!(classify(&geneve[..], geneve.len()), Err(Outcome::MalformedTunnel));
        let two = wrap(&wrap(syn, &Encap::Vxlan { vni: 5 }, outer), &Encap::ErspanI, outer);
        let o = classify(&two[..], two.len()).unwrap();
        // The outermost session names the vantage.
        assert_eq!((Tunnel::from_u8(o.tunnel), o.session), (Tunnel::ErspanI, 0));
        let three = wrap(&two, &Encap::GreEthernet { key: None }, outer);
        let r = classify(&three[..], three.len()).unwrap_err();
        assert_eq!(r, Outcome::TunnelTooDeep);
        assert_eq!(unread_cause(&three, three.len() as u32, r), Unread::Encapsulated);
    }
}
