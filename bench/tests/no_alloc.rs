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
    let replay = |e: &mut Engine, offset_ns: u64| -> (usize, usize) {
        let before = ALLOCS.load(Relaxed);
        for i in 0..cap.frames.len() {
            let (d, o, ts) = cap.frame(i);
            e.process_frame(d, o, ts + offset_ns, 0, 0);
        }
        let allocs = ALLOCS.load(Relaxed) - before;
        let events = e.drain_events().len();
        (allocs, events)
    };
    let (first, ev1) = replay(&mut e, 0);
    // The same traffic again, an hour later: the flows expired, the structures have grown.
    let (second, ev2) = replay(&mut e, 3_600_000_000_000);
    let packets = cap.frames.len();
    eprintln!("{packets} packets: first replay {first} allocations ({ev1} events), second {second} ({ev2} events)");
    assert!(ev2 > 100, "the capture has detections to report");
    // A detection costs its strings (explanation, details, fingerprints): a few dozen
    // allocations. Per packet it would be ≥ 200,000.
    let per_event = second as f64 / ev2 as f64;
    assert!(per_event < 64.0, "{second} allocations for {ev2} events ({per_event:.1} each)");
    assert!(
        second < packets / 4,
        "{second} allocations for {packets} packets: something allocates per packet"
    );
}
