//! The real XDP program under BPF_PROG_TEST_RUN, Katran-BpfTester style: one fixture per
//! frame shape, asserting the verdict, the outcome counter it bumped and the metadata.
use std::net::IpAddr;

use aya::programs::{TestRun, TestRunOptions};
use dataplane::filter::Filter;
use dataplane::loader::{MetaPlacement, XdpProgram};
use dataplane::packet::decode;
use dataplane::xsk::{CopyMode, XskOptions, XskQueue, ZeroCopyPolicy};
use dataplane_common::{
    classify, tcp_flags, Outcome, XdpConfig, XdpMeta, META_F_TRUNCATED, META_MAGIC, XDP_META_LEN,
};
use wirewatch_testkit::craft::TcpSegment;
use wirewatch_testkit::encap::{wrap, Encap, Outer};
use wirewatch_testkit::netns::{privileged_or_skip, Netns};
use wirewatch_testkit::topology::Topology;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

struct Fixture {
    name: String,
    frame: Vec<u8>,
    queue: u32,
    verdict: u32,
    outcome: Outcome,
    /// Where the snap length counts from (the innermost frame's start): a redirected frame
    /// keeps `snap_off + DEFAULT_SNAPLEN` bytes.
    snap_off: usize,
}

fn v4(a: &str) -> IpAddr {
    a.parse().unwrap()
}

fn syn_v4() -> TcpSegment {
    let mut s = TcpSegment::new(v4("10.9.0.1"), 40000, v4("10.9.0.2"), 80);
    s.flags = tcp_flags::SYN;
    s.seq = 1000;
    s.mss = Some(1460);
    s.sack_permitted = true;
    s.timestamp = Some((1, 0));
    s.wscale = Some(7);
    s
}

fn data_v6(ext: &[u8]) -> TcpSegment {
    let mut s = TcpSegment::new(v4("fd00::1"), 40000, v4("fd00::2"), 443);
    s.payload_len = 200;
    s.ipv6_ext = ext.to_vec();
    s
}

