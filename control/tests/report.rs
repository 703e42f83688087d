//! `wirewatch analyze --report DIR` read in headless Chromium: a capture whose very name is
//! markup renders as text, and each detection's page draws the evidence file frame by frame
//! (the lab's incidents are drawn by tests/lab.rs, which runs them once).
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;

use dataplane_common::tcp_flags::{ACK, PSH, RST, SYN};
use wirewatch_testkit::craft::{write_pcap, TcpSegment};
use wirewatch_testkit::tempdir::TempDir;

mod chromium;

const HOSTILE: &str = "<img src=x onerror=alert(1)>.pcap";

const C: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
const S: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 20));

fn seg(from_client: bool, cport: u16, seq: u32, ack: u32, flags: u8, len: usize) -> Vec<u8> {
    let mut s = if from_client {
        TcpSegment::new(C, cport, S, 443)
    } else {
        let mut s = TcpSegment::new(S, 443, C, cport);
        (s.src_mac, s.dst_mac) = (s.dst_mac, s.src_mac);
        s
    };
    (s.seq, s.ack, s.flags, s.payload_len) = (seq, ack, flags, len);
    s.ip_id = seq as u16;
    s.frame()
}

/// Two connections: one refused by a RST (syn_rejected), one whose second segment is sent
/// five times more before it is acknowledged (retransmission_storm).
fn capture(path: &Path) {
    let t = |ms: u64| 1_700_000_000_000_000_000 + ms * 1_000_000;
    let (c, s) = (1000u32, 5000u32);
    write_pcap(
        path,
        &[
            (t(0), seg(true, 40001, 77, 0, SYN, 0)),
            (t(1), seg(false, 40001, 0, 78, RST | ACK, 0)),
            (t(10), seg(true, 40002, c, 0, SYN, 0)),
            (t(11), seg(false, 40002, s, c + 1, SYN | ACK, 0)),
            (t(12), seg(true, 40002, c + 1, s + 1, ACK, 0)),
            (t(13), seg(true, 40002, c + 1, s + 1, PSH | ACK, 1000)),
            (t(14), seg(true, 40002, c + 1001, s + 1, PSH | ACK, 1000)),
            (t(15), seg(false, 40002, s + 1, c + 1001, ACK, 0)),
            (t(215), seg(true, 40002, c + 1001, s + 1, PSH | ACK, 1000)),
            (t(615), seg(true, 40002, c + 1001, s + 1, PSH | ACK, 1000)),
            (t(1415), seg(true, 40002, c + 1001, s + 1, PSH | ACK, 1000)),
            (t(3015), seg(true, 40002, c + 1001, s + 1, PSH | ACK, 1000)),
            (t(6215), seg(true, 40002, c + 1001, s + 1, PSH | ACK, 1000)),
            (t(6216), seg(false, 40002, s + 1, c + 2001, ACK, 0)),
        ],
    )
    .unwrap();
}

fn analyze(dir: &Path, file: &Path) -> Vec<serde_json::Value> {
    let events = dir.join("events.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_wirewatch"))
        .arg("analyze")
        .arg(file)
        .arg("--events")
        .arg(&events)
        .arg("--report")
        .arg(dir.join("report"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let index = dir.join("report").join("index.html");
    assert!(
        stdout.contains(&format!("report: {}", index.display())),
        "the summary names the index:\n{stdout}"
    );
    std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_hostile_capture_name_renders_as_text_and_every_page_reads_right() {
    let dir = TempDir::new("report-hostile");
    let file = dir.join(HOSTILE);
    capture(&file);
    let evs = analyze(&dir, &file);
    let kinds: Vec<&str> = evs.iter().filter_map(|e| e["kind"].as_str()).collect();
    for k in ["syn_rejected", "retransmission_storm"] {
        assert!(kinds.contains(&k), "no {k} in {kinds:?}");
    }
    let index = dir.join("report").join("index.html");
    let mut pages = vec![index.clone()];
    for e in evs.iter().filter(|e| e["evidence"].is_object()) {
        // The evidence is kept in the report's directory when no other is named.
        assert_eq!(
            Path::new(e["evidence"]["path"].as_str().unwrap()).parent(),
            Some(&*dir.join("report"))
        );
        pages.push(chromium::assert_page(e));
    }
    assert!(pages.len() >= 3, "the index and a page per detection: {pages:?}");
    for p in &pages {
        let dom = chromium::dump_dom(p);
        // The name is the vantage's: shown on every page, never parsed as markup.
        assert!(!dom.contains("<img"), "{} holds an img element:\n{dom}", p.display());
        assert!(
            chromium::text_of(&dom).contains(HOSTILE),
            "{} does not show the name as text",
            p.display()
        );
        assert!(dom.contains("Content-Security-Policy"), "{} has no policy", p.display());
    }
    // The storm's page draws the time-sequence graph: one bar per data segment sent.
    let rtx = evs.iter().find(|e| e["kind"] == "retransmission_storm").unwrap();
    let page = Path::new(rtx["evidence"]["path"].as_str().unwrap()).with_extension("html");
    let dom = chromium::dump_dom(&page);
    assert!(dom.contains("class=\"stevens\""), "no time-sequence graph on {}", page.display());
    // The slice holds the last seconds before the storm fired: the same segment sent again
    // and again, each sending an arrow and a bar.
    let arrows = chromium::arrows(&dom);
    let sent: Vec<&chromium::Arrow> =
        arrows.iter().filter(|a| a.text.contains("Len=1000")).collect();
    assert!(sent.len() >= 3, "the retransmissions are in the slice: {arrows:?}");
    assert!(
        sent.iter().all(|a| a.text.contains("Seq=1 Ack=1 ")),
        "the same segment each time: {sent:?}"
    );
    assert_eq!(dom.matches("data-segment=").count(), sent.len(), "a bar per data segment");
    chromium::screenshot(&page, &dir.join("retransmission_storm.png"), 1400);
}
