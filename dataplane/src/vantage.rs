//! The vantages of a process: the inputs named at start (interfaces, capture files) and the
//! remote-mirror sessions found inside them. Two switches mirroring into one collector port
//! are two points of view of the network, as two interfaces are: each session (its tunnel,
//! its session ID or VNI, the mirror's outer source address) is a vantage of its own, named
//! after its input, and numbered once for every worker of the process.
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, PoisonError};

use dashmap::DashMap;
use dataplane_common::{TcpOffsets, Tunnel};

use crate::flow::MAX_VANTAGES;

/// A mirror session as a frame shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SessionKey {
    input: u16,
    tunnel: u8,
    session: u32,
    sender: IpAddr,
}

/// Names and inputs of the session vantages, by index minus the number of inputs.
#[derive(Default)]
struct Sessions {
    names: Vec<String>,
    inputs: Vec<u16>,
}

struct Inner {
    inputs: Vec<String>,
    /// Every worker looks its tunnelled frames up here: a sharded map, so workers reading it
    /// at line rate do not queue on one lock. Sessions are numbered under `sessions`' lock.
    by_key: DashMap<SessionKey, u16>,
    sessions: Mutex<Sessions>,
    /// Inputs plus sessions: read on every packet, so kept beside the lock.
    count: AtomicUsize,
    /// Frames of sessions found after [`MAX_VANTAGES`] vantages: kept at their input's vantage.
    overflowed: AtomicU64,
}

/// Shared by every engine and reader of a process (cloning shares it).
#[derive(Clone)]
pub struct Vantages(Arc<Inner>);

