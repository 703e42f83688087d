//! Incident B: a full proxy's SYNs to the server die silently in a firewall for a fraction of
//! connections (a set of black-holed tuples, so retransmitted SYNs die too).
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Result;
use wirewatch_testkit::netns::enter_current_thread;
use wirewatch_testkit::traffic::{abort_on_close, connect_from};

use crate::harness::{Incident, Lab, Monitor, Outcome};

pub(crate) fn run(lab: &mut Lab<'_>) -> Result<Outcome> {
    let (cli, proxy, fw, srv, mon) = (
        lab.ns("client-b")?,
        lab.ns("proxy-b")?,
        lab.ns("firewall")?,
        lab.ns("server-b")?,
        lab.ns("mon-b")?,
    );
    lab.link(&cli, "eth0", &proxy, "front")?;
    lab.link(&proxy, "back", &fw, "fw-in")?;
    lab.link(&fw, "fw-out", &srv, "eth0")?;
    lab.run(&cli, "ip addr add 10.83.0.1/24 dev eth0")?;
    lab.run(&proxy, "ip addr add 10.83.0.2/24 dev front")?;
    lab.run(&proxy, "ip addr add 10.83.1.2/24 dev back")?;
    lab.run(&proxy, "ip route add 10.83.2.0/24 via 10.83.1.1")?;
    lab.run(&fw, "ip addr add 10.83.1.1/24 dev fw-in")?;
    lab.run(&fw, "ip addr add 10.83.2.1/24 dev fw-out")?;
    lab.run(&fw, "sysctl -qw net.ipv4.ip_forward=1")?;
    lab.run(&srv, "ip addr add 10.83.2.2/24 dev eth0")?;
    lab.run(&srv, "ip route add 10.83.1.0/24 via 10.83.2.1")?;
    if !lab.args.control {
        lab.run(&fw, "nft add table inet fw")?;
        lab.run(&fw, "nft add set inet fw black { type ipv4_addr . inet_service ; }")?;
        lab.run(&fw, "nft add chain inet fw filter_fwd { type filter hook forward priority 0 ; }")?;
        lab.run(&fw, "nft add rule inet fw filter_fwd tcp flags & (syn | ack) == syn ip saddr . tcp sport @black drop")?;
        // Every third new connection (a counter, so the lab is deterministic): its tuple joins
        // the set and its SYN dies; the set kills its retransmissions too.
        lab.run(&fw, "nft add rule inet fw filter_fwd tcp flags & (syn | ack) == syn numgen inc mod 3 == 0 add @black { ip saddr . tcp sport } drop")?;
    }
    lab.span(&fw, "fw-in", "span-in", &mon, "upstream")?;
    lab.span(&fw, "fw-out", "span-out", &mon, "downstream")?;
    let m = lab.monitor(&mon, &["upstream", "downstream"], "syn-blackhole")?;

    // Server: answers each POST. Proxy: accepts the client, connects to the server with a
    // 3.5 s timeout; on timeout it resets the client (as the F5 did).
    let server: SocketAddr = "10.83.2.2:8080".parse()?;
    let front: SocketAddr = "10.83.0.2:8000".parse()?;
    // Enough healthy connections for the monitor to judge its two sensors serial from the
    // traffic (what one sees the other sees); every third one is black-holed.
    let requests = 16;
    let srv_ns = srv.clone();
    let srv_h = std::thread::spawn(move || -> Result<()> {
        enter_current_thread(&srv_ns)?;
        let l = std::net::TcpListener::bind(server)?;
        l.set_nonblocking(true)?;
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(12) {
            match l.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false)?;
                    let mut b = [0u8; 256];
                    let _ = s.read(&mut b);
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        Ok(())
    });
    let proxy_ns = proxy.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::result::Result<(), String>>();
    let proxy_h = std::thread::spawn(move || -> Result<()> {
        let listener =
            enter_current_thread(&proxy_ns).map_err(anyhow::Error::from).and_then(|()| {
                let l = std::net::TcpListener::bind(front)?;
                l.set_nonblocking(true)?;
                Ok(l)
            });
        let l = match listener {
            Ok(l) => {
                let _ = ready_tx.send(Ok(()));
                l
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
                return Err(e);
            }
        };
        let mut handles = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while handles.len() < requests && Instant::now() < deadline {
            let Ok((mut c, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            c.set_nonblocking(false)?;
            c.set_read_timeout(Some(Duration::from_secs(10)))?;
            handles.push(std::thread::spawn(move || {
                let mut b = [0u8; 256];
                let _ = c.read(&mut b);
                match std::net::TcpStream::connect_timeout(&server, Duration::from_millis(3500)) {
                    Ok(mut up) => {
                        let _ = up.set_read_timeout(Some(Duration::from_secs(5)));
                        let _ = up.write_all(&b);
                        let mut r = [0u8; 256];
                        let n = up.read(&mut r).unwrap_or(0);
                        let _ = c.write_all(&r[..n]);
                    }
                    Err(_) => {
                        let _ = abort_on_close(&c); // RST to the client
                    }
                }
            }));
        }
        for h in handles {
            let _ = h.join();
        }
        Ok(())
    });
    ready_rx
        .recv()
        .map_err(|_| anyhow::anyhow!("proxy thread died"))?
        .map_err(|e| anyhow::anyhow!("proxy: {e}"))?;
    let mut failures = 0;
    let mut clients = Vec::new();
    for i in 0..requests {
        clients.push(connect_from(&cli, front, move |s| -> bool {
            let Ok(mut s) = s else { return false };
            let _ = s.write_all(format!("POST /batch/{i} HTTP/1.1\r\n\r\n").as_bytes());
            let mut r = [0u8; 256];
            matches!(s.read(&mut r), Ok(n) if n > 0)
        }));
        std::thread::sleep(Duration::from_millis(150));
    }
    for c in clients {
        if !c.join().unwrap_or(false) {
            failures += 1;
        }
    }
    let expected = vec!["syn_unanswered", "lost_between_sensors"];
    // An unanswered opening SYN is judged lost only after its 3 s wait for an answer.
    m.wait_for(&expected, Duration::from_secs(8))?;
    let _ = proxy_h.join();
    let _ = srv_h.join();
    let metrics = Monitor::anomaly_counts(&mon, lab.args.metrics);
    let events = m.stop()?;
    let note = format!("{failures} of {requests} client requests failed (reset by the proxy after its connect timeout)");
    Ok(Outcome { incident: Incident::SynBlackhole, expected, events, note, metrics })
}
