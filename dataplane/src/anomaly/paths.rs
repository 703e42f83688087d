//! Paths: split_path, one_sided, and lost_between_sensors (matching packets across vantages).
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use super::{mac_str, Ctx, Culprit, Detection, Kind, Role};
use crate::flow::{conn_flags, dir_flags};
use crate::packet::TcpPacket;
use crate::vantage::{Relation, VantageRelations, Vantages};

/// Next-hop changes: runs before the sender's model is updated with this packet.
pub fn on_packet(c: &mut Ctx<'_>) {
    let p = c.pkt;
    let s = c.side;
    let d = c.flow.dirs[s];
    if d.packets() == 0 {
        return;
    }
    // An unknown MAC (past the MAC table) is not a switch; two all-zero MACs (no Ethernet in
    // the capture) are equal.
    let this_unknown = !c.dst_mac.is_known() && p.dst_mac != [0; 6];
    let before_unknown = !d.dst_mac().is_known() && c.macs.overflowed > 0;
    if d.dst_mac() != c.dst_mac && !this_unknown && !before_unknown {
        let prev = c.macs.get(d.dst_mac());
        // Two connections on one tuple (tuple_reuse) arrive over their own paths: the
        // collision explains the next-hop change, not a split.
        let collision = c.flow.flags & conn_flags::REUSE_REPORTED != 0;
        let dm = &mut c.flow.dirs[s];
        dm.count_mac_switch();
        // One switch is a route change; switching back and forth is a split.
        if dm.mac_switches() >= 2 && dm.flags & dir_flags::SPLIT_REPORTED == 0 && !collision {
            dm.flags |= dir_flags::SPLIT_REPORTED;
            c.count(Kind::SplitPath);
            let from = c.endpoint(s);
            let to = c.endpoint(c.other());
            let cul = Culprit::new(Role::ParallelPaths)
                .at(c.key.endpoint(c.other()))
                .evidence(format!("next hop {}", mac_str(&prev)))
                .evidence(format!("next hop {}", mac_str(&p.dst_mac)));
            c.found.push(
                Detection::new(
                    Kind::SplitPath,
                    cul.clone(),
                    format!(
                        "Packets from {from} to {to} alternate between next hops {} and {}: one flow is being sprayed over {cul} (ECMP/LAG hashing per packet, or a load balancer without flow affinity).",
                        mac_str(&prev),
                        mac_str(&p.dst_mac)
                    ),
                )
                .detail("next_hops", vec![mac_str(&prev), mac_str(&p.dst_mac)])
                .detail("switches", c.flow.dirs[s].mac_switches()),
            );
        }
    }
}

/// Only one direction visible for longer than the handshake timeout while data flows.
pub fn check_one_sided(c: &mut Ctx<'_>) {
    if c.flow.flags & conn_flags::ONE_SIDED_REPORTED != 0 || c.pkt.payload_len == 0 {
        return;
    }
    if c.flow.dirs[c.other()].flags & dir_flags::SEEN != 0 {
        return;
    }
    let age = c.pkt.ts_ns.saturating_sub(c.first_ns);
    if age > c.cfg.handshake_timeout_ns && c.flow.dirs[c.side].packets() >= 8 {
        c.flow.flags |= conn_flags::ONE_SIDED_REPORTED;
        c.count(Kind::OneSided);
        let from = c.endpoint(c.side);
        let to = c.endpoint(c.other());
        let cul = Culprit::new(Role::Sensor).evidence(format!("only {from} → {to} seen"));
        let mut d = Detection::new(
            Kind::OneSided,
            cul.clone(),
            format!(
                "Only {from} → {to} is visible ({:.1} s of data, nothing back): asymmetric routing, or the span port misses one direction — {cul}. Sensor health, not a network fault.",
                age as f64 / 1e9
            ),
        );
        d.first_ns = Some(c.first_ns);
        c.found.push(d);
    }
}

/// A packet's identity across sensors: what survives forwarding unchanged.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Sig {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    ip_id: u16,
    /// The timestamp option's TSval (0 without one): what tells a retransmission from the
    /// same packet seen at another vantage when there is no IP ID (IPv6), as the IP ID does in
    /// IPv4 — a segment sprayed to one backend and resent to the other is two packets.
    tsval: u32,
    seq: u32,
    ack: u32,
    flags: u8,
    len: u32,
}

