//! Per-flow state, owned by one worker: a canonical bidirectional key stored inside a 128-byte
//! record for both directions (asserted), the table that holds the records (`table`), the
//! timer wheel for their deadlines (`timers`), MAC addresses as small per-table ids (`macs`)
//! and the bounded pool of side state that detectors take while they are armed (`side`).
use std::net::IpAddr;

use crate::seq::SeqNumber;
use crate::tcp::ConnState;

pub mod community_id;
pub mod macs;
pub mod side;
pub mod table;
pub mod timers;

pub use community_id::community_id;
pub use macs::{MacId, MacTable};
pub use table::{EvictReason, FlowTable};

/// Vantages a flow key can name (7 bits of [`FlowKey::meta`]).
pub const MAX_VANTAGES: usize = 128;
/// Where a flow's SYN and SYN-ACK counts stop (4 bits each in the record).
pub const SYN_COUNT_MAX: u8 = 15;

/// Both endpoints in a fixed order (lower address/port first), the VLAN and the vantage: the
/// same key for both directions of a flow as one sensor sees it. Each vantage keeps its own
/// view (MACs and TTLs differ per interface); the cross-vantage matcher compares them.
///
/// Packed to 39 bytes so it fits inside the 128-byte [`FlowRecord`] beside both directions'
/// state. Fields are read by value (`key.lo_port`), never borrowed, except the byte arrays.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// IPv4 addresses are stored IPv4-mapped.
    pub lo: [u8; 16],
    pub hi: [u8; 16],
    pub lo_port: u16,
    pub hi_port: u16,
    pub vlan: u16,
    /// Bit 7: IPv6. Bits 0–6: the sensor (interface or file) this view belongs to.
    meta: u8,
}
const _: () = assert!(size_of::<FlowKey>() == 39);

