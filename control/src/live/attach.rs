//! Attaching to an interface: its index and queues, the XDP program (native, else generic),
//! host mode's pair of programs and ring, and the plan of which queues to read.
use std::ffi::CString;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use aya::programs::XdpMode;
use dataplane::host::HostWorker;
use dataplane::loader::{MetaPlacement, XdpProgram};
use dataplane::worker::QueueCounters;
use dataplane::xsk::{XskError, XskOptions, XskQueue, ZeroCopyPolicy};
use dataplane_common::XdpConfig;

use crate::cli::options::Queues;
use crate::cli::run::{RunArgs, XdpMetadataArg, XdpModeArg, ZeroCopyArg};
use crate::profile::Tuning;
use crate::stats::QueueInfo;

pub fn ifindex(name: &str) -> Result<u32> {
    let c = CString::new(name).context("interface name contains a NUL byte")?;
    // SAFETY: valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        bail!("interface {name} does not exist: check the name with `ip link`");
    }
    Ok(idx)
}

pub fn rx_queue_count(iface: &str) -> usize {
    std::fs::read_dir(format!("/sys/class/net/{iface}/queues"))
        .map(|d| {
            d.filter_map(std::result::Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count()
        })
        .unwrap_or(1)
        .max(1)
}

pub fn attach(
    prog: &mut XdpProgram,
    iface: &str,
    idx: u32,
    mode: XdpModeArg,
) -> Result<&'static str> {
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
pub fn host_reader(
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
    Ok((
        prog,
        reader,
        QueueInfo {
            iface: iface.to_string(),
            vantage,
            queue: 0,
            xdp_mode,
            copy_mode: "host",
            zero_copy_fallback: None,
            counters,
        },
        prog_id,
    ))
}

/// Each interface's index, refusing one that carries this host's own traffic unless `--host`
/// or `--allow-host-interface` says so (bad usage: nothing is attached yet).
pub fn resolve_interfaces(args: &RunArgs) -> Result<Vec<u32>> {
    let mut ifindexes = Vec::new();
    for iface in &args.ifaces {
        ifindexes.push(ifindex(iface)?);
        if let Some(why) = crate::live::host_iface::host_traffic(iface)
            .filter(|_| !args.allow_host_interface && !args.host)
        {
            return Err(crate::cli::Usage(format!(
                "{iface} carries this host's own traffic ({why}): attached there, wirewatch would take every TCP frame it receives away from the host's stack and cut the host's connections. Attach it to a span, tap or mirror port that has no addresses and no routes (see `ip addr show {iface}`, `ip route show dev {iface}`); to watch this host's own connections where they are, add --host (headers are copied to wirewatch, every frame stays with the host); a remote mirror's collector interface that carries nothing else takes --allow-host-interface"
            ))
            .into());
        }
    }
    Ok(ifindexes)
}

/// What a profile sets for the sockets that the command line has no option for.
#[derive(Clone, Copy)]
pub struct SocketTuning {
    pub frame_size: u32,
    /// Packets per busy-poll round.
    pub busy_poll_budget: u32,
}

/// A profile fills in what the command line left at its default: the XDP and zero-copy modes
/// and busy polling in `args`, the frame size and busy-poll budget in the answer.
pub fn profile_defaults(args: &mut RunArgs, tuning: Option<&Tuning>) -> SocketTuning {
    let mut frame_size = XskOptions::default().frame_size;
    let mut budget = 64;
    if let Some(t) = tuning {
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
    SocketTuning { frame_size, busy_poll_budget: budget }
}

/// The AF_XDP sockets' options (the ring size is settled once the workers are counted).
pub fn socket_options(args: &RunArgs, tuning: SocketTuning) -> XskOptions {
    XskOptions {
        ring_size: args.ring_size.unwrap_or(dataplane::xsk::AUTO_RING_MAX),
        frame_size: tuning.frame_size,
        zero_copy: match args.zero_copy {
            ZeroCopyArg::Auto => ZeroCopyPolicy::Auto,
            ZeroCopyArg::On => ZeroCopyPolicy::On,
            ZeroCopyArg::Off => ZeroCopyPolicy::Off,
        },
        busy_poll: (args.busy_poll > 0).then_some(dataplane::xsk::BusyPoll {
            usecs: args.busy_poll,
            budget: tuning.busy_poll_budget,
        }),
        // Told by the loaded program (see `span_readers`).
        meta_in_head: false,
    }
}

/// The queues to read on each interface: (name, index, queue ids). Host mode reads one ring per
/// interface (as queue 0); a profile may pick the queue ids.
pub fn plan_queues(
    args: &RunArgs,
    ifindexes: &[u32],
    tuning: Option<&Tuning>,
) -> Result<Vec<(String, u32, Vec<u32>)>> {
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
        let ids: Vec<u32> = match tuning {
            Some(t) => hw_profiles::xsk_queue_ids(&t.profiles[i], t.kernel, n as u32),
            None => (0..n as u32).collect(),
        };
        plan.push((iface.clone(), ifindexes[i], ids));
    }
    Ok(plan)
}

/// Span mode on one interface (`(name, ifindex)`): loads the XDP program, attaches it, and
/// opens and binds one AF_XDP socket per queue. Returns the program, its attach mode, the
/// sockets and the program's id (what `/healthz` compares the interface's program with).
pub fn span_readers(
    args: &RunArgs,
    config: XdpConfig,
    (iface, idx): (&str, u32),
    queue_ids: &[u32],
    xsk_opts: &XskOptions,
) -> Result<(XdpProgram, &'static str, Vec<XskQueue>, Option<u32>)> {
    let placement = match args.xdp_metadata {
        XdpMetadataArg::Auto => MetaPlacement::Auto,
        XdpMetadataArg::Area => MetaPlacement::Area,
        XdpMetadataArg::Head => MetaPlacement::Head,
    };
    let mut prog = XdpProgram::load_placed(config, args.filter.as_ref(), placement)
        .context("loading the XDP program (is the kernel ≥ 5.10 with BPF enabled?)")?;
    // Attach first: an interface owned by another XDP program is refused before any socket
    // is bound, and until the sockets are in the map the program passes frames (fail open).
    let xdp_mode = attach(&mut prog, iface, idx, args.xdp_mode)?;
    let prog_id = prog.program().info().map(|i| i.id()).ok();
    let mut xsk_opts = xsk_opts.clone();
    if let Some(why) = prog.area_refused() {
        log::warn!(
            "{iface}: the kernel refused the XDP program that passes metadata beside each frame (verifier: {why}); using the one that puts it in front of the frame"
        );
    }
    xsk_opts.meta_in_head = prog.meta_in_head();
    let mut queues = Vec::new();
    for &q in queue_ids {
        let xsk = XskQueue::open(iface, q, &xsk_opts).map_err(|e| match &e {
            XskError::Bind { source, .. } if source.raw_os_error() == Some(libc::EBUSY) => {
                anyhow::anyhow!(
                    "{iface} queue {q} already has an AF_XDP socket bound (another wirewatch or AF_XDP program?): stop it and retry"
                )
            }
            _ => anyhow::Error::new(e).context(format!("opening AF_XDP on {iface} queue {q}")),
        })?;
        if let Some(why) = &xsk.fallback_reason {
            log::warn!("{iface} queue {q}: AF_XDP in copy mode ({why})");
        }
        prog.bind_socket(q, &xsk.fd())?;
        queues.push(xsk);
    }
    log::info!(
        "{iface}: XDP attached in {xdp_mode} mode, queue(s) {queue_ids:?}, snaplen {}, metadata {}",
        args.snaplen,
        if prog.meta_in_head() { "in front of each frame" } else { "in the metadata area" }
    );
    Ok((prog, xdp_mode, queues, prog_id))
}
