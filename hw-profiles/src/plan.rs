//! A profile turned into the concrete steps for one interface: ethtool, ip and sysfs writes,
//! in the order they must happen (channels before the ring and RSS, RSS before IRQ placement).
use std::fmt::Write as _;

use crate::{IrqAffinity, KernelVersion, Profile, QueuePolicy, RssMethod, XskQueueIds, ZeroCopy};

/// What a plan is built for.
#[derive(Debug, Clone)]
pub struct PlanContext {
    pub iface: String,
    /// The worker cores, one per queue, in queue order.
    pub worker_cpus: Vec<usize>,
    pub kernel: KernelVersion,
    /// Basename of `/sys/class/net/IF/device` (a PCI address, `virtio3`…), for IRQ names.
    pub device: Option<String>,
}

/// One operation. A step lists alternatives: the first that succeeds wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A command and its arguments.
    Run(Vec<String>),
    /// Write `value` to a sysfs/procfs file.
    Write { path: String, value: String },
    /// Pin the interrupt named `irq` in `/proc/interrupts` to `cpu`.
    IrqAffinity { irq: String, cpu: usize },
    /// Nothing to do, for the reason given (the driver already behaves as wanted).
    Nothing(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What the step is for, one line.
    pub what: String,
    pub alternatives: Vec<Action>,
    /// This step makes RSS symmetric (the run trusts queue ownership only if it succeeded).
    pub rss_symmetry: bool,
}

impl Step {
    fn one(what: impl Into<String>, a: Action) -> Self {
        Self { what: what.into(), alternatives: vec![a], rss_symmetry: false }
    }

    /// The step as shell: alternatives joined with `||`.
    pub fn shell(&self) -> String {
        self.alternatives.iter().map(Action::shell).collect::<Vec<_>>().join(" || ")
    }
}

fn run(args: &[&str]) -> Action {
    Action::Run(args.iter().map(ToString::to_string).collect())
}

