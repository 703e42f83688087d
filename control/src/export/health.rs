//! What makes `/healthz` answer 503: a worker that stopped or stands still, and an XDP (or host
//! mode's TC egress) program that is no longer the one `run` attached to an interface. Another tool (`bpftool link detach`, `ip link set dev
//! X xdp off` on a netlink attachment, an interface deleted and re-created) can remove it
//! behind our back: capture then stops with no error anywhere.
//!
//! Asked of the kernel with one rtnetlink request per interface (RTM_GETLINK for the index;
//! the answer's IFLA_XDP nest holds the attached program ids, include/uapi/linux/if_link.h).
use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::options;
use crate::stats::{QueueInfo, SharedStats};

// include/uapi/linux/rtnetlink.h, if_link.h, netlink.h.
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const IFLA_XDP: u16 = 43;
/// IFLA_XDP_PROG_ID, then the per-mode ids (DRV, SKB, HW) when several are attached.
const IFLA_XDP_PROG_IDS: [u16; 4] = [4, 5, 6, 7];
/// NLA_F_NESTED and NLA_F_NET_BYTEORDER are flags on the type.
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;

/// The ids of the XDP programs attached to interface `ifindex` (empty: none). An interface
/// that no longer exists is the error ENODEV.
pub fn xdp_prog_ids(ifindex: u32) -> io::Result<Vec<u32>> {
    // Safety: socket(2) with constant arguments; the descriptor is owned from here on.
    let fd = unsafe {
        libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE)
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // Safety: `fd` was just returned by socket(2) and is not owned elsewhere.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval { tv_sec: 1, tv_usec: 0 };
    // Safety: SO_RCVTIMEO takes a timeval, passed with its size; a kernel answer never hangs us.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    let mut req = [0u8; NLMSG_HDRLEN + IFINFOMSG_LEN];
    let len = req.len() as u32;
    req[0..4].copy_from_slice(&len.to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_GETLINK.to_ne_bytes());
    req[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // ifinfomsg: family AF_UNSPEC, type 0, then the index.
    req[NLMSG_HDRLEN + 4..NLMSG_HDRLEN + 8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    // Safety: `req` is valid for its length for the duration of the call.
    let sent = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 64 << 10];
    // Safety: `buf` is valid for writes of its length for the duration of the call.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    parse_link_reply(&buf[..n as usize])
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Netlink attributes in `b`: (type without flags, payload).
fn attributes(b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let len = u16_at(b, at)? as usize;
        let kind = u16_at(b, at + 2)? & NLA_TYPE_MASK;
        let payload = b.get(at + 4..at + len.max(4))?;
        at += len.max(4).next_multiple_of(4);
        Some((kind, payload))
    })
}

fn parse_link_reply(b: &[u8]) -> io::Result<Vec<u32>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unexpected rtnetlink answer");
    let len = u32_at(b, 0).ok_or_else(bad)? as usize;
    let kind = u16_at(b, 4).ok_or_else(bad)?;
    let msg = b.get(..len).ok_or_else(bad)?;
    if kind == NLMSG_ERROR {
        let errno = u32_at(msg, NLMSG_HDRLEN).ok_or_else(bad)? as i32;
        return Err(io::Error::from_raw_os_error(-errno));
    }
    if kind != RTM_NEWLINK {
        return Err(bad());
    }
    let attrs = msg.get(NLMSG_HDRLEN + IFINFOMSG_LEN..).ok_or_else(bad)?;
    let mut ids = Vec::new();
    for (_, xdp) in attributes(attrs).filter(|(t, _)| *t == IFLA_XDP) {
        for (t, v) in attributes(xdp) {
            if IFLA_XDP_PROG_IDS.contains(&t) {
                if let Some(id) = u32_at(v, 0).filter(|id| *id != 0 && !ids.contains(id)) {
                    ids.push(id);
                }
            }
        }
    }
    Ok(ids)
}

/// A worker whose heartbeat stands still this long is reported wedged.
const WEDGED_AFTER: Duration = Duration::from_secs(10);

/// What makes `/healthz` answer 503: a worker that stopped or stands still, an interface whose
/// XDP program is no longer ours (or gone).
pub fn problems<T>(
    queues: &[QueueInfo],
    workers: &[std::thread::JoinHandle<T>],
    stats: &[Arc<SharedStats>],
    attached: &[(String, u32, Option<u32>)],
) -> Vec<String> {
    let mut out = Vec::new();
    let now = dataplane::worker::realtime_ns();
    for ((q, w), s) in queues.iter().zip(workers).zip(stats) {
        let (iface, queue) = (&q.iface, q.queue);
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
        match xdp_prog_ids(*idx) {
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
pub fn egress_problems(attached: &[(String, Option<u32>)]) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_no_xdp_program_and_a_missing_interface_is_not_found() {
        assert_eq!(xdp_prog_ids(1).unwrap(), Vec::<u32>::new());
        let e = xdp_prog_ids(0x7fff_fff0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV), "{e}");
    }

    #[test]
    fn garbage_answers_are_errors_not_panics() {
        for b in [&[][..], &[1, 0, 0, 0], &[255; 40], &[40, 0, 0, 0, 16, 0, 0, 0]] {
            let _ = parse_link_reply(b);
        }
    }
}