const META_V6: u8 = 0x80;

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
    /// The key of a packet from `s:sport` to `d:dport` (addresses as 16 bytes, IPv4-mapped)
    /// and the packet's side.
    #[inline]
    pub fn from_endpoints(
        s: [u8; 16],
        sport: u16,
        d: [u8; 16],
        dport: u16,
        vlan: u16,
        v6: bool,
        vantage: u16,
    ) -> (FlowKey, usize) {
        let meta = if v6 { META_V6 } else { 0 } | (vantage.min(MAX_VANTAGES as u16 - 1) as u8);
        // Byte-wise order of the addresses is the order of their big-endian values.
        if (u128::from_be_bytes(s), sport) <= (u128::from_be_bytes(d), dport) {
            (FlowKey { lo: s, hi: d, lo_port: sport, hi_port: dport, vlan, meta }, 0)
        } else {
            (FlowKey { lo: d, hi: s, lo_port: dport, hi_port: sport, vlan, meta }, 1)
        }
    }

    /// [`from_endpoints`](Self::from_endpoints) for addresses as `IpAddr`.
    pub fn from_addrs(
        src: IpAddr,
        sport: u16,
        dst: IpAddr,
        dport: u16,
        vlan: u16,
        vantage: u16,
    ) -> (FlowKey, usize) {
        Self::from_endpoints(addr16(src), sport, addr16(dst), dport, vlan, src.is_ipv6(), vantage)
    }

    /// The 16-byte address of `side`.
    #[inline]
    pub fn addr_bytes(&self, side: usize) -> [u8; 16] {
        if side == 0 {
            self.lo
        } else {
            self.hi
        }
    }

    /// 4 or 6.
    pub fn family(&self) -> u8 {
        if self.meta & META_V6 != 0 {
            6
        } else {
            4
        }
    }

    /// The sensor this view belongs to.
    pub fn vantage(&self) -> u16 {
        (self.meta & !META_V6) as u16
    }

    /// The same flow as seen by another vantage.
    pub fn at_vantage(mut self, v: u16) -> Self {
        self.meta = (self.meta & META_V6) | (v.min(MAX_VANTAGES as u16 - 1) as u8);
        self
    }

    /// Address and port of `side` (0 = lo, 1 = hi).
    pub fn endpoint(&self, side: usize) -> (IpAddr, u16) {
        if side == 0 {
            (addr_from16(self.lo, self.family()), self.lo_port)
        } else {
            (addr_from16(self.hi, self.family()), self.hi_port)
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

    /// The key as five little-endian words (the table's hash input).
    #[inline]
    pub(crate) fn words(&self) -> [u64; 5] {
        let w =
            |b: &[u8; 16], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let (lo, hi) = (self.lo, self.hi);
        let tail = self.lo_port as u64
            | (self.hi_port as u64) << 16
            | (self.vlan as u64) << 32
            | (self.meta as u64) << 48;
        [w(&lo, 0), w(&lo, 8), w(&hi, 0), w(&hi, 8), tail]
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
    /// Sent an ACK at least once (its last ACK is meaningful; a Fast Open SYN's data is not).
    pub const DATA_OR_ACK: u8 = 1 << 6;
    /// Next-hop MAC changed and changed back at least once (alternating paths).
    pub const SPLIT_REPORTED: u8 = 1 << 7;
}

/// What one direction (one sender) of a flow looks like to the tracker. Times are µs since
/// the flow's first packet. Small counters saturate where the detectors only compare them
/// with small thresholds.
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
    pub ip_id: u16,
    /// Source MAC id (12 bits) | next-hop MAC id (12 bits) | TTL (8 bits).
    macs_ttl: u32,
    pub flags: u8,
    /// Window scale (4 bits) | IP-ID model (2 bits).
    wscale_model: u8,
    /// Consecutive duplicate ACKs sent by this side and its last segment's keep-alive bit
    /// (`anomaly::loss::ack_run`).
    pub dup_acks: u8,
    /// Packets seen (4 bits, saturating at 15: enough to know a model was learned) | next-hop
    /// MAC switches (4 bits, saturating).
    counts: u8,
}
const _: () = assert!(size_of::<DirState>() == 36);

impl DirState {
    #[inline]
    pub fn src_mac(&self) -> MacId {
        MacId((self.macs_ttl & 0xfff) as u16)
    }
    #[inline]
    pub fn dst_mac(&self) -> MacId {
        MacId((self.macs_ttl >> 12 & 0xfff) as u16)
    }
    #[inline]
    pub fn ttl(&self) -> u8 {
        (self.macs_ttl >> 24) as u8
    }
    #[inline]
    pub fn set_src_mac(&mut self, m: MacId) {
        self.macs_ttl = (self.macs_ttl & !0xfff) | (m.0 as u32 & 0xfff);
    }
    #[inline]
    pub fn set_dst_mac(&mut self, m: MacId) {
        self.macs_ttl = (self.macs_ttl & !(0xfff << 12)) | ((m.0 as u32 & 0xfff) << 12);
    }
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.macs_ttl = (self.macs_ttl & 0x00ff_ffff) | (ttl as u32) << 24;
    }
    #[inline]
    pub fn wscale(&self) -> u8 {
        self.wscale_model & 0x0f
    }
    #[inline]
    pub fn set_wscale(&mut self, w: u8) {
        self.wscale_model = (self.wscale_model & 0xf0) | w.min(14);
    }
    #[inline]
    pub fn ip_id_model(&self) -> IpIdModel {
        match self.wscale_model >> 4 & 3 {
            1 => IpIdModel::Counter,
            2 => IpIdModel::Zero,
            3 => IpIdModel::Random,
            _ => IpIdModel::Unknown,
        }
    }
    #[inline]
    pub fn set_ip_id_model(&mut self, m: IpIdModel) {
        self.wscale_model = (self.wscale_model & 0x0f) | (m as u8) << 4;
    }
    /// Packets seen, saturating at 15.
    #[inline]
    pub fn packets(&self) -> u8 {
        self.counts & 0x0f
    }
    #[inline]
    pub fn count_packet(&mut self) {
        if self.counts & 0x0f < 0x0f {
            self.counts += 1;
        }
    }
    /// Next-hop MAC switches seen, saturating at 15.
    #[inline]
    pub fn mac_switches(&self) -> u8 {
        self.counts >> 4
    }
    #[inline]
    pub fn count_mac_switch(&mut self) {
        if self.counts >> 4 < 0x0f {
            self.counts += 0x10;
        }
    }
}

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
    /// The flow holds an entry of the side-state pool (see `flow::side`).
    pub const HAS_SIDE: u16 = 1 << 6;
    pub const STORM_REPORTED: u16 = 1 << 7;
    /// Detections on this flow are waiting for their "after" evidence.
    pub const EVIDENCE_PENDING: u16 = 1 << 8;
    /// The SYN-ACK was seen.
    pub const SYNACK_SEEN: u16 = 1 << 9;
    /// After our own capture loss: side lo / side hi was seen again (see the engine).
    pub const GAP_SEEN_LO: u16 = 1 << 10;
    pub const GAP_SEEN_HI: u16 = 1 << 11;
    /// The generation of the flow's newest expiry timer (older ones are stale).
    pub const EXPIRY_GEN: u16 = 1 << 12;
    /// A SYN without ACK opened the current connection: `CLIENT_IS_HI` names its sender.
    pub const SYN_SEEN: u16 = 1 << 13;
    /// lost_between_sensors was reported for this flow (later losses are counted only).
    pub const LOST_BETWEEN_REPORTED: u16 = 1 << 14;
    /// The flow is in the closed-flow eviction queue.
    pub const QUEUED_CLOSED: u16 = 1 << 15;
}

