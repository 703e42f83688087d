//! Aggregates: one event per cause when handshake failures come in floods and scans
//! (../shared/DETECTIONS.md, Aggregates). `syn_unanswered` and `syn_rejected` events wait up to
//! `aggregate_window` in a bounded pool; when they are released, those a `syn_flood` (≥ 100
//! distinct sources to one service, or to ≥ 16 addresses of one prefix, within the window),
//! a `service_blackhole` (≥ 3 client
//! connections to one service unanswered while other services at the vantage answered) or a
//! `port_scan` (one source to ≥ 50 distinct services within the window) absorbed are folded
//! into it, the others go out as they are. An aggregate is reported once, when it has been quiet for a window (or at the end
//! of input), with its counts, first and last times, top sources and ports and sample flows.
//! The engines' counters still count every occurrence; this only shapes the event stream.
use std::collections::VecDeque;
use std::net::IpAddr;

use super::{Event, Kind};

/// The tables here are keyed by addresses and ports a flood's sender chooses (spoofed
/// sources): foldhash, seeded per process and per table, costs a few instructions where
/// SipHash cost hundreds. Its resistance to chosen collisions is less than SipHash's; the
/// tables are bounded (`TRACKED_MAX`), so a crafted flood can slow them, not grow them.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Distinct sources to one service within the window that make a flood.
pub const FLOOD_SOURCES: usize = 100;
/// Distinct destination addresses in one prefix (/24, /64) that make the failures toward it a
/// flood of the prefix rather than of one service (carpet bombing), with `FLOOD_SOURCES`.
pub const PREFIX_DESTS: usize = 16;
/// Client connections to one service left unanswered within the window, while another
/// service answered at the same vantage, that make a black hole.
pub const BLACKHOLE_FLOWS: usize = 3;
/// Distinct services one source tries within the window that make a scan.
pub const SCAN_PORTS: usize = 50;
/// The window, nanoseconds (10 s).
pub const AGGREGATE_WINDOW_NS: u64 = 10_000_000_000;
/// The first handshake failures of a service or source within the window leave at once (a
/// flood's first few are reported one by one, an isolated one is not delayed); from this
/// many on they wait to see whether an aggregate takes them.
pub const HOLD_FROM: usize = 5;
/// Handshake-failure events held at once; past it, new ones are dropped (counted: the
/// engines' counters still have them).
const HELD_MAX: usize = 1 << 16;
/// Services and sources tracked at once; past it, new ones are not tracked (counted).
const TRACKED_MAX: usize = 1 << 16;
/// Recent events remembered per service or source (for the distinct count in the window).
const RECENT_MAX: usize = 512;
/// Top entries and sample flows an aggregate event lists.
const TOP: usize = 5;
const TOP_TRACKED: usize = 4096;

type Service = (IpAddr, u16);
/// A destination prefix: the address with its host bits cleared, and the length.
type Prefix = (IpAddr, u8);

/// The /24 or /64 an address is in.
fn prefix_of(a: IpAddr) -> Prefix {
    match a {
        IpAddr::V4(v) => (IpAddr::V4((v.to_bits() & !0xff).into()), 24),
        IpAddr::V6(v) => (IpAddr::V6((v.to_bits() & !u128::from(u64::MAX)).into()), 64),
    }
}

/// Recent failures toward a prefix: their sources and their destinations.
#[derive(Default)]
struct PrefixRecent {
    sources: Recent<IpAddr>,
    dests: Recent<IpAddr>,
}
/// A client connection: its source address and port.
type Client = (IpAddr, u16);

struct Recent<T: Copy + Eq + std::hash::Hash> {
    /// The only sighting, while there is one: a spoofed flood brings tens of thousands of
    /// sources seen once each, which then cost no allocation (~40 B instead of ~450 B).
    one: Option<(u64, T)>,
    /// From the second sighting on.
    many: Option<Box<Sightings<T>>>,
}

struct Sightings<T: Copy + Eq + std::hash::Hash> {
    events: VecDeque<(u64, T)>,
    distinct: HashMap<T, u32>,
}

impl<T: Copy + Eq + std::hash::Hash> Default for Recent<T> {
    fn default() -> Self {
        Recent { one: None, many: None }
    }
}