fn fixtures() -> Vec<Fixture> {
    let mut f = Vec::new();
    let mut add = |name: &str, frame: Vec<u8>, queue: u32, verdict: u32, outcome: Outcome| {
        f.push(Fixture { name: name.into(), frame, queue, verdict, outcome, snap_off: 0 });
    };
    let syn = syn_v4().frame();
    add("ipv4 SYN with MSS/SACK/TS/wscale", syn.clone(), 0, XDP_REDIRECT, Outcome::TcpRedirected);
    let mut big = syn_v4();
    big.flags = tcp_flags::ACK | tcp_flags::PSH;
    big.payload_len = 1400;
    add("ipv4 data 1400 B (cut to snaplen)", big.frame(), 0, XDP_REDIRECT, Outcome::TcpRedirected);
    let mut opt = syn_v4();
    opt.ipv4_options = vec![1, 1, 1, 0]; // NOP NOP NOP EOL: IHL 6
    add("ipv4 with IP options", opt.frame(), 0, XDP_REDIRECT, Outcome::TcpRedirected);
    add(
        "ipv6 data, no extension headers",
        data_v6(&[]).frame(),
        0,
        XDP_REDIRECT,
        Outcome::TcpRedirected,
    );
    add(
        "ipv6 with hop-by-hop, routing, dstopts, fragment",
        data_v6(&[0, 43, 60, 44]).frame(),
        0,
        XDP_REDIRECT,
        Outcome::TcpRedirected,
    );
    add(
        "ipv6 with 5 extension headers",
        data_v6(&[0, 60, 43, 60, 44]).frame(),
        0,
        XDP_PASS,
        Outcome::Ipv6ExtChainTooLong,
    );
    let mut one = syn_v4();
    one.vlans = vec![100];
    add("one VLAN tag", one.frame(), 0, XDP_REDIRECT, Outcome::TcpRedirected);
    let mut two = data_v6(&[]);
    two.vlans = vec![100, 200];
    add(
        "two VLAN tags (802.1ad + 802.1Q) over ipv6",
        two.frame(),
        0,
        XDP_REDIRECT,
        Outcome::TcpRedirected,
    );
    add("TCP on a queue with no socket", syn.clone(), 1, XDP_PASS, Outcome::NoSocket);
    let mut two_v4 = syn_v4();
    two_v4.vlans = vec![100, 200];
    two_v4.payload_len = 1400;
    add(
        "QinQ over ipv4 1400 B on a queue with no socket",
        two_v4.frame(),
        1,
        XDP_PASS,
        Outcome::NoSocket,
    );
    let mut three = syn_v4();
    three.vlans = vec![1, 2, 3];
    add("three VLAN tags", three.frame(), 0, XDP_PASS, Outcome::MalformedVlan);
    let mut udp6 = data_v6(&[]).frame();
    udp6[14 + 6] = 17;
    add("ipv6 UDP", udp6, 0, XDP_PASS, Outcome::NonTcpPassed);
    let mut frag6 = data_v6(&[44]).frame();
    frag6[14 + 40 + 2..14 + 40 + 4].copy_from_slice(&(185u16 << 3).to_be_bytes());
    add("ipv6 later fragment", frag6, 0, XDP_PASS, Outcome::LaterFragment);
    let mut v6_short_payload = data_v6(&[]).frame();
    v6_short_payload[14 + 4..14 + 6].copy_from_slice(&10u16.to_be_bytes());
    add(
        "ipv6 payload length shorter than the TCP header",
        v6_short_payload,
        0,
        XDP_PASS,
        Outcome::MalformedTcpDataOffset,
    );

    let mut udp = syn.clone();
    udp[14 + 9] = 17;
    add("UDP", udp, 0, XDP_PASS, Outcome::NonTcpPassed);
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.resize(42, 0);
    add("ARP", arp, 0, XDP_PASS, Outcome::NonTcpPassed);
    let mut frag = syn.clone();
    frag[14 + 6..14 + 8].copy_from_slice(&0x00b9u16.to_be_bytes()); // offset 185*8
    add("ipv4 later fragment", frag, 0, XDP_PASS, Outcome::LaterFragment);

    // Truncated at every header boundary (the kernel refuses test frames under 14 bytes;
    // the host tests cover those).
    for (cut, outcome) in [
        (14, Outcome::MalformedIpv4),
        (20, Outcome::MalformedIpv4),
        (34, Outcome::MalformedIpv4),
        (40, Outcome::MalformedIpv4),
        (54, Outcome::MalformedIpv4),
        (60, Outcome::MalformedIpv4),
    ] {
        add(&format!("ipv4 SYN cut at {cut}"), syn[..cut].to_vec(), 0, XDP_PASS, outcome);
    }
    let v6 = data_v6(&[0]).frame();
    for cut in [14, 30, 54, 58, 62, 74] {
        add(&format!("ipv6 cut at {cut}"), v6[..cut].to_vec(), 0, XDP_PASS, Outcome::MalformedIpv6);
    }
    let mut tagged = syn_v4();
    tagged.vlans = vec![7];
    add("VLAN tag cut", tagged.frame()[..16].to_vec(), 0, XDP_PASS, Outcome::MalformedVlan);
    // Length fields that lie.
    let mut short_tcp = syn.clone();
    short_tcp[16..18].copy_from_slice(&30u16.to_be_bytes()); // IP total: 20 + 10 bytes of TCP
    add("TCP header shorter than 20 B", short_tcp, 0, XDP_PASS, Outcome::MalformedTcpDataOffset);
    let mut ihl4 = syn.clone();
    ihl4[14] = 0x44;
    add("IHL 4", ihl4, 0, XDP_PASS, Outcome::MalformedIpv4Ihl);
    let mut ihl15 = syn[..54].to_vec();
    ihl15[14] = 0x4f;
    ihl15[16..18].copy_from_slice(&40u16.to_be_bytes());
    add("IHL 15 past the frame", ihl15, 0, XDP_PASS, Outcome::MalformedIpv4Ihl);
    let mut doff4 = syn.clone();
    doff4[14 + 20 + 12] = 4 << 4;
    add("data offset 4", doff4, 0, XDP_PASS, Outcome::MalformedTcpDataOffset);
    let mut doff15 = syn_v4();
    doff15.mss = None;
    doff15.sack_permitted = false;
    doff15.timestamp = None;
    doff15.wscale = None;
    let mut doff15 = doff15.frame();
    doff15[14 + 20 + 12] = 15 << 4;
    add("data offset 15 past the segment", doff15, 0, XDP_PASS, Outcome::MalformedTcpDataOffset);
    let mut total_big = syn.clone();
    total_big[16..18].copy_from_slice(&1500u16.to_be_bytes());
    add("IP total length past the frame", total_big, 0, XDP_PASS, Outcome::MalformedIpv4);
    f.extend(tunnel_fixtures());
    f
}

