//! Serial and parallel vantages, on real kernel TCP (IPv4 and IPv6): a client reaches a VIP
//! owned by two backends; a router sends each connection to one of them (by source-port
//! parity, policy routing on a firewall mark). Captures are taken where incident A's
//! post-mortem took them — on each backend — and in front of the router.
//!
//! - b1 + b2 (parallel): with the fault off, plus 1 % random loss at the endpoints, nothing
//!   is lost between them; with one segment of a connection sprayed to the other backend,
//!   that connection is a `split_path` naming both backends, and still nothing is "lost".
//! - front + b1 (serial for b1's connections): quiet with the fault off; a SYN the router
//!   drops is `lost_between_sensors` from front to b1, while b2's connections, which b1
//!   never carries, are not losses.
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wirewatch_testkit::netns::{privileged_or_skip, Netns};
use wirewatch_testkit::tempdir::TempDir;
use wirewatch_testkit::topology::Topology;
use wirewatch_testkit::traffic::connect_bound;

const VIP4: &str = "10.91.9.9";
const VIP6: &str = "fd91:9::9";
/// Even source ports go to b1, odd ones to b2.
const FIRST_PORT: u16 = 41000;
const CONNS: u16 = 24;
/// Its second full-sized segment is sprayed to b2 (fault on); it normally goes to b1. Not the
/// first of its family: a vantage is expected to see a packet once it has carried traffic to
/// that address, and under load one early connection's SYN can be lost and resent a second
/// later (a CI run had the blackholed SYN come before any of b1's IPv6 traffic).
const SPRAYED: u16 = 41010;
/// Its SYNs are dropped by the router (fault on); it would go to b1 (see `SPRAYED`).
const BLACKHOLED: u16 = 41012;

fn build(pid: u32) -> Topology {
    let mut t = Topology::new();
    for (role, name) in [("c", "wwvc"), ("r", "wwvr"), ("b1", "wwv1"), ("b2", "wwv2")] {
        t.namespace(role, &format!("{name}{pid}")).unwrap();
        t.without_dad(role).unwrap();
    }
    // Full-sized segments on the wire, as a NIC without offloads would send them.
    t.link(("c", "c0"), ("r", "r0")).unwrap();
    t.link(("r", "r1"), ("b1", "e1")).unwrap();
    t.link(("r", "r2"), ("b2", "e2")).unwrap();
    for (role, dev, v4, v6) in [
        ("c", "c0", "10.91.0.2/24", "fd91::2/64"),
        ("r", "r0", "10.91.0.1/24", "fd91::1/64"),
        ("r", "r1", "10.91.1.1/24", "fd91:1::1/64"),
        ("b1", "e1", "10.91.1.2/24", "fd91:1::2/64"),
        ("r", "r2", "10.91.2.1/24", "fd91:2::1/64"),
        ("b2", "e2", "10.91.2.2/24", "fd91:2::2/64"),
    ] {
        t.address(role, dev, v4).unwrap();
        t.address(role, dev, v6).unwrap();
    }
    t.default_routes("c", "10.91.0.1", "fd91::1").unwrap();
    let (c, r, b1, b2) = (&t["c"], &t["r"], &t["b1"], &t["b2"]);
    // A blackholed connect gives up after ~3 s instead of two minutes.
    c.run("sysctl -qw net.ipv4.tcp_syn_retries=1").unwrap();
    for (b, gw4, gw6) in [("b1", "10.91.1.1", "fd91:1::1"), ("b2", "10.91.2.1", "fd91:2::1")] {
        t.address(b, "lo", &format!("{VIP4}/32")).unwrap();
        t.address(b, "lo", &format!("{VIP6}/128")).unwrap();
        t.default_routes(b, gw4, gw6).unwrap();
    }
    t.forwarding("r").unwrap();
    // The load balancer: the connection's source port picks the backend.
    r.run("nft add table inet lb").unwrap();
    r.run("nft add chain inet lb pre { type filter hook prerouting priority -150 ; }").unwrap();
    r.run("nft add rule inet lb pre tcp dport 8080 tcp sport & 1 == 0 meta mark set 1").unwrap();
    r.run("nft add rule inet lb pre tcp dport 8080 tcp sport & 1 == 1 meta mark set 2").unwrap();
    for (mark, table, via4, via6) in
        [(1, 101, "10.91.1.2", "fd91:1::2"), (2, 102, "10.91.2.2", "fd91:2::2")]
    {
        r.run(&format!("ip rule add fwmark {mark} table {table}")).unwrap();
        r.run(&format!("ip -6 rule add fwmark {mark} table {table}")).unwrap();
        r.run(&format!("ip route add {VIP4}/32 via {via4} table {table}")).unwrap();
        r.run(&format!("ip -6 route add {VIP6}/128 via {via6} table {table}")).unwrap();
    }
    // 1 % random loss where no sensor sees it (the endpoints' output): TCP recovers, and no
    // vantage pair may call it a loss between them.
    for ns in [&c, &b1, &b2] {
        ns.run("nft add table inet loss").unwrap();
        ns.run("nft add chain inet loss out { type filter hook output priority 0 ; }").unwrap();
        ns.run("nft add rule inet loss out meta l4proto tcp numgen random mod 100 < 1 drop")
            .unwrap();
    }
    t
}

