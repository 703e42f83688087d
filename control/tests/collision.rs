//! Incident C rebuilt with two NAT gateways sharing one public address:port (issue 12 item 5),
//! on real kernel TCP and nftables SNAT, IPv4 and IPv6: gateway A's connection to the server
//! is open when gateway B's connection is translated onto the same public address and port.
//! The server answers B's SYN with a challenge ACK of A's connection (RFC 5961), which the
//! router hands to gateway A. Captured at the server: one `tuple_reuse` naming both ISNs and
//! both senders, with the second sender as culprit; no `rst_after_stale_segment`, no
//! `split_path`, no `rst_foreign_sender`. The control maps B to a port of its own and is
//! quiet.
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wirewatch_testkit::netns::{privileged_or_skip, Netns};
use wirewatch_testkit::tempdir::TempDir;
use wirewatch_testkit::topology::Topology;
use wirewatch_testkit::traffic::connect_bound;

const PUBLIC4: &str = "10.95.9.1";
const PUBLIC6: &str = "fd95:9::1";
const SERVER4: &str = "10.95.0.2";
const SERVER6: &str = "fd95::2";
const PUBLIC_PORT: u16 = 40000;

fn build(pid: u32, collide: bool) -> Topology {
    let tag = if collide { "x" } else { "o" };
    let mut t = Topology::new();
    for (role, name) in [("a", "wwna"), ("b", "wwnb"), ("r", "wwnr"), ("s", "wwns")] {
        t.namespace(role, &format!("{name}{tag}{pid}")).unwrap();
        t.without_dad(role).unwrap();
    }
    t.veth(("a", "a0"), ("r", "ra")).unwrap();
    t.veth(("b", "b0"), ("r", "rb")).unwrap();
    t.veth(("r", "rs"), ("s", "s0")).unwrap();
    for (role, dev, v4, v6) in [
        ("a", "a0", "10.95.1.2/24", "fd95:1::2/64"),
        ("r", "ra", "10.95.1.1/24", "fd95:1::1/64"),
        ("b", "b0", "10.95.2.2/24", "fd95:2::2/64"),
        ("r", "rb", "10.95.2.1/24", "fd95:2::1/64"),
        ("r", "rs", "10.95.0.1/24", "fd95::1/64"),
        ("s", "s0", "10.95.0.2/24", "fd95::2/64"),
    ] {
        t.address(role, dev, v4).unwrap();
        t.address(role, dev, v6).unwrap();
    }
    t.default_routes("a", "10.95.1.1", "fd95:1::1").unwrap();
    t.default_routes("b", "10.95.2.1", "fd95:2::1").unwrap();
    t.default_routes("s", "10.95.0.1", "fd95::1").unwrap();
    t.forwarding("r").unwrap();
    let (a, b, r) = (&t["a"], &t["b"], &t["r"]);
    // The shared public address is routed back to gateway A, except B's own port (as a
    // router that knows which gateway owns which port range would).
    r.run(&format!("ip route add {PUBLIC4}/32 via 10.95.1.2")).unwrap();
    r.run(&format!("ip -6 route add {PUBLIC6}/128 via fd95:1::2")).unwrap();
    r.run("nft add table inet pbr").unwrap();
    r.run("nft add chain inet pbr pre { type filter hook prerouting priority -150 ; }").unwrap();
    r.run(&format!("nft add rule inet pbr pre tcp dport {} meta mark set 2", PUBLIC_PORT + 1))
        .unwrap();
    r.run("ip rule add fwmark 2 table 102").unwrap();
    r.run("ip -6 rule add fwmark 2 table 102").unwrap();
    r.run(&format!("ip route add {PUBLIC4}/32 via 10.95.2.2 table 102")).unwrap();
    r.run(&format!("ip -6 route add {PUBLIC6}/128 via fd95:2::2 table 102")).unwrap();
    // Each gateway translates its own connections to the public address; B's onto A's port
    // when the fault is on, onto a port of its own otherwise.
    b.run("sysctl -qw net.ipv4.tcp_syn_retries=1").unwrap();
    for (ns, port) in [(&a, PUBLIC_PORT), (&b, if collide { PUBLIC_PORT } else { PUBLIC_PORT + 1 })]
    {
        ns.run("nft add table inet nat").unwrap();
        ns.run("nft add chain inet nat post { type nat hook postrouting priority 100 ; }").unwrap();
        ns.run(&format!(
            "nft add rule inet nat post ip daddr {SERVER4} tcp dport 8080 snat ip to {PUBLIC4}:{port}"
        ))
        .unwrap();
        ns.run(&format!(
            "nft add rule inet nat post ip6 daddr {SERVER6} tcp dport 8080 snat ip6 to [{PUBLIC6}]:{port}"
        ))
        .unwrap();
    }
    t
}

