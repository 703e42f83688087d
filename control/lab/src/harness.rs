//! The lab's harness: the command line, the live monitor (`wirewatch run` as a child in the
//! monitor's namespace, its events and counters collected), the namespaces of one incident and
//! the verdict table.
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
use serde_json::Value;
use wirewatch_testkit::netns::{enter_current_thread, Netns};
use wirewatch_testkit::topology::Topology;

use crate::incidents;

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
    pub(crate) fn name(self) -> &'static str {
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

pub(crate) fn interrupted() -> Result<()> {
    if INTERRUPTED.load(Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// The live monitor: `wirewatch run` in the monitor namespace, its JSON events collected and
/// printed as they arrive.
pub(crate) struct Monitor {
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
    pub(crate) fn wait_for(&self, want: &[&str], timeout: Duration) -> Result<bool> {
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
    pub(crate) fn anomaly_counts(ns: &str, addr: SocketAddr) -> Vec<(String, u64)> {
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

    pub(crate) fn stop(mut self) -> Result<Vec<Value>> {
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
pub(crate) struct Outcome {
    pub(crate) incident: Incident,
    pub(crate) expected: Vec<&'static str>,
    pub(crate) events: Vec<Value>,
    pub(crate) note: String,
    /// `wirewatch_anomalies_total` by kind, scraped from the monitor before it stopped.
    pub(crate) metrics: Vec<(String, u64)>,
}

impl Outcome {
    fn fired(&self, k: &str) -> bool {
        self.events.iter().any(|e| e["kind"] == k)
    }
    fn metric(&self, k: &str) -> u64 {
        self.metrics.iter().find(|(n, _)| n == k).map(|(_, c)| *c).unwrap_or(0)
    }
    /// The control must report none of the incident's kinds; the fault run all of them.
    pub(crate) fn passed(&self, control: bool) -> bool {
        if control {
            self.expected.iter().all(|k| !self.fired(k))
        } else {
            self.expected.iter().all(|k| self.fired(k))
        }
    }
}

pub(crate) struct Lab<'a> {
    pub(crate) args: &'a LabArgs,
    evidence: PathBuf,
    /// Namespaces are named `wwl-SHORT` and play the role of their own name.
    topology: Topology,
}

impl Lab<'_> {
    pub(crate) fn ns(&mut self, short: &str) -> Result<String> {
        let name = format!("wwl-{short}");
        self.topology
            .namespace(&name, &name)
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(name)
    }
    pub(crate) fn run(&self, ns: &str, cmd: &str) -> Result<String> {
        self.topology.run(ns, cmd).map_err(Into::into)
    }
    pub(crate) fn link(&self, a: &str, ia: &str, b: &str, ib: &str) -> Result<()> {
        self.topology.link((a, ia), (b, ib)).map_err(Into::into)
    }
    /// A span port: `dev` in `ns` mirrored (both directions) into `mon` as `mon_if`.
    pub(crate) fn span(
        &self,
        ns: &str,
        dev: &str,
        mirror: &str,
        mon: &str,
        mon_if: &str,
    ) -> Result<()> {
        self.topology.mirror((ns, dev), mirror, (mon, mon_if)).map_err(Into::into)
    }
    /// `dev` in `ns` mirrored onto the span port `mirror` too (two links into one tap).
    pub(crate) fn also_span(&self, ns: &str, dev: &str, mirror: &str) -> Result<()> {
        self.topology.also_mirror((ns, dev), mirror).map_err(Into::into)
    }
    pub(crate) fn monitor(&self, mon: &str, ifaces: &[&str], tag: &'static str) -> Result<Monitor> {
        Monitor::start(
            &self.topology[mon],
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
        let mut topology = Topology::new();
        if args.keep {
            topology.keep();
        }
        let mut lab = Lab { args: &args, evidence: evidence.clone(), topology };
        println!("── {} ──", inc.name());
        let r = match inc {
            Incident::ConntrackInvalid => incidents::conntrack_invalid::run(&mut lab),
            Incident::KeepaliveRace => incidents::keepalive_race::run(&mut lab),
            Incident::SynBlackhole => incidents::syn_blackhole::run(&mut lab),
            Incident::EcmpSplit => incidents::ecmp_split::run(&mut lab),
            Incident::TupleCollision => incidents::tuple_collision::run(&mut lab),
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
    // The incidents drawn: an index of every detection, a page per evidence file beside it.
    let events: Vec<Value> = outcomes.iter().flat_map(|o| o.events.iter().cloned()).collect();
    let report = dataplane::report::write_report(&evidence, &events, 0)?;
    println!("report: {}\n", report.display());
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