/// A connection across vantages: its endpoints, lower one first (no vantage, no direction).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Conn {
    a: (IpAddr, u16),
    b: (IpAddr, u16),
}

impl Conn {
    /// The connection of `p`, and the direction of `p` in it (0: from `a`).
    fn of(p: &TcpPacket) -> (Self, usize) {
        let (s, d) = ((p.src(), p.sport), (p.dst(), p.dport));
        if s <= d {
            (Conn { a: s, b: d }, 0)
        } else {
            (Conn { a: d, b: s }, 1)
        }
    }
}

/// What the matcher remembers of a connection: the vantages that saw any of it, and per
/// direction the vantages that saw a packet no other vantage saw.
#[derive(Clone, Copy, Default)]
struct ConnSeen {
    vantages: u128,
    /// Per direction, the vantages that saw it.
    dirs: [u128; 2],
    alone: [u128; 2],
    split_reported: bool,
}

struct Seen {
    vantages: u128,
    /// The vantages expected to see it, when the caller knew (see [`VantageMatcher::observe`]).
    expected: u128,
    first_vantage: u16,
    hist_id: u32,
    /// Index in the flow's sequence: not used for matching, only for the event.
    pkt: TcpPacket,
}

/// How far apart two sightings of one packet may be for the clock-offset estimate.
pub const CLOCK_SEARCH_NS: u64 = 30_000_000_000;
/// Losses waiting for their pair to be judged; past this, the oldest are dropped (counted).
const HELD_MAX: usize = 4096;
/// A held loss whose pair is still unjudged after this long (packet time) is dropped.
const HELD_MAX_NS: u64 = 60_000_000_000;
/// An opening SYN missing somewhere waits this long (packet time) for an answer: answered,
/// it took another path; unanswered, a filter between the vantages may have eaten it.
pub const OPENING_WAIT_NS: u64 = 3_000_000_000;
/// Connections remembered: two generations of this many, or of this long (packet time).
const CONN_GENERATION: usize = 1 << 20;
const CONN_GENERATION_NS: u64 = 30_000_000_000;

/// Matches packets between vantages. A packet seen at one sensor and, within
/// `vantage_window`, not at another that carries traffic for the same address was dropped
/// between them — if the two are serial (see [`VantageRelations`]); a loss toward a vantage
/// not yet judged waits (bounded) until the pair is. One direction of a connection whose
/// packets reach parallel vantages one each is a split.
#[derive(Default)]
pub struct VantageMatcher {
    pending: HashMap<Sig, Seen>,
    order: VecDeque<(u64, Sig)>,
    /// Which vantages have carried traffic for an address: they are expected to see it.
    servers: VantageLearning,
    conns: HashMap<Conn, ConnSeen>,
    conns_old: HashMap<Conn, ConnSeen>,
    conns_since_ns: u64,
    /// Learned here, unless fixed by the caller (`analyze` learns them in a first pass).
    pub relations: VantageRelations,
    relations_fixed: bool,
    held: VecDeque<Held>,
    /// Each vantage's latest packet time: a vantage whose capture ended (or whose link went
    /// quiet) before a packet can neither miss it nor vouch for a pair.
    last_seen: Vec<u64>,
    /// Each vantage's capture time range, when known in advance (`analyze`'s first pass): a
    /// packet outside a vantage's range cannot be missing there.
    ranges: Option<Vec<(u64, u64)>>,
    pub stats: MatcherStats,
    /// Time differences of matched packets, when estimating clock offsets (first pass).
    pub clock: Option<ClockSamples>,
}

/// Connections whose matched packets are kept per vantage pair for the clock estimate.
const CLOCK_CONNS_MAX: usize = 4096;

/// The time differences of packets matched at two vantages, per pair and per connection and
/// direction: a direction's mean is the clock offset plus the path delay between the sensors
/// (or minus it, the other way), so a connection's two directions average to the offset.
#[derive(Default)]
pub struct ClockSamples {
    pairs: HashMap<(u16, u16), PairClock>,
}

#[derive(Default)]
struct PairClock {
    matches: u32,
    /// Per connection, per direction: the sum of (later vantage − earlier vantage) and count.
    conns: HashMap<Conn, [(i128, u32); 2]>,
}

