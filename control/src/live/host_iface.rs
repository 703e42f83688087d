//! Whether an interface carries this host's own traffic. The XDP program hands every TCP frame
//! an interface receives to wirewatch's AF_XDP sockets (a span or tap port's frames are copies
//! nobody else wants); on an interface the host uses for its own connections they would stop
//! reaching its TCP stack, and the half-seen handshakes would come back as `syn_unanswered`.
//! `run` refuses such an interface: one with an address other than a link-local one, or that
//! a route goes out through.
use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `iface` carries the host's own traffic, or `None` for a port without addresses and
/// routes (a span, tap or mirror port).
pub fn host_traffic(iface: &str) -> Option<String> {
    if let Some(a) = addresses(iface).into_iter().find(|a| !link_local(*a)) {
        return Some(format!("it has the address {a}"));
    }
    routes(iface).map(|r| format!("the route to {r} goes out through it"))
}

fn link_local(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => v.is_link_local(),
        IpAddr::V6(v) => v.is_unicast_link_local(),
    }
}

/// The interface's IPv4 and IPv6 addresses.
fn addresses(iface: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        if unsafe { CStr::from_ptr(ifa.ifa_name) }.to_bytes() != iface.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and its family tells which sockaddr it is.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if family == libc::AF_INET {
            // SAFETY: an AF_INET address is a sockaddr_in (read unaligned: the list only
            // promises a sockaddr's alignment).
            let sin = unsafe { ifa.ifa_addr.cast::<libc::sockaddr_in>().read_unaligned() };
            out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
        } else if family == libc::AF_INET6 {
            // SAFETY: an AF_INET6 address is a sockaddr_in6 (read unaligned, as above).
            let sin6 = unsafe { ifa.ifa_addr.cast::<libc::sockaddr_in6>().read_unaligned() };
            out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
        }
    }
    // SAFETY: the head getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// A route (other than the link-local and multicast ones every IPv6 interface has) that goes
/// out through `iface`, as "prefix/len", from the kernel's tables in /proc.
fn routes(iface: &str) -> Option<String> {
    // Iface Destination Gateway Flags RefCnt Use Metric Mask …: each address is its
    // network-order bytes read as a native integer, printed in hex.
    let v4 = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    for line in v4.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 7 && f[0] == iface {
            let word = |s: &str| u32::from_str_radix(s, 16).unwrap_or(0);
            let len = word(f[7]).count_ones();
            return Some(format!("{}/{len}", Ipv4Addr::from(word(f[1]).to_ne_bytes())));
        }
    }
    // dest plen src plen nexthop metric refcnt use flags device, in hex.
    let v6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    for line in v6.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[9] != iface {
            continue;
        }
        let (Ok(dest), Ok(len)) = (u128::from_str_radix(f[0], 16), u8::from_str_radix(f[1], 16))
        else {
            continue;
        };
        let dest = Ipv6Addr::from(dest);
        if dest.is_unicast_link_local() || dest.is_multicast() {
            continue;
        }
        return Some(format!("{dest}/{len}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::host_traffic;

    /// The loopback interface is the host's own.
    #[test]
    fn loopback_carries_host_traffic() {
        let why = host_traffic("lo").expect("lo has 127.0.0.1");
        assert!(why.contains("127.0.0.1") || why.contains("::1"), "{why}");
    }
}
