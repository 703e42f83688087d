//! A worker's flows: a slab of 128-byte records (key inside) and an open-addressing index of
//! u32 entries (slab position + a tag from the hash), linear probing with backward-shift
//! deletion, a fast hash with a per-process seed. Bounded: when full, one flow is evicted in
//! O(1) — a closed flow first, then a half-open one (each from a FIFO of flows that entered
//! that state, checked lazily), then the idlest of a small sample of the slab (as Katran's and
//! Redis' approximate LRUs do) — and every eviction is counted by reason.
use super::{FlowKey, FlowRecord};
use crate::mem::prefetch_line;

/// Why a flow left the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EvictReason {
    Closed,
    HalfOpen,
    Idle,
    /// Expired by the idle timeout, not by pressure.
    Expired,
}

impl EvictReason {
    pub const ALL: [EvictReason; 4] =
        [EvictReason::Closed, EvictReason::HalfOpen, EvictReason::Idle, EvictReason::Expired];
    pub fn name(self) -> &'static str {
        match self {
            EvictReason::Closed => "closed",
            EvictReason::HalfOpen => "half_open",
            EvictReason::Idle => "idle",
            EvictReason::Expired => "expired",
        }
    }
}

/// Live flows sampled to find the idlest when no closed or half-open flow can go.
const IDLE_SAMPLE: usize = 32;
/// The most flows a table holds (slab positions and tags share one u32 index entry).
pub const MAX_CAPACITY: usize = 1 << 26;

/// Index positions a new table starts with (64 KiB): see `FlowTable::index`.
const INITIAL_SLOTS: usize = 1 << 14;

/// A flow's position in its table's slab; stable while the flow lives.
pub type Slot = u32;

/// A slot with 30 bits of its key's hash: a reference that can be checked after the slot may
/// have been reused by another flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowRef {
    pub slot: Slot,
    /// Low 30 bits of the key's hash (the top two bits are free for the holder's use).
    pub tag: u32,
}

/// The bits of a hash a [`FlowRef`] keeps.
pub const TAG_MASK: u32 = (1 << 30) - 1;

pub struct FlowTable {
    slab: Vec<FlowRecord>,
    /// One bit per slab position: holds a live flow.
    live: Vec<u64>,
    /// Head of the free list, threaded through dead records' `last_hist`.
    free: u32,
    /// Open-addressed (linear probing), at most 3/4 full: it starts at [`INITIAL_SLOTS`] and
    /// doubles as flows arrive, up to `max_slots` (the capacity's 4/3). A small table's index
    /// stays in the caches, and nothing faults in index pages no flow uses.
    index: Box<[u32]>,
    max_slots: usize,
    /// Bits of an index entry that hold slab position + 1; the rest hold a hash tag.
    pos_bits: u32,
    len: usize,
    capacity: usize,
    seed: u64,
    /// Packet time the records' `first_ms` counts from (the first flow's). `first_ms` wraps
    /// (every 49.7 days) and is read back against a reference time, so neither a long run nor
    /// a first timestamp of 0 exhausts it.
    base_ns: Option<u64>,
    /// The newest time a flow was inserted at (the reference for eviction's idle order).
    latest_ns: u64,
    /// Flows that became closed / half-open, oldest first; checked against the flow's state
    /// when popped (any flow in that state is a fair victim, so a reused slot is no harm).
    closed_fifo: std::collections::VecDeque<Slot>,
    half_open_fifo: std::collections::VecDeque<Slot>,
    hand: usize,
    pub created: u64,
    pub evicted: [u64; 4],
}

const FREE_END: u32 = u32::MAX;

#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let m = a as u128 * b as u128;
    (m as u64) ^ ((m >> 64) as u64)
}

/// A seed that differs per process (std's RandomState is seeded from the OS).
fn process_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x0051_5777_6174_6368);
    h.finish() | 1
}

impl FlowTable {
    pub fn new(capacity: usize) -> Self {
        Self::with_seed(capacity, process_seed())
    }

    /// A table whose index is allocated for `capacity` at once and never grows (no rehash
    /// pause; see `EngineConfig::flow_index_grows`).
    pub fn presized(capacity: usize) -> Self {
        Self::build(capacity, process_seed(), usize::MAX)
    }

    /// A table whose hash uses `seed` (tests; results never depend on it).
    pub fn with_seed(capacity: usize, seed: u64) -> Self {
        Self::build(capacity, seed, INITIAL_SLOTS)
    }

