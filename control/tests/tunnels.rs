//! Remote mirrors analysed offline (issue 15): a real TCP exchange (kernel TCP between two
//! namespaces, IPv4 and IPv6: healthy transfers, connections refused, SYNs blackholed) is
//! recorded, and every frame of the recording is wrapped in each tunnel a mirror uses (ERSPAN
//! I/II/III, GRE with IP and with Ethernet, VXLAN, GENEVE, over IPv4 and IPv6, and MPLS
//! labels). `wirewatch analyze` on each wrapped capture must count the same packets and give
//! the same events as on the plain one, and read every frame; tshark, which opens all of
//! these, is the oracle for the number of TCP frames inside. `--filter` keeps the same
//! packets on the plain and the tunnelled capture; a malformed filter is one clear error.
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dataplane::capture::CaptureReader;
use wirewatch_testkit::craft::write_pcap;
use wirewatch_testkit::encap::{wrap, Encap, Outer};
use wirewatch_testkit::netns::{privileged_or_skip, Netns};
use wirewatch_testkit::tempdir::TempDir;
use wirewatch_testkit::topology::{Subnets, Topology};
use wirewatch_testkit::traffic::connect_bound;

const OPEN: u16 = 8080;
/// Nothing listens here: the server's kernel answers SYNs with RST (`syn_rejected`).
const REFUSED: u16 = 8082;
/// The server drops SYNs to this port (`syn_unanswered`).
const BLACKHOLED: u16 = 8081;

fn serve(ns: &Netns, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    ["10.95.0.2", "fd95::2"]
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
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut buf = [0u8; 4096];
                    let mut got = 0;
                    while got < 6_000 {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got += n,
                        }
                    }
                    let _ = s.write_all(&[b'r'; 2000]);
                }
            })
        })
        .collect()
}

