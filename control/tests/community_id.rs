//! The events' join keys against independent implementations, on captures of real kernel TCP
//! made here over IPv4 and IPv6: every event's `community_id` equals tshark's `communityid`
//! for the packets of its flow, with the default seed and with another one; the flat fields
//! start at the SYN's sender whichever side sent the triggering packet; every event
//! validates against docs/events.schema.json.
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wirewatch_testkit::netns::privileged_or_skip;
use wirewatch_testkit::tempdir::TempDir;
use wirewatch_testkit::topology::{Subnets, Topology};
use wirewatch_testkit::traffic::{connect_from, serve_once};

const CLIENTS: [&str; 2] = ["10.77.0.1", "fd77::1"];
const SERVERS: [&str; 2] = ["10.77.0.2", "fd77::2"];

struct Dump(Child);
impl Drop for Dump {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Per family: a transfer, a refused connection (syn_rejected, triggered by the server's
/// RST), a SYN the server's firewall drops (syn_unanswered, triggered by the client's SYNs)
/// and a slow reader (zero windows, advertised by the server).
fn capture(dir: &Path) -> PathBuf {
    let pid = std::process::id();
    // CLIENTS on i0, SERVERS on i1.
    let t = Topology::two_hosts(
        (&format!("wwia{pid}"), &format!("wwib{pid}")),
        ("i0", "i1"),
        Subnets { v4: "10.77.0", v6: Some("fd77:") },
    )
    .unwrap();
    let (a, b) = (&t["a"], &t["b"]);
    b.run("nft add table inet wwdrop").unwrap();
    b.run("nft add chain inet wwdrop in { type filter hook input priority 0 ; }").unwrap();
    b.run("nft add rule inet wwdrop in tcp dport 7108 drop").unwrap();

    let cap = dir.join("join.pcap");
    let mut dump = Dump(
        a.command("tcpdump")
            .args(["-i", "i0", "-s", "128", "-U", "-w"])
            .arg(&cap)
            .arg("tcp")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump (run scripts/setup.sh)"),
    );
    // tcpdump says "listening on" once its capture is open.
    let mut line = String::new();
    BufReader::new(dump.0.stderr.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("listening on"), "tcpdump: {line}");

    for server in SERVERS {
        let srv = |port| SocketAddr::new(server.parse().unwrap(), port);
        let up = serve_once(&b.name, srv(7101), None, |mut s| {
            let mut v = Vec::new();
            s.read_to_end(&mut v).map(|_| v.len())
        })
        .unwrap();
        connect_from(&a.name, srv(7101), |s| s.unwrap().write_all(&vec![1u8; 100_000]).unwrap())
            .join()
            .unwrap();
        assert_eq!(up.join().unwrap().unwrap().unwrap(), 100_000);
        assert!(connect_from(&a.name, srv(7109), |s| s.is_err()).join().unwrap());
        // Dropped SYNs: connect gives up after 5 s, by then it sent the SYN three times.
        assert!(connect_from(&a.name, srv(7108), |s| s.is_err()).join().unwrap());
        let slow = serve_once(&b.name, srv(7103), Some(4096), |mut s| {
            let mut buf = [0u8; 1024];
            let mut got = 0;
            loop {
                std::thread::sleep(Duration::from_millis(20));
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break got,
                    Ok(n) => got += n,
                }
            }
        })
        .unwrap();
        connect_from(&a.name, srv(7103), |s| s.unwrap().write_all(&vec![5u8; 60_000]).unwrap())
            .join()
            .unwrap();
        assert_eq!(slow.join().unwrap().unwrap(), 60_000);
    }
    // SAFETY: signalling our own child (`ip netns exec` execs tcpdump in place).
    unsafe { libc::kill(dump.0.id() as i32, libc::SIGINT) };
    dump.0.wait().unwrap();
    cap
}

/// tshark's Community ID per packet 4-tuple (src, sport, dst, dport).
fn tshark_ids(cap: &Path, seed: u16) -> BTreeMap<(IpAddr, u16, IpAddr, u16), BTreeSet<String>> {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(cap)
        .args(["--enable-protocol", "communityid", "-o", &format!("communityid.seed:{seed}")])
        .args(["-T", "fields", "-E", "separator=/t"])
        .args(["-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport"])
        .args(["-e", "ip.dst", "-e", "ipv6.dst", "-e", "tcp.dstport", "-e", "communityid"])
        .output()
        .expect("tshark (run scripts/setup.sh)");
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    let mut ids: BTreeMap<_, BTreeSet<String>> = BTreeMap::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = l.split('\t').collect();
        let addr =
            |v4: &str, v6: &str| -> IpAddr { if v4.is_empty() { v6 } else { v4 }.parse().unwrap() };
        let key =
            (addr(f[0], f[1]), f[2].parse().unwrap(), addr(f[3], f[4]), f[5].parse().unwrap());
        assert!(f[6].starts_with("1:"), "tshark gave no communityid: {l}");
        ids.entry(key).or_default().insert(f[6].to_string());
    }
    ids
}