impl ClockSamples {
    fn add(&mut self, a: u16, b: u16, diff_ns: i64, conn: Conn, dir: usize) {
        let (k, d) = if a < b { ((a, b), diff_ns) } else { ((b, a), -diff_ns) };
        let pc = self.pairs.entry(k).or_default();
        pc.matches = pc.matches.saturating_add(1);
        if pc.conns.len() < CLOCK_CONNS_MAX || pc.conns.contains_key(&conn) {
            let e = &mut pc.conns.entry(conn).or_default()[dir];
            e.0 += i128::from(d);
            e.1 += 1;
        }
    }

    /// Per pair (a < b): b's clock minus a's (ns) and the packets matched. The median over
    /// connections of each one's two directions averaged (both directions cancel the path
    /// delay); connections seen one way only count when none was seen both ways.
    pub fn offsets(&self) -> Vec<(u16, u16, i64, u32)> {
        let mut out = Vec::new();
        for (&(a, b), pc) in &self.pairs {
            let mean = |(s, n): (i128, u32)| (n > 0).then(|| (s / i128::from(n)) as i64);
            let mut both: Vec<i64> = Vec::new();
            let mut one: Vec<i64> = Vec::new();
            for d in pc.conns.values() {
                match (mean(d[0]), mean(d[1])) {
                    (Some(x), Some(y)) => both.push(x / 2 + y / 2),
                    (Some(x), None) | (None, Some(x)) => one.push(x),
                    (None, None) => {}
                }
            }
            let mut v = if both.is_empty() { one } else { both };
            if v.is_empty() {
                continue;
            }
            v.sort_unstable();
            out.push((a, b, v[v.len() / 2], pc.matches));
        }
        out.sort_unstable_by_key(|t| (t.0, t.1));
        out
    }
}

/// What the matcher could not conclude, for the summary.
#[derive(Clone, Copy, Default, Debug)]
pub struct MatcherStats {
    /// Losses toward a vantage judged parallel to where the packet was seen: not losses.
    pub parallel_ignored: u64,
    /// Losses dropped because their pair was never judged (too little shared traffic).
    pub unjudged_dropped: u64,
}

/// Which vantages have carried traffic for each address (bit per vantage, up to 128). One
/// worker's engine learns only from its own flows; `analyze` learns in its reader, from every
/// packet in time order, so the answer does not depend on how flows were sharded.
#[derive(Default)]
pub struct VantageLearning {
    seen: HashMap<IpAddr, u128>,
}

impl VantageLearning {
    /// Learns from `p` and returns the vantages expected to see packets toward its destination.
    pub fn learn(&mut self, p: &TcpPacket) -> u128 {
        let bit = 1u128 << p.vantage.min(127);
        // Either endpoint could be "the server"; remember both addresses' vantages.
        *self.seen.entry(p.src()).or_default() |= bit;
        let d = self.seen.entry(p.dst()).or_default();
        *d |= bit;
        *d
    }
    pub fn expected(&self, a: &IpAddr) -> u128 {
        self.seen.get(a).copied().unwrap_or(0)
    }
}

pub struct Missing {
    pub pkt: TcpPacket,
    pub seen_at: u16,
    pub missing_at: Vec<u16>,
    pub hist_id: u32,
    /// The clock offset removed between `seen_at` and the first of `missing_at` (ns).
    pub clock_offset_ns: i64,
}

/// One direction of a connection reached two parallel vantages, a packet at each.
pub struct Split {
    pub pkt: TcpPacket,
    pub hist_id: u32,
    pub vantages: [u16; 2],
}

/// What closed windows revealed.
#[derive(Default)]
pub struct Expired {
    pub lost: Vec<Missing>,
    pub splits: Vec<Split>,
}

impl VantageMatcher {
    /// A matcher that starts from `relations` (pairs named serial, what a first pass
    /// learned) and, if `learn`, keeps learning from the packets it matches.
    pub fn with_relations(relations: VantageRelations, learn: bool) -> Self {
        VantageMatcher { relations, relations_fixed: !learn, ..Default::default() }
    }

    /// Packets waiting for their window to close.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The time range each vantage captured (index: vantage).
    pub fn set_ranges(&mut self, ranges: Vec<(u64, u64)>) {
        self.ranges = Some(ranges);
    }

