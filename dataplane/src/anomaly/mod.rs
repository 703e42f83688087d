//! The detection catalog (../shared/DETECTIONS.md): the kinds, the event every detection
//! produces, and the detectors, one module per family.
use std::net::IpAddr;

use serde::Serialize;

use crate::engine::EngineConfig;
use crate::flow::side::{SidePool, SideState};
use crate::flow::table::FlowRef as TableRef;
use crate::flow::{conn_flags, FlowKey, FlowRecord, IpIdModel, MacId, MacTable};
use crate::packet::TcpPacket;
use crate::seq::SeqNumber;

pub mod health;
pub mod loss;
pub mod paths;
pub mod resets;
pub mod setup;

macro_rules! kinds {
    ($($variant:ident => $name:literal, $health:literal;)*) => {
        /// A stable snake_case anomaly kind: the `kind` label, the event field, the evidence comment.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Kind { $($variant),* }
        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$variant),*];
            pub const fn name(self) -> &'static str { match self { $(Kind::$variant => $name),* } }
            /// Sensor health: counted, never reported as a network fault.
            pub const fn is_sensor_health(self) -> bool { match self { $(Kind::$variant => $health),* } }
            pub fn from_name(s: &str) -> Option<Kind> { Self::ALL.iter().copied().find(|k| k.name() == s) }
        }
    };
}

kinds! {
    SynUnanswered => "syn_unanswered", false;
    SynRejected => "syn_rejected", false;
    SynackUnacked => "synack_unacked", false;
    TupleReuse => "tuple_reuse", false;
    RstForeignSender => "rst_foreign_sender", false;
    RstAfterStaleSegment => "rst_after_stale_segment", false;
    MidstreamRst => "midstream_rst", false;
    RequestAfterFin => "request_after_fin", false;
    DataAfterRst => "data_after_rst", false;
    SplitPath => "split_path", false;
    LostBetweenSensors => "lost_between_sensors", false;
    OneSided => "one_sided", true;
    Retransmission => "retransmission", false;
    RetransmissionStorm => "retransmission_storm", false;
    OutOfOrder => "out_of_order", false;
    DupAck => "dup_ack", false;
    AckUnseenSegment => "ack_unseen_segment", false;
    AckOutOfWindow => "ack_out_of_window", false;
    ZeroWindow => "zero_window", false;
    MirrorDuplicate => "mirror_duplicate", true;
    CaptureGap => "capture_gap", true;
}

pub const KIND_COUNT: usize = Kind::ALL.len();

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// How one sender looks: what `rst_foreign_sender` and `tuple_reuse` compare.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Fingerprint {
    /// e.g. "expected (the server so far)", "this RST".
    pub role: String,
    pub addr: IpAddr,
    pub port: u16,
    pub mac: String,
    pub ttl: u8,
    pub ip_id: u16,
    pub ip_id_model: &'static str,
    pub timestamp_option: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts_val: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isn: Option<u32>,
}

