//! Per-flow state, owned by one worker: a canonical bidirectional key, a compact record for
//! both directions (≤ 128 bytes, asserted), and a bounded table that evicts closed flows
//! first, then half-open ones, then the longest idle, counting each eviction by reason.
use std::{collections::HashMap, net::IpAddr};

use crate::{packet::TcpPacket, seq::SeqNumber, tcp::ConnState};

/// Both endpoints in a fixed order (lower address/port first), the VLAN and the vantage: the
/// same key for both directions of a flow as one sensor sees it. Each vantage keeps its own
/// view (MACs and TTLs differ per interface); the cross-vantage matcher compares them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub lo: [u8; 16],
    pub hi: [u8; 16],
    pub lo_port: u16,
    pub hi_port: u16,
    pub vlan: u16,
    /// 4 or 6.
    pub family: u8,
    /// The sensor (interface or file) this view belongs to.
    pub vantage: u8,
}

fn addr16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
        IpAddr::V6(v) => v.octets(),
    }
}

pub fn addr_from16(b: [u8; 16], family: u8) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(b);
    match (family, v6.to_ipv4_mapped()) {
        (4, Some(v4)) => IpAddr::V4(v4),
        _ => IpAddr::V6(v6),
    }
}

impl FlowKey {
    /// The key and the packet's side: 0 if it was sent by `lo`, 1 if by `hi`.
    pub fn of(p: &TcpPacket) -> (FlowKey, usize) {
        let (s, d) = (addr16(p.src), addr16(p.dst));
        let family = if p.src.is_ipv4() { 4 } else { 6 };
        let vantage = p.vantage.min(u8::MAX as u16) as u8;
        if (s, p.sport) <= (d, p.dport) {
            (FlowKey { lo: s, hi: d, lo_port: p.sport, hi_port: p.dport, vlan: p.vlan, family, vantage }, 0)
        } else {
            (FlowKey { lo: d, hi: s, lo_port: p.dport, hi_port: p.sport, vlan: p.vlan, family, vantage }, 1)
        }
    }

    /// Address and port of `side` (0 = lo, 1 = hi).
    pub fn endpoint(&self, side: usize) -> (IpAddr, u16) {
        if side == 0 {
            (addr_from16(self.lo, self.family), self.lo_port)
        } else {
            (addr_from16(self.hi, self.family), self.hi_port)
        }
    }

    /// A well-mixed hash, for sharding flows over workers: the same for both directions and
    /// for every vantage, so all views of a flow meet on one worker.
    pub fn shard_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.lo.iter().chain(self.hi.iter()) {
            h = (h ^ *b as u64).wrapping_mul(0x100_0000_01b3);
        }
        for v in [self.lo_port, self.hi_port, self.vlan] {
            h = (h ^ v as u64).wrapping_mul(0x100_0000_01b3);
        }
        h ^ (h >> 29)
    }
}

/// How the IP-ID field of one sender behaves, learned from its packets.
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IpIdModel {
    #[default]
    Unknown = 0,
    /// Small positive steps per packet (per-flow or per-host counter).
    Counter = 1,
    /// Always zero (IPv4 with DF on some stacks; IPv6 has no ID).
    Zero = 2,
    /// No visible pattern.
    Random = 3,
}

/// Per-direction flags.
pub mod dir_flags {
    pub const SYN: u8 = 1 << 0;
    pub const FIN: u8 = 1 << 1;
    pub const RST: u8 = 1 << 2;
    pub const SACK_OK: u8 = 1 << 3;
    /// This side sent the timestamp option in its SYN / SYN-ACK.
    pub const TS_OK: u8 = 1 << 4;
    /// Seen at least one packet.
    pub const SEEN: u8 = 1 << 5;
    /// Sent data or an ACK at least once (its last ACK is meaningful).
    pub const DATA_OR_ACK: u8 = 1 << 6;
    /// Next-hop MAC changed and changed back at least once (alternating paths).
    pub const SPLIT_REPORTED: u8 = 1 << 7;
}

