//! `service_blackhole` on real kernel TCP (issue 12, ../shared/DETECTIONS.md Aggregates; seed
//! B): clients → a router with nftables → a server listening on two ports, IPv4 and IPv6 at
//! once, captured on the clients' link. With the router dropping SYNs to one port, the other
//! port's handshakes complete while five clients' connections to the dropped one time out:
//! one `service_blackhole` per family naming that service and the filter in front of it. The
//! controls: every forwarded SYN dropped (a dead path: the failures are reported one by one,
//! no black hole), and no filter with 1 % random loss (quiet).
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use wirewatch_testkit::netns::{enter_current_thread, privileged_or_skip, Netns};
use wirewatch_testkit::tempdir::TempDir;
use wirewatch_testkit::topology::Topology;
use wirewatch_testkit::traffic::connect_from;

const SERVERS: [&str; 2] = ["10.82.2.2", "fd82:2::2"];
const OPEN: u16 = 8080;
const DROPPED: u16 = 8081;

/// c ↔ r ↔ s, r routing, IPv4 and IPv6 (without DAD), offloads as the kernel set them.
fn build(pid: u32) -> Topology {
    let mut t = Topology::new();
    for (role, name) in [("c", "wwbc"), ("r", "wwbr"), ("s", "wwbs")] {
        t.namespace(role, &format!("{name}{pid}")).unwrap();
        t.without_dad(role).unwrap();
    }
    t.veth(("c", "c0"), ("r", "rc")).unwrap();
    t.veth(("r", "rs"), ("s", "s0")).unwrap();
    for (role, dev, v4, v6) in [
        ("c", "c0", "10.82.1.2/24", "fd82:1::2/64"),
        ("r", "rc", "10.82.1.1/24", "fd82:1::1/64"),
        ("r", "rs", "10.82.2.1/24", "fd82:2::1/64"),
        ("s", "s0", "10.82.2.2/24", "fd82:2::2/64"),
    ] {
        t.address(role, dev, v4).unwrap();
        t.address(role, dev, v6).unwrap();
    }
    t.default_routes("c", "10.82.1.1", "fd82:1::1").unwrap();
    t.default_routes("s", "10.82.2.1", "fd82:2::1").unwrap();
    t.forwarding("r").unwrap();
    t
}

/// Accepts and closes connections on both ports of both server addresses until `stop`.
fn serve(ns: &Netns, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<()>> {
    let mut out = Vec::new();
    for addr in SERVERS {
        for port in [OPEN, DROPPED] {
            let (ns, stop) = (ns.name.clone(), stop.clone());
            let (tx, rx) = std::sync::mpsc::channel();
            out.push(std::thread::spawn(move || {
                enter_current_thread(&ns).unwrap();
                let l = TcpListener::bind(SocketAddr::new(addr.parse().unwrap(), port)).unwrap();
                l.set_nonblocking(true).unwrap();
                tx.send(()).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((s, _)) => drop(s),
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }));
            rx.recv().unwrap();
        }
    }
    out
}

/// Runs `connects` (service, how many) from the client, all families at once, captured on
/// the client's link, and returns wirewatch's events and how many connections succeeded per
/// port.
fn run(
    lab: &Topology,
    dir: &Path,
    tag: &str,
    connects: &[(u16, usize)],
) -> (Vec<serde_json::Value>, [usize; 2]) {
    let cap = dir.join(format!("{tag}.pcap"));
    let mut dump = lab["c"]
        .command("tcpdump")
        .args(["-i", "c0", "-s", "128", "--immediate-mode", "-U", "-w"])
        .arg(&cap)
        .arg("tcp")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let mut ok = [0; 2];
    // In order (the open service first, so its answers come before the other's failures);
    // within a service, concurrently.
    for &(port, n) in connects {
        let handles: Vec<_> = SERVERS
            .iter()
            .flat_map(|a| std::iter::repeat_n(SocketAddr::new(a.parse().unwrap(), port), n))
            .map(|to| connect_from(&lab["c"].name, to, |s| s.is_ok()))
            .collect();
        let good = handles.into_iter().map(|h| h.join().unwrap()).filter(|&g| g).count();
        ok[usize::from(port == DROPPED)] += good;
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill").args(["-INT", &dump.id().to_string()]).status();
    let _ = dump.wait();
    let events = dir.join(format!("{tag}.jsonl"));
    let o = Command::new(env!("CARGO_BIN_EXE_wirewatch"))
        .args(["analyze", "--format", "json", "--workers", "2", "--events"])
        .arg(&events)
        .arg(&cap)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(o.status.success(), "{tag}: {}", String::from_utf8_lossy(&o.stderr));
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    dataplane::schema::validate_events(&events).unwrap_or_else(|e| panic!("{tag}: {e}"));
    (events, ok)
}

fn of<'a>(
    ev: &'a [serde_json::Value],
    kind: &str,
    server: &str,
    port: u16,
) -> Vec<&'a serde_json::Value> {
    ev.iter()
        .filter(|e| e["kind"] == kind && e["dest_ip"] == server && e["dest_port"] == port)
        .collect()
}

