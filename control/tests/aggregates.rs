//! Floods, scans and black holes give one event per cause (issue 12 item 6), on crafted
//! captures (a spoofed flood cannot come from the kernel's own TCP; control/tests/blackhole.rs
//! makes a black hole with real TCP): per family, a spoofed SYN flood of 3,000 sources to one
//! service, one of 2,000 sources spread over 256 addresses of a prefix (carpet bombing), a SYN
//! scan of 120 ports from one source (half refused, half unanswered), six clients whose SYNs
//! to one service go unanswered while another service answers (a black hole), and, as controls, three clients whose SYNs go unanswered while nothing answers (a
//! dead path, not a black hole: reported one by one) and a healthy connection.
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use dataplane::pcapng::PcapngWriter;
use dataplane_common::tcp_flags::{ACK, RST, SYN};
use wirewatch_testkit::craft::TcpSegment;
use wirewatch_testkit::tempdir::TempDir;

struct Family {
    flooded: IpAddr,
    scanned: IpAddr,
    scanner: IpAddr,
    quiet_service: IpAddr,
    /// The n-th address of the prefix a flood is spread over.
    carpet: fn(u32) -> IpAddr,
    carpet_prefix: &'static str,
    blackholed: IpAddr,
    answering: IpAddr,
    spoofed: fn(u32) -> IpAddr,
    client: fn(u32) -> IpAddr,
}

fn families() -> [Family; 2] {
    [
        Family {
            flooded: "10.99.0.1".parse().unwrap(),
            scanned: "10.99.0.2".parse().unwrap(),
            scanner: "10.98.0.5".parse().unwrap(),
            quiet_service: "10.99.0.3".parse().unwrap(),
            carpet: |i| IpAddr::V4(std::net::Ipv4Addr::from(0x0a63_0100 + i % 256)),
            carpet_prefix: "10.99.1.0/24",
            blackholed: "10.99.0.4".parse().unwrap(),
            answering: "10.99.0.5".parse().unwrap(),
            spoofed: |i| IpAddr::V4(std::net::Ipv4Addr::from(0x2c00_0000 + i * 7919)),
            client: |i| IpAddr::V4(std::net::Ipv4Addr::from(0x0a61_0000 + i)),
        },
        Family {
            flooded: "fd99::1".parse().unwrap(),
            scanned: "fd99::2".parse().unwrap(),
            scanner: "fd98::5".parse().unwrap(),
            quiet_service: "fd99::3".parse().unwrap(),
            carpet: |i| {
                IpAddr::V6(std::net::Ipv6Addr::from((0xfd99_0001_u128 << 96) | u128::from(i % 256)))
            },
            carpet_prefix: "fd99:1::/64",
            blackholed: "fd99::4".parse().unwrap(),
            answering: "fd99::5".parse().unwrap(),
            spoofed: |i| {
                IpAddr::V6(std::net::Ipv6Addr::from(
                    (0x2001_0db8_u128 << 96) | (u128::from(i) * 7919),
                ))
            },
            client: |i| IpAddr::V6(std::net::Ipv6Addr::from((0xfd97_u128 << 112) | u128::from(i))),
        },
    ]
}

