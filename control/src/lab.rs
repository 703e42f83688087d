//! `wirewatch lab`: the incidents of ../shared/INCIDENTS.md rebuilt in network namespaces with
//! real kernel TCP, real nftables/conntrack, and wirewatch watching live through XDP/AF_XDP on
//! span ports. Every namespace is torn down on exit, failure or Ctrl-C (unless --keep).
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use dataplane::packet::decode;
use dataplane_common::tcp_flags::{ACK, PSH, SYN};
use serde_json::Value;
use wirewatch_testkit::craft::TcpSegment;
use wirewatch_testkit::netns::{enter_current_thread, span, veth, Netns};
use wirewatch_testkit::traffic::{connect_from, pace, serve_once};

#[derive(Args, Debug, Clone)]
pub struct LabArgs {
    /// Which incident to rebuild.
    #[arg(long, value_enum, default_value_t = Incident::All)]
    pub incident: Incident,
    /// Leave the namespaces up afterwards for poking around (`ip netns list`; remove them
    /// with `ip -all netns delete` or by name).
    #[arg(long)]
    pub keep: bool,
    /// Run the same topology and traffic with the fault switched off (the control).
    #[arg(long)]
    pub control: bool,
    /// Also write every event as JSON lines here.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Serve each monitor's Prometheus metrics and API here, inside the monitor's namespace
    /// (`ip netns exec wwl-mon-… curl 127.0.0.1:9464/metrics` while it runs with --keep).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    pub metrics: SocketAddr,
    /// Also keep everything each monitor received (headers only) as DIR/INCIDENT.pcapng.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    /// Where the evidence files go (default: a fresh directory under /tmp).
    #[arg(long, value_name = "DIR")]
    pub evidence_dir: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incident {
    EcmpSplit,
    SynBlackhole,
    TupleCollision,
    ConntrackInvalid,
    KeepaliveRace,
    All,
}

impl Incident {
    fn name(self) -> &'static str {
        match self {
            Incident::EcmpSplit => "ecmp-split",
            Incident::SynBlackhole => "syn-blackhole",
            Incident::TupleCollision => "tuple-collision",
            Incident::ConntrackInvalid => "conntrack-invalid",
            Incident::KeepaliveRace => "keepalive-race",
            Incident::All => "all",
        }
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Relaxed);
}

