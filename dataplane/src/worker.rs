//! Pinned worker threads: one per (interface, queue), each owning its AF_XDP socket and its
//! sink outright. Nothing on this path takes a lock; counters are atomics the control plane
//! reads.
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::xsk::{SocketStats, XskQueue, RX_CHUNK};

/// One received frame as the engine sees it.
#[derive(Clone, Copy, Debug)]
pub struct RawFrame<'a> {
    /// The frame as captured (cut to the snap length).
    pub data: &'a [u8],
    /// Its length on the wire.
    pub orig_len: u32,
    /// Receive time, ns since the Unix epoch.
    pub ts_ns: u64,
    /// Which sensor saw it: the interface's position in `--iface`, or the file's in `analyze`.
    pub vantage: u16,
}

/// Where a worker hands its frames: the flow engine, a recorder, or both.
pub trait FrameSink: Send + 'static {
    fn frame(&mut self, f: &RawFrame<'_>);
    /// Frames received together, in order (at most [`RX_CHUNK`]): [`frame`](Self::frame) for
    /// each unless the sink does better with the whole lot.
    fn frames(&mut self, fs: &[RawFrame<'_>]) {
        for f in fs {
            self.frame(f);
        }
    }
    /// Our own rings dropped `lost` frames on `vantage` since the last call.
    fn capture_loss(&mut self, _vantage: u16, _lost: u64, _now_ns: u64) {}
    /// Called after each received batch (also when it was empty).
    fn batch_end(&mut self) {}
    /// Called about once per 100 ms with the current time, for timers.
    fn tick(&mut self, _now_ns: u64) {}
    fn finish(&mut self) {}
}

/// Per-queue counters the control plane exports.
#[derive(Debug, Default)]
pub struct QueueCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// Frames without our metadata (timestamped on receipt instead).
    pub no_meta: AtomicU64,
    pub rx_dropped: AtomicU64,
    pub rx_invalid_descs: AtomicU64,
    pub rx_ring_full: AtomicU64,
    pub rx_fill_ring_empty_descs: AtomicU64,
    /// The driver's `rx_queue_N_drops` and `rx_queue_N_xdp_drops` for this queue since the
    /// sockets were bound (written by the control thread, see `nicstats`).
    pub driver_drops: AtomicU64,
    pub driver_xdp_drops: AtomicU64,
    /// Of those, the frames that may have been TCP we should have seen (`--non-tcp drop`
    /// makes XDP drops our own choice): the worker puts its flows in the gap state when it
    /// grows.
    pub driver_lost: AtomicU64,
    /// Frames the interface dropped before any queue (the NIC's missed/FIFO counters,
    /// cumulative, written by the control thread): loss for every queue of the interface.
    pub iface_lost: AtomicU64,
}

impl QueueCounters {
    fn publish(&self, s: &SocketStats) {
        self.rx_dropped.store(s.rx_dropped, Relaxed);
        self.rx_invalid_descs.store(s.rx_invalid_descs, Relaxed);
        self.rx_ring_full.store(s.rx_ring_full, Relaxed);
        self.rx_fill_ring_empty_descs.store(s.rx_fill_ring_empty_descs, Relaxed);
    }
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC in ns: turns `bpf_ktime_get_ns` stamps into wall time.
pub fn monotonic_to_realtime_offset() -> u64 {
    let now = |clock| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: valid clock id and out-pointer.
        unsafe { libc::clock_gettime(clock, &raw mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    };
    now(libc::CLOCK_REALTIME).wrapping_sub(now(libc::CLOCK_MONOTONIC))
}

pub fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Pins the calling thread to `cpu`. A CPU a `cpu_set_t` cannot hold (≥ CPU_SETSIZE) is an
/// error; an offline one is refused by the kernel (EINVAL).
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("CPU {cpu} does not fit a cpu_set_t (CPU_SETSIZE {})", libc::CPU_SETSIZE),
        ));
    }
    // Safety: cpu_set_t is plain data, so all-zero is a valid empty set; `cpu` < CPU_SETSIZE
    // was checked above, so CPU_SET's index stays inside the set's bit array (libc 0.2
    // linux_l4re_shared.rs indexes it with a panicking bounds check otherwise); `set`
    // outlives the call and its size is passed with it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

pub struct Worker {
    pub xsk: XskQueue,
    pub vantage: u16,
    pub cpu: Option<usize>,
    pub counters: Arc<QueueCounters>,
    /// Workers still draining their sockets after stop (shared by all workers that hand
    /// frames to each other): a worker finishes its engine only when every peer has stopped
    /// reading, so a frame handed over during the drain is processed, not stranded.
    pub draining: Arc<AtomicUsize>,
}

/// After a receive batch that emptied the ring, the worker sleeps this long before it reads
/// again rather than waiting in poll(2). A reader waiting in poll is on the socket's wait
/// queue, and every NAPI poll that delivered frames wakes it (`__xsk_map_flush` →
/// `sock_def_readable`: on veth a wake-up, an IPI and two context switches for at most 64
/// frames); a sleeping reader is not on it, and takes what arrived meanwhile in one batch.
/// Only after a small batch (below [`COALESCE_BELOW`] of the ring), so the ring holds many
/// times what arrives in one sleep; not when busy-polling, where the reader drives NAPI.
const COALESCE: Duration = Duration::from_micros(200);
/// The share of the ring under which a batch counts as small: 1/8.
const COALESCE_BELOW: usize = 8;

