//! The detection catalog (../shared/DETECTIONS.md): the kinds, the event every detection
//! produces, and the detectors, one module per family.
use std::net::IpAddr;

use serde::Serialize;

use crate::config::EngineConfig;
use crate::flow::side::{SidePool, SideState};
use crate::flow::table::FlowRef as TableRef;
use crate::flow::{conn_flags, FlowKey, FlowRecord, IpIdModel, MacId, MacTable};
use crate::packet::TcpPacket;
use crate::seq::SeqNumber;

pub mod aggregate;
pub mod catalog;
pub mod health;
pub mod loss;
pub mod paths;
pub mod resets;
pub mod setup;

/// The `counted:` column of `kinds!`: (counted at each occurrence, made from other events).
macro_rules! counted {
    (each) => {
        (true, false)
    };
    (event) => {
        (false, false)
    };
    (aggregate) => {
        (false, true)
    };
}

macro_rules! kinds {
    ($($variant:ident => $name:literal, health: $health:literal, counted: $counted:ident,
        rule: $rule:literal, means: $means:literal, next: $next:literal;)*) => {
        /// A stable snake_case anomaly kind: the `kind` label, the event field, the evidence comment.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Kind { $($variant),* }
        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$variant),*];
            pub const fn name(self) -> &'static str { match self { $(Kind::$variant => $name),* } }
            /// Sensor health: counted, never reported as a network fault.
            pub const fn is_sensor_health(self) -> bool { match self { $(Kind::$variant => $health),* } }
            /// Counted at each occurrence, where the detector or the engine sees it (`counted:
            /// each`), rather than once when its event is made (`counted: event`): a kind whose
            /// events are deduplicated or summarised keeps an honest count.
            pub const fn counted_at_each(self) -> bool { match self { $(Kind::$variant => counted!($counted).0),* } }
            /// Made from other events (one per flood, scan or black-holed service) by the
            /// aggregator after the engines (`counted: aggregate`), which counts them.
            pub const fn is_aggregate(self) -> bool { match self { $(Kind::$variant => counted!($counted).1),* } }
            pub fn from_name(s: &str) -> Option<Kind> { Self::ALL.iter().copied().find(|k| k.name() == s) }
            /// When the kind fires, as an observer on the tap sees it (docs/detections.md).
            pub const fn rule(self) -> &'static str { match self { $(Kind::$variant => $rule),* } }
            /// What it usually means for the network or the sensor.
            pub const fn meaning(self) -> &'static str { match self { $(Kind::$variant => $means),* } }
            /// What an operator checks next to confirm it or find the culprit.
            pub const fn next_checks(self) -> &'static str { match self { $(Kind::$variant => $next),* } }
        }
    };
}

