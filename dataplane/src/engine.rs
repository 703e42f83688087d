//! The flow engine one worker owns: de-duplicate, track both directions, run the detectors,
//! keep evidence. The same engine runs behind AF_XDP workers and behind `analyze`; its clock
//! is the packets' timestamps.
use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
};

use dataplane_common::{
    tcp_flags::{ACK, FIN, RST, SYN},
    Outcome, OUTCOME_COUNT,
};

use crate::{
    anomaly::{
        self, health::MirrorDedup, loss, paths::VantageMatcher, rfc3339, Ctx, Detection, Event, EvidenceRef, FlowExtra,
        FlowRef, Kind, KIND_COUNT,
    },
    evidence::{evidence_path, EvidenceJob, History, RateLimit},
    flow::{conn_flags, dir_flags, FlowKey, FlowRecord, FlowTable, IpIdModel},
    packet::{decode, TcpPacket},
    seq::SeqNumber,
    tcp::{transition, Segment},
};

/// Every threshold of the catalog, with its default.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub handshake_timeout_ns: u64,
    /// Upper bound of the RST pairing window (default 50 ms; the window is min(RTT/2, this)).
    pub pairing_window_max_ns: u64,
    /// Lower bound: the local processing time of a middlebox answering (default 1 ms).
    pub pairing_window_floor_ns: u64,
    pub vantage_window_ns: u64,
    pub storm_count: u32,
    pub reorder_default_ns: u64,
    pub mirror_window_ns: u64,
    pub flow_capacity: usize,
    pub idle_timeout_ns: u64,
    pub closed_timeout_ns: u64,
    pub history_bytes: usize,
    pub evidence_dir: Option<PathBuf>,
    pub evidence_before_packets: usize,
    pub evidence_before_ns: u64,
    pub evidence_after_packets: usize,
    pub evidence_after_ns: u64,
    pub evidence_per_sec: f64,
    /// Names of the vantages (interfaces or files), by index.
    pub vantage_names: Vec<String>,
    /// Record a per-packet verdict (for `analyze --verdicts`).
    pub record_verdicts: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            handshake_timeout_ns: 3_000_000_000,
            pairing_window_max_ns: 50_000_000,
            pairing_window_floor_ns: 1_000_000,
            vantage_window_ns: 100_000_000,
            storm_count: 5,
            reorder_default_ns: 3_000_000,
            mirror_window_ns: 1_000_000,
            flow_capacity: 1 << 20,
            idle_timeout_ns: 300_000_000_000,
            closed_timeout_ns: 10_000_000_000,
            history_bytes: 64 << 20,
            evidence_dir: None,
            evidence_before_packets: 32,
            evidence_before_ns: 5_000_000_000,
            evidence_after_packets: 32,
            evidence_after_ns: 2_000_000_000,
            evidence_per_sec: 10.0,
            vantage_names: Vec::new(),
            record_verdicts: false,
        }
    }
}

/// Flow flags private to the engine's gap handling.
const GAP_SEEN: [u16; 2] = [1 << 10, 1 << 11];

/// Counters the engine keeps (exported by the control plane).
#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    pub packets: u64,
    pub anomalies: [u64; KIND_COUNT],
    /// Frames the parser refused, by XDP outcome reason.
    pub undecodable: [u64; OUTCOME_COUNT as usize],
    pub capture_lost: u64,
    pub evidence_written: u64,
    pub evidence_suppressed: u64,
    pub flows_created: u64,
    pub flows_evicted: [u64; 4],
    pub flows_active: u64,
}