fn write_capture(path: &Path) {
    let mut w = PcapngWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    w.interface("tap0", 128).unwrap();
    let mut t = 1_700_000_000_000_000_000u64;
    let mut put = |g: &TcpSegment, t: u64| {
        let f = g.frame();
        w.packet(0, t, &f, f.len() as u32, None).unwrap();
    };
    let syn = |c: IpAddr, cport: u16, s: IpAddr, sport: u16, seq: u32| {
        let mut g = TcpSegment::new(c, cport, s, sport);
        g.flags = SYN;
        g.seq = seq;
        g
    };
    // A handshake to port 80 that completes.
    let handshake = |c: IpAddr, cport: u16, s: IpAddr| {
        let mut synack = TcpSegment::new(s, 80, c, cport);
        synack.flags = SYN | ACK;
        synack.seq = 100;
        synack.ack = 2;
        let mut ack = TcpSegment::new(c, cport, s, 80);
        ack.flags = ACK;
        ack.seq = 2;
        ack.ack = 101;
        [syn(c, cport, s, 80, 1), synack, ack]
    };
    for f in families() {
        // Control: three clients' SYNs to a service go unanswered while nothing answers (the
        // last handshake answered was the previous family's, over 10 s before): a dead path.
        for i in 0..3u32 {
            t += 100_000_000;
            put(&syn((f.client)(i), 40000, f.quiet_service, 443, 5000 + i), t);
        }
        // Flood: 3,000 spoofed SYNs over 3 s, one per source, never answered.
        for i in 0..3000u32 {
            let g = syn(
                (f.spoofed)(i),
                1024 + (i % 60000) as u16,
                f.flooded,
                80,
                i.wrapping_mul(2_654_435_761),
            );
            t += 1_000_000;
            put(&g, t);
        }
        // Scan: 120 ports, even ones refused, odd ones unanswered.
        for port in 1..=120u16 {
            t += 2_000_000;
            put(&syn(f.scanner, 55000, f.scanned, port, 77), t);
            if port % 2 == 0 {
                let mut r = TcpSegment::new(f.scanned, port, f.scanner, 55000);
                r.flags = RST | ACK;
                r.ack = 78;
                put(&r, t + 50_000);
            }
        }
        // Carpet bombing: 2,000 spoofed SYNs over 2 s to 256 addresses of one prefix (about
        // eight sources per address: no single service is flooded).
        for i in 0..2000u32 {
            let src = (f.spoofed)(100_000 + i);
            let g = syn(src, 2000 + (i % 50000) as u16, (f.carpet)(i * 37), 443, i ^ 0x5a5a);
            t += 1_000_000;
            put(&g, t);
        }
        // Black hole: another service answers five clients, then six clients' SYNs to this
        // one go unanswered.
        for i in 0..5u32 {
            t += 50_000_000;
            for (k, g) in handshake((f.client)(20 + i), 42000, f.answering).iter().enumerate() {
                put(g, t + k as u64 * 100_000);
            }
        }
        for i in 0..6u32 {
            t += 100_000_000;
            put(&syn((f.client)(30 + i), 43000, f.blackholed, 443, 9000 + i), t);
        }
        // A healthy connection to the flooded service.
        t += 10_000_000;
        for (k, g) in handshake((f.client)(9), 41000, f.flooded).iter().enumerate() {
            put(g, t + k as u64 * 100_000);
        }
        // Quiet time after each family, longer than the aggregate window.
        t += 15_000_000_000;
    }
    // Something at the end so every deadline falls inside the capture.
    let mut g = TcpSegment::new("10.1.1.1".parse().unwrap(), 5000, "10.1.1.2".parse().unwrap(), 22);
    g.flags = ACK;
    put(&g, t);
}