fn interrupted() -> Result<()> {
    if INTERRUPTED.load(Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// The live monitor: `wirewatch run` in the monitor namespace, its JSON events collected and
/// printed as they arrive.
struct Monitor {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    log: Arc<Mutex<String>>,
}

impl Monitor {
    fn start(
        ns: &Netns,
        ifaces: &[&str],
        evidence_dir: &Path,
        tag: &'static str,
        events_file: Option<PathBuf>,
        record: Option<PathBuf>,
        metrics: SocketAddr,
    ) -> Result<Self> {
        let exe = std::env::current_exe().context("locating the wirewatch binary")?;
        let mut cmd = ns.command(exe.to_str().context("non-UTF-8 path to wirewatch")?);
        cmd.arg("run");
        for i in ifaces {
            cmd.args(["--iface", i]);
        }
        cmd.args(["--events", "-", "--evidence-dir"])
            .arg(evidence_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.arg("--metrics").arg(metrics.to_string());
        if let Some(dir) = record {
            std::fs::create_dir_all(&dir)?;
            cmd.arg("--record").arg(dir.join(format!("{tag}.pcapng")));
        }
        let mut child = cmd.spawn().context("starting the monitor")?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().context("monitor stdout")?;
        let ev = events.clone();
        let reader = std::thread::spawn(move || {
            let mut file = events_file
                .and_then(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).ok());
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if let Some(f) = file.as_mut() {
                        let mut v2 = v.clone();
                        v2["incident"] = Value::from(tag);
                        let _ = writeln!(f, "{v2}");
                    }
                    print_live(tag, &v);
                    ev.lock().unwrap().push(v);
                }
            }
        });
        let mut stderr = child.stderr.take().context("monitor stderr")?;
        let l = log.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            l.lock().unwrap().push_str(&s);
        });
        // Wait for the attach message (or an early exit).
        let t0 = Instant::now();
        loop {
            if log.lock().unwrap().contains("XDP attached")
                || t0.elapsed() > Duration::from_secs(10)
            {
                break;
            }
            if let Some(status) = child.try_wait()? {
                std::thread::sleep(Duration::from_millis(100));
                bail!("the monitor exited ({status}): {}", log.lock().unwrap().trim());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The attach message comes before the last socket is bound; give it a moment.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Self { child, events, reader: Some(reader), log })
    }

    fn kinds(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| e["kind"].as_str().map(String::from))
            .collect()
    }

    /// Waits until every kind in `want` was reported, or `timeout`.
    fn wait_for(&self, want: &[&str], timeout: Duration) -> Result<bool> {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            interrupted()?;
            let k = self.kinds();
            if want.iter().all(|w| k.iter().any(|x| x == w)) {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(false)
    }

    /// The monitor's anomaly counters as Prometheus exposes them (`kind` → count).
    fn anomaly_counts(ns: &str, addr: SocketAddr) -> Vec<(String, u64)> {
        // The monitor exports its counters every 500 ms: let the last detections reach them.
        std::thread::sleep(Duration::from_millis(1200));
        let ns = ns.to_string();
        std::thread::spawn(move || -> Option<Vec<(String, u64)>> {
            enter_current_thread(&ns).ok()?;
            let mut s = std::net::TcpStream::connect(addr).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            write!(s, "GET /metrics HTTP/1.0\r\n\r\n").ok()?;
            let mut body = String::new();
            s.read_to_string(&mut body).ok()?;
            Some(
                body.lines()
                    .filter_map(|l| l.strip_prefix("wirewatch_anomalies_total{kind=\""))
                    .filter_map(|l| {
                        let (k, rest) = l.split_once('"')?;
                        Some((k.to_string(), rest.rsplit(' ').next()?.parse().ok()?))
                    })
                    .collect(),
            )
        })
        .join()
        .ok()
        .flatten()
        .unwrap_or_default()
    }

    fn stop(mut self) -> Result<Vec<Value>> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait()?;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        if !status.success() {
            bail!("the monitor failed ({status}): {}", self.log.lock().unwrap().trim());
        }
        Ok(std::mem::take(&mut *self.events.lock().unwrap()))
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn print_live(tag: &str, e: &Value) {
    let f = &e["flow"];
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "  [{tag}] {:<24} {}:{} → {}:{}  ({})\n      {}",
        e["kind"].as_str().unwrap_or("?"),
        f["src"].as_str().unwrap_or("?"),
        f["sport"],
        f["dst"].as_str().unwrap_or("?"),
        f["dport"],
        e["vantage"].as_str().unwrap_or("?"),
        e["explanation"].as_str().unwrap_or("")
    );
    if let Some(p) = e["evidence"]["path"].as_str() {
        let _ = writeln!(out, "      evidence: {p} (packet {})", e["evidence"]["packets"][0]);
    }
}

/// What one incident run showed.
pub struct Outcome {
    pub incident: Incident,
    pub expected: Vec<&'static str>,
    pub events: Vec<Value>,
    pub note: String,
    /// `wirewatch_anomalies_total` by kind, scraped from the monitor before it stopped.
    pub metrics: Vec<(String, u64)>,
}

impl Outcome {
    fn fired(&self, k: &str) -> bool {
        self.events.iter().any(|e| e["kind"] == k)
    }
    fn metric(&self, k: &str) -> u64 {
        self.metrics.iter().find(|(n, _)| n == k).map(|(_, c)| *c).unwrap_or(0)
    }
    /// The control must report none of the incident's kinds; the fault run all of them.
    pub fn passed(&self, control: bool) -> bool {
        if control {
            self.expected.iter().all(|k| !self.fired(k))
        } else {
            self.expected.iter().all(|k| self.fired(k))
        }
    }
}