// The catalog, defined once: name, sensor health, where it is counted, and the text of docs/detections.md and
// `wirewatch explain` (the test in tests/catalog.rs keeps both in step with this table and with
// ../shared/DETECTIONS.md).
kinds! {
    SynUnanswered => "syn_unanswered", health: false, counted: event,
        rule: "A SYN (with its retransmissions, same ISN) gets neither a SYN-ACK nor a RST within --handshake-timeout (3 s), or within 1 s (the initial RTO of RFC 6298) of its latest retransmission once there have been two; a flow that leaves the table (evicted, the input ended) inside that second is reported then.",
        means: "The SYN is silently dropped between this sensor and the server: a firewall or security group, a black-holed route, or a server that is down without answering.",
        next: "Is the SYN seen at a sensor nearer the server (run both interfaces; lost_between_sensors names the segment)? Check firewall drop counters and routes for the destination; from a host on the path, `nc -vz DST PORT` or `tcpdump -ni IF host DST and port PORT`.";
    SynRejected => "syn_rejected", health: false, counted: event,
        rule: "A SYN answered by a RST (or RST+ACK) from the destination.",
        means: "Nothing listens on the port, or a host or firewall on the way actively refuses the connection.",
        next: "Does the RST's fingerprint (TTL, MAC) match the server's? A different TTL points at a firewall sending it. On the server: `ss -ltn 'sport = :PORT'`; check REJECT rules in front of it.";
    SynackUnacked => "synack_unacked", health: false, counted: event,
        rule: "The server's SYN-ACK is retransmitted, or the client's ACK does not follow it within --handshake-timeout.",
        means: "The SYN-ACK or the client's ACK is lost on the way back: asymmetric routing through a stateful firewall, or a return path that drops.",
        next: "Watch the client side for the SYN-ACK (a second sensor, or tcpdump on the client). Check reverse-path filtering (`sysctl net.ipv4.conf.all.rp_filter`) and stateful devices that see only one direction.";
    TupleReuse => "tuple_reuse", health: false, counted: event,
        rule: "A SYN with a new ISN on a 4-tuple whose connection is still open (no FIN both ways, no RST), or a second coherent sequence space on a live tuple. The event names both ISNs and both senders' fingerprints.",
        means: "Two connections share one address/port tuple: two clients behind different NATs mapped to one public port, or a port reused while the old connection is still alive at one end.",
        next: "Compare the two fingerprints (MAC, TTL, IP-ID model): different ones mean two hosts. Check the NAT/SNAT devices and port ranges in front of the clients (conntrack -L on them), and TIME_WAIT reuse settings.";
    RstForeignSender => "rst_foreign_sender", health: false, counted: each,
        rule: "A RST (or any packet) whose sender fingerprint breaks its direction's continuity: another source MAC, a TTL more than 1 off, an IP-ID outside the sender's model, or the timestamp option missing or off the sender's clock. The event lists each feature that disagrees.",
        means: "Someone other than the endpoint sent it: a middlebox (load balancer, firewall, IPS) answering on the endpoint's behalf, or another backend that received part of the flow.",
        next: "Find the host whose MAC the RST carries (`ip neigh`, the switch's MAC table) and how many hops its TTL implies. Check load balancers, firewalls and IPS devices on that path for reset or reject actions.";
    RstAfterStaleSegment => "rst_after_stale_segment", health: false, counted: event,
        rule: "A segment whose SEQ or ACK lies outside the receiver's window is followed within the pairing window (min(RTT/2, --pairing-window)) by a RST from the receiver's side whose SEQ equals the stale segment's ACK.",
        means: "A stateful device on the receiver's side (NAT, conntrack) judged the late segment invalid and reset the connection on the endpoint's behalf.",
        next: "On the NAT or conntrack host named by the RST's fingerprint: `sysctl net.netfilter.nf_conntrack_tcp_be_liberal` (1 accepts out-of-window segments), or drop ctstate INVALID instead of letting it reach a REJECT; `conntrack -S` shows the invalid count.";
    MidstreamRst => "midstream_rst", health: false, counted: event,
        rule: "Data on a flow whose handshake this sensor never saw is answered by a RST from the receiver within the pairing window. Flows merely picked up mid-stream do not count.",
        means: "The receiver has no connection for this data: the flow's earlier packets went elsewhere (an ECMP or load-balancer split, a failover).",
        next: "Look for split_path on the same flow, and check ECMP hashing and load-balancer persistence for the destination. Compare which backend answered the handshake with the one that sent the RST (their MACs).";
    RequestAfterFin => "request_after_fin", health: false, counted: event,
        rule: "Data sent by one side after the other side's FIN was seen, answered by a RST. The event carries the idle time before the request.",
        means: "A keep-alive connection was reused just as the peer's idle timeout closed it: the client's pool keeps connections longer than the server does.",
        next: "Compare the idle time with the server's keep-alive timeout and the client pool's idle timeout: the client's must be shorter. Check whether the client retries idempotent requests.";
    DataAfterRst => "data_after_rst", health: false, counted: each,
        rule: "A side keeps sending data (or retransmitting) after a RST was seen in either direction.",
        means: "The connection is dead on one side only: the RST did not reach the sender, or it came from a middlebox and the endpoint never saw it.",
        next: "Find who sent the RST (rst_foreign_sender, rst_after_stale_segment on the same flow). If the RST came from a middlebox, the endpoint will keep retrying until its own timeout: check that device's resets.";
    SplitPath => "split_path", health: false, counted: each,
        rule: "Packets of one direction of one flow arrive with two or more destination MACs (next hops), or two or more TTLs alternating (not a one-time route change).",
        means: "The flow is spread over several paths or backends, which breaks stateful devices and reassembly downstream.",
        next: "Check ECMP and LAG hashing (per-packet or flowlet instead of per-flow?), and the load balancer's persistence. The MACs in the event name the next hops.";
    LostBetweenSensors => "lost_between_sensors", health: false, counted: each,
        rule: "A packet seen at one vantage is not seen within --vantage-window (100 ms, after the estimated clock offset) at another vantage that sees the same flow. Packets are matched by IP-ID, TCP timestamp (TSval), SEQ, ACK, flags and length: a retransmission is another packet.",
        means: "The packet was dropped between the two sensors, for example by the firewall between them.",
        next: "Look at the device between the two vantages named in the event: its drop counters, ACLs, rate limits and connection table. Check each sensor's own capture_gap first: a lossy sensor looks like a lossy path.";
    OneSided => "one_sided", health: true, counted: each,
        rule: "Only one direction of a flow is visible for longer than --handshake-timeout while data flows.",
        means: "Asymmetric routing around the tap, or a span port missing a direction: a sensor-health problem, not a network fault.",
        next: "Check the span or tap configuration (both directions of the port, or both ports of the link) and whether return traffic takes another path past the sensor.";
    Retransmission => "retransmission", health: false, counted: each,
        rule: "A segment whose bytes were already seen (not a span duplicate). Sub-kinds: rto (after a gap of at least the RTO estimate), fast (after three or more duplicate ACKs), spurious (bytes already acknowledged).",
        means: "Loss or delay on the path: counted for every occurrence, a problem when it is frequent.",
        next: "Compare the rate per flow and per path in the metrics (wirewatch_anomalies_total{kind=\"retransmission\"}); many spurious ones point at delay (bufferbloat) rather than loss. Check interface errors and drops on the path (`ip -s link`, `ethtool -S`).";
    RetransmissionStorm => "retransmission_storm", health: false, counted: each,
        rule: "At least --storm-count (5) retransmissions of the same segment before the peer acknowledges it.",
        means: "The path is black-holing data: often an MTU problem (large segments dropped, small ones pass) or a device dropping one flow.",
        next: "Check the segment length in the event against the path MTU: try `ping -M do -s SIZE DST`, and check that ICMP fragmentation-needed is not filtered (PMTUD). Check MSS clamping on tunnels and VPNs.";
    OutOfOrder => "out_of_order", health: false, counted: each,
        rule: "A segment with SEQ below the highest seen but not yet seen, arriving within the reorder threshold (the handshake RTT, else 3 ms).",
        means: "Reordering on the path: parallel links or per-packet load balancing.",
        next: "Look for split_path on the same flows; check LAG/ECMP hashing for per-packet modes. Occasional reordering is harmless; persistent reordering triggers fast retransmits.";
    DupAck => "dup_ack", health: false, counted: each,
        rule: "A duplicate ACK: the same ACK, no data, the same window, not a window update.",
        means: "The receiver is missing a segment and asks again: loss or reordering between the sender and the receiver.",
        next: "Follow with retransmission and out_of_order on the same flow: three duplicates and a fast retransmit is loss; duplicates without a retransmission point at reordering.";
    AckUnseenSegment => "ack_unseen_segment", health: false, counted: each,
        rule: "An ACK for data this sensor never saw.",
        means: "The sensor's own capture lost the data (see capture_gap), or the data took a path that bypasses the sensor.",
        next: "Check the sensor first: capture_gap, the XDP and AF_XDP drop counters in the metrics, and the span port's own drops. If the sensor is clean, the data path bypasses the tap (asymmetric routing).";
    AckOutOfWindow => "ack_out_of_window", health: false, counted: each,
        rule: "An ACK below the highest ACK by more than the maximum window, or above the highest SEQ the peer sent.",
        means: "The segment does not belong to the connection as seen: a middlebox rewriting sequence numbers, a stale segment from an old connection, or an injected packet.",
        next: "Compare the sender's fingerprint with the flow's (rst_foreign_sender on the same flow?), and check devices that randomise sequence numbers (some firewalls' ISN randomisation) on the path.";
    ZeroWindow => "zero_window", health: false, counted: each,
        rule: "A receiver advertises window 0; the event when it reopens carries the duration and the probe count.",
        means: "The receiving application is not reading fast enough: the bottleneck is the receiver, not the network.",
        next: "On the receiver: CPU, the application's read loop, and socket buffers (`ss -tmi` shows rcv_space and the receive queue). Long episodes with many probes mean a stalled application.";
    MirrorDuplicate => "mirror_duplicate", health: true, counted: each,
        rule: "The same frame (same IP-ID, SEQ, ACK, flags and length, within 1 ms) seen twice. It is suppressed before any other detector sees it.",
        means: "The span or tap duplicates frames (both ports of a link mirrored, or two mirror sessions): a sensor-health matter, counted only.",
        next: "Check the mirror configuration: mirror one port's both directions, or each link once. A high rate costs capture capacity.";
    CaptureGap => "capture_gap", health: true, counted: each,
        rule: "Our own ring or AF_XDP drops, or runs of ack_unseen_segment: the flows touched are put in a gap state and their inferences suppressed until they resynchronise.",
        means: "The sensor itself lost packets: detections on the touched flows are held back rather than guessed.",
        next: "Check the queue drop counters in the metrics and the summary (ring full, fill ring empty): raise --ring-size, add queues and --cpus, apply the NIC's profile (`wirewatch profile detect --iface IF`), and check the span port's own drops.";
    SynFlood => "syn_flood", health: false, counted: aggregate,
        rule: "Within 10 s, 100 or more distinct sources send SYNs that go unanswered or are refused to one service (address:port), or to 16 or more addresses of one prefix (/24, IPv6 /64: carpet bombing; `details.target_prefix`). One aggregate event per flood, reported when it has been quiet for 10 s: counts, first/last, top sources and source ports, sample flows; the per-connection syn_unanswered/syn_rejected events are folded into it (their counters still count each).",
        means: "A SYN flood against the service: spoofed when the sources never complete a handshake, or a client fleet retrying against a service that cannot answer.",
        next: "Are the top sources real clients (do any complete handshakes elsewhere)? Check the server's SYN backlog and SYN cookies (`nstat -az TcpExtListenOverflows TcpExtSyncookiesSent`), and rate limits or scrubbing upstream.";
    PortScan => "port_scan", health: false, counted: aggregate,
        rule: "One source sends SYNs to 50 or more distinct services (address:port) within 10 s, answered by RST or nothing. One aggregate event per scan, reported when it has been quiet for 10 s, with the ports tried; the per-connection events are folded into it.",
        means: "A port or host scan from that source: a security scanner, a misconfigured health checker, or an attacker mapping the network.",
        next: "Who owns the source address? If it is not an approved scanner, block it where it enters and look for what it reached (connections from it that completed).";
    ServiceBlackhole => "service_blackhole", health: false, counted: aggregate,
        rule: "Within 10 s, the SYNs of 3 or more client connections to one service (address:port) go unanswered (syn_unanswered), while handshakes to other services seen at the same vantage were answered within the window. One aggregate event per service, reported when it has been quiet for 10 s: counts, first/last, top sources, sample flows; the per-connection syn_unanswered events from the third on are folded into it.",
        means: "The path works but this one service does not answer: a firewall, security group or ACL in front of it drops its SYNs silently, or the service (or its host) is down without answering.",
        next: "Is the SYN seen at a sensor nearer the server (lost_between_sensors names where it stops)? Check drop counters and rules for that address and port on the firewalls in front of it; on the server, `ss -ltn 'sport = :PORT'` and its host firewall.";
    TimeJump => "time_jump", health: true, counted: each,
        rule: "Packet time moves backwards by more than 1 s within one input (merged or concatenated captures, a clock step); smaller inversions are re-sorted within a bounded window and counted. The input's flows end, every other flow enters the gap state, and nothing is inferred across the jump.",
        means: "The capture file itself is not one time-ordered recording: a sensor-health matter, never duplication or retransmission.",
        next: "Check how the file was made (mergecap -a, cat of two captures, a clock step on the capturing host); merge by time (mergecap without -a) or analyse the parts separately.";
    CaptureLoss => "capture_loss", health: true, counted: each,
        rule: "Per vantage, as Zeek's capture_loss: the share of ACKs that moved the acknowledged point forward and acknowledged data the vantage never saw (an ACK past a hole in what it captured); the bytes in those holes are counted too. Counted per such ACK.",
        means: "The input itself is lossy (a capture file's own drops, tcpdump's buffer overrun, a span port over its budget): verdicts on the affected flows rest on an incomplete view, and their events say so.",
        next: "Check the capture's own drop counts (tcpdump's 'dropped by kernel', capinfos, the span port's drops); capture with a larger buffer (tcpdump -B), a smaller snap length, or on a less loaded port.";
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
            addr: p.src(),
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

/// What an event blames, as a program reads it: one role of a small fixed vocabulary
/// (docs/events.md, "culprit"), the address, port and MAC the packets name for it (null when
/// they name none), the vantages it lies between or over, and the facts that point at it.
/// The explanation is written around its rendering ([`Culprit`]'s `Display`): the schema test
/// checks that every event's explanation contains it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An endpoint of the connection itself: its application, stack or settings.
    Peer,
    /// The source of the traffic: a scanner, a flood's senders.
    Sender,
    /// A second host sending on the same address/port tuple (another NAT gateway or client).
    OtherSender,
    /// A stateful device (NAT, conntrack) on an endpoint's side, answering in its name.
    NatHost,
    /// A device other than the endpoint sending in its name: a load balancer, firewall, IPS.
    Middlebox,
    /// Another backend or next hop that received part of the flow and has no connection.
    OtherBackend,
    /// A device on the path that drops packets silently: between this sensor and `addr`, or
    /// between the two `vantages`.
    FilterBetween,
    /// One direction of the flow is spread over several paths or backends (ECMP/LAG, a load
    /// balancer without affinity).
    ParallelPaths,
    /// The sensor or its capture (span, tap, ring), not the network.
    Sensor,
}