impl Action {
    pub fn shell(&self) -> String {
        match self {
            Action::Run(argv) => argv.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" "),
            Action::Write { path, value } => format!("echo {} > {}", shell_quote(value), shell_quote(path)),
            Action::IrqAffinity { irq, cpu } => format!(
                "echo {cpu} > /proc/irq/$(awk '$NF==\"{irq}\" {{sub(\":\",\"\",$1); print $1}}' /proc/interrupts)/smp_affinity_list"
            ),
            Action::Nothing(why) => format!("true  # {why}"),
        }
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@+".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The symmetric Toeplitz key: 0x6d5a repeated. With a 16-bit period the hash is unchanged when
/// source and destination addresses and ports swap (Woo & Park, "Scalable TCP Session
/// Monitoring with Symmetric Receive-side Scaling", KAIST 2012).
pub fn symmetric_toeplitz_key(bytes: u32) -> String {
    (0..bytes).map(|i| if i % 2 == 0 { "6d" } else { "5a" }).collect::<Vec<_>>().join(":")
}

/// The steps that apply `p` to `ctx.iface`.
pub fn plan(p: &Profile, ctx: &PlanContext) -> Vec<Step> {
    let ifc = ctx.iface.as_str();
    let n = ctx.worker_cpus.len().max(1);
    let n_s = n.to_string();
    let mut steps = Vec::new();
    if p.link.promiscuous {
        steps.push(Step::one(
            "promiscuous: a span port's frames are addressed to other hosts",
            run(&["ip", "link", "set", "dev", ifc, "promisc", "on"]),
        ));
    }
    if p.queues.policy == QueuePolicy::PerWorker {
        steps.push(Step::one(format!("{n} combined channels, one per worker core: an unbound queue's packets are never analysed"), run(&["ethtool", "-L", ifc, "combined", &n_s])));
    }
    if let Some(ring) = p.queues.rx_ring {
        steps.push(Step::one(
            format!("{ring} RX descriptors per queue: absorb bursts while a worker is busy"),
            run(&["ethtool", "-G", ifc, "rx", &ring.to_string()]),
        ));
    }
    for f in &p.offloads.disable {
        steps.push(Step::one(
            format!("{f} off: the sensor must see frames as they were on the wire"),
            run(&["ethtool", "-K", ifc, f, "off"]),
        ));
    }
    for pf in &p.private_flags {
        let v = if pf.on { "on" } else { "off" };
        steps.push(Step::one(
            format!("driver private flag {} {v}", pf.flag),
            run(&["ethtool", "--set-priv-flags", ifc, &pf.flag, v]),
        ));
    }
    if !p.rss.methods.is_empty() {
        let alternatives = p
            .rss
            .methods
            .iter()
            .map(|m| match m {
                RssMethod::SymmetricXor => {
                    run(&["ethtool", "-X", ifc, "hfunc", "toeplitz", "symmetric-xor"])
                }
                RssMethod::ToeplitzKey => run(&[
                    "ethtool",
                    "-X",
                    ifc,
                    "hfunc",
                    "toeplitz",
                    "hkey",
                    &symmetric_toeplitz_key(p.rss.key_bytes.unwrap_or(40)),
                ]),
                RssMethod::DriverDefault => {
                    Action::Nothing("the driver's Toeplitz hash is symmetric already".into())
                }
            })
            .collect();
        steps.push(Step {
            what: "symmetric RSS: both directions of a flow on one queue, so one worker owns it"
                .into(),
            alternatives,
            rss_symmetry: true,
        });
        if p.rss.hash_tcp_ports {
            for proto in ["tcp4", "tcp6"] {
                steps.push(Step::one(
                    format!("{proto} hashed on addresses and ports: flows spread over all queues"),
                    run(&["ethtool", "-N", ifc, "rx-flow-hash", proto, "sdfn"]),
                ));
            }
        }
    }
    let offset_xsk = p.xdp.xsk_queue_ids == XskQueueIds::Mlx5OffsetBefore61
        && ctx.kernel < KernelVersion(6, 1)
        && p.xdp.zero_copy == ZeroCopy::Try;
    if offset_xsk {
        steps.push(Step::one(
            format!(
                "kernel {} < 6.1: mlx5 XSK queues are {n}..{}; spread RSS over them",
                ctx.kernel,
                2 * n
            ),
            run(&["ethtool", "-X", ifc, "equal", &n_s, "start", &n_s]),
        ));
    }
    let bp = &p.busy_poll;
    if bp.enabled {
        let base = format!("/sys/class/net/{ifc}");
        steps.push(Step::one(
            format!(
                "napi_defer_hard_irqs {}: keep interrupts off while the worker busy-polls",
                bp.napi_defer_hard_irqs
            ),
            Action::Write {
                path: format!("{base}/napi_defer_hard_irqs"),
                value: bp.napi_defer_hard_irqs.to_string(),
            },
        ));
        steps.push(Step::one(
            format!("gro_flush_timeout {} ns: the safety timer that re-arms interrupts if polling stops", bp.gro_flush_timeout_ns),
            Action::Write { path: format!("{base}/gro_flush_timeout"), value: bp.gro_flush_timeout_ns.to_string() },
        ));
    }
    if let (IrqAffinity::QueueToWorker, Some(pattern)) = (p.irq.affinity, &p.irq.name) {
        for (q, &cpu) in ctx.worker_cpus.iter().enumerate() {
            let irq = pattern
                .replace("{iface}", ifc)
                .replace("{queue}", &q.to_string())
                .replace("{device}", ctx.device.as_deref().unwrap_or("DEVICE"));
            steps.push(Step::one(
                format!("queue {q}'s interrupt on worker core {cpu}"),
                Action::IrqAffinity { irq, cpu },
            ));
        }
    }
    steps
}

/// The plan as a shell script (`profile apply --dry-run`).
pub fn dry_run(p: &Profile, ctx: &PlanContext) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# wirewatch hw-profile {} for {} (kernel {}, {} worker core(s): {:?})",
        p.name,
        ctx.iface,
        ctx.kernel,
        ctx.worker_cpus.len(),
        ctx.worker_cpus
    );
    for s in plan(p, ctx) {
        let _ = writeln!(out, "# {}", s.what);
        let _ = writeln!(out, "{}", s.shell());
    }
    out
}
