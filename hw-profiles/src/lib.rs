//! NIC tuning profiles for tap and span sensors: one TOML file per NIC class (the data, in
//! `profiles/`), their schema and validation, matching a profile to an interface, and the plan of
//! ethtool / ip / sysfs steps that applies one. Executing the plan is the binary's job; this crate
//! only reads sysfs (for detection) and builds commands, so everything here is testable anywhere.
use std::fmt;
use std::path::Path;

use serde::Deserialize;

pub mod plan;
pub mod sysfs;

pub use plan::{plan, Action, PlanContext, Step};

/// The profiles shipped inside the binary: (name, TOML text).
pub const BUILTIN: &[(&str, &str)] = &[
    ("connectx-4lx", include_str!("../profiles/connectx-4lx.toml")),
    ("connectx-5", include_str!("../profiles/connectx-5.toml")),
    ("connectx-6dx", include_str!("../profiles/connectx-6dx.toml")),
    ("connectx-7", include_str!("../profiles/connectx-7.toml")),
    ("intel-e810", include_str!("../profiles/intel-e810.toml")),
    ("intel-x710", include_str!("../profiles/intel-x710.toml")),
    ("virtio-net", include_str!("../profiles/virtio-net.toml")),
    ("veth", include_str!("../profiles/veth.toml")),
];

