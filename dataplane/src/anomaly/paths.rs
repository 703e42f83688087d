//! Paths: split_path, one_sided, and lost_between_sensors (matching packets across vantages).
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use super::{mac_str, Ctx, Detection, Kind};
use crate::flow::{conn_flags, dir_flags};
use crate::packet::TcpPacket;

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
        let dm = &mut c.flow.dirs[s];
        dm.count_mac_switch();
        // One switch is a route change; switching back and forth is a split.
        if dm.mac_switches() >= 2 && dm.flags & dir_flags::SPLIT_REPORTED == 0 {
            dm.flags |= dir_flags::SPLIT_REPORTED;
            c.count(Kind::SplitPath);
            let from = c.endpoint(s);
            let to = c.endpoint(c.other());
            c.found.push(
                Detection::new(
                    Kind::SplitPath,
                    format!(
                        "Packets from {from} to {to} alternate between next hops {} and {}: one flow is being sprayed over several paths or backends (ECMP/LAG hashing per packet, or a load balancer without flow affinity).",
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
        let mut d = Detection::new(
            Kind::OneSided,
            format!(
                "Only {from} → {to} is visible ({:.1} s of data, nothing back): asymmetric routing, or the span port misses one direction. Sensor health, not a network fault.",
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
    seq: u32,
    ack: u32,
    flags: u8,
    len: u32,
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

/// Matches packets between vantages: a packet seen at one sensor and not at another sensor
/// that carries traffic for the same server within `vantage_window` was dropped between them.
#[derive(Default)]
pub struct VantageMatcher {
    pending: HashMap<Sig, Seen>,
    order: VecDeque<(u64, Sig)>,
    /// Which vantages have carried traffic for an address: they are expected to see it.
    servers: VantageLearning,
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
        *self.seen.entry(p.src).or_default() |= bit;
        let d = self.seen.entry(p.dst).or_default();
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
}

impl VantageMatcher {
    /// Records a sighting of a packet at its vantage. `expected`: the vantages expected to see
    /// it, as learned by the caller from every packet (0: learn here, from this engine's).
    pub fn observe(&mut self, p: &TcpPacket, hist_id: u32, expected: u128) {
        let bit = 1u128 << p.vantage.min(127);
        if expected == 0 {
            self.servers.learn(p);
        }
        let sig = Sig {
            src: p.src,
            dst: p.dst,
            sport: p.sport,
            dport: p.dport,
            ip_id: p.ip_id,
            seq: p.seq.0,
            ack: p.ack.0,
            flags: p.flags,
            len: p.payload_len,
        };
        if let Some(s) = self.pending.get_mut(&sig) {
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

    /// Packets whose window closed without reaching every vantage expected to see them.
    pub fn expire(&mut self, now_ns: u64, window_ns: u64, vantage_count: usize) -> Vec<Missing> {
        let mut out = Vec::new();
        let all: u128 = if vantage_count >= 128 { u128::MAX } else { (1u128 << vantage_count) - 1 };
        while let Some(&(t, sig)) = self.order.front() {
            if now_ns.saturating_sub(t) <= window_ns {
                break;
            }
            self.order.pop_front();
            let Some(seen) = self.pending.remove(&sig) else { continue };
            // Expected at the vantages that carry traffic for this destination.
            let learned =
                if seen.expected != 0 { seen.expected } else { self.servers.expected(&sig.dst) };
            let missing = learned & all & !seen.vantages;
            if missing != 0 {
                let missing_at = (0..128u16).filter(|v| missing & (1 << v) != 0).collect();
                out.push(Missing {
                    pkt: seen.pkt,
                    seen_at: seen.first_vantage,
                    missing_at,
                    hist_id: seen.hist_id,
                });
            }
        }
        out
    }
}

pub fn lost_detection(m: &Missing, names: &[String]) -> Detection {
    let name = |v: u16| names.get(v as usize).cloned().unwrap_or_else(|| format!("vantage {v}"));
    let missing: Vec<String> = m.missing_at.iter().map(|v| name(*v)).collect();
    let p = &m.pkt;
    let what = if p.has(dataplane_common::tcp_flags::SYN) {
        "SYN".to_string()
    } else {
        format!("segment SEQ {} ({} bytes)", p.seq, p.payload_len)
    };
    Detection::new(
        Kind::LostBetweenSensors,
        format!(
            "{what} from {}:{} to {}:{} was seen at {} but never at {}: it was dropped between those two points (a firewall, router or link there).",
            p.src,
            p.sport,
            p.dst,
            p.dport,
            name(m.seen_at),
            missing.join(", ")
        ),
    )
    .detail("seen_at", name(m.seen_at))
    .detail("missing_at", missing)
}