impl Role {
    pub const ALL: [Role; 9] = [
        Role::Peer,
        Role::Sender,
        Role::OtherSender,
        Role::NatHost,
        Role::Middlebox,
        Role::OtherBackend,
        Role::FilterBetween,
        Role::ParallelPaths,
        Role::Sensor,
    ];
    pub const fn name(self) -> &'static str {
        match self {
            Role::Peer => "peer",
            Role::Sender => "sender",
            Role::OtherSender => "other_sender",
            Role::NatHost => "nat_host",
            Role::Middlebox => "middlebox",
            Role::OtherBackend => "other_backend",
            Role::FilterBetween => "filter_between",
            Role::ParallelPaths => "parallel_paths",
            Role::Sensor => "sensor",
        }
    }
}

/// See [`Role`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Culprit {
    pub role: Role,
    pub addr: Option<IpAddr>,
    pub port: Option<u16>,
    pub mac: Option<String>,
    /// The vantages (names) the culprit lies between (`filter_between`) or over
    /// (`parallel_paths`); empty when one vantage tells.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vantages: Vec<String>,
    /// The observations that point at it, one short phrase each.
    pub evidence: Vec<String>,
}

/// "10.0.0.1:80" or "[fd00::1]:80". IPv4 is written by hand: explanations name endpoints
/// several times, a flood makes an event per SYN, and `Ipv4Addr`'s formatter costs ~500
/// instructions (a test checks this against it).
pub fn endpoint_str(a: IpAddr, p: u16) -> String {
    let IpAddr::V4(v4) = a else { return format!("[{a}]:{p}") };
    let mut s = String::with_capacity(21);
    let push_num = |s: &mut String, mut v: u16| {
        // Digits from the last, then pushed first to last.
        let (mut digits, mut n) = ([0u8; 5], 0);
        loop {
            digits[n] = b'0' + (v % 10) as u8;
            n += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        digits[..n].iter().rev().for_each(|&d| s.push(char::from(d)));
    };
    for (i, o) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        push_num(&mut s, u16::from(o));
    }
    s.push(':');
    push_num(&mut s, p);
    s
}

