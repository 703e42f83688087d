//! The flow engine one worker owns: de-duplicate, track both directions, run the detectors,
//! keep evidence. The same engine runs behind AF_XDP workers and behind `analyze`; its clock
//! is the packets' timestamps.
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use dataplane_common::tcp_flags::{ACK, FIN, RST, SYN};
use dataplane_common::{Outcome, OUTCOME_COUNT};

use crate::anomaly::health::MirrorDedup;
use crate::anomaly::paths::{Expired, MatcherStats, VantageMatcher};
use crate::anomaly::{
    self, loss, Ctx, Detection, Event, EvidenceRef, FlowExtra, FlowRef, Kind, KIND_COUNT,
};
use crate::budget::EvidenceBudget;
pub use crate::config::{host_name, EngineConfig};
use crate::evidence::{evidence_path, EvidenceJob, History};
use crate::flow::side::{SidePool, SideState, SlotHasher};
use crate::flow::table::{FlowRef as TableRef, Slot};
use crate::flow::timers::{TimerKind, TimerWheel};
use crate::flow::{
    conn_flags, dir_flags, FlowKey, FlowRecord, FlowTable, IpIdModel, MacId, MacTable, Orientation,
};
use crate::packet::{decode_ahead, decode_in, TcpPacket};
use crate::seq::SeqNumber;
use crate::tcp::{transition, Segment};
use crate::vantage::VantageRelations;
use crate::worker::RawFrame;

/// Flow flags private to the engine's gap handling.
const GAP_SEEN: [u16; 2] = [conn_flags::GAP_SEEN_LO, conn_flags::GAP_SEEN_HI];

/// How complete one vantage's view is, as Zeek's capture_loss measures it: ACKs that moved
/// the acknowledged point forward, and those of them that acknowledged bytes the vantage
/// never saw (the receiver got them, the capture did not). `capture_loss` is the share of
/// such ACKs; the bytes are the holes' sizes (and any acknowledged beyond the last byte seen).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VantageCapture {
    pub ack_events: u64,
    pub ack_bytes: u64,
    pub gap_events: u64,
    pub gap_bytes: u64,
}

impl VantageCapture {
    /// Percent of the ACKs that acknowledged unseen data (Zeek's percent_lost).
    pub fn loss_percent(&self) -> f64 {
        if self.ack_events == 0 {
            0.0
        } else {
            self.gap_events as f64 * 100.0 / self.ack_events as f64
        }
    }
    pub fn add(&mut self, o: &Self) {
        self.ack_events += o.ack_events;
        self.ack_bytes += o.ack_bytes;
        self.gap_events += o.gap_events;
        self.gap_bytes += o.gap_bytes;
    }
}

/// Counters the engine keeps (exported by the control plane).
#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    /// Capture completeness by vantage index.
    pub capture: Vec<VantageCapture>,
    pub packets: u64,
    pub anomalies: [u64; KIND_COUNT],
    /// Frames the parser refused, by XDP outcome reason.
    pub undecodable: [u64; OUTCOME_COUNT as usize],
    pub capture_lost: u64,
    pub evidence_suppressed: u64,
    pub flows_created: u64,
    pub flows_evicted: [u64; 4],
    pub flows_active: u64,
    /// Side-state requests refused because the pool was full, and entries reclaimed from
    /// flows that only timed a handshake.
    pub side_exhausted: u64,
    pub side_reclaimed: u64,
    /// MAC addresses seen after the per-engine MAC table filled (treated as unknown).
    pub macs_overflowed: u64,
    /// Cross-vantage matches that were not losses: toward a parallel vantage, or never judged.
    pub cross_vantage: MatcherStats,
}

/// Cross-vantage matching and evidence deadlines run at most this often (of packet time).
const HOUSEKEEPING_NS: u64 = 10_000_000;
/// Notes of answered handshakes kept for a caller that does not drain them (at most four per
/// vantage every 50 ms are made).
const MAX_PATH_NOTES: usize = 4096;
/// Armed side state (RST pairing waits) is expired this often.
const SIDE_EXPIRY_NS: u64 = 1_000_000_000;
/// The wheel is never swept below this many timers (a sweep then costs nothing worth saving).
const MIN_TIMER_SWEEP: usize = 1 << 16;
/// Handshake RTT samples kept between two drains (the live path drains every batch).
const MAX_SAMPLES: usize = 4096;
/// How far ahead [`Engine::process_batch`] fetches a flow's index line (its record is fetched
/// at half this distance). Eight packets of engine work (~1.5 µs) cover a DRAM miss.
const LOOKAHEAD: usize = 8;
/// Frames [`Engine::process_frames`] decodes ahead of processing them.
const DECODE_AHEAD: usize = 64;

/// One packet for [`Engine::process_batch`]: what [`Engine::process_expecting`] takes.
#[derive(Clone, Copy)]
pub struct Feed<'a> {
    pub pkt: &'a TcpPacket,
    /// The frame as captured (the evidence history keeps its first bytes).
    pub raw: &'a [u8],
    /// Its number in its source, for verdicts.
    pub frame_no: u64,
    /// Vantages expected to see it (0: the engine learns them; see `process_expecting`).
    pub expected: u128,
}

pub struct Engine {
    pub cfg: EngineConfig,
    worker: usize,
    flows: FlowTable,
    side: SidePool<FlowExtra>,
    macs: MacTable,
    timers: TimerWheel,
    /// Timer count at which stale timers are swept out (see `arm_timer`).
    timers_sweep_at: usize,
    epoch: u8,
    counters: [u64; KIND_COUNT],
    undecodable: [u64; OUTCOME_COUNT as usize],
    packets: u64,
    capture_lost: u64,
    /// By vantage index (at most `flow::MAX_VANTAGES`), grown as vantages appear.
    capture: Vec<VantageCapture>,
    dedup: MirrorDedup,
    matcher: VantageMatcher,
    history: History,
    rate: EvidenceBudget,
    evidence_suppressed: u64,
    jobs: HashMap<Slot, (TableRef, EvidenceJob), BuildHasherDefault<SlotHasher>>,
    finished: Vec<EvidenceJob>,
    events: Vec<Event>,
    verdicts: Vec<(u64, u32)>,
    /// Reused for each packet's detections (no allocation per packet).
    found: Vec<Detection>,
    /// Reused by `process_frames` for the frames it decoded ahead.
    decoded: Vec<(usize, Result<TcpPacket, Outcome>)>,
    scratch_slots: Vec<Slot>,
    rtt_samples: Vec<u64>,
    zero_window_samples: Vec<u64>,
    /// By vantage index: the services this engine last noted answering there.
    answered: Vec<anomaly::setup::AnswerSlots>,
    path_notes: Vec<anomaly::setup::PathNote>,
    evidence_seq: u64,
    now_ns: u64,
    last_housekeeping_ns: u64,
    last_side_expiry_ns: u64,
}

