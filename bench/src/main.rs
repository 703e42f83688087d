//! `wirewatch-bench`: the benchmarks of bench/RESULTS.md, each against a baseline measured in
//! the same run on the same data. It prints the table and rewrites the one in RESULTS.md.
//!
//! Run it with `sudo bash scripts/bench.sh` (installs the baselines, builds, runs everything).
use std::fmt::Write as _;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use dataplane::engine::{Engine, EngineConfig};
use dataplane::packet::decode;
use wirewatch_testkit::topology::Topology;

mod bpf;
mod flood;
mod pcap;
mod usage;
use bench::gen;
use usage::{thread_cpu, wait_usage, Usage};

/// Every benchmark `--only` accepts.
const BENCHES: [&str; 6] = ["engine", "baselines", "xdp", "live", "memory", "flood"];

#[derive(Parser)]
#[command(
    about = "wirewatch benchmarks: engine replay (CPU time), analyze against Suricata/tshark/tcptrace (CPU seconds), XDP program cost, live path, memory per flow, SYN-flood memory — each against a baseline in the same run"
)]
struct Args {
    /// Flows in the generated capture (the full model is 1,000,000)
    #[arg(long, default_value_t = 100_000)]
    flows: u32,
    /// Packets in the generated capture, about (the full model is 10,000,000)
    #[arg(long, default_value_t = 1_000_000)]
    packets: u64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Engine replays per worker count (alternating 1 and 2 workers); medians are reported
    #[arg(long, default_value_t = 11)]
    replays: usize,
    /// Runs of each tool on each file for the baseline rows, in rounds (every tool once per
    /// round, so a slow minute of the machine falls on all of them); medians are reported
    #[arg(long, default_value_t = 3, value_parser = odd_runs)]
    baseline_runs: u32,
    /// Scratch directory for the captures and the tools' output
    #[arg(long, default_value = "/tmp/wirewatch-bench")]
    workdir: PathBuf,
    /// The wirewatch binary (analyze rows, live row, SYN-flood row)
    #[arg(long, default_value = "target/release/wirewatch")]
    wirewatch: PathBuf,
    /// The results file whose table is rewritten (between its markers)
    #[arg(long, default_value = "bench/RESULTS.md")]
    results: PathBuf,
    /// Seconds of generated traffic per live run
    #[arg(long, default_value_t = 8.0)]
    live_secs: f64,
    /// Repetitions per test run of an XDP program (the kernel's BPF_PROG_TEST_RUN)
    #[arg(long, default_value_t = 2_000_000)]
    xdp_repeat: u32,
    /// Rounds of the XDP cost rows per frame (the program, then the bare XDP_PASS, in each
    /// round); the medians and the median of the rounds' ratios are reported
    #[arg(long, default_value_t = 5, value_parser = odd_runs)]
    xdp_runs: u32,
    /// Spoofed SYNs in the SYN-flood capture
    #[arg(long, default_value_t = 2_000_000)]
    flood_syns: u64,
    /// SYNs per second in the SYN-flood capture
    #[arg(long, default_value_t = 200_000)]
    flood_rate: u64,
    /// --max-flows for the SYN-flood run; the memory budget is this × 160 B + 128 MiB
    #[arg(long, default_value_t = 1_000_000)]
    flood_max_flows: u64,
    /// Run only these benchmarks (comma-separated: engine, baselines, xdp, live, memory, flood);
    /// RESULTS.md is rewritten only when all of them ran
    #[arg(long, value_delimiter = ',', value_name = "NAME")]
    only: Vec<String>,
    /// Internal: the memory row's measurement, run in a fresh process of its own (prints the
    /// bytes per flow and the flows)
    #[arg(long, hide = true, value_name = "FLOWS")]
    memory_child: Option<u32>,
    /// Internal: the memory row's child grows the flow index as `analyze` does (by default it
    /// allocates it whole, as `run` does)
    #[arg(long, hide = true)]
    memory_index_grows: bool,
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

fn row(
    rows: &mut Vec<Row>,
    bench: &str,
    ours: String,
    baseline: String,
    ratio: String,
    target: &str,
    met: Option<bool>,
) {
    println!(
        "{bench:<38} {ours:<26} {baseline:<34} {ratio:<10} {target}  {}",
        met.map_or("-", |m| if m { "met" } else { "MISSED" })
    );
    rows.push(Row { bench: bench.into(), ours, baseline, ratio, target: target.into(), met });
}

fn engine_config() -> EngineConfig {
    EngineConfig { flow_capacity: 1 << 21, ..Default::default() }
}

/// Frames a replay hands the engine at a time (a receive ring's batch).
const REPLAY_BATCH: usize = 256;

/// One replay's cost, measured on the replaying thread.
#[derive(Clone, Copy)]
struct Replay {
    cpu: Duration,
    wall: Duration,
    events: u64,
}

/// The whole engine (decode, dedup, flow table, TCP tracking, detectors, evidence history) over
/// frames `idx` of the capture, on the calling thread, as worker `worker` of `workers` (which
/// share the evidence history's budget, as in `run` and `analyze`). CPU time is this thread's
/// own (RUSAGE_THREAD), so page faults on the engine's tables count and other threads do not.
fn replay(cap: &gen::Capture, idx: &[u32], worker: usize, workers: usize) -> Replay {
    let mut e = Engine::new(engine_config().per_worker(workers), worker);
    // In batches, as a worker takes them from its ring (the flow look-ups are batched).
    let mut batch = Vec::with_capacity(REPLAY_BATCH);
    let (cpu0, t) = (thread_cpu(), Instant::now());
    for chunk in idx.chunks(REPLAY_BATCH) {
        batch.clear();
        batch.extend(chunk.iter().map(|&i| cap.raw_frame(i as usize)));
        e.process_frames(&batch, 0);
    }
    e.finish();
    // Inside the timing: the events' words are written when they are drained.
    let events = e.drain_events().len() as u64;
    let (cpu, wall) = (thread_cpu().saturating_sub(cpu0), t.elapsed());
    Replay { cpu, wall, events }
}

/// `--xdp-runs` rounds of `ours` and the bare program on `frame`: each one's median
/// time, and the median of the rounds' ratios (a slow moment of the machine falls on both
/// runs of a round, not on one side of the comparison).
fn xdp_rounds(
    ours: &std::os::fd::OwnedFd,
    bare: &std::os::fd::OwnedFd,
    frame: &[u8],
    args: &Args,
) -> Result<(bpf::RunResult, bpf::RunResult, f64)> {
    let (mut a, mut b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let run = |p| bpf::test_run(p, frame, args.xdp_repeat, 1, false);
    for round in 0..args.xdp_runs {
        // Which one runs first alternates, so an order effect falls on both sides.
        let (o, x) = if round % 2 == 0 {
            let o = run(ours)?;
            (o, run(bare)?)
        } else {
            let x = run(bare)?;
            (run(ours)?, x)
        };
        ratios.push(f64::from(o.ns_per_run) / f64::from(x.ns_per_run.max(1)));
        a.push(o);
        b.push(x);
    }
    a.sort_by_key(|r| r.ns_per_run);
    b.sort_by_key(|r| r.ns_per_run);
    ratios.sort_by(f64::total_cmp);
    let mid = ratios.len() / 2;
    Ok((a[mid], b[mid], ratios[mid]))
}

/// `--baseline-runs`, `--xdp-runs`: an odd count from 1 to 21, so that a median is one of the runs.
fn odd_runs(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n % 2 == 1 && n <= 21 => Ok(n),
        _ => Err(format!("{s}: an odd number of runs from 1 to 21 (the median is the middle one)")),
    }
}

/// The median of `runs` by `key` (the upper middle one for an even count).
fn median<T: Copy>(mut runs: Vec<T>, key: impl Fn(&T) -> Duration) -> T {
    runs.sort_by_key(|r| key(r));
    runs[runs.len() / 2]
}

fn mpps(packets: usize, d: Duration) -> f64 {
    packets as f64 / d.as_secs_f64().max(1e-9) / 1e6
}

/// The tools compared in CPU seconds on the same pcap.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    Wirewatch,
    Suricata,
    Tshark,
    Tcptrace,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Wirewatch => "wirewatch",
            Tool::Suricata => "suricata",
            Tool::Tshark => "tshark",
            Tool::Tcptrace => "tcptrace",
        }
    }

    /// The command line, as bench/RESULTS.md quotes it.
    fn command(self, wirewatch: &Path, file: &Path, work: &Path) -> Result<Command> {
        Ok(match self {
            Tool::Wirewatch => {
                let mut c = Command::new(wirewatch);
                c.args(["analyze", "--workers", "1", "--format", "json"]).arg(file);
                c
            }
            Tool::Suricata => {
                let log = work.join("suricata-log");
                let _ = std::fs::remove_dir_all(&log);
                std::fs::create_dir_all(&log)
                    .with_context(|| format!("creating {}", log.display()))?;
                let mut c = Command::new("suricata");
                c.args([
                    "--runmode",
                    "single",
                    "-k",
                    "none",
                    "-S",
                    "/etc/suricata/rules/stream-events.rules",
                    "-r",
                ])
                .arg(file)
                .arg("-l")
                .arg(&log);
                c
            }
            Tool::Tshark => {
                let mut c = Command::new("tshark");
                c.arg("-r").arg(file).args([
                    "-Y",
                    "tcp.analysis.flags",
                    "-T",
                    "fields",
                    "-e",
                    "frame.number",
                ]);
                c
            }
            Tool::Tcptrace => {
                let mut c = Command::new("tcptrace");
                c.args(["-n", "-l", "-r"]).arg(file);
                c
            }
        })
    }
}

