//! `wirewatch run`: attach the XDP program to each interface, bind one AF_XDP socket per
//! queue, run one pinned worker per socket until SIGINT/SIGTERM, then detach and report.
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use aya::programs::XdpMode;
use clap::{Args, ValueEnum};
use crossbeam_channel::bounded;
use dataplane::anomaly::Kind;
use dataplane::engine::{Engine, EngineConfig};
use dataplane::host::HostWorker;
use dataplane::loader::XdpProgram;
use dataplane::worker::{QueueCounters, Worker};
use dataplane::xsk::{XskOptions, XskQueue, ZeroCopyPolicy};
use dataplane_common::XdpConfig;
use serde::Serialize;

use crate::cli::options::{self, ApiToken, Bounds, CpuList, Queues};
use crate::live::{
    event_loop, read_driver_losses, DriverBaseline, EngineSink, EventOutput, InterfaceSummary,
    LossSummary, Output, OwnedFrame, RecordBatch, Recorder, SharedStats, RECORD_QUEUE_BATCHES,
};

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Read options from a TOML file: keys are these options' names in snake_case
    /// (`iface = ["eth1"]`, `xdp_mode = "native"`, `snaplen = 128`); flags given on the
    /// command line win over the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Interface to watch (a tap or span port). Repeat for several vantage points (each
    /// interface once, at most 128). An interface with an address (other than link-local) or
    /// a route is the host's own and is refused: XDP would take its TCP frames from the host
    /// (watch it with --host instead).
    #[arg(long = "iface", short = 'i', required = true, value_name = "IF", value_parser = options::iface_name)]
    pub ifaces: Vec<String>,
    /// Attach even to an interface with addresses or routes, such as the collector address a
    /// remote mirror (VXLAN, GRE, ERSPAN) is sent to: every TCP frame it receives, the host's
    /// own connections' included, goes to wirewatch instead of the host's stack.
    #[arg(long)]
    pub allow_host_interface: bool,
    /// Host mode: watch this host's own connections on the interfaces that carry them (a
    /// gateway's or a backend's) without touching them. Every frame goes on to the stack; the
    /// headers of TCP frames arriving (XDP) and leaving (TC egress, kernel ≥ 6.6) are copied to
    /// wirewatch through a BPF ring buffer, so both directions are seen. AF_XDP options
    /// (--queues, --zero-copy, --ring-size, --busy-poll) do not apply; frames the ring had no
    /// room for are counted (`host_ring_full`) and put their flows in the gap state.
    #[arg(long, conflicts_with = "allow_host_interface")]
    pub host: bool,
    /// RX queues to bind per interface: a number (queues 0..N) or `all`.
    #[arg(long, default_value = "all", value_name = "N|all", value_parser = options::queues)]
    pub queues: Queues,
    /// XDP attach mode: `native` runs in the driver; `generic` works everywhere but is slower;
    /// `auto` tries native and falls back to generic, logging why.
    #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
    pub xdp_mode: XdpModeArg,
    /// AF_XDP zero-copy (mlx5, ice, i40e): `auto` asks for it and falls back to copy mode.
    #[arg(long, value_enum, default_value_t = ZeroCopyArg::Auto)]
    pub zero_copy: ZeroCopyArg,
    /// What to do with frames that are not TCP: `pass` to the stack, or `drop` on a dedicated tap.
    #[arg(long, value_enum, default_value_t = NonTcpArg::Pass)]
    pub non_tcp: NonTcpArg,
    /// Bytes kept of each frame (headers only; payload never reaches user space in copy mode).
    #[arg(long, default_value_t = XdpConfig::DEFAULT_SNAPLEN, value_name = "BYTES",
          allow_negative_numbers = true, value_parser = options::whole::<u32>(XdpConfig::MIN_SNAPLEN.into(), 1024, "bytes"))]
    pub snaplen: u32,
    /// Redirect only the TCP frames this pcap-filter expression matches: `[src|dst] host ADDR`,
    /// `[src|dst] net ADDR/LEN`, `[src|dst] port N`, `vlan [ID]`, joined by and/or/not and
    /// parentheses (and/or of equal precedence, left to right, as in pcap-filter), at most 8
    /// primitives, evaluated in the XDP program (refused frames are passed to the stack
    /// and counted as `filtered`); tunnelled frames are judged by their innermost headers.
    #[arg(long, value_name = "EXPR", value_parser = |s: &str| dataplane::filter::Filter::parse(s).map_err(|e| e.to_string()))]
    pub filter: Option<dataplane::filter::Filter>,
    /// CPUs to pin workers to, e.g. `2,3` or `4-7`: online CPUs, each once; workers take
    /// them in order. Default: worker i on CPU i modulo the CPU count.
    #[arg(long, value_name = "LIST", value_parser = options::pinnable_cpu_list)]
    pub cpus: Option<CpuList>,
    /// AF_XDP ring size in frames (a power of two, 64 to 32768); each socket holds twice that
    /// many frames (2 KiB each, or the profile's frame size). A larger ring absorbs a longer
    /// burst while a worker is off its CPU (lost frames show as
    /// wirewatch_xsk_rx_dropped_total). Default: 16384 while all sockets' buffers stay within
    /// 256 MiB (up to 4 queues at 2 KiB), halved as queues are added, at least 2048.
    #[arg(long, value_name = "FRAMES", value_parser = options::ring_size)]
    pub ring_size: Option<u32>,
    /// Busy-poll the sockets for this many µs (SO_PREFER_BUSY_POLL), at most 1000000; 0 disables.
    #[arg(long, default_value_t = 0, value_name = "USECS", allow_negative_numbers = true,
          value_parser = options::whole::<u32>(0, MAX_BUSY_POLL_USECS, "µs"))]
    pub busy_poll: u32,
    /// Tune each interface with a NIC profile before attaching (channels, rings, offloads,
    /// symmetric RSS, busy polling, IRQ placement; see `wirewatch profile list`): `auto` picks it
    /// from the driver and device. Each step is logged; a failed step is a warning. Explicit
    /// --xdp-mode, --zero-copy and --busy-poll win over the profile's.
    #[arg(long, value_name = "auto|NAME")]
    pub profile: Option<String>,
    /// Extra NIC profiles directory [default: /etc/wirewatch/hw-profiles when it exists]
    #[arg(long, value_name = "DIR", requires = "profile")]
    pub profile_dir: Option<PathBuf>,
    /// Also write every received frame (headers only) to this pcapng file. It rotates at
    /// --record-max-bytes (FILE.1 … FILE.5 are kept), so at most six times that is used.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Rotate the --record file when it reaches this size.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30, allow_negative_numbers = true,
          value_parser = options::whole::<u64>(MIN_RECORD_BYTES.into(), u64::MAX.into(), "bytes"))]
    pub record_max_bytes: u64,
    /// Write every event as one JSON object per line to this file; `-` prints JSON lines on
    /// stdout instead of the human-readable lines. SIGHUP (`systemctl reload wirewatch`) makes
    /// run reopen the file at this path, e.g. after it was moved away.
    #[arg(long, value_name = "FILE|-")]
    pub events: Option<PathBuf>,
    /// Rotate the --events file when it passes this size (FILE.1 … FILE.5 are kept).
    #[arg(long, value_name = "BYTES", default_value_t = 100 << 20, allow_negative_numbers = true,
          value_parser = options::whole::<u64>(1, u64::MAX.into(), "bytes"))]
    pub events_max_bytes: u64,
    /// Where evidence files (pcapng slices around each detection, headers only) are written.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/wirewatch/evidence")]
    pub evidence_dir: PathBuf,
    /// Serve Prometheus metrics (/metrics), /healthz and the events/evidence API here.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    pub metrics: std::net::SocketAddr,
    /// Require `Authorization: Bearer TOKEN` on every request but /healthz. A token on the
    /// command line is visible in `ps`: prefer --api-token-file or the environment variable.
    #[arg(long, value_name = "TOKEN", env = "WIREWATCH_API_TOKEN", hide_env_values = true, value_parser = options::api_token)]
    pub api_token: Option<ApiToken>,
    /// Read the --api-token from this file: a regular file of at most 4 KiB holding the token
    /// on one line (a trailing line break is ignored).
    #[arg(long, value_name = "FILE", value_parser = options::api_token_file)]
    pub api_token_file: Option<ApiToken>,
    /// Allow a non-loopback --metrics address without --api-token.
    #[arg(long)]
    pub api_insecure: bool,
    /// Evidence kept on disk at most (oldest files removed first).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30, allow_negative_numbers = true,
          value_parser = options::whole::<u64>(0, u64::MAX.into(), "bytes"))]
    pub evidence_max_bytes: u64,
    /// Evidence files older than this are removed; 0.001 to 3650.
    #[arg(long, value_name = "DAYS", default_value = "7", allow_negative_numbers = true,
          value_parser = EVIDENCE_MAX_AGE_DAYS.duration(86_400.0))]
    pub evidence_max_age_days: Duration,
    /// Stop after this many seconds, 0.001 to 31536000 (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = RUN_DURATION.duration(1.0))]
    pub duration: Option<Duration>,
    /// Write a JSON summary of what was received and dropped here on exit.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    /// Two interfaces (as given to --iface) that are serial: one link behind the other, such
    /// as either side of a firewall, so a packet seen at one and never at the other was lost
    /// between them. Repeatable. Without it, pairs are judged from the traffic: serial when
    /// ≥ 90 % of the packets of connections both carry reach both; until a pair is judged
    /// its losses wait (bounded), and between parallel vantages none is inferred. A remote
    /// mirror's sessions (ERSPAN session, VNI, GRE key, from each sender) are vantages of
    /// their own, named IFACE/KIND:SESSION@SENDER; their pairs are judged from the traffic.
    #[arg(long = "serial", value_name = "A,B", value_parser = crate::vantages::serial_pair)]
    pub serial: Vec<(String, String)>,
    #[command(flatten)]
    pub thresholds: crate::cli::thresholds::Thresholds,
    #[command(flatten)]
    pub event_fields: crate::cli::event_fields::EventFields,
}

