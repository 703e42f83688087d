//! The answer does not depend on how many workers `analyze` uses: the benchmark capture
//! (bench/src/gen.rs: loss, reordering, zero windows, unanswered SYNs, resets) analysed at 1,
//! 2, 4 and 16 workers gives the same events, field for field and in the same order, and the
//! same counts.
use std::process::Command;

use wirewatch_testkit::tempdir::TempDir;

fn analyze(
    pcap: &std::path::Path,
    workers: usize,
    out: &std::path::Path,
) -> (Vec<serde_json::Value>, serde_json::Value) {
    let events = out.join(format!("events-{workers}.jsonl"));
    let o = Command::new(env!("CARGO_BIN_EXE_wirewatch"))
        .args(["analyze", "--format", "json", "--workers", &workers.to_string(), "--events"])
        .arg(&events)
        .arg(pcap)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "analyze --workers {workers}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let evs: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            dataplane::schema::validate_events([&v]).unwrap();
            // Evidence file names carry the worker number; nothing else may differ.
            v.as_object_mut().unwrap().remove("evidence");
            v
        })
        .collect();
    (evs, summary["kinds"].clone())
}

#[test]
fn events_and_counts_are_the_same_at_1_2_4_and_16_workers() {
    let dir = TempDir::new("workers");
    let pcap = dir.join("model.pcap");
    bench::gen::generate(
        &bench::gen::Model {
            flows: 20_000,
            packets: 200_000,
            seed: 11,
            duration_ns: 10_000_000_000,
        },
        &pcap,
        128,
    )
    .unwrap();
    let (one, one_kinds) = analyze(&pcap, 1, &dir);
    assert!(one.len() > 100, "the capture yields events ({} here)", one.len());
    for w in [2, 4, 16] {
        let (got, kinds) = analyze(&pcap, w, &dir);
        assert_eq!(
            got.len(),
            one.len(),
            "{w} workers: {} events, 1 worker: {}",
            got.len(),
            one.len()
        );
        // In the file's own order, as a user diffing two runs' files sees them.
        for (i, (a, b)) in one.iter().zip(&got).enumerate() {
            assert_eq!(a, b, "{w} workers differ from 1 at event {i}");
        }
        // Counts per kind and their first events, but for the evidence file's name.
        let strip = |k: &serde_json::Value| -> serde_json::Value {
            let mut k = k.clone();
            for (_, v) in k.as_object_mut().unwrap() {
                if let Some(e) = v.get_mut("example").and_then(|e| e.as_object_mut()) {
                    e.remove("evidence");
                }
            }
            k
        };
        assert_eq!(strip(&kinds), strip(&one_kinds), "{w} workers: counts per kind");
    }
}

/// Events at the same time from flows on different workers (here 24 SYNs sent at one
/// instant to 24 servers, each also on two VLANs, none answered) leave in the same order at
/// any worker count: a user diffing two runs' event files sees no difference.
#[test]
fn events_at_the_same_time_leave_in_one_order_at_any_worker_count() {
    use dataplane::pcapng::PcapngWriter;
    use dataplane_common::tcp_flags::{ACK, SYN};
    use wirewatch_testkit::craft::TcpSegment;
    let dir = TempDir::new("workers-ties");
    let pcap = dir.join("ties.pcapng");
    let mut w = PcapngWriter::new(std::fs::File::create(&pcap).unwrap()).unwrap();
    w.interface("tap0", 128).unwrap();
    let t0 = 1_700_000_000_000_000_000u64;
    for i in 0..24u32 {
        let client = std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a01_0000 | i));
        let server = std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0ac8_0000 | (i * 7)));
        // One 5-tuple on two VLANs as well: three flows, which may land on different
        // workers (other SYNs, with their own IP IDs: not span copies of one).
        for (k, vlans) in [vec![], vec![10], vec![20]].into_iter().enumerate() {
            let mut g = TcpSegment::new(client, 40000 + i as u16, server, 443);
            g.flags = SYN;
            g.vlans = vlans;
            g.ip_id = 100 + k as u16;
            let f = g.frame();
            w.packet(0, t0, &f, f.len() as u32, None).unwrap();
        }
    }
    // Traffic past every handshake timeout.
    let mut g = TcpSegment::new("10.3.0.1".parse().unwrap(), 5000, "10.3.0.2".parse().unwrap(), 22);
    g.flags = ACK;
    let f = g.frame();
    w.packet(0, t0 + 5_000_000_000, &f, f.len() as u32, None).unwrap();
    drop(w);
    let names = |evs: &[serde_json::Value]| -> Vec<String> {
        evs.iter().map(|e| format!("{} {} {}", e["kind"], e["src_ip"], e["flow"]["vlan"])).collect()
    };
    let (one, _) = analyze(&pcap, 1, &dir);
    assert_eq!(
        one.iter().filter(|e| e["kind"] == "syn_unanswered").count(),
        3 * 24,
        "{:?}",
        names(&one)
    );
    for workers in [2, 4, 16] {
        let (got, _) = analyze(&pcap, workers, &dir);
        assert_eq!(names(&got), names(&one), "{workers} workers: another order");
    }
}