/// Bytes of outer headers `encap` puts in front of the frame (or, for GRE carrying IP, in
/// front of its IP packet) the snap length counts from; MPLS keeps the frame's own
/// Ethernet header, where the count starts.
fn outer_len(wrapped: &[u8], inner: &[u8], encap: &Encap) -> usize {
    match encap {
        Encap::Mpls(_) => 0,
        Encap::Gre { .. } => wrapped.len() - (inner.len() - 14),
        // The snap counts from the label stack.
        Encap::GreMpls(labels) => wrapped.len() - (inner.len() - 14) - 4 * labels.len(),
        _ => wrapped.len() - inner.len(),
    }
}

/// Every tunnel over IPv4 and IPv6 (a SYN, and 1400 B of data cut 128 B past the inner
/// frame's start), two tunnels deep, and hostile variants: cut at every header boundary,
/// lengths that point past the packet, a label stack that never ends, three tunnels deep.
fn tunnel_fixtures() -> Vec<Fixture> {
    let mut f = Vec::new();
    let outers = [
        ("ipv4", Outer::new(v4("192.0.2.1"), v4("192.0.2.2"))),
        ("ipv6", Outer::new(v4("2001:db8::1"), v4("2001:db8::2"))),
    ];
    let syn = syn_v4().frame();
    let mut big = syn_v4();
    big.flags = tcp_flags::ACK | tcp_flags::PSH;
    big.payload_len = 1400;
    let big = big.frame();
    let fx = |name: String, frame: Vec<u8>, verdict, outcome, snap_off| Fixture {
        name,
        frame,
        queue: 0,
        verdict,
        outcome,
        snap_off,
    };
    for (name, encap) in Encap::all() {
        for (outer_name, outer) in &outers {
            if matches!(encap, Encap::Mpls(_)) && *outer_name == "ipv6" {
                continue; // MPLS has no outer IP header
            }
            for (what, inner) in [("SYN", &syn), ("data 1400 B", &big)] {
                let w = wrap(inner, &encap, outer);
                let off = outer_len(&w, inner, &encap);
                f.push(fx(
                    format!("{name} over {outer_name}: {what}"),
                    w,
                    XDP_REDIRECT,
                    Outcome::TcpRedirected,
                    off,
                ));
            }
            // Cut at every byte up to the end of the inner TCP header: never redirected,
            // always a counted malformed outcome.
            let w = wrap(&syn, &encap, outer);
            let tcp_end = w.len();
            for cut in 14..tcp_end {
                let outcome = classify(&w[..cut], cut).expect_err("a cut frame is refused");
                assert!(outcome.is_malformed(), "{name} over {outer_name} cut {cut}: {outcome:?}");
                f.push(fx(
                    format!("{name} over {outer_name} cut at {cut}"),
                    w[..cut].to_vec(),
                    XDP_PASS,
                    outcome,
                    0,
                ));
            }
        }
    }
    let outer = &outers[0].1;
    let vxlan = Encap::Vxlan { vni: 1 };
    let gre = Encap::GreEthernet { key: None };
    // Two deep (VXLAN carried over a GRE core): opened; three deep: passed, counted.
    let two = wrap(&wrap(&big, &vxlan, outer), &gre, outer);
    let off = two.len() - big.len();
    f.push(fx("vxlan inside gre".into(), two.clone(), XDP_REDIRECT, Outcome::TcpRedirected, off));
    let three = wrap(&two, &Encap::ErspanI, outer);
    f.push(fx("three tunnels deep".into(), three, XDP_PASS, Outcome::TunnelTooDeep, 0));
    // A label stack whose bottom-of-stack bit never comes.
    let mut endless = wrap(&syn, &Encap::Mpls(vec![1; 9]), outer);
    endless[14 + 8 * 4 + 2] &= !1;
    f.push(fx("mpls stack never ends".into(), endless, XDP_PASS, Outcome::MalformedMpls, 0));
    // GENEVE options longer than the packet (63 words).
    let mut geneve = wrap(&syn, &Encap::Geneve { vni: 1, option_words: 0 }, outer);
    geneve[14 + 20 + 8] = 0x3f;
    f.push(fx(
        "geneve options past the packet".into(),
        geneve,
        XDP_PASS,
        Outcome::MalformedTunnel,
        0,
    ));
    // ERSPAN II header of the wrong version.
    let mut erspan = wrap(&syn, &Encap::ErspanII { session: 1 }, outer);
    erspan[14 + 20 + 8] = 0x20;
    f.push(fx("erspan2 version 2".into(), erspan, XDP_PASS, Outcome::MalformedTunnel, 0));
    // An inner IP packet longer than the outer one carrying it.
    let mut liar = wrap(&syn, &vxlan, outer);
    let inner_ip = 14 + 20 + 8 + 8 + 14;
    liar[inner_ip + 2..inner_ip + 4].copy_from_slice(&1000u16.to_be_bytes());
    f.push(fx(
        "inner ipv4 longer than the tunnel".into(),
        liar,
        XDP_PASS,
        Outcome::MalformedIpv4,
        0,
    ));
    // VXLAN carrying UDP, and UDP to another port: not TCP.
    let mut udp_inner = syn.clone();
    udp_inner[14 + 9] = 17;
    f.push(fx(
        "vxlan carrying udp".into(),
        wrap(&udp_inner, &vxlan, outer),
        XDP_PASS,
        Outcome::NonTcpPassed,
        0,
    ));
    let mut other_port = wrap(&syn, &vxlan, outer);
    other_port[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&4790u16.to_be_bytes());
    f.push(fx("udp to port 4790".into(), other_port, XDP_PASS, Outcome::NonTcpPassed, 0));
    f
}