impl Engine {
    pub fn new(cfg: EngineConfig, worker: usize) -> Self {
        Self {
            flows: if cfg.flow_index_grows {
                FlowTable::new(cfg.flow_capacity)
            } else {
                FlowTable::presized(cfg.flow_capacity)
            },
            side: SidePool::new(cfg.side_capacity),
            macs: MacTable::new(),
            timers: TimerWheel::new(),
            timers_sweep_at: MIN_TIMER_SWEEP,
            epoch: 0,
            counters: [0; KIND_COUNT],
            undecodable: [0; OUTCOME_COUNT as usize],
            packets: 0,
            capture_lost: 0,
            capture: Vec::new(),
            dedup: MirrorDedup::new(1 << 14, cfg.mirror_window_ns),
            matcher: {
                let mut m = VantageMatcher::with_relations(
                    cfg.vantage_relations.clone(),
                    cfg.learn_vantage_relations,
                );
                if let Some(r) = &cfg.vantage_ranges {
                    m.set_ranges(r.clone());
                }
                m
            },
            history: History::with_memory(cfg.history_bytes),
            rate: cfg
                .evidence_budget
                .clone()
                .unwrap_or_else(|| EvidenceBudget::new(cfg.evidence_per_sec)),
            evidence_suppressed: 0,
            jobs: HashMap::default(),
            finished: Vec::new(),
            events: Vec::new(),
            verdicts: Vec::new(),
            found: Vec::with_capacity(8),
            decoded: Vec::with_capacity(DECODE_AHEAD),
            scratch_slots: Vec::new(),
            rtt_samples: Vec::new(),
            zero_window_samples: Vec::new(),
            answered: Vec::new(),
            path_notes: Vec::new(),
            evidence_seq: 0,
            now_ns: 0,
            last_housekeeping_ns: 0,
            last_side_expiry_ns: 0,
            cfg,
            worker,
        }
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            capture: self.capture.clone(),
            packets: self.packets,
            anomalies: self.counters,
            undecodable: self.undecodable,
            capture_lost: self.capture_lost,
            evidence_suppressed: self.evidence_suppressed,
            flows_created: self.flows.created,
            flows_evicted: self.flows.evicted,
            flows_active: self.flows.len() as u64,
            side_exhausted: self.side.exhausted,
            side_reclaimed: self.side.reclaimed,
            macs_overflowed: self.macs.overflowed,
            cross_vantage: self.matcher.stats,
        }
    }

    /// How the vantage pairs relate, as this engine judges them now.
    pub fn vantage_relations(&self) -> &VantageRelations {
        &self.matcher.relations
    }

    /// The events since the last call, written out.
    pub fn drain_events(&mut self) -> Vec<Event> {
        let mut events = std::mem::take(&mut self.events);
        events.iter_mut().for_each(Event::render);
        events
    }
    /// The events since the last call, for an [`Aggregator`](anomaly::aggregate::Aggregator):
    /// some words may still be unwritten ([`Event::render`]); the aggregator writes those of
    /// the events it lets out, and folds the rest (a SYN flood's) without writing them.
    pub fn drain_events_for_aggregation(&mut self) -> Vec<Event> {
        // As many as last time fit without growing (a flood makes hundreds a batch).
        let room = Vec::with_capacity(self.events.len());
        std::mem::replace(&mut self.events, room)
    }
    pub fn drain_evidence(&mut self) -> Vec<EvidenceJob> {
        std::mem::take(&mut self.finished)
    }
    pub fn drain_verdicts(&mut self) -> Vec<(u64, u32)> {
        std::mem::take(&mut self.verdicts)
    }
    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }
    /// Side-state entries in use (detectors armed).
    pub fn side_in_use(&self) -> usize {
        self.side.in_use()
    }
    /// Timers pending (handshakes and expiry checks).
    pub fn timers_pending(&self) -> usize {
        self.timers.len()
    }

    /// Our own rings dropped frames: every flow enters the gap state until it resynchronises.
    pub fn capture_loss(&mut self, lost: u64) {
        self.capture_lost += lost;
        self.counters[Kind::CaptureGap as usize] += 1;
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// The input of `vantage` went back in time from `from_ns` to `to_ns` (a time jump:
    /// concatenated or merged captures, a clock step). Like a capture gap, nothing is inferred
    /// across it: deadlines up to `from_ns` fire first, then the vantage's flows end (their
    /// sequence state belongs to the other timeline, and evidence pending for them is
    /// written), every other flow enters the gap state, and the clock follows time back.
    /// `count`: whether this engine counts the jump (one of several sharing the vantage's
    /// flows does).
    pub fn time_jump(&mut self, vantage: u16, from_ns: u64, to_ns: u64, count: bool) {
        self.tick(from_ns);
        if count {
            self.counters[Kind::TimeJump as usize] += 1;
        }
        self.epoch = self.epoch.wrapping_add(1);
        // The input's flows, and those of the mirror sessions read from it.
        let of_input: Vec<bool> = (0..self.cfg.vantages.len())
            .map(|v| self.cfg.vantages.input_of(v as u16) == vantage)
            .collect();
        let gone: Vec<Slot> = self
            .flows
            .iter()
            .filter(|(_, r)| of_input.get(r.key.vantage() as usize).copied().unwrap_or(false))
            .map(|(s, _)| s)
            .collect();
        for s in gone {
            // Its timeline ends here.
            self.report_retried_syn(s, from_ns);
            self.flows.remove(s);
            self.forget(s);
        }
        self.dedup.clear();
        self.now_ns = to_ns;
        self.last_housekeeping_ns = to_ns;
        self.last_side_expiry_ns = to_ns;
    }

    /// Feeds one Ethernet frame. `frame_no` numbers it in its source (for verdicts).
    pub fn process_frame(
        &mut self,
        data: &[u8],
        orig_len: u32,
        ts_ns: u64,
        vantage: u16,
        frame_no: u64,
    ) {
        // Borrowed where it was decoded: moving the packet out of the result copies it.
        match &decode_in(data, orig_len, ts_ns, vantage, &self.cfg.vantages) {
            Ok(p) => self.process(p, data, frame_no),
            Err(o) => self.undecodable(*o),
        }
    }

    /// [`process_frame`](Self::process_frame) for each of `frames` in turn (numbered from
    /// `first_no` for verdicts), decoded up to [`DECODE_AHEAD`] at a time so that their flow
    /// look-ups are batched (see [`process_batch`](Self::process_batch)). A frame that opens a
    /// new mirror session ends the run decoded ahead: it is decoded (and the session numbered)
    /// after every frame before it was processed, as one at a time would.
    pub fn process_frames(&mut self, frames: &[RawFrame<'_>], first_no: u64) {
        let mut decoded = std::mem::take(&mut self.decoded);
        let mut start = 0;
        while start < frames.len() {
            decoded.clear();
            let (mut end, mut opens_session) = (start, false);
            while end < frames.len() && decoded.len() < DECODE_AHEAD {
                let f = &frames[end];
                let vantages = &self.cfg.vantages;
                let Some(d) = decode_ahead(f.data, f.orig_len, f.ts_ns, f.vantage, vantages) else {
                    opens_session = true;
                    break;
                };
                decoded.push((end - start, d));
                end += 1;
            }
            let (run, first) = (&frames[start..end], first_no + start as u64);
            self.process_batch(
                &decoded,
                |(i, d)| {
                    let pkt = d.as_ref().ok()?;
                    Some(Feed { pkt, raw: run[*i].data, frame_no: first + *i as u64, expected: 0 })
                },
                |e, (_, d)| {
                    if let Err(o) = d {
                        e.undecodable(*o);
                    }
                },
            );
            start = end;
            if opens_session {
                let f = &frames[start];
                self.process_frame(f.data, f.orig_len, f.ts_ns, f.vantage, first_no + start as u64);
                start += 1;
            }
        }
        self.decoded = decoded;
    }

    /// Runs `items` through the engine in their order with the flow-table look-ups batched:
    /// the index line of the flow [`LOOKAHEAD`] items ahead is fetched, and the record of the
    /// one half as far ahead (its index line has arrived by then), so a table larger than the
    /// caches costs misses already in flight instead of two in a row for every packet.
    /// `feed_of` (called once per item, when it enters the look-ahead) gives what
    /// [`process_expecting`](Self::process_expecting) takes for the items that are packets;
    /// `other` is called for the rest (marks, undecodable frames), in order.
    pub fn process_batch<'a, T>(
        &mut self,
        items: &'a [T],
        feed_of: impl Fn(&'a T) -> Option<Feed<'a>>,
        mut other: impl FnMut(&mut Self, &'a T),
    ) {
        // Item j's feed and its key's hash, at j % LOOKAHEAD from when it enters the look-ahead
        // until it is processed.
        let mut ahead: [Option<(Feed<'a>, u64)>; LOOKAHEAD] = [None; LOOKAHEAD];
        let enter = |flows: &FlowTable, ahead: &mut [Option<(Feed<'a>, u64)>], j: usize| {
            let Some(item) = items.get(j) else { return };
            ahead[j % LOOKAHEAD] = feed_of(item).map(|f| {
                let h = flows.hash(&f.pkt.key);
                flows.prefetch(h);
                (f, h)
            });
        };
        for j in 0..LOOKAHEAD.min(items.len()) {
            enter(&self.flows, &mut ahead, j);
        }
        for (i, item) in items.iter().enumerate() {
            let near = i + LOOKAHEAD / 2;
            if near < items.len() {
                if let Some((_, h)) = ahead[near % LOOKAHEAD] {
                    self.flows.prefetch_record(h);
                }
            }
            match ahead[i % LOOKAHEAD].take() {
                Some((f, h)) => self.process_hashed(&f, Some(h)),
                None => other(self, item),
            }
            enter(&self.flows, &mut ahead, i + LOOKAHEAD);
        }
    }

    /// A frame the decoder refused (decoded elsewhere, e.g. by a reader that shards): counted
    /// by reason, unless it was simply not TCP.
    pub fn undecodable(&mut self, o: Outcome) {
        if !matches!(o, Outcome::NonTcpPassed | Outcome::LaterFragment) {
            self.undecodable[o as usize] += 1;
        }
    }

    /// The flow of `key` (whose hash is `h`, when known), created (evicting one first when
    /// the table is full) if new.
    fn flow_slot(&mut self, key: FlowKey, h: Option<u64>, ts_ns: u64) -> (Slot, bool, TableRef) {
        debug_assert!(
            h.is_none_or(|h| h == self.flows.hash(&key)),
            "a batch's hash of another key"
        );
        let h = h.unwrap_or_else(|| self.flows.hash(&key));
        let tag = h as u32 & crate::flow::table::TAG_MASK;
        if let Some(s) = self.flows.find(&key, h) {
            return (s, false, TableRef { slot: s, tag });
        }
        if self.flows.is_full() {
            if let Some((gone, reason)) = self.flows.pick_victim() {
                self.report_retried_syn(gone, ts_ns);
                self.flows.evict(gone, reason);
                self.forget(gone);
            }
        }
        let s = self.flows.insert(key, h, ts_ns, self.epoch);
        (s, true, TableRef { slot: s, tag })
    }

    /// Drops what the engine keeps about a flow that left the table.
    fn forget(&mut self, slot: Slot) {
        self.side.release(slot);
        if let Some((_, job)) = self.jobs.remove(&slot) {
            self.finished.push(job);
        }
    }

    pub fn process(&mut self, p: &TcpPacket, raw: &[u8], frame_no: u64) {
        self.process_expecting(p, raw, frame_no, 0);
    }

    /// [`process`](Self::process) with the vantages expected to see this packet, learned by
    /// the caller from the whole input (see `anomaly::paths::VantageLearning`); 0: the engine
    /// learns from its own flows.
    pub fn process_expecting(
        &mut self,
        p: &TcpPacket,
        raw: &[u8],
        frame_no: u64,
        expected_vantages: u128,
    ) {
        self.process_hashed(&Feed { pkt: p, raw, frame_no, expected: expected_vantages }, None);
    }

    /// One packet; `h` is its flow key's hash when a batch already computed it.
    fn process_hashed(&mut self, f: &Feed<'_>, h: Option<u64>) {
        let Feed { pkt: p, raw, frame_no, expected: expected_vantages } = *f;
        // Deadlines that passed before this packet fire first, on the state they saw (a
        // deadline equal to the packet's time lets the packet count).
        self.run_timers(p.ts_ns.saturating_sub(1));
        self.packets += 1;
        if p.ts_ns > self.now_ns {
            self.now_ns = p.ts_ns;
        }
        if self.dedup.is_duplicate(p) {
            self.counters[Kind::MirrorDuplicate as usize] += 1;
            if self.cfg.record_verdicts {
                self.verdicts.push((frame_no, loss::verdict::MIRROR_DUPLICATE));
            }
            return;
        }
        let (key, side) = p.flow();
        let (slot, created, flow_ref) = self.flow_slot(key, h, p.ts_ns);
        let first_ns = self.flows.first_ns(self.flows.get(slot), p.ts_ns);
        let src_mac = self.macs.intern(p.src_mac);
        let dst_mac = self.macs.intern(p.dst_mac);
        let epoch = self.epoch;
        let rec = self.flows.get_mut(slot);
        let hist_id = if self.cfg.history_bytes > 0 {
            self.history.push_packet(p, raw, rec.last_hist)
        } else {
            u32::MAX
        };
        rec.last_hist = hist_id;
        if self.cfg.vantages.len() > 1 {
            self.matcher.observe(p, hist_id, expected_vantages);
        }
        if created && !p.has(SYN) {
            rec.flags |= conn_flags::MIDSTREAM;
        }
        if rec.flags & conn_flags::HAS_SIDE != 0 && self.side.get(slot).is_none() {
            // Its entry was reclaimed for another flow.
            rec.flags &= !conn_flags::HAS_SIDE;
        }

        // Gap state: behind the worker's loss epoch until both sides were seen again.
        let mut in_gap = rec.epoch != epoch;
        if in_gap {
            rec.flags |= GAP_SEEN[side];
            if rec.flags & GAP_SEEN[0] != 0 && rec.flags & GAP_SEEN[1] != 0 {
                rec.epoch = epoch;
                rec.flags &= !(GAP_SEEN[0] | GAP_SEEN[1]);
            }
            // The first packets after a gap re-anchor the sequence state.
            let d = &mut rec.dirs[side];
            if d.flags & dir_flags::SEEN != 0 && p.seq_end() > d.next_seq {
                d.next_seq = p.seq_end();
            }
            in_gap = true;
        }

        let mut found = std::mem::take(&mut self.found);
        let verdict;
        let was = rec.state;
        let had_synack = rec.flags & conn_flags::SYNACK_SEEN != 0;
        let syns_before = rec.syns();
        let handshake_restarted;
        {
            let before = rec.dirs[side];
            let mut c = Ctx {
                pkt: p,
                key,
                flow_ref,
                first_ns,
                side,
                before,
                flow: rec,
                side_state: &mut self.side,
                macs: &self.macs,
                src_mac,
                dst_mac,
                cfg: &self.cfg,
                now_us: 0,
                in_gap,
                hist_id,
                found: &mut found,
                counters: &mut self.counters,
                rtt_samples: &mut self.rtt_samples,
                handshake_restarted: false,
            };
            c.now_us = rel_us(first_ns, p.ts_ns);
            if !in_gap {
                anomaly::paths::on_packet(&mut c);
            }
            anomaly::setup::on_packet(&mut c);
            // Capture completeness (Zeek's capture_loss): what this ACK newly acknowledges, and
            // how much of it the vantage never saw the other side send.
            let advance = if p.has(ACK)
                && !p.has(RST)
                && before.flags & dir_flags::DATA_OR_ACK != 0
                && p.ack > before.last_ack
            {
                p.ack.diff(before.last_ack) as u32 as u64
            } else {
                0
            };
            let unseen = if in_gap { 0 } else { loss::unseen_acked(&mut c) };
            verdict = loss::on_packet(&mut c);
            if advance > 0 && !in_gap {
                let v = p.vantage as usize;
                if v < crate::flow::MAX_VANTAGES {
                    if self.capture.len() <= v {
                        self.capture.resize(v + 1, VantageCapture::default());
                    }
                    let vc = &mut self.capture[v];
                    vc.ack_events += 1;
                    vc.ack_bytes += advance;
                    vc.gap_bytes += u64::from(unseen).min(advance);
                    if verdict & loss::verdict::ACK_UNSEEN != 0 {
                        vc.gap_events += 1;
                        if let Some(x) = c.extra() {
                            x.capture_loss = true;
                        }
                        c.counters[Kind::CaptureLoss as usize] += 1;
                    }
                }
            }
            anomaly::resets::on_packet(&mut c);
            if !in_gap {
                anomaly::paths::check_one_sided(&mut c);
            }
            handshake_restarted = c.handshake_restarted;
        }
        let rec = self.flows.get_mut(slot);
        rec.state = transition(rec.state, segment_of(p, rec, side));
        let now_state = rec.state;
        learn_sender(rec, p, side, first_ns, src_mac, dst_mac);
        if rec.flags & conn_flags::HAS_SIDE != 0 {
            if !now_state.is_half_open() {
                if let Some(x) = self.side.get_mut(slot) {
                    x.end_handshake();
                }
            }
            if self.side.release_if_idle(slot) {
                rec.flags &= !conn_flags::HAS_SIDE;
            }
        }
        let answered = !had_synack && rec.flags & conn_flags::SYNACK_SEEN != 0;
        let evidence_pending = rec.flags & conn_flags::EVIDENCE_PENDING != 0;
        // The count saturates (4 bits): a SYN beyond it still counts as one more.
        let syn_retried = p.has(SYN)
            && anomaly::setup::syn_retried_unanswered(
                rec,
                syns_before.min(crate::flow::SYN_COUNT_MAX - 1),
            );
        if answered {
            self.note_answered(p.vantage, key.endpoint(side), p.ts_ns);
        }
        // A handshake begins: the flow became half-open, or a SYN began a new connection while
        // it still was (a new ISN in SynSent, a SYN the SYN-ACK seen first did not answer, the
        // other side's SYN of a simultaneous open). Each gets a handshake timeout of its own;
        // one still pending for an earlier connection finds itself stale, so every first-SYN
        // time in the side state has a timer of its own.
        if now_state.is_half_open() && (!was.is_half_open() || handshake_restarted) {
            self.arm_timer(
                p.ts_ns.saturating_add(self.cfg.handshake_timeout_ns),
                flow_ref,
                TimerKind::Handshake,
            );
            if !was.is_half_open() {
                self.flows.note_half_open(slot);
            }
        } else if created {
            self.arm_expiry(slot, p.ts_ns.saturating_add(self.cfg.idle_timeout_ns));
        }
        if syn_retried {
            let deadline = p.ts_ns.saturating_add(anomaly::setup::SYN_ANSWER_GRACE_NS);
            self.arm_timer(deadline, flow_ref, TimerKind::SynGrace);
        }
        if now_state.is_closed() && !was.is_closed() {
            self.flows.note_closed(slot);
            self.arm_expiry(slot, p.ts_ns.saturating_add(self.cfg.closed_timeout_ns));
        }
        if self.cfg.record_verdicts {
            self.verdicts.push((frame_no, verdict));
        }
        // Evidence collection after an earlier detection on this flow.
        if evidence_pending {
            self.feed_job(slot, hist_id);
        }
        // Most packets find nothing: no drain to set up and tear down then.
        if !found.is_empty() {
            for d in found.drain(..) {
                if d.kind == Kind::ZeroWindow && self.zero_window_samples.len() < MAX_SAMPLES {
                    if let Some(dur) =
                        d.details.get("duration_s").and_then(serde_json::Value::as_f64)
                    {
                        self.zero_window_samples.push((dur * 1e9) as u64);
                    }
                }
                if loss::is_reportable(&d) {
                    self.emit(d, slot, side, p, hist_id);
                }
            }
        }
        self.found = found;
        if self.rtt_samples.len() > MAX_SAMPLES {
            self.rtt_samples.truncate(MAX_SAMPLES);
        }
    }

    /// Arms a fresh expiry check for the flow in `slot` (older ones become stale).
    fn arm_expiry(&mut self, slot: Slot, deadline_ns: u64) {
        let r = self.flows.get_mut(slot);
        r.flags ^= conn_flags::EXPIRY_GEN;
        let gen = r.flags & conn_flags::EXPIRY_GEN != 0;
        let fr = self.flows.flow_ref(slot);
        self.arm_timer(deadline_ns, fr, TimerKind::Expiry { gen });
    }

    /// Arms a timer; when the wheel holds half again as many timers as there are flows (a live
    /// flow has one timer pending, rarely two or three: a SYN sent three times waits out its
    /// grace beside its handshake timeout), sweeps out the stale ones (of evicted flows,
    /// superseded expiry checks) first. Under a SYN flood every evicted flow leaves its timer
    /// behind; this keeps the wheel near one timer per flow at an amortized O(1) per arm.
    fn arm_timer(&mut self, deadline_ns: u64, flow: TableRef, kind: TimerKind) {
        if self.timers.len() >= self.timers_sweep_at {
            let flows = &self.flows;
            self.timers.retain(|t| {
                flows.resolve(t.flow()).is_some_and(|s| match t.kind() {
                    // Still due: a handshake timer ends the handshake and arms the flow's
                    // expiry; a grace may report it.
                    TimerKind::Handshake | TimerKind::SynGrace => true,
                    TimerKind::Expiry { gen } => {
                        (flows.get(s).flags & conn_flags::EXPIRY_GEN != 0) == gen
                    }
                })
            });
            let live = self.timers.len().max(self.flows.len());
            self.timers_sweep_at = (live + live / 2).max(MIN_TIMER_SWEEP);
        }
        self.timers.arm(deadline_ns, flow, kind);
    }

    /// Handshake RTTs and zero-window durations (ns) measured since the last call.
    pub fn drain_samples(&mut self) -> (Vec<u64>, Vec<u64>) {
        (std::mem::take(&mut self.rtt_samples), std::mem::take(&mut self.zero_window_samples))
    }

    /// Advances time without a packet (live workers call this about every 100 ms).
    pub fn tick(&mut self, now_ns: u64) {
        if now_ns > self.now_ns {
            self.now_ns = now_ns;
        }
        self.run_timers(self.now_ns);
    }

    fn run_timers(&mut self, now: u64) {
        while let Some(t) = self.timers.pop_due(now) {
            let Some(slot) = self.flows.resolve(t.flow()) else { continue };
            match t.kind() {
                TimerKind::Handshake => {
                    if self.handshake_timer_is_stale(slot, t.deadline_ns) {
                        continue;
                    }
                    self.handshake_timeout(slot, t.deadline_ns);
                    // Reported (or completed): the handshake's timing is no longer needed.
                    if let Some(x) = self.side.get_mut(slot) {
                        x.end_handshake();
                    }
                    if self.side.release_if_idle(slot) {
                        self.flows.get_mut(slot).flags &= !conn_flags::HAS_SIDE;
                    }
                    // The handshake is over one way or the other: from now on the flow only
                    // needs its expiry check.
                    let r = self.flows.get(slot);
                    let limit = if r.state.is_closed() {
                        self.cfg.closed_timeout_ns
                    } else {
                        self.cfg.idle_timeout_ns
                    };
                    let deadline =
                        self.flows.last_ns(r, now).saturating_add(limit).max(t.deadline_ns);
                    self.arm_expiry(slot, deadline);
                }
                TimerKind::SynGrace => self.syn_grace_over(slot, t.deadline_ns),
                TimerKind::Expiry { gen } => {
                    let r = self.flows.get(slot);
                    if (r.flags & conn_flags::EXPIRY_GEN != 0) != gen {
                        continue;
                    }
                    let limit = if r.state.is_closed() {
                        self.cfg.closed_timeout_ns
                    } else {
                        self.cfg.idle_timeout_ns
                    };
                    let deadline = self.flows.last_ns(r, now).saturating_add(limit);
                    if deadline <= now {
                        self.flows.remove(slot);
                        self.flows.count_expired();
                        self.forget(slot);
                    } else {
                        self.arm_expiry(slot, deadline);
                    }
                }
            }
        }
        // Cross-vantage matching, evidence deadlines: at most every 10 ms of time.
        if now.saturating_sub(self.last_housekeeping_ns) < HOUSEKEEPING_NS {
            return;
        }
        self.last_housekeeping_ns = now;
        if self.cfg.vantages.len() > 1 {
            let found =
                self.matcher.expire(now, self.cfg.vantage_window_ns, self.cfg.vantages.len());
            self.report_cross_vantage(found);
        }
        let mut done = std::mem::take(&mut self.scratch_slots);
        done.extend(
            self.jobs.iter().filter(|(_, (_, j))| j.after_until_ns <= now).map(|(s, _)| *s),
        );
        done.sort_unstable();
        for s in done.drain(..) {
            self.finish_job(s);
        }
        if now.saturating_sub(self.last_side_expiry_ns) >= SIDE_EXPIRY_NS {
            self.last_side_expiry_ns = now;
            let pairing = self.cfg.pairing_window_max_ns;
            self.side.for_each_in_use(|s, x| {
                anomaly::resets::expire_wait(x, now, pairing);
                if x.is_idle() {
                    done.push(s);
                }
            });
            for s in done.drain(..) {
                self.side.release(s);
                self.flows.get_mut(s).flags &= !conn_flags::HAS_SIDE;
            }
        }
        self.scratch_slots = done;
    }

    fn handshake_timeout(&mut self, slot: Slot, now: u64) {
        let flow_ref = self.flows.flow_ref(slot);
        let first_ns = self.flows.first_ns(self.flows.get(slot), now);
        let rec = self.flows.get_mut(slot);
        if !rec.state.is_half_open() || rec.flags & conn_flags::HANDSHAKE_REPORTED != 0 {
            return;
        }
        let key = rec.key;
        let side = rec.client_side().unwrap_or(0);
        let placeholder = placeholder_packet(&key, side, now);
        let hist = rec.last_hist;
        let mut found = std::mem::take(&mut self.found);
        {
            let before = rec.dirs[side];
            let mut c = Ctx {
                pkt: &placeholder,
                key,
                flow_ref,
                first_ns,
                side,
                before,
                flow: rec,
                side_state: &mut self.side,
                macs: &self.macs,
                src_mac: MacId::UNKNOWN,
                dst_mac: MacId::UNKNOWN,
                cfg: &self.cfg,
                now_us: 0,
                in_gap: false,
                hist_id: hist,
                found: &mut found,
                counters: &mut self.counters,
                rtt_samples: &mut self.rtt_samples,
                handshake_restarted: false,
            };
            anomaly::setup::on_timeout(&mut c);
        }
        for d in found.drain(..) {
            self.emit(d, slot, side, &placeholder, hist);
        }
        self.found = found;
    }

    /// Flushes pending evidence (end of input or shutdown).
    pub fn finish(&mut self) {
        self.report_retried_syns();
        if self.cfg.vantages.len() > 1 {
            let found = self.matcher.finish(self.cfg.vantages.len());
            self.report_cross_vantage(found);
        }
        let mut slots: Vec<Slot> = self.jobs.keys().copied().collect();
        slots.sort_unstable();
        for s in slots {
            self.finish_job(s);
        }
    }

    /// Losses between serial vantages (once per flow, counted always) and splits over
    /// parallel ones, on the flow of the vantage that saw the packet.
    fn report_cross_vantage(&mut self, found: Expired) {
        for m in found.lost {
            self.counters[Kind::LostBetweenSensors as usize] += 1;
            let d = anomaly::paths::lost_detection(&m, &self.cfg.vantages);
            let (key, side) = m.pkt.flow();
            let Some(slot) = self.flows.find(&key, self.flows.hash(&key)) else { continue };
            let f = self.flows.get_mut(slot);
            if f.flags & conn_flags::LOST_BETWEEN_REPORTED == 0 {
                f.flags |= conn_flags::LOST_BETWEEN_REPORTED;
                self.emit(d, slot, side, &m.pkt, m.hist_id);
            }
        }
        for sp in found.splits {
            self.counters[Kind::SplitPath as usize] += 1;
            let d = anomaly::paths::split_detection(&sp, &self.cfg.vantages);
            let (key, side) = sp.pkt.flow();
            let Some(slot) = self.flows.find(&key, self.flows.hash(&key)) else { continue };
            self.emit(d, slot, side, &sp.pkt, sp.hist_id);
        }
    }

    /// At the end of input, a SYN sent three times whose grace had not run out is reported
    /// anyway: nothing answered it before the input ended (the rule before the grace existed,
    /// and all that can still be said). A lone SYN's handshake timeout still needs its whole
    /// time.
    fn report_retried_syns(&mut self) {
        let mut pending = Vec::new();
        let flows = &self.flows;
        self.timers.retain(|t| {
            if t.kind() == TimerKind::SynGrace {
                pending.extend(flows.resolve(t.flow()));
            }
            true
        });
        pending.sort_unstable();
        pending.dedup();
        for slot in pending {
            self.report_retried_syn(slot, self.now_ns);
        }
    }

    /// The flow in `slot` leaves (evicted, its vantage's time jumped back, the input ended)
    /// at `now`: if its SYN was sent three times and is still unanswered, inside its grace,
    /// it is reported now, since nothing more can be learned.
    fn report_retried_syn(&mut self, slot: Slot, now: u64) {
        if anomaly::setup::syn_retried_unanswered(self.flows.get(slot), 0) {
            self.handshake_timeout(slot, now);
        }
    }

    /// Whether a handshake timer running out at `deadline` was armed for an earlier
    /// connection than the flow's current one (a SYN that began a new connection restarted
    /// the handshake and armed a timer of its own). Known only while the flow holds side state
    /// (the current connection's first SYN time); without it, the earlier timer reports.
    fn handshake_timer_is_stale(&self, slot: Slot, deadline: u64) -> bool {
        let first = self.side.get(slot).and_then(|x| x.syn_first_ns);
        first.is_some_and(|t| t.saturating_add(self.cfg.handshake_timeout_ns) > deadline)
    }

    /// The grace after the SYN of `slot` was sent for the third (or later) time ran out at
    /// `deadline`: the flow is reported if still unanswered, unless a later SYN (a further
    /// retransmission, or a new connection on the tuple) has a grace of its own still running.
    fn syn_grace_over(&mut self, slot: Slot, deadline: u64) {
        let grace = anomaly::setup::SYN_ANSWER_GRACE_NS;
        let later = self.side.get(slot).and_then(|x| x.syn_ns);
        if later.is_none_or(|t| t.saturating_add(grace) <= deadline) {
            self.report_retried_syn(slot, deadline);
        }
    }

    fn finish_job(&mut self, slot: Slot) {
        if let Some((r, job)) = self.jobs.remove(&slot) {
            if let Some(s) = self.flows.resolve(r) {
                self.flows.get_mut(s).flags &= !conn_flags::EVIDENCE_PENDING;
            }
            self.finished.push(job);
        }
    }

    fn feed_job(&mut self, slot: Slot, hist_id: u32) {
        let Some((_, job)) = self.jobs.get_mut(&slot) else { return };
        if job.packets.last().is_some_and(|p| p.id == hist_id) {
            return;
        }
        if let Some(p) = self.history.flow_before(hist_id, 1, 0).pop() {
            job.packets.push(p);
        }
        job.after_left = job.after_left.saturating_sub(1);
        if job.after_left == 0 {
            self.finish_job(slot);
        }
    }

    fn vantage_name(&self, v: u16) -> String {
        self.cfg.vantages.name(v)
    }

    /// A handshake to `service` was answered at vantage `v`: a note for the aggregator's
    /// `service_blackhole`, a few per second per vantage at most.
    fn note_answered(&mut self, v: u16, service: (std::net::IpAddr, u16), now: u64) {
        let i = v as usize;
        if i >= crate::flow::MAX_VANTAGES || self.path_notes.len() >= MAX_PATH_NOTES {
            return;
        }
        if self.answered.len() <= i {
            self.answered.resize(i + 1, Default::default());
        }
        if self.answered[i].refresh(service, now) {
            let vantage = self.vantage_name(v);
            self.path_notes.push(anomaly::setup::PathNote { at_ns: now, vantage, service });
        }
    }

    /// The notes of answered handshakes since the last call (for the aggregator).
    pub fn drain_path_notes(&mut self) -> Vec<anomaly::setup::PathNote> {
        std::mem::take(&mut self.path_notes)
    }

    fn emit(&mut self, d: Detection, slot: Slot, side: usize, p: &TcpPacket, hist_id: u32) {
        let flow = *self.flows.get(slot);
        let key = flow.key;
        let direction = match flow.client_side() {
            Some(c) if c == side => "client_to_server",
            Some(_) => "server_to_client",
            None => "unknown",
        };
        let (src, sport) = key.endpoint(side);
        let (dst, dport) = key.endpoint(1 - side);
        let (origin, orientation) = flow.originator();
        let (src_ip, src_port) = key.endpoint(origin);
        let (dest_ip, dest_port) = key.endpoint(1 - origin);
        // The handshake's ISN tells one connection on this 4-tuple from the next (the record's
        // start time would not: it depends on which packet the worker saw first).
        let isn = match orientation {
            Orientation::Syn => flow.dirs[origin].isn.0,
            Orientation::SynAck => flow.dirs[1 - origin].isn.0,
            Orientation::Guessed => 0,
        };
        let vantage = self.vantage_name(p.vantage);
        let first = d.first_ns.unwrap_or(p.ts_ns).min(p.ts_ns);
        if !d.kind.counted_at_each() {
            self.counters[d.kind as usize] += 1;
        }
        let mut d = d;
        let lossy = flow.flags & conn_flags::HAS_SIDE != 0
            && self.side.get(slot).is_some_and(|x| x.capture_loss);
        if lossy && !d.kind.is_sensor_health() && d.kind != Kind::AckUnseenSegment {
            // The verdict rests on a view with holes: say so where it is read.
            d.explanation.push_str(
                " Caution: this vantage missed data of this flow (bytes were acknowledged that it never saw), so part of the exchange is unknown.",
            );
            d.details.insert("capture_loss".into(), serde_json::Value::Bool(true));
        }
        let evidence = self.attach_evidence(slot, hist_id, &mut d, p.ts_ns);
        self.events.push(Event {
            schema_version: anomaly::SCHEMA_VERSION,
            kind: d.kind,
            sub_kind: d.sub_kind,
            // The times as text and the Community ID are written when the event leaves (see
            // `Event::render`): a flood's events are folded without them.
            time_first: String::new(),
            time_last: String::new(),
            time_first_ns: first,
            time_last_ns: p.ts_ns,
            host: self.cfg.host.clone(),
            flow_id: flow_id(&key, orientation, isn),
            community_id: String::new(),
            community_of: Some((key, self.cfg.community_id_seed)),
            src_ip,
            src_port,
            dest_ip,
            dest_port,
            proto: "tcp",
            orientation: orientation.name(),
            packet_direction: if side == origin { "to_server" } else { "to_client" },
            flow: FlowRef { src, sport, dst, dport, vlan: key.vlan, direction },
            vantage,
            count: d.count,
            fingerprints: d.fingerprints,
            culprit: d.culprit,
            explanation: d.explanation,
            details: d.details,
            evidence,
            deferred: d.deferred,
        });
    }

    fn attach_evidence(
        &mut self,
        slot: Slot,
        hist_id: u32,
        d: &mut Detection,
        now: u64,
    ) -> Option<EvidenceRef> {
        let dir = self.cfg.evidence_dir.clone()?;
        let kind = d.kind;
        // The trigger packet's comment, written only where evidence is kept (with the words
        // the detector left for later).
        let comment = |d: &mut Detection| {
            d.render();
            format!("wirewatch {}: {}", kind.name(), d.explanation)
        };
        if let Some((_, job)) = self.jobs.get_mut(&slot) {
            let n = job.comment(hist_id, &comment(d))?;
            return Some(EvidenceRef { path: job.path.display().to_string(), packets: vec![n] });
        }
        if !self.rate.allow(now) {
            self.evidence_suppressed += 1;
            return None;
        }
        let last = self.flows.get(slot).last_hist;
        let packets = self.history.flow_before(
            last,
            self.cfg.evidence_before_packets,
            now.saturating_sub(self.cfg.evidence_before_ns),
        );
        self.evidence_seq += 1;
        let path = evidence_path(&dir, now, kind.name(), self.evidence_seq, self.worker);
        let mut job = EvidenceJob {
            path,
            packets,
            after_left: self.cfg.evidence_after_packets,
            after_until_ns: now.saturating_add(self.cfg.evidence_after_ns),
        };
        let n = job.comment(hist_id, &comment(d))?;
        let r = EvidenceRef { path: job.path.display().to_string(), packets: vec![n] };
        let fr = self.flows.flow_ref(slot);
        self.jobs.insert(slot, (fr, job));
        self.flows.get_mut(slot).flags |= conn_flags::EVIDENCE_PENDING;
        Some(r)
    }
}

/// The events' `flow_id`: a hash of the flow's key (vantage included) and the ISN of the
/// handshake that opened it, so every event of one connection carries it, a later connection
/// on the same 4-tuple gets another, and the number depends neither on the worker nor on when
/// its table began. 53 bits: JSON readers that hold numbers as doubles keep it exact.
fn flow_id(key: &FlowKey, orientation: Orientation, isn: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let words = key.words();
    let tail = (orientation as u64) << 32 | isn as u64;
    for w in words.iter().chain(std::iter::once(&tail)) {
        for b in w.to_le_bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    // A final mix so the low bits kept depend on every input byte.
    h ^= h >> 31;
    h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 29;
    h & ((1 << 53) - 1)
}

/// µs from `first_ns` to `ts_ns` (wraps after ~71 minutes; compared with wrapping_sub).
#[inline]
fn rel_us(first_ns: u64, ts_ns: u64) -> u32 {
    (ts_ns.saturating_sub(first_ns) / 1000) as u32
}

fn segment_of(p: &TcpPacket, f: &FlowRecord, side: usize) -> Segment {
    if p.has(RST) {
        Segment::Rst
    } else if p.has(SYN) && p.has(ACK) {
        Segment::SynAck
    } else if p.has(SYN) {
        Segment::Syn
    } else if p.has(FIN) && f.dirs[side].flags & dir_flags::FIN == 0 {
        Segment::Fin { other_fin: f.dirs[1 - side].flags & dir_flags::FIN != 0 }
    } else {
        let o = &f.dirs[1 - side];
        let acks_all = o.flags & dir_flags::FIN != 0
            && p.has(ACK)
            && p.ack >= o.next_seq
            && f.dirs[side].flags & dir_flags::FIN != 0;
        Segment::Other { acks_all_fins: acks_all }
    }
}

/// Updates what the sender looks like (after the detectors compared against the old model).
fn learn_sender(
    f: &mut FlowRecord,
    p: &TcpPacket,
    side: usize,
    first_ns: u64,
    src_mac: MacId,
    dst_mac: MacId,
) {
    let now_us = rel_us(first_ns, p.ts_ns);
    let d = &mut f.dirs[side];
    let packets = d.packets();
    if packets > 0 && p.ip_id != d.ip_id || packets == 0 {
        let step = p.ip_id.wrapping_sub(d.ip_id);
        let model = d.ip_id_model();
        let next = match (model, p.ip_id) {
            (IpIdModel::Unknown | IpIdModel::Zero, 0)
                if packets == 0 || model == IpIdModel::Zero =>
            {
                IpIdModel::Zero
            }
            _ if packets == 0 => IpIdModel::Unknown,
            (m, _) if (1..=2048).contains(&step) => {
                if m == IpIdModel::Random {
                    IpIdModel::Random
                } else {
                    IpIdModel::Counter
                }
            }
            (IpIdModel::Counter, _) if p.has(RST) => IpIdModel::Counter,
            _ => IpIdModel::Random,
        };
        d.set_ip_id_model(next);
    }
    d.ip_id = p.ip_id;
    if !p.has(RST) || packets == 0 {
        d.set_ttl(p.ttl);
        d.set_src_mac(src_mac);
    }
    d.set_dst_mac(dst_mac);
    if p.has(SYN) {
        if let Some(w) = p.opts.wscale {
            d.set_wscale(w);
        }
        if p.opts.timestamp.is_some() {
            d.flags |= dir_flags::TS_OK;
        }
        if p.opts.sack_permitted {
            d.flags |= dir_flags::SACK_OK;
        }
    }
    if let Some((v, _)) = p.opts.timestamp {
        if !p.has(RST) {
            d.ts_val = v;
        }
    }
    if p.has(FIN) {
        d.flags |= dir_flags::FIN;
    }
    d.flags |= dir_flags::SEEN;
    d.last_us = now_us;
    d.count_packet();
}

/// A stand-in packet for timer-driven detections (time and endpoints only).
fn placeholder_packet(key: &FlowKey, side: usize, now: u64) -> TcpPacket {
    let sport = key.endpoint(side).1;
    let dport = key.endpoint(1 - side).1;
    TcpPacket {
        key: *key,
        side: side as u8,
        ts_ns: now,
        // The vantage whose view of the flow timed out (not the first interface or file).
        vantage: key.vantage(),
        src_mac: [0; 6],
        dst_mac: [0; 6],
        vlan: key.vlan,
        sport,
        dport,
        seq: SeqNumber(0),
        ack: SeqNumber(0),
        flags: 0,
        window: 0,
        payload_len: 0,
        ip_id: 0,
        ttl: 0,
        opts: Default::default(),
        orig_len: 0,
        keep_off: 0,
        keep_ethertype: 0,
    }
}