pub fn mac_str(m: &[u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

pub fn model_name(m: IpIdModel) -> &'static str {
    match m {
        IpIdModel::Unknown => "unknown",
        IpIdModel::Counter => "counter",
        IpIdModel::Zero => "zero",
        IpIdModel::Random => "random",
    }
}

impl Fingerprint {
    pub fn of_packet(role: &str, p: &TcpPacket) -> Self {
        Fingerprint {
            role: role.into(),
            addr: p.src,
            port: p.sport,
            mac: mac_str(&p.src_mac),
            ttl: p.ttl,
            ip_id: p.ip_id,
            ip_id_model: "-",
            timestamp_option: p.opts.timestamp.is_some(),
            ts_val: p.opts.timestamp.map(|t| t.0),
            isn: None,
        }
    }

    /// The model learned for `side` of a flow.
    pub fn of_side(
        role: &str,
        key: &FlowKey,
        f: &FlowRecord,
        side: usize,
        macs: &MacTable,
    ) -> Self {
        let d = &f.dirs[side];
        let (addr, port) = key.endpoint(side);
        Fingerprint {
            role: role.into(),
            addr,
            port,
            mac: mac_str(&macs.get(d.src_mac())),
            ttl: d.ttl(),
            ip_id: d.ip_id,
            ip_id_model: model_name(d.ip_id_model()),
            timestamp_option: d.flags & crate::flow::dir_flags::TS_OK != 0,
            ts_val: (d.ts_val != 0).then_some(d.ts_val),
            isn: (d.flags & crate::flow::dir_flags::SYN != 0).then_some(d.isn.0),
        }
    }
}

/// The flow as an event names it, oriented along the triggering packet.
#[derive(Clone, Debug, Serialize)]
pub struct FlowRef {
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    pub vlan: u16,
    /// client_to_server, server_to_client, or unknown (no handshake seen).
    pub direction: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct EvidenceRef {
    pub path: String,
    /// 1-based packet numbers of the commented packets inside the file.
    pub packets: Vec<u32>,
}

/// The version of the event schema (docs/events.schema.json): raised when a field is removed
/// or changes meaning; new fields do not change it.
pub const SCHEMA_VERSION: u32 = 1;

/// One detection, as written to the events stream (docs/events.md, docs/events.schema.json).
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub schema_version: u32,
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_kind: Option<&'static str>,
    pub time_first: String,
    pub time_last: String,
    pub time_first_ns: u64,
    pub time_last_ns: u64,
    /// The sensor's host name.
    pub host: String,
    /// The same number in every event of one connection as one vantage saw it, below 2^53 so
    /// that every JSON reader keeps it exact.
    pub flow_id: u64,
    /// Community ID v1 of the flow (the same at every vantage and in Zeek, Suricata, tshark).
    pub community_id: String,
    /// The connection's originator (the SYN's sender) and its responder; see `orientation`.
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub dest_ip: IpAddr,
    pub dest_port: u16,
    /// Always "tcp".
    pub proto: &'static str,
    /// How src/dest were told apart: "syn", "syn_ack" (only the SYN-ACK was seen) or
    /// "guessed" (no handshake seen: the lower port is taken for the server's).
    pub orientation: &'static str,
    /// The triggering packet went "to_server" (sent by src) or "to_client" (sent by dest).
    pub packet_direction: &'static str,
    /// The triggering packet's endpoints (the fields above the flat ones predate them).
    pub flow: FlowRef,
    /// The sensor (interface or file) that saw the triggering packet.
    pub vantage: String,
    pub count: u64,
    pub fingerprints: Vec<Fingerprint>,
    pub explanation: String,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<EvidenceRef>,
}

/// What a detector reports; the engine turns it into an [`Event`].
#[derive(Debug)]
pub struct Detection {
    pub kind: Kind,
    pub sub_kind: Option<&'static str>,
    pub explanation: String,
    pub fingerprints: Vec<Fingerprint>,
    pub details: serde_json::Map<String, serde_json::Value>,
    /// When the pattern began (e.g. the first SYN), if earlier than the triggering packet.
    pub first_ns: Option<u64>,
    pub count: u64,
}

impl Detection {
    pub fn new(kind: Kind, explanation: String) -> Self {
        Self {
            kind,
            sub_kind: None,
            explanation,
            fingerprints: Vec::new(),
            details: Default::default(),
            first_ns: None,
            count: 1,
        }
    }
    pub fn detail(mut self, k: &str, v: impl Into<serde_json::Value>) -> Self {
        self.details.insert(k.into(), v.into());
        self
    }
    pub fn fingerprint(mut self, f: Fingerprint) -> Self {
        self.fingerprints.push(f);
        self
    }
}

/// A RST the flow is waiting for: the answer that completes a pattern.
#[derive(Clone, Debug)]
pub struct PairWait {
    pub kind: Kind,
    pub since_ns: u64,
    /// The side expected to send the RST.
    pub from_side: usize,
    /// The SEQ that RST should carry (the trigger's ACK).
    pub rst_seq: u32,
    pub trigger: TriggerInfo,
}

#[derive(Clone, Debug)]
pub struct TriggerInfo {
    pub seq: u32,
    pub ack: u32,
    pub len: u32,
    pub hist_id: u32,
    /// Idle time before the trigger (request_after_fin).
    pub idle_ns: u64,
    pub why: TriggerWhy,
}

/// What made a segment a trigger, kept as numbers (formatted only if a RST pairs with it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TriggerWhy {
    #[default]
    Plain,
    /// The client's data went to another next hop than its SYN (midstream_rst).
    SplitHop,
    /// SEQ `seq` lies `rel` bytes from the receiver's acknowledged point `ack` (window `win`).
    Stale { seq: u32, rel: i64, ack: u32, win: u32 },
}

