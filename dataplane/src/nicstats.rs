//! The driver's own receive-drop counters: what `ethtool -S IF` prints (read with the
//! SIOCETHTOOL ioctl, no `ethtool` binary needed) and the interface statistics in sysfs.
//! A frame the driver dropped never reached the XDP program; these counters are the only
//! place such loss shows up on the monitor's side.
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// include/uapi/linux/sockios.h
const SIOCETHTOOL: libc::c_ulong = 0x8946;
/// include/uapi/linux/ethtool.h: the commands and string set used here.
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETH_SS_STATS: u32 = 1;
const ETH_GSTRING_LEN: usize = 32;
/// More counters than any driver exports (mlx5 has a few thousand with many queues); a bound
/// on what one read allocates.
const MAX_STATS: u32 = 1 << 16;

/// One interface's per-queue receive drops, as its driver names them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriverDrops {
    /// `rx_queue_N_drops` (veth, virtio_net): frames dropped on receive queue N. On veth
    /// this includes frames XDP redirected into an AF_XDP socket that had no room for them
    /// (the socket counts those too, in its `XDP_STATISTICS`).
    pub queue_drops: Vec<u64>,
    /// `rx_queue_N_xdp_drops`: frames the XDP program dropped (`XDP_DROP`, i.e. `--non-tcp
    /// drop`, or an aborted program) on receive queue N.
    pub queue_xdp_drops: Vec<u64>,
}

/// Interface-wide receive drops from `/sys/class/net/IF/statistics` (absent files read 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceDrops {
    /// `rx_dropped`: frames the kernel dropped after the driver handed them over (on veth it
    /// also sums the queues' `rx_queue_N_drops`).
    pub rx_dropped: u64,
    /// `rx_missed_errors`: frames the NIC had no buffer for (its ring was full).
    pub rx_missed: u64,
    /// `rx_fifo_errors`: frames lost to the NIC's receive FIFO overflowing.
    pub rx_fifo: u64,
}

impl InterfaceDrops {
    pub fn read(iface: &str) -> Self {
        let n = |f: &str| {
            std::fs::read_to_string(format!("/sys/class/net/{iface}/statistics/{f}"))
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0)
        };
        Self {
            rx_dropped: n("rx_dropped"),
            rx_missed: n("rx_missed_errors"),
            rx_fifo: n("rx_fifo_errors"),
        }
    }

    /// Frames lost before they reached any receive queue.
    pub fn before_queues(&self) -> u64 {
        self.rx_missed + self.rx_fifo
    }
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

fn ethtool(sock: &OwnedFd, iface: &str, data: *mut libc::c_void) -> io::Result<()> {
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], data, _pad: [0; 16] };
    if iface.len() >= libc::IFNAMSIZ || iface.as_bytes().contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"));
    }
    req.name[..iface.len()].copy_from_slice(iface.as_bytes());
    // Safety: `req` is a valid struct ifreq (name NUL-terminated, ifr_data pointing at a
    // command buffer the caller sized for the command) that outlives the call.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &raw mut req) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Every `ethtool -S` counter of `iface`, by name. Drivers without statistics give an error
