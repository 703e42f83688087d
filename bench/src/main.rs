//! `wirewatch-bench`: the four benchmarks of bench/RESULTS.md, each against a baseline measured
//! in the same run on the same data. It prints the table and rewrites the one in RESULTS.md.
//!
//! Run it with `sudo bash scripts/bench.sh` (installs the baselines, builds, runs everything).
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use dataplane::{
    engine::{Engine, EngineConfig},
    packet::decode,
};

mod bpf;
use bench::gen;

#[derive(Parser)]
#[command(about = "wirewatch benchmarks: engine replay, XDP program cost, live path, memory — each against a baseline in the same run")]
struct Args {
    /// Flows in the generated capture (the full model is 1,000,000)
    #[arg(long, default_value_t = 100_000)]
    flows: u32,
    /// Packets in the generated capture, about (the full model is 10,000,000)
    #[arg(long, default_value_t = 1_000_000)]
    packets: u64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Scratch directory for the capture and the baselines' output
    #[arg(long, default_value = "/tmp/wirewatch-bench")]
    workdir: PathBuf,
    /// The wirewatch binary for the live benchmark
    #[arg(long, default_value = "target/release/wirewatch")]
    wirewatch: PathBuf,
    /// The results file whose table is rewritten (between its markers)
    #[arg(long, default_value = "bench/RESULTS.md")]
    results: PathBuf,
    /// Seconds of generated traffic per live run
    #[arg(long, default_value_t = 8.0)]
    live_secs: f64,
    /// Repetitions per frame for the XDP program cost
    #[arg(long, default_value_t = 10_000_000)]
    xdp_repeat: u32,
    /// Run only these benchmarks (comma-separated: engine, baselines, xdp, live, memory);
    /// RESULTS.md is rewritten only when all of them ran
    #[arg(long, value_delimiter = ',', value_name = "NAME")]
    only: Vec<String>,
}

impl Args {
    fn runs(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }
}

struct Row {
    bench: String,
    ours: String,
    baseline: String,
    ratio: String,
    target: String,
    met: Option<bool>,
}

fn row(rows: &mut Vec<Row>, bench: &str, ours: String, baseline: String, ratio: String, target: &str, met: Option<bool>) {
    println!("{bench:<38} {ours:<26} {baseline:<34} {ratio:<10} {target}  {}", met.map_or("-", |m| if m { "met" } else { "MISSED" }));
    rows.push(Row { bench: bench.into(), ours, baseline, ratio, target: target.into(), met });
}

fn engine_config() -> EngineConfig {
    EngineConfig { flow_capacity: 1 << 21, ..Default::default() }
}

/// The whole engine (decode, dedup, flow table, TCP tracking, detectors, evidence history) over
/// frames `idx` of the capture.
fn replay(cap: &gen::Capture, idx: &[u32], worker: usize) -> (Duration, u64) {
    let mut e = Engine::new(engine_config(), worker);
    let t = Instant::now();
    for &i in idx {
        let (data, orig, ts) = cap.frame(i as usize);
        e.process_frame(data, orig, ts, 0, 0);
    }
    e.finish();
    let took = t.elapsed();
    let events = e.drain_events().len() as u64;
    (took, events)
}

fn mpps(packets: usize, d: Duration) -> f64 {
    packets as f64 / d.as_secs_f64() / 1e6
}

/// Wall time of a command, minus its start-up cost measured on a one-flow capture.
fn timed(mut cmd: Command) -> Result<Duration> {
    let t = Instant::now();
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or(""));
    }
    Ok(t.elapsed())
}

