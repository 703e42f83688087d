//! Host mode's reader: one thread per interface drains the BPF ring buffer that the host-mode
//! XDP program (frames arriving) and TC egress program (frames leaving) copy headers into, and
//! hands each frame to its sink like an AF_XDP worker does. The host's own traffic is never
//! taken from it: the programs only copy.
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aya::maps::{MapData, RingBuf};
use dataplane_common::{HostRecordHeader, Outcome};

use crate::loader::CounterReader;
use crate::worker::{
    finish_after_peers, monotonic_to_realtime_offset, pin_current_thread, realtime_ns, report_loss,
    FrameSink, QueueCounters, RawFrame,
};

/// The ring per interface: ~87,000 records of the default snap length, a burst of about 90 ms
/// at a million TCP frames per second while the reader is off its CPU.
pub const RING_BYTES: u32 = 16 << 20;

/// How long a reader that emptied the ring lets records gather before it reads again.
const BUSY_PAUSE: Duration = Duration::from_millis(1);

/// Records handed to the sink between two `batch_end` calls at most, so frames other workers
/// hand over and the ticks are not starved by a ring that never empties.
const BATCH: usize = 256;

pub struct HostWorker {
    pub iface: String,
    pub ring: RingBuf<MapData>,
    /// The programs' outcome counters: ring losses are read here.
    pub outcomes: CounterReader,
    pub vantage: u16,
    pub cpu: Option<usize>,
    /// `packets`/`bytes` as an AF_XDP queue's; records the reader could not decode in
    /// `rx_invalid_descs`; the driver's and interface's losses as for a queue.
    pub counters: Arc<QueueCounters>,
    /// As [`crate::worker::Worker::draining`].
    pub draining: Arc<AtomicUsize>,
}

impl HostWorker {
    /// Runs until `stop` is set and the ring is empty; returns the sink.
    pub fn spawn<S: FrameSink>(
        self,
        mut sink: S,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<JoinHandle<S>> {
        let name = format!("ww-{}-host", self.iface);
        std::thread::Builder::new().name(name).spawn(move || {
            let HostWorker { iface, mut ring, outcomes, vantage, cpu, counters, draining } = self;
            if let Some(cpu) = cpu {
                if let Err(e) = pin_current_thread(cpu) {
                    log::warn!("{iface} host reader: cannot pin to CPU {cpu}: {e}");
                }
            }
            let offset = monotonic_to_realtime_offset();
            // Records the ring had no room for (or could not be filled), the driver's losses
            // for queue 0 and the interface's: each growth puts the worker's flows in the gap
            // state.
            let mut last_lost = [0u64; 3];
            let lost_now = || {
                let ring = [Outcome::HostRingFull, Outcome::HostCopyFailed]
                    .iter()
                    .filter_map(|o| outcomes.get(*o).ok())
                    .sum::<u64>();
                [ring, counters.driver_lost.load(Relaxed), counters.iface_lost.load(Relaxed)]
            };
            let mut last_tick = Instant::now();
            loop {
                let stopping = stop.load(Relaxed);
                let mut got = 0;
                while got < BATCH {
                    let Some(record) = ring.next() else { break };
                    got += 1;
                    let Some((h, data)) = HostRecordHeader::split(&record) else {
                        counters.rx_invalid_descs.fetch_add(1, Relaxed);
                        continue;
                    };
                    counters.packets.fetch_add(1, Relaxed);
                    counters.bytes.fetch_add(u64::from(h.orig_len), Relaxed);
                    let ts_ns = h.ts_ns.wrapping_add(offset);
                    sink.frame(&RawFrame { data, orig_len: h.orig_len, ts_ns, vantage });
                }
                sink.batch_end();
                if stopping && got == 0 {
                    break;
                }
                if got == 0 {
                    // 10 ms, as an AF_XDP worker waits: frames handed over by other workers
                    // wait in the sink's inbox until this loop comes round.
                    if let Err(e) = wait_readable(&ring, if stopping { 0 } else { 10 }) {
                        log::error!("{iface} host reader: poll failed: {e}");
                    }
                } else if got < BATCH && !stopping {
                    // Drained while traffic flows: let records gather instead of being woken
                    // for the next one (each wake-up is an irq_work and a context switch).
                    std::thread::sleep(BUSY_PAUSE);
                }
                if last_tick.elapsed() >= Duration::from_millis(100) {
                    last_tick = Instant::now();
                    report_loss(&mut sink, vantage, &mut last_lost, lost_now());
                    sink.tick(realtime_ns());
                }
            }
            report_loss(&mut sink, vantage, &mut last_lost, lost_now());
            finish_after_peers(&mut sink, &draining);
            sink
        })
    }
}

/// Waits up to `timeout_ms` for the ring to hold a record (the kernel wakes the ring's epoll
/// waiters on submit, kernel/bpf/ringbuf.c `bpf_ringbuf_notify`). An interrupted wait is a
/// short one.
fn wait_readable(ring: &RingBuf<MapData>, timeout_ms: i32) -> std::io::Result<()> {
    let mut pfd = libc::pollfd { fd: ring.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // Safety: one valid pollfd that outlives the call, its count passed with it.
    if unsafe { libc::poll(&raw mut pfd, 1, timeout_ms) } < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}