fn fault_on(r: &Netns) {
    // One rule (one numgen counter) per family: each family's flow has its own second segment.
    for family in ["ipv4", "ipv6"] {
        r.run(&format!("nft add rule inet lb pre meta nfproto {family} tcp sport {SPRAYED} tcp flags & (syn | fin | rst) == 0 meta length > 600 numgen inc mod 1000 == 1 meta mark set 2")).unwrap();
    }
    r.run("nft add chain inet lb filt { type filter hook forward priority 0 ; }").unwrap();
    r.run(&format!(
        "nft add rule inet lb filt tcp sport {BLACKHOLED} tcp flags & (syn | ack) == syn drop"
    ))
    .unwrap();
}

/// Both backends: read the whole request, answer 1 KB, close.
fn serve(ns: &Netns, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    [VIP4, VIP6]
        .into_iter()
        .map(|vip| {
            let ns = ns.name.clone();
            let stop = stop.clone();
            let addr = SocketAddr::new(vip.parse().unwrap(), 8080);
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
                        while got < 20_000 {
                            match s.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got += n,
                            }
                        }
                        let _ = s.write_all(&[b'r'; 1000]);
                    });
                }
            })
        })
        .collect()
}

fn tcpdump(ns: &Netns, dev: &str, file: &Path) -> Child {
    ns.command("tcpdump")
        // Immediate mode: without it the last buffer is lost when tcpdump is stopped.
        .args(["-i", dev, "-s", "128", "--immediate-mode", "-U", "-w"])
        .arg(file)
        .arg("tcp port 8080")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Connections from each source port, both families; returns how many completed.
fn traffic(c: &Netns) -> usize {
    let mut hs = Vec::new();
    for (src, vip) in [("10.91.0.2", VIP4), ("fd91::2", VIP6)] {
        for port in FIRST_PORT..FIRST_PORT + CONNS {
            let local = SocketAddr::new(src.parse::<IpAddr>().unwrap(), port);
            let to = SocketAddr::new(vip.parse().unwrap(), 8080);
            let ns = c.name.clone();
            hs.push(std::thread::spawn(move || -> bool {
                let Ok(mut s) = connect_bound(&ns, local, to) else { return false };
                if s.write_all(&vec![b'q'; 20_000]).is_err() {
                    return false;
                }
                let mut r = Vec::new();
                s.read_to_end(&mut r).is_ok() && r.len() == 1000
            }));
            std::thread::sleep(Duration::from_millis(15));
        }
    }
    hs.into_iter().filter_map(|h| h.join().ok()).filter(|ok| *ok).count()
}

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
    let events = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect::<Vec<serde_json::Value>>();
    dataplane::schema::validate_events(&events).unwrap_or_else(|e| panic!("{tag}: {e}"));
    Run { events, summary }
}

impl Run {
    fn of(&self, kind: &str) -> Vec<&serde_json::Value> {
        self.events.iter().filter(|e| e["kind"] == kind).collect()
    }
    fn relation(&self) -> String {
        let pairs = self.summary["vantage_pairs"].as_array().unwrap();
        pairs.first().map_or("unknown".into(), |p| p["relation"].as_str().unwrap().to_string())
    }
    fn count(&self, kind: &str) -> u64 {
        self.summary["kinds"][kind]["count"].as_u64().unwrap_or(0)
    }
}

struct Captures {
    front: PathBuf,
    b1: PathBuf,
    b2: PathBuf,
    completed: usize,
}

fn capture(lab: &Topology, dir: &Path, tag: &str) -> Captures {
    let cap = Captures {
        front: dir.join(format!("front-{tag}.pcap")),
        b1: dir.join(format!("b1-{tag}.pcap")),
        b2: dir.join(format!("b2-{tag}.pcap")),
        completed: 0,
    };
    let mut dumps = vec![
        tcpdump(&lab["r"], "r0", &cap.front),
        tcpdump(&lab["b1"], "e1", &cap.b1),
        tcpdump(&lab["b2"], "e2", &cap.b2),
    ];
    std::thread::sleep(Duration::from_millis(800));
    let completed = traffic(&lab["c"]);
    std::thread::sleep(Duration::from_millis(500));
    for d in &mut dumps {
        let _ = Command::new("kill").args(["-INT", &d.id().to_string()]).status();
        let _ = d.wait();
    }
    Captures { completed, ..cap }
}