/// CPU seconds (user + system, from wait4) of one run of `tool` over `file`. Dirty pages are
/// written back first, so that no earlier run's output (tcptrace writes ~500 MB) is being
/// flushed while this one is measured.
fn tool_cpu(tool: Tool, args: &Args, file: &Path) -> Result<Duration> {
    // Safety: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let cmd = tool.command(&args.wirewatch, file, &args.workdir)?;
    let out = args.workdir.join(format!("{}.out", tool.name()));
    let err = args.workdir.join(format!("{}.err", tool.name()));
    Ok(usage::run_measured(cmd, &out, &err)?.cpu)
}

/// A tool's start-up CPU: the least of three runs on the one-flow capture.
fn startup_cpu(tool: Tool, args: &Args, tiny: &Path) -> Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..3 {
        best = best.min(tool_cpu(tool, args, tiny)?);
    }
    Ok(best)
}

/// CPU seconds of `tool` over `file` less its start-up CPU; refuses a capture so small that
/// start-up dominates.
fn work_cpu(tool: Tool, args: &Args, file: &Path, startup: Duration) -> Result<Duration> {
    let total = tool_cpu(tool, args, file)?;
    let work = total.saturating_sub(startup);
    if work < total / 5 {
        bail!(
            "the capture is too small: {:.2} of {:.2} CPU-s was start-up; use more --packets",
            startup.as_secs_f64(),
            total.as_secs_f64()
        );
    }
    Ok(work)
}

/// One analyze-vs-tool row: both tools' work CPU on `file`, the ratio theirs / ours.
fn versus(
    rows: &mut Vec<Row>,
    label: &str,
    ours: &Result<Duration>,
    tool: Tool,
    theirs: Result<Duration>,
    target: f64,
    runs: u32,
) {
    let tgt = if target > 0.0 { format!("≥ {target:.0}× fewer CPU-s") } else { "—".into() };
    match (ours, theirs) {
        (Ok(o), Ok(t)) => {
            let ratio = t.as_secs_f64() / o.as_secs_f64().max(1e-9);
            row(
                rows,
                label,
                format!("{:.2} CPU-s", o.as_secs_f64()),
                format!("{} {:.2} CPU-s", tool.name(), t.as_secs_f64()),
                format!("{ratio:.1}× (medians of {runs} runs)"),
                &tgt,
                (target > 0.0).then_some(ratio >= target),
            );
        }
        (o, t) => {
            let e = o
                .as_ref()
                .err()
                .map(|e| format!("wirewatch: {e:#}"))
                .or(t.err().map(|e| format!("{}: {e:#}", tool.name())))
                .unwrap_or_default();
            row(rows, label, "not run".into(), format!("not run: {e}"), "—".into(), &tgt, None);
        }
    }
}

/// Process CPU (user + system) of a finished child, from wait4's rusage.
fn wait_cpu(child: &mut std::process::Child) -> Result<(std::process::ExitStatus, Duration)> {
    wait_usage(child).map(|(s, u)| (s, u.cpu))
}

struct FloodResult {
    usage: Usage,
    frames: u64,
    events: u64,
    /// The real connection's zero_window event is in the events file.
    found: bool,
    /// The same run with `--handshake-timeout 300`: no syn_unanswered event can fire inside
    /// the capture, so this is the flow state's own peak, without the events held for output.
    quiet: Result<Usage>,
}

/// One `wirewatch analyze --workers 1 --max-flows N [extra…] FILE` on the flood capture.
fn flood_analyze(args: &Args, file: &Path, extra: &[&std::ffi::OsStr], tag: &str) -> Result<Usage> {
    let mut cmd = Command::new(&args.wirewatch);
    cmd.args(["analyze", "--workers", "1", "--max-flows"])
        .arg(args.flood_max_flows.to_string())
        .args(extra)
        .arg(file);
    usage::run_measured(
        cmd,
        &args.workdir.join(format!("{tag}.out")),
        &args.workdir.join(format!("{tag}.err")),
    )
}