fn baseline(name: &str, file: &Path, tiny: &Path, work: &Path) -> Result<Duration> {
    let make = |f: &Path| -> Command {
        match name {
            "suricata" => {
                let log = work.join("suricata-log");
                let _ = std::fs::remove_dir_all(&log);
                std::fs::create_dir_all(&log).unwrap();
                let mut c = Command::new("suricata");
                c.args(["--runmode", "single", "-k", "none", "-S", "/etc/suricata/rules/stream-events.rules", "-l"]).arg(&log).arg("-r").arg(f);
                c
            }
            "tcptrace" => {
                let mut c = Command::new("tcptrace");
                c.args(["-n", "-l", "-r"]).arg(f);
                c
            }
            _ => {
                let mut c = Command::new("tshark");
                c.arg("-r").arg(f).args(["-Y", "tcp.analysis.flags", "-T", "fields", "-e", "frame.number"]);
                c
            }
        }
    };
    let startup = timed(make(tiny))?;
    let full = timed(make(file))?;
    let work = full.saturating_sub(startup);
    if work < full / 5 {
        bail!("the capture is too small: {:.2} s of {:.2} s was start-up; use more --packets", startup.as_secs_f64(), full.as_secs_f64());
    }
    Ok(work)
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 4096
}

/// Bytes per tracked flow: RSS growth while one engine learns `n` new flows (one SYN each).
fn memory(n: u32) -> (f64, usize) {
    let mut e = Engine::new(EngineConfig { flow_capacity: n as usize + 1024, history_bytes: 1 << 20, ..Default::default() }, 0);
    let mut seg = dataplane::craft::TcpSegment::new("10.0.0.1".parse().unwrap(), 1, "10.200.0.1".parse().unwrap(), 80);
    seg.flags = dataplane_common::tcp_flags::SYN;
    let mut f = seg.frame();
    // Warm the engine (and its history) before measuring.
    e.process_frame(&f, f.len() as u32, 1, 0, 0);
    let before = rss_bytes();
    for i in 0..n {
        // Vary the client address and port in place: a new flow per frame, no allocation here.
        f[26..30].copy_from_slice(&(0x0a00_0000u32 | (i >> 8)).to_be_bytes());
        f[34..36].copy_from_slice(&((i & 0xff) as u16 + 1024).to_be_bytes());
        e.process_frame(&f, f.len() as u32, 2 + i as u64 * 1000, 0, 0);
    }
    let after = rss_bytes();
    let active = e.stats().flows_active as usize;
    ((after.saturating_sub(before)) as f64 / active.max(1) as f64, active)
}

fn fixture_frames() -> Vec<(&'static str, Vec<u8>)> {
    use dataplane::craft::TcpSegment;
    let v4 = TcpSegment::new("10.1.0.1".parse().unwrap(), 40000, "10.1.0.2".parse().unwrap(), 80);
    let mut v6 = TcpSegment::new("fd00::1".parse().unwrap(), 40000, "fd00::2".parse().unwrap(), 443);
    v6.timestamp = Some((1, 2));
    let mut vlan = v4.clone();
    vlan.vlans = vec![100, 200];
    vlan.payload_len = 1400;
    let mut udp = v4.frame();
    udp[23] = 17; // IPv4 protocol: UDP
    vec![("IPv4 TCP", v4.frame()), ("IPv6 TCP + timestamps", v6.frame()), ("QinQ IPv4 TCP 1400 B", vlan.frame()), ("IPv4 UDP (non-TCP)", udp)]
}

