//! Host mode (issue 16): `run --host` on the interface a server's own connections use. Real
//! kernel TCP between a client namespace and a server namespace, IPv4 and IPv6; wirewatch runs
//! inside the server's namespace on the server's own interface, with tcpdump beside it as the
//! oracle of what crossed that interface. While it is attached:
//! - every HTTP-like exchange completes with the right bytes (nothing is taken from the host),
//!   and data flows both ways for longer than the handshake timeout, so a missing direction
//!   would show as `one_sided`: none does;
//! - wirewatch's own record holds, per connection and per direction, exactly the TCP frames
//!   tcpdump captured there (ingress through XDP, egress through TC), and the run summary
//!   accounts for every copied frame with no loss;
//! - seed incident B at a host vantage: the server's own firewall drops SYNs to one port while
//!   another port keeps answering: `service_blackhole` for that port, nothing for the other.
//!
//! And on a gateway: both of a router's interfaces watched in one process, each matching
//! tcpdump per direction, healthy traffic quiet. And `/healthz` notices the egress half gone.
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wirewatch_testkit::netns::{enter_current_thread, privileged_or_skip, Netns};
use wirewatch_testkit::tempdir::TempDir;
use wirewatch_testkit::topology::Topology;
use wirewatch_testkit::traffic::connect_from;

const SERVERS: [&str; 2] = ["10.83.0.2", "fd83::2"];
/// The server behind the gateway of the gateway test.
const BEHIND: [&str; 2] = ["10.84.2.2", "fd84:2::2"];
const OPEN: u16 = 8080;
const DROPPED: u16 = 8081;
/// Long exchanges in both directions: each connection is ROUNDS keep-alive requests, one every
/// ROUND_GAP, each answered with RESPONSE bytes, so data flows both ways for ~4 s, longer than
/// the 3 s `one_sided` waits for before it calls a direction missing.
const ROUNDS: usize = 16;
const ROUND_GAP: Duration = Duration::from_millis(250);
const RESPONSE: usize = 16 * 1024;

/// The body of the answer to `GET /n/r`: every connection's and round's bytes differ.
fn body(n: usize, r: usize) -> Vec<u8> {
    (0..RESPONSE).map(|j| ((j * 7 + n * 31 + r) % 251) as u8).collect()
}

fn response(n: usize, r: usize) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 200 OK\r\nContent-Length: {RESPONSE}\r\n\r\n").into_bytes();
    out.extend(body(n, r));
    out
}

/// Answers each connection on both ports of each of `servers` until `stop`.
fn serve(ns: &Netns, servers: &[&'static str], stop: &Arc<AtomicBool>) -> Vec<JoinHandle<()>> {
    let mut out = Vec::new();
    for &addr in servers {
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
                        Ok((s, _)) => {
                            std::thread::spawn(move || answer(s));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }));
            rx.recv().unwrap();
        }
    }
    out
}

/// Answers `GET /n/r` requests on one connection until the client closes it.
fn answer(mut s: TcpStream) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut pending = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let req: Vec<u8> = pending.drain(..end + 4).collect();
            let line = String::from_utf8_lossy(&req);
            let mut nums = line.split(['/', ' ']).skip(2).map(|t| t.parse().unwrap_or(0));
            let (n, r) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
            if s.write_all(&response(n, r)).is_err() {
                return;
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(k) => pending.extend_from_slice(&buf[..k]),
        }
    }
}

/// One connection from the client: whether every answer came back with the right bytes.
fn exchange(client: &Netns, to: SocketAddr, n: usize) -> JoinHandle<Result<(), String>> {
    connect_from(&client.name, to, move |s| {
        let mut s = s.map_err(|e| format!("connect: {e}"))?;
        for r in 0..ROUNDS {
            s.write_all(format!("GET /{n}/{r} HTTP/1.1\r\nHost: ww\r\n\r\n").as_bytes())
                .map_err(|e| format!("request {r}: {e}"))?;
            let want = response(n, r);
            let mut got = vec![0u8; want.len()];
            s.read_exact(&mut got).map_err(|e| format!("response {r}: {e}"))?;
            if got != want {
                return Err(format!("response {r}: different bytes"));
            }
            std::thread::sleep(ROUND_GAP);
        }
        Ok(())
    })
}