#[test]
fn parallel_backends_are_not_serial_sensors() {
    if !privileged_or_skip("parallel_backends_are_not_serial_sensors") {
        return;
    }
    let pid = std::process::id();
    let dir = TempDir::new("vantages");
    let lab = build(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let mut servers = serve(&lab["b1"], &stop);
    servers.extend(serve(&lab["b2"], &stop));
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();

    // Fault off.
    let off = capture(&lab, &dir, "off");
    assert!(off.completed >= 40, "only {} of 48 connections completed", off.completed);
    let backends = analyze(&dir, "off-backends", &[&off.b1, &off.b2]);
    let packets = backends.summary["packets"].as_u64().unwrap();
    assert!(packets > 1000, "the backends' captures hold {packets} packets");
    assert_eq!(
        backends.count("lost_between_sensors"),
        0,
        "{:?}",
        backends.of("lost_between_sensors")
    );
    assert_eq!(backends.count("split_path"), 0, "{:?}", backends.of("split_path"));
    assert_ne!(backends.relation(), "serial", "{}", backends.summary["vantage_pairs"]);
    let serial = analyze(&dir, "off-serial", &[&off.front, &off.b1]);
    assert_eq!(serial.relation(), "serial", "{}", serial.summary["vantage_pairs"]);
    assert_eq!(serial.count("lost_between_sensors"), 0, "{:?}", serial.of("lost_between_sensors"));

    // Fault on: one connection per family sprayed, one per family blackholed.
    fault_on(&lab["r"]);
    let on = capture(&lab, &dir, "on");
    let backends = analyze(&dir, "on-backends", &[&on.b1, &on.b2]);
    assert_eq!(
        backends.count("lost_between_sensors"),
        0,
        "{:?}",
        backends.of("lost_between_sensors")
    );
    let splits = backends.of("split_path");
    for vip in [VIP4, VIP6] {
        let s = splits
            .iter()
            .find(|e| {
                e["details"]["vantages"].is_array()
                    && (e["flow"]["dst"] == vip || e["flow"]["src"] == vip)
                    && (e["flow"]["sport"] == SPRAYED || e["flow"]["dport"] == SPRAYED)
            })
            .unwrap_or_else(|| {
                panic!("no cross-vantage split_path for {vip} port {SPRAYED}: {splits:?}")
            });
        let names: Vec<&str> = s["details"]["vantages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(names, ["b1-on.pcap", "b2-on.pcap"], "{s}");
        // The culprit: the two parallel paths, toward the VIP.
        assert_eq!(s["culprit"]["role"], "parallel_paths", "{s}");
        assert_eq!(s["culprit"]["vantages"], serde_json::json!(["b1-on.pcap", "b2-on.pcap"]));
        assert_eq!(s["culprit"]["addr"], vip, "{s}");
    }
    assert_ne!(backends.relation(), "serial", "{}", backends.summary["vantage_pairs"]);

    let serial = analyze(&dir, "on-serial", &[&on.front, &on.b1]);
    let lost = serial.of("lost_between_sensors");
    for vip in [VIP4, VIP6] {
        let l = lost
            .iter()
            .find(|e| e["flow"]["dst"] == vip && e["flow"]["sport"] == BLACKHOLED)
            .unwrap_or_else(|| panic!("no loss of the blackholed SYN to {vip}: {lost:?}"));
        assert_eq!(l["details"]["seen_at"], "front-on.pcap", "{l}");
        assert_eq!(l["details"]["missing_at"][0], "b1-on.pcap", "{l}");
        assert_eq!(l["vantage"], "front-on.pcap", "{l}");
        // The culprit: a filter between the two sensors, dropping toward the VIP.
        assert_eq!(l["culprit"]["role"], "filter_between", "{l}");
        assert_eq!(l["culprit"]["vantages"], serde_json::json!(["front-on.pcap", "b1-on.pcap"]));
        assert_eq!(l["culprit"]["addr"], vip, "{l}");
        assert_eq!(l["culprit"]["port"], 8080, "{l}");
    }
    // Nothing else: b2's connections (odd ports) are never b1's to lose; the sprayed segment
    // did leave front toward b1's path and never reached b1, which is a true loss from b1's
    // side, so it may be reported.
    let others: Vec<_> = lost
        .iter()
        .filter(|e| e["flow"]["sport"] != BLACKHOLED && e["flow"]["sport"] != SPRAYED)
        .collect();
    assert!(others.is_empty(), "losses on healthy connections: {others:?}");

    stop.store(true, Ordering::Relaxed);
    for s in servers {
        let _ = s.join();
    }
    eprintln!("vantages test took {:?}", t0.elapsed());
    drop(lab);
}
