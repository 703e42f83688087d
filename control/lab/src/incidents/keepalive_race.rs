//! keepalive-race: the client reuses an idle keep-alive connection just as the server's idle
//! timeout closes it.
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use wirewatch_testkit::traffic::{connect_from, serve_once};

use crate::harness::{Incident, Lab, Monitor, Outcome};

pub(crate) fn run(lab: &mut Lab<'_>) -> Result<Outcome> {
    let (cli, srv, mon) = (lab.ns("client-k")?, lab.ns("server-k")?, lab.ns("mon-k")?);
    lab.link(&cli, "eth0", &srv, "eth0")?;
    lab.run(&cli, "ip addr add 10.82.0.1/24 dev eth0")?;
    lab.run(&srv, "ip addr add 10.82.0.2/24 dev eth0")?;
    lab.span(&srv, "eth0", "span0", &mon, "tap0")?;
    let m = lab.monitor(&mon, &["tap0"], "keepalive-race")?;
    let control = lab.args.control;
    let server: SocketAddr = "10.82.0.2:8080".parse()?;
    // Server: answers one request, keeps the connection idle for 1 s, then closes it
    // (idle timeout). In the control the client closes first, as a well-configured pool does.
    let srv_h = serve_once(&srv, server, None, move |mut s| {
        let mut req = [0u8; 64];
        let _ = s.read(&mut req);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        std::thread::sleep(Duration::from_secs(1));
        drop(s); // FIN: idle timeout
        std::thread::sleep(Duration::from_millis(500));
    })?;
    let cli_h = connect_from(&cli, server, move |s| -> std::io::Result<()> {
        let mut s = s?;
        s.write_all(b"GET /a HTTP/1.1\r\nhost: lab\r\n\r\n")?;
        let mut resp = [0u8; 64];
        let _ = s.read(&mut resp)?;
        if control {
            s.shutdown(std::net::Shutdown::Both)?;
            return Ok(());
        }
        // The pool hands the idle connection out again just after the server closed it.
        std::thread::sleep(Duration::from_millis(1100));
        let _ = s.write_all(b"GET /b HTTP/1.1\r\nhost: lab\r\n\r\n");
        std::thread::sleep(Duration::from_millis(200));
        Ok(())
    });
    let expected = vec!["request_after_fin"];
    m.wait_for(&expected, Duration::from_secs(4))?;
    let _ = cli_h.join();
    let _ = srv_h.join();
    let metrics = Monitor::anomaly_counts(&mon, lab.args.metrics);
    let events = m.stop()?;
    let note = if control {
        "control run: the client closed its idle connection first".to_string()
    } else {
        "the client reused its idle connection 1.1 s after the request; the server's idle timeout is 1 s".to_string()
    };
    Ok(Outcome { incident: Incident::KeepaliveRace, expected, events, note, metrics })
}