struct Lab<'a> {
    args: &'a LabArgs,
    evidence: PathBuf,
    spaces: Vec<Netns>,
}

impl Lab<'_> {
    fn ns(&mut self, short: &str) -> Result<String> {
        let name = format!("wwl-{short}");
        let mut ns = Netns::create(&name).with_context(|| format!("creating namespace {name}"))?;
        if self.args.keep {
            ns.keep();
        }
        self.spaces.push(ns);
        Ok(name)
    }
    fn get(&self, name: &str) -> &Netns {
        self.spaces.iter().find(|n| n.name == name).expect("namespace created by this lab")
    }
    fn run(&self, ns: &str, cmd: &str) -> Result<String> {
        self.get(ns).run(cmd).map_err(Into::into)
    }
    fn link(&self, a: &str, ia: &str, b: &str, ib: &str) -> Result<()> {
        veth(self.get(a), ia, self.get(b), ib)?;
        // Wire-sized segments, as on a real link.
        self.run(a, &format!("ethtool -K {ia} tso off gso off gro off"))?;
        self.run(b, &format!("ethtool -K {ib} tso off gso off gro off"))?;
        Ok(())
    }
    /// A span port: `dev` in `ns` mirrored (both directions) into `mon` as `mon_if`.
    fn span(&self, ns: &str, dev: &str, mirror: &str, mon: &str, mon_if: &str) -> Result<()> {
        veth(self.get(ns), mirror, self.get(mon), mon_if)?;
        self.run(ns, &format!("ethtool -K {mirror} tso off gso off"))?;
        span(self.get(ns), dev, mirror)?;
        Ok(())
    }
    fn monitor(&self, mon: &str, ifaces: &[&str], tag: &'static str) -> Result<Monitor> {
        Monitor::start(
            self.get(mon),
            ifaces,
            &self.evidence,
            tag,
            self.args.events.clone(),
            self.args.record.clone(),
            self.args.metrics,
        )
    }
}

#[expect(clippy::needless_pass_by_value, reason = "the command owns its parsed arguments")]
pub fn lab(args: LabArgs) -> Result<()> {
    // Safety: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the lab creates network namespaces and attaches XDP: run it as root (sudo)");
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    let evidence = match &args.evidence_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("wirewatch-lab-{}", std::process::id())),
    };
    std::fs::create_dir_all(&evidence)?;
    let which: Vec<Incident> = match args.incident {
        Incident::All => vec![
            Incident::ConntrackInvalid,
            Incident::KeepaliveRace,
            Incident::SynBlackhole,
            Incident::EcmpSplit,
            Incident::TupleCollision,
        ],
        i => vec![i],
    };
    println!(
        "wirewatch lab: {} incident(s){}; evidence in {}\n",
        which.len(),
        if args.control { " with the fault switched OFF (control)" } else { "" },
        evidence.display()
    );
    let mut outcomes = Vec::new();
    for inc in which {
        interrupted()?;
        let mut lab = Lab { args: &args, evidence: evidence.clone(), spaces: Vec::new() };
        println!("── {} ──", inc.name());
        let r = match inc {
            Incident::ConntrackInvalid => conntrack_invalid(&mut lab),
            Incident::KeepaliveRace => keepalive_race(&mut lab),
            Incident::SynBlackhole => syn_blackhole(&mut lab),
            Incident::EcmpSplit => ecmp_split(&mut lab),
            Incident::TupleCollision => tuple_collision(&mut lab),
            Incident::All => unreachable!(),
        };
        let o = r.with_context(|| format!("incident {}", inc.name()))?;
        println!("   {}", o.note);
        let counts: Vec<String> =
            o.expected.iter().map(|k| format!("{k}={}", o.metric(k))).collect();
        println!("   metrics: wirewatch_anomalies_total {}\n", counts.join(" "));
        outcomes.push(o);
        drop(lab); // tears the namespaces down
    }
    println!(
        "{:<20} {:<50} result",
        "incident",
        if args.control { "kinds that must stay silent" } else { "expected kinds" }
    );
    let mut all_ok = true;
    for o in &outcomes {
        let ok = o.passed(args.control);
        all_ok &= ok;
        // Fault run: ✓ fired, ✗ missed. Control: · silent, ! fired (a false alarm).
        let mark = |k: &str| match (args.control, o.fired(k)) {
            (false, true) => "✓",
            (false, false) => "✗",
            (true, false) => "·",
            (true, true) => "!",
        };
        let kinds: Vec<String> = o.expected.iter().map(|k| format!("{k}{}", mark(k))).collect();
        let verdict = match (args.control, ok) {
            (false, true) => "diagnosed",
            (false, false) => "MISSED",
            (true, true) => "quiet",
            (true, false) => "FALSE ALARM",
        };
        println!("{:<20} {:<50} {verdict}", o.incident.name(), kinds.join(" "));
    }
    if !all_ok {
        bail!("not every incident came out as expected");
    }
    Ok(())
}