/// Per (source address, source port, destination port): the TCP frames of the test's ports in
/// a capture (those matching `only` too, a display filter), read by tshark.
fn frames_per_direction(path: &Path, only: &str) -> BTreeMap<(String, u16, u16), usize> {
    let o = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(path)
        .args(["-Y", &format!("(tcp.port == {OPEN} || tcp.port == {DROPPED}) && ({only})")])
        .args(["-T", "fields"])
        .args(["-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport", "-e", "tcp.dstport"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "tshark {}: {}",
        path.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let mut out = BTreeMap::new();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let src = if f[0].is_empty() { f[1] } else { f[0] };
        *out.entry((src.to_string(), f[2].parse().unwrap(), f[3].parse().unwrap())).or_insert(0) +=
            1;
    }
    out
}

/// A wirewatch run that is killed if the test fails before stopping it (it would outlive the
/// namespaces, holding its programs).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Stops a child with SIGINT and waits for it.
fn interrupt(child: &mut Child) -> std::process::ExitStatus {
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    child.wait().unwrap()
}

#[test]
fn host_mode_watches_the_hosts_own_connections_without_touching_them() {
    if !privileged_or_skip("host_mode") {
        return;
    }
    let pid = std::process::id();
    let dir = TempDir::new("host-mode");
    let mut t = Topology::new();
    t.namespace("c", &format!("wwhc{pid}")).unwrap();
    t.namespace("s", &format!("wwhs{pid}")).unwrap();
    // Offloads as the kernel set them: host mode sees what the host's stack sends.
    t.veth(("c", "c0"), ("s", "s0")).unwrap();
    for (role, dev, v4, v6) in
        [("c", "c0", "10.83.0.1/24", "fd83::1/64"), ("s", "s0", "10.83.0.2/24", "fd83::2/64")]
    {
        t.address(role, dev, v4).unwrap();
        t.address(role, dev, v6).unwrap();
    }
    let (c, s) = (&t["c"], &t["s"]);
    let stop = Arc::new(AtomicBool::new(false));
    let servers = serve(s, &SERVERS, &stop);

    let (cap, rec) = (dir.join("oracle.pcap"), dir.join("record.pcapng"));
    let (events, summary) = (dir.join("events.jsonl"), dir.join("summary.json"));
    let mut dump = s
        .command("tcpdump")
        .args(["-i", "s0", "-s", "128", "--immediate-mode", "-U", "-w"])
        .arg(&cap)
        .arg("tcp")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ww = s
        .command(env!("CARGO_BIN_EXE_wirewatch"))
        .args(["run", "--host", "--iface", "s0", "--metrics", "127.0.0.1:0", "--events"])
        .arg(&events)
        .arg("--record")
        .arg(&rec)
        .arg("--summary-json")
        .arg(&summary)
        .arg("--evidence-dir")
        .arg(dir.join("evidence"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ww = Running(ww);
    let attached = Instant::now();
    while !s.run("ip -d link show s0").unwrap().contains("prog/xdp") {
        assert!(ww.0.try_wait().unwrap().is_none(), "wirewatch run --host exited at start");
        assert!(attached.elapsed() < Duration::from_secs(20), "XDP never attached to s0");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The egress program is attached right after the XDP one, tcpdump needs a moment too.
    std::thread::sleep(Duration::from_millis(800));

    // Healthy: four long connections per family, all at once.
    let to = |a: &str, port| SocketAddr::new(a.parse().unwrap(), port);
    let healthy: Vec<_> = SERVERS
        .iter()
        .flat_map(|a| (0..4).map(move |i| (*a, i)))
        .map(|(a, i)| exchange(c, to(a, OPEN), i))
        .collect();
    for (i, h) in healthy.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), Ok(()), "exchange {i} while wirewatch watches the host");
    }

    // Seed incident B from the host: its own firewall eats SYNs to one port; the other port
    // keeps answering (two more exchanges per family during the fault).
    s.run("nft add table inet wwh").unwrap();
    s.run("nft add chain inet wwh input { type filter hook input priority 0 ; }").unwrap();
    s.run(&format!("nft add rule inet wwh input tcp dport {DROPPED} tcp flags syn drop")).unwrap();
    let control: Vec<_> = SERVERS
        .iter()
        .flat_map(|a| (4..6).map(move |i| (*a, i)))
        .map(|(a, i)| exchange(c, to(a, OPEN), i))
        .collect();
    let eaten: Vec<_> = SERVERS
        .iter()
        .flat_map(|a| std::iter::repeat_n(to(a, DROPPED), 5))
        .map(|to| connect_from(&c.name, to, |s| s.is_ok()))
        .collect();
    for h in control {
        assert_eq!(h.join().unwrap(), Ok(()), "the open port works during the fault");
    }
    assert!(eaten.into_iter().all(|h| !h.join().unwrap()), "no SYN to {DROPPED} is answered");
    std::thread::sleep(Duration::from_millis(500));

    let status = interrupt(&mut ww.0);
    let mut err = String::new();
    ww.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "wirewatch run --host: {status}: {err}");
    interrupt(&mut dump);
    stop.store(true, Ordering::Relaxed);
    for h in servers {
        h.join().unwrap();
    }
    // Detached on the way out: the interface is the host's again.
    assert!(!s.run("ip -d link show s0").unwrap().contains("prog/xdp"));

    // Both directions, frame for frame: what tcpdump saw on s0 is what wirewatch recorded.
    let seen = frames_per_direction(&rec, "frame");
    let oracle = frames_per_direction(&cap, "frame");
    assert_eq!(seen, oracle, "per direction: wirewatch's record vs tcpdump on s0");
    let from_server = oracle.keys().filter(|k| SERVERS.contains(&k.0.as_str())).count();
    assert_eq!(from_server, 2 * 6, "the server's side of every answered connection is there");

    let sum: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let loss = &sum["loss"];
    let copied = loss["host_copied"].as_u64().unwrap();
    assert!(copied > 0, "{loss}");
    assert_eq!(loss["socket_received"].as_u64(), Some(copied), "{loss}");
    assert_eq!(loss["engine_received"].as_u64(), Some(copied), "{loss}");
    assert_eq!(loss["lost_total"].as_u64(), Some(0), "{loss}");
    assert_eq!(loss["unattributed"].as_u64(), Some(0), "{loss}");

    let ev: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    dataplane::schema::validate_events(&ev).unwrap();
    let of = |kind: &str, server: &str, port: u16| {
        ev.iter()
            .filter(|e| e["kind"] == kind && e["dest_ip"] == server && e["dest_port"] == port)
            .collect::<Vec<_>>()
    };
    assert!(ev.iter().all(|e| e["kind"] != "one_sided"), "{ev:#?}");
    assert!(ev.iter().all(|e| e["dest_port"] != OPEN), "the open port is quiet: {ev:#?}");
    for server in SERVERS {
        let holes = of("service_blackhole", server, DROPPED);
        assert_eq!(holes.len(), 1, "{server}: {ev:#?}");
        let h = holes[0];
        assert_eq!(h["vantage"], "s0", "{h}");
        assert_eq!(h["culprit"]["addr"], server, "{h}");
        assert_eq!(h["culprit"]["port"], DROPPED, "{h}");
        // Five eaten connections: the first ones reported one by one, the rest folded.
        let one_by_one = of("syn_unanswered", server, DROPPED).len() as u64;
        assert_eq!(one_by_one + h["count"].as_u64().unwrap(), 5, "{h}");
    }
}

