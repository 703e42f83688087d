//! The answer does not depend on how many workers `analyze` uses: the benchmark capture
//! (bench/src/gen.rs: loss, reordering, zero windows, unanswered SYNs, resets) analysed at 1,
//! 2, 4 and 16 workers gives the same events, field for field, and the same counts.
use std::process::Command;

fn analyze(pcap: &std::path::Path, workers: usize, out: &std::path::Path) -> (Vec<serde_json::Value>, serde_json::Value) {
    let events = out.join(format!("events-{workers}.jsonl"));
    let o = Command::new(env!("CARGO_BIN_EXE_wirewatch"))
        .args(["analyze", "--format", "json", "--workers", &workers.to_string(), "--events"])
        .arg(&events)
        .arg(pcap)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(o.status.success(), "analyze --workers {workers}: {}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut evs: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            // Evidence file names carry the worker number; nothing else may differ.
            v.as_object_mut().unwrap().remove("evidence");
            v
        })
        .collect();
    evs.sort_by_key(|v| v.to_string());
    (evs, summary["kinds"].clone())
}

#[test]
fn events_and_counts_are_the_same_at_1_2_4_and_16_workers() {
    let dir = std::env::temp_dir().join(format!("ww-workers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("model.pcap");
    bench::gen::generate(&bench::gen::Model { flows: 20_000, packets: 200_000, seed: 11, duration_ns: 10_000_000_000 }, &pcap, 128).unwrap();
    let (one, one_kinds) = analyze(&pcap, 1, &dir);
    assert!(one.len() > 100, "the capture yields events ({} here)", one.len());
    for w in [2, 4, 16] {
        let (got, kinds) = analyze(&pcap, w, &dir);
        assert_eq!(got.len(), one.len(), "{w} workers: {} events, 1 worker: {}", got.len(), one.len());
        for (a, b) in one.iter().zip(&got) {
            assert_eq!(a, b, "{w} workers differ from 1");
        }
        // Counts per kind, except the examples (which event is "first" may differ in ties).
        let strip = |k: &serde_json::Value| -> serde_json::Value {
            let mut k = k.clone();
            for (_, v) in k.as_object_mut().unwrap() {
                v.as_object_mut().unwrap().remove("example");
            }
            k
        };
        assert_eq!(strip(&kinds), strip(&one_kinds), "{w} workers: counts per kind");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A handshake whose deadline falls after the last packet of its own worker but before the
/// end of the input still times out: every worker's clock ends at the input's last packet.
#[test]
fn a_deadline_after_a_workers_last_packet_still_fires() {
    use dataplane::{craft::TcpSegment, packet::decode, pcapng::PcapngWriter, pipeline::shard_of};
    use dataplane_common::tcp_flags::{ACK, SYN};
    let dir = std::env::temp_dir().join(format!("ww-workers-end-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (c, s) = ("10.9.0.1".parse().unwrap(), "10.9.0.2".parse().unwrap());
    let lone = {
        let mut g = TcpSegment::new(c, 40000, s, 443);
        g.flags = SYN;
        g
    };
    // A chatty flow that the 2-worker run puts on the other worker.
    let lone_worker = shard_of(&decode(&lone.frame(), 74, 0, 0).unwrap(), 2);
    let port = (41000u16..).find(|p| shard_of(&decode(&TcpSegment::new(c, *p, s, 80).frame(), 54, 0, 0).unwrap(), 2) != lone_worker).unwrap();
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
    let _ = std::fs::remove_dir_all(&dir);
}

/// Evidence is one budget for the process (10 files a second by default), not one per worker.
#[test]
fn the_evidence_budget_does_not_grow_with_workers() {
    let dir = std::env::temp_dir().join(format!("ww-workers-ev-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("model.pcap");
    bench::gen::generate(&bench::gen::Model { flows: 20_000, packets: 200_000, seed: 5, duration_ns: 10_000_000_000 }, &pcap, 128).unwrap();
    let mut files = Vec::new();
    for workers in [1, 4] {
        let ev = dir.join(format!("ev{workers}"));
        let o = Command::new(env!("CARGO_BIN_EXE_wirewatch"))
            .args(["analyze", "--format", "json", "--workers", &workers.to_string(), "--evidence-dir"])
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
    assert!(files[1] <= files[0] + 10, "1 worker wrote {} evidence files, 4 workers {}", files[0], files[1]);
    let _ = std::fs::remove_dir_all(&dir);
}