/// Records the exchange on the client's veth (whole frames) into `file`.
fn record(file: &Path) {
    let pid = std::process::id();
    // Wire-sized frames (the topology's links): a segment offloaded as 64 KB would not fit a
    // tunnel.
    let t = Topology::two_hosts(
        (&format!("wwdcc{pid}"), &format!("wwdcs{pid}")),
        ("dc0", "ds0"),
        Subnets { v4: "10.95.0", v6: Some("fd95:") },
    )
    .unwrap();
    let (c, srv) = (&t["a"], &t["b"]);
    c.run("sysctl -qw net.ipv4.tcp_syn_retries=1").unwrap();
    srv.run("nft add table inet t").unwrap();
    srv.run("nft add chain inet t in { type filter hook input priority 0 ; }").unwrap();
    srv.run(&format!("nft add rule inet t in tcp dport {BLACKHOLED} drop")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let servers = serve(srv, &stop);
    std::thread::sleep(Duration::from_millis(300));
    let mut dump = c
        .command("tcpdump")
        .args(["-i", "dc0", "-s", "0", "--immediate-mode", "-U", "-w"])
        .arg(file)
        .arg("tcp")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let mut hs = Vec::new();
    for (src, dst) in [("10.95.0.1", "10.95.0.2"), ("fd95::1", "fd95::2")] {
        for i in 0..6u16 {
            let port = [OPEN, OPEN, REFUSED, OPEN, BLACKHOLED, OPEN][i as usize];
            let local = SocketAddr::new(src.parse().unwrap(), 43000 + i);
            let to = SocketAddr::new(dst.parse().unwrap(), port);
            let ns = c.name.clone();
            hs.push(std::thread::spawn(move || -> bool {
                let Ok(mut s) = connect_bound(&ns, local, to) else { return false };
                let mut r = Vec::new();
                s.write_all(&[b'q'; 6_000]).is_ok() && s.read_to_end(&mut r).is_ok()
            }));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let completed = hs.into_iter().filter_map(|h| h.join().ok()).filter(|ok| *ok).count();
    assert_eq!(completed, 8, "the open port's connections complete");
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill").args(["-INT", &dump.id().to_string()]).status();
    let _ = dump.wait();
    stop.store(true, Ordering::Relaxed);
    for t in servers {
        let _ = t.join();
    }
}

struct Run {
    events: Vec<serde_json::Value>,
    summary: serde_json::Value,
}

fn analyze(dir: &Path, file: &Path) -> Run {
    analyze_with(dir, file, &[])
}

fn analyze_with(dir: &Path, file: &Path, args: &[&str]) -> Run {
    let tag = file.file_stem().unwrap().to_str().unwrap();
    let events = dir.join(format!("{tag}.jsonl"));
    let o = Command::new(env!("CARGO_BIN_EXE_wirewatch"))
        .args(["analyze", "--format", "json", "--events"])
        .arg(&events)
        .args(args)
        .arg(file)
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
    /// What a user compares between two views of one exchange: each event's kind, endpoints
    /// and culprit role (the vantage is named after the file, and differs).
    fn verdicts(&self) -> Vec<String> {
        let mut v: Vec<_> = self
            .events
            .iter()
            .map(|e| {
                format!(
                    "{} {}:{} > {}:{} {}",
                    e["kind"],
                    e["src_ip"],
                    e["src_port"],
                    e["dest_ip"],
                    e["dest_port"],
                    e["culprit"]["role"]
                )
            })
            .collect();
        v.sort();
        v
    }
}

fn tshark_tcp_frames(file: &Path) -> usize {
    tshark_count(file, "tcp")
}

fn tshark_count(file: &Path, filter: &str) -> usize {
    let o = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(file)
        .args(["-Y", filter, "-T", "fields", "-e", "frame.number"])
        .output()
        .unwrap();
    assert!(o.status.success(), "tshark: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().lines().count()
}

/// Every frame of every evidence file under `dir` shows tshark its whole TCP header (the
/// header length read from it, options included: tshark says `_ws.short` for a header cut
/// short, not for a payload cut by the snap; nothing malformed): a tunnel's outer headers
/// must not use up the bytes the history keeps.
fn evidence_has_whole_tcp_headers(dir: &Path, tag: &str) {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{tag}: no evidence directory: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcapng"))
        .collect();
    assert!(!files.is_empty(), "{tag}: no evidence written");
    for f in files {
        let o = Command::new("tshark")
            .args(["-n", "-r"])
            .arg(&f)
            .args(["-T", "fields", "-e", "frame.number", "-e", "tcp.hdr_len"])
            .args(["-e", "_ws.short", "-e", "_ws.malformed"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{tag}: tshark: {}", String::from_utf8_lossy(&o.stderr));
        let out = String::from_utf8(o.stdout).unwrap();
        assert!(!out.is_empty(), "{tag}: {} holds no frame", f.display());
        for line in out.lines() {
            let cols: Vec<&str> = line.split('\t').collect();
            assert!(
                cols.len() >= 2 && !cols[1].is_empty() && cols[2..].iter().all(|m| m.is_empty()),
                "{tag}: {} frame {}: no whole TCP header ({line:?})",
                f.display(),
                cols[0]
            );
        }
    }
}

#[test]
fn every_tunnel_gives_the_events_of_the_plain_capture() {
    if !privileged_or_skip("every_tunnel_gives_the_events_of_the_plain_capture") {
        return;
    }
    let dir = TempDir::new("tunnels");
    let plain_file = dir.join("plain.pcap");
    record(&plain_file);
    let mut reader = CaptureReader::open(&plain_file).unwrap();
    let mut frames = Vec::new();
    while let Some(f) = reader.next_frame().unwrap() {
        assert_eq!(f.data.len() as u32, f.orig_len, "recorded whole");
        frames.push((f.ts_ns, f.data));
    }
    assert!(frames.len() > 60, "{} frames recorded", frames.len());

    let plain = analyze(&dir, &plain_file);
    let packets = plain.summary["packets"].as_u64().unwrap();
    assert_eq!(packets as usize, frames.len());
    assert_eq!(tshark_tcp_frames(&plain_file), frames.len());
    let kinds = plain.verdicts();
    // The incidents of the exchange are there to compare: both families' refusals and
    // blackholed SYNs.
    for (kind, port, n) in [("syn_rejected", REFUSED, 2), ("syn_unanswered", BLACKHOLED, 2)] {
        let found =
            plain.events.iter().filter(|e| e["kind"] == kind && e["dest_port"] == port).count();
        assert_eq!(found, n, "{kind} on the plain capture: {kinds:?}");
    }

    let outers = [
        ("v4", Outer::new("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap())),
        ("v6", Outer::new("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap())),
    ];
    for (name, encap) in Encap::all() {
        for (outer_name, outer) in &outers {
            if matches!(encap, Encap::Mpls(_)) && *outer_name == "v6" {
                continue; // no outer IP header
            }
            let tag = format!("{}-{outer_name}", name.replace(' ', "-"));
            let wrapped: Vec<_> =
                frames.iter().map(|(ts, f)| (*ts, wrap(f, &encap, outer))).collect();
            let file = dir.join(format!("{tag}.pcap"));
            write_pcap(&file, &wrapped).unwrap();
            assert_eq!(tshark_tcp_frames(&file), frames.len(), "{tag}: tshark sees every frame");
            let evidence = dir.join(format!("evidence-{tag}"));
            let run = analyze_with(&dir, &file, &["--evidence-dir", evidence.to_str().unwrap()]);
            assert_eq!(run.summary["packets"].as_u64(), Some(packets), "{tag}");
            assert_eq!(run.summary["undecodable"].as_u64(), Some(0), "{tag}");
            assert_eq!(run.verdicts(), kinds, "{tag}");
            evidence_has_whole_tcp_headers(&evidence, &tag);
        }
    }

    // --filter, on the plain capture and inside a tunnel: only the refused connections'
    // packets (tshark's count with the same condition), only their events.
    let vxlan = dir.join("vxlan-v4.pcap");
    let refused_frames = tshark_count(&plain_file, &format!("tcp.port == {REFUSED}"));
    assert_eq!(refused_frames, 4, "SYN and RST of each family");
    for file in [&plain_file, &vxlan] {
        let run = analyze_with(&dir, file, &["--filter", &format!("port {REFUSED} or vlan 7")]);
        assert_eq!(run.summary["packets"].as_u64(), Some(refused_frames as u64), "{file:?}");
        let filtered = run.summary["inputs"][0]["filtered"].as_u64();
        assert_eq!(filtered, Some((frames.len() - refused_frames) as u64), "{file:?}");
        let kinds: Vec<_> = run.events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["syn_rejected", "syn_rejected"], "{file:?}");
    }
    // A malformed filter: one line, exit 2, nothing analysed.
    for bad in ["port 80 and", "host 10.0.0.300", "(port 80", "tcp port 80"] {
        let o = Command::new(env!("CARGO_BIN_EXE_wirewatch"))
            .args(["analyze", "--filter", bad])
            .arg(&plain_file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{bad}: {err}");
        assert_eq!(err.lines().count(), 1, "{bad}: {err}");
        assert!(err.starts_with("wirewatch: error:") && err.contains("--filter"), "{bad}: {err}");
        assert!(o.stdout.is_empty(), "{bad}");
    }
}