    /// A table whose index starts with at most `first_slots` positions.
    fn build(capacity: usize, seed: u64, first_slots: usize) -> Self {
        let capacity = capacity.clamp(16, MAX_CAPACITY);
        // Load factor ≤ 3/4: probes stay within a cache line or two (16 entries a line), and
        // the index costs 5⅓ bytes per flow. Not a power of two: positions come from a
        // multiply-shift of the hash.
        let max_slots = (capacity * 4 / 3).max(64).next_multiple_of(16);
        let pos_bits = usize::BITS - capacity.leading_zeros();
        // Filled from the front (a freed slot is reused before the slab grows): huge pages
        // cost at most 2 MiB more than the flows written, and fault once per 2 MiB.
        let slab: Vec<FlowRecord> = Vec::with_capacity(capacity);
        crate::mem::advise_huge_pages(slab.as_ptr().cast(), capacity * size_of::<FlowRecord>());
        let index = vec![0u32; max_slots.min(first_slots)].into_boxed_slice();
        Self {
            slab,
            live: vec![0; capacity.div_ceil(64)],
            free: FREE_END,
            index,
            max_slots,
            pos_bits,
            len: 0,
            capacity,
            seed,
            base_ns: None,
            latest_ns: 0,
            closed_fifo: Default::default(),
            half_open_fifo: Default::default(),
            hand: 0,
            created: 0,
            evicted: [0; 4],
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    pub fn is_full(&self) -> bool {
        self.len >= self.capacity
    }

    /// Bytes the table's index holds now (it grows with the flows, as the slab does).
    pub fn index_bytes(&self) -> usize {
        self.index.len() * 4
    }

    #[inline]
    pub fn hash(&self, k: &FlowKey) -> u64 {
        let w = k.words();
        let mut h = self.seed;
        for x in w {
            h = fold_mul(h ^ x, 0x9e37_79b9_7f4a_7c15);
        }
        h
    }

    /// Where the probe for hash `h` starts.
    #[inline]
    fn home(&self, h: u64) -> usize {
        (((h >> 32) * self.index.len() as u64) >> 32) as usize
    }

    #[inline]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.index.len() {
            0
        } else {
            i + 1
        }
    }

    #[inline]
    fn tag_of(&self, h: u64) -> u32 {
        if self.pos_bits >= 32 {
            0
        } else {
            (h as u32) << self.pos_bits
        }
    }

    #[inline]
    fn pos_mask(&self) -> u32 {
        if self.pos_bits >= 32 {
            u32::MAX
        } else {
            (1u32 << self.pos_bits) - 1
        }
    }

    #[inline]
    fn is_live(&self, slot: Slot) -> bool {
        let i = slot as usize;
        i < self.slab.len() && self.live[i / 64] & (1 << (i % 64)) != 0
    }

    /// Where the flow `k` (with hash `h`) lives, if it does.
    #[inline]
    pub fn find(&self, k: &FlowKey, h: u64) -> Option<Slot> {
        let tag = self.tag_of(h);
        let pm = self.pos_mask();
        let mut i = self.home(h);
        loop {
            let e = self.index[i];
            if e == 0 {
                return None;
            }
            if e & !pm == tag {
                let slot = (e & pm) - 1;
                if self.slab[slot as usize].key == *k {
                    return Some(slot);
                }
            }
            i = self.next(i);
        }
    }

    /// Hints the CPU to fetch the index line for hash `h`: the first of a batched look-up's
    /// two steps (see `Engine::process_batch`), a few packets before the look-up.
    #[inline]
    pub fn prefetch(&self, h: u64) {
        prefetch_line(self.index.as_ptr().wrapping_add(self.home(h)).cast());
    }

    /// The second step, once the index line has arrived: the record the first matching tag
    /// at the flow's home position points to (both of its cache lines). A miss or a tag
    /// shared with another flow only costs a useless fetch.
    #[inline]
    pub fn prefetch_record(&self, h: u64) {
        let e = self.index[self.home(h)];
        let pm = self.pos_mask();
        if e != 0 && e & !pm == self.tag_of(h) {
            let rec = self.slab.as_ptr().wrapping_add(((e & pm) - 1) as usize).cast::<u8>();
            prefetch_line(rec);
            prefetch_line(rec.wrapping_add(64));
        }
    }

