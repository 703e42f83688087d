//! Rotated files of one sensor are one vantage (issue 12 item 2), on real kernel TCP (IPv4 and
//! IPv6): a client talks to a server over a veth pair, with 1 % random loss at the server's
//! output and SYNs to one port dropped (the fault: `syn_unanswered`). The client-side capture
//! is analysed whole, and split by editcap into three files; the pieces must give the same
//! events as the whole, as one vantage the summary names with its files — never
//! `lost_between_sensors` between pieces of one capture. `--vantage NAME=FILE,…` names the
//! vantage. The control: captures taken at the same time on both ends overlap, so they stay
//! two vantages. More vantages than analyze matches is a clear error.
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wirewatch_testkit::netns::{privileged_or_skip, Netns};
use wirewatch_testkit::tempdir::TempDir;
use wirewatch_testkit::topology::{Subnets, Topology};
use wirewatch_testkit::traffic::connect_bound;

const OPEN: u16 = 8080;
/// The server drops SYNs to this port.
const BLACKHOLED: u16 = 8081;

fn tcpdump(ns: &Netns, dev: &str, file: &Path) -> Child {
    ns.command("tcpdump")
        .args(["-i", dev, "-s", "128", "--immediate-mode", "-U", "-w"])
        .arg(file)
        .arg("tcp")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn serve(ns: &Netns, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    ["10.93.0.2", "fd93::2"]
        .into_iter()
        .map(|a| {
            let ns = ns.name.clone();
            let stop = stop.clone();
            let addr = SocketAddr::new(a.parse().unwrap(), OPEN);
            std::thread::spawn(move || {
                wirewatch_testkit::netns::enter_current_thread(&ns).unwrap();
                let l = std::net::TcpListener::bind(addr).unwrap();
                l.set_nonblocking(true).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut s, _)) = l.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    std::thread::spawn(move || {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                        let mut buf = [0u8; 4096];
                        let mut got = 0;
                        while got < 8_000 {
                            match s.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got += n,
                            }
                        }
                        let _ = s.write_all(&[b'r'; 3000]);
                    });
                }
            })
        })
        .collect()
}

struct Run {
    events: Vec<serde_json::Value>,
    summary: serde_json::Value,
}

fn analyze(dir: &Path, tag: &str, args: &[&str]) -> Run {
    let events = dir.join(format!("{tag}.jsonl"));
    let o = Command::new(env!("CARGO_BIN_EXE_wirewatch"))
        .args(["analyze", "--format", "json", "--events"])
        .arg(&events)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(o.status.success(), "{tag}: {}", String::from_utf8_lossy(&o.stderr));
    let summary = serde_json::from_slice(&o.stdout).unwrap();
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    dataplane::schema::validate_events(&events).unwrap_or_else(|e| panic!("{tag}: {e}"));
    Run { events, summary }
}