impl Culprit {
    pub fn new(role: Role) -> Self {
        Culprit {
            role,
            addr: None,
            port: None,
            mac: None,
            vantages: Vec::new(),
            evidence: Vec::new(),
        }
    }
    /// Names the culprit by an endpoint of the flow.
    pub fn at(mut self, (addr, port): (IpAddr, u16)) -> Self {
        self.addr = Some(addr);
        self.port = Some(port);
        self
    }
    pub fn addr(mut self, addr: IpAddr) -> Self {
        self.addr = Some(addr);
        self
    }
    /// A MAC the packets carry for it (the all-zero MAC of a capture without Ethernet is none).
    pub fn mac(mut self, mac: &[u8; 6]) -> Self {
        self.mac = (*mac != [0; 6]).then(|| mac_str(mac));
        self
    }
    pub fn vantages(mut self, v: Vec<String>) -> Self {
        self.vantages = v;
        self
    }
    pub fn evidence(mut self, e: impl Into<String>) -> Self {
        self.evidence.push(e.into());
        self
    }
    /// Where the packets place it: "10.0.0.1:80", "10.0.0.1" or "".
    fn place(&self) -> String {
        match (self.addr, self.port) {
            (Some(a), Some(p)) => endpoint_str(a, p),
            (Some(a), None) => a.to_string(),
            _ => String::new(),
        }
    }
}

