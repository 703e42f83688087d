//! Incident C: the app talks to the real server directly from local port 61902, and a second
//! connection reaches the same server through a separate full-NAT namespace (DNAT from the VIP,
//! SNAT to the app's address and that same port, as LVS full-NAT with TOA did): two
//! connections on one 4-tuple at the server.
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use wirewatch_testkit::netns::enter_current_thread;
use wirewatch_testkit::traffic::connect_bound;

use crate::harness::{Incident, Lab, Monitor, Outcome};

pub(crate) fn run(lab: &mut Lab<'_>) -> Result<Outcome> {
    let (app, r1, lvs, db, mon) =
        (lab.ns("app")?, lab.ns("router-c")?, lab.ns("lvs")?, lab.ns("mysql")?, lab.ns("mon-c")?);
    lab.link(&app, "eth0", &r1, "to-app")?;
    lab.link(&r1, "to-db", &db, "direct")?;
    lab.link(&r1, "to-lvs", &lvs, "front")?;
    lab.link(&lvs, "back", &db, "via-lvs")?;
    lab.run(&app, "ip addr add 10.85.1.2/24 dev eth0")?;
    lab.run(&app, "ip route add default via 10.85.1.1")?;
    lab.run(&r1, "ip addr add 10.85.1.1/24 dev to-app")?;
    lab.run(&r1, "ip addr add 10.85.0.1/24 dev to-db")?;
    lab.run(&r1, "ip addr add 10.85.2.1/24 dev to-lvs")?;
    lab.run(&r1, "ip route add 10.85.9.9/32 via 10.85.2.2")?;
    lab.run(&r1, "sysctl -qw net.ipv4.ip_forward=1")?;
    lab.run(&lvs, "ip addr add 10.85.2.2/24 dev front")?;
    lab.run(&lvs, "ip addr add 10.85.9.9/32 dev lo")?;
    lab.run(&lvs, "ip addr add 10.85.3.1/24 dev back")?;
    lab.run(&lvs, "ip route add 10.85.1.0/24 via 10.85.2.1")?;
    // The LVS reaches the real server over its own link.
    lab.run(&lvs, "ip route add 10.85.0.2/32 via 10.85.3.2")?;
    lab.run(&lvs, "sysctl -qw net.ipv4.ip_forward=1")?;
    lab.run(&db, "ip addr add 10.85.0.2/24 dev direct")?;
    lab.run(&db, "ip addr add 10.85.3.2/24 dev via-lvs")?;
    lab.run(&db, "ip route add 10.85.1.0/24 via 10.85.0.1")?;
    for k in ["all", "default", "direct", "via-lvs"] {
        lab.run(&db, &format!("sysctl -qw net.ipv4.conf.{k}.rp_filter=0"))?;
    }
    // Full NAT: VIP:3306 → real server :3269, source rewritten to the app's own address and
    // the port its direct connection uses. The control: the same VIP, translated to a source
    // port of its own.
    let source = if lab.args.control { "10.85.3.1:40000" } else { "10.85.1.2:61902" };
    lab.run(&lvs, "nft add table ip fullnat")?;
    lab.run(&lvs, "nft add chain ip fullnat pre { type nat hook prerouting priority -100 ; }")?;
    lab.run(&lvs, "nft add chain ip fullnat post { type nat hook postrouting priority 100 ; }")?;
    lab.run(
        &lvs,
        "nft add rule ip fullnat pre ip daddr 10.85.9.9 tcp dport 3306 dnat to 10.85.0.2:3269",
    )?;
    lab.run(
        &lvs,
        &format!("nft add rule ip fullnat post ip daddr 10.85.0.2 tcp dport 3269 snat to {source}"),
    )?;
    // The sensor sees both of the server's links.
    lab.span(&db, "direct", "span-db", &mon, "server")?;
    lab.also_span(&db, "via-lvs", "span-db")?;
    let m = lab.monitor(&mon, &["server"], "tuple-collision")?;

    // The server answers queries on every connection.
    let db_ns = db.clone();
    let srv = std::thread::spawn(move || -> Result<()> {
        enter_current_thread(&db_ns)?;
        let l = std::net::TcpListener::bind("0.0.0.0:3269")?;
        l.set_nonblocking(true)?;
        let t0 = Instant::now();
        let mut conns = Vec::new();
        while t0.elapsed() < Duration::from_secs(6) {
            if let Ok((c, _)) = l.accept() {
                c.set_nonblocking(false)?;
                c.set_read_timeout(Some(Duration::from_secs(5)))?;
                conns.push(std::thread::spawn(move || {
                    let mut c = c;
                    let mut q = [0u8; 64];
                    while let Ok(n) = c.read(&mut q) {
                        if n == 0 || c.write_all(b"OK").is_err() {
                            break;
                        }
                    }
                }));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    });
    std::thread::sleep(Duration::from_millis(200));
    let direct = connect_bound(&app, "10.85.1.2:61902".parse()?, "10.85.0.2:3269".parse()?)
        .context("the app's direct connection")?;
    let mut d = direct;
    for _ in 0..3 {
        d.write_all(b"SELECT 1")?;
        let mut r = [0u8; 2];
        d.read_exact(&mut r)?;
    }
    // Now a connection through the VIP: translated onto the same 4-tuple at the server.
    let app_ns = app.clone();
    let via = std::thread::spawn(move || -> bool {
        if enter_current_thread(&app_ns).is_err() {
            return false;
        }
        match std::net::TcpStream::connect_timeout(
            &"10.85.9.9:3306".parse().unwrap(),
            Duration::from_secs(2),
        ) {
            Ok(mut s) => {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = s.write_all(b"SELECT 2");
                let mut r = [0u8; 2];
                s.read_exact(&mut r).is_ok()
            }
            Err(_) => false,
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    // The app keeps querying on its direct connection.
    let direct_ok = d.write_all(b"SELECT 3").is_ok() && {
        let mut r = [0u8; 2];
        d.read_exact(&mut r).is_ok()
    };
    let via_ok = via.join().unwrap_or(false);
    let expected = vec!["tuple_reuse"];
    m.wait_for(&expected, Duration::from_secs(3))?;
    let metrics = Monitor::anomaly_counts(&mon, lab.args.metrics);
    let events = m.stop()?;
    drop(d);
    let _ = srv.join();
    let note = format!(
        "direct connection after the collision: {}; connection through the VIP: {}",
        if direct_ok { "answered" } else { "broken" },
        if via_ok { "answered" } else { "failed" }
    );
    Ok(Outcome { incident: Incident::TupleCollision, expected, events, note, metrics })
}