/// How an event's originator-oriented fields were oriented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Orientation {
    /// The originator's SYN was seen.
    Syn,
    /// Only the SYN-ACK was seen; its receiver is the originator.
    SynAck,
    /// No handshake was seen: the endpoint with the lower port is taken for the server.
    Guessed,
}

impl Orientation {
    pub const fn name(self) -> &'static str {
        match self {
            Orientation::Syn => "syn",
            Orientation::SynAck => "syn_ack",
            Orientation::Guessed => "guessed",
        }
    }
}

/// One flow, both directions, with its key: a sensor tracks millions, so this is kept at
/// 128 bytes (two cache lines, asserted).
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
pub struct FlowRecord {
    pub key: FlowKey,
    /// Loss epoch of the worker this flow last synchronised with (gap state when behind).
    pub epoch: u8,
    /// When the flow began: ms since the table's time base (see [`FlowTable::first_ns`]).
    pub(crate) first_ms: u32,
    pub dirs: [DirState; 2],
    /// Newest entry of this flow in the evidence history (u32::MAX: none).
    pub last_hist: u32,
    /// Handshake RTT in µs (20 bits, saturating; 0: not measured) | the next-hop MAC id the
    /// client's SYN went to (12 bits).
    handshake: u32,
    pub flags: u16,
    pub state: ConnState,
    /// SYNs (4 bits) | SYN-ACKs (4 bits) seen with the current ISN, saturating at 15.
    syn_counts: u8,
}
const _: () = assert!(size_of::<FlowRecord>() == 128, "a flow record must stay within 128 bytes");

/// The largest handshake RTT a record holds (20 bits of µs, ~1.05 s); longer ones saturate.
pub const RTT_MAX_US: u32 = (1 << 20) - 1;

impl FlowRecord {
    pub(crate) fn new(key: FlowKey, first_ms: u32, epoch: u8) -> Self {
        Self {
            key,
            epoch,
            first_ms,
            dirs: [DirState::default(); 2],
            last_hist: u32::MAX,
            handshake: 0,
            flags: 0,
            state: ConnState::Unknown,
            syn_counts: 0,
        }
    }

    /// Which side (0/1) is the client, when a SYN told us.
    pub fn client_side(&self) -> Option<usize> {
        if self.flags & conn_flags::MIDSTREAM != 0
            && self.dirs[0].flags & dir_flags::SYN == 0
            && self.dirs[1].flags & dir_flags::SYN == 0
        {
            return None;
        }
        Some((self.flags & conn_flags::CLIENT_IS_HI != 0) as usize)
    }

    /// The side that opened the connection (the originator, "client"), and how it is known.
    pub fn originator(&self) -> (usize, Orientation) {
        if self.flags & conn_flags::SYN_SEEN != 0 {
            return ((self.flags & conn_flags::CLIENT_IS_HI != 0) as usize, Orientation::Syn);
        }
        let synack_from = |s: usize| self.dirs[s].flags & dir_flags::SYN != 0;
        if self.flags & conn_flags::SYNACK_SEEN != 0 && synack_from(0) != synack_from(1) {
            // Only the SYN-ACK was seen: its receiver sent the SYN.
            return (synack_from(0) as usize, Orientation::SynAck);
        }
        // No handshake seen: the lower port is taken for the server's (well-known and
        // registered ports sit below the ephemeral range); equal ports: side lo opened it.
        let (lo_port, hi_port) = (self.key.lo_port, self.key.hi_port);
        ((lo_port < hi_port) as usize, Orientation::Guessed)
    }

