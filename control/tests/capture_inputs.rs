//! Every capture file a user brings (issue 14), on real kernel TCP recorded here with tcpdump
//! in network namespaces: on loopback (IPv4 and IPv6, a refused burst, a 2 s pause) and on a
//! veth pair where all TCP runs inside a VXLAN tunnel (with fragmented UDP and ARP beside it). The link types tcpdump cannot record on
//! Linux (BSD NULL and LOOP, raw IP) are made from the loopback recording by swapping each
//! record's Ethernet header for theirs; cuts, re-ordering and concatenation are made by editing
//! its records. Each check compares with the analysis of the untouched recording.
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use wirewatch_testkit::netns::{privileged_or_skip, Netns};
use wirewatch_testkit::topology::{Subnets, Topology};
use wirewatch_testkit::traffic::{connect_from, serve_once};

fn ww(args: &[&str]) -> (i32, String, String) {
    ww_stdin(args, None)
}

fn ww_stdin(args: &[&str], stdin: Option<&Path>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wirewatch"));
    cmd.args(args).env("RUST_LOG", "warn");
    if let Some(p) = stdin {
        cmd.stdin(std::fs::File::open(p).unwrap());
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The JSON summary of one analysis that must succeed with `code`.
fn summary(args: &[&str], code: i32) -> serde_json::Value {
    let mut a = vec!["analyze", "--format", "json"];
    a.extend_from_slice(args);
    let (c, out, err) = ww(&a);
    assert_eq!(c, code, "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// What two analyses of the same traffic must agree on.
fn counts(v: &serde_json::Value) -> (u64, Vec<(String, u64)>) {
    let kinds = v["kinds"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, x)| (k.clone(), x["count"].as_u64().unwrap()))
        .collect();
    (v["packets"].as_u64().unwrap(), kinds)
}

/// A tcpdump that is stopped (SIGINT, so it flushes) when dropped.
struct Dump(Child);

impl Dump {
    fn start(ns: &Netns, args: &[&str], file: &Path) -> Self {
        let child = ns
            .command("tcpdump")
            .args(args)
            // Packets reach the file as they come: without it, the last block of the ring
            // (TPACKET_V3 hands blocks out on a timeout) can be lost when tcpdump is stopped.
            .args(["--immediate-mode", "-U"])
            .arg("-w")
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tcpdump (run scripts/setup.sh)");
        Self(child)
    }
}

impl Drop for Dump {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

/// A request/response exchange of `up` bytes up and `down` bytes down with a server inside `ns`.
fn exchange(ns: &Netns, addr: SocketAddr, up: usize, down: usize) {
    exchange_between(ns, ns, addr, up, down);
}

/// The same from a client in `client` to a server in `server`.
fn exchange_between(client: &Netns, server: &Netns, addr: SocketAddr, up: usize, down: usize) {
    use std::io::{Read, Write};
    let srv = serve_once(&server.name, addr, None, move |mut s| {
        let mut buf = vec![0u8; up];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&vec![9u8; down]).unwrap();
    })
    .unwrap();
    let c = connect_from(&client.name, addr, move |s| {
        let mut s = s.unwrap();
        s.write_all(&vec![7u8; up]).unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        buf.len()
    });
    assert_eq!(c.join().unwrap(), down);
    srv.join().unwrap().unwrap();
}

struct Recording {
    dir: PathBuf,
    /// tcpdump -i lo, snap length 256: Ethernet (DLT_EN10MB) on Linux.
    lo: PathBuf,
    /// The same traffic at snap length 40: no TCP header fits.
    lo_snap40: PathBuf,
    /// Refused connections in the burst.
    refused: u64,
}

/// The loopback recording every test here shares (made once, its namespace deleted at once).
fn recording() -> Option<&'static Recording> {
    static REC: OnceLock<Option<Recording>> = OnceLock::new();
    REC.get_or_init(|| {
        if !privileged_or_skip("capture_inputs") {
            return None;
        }
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("ww-inputs-{pid}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut t = Topology::new();
        let ns = t.namespace("lo", &format!("wwin{pid}")).unwrap();
        // Ethernet-sized segments, as on a NIC (loopback's 64 KiB MTU makes a few giant ones).
        ns.run("ip link set lo mtu 1500").unwrap();
        ns.run("ethtool -K lo tso off gso off gro off").unwrap();
        let (lo, lo_snap40) = (dir.join("lo.pcap"), dir.join("lo-snap40.pcap"));
        let refused = 30;
        {
            let _a = Dump::start(ns, &["-i", "lo", "-s", "256", "tcp"], &lo);
            let _b = Dump::start(ns, &["-i", "lo", "-s", "40", "tcp"], &lo_snap40);
            std::thread::sleep(Duration::from_secs(1));
            exchange(ns, "127.0.0.1:7101".parse().unwrap(), 300_000, 2000);
            exchange(ns, "[::1]:7102".parse().unwrap(), 2000, 200_000);
            // The capture spans more than a second (a concatenation jumps back further).
            std::thread::sleep(Duration::from_secs(2));
            for _ in 0..refused {
                let c = connect_from(&ns.name, "127.0.0.1:7103".parse().unwrap(), |s| s.is_err());
                assert!(c.join().unwrap(), "nothing listens on 7103");
            }
            exchange(ns, "127.0.0.1:7104".parse().unwrap(), 1000, 1000);
            std::thread::sleep(Duration::from_secs(1));
        }
        drop(t);
        Some(Recording { dir, lo, lo_snap40, refused })
    })
    .as_ref()
}

/// A link header for an EtherType.
type Link = Box<dyn Fn(u16) -> Vec<u8>>;

/// A pcap file's byte order and link type, and its records (header, data) by value.
struct Pcap {
    header: Vec<u8>,
    records: Vec<([u8; 16], Vec<u8>)>,
    /// Offset of each record in the file.
    offsets: Vec<usize>,
}

fn read_pcap(p: &Path) -> Pcap {
    let b = std::fs::read(p).unwrap();
    assert_eq!(&b[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "tcpdump writes little-endian µs pcap here");
    let mut records = Vec::new();
    let mut offsets = Vec::new();
    let mut at = 24;
    while at + 16 <= b.len() {
        let h: [u8; 16] = b[at..at + 16].try_into().unwrap();
        let caplen = u32::from_le_bytes(h[8..12].try_into().unwrap()) as usize;
        offsets.push(at);
        records.push((h, b[at + 16..at + 16 + caplen].to_vec()));
        at += 16 + caplen;
    }
    Pcap { header: b[..24].to_vec(), records, offsets }
}

fn write_pcap(p: &Path, header: &[u8], records: &[([u8; 16], Vec<u8>)]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(p).unwrap());
    f.write_all(header).unwrap();
    for (h, d) in records {
        f.write_all(h).unwrap();
        f.write_all(d).unwrap();
    }
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

/// The loopback recording re-written with another link type: each record's Ethernet header
/// replaced by `link(ethertype)` (or dropped when it returns nothing), lengths adjusted; the
/// whole file in big-endian byte order when `big_endian`.
fn relink(src: &Pcap, linktype: u32, big_endian: bool, link: impl Fn(u16) -> Vec<u8>, out: &Path) {
    let w32 = |v: u32| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
    let mut header = src.header.clone();
    if big_endian {
        header[..4].copy_from_slice(&[0xa1, 0xb2, 0xc3, 0xd4]);
        header[4..6].copy_from_slice(&2u16.to_be_bytes());
        header[6..8].copy_from_slice(&4u16.to_be_bytes());
        let snap = u32_at(&src.header, 16);
        header[16..20].copy_from_slice(&snap.to_be_bytes());
    }
    header[20..24].copy_from_slice(&w32(linktype));
    let records: Vec<([u8; 16], Vec<u8>)> = src
        .records
        .iter()
        .map(|(h, d)| {
            let ethertype = u16::from_be_bytes([d[12], d[13]]);
            let mut rec = link(ethertype);
            rec.extend_from_slice(&d[14..]);
            let delta = rec.len() as i64 - d.len() as i64;
            let mut nh = [0u8; 16];
            for (i, f) in [0, 4, 8, 12].into_iter().enumerate() {
                let mut v = u32_at(h, f) as i64;
                if i >= 2 {
                    v += delta;
                }
                nh[f..f + 4].copy_from_slice(&w32(v as u32));
            }
            (nh, rec)
        })
        .collect();
    write_pcap(out, &header, &records);
}

/// `--verdicts` of an analysis (vantage, frame, flags per line), and its event kinds and flows.
fn verdicts_and_events(cap: &Path, tag: &str, dir: &Path) -> (String, Vec<String>) {
    let v = dir.join(format!("{tag}.tsv"));
    let e = dir.join(format!("{tag}.jsonl"));
    let (code, _, err) = ww(&[
        "analyze",
        cap.to_str().unwrap(),
        "--verdicts",
        v.to_str().unwrap(),
        "--events",
        e.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{tag}: {err}");
    let events = std::fs::read_to_string(&e)
        .unwrap()
        .lines()
        .map(|l| {
            let x: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{} {} {}", x["kind"], x["flow"], x["time_last"])
        })
        .collect();
    (std::fs::read_to_string(&v).unwrap(), events)
}

#[test]
fn bsd_loopback_and_raw_ip_captures_read_like_ethernet() {
    let Some(rec) = recording() else { return };
    let dir = rec.dir.join("linktypes");
    std::fs::create_dir_all(&dir).unwrap();
    let src = read_pcap(&rec.lo);
    let base = summary(&[rec.lo.to_str().unwrap()], 0);
    let (base_v, base_e) = verdicts_and_events(&rec.lo, "ethernet", &dir);
    assert!(base["packets"].as_u64().unwrap() > 200, "{base:#}");
    assert!(base_e.iter().filter(|e| e.contains("syn_rejected")).count() as u64 >= rec.refused);
    let v6 = |et: u16| et == 0x86dd;
    // (name, link type, file byte order big-endian, link header for an EtherType)
    let cases: Vec<(&str, u32, bool, Link)> = vec![
        // NULL from a little-endian macOS host: AF_INET 2, AF_INET6 30, host byte order.
        (
            "null-macos-le",
            0,
            false,
            Box::new(move |et| (if v6(et) { 30u32 } else { 2 }).to_le_bytes().to_vec()),
        ),
        // NULL from a big-endian FreeBSD host: AF_INET6 28, file and header big-endian.
        (
            "null-freebsd-be",
            0,
            true,
            Box::new(move |et| (if v6(et) { 28u32 } else { 2 }).to_be_bytes().to_vec()),
        ),
        // NULL written by a big-endian host, read from a little-endian file (mergecap'ed).
        (
            "null-openbsd-mixed",
            0,
            false,
            Box::new(move |et| (if v6(et) { 24u32 } else { 2 }).to_be_bytes().to_vec()),
        ),
        // LOOP (OpenBSD): network byte order always.
        (
            "loop",
            108,
            false,
            Box::new(move |et| (if v6(et) { 24u32 } else { 2 }).to_be_bytes().to_vec()),
        ),
        ("raw-101", 101, false, Box::new(|_| Vec::new())),
        ("raw-14", 14, false, Box::new(|_| Vec::new())),
        ("raw-12", 12, true, Box::new(|_| Vec::new())),
    ];
    for (name, lt, be, link) in cases {
        let p = dir.join(format!("{name}.pcap"));
        relink(&src, lt, be, link, &p);
        let got = summary(&[p.to_str().unwrap()], 0);
        assert_eq!(counts(&got), counts(&base), "{name}");
        assert_eq!(got["undecodable"], 0, "{name}: {got:#}");
        let (v, e) = verdicts_and_events(&p, name, &dir);
        assert_eq!(v, base_v, "{name}: per-packet verdicts differ from the Ethernet capture's");
        assert_eq!(e, base_e, "{name}: events differ from the Ethernet capture's");
    }
    // A NULL family that is not IP is counted, not dropped from the numbering.
    let p = dir.join("null-unknown-family.pcap");
    relink(&src, 0, false, |_| 7u32.to_le_bytes().to_vec(), &p);
    let got = summary(&[p.to_str().unwrap()], 0);
    assert_eq!(got["packets"], 0);
    assert_eq!(got["inputs"][0]["not_ip"], got["inputs"][0]["frames"], "{got:#}");
    // Another link type is named in the error, with what to do.
    let mut wifi = src.header.clone();
    wifi[20..24].copy_from_slice(&127u32.to_le_bytes());
    let p = dir.join("radiotap.pcap");
    std::fs::write(&p, &wifi).unwrap();
    let (code, _, err) = ww(&["analyze", p.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("radiotap.pcap") && err.contains("link type 127 (IEEE802_11_RADIOTAP"),
        "{err}"
    );
    assert!(err.contains("tcpdump -i any"), "says what to do: {err}");
}

#[test]
fn a_cut_capture_is_analysed_up_to_the_cut_and_exits_4() {
    let Some(rec) = recording() else { return };
    let dir = rec.dir.join("cut");
    std::fs::create_dir_all(&dir).unwrap();
    let src = read_pcap(&rec.lo);
    let k = src.records.len() / 2;
    let whole = std::fs::read(&rec.lo).unwrap();
    // Cut inside record k's data (tcpdump killed mid-write)...
    let cut = dir.join("cut.pcap");
    std::fs::write(&cut, &whole[..src.offsets[k] + 16 + 20]).unwrap();
    // ...which must read like the first k records, complete.
    let head = dir.join("head.pcap");
    write_pcap(&head, &src.header, &src.records[..k]);
    let want = summary(&[head.to_str().unwrap()], 0);
    let (code, out, err) = ww(&["analyze", "--format", "json", cut.to_str().unwrap()]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("cut.pcap")
            && err.contains(&format!("cut short at offset {}", src.offsets[k])),
        "the warning names the file and the offset: {err}"
    );
    assert!(
        err.contains(&format!("the {k} complete records")) && err.contains("complete copy"),
        "{err}"
    );
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(counts(&got), counts(&want));
    assert_eq!(got["inputs"][0]["frames"], k as u64);
    assert_eq!(got["inputs"][0]["cut_at"], src.offsets[k] as u64);
    // Cut inside a record header, and a pcapng cut inside a block: the same status.
    let p = dir.join("cut-header.pcap");
    std::fs::write(&p, &whole[..src.offsets[k] + 7]).unwrap();
    assert_eq!(counts(&summary(&[p.to_str().unwrap()], 4)), counts(&want));
    let ng = dir.join("lo.pcapng");
    let st = Command::new("editcap").args(["-F", "pcapng"]).arg(&rec.lo).arg(&ng).status().unwrap();
    assert!(st.success());
    let ng_bytes = std::fs::read(&ng).unwrap();
    let p = dir.join("cut.pcapng");
    std::fs::write(&p, &ng_bytes[..ng_bytes.len() * 2 / 3]).unwrap();
    let (code, _, err) = ww(&["analyze", p.to_str().unwrap()]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("cut.pcapng") && err.contains("cut short at offset"), "{err}");
    // A compressed capture cut short: the same, offsets in the decompressed data.
    let gz = dir.join("lo.pcap.gz");
    let out = Command::new("gzip").arg("-c").arg(&rec.lo).output().unwrap();
    std::fs::write(&gz, &out.stdout[..out.stdout.len() / 2]).unwrap();
    let (code, stdout, err) = ww(&["analyze", gz.to_str().unwrap()]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("lo.pcap.gz") && err.contains("of the gzip-decompressed data"), "{err}");
    assert!(stdout.contains("TCP packets"), "the results are there: {stdout}");
}

#[test]
fn standard_input_gzip_and_zstd_read_the_same() {
    let Some(rec) = recording() else { return };
    let dir = rec.dir.join("compressed");
    std::fs::create_dir_all(&dir).unwrap();
    let base = summary(&[rec.lo.to_str().unwrap()], 0);
    let gz = dir.join("lo.pcap.gz");
    let out = Command::new("gzip").arg("-c").arg(&rec.lo).output().unwrap();
    std::fs::write(&gz, &out.stdout).unwrap();
    // zstd data under a name that says nothing: told by the magic bytes.
    let zst = dir.join("capture-file");
    let out = Command::new("zstd").args(["-q", "-c"]).arg(&rec.lo).output().unwrap();
    std::fs::write(&zst, &out.stdout).unwrap();
    for (p, kind) in [(&gz, "gzip"), (&zst, "zstd")] {
        let got = summary(&[p.to_str().unwrap()], 0);
        assert_eq!(counts(&got), counts(&base), "{kind}");
        assert_eq!(got["inputs"][0]["compression"], kind);
    }
    for p in [&rec.lo, &gz, &zst] {
        let (code, out, err) = ww_stdin(&["analyze", "--format", "json", "-"], Some(p));
        assert_eq!(code, 0, "{}: {err}", p.display());
        let got: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(counts(&got), counts(&base), "stdin from {}", p.display());
    }
    let (code, _, err) = ww(&["analyze", "-", "-"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("standard input"), "{err}");
    // Damaged compressed data: an error naming the file and the offset, never a panic.
    let mut bad = std::fs::read(&gz).unwrap();
    let mid = bad.len() / 2;
    for b in &mut bad[mid..mid + 64] {
        *b ^= 0xa5;
    }
    let p = dir.join("damaged.pcap.gz");
    std::fs::write(&p, &bad).unwrap();
    let (code, _, err) = ww(&["analyze", p.to_str().unwrap()]);
    assert!(code == 3 || code == 4, "{code}: {err}");
    assert!(
        err.contains("damaged.pcap.gz") && err.contains("offset") && !err.contains("panicked"),
        "{err}"
    );
    // A zstd frame asking for a 2 GiB window is refused (decompression memory stays bounded).
    let mut huge = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, (31 - 10) << 3];
    huge.extend_from_slice(&[0; 32]);
    let p = dir.join("window.zst");
    std::fs::write(&p, &huge).unwrap();
    let (code, _, err) = ww(&["analyze", p.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("window.zst") && !err.contains("panicked"), "{err}");
}

#[test]
fn frames_without_readable_tcp_are_counted_by_cause() {
    let Some(rec) = recording() else { return };
    // Snap length 40: Ethernet + IPv4 + 6 bytes of TCP. Every frame is cut short.
    let got = summary(&[rec.lo_snap40.to_str().unwrap()], 0);
    let i = &got["inputs"][0];
    assert_eq!(got["packets"], 0);
    assert!(i["frames"].as_u64().unwrap() > 200, "{got:#}");
    assert_eq!(i["cut_short"], i["frames"], "{got:#}");
    let (_, out, _) = ww(&["analyze", rec.lo_snap40.to_str().unwrap()]);
    assert!(out.contains("cut short (snap length)") && out.contains("tcpdump -s 128"), "{out}");

    // TCP inside VXLAN, recorded on the underlay, with large pings (fragments) and ARP.
    let pid = std::process::id();
    // Frames as the wire carries them (no GSO super-frames at the capture point).
    let t = Topology::two_hosts(
        (&format!("wwva{pid}"), &format!("wwvb{pid}")),
        ("u0", "u1"),
        Subnets { v4: "10.93.0", v6: None },
    )
    .unwrap();
    let (a, b) = (&t["a"], &t["b"]);
    for (ns, local, remote, inner) in
        [(&a, "10.93.0.1", "10.93.0.2", "10.94.0.1"), (&b, "10.93.0.2", "10.93.0.1", "10.94.0.2")]
    {
        ns.run(&format!(
            "ip link add vx0 type vxlan id 42 dstport 4789 local {local} remote {remote}"
        ))
        .unwrap();
        ns.run(&format!("ip addr add {inner}/24 dev vx0")).unwrap();
        ns.run("ip link set vx0 up").unwrap();
    }
    let cap = rec.dir.join("vxlan.pcap");
    {
        let _d = Dump::start(a, &["-i", "u0", "-s", "256"], &cap);
        std::thread::sleep(Duration::from_secs(1));
        // The next packet to the peer asks for its MAC again: ARP in the capture.
        a.run("ip neigh flush dev u0").unwrap();
        exchange_between(a, b, "10.94.0.2:7201".parse().unwrap(), 100_000, 1000);
        // UDP datagrams larger than the MTU: the kernel fragments them (3 fragments each).
        let ns = a.name.clone();
        std::thread::spawn(move || {
            wirewatch_testkit::netns::enter_current_thread(&ns).unwrap();
            let u = std::net::UdpSocket::bind("10.93.0.1:0").unwrap();
            for _ in 0..3 {
                u.send_to(&[1u8; 3000], "10.93.0.2:9").unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .join()
        .unwrap();
        std::thread::sleep(Duration::from_secs(1));
    }
    drop(t);
    let got = summary(&[cap.to_str().unwrap()], 0);
    let i = &got["inputs"][0];
    // The TCP inside VXLAN is read (issue 15: the parser opens the tunnel).
    assert!(got["packets"].as_u64().unwrap() > 50, "the TCP inside VXLAN: {got:#}");
    assert_eq!(i["tcp"], got["packets"], "{got:#}");
    assert_eq!(i["encapsulated"], 0, "{got:#}");
    assert!(
        i["fragment"].as_u64().unwrap() >= 6,
        "two later fragments per 3000-byte ping: {got:#}"
    );
    assert!(i["not_tcp"].as_u64().unwrap() >= 6, "the pings' first fragments: {got:#}");
    assert!(i["not_ip"].as_u64().unwrap() >= 1, "ARP: {got:#}");
    let sum: u64 =
        ["tcp", "not_ip", "not_tcp", "encapsulated", "fragment", "cut_short", "malformed"]
            .iter()
            .map(|k| i[*k].as_u64().unwrap())
            .sum();
    assert_eq!(sum, i["frames"].as_u64().unwrap(), "every frame has a cause: {got:#}");
}

#[test]
fn time_going_back_is_a_time_jump_and_small_inversions_are_resorted() {
    let Some(rec) = recording() else { return };
    let dir = rec.dir.join("time");
    std::fs::create_dir_all(&dir).unwrap();
    let src = read_pcap(&rec.lo);
    let base = summary(&[rec.lo.to_str().unwrap()], 0);
    // The trace concatenated with itself: time goes back by its whole span (> 2 s).
    let twice = dir.join("twice.pcap");
    let mut records = src.records.clone();
    records.extend(src.records.iter().cloned());
    write_pcap(&twice, &src.header, &records);
    let got = summary(&[twice.to_str().unwrap()], 0);
    assert_eq!(got["inputs"][0]["time_jumps"], 1, "{got:#}");
    assert!(got["kinds"].get("mirror_duplicate").is_none(), "replayed, not mirrored: {got:#}");
    assert_eq!(got["kinds"]["time_jump"]["count"], 1, "{got:#}");
    let (p1, k1) = counts(&base);
    let (p2, k2) = counts(&got);
    assert_eq!(p2, 2 * p1);
    let doubled: Vec<(String, u64)> = k1.iter().map(|(k, n)| (k.clone(), 2 * n)).collect();
    let k2: Vec<(String, u64)> = k2.into_iter().filter(|(k, _)| k != "time_jump").collect();
    assert_eq!(k2, doubled, "each half reads like the trace alone");

    // Adjacent records less than 1 ms apart swapped in the file (as a multi-queue capture
    // interleaves them): put back in order, counted, and the analysis is the original's.
    // A loopback capture may hold an inversion of its own (its CPUs stamp frames
    // independently): start from the trace in time order so each swap is one inversion.
    let ts = |h: &[u8; 16]| u32_at(h, 0) as u64 * 1_000_000 + u32_at(h, 4) as u64;
    let mut sorted = src.records.clone();
    sorted.sort_by_key(|r| ts(&r.0));
    let in_order = dir.join("in_order.pcap");
    write_pcap(&in_order, &src.header, &sorted);
    let base = summary(&[in_order.to_str().unwrap()], 0);
    assert_eq!(base["inputs"][0]["resorted"], 0, "{base:#}");
    let mut swapped = sorted;
    let mut n = 0;
    let mut i = 0;
    while i + 1 < swapped.len() {
        let (a, b) = (ts(&swapped[i].0), ts(&swapped[i + 1].0));
        if b > a && b - a < 1000 && i % 7 == 0 {
            swapped.swap(i, i + 1);
            n += 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    assert!(n >= 5, "only {n} records to swap");
    let p = dir.join("interleaved.pcap");
    write_pcap(&p, &src.header, &swapped);
    let got = summary(&[p.to_str().unwrap()], 0);
    assert_eq!(got["inputs"][0]["resorted"], n, "{got:#}");
    assert_eq!(got["inputs"][0]["time_jumps"], 0);
    assert_eq!(counts(&got), counts(&base));
}

#[test]
fn the_summary_is_for_humans_and_stays_out_of_the_events() {
    let Some(rec) = recording() else { return };
    let dir = rec.dir.join("summary");
    std::fs::create_dir_all(&dir).unwrap();
    let cap = rec.lo.to_str().unwrap();
    let (code, out, err) = ww(&["analyze", cap, "--events", "-"]);
    assert_eq!(code, 0, "{err}");
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not an event: {e}: {l}")))
        .collect();
    assert!(events.len() as u64 >= rec.refused, "{out}");
    for want in [
        "wirewatch analyze:",
        "flows from lo.pcap",
        "time span:",
        "capture health",
        "0 jumps back",
        "top endpoints: 127.0.0.1:7103 (",
        "evidence files:",
    ] {
        assert!(err.contains(want), "summary on stderr lacks {want:?}:\n{err}");
    }
    // The evidence rate limit (10 files a second of capture time) holds the refused burst
    // back; offline it can be lifted.
    let limited = dir.join("limited");
    let got = summary(&[cap, "--evidence-dir", limited.to_str().unwrap()], 0);
    assert!(got["evidence"]["suppressed"].as_u64().unwrap() > 0, "{got:#}");
    let all = dir.join("all");
    let got =
        summary(&[cap, "--evidence-dir", all.to_str().unwrap(), "--evidence-rate", "unlimited"], 0);
    assert_eq!(got["evidence"]["suppressed"], 0, "{got:#}");
    let written = std::fs::read_dir(&all).unwrap().count() as u64;
    assert!(written >= rec.refused, "{written} evidence files");
    assert_eq!(got["evidence"]["written"], written);
    let (code, _, err) = ww(&["analyze", cap, "--evidence-rate", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--evidence-rate"), "{err}");
    let (_, help, _) = ww(&["analyze", "--help"]);
    assert!(help.contains("4 analysed but an input was cut short"), "{help}");
}

#[test]
fn a_capture_that_missed_segments_reports_its_capture_loss() {
    let Some(rec) = recording() else { return };
    let dir = rec.dir.join("loss");
    std::fs::create_dir_all(&dir).unwrap();
    let src = read_pcap(&rec.lo);
    let base = summary(&[rec.lo.to_str().unwrap()], 0);
    assert_eq!(base["inputs"][0]["capture_loss"]["gap_events"], 0, "{base:#}");
    assert!(base["inputs"][0]["capture_loss"]["ack_events"].as_u64().unwrap() > 50);
    // The sensor misses every 25th data segment of the 300 kB upload (the receiver got them:
    // its ACKs cover them), as a capture that dropped packets does.
    // (destination port, sequence number, payload length) of an IPv4 TCP frame.
    let ipv4_tcp_payload = |d: &[u8]| -> Option<(u16, u32, usize)> {
        if u16::from_be_bytes([d[12], d[13]]) != 0x0800 {
            return None;
        }
        let ihl = (d[14] & 0x0f) as usize * 4;
        let total = u16::from_be_bytes([d[16], d[17]]) as usize;
        let l4 = 14 + ihl;
        let doff = (d[l4 + 12] >> 4) as usize * 4;
        let seq = u32::from_be_bytes([d[l4 + 4], d[l4 + 5], d[l4 + 6], d[l4 + 7]]);
        Some((u16::from_be_bytes([d[l4 + 2], d[l4 + 3]]), seq, total - ihl - doff))
    };
    let mut seen = 0;
    let mut dropped = Vec::new();
    let records: Vec<([u8; 16], Vec<u8>)> = src
        .records
        .iter()
        .filter(|(_, d)| match ipv4_tcp_payload(d) {
            Some((7101, seq, n)) if n > 0 => {
                seen += 1;
                let drop = seen % 25 == 0;
                if drop {
                    dropped.push((seq, n as u64));
                }
                !drop
            }
            _ => true,
        })
        .cloned()
        .collect();
    let missed = dropped.len() as u64;
    let missed_bytes: u64 = dropped.iter().map(|(_, n)| n).sum();
    assert!(missed >= 4, "{missed} segments missed");
    let lossy = dir.join("lossy.pcap");
    write_pcap(&lossy, &src.header, &records);
    let got = summary(&[lossy.to_str().unwrap()], 0);
    let c = &got["inputs"][0]["capture_loss"];
    let gaps = c["gap_events"].as_u64().unwrap();
    assert!(gaps >= 1 && gaps <= missed, "{missed} missed, {gaps} gap ACKs: {got:#}");
    assert!(got["inputs"][0]["capture_loss_percent"].as_f64().unwrap() > 0.0);
    // The holes hold at most the bytes removed: a retransmitted copy can fill one, and the
    // exact split depends on the recording (tshark's count of the ACKs below is the oracle).
    let gap_bytes = c["gap_bytes"].as_u64().unwrap();
    assert!(
        gap_bytes > 0 && gap_bytes <= missed_bytes,
        "{gap_bytes} bytes in holes, {missed_bytes} removed: {got:#}"
    );
    assert_eq!(got["kinds"]["capture_loss"]["count"], gaps);
    // Wireshark flags the same ACKs ("ACKed segment that wasn't captured").
    let out = Command::new("tshark")
        .args(["-n", "-r", lossy.to_str().unwrap(), "-Y", "tcp.analysis.ack_lost_segment"])
        .output()
        .unwrap();
    let tshark = String::from_utf8_lossy(&out.stdout).lines().count() as u64;
    assert_eq!(gaps, tshark, "tshark flags {tshark} ACKs of unseen segments");
    let (_, table, _) = ww(&["analyze", lossy.to_str().unwrap()]);
    assert!(
        table.contains(&format!(
            "capture loss: {:.2}%",
            got["inputs"][0]["capture_loss_percent"].as_f64().unwrap()
        )) && table.contains("the capture itself is lossy"),
        "{table}"
    );
}