impl Run {
    fn count(&self, kind: &str) -> u64 {
        self.summary["kinds"][kind]["count"].as_u64().unwrap_or(0)
    }
    /// kind, client port, server port of every event, sorted: what must not depend on how
    /// the capture was cut.
    fn verdicts(&self) -> Vec<(String, u64, u64)> {
        let mut v: Vec<_> = self
            .events
            .iter()
            .map(|e| {
                (
                    e["kind"].as_str().unwrap().to_string(),
                    e["src_port"].as_u64().unwrap(),
                    e["dest_port"].as_u64().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    }
    fn vantages(&self) -> Vec<String> {
        self.summary["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["file"].as_str().unwrap().to_string())
            .collect()
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn rotated_files_of_one_sensor_are_one_vantage() {
    if !privileged_or_skip("rotated_files_of_one_sensor_are_one_vantage") {
        return;
    }
    let pid = std::process::id();
    let dir = TempDir::new("rotated");
    let t = Topology::two_hosts(
        (&format!("wwrc{pid}"), &format!("wwrs{pid}")),
        ("c0", "s0"),
        Subnets { v4: "10.93.0", v6: Some("fd93:") },
    )
    .unwrap();
    let (c, srv) = (&t["a"], &t["b"]);
    c.run("sysctl -qw net.ipv4.tcp_syn_retries=1").unwrap();
    srv.run("nft add table inet t").unwrap();
    srv.run("nft add chain inet t in { type filter hook input priority 0 ; }").unwrap();
    srv.run(&format!("nft add rule inet t in tcp dport {BLACKHOLED} drop")).unwrap();
    srv.run("nft add chain inet t out { type filter hook output priority 0 ; }").unwrap();
    srv.run("nft add rule inet t out meta l4proto tcp numgen random mod 100 < 1 drop").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let servers = serve(srv, &stop);
    std::thread::sleep(Duration::from_millis(300));

    let (client_cap, server_cap) = (dir.join("client.pcap"), dir.join("server.pcap"));
    let mut dumps = [tcpdump(c, "c0", &client_cap), tcpdump(srv, "s0", &server_cap)];
    std::thread::sleep(Duration::from_millis(800));
    let mut hs = Vec::new();
    for (src, dst) in [("10.93.0.1", "10.93.0.2"), ("fd93::1", "fd93::2")] {
        for i in 0..16u16 {
            let port = if i % 4 == 3 { BLACKHOLED } else { OPEN };
            let local = SocketAddr::new(src.parse().unwrap(), 42000 + i);
            let to = SocketAddr::new(dst.parse().unwrap(), port);
            let ns = c.name.clone();
            hs.push(std::thread::spawn(move || -> bool {
                let Ok(mut s) = connect_bound(&ns, local, to) else { return false };
                if s.write_all(&[b'q'; 8_000]).is_err() {
                    return false;
                }
                let mut r = Vec::new();
                s.read_to_end(&mut r).is_ok() && r.len() == 3000
            }));
            std::thread::sleep(Duration::from_millis(60));
        }
    }
    let completed = hs.into_iter().filter_map(|h| h.join().ok()).filter(|ok| *ok).count();
    assert!(completed >= 20, "only {completed} of 24 connections completed");
    std::thread::sleep(Duration::from_millis(500));
    for d in &mut dumps {
        let _ = Command::new("kill").args(["-INT", &d.id().to_string()]).status();
        let _ = d.wait();
    }
    stop.store(true, Ordering::Relaxed);
    for t in servers {
        let _ = t.join();
    }

    // Three pieces, as editcap cuts them.
    let frames = String::from_utf8(
        Command::new("capinfos")
            .args(["-c", "-M", "-T", "-r"])
            .arg(&client_cap)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let frames: usize =
        frames.split_whitespace().last().and_then(|n| n.parse().ok()).expect("capinfos count");
    assert!(frames > 200, "{frames} frames captured");
    let pieces_dir = dir.join("pieces");
    std::fs::create_dir_all(&pieces_dir).unwrap();
    let o = Command::new("editcap")
        .args(["-c", &(frames / 3 + 1).to_string()])
        .arg(&client_cap)
        .arg(pieces_dir.join("piece.pcapng"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut pieces: Vec<PathBuf> =
        std::fs::read_dir(&pieces_dir).unwrap().map(|e| e.unwrap().path()).collect();
    pieces.sort();
    assert_eq!(pieces.len(), 3, "{pieces:?}");

    let whole = analyze(&dir, "whole", &[s(&client_cap)]);
    // Given out of order: the time ranges order them.
    let rotated = analyze(&dir, "rotated", &[s(&pieces[2]), s(&pieces[0]), s(&pieces[1])]);
    let name = pieces[0].file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(rotated.vantages(), std::slice::from_ref(&name), "{}", rotated.summary["inputs"]);
    let files: Vec<&str> = rotated.summary["inputs"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(files, pieces.iter().map(|p| s(p)).collect::<Vec<_>>());
    assert_eq!(rotated.summary["packets"], whole.summary["packets"]);
    assert_eq!(rotated.count("lost_between_sensors"), 0, "{:?}", rotated.events);
    assert_eq!(rotated.verdicts(), whole.verdicts());
    let kinds = ["syn_unanswered", "service_blackhole", "synack_unacked", "retransmission"];
    for k in kinds.into_iter().chain(["dup_ack"]) {
        assert_eq!(rotated.count(k), whole.count(k), "{k}");
    }
    // The fault: every blackholed SYN, in both families, named at the one vantage with the
    // filter toward the server as culprit: one by one, then (the healthy port answering)
    // folded into a service_blackhole per family.
    let unanswered: Vec<_> = rotated
        .events
        .iter()
        .filter(|e| e["kind"] == "syn_unanswered" || e["kind"] == "service_blackhole")
        .collect();
    let connections: u64 = unanswered
        .iter()
        .map(|e| if e["kind"] == "syn_unanswered" { 1 } else { e["count"].as_u64().unwrap() })
        .sum();
    assert_eq!(connections, 8, "{unanswered:?}");
    for e in &unanswered {
        assert_eq!(e["dest_port"], BLACKHOLED, "{e}");
        assert_eq!(e["vantage"], name, "{e}");
        assert_eq!(e["culprit"]["role"], "filter_between", "{e}");
        assert_eq!(e["culprit"]["addr"], e["dest_ip"], "{e}");
    }
    // The healthy connections (and the 1 % loss TCP recovered from) are quiet.
    assert!(
        rotated.events.iter().all(|e| e["dest_port"] == BLACKHOLED),
        "events on healthy connections: {:?}",
        rotated.events
    );

    // --vantage names the sensor.
    let arg = format!("tap={},{},{}", s(&pieces[0]), s(&pieces[1]), s(&pieces[2]));
    let named = analyze(&dir, "named", &["--vantage", &arg]);
    assert_eq!(named.vantages(), ["tap"]);
    assert_eq!(named.verdicts(), whole.verdicts());
    assert!(named.events.iter().all(|e| e["vantage"] == "tap"));

    // The control: two sensors capturing at the same time stay two vantages (serial).
    let both = analyze(&dir, "both", &[s(&client_cap), s(&server_cap)]);
    assert_eq!(both.vantages(), ["client.pcap", "server.pcap"]);
    assert_eq!(both.summary["vantage_pairs"][0]["relation"], "serial", "{}", both.summary);
    drop(t);
}

/// More vantages than analyze matches is refused with what to do, never collapsed.
#[test]
fn more_vantages_than_the_limit_is_a_clear_error() {
    let files: Vec<String> =
        (0..=dataplane::flow::MAX_VANTAGES).map(|i| format!("/nonexistent/ww-{i}.pcap")).collect();
    let o =
        Command::new(env!("CARGO_BIN_EXE_wirewatch")).arg("analyze").args(&files).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("129 vantages") && err.contains("--vantage"), "{err}");
}