/// What one direction (one sender) of a flow looks like to the tracker. Times are µs since
/// the flow's first packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DirState {
    pub isn: SeqNumber,
    /// Highest SEQ + length sent (Wireshark's nextseq).
    pub next_seq: SeqNumber,
    /// ACK of this sender's last packet.
    pub last_ack: SeqNumber,
    pub ts_val: u32,
    pub last_us: u32,
    /// When `next_seq` last advanced.
    pub next_seq_us: u32,
    pub window: u16,
    pub mss: u16,
    pub ip_id: u16,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub ttl: u8,
    pub wscale: u8,
    pub ip_id_model: IpIdModel,
    pub flags: u8,
    /// Consecutive duplicate ACKs sent by this side.
    pub dup_acks: u8,
    /// Spare (keeps the layout; storms are tracked in the flow's extras).
    pub _spare: u8,
    /// Next-hop MAC switches (A→B and back) seen, saturating.
    pub mac_switches: u8,
    /// Packets seen, saturating at 255 (enough to know a model was learned).
    pub packets: u8,
}
const _: () = assert!(std::mem::size_of::<DirState>() == 52);

/// Flow-level flags.
pub mod conn_flags {
    /// The first packet seen was not a SYN: picked up mid-stream.
    pub const MIDSTREAM: u16 = 1 << 0;
    /// Side `hi` is the client (sent the SYN); else `lo` is, or unknown if no SYN seen.
    pub const CLIENT_IS_HI: u16 = 1 << 1;
    pub const HANDSHAKE_REPORTED: u16 = 1 << 2;
    pub const ONE_SIDED_REPORTED: u16 = 1 << 3;
    pub const DATA_AFTER_RST_REPORTED: u16 = 1 << 4;
    /// A segment from a second sequence space (or new ISN) was reported.
    pub const REUSE_REPORTED: u16 = 1 << 5;
    /// A zero-window episode is open.
    pub const ZERO_WINDOW_OPEN: u16 = 1 << 6;
    pub const STORM_REPORTED: u16 = 1 << 7;
    /// Detections on this flow are waiting for their "after" evidence.
    pub const EVIDENCE_PENDING: u16 = 1 << 8;
    /// The SYN-ACK was seen.
    pub const SYNACK_SEEN: u16 = 1 << 9;
    // Bits 10 and 11 belong to the engine's gap handling.
    /// `lost_mark` is set (for side lo, or for side hi with LOST_MARK_HI).
    pub const LOST_MARK: u16 = 1 << 12;
    pub const LOST_MARK_HI: u16 = 1 << 13;
    /// lost_between_sensors was reported for this flow (later losses are counted only).
    pub const LOST_BETWEEN_REPORTED: u16 = 1 << 14;
}

/// One flow, both directions. Kept small: a sensor tracks millions.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FlowRecord {
    pub first_ns: u64,
    pub dirs: [DirState; 2],
    /// Newest entry of this flow in the evidence history (u32::MAX: none).
    pub last_hist: u32,
    /// After a segment that skipped a capture gap: the sender's next_seq before the gap, the
    /// highest SEQ its peer may ACK without acking unseen bytes (Wireshark's maxseqtobeacked).
    pub lost_mark: SeqNumber,
    pub flags: u16,
    pub state: ConnState,
    /// Loss epoch of the worker this flow last synchronised with (gap state when behind).
    pub epoch: u8,
    /// Bit per vantage (interface/file) that has seen the flow.
    pub vantages: u8,
    /// SYNs / SYN-ACKs seen with the current ISN (saturating).
    pub syns: u8,
    pub synacks: u8,
    pub anomalies: u8,
}
const _: () = assert!(std::mem::size_of::<FlowRecord>() <= 128, "a flow record must stay within 128 bytes");

impl FlowRecord {
    /// The highest SEQ of `side` its peer can acknowledge without acking bytes we never saw.
    pub fn ackable(&self, side: usize) -> SeqNumber {
        if self.flags & conn_flags::LOST_MARK != 0 && (self.flags & conn_flags::LOST_MARK_HI != 0) == (side == 1) {
            self.lost_mark
        } else {
            self.dirs[side].next_seq
        }
    }
    pub fn clear_lost_mark(&mut self, side: usize) {
        if self.flags & conn_flags::LOST_MARK != 0 && (self.flags & conn_flags::LOST_MARK_HI != 0) == (side == 1) {
            self.flags &= !(conn_flags::LOST_MARK | conn_flags::LOST_MARK_HI);
        }
    }
}