/// (EOPNOTSUPP).
pub fn ethtool_stats(iface: &str) -> io::Result<Vec<(String, u64)>> {
    // Safety: plain socket(2); the descriptor is owned by the OwnedFd from here on.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // Safety: a new descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };

    // struct ethtool_sset_info { u32 cmd; u32 reserved; u64 sset_mask; u32 data[]; }
    let mut info = [0u64; 3];
    info[0] = u64::from(ETHTOOL_GSSET_INFO);
    info[1] = 1 << ETH_SS_STATS;
    ethtool(&sock, iface, info.as_mut_ptr().cast())?;
    let n = if info[1] & (1 << ETH_SS_STATS) != 0 { info[2] as u32 } else { 0 };
    if n == 0 {
        return Ok(Vec::new());
    }
    let n = n.min(MAX_STATS) as usize;

    // struct ethtool_gstrings { u32 cmd; u32 string_set; u32 len; u8 data[]; }
    let mut strings = vec![0u8; 12 + n * ETH_GSTRING_LEN];
    strings[0..4].copy_from_slice(&ETHTOOL_GSTRINGS.to_ne_bytes());
    strings[4..8].copy_from_slice(&ETH_SS_STATS.to_ne_bytes());
    strings[8..12].copy_from_slice(&(n as u32).to_ne_bytes());
    ethtool(&sock, iface, strings.as_mut_ptr().cast())?;

    // struct ethtool_stats { u32 cmd; u32 n_stats; u64 data[]; }
    let mut stats = vec![0u64; 1 + n];
    stats[0] = u64::from(ETHTOOL_GSTATS) | (n as u64) << 32;
    ethtool(&sock, iface, stats.as_mut_ptr().cast())?;
    let got = ((stats[0] >> 32) as usize).min(n);

    Ok((0..got)
        .map(|i| {
            let raw = &strings[12 + i * ETH_GSTRING_LEN..12 + (i + 1) * ETH_GSTRING_LEN];
            let end = raw.iter().position(|b| *b == 0).unwrap_or(ETH_GSTRING_LEN);
            (String::from_utf8_lossy(&raw[..end]).into_owned(), stats[1 + i])
        })
        .collect())
}

impl DriverDrops {
    /// Picks the per-queue drop counters out of `ethtool -S`-style pairs.
    pub fn from_stats(stats: &[(String, u64)]) -> Self {
        let mut d = Self::default();
        for (name, v) in stats {
            let Some(rest) = name.strip_prefix("rx_queue_") else { continue };
            let Some((q, what)) = rest.split_once('_') else { continue };
            let Ok(q) = q.parse::<usize>() else { continue };
            let into = match what {
                "drops" => &mut d.queue_drops,
                "xdp_drops" => &mut d.queue_xdp_drops,
                _ => continue,
            };
            if q < 4096 {
                if into.len() <= q {
                    into.resize(q + 1, 0);
                }
                into[q] = *v;
            }
        }
        d
    }

    /// The driver's counters for `iface` (empty when the driver has none of these names).
    pub fn read(iface: &str) -> Self {
        ethtool_stats(iface).map(|s| Self::from_stats(&s)).unwrap_or_default()
    }

    pub fn drops(&self, queue: u32) -> u64 {
        self.queue_drops.get(queue as usize).copied().unwrap_or(0)
    }

    pub fn xdp_drops(&self, queue: u32) -> u64 {
        self.queue_xdp_drops.get(queue as usize).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_queue_drop_counters_are_found_by_name() {
        let s = |n: &str, v: u64| (n.to_string(), v);
        let d = DriverDrops::from_stats(&[
            s("peer_ifindex", 3),
            s("rx_queue_0_xdp_packets", 10),
            s("rx_queue_0_drops", 2),
            s("rx_queue_0_xdp_drops", 1),
            s("rx_queue_3_drops", 7),
            s("rx_queue_x_drops", 9),
            s("tx_queue_0_drops", 5),
        ]);
        assert_eq!(
            (d.drops(0), d.xdp_drops(0), d.drops(3), d.drops(1), d.drops(9)),
            (2, 1, 7, 0, 0)
        );
    }

    #[test]
    fn a_veth_reports_its_queues_through_the_ioctl() {
        if !wirewatch_testkit::netns::privileged_or_skip(
            "a_veth_reports_its_queues_through_the_ioctl",
        ) {
            return;
        }
        let mut t = wirewatch_testkit::topology::Topology::new();
        t.namespace("n", &format!("wwns{}", std::process::id())).unwrap();
        t.veth_with_queues(("n", "n0"), ("n", "n1"), 3).unwrap();
        let name = t["n"].name.clone();
        let stats = std::thread::spawn(move || {
            wirewatch_testkit::netns::enter_current_thread(&name).unwrap();
            (ethtool_stats("n0"), ethtool_stats("nosuch0").is_err())
        })
        .join()
        .unwrap();
        let (stats, missing_is_error) = stats;
        let stats = stats.unwrap();
        let d = DriverDrops::from_stats(&stats);
        assert_eq!(d.queue_drops.len(), 3, "{stats:?}");
        assert!(stats.iter().any(|(n, _)| n == "rx_queue_2_xdp_drops"), "{stats:?}");
        assert!(missing_is_error);
    }
}