    /// A new flow `k` (not in the table: call [`find`](Self::find) first). The table must not
    /// be full: make room with [`evict_one`](Self::evict_one).
    pub fn insert(&mut self, k: FlowKey, h: u64, now_ns: u64, epoch: u8) -> Slot {
        assert!(self.len < self.capacity, "FlowTable::insert on a full table");
        let base = *self.base_ns.get_or_insert(now_ns);
        // Wrapping on purpose: see `first_ns`.
        let first_ms = (now_ns.saturating_sub(base) / 1_000_000) as u32;
        self.latest_ns = self.latest_ns.max(now_ns);
        let rec = FlowRecord::new(k, first_ms, epoch);
        let slot = if self.free == FREE_END {
            self.slab.push(rec);
            (self.slab.len() - 1) as Slot
        } else {
            let s = self.free;
            self.free = self.slab[s as usize].last_hist;
            self.slab[s as usize] = rec;
            s
        };
        self.live[slot as usize / 64] |= 1 << (slot % 64);
        if (self.len + 1) * 4 > self.index.len() * 3 && self.index.len() < self.max_slots {
            self.grow_index();
        }
        self.place(h, self.tag_of(h) | (slot + 1));
        self.len += 1;
        self.created += 1;
        slot
    }

    /// Puts index entry `e` for hash `h` in the first free position of its probe run.
    #[inline]
    fn place(&mut self, h: u64, e: u32) {
        let mut i = self.home(h);
        while self.index[i] != 0 {
            i = self.next(i);
        }
        self.index[i] = e;
    }

    /// Doubles the index (up to `max_slots`) and places every entry again. Slots and tags do
    /// not change: what refers to a flow by slot (timers, side state) stays valid.
    #[cold]
    fn grow_index(&mut self) {
        let slots = (self.index.len() * 2).min(self.max_slots).next_multiple_of(16);
        let old = std::mem::replace(&mut self.index, vec![0u32; slots].into_boxed_slice());
        let pm = self.pos_mask();
        for e in old.iter().copied().filter(|&e| e != 0) {
            let h = self.hash(&self.slab[((e & pm) - 1) as usize].key);
            self.place(h, e);
        }
    }

    #[inline]
    pub fn get(&self, slot: Slot) -> &FlowRecord {
        debug_assert!(self.is_live(slot));
        &self.slab[slot as usize]
    }
    #[inline]
    pub fn get_mut(&mut self, slot: Slot) -> &mut FlowRecord {
        debug_assert!(self.is_live(slot));
        &mut self.slab[slot as usize]
    }

    /// A reference to the flow in `slot` that [`resolve`](Self::resolve) can check later.
    pub fn flow_ref(&self, slot: Slot) -> FlowRef {
        FlowRef { slot, tag: self.hash(&self.slab[slot as usize].key) as u32 & TAG_MASK }
    }

    /// The slot of `r` if the same flow still lives there.
    pub fn resolve(&self, r: FlowRef) -> Option<Slot> {
        (self.is_live(r.slot)
            && self.hash(&self.slab[r.slot as usize].key) as u32 & TAG_MASK == r.tag & TAG_MASK)
            .then_some(r.slot)
    }

    /// Removes the flow in `slot` and returns its record.
    pub fn remove(&mut self, slot: Slot) -> FlowRecord {
        assert!(self.is_live(slot), "FlowTable::remove of a free slot");
        let rec = self.slab[slot as usize];
        let h = self.hash(&rec.key);
        let pm = self.pos_mask();
        let mut i = self.home(h);
        while self.index[i] & pm != slot + 1 {
            debug_assert!(self.index[i] != 0, "a live flow is in the index");
            i = self.next(i);
        }
        // Backward-shift deletion: move later entries of the probe run into the hole when
        // their home position allows it, so no tombstones are needed.
        let mut hole = i;
        let n = self.index.len();
        // Each later entry's home comes from its record's key, in a large table a cache miss
        // apiece (a 3/4-full table's runs are several entries long): start them all at once.
        let mut j = self.next(i);
        while self.index[j] != 0 {
            let rec = self.slab.as_ptr().wrapping_add(((self.index[j] & pm) - 1) as usize);
            prefetch_line(rec.cast());
            j = self.next(j);
        }
        let mut j = self.next(i);
        loop {
            let e = self.index[j];
            if e == 0 {
                break;
            }
            let home = self.home(self.hash(&self.slab[((e & pm) - 1) as usize].key));
            // Can the entry at j move to the hole? Only if its home is not in (hole, j].
            let dist_home = (j + n - home) % n;
            let dist_hole = (j + n - hole) % n;
            if dist_home >= dist_hole {
                self.index[hole] = e;
                hole = j;
            }
            j = self.next(j);
        }
        self.index[hole] = 0;
        self.live[slot as usize / 64] &= !(1 << (slot % 64));
        self.slab[slot as usize].last_hist = self.free;
        self.free = slot;
        self.len -= 1;
        rec
    }