/// The culprit as the explanation names it: a noun phrase built from the fields only.
impl std::fmt::Display for Culprit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = self.place();
        let mac = self.mac.as_ref().map(|m| format!(" (MAC {m})")).unwrap_or_default();
        let between = |f: &mut std::fmt::Formatter<'_>| match self.vantages.as_slice() {
            [a, b, ..] => write!(f, "{a} and {b}"),
            [a] => {
                write!(f, "{a} and {}", if place.is_empty() { "the destination" } else { &place })
            }
            [] if place.is_empty() => f.write_str("this sensor and the destination"),
            [] => write!(f, "this sensor and {place}"),
        };
        match self.role {
            Role::Peer => write!(f, "the endpoint {place}{mac}"),
            Role::Sender if place.is_empty() => f.write_str("many sources"),
            Role::Sender => write!(f, "the source {place}"),
            Role::OtherSender => write!(f, "a second sender on {place}{mac}"),
            Role::NatHost => {
                write!(f, "a stateful device (NAT/conntrack) answering as {place}{mac}")
            }
            Role::Middlebox => {
                write!(f, "a device answering as {place}{mac} that is not the endpoint")
            }
            Role::OtherBackend => write!(f, "another backend answering as {place}{mac}"),
            Role::FilterBetween => {
                f.write_str("a device between ")?;
                between(f)
            }
            Role::ParallelPaths if self.vantages.len() >= 2 => {
                write!(f, "parallel paths past {} and {}", self.vantages[0], self.vantages[1])
            }
            Role::ParallelPaths => f.write_str("parallel paths or backends"),
            Role::Sensor => f.write_str("this sensor's capture"),
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
    /// What the event blames (the explanation names it).
    pub culprit: Culprit,
    pub explanation: String,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<EvidenceRef>,
    /// Words not written yet (the explanation, the culprit's evidence): see
    /// [`Event::render`]. `None` once written, and for every kind but `syn_unanswered`.
    #[serde(skip)]
    pub deferred: Option<Box<setup::SynUnansweredText>>,
    /// The flow key and seed `community_id` is written from, until it is (see
    /// [`Event::render`]); `None` once written.
    #[serde(skip)]
    pub community_of: Option<(FlowKey, u16)>,
}