/// The SYN-flood run: `wirewatch analyze --workers 1 --max-flows N --events OUT FILE` on the
/// flood capture (bench/src/flood.rs), its peak RSS from wait4, and the real flow's event.
fn syn_flood(args: &Args) -> Result<FloodResult> {
    let file = args.workdir.join("synflood.pcap");
    let model = flood::FloodModel { syns: args.flood_syns, rate: args.flood_rate, seed: args.seed };
    println!(
        "generating the SYN flood: {} SYNs at {}/s (seed {}) …",
        model.syns, model.rate, model.seed
    );
    let cap = flood::generate(&model, &file)?;
    println!(
        "flood capture: {} frames over {:.1} s at {}",
        cap.frames,
        cap.duration_ns as f64 / 1e9,
        file.display()
    );
    let events_path = args.workdir.join("synflood-events.jsonl");
    // With evidence kept, so that the run holds the default history (64 MiB) the issue's
    // budget counts: analyze keeps none without evidence.
    let evidence = args.workdir.join("synflood-evidence");
    let _ = std::fs::remove_dir_all(&evidence);
    let usage = flood_analyze(
        args,
        &file,
        &[
            "--events".as_ref(),
            events_path.as_os_str(),
            "--evidence-dir".as_ref(),
            evidence.as_os_str(),
        ],
        "synflood",
    )?;
    let mut events = 0u64;
    let mut found = false;
    let f = std::fs::File::open(&events_path)
        .with_context(|| format!("opening {}", events_path.display()))?;
    let (client, port) = (flood::REAL_CLIENT.to_string(), flood::REAL_CLIENT_PORT);
    for line in std::io::BufReader::with_capacity(1 << 20, f).lines() {
        let line = line?;
        events += 1;
        if found || !line.contains("\"zero_window\"") || !line.contains(&client) {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)?;
        let fl = &v["flow"];
        let ends = [
            (fl["src"].as_str(), fl["sport"].as_u64()),
            (fl["dst"].as_str(), fl["dport"].as_u64()),
        ];
        found = v["kind"] == "zero_window"
            && ends.contains(&(Some(client.as_str()), Some(u64::from(port))));
    }
    let _ = std::fs::remove_file(&events_path);
    let quiet = flood_analyze(
        args,
        &file,
        &[
            "--handshake-timeout".as_ref(),
            "300".as_ref(),
            "--evidence-dir".as_ref(),
            evidence.as_os_str(),
        ],
        "synflood-quiet",
    );
    let _ = std::fs::remove_dir_all(&evidence);
    // The flood capture is large and regenerated each run.
    let _ = std::fs::remove_file(&file);
    Ok(FloodResult { usage, frames: cap.frames, events, found, quiet })
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 4096
}

/// Bytes per tracked flow: RSS growth while one engine learns `n` new flows (one SYN each).
/// [`memory`] in a fresh process (this program, `--memory-child`): in the bench's own process
/// the engine reused pages that earlier rows had freed, and RSS grew by less than the flows
/// cost (137 B a flow after the other rows, 158 B alone, the same day).
fn memory_in_child(n: u32, index_grows: bool) -> Result<(f64, usize)> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["--memory-child", &n.to_string()]);
    if index_grows {
        cmd.arg("--memory-index-grows");
    }
    let out = cmd.stderr(Stdio::inherit()).output().context("running the memory measurement")?;
    anyhow::ensure!(out.status.success(), "the memory measurement failed ({})", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    let per_flow = it.next().and_then(|v| v.parse().ok());
    let flows = it.next().and_then(|v| v.parse().ok());
    per_flow.zip(flows).with_context(|| format!("the memory measurement printed {text:?}"))
}

fn memory(n: u32, index_grows: bool) -> (f64, usize) {
    let mut e = Engine::new(
        EngineConfig {
            flow_capacity: n as usize + 1024,
            history_bytes: 1 << 20,
            flow_index_grows: index_grows,
            ..Default::default()
        },
        0,
    );
    let mut seg = wirewatch_testkit::craft::TcpSegment::new(
        "10.0.0.1".parse().unwrap(),
        1,
        "10.200.0.1".parse().unwrap(),
        80,
    );
    seg.flags = dataplane_common::tcp_flags::SYN;
    let mut f = seg.frame();
    // Warm the engine before measuring, and fill its history once around: the history is a
    // fixed budget of its own (1 MiB here), whose pages the flows below would otherwise touch
    // for the first time. One flow's SYN, resent with a new IP ID each time (not a duplicate).
    let warm = (1 << 20) / dataplane::evidence::History::ENTRY_BYTES as u64 + 64;
    for j in 1..=warm {
        f[18..20].copy_from_slice(&(j as u16).to_be_bytes());
        e.process_frame(&f, f.len() as u32, j, 0, 0);
    }
    let before = rss_bytes();
    for i in 0..n {
        // Vary the client address and port in place: a new flow per frame, no allocation here.
        f[26..30].copy_from_slice(&(0x0a00_0000u32 | (i >> 8)).to_be_bytes());
        f[34..36].copy_from_slice(&((i & 0xff) as u16 + 1024).to_be_bytes());
        e.process_frame(&f, f.len() as u32, warm + 1 + i as u64 * 1000, 0, 0);
    }
    let after = rss_bytes();
    let active = e.stats().flows_active as usize;
    ((after.saturating_sub(before)) as f64 / active.max(1) as f64, active)
}

