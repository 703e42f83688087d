//! Incident A: a router forwards most of a flow to backend 1 but sprays some mid-flow segments
//! to backend 2 (nftables numgen + fwmark + policy route), which answers with RST.
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use wirewatch_testkit::traffic::{connect_from, drain, serve_once};

use crate::harness::{Incident, Lab, Monitor, Outcome};

pub(crate) fn run(lab: &mut Lab<'_>) -> Result<Outcome> {
    let (proxy, router, b1, b2, mon) = (
        lab.ns("proxy-a")?,
        lab.ns("router")?,
        lab.ns("backend1")?,
        lab.ns("backend2")?,
        lab.ns("mon-a")?,
    );
    lab.link(&proxy, "eth0", &router, "front")?;
    lab.link(&router, "to-b1", &b1, "eth0")?;
    lab.link(&router, "to-b2", &b2, "eth0")?;
    lab.run(&proxy, "ip addr add 10.84.0.2/24 dev eth0")?;
    lab.run(&proxy, "ip route add 10.84.9.9/32 via 10.84.0.1")?;
    lab.run(&router, "ip addr add 10.84.0.1/24 dev front")?;
    lab.run(&router, "ip addr add 10.84.1.1/24 dev to-b1")?;
    lab.run(&router, "ip addr add 10.84.2.1/24 dev to-b2")?;
    lab.run(&router, "sysctl -qw net.ipv4.ip_forward=1")?;
    // Replies from the VIP arrive on both links: no reverse-path filtering.
    for k in ["all", "default", "front", "to-b1", "to-b2"] {
        lab.run(&router, &format!("sysctl -qw net.ipv4.conf.{k}.rp_filter=0"))?;
    }
    for (ns, addr, gw) in [(&b1, "10.84.1.2/24", "10.84.1.1"), (&b2, "10.84.2.2/24", "10.84.2.1")] {
        lab.run(ns, &format!("ip addr add {addr} dev eth0"))?;
        lab.run(ns, "ip addr add 10.84.9.9/32 dev lo")?; // both own the VIP
        lab.run(ns, &format!("ip route add 10.84.0.0/24 via {gw}"))?;
    }
    lab.run(&router, "ip route add 10.84.9.9/32 via 10.84.1.2")?;
    lab.run(&router, "ip route add 10.84.9.9/32 via 10.84.2.2 table 102")?;
    lab.run(&router, "ip rule add fwmark 2 table 102")?;
    if !lab.args.control {
        lab.run(&router, "nft add table ip ecmp")?;
        lab.run(
            &router,
            "nft add chain ip ecmp pre { type filter hook prerouting priority -150 ; }",
        )?;
        // The faulty per-packet hash, made deterministic: of the flow's full-sized data segments
        // (not SYN/FIN/RST, not the small request headers), the second goes to backend 2, as in
        // the post-mortem ("the second MSS-sized segment of one POST").
        lab.run(&router, "nft add rule ip ecmp pre ip daddr 10.84.9.9 tcp flags & (syn | fin | rst) == 0 meta length > 600 numgen inc mod 1000 == 1 meta mark set 2")?;
    }
    // Sensors: the router's backend side (both backend links into one tap) and the proxy side.
    lab.span(&router, "to-b1", "span-b1", &mon, "backends")?;
    lab.also_span(&router, "to-b2", "span-b1")?;
    lab.span(&router, "front", "span-front", &mon, "proxyside")?;
    let m = lab.monitor(&mon, &["backends", "proxyside"], "ecmp-split")?;

    let vip: SocketAddr = "10.84.9.9:80".parse()?;
    let srv_h = serve_once(&b1, vip, None, |mut s| {
        // A few small exchanges first (headers, auth…), then the body.
        for _ in 0..3 {
            let mut hello = [0u8; 5];
            if s.read_exact(&mut hello).is_err() || s.write_all(b"ok").is_err() {
                return 0;
            }
        }
        drain(&mut s)
    })?;
    let cli_h = connect_from(&proxy, vip, |s| -> std::io::Result<()> {
        let mut s = s?;
        for _ in 0..3 {
            s.write_all(b"HELLO")?;
            let mut ok = [0u8; 2];
            s.read_exact(&mut ok)?;
        }
        // The body in one write: the kernel sends a window's worth of segments back to back, so
        // segments after the sprayed one still reach backend 1 before backend 2's RST is
        // processed (the RST waits in the socket backlog while the write holds the socket).
        s.write_all(&vec![b'x'; 64 * 1024])?;
        // Wait for the backend's answer (it closes once it has the body), as the gateway does.
        s.shutdown(std::net::Shutdown::Write)?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer)?;
        Ok(())
    });
    let expected = vec!["split_path", "midstream_rst", "rst_foreign_sender"];
    m.wait_for(&expected, Duration::from_secs(5))?;
    let proxy_result = cli_h.join().map_err(|_| anyhow::anyhow!("proxy thread panicked"))?;
    let _ = srv_h.join();
    let metrics = Monitor::anomaly_counts(&mon, lab.args.metrics);
    let events = m.stop()?;
    let note = match proxy_result {
        Ok(()) => "the proxy's POST went through".to_string(),
        Err(e) => format!("the proxy's POST failed: {e} (as the gateway's did)"),
    };
    Ok(Outcome { incident: Incident::EcmpSplit, expected, events, note, metrics })
}
