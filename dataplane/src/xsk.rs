//! One AF_XDP socket per (interface, queue): UMEM, fill ring kept topped up, batch receive,
//! socket statistics. The XDP program is ours (libxdp's own program load is inhibited).
use std::io;
use std::num::NonZeroU32;
use std::os::fd::RawFd;
use std::str::FromStr;

use dataplane_common::{XdpMeta, XDP_META_LEN};
use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

/// How the socket was bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyMode {
    ZeroCopy,
    Copy,
}

impl CopyMode {
    pub fn name(self) -> &'static str {
        match self {
            CopyMode::ZeroCopy => "zero_copy",
            CopyMode::Copy => "copy",
        }
    }
}

/// `--zero-copy auto|on|off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroCopyPolicy {
    Auto,
    On,
    Off,
}

#[derive(Clone, Debug)]
pub struct XskOptions {
    /// Frames in the fill and RX rings (power of two).
    pub ring_size: u32,
    /// UMEM frame size (power of two; 2048 or 4096).
    pub frame_size: u32,
    pub zero_copy: ZeroCopyPolicy,
    /// `SO_PREFER_BUSY_POLL` + `SO_BUSY_POLL` (µs) + `SO_BUSY_POLL_BUDGET`, when set.
    pub busy_poll: Option<BusyPoll>,
    /// The XDP program puts its metadata at the start of each frame rather than before it
    /// ([`XdpProgram::meta_in_head`](crate::loader::XdpProgram::meta_in_head)).
    pub meta_in_head: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct BusyPoll {
    pub usecs: u32,
    pub budget: u32,
}

/// Bytes of socket buffers (UMEM) all queues together get by default.
pub const AUTO_UMEM_BUDGET: u64 = 256 << 20;
/// The default ring size's range: 16,384 frames hold a burst of ~8 ms at 2 Mpps while a
/// worker is off its CPU (the live tests lose frames at 4,096 on a shared two-CPU machine and
/// none at 16,384); 2,048 is the least any queue gets.
pub const AUTO_RING_MAX: u32 = 16384;
pub const AUTO_RING_MIN: u32 = 2048;

/// The default ring size for `queues` sockets with `frame_size`-byte frames: the largest
/// power of two up to [`AUTO_RING_MAX`] whose UMEMs (two frames per ring slot: one on the fill
/// ring, one in the RX ring or being processed) fit [`AUTO_UMEM_BUDGET`] together, and at
/// least [`AUTO_RING_MIN`].
pub fn auto_ring_size(queues: usize, frame_size: u32) -> u32 {
    let per_queue = AUTO_UMEM_BUDGET / (queues.max(1) as u64 * 2 * u64::from(frame_size.max(1)));
    let mut ring = AUTO_RING_MAX;
    while ring > AUTO_RING_MIN && u64::from(ring) > per_queue {
        ring /= 2;
    }
    ring
}

impl Default for XskOptions {
    fn default() -> Self {
        Self {
            ring_size: 4096,
            frame_size: 2048,
            zero_copy: ZeroCopyPolicy::Auto,
            busy_poll: None,
            meta_in_head: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum XskError {
    #[error("invalid AF_XDP setting: {0}")]
    Config(String),
    #[error("creating the UMEM for {iface} queue {queue}: {source}")]
    Umem { iface: String, queue: u32, source: io::Error },
    #[error("binding an AF_XDP socket to {iface} queue {queue} ({mode}): {source}")]
    Bind { iface: String, queue: u32, mode: &'static str, source: io::Error },
    #[error("setting busy polling on {iface} queue {queue}: {source}")]
    BusyPoll { iface: String, queue: u32, source: io::Error },
}

/// Frames [`XskQueue::recv_batch`] hands over at a time.
pub const RX_CHUNK: usize = 64;

/// A received frame: what the XDP program left in front of it, and the bytes.
#[derive(Clone, Copy)]
pub struct RxFrame<'a> {
    pub meta: Option<XdpMeta>,
    pub data: &'a [u8],
}

/// Cumulative `XDP_STATISTICS` of one socket: `getsockopt(SOL_XDP, XDP_STATISTICS)` fills
/// `struct xdp_statistics` (include/uapi/linux/if_xdp.h; the three ring counters since Linux
/// 5.9). In copy mode `rx_dropped` counts frames for which the fill ring had no buffer
/// (net/xdp/xsk.c `__xsk_rcv`), `rx_ring_full` frames the RX ring had no room for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketStats {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
}

impl SocketStats {
    /// Frames the kernel had for us and could not deliver: our own capture loss.
    pub fn lost(&self) -> u64 {
        self.rx_dropped + self.rx_ring_full
    }
}

pub struct XskQueue {
    pub iface: String,
    pub queue: u32,
    pub mode: CopyMode,
    /// Why zero-copy was not used, when it was asked for (`auto`) and refused.
    pub fallback_reason: Option<String>,
    umem: Umem,
    fq: FillQueue,
    _cq: CompQueue,
    rx: RxQueue,
    _tx: TxQueue,
    /// Frames owned by user space (not on the fill ring).
    free: Vec<FrameDesc>,
    batch: Vec<FrameDesc>,
    busy_polling: bool,
    /// See [`XskOptions::meta_in_head`].
    meta_in_head: bool,
}

impl XskQueue {
    /// Creates and binds the socket. With `ZeroCopyPolicy::Auto` a refused zero-copy bind
    /// falls back to copy mode and records why.
    pub fn open(iface: &str, queue: u32, opts: &XskOptions) -> Result<Self, XskError> {
        match opts.zero_copy {
            ZeroCopyPolicy::On => Self::open_mode(iface, queue, opts, CopyMode::ZeroCopy),
            ZeroCopyPolicy::Off => Self::open_mode(iface, queue, opts, CopyMode::Copy),
            ZeroCopyPolicy::Auto => match Self::open_mode(iface, queue, opts, CopyMode::ZeroCopy) {
                Ok(q) => Ok(q),
                Err(XskError::Bind { source, .. }) => {
                    let mut q = Self::open_mode(iface, queue, opts, CopyMode::Copy)?;
                    q.fallback_reason = Some(format!("driver refused zero-copy: {source}"));
                    Ok(q)
                }
                Err(e) => Err(e),
            },
        }
    }

    fn open_mode(
        iface: &str,
        queue: u32,
        opts: &XskOptions,
        mode: CopyMode,
    ) -> Result<Self, XskError> {
        let cfg_err = |e: &dyn std::fmt::Display| XskError::Config(e.to_string());
        let ring = QueueSize::new(opts.ring_size).map_err(|e| cfg_err(&e))?;
        let umem_cfg = UmemConfig::builder()
            .frame_size(FrameSize::new(opts.frame_size).map_err(|e| cfg_err(&e))?)
            .fill_queue_size(ring)
            .comp_queue_size(ring)
            .frame_headroom(0)
            .build()
            .map_err(|e| cfg_err(&e))?;
        let frames = NonZeroU32::new(opts.ring_size * 2).ok_or_else(|| cfg_err(&"ring size 0"))?;
        let (umem, descs) = Umem::new(umem_cfg, frames, false).map_err(|e| XskError::Umem {
            iface: iface.into(),
            queue,
            source: io::Error::other(e.to_string()),
        })?;
        let bind = BindFlags::XDP_USE_NEED_WAKEUP
            | match mode {
                CopyMode::ZeroCopy => BindFlags::XDP_ZEROCOPY,
                CopyMode::Copy => BindFlags::XDP_COPY,
            };
        let sock_cfg = SocketConfig::builder()
            .rx_queue_size(ring)
            .tx_queue_size(QueueSize::new(64).map_err(|e| cfg_err(&e))?)
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(bind)
            .build();
        let name = Interface::from_str(iface).map_err(|e| cfg_err(&e))?;
        // SAFETY: the UMEM is new and not shared, so no other socket is bound with it.
        let (tx, rx, rings) =
            unsafe { Socket::new(sock_cfg, &umem, &name, queue) }.map_err(|e| {
                let source = std::error::Error::source(&e)
                    .and_then(|s| s.downcast_ref::<io::Error>())
                    .map_or_else(
                        || io::Error::other(e.to_string()),
                        |s| io::Error::from_raw_os_error(s.raw_os_error().unwrap_or(libc::EINVAL)),
                    );
                XskError::Bind { iface: iface.into(), queue, mode: mode.name(), source }
            })?;
        let (mut fq, cq) = rings.ok_or_else(|| cfg_err(&"UMEM already bound"))?;
        let mut free = descs;
        let initial = free.split_off(free.len() - opts.ring_size as usize);
        // SAFETY: the descriptors come from this UMEM and are not in use.
        let produced = unsafe { fq.produce(&initial) };
        if produced != initial.len() {
            return Err(cfg_err(&"fill ring refused its initial frames"));
        }
        let mut q = Self {
            iface: iface.into(),
            queue,
            mode,
            fallback_reason: None,
            umem,
            fq,
            _cq: cq,
            rx,
            _tx: tx,
            batch: free.clone(),
            free,
            busy_polling: opts.busy_poll.is_some(),
            meta_in_head: opts.meta_in_head,
        };
        // One receive takes as much as the RX ring can hold, so a burst that filled it is taken
        // in one go (and its frames go back to the fill ring together).
        q.batch.truncate(opts.ring_size as usize);
        if let Some(bp) = opts.busy_poll {
            q.set_busy_poll(bp)?;
        }
        Ok(q)
    }

    /// The most frames one `recv_batch` takes (the RX ring's size).
    pub fn batch_capacity(&self) -> usize {
        self.batch.len()
    }

    /// The socket busy-polls its queue (`--busy-poll`): its reader drives NAPI itself.
    pub fn busy_polling(&self) -> bool {
        self.busy_polling
    }

    fn set_busy_poll(&self, bp: BusyPoll) -> Result<(), XskError> {
        // include/uapi/asm-generic/socket.h, since Linux 5.11 ("net: introduce preferred
        // busy-polling", "net: add SO_BUSY_POLL_BUDGET socket option"); libc lacks them.
        const SO_PREFER_BUSY_POLL: libc::c_int = 69;
        const SO_BUSY_POLL_BUDGET: libc::c_int = 70;
        for (opt, val) in [
            (SO_PREFER_BUSY_POLL, 1),
            (libc::SO_BUSY_POLL, bp.usecs as i32),
            (SO_BUSY_POLL_BUDGET, bp.budget as i32),
        ] {
            // SAFETY: valid fd and a c_int option value.
            let r = unsafe {
                libc::setsockopt(
                    self.fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&raw const val).cast::<libc::c_void>(),
                    size_of::<i32>() as libc::socklen_t,
                )
            };
            if r != 0 {
                return Err(XskError::BusyPoll {
                    iface: self.iface.clone(),
                    queue: self.queue,
                    source: io::Error::last_os_error(),
                });
            }
        }
        Ok(())
    }

    pub fn fd(&self) -> RawFd {
        self.rx.fd().as_raw_fd()
    }

    /// Takes what the RX ring holds (waiting up to `timeout_ms` only when it is empty), hands
    /// the frames to `f` in order, at most [`RX_CHUNK`] at a time, and returns them to the fill
    /// ring after the last chunk. Returns how many frames were received.
    ///
    /// The fill ring is topped up *before* the batch is processed: the UMEM has twice the
    /// ring's frames, so while the worker processes a full batch the kernel still has a full
    /// fill ring for the next burst (an empty one is `rx_fill_ring_empty_descs`, and the frames
    /// it costs are `rx_dropped`).
    pub fn recv_batch(
        &mut self,
        timeout_ms: i32,
        mut f: impl FnMut(&[RxFrame<'_>]),
    ) -> io::Result<usize> {
        // SAFETY: the batch descriptors belong to this UMEM and are user-owned.
        let mut n = unsafe { self.rx.consume(&mut self.batch) };
        if n == 0 {
            // Nothing ready: sleep in poll(2) instead of spinning (one syscall per idle wait,
            // none per batch while traffic flows).
            self.refill();
            if !self.rx.poll(timeout_ms)? {
                return Ok(0);
            }
            // SAFETY: as above.
            n = unsafe { self.rx.consume(&mut self.batch) };
        }
        self.refill();
        let mut chunk = [RxFrame { meta: None, data: &[] }; RX_CHUNK];
        let mut k = 0;
        for desc in &self.batch[..n] {
            // SAFETY: the kernel handed this frame to us; nobody else touches it until it
            // goes back on the fill ring below, after the last chunk was handed to `f`.
            let data = unsafe { self.umem.data(desc) };
            let mut bytes = data.contents();
            // The metadata sits right before the packet, inside XDP_PACKET_HEADROOM of the
            // same UMEM frame, so the read stays within the mapping; or it begins the frame.
            let meta = if self.meta_in_head {
                let m = bytes.get(..XDP_META_LEN).and_then(XdpMeta::from_bytes);
                if m.is_some() {
                    bytes = &bytes[XDP_META_LEN..];
                }
                m
            } else if desc.addr() >= XDP_META_LEN {
                // SAFETY: as the comment above says, the XDP_META_LEN bytes before the packet
                // lie inside this frame's headroom (desc.addr() >= XDP_META_LEN), in our UMEM.
                let m = unsafe {
                    std::slice::from_raw_parts(bytes.as_ptr().sub(XDP_META_LEN), XDP_META_LEN)
                };
                XdpMeta::from_bytes(m)
            } else {
                None
            };
            chunk[k] = RxFrame { meta, data: bytes };
            k += 1;
            if k == RX_CHUNK {
                f(&chunk);
                k = 0;
            }
        }
        if k > 0 {
            f(&chunk[..k]);
        }
        self.free.extend_from_slice(&self.batch[..n]);
        self.refill();
        Ok(n)
    }

    fn refill(&mut self) {
        let want = self.fq.nb_free(self.free.len() as u32) as usize;
        let want = want.min(self.free.len());
        if want == 0 {
            return;
        }
        let start = self.free.len() - want;
        // SAFETY: frames from this UMEM that user space has finished with.
        let n = unsafe { self.fq.produce(&self.free[start..]) };
        self.free.truncate(self.free.len() - n);
        if n > 0 && self.fq.needs_wakeup() {
            let _ = self.fq.wakeup(self.rx.fd_mut(), 0);
        }
    }

    pub fn stats(&self) -> io::Result<SocketStats> {
        let s = self.rx.fd().xdp_statistics()?;
        Ok(SocketStats {
            rx_dropped: s.rx_dropped(),
            rx_invalid_descs: s.rx_invalid_descs(),
            rx_ring_full: s.rx_ring_full(),
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs(),
        })
    }
}

use std::os::fd::AsRawFd as _;

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_ring_shrinks_with_the_queue_count_within_its_budget() {
        use super::auto_ring_size;
        assert_eq!(auto_ring_size(1, 2048), 16384);
        assert_eq!(auto_ring_size(4, 2048), 16384); // 4 × 64 MiB = 256 MiB
        assert_eq!(auto_ring_size(8, 2048), 8192);
        assert_eq!(auto_ring_size(5, 4096), 4096);
        assert_eq!(auto_ring_size(256, 2048), 2048); // the floor, over the budget
        assert_eq!(auto_ring_size(0, 2048), 16384);
    }
}