impl<T: Copy + Eq + std::hash::Hash> Recent<T> {
    /// Adds one sighting at `t` and returns the distinct values within the window.
    fn add(&mut self, t: u64, v: T) -> usize {
        if self.many.is_none() {
            match self.one {
                // The first sighting has left the window: this one replaces it.
                None => {
                    self.one = Some((t, v));
                    return 1;
                }
                Some((old, _)) if t.saturating_sub(old) > AGGREGATE_WINDOW_NS => {
                    self.one = Some((t, v));
                    return 1;
                }
                Some(first) => {
                    let mut m = Sightings { events: VecDeque::new(), distinct: HashMap::default() };
                    m.push(first.0, first.1);
                    self.many = Some(Box::new(m));
                    self.one = None;
                }
            }
        }
        let m = self.many.as_mut().expect("set above");
        while let Some(&(old, x)) = m.events.front() {
            if t.saturating_sub(old) <= AGGREGATE_WINDOW_NS && m.events.len() < RECENT_MAX {
                break;
            }
            m.events.pop_front();
            if let Some(n) = m.distinct.get_mut(&x) {
                *n -= 1;
                if *n == 0 {
                    m.distinct.remove(&x);
                }
            }
        }
        m.push(t, v);
        m.distinct.len()
    }

    /// Sightings remembered.
    fn len(&self) -> usize {
        self.many.as_ref().map_or(usize::from(self.one.is_some()), |m| m.events.len())
    }

    fn last(&self) -> u64 {
        match &self.many {
            Some(m) => m.events.back().map_or(0, |e| e.0),
            None => self.one.map_or(0, |e| e.0),
        }
    }
}

impl<T: Copy + Eq + std::hash::Hash> Sightings<T> {
    fn push(&mut self, t: u64, v: T) {
        self.events.push_back((t, v));
        *self.distinct.entry(v).or_default() += 1;
    }
}

/// Adds `n` to `k`'s count, if `k` is tracked or there is room to track it (`TOP_TRACKED`).
fn bump<K: Eq + std::hash::Hash>(m: &mut HashMap<K, u64>, k: K, n: u64) {
    if m.len() < TOP_TRACKED || m.contains_key(&k) {
        *m.entry(k).or_default() += n;
    }
}

/// One flood or scan in progress.
struct Aggregate {
    kind: Kind,
    first: Event,
    last_ns: u64,
    count: u64,
    by_kind: [u64; 2],
    /// Distinct client connections within the window when it formed (black holes).
    flows: usize,
    /// The prefix a flood spreads over (carpet bombing).
    prefix: Option<Prefix>,
    dests: HashMap<IpAddr, u64>,
    sources: HashMap<IpAddr, u64>,
    ports: HashMap<u16, u64>,
    samples: Vec<serde_json::Value>,
}

impl Aggregate {
    fn new(kind: Kind, first: &Event) -> Self {
        Aggregate {
            kind,
            first: first.clone(),
            last_ns: first.time_last_ns,
            count: 0,
            by_kind: [0; 2],
            flows: 0,
            prefix: None,
            dests: HashMap::default(),
            sources: HashMap::default(),
            ports: HashMap::default(),
            samples: Vec::new(),
        }
    }

    fn absorb(&mut self, e: &Event) {
        self.count += 1;
        self.last_ns = self.last_ns.max(e.time_last_ns);
        self.by_kind[usize::from(e.kind == Kind::SynRejected)] += 1;
        bump(&mut self.sources, e.src_ip, 1);
        bump(&mut self.dests, e.dest_ip, 1);
        let port = if self.kind == Kind::PortScan { e.dest_port } else { e.src_port };
        bump(&mut self.ports, port, 1);
        if self.samples.len() < TOP {
            self.samples.push(serde_json::json!({
                "src_ip": e.src_ip, "src_port": e.src_port,
                "dest_ip": e.dest_ip, "dest_port": e.dest_port,
                "kind": e.kind.name(), "community_id": e.community_id_now(),
            }));
        }
    }

    /// Takes over what `other` absorbed (a flood taking over a black hole).
    fn merge(&mut self, other: Aggregate) {
        if other.first.time_first_ns < self.first.time_first_ns {
            self.first.time_first_ns = other.first.time_first_ns;
            self.first.time_first = other.first.time_first;
        }
        self.last_ns = self.last_ns.max(other.last_ns);
        self.count += other.count;
        self.by_kind[0] += other.by_kind[0];
        self.by_kind[1] += other.by_kind[1];
        other.sources.into_iter().for_each(|(k, n)| bump(&mut self.sources, k, n));
        other.dests.into_iter().for_each(|(k, n)| bump(&mut self.dests, k, n));
        other.ports.into_iter().for_each(|(k, n)| bump(&mut self.ports, k, n));
        let room = TOP.saturating_sub(self.samples.len());
        self.samples.extend(other.samples.into_iter().take(room));
    }