/// Host mode never drops a frame of the host's: `--non-tcp drop` is refused before anything
/// is attached, and so is the span-mode override beside it.
#[test]
fn host_mode_refuses_options_that_would_drop_or_take_the_hosts_frames() {
    for (extra, says) in [
        ("--non-tcp=drop", "host mode never drops the host's frames"),
        ("--allow-host-interface", "cannot be used with"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_wirewatch"))
            .args(["run", "--host", "--iface", "lo", extra, "--duration", "1"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra}: {err}");
        assert!(err.contains(says), "{extra}: {err}");
    }
}

/// The gateway's post-mortem: `run --host` on both interfaces of a router (its own addresses
/// on each), two vantages in one process. Every exchange between the client and the server
/// behind it completes; each interface's record holds, per connection and direction, exactly
/// the frames tcpdump captured there (forwarded frames leave through TC egress on the other
/// interface); a healthy exchange raises no event.
#[test]
fn host_mode_on_a_gateway_sees_both_interfaces_both_ways() {
    if !privileged_or_skip("host_mode gateway") {
        return;
    }
    let pid = std::process::id();
    let dir = TempDir::new("host-gateway");
    let mut t = Topology::new();
    t.namespace("c", &format!("wwhc{pid}g")).unwrap();
    t.namespace("g", &format!("wwhg{pid}")).unwrap();
    t.namespace("s", &format!("wwhs{pid}g")).unwrap();
    t.veth(("c", "c0"), ("g", "gc")).unwrap();
    t.veth(("g", "gs"), ("s", "s0")).unwrap();
    for (role, dev, v4, v6) in [
        ("c", "c0", "10.84.1.2/24", "fd84:1::2/64"),
        ("g", "gc", "10.84.1.1/24", "fd84:1::1/64"),
        ("g", "gs", "10.84.2.1/24", "fd84:2::1/64"),
        ("s", "s0", "10.84.2.2/24", "fd84:2::2/64"),
    ] {
        t.address(role, dev, v4).unwrap();
        t.address(role, dev, v6).unwrap();
    }
    t.default_routes("c", "10.84.1.1", "fd84:1::1").unwrap();
    t.default_routes("s", "10.84.2.1", "fd84:2::1").unwrap();
    t.forwarding("g").unwrap();
    let (c, g, s) = (&t["c"], &t["g"], &t["s"]);
    let stop = Arc::new(AtomicBool::new(false));
    let servers = serve(s, &BEHIND, &stop);

    let (rec, events, summary) =
        (dir.join("record.pcapng"), dir.join("events.jsonl"), dir.join("summary.json"));
    let mut dumps: Vec<_> = ["gc", "gs"]
        .iter()
        .map(|dev| {
            g.command("tcpdump")
                .args(["-i", dev, "-s", "128", "--immediate-mode", "-U", "-w"])
                .arg(dir.join(format!("{dev}.pcap")))
                .arg("tcp")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let ww = g
        .command(env!("CARGO_BIN_EXE_wirewatch"))
        .args(["run", "--host", "--iface", "gc", "--iface", "gs", "--metrics", "127.0.0.1:0"])
        .arg("--events")
        .arg(&events)
        .arg("--record")
        .arg(&rec)
        .arg("--summary-json")
        .arg(&summary)
        .arg("--evidence-dir")
        .arg(dir.join("evidence"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ww = Running(ww);
    let attached = Instant::now();
    while !["gc", "gs"]
        .iter()
        .all(|d| g.run(&format!("ip -d link show {d}")).unwrap().contains("prog/xdp"))
    {
        assert!(ww.0.try_wait().unwrap().is_none(), "wirewatch run --host exited at start");
        assert!(attached.elapsed() < Duration::from_secs(20), "XDP never attached");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(800));

    let to = |a: &str| SocketAddr::new(a.parse().unwrap(), OPEN);
    let exchanges: Vec<_> = BEHIND
        .iter()
        .flat_map(|a| (0..4).map(move |i| (*a, i)))
        .map(|(a, i)| exchange(c, to(a), i))
        .collect();
    for (i, h) in exchanges.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), Ok(()), "exchange {i} through the watched gateway");
    }
    std::thread::sleep(Duration::from_millis(500));
    let status = interrupt(&mut ww.0);
    let mut err = String::new();
    ww.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "wirewatch run --host: {status}: {err}");
    for d in &mut dumps {
        interrupt(d);
    }
    stop.store(true, Ordering::Relaxed);
    for h in servers {
        h.join().unwrap();
    }

    for (id, dev) in ["gc", "gs"].iter().enumerate() {
        let seen = frames_per_direction(&rec, &format!("frame.interface_id == {id}"));
        let oracle = frames_per_direction(&dir.join(format!("{dev}.pcap")), "frame");
        assert_eq!(seen, oracle, "{dev}: wirewatch's record vs tcpdump, per direction");
        let from_server = oracle.keys().filter(|k| BEHIND.contains(&k.0.as_str())).count();
        assert_eq!(from_server, 8, "{dev}: the server's side of every connection is there");
    }
    let sum: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let loss = &sum["loss"];
    assert_eq!(loss["lost_total"].as_u64(), Some(0), "{loss}");
    assert_eq!(loss["unattributed"].as_u64(), Some(0), "{loss}");
    assert_eq!(loss["engine_received"], loss["host_copied"], "{loss}");
    let ev = std::fs::read_to_string(&events).unwrap();
    assert!(ev.is_empty(), "healthy exchanges through the gateway raise no event:\n{ev}");
}

/// `/healthz` answers 503 naming the interface once the TC egress program is detached from
/// outside (`bpftool link detach`): host mode would see one direction only.
#[test]
fn healthz_reports_a_detached_egress_program() {
    if !privileged_or_skip("host_mode healthz") {
        return;
    }
    let pid = std::process::id();
    let mut t = Topology::new();
    t.namespace("a", &format!("wwhh{pid}")).unwrap();
    t.namespace("b", &format!("wwhp{pid}")).unwrap();
    t.veth(("a", "h0"), ("b", "h1")).unwrap();
    t.address("a", "h0", "10.85.0.1/24").unwrap();
    let a = &t["a"];
    let dir = TempDir::new("host-healthz");
    let mut ww = Running(
        a.command(env!("CARGO_BIN_EXE_wirewatch"))
            .args(["run", "--host", "--iface", "h0", "--metrics", "127.0.0.1:9464"])
            .arg("--evidence-dir")
            .arg(&dir)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The status line and the body.
    let healthz = || a.run("curl -s -i http://127.0.0.1:9464/healthz").ok();
    let wait_for = |want: &str| {
        let since = Instant::now();
        loop {
            let got = healthz().unwrap_or_default();
            if got.starts_with(want) {
                return got;
            }
            assert!(since.elapsed() < Duration::from_secs(20), "/healthz: {got} (want {want})");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("HTTP/1.1 200");
    // Our TCX link, from the process's own descriptors (kernel/bpf/syscall.c
    // `bpf_link_show_fdinfo`): bpftool 7.1 lists TCX links without their interface. The API
    // answers before the programs are attached: wait for it.
    let tcx_link = || {
        std::fs::read_dir(format!("/proc/{}/fdinfo", ww.0.id()))
            .ok()?
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .find(|info| info.contains("link_type:\ttcx"))?
            .lines()
            .find_map(|l| l.strip_prefix("link_id:\t").map(|v| v.trim().to_string()))
    };
    let since = Instant::now();
    let tcx_link = loop {
        if let Some(id) = tcx_link() {
            break id;
        }
        assert!(since.elapsed() < Duration::from_secs(20), "wirewatch holds no TCX link");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Attached and checked by the health loop (every 500 ms) before the link goes.
    std::thread::sleep(Duration::from_millis(1500));
    wait_for("HTTP/1.1 200");
    a.run(&format!("bpftool link detach id {tcx_link}")).unwrap();
    let got = wait_for("HTTP/1.1 503");
    assert!(got.contains("TC egress program is no longer attached to h0"), "{got}");
    interrupt(&mut ww.0);
}
