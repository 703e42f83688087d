//! Deadlines of flows (handshake timeout, idle/closed expiry) in a hashed timer wheel on packet
//! time: 1,024 buckets of 2^24 ns (~16.8 ms, a ~17 s revolution); a deadline further out waits
//! in its bucket for the right revolution. The bucket that time is in is sorted once when time
//! enters it, so checking for due timers on each packet costs one comparison. Timers fire in
//! deadline order, ties in the order they were set. Entries name a flow by [`FlowRef`], so a
//! timer of a flow that has gone (or whose slot was reused) is recognised and dropped.
use std::collections::VecDeque;

use super::table::{FlowRef, TAG_MASK};

const BUCKET_SHIFT: u32 = 24;
const BUCKETS: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerKind {
    /// The handshake must be complete by now (one shot).
    Handshake,
    /// The grace after a SYN sent for the third time or later has run out (one shot): the
    /// flow is reported then if still unanswered.
    SynGrace,
    /// The flow may have expired; re-armed for its real deadline when it has not. Carries the
    /// generation it was armed with: only the flow's newest expiry timer counts.
    Expiry { gen: bool },
}

/// 16 bytes: a flow's timer costs as much as an eighth of its record.
#[derive(Clone, Copy, Debug)]
pub struct Timer {
    pub deadline_ns: u64,
    slot: u32,
    /// The flow's 30-bit tag | kind (bit 30: expiry) | expiry generation (bit 31; without
    /// bit 30, it marks the SYN grace).
    bits: u32,
}
const _: () = assert!(size_of::<Timer>() == 16);

const EXPIRY_BIT: u32 = 1 << 30;
const GEN_BIT: u32 = 1 << 31;

impl Timer {
    pub fn flow(&self) -> FlowRef {
        FlowRef { slot: self.slot, tag: self.bits & TAG_MASK }
    }
    pub fn kind(&self) -> TimerKind {
        match (self.bits & EXPIRY_BIT != 0, self.bits & GEN_BIT != 0) {
            (false, false) => TimerKind::Handshake,
            (false, true) => TimerKind::SynGrace,
            (true, gen) => TimerKind::Expiry { gen },
        }
    }
}

pub struct TimerWheel {
    buckets: Vec<Vec<Timer>>,
    /// Timers of the bucket `cursor` (and any set for the past), sorted by deadline.
    current: VecDeque<Timer>,
    /// Absolute bucket number `current` holds; buckets before it have been emptied.
    cursor: u64,
    started: bool,
    len: usize,
}

impl Default for TimerWheel {
    fn default() -> Self {
        Self::new()
    }
}