/// One NIC class. Field documentation is the schema; `docs/hw-profiles.md` shows a full file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Must equal the file name without `.toml`.
    pub name: String,
    pub description: String,
    /// Link speeds this class is tuned for, in Gb/s.
    pub speeds_gbps: Vec<u32>,
    #[serde(rename = "match")]
    pub matches: Match,
    pub queues: Queues,
    pub xdp: Xdp,
    pub busy_poll: BusyPoll,
    pub rss: Rss,
    pub offloads: Offloads,
    pub link: Link,
    pub irq: Irq,
    /// Driver private flags (`ethtool --set-priv-flags`), in the order they are set.
    #[serde(default)]
    pub private_flags: Vec<PrivateFlag>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Kernel driver names (`ethtool -i`, `/sys/class/net/IF/device/driver`).
    pub drivers: Vec<String>,
    /// PCI `vendor:device` ids in lower-case hex (`15b3:101d`). Empty: any device of the driver.
    #[serde(default)]
    pub pci_ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum QueuePolicy {
    /// One combined channel per worker core: every queue has a worker, none is left unbound.
    PerWorker,
    /// Leave the channel count alone (virtual devices whose queues are not RSS queues).
    Keep,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Queues {
    pub policy: QueuePolicy,
    /// RX descriptors per queue (`ethtool -G IF rx N`); absent: the driver's default stays.
    pub rx_ring: Option<u32>,
    /// The driver's maximum, for validation and for the operator.
    pub rx_ring_max: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum XdpMode {
    Native,
    Generic,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ZeroCopy {
    /// Ask for zero-copy, fall back to copy mode with a log line.
    Try,
    /// Copy mode only (the driver has no zero-copy AF_XDP).
    Off,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum XskQueueIds {
    /// XSK sockets bind the regular RX queue ids 0..N.
    Same,
    /// mlx5 before Linux 6.1: XSK RQs are ids N..2N (N = channels); from 6.1 they are 0..N
    /// (commit 3db4c85cde7a, "net/mlx5e: xsk: Use queue indices starting from 0 for XSK queues").
    #[serde(rename = "mlx5-offset-before-6.1")]
    Mlx5OffsetBefore61,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Xdp {
    pub mode: XdpMode,
    pub zero_copy: ZeroCopy,
    /// UMEM frame size in bytes: a power of two from 2048 to 65536.
    pub frame_size: u32,
    pub xsk_queue_ids: XskQueueIds,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BusyPoll {
    pub enabled: bool,
    /// `/sys/class/net/IF/napi_defer_hard_irqs`.
    pub napi_defer_hard_irqs: u32,
    /// `/sys/class/net/IF/gro_flush_timeout`, nanoseconds.
    pub gro_flush_timeout_ns: u64,
    /// `SO_BUSY_POLL_BUDGET`: packets per busy-poll round.
    pub budget: u32,
    /// `SO_BUSY_POLL`: microseconds per poll.
    pub usecs: u32,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RssMethod {
    /// `ethtool -X IF hfunc toeplitz symmetric-xor` (input_xfrm, Linux 6.8+ and driver support).
    SymmetricXor,
    /// Toeplitz with the repeating 0x6d5a key, symmetric for IPv4/IPv6 address and port swaps.
    ToeplitzKey,
    /// Nothing to set: the driver's default Toeplitz is already symmetric.
    DriverDefault,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rss {
    /// Tried in order until one works; empty: the NIC cannot hash symmetrically and workers hand
    /// packets to the flow's owner.
    pub methods: Vec<RssMethod>,
    /// Hash key length in bytes for `toeplitz-key` (40 on mlx5, 52 on ice/i40e).
    pub key_bytes: Option<u32>,
    /// Also hash TCP on addresses and ports (`ethtool -N IF rx-flow-hash tcp4 sdfn`).
    pub hash_tcp_ports: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Offloads {
    /// `ethtool -K` feature names to switch off, one step each.
    pub disable: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub promiscuous: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum IrqAffinity {
    /// Queue i's interrupt on worker core i (the core that busy-polls it).
    QueueToWorker,
    /// No interrupts to place (virtual devices).
    None,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Irq {
    pub affinity: IrqAffinity,
    /// The queue interrupt's name in `/proc/interrupts`, with `{iface}`, `{device}` (the
    /// basename of `/sys/class/net/IF/device`) and `{queue}` filled in.
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrivateFlag {
    pub flag: String,
    pub on: bool,
}

/// Why a profile was rejected: the file, the key and the problem, all three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: key `{key}`: {problem}")]
pub struct ProfileError {
    pub file: String,
    pub key: String,
    pub problem: String,
}

impl Profile {
    /// Parses and validates one profile; `file` names it in errors and must be `NAME.toml`.
    pub fn parse(file: &str, text: &str) -> Result<Self, ProfileError> {
        let p: Profile = toml::from_str(text).map_err(|e| de_error(file, text, &e))?;
        p.validate(file)?;
        Ok(p)
    }

    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ProfileError {
            file: file.clone(),
            key: "-".into(),
            problem: format!("cannot read: {e}"),
        })?;
        Self::parse(&file, &text)
    }

    fn validate(&self, file: &str) -> Result<(), ProfileError> {
        let bad = |key: &str, problem: String| {
            Err(ProfileError { file: file.to_string(), key: key.to_string(), problem })
        };
        let stem = Path::new(file).file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if self.name != stem {
            return bad("name", format!("\"{}\" differs from the file name \"{stem}\"", self.name));
        }
        if self.name.is_empty()
            || !self.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return bad("name", "must be lower-case letters, digits and '-'".into());
        }
        if self.speeds_gbps.is_empty() || self.speeds_gbps.iter().any(|&s| s == 0 || s > 800) {
            return bad(
                "speeds_gbps",
                "list the link speeds (1..=800 Gb/s) this class is tuned for".into(),
            );
        }
        if self.matches.drivers.is_empty()
            || self.matches.drivers.iter().any(|d| d.is_empty() || d.contains(char::is_whitespace))
        {
            return bad("match.drivers", "list at least one kernel driver name".into());
        }
        for id in &self.matches.pci_ids {
            if parse_pci_id(id).is_none() {
                return bad("match.pci_ids", format!("\"{id}\" is not a PCI id like \"15b3:101d\" (lower-case hex vendor:device)"));
            }
        }
        if let Some(max) = self.queues.rx_ring_max {
            if !(64..=65536).contains(&max) {
                return bad("queues.rx_ring_max", format!("{max} is outside 64..=65536"));
            }
        }
        if let Some(ring) = self.queues.rx_ring {
            let max = self.queues.rx_ring_max.unwrap_or(65536);
            if ring < 64 || ring > max || ring % 32 != 0 {
                return bad(
                    "queues.rx_ring",
                    format!("{ring} must be a multiple of 32 from 64 to rx_ring_max ({max})"),
                );
            }
        }
        if !self.xdp.frame_size.is_power_of_two() || !(2048..=65536).contains(&self.xdp.frame_size)
        {
            return bad(
                "xdp.frame_size",
                format!(
                    "{} must be a power of two from 2048 to 65536 (AF_XDP aligned chunks)",
                    self.xdp.frame_size
                ),
            );
        }
        let bp = &self.busy_poll;
        if bp.napi_defer_hard_irqs > 1000 {
            return bad("busy_poll.napi_defer_hard_irqs", format!("{} is implausible (the kernel doc uses 2; above 1000 interrupts never come back)", bp.napi_defer_hard_irqs));
        }
        if bp.gro_flush_timeout_ns > 10_000_000 {
            return bad("busy_poll.gro_flush_timeout_ns", format!("{} ns is above 10 ms: a missed busy-poll round would stall the queue that long", bp.gro_flush_timeout_ns));
        }
        if bp.enabled && (bp.budget == 0 || bp.budget > 1024) {
            return bad(
                "busy_poll.budget",
                format!("{} must be 1..=1024 packets per round", bp.budget),
            );
        }
        if bp.enabled && (bp.usecs == 0 || bp.usecs > 1000) {
            return bad("busy_poll.usecs", format!("{} must be 1..=1000 µs", bp.usecs));
        }
        if self.rss.methods.contains(&RssMethod::ToeplitzKey) {
            match self.rss.key_bytes {
                Some(n) if n >= 12 && n % 4 == 0 && n <= 128 => {}
                other => return bad("rss.key_bytes", format!("{other:?}: toeplitz-key needs the driver's key length (a multiple of 4, e.g. 40 or 52)")),
            }
        }
        let mut seen = Vec::new();
        for m in &self.rss.methods {
            if seen.contains(m) {
                return bad("rss.methods", format!("{m:?} is listed twice"));
            }
            seen.push(*m);
        }
        for f in &self.offloads.disable {
            if f.is_empty()
                || !f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return bad("offloads.disable", format!("\"{f}\" is not an ethtool feature name"));
            }
        }
        match (self.irq.affinity, &self.irq.name) {
            (IrqAffinity::QueueToWorker, None) => {
                return bad("irq.name", "queue-to-worker needs the interrupt name pattern".into())
            }
            (IrqAffinity::QueueToWorker, Some(n)) if !n.contains("{queue}") => {
                return bad("irq.name", format!("\"{n}\" lacks {{queue}}"))
            }
            _ => {}
        }
        for (i, pf) in self.private_flags.iter().enumerate() {
            if pf.flag.is_empty()
                || !pf.flag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return bad(
                    &format!("private_flags[{i}].flag"),
                    format!("\"{}\" is not a private flag name", pf.flag),
                );
            }
        }
        Ok(())
    }

    /// True when `driver` (and the PCI id, when the profile lists ids) is this class.
    pub fn matches(&self, driver: &str, pci_id: Option<&str>) -> MatchQuality {
        if !self.matches.drivers.iter().any(|d| d == driver) {
            return MatchQuality::No;
        }
        match pci_id {
            Some(id) if self.matches.pci_ids.iter().any(|p| p == id) => MatchQuality::Device,
            _ if self.matches.pci_ids.is_empty() => MatchQuality::Driver,
            _ => MatchQuality::DriverOnly,
        }
    }

    /// Whether both directions of a flow land on one queue once the profile is applied.
    pub fn symmetric_rss(&self) -> bool {
        !self.rss.methods.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MatchQuality {
    No,
    /// The driver matches but the device is not in the profile's list.
    DriverOnly,
    /// The driver matches and the profile covers every device of it.
    Driver,
    /// Driver and PCI id match.
    Device,
}

/// `"15b3:101d"` → (0x15b3, 0x101d); lower-case only, so ids compare as strings.
pub fn parse_pci_id(s: &str) -> Option<(u16, u16)> {
    let (v, d) = s.split_once(':')?;
    let ok = |x: &str| {
        x.len() == 4 && x.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !ok(v) || !ok(d) {
        return None;
    }
    Some((u16::from_str_radix(v, 16).ok()?, u16::from_str_radix(d, 16).ok()?))
}

/// A TOML error turned into file / key / problem: the key is found from the error's span (the
/// table header above it and the key on its line).
fn de_error(file: &str, text: &str, e: &toml::de::Error) -> ProfileError {
    let problem = e.message().trim().to_string();
    let key = e.span().map_or_else(|| "-".into(), |span| key_at(text, span.start));
    // toml reports a missing field at the table's span; name the field from the message.
    let key = match problem.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
        Some(field) if key == "-" || !key.ends_with(field) => join_key(&key, field),
        _ => key,
    };
    ProfileError { file: file.to_string(), key, problem }
}

fn join_key(table: &str, field: &str) -> String {
    if table == "-" || table.is_empty() {
        field.to_string()
    } else {
        format!("{table}.{field}")
    }
}

/// The dotted key whose line contains byte `offset`: `[table]` headers above it plus the key.
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let mut table = String::new();
    for line in text[..line_start].lines() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix("[[").and_then(|h| h.split("]]").next()) {
            table = h.trim().to_string();
        } else if let Some(h) = t.strip_prefix('[').and_then(|h| h.split(']').next()) {
            table = h.trim().to_string();
        }
    }
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    if line.starts_with('[') {
        return line.trim_matches(|c| c == '[' || c == ']').trim().to_string();
    }
    match line.split_once('=') {
        Some((k, _)) => join_key(&table, k.trim()),
        None if table.is_empty() => "-".into(),
        None => table,
    }
}

/// All profiles: the built-in ones, then every `*.toml` in `dir` (a file with a built-in name
/// replaces it). Any invalid file is an error: a sensor must not run on half its profiles.
pub fn all(dir: Option<&Path>) -> Result<Vec<Profile>, ProfileError> {
    let mut out = Vec::new();
    for (name, text) in BUILTIN {
        out.push(Profile::parse(&format!("{name}.toml"), text)?);
    }
    if let Some(dir) = dir {
        let entries = std::fs::read_dir(dir).map_err(|e| ProfileError {
            file: dir.display().to_string(),
            key: "-".into(),
            problem: format!("cannot list the profile directory: {e}"),
        })?;
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            let p = Profile::load(&path)?;
            out.retain(|q| q.name != p.name);
            out.push(p);
        }
    }
    Ok(out)
}

/// A Linux release as (major, minor), from `uname -r` text like `6.18.0-1-amd64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion(pub u32, pub u32);

impl KernelVersion {
    pub fn parse(release: &str) -> Option<Self> {
        let mut it = release.split(|c: char| !c.is_ascii_digit());
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        Some(Self(major, minor))
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// The XSK queue ids to bind for RX queues `0..channels` under this profile and kernel.
pub fn xsk_queue_ids(p: &Profile, kernel: KernelVersion, channels: u32) -> Vec<u32> {
    match p.xdp.xsk_queue_ids {
        XskQueueIds::Mlx5OffsetBefore61
            if kernel < KernelVersion(6, 1) && p.xdp.zero_copy == ZeroCopy::Try =>
        {
            (channels..2 * channels).collect()
        }
        _ => (0..channels).collect(),
    }
}