    /// Records a sighting of a packet at its vantage. `expected`: the vantages expected to see
    /// it, as learned by the caller from every packet (0: learn here, from this engine's).
    pub fn observe(&mut self, p: &TcpPacket, hist_id: u32, expected: u128) {
        let bit = 1u128 << p.vantage.min(127);
        if expected == 0 {
            self.servers.learn(p);
        }
        let v = usize::from(p.vantage.min(127));
        if self.last_seen.len() <= v {
            self.last_seen.resize(v + 1, 0);
        }
        self.last_seen[v] = self.last_seen[v].max(p.ts_ns);
        if p.ts_ns.saturating_sub(self.conns_since_ns) > CONN_GENERATION_NS
            || self.conns.len() >= CONN_GENERATION
        {
            self.conns_old = std::mem::take(&mut self.conns);
            self.conns_since_ns = p.ts_ns;
        }
        let (conn, dir) = Conn::of(p);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.vantages |= bit;
            c.dirs[dir] |= bit;
        } else {
            let mut c = self.conns_old.remove(&conn).unwrap_or_default();
            c.vantages |= bit;
            c.dirs[dir] |= bit;
            self.conns.insert(conn, c);
        }
        let sig = Sig {
            src: p.src(),
            dst: p.dst(),
            sport: p.sport,
            dport: p.dport,
            ip_id: p.ip_id,
            tsval: p.opts.timestamp.map_or(0, |(v, _)| v),
            seq: p.seq.0,
            ack: p.ack.0,
            flags: p.flags,
            len: p.payload_len,
        };
        if let Some(s) = self.pending.get_mut(&sig) {
            if let Some(clock) = self.clock.as_mut() {
                if s.vantages & bit == 0 {
                    let diff = p.ts_ns as i64 - s.pkt.ts_ns as i64;
                    clock.add(s.first_vantage, p.vantage, diff, conn, dir);
                }
            }
            s.vantages |= bit;
            s.expected |= expected;
        } else {
            self.pending.insert(
                sig,
                Seen { vantages: bit, expected, first_vantage: p.vantage, hist_id, pkt: p.clone() },
            );
            self.order.push_back((p.ts_ns, sig));
        }
    }

    /// Closes the windows older than `window_ns`: losses between serial vantages, splits over
    /// parallel ones, and the held losses whose pair has been judged since.
    pub fn expire(&mut self, now_ns: u64, window_ns: u64, vantage_count: usize) -> Expired {
        let mut out = Expired::default();
        while let Some(&(t, _)) = self.order.front() {
            if now_ns.saturating_sub(t) <= window_ns {
                break;
            }
            self.close_window(now_ns, vantage_count, true, &mut out);
        }
        self.release_held(now_ns, &mut out.lost);
        out
    }

    /// End of input: every held loss is decided as the relations stand, and the windows still
    /// open are closed for splits only — a packet in the input's last `vantage_window` may be
    /// missing elsewhere only because another capture ended first.
    pub fn finish(&mut self, vantage_count: usize) -> Expired {
        let mut out = Expired::default();
        while !self.order.is_empty() {
            self.close_window(u64::MAX, vantage_count, false, &mut out);
        }
        self.release_held(u64::MAX, &mut out.lost);
        out
    }

    /// Closes the oldest open window: learns the pair relations from it, notes a split, and
    /// (if `losses`) judges where the packet is missing.
    fn close_window(&mut self, now_ns: u64, vantage_count: usize, losses: bool, out: &mut Expired) {
        let all: u128 = if vantage_count >= 128 { u128::MAX } else { (1u128 << vantage_count) - 1 };
        let Some((t, sig)) = self.order.pop_front() else { return };
        let Some(seen) = self.pending.remove(&sig) else { return };
        let (conn, dir) = Conn::of(&seen.pkt);
        let c = self.conns.get(&conn).or_else(|| self.conns_old.get(&conn)).copied();
        let carried = c.map_or(seen.vantages, |c| c.vantages);
        // Learning trusts only vantages known to be capturing at the packet's time (a later
        // packet of theirs came): one capture ending before another is not a disagreement.
        let capturing = self
            .last_seen
            .iter()
            .enumerate()
            .filter(|(_, &l)| l >= t)
            .fold(seen.vantages, |m, (v, _)| m | (1 << v));
        let answered = c.is_some_and(|c| c.dirs[1 - dir] != 0);
        if !self.relations_fixed {
            self.relations.learn(carried & capturing, seen.vantages);
        }
        if seen.vantages.is_power_of_two() && carried.count_ones() > 1 {
            self.note_alone(conn, dir, &seen, &mut out.splits);
        }
        if !losses {
            return;
        }
        // Expected at the vantages that carry this connection, and, for a connection's
        // opening SYN that nobody saw answered, at those that carry traffic for its
        // destination: a filter that eats SYNs leaves no other trace (incident B). A SYN
        // answered elsewhere took another path (another backend of the same VIP).
        let learned =
            if seen.expected != 0 { seen.expected } else { self.servers.expected(&sig.dst) };
        let opening = seen.pkt.has(dataplane_common::tcp_flags::SYN)
            && !seen.pkt.has(dataplane_common::tcp_flags::ACK)
            && !answered;
        let expected = if opening { learned } else { learned & carried };
        // A vantage can miss the packet only while it was capturing (known ranges; live
        // interfaces always are, and so are mirror sessions found after the ranges were
        // measured).
        let in_range = self.ranges.as_ref().map_or(u128::MAX, |r| {
            let unknown = u128::MAX.checked_shl(r.len() as u32).unwrap_or(0);
            r.iter()
                .enumerate()
                .filter(|(_, &(a, b))| a <= t && t <= b)
                .fold(unknown, |m, (v, _)| m | (1 << v))
        });
        let missing = expected & all & in_range & !seen.vantages;
        if missing != 0 {
            let m = Missing {
                pkt: seen.pkt,
                seen_at: seen.first_vantage,
                missing_at: Vec::new(),
                hist_id: seen.hist_id,
                clock_offset_ns: 0,
            };
            let opening_until = if opening { t.saturating_add(OPENING_WAIT_NS).max(1) } else { 0 };
            let h = Held { t, m, seen: seen.vantages, unknown: missing, conn, dir, opening_until };
            self.judge(h, now_ns, &mut out.lost);
        }
    }

    /// Judges a missing packet now if it can; otherwise holds it (bounded) until its
    /// connection is answered or its vantage pair is judged.
    fn judge(&mut self, h: Held, now_ns: u64, out: &mut Vec<Missing>) {
        if let Some(h) = self.decide(h, now_ns, out) {
            if self.held.len() >= HELD_MAX {
                self.held.pop_front();
                self.stats.unjudged_dropped += 1;
            }
            self.held.push_back(h);
        }
    }

    /// `Some(h)`: still undecided, keep it.
    fn decide(&mut self, mut h: Held, now_ns: u64, out: &mut Vec<Missing>) -> Option<Held> {
        let end = now_ns == u64::MAX;
        if h.opening_until != 0 {
            // An opening SYN: if anyone saw it answered, only the vantages on the path it
            // took could have missed it; unanswered by its deadline, all of them could.
            let c = self.conns.get(&h.conn).or_else(|| self.conns_old.get(&h.conn));
            if let Some(c) = c.filter(|c| c.dirs[1 - h.dir] != 0) {
                h.unknown &= c.vantages;
                h.opening_until = 0;
            } else if !end && now_ns < h.opening_until {
                return Some(h);
            } else {
                h.opening_until = 0;
            }
        }
        let mut rest = h.unknown;
        while rest != 0 {
            let v = rest.trailing_zeros() as u16;
            rest &= rest - 1;
            match self.relations.best(v, h.seen) {
                Relation::Serial => {
                    h.m.missing_at.push(v);
                    h.unknown &= !(1 << v);
                }
                Relation::Parallel => {
                    self.stats.parallel_ignored += 1;
                    h.unknown &= !(1 << v);
                }
                Relation::Unknown => {}
            }
        }
        let too_old = end || now_ns.saturating_sub(h.t) > HELD_MAX_NS;
        if let Some(&v) = h.m.missing_at.first() {
            h.m.clock_offset_ns = self.relations.offset_between(h.m.seen_at, v);
            out.push(h.m);
            return None;
        }
        if h.unknown == 0 {
            return None;
        }
        if too_old {
            self.stats.unjudged_dropped += 1;
            return None;
        }
        Some(h)
    }

    /// Held losses whose connection was answered or whose pair was judged since leave
    /// (serial) or are forgotten (parallel); at `now_ns == u64::MAX` every one is decided.
    fn release_held(&mut self, now_ns: u64, out: &mut Vec<Missing>) {
        if self.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        for h in held {
            if let Some(h) = self.decide(h, now_ns, out) {
                self.held.push_back(h);
            }
        }
    }

    /// A packet of `conn` that only one vantage saw, while others carry the connection: two
    /// such packets of one direction at two vantages not known to be serial are a split.
    fn note_alone(&mut self, conn: Conn, dir: usize, seen: &Seen, out: &mut Vec<Split>) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.alone[dir] |= seen.vantages;
        if c.split_reported || c.alone[dir].count_ones() < 2 {
            return;
        }
        let v = seen.first_vantage;
        let mut others = c.alone[dir] & !(1 << v);
        while others != 0 {
            let u = others.trailing_zeros() as u16;
            others &= others - 1;
            if self.relations.relation(v, u) != Relation::Serial {
                c.split_reported = true;
                out.push(Split {
                    pkt: seen.pkt.clone(),
                    hist_id: seen.hist_id,
                    vantages: [u.min(v), u.max(v)],
                });
                return;
            }
        }
    }
}