/// A handshake whose deadline falls after the last packet of its own worker but before the
/// end of the input still times out: every worker's clock ends at the input's last packet.
#[test]
fn a_deadline_after_a_workers_last_packet_still_fires() {
    use dataplane::packet::decode;
    use dataplane::pcapng::PcapngWriter;
    use dataplane::pipeline::shard_of;
    use dataplane_common::tcp_flags::{ACK, SYN};
    use wirewatch_testkit::craft::TcpSegment;
    let dir = TempDir::new("workers-end");
    let (c, s) = ("10.9.0.1".parse().unwrap(), "10.9.0.2".parse().unwrap());
    let lone = {
        let mut g = TcpSegment::new(c, 40000, s, 443);
        g.flags = SYN;
        g
    };
    // A chatty flow that the 2-worker run puts on the other worker.
    let lone_worker = shard_of(&decode(&lone.frame(), 74, 0, 0).unwrap(), 2);
    let port = (41000u16..=u16::MAX)
        .find(|p| {
            shard_of(&decode(&TcpSegment::new(c, *p, s, 80).frame(), 54, 0, 0).unwrap(), 2)
                != lone_worker
        })
        .unwrap();
    let pcap = dir.join("end.pcapng");
    let mut w = PcapngWriter::new(std::fs::File::create(&pcap).unwrap()).unwrap();
    w.interface("tap0", 128).unwrap();
    let t0 = 1_700_000_000_000_000_000u64;
    let f = lone.frame();
    w.packet(0, t0, &f, f.len() as u32, None).unwrap();
    for i in 0..100u64 {
        let mut g = TcpSegment::new(c, port, s, 80);
        g.flags = ACK;
        g.seq = 1000 + i as u32;
        g.ip_id = i as u16;
        let f = g.frame();
        w.packet(0, t0 + 1_000_000 + i * 100_000_000, &f, f.len() as u32, None).unwrap();
    }
    drop(w);
    for workers in [1, 2] {
        let (evs, _) = analyze(&pcap, workers, &dir);
        let syn: Vec<_> = evs.iter().filter(|e| e["kind"] == "syn_unanswered").collect();
        assert_eq!(syn.len(), 1, "{workers} worker(s): {evs:?}");
        assert_eq!(syn[0]["flow"]["dport"], 443);
    }
}

/// Evidence is one budget for the process (10 files a second by default), not one per worker.
#[test]
fn the_evidence_budget_does_not_grow_with_workers() {
    let dir = TempDir::new("workers-ev");
    let pcap = dir.join("model.pcap");
    bench::gen::generate(
        &bench::gen::Model {
            flows: 20_000,
            packets: 200_000,
            seed: 5,
            duration_ns: 10_000_000_000,
        },
        &pcap,
        128,
    )
    .unwrap();
    let mut files = Vec::new();
    for workers in [1, 4] {
        let ev = dir.join(format!("ev{workers}"));
        let o = Command::new(env!("CARGO_BIN_EXE_wirewatch"))
            .args([
                "analyze",
                "--format",
                "json",
                "--workers",
                &workers.to_string(),
                "--evidence-dir",
            ])
            .arg(&ev)
            .arg(&pcap)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        files.push(std::fs::read_dir(&ev).unwrap().count());
    }
    // ~10 s of traffic at 10 files a second, plus the burst: about 110 files either way.
    assert!(files[0] > 50, "{files:?}");
    assert!(
        files[1] <= files[0] + 10,
        "1 worker wrote {} evidence files, 4 workers {}",
        files[0],
        files[1]
    );
}

