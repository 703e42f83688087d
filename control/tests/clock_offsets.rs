//! Captures from hosts whose clocks differ (issue 12 item 4), on real kernel TCP (IPv4 and
//! IPv6): a client reaches a server through a router that drops the SYNs to one port (the
//! fault), with 1 % random loss at the endpoints. Captures are taken in front of the router
//! and at the server; the server's capture is then shifted by +3 s, by −250 ms, and given a
//! 50 ppm drift. `analyze` estimates each pair's offset in its first pass (the median over
//! connections of their two directions' mean differences), removes it, and reports the
//! dropped SYNs as `lost_between_sensors` from the front to the server, stating the offset —
//! and nothing else. The control: with the fault off, the shifted captures are quiet.
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wirewatch_testkit::netns::{privileged_or_skip, Netns};
use wirewatch_testkit::tempdir::TempDir;
use wirewatch_testkit::topology::Topology;
use wirewatch_testkit::traffic::connect_bound;

const OPEN: u16 = 8080;
/// The router drops SYNs to this port when the fault is on.
const FILTERED: u16 = 8081;
const SERVER4: &str = "10.94.1.2";
const SERVER6: &str = "fd94:1::2";

fn build(pid: u32) -> Topology {
    let mut t = Topology::new();
    for (role, name) in [("c", "wwkc"), ("r", "wwkr"), ("s", "wwks")] {
        t.namespace(role, &format!("{name}{pid}")).unwrap();
        t.without_dad(role).unwrap();
    }
    t.link(("c", "c0"), ("r", "r0")).unwrap();
    t.link(("r", "r1"), ("s", "s0")).unwrap();
    for (role, dev, v4, v6) in [
        ("c", "c0", "10.94.0.2/24", "fd94::2/64"),
        ("r", "r0", "10.94.0.1/24", "fd94::1/64"),
        ("r", "r1", "10.94.1.1/24", "fd94:1::1/64"),
        ("s", "s0", "10.94.1.2/24", "fd94:1::2/64"),
    ] {
        t.address(role, dev, v4).unwrap();
        t.address(role, dev, v6).unwrap();
    }
    t.default_routes("c", "10.94.0.1", "fd94::1").unwrap();
    t.default_routes("s", "10.94.1.1", "fd94:1::1").unwrap();
    t.forwarding("r").unwrap();
    let (c, r, s) = (&t["c"], &t["r"], &t["s"]);
    c.run("sysctl -qw net.ipv4.tcp_syn_retries=1").unwrap();
    c.run("sysctl -qw net.ipv6.conf.all.forwarding=0").unwrap();
    // 1 % random loss at the endpoints' output, where no sensor sees it.
    for ns in [&c, &s] {
        ns.run("nft add table inet loss").unwrap();
        ns.run("nft add chain inet loss out { type filter hook output priority 0 ; }").unwrap();
        ns.run("nft add rule inet loss out meta l4proto tcp numgen random mod 100 < 1 drop")
            .unwrap();
    }
    r.run("nft add table inet f").unwrap();
    r.run("nft add chain inet f filt { type filter hook forward priority 0 ; }").unwrap();
    t
}

fn serve(ns: &Netns, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    let mut v = Vec::new();
    for a in [SERVER4, SERVER6] {
        for port in [OPEN, FILTERED] {
            let ns = ns.name.clone();
            let stop = stop.clone();
            let addr = SocketAddr::new(a.parse().unwrap(), port);
            v.push(std::thread::spawn(move || {
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
                        while got < 6_000 {
                            match s.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got += n,
                            }
                        }
                        let _ = s.write_all(&[b'r'; 2000]);
                    });
                }
            }));
        }
    }
    v
}

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

/// Captures front (r0) and back (s0) while the client makes 16 connections per family, every
/// fourth to the filtered port. Returns the two files and how many connections completed.
fn capture(lab: &Topology, dir: &Path, tag: &str) -> (PathBuf, PathBuf, usize) {
    let (front, back) =
        (dir.join(format!("front-{tag}.pcap")), dir.join(format!("back-{tag}.pcap")));
    let mut dumps = [tcpdump(&lab["r"], "r0", &front), tcpdump(&lab["s"], "s0", &back)];
    std::thread::sleep(Duration::from_millis(800));
    let mut hs = Vec::new();
    for (src, dst) in [("10.94.0.2", SERVER4), ("fd94::2", SERVER6)] {
        for i in 0..16u16 {
            let port = if i % 4 == 3 { FILTERED } else { OPEN };
            let local = SocketAddr::new(src.parse().unwrap(), 43000 + i);
            let to = SocketAddr::new(dst.parse().unwrap(), port);
            let ns = lab["c"].name.clone();
            hs.push(std::thread::spawn(move || -> bool {
                let Ok(mut s) = connect_bound(&ns, local, to) else { return false };
                if s.write_all(&[b'q'; 6_000]).is_err() {
                    return false;
                }
                let mut r = Vec::new();
                s.read_to_end(&mut r).is_ok() && r.len() == 2000
            }));
            std::thread::sleep(Duration::from_millis(60));
        }
    }
    let completed = hs.into_iter().filter_map(|h| h.join().ok()).filter(|ok| *ok).count();
    std::thread::sleep(Duration::from_millis(500));
    for d in &mut dumps {
        let _ = Command::new("kill").args(["-INT", &d.id().to_string()]).status();
        let _ = d.wait();
    }
    (front, back, completed)
}

