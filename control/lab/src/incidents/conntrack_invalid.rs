//! Incident D: a late segment outside the window is INVALID for conntrack, skips NAT, and the
//! NAT host's own stack resets the connection; the container keeps sending.
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use dataplane::packet::decode;
use dataplane_common::tcp_flags::{ACK, PSH, SYN};
use wirewatch_testkit::craft::TcpSegment;
use wirewatch_testkit::netns::enter_current_thread;
use wirewatch_testkit::traffic::{connect_from, drain, pace, serve_once};

use crate::harness::{Incident, Lab, Monitor, Outcome};
use crate::packet_socket::{send_frame, PacketSocket};

pub(crate) fn run(lab: &mut Lab<'_>) -> Result<Outcome> {
    let (ctr, host, srv, mon) =
        (lab.ns("ctr")?, lab.ns("nathost")?, lab.ns("server-d")?, lab.ns("mon-d")?);
    lab.run(&host, "ip link add br0 type bridge")?;
    lab.run(&host, "ip link set br0 up")?;
    lab.run(&host, "ip addr add 10.81.1.1/24 dev br0")?;
    lab.link(&ctr, "eth0", &host, "vctr")?;
    lab.run(&host, "ip link set vctr master br0")?;
    lab.run(&ctr, "ip addr add 10.81.1.2/24 dev eth0")?;
    lab.run(&ctr, "ip route add default via 10.81.1.1")?;
    lab.link(&host, "ext0", &srv, "eth0")?;
    lab.run(&host, "ip addr add 10.81.2.1/24 dev ext0")?;
    lab.run(&srv, "ip addr add 10.81.2.2/24 dev eth0")?;
    lab.run(&host, "sysctl -qw net.ipv4.ip_forward=1")?;
    lab.run(&host, "nft add table ip nat")?;
    lab.run(&host, "nft add chain ip nat post { type nat hook postrouting priority 100 ; }")?;
    lab.run(&host, "nft add rule ip nat post oifname ext0 masquerade")?;
    lab.span(&host, "ext0", "span0", &mon, "tap0")?;
    let m = lab.monitor(&mon, &["tap0"], "conntrack-invalid")?;

    // The container uploads a large body to the server, paced so the fault lands mid-upload.
    let server: SocketAddr = "10.81.2.2:8443".parse()?;
    let upload = serve_once(&srv, server, None, |mut s| drain(&mut s))?;
    let client = connect_from(&ctr, server, |s| -> std::io::Result<usize> {
        let mut s = s?;
        pace(&s, 400_000)?;
        let chunk = vec![0x17u8; 16384];
        let mut sent = 0;
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(4) {
            match s.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        Ok(sent)
    });
    std::thread::sleep(Duration::from_millis(800));
    let mut note = String::from("control run: no late segment injected");
    if !lab.args.control {
        // Learn the flow from the server's side, then replay one of the server's segments with
        // its SEQ far outside the window, as a delayed duplicate from an old path would arrive.
        let stale = {
            let srv = srv.clone();
            std::thread::spawn(move || -> Result<Vec<u8>> {
                enter_current_thread(&srv)?;
                let s = PacketSocket::open("eth0")?;
                let mut buf = [0u8; 2048];
                let t0 = Instant::now();
                while t0.elapsed() < Duration::from_secs(3) {
                    let Some(n) = s.recv(&mut buf) else { continue };
                    let Ok(p) = decode(&buf[..n], n as u32, 0, 0) else { continue };
                    if p.sport == 8443 && p.has(ACK) && !p.has(SYN) {
                        let mut g = TcpSegment::new(p.src(), p.sport, p.dst(), p.dport);
                        g.src_mac = p.src_mac;
                        g.dst_mac = p.dst_mac;
                        g.seq = p.seq.0.wrapping_add(100_000_000); // above the window: conntrack INVALID (below is only ignored on 6.x)
                        g.ack = p.ack.0;
                        g.flags = ACK | PSH;
                        g.window = p.window;
                        g.ttl = p.ttl;
                        g.ip_id = p.ip_id.wrapping_add(1);
                        g.timestamp = p.opts.timestamp;
                        g.payload_len = 100;
                        return Ok(g.frame());
                    }
                }
                bail!("never saw the server's side of the upload")
            })
            .join()
            .map_err(|_| anyhow::anyhow!("sniffer panicked"))??
        };
        send_frame(&srv, "eth0", &stale)?;
        note = "injected a server segment 100,000,000 bytes beyond the window".into();
    }
    let expected = vec!["rst_after_stale_segment", "data_after_rst"];
    m.wait_for(&expected, Duration::from_secs(6))?;
    let _ = client.join();
    let _ = upload.join();
    let metrics = Monitor::anomaly_counts(&mon, lab.args.metrics);
    let events = m.stop()?;
    Ok(Outcome { incident: Incident::ConntrackInvalid, expected, events, note, metrics })
}
