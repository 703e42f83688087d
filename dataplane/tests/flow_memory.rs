//! Memory per flow, measured with a counting allocator over the real engine: a million flows
//! (one SYN each, so each is half-open with a handshake timer and wants side state) cost their
//! 128-byte record, their share of the index, their timer and eviction-queue entry, and the
//! bounded pools — at most 160 bytes — and nothing is allocated per flow.
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicIsize, AtomicUsize};

use dataplane::engine::{Engine, EngineConfig};
use dataplane::flow::FlowRecord;
use dataplane_common::tcp_flags::SYN;
use wirewatch_testkit::craft::TcpSegment;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// Safety: every call is forwarded unchanged to the system allocator, which upholds
// GlobalAlloc's contract; the counters are atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Relaxed);
        ALLOCS.fetch_add(1, Relaxed);
        // Safety: forwarded unchanged to the system allocator.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Relaxed);
        // Safety: `p` came from `alloc` above with the same layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Relaxed);
        ALLOCS.fetch_add(1, Relaxed);
        // Safety: forwarded unchanged to the system allocator.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn a_million_half_open_flows_cost_at_most_160_bytes_each() {
    const FLOWS: u32 = 1_000_000;
    let mut seg =
        TcpSegment::new("10.0.0.1".parse().unwrap(), 1, "10.200.0.1".parse().unwrap(), 80);
    seg.flags = SYN;
    let mut f = seg.frame();
    let rss_before = rss_bytes();
    let before = LIVE.load(Relaxed);
    let allocs_before = ALLOCS.load(Relaxed);
    let mut e = Engine::new(
        EngineConfig {
            flow_capacity: FLOWS as usize,
            history_bytes: 1 << 20,
            ..Default::default()
        },
        0,
    );
    let fixed = (LIVE.load(Relaxed) - before) as usize;
    for i in 0..FLOWS {
        // A new client address and port per frame, edited in place.
        f[26..30].copy_from_slice(&(0x0a00_0000u32 | (i >> 8)).to_be_bytes());
        f[34..36].copy_from_slice(&((i & 0xff) as u16 + 1024).to_be_bytes());
        e.process_frame(&f, f.len() as u32, 1_000 + i as u64 * 1000, 0, 0);
    }
    let used = (LIVE.load(Relaxed) - before) as usize;
    let rss = rss_bytes().saturating_sub(rss_before);
    let allocs = ALLOCS.load(Relaxed) - allocs_before;
    let s = e.stats();
    assert_eq!(s.flows_active, FLOWS as u64);
    assert_eq!(e.timers_pending(), FLOWS as usize, "one handshake timer per flow");
    // RSS is what the budget counts (the slab, index and vectors are reserved ahead
    // and only the pages written are resident); the allocated bytes, slack included, are an
    // upper bound printed beside it.
    let per_flow = rss as f64 / FLOWS as f64;
    eprintln!(
        "1M half-open flows: {per_flow:.1} B/flow of RSS, {:.1} B/flow allocated ({} B record; {:.1} MB reserved at start), \
         {allocs} allocations, side state {} in use ({} reclaimed, {} refused)",
        used as f64 / FLOWS as f64,
        size_of::<FlowRecord>(),
        fixed as f64 / 1e6,
        e.side_in_use(),
        s.side_reclaimed,
        s.side_exhausted,
    );
    assert_eq!(size_of::<FlowRecord>(), 128);
    assert!(per_flow <= 160.0, "{per_flow:.1} B of RSS per flow (target ≤ 160)");
    // Growth steps of the timer buckets and the side pool, not one allocation per flow.
    assert!(
        allocs < 40_000,
        "{allocs} allocations for {FLOWS} flows: something allocates per flow"
    );
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 4096
}
