//! Side state: what a detector needs beyond the 128-byte record while it is armed (a handshake
//! in progress, a RST pairing wait, a zero-window episode, a segment being retransmitted…),
//! in a bounded pool. A flow holds at most one entry, found through a small map from its slot;
//! the record's `HAS_SIDE` flag saves the look-up for every other flow. An entry goes back when
//! its detectors are done with it. When the pool is full, an entry that only times a handshake
//! (the cheapest to lose: the detectors fall back to the flow's first packet) is taken from its
//! flow; failing that, the new request is refused. Both are counted.
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::table::{FlowRef, Slot};

/// What the pool needs to know about an entry.
pub trait SideState: Default {
    /// Nothing armed: the entry can go back to the pool.
    fn is_idle(&self) -> bool;
    /// Only handshake timing, which may be taken for a flow that needs more.
    fn is_reclaimable(&self) -> bool;
}

/// A multiplicative hasher for u32 slot numbers (the map's keys are not attacker-chosen:
/// slots are assigned by the table).
#[derive(Default)]
pub struct SlotHasher(u64);

impl Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ *b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = (v as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The side-state pool is full and no entry could be reclaimed (counted as `exhausted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolFull;

/// Entries inspected to find one to reclaim.
const RECLAIM_SCAN: usize = 16;

pub struct SidePool<T: SideState> {
    entries: Vec<T>,
    owner: Vec<FlowRef>,
    free: Vec<u32>,
    by_slot: HashMap<Slot, u32, BuildHasherDefault<SlotHasher>>,
    capacity: usize,
    hand: usize,
    /// Requests refused because every entry was busy.
    pub exhausted: u64,
    /// Handshake entries taken from a flow for another flow's detector.
    pub reclaimed: u64,
}

impl<T: SideState> SidePool<T> {
    /// A pool of at most `capacity` entries. Their memory is reserved at once (untouched,
    /// it costs nothing until used) so that filling the pool never copies it.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            entries: Vec::with_capacity(capacity),
            owner: Vec::with_capacity(capacity),
            free: Vec::new(),
            by_slot: HashMap::with_capacity_and_hasher(capacity, Default::default()),
            capacity,
            hand: 0,
            exhausted: 0,
            reclaimed: 0,
        }
    }

    pub fn in_use(&self) -> usize {
        self.by_slot.len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The entry of the flow in `slot`, if it holds one.
    #[inline]
    pub fn get(&self, slot: Slot) -> Option<&T> {
        self.by_slot.get(&slot).map(|&i| &self.entries[i as usize])
    }

    #[inline]
    pub fn get_mut(&mut self, slot: Slot) -> Option<&mut T> {
        self.by_slot.get(&slot).map(|&i| &mut self.entries[i as usize])
    }

    /// The entry of `flow`, taken from the pool if it has none. `Err(PoolFull)`: the pool is full and nothing could be reclaimed.
    /// `Ok((entry, Some(victim)))`: the entry was reclaimed from `victim`, whose `HAS_SIDE`
    /// flag the caller clears.
    pub fn take(&mut self, flow: FlowRef) -> Result<(&mut T, Option<FlowRef>), PoolFull> {
        if let Some(&i) = self.by_slot.get(&flow.slot) {
            return Ok((&mut self.entries[i as usize], None));
        }
        let mut victim = None;
        let i = if let Some(i) = self.free.pop() {
            i
        } else if self.entries.len() < self.capacity {
            self.entries.push(T::default());
            self.owner.push(flow);
            (self.entries.len() - 1) as u32
        } else {
            let n = self.entries.len();
            let found = (0..RECLAIM_SCAN.min(n))
                .map(|k| (self.hand + k) % n)
                .find(|&j| self.entries[j].is_reclaimable());
            self.hand = (self.hand + RECLAIM_SCAN) % n;
            let Some(j) = found else {
                self.exhausted += 1;
                return Err(PoolFull);
            };
            let old = self.owner[j];
            self.by_slot.remove(&old.slot);
            self.reclaimed += 1;
            victim = Some(old);
            j as u32
        };
        self.entries[i as usize] = T::default();
        self.owner[i as usize] = flow;
        self.by_slot.insert(flow.slot, i);
        Ok((&mut self.entries[i as usize], victim))
    }

    /// Returns the entry of the flow in `slot` (if any) to the pool.
    pub fn release(&mut self, slot: Slot) {
        if let Some(i) = self.by_slot.remove(&slot) {
            self.entries[i as usize] = T::default();
            self.free.push(i);
        }
    }

    /// Returns the entry of `slot` if its detectors are done with it; true if released.
    pub fn release_if_idle(&mut self, slot: Slot) -> bool {
        match self.by_slot.get(&slot) {
            Some(&i) if self.entries[i as usize].is_idle() => {
                self.by_slot.remove(&slot);
                self.free.push(i);
                true
            }
            _ => false,
        }
    }

    /// Calls `f` for every entry in use, with its flow's slot, in pool order (for the
    /// periodic expiry of what is armed).
    pub fn for_each_in_use(&mut self, mut f: impl FnMut(Slot, &mut T)) {
        for (i, e) in self.entries.iter_mut().enumerate() {
            let s = self.owner[i].slot;
            if self.by_slot.get(&s) == Some(&(i as u32)) {
                f(s, e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Debug, PartialEq)]
    struct S {
        handshake: bool,
        armed: bool,
    }
    impl SideState for S {
        fn is_idle(&self) -> bool {
            !self.handshake && !self.armed
        }
        fn is_reclaimable(&self) -> bool {
            self.handshake && !self.armed
        }
    }

    fn r(slot: u32) -> FlowRef {
        FlowRef { slot, tag: slot }
    }

    #[test]
    fn bounded_reclaims_handshakes_then_refuses_and_counts() {
        let mut p: SidePool<S> = SidePool::new(2);
        p.take(r(1)).unwrap().0.handshake = true;
        p.take(r(2)).unwrap().0.armed = true;
        // Full: flow 3 takes flow 1's handshake entry.
        let (e, victim) = p.take(r(3)).unwrap();
        assert_eq!(*e, S::default());
        e.armed = true;
        assert_eq!(victim, Some(r(1)));
        assert!(p.get(1).is_none());
        // Nothing reclaimable left: refused.
        assert!(p.take(r(4)).is_err());
        assert_eq!((p.exhausted, p.reclaimed, p.in_use()), (1, 1, 2));
        // Done with flow 2: its entry is free again.
        p.get_mut(2).unwrap().armed = false;
        assert!(p.release_if_idle(2));
        assert!(p.take(r(4)).is_ok());
        let mut seen = Vec::new();
        p.for_each_in_use(|s, _| seen.push(s));
        seen.sort_unstable();
        assert_eq!(seen, vec![3, 4]);
    }
}
