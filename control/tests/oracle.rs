//! wirewatch's per-packet TCP analysis against an independent oracle, tshark, on captures of
//! real kernel TCP made here: bulk transfers with loss induced by nftables `numgen` drops
//! (data and ACKs), a slow reader causing zero windows, a refused connection and an abortive
//! close, and capture loss (a capture filter that misses some segments). Per flag, the packets wirewatch flags and the packets tshark flags must agree.
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use wirewatch_testkit::netns::privileged_or_skip;
use wirewatch_testkit::tempdir::TempDir;
use wirewatch_testkit::topology::{Subnets, Topology};
use wirewatch_testkit::traffic::{abort_on_close, connect_from, serve_once};

/// The flags compared, with the tshark filter that defines each.
const FLAGS: &[(&str, &str)] = &[
    ("retransmission", "tcp.analysis.retransmission || tcp.analysis.fast_retransmission || tcp.analysis.spurious_retransmission"),
    ("out_of_order", "tcp.analysis.out_of_order"),
    ("duplicate_ack", "tcp.analysis.duplicate_ack"),
    ("zero_window", "tcp.analysis.zero_window"),
    ("ack_lost_segment", "tcp.analysis.ack_lost_segment"),
];
const MIN_AGREEMENT: f64 = 0.98;

fn ours(flag: &str, names: &str) -> bool {
    match flag {
        "retransmission" => names.split(',').any(|n| {
            matches!(n, "retransmission" | "fast_retransmission" | "spurious_retransmission")
        }),
        f => names.split(',').any(|n| n == f),
    }
}

fn capture(dir: &Path) -> PathBuf {
    let pid = std::process::id();
    let t = Topology::two_hosts(
        (&format!("wwoa{pid}"), &format!("wwob{pid}")),
        ("o0", "o1"),
        Subnets { v4: "10.78.0", v6: None },
    )
    .unwrap();
    let (a, b) = (&t["a"], &t["b"]);
    // Loss after the capture point (tcpdump on o0): 3% of the upload's data and of the
    // download's data, 2% of the upload's ACKs.
    b.run("nft add table inet wwloss").unwrap();
    b.run("nft add chain inet wwloss in { type filter hook input priority 0 ; }").unwrap();
    b.run("nft add rule inet wwloss in tcp dport 6001 numgen random mod 100 < 3 drop").unwrap();
    a.run("nft add table inet wwloss").unwrap();
    a.run("nft add chain inet wwloss in { type filter hook input priority 0 ; }").unwrap();
    a.run("nft add rule inet wwloss in tcp sport 6001 numgen random mod 100 < 2 drop").unwrap();
    a.run("nft add rule inet wwloss in tcp sport 6002 numgen random mod 100 < 3 drop").unwrap();

    let cap = dir.join("oracle.pcap");
    let mut dump = a
        .command("tcpdump")
        .args(["-i", "o0", "-s", "128", "-U", "-w"])
        .arg(&cap)
        // Capture loss for ack_lost_segment: on port 6005 the sensor misses the requests whose
        // IP-ID ends in three zero bits (the client's IP-ID steps by one: 1 in 8); the server
        // gets them.
        .arg("tcp and not (dst port 6005 and ip[5] & 0x07 == 0 and greater 200)")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let srv = |port: u16| SocketAddr::new("10.78.0.2".parse().unwrap(), port);

    // Upload with loss.
    let up = serve_once(&b.name, srv(6001), None, |mut s| {
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).map(|_| buf.len())
    })
    .unwrap();
    let c = connect_from(&a.name, srv(6001), |s| {
        let mut s = s.unwrap();
        s.write_all(&vec![3u8; 3 << 20]).unwrap();
    });
    c.join().unwrap();
    assert_eq!(up.join().unwrap().unwrap().unwrap(), 3 << 20);

    // Download with loss.
    let down =
        serve_once(&b.name, srv(6002), None, |mut s| s.write_all(&vec![4u8; 3 << 20])).unwrap();
    let c = connect_from(&a.name, srv(6002), |s| {
        let mut buf = Vec::new();
        s.unwrap().read_to_end(&mut buf).map(|_| buf.len())
    });
    assert_eq!(c.join().unwrap().unwrap(), 3 << 20);
    down.join().unwrap().unwrap().unwrap();

    // Request/response the sensor partly misses: each request is one segment, so a missing
    // request is the latest data when the response ACKs it.
    // The first request is 100 bytes, under the filter's 200-byte threshold: the sensor always
    // sees a connection's first data (a gap right there is an open disagreement, see NOTES.md).
    let rr = serve_once(&b.name, srv(6005), None, |mut s| {
        let mut first = [0u8; 100];
        let mut n = 0;
        if s.read_exact(&mut first).is_ok() && s.write_all(&[8u8; 50]).is_ok() {
            n += 1;
        }
        let mut req = [0u8; 200];
        while s.read_exact(&mut req).is_ok() {
            s.write_all(&[8u8; 50]).unwrap();
            n += 1;
        }
        n
    })
    .unwrap();
    let c = connect_from(&a.name, srv(6005), |s| {
        let mut s = s.unwrap();
        s.set_nodelay(true).unwrap();
        let mut resp = [0u8; 50];
        s.write_all(&[7u8; 100]).unwrap();
        s.read_exact(&mut resp).unwrap();
        for _ in 1..200 {
            s.write_all(&[7u8; 200]).unwrap();
            s.read_exact(&mut resp).unwrap();
        }
    });
    c.join().unwrap();
    assert_eq!(rr.join().unwrap().unwrap(), 200);

    // A slow reader with a small buffer: zero windows.
    let slow = serve_once(&b.name, srv(6003), Some(4096), |mut s| {
        let mut buf = [0u8; 1024];
        let mut got = 0;
        loop {
            std::thread::sleep(Duration::from_millis(15));
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        got
    })
    .unwrap();
    let c = connect_from(&a.name, srv(6003), |s| {
        let mut s = s.unwrap();
        s.write_all(&vec![5u8; 120_000]).unwrap();
    });
    c.join().unwrap();
    assert_eq!(slow.join().unwrap().unwrap(), 120_000);

    // A refused connection and an abortive close.
    let refused = connect_from(&a.name, srv(6009), |s| s.is_err());
    assert!(refused.join().unwrap(), "port 6009 must be closed");
    let ab = serve_once(&b.name, srv(6004), None, |mut s| {
        let mut buf = [0u8; 100];
        let _ = s.read(&mut buf);
        abort_on_close(&s).unwrap();
    })
    .unwrap();
    let c = connect_from(&a.name, srv(6004), |s| {
        let mut s = s.unwrap();
        s.write_all(b"hello").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let mut buf = [0u8; 10];
        s.read(&mut buf).is_err()
    });
    assert!(c.join().unwrap(), "the abortive close must reset the client");
    ab.join().unwrap().unwrap();

    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(dump.id() as i32, libc::SIGINT) };
    dump.wait().unwrap();
    cap
}