/// A record file holds its header and a few frames at least.
pub const MIN_RECORD_BYTES: u32 = 4096;
/// A year: longer runs need no --duration.
pub const RUN_DURATION: Bounds = Bounds { min: 0.001, max: 31_536_000.0, unit: "seconds" };
/// Zero would remove every evidence file at start; ten years is "keep".
pub const EVIDENCE_MAX_AGE_DAYS: Bounds = Bounds { min: 0.001, max: 3650.0, unit: "days" };
/// SO_BUSY_POLL takes an int; a second of spinning per receive call is already far too long.
pub const MAX_BUSY_POLL_USECS: i128 = 1_000_000;
/// The flow key keeps the vantage (the interface's position in --iface) in seven bits
/// (dataplane/src/flow/mod.rs `FlowKey::vantage`).
pub const MAX_IFACES: usize = dataplane::flow::MAX_VANTAGES;

impl RunArgs {
    /// What the value parsers cannot see: relations between values. Run before anything is
    /// touched; the error is one line for the operator (exit status 2).
    pub fn check(&self) -> Result<(), String> {
        if self.host && self.non_tcp == NonTcpArg::Drop {
            return Err(
                "--non-tcp drop with --host: host mode never drops the host's frames; leave \
                 --non-tcp at pass"
                    .into(),
            );
        }
        if self.ifaces.len() > MAX_IFACES {
            return Err(format!(
                "--iface given {} times; at most {MAX_IFACES} interfaces",
                self.ifaces.len()
            ));
        }
        for (i, iface) in self.ifaces.iter().enumerate() {
            if self.ifaces[..i].contains(iface) {
                return Err(format!("--iface {iface} is given twice; name each interface once"));
            }
        }
        if let Err(e) = crate::vantages::serial_indices(&self.serial, &self.ifaces) {
            return Err(e.to_string());
        }
        if self.api_token.is_some() && self.api_token_file.is_some() {
            return Err(
                "--api-token (or WIREWATCH_API_TOKEN) and --api-token-file both given; use one"
                    .into(),
            );
        }
        if let Some(p) = self.api_token.as_ref().and_then(ApiToken::problem) {
            return Err(format!("--api-token (or WIREWATCH_API_TOKEN) {p}"));
        }
        Ok(())
    }