    /// The flow in `slot` became closed (it goes first under pressure).
    pub fn note_closed(&mut self, slot: Slot) {
        self.closed_fifo.push_back(slot);
        self.trim(true);
    }

    /// The flow in `slot` became half-open (it goes next under pressure).
    pub fn note_half_open(&mut self, slot: Slot) {
        self.half_open_fifo.push_back(slot);
        self.trim(false);
    }

    /// Whether `slot` holds a flow in the state its queue is for.
    fn still(&self, s: Slot, closed: bool) -> Option<Slot> {
        if !self.is_live(s) {
            return None;
        }
        let st = self.slab[s as usize].state;
        (if closed { st.is_closed() } else { st.is_half_open() }).then_some(s)
    }

    /// Drops stale entries from the front of a queue (two per push keeps it near the number of
    /// flows really in that state), and compacts it when stale entries pile up behind a live one.
    fn trim(&mut self, closed: bool) {
        for _ in 0..2 {
            let q = if closed { &self.closed_fifo } else { &self.half_open_fifo };
            match q.front() {
                Some(&r) if self.still(r, closed).is_none() => {
                    if closed {
                        self.closed_fifo.pop_front()
                    } else {
                        self.half_open_fifo.pop_front()
                    };
                }
                _ => break,
            }
        }
        let qlen = if closed { self.closed_fifo.len() } else { self.half_open_fifo.len() };
        if qlen > 2 * self.capacity.max(1024) {
            let mut q = std::mem::take(if closed {
                &mut self.closed_fifo
            } else {
                &mut self.half_open_fifo
            });
            q.retain(|r| self.still(*r, closed).is_some());
            *(if closed { &mut self.closed_fifo } else { &mut self.half_open_fifo }) = q;
        }
    }

    /// Picks the flow to evict under pressure and removes it, counted by reason: see
    /// [`pick_victim`](Self::pick_victim).
    pub fn evict_one(&mut self) -> Option<(Slot, FlowRecord, EvictReason)> {
        let (s, reason) = self.pick_victim()?;
        Some((s, self.evict(s, reason), reason))
    }

    /// Removes the flow [`pick_victim`](Self::pick_victim) chose, counted by reason.
    pub fn evict(&mut self, s: Slot, reason: EvictReason) -> FlowRecord {
        let rec = self.remove(s);
        self.evicted[reason as usize] += 1;
        rec
    }

    /// The flow to evict under pressure: the oldest closed flow, else the oldest half-open
    /// one, else the idlest of a sample. Still in the table (the owner may report what it
    /// owed first); [`evict`](Self::evict) it next.
    pub fn pick_victim(&mut self) -> Option<(Slot, EvictReason)> {
        for (closed, reason) in [(true, EvictReason::Closed), (false, EvictReason::HalfOpen)] {
            loop {
                let front = if closed {
                    self.closed_fifo.pop_front()
                } else {
                    self.half_open_fifo.pop_front()
                };
                let Some(r) = front else { break };
                if let Some(s) = self.still(r, closed) {
                    return Some((s, reason));
                }
            }
        }
        if self.len == 0 {
            return None;
        }
        let n = self.slab.len();
        let reference = self.latest_ns;
        let mut best: Option<(u64, Slot)> = None;
        let mut seen = 0;
        let mut i = self.hand % n;
        let mut steps = 0;
        while seen < IDLE_SAMPLE && steps < n {
            if self.is_live(i as Slot) {
                let r = &self.slab[i];
                let last = self.last_ns(r, reference);
                if best.is_none_or(|(b, _)| last < b) {
                    best = Some((last, i as Slot));
                }
                seen += 1;
            }
            i = (i + 1) % n;
            steps += 1;
        }
        self.hand = i;
        let (_, s) = best?;
        Some((s, EvictReason::Idle))
    }

    /// Counts a flow removed because it expired.
    pub fn count_expired(&mut self) {
        self.evicted[EvictReason::Expired as usize] += 1;
    }

