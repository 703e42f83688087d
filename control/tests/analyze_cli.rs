//! `wirewatch analyze` as a user runs it: events, evidence that tshark opens with the comment
//! on the triggering packet, and corrupt input refused with exit status 3.
use std::path::Path;
use std::process::Command;

use dataplane::pcapng::PcapngWriter;
use dataplane_common::tcp_flags::{ACK, PSH, RST, SYN};
use wirewatch_testkit::craft::TcpSegment;
use wirewatch_testkit::tempdir::TempDir;

fn ww(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wirewatch"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A capture with two problems: a SYN sent three times and never answered, and a connection
/// reset by a RST whose IP-ID and timestamps do not belong to the server.
fn write_capture(path: &Path) {
    let mut w = PcapngWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    w.interface("tap0", 128).unwrap();
    let mut t = 1_700_000_000_000_000_000u64;
    let mut put = |g: &TcpSegment, dt_ms: u64| {
        t += dt_ms * 1_000_000;
        let f = g.frame();
        w.packet(0, t, &f[..f.len().min(128)], f.len() as u32, None).unwrap();
    };
    let (c, s) = ("10.1.0.1".parse().unwrap(), "10.1.0.2".parse().unwrap());
    let mut syn = TcpSegment::new(c, 40000, s, 443);
    syn.flags = SYN;
    syn.seq = 100;
    for dt in [0, 1000, 2000] {
        put(&syn, dt);
    }
    // A healthy connection...
    let (mut cs, mut ss, mut cid, mut sid) = (5000u32, 9000u32, 10u16, 500u16);
    let mut seg = |from_client: bool, flags: u8, len: usize| {
        let mut g = if from_client {
            TcpSegment::new(c, 40001, s, 80)
        } else {
            TcpSegment::new(s, 80, c, 40001)
        };
        if !from_client {
            g.src_mac = [2, 0, 0, 0, 0, 2];
            g.dst_mac = [2, 0, 0, 0, 0, 1];
        }
        let (seq, ack, id) =
            if from_client { (&mut cs, ss, &mut cid) } else { (&mut ss, cs, &mut sid) };
        g.seq = *seq;
        g.ack = ack;
        g.flags = flags;
        *id += 1;
        g.ip_id = *id;
        g.timestamp = Some((*id as u32 * 10, 1));
        g.payload_len = len;
        *seq = seq.wrapping_add(len as u32 + (flags & SYN != 0) as u32);
        g
    };
    for (fc, fl, len) in [(true, SYN, 0), (false, SYN | ACK, 0), (true, ACK, 0)] {
        let g = seg(fc, fl, len);
        put(&g, 1);
    }
    for _ in 0..4 {
        let g = seg(true, ACK | PSH, 300);
        put(&g, 1);
        let g = seg(false, ACK | PSH, 500);
        put(&g, 1);
    }
    // ...reset by someone else: IP-ID far off, no timestamp option.
    let mut rst = seg(false, RST, 0);
    rst.ip_id = 42889;
    rst.timestamp = None;
    put(&rst, 1);
}

#[test]
fn evidence_opens_in_tshark_with_the_comment_on_the_trigger() {
    let dir = TempDir::new("analyze");
    let cap = dir.join("two-problems.pcapng");
    write_capture(&cap);
    let evdir = dir.join("evidence");
    let events = dir.join("events.jsonl");
    let (code, stdout, stderr) = ww(&[
        "analyze",
        cap.to_str().unwrap(),
        "--evidence-dir",
        evdir.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("syn_unanswered") && stdout.contains("rst_foreign_sender"), "{stdout}");

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    dataplane::schema::validate_events(&lines).unwrap();
    let kinds: Vec<&str> = lines.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["syn_unanswered", "rst_foreign_sender"], "{lines:#?}");
    // The threshold flags take effect: with a 0.5 s handshake timeout the SYN is reported
    // by the timer at 0.5 s, before its first retransmission.
    let (code, stdout, _) =
        ww(&["analyze", cap.to_str().unwrap(), "--handshake-timeout", "0.5", "--format", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["kinds"]["syn_unanswered"]["example"]["count"], 1, "{v:#}");
    for e in &lines {
        for field in [
            "time_first",
            "time_last",
            "kind",
            "flow",
            "count",
            "fingerprints",
            "explanation",
            "evidence",
        ] {
            assert!(e.get(field).is_some(), "event lacks {field}: {e}");
        }
        let path = e["evidence"]["path"].as_str().unwrap();
        let n = e["evidence"]["packets"][0].as_u64().unwrap();
        let out = Command::new("tshark")
            .args(["-n", "-r", path, "-T", "fields", "-e", "frame.number", "-e", "frame.comment"])
            .output()
            .expect("tshark (run scripts/setup.sh)");
        assert!(
            out.status.success(),
            "tshark cannot open {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let commented: Vec<&str> = text.lines().filter(|l| l.contains("wirewatch ")).collect();
        let kind = e["kind"].as_str().unwrap();
        assert!(
            commented.iter().any(|l| l.starts_with(&format!("{n}\t")) && l.contains(kind)),
            "packet {n} of {path} should carry the {kind} comment:\n{text}"
        );
        // Headers only.
        let caplens = Command::new("tshark")
            .args(["-n", "-r", path, "-T", "fields", "-e", "frame.cap_len"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&caplens.stdout).lines().all(|l| l
            .trim()
            .parse::<u32>()
            .unwrap()
            <= 128));
    }
    let rst = &lines[1];
    let x = rst["explanation"].as_str().unwrap();
    assert!(x.contains("42889") && x.contains("timestamp option"), "{x}");
}

/// A pcap header of link type 105 (802.11), which wirewatch does not read.
fn linktype_105() -> Vec<u8> {
    let mut h = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0];
    h.extend_from_slice(&105u32.to_le_bytes());
    h
}

#[test]
fn corrupt_inputs_exit_3_with_the_offset_and_never_panic() {
    let dir = TempDir::new("corrupt");
    let good = dir.join("good.pcapng");
    write_capture(&good);
    let bytes = std::fs::read(&good).unwrap();

    let mut pcap = vec![
        0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0,
    ];
    let mut absurd = pcap.clone();
    absurd.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x0f, 60, 0, 0, 0]);
    pcap.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 60, 0, 0, 0, 60, 0, 0, 0]);
    pcap.extend_from_slice(&[0u8; 20]); // 20 of the 60 bytes promised
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.pcap", vec![], "empty file"),
        ("wrong-magic.pcap", b"this is not a capture file at all".to_vec(), "not a pcap or pcapng"),
        ("absurd-caplen.pcap", absurd, "offset 24"),
        (
            "unsupported-linktype.pcap",
            linktype_105(),
            "link type 105 (IEEE802_11 (Wi-Fi), at offset 20)",
        ),
    ];
    for (name, data, want) in cases {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        let (code, _, stderr) = ww(&["analyze", p.to_str().unwrap()]);
        assert_eq!(code, 3, "{name}: {stderr}");
        assert!(stderr.contains(want) && !stderr.contains("panicked"), "{name}: {stderr}");
        assert!(stderr.contains(name), "the error names the file: {stderr}");
    }
    // Cut inside a record: analysed up to the cut, exit 4 (control/tests/capture_inputs.rs
    // checks the results on real traffic).
    for (name, data, want) in [
        ("truncated-record.pcap", pcap, "cut short at offset 24"),
        ("truncated.pcapng", bytes[..bytes.len() - 37].to_vec(), "cut short at offset"),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        let (code, _, stderr) = ww(&["analyze", p.to_str().unwrap()]);
        assert_eq!(code, 4, "{name}: {stderr}");
        assert!(stderr.contains(want) && stderr.contains(name), "{name}: {stderr}");
    }
    let (code, _, stderr) = ww(&["analyze", dir.join("missing.pcap").to_str().unwrap()]);
    assert_eq!(code, 3, "{stderr}");
    let (code, _, _) = ww(&["analyze"]);
    assert_eq!(code, 2, "no file is bad usage");
    let (code, _, _) = ww(&["analyze", "--format", "xml", good.to_str().unwrap()]);
    assert_eq!(code, 2);
    // Hostile thresholds are refused with the flag named.
    for (flag, value) in [
        ("--handshake-timeout", "-1"),
        ("--storm-count", "1"),
        ("--pairing-window", "nan"),
        ("--max-flows", "0"),
    ] {
        let (code, _, stderr) =
            ww(&["analyze", &format!("{flag}={value}"), good.to_str().unwrap()]);
        assert_eq!(code, 2, "{flag}={value}: {stderr}");
        assert!(stderr.contains(flag), "{stderr}");
    }
}
