//! A remote mirror, live (issue 15): two namespaces exchange real TCP through a veth; tc
//! mirred copies both directions into a VXLAN device (VNI 42, over an IPv6 underlay), which
//! carries them over the underlay veth into a monitor namespace that has no VXLAN device.
//! `wirewatch run` is attached to that underlay veth, so the XDP program itself opens the
//! tunnel. Every TCP frame the span carried (counted by tcpdump on the mirrored interface:
//! AF_PACKET on the monitored one sees no TCP while XDP takes it) must reach the engine, every
//! recorded frame must still hold its inner TCP header (the snap counts from the inner frame:
//! 70 B of outer headers would cut it at 128 B from the start), and the connections refused
//! inside the tunnel must be diagnosed.
use std::io::{BufRead as _, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dataplane::capture::CaptureReader;
use dataplane::packet::decode;
use wirewatch_testkit::netns::{enter_current_thread, privileged_or_skip, Netns};
use wirewatch_testkit::tempdir::TempDir;
use wirewatch_testkit::topology::{Subnets, Topology};

const BYTES_PER_TRANSFER: usize = 256 << 10;
/// Per-socket pacing (bytes/s): veth's native-XDP receive ring holds 256 frames, and a burst
/// from several flows would overflow it (counted, but not what this test is about).
const PACING_BYTES_PER_SEC: u64 = 4_000_000;
const REFUSED_PORT: u16 = 5999;

fn pace(s: &impl std::os::fd::AsRawFd) {
    let rate = PACING_BYTES_PER_SEC;
    // SAFETY: valid socket fd and a u64 option value.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MAX_PACING_RATE,
            (&raw const rate).cast::<libc::c_void>(),
            size_of::<u64>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_MAX_PACING_RATE");
}

/// TCP frames in a capture that decode (inner TCP header present).
fn tcp_frames(path: &Path) -> (u64, u64) {
    let mut r = CaptureReader::open(path).unwrap();
    let (mut all, mut decoded) = (0, 0);
    while let Some(f) = r.next_frame().unwrap() {
        all += 1;
        decoded += u64::from(decode(&f.data, f.orig_len, f.ts_ns, 0).is_ok());
    }
    (all, decoded)
}

/// One paced transfer each way per address, from namespace `a` to a server in `b`.
fn transfers(a: &Netns, b: &Netns, addrs: &[IpAddr]) {
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let to = SocketAddr::new(*addr, 5000 + i as u16);
        let (tx, rx) = std::sync::mpsc::channel();
        let b_name = b.name.clone();
        servers.push(std::thread::spawn(move || {
            enter_current_thread(&b_name).unwrap();
            let l = TcpListener::bind(to).unwrap();
            tx.send(()).unwrap();
            let (mut s, _) = l.accept().unwrap();
            pace(&s);
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut buf = vec![0u8; 65536];
            let mut got = 0;
            while got < BYTES_PER_TRANSFER {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "client closed early");
                got += n;
            }
            s.write_all(&vec![7u8; BYTES_PER_TRANSFER]).unwrap();
        }));
        rx.recv().unwrap();
        let a_name = a.name.clone();
        clients.push(std::thread::spawn(move || {
            enter_current_thread(&a_name).unwrap();
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
            pace(&s);
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s.write_all(&vec![1u8; BYTES_PER_TRANSFER]).unwrap();
            let mut back = Vec::new();
            s.read_to_end(&mut back).unwrap();
            assert_eq!(back.len(), BYTES_PER_TRANSFER, "monitored traffic was affected");
        }));
    }
    for t in clients.into_iter().chain(servers) {
        t.join().unwrap();
    }
}

fn refused(a: &Netns, addrs: &[IpAddr]) {
    let a = a.name.clone();
    let addrs = addrs.to_vec();
    std::thread::spawn(move || {
        enter_current_thread(&a).unwrap();
        for addr in addrs {
            let to = SocketAddr::new(addr, REFUSED_PORT);
            let r = TcpStream::connect_timeout(&to, Duration::from_secs(2));
            assert!(r.is_err(), "something listens on {to}");
        }
    })
    .join()
    .unwrap();
}

/// A child process that is killed if the test fails before it is reaped.
struct KillOnDrop(std::process::Child);