    /// When the flow in `rec` began (to the millisecond of the table's base), read against
    /// `reference_ns`, a time within ±24 days of it (the packet being processed, the timer
    /// firing): the stored milliseconds wrap, their distance from the reference does not.
    #[inline]
    pub fn first_ns(&self, rec: &FlowRecord, reference_ns: u64) -> u64 {
        let base = self.base_ns.unwrap_or(0);
        let ref_ms = reference_ns.saturating_sub(base) / 1_000_000;
        let age_ms = (ref_ms as u32).wrapping_sub(rec.first_ms) as i32 as i64;
        let first_ms = (ref_ms as i64).saturating_sub(age_ms).max(0) as u64;
        base.saturating_add(first_ms.saturating_mul(1_000_000))
    }

    /// The flow's newest packet time (see [`first_ns`](Self::first_ns) for `reference_ns`).
    pub fn last_ns(&self, rec: &FlowRecord, reference_ns: u64) -> u64 {
        self.first_ns(rec, reference_ns).saturating_add(rec.last_us() as u64 * 1000)
    }

    /// Live flows, in slab order.
    pub fn iter(&self) -> impl Iterator<Item = (Slot, &FlowRecord)> {
        self.slab
            .iter()
            .enumerate()
            .filter(|(i, _)| self.is_live(*i as Slot))
            .map(|(i, r)| (i as Slot, r))
    }
}

#[cfg(test)]
mod tests {
    use wirewatch_testkit::craft::TcpSegment;

    use super::*;
    use crate::packet::decode;
    use crate::tcp::ConnState;

    fn key(port: u16) -> FlowKey {
        let f = TcpSegment::new("10.0.0.1".parse().unwrap(), port, "10.0.0.2".parse().unwrap(), 80)
            .frame();
        decode(&f, f.len() as u32, 0, 0).unwrap().flow().0
    }