impl Default for Vantages {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl From<Vec<String>> for Vantages {
    fn from(inputs: Vec<String>) -> Self {
        Self::new(inputs)
    }
}

impl std::fmt::Debug for Vantages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Vantages {
    /// The inputs, by index (`--iface` order, or the files' order).
    pub fn new(inputs: Vec<String>) -> Self {
        let count = AtomicUsize::new(inputs.len());
        Self(Arc::new(Inner {
            inputs,
            by_key: DashMap::new(),
            sessions: Mutex::default(),
            count,
            overflowed: AtomicU64::new(0),
        }))
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Sessions> {
        // The table stays consistent whatever a panicking holder did (one insert at a time).
        self.0.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Vantages so far: inputs and the sessions found in them.
    #[inline]
    pub fn len(&self) -> usize {
        self.0.count.load(Relaxed)
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The inputs named at start.
    pub fn inputs(&self) -> &[String] {
        &self.0.inputs
    }

    /// The name of vantage `v` as events, evidence and the summary show it.
    pub fn name(&self, v: u16) -> String {
        let i = v as usize;
        if let Some(n) = self.0.inputs.get(i) {
            return n.clone();
        }
        let s = self.table();
        s.names.get(i - self.0.inputs.len()).cloned().unwrap_or_else(|| format!("vantage{v}"))
    }

    /// Every vantage's name, by index.
    pub fn names(&self) -> Vec<String> {
        let s = self.table();
        self.0.inputs.iter().chain(&s.names).cloned().collect()
    }

    /// The input (interface or file) vantage `v` was found in: itself for an input.
    pub fn input_of(&self, v: u16) -> u16 {
        let i = v as usize;
        if i < self.0.inputs.len() {
            return v;
        }
        self.table().inputs.get(i - self.0.inputs.len()).copied().unwrap_or(v)
    }

    /// The mirror sessions found so far, in vantage order: each one's name, and the name of
    /// the input it was found in.
    pub fn sessions(&self) -> Vec<(String, String)> {
        let s = self.table();
        let input = |at: u16| self.0.inputs.get(usize::from(at)).cloned().unwrap_or_default();
        s.names.iter().zip(&s.inputs).map(|(n, &at)| (n.clone(), input(at))).collect()
    }

    /// A value per vantage from one per input: a session's is its input's.
    pub fn per_vantage<T: Copy>(&self, by_input: &[T]) -> Vec<T> {
        (0..self.len()).map(|v| by_input[usize::from(self.input_of(v as u16))]).collect()
    }

    /// Frames of sessions beyond the [`MAX_VANTAGES`] limit, counted at their input instead.
    pub fn overflowed(&self) -> u64 {
        self.0.overflowed.load(Relaxed)
    }

    /// [`of_session`](Self::of_session) when that would number nothing: `None` when the
    /// frame opens a session not numbered yet (or one past the limit, which is counted there).
    pub fn known_session(&self, input: u16, o: &TcpOffsets, frame: &[u8]) -> Option<u16> {
        let Some(sender) = outer_source(o, frame) else { return Some(input) };
        let key = SessionKey { input, tunnel: o.tunnel, session: o.session, sender };
        self.0.by_key.get(&key).map(|v| *v)
    }

    /// The vantage of a frame that arrived on `input` inside the tunnel `o` describes: the
    /// session's own, numbered on first sight.
    pub fn of_session(&self, input: u16, o: &TcpOffsets, frame: &[u8]) -> u16 {
        let Some(sender) = outer_source(o, frame) else { return input };
        let key = SessionKey { input, tunnel: o.tunnel, session: o.session, sender };
        if let Some(v) = self.0.by_key.get(&key) {
            return *v;
        }
        let mut s = self.table();
        // Another worker may have numbered it meanwhile.
        if let Some(v) = self.0.by_key.get(&key) {
            return *v;
        }
        let v = self.0.inputs.len() + s.names.len();
        if v >= MAX_VANTAGES {
            self.0.overflowed.fetch_add(1, Relaxed);
            return input;
        }
        let base = self.0.inputs.get(input as usize).map_or("?", String::as_str);
        s.names.push(session_name(base, &key));
        s.inputs.push(input);
        self.0.by_key.insert(key, v as u16);
        self.0.count.store(v + 1, Relaxed);
        log::info!("mirror session {} is vantage {v}", s.names[v - self.0.inputs.len()]);
        v as u16
    }
}

/// The outer IP header's source: the switch or host that sends the mirror.
fn outer_source(o: &TcpOffsets, frame: &[u8]) -> Option<IpAddr> {
    let at = o.outer_l3_off as usize;
    match frame.get(at)? >> 4 {
        4 => {
            let b: [u8; 4] = frame.get(at + 12..at + 16)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        6 => {
            let b: [u8; 16] = frame.get(at + 8..at + 24)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// `INPUT/KIND:SESSION@SENDER`, e.g. `mon0/erspan2:12@192.0.2.1`: no spaces, so that
/// `--serial` can name it as written.
fn session_name(input: &str, k: &SessionKey) -> String {
    let kind = match Tunnel::from_u8(k.tunnel) {
        Tunnel::None => "tunnel",
        Tunnel::Gre => "gre",
        Tunnel::GreEthernet => "teb",
        Tunnel::ErspanI => "erspan1",
        Tunnel::ErspanII => "erspan2",
        Tunnel::ErspanIII => "erspan3",
        Tunnel::Vxlan => "vxlan",
        Tunnel::Geneve => "geneve",
    };
    format!("{input}/{kind}:{}@{}", k.session, k.sender)
}

/// How two vantages relate, learned from the connections both of them carry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Relation {
    /// Not enough shared traffic yet to tell.
    Unknown,
    /// One link behind the other (either side of a firewall): what one sees, the other sees,
    /// so a packet seen at one and not at the other was dropped between them.
    Serial,
    /// Side by side (two backends of one VIP, two members of a LAG): each carries its own
    /// share of the traffic; a packet at one only is not a loss.
    Parallel,
}

/// Shared packets needed before a pair is judged serial or parallel.
pub const RELATION_MIN_SHARED: u32 = 32;
/// Packets matched at both vantages of a pair before a loss between them is reported (the
/// pair's clock offset rests on them).
pub const LOSS_MIN_MATCHES: u32 = 50;
/// Serial: at least this share (in percent) of the shared connections' packets reach both.
pub const SERIAL_MIN_PERCENT: u32 = 90;

#[derive(Clone, Copy, Default, Debug)]
struct PairStat {
    /// Packets of connections both vantages carry, whose matching window closed.
    shared: u32,
    /// Those seen at both.
    both: u32,
}

/// Vantage pairs: serial or parallel, learned from the packets of connections both carry
/// (≥ [`RELATION_MIN_SHARED`] of them, ≥ [`SERIAL_MIN_PERCENT`] % seen at both: serial), or
/// named by the operator (`--serial A,B`).
#[derive(Clone, Default, Debug)]
pub struct VantageRelations {
    stats: HashMap<(u16, u16), PairStat>,
    forced_serial: Vec<(u16, u16)>,
    /// Each vantage's clock offset from vantage 0 (ns, its clock minus vantage 0's), as the
    /// caller estimated and removed it (`analyze`'s first pass); empty: none known.
    offsets: Vec<i64>,
}

fn pair(a: u16, b: u16) -> (u16, u16) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

impl VantageRelations {
    /// Declares `a` and `b` serial whatever the traffic says.
    pub fn force_serial(&mut self, a: u16, b: u16) {
        self.forced_serial.push(pair(a, b));
    }

    pub fn relation(&self, a: u16, b: u16) -> Relation {
        let k = pair(a, b);
        if self.forced_serial.contains(&k) {
            return Relation::Serial;
        }
        match self.stats.get(&k) {
            Some(s) if s.shared >= RELATION_MIN_SHARED => {
                if u64::from(s.both) * 100 >= u64::from(s.shared) * u64::from(SERIAL_MIN_PERCENT) {
                    // Serial, but no loss is inferred before enough packets were matched.
                    if s.both >= LOSS_MIN_MATCHES {
                        Relation::Serial
                    } else {
                        Relation::Unknown
                    }
                } else {
                    Relation::Parallel
                }
            }
            _ => Relation::Unknown,
        }
    }

    /// Records the clock offsets removed from each vantage's times (index: vantage).
    pub fn set_offsets(&mut self, offsets: Vec<i64>) {
        self.offsets = offsets;
    }

    /// `b`'s clock minus `a`'s, as removed (0 when unknown).
    pub fn offset_between(&self, a: u16, b: u16) -> i64 {
        let o = |v: u16| self.offsets.get(usize::from(v)).copied().unwrap_or(0);
        o(b) - o(a)
    }

    /// The pairs judged so far, with the evidence: (a, b, relation, shared, both).
    pub fn judged(&self) -> Vec<(u16, u16, Relation, u32, u32)> {
        let mut v: Vec<_> = self
            .stats
            .iter()
            .map(|(&(a, b), s)| (a, b, self.relation(a, b), s.shared, s.both))
            .chain(
                self.forced_serial
                    .iter()
                    .filter(|k| !self.stats.contains_key(k))
                    .map(|&(a, b)| (a, b, Relation::Serial, 0, 0)),
            )
            .collect();
        v.sort_unstable_by_key(|t| (t.0, t.1));
        v
    }

    /// One packet of a connection carried by the vantages `conn`, seen at `seen`.
    pub(crate) fn learn(&mut self, conn: u128, seen: u128) {
        // Few vantages share a connection; bound the pairs looked at anyway.
        let mut vs = [0u16; 16];
        let mut n = 0;
        let mut m = conn;
        while m != 0 && n < vs.len() {
            vs[n] = m.trailing_zeros() as u16;
            m &= m - 1;
            n += 1;
        }
        for i in 0..n {
            for j in i + 1..n {
                let st = self.stats.entry((vs[i], vs[j])).or_default();
                st.shared = st.shared.saturating_add(1);
                if seen & (1 << vs[i]) != 0 && seen & (1 << vs[j]) != 0 {
                    st.both = st.both.saturating_add(1);
                }
            }
        }
    }

    /// The strongest relation between `v` and any vantage in `set`.
    pub(crate) fn best(&self, v: u16, set: u128) -> Relation {
        let mut best = Relation::Parallel;
        let mut m = set;
        while m != 0 {
            let u = m.trailing_zeros() as u16;
            m &= m - 1;
            match self.relation(v, u) {
                Relation::Serial => return Relation::Serial,
                Relation::Unknown => best = Relation::Unknown,
                Relation::Parallel => {}
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(tunnel: Tunnel, session: u32) -> TcpOffsets {
        TcpOffsets { tunnel: tunnel as u8, session, outer_l3_off: 14, ..TcpOffsets::default() }
    }

    fn ipv4_frame(src: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0u8; 34];
        f[14] = 0x45;
        f[26..30].copy_from_slice(&src);
        f
    }

    #[test]
    fn each_session_and_sender_is_a_vantage_of_its_own_numbered_once() {
        let v = Vantages::new(vec!["mon0".into(), "mon1".into()]);
        let a = ipv4_frame([192, 0, 2, 1]);
        let b = ipv4_frame([192, 0, 2, 2]);
        let s12 = v.of_session(0, &offsets(Tunnel::ErspanII, 12), &a);
        assert_eq!(s12, 2);
        assert_eq!(v.of_session(0, &offsets(Tunnel::ErspanII, 12), &a), 2, "same session");
        assert_eq!(v.of_session(0, &offsets(Tunnel::ErspanII, 13), &a), 3, "another ID");
        assert_eq!(v.of_session(0, &offsets(Tunnel::ErspanII, 12), &b), 4, "another switch");
        assert_eq!(v.of_session(1, &offsets(Tunnel::ErspanII, 12), &a), 5, "another input");
        assert_eq!(v.len(), 6);
        assert_eq!(v.name(2), "mon0/erspan2:12@192.0.2.1");
        assert_eq!(v.name(5), "mon1/erspan2:12@192.0.2.1");
        assert_eq!(v.input_of(5), 1);
        assert_eq!(v.input_of(1), 1);
        assert_eq!(v.names().len(), 6);
        // A frame whose outer header is unreadable stays at its input.
        assert_eq!(v.of_session(1, &offsets(Tunnel::Vxlan, 1), &[0u8; 20]), 1);
    }

    #[test]
    fn sessions_beyond_the_limit_stay_at_their_input_and_are_counted() {
        let v = Vantages::new(vec!["mon0".into()]);
        let f = ipv4_frame([10, 0, 0, 1]);
        for s in 0..(MAX_VANTAGES as u32 + 10) {
            let got = v.of_session(0, &offsets(Tunnel::Vxlan, s), &f);
            assert!((got as usize) < MAX_VANTAGES);
        }
        assert_eq!(v.len(), MAX_VANTAGES);
        assert_eq!(v.overflowed(), 11);
    }
}