/// Sends one crafted Ethernet frame out of `dev` from inside `ns` (AF_PACKET).
fn send_frame(ns: &str, dev: &str, frame: &[u8]) -> Result<()> {
    let ns = ns.to_string();
    let dev = dev.to_string();
    let frame = frame.to_vec();
    std::thread::spawn(move || -> Result<()> {
        enter_current_thread(&ns)?;
        let s = PacketSocket::open(&dev)?;
        s.send(&frame)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("frame sender panicked"))?
}

/// A raw AF_PACKET socket bound to one interface.
struct PacketSocket {
    fd: i32,
}

impl PacketSocket {
    fn open(dev: &str) -> Result<Self> {
        let c = std::ffi::CString::new(dev)?;
        // SAFETY: plain syscalls with valid arguments.
        unsafe {
            let ifindex = libc::if_nametoindex(c.as_ptr()) as i32;
            if ifindex == 0 {
                bail!("no interface {dev}");
            }
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                (libc::ETH_P_ALL as u16).to_be() as i32,
            );
            if fd < 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            sll.sll_ifindex = ifindex;
            if libc::bind(
                fd,
                (&raw const sll).cast::<libc::sockaddr>(),
                size_of::<libc::sockaddr_ll>() as u32,
            ) != 0
            {
                libc::close(fd);
                bail!("binding AF_PACKET to {dev}: {}", std::io::Error::last_os_error());
            }
            let tv = libc::timeval { tv_sec: 0, tv_usec: 200_000 };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast::<libc::c_void>(),
                size_of::<libc::timeval>() as u32,
            );
            Ok(Self { fd })
        }
    }
    fn send(&self, frame: &[u8]) -> Result<()> {
        // SAFETY: valid fd and buffer.
        let n =
            unsafe { libc::send(self.fd, frame.as_ptr().cast::<libc::c_void>(), frame.len(), 0) };
        if n < 0 {
            bail!("sending a crafted frame: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
    fn recv(&self, buf: &mut [u8]) -> Option<usize> {
        // SAFETY: valid fd and buffer.
        let n =
            unsafe { libc::recv(self.fd, buf.as_mut_ptr().cast::<libc::c_void>(), buf.len(), 0) };
        (n > 0).then_some(n as usize)
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: our fd.
        unsafe { libc::close(self.fd) };
    }
}

/// Incident D: a late segment outside the window is INVALID for conntrack, skips NAT, and the
/// NAT host's own stack resets the connection; the container keeps sending.
fn conntrack_invalid(lab: &mut Lab<'_>) -> Result<Outcome> {
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
    let upload = serve_once(&srv, server, None, |mut s| {
        let mut buf = vec![0u8; 65536];
        let mut got = 0usize;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n;
        }
        got
    })?;
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
                        let mut g = TcpSegment::new(p.src, p.sport, p.dst, p.dport);
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

/// keepalive-race: the client reuses an idle keep-alive connection just as the server's idle
/// timeout closes it.
fn keepalive_race(lab: &mut Lab<'_>) -> Result<Outcome> {
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

/// Incident B: a full proxy's SYNs to the server die silently in a firewall for a fraction of
/// connections (a set of black-holed tuples, so retransmitted SYNs die too).
fn syn_blackhole(lab: &mut Lab<'_>) -> Result<Outcome> {
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
                        let _ = wirewatch_testkit::traffic::abort_on_close(&c); // RST to the client
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

/// Incident A: a router forwards most of a flow to backend 1 but sprays some mid-flow segments
/// to backend 2 (nftables numgen + fwmark + policy route), which answers with RST.
fn ecmp_split(lab: &mut Lab<'_>) -> Result<Outcome> {
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
    lab.run(&router, "tc qdisc add dev to-b2 clsact")?;
    for dir in ["ingress", "egress"] {
        lab.run(&router, &format!("tc filter add dev to-b2 {dir} protocol all u32 match u32 0 0 action mirred egress mirror dev span-b1"))?;
    }
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
        let mut got = 0usize;
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n;
        }
        got
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

/// Incident C: the app talks to the real server directly from local port 61902, and a second
/// connection reaches the same server through a separate full-NAT namespace (DNAT from the VIP,
/// SNAT to the app's address and that same port, as LVS full-NAT with TOA did): two
/// connections on one 4-tuple at the server.
fn tuple_collision(lab: &mut Lab<'_>) -> Result<Outcome> {
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
    if lab.args.control {
        // The control: the same VIP, translated to a source port of its own.
        lab.run(&lvs, "nft add table ip fullnat")?;
        lab.run(&lvs, "nft add chain ip fullnat pre { type nat hook prerouting priority -100 ; }")?;
        lab.run(
            &lvs,
            "nft add chain ip fullnat post { type nat hook postrouting priority 100 ; }",
        )?;
        lab.run(
            &lvs,
            "nft add rule ip fullnat pre ip daddr 10.85.9.9 tcp dport 3306 dnat to 10.85.0.2:3269",
        )?;
        lab.run(&lvs, "nft add rule ip fullnat post ip daddr 10.85.0.2 tcp dport 3269 snat to 10.85.3.1:40000")?;
    } else {
        // Full NAT: VIP:3306 → real server :3269, source rewritten to the app's own address and
        // the port its direct connection uses.
        lab.run(&lvs, "nft add table ip fullnat")?;
        lab.run(&lvs, "nft add chain ip fullnat pre { type nat hook prerouting priority -100 ; }")?;
        lab.run(
            &lvs,
            "nft add chain ip fullnat post { type nat hook postrouting priority 100 ; }",
        )?;
        lab.run(
            &lvs,
            "nft add rule ip fullnat pre ip daddr 10.85.9.9 tcp dport 3306 dnat to 10.85.0.2:3269",
        )?;
        lab.run(&lvs, "nft add rule ip fullnat post ip daddr 10.85.0.2 tcp dport 3269 snat to 10.85.1.2:61902")?;
    }
    // The sensor sees both of the server's links.
    lab.span(&db, "direct", "span-db", &mon, "server")?;
    lab.run(&db, "tc qdisc add dev via-lvs clsact")?;
    for dir in ["ingress", "egress"] {
        lab.run(&db, &format!("tc filter add dev via-lvs {dir} protocol all u32 match u32 0 0 action mirred egress mirror dev span-db"))?;
    }
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
    let direct = wirewatch_testkit::traffic::connect_bound(
        &app,
        "10.85.1.2:61902".parse()?,
        "10.85.0.2:3269".parse()?,
    )
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
