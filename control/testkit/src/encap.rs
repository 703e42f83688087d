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
    /// GRE carrying MPLS labels (20 bits each) in front of the IP packet.
    GreMpls(Vec<u32>),
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
            ("gre mpls", Encap::GreMpls(vec![16, 17])),
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

/// MPLS label stack entries for `labels` (the last one bottom of stack, TTL 64).
fn label_stack(labels: &[u32]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, l) in labels.iter().enumerate() {
        let bottom = (i + 1 == labels.len()) as u32;
        out.extend_from_slice(&((l << 12) | (bottom << 8) | 64).to_be_bytes());
    }
    out
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
            f.extend_from_slice(&label_stack(labels));
            f.extend_from_slice(ip_packet);
            return f;
        }
        Encap::GreMpls(labels) => {
            (IPPROTO_GRE, gre(0, ETHERTYPE_MPLS, &[], &[&label_stack(labels), ip_packet]))
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