fn is_root() -> bool {
    // Safety: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Process CPU (user + system) of a finished child, from wait4's rusage.
fn wait_cpu(child: &mut std::process::Child) -> Result<(std::process::ExitStatus, Duration)> {
    let mut status = 0;
    // Safety: rusage is plain data; the pid is our child's.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    if r < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    use std::os::unix::process::ExitStatusExt;
    Ok((std::process::ExitStatus::from_raw(status), tv(ru.ru_utime) + tv(ru.ru_stime)))
}

/// System-wide softirq time so far (/proc/stat, USER_HZ ticks).
fn softirq() -> Duration {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = s.lines().next().and_then(|l| l.split_whitespace().nth(7)).and_then(|v| v.parse().ok()).unwrap_or(0);
    // Safety: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

const REPEAT: u32 = 65536;

struct LiveResult {
    /// Frames that reached the monitor interface (the rest died in veth's 256-frame ring).
    arrived: u64,
    sent: u64,
    received: u64,
    dropped: u64,
    cpu_per_pkt_ns: f64,
}

/// Pushes the capture's frames into `gen0` for `secs` with live-frame BPF_PROG_TEST_RUN from
/// inside the namespace; returns frames sent.
fn generate_live(ns: &str, cap: &gen::Capture, secs: f64) -> Result<u64> {
    let idx: u32 = dataplane::netns::sh(&format!("ip netns exec {ns} cat /sys/class/net/gen0/ifindex"))?.trim().parse()?;
    let ns = ns.to_string();
    let frames: Vec<Vec<u8>> = (0..cap.frames.len().min(200_000)).map(|i| cap.frame(i).0.to_vec()).collect();
    std::thread::scope(|s| {
        s.spawn(|| -> Result<u64> {
            dataplane::netns::enter_current_thread(&ns)?;
            let tx = bpf::constant_program(bpf::XDP_TX, "ww_bench_tx")?;
            let end = Instant::now() + Duration::from_secs_f64(secs);
            let mut sent = 0u64;
            'outer: loop {
                for f in &frames {
                    // Each call costs ~25 ms of set-up and one frame per call tops out near 60 kpps, so
                    // every frame goes out REPEAT times (the engine sees the copies as span
                    // duplicates: the capture path's full cost, de-duplication included).
                    bpf::test_run(&tx, f, REPEAT, idx, true)?;
                    sent += REPEAT as u64;
                    if Instant::now() >= end {
                        break 'outer;
                    }
                }
            }
            println!("  generator: {sent} frames in {:.2} s", (Instant::now() + Duration::from_secs_f64(secs) - end).as_secs_f64());
            Ok(sent)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("generator thread panicked"))?
    })
}

fn live(tool: &str, args: &Args, cap: &gen::Capture) -> Result<LiveResult> {
    let ns = dataplane::netns::Netns::create(&format!("wwbench{}", std::process::id() % 100000))?;
    ns.run("ip link add gen0 type veth peer name mon0")?;
    ns.run("ip link set gen0 up")?;
    ns.run("ip link set mon0 up")?;
    let work = args.workdir.join(format!("live-{tool}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let summary = work.join("summary.json");
    let mut child = if tool == "wirewatch" {
        let mut c = ns.command(&args.wirewatch.canonicalize().context("the wirewatch binary (build it with cargo build --release)")?.to_string_lossy());
        c.args(["run", "--iface", "mon0", "--xdp-mode", "native", "--metrics", "127.0.0.1:0", "--duration"])
            .arg(format!("{}", args.live_secs + 4.0))
            .arg("--evidence-dir")
            .arg(work.join("evidence"))
            .arg("--summary-json")
            .arg(&summary);
        c.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?
    } else {
        // Without an XDP program the veth peer needs NAPI (GRO on) to take XDP_TX frames.
        ns.run("ethtool -K mon0 gro on")?;
        let mut c = ns.command("tcpdump");
        c.args(["-i", "mon0", "-s", "128", "-B", "65536", "-w", "/dev/null"]);
        c.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?
    };
    std::thread::sleep(Duration::from_millis(2500));
    let rx = || -> u64 { ns.run("cat /sys/class/net/mon0/statistics/rx_packets").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0) };
    let rx0 = rx();
    let soft0 = softirq();
    let sent = generate_live(&ns.name, cap, args.live_secs)?;
    std::thread::sleep(Duration::from_millis(500));
    let soft = softirq().saturating_sub(soft0);
    let arrived = rx().saturating_sub(rx0);
    let (received, dropped, cpu) = if tool == "wirewatch" {
        let (status, cpu) = wait_cpu(&mut child)?;
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        if !status.success() {
            bail!("wirewatch run failed: {err}");
        }
        let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary)?)?;
        let q = &s["queues"];
        let sum = |k: &str| q.as_array().map_or(0, |a| a.iter().map(|x| x[k].as_u64().unwrap_or(0)).sum::<u64>());
        (sum("packets"), sum("rx_dropped") + sum("rx_ring_full"), cpu)
    } else {
        // Safety: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let (_, cpu) = wait_cpu(&mut child)?;
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        let num = |what: &str| err.lines().find(|l| l.contains(what)).and_then(|l| l.split_whitespace().next()).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        (num("packets captured"), num("dropped by kernel"), cpu)
    };
    let cpu_total = cpu + soft;
    Ok(LiveResult { arrived, sent, received, dropped, cpu_per_pkt_ns: cpu_total.as_nanos() as f64 / received.max(1) as f64 })
}

fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.workdir)?;
    let mut rows = Vec::new();
    let pcap = args.workdir.join("capture.pcap");
    let tiny = args.workdir.join("tiny.pcap");
    println!("generating {} flows / ~{} packets (seed {}) …", args.flows, args.packets, args.seed);
    let model = gen::Model { flows: args.flows, packets: args.packets, seed: args.seed, duration_ns: 10_000_000_000 };
    let cap = gen::generate(&model, &pcap, 128)?;
    gen::generate(&gen::Model { flows: 1, packets: 10, seed: 1, duration_ns: 1_000_000 }, &tiny, 128)?;
    let n = cap.frames.len();
    let file_mb = std::fs::metadata(&pcap)?.len() as f64 / 1e6;
    println!("capture: {n} packets, {} flows, {file_mb:.0} MB at {}", cap.flows, pcap.display());

    // 1. Engine replay.
    let all: Vec<u32> = (0..n as u32).collect();
    let (d1, events) = replay(&cap, &all, 0);
    let one = mpps(n, d1);
    let mut shards = vec![Vec::new(), Vec::new()];
    for i in 0..n as u32 {
        let (data, orig, ts) = cap.frame(i as usize);
        let w = decode(data, orig, ts, 0).map(|p| dataplane::pipeline::shard_of(&p, 2)).unwrap_or(0);
        shards[w].push(i);
    }
    let t = Instant::now();
    let cap_ref = &cap;
    std::thread::scope(|s| {
        let hs: Vec<_> = shards.iter().enumerate().map(|(w, idx)| s.spawn(move || replay(cap_ref, idx, w))).collect();
        for h in hs {
            let _ = h.join();
        }
    });
    let two = mpps(n, t.elapsed());
    row(&mut rows, "engine replay, 1 worker", format!("{one:.2} Mpps ({events} events)"), "—".into(), "—".into(), "≥ 10 Mpps", Some(one >= 10.0));
    row(&mut rows, "engine replay, 2 workers", format!("{two:.2} Mpps"), format!("1 worker {one:.2} Mpps"), format!("{:.2}×", two / one), "≥ 1.8×", Some(two / one >= 1.8));
    for (tool, target) in [("suricata", 10.0), ("tshark", 100.0), ("tcptrace", 0.0)] {
        if !args.runs("baselines") {
            break;
        }
        match baseline(tool, &pcap, &tiny, &args.workdir) {
            Ok(d) => {
                let theirs = mpps(n, d);
                let ratio = one / theirs;
                let tgt = if target > 0.0 { format!("≥ {target:.0}×") } else { "—".into() };
                row(&mut rows, &format!("engine vs {tool}"), format!("{one:.2} Mpps"), format!("{tool} {:.3} Mpps ({:.1} s)", theirs, d.as_secs_f64()), format!("{ratio:.1}×"), &tgt, (target > 0.0).then_some(ratio >= target));
            }
            Err(e) => row(&mut rows, &format!("engine vs {tool}"), format!("{one:.2} Mpps"), format!("not run: {e}"), "—".into(), "—", None),
        }
    }

    // 2. XDP program cost.
    if !args.runs("xdp") {
    } else if is_root() {
        let mut prog = dataplane::loader::XdpProgram::load(dataplane_common::XdpConfig { snaplen: 128, non_tcp_drop: 0 })?;
        let bare = bpf::constant_program(bpf::XDP_PASS, "ww_bench_pass")?;
        for (name, frame) in fixture_frames() {
            let fd = prog.program().fd()?.as_fd().try_clone_to_owned()?;
            let ours = bpf::test_run(&fd, &frame, args.xdp_repeat, 1, false)?;
            let base = bpf::test_run(&bare, &frame, args.xdp_repeat, 1, false)?;
            let ratio = ours.ns_per_run as f64 / base.ns_per_run.max(1) as f64;
            row(&mut rows, &format!("XDP program, {name}"), format!("{} ns/pkt (verdict {})", ours.ns_per_run, ours.retval), format!("bare XDP_PASS {} ns", base.ns_per_run), format!("{ratio:.2}×"), "≤ 1.5×", Some(ratio <= 1.5));
        }
    } else {
        row(&mut rows, "XDP program", "not run: needs root".into(), "—".into(), "—".into(), "≤ 1.5×", None);
    }

    // 3. Live path.
    if !args.runs("live") {
    } else if is_root() {
        let ww = live("wirewatch", &args, &cap);
        let td = live("tcpdump", &args, &cap);
        match (ww, td) {
            (Ok(w), Ok(t)) => {
                let secs = args.live_secs;
                let ratio = w.cpu_per_pkt_ns / t.cpu_per_pkt_ns.max(1e-9);
                let wloss = w.arrived.saturating_sub(w.received);
                row(
                    &mut rows,
                    "live path: CPU per packet",
                    format!("{:.0} ns; {:.2} Mpps offered, {:.2} Mpps reached mon0, {} of them lost ({} XSK drops)", w.cpu_per_pkt_ns, w.sent as f64 / secs / 1e6, w.arrived as f64 / secs / 1e6, wloss, w.dropped),
                    format!("tcpdump {:.0} ns; {:.2} Mpps reached mon0, {} lost ({} kernel drops)", t.cpu_per_pkt_ns, t.arrived as f64 / secs / 1e6, t.arrived.saturating_sub(t.received), t.dropped),
                    format!("{ratio:.2}×"),
                    "≤ 0.33×, 0 lost",
                    Some(ratio <= 1.0 / 3.0 && wloss == 0),
                );
            }
            (w, t) => {
                let e = w.err().or(t.err()).map(|e| e.to_string()).unwrap_or_default();
                row(&mut rows, "live path", format!("not run: {e}"), "—".into(), "—".into(), "—", None);
            }
        }
    } else {
        row(&mut rows, "live path", "not run: needs root".into(), "—".into(), "—".into(), "—", None);
    }

    // 4. Memory.
    if args.runs("memory") {
        let (per_flow, flows) = memory(1_000_000);
        row(&mut rows, "memory per tracked flow", format!("{per_flow:.0} B ({flows} flows)"), "FlowRecord 128 B".into(), format!("{:.2}×", per_flow / 128.0), "≤ 160 B", Some(per_flow <= 160.0));
    }

    if !args.only.is_empty() {
        println!("\n(--only: {} left unchanged)", args.results.display());
        return Ok(());
    }
    write_results(&args, &rows, n, file_mb)
}