impl TimerWheel {
    pub fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| Vec::new()).collect(),
            current: VecDeque::new(),
            cursor: 0,
            started: false,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn arm(&mut self, deadline_ns: u64, flow: FlowRef, kind: TimerKind) {
        let kind_bits = match kind {
            TimerKind::Handshake => 0,
            TimerKind::SynGrace => GEN_BIT,
            TimerKind::Expiry { gen } => EXPIRY_BIT | if gen { GEN_BIT } else { 0 },
        };
        let t = Timer { deadline_ns, slot: flow.slot, bits: (flow.tag & TAG_MASK) | kind_bits };
        self.len += 1;
        let b = deadline_ns >> BUCKET_SHIFT;
        if !self.started {
            self.started = true;
            self.cursor = b;
        }
        if b <= self.cursor {
            // Due in (or before) the bucket being worked on: keep `current` sorted, after the
            // timers with the same deadline that were armed before it.
            let at = self.current.partition_point(|x| x.deadline_ns <= t.deadline_ns);
            self.current.insert(at, t);
        } else {
            self.buckets[b as usize % BUCKETS].push(t);
        }
    }

    /// Drops every timer `keep` refuses (timers of flows that have gone, expiry checks a newer
    /// one superseded), keeping the others in their order, and hands the buckets' spare room
    /// back. Timers are never cancelled one by one (a flow's timers are not findable), so the
    /// owner calls this when stale timers pile up — under a SYN flood every evicted flow
    /// leaves one behind — at a size that amortizes the sweep over the arms that made them.
    pub fn retain(&mut self, mut keep: impl FnMut(&Timer) -> bool) {
        let mut kept = 0;
        for bucket in &mut self.buckets {
            bucket.retain(&mut keep);
            if bucket.capacity() > 2 * bucket.len() + 16 {
                bucket.shrink_to(bucket.len() + bucket.len() / 4);
            }
            kept += bucket.len();
        }
        self.current.retain(&mut keep);
        self.current.shrink_to(self.current.len() + self.current.len() / 4);
        kept += self.current.len();
        self.len = kept;
    }

    /// The next timer with a deadline ≤ `now_ns`, in deadline order.
    #[inline]
    pub fn pop_due(&mut self, now_ns: u64) -> Option<Timer> {
        loop {
            if let Some(t) = self.current.front() {
                if t.deadline_ns <= now_ns {
                    self.len -= 1;
                    return self.current.pop_front();
                }
                return None;
            }
            if !self.started || now_ns >> BUCKET_SHIFT <= self.cursor || self.len == 0 {
                if self.len == 0 && self.started {
                    self.cursor = self.cursor.max(now_ns >> BUCKET_SHIFT);
                }
                return None;
            }
            self.advance(now_ns >> BUCKET_SHIFT);
        }
    }

    /// Moves the cursor toward `target`, sorting due timers into `current`: bucket by bucket up
    /// to the first that holds timers due in this revolution, or — when time jumped a whole
    /// revolution or more — every bucket once, taking all timers due by `target`.
    fn advance(&mut self, target: u64) {
        let long_jump = target >= self.cursor + BUCKETS as u64;
        if long_jump {
            let current = &mut self.current;
            for bucket in &mut self.buckets {
                bucket.retain(|t| {
                    let due = t.deadline_ns >> BUCKET_SHIFT <= target;
                    if due {
                        current.push_back(*t);
                    }
                    !due
                });
            }
            // Timers stay in arming order within a bucket and the sort is stable; across
            // buckets the deadline orders them.
            self.current.make_contiguous().sort_by_key(|t| t.deadline_ns);
            self.cursor = target;
            return;
        }
        while self.cursor < target {
            self.cursor += 1;
            let b = (self.cursor as usize) % BUCKETS;
            if self.buckets[b].is_empty() {
                continue;
            }
            let limit = self.cursor;
            let current = &mut self.current;
            let before = current.len();
            self.buckets[b].retain(|t| {
                let due = t.deadline_ns >> BUCKET_SHIFT <= limit;
                if due {
                    current.push_back(*t);
                }
                !due
            });
            if self.current.len() > before {
                self.current.make_contiguous().sort_by_key(|t| t.deadline_ns);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(i: u32) -> FlowRef {
        FlowRef { slot: i, tag: i }
    }

    /// Each kind comes back as it was armed, with its flow (the tag's top bits included).
    #[test]
    fn kinds_and_flows_survive_the_packing() {
        let kinds = [
            TimerKind::Handshake,
            TimerKind::SynGrace,
            TimerKind::Expiry { gen: false },
            TimerKind::Expiry { gen: true },
        ];
        let mut w = TimerWheel::new();
        for (i, k) in kinds.iter().enumerate() {
            w.arm(1000 + i as u64, FlowRef { slot: i as u32, tag: TAG_MASK - i as u32 }, *k);
        }
        for (i, k) in kinds.iter().enumerate() {
            let t = w.pop_due(u64::MAX).unwrap();
            assert_eq!(
                (t.kind(), t.flow().slot, t.flow().tag),
                (*k, i as u32, TAG_MASK - i as u32)
            );
        }
    }

    /// Dropping timers keeps the rest firing in (deadline, arming order) and counted.
    #[test]
    fn retain_keeps_the_order_of_the_rest() {
        let mut w = TimerWheel::new();
        let mut want = Vec::new();
        for i in 0..5000u32 {
            // Deadlines spread over two revolutions, many ties.
            let d = 1_000_000_000 + u64::from(i % 97) * 400_000_000;
            w.arm(d, r(i), TimerKind::Handshake);
            if i % 3 != 0 {
                want.push((d, i));
            }
        }
        // Some of them in `current` already.
        assert!(w.pop_due(1_000_000_000).is_some_and(|t| t.flow().slot == 0));
        w.retain(|t| t.flow().slot % 3 != 0);
        assert_eq!(w.len(), want.len());
        want.sort_by_key(|&(d, i)| (d, i));
        let mut got = Vec::new();
        while let Some(t) = w.pop_due(u64::MAX) {
            got.push((t.deadline_ns, t.flow().slot));
        }
        assert_eq!(got, want);
        assert!(w.is_empty());
    }

    /// The wheel against a trivially correct model: every timer fires exactly once, in
    /// (deadline, arming order), never before its deadline, whatever the step of time.
    #[test]
    fn fires_in_order_like_a_sorted_list() {
        let mut rng = 0x1234_5678_9abc_def1u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..20 {
            let mut w = TimerWheel::new();
            let mut model: Vec<(u64, u64)> = Vec::new();
            let mut now = 1_000_000_000u64 * (round + 1);
            let mut fired = Vec::new();
            let mut seq = 0;
            for _ in 0..3000 {
                match next() % 4 {
                    0 | 1 => {
                        // Deadlines from 0 to 400 s ahead, some in the past, some equal.
                        let d = match next() % 5 {
                            0 => now.saturating_sub(next() % 1_000_000),
                            1 => now + 3_000_000_000,
                            _ => now + next() % 400_000_000_000,
                        };
                        w.arm(d, r(seq as u32), TimerKind::Handshake);
                        model.push((d, seq));
                        seq += 1;
                    }
                    2 => now += next() % 50_000_000,
                    _ => now += next() % 40_000_000_000,
                }
                let mut last = 0;
                while let Some(t) = w.pop_due(now) {
                    assert!(t.deadline_ns <= now);
                    assert!(t.deadline_ns >= last, "fired out of deadline order");
                    last = t.deadline_ns;
                    fired.push((t.deadline_ns, t.flow().slot as u64));
                }
                // Nothing due may be left behind once pop_due says None.
                let fired_set: std::collections::HashSet<u64> = fired.iter().map(|f| f.1).collect();
                let overdue =
                    model.iter().filter(|(d, s)| *d <= now && !fired_set.contains(s)).count();
                assert_eq!(overdue, 0, "timers due by {now} still pending");
            }
            now += 1 << 40;
            while let Some(t) = w.pop_due(now) {
                fired.push((t.deadline_ns, t.flow().slot as u64));
            }
            model.sort_unstable();
            let mut got = fired.clone();
            got.sort_unstable();
            assert_eq!(got, model, "every timer fires exactly once");
            assert!(w.is_empty());
        }
    }

    /// A jump of more than one revolution but less than two (17–34 s): every timer due by
    /// then fires, in order (a bucket-by-bucket walk once stopped half-way).
    #[test]
    fn a_jump_between_one_and_two_revolutions_fires_everything_due() {
        let mut w = TimerWheel::new();
        w.arm(0, r(0), TimerKind::Handshake);
        assert_eq!(w.pop_due(1).map(|t| t.flow().slot), Some(0));
        for (i, d) in [477u64 << 24, 500 << 24, (1500 << 24) + 1000].into_iter().enumerate() {
            w.arm(d, r(i as u32 + 1), TimerKind::Handshake);
        }
        let mut order = Vec::new();
        while let Some(t) = w.pop_due((1500 << 24) + 10) {
            order.push(t.flow().slot);
        }
        assert_eq!(order, vec![1, 2]);
        assert_eq!(w.pop_due((1500 << 24) + 1000).map(|t| t.flow().slot), Some(3));
    }

    #[test]
    fn fires_in_deadline_order_within_one_pass() {
        let mut w = TimerWheel::new();
        let base = 5_000_000_000u64;
        for (i, d) in [30u64, 10, 20, 10, 5_000, 99_000].iter().enumerate() {
            w.arm(base + d * 1_000_000, r(i as u32), TimerKind::Handshake);
        }
        let mut order = Vec::new();
        while let Some(t) = w.pop_due(base + 100_000_000_000) {
            order.push(t.flow().slot);
        }
        assert_eq!(order, vec![1, 3, 2, 0, 4, 5]);
        assert!(w.pop_due(u64::MAX).is_none());
    }
}