/// Pins the calling thread to its current CPU and returns the affinity it had.
fn on_one_cpu() -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; the calls get and set this thread's own mask.
    unsafe {
        let mut before: libc::cpu_set_t = std::mem::zeroed();
        let size = size_of::<libc::cpu_set_t>();
        assert_eq!(libc::sched_getaffinity(0, size, &raw mut before), 0);
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(libc::sched_getcpu().max(0) as usize, &mut one);
        assert_eq!(libc::sched_setaffinity(0, size, &raw const one), 0);
        before
    }
}

fn tshark_frames(cap: &Path, filter: &str) -> BTreeSet<u64> {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(cap)
        .args(["-Y", filter, "-T", "fields", "-e", "frame.number"])
        .output()
        .expect("tshark (run scripts/setup.sh)");
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Frames whose ACK is below an ACK the same sender sent earlier in the capture: the capture
/// reordered them (two CPUs handing packets to the capture point). Wireshark compares a
/// duplicate ACK with the sender's *last* ACK (packet-tcp.c, `lastack` set from every ACK);
/// wirewatch keeps the highest one, which an old ACK cannot move back.
fn acks_behind(cap: &Path) -> BTreeSet<u64> {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(cap)
        .args([
            "-Y",
            "tcp.flags.ack == 1",
            "-T",
            "fields",
            "-E",
            "separator=/t",
            "-e",
            "frame.number",
            "-e",
            "tcp.stream",
            "-e",
            "tcp.srcport",
            "-e",
            "tcp.ack_raw",
        ])
        .output()
        .expect("tshark (run scripts/setup.sh)");
    let mut highest: BTreeMap<(u64, u64), u32> = BTreeMap::new();
    let mut behind = BTreeSet::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<u64> = l.split('\t').filter_map(|v| v.trim().parse().ok()).collect();
        let [n, stream, port, ack] = f[..] else { continue };
        let ack = ack as u32;
        match highest.get_mut(&(stream, port)) {
            Some(h) if (ack.wrapping_sub(*h) as i32) < 0 => {
                behind.insert(n);
            }
            Some(h) => *h = ack,
            None => {
                highest.insert((stream, port), ack);
            }
        }
    }
    behind
}