pub struct Engine {
    pub cfg: EngineConfig,
    worker: usize,
    flows: FlowTable,
    extras: HashMap<FlowKey, FlowExtra>,
    epoch: u8,
    counters: [u64; KIND_COUNT],
    undecodable: [u64; OUTCOME_COUNT as usize],
    packets: u64,
    capture_lost: u64,
    dedup: MirrorDedup,
    matcher: VantageMatcher,
    history: History,
    rate: RateLimit,
    jobs: HashMap<FlowKey, EvidenceJob>,
    finished: Vec<EvidenceJob>,
    events: Vec<Event>,
    verdicts: Vec<(u64, u32)>,
    timers: VecDeque<(u64, FlowKey)>,
    rtt_samples: Vec<u64>,
    zero_window_samples: Vec<u64>,
    evidence_seq: u64,
    now_ns: u64,
    last_expire_ns: u64,
    /// When idle and closed flows were last expired (once per second of packet time).
    last_flow_expire_ns: u64,
}

impl Engine {
    pub fn new(cfg: EngineConfig, worker: usize) -> Self {
        Self {
            flows: FlowTable::new(cfg.flow_capacity),
            extras: HashMap::new(),
            epoch: 0,
            counters: [0; KIND_COUNT],
            undecodable: [0; OUTCOME_COUNT as usize],
            packets: 0,
            capture_lost: 0,
            dedup: MirrorDedup::new(1 << 14, cfg.mirror_window_ns),
            matcher: VantageMatcher::default(),
            history: History::with_memory(cfg.history_bytes),
            rate: RateLimit::new(cfg.evidence_per_sec),
            jobs: HashMap::new(),
            finished: Vec::new(),
            events: Vec::new(),
            verdicts: Vec::new(),
            timers: VecDeque::new(),
            rtt_samples: Vec::new(),
            zero_window_samples: Vec::new(),
            evidence_seq: 0,
            now_ns: 0,
            last_expire_ns: 0,
            last_flow_expire_ns: 0,
            cfg,
            worker,
        }
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            packets: self.packets,
            anomalies: self.counters,
            undecodable: self.undecodable,
            capture_lost: self.capture_lost,
            evidence_written: 0,
            evidence_suppressed: self.rate.suppressed,
            flows_created: self.flows.created,
            flows_evicted: self.flows.evicted,
            flows_active: self.flows.len() as u64,
        }
    }

    pub fn drain_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
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

    /// Our own rings dropped frames: every flow enters the gap state until it resynchronises.
    pub fn capture_loss(&mut self, lost: u64) {
        self.capture_lost += lost;
        self.counters[Kind::CaptureGap as usize] += 1;
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// Feeds one Ethernet frame. `frame_no` numbers it in its source (for verdicts).
    pub fn process_frame(&mut self, data: &[u8], orig_len: u32, ts_ns: u64, vantage: u16, frame_no: u64) {
        match decode(data, orig_len, ts_ns, vantage) {
            Ok(p) => self.process(&p, data, frame_no),
            Err(Outcome::NonTcpPassed | Outcome::LaterFragment) => {}
            Err(o) => self.undecodable[o as usize] += 1,
        }
    }

    pub fn process(&mut self, p: &TcpPacket, raw: &[u8], frame_no: u64) {
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
        let (key, side) = FlowKey::of(p);
        let epoch = self.epoch;
        let (rec, created) = self.flows.get_or_insert(key, p.ts_ns, epoch);
        let hist_id = self.history.push(raw, p.orig_len, p.ts_ns, p.vantage, rec.last_hist);
        rec.last_hist = hist_id;
        rec.vantages |= 1 << p.vantage.min(7);
        let mut flow = *rec;
        if self.cfg.vantage_names.len() > 1 {
            self.matcher.observe(p, hist_id);
        }
        if created {
            if !p.has(SYN) {
                flow.flags |= conn_flags::MIDSTREAM;
            }
        }

        // Gap state: behind the worker's loss epoch until both sides were seen again.
        let mut in_gap = flow.epoch != self.epoch;
        if in_gap {
            flow.flags |= GAP_SEEN[side];
            if flow.flags & GAP_SEEN[0] != 0 && flow.flags & GAP_SEEN[1] != 0 {
                flow.epoch = self.epoch;
                flow.flags &= !(GAP_SEEN[0] | GAP_SEEN[1]);
            }
            // The first packets after a gap re-anchor the sequence state.
            let d = &mut flow.dirs[side];
            if d.flags & dir_flags::SEEN != 0 && p.seq_end() > d.next_seq {
                d.next_seq = p.seq_end();
            }
            in_gap = true;
        }

        let mut found: Vec<Detection> = Vec::new();
        let verdict;
        {
            let mut c = Ctx {
                pkt: p,
                key: &key,
                side,
                before: flow.dirs[side],
                flow: &mut flow,
                extras: &mut self.extras,
                cfg: &self.cfg,
                now_us: 0,
                in_gap,
                hist_id,
                found: &mut found,
                counters: &mut self.counters,
                rtt_samples: &mut self.rtt_samples,
            };
            c.now_us = c.flow.rel_us(p.ts_ns);
            if !in_gap {
                anomaly::paths::on_packet(&mut c);
            }
            anomaly::setup::on_packet(&mut c);
            verdict = loss::on_packet(&mut c);
            anomaly::resets::on_packet(&mut c);
            if !in_gap {
                anomaly::paths::check_one_sided(&mut c);
            }
        }
        let was = flow.state;
        flow.state = transition(flow.state, segment_of(p, &flow, side));
        if flow.state.is_half_open() && !was.is_half_open() {
            self.timers.push_back((p.ts_ns + self.cfg.handshake_timeout_ns, key));
        }
        learn_sender(&mut flow, p, side);

        if let Some(r) = self.flows.get_mut(&key) {
            *r = flow;
        }
        if self.cfg.record_verdicts {
            self.verdicts.push((frame_no, verdict));
        }
        // Evidence collection after an earlier detection on this flow.
        if flow.flags & conn_flags::EVIDENCE_PENDING != 0 {
            self.feed_job(&key, hist_id);
        }
        for d in found {
            if d.kind == Kind::ZeroWindow {
                if let Some(dur) = d.details.get("duration_s").and_then(|v| v.as_f64()) {
                    self.zero_window_samples.push((dur * 1e9) as u64);
                }
            }
            if loss::is_reportable(&d) {
                self.emit(d, &key, side, p, hist_id);
            }
        }
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
        while let Some(&(deadline, key)) = self.timers.front() {
            if deadline > now {
                break;
            }
            self.timers.pop_front();
            self.handshake_timeout(key, deadline);
        }
        // Cross-vantage matching, evidence deadlines, expiry: at most every 10 ms of time.
        if now.saturating_sub(self.last_expire_ns) < 10_000_000 {
            return;
        }
        self.last_expire_ns = now;
        if self.cfg.vantage_names.len() > 1 {
            let missing = self.matcher.expire(now, self.cfg.vantage_window_ns, self.cfg.vantage_names.len());
            for m in missing {
                self.counters[Kind::LostBetweenSensors as usize] += 1;
                let d = anomaly::paths::lost_detection(&m, &self.cfg.vantage_names);
                let (key, side) = FlowKey::of(&m.pkt);
                let Some(f) = self.flows.get_mut(&key) else { continue };
                if f.flags & conn_flags::LOST_BETWEEN_REPORTED == 0 {
                    f.flags |= conn_flags::LOST_BETWEEN_REPORTED;
                    self.emit(d, &key, side, &m.pkt, m.hist_id);
                }
            }
        }
        let done: Vec<FlowKey> = self.jobs.iter().filter(|(_, j)| j.after_until_ns <= now).map(|(k, _)| *k).collect();
        for k in done {
            self.finish_job(&k);
        }
        if now.saturating_sub(self.last_flow_expire_ns) >= 1_000_000_000 {
            self.last_flow_expire_ns = now;
            for (k, _) in self.flows.expire(now, self.cfg.idle_timeout_ns, self.cfg.closed_timeout_ns) {
                self.extras.remove(&k);
            }
            let pairing = self.cfg.pairing_window_max_ns;
            for x in self.extras.values_mut() {
                anomaly::resets::expire_wait(x, now, pairing);
            }
            self.extras.retain(|k, _| self.flows.get(k).is_some());
        }
    }

    fn handshake_timeout(&mut self, key: FlowKey, now: u64) {
        let Some(rec) = self.flows.get(&key) else { return };
        let mut flow = *rec;
        if !flow.state.is_half_open() || flow.flags & conn_flags::HANDSHAKE_REPORTED != 0 {
            return;
        }
        let side = flow.client_side().unwrap_or(0);
        let placeholder = placeholder_packet(&key, side, now);
        let mut found = Vec::new();
        {
            let mut c = Ctx {
                pkt: &placeholder,
                key: &key,
                side,
                before: flow.dirs[side],
                flow: &mut flow,
                extras: &mut self.extras,
                cfg: &self.cfg,
                now_us: 0,
                in_gap: false,
                hist_id: rec.last_hist,
                found: &mut found,
                counters: &mut self.counters,
                rtt_samples: &mut self.rtt_samples,
            };
            anomaly::setup::on_timeout(&mut c);
        }
        let hist = flow.last_hist;
        if let Some(r) = self.flows.get_mut(&key) {
            *r = flow;
        }
        for d in found {
            self.emit(d, &key, side, &placeholder, hist);
        }
    }

    /// Flushes pending evidence (end of input or shutdown).
    pub fn finish(&mut self) {
        let keys: Vec<FlowKey> = self.jobs.keys().copied().collect();
        for k in keys {
            self.finish_job(&k);
        }
    }

    fn finish_job(&mut self, k: &FlowKey) {
        if let Some(job) = self.jobs.remove(k) {
            if let Some(f) = self.flows.get_mut(k) {
                f.flags &= !conn_flags::EVIDENCE_PENDING;
            }
            self.finished.push(job);
        }
    }

    fn feed_job(&mut self, key: &FlowKey, hist_id: u32) {
        let Some(job) = self.jobs.get_mut(key) else { return };
        if job.packets.last().is_some_and(|p| p.id == hist_id) {
            return;
        }
        if let Some(p) = self.history.flow_before(hist_id, 1, 0).pop() {
            job.packets.push(p);
        }
        job.after_left = job.after_left.saturating_sub(1);
        if job.after_left == 0 {
            self.finish_job(key);
        }
    }

    fn emit(&mut self, d: Detection, key: &FlowKey, side: usize, p: &TcpPacket, hist_id: u32) {
        let flow = self.flows.get(key).copied();
        let direction = match flow.and_then(|f| f.client_side()) {
            Some(c) if c == side => "client_to_server",
            Some(_) => "server_to_client",
            None => "unknown",
        };
        let (src, sport) = key.endpoint(side);
        let (dst, dport) = key.endpoint(1 - side);
        let vantage = self.cfg.vantage_names.get(p.vantage as usize).cloned().unwrap_or_else(|| format!("vantage{}", p.vantage));
        let first = d.first_ns.unwrap_or(p.ts_ns).min(p.ts_ns);
        // Count detections that are not per-packet counters already.
        if !matches!(d.kind, Kind::RetransmissionStorm | Kind::SplitPath | Kind::OneSided | Kind::LostBetweenSensors | Kind::RstForeignSender | Kind::DataAfterRst | Kind::ZeroWindow) {
            self.counters[d.kind as usize] += 1;
        }
        if let Some(f) = self.flows.get_mut(key) {
            f.anomalies = f.anomalies.saturating_add(1);
        }
        let comment = format!("wirewatch {}: {}", d.kind.name(), d.explanation);
        let evidence = self.attach_evidence(key, hist_id, &comment, p.ts_ns, d.kind);
        self.events.push(Event {
            kind: d.kind,
            sub_kind: d.sub_kind,
            time_first: rfc3339(first),
            time_last: rfc3339(p.ts_ns),
            time_first_ns: first,
            time_last_ns: p.ts_ns,
            flow: FlowRef { src, sport, dst, dport, vlan: key.vlan, direction },
            vantage,
            count: d.count,
            fingerprints: d.fingerprints,
            explanation: d.explanation,
            details: d.details,
            evidence,
        });
    }

    fn attach_evidence(&mut self, key: &FlowKey, hist_id: u32, comment: &str, now: u64, kind: Kind) -> Option<EvidenceRef> {
        let dir = self.cfg.evidence_dir.clone()?;
        if let Some(job) = self.jobs.get_mut(key) {
            let n = job.comment(hist_id, comment)?;
            return Some(EvidenceRef { path: job.path.display().to_string(), packets: vec![n] });
        }
        if !self.rate.allow(now) {
            return None;
        }
        let last = self.flows.get(key).map(|f| f.last_hist).unwrap_or(hist_id);
        let packets = self.history.flow_before(last, self.cfg.evidence_before_packets, now.saturating_sub(self.cfg.evidence_before_ns));
        self.evidence_seq += 1;
        let path = evidence_path(&dir, now, kind.name(), self.evidence_seq, self.worker);
        let mut job = EvidenceJob { path, packets, after_left: self.cfg.evidence_after_packets, after_until_ns: now + self.cfg.evidence_after_ns };
        let n = job.comment(hist_id, comment)?;
        let r = EvidenceRef { path: job.path.display().to_string(), packets: vec![n] };
        self.jobs.insert(*key, job);
        if let Some(f) = self.flows.get_mut(key) {
            f.flags |= conn_flags::EVIDENCE_PENDING;
        }
        Some(r)
    }
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
        let acks_all = o.flags & dir_flags::FIN != 0 && p.has(ACK) && p.ack >= o.next_seq && f.dirs[side].flags & dir_flags::FIN != 0;
        Segment::Other { acks_all_fins: acks_all }
    }
}