/// How long a stopping worker waits for its peers to drain before it finishes anyway.
const PEER_DRAIN_WAIT: Duration = Duration::from_secs(2);

impl Worker {
    /// Runs until `stop` is set; returns the sink so the caller can flush and report it.
    pub fn spawn<S: FrameSink>(
        self,
        mut sink: S,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<JoinHandle<S>> {
        let name = format!("ww-{}-q{}", self.xsk.iface, self.xsk.queue);
        std::thread::Builder::new().name(name).spawn(move || {
            let Worker { mut xsk, vantage, cpu, counters, draining } = self;
            if let Some(cpu) = cpu {
                if let Err(e) = pin_current_thread(cpu) {
                    log::warn!("{} queue {}: cannot pin to CPU {cpu}: {e}", xsk.iface, xsk.queue);
                }
            }
            let offset = monotonic_to_realtime_offset();
            // Our socket's losses, the driver's for this queue, the interface's for all queues:
            // each growth puts the worker's flows in the gap state.
            let mut last_lost = [0u64; 3];
            let lost_now = |s: &SocketStats| {
                [s.lost(), counters.driver_lost.load(Relaxed), counters.iface_lost.load(Relaxed)]
            };
            let mut last_tick = Instant::now();
            let small_batch =
                if xsk.busy_polling() { 0 } else { xsk.batch_capacity() / COALESCE_BELOW };
            loop {
                let stopping = stop.load(Relaxed);
                // After stop, drain what is already in the ring, then leave.
                // 10 ms: frames handed over by other workers wait in the sink's inbox until
                // this loop comes round.
                let timeout = if stopping { 0 } else { 10 };
                let got = xsk.recv_batch(timeout, |chunk| {
                    debug_assert!(chunk.len() <= RX_CHUNK, "recv_batch hands at most RX_CHUNK");
                    let mut frames =
                        [RawFrame { data: &[], orig_len: 0, ts_ns: 0, vantage }; RX_CHUNK];
                    let (mut no_meta, mut bytes) = (0, 0);
                    for (rx, raw) in chunk.iter().zip(frames.iter_mut()) {
                        let (ts_ns, orig_len) = if let Some(m) = rx.meta {
                            (m.rx_ns.wrapping_add(offset), m.orig_len)
                        } else {
                            no_meta += 1;
                            (realtime_ns(), rx.data.len() as u32)
                        };
                        bytes += u64::from(orig_len);
                        *raw = RawFrame { data: rx.data, orig_len, ts_ns, vantage };
                    }
                    counters.packets.fetch_add(chunk.len() as u64, Relaxed);
                    counters.bytes.fetch_add(bytes, Relaxed);
                    if no_meta > 0 {
                        counters.no_meta.fetch_add(no_meta, Relaxed);
                    }
                    sink.frames(&frames[..chunk.len()]);
                });
                let got = match got {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                    Err(e) => {
                        log::error!("{} queue {}: receive failed: {e}", xsk.iface, xsk.queue);
                        0
                    }
                };
                sink.batch_end();
                if stopping && got == 0 {
                    break;
                }
                if !stopping && got > 0 && got < small_batch {
                    std::thread::sleep(COALESCE);
                }
                if last_tick.elapsed() >= Duration::from_millis(100) {
                    last_tick = Instant::now();
                    if let Ok(s) = xsk.stats() {
                        counters.publish(&s);
                        report_loss(&mut sink, vantage, &mut last_lost, lost_now(&s));
                    }
                    sink.tick(realtime_ns());
                }
            }
            if let Ok(s) = xsk.stats() {
                counters.publish(&s);
                report_loss(&mut sink, vantage, &mut last_lost, lost_now(&s));
            }
            finish_after_peers(&mut sink, &draining);
            sink
        })
    }
}

/// A stopped worker's last step: it leaves the draining count, keeps taking frames its peers
/// hand over until they have all stopped reading (or [`PEER_DRAIN_WAIT`] passed), then
/// finishes its sink.
pub(crate) fn finish_after_peers<S: FrameSink>(sink: &mut S, draining: &AtomicUsize) {
    draining.fetch_sub(1, Relaxed);
    let waiting = Instant::now();
    while draining.load(Relaxed) > 0 && waiting.elapsed() < PEER_DRAIN_WAIT {
        sink.batch_end();
        std::thread::sleep(Duration::from_millis(1));
    }
    sink.finish();
}

/// Tells the sink about every loss counter that grew since `last`.
pub(crate) fn report_loss<S: FrameSink>(
    sink: &mut S,
    vantage: u16,
    last: &mut [u64; 3],
    now: [u64; 3],
) {
    for (was, is) in last.iter_mut().zip(now) {
        if is > *was {
            sink.capture_loss(vantage, is - *was, realtime_ns());
            *was = is;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_beyond_cpu_setsize_is_an_error_not_a_panic() {
        for cpu in [libc::CPU_SETSIZE as usize, 5000, usize::MAX] {
            let e = pin_current_thread(cpu).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "CPU {cpu}: {e}");
        }
    }
}