fn serve(ns: &Netns, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    [SERVER4, SERVER6]
        .into_iter()
        .map(|a| {
            let ns = ns.name.clone();
            let stop = stop.clone();
            let addr = SocketAddr::new(a.parse().unwrap(), 8080);
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
                        let _ = s.set_read_timeout(Some(Duration::from_secs(8)));
                        let mut q = [0u8; 64];
                        while let Ok(n) = s.read(&mut q) {
                            if n == 0 || s.write_all(b"OK").is_err() {
                                break;
                            }
                        }
                    });
                }
            })
        })
        .collect()
}

fn query(s: &mut std::net::TcpStream) -> bool {
    let mut r = [0u8; 2];
    s.write_all(b"SELECT 1").is_ok() && s.read_exact(&mut r).is_ok()
}

/// Runs both gateways' connections while the server's link is captured; returns the events
/// of the analysis and whether A's connection still answered afterwards.
fn run(lab: &Topology, dir: &Path, tag: &str) -> (Vec<serde_json::Value>, usize) {
    let cap = dir.join(format!("server-{tag}.pcap"));
    let mut dump = lab["s"]
        .command("tcpdump")
        .args(["-i", "s0", "-s", "128", "--immediate-mode", "-U", "-w"])
        .arg(&cap)
        .arg("tcp port 8080")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let mut b_ok = 0;
    for (a_src, b_src, server) in
        [("10.95.1.2", "10.95.2.2", SERVER4), ("fd95:1::2", "fd95:2::2", SERVER6)]
    {
        let to = SocketAddr::new(server.parse().unwrap(), 8080);
        let mut a =
            connect_bound(&lab["a"].name, SocketAddr::new(a_src.parse().unwrap(), 5000), to)
                .unwrap();
        for _ in 0..3 {
            assert!(query(&mut a), "A's queries are answered");
        }
        // B, through the other gateway: the same public address and (fault on) port.
        let b = connect_bound(&lab["b"].name, SocketAddr::new(b_src.parse().unwrap(), 5000), to);
        if let Ok(mut b) = b {
            b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            b_ok += usize::from(query(&mut b));
        }
        for _ in 0..2 {
            let _ = query(&mut a);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill").args(["-INT", &dump.id().to_string()]).status();
    let _ = dump.wait();
    let events = dir.join(format!("{tag}.jsonl"));
    let o = Command::new(env!("CARGO_BIN_EXE_wirewatch"))
        .args(["analyze", "--format", "json", "--events"])
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
    (events, b_ok)
}

#[test]
fn two_nat_gateways_on_one_public_port_are_a_collision() {
    if !privileged_or_skip("two_nat_gateways_on_one_public_port_are_a_collision") {
        return;
    }
    let pid = std::process::id();
    let dir = TempDir::new("collision");
    for collide in [false, true] {
        let lab = build(pid, collide);
        let stop = Arc::new(AtomicBool::new(false));
        let servers = serve(&lab["s"], &stop);
        std::thread::sleep(Duration::from_millis(300));
        let tag = if collide { "on" } else { "off" };
        let (events, b_ok) = run(&lab, &dir, tag);
        stop.store(true, Ordering::Relaxed);
        for t in servers {
            let _ = t.join();
        }
        if !collide {
            assert_eq!(b_ok, 2, "without the collision both of B's connections work");
            assert!(events.is_empty(), "control: {events:#?}");
            continue;
        }
        let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        for bad in ["rst_after_stale_segment", "split_path", "rst_foreign_sender"] {
            assert!(!kinds.contains(&bad), "{bad} on the collision: {events:#?}");
        }
        for (public, server) in [(PUBLIC4, SERVER4), (PUBLIC6, SERVER6)] {
            let reuse: Vec<_> = events
                .iter()
                .filter(|e| e["kind"] == "tuple_reuse" && e["src_ip"] == public)
                .collect();
            assert_eq!(reuse.len(), 1, "{public}: {events:#?}");
            let e = reuse[0];
            assert_eq!(e["dest_ip"], server, "{e}");
            assert_eq!(e["src_port"], PUBLIC_PORT, "{e}");
            assert_eq!(e["vantage"], "server-on.pcap", "{e}");
            let (old, new) = (&e["details"]["old_isn"], &e["details"]["new_isn"]);
            assert!(old.is_u64() && new.is_u64() && old != new, "both sequence spaces: {e}");
            let fps = e["fingerprints"].as_array().unwrap();
            assert_eq!(fps.len(), 2, "both senders: {e}");
            assert_eq!(e["culprit"]["role"], "other_sender", "{e}");
            assert_eq!(e["culprit"]["addr"], public, "{e}");
            assert_eq!(e["culprit"]["port"], PUBLIC_PORT, "{e}");
        }
    }
}
