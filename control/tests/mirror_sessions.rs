//! Two mirror sessions are two vantages (issue 15): a collector port receives ERSPAN from two
//! switches that both mirror the same connections (session 12 from the upstream switch,
//! session 13 from the downstream one, 30 µs later). A segment dropped between the switches
//! (seen upstream only, then retransmitted) is `lost_between_sensors` from the upstream
//! session to the downstream one, each named after the capture and its session; with the
//! fault off nothing is. Crafted frames: the kernel has no ERSPAN device. IPv4 and IPv6
//! connections; with two switches mirroring different connections (parallel), no loss is
//! inferred either; a refused connection is one `syn_rejected` per session that saw it, and
//! the events stay in time order though the loss is reported only when its wait ends; 1 and 2
//! workers give the same events.
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use dataplane::pcapng::PcapngWriter;
use dataplane_common::tcp_flags::{ACK, FIN, PSH, SYN};
use wirewatch_testkit::craft::TcpSegment;
use wirewatch_testkit::encap::{wrap, Encap, Outer};
use wirewatch_testkit::tempdir::TempDir;

const CAPTURE: &str = "collector.pcapng";
const UPSTREAM: &str = "192.0.2.1";
const DOWNSTREAM: &str = "192.0.2.2";
const COLLECTOR: &str = "192.0.2.100";
/// The connection, and its data segment, the fault drops between the switches.
const FAULTY_CONN: usize = 1;
const DROPPED_SEGMENT: u32 = 15;
const SEGMENTS: u32 = 30;

/// One connection's segments, in time order: (time offset ns, segment, dropped between the
/// switches).
fn connection(c: IpAddr, cport: u16, s: IpAddr, fault: bool) -> Vec<(u64, TcpSegment, bool)> {
    let mut out = Vec::new();
    let mut t = 0u64;
    let seg = |from_client: bool, seq: u32, ack: u32, flags: u8, len: usize| {
        let mut g = if from_client {
            TcpSegment::new(c, cport, s, 443)
        } else {
            TcpSegment::new(s, 443, c, cport)
        };
        g.seq = seq;
        g.ack = ack;
        g.flags = flags;
        g.payload_len = len;
        g.window = 60_000;
        g
    };
    let (cisn, sisn) = (1_000u32, 50_000u32);
    let mut push = |t: &mut u64, g: TcpSegment, lost: bool| {
        *t += 1_000_000;
        out.push((*t, g, lost));
    };
    let mut syn = seg(true, cisn, 0, SYN, 0);
    syn.mss = Some(1460);
    push(&mut t, syn, false);
    push(&mut t, seg(false, sisn, cisn + 1, SYN | ACK, 0), false);
    push(&mut t, seg(true, cisn + 1, sisn + 1, ACK, 0), false);
    let at = |i: u32| cisn + 1 + i * 1000;
    // The receiver's cumulative ACK stops at the hole until the retransmission fills it.
    let mut hole = None;
    for i in 0..SEGMENTS {
        let lost = fault && i == DROPPED_SEGMENT;
        if lost {
            hole = Some(i);
        }
        push(&mut t, seg(true, at(i), sisn + 1, ACK | PSH, 1000), lost);
        let acked = hole.map_or(at(i + 1), at);
        push(&mut t, seg(false, sisn + 1, acked, ACK, 0), false);
    }
    if let Some(i) = hole {
        t += 200_000_000;
        push(&mut t, seg(true, at(i), sisn + 1, ACK | PSH, 1000), false);
        push(&mut t, seg(false, sisn + 1, at(SEGMENTS), ACK, 0), false);
    }
    push(&mut t, seg(true, at(SEGMENTS), sisn + 1, FIN | ACK, 0), false);
    push(&mut t, seg(false, sisn + 1, at(SEGMENTS) + 1, FIN | ACK, 0), false);
    push(&mut t, seg(true, at(SEGMENTS) + 1, sisn + 2, ACK, 0), false);
    out
}