impl FlowRecord {
    pub fn new(first_ns: u64, epoch: u8) -> Self {
        Self {
            first_ns,
            dirs: [DirState::default(); 2],
            last_hist: u32::MAX,
            lost_mark: SeqNumber(0),
            flags: 0,
            state: ConnState::Unknown,
            epoch,
            vantages: 0,
            syns: 0,
            synacks: 0,
            anomalies: 0,
        }
    }

    /// µs since the first packet (wraps after ~71 minutes; compared with wrapping_sub).
    #[inline]
    pub fn rel_us(&self, ts_ns: u64) -> u32 {
        (ts_ns.saturating_sub(self.first_ns) / 1000) as u32
    }

    /// Which side (0/1) is the client, when a SYN told us.
    pub fn client_side(&self) -> Option<usize> {
        if self.flags & conn_flags::MIDSTREAM != 0 && self.dirs[0].flags & dir_flags::SYN == 0 && self.dirs[1].flags & dir_flags::SYN == 0 {
            return None;
        }
        Some((self.flags & conn_flags::CLIENT_IS_HI != 0) as usize)
    }

    pub fn last_ns(&self) -> u64 {
        self.first_ns + self.dirs[0].last_us.max(self.dirs[1].last_us) as u64 * 1000
    }
}

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
    pub const ALL: [EvictReason; 4] = [EvictReason::Closed, EvictReason::HalfOpen, EvictReason::Idle, EvictReason::Expired];
    pub fn name(self) -> &'static str {
        match self {
            EvictReason::Closed => "closed",
            EvictReason::HalfOpen => "half_open",
            EvictReason::Idle => "idle",
            EvictReason::Expired => "expired",
        }
    }
}

/// A worker's flows. Not shared: no locks.
pub struct FlowTable {
    map: HashMap<FlowKey, FlowRecord>,
    capacity: usize,
    pub created: u64,
    pub evicted: [u64; 4],
}