/// Updates what the sender looks like (after the detectors compared against the old model).
fn learn_sender(f: &mut FlowRecord, p: &TcpPacket, side: usize) {
    let now_us = f.rel_us(p.ts_ns);
    let d = &mut f.dirs[side];
    if d.packets > 0 && p.ip_id != d.ip_id || d.packets == 0 {
        let step = p.ip_id.wrapping_sub(d.ip_id);
        d.ip_id_model = match (d.ip_id_model, p.ip_id) {
            (IpIdModel::Unknown | IpIdModel::Zero, 0) if d.packets == 0 || d.ip_id_model == IpIdModel::Zero => IpIdModel::Zero,
            _ if d.packets == 0 => IpIdModel::Unknown,
            (m, _) if (1..=2048).contains(&step) => {
                if m == IpIdModel::Random { IpIdModel::Random } else { IpIdModel::Counter }
            }
            (IpIdModel::Counter, _) if p.has(RST) => IpIdModel::Counter,
            _ => IpIdModel::Random,
        };
    }
    d.ip_id = p.ip_id;
    if !p.has(RST) {
        d.ttl = p.ttl;
        d.src_mac = p.src_mac;
    } else if d.packets == 0 {
        d.ttl = p.ttl;
        d.src_mac = p.src_mac;
    }
    d.dst_mac = p.dst_mac;
    if p.has(SYN) {
        if let Some(w) = p.opts.wscale {
            d.wscale = w;
        }
        if let Some(m) = p.opts.mss {
            d.mss = m;
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
    d.packets = d.packets.saturating_add(1);
}

/// A stand-in packet for timer-driven detections (time and endpoints only).
fn placeholder_packet(key: &FlowKey, side: usize, now: u64) -> TcpPacket {
    let (src, sport) = key.endpoint(side);
    let (dst, dport) = key.endpoint(1 - side);
    TcpPacket {
        ts_ns: now,
        vantage: 0,
        src_mac: [0; 6],
        dst_mac: [0; 6],
        vlan: key.vlan,
        src,
        dst,
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
    }
}