impl Event {
    /// Writes what the engine left for later: the detector's words, the Community ID, the
    /// two times as text. The engine's [`drain_events`](crate::engine::Engine::drain_events)
    /// and the aggregator, for what it lets out, do this; nothing else needs to. An event a
    /// flood folds away is never written (a SYN flood makes one per spoofed SYN).
    pub fn render(&mut self) {
        write_deferred(&mut self.deferred, &mut self.culprit, &mut self.explanation);
        self.write_ids();
    }

    /// Writes the Community ID and the times as text, if they are not yet.
    pub fn write_ids(&mut self) {
        if let Some((key, seed)) = self.community_of.take() {
            self.community_id = crate::flow::community_id(&key, seed);
        }
        if self.time_first.is_empty() {
            self.time_first = rfc3339(self.time_first_ns);
        }
        if self.time_last.is_empty() {
            self.time_last = rfc3339(self.time_last_ns);
        }
    }

    /// The Community ID, written or not.
    pub fn community_id_now(&self) -> String {
        match &self.community_of {
            Some((key, seed)) => crate::flow::community_id(key, *seed),
            None => self.community_id.clone(),
        }
    }
}

/// Writes deferred words into their event or detection: the culprit's evidence, and the
/// explanation ahead of anything already there (the engine's capture-loss caution).
fn write_deferred(
    deferred: &mut Option<Box<setup::SynUnansweredText>>,
    culprit: &mut Culprit,
    explanation: &mut String,
) {
    if let Some(t) = deferred.take() {
        let text = t.write(culprit);
        debug_assert!(text.contains(&culprit.to_string()), "{text} / {culprit}");
        explanation.insert_str(0, &text);
    }
}

/// What a detector reports; the engine turns it into an [`Event`].
#[derive(Debug)]
pub struct Detection {
    pub kind: Kind,
    pub sub_kind: Option<&'static str>,
    pub culprit: Culprit,
    pub explanation: String,
    pub fingerprints: Vec<Fingerprint>,
    pub details: serde_json::Map<String, serde_json::Value>,
    /// When the pattern began (e.g. the first SYN), if earlier than the triggering packet.
    pub first_ns: Option<u64>,
    pub count: u64,
    /// Words written later ([`Event::render`]).
    pub deferred: Option<Box<setup::SynUnansweredText>>,
}