struct Held {
    t: u64,
    m: Missing,
    /// The vantages that saw it, and those that may have missed it (not yet decided).
    seen: u128,
    unknown: u128,
    conn: Conn,
    dir: usize,
    /// An opening SYN not yet answered: undecided until then (0: not one).
    opening_until: u64,
}

pub fn lost_detection(m: &Missing, vantages: &Vantages) -> Detection {
    let name = |v: u16| vantages.name(v);
    let missing: Vec<String> = m.missing_at.iter().map(|v| name(*v)).collect();
    let p = &m.pkt;
    let what = if p.has(dataplane_common::tcp_flags::SYN) {
        "SYN".to_string()
    } else {
        format!("segment SEQ {} ({} bytes)", p.seq, p.payload_len)
    };
    let mut between = vec![name(m.seen_at)];
    between.extend(missing.iter().cloned());
    let offset_s = m.clock_offset_ns as f64 / 1e9;
    let cul = Culprit::new(Role::FilterBetween)
        .at((p.dst(), p.dport))
        .vantages(between)
        .evidence(format!("{what} seen at {}", name(m.seen_at)))
        .evidence(format!(
            "not seen at {} (its clock {offset_s:+.6} s from {}'s, removed)",
            missing.join(", "),
            name(m.seen_at)
        ));
    Detection::new(
        Kind::LostBetweenSensors,
        cul.clone(),
        format!(
            "{what} from {} to {} was seen at {} but never at {} (after removing a clock offset of {offset_s:+.6} s between them): it was dropped by {cul} (a firewall, router or link there).",
            super::endpoint_str(p.src(), p.sport),
            super::endpoint_str(p.dst(), p.dport),
            name(m.seen_at),
            missing.join(", ")
        ),
    )
    .detail("seen_at", name(m.seen_at))
    .detail("missing_at", missing)
    .detail("clock_offset_s", offset_s)
}

pub fn split_detection(s: &Split, vantages: &Vantages) -> Detection {
    let name = |v: u16| vantages.name(v);
    let p = &s.pkt;
    let (a, b) = (name(s.vantages[0]), name(s.vantages[1]));
    let cul = Culprit::new(Role::ParallelPaths)
        .at((p.dst(), p.dport))
        .vantages(vec![a.clone(), b.clone()])
        .evidence(format!("packets of one direction seen only at {a}"))
        .evidence(format!("others only at {b}"));
    Detection::new(
        Kind::SplitPath,
        cul.clone(),
        format!(
            "Packets from {} to {} reach both {a} and {b}, some only one and some only the other: one direction of the flow is split over {cul}, two parallel paths or backends (ECMP/LAG hashing per packet, or a load balancer without flow affinity).",
            super::endpoint_str(p.src(), p.sport),
            super::endpoint_str(p.dst(), p.dport)
        ),
    )
    .detail("vantages", vec![a, b])
}