    fn top<K: Copy + Ord + serde::Serialize>(m: &HashMap<K, u64>) -> serde_json::Value {
        let mut v: Vec<(K, u64)> = m.iter().map(|(k, n)| (*k, *n)).collect();
        v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(TOP);
        v.into_iter().map(|(k, n)| serde_json::json!({"value": k, "count": n})).collect()
    }

    fn into_event(self) -> Event {
        let mut e = self.first;
        // Its times are quoted below.
        e.write_ids();
        // The aggregate's own words replace its first event's.
        e.deferred = None;
        let unanswered = self.by_kind[0];
        let rejected = self.by_kind[1];
        e.kind = self.kind;
        e.sub_kind = None;
        e.time_last_ns = self.last_ns;
        e.time_last = super::rfc3339(self.last_ns);
        e.count = self.count;
        e.fingerprints.clear();
        e.evidence = None;
        let distinct = self.sources.len();
        let at_least = if distinct >= TOP_TRACKED { "at least " } else { "" };
        e.culprit = match self.kind {
            Kind::SynFlood => super::Culprit::new(super::Role::Sender)
                .evidence(format!("{at_least}{distinct} distinct sources"))
                .evidence(format!("{unanswered} unanswered, {rejected} refused")),
            Kind::ServiceBlackhole => super::Culprit::new(super::Role::FilterBetween)
                .at((e.dest_ip, e.dest_port))
                .evidence(format!(
                    "{} client connections unanswered within {} s",
                    self.flows,
                    AGGREGATE_WINDOW_NS / 1_000_000_000
                ))
                .evidence(format!("other services answered at {}", e.vantage)),
            _ => super::Culprit::new(super::Role::Sender)
                .addr(e.src_ip)
                .evidence(format!(
                    "{} services tried, {} distinct ports",
                    self.count,
                    self.ports.len()
                ))
                .evidence(format!("{unanswered} unanswered, {rejected} refused")),
        };
        let spoofed = if rejected == 0 {
            ", spoofed if none of the sources ever completes a handshake"
        } else {
            ""
        };
        e.explanation = match (self.kind, self.prefix) {
            (Kind::SynFlood, Some((net, len))) => format!(
                "{} connection attempts from {at_least}{distinct} sources to {} addresses in {net}/{len} went unanswered ({unanswered}) or were refused ({rejected}) between {} and {}: a SYN flood spread over the prefix (carpet bombing) from {}{spoofed}. The per-connection events are folded into this one.",
                self.count,
                self.dests.len(),
                e.time_first,
                e.time_last,
                e.culprit,
            ),
            (Kind::SynFlood, None) => format!(
                "{} connection attempts from {at_least}{distinct} sources to {} went unanswered ({unanswered}) or were refused ({rejected}) between {} and {}: a SYN flood from {}{}. The per-connection events are folded into this one.",
                self.count,
                super::endpoint_str(e.dest_ip, e.dest_port),
                e.time_first,
                e.time_last,
                e.culprit,
                spoofed,
            ),
            (Kind::ServiceBlackhole, _) => format!(
                "The SYNs of {} client connections to {} went unanswered within {} s, while handshakes to other services seen at {} were answered: {} drops this service's SYNs silently (a firewall, security group or ACL in front of it), or the service is down without answering. This event folds the {} from {} to {}; the first {} were reported one by one.",
                self.flows,
                super::endpoint_str(e.dest_ip, e.dest_port),
                AGGREGATE_WINDOW_NS / 1_000_000_000,
                e.vantage,
                e.culprit,
                self.count,
                e.time_first,
                e.time_last,
                BLACKHOLE_FLOWS - 1,
            ),
            _ => format!(
                "{} tried {} services ({} distinct ports) between {} and {}: {unanswered} unanswered, {rejected} refused: a port scan. The per-connection events are folded into this one.",
                e.culprit,
                self.count,
                self.ports.len(),
                e.time_first,
                e.time_last,
            ),
        };
        let mut d = serde_json::Map::new();
        d.insert("unanswered".into(), unanswered.into());
        d.insert("refused".into(), rejected.into());
        d.insert("distinct_sources".into(), distinct.into());
        if self.kind == Kind::ServiceBlackhole {
            d.insert("flows_in_window".into(), self.flows.into());
        }
        if let Some((net, len)) = self.prefix {
            d.insert("target_prefix".into(), format!("{net}/{len}").into());
            d.insert("distinct_dests".into(), self.dests.len().into());
            d.insert("top_dest_ips".into(), Self::top(&self.dests));
        }
        d.insert("top_sources".into(), Self::top(&self.sources));
        d.insert(
            if self.kind == Kind::PortScan { "top_dest_ports" } else { "top_src_ports" }.into(),
            Self::top(&self.ports),
        );
        d.insert("sample_flows".into(), self.samples.into());
        e.details = d;
        e
    }
}