impl Detection {
    /// `explanation` names `culprit` by its rendering (`{culprit}` in the text).
    pub fn new(kind: Kind, culprit: Culprit, explanation: String) -> Self {
        debug_assert!(explanation.contains(&culprit.to_string()), "{explanation} / {culprit}");
        Self::unchecked(kind, culprit, explanation)
    }
    fn unchecked(kind: Kind, culprit: Culprit, explanation: String) -> Self {
        Self {
            kind,
            sub_kind: None,
            culprit,
            explanation,
            fingerprints: Vec::new(),
            details: Default::default(),
            first_ns: None,
            count: 1,
            deferred: None,
        }
    }
    /// A `syn_unanswered` detection whose explanation and culprit evidence are written when
    /// its event is read ([`Event::render`]).
    pub fn deferred(kind: Kind, culprit: Culprit, text: setup::SynUnansweredText) -> Self {
        Self { deferred: Some(Box::new(text)), ..Self::unchecked(kind, culprit, String::new()) }
    }
    /// Writes the deferred words now (evidence needs them for its comment).
    pub fn render(&mut self) {
        write_deferred(&mut self.deferred, &mut self.culprit, &mut self.explanation);
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
    /// Boxed, as `other_space`: armed on few flows, and every pool entry would carry its
    /// size (the pool is part of the per-flow memory budget).
    pub wait: Option<Box<PairWait>>,
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
    /// The byte ranges segments skipped and no later segment filled: what an ACK past them
    /// acknowledges unseen (capture loss in bytes). Boxed, as `wait`.
    pub holes: Option<Box<Holes>>,
    /// An ACK on this flow covered bytes the vantage never saw: its view is incomplete
    /// (capture loss), and later verdicts on it say so. Keeps the entry armed.
    pub capture_loss: bool,
    /// The connection this tuple carried before a new SYN (another ISN) began the current one:
    /// a segment that continues it belongs to a collision (tuple_reuse). Keeps the entry armed.
    pub other_space: Option<Box<OtherSpace>>,
}

/// Holes a flow's capture has, per side: `[start, end)` ranges a segment skipped that no
/// segment since has covered and no ACK has passed. Bounded: past [`Holes::MAX`] a new hole
/// joins the last one of its side (the byte count then errs high, never low, until the ACK).
#[derive(Clone, Debug, Default)]
pub struct Holes {
    n: u8,
    h: [(u8, SeqNumber, SeqNumber); Holes::MAX],
}

impl Holes {
    pub const MAX: usize = 8;

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    /// `side` skipped `[start, end)`.
    pub fn add(&mut self, side: usize, start: SeqNumber, end: SeqNumber) {
        if end <= start {
            return;
        }
        let n = self.n as usize;
        if n < Self::MAX {
            self.h[n] = (side as u8, start, end);
            self.n += 1;
        } else if let Some(last) = self.h.iter_mut().rev().find(|h| h.0 as usize == side) {
            last.2 = last.2.max(end);
        }
    }
    /// `side` was seen sending `[start, end)`: that part of its holes is filled.
    pub fn fill(&mut self, side: usize, start: SeqNumber, end: SeqNumber) {
        let mut i = 0;
        while i < self.n as usize {
            let (hs, a, b) = self.h[i];
            if hs as usize != side || end <= a || start >= b {
                i += 1;
                continue;
            }
            let (left, right) = (start > a, end < b);
            match (left, right) {
                (false, false) => {
                    self.remove(i);
                    continue;
                }
                (true, false) => self.h[i].2 = start,
                (false, true) => self.h[i].1 = end,
                (true, true) if (self.n as usize) < Self::MAX => {
                    self.h[i].2 = start;
                    self.h[self.n as usize] = (hs, end, b);
                    self.n += 1;
                }
                // No room to split: the hole stays whole (errs high).
                (true, true) => {}
            }
            i += 1;
        }
    }
    /// An ACK of `side`'s bytes up to `ack`: removes and returns the hole bytes below it.
    pub fn take_below(&mut self, side: usize, ack: SeqNumber) -> u32 {
        let mut bytes = 0u32;
        let mut i = 0;
        while i < self.n as usize {
            let (hs, a, b) = self.h[i];
            if hs as usize != side || ack <= a {
                i += 1;
                continue;
            }
            bytes = bytes.saturating_add(ack.min_seq(b).diff(a) as u32);
            if b > ack {
                self.h[i].1 = ack;
                i += 1;
            } else {
                self.remove(i);
            }
        }
        bytes
    }
    fn remove(&mut self, i: usize) {
        let n = self.n as usize;
        self.h.copy_within(i + 1..n, i);
        self.n -= 1;
    }
}

/// The sequence spaces of the connection a tuple carried before the current one.
#[derive(Clone, Copy, Debug)]
pub struct OtherSpace {
    /// Each side's next SEQ there when the new SYN came.
    pub next: [SeqNumber; 2],
    /// Each side's ISN there, if its SYN was seen.
    pub isn: [Option<u32>; 2],
    /// The new connection's ISN and the side that sent it.
    pub new_isn: u32,
    pub new_side: u8,
}

impl OtherSpace {
    /// Whether a segment from `side` with `seq` (and `ack`, if it carries one) lies within
    /// `win` of the old connection's sequence spaces.
    pub fn continues(&self, side: usize, seq: SeqNumber, ack: Option<SeqNumber>, win: u32) -> bool {
        let near = |a: SeqNumber, b: SeqNumber| a.diff(b).unsigned_abs() <= win;
        near(seq, self.next[side]) || ack.is_some_and(|a| near(a, self.next[1 - side]))
    }
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
            && self.holes.is_none()
            && !self.capture_loss
            && self.other_space.is_none()
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
    /// Set by `setup` when a SYN began a new connection on the flow (its handshake timing
    /// starts afresh): the engine arms a handshake timeout of its own if one was pending.
    pub handshake_restarted: bool,
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
    #[inline]
    pub fn ackable(&self, side: usize) -> SeqNumber {
        match self.extra_ref().and_then(|x| x.lost_mark) {
            Some((mark, s)) if s as usize == side => mark,
            _ => self.flow.dirs[side].next_seq,
        }
    }
    /// Everything `side` was seen sending is ackable again.
    #[inline]
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
        endpoint_str(a, p)
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

/// RFC 3339 UTC with nanoseconds ("2023-11-14T22:13:20.123456789Z"). Written by hand: every
/// event carries two, and a SYN flood makes an event per SYN (a formatter's generic path cost
/// ~900 instructions each; the test checks this against jiff).
pub fn rfc3339(ns: u64) -> String {
    let (secs, frac) = (ns / 1_000_000_000, ns % 1_000_000_000);
    let (days, sod) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`, for days ≥ 0:
    // eras of 400 years from 0000-03-01).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let mut b = [0u8; 30];
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, sod / 3600);
    put(14, 2, sod / 60 % 60);
    put(17, 2, sod % 60);
    put(20, 9, frac);
    for (i, c) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':'), (19, b'.'), (29, b'Z')]
    {
        b[i] = c;
    }
    // ASCII digits and separators: always UTF-8 (from_utf8's ASCII check is a few words).
    std::str::from_utf8(&b).map_or_else(|_| String::new(), str::to_owned)
}

#[cfg(test)]
mod vocab_tests {
    #[test]
    fn endpoints_are_written_as_the_std_formatters_write_them() {
        use std::net::IpAddr;
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for i in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Every octet and port width: small values as often as large ones.
            let octets = (x as u32).to_be_bytes().map(|o| o >> (i % 8));
            let port = (x >> 32) as u16 >> (i % 16);
            let a = IpAddr::from(octets);
            assert_eq!(super::endpoint_str(a, port), format!("{a}:{port}"));
        }
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(super::endpoint_str(v6, 443), "[fd00::1]:443");
        assert_eq!(super::endpoint_str(IpAddr::from([0, 0, 0, 0]), 0), "0.0.0.0:0");
        assert_eq!(super::endpoint_str(IpAddr::from([255; 4]), 65535), "255.255.255.255:65535");
    }

    #[test]
    fn rfc3339_formats() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(super::rfc3339(1_700_000_000_123_456_789), "2023-11-14T22:13:20.123456789Z");
        // Leap days, century rules and the last u64 nanosecond, as GNU `date -u -d @SECS` has them.
        for (secs, want) in [
            (68_169_600, "1972-02-29T00:00:00"),
            (946_684_799, "1999-12-31T23:59:59"),
            (951_782_400, "2000-02-29T00:00:00"),
            (1_735_689_599, "2024-12-31T23:59:59"),
            (4_107_542_400, "2100-03-01T00:00:00"),
        ] {
            assert_eq!(super::rfc3339(secs * 1_000_000_000 + 7), format!("{want}.000000007Z"));
        }
        assert_eq!(super::rfc3339(u64::MAX), "2554-07-21T23:34:33.709551615Z");
        // As jiff writes them, over the whole range (a fixed pseudo-random walk).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for ns in [x, x % (4_102_444_800 * 1_000_000_000), x % 1_000_000_000_000] {
                let t = jiff::Timestamp::from_nanosecond(i128::from(ns)).unwrap();
                assert_eq!(super::rfc3339(ns), format!("{t:.9}"), "{ns}");
            }
        }
    }

    #[test]
    fn names_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for k in super::Kind::ALL {
            assert!(seen.insert(k.name()));
            assert!(k.name().chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            assert_eq!(super::Kind::from_name(k.name()), Some(*k));
        }
        assert_eq!(seen.len(), super::KIND_COUNT);
    }
}

#[cfg(test)]
mod tests;