impl std::fmt::Display for TriggerWhy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TriggerWhy::Plain => Ok(()),
            TriggerWhy::SplitHop => f.write_str("next hop differs from the handshake's"),
            TriggerWhy::Stale { seq, rel, ack, win } => {
                write!(f, "SEQ {seq} is {rel} bytes from the receiver's acknowledged point {ack} (window {win})")
            }
        }
    }
}

/// What detectors keep beyond the 128-byte record while they are armed, in the engine's
/// bounded [`SidePool`]. Every field is `None`/zero when nothing is armed.
#[derive(Clone, Debug, Default)]
pub struct FlowExtra {
    pub rst_ns: Option<u64>,
    pub rst_side: u8,
    pub data_after_rst: u32,
    pub wait: Option<PairWait>,
    /// Open zero-window episode per advertising side: (start, probes).
    pub zero_window: [Option<(u64, u32)>; 2],
    /// The most recent SYN (the handshake RTT runs from it).
    pub syn_ns: Option<u64>,
    pub syn_first_ns: Option<u64>,
    pub synack_first_ns: Option<u64>,
    /// The segment each side is retransmitting, and how many times (retransmission_storm),
    /// until its peer acknowledges it.
    pub retx: [Option<(u32, u32)>; 2],
    /// After a segment of `side` skipped a capture gap: that side's next_seq before the gap,
    /// the highest SEQ its peer may ACK without acking unseen bytes (Wireshark's
    /// maxseqtobeacked).
    pub lost_mark: Option<(SeqNumber, u8)>,
}

impl FlowExtra {
    /// Drops the handshake timing (the handshake is over).
    pub fn end_handshake(&mut self) {
        self.syn_ns = None;
        self.syn_first_ns = None;
        self.synack_first_ns = None;
    }
    fn handshake_only(&self) -> bool {
        self.rst_ns.is_none()
            && self.wait.is_none()
            && self.zero_window.iter().all(Option::is_none)
            && self.retx.iter().all(Option::is_none)
            && self.lost_mark.is_none()
            && self.data_after_rst == 0
    }
}

impl SideState for FlowExtra {
    fn is_idle(&self) -> bool {
        self.handshake_only()
            && self.syn_ns.is_none()
            && self.syn_first_ns.is_none()
            && self.synack_first_ns.is_none()
    }
    fn is_reclaimable(&self) -> bool {
        self.handshake_only()
    }
}

/// Everything a detector may look at or change for one packet.
pub struct Ctx<'a> {
    pub pkt: &'a TcpPacket,
    pub key: FlowKey,
    /// The flow's place in the table (its side state is found by it).
    pub flow_ref: TableRef,
    /// When the flow began (the origin of its µs times).
    pub first_ns: u64,
    /// The sender's side (0 = lo, 1 = hi).
    pub side: usize,
    pub flow: &'a mut FlowRecord,
    /// The sender's state as it was before this packet.
    pub before: crate::flow::DirState,
    pub side_state: &'a mut SidePool<FlowExtra>,
    pub macs: &'a MacTable,
    /// The packet's source and destination MACs as ids of `macs`.
    pub src_mac: MacId,
    pub dst_mac: MacId,
    pub cfg: &'a EngineConfig,
    pub now_us: u32,
    /// Our own capture lost packets and this flow has not resynchronised: no inferences.
    pub in_gap: bool,
    pub hist_id: u32,
    pub found: &'a mut Vec<Detection>,
    pub counters: &'a mut [u64; KIND_COUNT],
    /// Handshake RTTs measured (ns), for the control plane's histogram.
    pub rtt_samples: &'a mut Vec<u64>,
}