impl FlowTable {
    pub fn new(capacity: usize) -> Self {
        Self { map: HashMap::with_capacity(capacity.min(1 << 16)), capacity: capacity.max(16), created: 0, evicted: [0; 4] }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Flows the table holds before it grows (its slots are allocated up front).
    pub fn slots(&self) -> usize {
        self.map.capacity()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get_mut(&mut self, k: &FlowKey) -> Option<&mut FlowRecord> {
        self.map.get_mut(k)
    }

    pub fn get(&self, k: &FlowKey) -> Option<&FlowRecord> {
        self.map.get(k)
    }

    pub fn remove(&mut self, k: &FlowKey) -> Option<FlowRecord> {
        self.map.remove(k)
    }

    /// The flow for `k`, created if new (evicting first when full).
    pub fn get_or_insert(&mut self, k: FlowKey, now_ns: u64, epoch: u8) -> (&mut FlowRecord, bool) {
        let mut created = false;
        if !self.map.contains_key(&k) {
            if self.map.len() >= self.capacity {
                self.evict_some(now_ns);
            }
            self.map.insert(k, FlowRecord::new(now_ns, epoch));
            self.created += 1;
            created = true;
        }
        (self.map.get_mut(&k).expect("just inserted"), created)
    }

    /// Frees about 1/32 of the table: closed flows first, then half-open, then the idlest.
    fn evict_some(&mut self, now_ns: u64) {
        let want = (self.capacity / 32).max(1);
        let mut closed = Vec::new();
        let mut half_open = Vec::new();
        let mut idle: Vec<(u64, FlowKey)> = Vec::new();
        for (k, f) in &self.map {
            if f.state.is_closed() {
                if closed.len() < want {
                    closed.push(*k);
                }
            } else if f.state.is_half_open() {
                if half_open.len() < want {
                    half_open.push(*k);
                }
            } else {
                idle.push((now_ns.saturating_sub(f.last_ns()), *k));
            }
        }
        let mut left = want;
        for (list, reason) in [(closed, EvictReason::Closed), (half_open, EvictReason::HalfOpen)] {
            for k in list.into_iter().take(left) {
                self.map.remove(&k);
                self.evicted[reason as usize] += 1;
                left -= 1;
            }
        }
        if left > 0 {
            let n = left.min(idle.len());
            if n > 0 {
                idle.select_nth_unstable_by(n - 1, |a, b| b.0.cmp(&a.0));
                for (_, k) in idle.into_iter().take(n) {
                    self.map.remove(&k);
                    self.evicted[EvictReason::Idle as usize] += 1;
                }
            }
        }
    }

    /// Removes flows idle for longer than `idle_ns` (closed flows after `closed_ns`) and
    /// returns them for final inspection.
    pub fn expire(&mut self, now_ns: u64, idle_ns: u64, closed_ns: u64) -> Vec<(FlowKey, FlowRecord)> {
        let mut out = Vec::new();
        self.map.retain(|k, f| {
            let idle = now_ns.saturating_sub(f.last_ns());
            let limit = if f.state.is_closed() { closed_ns } else { idle_ns };
            if idle > limit {
                out.push((*k, *f));
                false
            } else {
                true
            }
        });
        self.evicted[EvictReason::Expired as usize] += out.len() as u64;
        out
    }

    pub fn iter(&self) -> impl Iterator<Item = (&FlowKey, &FlowRecord)> {
        self.map.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft::TcpSegment;
    use crate::packet::decode;

    fn pkt(src: &str, sport: u16, dst: &str, dport: u16) -> TcpPacket {
        let f = TcpSegment::new(src.parse().unwrap(), sport, dst.parse().unwrap(), dport).frame();
        decode(&f, f.len() as u32, 0, 0).unwrap()
    }

    #[test]
    fn both_directions_share_a_key() {
        let (a, sa) = FlowKey::of(&pkt("10.0.0.2", 80, "10.0.0.1", 5000));
        let (b, sb) = FlowKey::of(&pkt("10.0.0.1", 5000, "10.0.0.2", 80));
        assert_eq!(a, b);
        assert_ne!(sa, sb);
        assert_eq!(a.endpoint(sb).0, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(a.shard_hash(), b.shard_hash());
    }

    #[test]
    fn eviction_prefers_closed_then_half_open_then_idle() {
        let mut t = FlowTable::new(32); // frees capacity/32 = 1 flow per pass
        for i in 0..32u16 {
            let (k, _) = FlowKey::of(&pkt("10.0.0.1", 1000 + i, "10.0.0.2", 80));
            let (f, _) = t.get_or_insert(k, i as u64 * 1_000_000, 0);
            f.state = match i {
                0 => ConnState::Closed,
                1 => ConnState::SynSent,
                _ => ConnState::Established,
            };
        }
        let (k, _) = FlowKey::of(&pkt("10.0.0.1", 9999, "10.0.0.2", 80));
        t.get_or_insert(k, 100_000_000, 0);
        assert_eq!(t.evicted[EvictReason::Closed as usize], 1);
        assert_eq!(t.len(), 32);
        // next pressure: the half-open one goes
        let (k, _) = FlowKey::of(&pkt("10.0.0.1", 9998, "10.0.0.2", 80));
        t.get_or_insert(k, 100_000_000, 0);
        assert_eq!(t.evicted[EvictReason::HalfOpen as usize], 1);
        // then the idlest established flow (port 1002, last seen at t=2 ms)
        let (k, _) = FlowKey::of(&pkt("10.0.0.1", 9997, "10.0.0.2", 80));
        t.get_or_insert(k, 100_000_000, 0);
        assert_eq!(t.evicted[EvictReason::Idle as usize], 1);
        let (gone, _) = FlowKey::of(&pkt("10.0.0.1", 1002, "10.0.0.2", 80));
        assert!(t.get(&gone).is_none());
    }
}
