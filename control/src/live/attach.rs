//! Attaching to an interface: its index and queues, the XDP program (native, else generic),
//! host mode's pair of programs and ring.
use std::ffi::CString;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use aya::programs::XdpMode;
use dataplane::host::HostWorker;
use dataplane::loader::XdpProgram;
use dataplane::worker::QueueCounters;
use dataplane_common::XdpConfig;

use crate::cli::run::{RunArgs, XdpModeArg};
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
