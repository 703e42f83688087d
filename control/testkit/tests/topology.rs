//! The topology builder as the tests use it: the span topology carries real TCP over IPv4 and
//! IPv6 in wire-sized segments and mirrors both directions to the monitor; nothing it built
//! (nor a test's files) outlives a failing test; a passing test's files go.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use wirewatch_testkit::netns::privileged_or_skip;
use wirewatch_testkit::tempdir::TempDir;
use wirewatch_testkit::topology::{Subnets, Topology};
use wirewatch_testkit::traffic::{connect_from, serve_once};

fn namespaces() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn listed(list: &str, name: &str) -> bool {
    list.lines().any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn the_span_topology_carries_tcp_and_mirrors_both_directions() {
    if !privileged_or_skip("the_span_topology_carries_tcp_and_mirrors_both_directions") {
        return;
    }
    let pid = std::process::id();
    let names = (format!("wwka{pid}"), format!("wwkb{pid}"), format!("wwkm{pid}"));
    let t = Topology::two_hosts_and_monitor(
        (&names.0, &names.1, &names.2),
        "tap0",
        Subnets { v4: "10.97.0", v6: Some("fd97:") },
    )
    .unwrap();
    let dir = TempDir::new("kit-topology");
    let pcap = dir.join("tap0.pcap");
    let mut dump = t["mon"]
        .command("tcpdump")
        .args(["-i", "tap0", "--immediate-mode", "-U", "-s", "128", "-w"])
        .arg(&pcap)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // tcpdump says "listening on" once it captures.
    let mut err = BufReader::new(dump.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "tcpdump exited");
    }
    for server in ["10.97.0.2:7100", "[fd97::2]:7100"] {
        let server: SocketAddr = server.parse().unwrap();
        let h = serve_once(&t["b"].name, server, None, |mut s| {
            let mut v = Vec::new();
            s.read_to_end(&mut v).map(|_| v.len())
        })
        .unwrap();
        // 200 kB in one write: with segmentation offload on, the capture would hold frames of
        // tens of kB.
        connect_from(&t["a"].name, server, |s| s.unwrap().write_all(&vec![7u8; 200_000]).unwrap())
            .join()
            .unwrap();
        assert_eq!(h.join().unwrap().unwrap().unwrap(), 200_000);
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(dump.id() as i32, libc::SIGINT) };
    dump.wait().unwrap();
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(&pcap)
        .args(["-Y", "tcp", "-T", "fields", "-e", "ip.src", "-e", "ipv6.src", "-e", "frame.len"])
        .output()
        .unwrap();
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for src in ["10.97.0.1", "10.97.0.2", "fd97::1", "fd97::2"] {
        let n = text.lines().filter(|l| l.split('\t').take(2).any(|f| f == src)).count();
        // Each direction of each connection: at least its handshake, data or ACKs, and FIN.
        assert!(n >= 3, "{n} frames from {src} on the monitor's tap:\n{text}");
    }
    let largest = text.lines().filter_map(|l| l.rsplit('\t').next()?.parse::<u32>().ok()).max();
    assert_eq!(largest, Some(1514), "wire-sized segments, full-sized ones among them");
    drop(t);
    let left = namespaces();
    for n in [&names.0, &names.1, &names.2] {
        assert!(!listed(&left, n), "{n} left behind:\n{left}");
    }
}

#[test]
fn a_failing_test_leaves_no_namespace_and_keeps_its_files() {
    if !privileged_or_skip("a_failing_test_leaves_no_namespace_and_keeps_its_files") {
        return;
    }
    let pid = std::process::id();
    let names = (format!("wwkfa{pid}"), format!("wwkfb{pid}"));
    let kept = std::env::temp_dir().join(format!("ww-kit-failing-{pid}"));
    let failed = std::panic::catch_unwind(|| {
        let t = Topology::two_hosts(
            (&names.0, &names.1),
            ("f0", "f1"),
            Subnets { v4: "10.98.0", v6: None },
        )
        .unwrap();
        let dir = TempDir::new("kit-failing");
        std::fs::write(dir.join("events.jsonl"), "{}\n").unwrap();
        let up = namespaces();
        assert!(listed(&up, &names.0) && listed(&up, &names.1), "{up}");
        t.run("a", "ping -c 1 -W 2 10.98.0.2").unwrap();
        panic!("the test fails here");
    });
    assert!(failed.is_err());
    let left = namespaces();
    assert!(!listed(&left, &names.0) && !listed(&left, &names.1), "left behind:\n{left}");
    assert!(kept.join("events.jsonl").exists(), "a failed test's files are kept");
    std::fs::remove_dir_all(&kept).unwrap();

    let passed = std::env::temp_dir().join(format!("ww-kit-passing-{pid}"));
    {
        let dir = TempDir::new("kit-passing");
        std::fs::write(dir.join("events.jsonl"), "{}\n").unwrap();
        assert!(passed.exists());
    }
    assert!(!passed.exists(), "a passing test's files are removed");
}