/// What the aggregator did, for the summary.
#[derive(Clone, Copy, Default, Debug, serde::Serialize)]
pub struct AggregateStats {
    /// Handshake-failure events folded into an aggregate.
    pub absorbed: u64,
    /// Held events dropped because the pool was full.
    pub held_overflow: u64,
    /// Services or sources not tracked because the tables were full.
    pub untracked: u64,
}

/// Folds floods and scans into one event each; everything else passes through in order.
#[derive(Default)]
pub struct Aggregator {
    /// Events waiting, in time order, and whether an aggregate may absorb them (boxed: one
    /// arriving late is inserted among them, and moving 0.5 KB events to make room costs).
    held: VecDeque<(Box<Event>, bool)>,
    services: HashMap<Service, Recent<IpAddr>>,
    sources: HashMap<IpAddr, Recent<Service>>,
    /// Per service, its unanswered client connections while the path answered.
    unanswered: HashMap<Service, Recent<Client>>,
    /// Per vantage, the services seen answering handshakes lately (the engines' notes).
    answers: HashMap<String, super::setup::AnswerSlots>,
    /// Per prefix, its recent failures' sources and destinations.
    prefixes: HashMap<Prefix, PrefixRecent>,
    floods: HashMap<Service, Aggregate>,
    prefix_floods: HashMap<Prefix, Aggregate>,
    blackholes: HashMap<Service, Aggregate>,
    scans: HashMap<IpAddr, Aggregate>,
    now_ns: u64,
    /// Every event waits the window, not only handshake failures: the output stays in time
    /// order (`analyze`). Live, other events leave at once.
    hold_all: bool,
    last_sweep_ns: u64,
    /// No open aggregate can be quiet before this time: a lower bound on the earliest
    /// `last_ns` among them plus the window (each `last_ns` only grows). Until then `release`
    /// does not look at them.
    quiet_from_ns: u64,
    pub stats: AggregateStats,
    /// Aggregate events reported, by kind.
    pub reported: [u64; super::KIND_COUNT],
}

fn held_kind(k: Kind) -> bool {
    matches!(k, Kind::SynUnanswered | Kind::SynRejected)
}

impl Aggregator {
    /// An aggregator that keeps the output in time order (every event waits the window).
    pub fn holding_all() -> Self {
        Aggregator { hold_all: true, ..Default::default() }
    }

    /// Takes one event (in time order, roughly) and appends what may leave now to `out`.
    pub fn push(&mut self, e: Event, out: &mut Vec<Event>) {
        self.now_ns = self.now_ns.max(e.time_last_ns);
        if held_kind(e.kind) {
            let absorbable = self.learn(&e) >= HOLD_FROM
                || (e.kind == Kind::SynUnanswered
                    && self.blackholes.contains_key(&(e.dest_ip, e.dest_port)));
            if absorbable && self.absorb(&e) {
                // Its aggregate already exists: nothing to wait for.
            } else if !absorbable && !self.hold_all {
                let_out(out, e);
            } else if self.held.len() >= HELD_MAX {
                self.stats.held_overflow += 1;
            } else {
                self.hold(e, absorbable);
            }
        } else if self.hold_all && self.held.len() < HELD_MAX {
            self.hold(e, false);
        } else {
            let_out(out, e);
        }
        self.release(self.now_ns, out);
    }