#[test]
fn a_flood_and_a_scan_are_one_event_each() {
    let dir = TempDir::new("aggregates");
    let cap = dir.join("flood.pcapng");
    write_capture(&cap);
    for workers in ["1", "2"] {
        let events = dir.join(format!("events-{workers}.jsonl"));
        let o = Command::new(env!("CARGO_BIN_EXE_wirewatch"))
            .args(["analyze", "--format", "json", "--workers", workers, "--events"])
            .arg(&events)
            .arg(&cap)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let ev: Vec<serde_json::Value> = std::fs::read_to_string(&events)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        dataplane::schema::validate_events(&ev).unwrap();
        // Time order holds for everything but the aggregates (reported when they end).
        let times: Vec<u64> = ev
            .iter()
            .filter(|e| {
                !dataplane::anomaly::Kind::from_name(e["kind"].as_str().unwrap())
                    .unwrap()
                    .is_aggregate()
            })
            .map(|e| e["time_last_ns"].as_u64().unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "events out of time order");
        let first = dataplane::anomaly::aggregate::HOLD_FROM - 1;
        for f in families() {
            let floods: Vec<_> = ev
                .iter()
                .filter(|e| e["kind"] == "syn_flood" && e["dest_ip"] == f.flooded.to_string())
                .collect();
            assert_eq!(floods.len(), 1, "{workers} workers, {}: {floods:?}", f.flooded);
            let fl = floods[0];
            assert_eq!(fl["dest_port"], 80, "{fl}");
            let absorbed = 3000 - first as u64;
            assert_eq!(fl["count"], absorbed, "{fl}");
            assert_eq!(fl["details"]["distinct_sources"], absorbed, "{fl}");
            assert_eq!(fl["details"]["unanswered"], absorbed, "{fl}");
            assert_eq!(fl["details"]["sample_flows"].as_array().unwrap().len(), 5, "{fl}");
            // Many spoofed sources: the culprit is the senders, none of them named.
            assert_eq!(fl["culprit"]["role"], "sender", "{fl}");
            assert!(fl["culprit"]["addr"].is_null(), "{fl}");
            // The carpet: one flood over the prefix, folding all but the first few.
            let carpets: Vec<_> = ev
                .iter()
                .filter(|e| e["kind"] == "syn_flood")
                .filter(|e| e["details"]["target_prefix"] == f.carpet_prefix)
                .collect();
            assert_eq!(carpets.len(), 1, "{workers} workers, {}: {carpets:?}", f.carpet_prefix);
            let c = carpets[0];
            assert_eq!(c["count"], 2000 - first as u64, "{c}");
            assert_eq!(c["details"]["distinct_dests"], 256, "{c}");
            assert_eq!(c["culprit"]["role"], "sender", "{c}");
            assert!(c["explanation"].as_str().unwrap().contains(f.carpet_prefix), "{c}");
            let scans: Vec<_> = ev
                .iter()
                .filter(|e| e["kind"] == "port_scan" && e["src_ip"] == f.scanner.to_string())
                .collect();
            assert_eq!(scans.len(), 1, "{workers} workers, {}: {scans:?}", f.scanner);
            assert_eq!(scans[0]["count"], 120 - first as u64, "{}", scans[0]);
            assert_eq!(scans[0]["culprit"]["role"], "sender", "{}", scans[0]);
            assert_eq!(scans[0]["culprit"]["addr"], f.scanner.to_string(), "{}", scans[0]);
            let (refused, unanswered) = (
                scans[0]["details"]["refused"].as_u64().unwrap(),
                scans[0]["details"]["unanswered"].as_u64().unwrap(),
            );
            assert_eq!(refused + unanswered, 120 - first as u64, "{}", scans[0]);
            assert!(refused >= 56 && unanswered >= 56, "{}", scans[0]);
            // The black hole: one event naming the service, the filter in front of it and the
            // vantage; the first two failures went out one by one, before it could be seen.
            let holes: Vec<_> = ev
                .iter()
                .filter(|e| e["kind"] == "service_blackhole")
                .filter(|e| e["dest_ip"] == f.blackholed.to_string())
                .collect();
            assert_eq!(holes.len(), 1, "{workers} workers, {}: {holes:?}", f.blackholed);
            let h = holes[0];
            let folded = 6 - (dataplane::anomaly::aggregate::BLACKHOLE_FLOWS as u64 - 1);
            assert_eq!((h["dest_port"].as_u64(), h["count"].as_u64()), (Some(443), Some(folded)));
            assert_eq!(h["details"]["unanswered"], folded, "{h}");
            assert_eq!(h["culprit"]["role"], "filter_between", "{h}");
            assert_eq!(h["culprit"]["addr"], f.blackholed.to_string(), "{h}");
            assert_eq!(h["culprit"]["port"], 443, "{h}");
            assert_eq!(h["vantage"], "flood.pcapng", "{h}");
            let one_by_one = ev
                .iter()
                .filter(|e| e["kind"] == "syn_unanswered")
                .filter(|e| e["dest_ip"] == f.blackholed.to_string())
                .count();
            assert_eq!(one_by_one, 2, "{}", f.blackholed);
            // Nothing else is a black hole: not the flood, not the dead path.
            assert_eq!(ev.iter().filter(|e| e["kind"] == "service_blackhole").count(), 2);
            // The controls are reported one by one.
            let quiet = ev
                .iter()
                .filter(|e| {
                    e["kind"] == "syn_unanswered" && e["dest_ip"] == f.quiet_service.to_string()
                })
                .count();
            assert_eq!(quiet, 3, "{}", f.quiet_service);
            // Each names the filter toward the service, seen at the only vantage.
            for e in ev.iter().filter(|e| {
                e["kind"] == "syn_unanswered" && e["dest_ip"] == f.quiet_service.to_string()
            }) {
                assert_eq!(e["culprit"]["role"], "filter_between", "{e}");
                assert_eq!(e["culprit"]["addr"], f.quiet_service.to_string(), "{e}");
                assert_eq!(e["culprit"]["port"], 443, "{e}");
                assert_eq!(e["vantage"], "flood.pcapng", "{e}");
            }
        }
        // Of the flood and the scan only the first few (before a cause could be seen) are
        // reported one by one.
        let handshake_failures = ev
            .iter()
            .filter(|e| e["kind"] == "syn_unanswered" || e["kind"] == "syn_rejected")
            .count();
        assert_eq!(handshake_failures, 2 * (3 + 3 * first + 2), "{workers} workers");
        assert!(ev.len() <= 2 * (4 + 3 + 3 * first + 2 + 10), "{} events: {ev:?}", ev.len());
        // The counters still count every occurrence.
        let count = |k: &str| summary["kinds"][k]["count"].as_u64().unwrap_or(0);
        assert!(count("syn_unanswered") >= 2 * (3000 + 2000 + 60 + 3 + 6), "{}", summary["kinds"]);
        assert_eq!(count("syn_rejected"), 2 * 60, "{}", summary["kinds"]);
        assert_eq!(count("syn_flood"), 4);
        assert_eq!(count("port_scan"), 2);
        assert_eq!(count("service_blackhole"), 2);
    }
}