#[test]
fn a_filter_in_front_of_one_service_is_a_black_hole_a_dead_path_is_not() {
    if !privileged_or_skip("blackhole") {
        return;
    }
    let pid = std::process::id();
    let dir = TempDir::new("blackhole");
    let lab = build(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let servers = serve(&lab["s"], &stop);
    let nft = |rule: &str| {
        let _ = lab["r"].run("nft delete table inet wwbh");
        lab["r"].run("nft add table inet wwbh").unwrap();
        lab["r"]
            .run("nft add chain inet wwbh through { type filter hook forward priority 0 ; }")
            .unwrap();
        lab["r"].run(&format!("nft add rule inet wwbh through {rule}")).unwrap();
    };

    // Fault: the router drops SYNs to one port.
    nft(&format!("tcp dport {DROPPED} tcp flags syn drop"));
    let (ev, ok) = run(&lab, &dir, "fault", &[(OPEN, 6), (DROPPED, 5)]);
    assert_eq!(ok, [12, 0], "the open port answers, the dropped one never does");
    for server in SERVERS {
        let holes = of(&ev, "service_blackhole", server, DROPPED);
        assert_eq!(holes.len(), 1, "{server}: {ev:#?}");
        let h = holes[0];
        assert_eq!(h["culprit"]["role"], "filter_between", "{h}");
        assert_eq!(h["culprit"]["addr"], server, "{h}");
        assert_eq!(h["culprit"]["port"], DROPPED, "{h}");
        assert_eq!(h["vantage"], "fault.pcap", "{h}");
        assert!(h["details"]["flows_in_window"].as_u64().unwrap() >= 3, "{h}");
        // Five failed connections: the first two reported one by one, the rest folded.
        let one_by_one = of(&ev, "syn_unanswered", server, DROPPED).len() as u64;
        assert_eq!(one_by_one + h["count"].as_u64().unwrap(), 5, "{h}");
        assert!(of(&ev, "syn_unanswered", server, OPEN).is_empty(), "{ev:#?}");
        assert!(of(&ev, "service_blackhole", server, OPEN).is_empty(), "{ev:#?}");
    }

    // Control: the path is dead (every SYN dropped): failures, but no black hole.
    nft("tcp flags syn drop");
    let (ev, ok) = run(&lab, &dir, "dead", &[(DROPPED, 4)]);
    assert_eq!(ok, [0, 0]);
    assert!(ev.iter().all(|e| e["kind"] != "service_blackhole"), "{ev:#?}");
    for server in SERVERS {
        assert_eq!(of(&ev, "syn_unanswered", server, DROPPED).len(), 4, "{server}: {ev:#?}");
    }

    // Control: no filter, 1 % random loss: quiet.
    nft("numgen random mod 100 < 1 drop");
    let (ev, ok) = run(&lab, &dir, "healthy", &[(OPEN, 6), (DROPPED, 5)]);
    assert_eq!(ok, [12, 10]);
    let handshake = ["service_blackhole", "syn_unanswered", "syn_rejected", "synack_unacked"];
    assert!(ev.iter().all(|e| !handshake.contains(&e["kind"].as_str().unwrap())), "{ev:#?}");

    stop.store(true, Ordering::Relaxed);
    for h in servers {
        h.join().unwrap();
    }
}