impl KillOnDrop {
    /// SIGINT (a clean stop), then the exit status and stderr.
    fn interrupt_and_collect(mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let mut err = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (self.0.wait().unwrap(), err)
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A veth's transmit drops (a full receive ring at its peer, drivers/net/veth.c).
fn tx_dropped(ns: &Netns, dev: &str) -> u64 {
    let l: serde_json::Value =
        serde_json::from_str(&ns.run(&format!("ip -s -j link show {dev}")).unwrap()).unwrap();
    l[0]["stats64"]["tx"]["dropped"].as_u64().unwrap_or(0)
}

/// What one run saw: the TCP frames the span carried (tcpdump on b0, with `filter` when
/// given), wirewatch's summary, its recording and events.
struct Seen {
    sent: u64,
    dropped: u64,
    summary: serde_json::Value,
    rec: std::path::PathBuf,
    events: String,
    servers: [IpAddr; 2],
}

/// The topology, traffic and one `wirewatch run` on the underlay (with `--filter` when given).
fn vxlan_run(tag: &str, filter: Option<&str>) -> Seen {
    let pid = std::process::id();
    let mut t = Topology::two_hosts(
        (&format!("wwdca{tag}{pid}"), &format!("wwdcb{tag}{pid}")),
        ("a0", "b0"),
        Subnets { v4: "10.96.0", v6: Some("fd96:") },
    )
    .unwrap();
    t.namespace("mon", &format!("wwdcm{tag}{pid}")).unwrap();
    let (a, b, mon) = (&t["a"], &t["b"], &t["mon"]);
    // The underlay, and the VXLAN device the span feeds.
    t.veth(("b", "u0"), ("mon", "u1")).unwrap();
    b.run("ip addr add 2001:db8:96::1/64 dev u0 nodad").unwrap();
    mon.run("ip addr add 2001:db8:96::2/64 dev u1 nodad").unwrap();
    b.run("ethtool -K u0 tso off gso off").unwrap();
    mon.run("ethtool -K u1 gro off").unwrap();
    // Room for a full-sized mirrored frame plus the 70 B of VXLAN over IPv6, as a mirror's
    // underlay is provisioned (else the tunnel drops the big segments).
    b.run("ip link set u0 mtu 1600").unwrap();
    mon.run("ip link set u1 mtu 1600").unwrap();
    b.run("ip link add vx0 type vxlan id 42 local 2001:db8:96::1 remote 2001:db8:96::2 dstport 4789 dev u0")
        .unwrap();
    b.run("ip link set vx0 mtu 1500 up").unwrap();
    t.also_mirror(("b", "b0"), "vx0").unwrap();

    let dir = TempDir::new(&format!("vxlan-{tag}"));
    let (rec, dump, summary, events) = (
        dir.join("wirewatch.pcapng"),
        dir.join("b0.pcap"),
        dir.join("summary.json"),
        dir.join("events.jsonl"),
    );
    // The reference: every frame crossing b0 is mirrored once; libpcap applies the same
    // filter expression.
    let expr = filter.map_or("tcp".to_string(), |f| format!("tcp and ({f})"));
    let tcpdump = KillOnDrop(
        b.command("tcpdump")
            .args(["-i", "b0", "-s", "128", "-B", "262144", "--immediate-mode", "-U", "-w"])
            .arg(&dump)
            .arg(&expr)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump"),
    );
    let mut cmd = mon.command(env!("CARGO_BIN_EXE_wirewatch"));
    // u1 has the collector address the mirror is sent to.
    cmd.args(["run", "--iface", "u1", "--allow-host-interface", "--xdp-mode", "native"])
        .args(["--metrics", "127.0.0.1:0"])
        .arg("--record")
        .arg(&rec)
        .arg("--events")
        .arg(&events)
        .arg("--summary-json")
        .arg(&summary);
    if let Some(f) = filter {
        cmd.args(["--filter", f]);
    }
    let mut ww = KillOnDrop(cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap());
    let log = Arc::new(Mutex::new(String::new()));
    let err = ww.0.stderr.take().unwrap();
    let l = log.clone();
    let log_reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let mut l = l.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    for i in 0..=300 {
        if log.lock().unwrap().contains("XDP attached in native mode") {
            break;
        }
        assert!(i < 300, "wirewatch never attached: {}", log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));

    let servers: [IpAddr; 2] = ["10.96.0.2".parse().unwrap(), "fd96::2".parse().unwrap()];
    refused(a, &servers);
    transfers(a, b, &servers);
    refused(a, &servers);
    std::thread::sleep(Duration::from_millis(500));
    let (status, _) = ww.interrupt_and_collect();
    log_reader.join().unwrap();
    let log = log.lock().unwrap().clone();
    assert!(status.success(), "wirewatch failed: {log}");
    let (_, tcpdump_log) = tcpdump.interrupt_and_collect();
    assert!(
        tcpdump_log.lines().any(|l| l.trim() == "0 packets dropped by kernel"),
        "the reference capture itself lost frames: {tcpdump_log}"
    );
    let summary = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let (sent, _) = tcp_frames(&dump);
    let dropped = tx_dropped(b, "u0") + tx_dropped(b, "vx0");
    let events = std::fs::read_to_string(&events).unwrap();
    let rec_copy = std::env::temp_dir().join(format!("ww-vxlan-{tag}-{pid}.pcapng"));
    std::fs::rename(&rec, &rec_copy).unwrap();
    Seen { sent, dropped, summary, rec: rec_copy, events, servers }
}

#[test]
fn xdp_opens_a_vxlan_mirror_on_the_underlay() {
    if !privileged_or_skip("xdp_opens_a_vxlan_mirror_on_the_underlay") {
        return;
    }
    let Seen { sent, dropped, summary: s, rec, events: text, servers } = vxlan_run("all", None);
    let loss = &s["loss"];
    let n = |k: &str| loss[k].as_u64().unwrap_or_else(|| panic!("summary loss.{k}: {s}"));
    let report = format!("span carried {sent} TCP frames; vx0 + u0 TX dropped {dropped}; {loss}");
    eprintln!("{report}");
    assert!(sent > 2 * 2 * (BYTES_PER_TRANSFER as u64 / 1500), "{report}");
    assert_eq!(sent, n("engine_received") + n("lost_total") + dropped, "{report}");
    assert_eq!(n("lost_total") + dropped, 0, "paced: nothing lost ({report})");
    // Every recorded frame (VXLAN over IPv6, cut to the default snap) still holds the inner
    // TCP header.
    let (recorded, decoded) = tcp_frames(&rec);
    let _ = std::fs::remove_file(&rec);
    assert_eq!((recorded, decoded), (sent, sent), "{report}");

    // The incident inside the tunnel: each refused SYN, both families, with the inner
    // addresses.
    let rejected: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["kind"] == "syn_rejected")
        .collect();
    assert_eq!(rejected.len(), 4, "{text}");
    for e in &rejected {
        assert_eq!(e["dest_port"], REFUSED_PORT, "{e}");
        let dst: IpAddr = e["dest_ip"].as_str().unwrap().parse().unwrap();
        assert!(servers.contains(&dst), "{e}");
        // The mirror session is the vantage: the interface, the VNI and the mirror's sender.
        assert_eq!(e["vantage"], "u1/vxlan:42@2001:db8:96::1", "{e}");
    }
}

/// `run --filter` in the XDP program, on the tunnel's inner headers: the engine receives
/// exactly the frames libpcap's evaluation of the same expression keeps on the mirrored
/// interface, and the refused connections it excludes are not diagnosed.
#[test]
fn xdp_filter_on_a_vxlan_mirror_keeps_what_libpcap_keeps() {
    if !privileged_or_skip("xdp_filter_on_a_vxlan_mirror_keeps_what_libpcap_keeps") {
        return;
    }
    let filter = format!("not port {REFUSED_PORT} and (host 10.96.0.2 or net fd96::/64)");
    let Seen { sent, dropped, summary: s, rec, events, .. } = vxlan_run("flt", Some(&filter));
    let _ = std::fs::remove_file(&rec);
    let loss = &s["loss"];
    let report = format!("tcpdump kept {sent} TCP frames; dropped {dropped}; {loss}");
    eprintln!("{report}");
    assert!(sent > 2 * 2 * (BYTES_PER_TRANSFER as u64 / 1500), "{report}");
    assert_eq!(loss["lost_total"].as_u64(), Some(0), "{report}");
    assert_eq!(dropped, 0, "{report}");
    assert_eq!(loss["engine_received"].as_u64(), Some(sent), "{report}");
    assert!(!events.contains("syn_rejected"), "{events}");
}