/// Writes what the collector port received. `serial`: both switches mirror every
/// connection (upstream, then downstream 30 µs later); otherwise each mirrors its own half.
fn write_capture(path: &Path, fault: bool, serial: bool) {
    let conns: Vec<(IpAddr, IpAddr)> = (0..4)
        .map(|i| {
            if i % 2 == 0 {
                (format!("10.20.0.{}", i + 1).parse().unwrap(), "10.30.0.1".parse().unwrap())
            } else {
                (format!("fd20::{}", i + 1).parse().unwrap(), "fd30::1".parse().unwrap())
            }
        })
        .collect();
    let up = Outer::new(UPSTREAM.parse().unwrap(), COLLECTOR.parse().unwrap());
    let down = Outer::new(DOWNSTREAM.parse().unwrap(), COLLECTOR.parse().unwrap());
    let mut frames: Vec<(u64, Vec<u8>, u32)> = Vec::new();
    for (n, (c, s)) in conns.iter().enumerate() {
        let start = 1_800_000_000_000_000_000u64 + n as u64 * 3_000_000;
        for (dt, g, lost) in connection(*c, 40_000 + n as u16, *s, fault && n == FAULTY_CONN) {
            let inner = g.frame();
            let t = start + dt;
            let mut put = |t: u64, encap: &Encap, outer: &Outer| {
                let f = wrap(&inner, encap, outer);
                let keep = f.len().min(192);
                frames.push((t, f[..keep].to_vec(), f.len() as u32));
            };
            let (at_up, at_down) = if serial { (true, !lost) } else { (n % 2 == 0, n % 2 == 1) };
            if at_up {
                put(t, &Encap::ErspanII { session: 12 }, &up);
            }
            if at_down {
                put(t + 30_000, &Encap::ErspanII { session: 13 }, &down);
            }
        }
    }
    // A connection refused 60 ms in (the fault's segment is at ~37 ms and reported when its
    // wait ends, ~100 ms later): its event must still come after the loss's.
    let refused_at = 1_800_000_000_000_000_000u64 + 60_000_000;
    let mut syn =
        TcpSegment::new("10.20.0.9".parse().unwrap(), 41_000, "10.30.0.1".parse().unwrap(), 8443);
    syn.flags = SYN;
    syn.seq = 7;
    let mut rst =
        TcpSegment::new("10.30.0.1".parse().unwrap(), 8443, "10.20.0.9".parse().unwrap(), 41_000);
    rst.flags = dataplane_common::tcp_flags::RST | ACK;
    rst.ack = 8;
    for (dt, g) in [(0, &syn), (100_000, &rst)] {
        let inner = g.frame();
        let f = wrap(&inner, &Encap::ErspanII { session: 12 }, &up);
        frames.push((refused_at + dt, f.clone(), f.len() as u32));
        if serial {
            let f = wrap(&inner, &Encap::ErspanII { session: 13 }, &down);
            frames.push((refused_at + dt + 30_000, f.clone(), f.len() as u32));
        }
    }
    frames.sort_by_key(|f| f.0);
    let mut w = PcapngWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    w.interface("collector0", 262_144).unwrap();
    for (t, f, orig) in &frames {
        w.packet(0, *t, f, *orig, None).unwrap();
    }
}

fn analyze(cap: &Path, workers: &str) -> (serde_json::Value, Vec<serde_json::Value>) {
    let events = cap.with_extension(format!("{workers}.jsonl"));
    let o = Command::new(env!("CARGO_BIN_EXE_wirewatch"))
        .args(["analyze", "--format", "json", "--workers", workers, "--events"])
        .arg(&events)
        .arg(cap)
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
    (summary, ev)
}

fn of_kind<'a>(ev: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    ev.iter().filter(|e| e["kind"] == kind).collect()
}

#[test]
fn two_mirror_sessions_are_two_vantages() {
    let dir = TempDir::new("mirror-sessions");
    let up = format!("{CAPTURE}/erspan2:12@{UPSTREAM}");
    let down = format!("{CAPTURE}/erspan2:13@{DOWNSTREAM}");
    for (fault, serial) in [(true, true), (false, true), (false, false)] {
        let case = dir.join(format!("fault-{fault}-serial-{serial}"));
        std::fs::create_dir_all(&case).unwrap();
        let cap = case.join(CAPTURE);
        write_capture(&cap, fault, serial);
        let mut by_workers = Vec::new();
        for workers in ["1", "2"] {
            let (summary, ev) = analyze(&cap, workers);
            let tag = format!("fault {fault}, serial {serial}, {workers} workers");
            assert_eq!(summary["undecodable"], 0, "{tag}: {summary:#}");
            let sessions: Vec<&str> = summary["mirror_sessions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["vantage"].as_str().unwrap())
                .collect();
            let mut sorted = sessions.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [up.as_str(), down.as_str()], "{tag}: {summary:#}");
            // In time order, the loss reported when its wait ended included.
            let times: Vec<u64> = ev.iter().map(|e| e["time_last_ns"].as_u64().unwrap()).collect();
            assert!(times.windows(2).all(|w| w[0] <= w[1]), "{tag}: events out of time order");
            let lost = of_kind(&ev, "lost_between_sensors");
            if fault {
                assert_eq!(lost.len(), 1, "{tag}: {ev:#?}");
                let e = lost[0];
                assert_eq!(e["details"]["seen_at"], up.as_str(), "{tag}: {e:#}");
                assert_eq!(e["details"]["missing_at"], serde_json::json!([down]), "{tag}: {e:#}");
                assert_eq!(e["vantage"], up.as_str(), "{tag}: {e:#}");
                assert_eq!(e["src_ip"], "fd20::2", "{tag}: the faulty connection: {e:#}");
            } else {
                assert!(lost.is_empty(), "{tag}: {lost:#?}");
            }
            let rejected = of_kind(&ev, "syn_rejected");
            let views = if serial { vec![up.as_str(), down.as_str()] } else { vec![up.as_str()] };
            let mut at: Vec<&str> =
                rejected.iter().map(|e| e["vantage"].as_str().unwrap()).collect();
            at.sort_unstable();
            assert_eq!(at, views, "{tag}: the refused connection, once per session that saw it");
            // A healthy view of the same traffic: no one-sided flows, no split paths.
            for kind in ["one_sided", "split_path"] {
                assert!(of_kind(&ev, kind).is_empty(), "{tag}: {kind}: {ev:#?}");
            }
            let mut kinds: Vec<String> = ev
                .iter()
                .map(|e| format!("{} {} {}", e["kind"], e["src_ip"], e["vantage"]))
                .collect();
            kinds.sort_unstable();
            by_workers.push(kinds);
        }
        assert_eq!(by_workers[0], by_workers[1], "fault {fault}, serial {serial}: 1 vs 2 workers");
    }
}