    /// Files written later (at the first event, at exit) must go where they can be created:
    /// a typo is found at start, not after hours of monitoring. Checked by `run` itself, after
    /// the interfaces resolve and before anything is attached: the directories are the
    /// host's (the unit creates /var/log/wirewatch), not the config file's business.
    fn check_outputs(&self) -> Result<(), String> {
        for (flag, path) in [
            ("--events", &self.events),
            ("--record", &self.record),
            ("--summary-json", &self.summary_json),
        ] {
            if let Some(path) = path {
                options::output_file(flag, path)?;
            }
        }
        Ok(())
    }

    /// The token from --api-token, WIREWATCH_API_TOKEN or --api-token-file.
    fn token(&self) -> Option<&ApiToken> {
        self.api_token.as_ref().or(self.api_token_file.as_ref())
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpModeArg {
    Auto,
    Native,
    Generic,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroCopyArg {
    Auto,
    On,
    Off,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonTcpArg {
    Pass,
    Drop,
}

static STOP: AtomicBool = AtomicBool::new(false);
static HANGUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGHUP {
        // Here, not in the main loop: an event written after the signal goes to the new file.
        crate::live::REOPEN_EVENTS.store(true, Relaxed);
        HANGUP.store(true, Relaxed);
    } else {
        STOP.store(true, Relaxed);
    }
}

/// SIGINT/SIGTERM stop; SIGHUP (`systemctl reload`) reopens the events file.
fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

fn ifindex(name: &str) -> Result<u32> {
    let c = CString::new(name).context("interface name contains a NUL byte")?;
    // SAFETY: valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        bail!("interface {name} does not exist: check the name with `ip link`");
    }
    Ok(idx)
}

fn rx_queue_count(iface: &str) -> usize {
    std::fs::read_dir(format!("/sys/class/net/{iface}/queues"))
        .map(|d| {
            d.filter_map(std::result::Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count()
        })
        .unwrap_or(1)
        .max(1)
}

fn attach(prog: &mut XdpProgram, iface: &str, idx: u32, mode: XdpModeArg) -> Result<&'static str> {
    let try_mode = |prog: &mut XdpProgram, m: XdpMode| prog.attach(idx, m);
    let explain = |e: aya::programs::ProgramError, what: &str| -> anyhow::Error {
        let busy = matches!(&e, aya::programs::ProgramError::SyscallError(s)
            if matches!(s.io_error.raw_os_error(), Some(libc::EBUSY | libc::EEXIST)));
        if busy {
            anyhow::anyhow!(
                "interface {iface} already has an XDP program attached; remove it with \
                 `ip link set dev {iface} xdp off` (or stop the tool that owns it) and retry"
            )
        } else {
            anyhow::Error::new(e).context(format!("attaching XDP to {iface} in {what} mode"))
        }
    };
    match mode {
        XdpModeArg::Native => {
            try_mode(prog, XdpMode::Driver).map(|()| "native").map_err(|e| explain(e, "native"))
        }
        XdpModeArg::Generic => {
            try_mode(prog, XdpMode::Skb).map(|()| "generic").map_err(|e| explain(e, "generic"))
        }
        XdpModeArg::Auto => match try_mode(prog, XdpMode::Driver) {
            Ok(()) => Ok("native"),
            Err(e) => {
                let e = explain(e, "native");
                if e.to_string().contains("already has an XDP program") {
                    return Err(e);
                }
                log::warn!("{iface}: native XDP refused ({e:#}); falling back to generic XDP");
                try_mode(prog, XdpMode::Skb).map(|()| "generic").map_err(|e| explain(e, "generic"))
            }
        },
    }
}

/// Host mode on one interface (`(name, ifindex, vantage)`): loads both programs, attaches the
/// XDP one as span mode does and the TC egress one beside it, and makes the ring's reader.
/// Returns the program, the reader, its summary entry (as queue 0) and the XDP program's id.
fn host_reader(
    args: &RunArgs,
    config: XdpConfig,
    (iface, idx, vantage): (&str, u32, u16),
    cpu: usize,
    draining: &Arc<std::sync::atomic::AtomicUsize>,
) -> Result<(XdpProgram, HostWorker, QueueInfo, Option<u32>)> {
    let mut prog = XdpProgram::load_host(config, args.filter.as_ref(), dataplane::host::RING_BYTES)
        .context("loading the host-mode programs (is the kernel ≥ 5.10 with BPF enabled?)")?;
    let xdp_mode = attach(&mut prog, iface, idx, args.xdp_mode)?;
    prog.attach_egress(iface).with_context(|| {
        format!("attaching the TC egress program to {iface} (host mode needs TCX, kernel ≥ 6.6)")
    })?;
    let prog_id = prog.program().info().map(|i| i.id()).ok();
    let counters = Arc::new(QueueCounters::default());
    let reader = HostWorker {
        iface: iface.to_string(),
        ring: prog.take_host_ring()?,
        outcomes: prog.counter_reader()?,
        vantage,
        cpu: Some(cpu),
        counters: counters.clone(),
        draining: draining.clone(),
    };
    log::info!(
        "{iface}: host mode, XDP attached in {xdp_mode} mode and TC egress, snaplen {}",
        args.snaplen
    );
    Ok((prog, reader, (iface.to_string(), vantage, 0, xdp_mode, "host", None, counters), prog_id))
}

type QueueInfo = (String, u16, u32, &'static str, &'static str, Option<String>, Arc<QueueCounters>);

/// Publishes everything the workers and the XDP program count (bounded labels only).
fn export_metrics(
    queues: &[QueueInfo],
    programs: &[(String, XdpProgram)],
    workers: &[Arc<SharedStats>],
) {
    // Workers were made in the order of `queues`: worker i reads queue i.
    for ((iface, _, queue, xdp_mode, copy_mode, _, c), w) in queues.iter().zip(workers) {
        crate::export::metrics::queue(c, iface, *queue);
        metrics::gauge!(crate::export::metrics::XDP_MODE, "vantage" => iface.clone(), "mode" => *xdp_mode, "copy" => *copy_mode).set(1.0);
        let beat = w.heartbeat_ns.load(Relaxed);
        if beat > 0 {
            metrics::gauge!(crate::export::metrics::WORKER_HEARTBEAT, "vantage" => iface.clone(), "queue" => queue.to_string())
                .set(beat as f64 / 1e9);
        }
    }
    for (iface, p) in programs {
        crate::export::metrics::interface_drops(iface);
        if let Ok(c) = p.counters() {
            let all: Vec<_> =
                dataplane_common::Outcome::ALL.iter().map(|o| (o.name(), c.get(*o))).collect();
            crate::export::metrics::xdp(iface, &all);
        }
    }
    let sum = |f: &dyn Fn(&SharedStats) -> u64| workers.iter().map(|w| f(w)).sum::<u64>();
    let per_kind: Vec<u64> =
        (0..Kind::ALL.len()).map(|i| sum(&|w| w.anomalies[i].load(Relaxed))).collect();
    crate::export::metrics::anomalies(&per_kind);
    let evicted: [u64; 4] = std::array::from_fn(|i| sum(&|w| w.flows_evicted[i].load(Relaxed)));
    crate::export::metrics::flows(
        sum(&|w| w.flows_active.load(Relaxed)),
        sum(&|w| w.flows_created.load(Relaxed)),
        &evicted,
    );
    metrics::counter!(crate::export::metrics::EVIDENCE_SUPPRESSED)
        .absolute(sum(&|w| w.evidence_suppressed.load(Relaxed)));
    metrics::counter!(crate::export::metrics::SIDE_STATE, "reason" => "pool_full")
        .absolute(sum(&|w| w.side_exhausted.load(Relaxed)));
    metrics::counter!(crate::export::metrics::SIDE_STATE, "reason" => "reclaimed")
        .absolute(sum(&|w| w.side_reclaimed.load(Relaxed)));
    metrics::counter!(crate::export::metrics::MACS_OVERFLOWED)
        .absolute(sum(&|w| w.macs_overflowed.load(Relaxed)));
    metrics::counter!(crate::export::metrics::HANDOFF, "reason" => "handed_off")
        .absolute(sum(&|w| w.handed_off.load(Relaxed)));
    metrics::counter!(crate::export::metrics::HANDOFF, "reason" => "dropped")
        .absolute(sum(&|w| w.handoff_dropped.load(Relaxed)));
    metrics::counter!(crate::export::metrics::OUTPUT_DROPPED)
        .absolute(sum(&|w| w.output_dropped.load(Relaxed)));
    metrics::counter!(crate::export::metrics::ENGINE_FRAMES)
        .absolute(sum(&|w| w.engine_received.load(Relaxed)));
}

/// A worker whose heartbeat stands still this long is reported wedged.
const WEDGED_AFTER: Duration = Duration::from_secs(10);

/// What makes `/healthz` answer 503: a worker that stopped or stands still, an interface whose
/// XDP program is no longer ours (or gone).
fn problems<T>(
    queues: &[QueueInfo],
    workers: &[std::thread::JoinHandle<T>],
    stats: &[Arc<SharedStats>],
    attached: &[(String, u32, Option<u32>)],
) -> Vec<String> {
    let mut out = Vec::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    for (((iface, _, queue, ..), w), s) in queues.iter().zip(workers).zip(stats) {
        let beat = s.heartbeat_ns.load(Relaxed);
        if w.is_finished() {
            out.push(format!("the worker of {iface} queue {queue} has stopped (see the log)"));
        } else if beat > 0 && now.saturating_sub(beat) > options::nanos(WEDGED_AFTER) {
            out.push(format!(
                "the worker of {iface} queue {queue} has not gone round its loop for {} s",
                now.saturating_sub(beat) / 1_000_000_000
            ));
        }
    }
    for (iface, idx, ours) in attached {
        match crate::export::health::xdp_prog_ids(*idx) {
            Ok(ids) if ours.is_some_and(|id| ids.contains(&id)) => {}
            Ok(ids) if ids.is_empty() => out.push(format!(
                "the XDP program is no longer attached to {iface} (removed from outside?): nothing is captured there; restart wirewatch"
            )),
            Ok(_) if ours.is_none() => {}
            Ok(_) => out.push(format!(
                "another XDP program replaced wirewatch's on {iface}: nothing is captured there; restart wirewatch"
            )),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                out.push(format!("interface {iface} is gone: nothing is captured there"));
            }
            Err(e) => log::debug!("checking the XDP program on {iface}: {e}"),
        }
    }
    out
}

/// Host mode's half of `/healthz`: an interface whose TC egress program is no longer ours
/// sees only the frames arriving there.
fn egress_problems(attached: &[(String, Option<u32>)]) -> Vec<String> {
    use aya::programs::{SchedClassifier, TcAttachType};
    let mut out = Vec::new();
    for (iface, ours) in attached {
        let Some(ours) = ours else { continue };
        match SchedClassifier::query_tcx(iface, TcAttachType::Egress) {
            Ok((_, progs)) if progs.iter().any(|p| p.id() == *ours) => {}
            Ok(_) => out.push(format!(
                "the TC egress program is no longer attached to {iface} (removed from outside?): host mode sees only the frames arriving there; restart wirewatch"
            )),
            Err(e) => log::debug!("checking the TC egress program on {iface}: {e}"),
        }
    }
    out
}

/// What the summary reports per queue.
#[derive(Serialize)]
struct QueueSummary {
    iface: String,
    vantage: u16,
    queue: u32,
    xdp_mode: &'static str,
    copy_mode: &'static str,
    zero_copy_fallback: Option<String>,
    packets: u64,
    bytes: u64,
    no_meta: u64,
    rx_dropped: u64,
    rx_ring_full: u64,
    rx_invalid_descs: u64,
    rx_fill_ring_empty_descs: u64,
    /// The driver's `rx_queue_N_drops` / `rx_queue_N_xdp_drops` during the run.
    driver_drops: u64,
    driver_xdp_drops: u64,
}

#[derive(Serialize)]
struct RunSummary {
    queues: Vec<QueueSummary>,
    interfaces: Vec<InterfaceSummary>,
    /// Every frame accounted for.
    loss: LossSummary,
    /// XDP outcomes per interface, by reason.
    xdp: Vec<(String, Vec<(&'static str, u64)>)>,
    recorded: u64,
    record_dropped: u64,
    events: u64,
    /// Occurrences per anomaly kind.
    anomalies: Vec<(&'static str, u64)>,
    evidence_written: u64,
    evidence_failed: u64,
    handed_off: u64,
    handoff_dropped: u64,
    /// Remote-mirror sessions found in the interfaces' traffic (each a vantage): its name,
    /// and the interface.
    mirror_sessions: Vec<(String, String)>,
    /// Frames of sessions past the vantage limit, analysed at their interface's vantage.
    mirror_sessions_overflowed: u64,
}

pub fn run(args: RunArgs) -> Result<()> {
    let missing = crate::caps::missing_for_live_capture();
    if !missing.is_empty() {
        bail!(
            "missing capabilities {}: run as root, or grant them (e.g. `setcap cap_bpf,cap_net_admin,cap_net_raw,cap_perfmon+ep $(which wirewatch)` or systemd AmbientCapabilities)",
            missing.join(", ")
        );
    }
    let cpus = match &args.cpus {
        Some(list) => list.0.clone(),
        None => (0..std::thread::available_parallelism().map(std::num::NonZero::get).unwrap_or(1))
            .collect(),
    };
    let config = XdpConfig {
        snaplen: args.snaplen,
        non_tcp_drop: (args.non_tcp == NonTcpArg::Drop) as u32,
        ..XdpConfig::default()
    };
    // Resolve everything before touching any interface, so bad input leaves nothing behind.
    let mut ifindexes = Vec::new();
    for iface in &args.ifaces {
        ifindexes.push(ifindex(iface)?);
        if let Some(why) = crate::host_iface::host_traffic(iface)
            .filter(|_| !args.allow_host_interface && !args.host)
        {
            return Err(crate::analyze::Usage(format!(
                "{iface} carries this host's own traffic ({why}): attached there, wirewatch would take every TCP frame it receives away from the host's stack and cut the host's connections. Attach it to a span, tap or mirror port that has no addresses and no routes (see `ip addr show {iface}`, `ip route show dev {iface}`); to watch this host's own connections where they are, add --host (headers are copied to wirewatch, every frame stays with the host); a remote mirror's collector interface that carries nothing else takes --allow-host-interface"
            ))
            .into());
        }
    }
    args.check_outputs().map_err(crate::analyze::Usage)?;
    let tuning = match &args.profile {
        Some(name) => Some(apply_profiles(&args, name, &cpus)?),
        None => None,
    };
    let mut args = args;
    let mut frame_size = XskOptions::default().frame_size;
    let mut budget = 64;
    if let Some(t) = &tuning {
        // The profile fills in what the command line left at its default.
        let p = &t.profiles[0];
        if args.xdp_mode == XdpModeArg::Auto && p.xdp.mode == hw_profiles::XdpMode::Generic {
            args.xdp_mode = XdpModeArg::Generic;
        }
        if args.zero_copy == ZeroCopyArg::Auto && p.xdp.zero_copy == hw_profiles::ZeroCopy::Off {
            args.zero_copy = ZeroCopyArg::Off;
        }
        if args.busy_poll == 0 && p.busy_poll.enabled {
            args.busy_poll = p.busy_poll.usecs;
            budget = p.busy_poll.budget;
        }
        frame_size = p.xdp.frame_size;
    }
    let mut xsk_opts = XskOptions {
        ring_size: args.ring_size.unwrap_or(dataplane::xsk::AUTO_RING_MAX),
        frame_size,
        zero_copy: match args.zero_copy {
            ZeroCopyArg::Auto => ZeroCopyPolicy::Auto,
            ZeroCopyArg::On => ZeroCopyPolicy::On,
            ZeroCopyArg::Off => ZeroCopyPolicy::Off,
        },
        busy_poll: (args.busy_poll > 0)
            .then_some(dataplane::xsk::BusyPoll { usecs: args.busy_poll, budget }),
    };
    let mut plan = Vec::new();
    for (i, iface) in args.ifaces.iter().enumerate() {
        if args.host {
            // One ring per interface, whatever its queues: one reader (as queue 0).
            plan.push((iface.clone(), ifindexes[i], vec![0]));
            continue;
        }
        let have = rx_queue_count(iface);
        let n = match args.queues {
            Queues::All => have,
            Queues::First(n) => {
                let n = n as usize;
                if n > have {
                    bail!(
                        "--queues {n}: interface {iface} has {have} RX queue(s); use --queues {have} (or `all`), or raise them with `ethtool -L {iface} combined {n}`"
                    );
                }
                n
            }
        };
        let ids: Vec<u32> = match &tuning {
            Some(t) => hw_profiles::xsk_queue_ids(&t.profiles[i], t.kernel, n as u32),
            None => (0..n as u32).collect(),
        };
        plan.push((iface.clone(), ifindexes[i], ids));
    }
    // With one interface whose RSS is symmetric, both directions of a flow arrive on one queue:
    // its worker owns the flow and nothing is handed over. Otherwise the owner is a hash of the
    // flow and workers hand packets to it.
    let queue_owned = args.ifaces.len() == 1
        && tuning.as_ref().is_some_and(|t| t.rss_symmetric.iter().all(|s| *s));
    log::info!(
        "flow ownership: {}",
        if queue_owned {
            "by queue (symmetric RSS from the profile)"
        } else {
            "by flow hash, packets handed to the owning worker"
        }
    );

    let record_thread = match &args.record {
        Some(path) => {
            // Created now: a path that cannot be written is an error before anything is
            // attached. Frames reach it in batches (no allocation or send per frame).
            let recorder = crate::outputs::recorder::Recorder::create(
                path.clone(),
                args.ifaces.clone(),
                args.snaplen,
                args.record_max_bytes,
                crate::outputs::recorder::KEEP,
            )
            .with_context(|| format!("--record {}: cannot create it", path.display()))?;
            let (tx, rx) = bounded::<RecordBatch>(RECORD_QUEUE_BATCHES);
            let (free_tx, free_rx) = bounded::<RecordBatch>(RECORD_QUEUE_BATCHES);
            let h = std::thread::Builder::new()
                .name("ww-record".into())
                .spawn(move || crate::live::write_record(&rx, &free_tx, recorder))
                .context("starting the recorder thread")?;
            Some((tx, free_rx, h))
        }
        None => None,
    };

    let stop = Arc::new(AtomicBool::new(false));
    install_signal_handlers();

    // Engines: one per worker; flows are owned by hash, frames of another worker's flow are
    // handed over (no symmetric RSS needed).
    let nworkers: usize = plan.iter().map(|p| p.2.len()).sum();
    if args.ring_size.is_none() {
        xsk_opts.ring_size = dataplane::xsk::auto_ring_size(nworkers, xsk_opts.frame_size);
    }
    if args.host {
        log::info!(
            "host mode: a ring buffer of {} MiB per interface",
            dataplane::host::RING_BYTES >> 20
        );
    } else {
        log::info!(
            "AF_XDP rings of {} frames, {} MiB of socket buffers per queue",
            xsk_opts.ring_size,
            (u64::from(xsk_opts.ring_size) * 2 * u64::from(xsk_opts.frame_size)) >> 20
        );
    }
    // The interfaces, and the mirror sessions the workers find in them (numbered once).
    let vantages = dataplane::vantage::Vantages::new(args.ifaces.clone());
    let mut engine_cfg = EngineConfig {
        evidence_dir: Some(args.evidence_dir.clone()),
        vantages: vantages.clone(),
        ..Default::default()
    };
    args.thresholds.apply(&mut engine_cfg);
    for (a, b) in crate::vantages::serial_indices(&args.serial, &args.ifaces)? {
        engine_cfg.vantage_relations.force_serial(a, b);
    }
    args.event_fields.apply(&mut engine_cfg);
    // Every worker draws evidence from one budget (files per second for the whole sensor).
    engine_cfg.evidence_budget =
        Some(dataplane::evidence::EvidenceBudget::new(engine_cfg.evidence_per_sec));
    if let Err(e) = std::fs::create_dir_all(&args.evidence_dir) {
        log::warn!(
            "evidence directory {}: {e}; detections continue without evidence files",
            args.evidence_dir.display()
        );
    }
    let api_cfg = crate::export::api::ApiConfig {
        addr: args.metrics,
        token: args.token().map(|t| t.as_str().to_string()),
        allow_insecure: args.api_insecure,
        evidence_dir: args.evidence_dir.clone(),
    };
    crate::export::api::check_bind(&api_cfg)?;
    let prom = crate::export::metrics::install()?;
    let (out_tx, out_rx) = bounded::<Output>(65536);
    let worker_stats: Vec<Arc<SharedStats>> =
        (0..nworkers).map(|_| Arc::new(SharedStats::default())).collect();
    let seen = Arc::new(crate::export::api::EventStore::new(10_000));
    let health = Arc::new(crate::export::api::Health::default());
    crate::export::api::serve(api_cfg, prom, seen.clone(), health.clone())?;
    let output_cfg = EventOutput {
        json_stdout: args.events.as_ref().is_some_and(|p| p.as_os_str() == "-"),
        events_file: args.events.clone().filter(|p| p.as_os_str() != "-"),
        vantages: vantages.clone(),
        rotate_bytes: args.events_max_bytes.max(1),
        rotate_keep: 5,
        retention: crate::outputs::evidence::Retention::new(
            &args.evidence_dir,
            args.evidence_max_bytes,
            args.evidence_max_age_days,
        ),
    };
    let seen2 = seen.clone();
    let output_thread = std::thread::Builder::new()
        .name("ww-events".into())
        .spawn(move || event_loop(&out_rx, output_cfg, &seen2))?;
    let (inbox_tx, mut inbox_rx): (Vec<_>, Vec<_>) =
        (0..nworkers).map(|_| bounded::<OwnedFrame>(16384)).unzip();
    inbox_rx.reverse();
    let mut programs = Vec::new();
    let mut driver_base = Vec::new();
    let draining = Arc::new(std::sync::atomic::AtomicUsize::new(nworkers));
    let mut attached = Vec::new();
    // Host mode: each interface's TC egress program, by id, for /healthz.
    let mut egress_attached = Vec::new();
    let mut workers = Vec::new();
    let mut summaries = Vec::new();
    let mut worker_no = 0usize;
    let mut new_sink = |id: usize| EngineSink {
        engine: Engine::new(engine_cfg.clone(), id),
        id,
        peers: inbox_tx.clone(),
        inbox: inbox_rx.pop().expect("one inbox per worker"),
        out: out_tx.clone(),
        stats: worker_stats[id].clone(),
        record: record_thread.as_ref().map(|(tx, free, _)| Recorder {
            tx: tx.clone(),
            free: free.clone(),
            cur: RecordBatch::default(),
            dropped: 0,
        }),
        record_dropped: 0,
        received: 0,
        inbound_lost_seen: 0,
        reorder: crate::live::Reorder::default(),
        peer_stats: worker_stats.clone(),
        queue_owned,
        capture_published: Vec::new(),
    };
    for (vantage, (iface, idx, queue_ids)) in plan.iter().enumerate() {
        if args.host {
            let cpu = cpus[worker_no % cpus.len()];
            let (mut prog, reader, info, prog_id) =
                host_reader(&args, config, (iface, *idx, vantage as u16), cpu, &draining)?;
            egress_attached.push((iface.clone(), prog.egress().info().map(|i| i.id()).ok()));
            // After attaching, as for AF_XDP: attaching resets some drivers' queues.
            driver_base.push(DriverBaseline::new(iface));
            attached.push((iface.clone(), *idx, prog_id));
            summaries.push(info);
            workers.push(reader.spawn(new_sink(worker_no), stop.clone())?);
            worker_no += 1;
            programs.push((iface.clone(), prog));
            continue;
        }
        let mut prog = XdpProgram::load_filtered(config, args.filter.as_ref())
            .context("loading the XDP program (is the kernel ≥ 5.10 with BPF enabled?)")?;
        // Attach first: an interface owned by another XDP program is refused before any socket
        // is bound, and until the sockets are in the map the program passes frames (fail open).
        let xdp_mode = attach(&mut prog, iface, *idx, args.xdp_mode)?;
        // Attaching native XDP resets some drivers' queues: the baseline is taken after it.
        driver_base.push(DriverBaseline::new(iface));
        // What /healthz compares the interface's attached program with.
        let prog_id = prog.program().info().map(|i| i.id()).ok();
        attached.push((iface.clone(), *idx, prog_id));
        let mut queues = Vec::new();
        for &q in queue_ids {
            let xsk = XskQueue::open(iface, q, &xsk_opts).map_err(|e| match &e {
                dataplane::xsk::XskError::Bind { source, .. } if source.raw_os_error() == Some(libc::EBUSY) => anyhow::anyhow!(
                    "{iface} queue {q} already has an AF_XDP socket bound (another wirewatch or AF_XDP program?): stop it and retry"
                ),
                _ => anyhow::Error::new(e).context(format!("opening AF_XDP on {iface} queue {q}")),
            })?;
            if let Some(why) = &xsk.fallback_reason {
                log::warn!("{iface} queue {q}: AF_XDP in copy mode ({why})");
            }
            prog.bind_socket(q, &xsk.fd())?;
            queues.push(xsk);
        }
        log::info!(
            "{iface}: XDP attached in {xdp_mode} mode, queue(s) {queue_ids:?}, snaplen {}",
            args.snaplen
        );
        for xsk in queues {
            let counters = Arc::new(QueueCounters::default());
            let cpu = cpus[worker_no % cpus.len()];
            worker_no += 1;
            summaries.push((
                iface.clone(),
                vantage as u16,
                xsk.queue,
                xdp_mode,
                xsk.mode.name(),
                xsk.fallback_reason.clone(),
                counters.clone(),
            ));
            let sink = new_sink(worker_no - 1);
            let w = Worker {
                xsk,
                vantage: vantage as u16,
                cpu: Some(cpu),
                counters,
                draining: draining.clone(),
            };
            workers.push(w.spawn(sink, stop.clone())?);
        }
        programs.push((iface.clone(), prog));
    }

    let started = Instant::now();
    let mut last_export = Instant::now().checked_sub(Duration::from_secs(1)).unwrap();
    while !STOP.load(Relaxed) {
        if HANGUP.swap(false, Relaxed) {
            log::info!(
                "SIGHUP: the events file is reopened before the next event; other settings take effect on restart"
            );
        }
        if args.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        if last_export.elapsed() >= Duration::from_millis(500) {
            last_export = Instant::now();
            read_driver_losses(
                &summaries.iter().map(|q| (q.0.as_str(), q.2, &*q.6)).collect::<Vec<_>>(),
                &mut driver_base,
                config.non_tcp_drop != 0,
            );
            export_metrics(&summaries, &programs, &worker_stats);
            let mut now_wrong = problems(&summaries, &workers, &worker_stats, &attached);
            now_wrong.extend(egress_problems(&egress_attached));
            health.set(now_wrong);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    log::info!("stopping: detaching, then draining the queues");
    // Detach first, so nothing is redirected after the workers' last read: what the program
    // counted and what the sockets delivered then add up exactly.
    for (iface, p) in &mut programs {
        if let Err(e) = p.detach() {
            log::warn!("{iface}: detaching XDP: {e}");
        }
    }
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Relaxed);
    let mut record_dropped = 0;
    for h in workers {
        let sink = h.join().map_err(|_| anyhow::anyhow!("a worker thread panicked"))?;
        record_dropped += sink.record_dropped;
    }
    read_driver_losses(
        &summaries.iter().map(|q| (q.0.as_str(), q.2, &*q.6)).collect::<Vec<_>>(),
        &mut driver_base,
        config.non_tcp_drop != 0,
    );
    export_metrics(&summaries, &programs, &worker_stats);
    let xdp_counts: Vec<_> = programs.iter().filter_map(|(_, p)| p.counters().ok()).collect();
    let xdp = programs
        .iter()
        .map(|(iface, p)| (iface.clone(), p.counters().map(|c| c.nonzero()).unwrap_or_default()))
        .collect();
    drop(programs); // detaches
    drop(inbox_tx);
    drop(out_tx);
    let (events, evidence_written, evidence_failed) =
        output_thread.join().map_err(|_| anyhow::anyhow!("the event thread panicked"))?;
    let recorded = match record_thread {
        Some((tx, free, h)) => {
            drop((tx, free));
            let (recorded, not_written) =
                h.join().map_err(|_| anyhow::anyhow!("the recorder thread panicked"))?;
            record_dropped += not_written;
            recorded
        }
        None => 0,
    };
    let queue_counters: Vec<&QueueCounters> = summaries.iter().map(|q| &*q.6).collect();
    let summary = RunSummary {
        queues: summaries
            .iter()
            .cloned()
            .map(|(iface, vantage, queue, xdp_mode, copy_mode, fb, c)| QueueSummary {
                iface,
                vantage,
                queue,
                xdp_mode,
                copy_mode,
                zero_copy_fallback: fb,
                packets: c.packets.load(Relaxed),
                bytes: c.bytes.load(Relaxed),
                no_meta: c.no_meta.load(Relaxed),
                rx_dropped: c.rx_dropped.load(Relaxed),
                rx_ring_full: c.rx_ring_full.load(Relaxed),
                rx_invalid_descs: c.rx_invalid_descs.load(Relaxed),
                rx_fill_ring_empty_descs: c.rx_fill_ring_empty_descs.load(Relaxed),
                driver_drops: c.driver_drops.load(Relaxed),
                driver_xdp_drops: c.driver_xdp_drops.load(Relaxed),
            })
            .collect(),
        interfaces: driver_base.iter().map(DriverBaseline::summary).collect(),
        loss: LossSummary::of(&xdp_counts, &queue_counters, &driver_base, &worker_stats),
        xdp,
        recorded,
        record_dropped,
        events,
        anomalies: Kind::ALL
            .iter()
            .map(|k| {
                (
                    k.name(),
                    worker_stats
                        .iter()
                        .map(|w| w.anomalies[*k as usize].load(Relaxed))
                        .sum::<u64>(),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect(),
        evidence_written,
        evidence_failed,
        handed_off: worker_stats.iter().map(|w| w.handed_off.load(Relaxed)).sum(),
        handoff_dropped: worker_stats.iter().map(|w| w.handoff_dropped.load(Relaxed)).sum(),
        mirror_sessions: vantages.sessions(),
        mirror_sessions_overflowed: vantages.overflowed(),
    };
    let l = &summary.loss;
    log::info!(
        "frames: {} processed by the engines; lost: {} (XDP no socket {}, redirect failed {}, truncate failed {}; AF_XDP socket full {}, ring full {}; host ring full {}; hand-off {}; interface missed {}); driver queue drops {}; unattributed {}",
        l.engine_received, l.lost_total, l.xdp_no_socket, l.xdp_redirect_failed, l.xdp_truncate_failed,
        l.xsk_rx_dropped, l.xsk_rx_ring_full, l.host_ring_full, l.handoff_dropped, l.interface_missed, l.driver_queue_drops, l.unattributed
    );
    for q in &summary.queues {
        log::info!(
            "{} queue {}: {} packets, {} bytes, lost in our rings {} (ring full {}), XDP {} / AF_XDP {}",
            q.iface, q.queue, q.packets, q.bytes, q.rx_dropped, q.rx_ring_full, q.xdp_mode, q.copy_mode
        );
    }
    if let Some(p) = &args.summary_json {
        std::fs::write(p, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// The profiles applied by `run --profile`, one per interface.
struct Tuning {
    profiles: Vec<hw_profiles::Profile>,
    kernel: hw_profiles::KernelVersion,
    rss_symmetric: Vec<bool>,
}

/// Resolves and applies a profile to every interface before anything is attached, logging each
/// step; a failed step is a warning (the sensor still runs, perhaps slower or with hand-off).
fn apply_profiles(args: &RunArgs, name: &str, cpus: &[usize]) -> Result<Tuning> {
    let all = crate::profile::load_all(args.profile_dir.as_deref())?;
    let kernel = crate::profile::running_kernel()?;
    let mut resolved = Vec::new();
    for iface in &args.ifaces {
        let (p, info) = crate::profile::resolve(&all, name, iface)?;
        resolved.push((iface, p.clone(), info));
    }
    let mut rss_symmetric = Vec::new();
    for (iface, p, info) in &resolved {
        log::info!("{iface}: applying hw-profile {} ({})", p.name, p.description);
        let ctx = hw_profiles::PlanContext {
            iface: (*iface).clone(),
            worker_cpus: cpus.to_vec(),
            kernel,
            device: info.as_ref().and_then(|i| i.device.clone()),
        };
        let r = crate::profile::apply(p, &ctx, &mut |ok, what, detail| {
            if ok {
                log::info!("{iface}: {what}: {detail}");
            } else {
                log::warn!("{iface}: could not apply \"{what}\": {detail}");
            }
        });
        if r.failed > 0 {
            log::warn!("{iface}: {} profile step(s) failed (above); continuing", r.failed);
        }
        rss_symmetric.push(r.rss_symmetric);
    }
    let profiles: Vec<_> = resolved.into_iter().map(|(_, p, _)| p).collect();
    Ok(Tuning { profiles, kernel, rss_symmetric })
}