fn analyze(cap: &Path, out: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let o = Command::new(env!("CARGO_BIN_EXE_wirewatch"))
        .arg("analyze")
        .arg(cap)
        .arg("--events")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "analyze: {}", String::from_utf8_lossy(&o.stderr));
    let events: Vec<serde_json::Value> = std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    dataplane::schema::validate_events(&events).unwrap();
    events
}

#[test]
fn community_id_equals_tsharks_and_flat_fields_start_at_the_syn_sender() {
    if !privileged_or_skip("community_id_equals_tsharks_and_flat_fields_start_at_the_syn_sender") {
        return;
    }
    let dir = TempDir::new("join");
    let cap = capture(&dir);

    let mut ids_by_seed = Vec::new();
    for seed in [0u16, 4242] {
        let theirs = tshark_ids(&cap, seed);
        let events = analyze(
            &cap,
            &dir.join(format!("events-{seed}.jsonl")),
            &["--community-id-seed", &seed.to_string(), "--host-name", "sensor-7"],
        );
        let mut seen = BTreeSet::new();
        for e in &events {
            let f = &e["flow"];
            let tuple: (IpAddr, u16, IpAddr, u16) = (
                f["src"].as_str().unwrap().parse().unwrap(),
                f["sport"].as_u64().unwrap() as u16,
                f["dst"].as_str().unwrap().parse().unwrap(),
                f["dport"].as_u64().unwrap() as u16,
            );
            let want = theirs.get(&tuple).unwrap_or_else(|| panic!("tshark never saw {e}"));
            assert_eq!(want.len(), 1, "tshark gives one id per flow: {want:?}");
            assert_eq!(e["community_id"], *want.first().unwrap(), "seed {seed}: {e}");
            assert_eq!(e["host"], "sensor-7");
            // The connection's originator is the client, whoever sent the trigger.
            let client = e["src_ip"].as_str().unwrap();
            assert!(CLIENTS.contains(&client), "{e}");
            assert!(SERVERS.contains(&e["dest_ip"].as_str().unwrap()), "{e}");
            assert!([7101, 7103, 7108, 7109].contains(&e["dest_port"].as_u64().unwrap()), "{e}");
            assert_eq!(e["orientation"], "syn", "{e}");
            let sent_by_client = f["src"].as_str().unwrap().parse::<IpAddr>().unwrap()
                == client.parse::<IpAddr>().unwrap();
            let dir = if sent_by_client { "to_server" } else { "to_client" };
            assert_eq!(e["packet_direction"], dir, "{e}");
            let family = if client.contains(':') { 6 } else { 4 };
            seen.insert((family, e["kind"].as_str().unwrap().to_string(), dir));
        }
        // Both families, both directions of the trigger.
        for family in [4, 6] {
            for (kind, dir) in [("syn_rejected", "to_client"), ("syn_unanswered", "to_server")] {
                assert!(seen.contains(&(family, kind.into(), dir)), "IPv{family} {kind}: {seen:?}");
            }
        }
        let ids: BTreeSet<String> =
            events.iter().map(|e| e["community_id"].as_str().unwrap().to_string()).collect();
        ids_by_seed.push(ids);
    }
    assert!(ids_by_seed[0].is_disjoint(&ids_by_seed[1]), "the seed changes every id");
}