/// Copies a pcap file (tcpdump's: little-endian, µs or ns) with every record's time `t`
/// (ns) replaced by `f(t, the first record's time)`.
fn retime(from: &Path, to: &Path, f: impl Fn(u64, u64) -> u64) {
    let b = std::fs::read(from).unwrap();
    let magic = u32::from_le_bytes(b[0..4].try_into().unwrap());
    let unit: u64 = match magic {
        0xa1b2_c3d4 => 1000,
        0xa1b2_3c4d => 1,
        m => panic!("not a little-endian pcap: {m:#x}"),
    };
    let mut out = b[..24].to_vec();
    let mut at = 24;
    let mut first = None;
    while at + 16 <= b.len() {
        let u = |o: usize| u64::from(u32::from_le_bytes(b[at + o..at + o + 4].try_into().unwrap()));
        let t = u(0) * 1_000_000_000 + u(4) * unit;
        let incl = u(8) as usize;
        let t = f(t, *first.get_or_insert(t));
        out.extend_from_slice(&((t / 1_000_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(((t % 1_000_000_000) / unit) as u32).to_le_bytes());
        out.extend_from_slice(&b[at + 8..at + 16 + incl]);
        at += 16 + incl;
    }
    std::fs::write(to, out).unwrap();
}

/// A change of a capture's times (ns to ns).
type Shift = Box<dyn Fn(u64, u64) -> u64>;

struct Run {
    events: Vec<serde_json::Value>,
    summary: serde_json::Value,
}

fn analyze(dir: &Path, tag: &str, files: &[&Path]) -> Run {
    let events = dir.join(format!("{tag}.jsonl"));
    let o = Command::new(env!("CARGO_BIN_EXE_wirewatch"))
        .args(["analyze", "--format", "json", "--events"])
        .arg(&events)
        .args(files)
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
    fn pair(&self) -> &serde_json::Value {
        &self.summary["vantage_pairs"][0]
    }
    fn lost(&self) -> Vec<&serde_json::Value> {
        self.events.iter().filter(|e| e["kind"] == "lost_between_sensors").collect()
    }
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_string()
}

#[test]
fn clock_offsets_between_vantages_are_found_and_removed() {
    if !privileged_or_skip("clock_offsets_between_vantages_are_found_and_removed") {
        return;
    }
    let pid = std::process::id();
    let dir = TempDir::new("clock");
    let lab = build(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let servers = serve(&lab["s"], &stop);
    std::thread::sleep(Duration::from_millis(300));

    let (front_off, back_off, done) = capture(&lab, &dir, "off");
    assert!(done >= 28, "fault off: only {done} of 32 connections completed");
    lab["r"]
        .run(&format!(
            "nft add rule inet f filt tcp dport {FILTERED} tcp flags & (syn | ack) == syn drop"
        ))
        .unwrap();
    let (front_on, back_on, done) = capture(&lab, &dir, "on");
    assert!(done >= 20, "fault on: only {done} of 24 open connections completed");
    stop.store(true, Ordering::Relaxed);
    for t in servers {
        let _ = t.join();
    }

    // (tag, the shift, the offset expected between the two vantages in seconds)
    let shifts: [(&str, Shift, f64); 3] = [
        ("plus3s", Box::new(|t, _| t + 3_000_000_000), 3.0),
        ("minus250ms", Box::new(|t, _| t - 250_000_000), -0.25),
        // 50 ppm fast, from a clock already 1 s ahead: ~10 s of capture drift by ~0.5 ms.
        ("drift50ppm", Box::new(|t, first| t + 1_000_000_000 + (t - first) / 20_000), 1.0),
    ];
    for (tag, shift, want) in &shifts {
        let back = dir.join(format!("back-{tag}.pcap"));
        retime(&back_on, &back, shift);
        let run = analyze(&dir, tag, &[&front_on, &back]);
        let pair = run.pair();
        assert_eq!(pair["relation"], "serial", "{tag}: {}", run.summary["vantage_pairs"]);
        let got = pair["clock_offset_s"].as_f64().unwrap();
        assert!((got - want).abs() < 0.005, "{tag}: offset {got} s, want {want} s");
        let lost = run.lost();
        for server in [SERVER4, SERVER6] {
            let l = lost
                .iter()
                .find(|e| e["dest_ip"] == server && e["dest_port"] == FILTERED)
                .unwrap_or_else(|| {
                    panic!("{tag}: no loss of a filtered SYN to {server}: {lost:?}")
                });
            assert_eq!(l["details"]["seen_at"], name(&front_on), "{l}");
            assert_eq!(l["details"]["missing_at"][0], name(&back), "{l}");
            assert_eq!(l["vantage"], name(&front_on), "{l}");
            let stated = l["details"]["clock_offset_s"].as_f64().unwrap();
            assert!((stated - want).abs() < 0.005, "{tag}: the event states {stated} s: {l}");
            assert_eq!(l["culprit"]["role"], "filter_between", "{l}");
            assert_eq!(l["culprit"]["vantages"][1], name(&back), "{l}");
            assert_eq!(l["culprit"]["addr"], server, "{l}");
        }
        let healthy: Vec<_> = lost.iter().filter(|e| e["dest_port"] != FILTERED).collect();
        assert!(healthy.is_empty(), "{tag}: losses on healthy connections: {healthy:?}");

        // The control: the same shift on the capture with the fault off is quiet.
        let back = dir.join(format!("back-off-{tag}.pcap"));
        retime(&back_off, &back, shift);
        let run = analyze(&dir, &format!("off-{tag}"), &[&front_off, &back]);
        assert_eq!(run.pair()["relation"], "serial", "{tag}: {}", run.summary["vantage_pairs"]);
        assert!(run.lost().is_empty(), "{tag}, fault off: {:?}", run.lost());
    }
    drop(lab);
}