/// The XDP cost rows' frames, and whether the ≤ 1.5× target applies (plain frames; the
/// encapsulated rows are informational).
fn fixture_frames() -> Vec<(&'static str, Vec<u8>, bool)> {
    use wirewatch_testkit::craft::TcpSegment;
    use wirewatch_testkit::encap::{wrap, Encap, Outer};
    let v4 = TcpSegment::new("10.1.0.1".parse().unwrap(), 40000, "10.1.0.2".parse().unwrap(), 80);
    let mut v6 =
        TcpSegment::new("fd00::1".parse().unwrap(), 40000, "fd00::2".parse().unwrap(), 443);
    v6.timestamp = Some((1, 2));
    let mut vlan = v4.clone();
    vlan.vlans = vec![100, 200];
    vlan.payload_len = 1400;
    let mut udp = v4.frame();
    udp[23] = 17; // IPv4 protocol: UDP
    let mut frames = vec![
        ("IPv4 TCP", v4.frame(), true),
        ("IPv6 TCP + timestamps", v6.frame(), true),
        ("QinQ IPv4 TCP 1400 B", vlan.frame(), true),
        ("IPv4 UDP (non-TCP)", udp, true),
    ];
    // One row per encapsulation: the IPv4 TCP frame as a remote mirror delivers it.
    let outer4 = Outer::new("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
    let outer6 = Outer::new("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap());
    for (name, encap) in [
        ("in ERSPAN I", Encap::ErspanI),
        ("in ERSPAN II", Encap::ErspanII { session: 1 }),
        ("in ERSPAN III", Encap::ErspanIII { session: 1, platform: true }),
        ("in GRE (key, seq)", Encap::Gre { checksum: false, key: Some(1), seq: Some(1) }),
        ("in GRE TEB", Encap::GreEthernet { key: None }),
        ("in VXLAN", Encap::Vxlan { vni: 1 }),
        ("in GENEVE (2 option words)", Encap::Geneve { vni: 1, option_words: 2 }),
        ("behind 2 MPLS labels", Encap::Mpls(vec![16, 17])),
    ] {
        frames.push((name, wrap(&v4.frame(), &encap, &outer4), false));
    }
    let vxlan6 = wrap(&v4.frame(), &Encap::Vxlan { vni: 1 }, &outer6);
    frames.push(("in VXLAN over IPv6", vxlan6, false));
    frames
}

/// Host mode's programs on the fixture frames: the XDP program (copy the headers into the
/// ring, pass the frame) against a bare XDP_PASS and against span mode's socket-bound path
/// measured in the same run, and the TC egress program against a bare classifier.
/// Informational rows, no target. Host mode copies inside the program; span mode's copy into
/// the socket happens after its program returns (a test run without live frames never does
/// it), so the live-path rows are the fair comparison of the two.
fn host_rows(
    rows: &mut Vec<Row>,
    args: &Args,
    bare: &std::os::fd::OwnedFd,
    span_ns: &[(&str, u32)],
) -> Result<()> {
    use std::os::fd::AsFd as _;
    let mut prog = dataplane::loader::XdpProgram::load_host(
        dataplane_common::XdpConfig { snaplen: 128, ..Default::default() },
        None,
        dataplane::host::RING_BYTES,
    )?;
    let mut ring = prog.take_host_ring()?;
    let bare_tc = bpf::constant_classifier(bpf::TCX_NEXT, "ww_bench_tc")?;
    let ratio = |a: u32, b: u32| format!("{:.2}×", f64::from(a) / f64::from(b.max(1)));
    // One run each, as long as the program rows' rounds together.
    let repeat = args.xdp_repeat.saturating_mul(args.xdp_runs);
    for (name, frame, plain) in fixture_frames() {
        let fd = prog.program().fd()?.as_fd().try_clone_to_owned()?;
        let ours = drained(&mut ring, repeat, |n| bpf::test_run(&fd, &frame, n, 1, false))?;
        let base = bpf::test_run(bare, &frame, repeat, 1, false)?;
        row(
            rows,
            &format!("XDP host mode, {name}"),
            format!("{} ns/pkt (verdict {})", ours.ns_per_run, ours.retval),
            format!("bare XDP_PASS {} ns", base.ns_per_run),
            ratio(ours.ns_per_run, base.ns_per_run),
            "—",
            None,
        );
        if let Some((_, span)) = span_ns.iter().find(|(n, _)| *n == name) {
            row(
                rows,
                &format!("XDP host vs span mode, {name}"),
                format!("host {} ns/pkt", ours.ns_per_run),
                format!("span, socket bound {span} ns"),
                ratio(ours.ns_per_run, *span),
                "—",
                None,
            );
        }
        if plain {
            let fd = prog.egress().fd()?.as_fd().try_clone_to_owned()?;
            let ours = drained(&mut ring, repeat, |n| bpf::test_run_skb(&fd, &frame, n))?;
            let base = bpf::test_run_skb(&bare_tc, &frame, repeat)?;
            row(
                rows,
                &format!("TC egress host mode, {name}"),
                format!("{} ns/pkt (verdict {})", ours.ns_per_run, ours.retval as i32),
                format!("bare classifier {} ns", base.ns_per_run),
                ratio(ours.ns_per_run, base.ns_per_run),
                "—",
                None,
            );
        }
    }
    let full = prog.counters()?.get(dataplane_common::Outcome::HostRingFull);
    if full > 0 {
        println!(
            "host mode rows: {full} repetitions found the ring full (they measured the refusal)"
        );
    }
    Ok(())
}

/// `repeat` test runs of a host-mode program in chunks that fill at most half the ring, with
/// the ring drained between them: every repetition takes the copy path (a full ring would
/// measure the cheaper refusal). The kernel's average, weighted over the chunks.
fn drained(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    repeat: u32,
    mut run: impl FnMut(u32) -> std::io::Result<bpf::RunResult>,
) -> Result<bpf::RunResult> {
    // The largest record: the header, the large capacity and the kernel's 8-byte header.
    let largest =
        (dataplane_common::HOST_RECORD_HEADER_LEN + dataplane_common::HOST_SNAP_MAX + 8) as u32;
    let chunk = (dataplane::host::RING_BYTES / 2 / largest).max(1);
    let (mut left, mut total_ns, mut retval) = (repeat, 0u64, 0);
    while left > 0 {
        let n = left.min(chunk);
        let r = run(n)?;
        total_ns += u64::from(r.ns_per_run) * u64::from(n);
        retval = r.retval;
        left -= n;
        while ring.next().is_some() {}
    }
    Ok(bpf::RunResult { retval, ns_per_run: (total_ns / u64::from(repeat.max(1))) as u32 })
}

/// Binds an AF_XDP socket (on a veth in a namespace of its own) into queue 0's slot of
/// `prog`'s XSKMAP; the socket and the namespace live as long as the returned value.
fn bound_socket(
    prog: &mut dataplane::loader::XdpProgram,
) -> Result<(Topology, dataplane::xsk::XskQueue)> {
    let mut t = Topology::new();
    t.namespace("bx", &format!("wwbx{}", std::process::id() % 100000))?;
    t.veth(("bx", "bx0"), ("bx", "bx1"))?;
    let name = t["bx"].name.clone();
    let xsk = std::thread::spawn(move || -> Result<dataplane::xsk::XskQueue> {
        wirewatch_testkit::netns::enter_current_thread(&name)?;
        let opts = dataplane::xsk::XskOptions {
            ring_size: 64,
            zero_copy: dataplane::xsk::ZeroCopyPolicy::Off,
            ..Default::default()
        };
        Ok(dataplane::xsk::XskQueue::open("bx0", 0, &opts)?)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("socket thread panicked"))??;
    prog.bind_socket(0, &xsk.fd())?;
    Ok((t, xsk))
}

fn is_root() -> bool {
    // Safety: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// System-wide softirq time so far (/proc/stat, USER_HZ ticks).
fn softirq() -> Duration {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = s
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(7))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Safety: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

const REPEAT: u32 = 65536;

struct LiveResult {
    /// CPU per packet: the tool's own (user + system, start-up included) and the system's
    /// softirq time during the run (the receive path, wherever it ran).
    process_ns: f64,
    softirq_ns: f64,
    /// Frames that reached the monitor interface (the rest died in veth's 256-frame ring).
    arrived: u64,
    sent: u64,
    received: u64,
    dropped: u64,
    cpu_per_pkt_ns: f64,
    /// wirewatch only: frames lost in a named counter (its summary's `loss.lost_total`), and
    /// what reached mon0 but is neither processed nor in a named counter.
    named_lost: u64,
    unattributed: u64,
    /// mon0's own rx_dropped during the run (veth counts XDP_TX frames its ring refused there).
    iface_dropped: u64,
    /// Frames the XDP program passed by design (not TCP, malformed).
    not_for_us: u64,
}

/// The frames the live rows send: the capture file's first `LIVE_FRAMES` records, whole, as a
/// wire carries them (the engine replay's 128-byte cuts keep IP lengths that say more than
/// the frame holds: the XDP program would take them as malformed and pass them).
fn live_frames(pcap: &Path) -> Result<Vec<Vec<u8>>> {
    let mut r = dataplane::capture::CaptureReader::open(pcap)
        .with_context(|| format!("reading {}", pcap.display()))?;
    let mut frames = Vec::new();
    while frames.len() < LIVE_FRAMES {
        match r.next_frame()? {
            Some(f) => frames.push(f.data),
            None => break,
        }
    }
    anyhow::ensure!(!frames.is_empty(), "{} holds no frame", pcap.display());
    Ok(frames)
}

/// Records of the capture the live rows send (they cycle through them).
const LIVE_FRAMES: usize = 200_000;

/// Pushes `frames` into `gen0` for `secs` with live-frame BPF_PROG_TEST_RUN from inside the
/// namespace; returns frames sent.
fn generate_live(ns: &str, frames: &[Vec<u8>], secs: f64) -> Result<u64> {
    anyhow::ensure!(!frames.is_empty(), "no frames to send (the capture file could not be read)");
    let idx: u32 = wirewatch_testkit::netns::sh(&format!(
        "ip netns exec {ns} cat /sys/class/net/gen0/ifindex"
    ))?
    .trim()
    .parse()?;
    let ns = ns.to_string();
    std::thread::scope(|s| {
        s.spawn(|| -> Result<u64> {
            wirewatch_testkit::netns::enter_current_thread(&ns)?;
            let tx = bpf::constant_program(bpf::XDP_TX, "ww_bench_tx")?;
            let end = Instant::now() + Duration::from_secs_f64(secs);
            let mut sent = 0u64;
            'outer: loop {
                for f in frames {
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
            println!(
                "  generator: {sent} frames in {:.2} s",
                (Instant::now() + Duration::from_secs_f64(secs) - end).as_secs_f64()
            );
            Ok(sent)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("generator thread panicked"))?
    })
}

/// One live run of `tool`: `wirewatch` (span mode), `wirewatch-tap` (span mode on a dedicated
/// tap: `--non-tcp drop`, so the frames that are not TCP end in the XDP program instead of going
/// up mon0's stack), `wirewatch-host` (`run --host`: every frame also goes on to mon0's stack,
/// which drops it, as tcpdump's run lets it) or `tcpdump`.
fn live(tool: &str, args: &Args, frames: &[Vec<u8>]) -> Result<LiveResult> {
    let host = tool == "wirewatch-host";
    let mut t = Topology::new();
    t.namespace("bench", &format!("wwbench{}", std::process::id() % 100000))?;
    t.veth(("bench", "gen0"), ("bench", "mon0"))?;
    let ns = &t["bench"];
    let work = args.workdir.join(format!("live-{tool}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let summary = work.join("summary.json");
    let mut child = if tool.starts_with("wirewatch") {
        let mut c = ns.command(
            &args
                .wirewatch
                .canonicalize()
                .context("the wirewatch binary (build it with cargo build --release)")?
                .to_string_lossy(),
        );
        c.args([
            "run",
            "--iface",
            "mon0",
            "--xdp-mode",
            "native",
            "--metrics",
            "127.0.0.1:0",
            "--duration",
        ])
        .arg(format!("{}", args.live_secs + 4.0))
        .arg("--evidence-dir")
        .arg(work.join("evidence"))
        .arg("--summary-json")
        .arg(&summary);
        if host {
            c.arg("--host");
        }
        if tool == "wirewatch-tap" {
            c.args(["--non-tcp", "drop"]);
        }
        c.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?
    } else {
        // Without an XDP program the veth peer needs NAPI (GRO on) to take XDP_TX frames.
        ns.run("ethtool -K mon0 gro on")?;
        let mut c = ns.command("tcpdump");
        c.args(["-i", "mon0", "-s", "128", "-B", "65536", "-w", "/dev/null"]);
        c.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?
    };
    std::thread::sleep(Duration::from_millis(2500));
    let rx = || -> u64 {
        ns.run("cat /sys/class/net/mon0/statistics/rx_packets")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let rx0 = rx();
    let rx_dropped = || -> u64 {
        ns.run("cat /sys/class/net/mon0/statistics/rx_dropped")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let drop0 = rx_dropped();
    let soft0 = softirq();
    let sent = generate_live(&ns.name, frames, args.live_secs)?;
    std::thread::sleep(Duration::from_millis(500));
    let soft = softirq().saturating_sub(soft0);
    let arrived = rx().saturating_sub(rx0);
    let iface_dropped = rx_dropped().saturating_sub(drop0);
    let mut named_lost = 0;
    let mut not_for_us = 0;
    let (received, dropped, cpu) = if tool.starts_with("wirewatch") {
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
        let sum = |k: &str| {
            q.as_array().map_or(0, |a| a.iter().map(|x| x[k].as_u64().unwrap_or(0)).sum::<u64>())
        };
        let loss = &s["loss"];
        named_lost = loss["lost_total"].as_u64().unwrap_or(0);
        // Frames the program passed by design (not TCP, malformed, later fragments): the
        // capture model has a few, each sent many times.
        let handled: u64 = s["xdp"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|i| i[1].as_array().cloned().unwrap_or_default())
            .map(|o| o[1].as_u64().unwrap_or(0))
            .sum();
        not_for_us = handled.saturating_sub(
            loss["xdp_redirected"].as_u64().unwrap_or(0)
                + loss["xdp_no_socket"].as_u64().unwrap_or(0)
                + loss["xdp_redirect_failed"].as_u64().unwrap_or(0)
                + loss["xdp_truncate_failed"].as_u64().unwrap_or(0)
                + loss["host_copied"].as_u64().unwrap_or(0)
                + loss["host_ring_full"].as_u64().unwrap_or(0),
        );
        (
            loss["engine_received"].as_u64().unwrap_or(0),
            sum("rx_dropped") + sum("rx_ring_full"),
            cpu,
        )
    } else {
        // Safety: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let (_, cpu) = wait_cpu(&mut child)?;
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        let num = |what: &str| {
            err.lines()
                .find(|l| l.contains(what))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (num("packets captured"), num("dropped by kernel"), cpu)
    };
    let cpu_total = cpu + soft;
    let per = |d: Duration| d.as_nanos() as f64 / received.max(1) as f64;
    Ok(LiveResult {
        process_ns: per(cpu),
        softirq_ns: per(soft),
        arrived,
        sent,
        received,
        dropped,
        cpu_per_pkt_ns: cpu_total.as_nanos() as f64 / received.max(1) as f64,
        named_lost,
        unattributed: arrived.saturating_sub(received + named_lost + not_for_us),
        not_for_us,
        iface_dropped,
    })
}

/// A sink that drops every frame: the live path without the engine.
struct Discard {
    frames: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The worker thread's CPU when it finished (it runs `finish` on that thread).
    cpu: std::sync::Arc<std::sync::Mutex<Duration>>,
}

impl dataplane::worker::FrameSink for Discard {
    fn frame(&mut self, _: &dataplane::worker::RawFrame<'_>) {
        self.frames.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    fn frames(&mut self, fs: &[dataplane::worker::RawFrame<'_>]) {
        self.frames.fetch_add(fs.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
    fn finish(&mut self) {
        *self.cpu.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = thread_cpu();
    }
}

/// What AF_XDP in copy mode costs before any engine: wirewatch's XDP program (native, snap
/// length 128) and one socket on `mon0`, read by wirewatch's own worker loop (ring batches,
/// fill ring, coalescing sleeps, socket statistics) into a sink that drops every frame.
/// Returns (worker CPU, softirq) per frame the worker received.
fn live_xsk_floor(args: &Args, frames: &[Vec<u8>]) -> Result<(f64, f64, u64)> {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let mut t = Topology::new();
    t.namespace("bench", &format!("wwbench{}", std::process::id() % 100000))?;
    t.veth(("bench", "gen0"), ("bench", "mon0"))?;
    let ns = t["bench"].name.clone();
    let (received, cpu) = (Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(Duration::ZERO)));
    let stop = Arc::new(AtomicBool::new(false));
    let soft = std::thread::scope(|s| {
        s.spawn(|| -> Result<Duration> {
            wirewatch_testkit::netns::enter_current_thread(&ns)?;
            // Safety: a NUL-terminated name; the lookup uses this thread's namespace.
            let idx = unsafe { libc::if_nametoindex(c"mon0".as_ptr()) };
            anyhow::ensure!(idx != 0, "mon0 not found in the bench namespace");
            let mut prog = dataplane::loader::XdpProgram::load(dataplane_common::XdpConfig {
                snaplen: 128,
                ..Default::default()
            })?;
            prog.attach(idx, aya::programs::XdpMode::Driver).context("attaching to mon0")?;
            let opts = dataplane::xsk::XskOptions {
                ring_size: dataplane::xsk::AUTO_RING_MAX,
                meta_in_head: prog.meta_in_head(),
                ..Default::default()
            };
            let xsk = dataplane::xsk::XskQueue::open("mon0", 0, &opts)?;
            prog.bind_socket(0, &xsk.fd())?;
            let worker = dataplane::worker::Worker {
                xsk,
                vantage: 0,
                cpu: None,
                counters: Arc::default(),
                draining: Arc::new(AtomicUsize::new(1)),
            };
            let sink = Discard { frames: received.clone(), cpu: cpu.clone() };
            let handle = worker.spawn(sink, stop.clone())?;
            std::thread::sleep(Duration::from_millis(500));
            let soft0 = softirq();
            let sent = generate_live(&ns, frames, args.live_secs);
            std::thread::sleep(Duration::from_millis(500));
            let soft = softirq().saturating_sub(soft0);
            stop.store(true, Ordering::Relaxed);
            handle.join().map_err(|_| anyhow::anyhow!("the worker panicked"))?;
            sent?;
            Ok(soft)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the floor thread panicked"))?
    })?;
    let n = received.load(Ordering::Relaxed);
    let cpu = *cpu.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let per = |d: Duration| d.as_nanos() as f64 / n.max(1) as f64;
    println!("  AF_XDP floor: {n} frames received");
    Ok((per(cpu), per(soft), n))
}

/// The kernel's share of the live path: the same generated traffic into `mon0` with only a
/// bare XDP_DROP program there (the least any XDP tool costs on this veth: the ring between
/// the veth pair, NAPI, one program run a frame). Softirq time per frame that reached mon0.
fn live_floor(args: &Args, frames: &[Vec<u8>]) -> Result<f64> {
    let mut t = Topology::new();
    t.namespace("bench", &format!("wwbench{}", std::process::id() % 100000))?;
    t.veth(("bench", "gen0"), ("bench", "mon0"))?;
    let ns = &t["bench"];
    let name = ns.name.clone();
    let link = std::thread::scope(|s| {
        s.spawn(|| -> Result<std::os::fd::OwnedFd> {
            wirewatch_testkit::netns::enter_current_thread(&name)?;
            // Safety: a NUL-terminated name; the lookup uses this thread's namespace.
            let idx = unsafe { libc::if_nametoindex(c"mon0".as_ptr()) };
            anyhow::ensure!(idx != 0, "mon0 not found in the bench namespace");
            let drop = bpf::constant_program(bpf::XDP_DROP, "ww_bench_drop")?;
            bpf::attach_xdp(&drop, idx).context("attaching XDP_DROP to mon0")
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the attach thread panicked"))?
    })?;
    let rx = || -> u64 {
        ns.run("cat /sys/class/net/mon0/statistics/rx_packets")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let (rx0, soft0) = (rx(), softirq());
    let sent = generate_live(&ns.name, frames, args.live_secs)?;
    std::thread::sleep(Duration::from_millis(500));
    let soft = softirq().saturating_sub(soft0);
    let arrived = rx().saturating_sub(rx0);
    println!("  kernel floor: {sent} frames sent, {arrived} reached mon0");
    drop(link);
    Ok(soft.as_nanos() as f64 / arrived.max(1) as f64)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(n) = args.memory_child {
        let (per_flow, flows) = memory(n, args.memory_index_grows);
        println!("{per_flow} {flows}");
        return Ok(());
    }
    if let Some(bad) = args.only.iter().find(|o| !BENCHES.contains(&o.as_str())) {
        bail!("--only {bad}: unknown benchmark; choose from {}", BENCHES.join(", "));
    }
    std::fs::create_dir_all(&args.workdir)?;
    let mut rows = Vec::new();
    let pcap = args.workdir.join("capture.pcap");
    let snapped = args.workdir.join("capture-128.pcap");
    let tiny = args.workdir.join("tiny.pcap");
    // The capture model (bench/src/gen.rs) feeds the engine, baselines and live rows.
    let cap = if ["engine", "baselines", "live"].iter().any(|b| args.runs(b)) {
        println!(
            "generating {} flows / ~{} packets (seed {}) …",
            args.flows, args.packets, args.seed
        );
        let model = gen::Model {
            flows: args.flows,
            packets: args.packets,
            seed: args.seed,
            duration_ns: 10_000_000_000,
        };
        let cap = gen::generate(&model, &pcap, 128)?;
        gen::generate(
            &gen::Model { flows: 1, packets: 10, seed: 1, duration_ns: 1_000_000 },
            &tiny,
            128,
        )?;
        println!(
            "capture: {} packets, {} flows, {:.0} MB at {}",
            cap.frames.len(),
            cap.flows,
            std::fs::metadata(&pcap)?.len() as f64 / 1e6,
            pcap.display()
        );
        cap
    } else {
        gen::Capture { data: Vec::new(), frames: Vec::new(), flows: 0 }
    };
    let n = cap.frames.len();
    let file_mb = std::fs::metadata(&pcap).map_or(0.0, |m| m.len() as f64 / 1e6);

    // 1. Engine replay, in the replaying threads' own CPU time. One-worker and two-worker runs
    // alternate, so a neighbour's load drifting over the run hits both alike; the ratio is the
    // median of the pairs' ratios.
    if args.runs("engine") {
        let all: Vec<u32> = (0..n as u32).collect();
        let mut shards = [Vec::new(), Vec::new()];
        for i in 0..n as u32 {
            let (data, orig, ts) = cap.frame(i as usize);
            let w = decode(data, orig, ts, 0).map_or(0, |p| dataplane::pipeline::shard_of(&p, 2));
            shards[w].push(i);
        }
        let cap_ref = &cap;
        let mut ones = Vec::new();
        // (CPU of both workers, wall time of the slower one)
        let mut twos: Vec<(Duration, Duration)> = Vec::new();
        let mut ratios = Vec::new();
        for _ in 0..args.replays.max(1) {
            let one = replay(&cap, &all, 0, 1);
            let two = std::thread::scope(|s| {
                let hs: Vec<_> = shards
                    .iter()
                    .enumerate()
                    .map(|(w, idx)| s.spawn(move || replay(cap_ref, idx, w, 2)))
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().expect("a replay thread panicked"))
                    .fold((Duration::ZERO, Duration::ZERO), |(c, w), r| (c + r.cpu, w.max(r.wall)))
            });
            // Mpps per CPU-second at 2 workers ÷ at 1 worker = CPU(1) / CPU(2), same packets.
            ratios.push(one.cpu.as_secs_f64() / two.0.as_secs_f64().max(1e-9));
            ones.push(one);
            twos.push(two);
        }
        let one = median(ones, |r| r.cpu);
        let one_rate = mpps(n, one.cpu);
        row(
            &mut rows,
            "engine replay, 1 worker (CPU time)",
            format!(
                "{one_rate:.2} Mpps per CPU-s, {:.0} ns/pkt ({} events; wall {:.2} Mpps)",
                one.cpu.as_nanos() as f64 / n as f64,
                one.events,
                mpps(n, one.wall)
            ),
            "—".into(),
            "—".into(),
            "≥ 10 Mpps",
            Some(one_rate >= 10.0),
        );
        let (cpu2, wall2) = median(twos, |r| r.0);
        let two_rate = mpps(n, cpu2);
        ratios.sort_by(f64::total_cmp);
        let ratio = ratios[ratios.len() / 2];
        row(
            &mut rows,
            "engine replay, 2 workers (CPU time)",
            format!("{two_rate:.2} Mpps per CPU-s (wall {:.2} Mpps)", mpps(n, wall2)),
            format!("1 worker {one_rate:.2} Mpps per CPU-s"),
            format!("{ratio:.2}× (median of {} pairs)", ratios.len()),
            "≥ 0.9×",
            Some(ratio >= 0.9),
        );
    }

    // 2–3. `wirewatch analyze` against Suricata, tshark and tcptrace, in CPU seconds.
    if args.runs("baselines") {
        pcap::write_capture(&cap, &snapped, 128)?;
        // Each tool's start-up CPU once; then rounds of every (tool, file) pair.
        let jobs = [
            (Tool::Wirewatch, pcap.as_path()),
            (Tool::Wirewatch, snapped.as_path()),
            (Tool::Suricata, pcap.as_path()),
            (Tool::Suricata, snapped.as_path()),
            (Tool::Tshark, pcap.as_path()),
            (Tool::Tcptrace, pcap.as_path()),
        ];
        let tools = [Tool::Wirewatch, Tool::Suricata, Tool::Tshark, Tool::Tcptrace];
        let starts: Vec<Result<Duration>> =
            tools.iter().map(|&t| startup_cpu(t, &args, &tiny)).collect();
        let start_of = |t: Tool| &starts[tools.iter().position(|&x| x == t).expect("listed")];
        let mut samples: Vec<Result<Vec<Duration>>> = jobs.iter().map(|_| Ok(Vec::new())).collect();
        for round in 1..=args.baseline_runs {
            // Without wirewatch's figures the others' rows cannot be made.
            if samples[..2].iter().all(Result::is_err) {
                break;
            }
            for (&(tool, file), got) in jobs.iter().zip(samples.iter_mut()) {
                let Ok(v) = got else { continue };
                let run = match start_of(tool) {
                    Ok(s) => work_cpu(tool, &args, file, *s),
                    Err(e) => Err(anyhow::anyhow!("{e:#}")),
                };
                match run {
                    Ok(d) => v.push(d),
                    Err(e) => {
                        *got = Err(e.context(format!("run {round} of {}", args.baseline_runs)));
                    }
                }
            }
        }
        let mut medians = samples.into_iter().map(|s| s.map(|v| median(v, |d| *d)));
        let mut next = || medians.next().expect("one per job");
        let (ww_full, ww_snap) = (next(), next());
        let (sur_full, sur_snap, tshark, tcptrace) = (next(), next(), next(), next());
        versus(
            &mut rows,
            "analyze vs suricata, full frames",
            &ww_full,
            Tool::Suricata,
            sur_full,
            10.0,
            args.baseline_runs,
        );
        versus(
            &mut rows,
            "analyze vs suricata, 128 B snap",
            &ww_snap,
            Tool::Suricata,
            sur_snap,
            10.0,
            args.baseline_runs,
        );
        versus(
            &mut rows,
            "analyze vs tshark, full frames",
            &ww_full,
            Tool::Tshark,
            tshark,
            100.0,
            args.baseline_runs,
        );
        versus(
            &mut rows,
            "analyze vs tcptrace, full frames",
            &ww_full,
            Tool::Tcptrace,
            tcptrace,
            0.0,
            args.baseline_runs,
        );
        let _ = std::fs::remove_file(&snapped);
    }

    // 4. XDP program cost.
    if !args.runs("xdp") {
    } else if is_root() {
        let mut prog = dataplane::loader::XdpProgram::load(dataplane_common::XdpConfig {
            snaplen: 128,
            ..Default::default()
        })?;
        let bare = bpf::constant_program(bpf::XDP_PASS, "ww_bench_pass")?;
        for (name, frame, plain) in fixture_frames() {
            let fd = prog.program().fd()?.as_fd().try_clone_to_owned()?;
            let (ours, base, ratio) = xdp_rounds(&fd, &bare, &frame, &args)?;
            row(
                &mut rows,
                &format!("XDP program, {name}"),
                format!("{} ns/pkt (verdict {})", ours.ns_per_run, ours.retval),
                format!("bare XDP_PASS {} ns", base.ns_per_run),
                format!("{ratio:.2}×"),
                if plain { "≤ 1.5×" } else { "—" },
                plain.then_some(ratio <= 1.5),
            );
        }
        // The same frames with a socket on the queue: the path a monitored frame takes. The
        // test run keeps its frame between repetitions, so after the first one the frame is
        // cut already and its metadata area full: the steady state measured here is the parse,
        // the lookup, a refused adjust_meta and the redirect (no cut, timestamp or metadata
        // write). Informational: the target is the rows above.
        let mut span_ns = Vec::new();
        let bound = if prog.meta_in_head() {
            // Each repetition would put another header in front of the kept frame, which then
            // no longer parses: the rows would time a refusal.
            Err(anyhow::anyhow!(
                "this kernel takes the program that puts its metadata in front of the frame, and a repeated test run would time the parse of its own header"
            ))
        } else {
            bound_socket(&mut prog)
        };
        match bound {
            Ok(_keep) => {
                // A frame longer than the snap length is cut by the first repetition and then
                // read as malformed (its IP length exceeds the frame): left out.
                for (name, frame, _) in
                    fixture_frames().into_iter().filter(|(_, f, _)| f.len() <= 128)
                {
                    let fd = prog.program().fd()?.as_fd().try_clone_to_owned()?;
                    let (ours, base, ratio) = xdp_rounds(&fd, &bare, &frame, &args)?;
                    span_ns.push((name, ours.ns_per_run));
                    row(
                        &mut rows,
                        &format!("XDP program, {name}, socket bound"),
                        format!("{} ns/pkt (verdict {})", ours.ns_per_run, ours.retval),
                        format!("bare XDP_PASS {} ns", base.ns_per_run),
                        format!("{ratio:.2}×"),
                        "—",
                        None,
                    );
                }
            }
            Err(e) => println!("XDP program with a socket bound: not run: {e}"),
        }
        host_rows(&mut rows, &args, &bare, &span_ns)?;
    } else {
        row(
            &mut rows,
            "XDP program",
            "not run: needs root".into(),
            "—".into(),
            "—".into(),
            "≤ 1.5×",
            None,
        );
    }

    // 5. Live path.
    if !args.runs("live") {
    } else if is_root() {
        let frames = live_frames(&pcap);
        let frames = match &frames {
            Ok(f) => f.as_slice(),
            Err(e) => {
                println!("live path: not run: {e:#}");
                &[]
            }
        };
        let ww = live("wirewatch", &args, frames);
        let td = live("tcpdump", &args, frames);
        match (live_floor(&args, frames), &ww, &td) {
            (Ok(f), Ok(w), Ok(t)) => row(
                &mut rows,
                "live path: where the CPU goes",
                format!("{:.0} ns process + {:.0} ns softirq", w.process_ns, w.softirq_ns),
                format!(
                    "tcpdump {:.0} + {:.0} ns; kernel floor (bare XDP_DROP) {f:.0} ns",
                    t.process_ns, t.softirq_ns
                ),
                format!("{:.2}×", f / t.cpu_per_pkt_ns.max(1e-9)),
                "—",
                None,
            ),
            (Err(e), _, _) => println!("live path, kernel floor: not run: {e}"),
            _ => {}
        }
        // Host mode against tcpdump (both let the stack have every frame) and against span mode.
        match (live("wirewatch-host", &args, frames), &ww, &td) {
            (Ok(h), Ok(w), Ok(t)) => {
                let secs = args.live_secs;
                row(
                    &mut rows,
                    "live path, host mode: CPU per packet",
                    format!("{:.0} ns; {:.2} Mpps reached mon0, {} not processed: {} not TCP or malformed, {} in named loss counters, {} unattributed", h.cpu_per_pkt_ns, h.arrived as f64 / secs / 1e6, h.arrived.saturating_sub(h.received), h.not_for_us, h.named_lost, h.unattributed),
                    format!("tcpdump {:.0} ns", t.cpu_per_pkt_ns),
                    format!("{:.2}×", h.cpu_per_pkt_ns / t.cpu_per_pkt_ns.max(1e-9)),
                    "—",
                    None,
                );
                row(
                    &mut rows,
                    "live path, host vs span mode",
                    format!("host {:.0} ns/pkt", h.cpu_per_pkt_ns),
                    format!("span {:.0} ns/pkt", w.cpu_per_pkt_ns),
                    format!("{:.2}×", h.cpu_per_pkt_ns / w.cpu_per_pkt_ns.max(1e-9)),
                    "—",
                    None,
                );
            }
            (Err(e), _, _) => println!("live path, host mode: not run: {e}"),
            _ => {}
        }
        // The least any engine behind AF_XDP copy mode costs here, against tcpdump.
        match (live_xsk_floor(&args, frames), &td) {
            (Ok((p, soft, n)), Ok(t)) => row(
                &mut rows,
                "live path, AF_XDP copy mode without the engine: CPU per packet",
                format!(
                    "{:.0} ns ({p:.0} worker + {soft:.0} softirq; {n} frames, every one dropped by the sink)",
                    p + soft
                ),
                format!("tcpdump {:.0} ns", t.cpu_per_pkt_ns),
                format!("{:.2}×", (p + soft) / t.cpu_per_pkt_ns.max(1e-9)),
                "—",
                None,
            ),
            (Err(e), _) => println!("live path, AF_XDP floor: not run: {e:#}"),
            _ => {}
        }
        match (ww, td) {
            (Ok(w), Ok(t)) => {
                let secs = args.live_secs;
                let ratio = w.cpu_per_pkt_ns / t.cpu_per_pkt_ns.max(1e-9);
                let wloss = w.arrived.saturating_sub(w.received);
                row(
                    &mut rows,
                    "live path: CPU per packet",
                    format!("{:.0} ns; {:.2} Mpps offered, {:.2} Mpps reached mon0 (rx_dropped {}), {} of them not processed: {} not TCP or malformed (passed), {} in named loss counters ({} XSK drops), {} unattributed", w.cpu_per_pkt_ns, w.sent as f64 / secs / 1e6, w.arrived as f64 / secs / 1e6, w.iface_dropped, wloss, w.not_for_us, w.named_lost, w.dropped, w.unattributed),
                    format!("tcpdump {:.0} ns; {:.2} Mpps reached mon0, {} lost ({} kernel drops)", t.cpu_per_pkt_ns, t.arrived as f64 / secs / 1e6, t.arrived.saturating_sub(t.received), t.dropped),
                    format!("{ratio:.2}×"),
                    "≤ 0.33×, 0 unattributed, 0 XSK drops",
                    Some(ratio <= 1.0 / 3.0 && w.unattributed == 0 && w.dropped == 0),
                );
            }
            (w, t) => {
                let e = w.err().or(t.err()).map(|e| e.to_string()).unwrap_or_default();
                row(
                    &mut rows,
                    "live path",
                    format!("not run: {e}"),
                    "—".into(),
                    "—".into(),
                    "—",
                    None,
                );
            }
        }
    } else {
        row(
            &mut rows,
            "live path",
            "not run: needs root".into(),
            "—".into(),
            "—".into(),
            "—",
            None,
        );
    }

    // 6. Memory per flow.
    if args.runs("memory") {
        // The target row: `run`'s configuration, a monitor holding its flows for days, with
        // the index allocated whole. `analyze` grows it instead: informational.
        for (label, grows, target) in [
            ("memory per tracked flow (run: index whole)", false, true),
            ("memory per tracked flow (analyze: index grows)", true, false),
        ] {
            let ((ours, base, ratio), met) = match memory_in_child(1_000_000, grows) {
                Ok((per_flow, flows)) => (
                    (
                        format!("{per_flow:.0} B ({flows} flows)"),
                        "FlowRecord 128 B".into(),
                        format!("{:.2}×", per_flow / 128.0),
                    ),
                    target.then_some(per_flow <= 160.0),
                ),
                Err(e) => ((format!("not run: {e:#}"), "—".into(), "—".into()), None),
            };
            row(&mut rows, label, ours, base, ratio, if target { "≤ 160 B" } else { "—" }, met);
        }
    }

    // 7. SYN flood: peak memory of analyze under 2M spoofed SYNs, and the real flow's event.
    if args.runs("flood") {
        let budget = args.flood_max_flows * 160 + (128 << 20);
        let label = "SYN flood: analyze peak RSS (evidence kept)";
        let tgt = "≤ 1.00× budget, event found";
        match syn_flood(&args) {
            Ok(f) => {
                let ratio = f.usage.max_rss as f64 / budget as f64;
                row(
                    &mut rows,
                    label,
                    format!(
                        "{:.0} MB peak RSS, {:.1} CPU-s; real flow's zero_window event {}; {} events from {} frames",
                        f.usage.max_rss as f64 / 1e6,
                        f.usage.cpu.as_secs_f64(),
                        if f.found { "found" } else { "MISSING" },
                        f.events,
                        f.frames
                    ),
                    format!("budget {} flows × 160 B + 128 MiB = {:.0} MB", args.flood_max_flows, budget as f64 / 1e6),
                    format!("{ratio:.2}×"),
                    tgt,
                    Some(ratio <= 1.0 && f.found),
                );
                let info = "SYN flood, no events (--handshake-timeout 300)";
                match f.quiet {
                    Ok(q) => row(
                        &mut rows,
                        info,
                        format!(
                            "{:.0} MB peak RSS, {:.1} CPU-s",
                            q.max_rss as f64 / 1e6,
                            q.cpu.as_secs_f64()
                        ),
                        format!("budget {:.0} MB", budget as f64 / 1e6),
                        format!("{:.2}×", q.max_rss as f64 / budget as f64),
                        "— (where the memory goes)",
                        None,
                    ),
                    Err(e) => row(
                        &mut rows,
                        info,
                        format!("not run: {e:#}"),
                        "—".into(),
                        "—".into(),
                        "—",
                        None,
                    ),
                }
            }
            Err(e) => {
                row(&mut rows, label, format!("not run: {e:#}"), "—".into(), "—".into(), tgt, None);
            }
        }
    }

    if !args.only.is_empty() {
        println!("\n(--only: {} left unchanged)", args.results.display());
        return Ok(());
    }
    write_results(&args, &rows, n, file_mb)
}

fn write_results(args: &Args, rows: &[Row], packets: usize, file_mb: f64) -> Result<()> {
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Machine: {cpu}, {cores} cores; kernel {kernel}; commit {commit}; capture {} flows, {packets} packets, {file_mb:.0} MB (seed {}); SYN flood {} SYNs at {}/s (seed {}).\n",
        args.flows, args.seed, args.flood_syns, args.flood_rate, args.seed
    );
    let _ = writeln!(t, "| benchmark | wirewatch | baseline (same run) | ratio | target | |");
    let _ = writeln!(t, "|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} |",
            r.bench,
            r.ours,
            r.baseline,
            r.ratio,
            r.target,
            r.met.map_or("—", |m| if m { "met" } else { "**missed**" })
        );
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