/// xdp_md as BPF_PROG_TEST_RUN takes it: data, data_end, data_meta, ingress_ifindex,
/// rx_queue_index, egress_ifindex.
fn xdp_md(len: usize, ifindex: u32, queue: u32) -> [u8; 24] {
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    ctx[16..20].copy_from_slice(&queue.to_ne_bytes());
    ctx
}

struct Run {
    verdict: u32,
    out: Vec<u8>,
    meta_len: u32,
}

fn run(prog: &mut XdpProgram, frame: &[u8], ifindex: u32, queue: u32) -> Run {
    let ctx = xdp_md(frame.len(), ifindex, queue);
    let mut ctx_out = [0u8; 24];
    let mut out = vec![0u8; 4096];
    let r = prog
        .program()
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ctx_out: Some(&mut ctx_out),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    // ctx_out.data is the metadata length in front of the packet.
    let meta_len = u32::from_ne_bytes(ctx_out[0..4].try_into().unwrap());
    Run { verdict: r.return_value, out, meta_len }
}

fn ifindex(ns: &Netns, dev: &str) -> u32 {
    ns.run(&format!("cat /sys/class/net/{dev}/ifindex")).unwrap().trim().parse().unwrap()
}

#[test]
fn xdp_program_fixture_table() {
    if !privileged_or_skip("xdp_program_fixture_table") {
        return;
    }
    let mut t = Topology::new();
    t.namespace("fx", &format!("wwfx{}", std::process::id())).unwrap();
    // Two RX queues: queue 0 gets an AF_XDP socket, queue 1 does not.
    t.veth_with_queues(("fx", "fx0"), ("fx", "fx1"), 2).unwrap();
    let ns = &t["fx"];
    let idx = ifindex(ns, "fx0");

    let ns_name = ns.name.clone();
    let failures = std::thread::spawn(move || {
        wirewatch_testkit::netns::enter_current_thread(&ns_name).unwrap();
        let mut failures = Vec::new();
        // Both placements of the metadata: the metadata area where this kernel allows
        // bpf_xdp_adjust_meta (some refuse it, and the default load then takes the other), and
        // in front of the frame, which every kernel must accept.
        let area = XdpProgram::load_placed(XdpConfig::default(), None, MetaPlacement::Area);
        let auto = XdpProgram::load(XdpConfig::default()).expect("verifier accepts the program");
        match &area {
            Ok(_) => assert!(!auto.meta_in_head(), "the default load left the metadata area"),
            Err(e) => {
                let why = e.to_string();
                let why = why.lines().find(|l| l.contains("cannot")).unwrap_or_default();
                eprintln!("this kernel refuses the metadata area ({why}): testing the other only");
                assert!(auto.meta_in_head(), "the default load did not fall back");
            }
        }
        drop(auto);
        let head = XdpProgram::load_placed(XdpConfig::default(), None, MetaPlacement::Head)
            .expect("verifier accepts the program with the metadata in front");
        assert!(head.meta_in_head());
        for mut prog in area.into_iter().chain([head]) {
            let opts =
                XskOptions { zero_copy: ZeroCopyPolicy::Off, ring_size: 64, ..Default::default() };
            let xsk = XskQueue::open("fx0", 0, &opts).expect("AF_XDP socket on fx0 queue 0");
            assert_eq!(xsk.mode, CopyMode::Copy);
            prog.bind_socket(0, &xsk.fd()).unwrap();
            let placed = if prog.meta_in_head() { "in front" } else { "in the metadata area" };

            for fx in fixtures() {
                let before = prog.counters().unwrap();
                let r = run(&mut prog, &fx.frame, idx, fx.queue);
                let after = prog.counters().unwrap();
                let mut problems = Vec::new();
                if r.verdict != fx.verdict {
                    problems.push(format!("verdict {} (want {})", r.verdict, fx.verdict));
                }
                let bumped: Vec<_> = Outcome::ALL
                    .iter()
                    .filter(|o| after.get(**o) != before.get(**o))
                    .copied()
                    .collect();
                if bumped != [fx.outcome] {
                    problems.push(format!("counters bumped {bumped:?} (want [{:?}])", fx.outcome));
                }
                if fx.verdict == XDP_REDIRECT {
                    let snap = fx.snap_off + XdpConfig::DEFAULT_SNAPLEN as usize;
                    let kept = fx.frame.len().min(snap);
                    // In the metadata area (test-run output starts with it), or where the kernel
                    // refused that, at the start of the frame itself: the same bytes either way.
                    let want_meta_len = if prog.meta_in_head() { 0 } else { XDP_META_LEN };
                    if r.meta_len as usize == want_meta_len && r.out.len() >= XDP_META_LEN {
                        let m = XdpMeta::from_bytes(&r.out[..XDP_META_LEN]);
                        match m {
                            Some(m) => {
                                if m.magic != META_MAGIC
                                    || m.orig_len as usize != fx.frame.len()
                                    || m.rx_ns == 0
                                {
                                    problems.push(format!("metadata {m:?}"));
                                }
                                let want_trunc = fx.frame.len() > snap;
                                if (m.flags & META_F_TRUNCATED != 0) != want_trunc {
                                    problems.push(format!(
                                        "truncated flag {} (want {want_trunc})",
                                        m.flags
                                    ));
                                }
                            }
                            None => problems.push("metadata magic missing".into()),
                        }
                    } else {
                        problems
                            .push(format!("metadata length {} (want {want_meta_len})", r.meta_len));
                    }
                    if r.out.len() != XDP_META_LEN + kept
                        || r.out[XDP_META_LEN..] != fx.frame[..kept]
                    {
                        problems.push(format!(
                            "frame out {} B (want the first {kept} B)",
                            r.out.len() - XDP_META_LEN
                        ));
                    }
                } else if r.meta_len != 0 || r.out != fx.frame {
                    problems.push("a passed frame was modified".into());
                }
                if !problems.is_empty() {
                    failures.push(format!(
                        "{} (metadata {placed}): {}",
                        fx.name,
                        problems.join("; ")
                    ));
                }
            }
            drop(xsk);
        }

        // Dedicated tap: non-TCP dropped, TCP still redirected.
        let mut tap =
            XdpProgram::load(XdpConfig { non_tcp_drop: 1, ..Default::default() }).unwrap();
        let mut udp = syn_v4().frame();
        udp[14 + 9] = 17;
        let r = run(&mut tap, &udp, idx, 0);
        let c = tap.counters().unwrap();
        if r.verdict != XDP_DROP || c.get(Outcome::NonTcpDropped) != 1 {
            failures.push(format!(
                "non-tcp drop mode: verdict {} counters {:?}",
                r.verdict,
                c.nonzero()
            ));
        }
        failures
    })
    .join()
    .unwrap();
    assert!(failures.is_empty(), "{} fixture(s) failed:\n{}", failures.len(), failures.join("\n"));
}