    /// A trivially correct model (a HashMap) against the table, under inserts and removals
    /// that force long probe runs (a tiny table and a seed that collides nothing on purpose).
    #[test]
    fn agrees_with_a_hashmap_under_churn() {
        for seed in [1u64, 7, 0xdead_beef] {
            let mut t = FlowTable::with_seed(64, seed);
            let mut model = std::collections::HashMap::new();
            let mut rng = seed;
            for step in 0..20_000u32 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let k = key((rng % 200) as u16);
                let h = t.hash(&k);
                match (t.find(&k, h), model.get(&k).copied()) {
                    (Some(s), Some(ms)) => {
                        assert_eq!(s, ms);
                        if rng & 1 == 0 {
                            t.remove(s);
                            model.remove(&k);
                        }
                    }
                    (None, None) => {
                        if t.is_full() {
                            let (_, gone, _) = t.evict_one().unwrap();
                            assert!(model.remove(&gone.key).is_some());
                        }
                        let s = t.insert(k, h, step as u64, 0);
                        model.insert(k, s);
                    }
                    (a, b) => panic!("step {step}: table {a:?}, model {b:?}"),
                }
                assert_eq!(t.len(), model.len());
            }
            for (k, s) in &model {
                assert_eq!(t.find(k, t.hash(k)), Some(*s));
            }
        }
    }

    /// Flow `i` of many (distinct addresses as well as ports).
    fn many(i: u32) -> FlowKey {
        let src = std::net::Ipv4Addr::from(0x0a00_0000 | (i >> 4));
        let f =
            TcpSegment::new(src.into(), 1024 + (i & 15) as u16, "10.255.0.1".parse().unwrap(), 80)
                .frame();
        decode(&f, f.len() as u32, 0, 0).unwrap().flow().0
    }

    /// The index grows from its first size to the capacity's while flows come and go: every
    /// live flow is found at the slot it was given, no removed one is, and a slot held by a
    /// reference stays valid across the growth.
    #[test]
    fn the_index_grows_and_keeps_every_flow_at_its_slot() {
        let mut t = FlowTable::with_seed(100_000, 7);
        let first = t.index_bytes();
        let mut model = std::collections::HashMap::new();
        let k0 = many(0);
        let s0 = t.insert(k0, t.hash(&k0), 0, 0);
        let r0 = t.flow_ref(s0);
        model.insert(k0, s0);
        for i in 1..90_000u32 {
            let k = many(i);
            let s = t.insert(k, t.hash(&k), u64::from(i), 0);
            model.insert(k, s);
            // A third of them leave again, in the middle of the growth.
            if i % 3 == 0 {
                let gone = many(i / 2 + 1);
                if let Some(s) = model.remove(&gone) {
                    t.remove(s);
                }
            }
        }
        assert!(t.index_bytes() >= 8 * first, "{} then {}", first, t.index_bytes());
        assert!(t.index_bytes() <= (100_000 * 4 / 3 + 16) * 4);
        assert_eq!(t.len(), model.len());
        for (k, s) in &model {
            assert_eq!(t.find(k, t.hash(k)), Some(*s));
        }
        for i in (2..90_000u32).step_by(97) {
            let k = many(i);
            assert_eq!(t.find(&k, t.hash(&k)).is_some(), model.contains_key(&k), "flow {i}");
        }
        assert_eq!(t.resolve(r0), Some(s0));
        // `run`'s tables are allocated whole and never rehash.
        let mut p = FlowTable::presized(100_000);
        let whole = p.index_bytes();
        assert_eq!(whole, (100_000 * 4 / 3usize).next_multiple_of(16) * 4);
        for i in 0..50_000u32 {
            let k = many(i);
            p.insert(k, p.hash(&k), 0, 0);
        }
        assert_eq!(p.index_bytes(), whole);
        assert!((0..50_000u32).step_by(101).all(|i| p.find(&many(i), p.hash(&many(i))).is_some()));
    }

    #[test]
    fn eviction_prefers_closed_then_half_open_then_idle() {
        let mut t = FlowTable::new(16);
        for i in 0..16u16 {
            let k = key(1000 + i);
            let s = t.insert(k, t.hash(&k), i as u64 * 1_000_000, 0);
            let r = t.get_mut(s);
            r.dirs[0].last_us = 0;
            r.state = match i {
                0 => ConnState::Closed,
                1 => ConnState::SynSent,
                _ => ConnState::Established,
            };
            match i {
                0 => t.note_closed(s),
                1 => t.note_half_open(s),
                _ => {}
            }
        }
        let (_, r, why) = t.evict_one().unwrap();
        assert_eq!((why, r.key), (EvictReason::Closed, key(1000)));
        let (_, r, why) = t.evict_one().unwrap();
        assert_eq!((why, r.key), (EvictReason::HalfOpen, key(1001)));
        // Then the idlest established flow: port 1002 began first and never spoke again.
        let (_, r, why) = t.evict_one().unwrap();
        assert_eq!((why, r.key), (EvictReason::Idle, key(1002)));
        assert_eq!(t.evicted, [1, 1, 1, 0]);
        // A flow that left the queued state is not evicted for it.
        let k = key(2000);
        let s = t.insert(k, t.hash(&k), 20_000_000, 0);
        t.get_mut(s).state = ConnState::SynSent;
        t.note_half_open(s);
        t.get_mut(s).state = ConnState::Established;
        t.get_mut(s).dirs[0].last_us = 1_000_000;
        let (_, r, why) = t.evict_one().unwrap();
        assert_eq!(why, EvictReason::Idle);
        assert_ne!(r.key, k);
    }

    /// A first timestamp of 0 (a pcapng simple packet block) followed by real ones, and flows
    /// begun 60 days after the table's first: their start times still read back exactly.
    #[test]
    fn flow_start_times_survive_a_zero_base_and_months_of_uptime() {
        let mut t = FlowTable::new(16);
        let k0 = key(1);
        t.insert(k0, t.hash(&k0), 0, 0);
        for (i, ts) in
            [1_700_000_000_123_000_000u64, 1_700_000_000_123_000_000 + 60 * 86_400 * 1_000_000_000]
                .into_iter()
                .enumerate()
        {
            let k = key(10 + i as u16);
            let s = t.insert(k, t.hash(&k), ts, 0);
            assert_eq!(t.first_ns(t.get(s), ts + 5_000_000_000), ts, "flow {i}");
            // A packet slightly out of order (before the flow's first) reads the same start.
            assert_eq!(t.first_ns(t.get(s), ts - 2_000_000), ts, "flow {i}, time going back");
        }
    }

    #[test]
    fn a_reference_to_a_reused_slot_does_not_resolve() {
        let mut t = FlowTable::new(16);
        let a = key(1);
        let s = t.insert(a, t.hash(&a), 0, 0);
        let r = t.flow_ref(s);
        t.remove(s);
        assert_eq!(t.resolve(r), None);
        let b = key(2);
        let s2 = t.insert(b, t.hash(&b), 0, 0);
        assert_eq!(s2, s, "the free slot is reused");
        assert_eq!(t.resolve(r), None);
    }
}