    /// The newest packet of either side, in µs since the flow's first packet.
    pub fn last_us(&self) -> u32 {
        self.dirs[0].last_us.max(self.dirs[1].last_us)
    }

    /// The handshake RTT in ns, when it was measured.
    pub fn rtt_ns(&self) -> Option<u64> {
        let us = self.handshake & RTT_MAX_US;
        (us != 0).then_some(us as u64 * 1000)
    }
    pub fn set_rtt_ns(&mut self, ns: Option<u64>) {
        let us = ns.map_or(0, |n| (n / 1000).clamp(1, RTT_MAX_US as u64) as u32);
        self.handshake = (self.handshake & !RTT_MAX_US) | us;
    }
    /// The next hop the client's SYN went to (MacId(0): unknown).
    pub fn syn_dst_mac(&self) -> MacId {
        MacId((self.handshake >> 20) as u16)
    }
    pub fn set_syn_dst_mac(&mut self, m: MacId) {
        self.handshake = (self.handshake & RTT_MAX_US) | (m.0 as u32 & 0xfff) << 20;
    }
    pub fn syns(&self) -> u8 {
        self.syn_counts & 0x0f
    }
    pub fn synacks(&self) -> u8 {
        self.syn_counts >> 4
    }
    pub fn set_syns(&mut self, n: u8) {
        self.syn_counts = (self.syn_counts & 0xf0) | n.min(SYN_COUNT_MAX);
    }
    pub fn set_synacks(&mut self, n: u8) {
        self.syn_counts = (self.syn_counts & 0x0f) | n.min(SYN_COUNT_MAX) << 4;
    }
}

#[cfg(test)]
mod tests {
    use wirewatch_testkit::craft::TcpSegment;

    use super::*;
    use crate::packet::{decode, TcpPacket};

    fn pkt(src: &str, sport: u16, dst: &str, dport: u16) -> TcpPacket {
        let f = TcpSegment::new(src.parse().unwrap(), sport, dst.parse().unwrap(), dport).frame();
        decode(&f, f.len() as u32, 0, 0).unwrap()
    }

    #[test]
    fn both_directions_share_a_key() {
        let (a, sa) = pkt("10.0.0.2", 80, "10.0.0.1", 5000).flow();
        let (b, sb) = pkt("10.0.0.1", 5000, "10.0.0.2", 80).flow();
        assert_eq!(a, b);
        assert_ne!(sa, sb);
        assert_eq!(a.endpoint(sb).0, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(a.shard_hash(), b.shard_hash());
        assert_eq!((a.family(), a.vantage()), (4, 0));
        let (c, _) = pkt("fd00::2", 80, "fd00::1", 5000).flow();
        assert_eq!(c.family(), 6);
        assert_eq!(c.at_vantage(9).vantage(), 9);
        assert_eq!(c.at_vantage(9).family(), 6);
    }

    #[test]
    fn packed_fields_round_trip() {
        let mut d = DirState::default();
        d.set_src_mac(MacId(4095));
        d.set_dst_mac(MacId(17));
        d.set_ttl(255);
        d.set_wscale(14);
        d.set_ip_id_model(IpIdModel::Random);
        for _ in 0..20 {
            d.count_packet();
            d.count_mac_switch();
        }
        assert_eq!(
            (d.src_mac(), d.dst_mac(), d.ttl(), d.wscale()),
            (MacId(4095), MacId(17), 255, 14)
        );
        assert_eq!((d.ip_id_model(), d.packets(), d.mac_switches()), (IpIdModel::Random, 15, 15));
        let (k, _) = pkt("10.0.0.1", 1, "10.0.0.2", 2).flow();
        let mut r = FlowRecord::new(k, 0, 0);
        r.set_rtt_ns(Some(12_345_678));
        r.set_syn_dst_mac(MacId(4095));
        assert_eq!((r.rtt_ns(), r.syn_dst_mac()), (Some(12_345_000), MacId(4095)));
        r.set_rtt_ns(Some(5_000_000_000));
        assert_eq!(r.rtt_ns(), Some(RTT_MAX_US as u64 * 1000));
        r.set_syns(200);
        r.set_synacks(2);
        assert_eq!((r.syns(), r.synacks()), (15, 2));
    }
}