    /// Holds `e` in time order. Live, one worker's events can reach the aggregator seconds
    /// after another's newer ones; the front must stay the oldest, since `release` lets
    /// events go from the front and an aggregate ends only when nothing of its time is held.
    /// The place is found by bisection (after the events of the same time already held).
    fn hold(&mut self, e: Event, absorbable: bool) {
        let t = e.time_last_ns;
        let at = self.held.partition_point(|(h, _)| h.time_last_ns <= t);
        self.held.insert(at, (Box::new(e), absorbable));
    }

    /// Packet time moved to `now_ns` without an event.
    pub fn advance(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        self.now_ns = self.now_ns.max(now_ns);
        self.release(self.now_ns, out);
    }

    /// End of input: everything held and every open aggregate leaves.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        self.release(u64::MAX, out);
    }

    /// Counts `e` toward its service's and its source's recent failures; returns the larger
    /// count (this one included).
    fn learn(&mut self, e: &Event) -> usize {
        let t = e.time_last_ns;
        let mut recent = 0;
        let service = (e.dest_ip, e.dest_port);
        if self.services.len() < TRACKED_MAX || self.services.contains_key(&service) {
            let r = self.services.entry(service).or_default();
            let n = r.add(t, e.src_ip);
            recent = recent.max(r.len());
            if n >= FLOOD_SOURCES && !self.floods.contains_key(&service) {
                // Many sources: a flood, whatever the path did. A black hole already open on
                // the service becomes its beginning (one event per service).
                let a = match self.blackholes.remove(&service) {
                    Some(mut a) => {
                        a.kind = Kind::SynFlood;
                        a
                    }
                    None => Aggregate::new(Kind::SynFlood, e),
                };
                self.opened(&a);
                self.floods.insert(service, a);
            }
        } else {
            self.stats.untracked += 1;
        }
        let prefix = prefix_of(e.dest_ip);
        if self.prefixes.len() < TRACKED_MAX || self.prefixes.contains_key(&prefix) {
            let r = self.prefixes.entry(prefix).or_default();
            let n = r.sources.add(t, e.src_ip);
            let d = r.dests.add(t, e.dest_ip);
            // Spread over several addresses, the failures may become a prefix's flood; to one
            // or two they are their services' business.
            if d >= HOLD_FROM {
                recent = recent.max(r.sources.len());
            }
            if n >= FLOOD_SOURCES && d >= PREFIX_DESTS && !self.prefix_floods.contains_key(&prefix)
            {
                let mut a = Aggregate::new(Kind::SynFlood, e);
                a.prefix = Some(prefix);
                // Its addresses' black holes were the flood seen one address at a time.
                let taken: Vec<Service> =
                    self.blackholes.keys().filter(|s| prefix_of(s.0) == prefix).copied().collect();
                for s in taken {
                    if let Some(b) = self.blackholes.remove(&s) {
                        a.merge(b);
                    }
                }
                self.opened(&a);
                self.prefix_floods.insert(prefix, a);
            }
        } else {
            self.stats.untracked += 1;
        }
        if e.kind == Kind::SynUnanswered && self.path_answered(e) {
            if self.unanswered.len() < TRACKED_MAX || self.unanswered.contains_key(&service) {
                let r = self.unanswered.entry(service).or_default();
                let n = r.add(t, (e.src_ip, e.src_port));
                let flooded = self.floods.contains_key(&service)
                    || self.prefix_floods.contains_key(&prefix_of(service.0));
                if n >= BLACKHOLE_FLOWS && !flooded {
                    if !self.blackholes.contains_key(&service) {
                        let a = Aggregate::new(Kind::ServiceBlackhole, e);
                        self.opened(&a);
                        self.blackholes.insert(service, a);
                    }
                    let a = self.blackholes.get_mut(&service).expect("inserted above");
                    a.flows = a.flows.max(n);
                }
            } else {
                self.stats.untracked += 1;
            }
        }
        if self.sources.len() < TRACKED_MAX || self.sources.contains_key(&e.src_ip) {
            let r = self.sources.entry(e.src_ip).or_default();
            let n = r.add(t, service);
            recent = recent.max(r.len());
            if n >= SCAN_PORTS && !self.scans.contains_key(&e.src_ip) {
                let a = Aggregate::new(Kind::PortScan, e);
                self.opened(&a);
                self.scans.insert(e.src_ip, a);
            }
        } else {
            self.stats.untracked += 1;
        }
        recent
    }

    /// An aggregate is about to open: it may be quiet a window after its last event.
    fn opened(&mut self, a: &Aggregate) {
        self.quiet_from_ns = self.quiet_from_ns.min(quiet_after(a.last_ns));
    }

    /// A handshake was answered (an engine's note): what tells a black hole from a dead path.
    pub fn note_answered(&mut self, n: &super::setup::PathNote) {
        if self.answers.len() < crate::flow::MAX_VANTAGES || self.answers.contains_key(&n.vantage) {
            self.answers.entry(n.vantage.clone()).or_default().record(n.service, n.at_ns);
        }
    }

    /// Whether another service answered a handshake at the event's vantage within the window
    /// before it: the path works, this service does not.
    fn path_answered(&self, e: &Event) -> bool {
        self.answers
            .get(&e.vantage)
            .and_then(|a| a.other_than((e.dest_ip, e.dest_port)))
            .is_some_and(|t| t <= e.time_last_ns && e.time_last_ns - t <= AGGREGATE_WINDOW_NS)
    }

    /// Folds `e` into the flood on its service, the black hole it fell in, the scan from its
    /// source or the flood over its prefix, if one exists (in that order: the narrower cause
    /// first).
    fn absorb(&mut self, e: &Event) -> bool {
        let service = (e.dest_ip, e.dest_port);
        let blackhole = || e.kind == Kind::SynUnanswered;
        let a = if let Some(a) = self.floods.get_mut(&service) {
            a
        } else if let Some(a) = self.blackholes.get_mut(&service).filter(|_| blackhole()) {
            a
        } else if let Some(a) = self.scans.get_mut(&e.src_ip) {
            a
        } else if let Some(a) = self.prefix_floods.get_mut(&prefix_of(e.dest_ip)) {
            a
        } else {
            return false;
        };
        a.absorb(e);
        self.stats.absorbed += 1;
        true
    }

    fn release(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        while let Some((e, _)) = self.held.front() {
            if now_ns != u64::MAX && now_ns.saturating_sub(e.time_last_ns) < AGGREGATE_WINDOW_NS {
                break;
            }
            let (e, absorbable) = self.held.pop_front().expect("front exists");
            if !absorbable || !self.absorb(&e) {
                let_out(out, *e);
            }
        }
        // Aggregates quiet for a window, with nothing of theirs still held, are reported.
        let oldest_held = self.held.front().map_or(u64::MAX, |e| e.0.time_last_ns);
        let quiet = |last: u64| {
            now_ns == u64::MAX
                || (now_ns.saturating_sub(last) >= AGGREGATE_WINDOW_NS && oldest_held > last)
        };
        if now_ns >= self.quiet_from_ns {
            let (services, sources) = (&self.services, &self.sources);
            let (unanswered, prefixes) = (&self.unanswered, &self.prefixes);
            let mut ended = take_quiet(&mut self.floods, |k| last(services.get(k)), &quiet);
            ended.extend(take_quiet(&mut self.blackholes, |k| last(unanswered.get(k)), &quiet));
            ended.extend(take_quiet(&mut self.scans, |k| last(sources.get(k)), &quiet));
            let prefix_last = |k: &Prefix| prefixes.get(k).map_or(0, |r| r.sources.last());
            ended.extend(take_quiet(&mut self.prefix_floods, prefix_last, &quiet));
            // In time order, the same from run to run (the maps' order is not).
            ended.sort_by_key(|a| {
                let f = &a.first;
                (a.last_ns, a.kind as usize, f.time_first_ns, f.src_ip, f.dest_ip, f.dest_port)
            });
            for a in ended.into_iter().filter(|a| a.count > 0) {
                self.reported[a.kind as usize] += 1;
                out.push(a.into_event());
            }
            self.quiet_from_ns = (self.floods.values())
                .chain(self.blackholes.values())
                .chain(self.prefix_floods.values())
                .chain(self.scans.values())
                .map(|a| quiet_after(a.last_ns))
                .min()
                .unwrap_or(u64::MAX);
        }
        // Forget services and sources that have been quiet for a window (swept once a window:
        // a full table waits for the sweep, counting what it could not track).
        if now_ns == u64::MAX || now_ns.saturating_sub(self.last_sweep_ns) >= AGGREGATE_WINDOW_NS {
            self.last_sweep_ns = now_ns;
            let keep =
                |last: u64| now_ns != u64::MAX && now_ns.saturating_sub(last) < AGGREGATE_WINDOW_NS;
            self.services.retain(|_, r| keep(r.last()));
            self.unanswered.retain(|_, r| keep(r.last()));
            self.prefixes.retain(|_, r| keep(r.sources.last()));
            self.sources.retain(|_, r| keep(r.last()));
        }
    }
}