#[test]
fn per_packet_verdicts_agree_with_tshark() {
    if !privileged_or_skip("per_packet_verdicts_agree_with_tshark") {
        return;
    }
    let dir = TempDir::new("oracle");
    // The traffic and tcpdump on one CPU (inherited by threads and children): veth hands a
    // frame over on the CPU that sent it, so ACKs sent from two CPUs reach the capture out of
    // order (the class `acks_behind` names, seen once in CI).
    let all_cpus = on_one_cpu();
    let cap = capture(&dir);
    // SAFETY: restores this thread's own affinity from a mask the kernel filled.
    unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const all_cpus) };
    let verdicts = dir.join("verdicts.tsv");
    let out = Command::new(env!("CARGO_BIN_EXE_wirewatch"))
        .args(["analyze", "--workers", "2", "--verdicts"])
        .arg(&verdicts)
        .arg(&cap)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&verdicts).unwrap();
    let mut by_frame: BTreeMap<u64, String> = BTreeMap::new();
    for l in text.lines() {
        let mut it = l.split('\t');
        let (_v, n, flags) = (
            it.next().unwrap(),
            it.next().unwrap().parse::<u64>().unwrap(),
            it.next().unwrap_or(""),
        );
        by_frame.insert(n, flags.to_string());
    }
    let tcp_packets = tshark_frames(&cap, "tcp").len();
    assert!(tcp_packets > 3000, "capture too small: {tcp_packets}");
    assert_eq!(
        by_frame.len(),
        tcp_packets,
        "wirewatch must give a verdict for every TCP packet tshark decodes"
    );

    let behind = acks_behind(&cap);
    let mut report = Vec::new();
    let mut failed = Vec::new();
    let mut unexplained = Vec::new();
    for (flag, filter) in FLAGS {
        let theirs = tshark_frames(&cap, filter);
        let mine: BTreeSet<u64> =
            by_frame.iter().filter(|(_, f)| ours(flag, f)).map(|(n, _)| *n).collect();
        let both = mine.intersection(&theirs).count();
        let union = mine.union(&theirs).count();
        let agreement = if union == 0 { 1.0 } else { both as f64 / union as f64 };
        // Every disagreement must fall in a known class, with its reason.
        let mut classes: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for n in mine.symmetric_difference(&theirs) {
            let class = if *flag == "duplicate_ack" && theirs.contains(n) && behind.contains(n) {
                "an ACK below the sender's highest, reordered by the capture: Wireshark compares duplicate ACKs with the last ACK seen, wirewatch with the highest"
            } else if by_frame[n].contains("mirror_duplicate") {
                "suppressed as a span duplicate: identical IP-ID, SEQ, ACK, flags, window and TSval within 1 ms (Linux SYN-ACK retransmissions carry IP-ID 0), indistinguishable from a mirrored copy"
            } else {
                unexplained.push(format!("{flag} frame {n}: wirewatch [{}]", by_frame[n]));
                "unexplained"
            };
            classes.entry(class).or_default().push(*n);
        }
        report.push(format!(
            "{flag:<18} tshark {:>5}  wirewatch {:>5}  both {both:>5}  agreement {agreement:.4}",
            theirs.len(),
            mine.len()
        ));
        for (class, frames) in &classes {
            report.push(format!(
                "    {} frame(s) {:?}: {class}",
                frames.len(),
                &frames[..frames.len().min(8)]
            ));
        }
        if agreement < MIN_AGREEMENT {
            failed.push(*flag);
        }
        // Every flag must actually occur in this capture, or the comparison proves nothing.
        if theirs.is_empty() {
            failed.push("(a flag tshark never raised: the scenario did not exercise it)");
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(
        unexplained.is_empty(),
        "disagreements of no known class:\n{}\n{}",
        unexplained.join("\n"),
        report.join("\n")
    );
    assert!(
        failed.is_empty(),
        "below {MIN_AGREEMENT}: {failed:?}\n{}\ncapture kept at {}",
        report.join("\n"),
        cap.display()
    );
}