/// Two vantages (either side of a filter): a server that the inside vantage saw talking is
/// expected there, so a SYN to it seen only outside was lost between them — whichever worker
/// the two flows landed on. Learning from every packet, not per worker, makes it so.
#[test]
fn losses_between_vantages_do_not_depend_on_workers() {
    use dataplane::pcapng::PcapngWriter;
    use dataplane_common::tcp_flags::{ACK, PSH, SYN};
    use wirewatch_testkit::craft::TcpSegment;
    let dir = TempDir::new("workers-vantage");
    let (outside, inside) = (dir.join("outside.pcapng"), dir.join("inside.pcapng"));
    let mut wo = PcapngWriter::new(std::fs::File::create(&outside).unwrap()).unwrap();
    let mut wi = PcapngWriter::new(std::fs::File::create(&inside).unwrap()).unwrap();
    wo.interface("outside", 128).unwrap();
    wi.interface("inside", 128).unwrap();
    let mut t = 1_700_000_000_000_000_000u64;
    let servers = 64u32;
    for i in 0..servers {
        let server = std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0ac8_0000 | i));
        let client = std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a01_0000 | i));
        // A healthy connection, seen on both sides 50 µs apart.
        let (mut cs, mut ss) = (1000u32, 9000u32);
        let mut both = |g: TcpSegment, t: &mut u64| {
            *t += 1_000_000;
            let f = g.frame();
            wo.packet(0, *t, &f, f.len() as u32, None).unwrap();
            wi.packet(0, *t + 50_000, &f, f.len() as u32, None).unwrap();
        };
        let mut g = TcpSegment::new(client, 40000, server, 80);
        g.flags = SYN;
        g.seq = cs;
        both(g, &mut t);
        let mut g = TcpSegment::new(server, 80, client, 40000);
        g.flags = SYN | ACK;
        g.seq = ss;
        g.ack = cs + 1;
        both(g, &mut t);
        cs += 1;
        ss += 1;
        for k in 0..3u16 {
            let mut g = TcpSegment::new(client, 40000, server, 80);
            g.flags = ACK | PSH;
            g.seq = cs;
            g.ack = ss;
            g.ip_id = k + 1;
            g.payload_len = 100;
            both(g, &mut t);
            cs += 100;
        }
        // A second client's SYN to the same server, seen outside only: the filter ate it.
        let mut g = TcpSegment::new(client, 40001 + i as u16, server, 80);
        g.flags = SYN;
        g.seq = 77;
        t += 1_000_000;
        let f = g.frame();
        wo.packet(0, t, &f, f.len() as u32, None).unwrap();
    }
    // Traffic after the last SYN so every wait ends inside the capture.
    for k in 0..5u64 {
        let mut g =
            TcpSegment::new("10.3.0.1".parse().unwrap(), 5000, "10.3.0.2".parse().unwrap(), 22);
        g.flags = ACK;
        g.seq = k as u32;
        let f = g.frame();
        wo.packet(0, t + (k + 1) * 200_000_000, &f, f.len() as u32, None).unwrap();
        wi.packet(0, t + (k + 1) * 200_000_000 + 50_000, &f, f.len() as u32, None).unwrap();
    }
    drop((wo, wi));
    let run = |workers: usize| -> Vec<serde_json::Value> {
        let events = dir.join(format!("v-{workers}.jsonl"));
        let o = Command::new(env!("CARGO_BIN_EXE_wirewatch"))
            .args(["analyze", "--format", "json", "--workers", &workers.to_string(), "--events"])
            .arg(&events)
            .arg(&outside)
            .arg(&inside)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut v: Vec<serde_json::Value> = std::fs::read_to_string(&events)
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                dataplane::schema::validate_events([&v]).unwrap();
                v.as_object_mut().unwrap().remove("evidence");
                v
            })
            .filter(|v| v["kind"] == "lost_between_sensors")
            .collect();
        v.sort_by_key(ToString::to_string);
        v
    };
    let one = run(1);
    assert_eq!(one.len(), servers as usize, "one loss per server's second SYN: {one:?}");
    assert!(one.iter().all(|e| e["details"]["seen_at"] == "outside.pcapng"
        && e["details"]["missing_at"][0] == "inside.pcapng"));
    for workers in [2, 4, 16] {
        let got = run(workers);
        assert_eq!(
            got.len(),
            one.len(),
            "{workers} workers: {} losses between the vantages, 1 worker: {}",
            got.len(),
            one.len()
        );
        assert!(got == one, "{workers} workers: the losses differ from 1 worker's");
    }
}

/// More simultaneous handshakes than the side-state pool holds: the summary says how many
/// handshake timings were given up, instead of dropping them silently.
#[test]
fn running_out_of_side_state_is_reported() {
    use dataplane::pcapng::PcapngWriter;
    use dataplane_common::tcp_flags::SYN;
    use wirewatch_testkit::craft::TcpSegment;
    let dir = TempDir::new("workers-limits");
    let pcap = dir.join("syns.pcapng");
    let mut w = PcapngWriter::new(std::fs::File::create(&pcap).unwrap()).unwrap();
    w.interface("tap0", 128).unwrap();
    let t0 = 1_700_000_000_000_000_000u64;
    let syns = 20_000u32;
    for i in 0..syns {
        let client = std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a40_0000 | i));
        let mut g = TcpSegment::new(client, 40000, "10.9.9.9".parse().unwrap(), 443);
        g.flags = SYN;
        let f = g.frame();
        w.packet(0, t0 + i as u64 * 10_000, &f, f.len() as u32, None).unwrap();
    }
    drop(w);
    let o = Command::new(env!("CARGO_BIN_EXE_wirewatch"))
        .args(["analyze", "--format", "json", "--workers", "1"])
        .arg(&pcap)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // 20,000 handshakes open within 0.2 s, 16,384 pool entries: the rest reclaim the oldest.
    assert_eq!(
        s["engine_limits"]["side_state_reclaimed"],
        (syns - (1 << 14)) as u64,
        "{}",
        s["engine_limits"]
    );
    assert_eq!(s["engine_limits"]["side_state_refused"], 0);
}
