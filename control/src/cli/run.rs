//! `wirewatch run`'s arguments.
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use dataplane_common::XdpConfig;

use crate::cli::options::{self, ApiToken, Bounds, CpuList, Queues};

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
    /// Where the XDP program puts each frame's metadata (its receive time, its length before
    /// the cut): `area` is the kernel's metadata area before the frame; `head` puts it in
    /// front of the frame, for kernels and drivers that refuse the area (with those, frames
    /// arrive without it: counted as `no_meta`, timed on receipt, their length unknown);
    /// `auto` tries `area` and takes `head` if the kernel refuses it, logging why.
    #[arg(long, value_enum, default_value_t = XdpMetadataArg::Auto)]
    pub xdp_metadata: XdpMetadataArg,
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
    /// Evidence kept on disk at most, the pcapng files and their report pages together (oldest
    /// files removed first, each with its page).
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
    #[arg(long = "serial", value_name = "A,B", value_parser = crate::cli::options::serial_pair)]
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
    pub(crate) fn check_outputs(&self) -> Result<(), String> {
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
    pub(crate) fn token(&self) -> Option<&ApiToken> {
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
pub enum XdpMetadataArg {
    Auto,
    Area,
    Head,
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