fn write_results(args: &Args, rows: &[Row], packets: usize, file_mb: f64) -> Result<()> {
    let commit = Command::new("git").args(["rev-parse", "--short", "HEAD"]).output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())).unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut t = String::new();
    let _ = writeln!(t, "Machine: {cpu}, {cores} cores; kernel {kernel}; commit {commit}; capture {} flows, {packets} packets, {file_mb:.0} MB (seed {}).\n", args.flows, args.seed);
    let _ = writeln!(t, "| benchmark | wirewatch | baseline (same run) | ratio | target | |");
    let _ = writeln!(t, "|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(t, "| {} | {} | {} | {} | {} | {} |", r.bench, r.ours, r.baseline, r.ratio, r.target, r.met.map_or("—", |m| if m { "met" } else { "**missed**" }));
    }
    let text = std::fs::read_to_string(&args.results).unwrap_or_default();
    let (begin, end) = ("<!-- results:begin -->", "<!-- results:end -->");
    let new = match (text.find(begin), text.find(end)) {
        (Some(b), Some(e)) if b < e => format!("{}{begin}\n{t}{}", &text[..b], &text[e..]),
        _ => format!("{text}\n{begin}\n{t}{end}\n"),
    };
    std::fs::write(&args.results, new)?;
    println!("\nwrote the table to {}", args.results.display());
    Ok(())
}

use std::os::fd::AsFd as _;
