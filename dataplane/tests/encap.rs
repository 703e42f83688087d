//! The tunnels the shared parser opens, built by the kit's `encap` as a switch or a cloud mirror
//! would send them: decoded as the plain frame, refused when cut, never a panic when mutated.
use dataplane::packet::{decode, unread_cause, TcpPacket, Unread};
use dataplane_common::{classify, classify_reference, tcp_flags, Outcome, Tunnel};
use wirewatch_testkit::craft::TcpSegment;
use wirewatch_testkit::encap::{wrap, Encap, Outer};

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
        p.src(),
        p.sport,
        p.dst(),
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
        Encap::GreMpls(_) => (Tunnel::Gre, 0),
        Encap::GreEthernet { key } => (Tunnel::GreEthernet, key.unwrap_or(0)),
        Encap::ErspanI => (Tunnel::ErspanI, 0),
        Encap::ErspanII { session } => (Tunnel::ErspanII, *session as u32),
        Encap::ErspanIII { session, .. } => (Tunnel::ErspanIII, *session as u32),
        Encap::Vxlan { vni } | Encap::Geneve { vni, .. } => {
            (if matches!(e, Encap::Vxlan { .. }) { Tunnel::Vxlan } else { Tunnel::Geneve }, *vni)
        }
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
                assert_eq!((Tunnel::from_u8(o.tunnel), o.session), expected_tunnel(&e), "{name}");
                let p = decode(&w, w.len() as u32, 0, 0).unwrap();
                let mut plain = plain.clone();
                if matches!(e, Encap::Gre { .. } | Encap::GreMpls(_)) {
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