/// `--filter` in the XDP program: for each filter, every frame below (IPv4 and IPv6, tagged
/// and not, plain and inside each tunnel) gets the verdict the user-space filter gives the
/// decoded packet: passed as `no_socket` (queue 1 has no socket) when it matches, passed and
/// counted as `filtered` when it does not.
#[test]
fn xdp_filter_agrees_with_user_space() {
    if !privileged_or_skip("xdp_filter_agrees_with_user_space") {
        return;
    }
    let filters = [
        "host 10.9.0.1 and port 80",
        "net 10.0.0.0/8 and not src net 10.9.0.0/16 or dst host fd00::2",
        "(src port 40000 or dst port 443) and not vlan 100",
        "vlan and (dst net fd00::/8 or dst port 80)",
        "not (port 80 or port 443)",
    ];
    let mut frames = Vec::new();
    for vlans in [vec![], vec![100], vec![200], vec![0]] {
        let mut a = syn_v4();
        a.vlans.clone_from(&vlans);
        let mut b = TcpSegment::new(v4("10.8.1.1"), 1234, v4("10.9.0.1"), 443);
        b.vlans.clone_from(&vlans);
        let mut c = data_v6(&[]);
        c.vlans.clone_from(&vlans);
        let mut d = TcpSegment::new(v4("fd00::7"), 40000, v4("fd01::1"), 22);
        d.vlans = vlans;
        frames.extend([a.frame(), b.frame(), c.frame(), d.frame()]);
    }
    let outer = Outer::new(v4("192.0.2.1"), v4("192.0.2.2"));
    for (_, encap) in Encap::all() {
        frames.push(wrap(&syn_v4().frame(), &encap, &outer));
        frames.push(wrap(&data_v6(&[]).frame(), &encap, &outer));
    }
    let mut t = Topology::new();
    t.namespace("ff", &format!("wwdcf{}", std::process::id())).unwrap();
    t.veth_with_queues(("ff", "ff0"), ("ff", "ff1"), 2).unwrap();
    let ns = &t["ff"];
    let idx = ifindex(ns, "ff0");
    let ns_name = ns.name.clone();
    let failures = std::thread::spawn(move || {
        wirewatch_testkit::netns::enter_current_thread(&ns_name).unwrap();
        let mut failures = Vec::new();
        let (mut passed, mut refused) = (0, 0);
        for text in filters {
            let filter = Filter::parse(text).unwrap();
            let mut prog = XdpProgram::load_filtered(XdpConfig::default(), Some(&filter))
                .expect("verifier accepts the filtering program");
            for (i, f) in frames.iter().enumerate() {
                let p = decode(f, f.len() as u32, 0, 0).unwrap();
                let want = if filter.matches(&p) { Outcome::NoSocket } else { Outcome::Filtered };
                passed += usize::from(want == Outcome::NoSocket);
                refused += usize::from(want == Outcome::Filtered);
                let before = prog.counters().unwrap();
                let r = run(&mut prog, f, idx, 1);
                let after = prog.counters().unwrap();
                let bumped: Vec<_> =
                    Outcome::ALL.iter().filter(|o| after.get(**o) != before.get(**o)).collect();
                if r.verdict != XDP_PASS || bumped != [&want] || r.out != *f {
                    failures.push(format!(
                        "{text:?} frame {i} ({}:{} > {}:{} vlan {}): verdict {} counters {bumped:?}, want {want:?}",
                        p.src(), p.sport, p.dst(), p.dport, p.vlan, r.verdict
                    ));
                }
            }
        }
        // Both answers occur (else the table proves nothing).
        assert!(passed > 20 && refused > 20, "{passed} passed, {refused} refused");
        failures
    })
    .join()
    .unwrap();
    assert!(failures.is_empty(), "{} frame(s) differ:\n{}", failures.len(), failures.join("\n"));
}