impl Ctx<'_> {
    #[inline]
    pub fn other(&self) -> usize {
        1 - self.side
    }
    /// The flow's side state, taken from the pool if it has none (None: the pool is full;
    /// the detector goes without, and the pool counts it).
    pub fn extra(&mut self) -> Option<&mut FlowExtra> {
        match self.side_state.take(self.flow_ref) {
            Ok((x, _victim)) => {
                // A victim keeps its HAS_SIDE hint; its next look-up finds nothing and the
                // engine clears it.
                self.flow.flags |= conn_flags::HAS_SIDE;
                Some(x)
            }
            Err(crate::flow::side::PoolFull) => None,
        }
    }
    /// The flow's side state, if it holds some.
    pub fn extra_ref(&self) -> Option<&FlowExtra> {
        if self.flow.flags & conn_flags::HAS_SIDE == 0 {
            return None;
        }
        self.side_state.get(self.flow_ref.slot)
    }
    /// The flow's side state, if it holds some (nothing is taken from the pool).
    pub fn extra_mut(&mut self) -> Option<&mut FlowExtra> {
        if self.flow.flags & conn_flags::HAS_SIDE == 0 {
            return None;
        }
        self.side_state.get_mut(self.flow_ref.slot)
    }
    /// The highest SEQ of `side` its peer can acknowledge without acking bytes we never saw.
    pub fn ackable(&self, side: usize) -> SeqNumber {
        match self.extra_ref().and_then(|x| x.lost_mark) {
            Some((mark, s)) if s as usize == side => mark,
            _ => self.flow.dirs[side].next_seq,
        }
    }
    /// Everything `side` was seen sending is ackable again.
    pub fn clear_lost_mark(&mut self, side: usize) {
        if let Some(x) = self.extra_mut() {
            if x.lost_mark.is_some_and(|(_, s)| s as usize == side) {
                x.lost_mark = None;
            }
        }
    }
    pub fn count(&mut self, k: Kind) {
        self.counters[k as usize] += 1;
    }
    /// "10.0.0.1:80" for `side`.
    pub fn endpoint(&self, side: usize) -> String {
        let (a, p) = self.key.endpoint(side);
        match a {
            IpAddr::V6(_) => format!("[{a}]:{p}"),
            IpAddr::V4(_) => format!("{a}:{p}"),
        }
    }
    /// The RST pairing window: min(RTT/2, cap), at least the floor (local processing time).
    pub fn pairing_window_ns(&self) -> u64 {
        let half_rtt = self.flow.rtt_ns().map_or(u64::MAX, |r| r / 2);
        half_rtt.min(self.cfg.pairing_window_max_ns).max(self.cfg.pairing_window_floor_ns)
    }
    pub fn role(&self, side: usize) -> &'static str {
        match self.flow.client_side() {
            Some(c) if c == side => "client",
            Some(_) => "server",
            None => "peer",
        }
    }
}

/// RFC 3339 UTC with nanoseconds.
pub fn rfc3339(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let nanos = ns % 1_000_000_000;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod vocab_tests {
    #[test]
    fn rfc3339_formats() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(super::rfc3339(1_700_000_000_123_456_789), "2023-11-14T22:13:20.123456789Z");
    }

    #[test]
    fn names_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for k in super::Kind::ALL {
            assert!(seen.insert(k.name()));
            assert!(k.name().chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            assert_eq!(super::Kind::from_name(k.name()), Some(*k));
        }
        assert_eq!(seen.len(), 21);
    }
}

#[cfg(test)]
mod tests;
