//! No allocation on the per-packet path: a counting global allocator over a replay of the
//! benchmark capture. Allocations happen only where something is reported (a detection's
//! strings, its event) and in the bounded structures' growth steps, never per packet: a
//! second replay through the same engine, of traffic it has already grown for, allocates only
//! for its events.
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;

use bench::gen;
use dataplane::engine::{Engine, EngineConfig};
use dataplane::worker::RawFrame;

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// Safety: every call is forwarded unchanged to the system allocator, which upholds
// GlobalAlloc's contract; the counters are atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // Safety: forwarded unchanged to the system allocator.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // Safety: `p` came from `alloc` with the same layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // Safety: forwarded unchanged to the system allocator.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn a_replay_allocates_per_event_not_per_packet() {
    let dir = std::env::temp_dir().join(format!("ww-noalloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cap = gen::generate(
        &gen::Model { flows: 20_000, packets: 200_000, seed: 3, duration_ns: 10_000_000_000 },
        &dir.join("c.pcap"),
        128,
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let mut e = Engine::new(EngineConfig::default(), 0);
    // `batched`: through `process_frames`, as analyze and the benchmark feed the engine.
    let replay = |e: &mut Engine, offset_ns: u64, batched: bool| -> (usize, usize) {
        let mut batch = Vec::with_capacity(256);
        let before = ALLOCS.load(Relaxed);
        if batched {
            for start in (0..cap.frames.len()).step_by(256) {
                batch.clear();
                batch.extend((start..(start + 256).min(cap.frames.len())).map(|i| {
                    let f = cap.raw_frame(i);
                    RawFrame { ts_ns: f.ts_ns + offset_ns, ..f }
                }));
                e.process_frames(&batch, 0);
            }
        } else {
            for i in 0..cap.frames.len() {
                let (d, o, ts) = cap.frame(i);
                e.process_frame(d, o, ts + offset_ns, 0, 0);
            }
        }
        let allocs = ALLOCS.load(Relaxed) - before;
        let events = e.drain_events().len();
        (allocs, events)
    };
    let (first, ev1) = replay(&mut e, 0, false);
    let packets = cap.frames.len();
    eprintln!("{packets} packets: first replay {first} allocations ({ev1} events)");
    // The same traffic again, an hour later (the flows expired, the structures have grown),
    // one frame at a time, then batched another hour later.
    for (n, batched) in [(1, false), (2, true)] {
        let (allocs, events) = replay(&mut e, n * 3_600_000_000_000, batched);
        eprintln!("replay {} (batched: {batched}): {allocs} allocations ({events} events)", n + 1);
        assert!(events > 100, "the capture has detections to report");
        // A detection costs its strings (explanation, details, fingerprints): a few dozen
        // allocations. Per packet it would be ≥ 200,000.
        let per_event = allocs as f64 / events as f64;
        assert!(per_event < 64.0, "{allocs} allocations for {events} events ({per_event:.1} each)");
        assert!(
            allocs < packets / 4,
            "{allocs} allocations for {packets} packets: something allocates per packet"
        );
    }
}