/// An event leaves as it came: the words its detector left for later are written now (a
/// folded one is never written: see [`Event::render`]).
fn let_out(out: &mut Vec<Event>, mut e: Event) {
    e.render();
    out.push(e);
}

/// The earliest time an aggregate last seen at `last_ns` can be quiet.
fn quiet_after(last_ns: u64) -> u64 {
    last_ns.saturating_add(AGGREGATE_WINDOW_NS)
}

fn last<T: Copy + Eq + std::hash::Hash>(r: Option<&Recent<T>>) -> u64 {
    r.map_or(0, Recent::last)
}

/// Removes and returns the aggregates whose last event (absorbed, or `last_seen` on their
/// key) is `quiet`.
fn take_quiet<K: Copy + Eq + std::hash::Hash>(
    aggregates: &mut HashMap<K, Aggregate>,
    last_seen: impl Fn(&K) -> u64,
    quiet: &dyn Fn(u64) -> bool,
) -> Vec<Aggregate> {
    let done: Vec<K> = aggregates
        .iter()
        .filter(|(k, a)| quiet(a.last_ns.max(last_seen(k))))
        .map(|(k, _)| *k)
        .collect();
    done.into_iter().filter_map(|k| aggregates.remove(&k)).collect()
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::{Aggregator, Recent, AGGREGATE_WINDOW_NS, SCAN_PORTS};
    use crate::anomaly::{Culprit, Event, FlowRef, Kind, Role};

    /// An unanswered SYN from `src` to `dst:port` at `t`.
    fn unanswered(src: IpAddr, dst: IpAddr, port: u16, t: u64) -> Event {
        Event {
            schema_version: crate::anomaly::SCHEMA_VERSION,
            kind: Kind::SynUnanswered,
            sub_kind: None,
            time_first: String::new(),
            time_last: String::new(),
            time_first_ns: t,
            time_last_ns: t,
            host: String::new(),
            flow_id: 0,
            community_id: String::new(),
            src_ip: src,
            src_port: 40000,
            dest_ip: dst,
            dest_port: port,
            proto: "TCP",
            orientation: "",
            packet_direction: "",
            flow: FlowRef {
                src,
                sport: 40000,
                dst,
                dport: port,
                vlan: 0,
                direction: "client_to_server",
            },
            vantage: "tap".into(),
            count: 1,
            fingerprints: Vec::new(),
            culprit: Culprit {
                role: Role::Peer,
                addr: None,
                port: None,
                mac: None,
                vantages: Vec::new(),
                evidence: Vec::new(),
            },
            explanation: String::new(),
            details: serde_json::Map::new(),
            evidence: None,
            deferred: None,
            community_of: None,
        }
    }

    /// `release` skips the open aggregates until the earliest can be quiet. A scan opened
    /// after that bound was taken, from events older than the open scan's last (a worker whose
    /// events come late, live), is still reported a window after its own last SYN, not the
    /// other's, with every one of its SYNs counted once.
    #[test]
    fn an_aggregate_opened_late_with_older_events_is_reported_on_time() {
        let (s, w) = (1_000_000_000, AGGREGATE_WINDOW_NS);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let target: IpAddr = "10.9.9.9".parse().unwrap();
        let mut agg = Aggregator::default();
        let mut out = Vec::new();
        let scan = |agg: &mut Aggregator, out: &mut Vec<Event>, src: IpAddr, t0: u64| {
            for i in 0..SCAN_PORTS as u16 {
                agg.push(unanswered(src, target, 1000 + i, t0 + u64::from(i)), out);
            }
        };
        // Scanner a: a scan at 5 s, still scanning until 16 s; its held SYNs leave at 16 s.
        scan(&mut agg, &mut out, a, 5 * s);
        for i in 6..=16 {
            agg.push(unanswered(a, target, 2000 + i as u16, i * s), &mut out);
        }
        agg.advance(16 * s + 1, &mut out);
        // Scanner b: a scan at 7 s, reaching the aggregator after a's SYNs of 16 s.
        scan(&mut agg, &mut out, b, 7 * s);
        let scans = |out: &[Event]| -> Vec<IpAddr> {
            out.iter().filter(|e| e.kind == Kind::PortScan).map(|e| e.src_ip).collect()
        };
        agg.advance(7 * s + w + 100, &mut out);
        assert_eq!(scans(&out), vec![b], "b's scan is quiet a window after its last SYN");
        let b_scan = out.iter().find(|e| e.kind == Kind::PortScan).unwrap().count;
        let b_alone = out.iter().filter(|e| e.kind == Kind::SynUnanswered && e.src_ip == b).count();
        assert_eq!(b_scan + b_alone as u64, SCAN_PORTS as u64, "each of b's SYNs counted once");
        agg.advance(16 * s + w + 100, &mut out);
        assert_eq!(scans(&out), vec![b, a]);
    }

    /// Live, one worker's events can reach the aggregator seconds after another's newer
    /// ones. A flood reported by a worker 5 s behind, while the other reports failures of
    /// another service, is still one aggregate taking every SYN it takes in time order; held
    /// behind the other service's newer SYNs, its first ones used to outlive it and leave one
    /// by one.
    #[test]
    fn a_flood_reported_by_a_worker_out_of_step_is_one_aggregate() {
        let (ms, w) = (1_000_000, AGGREGATE_WINDOW_NS);
        let (s1, s2): (IpAddr, IpAddr) = ("10.9.9.1".parse().unwrap(), "10.9.9.2".parse().unwrap());
        let src = |i: u32| IpAddr::from([10, 1, (i >> 8) as u8, i as u8]);
        // The lagging worker's flood on s1 (120 sources over 1.2 s), and the other worker's
        // ten failures on s2 from 2 s on.
        let flood = (0..120u32).map(|i| (unanswered(src(i), s1, 80, u64::from(i) * 10 * ms), true));
        let other = (0..10u32)
            .map(|i| (unanswered(src(i), s2, 80, (2000 + u64::from(i) * 200) * ms), false));
        let events: Vec<(Event, bool)> = flood.chain(other).collect();
        let run = |lag_ns: u64| {
            let mut order: Vec<&(Event, bool)> = events.iter().collect();
            order.sort_by_key(|(e, lags)| e.time_last_ns + if *lags { lag_ns } else { 0 });
            let mut agg = Aggregator::default();
            let mut out = Vec::new();
            for (e, _) in order {
                agg.push(e.clone(), &mut out);
            }
            // Live workers tick the aggregator every 100 ms.
            for tick in 0..(lag_ns + 5_000 * ms + w) / (100 * ms) {
                agg.advance(tick * 100 * ms, &mut out);
            }
            let floods: Vec<u64> =
                out.iter().filter(|e| e.kind == Kind::SynFlood).map(|e| e.count).collect();
            let alone = |d: IpAddr| {
                out.iter().filter(|e| e.kind == Kind::SynUnanswered && e.dest_ip == d).count()
            };
            (floods, alone(s1), alone(s2))
        };
        let in_order = run(0);
        assert_eq!(in_order.0.len(), 1, "{in_order:?}");
        assert_eq!(in_order.0[0] + in_order.1 as u64, 120, "{in_order:?}");
        assert_eq!(in_order.2, 10, "{in_order:?}");
        assert_eq!(run(5_000 * ms), in_order);
    }

    /// The inline first sighting counts like the queue it replaces: distinct values within
    /// the window, a sighting that left the window forgotten, repeats not counted twice.
    #[test]
    fn recent_counts_distinct_values_within_the_window() {
        let w = AGGREGATE_WINDOW_NS;
        let mut r: Recent<u16> = Recent::default();
        assert_eq!(r.add(0, 1), 1);
        assert_eq!((r.len(), r.last()), (1, 0));
        // The first left the window: the second replaces it.
        assert_eq!(r.add(w + 1, 2), 1);
        assert_eq!((r.len(), r.last()), (1, w + 1));
        // Within the window: two distinct, then a repeat.
        assert_eq!(r.add(w + 2, 3), 2);
        assert_eq!(r.add(w + 3, 3), 2);
        assert_eq!(r.len(), 3);
        // Much later: everything before has left the window.
        assert_eq!(r.add(3 * w + 10, 4), 1);
        assert_eq!((r.len(), r.last()), (1, 3 * w + 10));
    }
}
