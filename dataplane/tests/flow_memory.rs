//! A million flows: each costs its 128-byte record plus the table's slot overhead, and nothing
//! else is allocated per flow.
use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicIsize, AtomicUsize, Ordering::Relaxed},
};

use dataplane::{craft::TcpSegment, flow::FlowKey, flow::FlowRecord, flow::FlowTable, packet::decode};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Relaxed);
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn a_million_flows_cost_their_records_and_table_slots_only() {
    const FLOWS: u32 = 1_000_000;
    // Keys from real decoded packets, made before measuring.
    let f = TcpSegment::new("10.0.0.1".parse().unwrap(), 1, "10.0.0.2".parse().unwrap(), 80).frame();
    let p = decode(&f, f.len() as u32, 0, 0).unwrap();
    let (base, _) = FlowKey::of(&p);
    let before = LIVE.load(Relaxed);
    let allocs_before = ALLOCS.load(Relaxed);
    let mut t = FlowTable::new(FLOWS as usize);
    for i in 0..FLOWS {
        let mut k = base;
        k.lo[12..16].copy_from_slice(&i.to_be_bytes());
        t.get_or_insert(k, i as u64, 0);
    }
    let used = (LIVE.load(Relaxed) - before) as usize;
    let allocs = ALLOCS.load(Relaxed) - allocs_before;
    assert_eq!(t.len(), FLOWS as usize);
    let slot = std::mem::size_of::<(FlowKey, FlowRecord)>() + 1; // entry + control byte
    let buckets = (t.slots() * 8 / 7).next_power_of_two();
    let per_flow = used as f64 / FLOWS as f64;
    eprintln!(
        "1M flows: {per_flow:.1} B/flow ({} B record, {} B key, {buckets} slots of {slot} B, {allocs} allocations)",
        std::mem::size_of::<FlowRecord>(),
        std::mem::size_of::<FlowKey>()
    );
    assert!(std::mem::size_of::<FlowRecord>() <= 128);
    // Everything allocated is the table's slot array (plus its growth steps): no per-flow heap.
    assert!(used <= buckets * slot + 4096, "{used} B for {buckets} slots of {slot} B");
    assert!(allocs < 64, "{allocs} allocations for {FLOWS} flows: something allocates per flow");
}
