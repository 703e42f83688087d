//! Resets and who sent them: rst_foreign_sender, rst_after_stale_segment, midstream_rst,
//! request_after_fin, data_after_rst.
use dataplane_common::tcp_flags::{ACK, FIN, RST, SYN};

use super::{
    mac_str, Ctx, Culprit, Detection, Fingerprint, Kind, PairWait, Role, TriggerInfo, TriggerWhy,
};
use crate::flow::{conn_flags, dir_flags, IpIdModel};

/// Packets a side must have sent before its fingerprint counts as learned.
const MODEL_MIN_PACKETS: u8 = 3;
/// A step this large in a counter-model IP-ID is a different counter.
const IP_ID_MAX_STEP: u16 = 2048;
/// TSval may run at most this many ticks per ms (RFC 7323 recommends 1 ms .. 1 s per tick).
const TS_MAX_TICKS_PER_MS: u64 = 1000;
/// Packets in flight when a RST is sent may still arrive this long after it.
const DATA_AFTER_RST_GRACE_NS: u64 = 10_000_000;

/// How much a disagreement says about who sent a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// Only another host (or a forger) produces this: MAC, TTL, a foreign IP-ID counter, a
    /// TSval off the sender's clock.
    OtherHost,
    /// The sender's own stack produces this too when it has no socket for the connection
    /// (Linux answers from its control socket: no timestamp option, IP-ID 0).
    NoSocket,
}

/// Features of a packet that break its sender's established fingerprint.
pub fn fingerprint_breaks(c: &Ctx<'_>) -> Vec<(String, Evidence)> {
    use Evidence::{NoSocket, OtherHost};
    let p = c.pkt;
    let d = &c.flow.dirs[c.side];
    let od = &c.flow.dirs[c.other()];
    let mut out = Vec::new();
    if d.packets() < MODEL_MIN_PACKETS {
        return out;
    }
    // A direction already sprayed over several next hops is forwarded by several routers'
    // interfaces: its source MAC says nothing about who originated it. (An unknown MAC, id 0,
    // is the all-zero address of a capture without Ethernet, or one past the MAC table.)
    if d.src_mac() != c.src_mac
        && d.src_mac().is_known()
        && c.src_mac.is_known()
        && c.before.mac_switches() == 0
    {
        out.push((
            format!(
                "source MAC {} differs from the sender's {}",
                mac_str(&p.src_mac),
                mac_str(&c.macs.get(d.src_mac()))
            ),
            OtherHost,
        ));
    }
    if (p.ttl as i16 - d.ttl() as i16).abs() > 1 {
        out.push((format!("TTL {} differs from the sender's {}", p.ttl, d.ttl()), OtherHost));
    }
    match d.ip_id_model() {
        IpIdModel::Counter if p.ip_id == 0 => {
            out.push((format!("IP-ID 0 where the sender counts ({})", d.ip_id), NoSocket));
        }
        IpIdModel::Counter => {
            let step = p.ip_id.wrapping_sub(d.ip_id);
            if step == 0 || step > IP_ID_MAX_STEP {
                out.push((
                    format!("breaks the sender's IP-ID sequence ({} → {})", d.ip_id, p.ip_id),
                    OtherHost,
                ));
            }
        }
        IpIdModel::Zero if p.ip_id != 0 => {
            out.push((format!("IP-ID {} where the sender always uses 0", p.ip_id), OtherHost));
        }
        _ => {}
    }
    let negotiated = d.flags & dir_flags::TS_OK != 0 && od.flags & dir_flags::TS_OK != 0;
    match p.opts.timestamp {
        None if negotiated && !p.opts.truncated => {
            out.push(("lacks the timestamp option the flow negotiated".into(), NoSocket));
        }
        Some((tsval, _)) if negotiated && d.ts_val != 0 => {
            let back = d.ts_val.wrapping_sub(tsval) as i32;
            let elapsed_ms = (c.now_us.wrapping_sub(d.last_us) as u64) / 1000 + 1;
            let fwd = tsval.wrapping_sub(d.ts_val) as u64;
            if back > 0 || fwd > elapsed_ms * TS_MAX_TICKS_PER_MS + 1000 {
                out.push((
                    format!("TSval {tsval} is off the sender's clock (last {})", d.ts_val),
                    OtherHost,
                ));
            }
        }
        _ => {}
    }
    out
}

fn describe(breaks: &[(String, Evidence)]) -> String {
    breaks.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>().join(", ")
}

pub fn on_packet(c: &mut Ctx<'_>) {
    let p = c.pkt;
    let (s, o) = (c.side, c.other());
    let now = p.ts_ns;
    if p.has(RST) {
        on_rst(c);
        return;
    }
    if c.in_gap {
        return;
    }
    // data_after_rst: a side still sending data after the connection was reset.
    if p.payload_len > 0 {
        if let Some(x) = c.extra_mut() {
            if let Some(rst_ns) = x.rst_ns {
                if now > rst_ns + DATA_AFTER_RST_GRACE_NS {
                    x.data_after_rst = x.data_after_rst.saturating_add(1);
                    let n = x.data_after_rst as u64;
                    let rst_side = x.rst_side as usize;
                    if c.flow.flags & conn_flags::DATA_AFTER_RST_REPORTED == 0 {
                        c.flow.flags |= conn_flags::DATA_AFTER_RST_REPORTED;
                        let who = c.endpoint(s);
                        let rst_from = c.endpoint(rst_side);
                        let after = (now - rst_ns) as f64 / 1e9;
                        let seen = format!("data {after:.3} s after the RST from {rst_from}");
                        let (cul, explanation) = if rst_side == s {
                            let cul = Culprit::new(Role::NatHost)
                                .at(c.key.endpoint(s))
                                .evidence("the RST bore the data sender's own address")
                                .evidence(seen);
                            let t = format!(
                                "{who} keeps sending data {after:.3} s after a RST bearing its own address ended the connection toward {}: that RST came from {cul}, a device on {who}'s side (a NAT host's own stack, say), so the host actually sending the data never saw it — the connection is dead on one side only.",
                                c.endpoint(c.other())
                            );
                            (cul, t)
                        } else {
                            let cul = Culprit::new(Role::FilterBetween)
                                .at(c.key.endpoint(s))
                                .evidence(seen);
                            let t = format!(
                                "{who} keeps sending data {after:.3} s after a RST from {rst_from} ended the connection: the RST never reached {who} (or was not accepted) — {cul} dropped it, or a middlebox sent it — so the connection is dead on one side only."
                            );
                            (cul, t)
                        };
                        let mut d = Detection::new(Kind::DataAfterRst, cul, explanation)
                            .detail("rst_from", rst_from);
                        d.first_ns = Some(rst_ns);
                        d.count = n;
                        c.found.push(d);
                    }
                    c.count(Kind::DataAfterRst);
                }
            }
        }
    }

    let od = c.flow.dirs[o];
    // A segment outside the receiver's window: remember it, a RST may answer it.
    // Far from the sender's sequence space but within the one the tuple carried before: a
    // collision, and the RST answering it is the collision's too.
    if continues_other_connection(c) {
        let trig = trigger(c, 0, TriggerWhy::Plain);
        if let Some(x) = c.extra() {
            x.wait = Some(Box::new(PairWait {
                kind: Kind::TupleReuse,
                since_ns: now,
                from_side: o,
                rst_seq: p.ack.0,
                trigger: trig,
            }));
        }
        return;
    }
    if let Some(why) = stale_reason(c) {
        let trig = trigger(c, 0, why);
        if let Some(x) = c.extra() {
            x.wait = Some(Box::new(PairWait {
                kind: Kind::RstAfterStaleSegment,
                since_ns: now,
                from_side: o,
                rst_seq: p.ack.0,
                trigger: trig,
            }));
        }
        return;
    }
    if p.payload_len == 0 {
        return;
    }
    // Data toward a receiver that may have no connection for it.
    let midstream =
        c.flow.flags & conn_flags::MIDSTREAM != 0 && c.flow.dirs[s].flags & dir_flags::SYN == 0;
    let syn_hop = c.flow.syn_dst_mac();
    let split_hop = syn_hop.is_known()
        && c.dst_mac.is_known()
        && c.flow.client_side() == Some(s)
        && syn_hop != c.dst_mac;
    if midstream || split_hop {
        let trig = trigger(c, 0, if split_hop { TriggerWhy::SplitHop } else { TriggerWhy::Plain });
        if let Some(x) = c.extra() {
            x.wait = Some(Box::new(PairWait {
                kind: Kind::MidstreamRst,
                since_ns: now,
                from_side: o,
                rst_seq: p.ack.0,
                trigger: trig,
            }));
        }
        return;
    }
    // A request on a connection the peer already closed.
    if od.flags & dir_flags::FIN != 0 && c.flow.dirs[s].flags & dir_flags::FIN == 0 {
        // Idle: since the requester last sent data (its next_seq last advanced).
        let idle = now.saturating_sub(c.first_ns + c.before.next_seq_us as u64 * 1000);
        let trig = trigger(c, idle, TriggerWhy::Plain);
        if let Some(x) = c.extra() {
            x.wait = Some(Box::new(PairWait {
                kind: Kind::RequestAfterFin,
                since_ns: now,
                from_side: o,
                rst_seq: p.ack.0,
                trigger: trig,
            }));
        }
    }
}

fn trigger(c: &Ctx<'_>, idle_ns: u64, why: TriggerWhy) -> TriggerInfo {
    let p = c.pkt;
    TriggerInfo { seq: p.seq.0, ack: p.ack.0, len: p.payload_len, hist_id: c.hist_id, idle_ns, why }
}

/// Why this segment lies outside what the receiver will accept, if it does.
fn stale_reason(c: &Ctx<'_>) -> Option<TriggerWhy> {
    let p = c.pkt;
    let d = &c.flow.dirs[c.side];
    let od = &c.flow.dirs[c.other()];
    if p.flags & (SYN | FIN) != 0 || !p.has(ACK) {
        return None;
    }
    if d.flags & dir_flags::DATA_OR_ACK == 0
        || od.flags & dir_flags::DATA_OR_ACK == 0
        || d.packets() < MODEL_MIN_PACKETS
    {
        return None;
    }
    let rwin = ((od.window as u32) << od.wscale().min(14)).max(1);
    let maxwin = max_window(c);
    // SEQ relative to what the receiver has acknowledged.
    let rel = p.seq.diff(od.last_ack) as i64;
    if rel > maxwin as i64 || rel + (p.seq_len() as i64) < -(maxwin as i64) {
        return Some(TriggerWhy::Stale { seq: p.seq.0, rel, ack: od.last_ack.0, win: rwin });
    }
    None
}

/// Whether the packet lies beyond any window of its sender's current sequence space and
/// continues the connection the tuple carried before a new SYN (reported as the collision by
/// `setup::collision`). The side state is looked at only for such a far-off packet.
fn continues_other_connection(c: &mut Ctx<'_>) -> bool {
    let win = max_window(c);
    let far = c.before.flags & dir_flags::SEEN != 0
        && c.pkt.seq.diff(c.before.next_seq).unsigned_abs() > win;
    far && c.flow.flags & conn_flags::HAS_SIDE != 0
        && c.extra_ref().is_some_and(|x| x.other_space.is_some())
        && super::setup::collision(c, win)
}

/// The largest window the receiver of the current packet could have offered.
fn max_window(c: &Ctx<'_>) -> u32 {
    let od = &c.flow.dirs[c.other()];
    let rwin = ((od.window as u32) << od.wscale().min(14)).max(1);
    (65_535u32 << od.wscale().min(14)).max(rwin)
}

fn on_rst(c: &mut Ctx<'_>) {
    let p = c.pkt;
    let s = c.side;
    let now = p.ts_ns;
    let breaks = fingerprint_breaks(c);
    // A RST that continues the connection the tuple carried before belongs to the
    // collision: not a foreign sender of this connection.
    let collided = continues_other_connection(c);
    let pairing = c.pairing_window_ns();
    let wait = c.extra_mut().and_then(|x| x.wait.take());
    let mut paired = false;
    if let Some(w) = wait {
        let in_time = now.saturating_sub(w.since_ns) <= pairing;
        let seq_ok = p.seq.0 == w.rst_seq
            || (w.kind == Kind::RequestAfterFin && p.seq == c.flow.dirs[s].next_seq);
        if w.from_side == s && in_time && seq_ok {
            paired = true;
            // The answer to a segment of the other connection on the tuple: the collision
            // was reported with that segment.
            if w.kind != Kind::TupleReuse {
                c.found.push(paired_detection(c, &w, &breaks));
            }
        } else if !in_time {
            // Expired: forget it.
        } else if let Some(x) = c.extra() {
            x.wait = Some(w);
        }
    }
    if !collided && breaks.iter().any(|(_, e)| *e == Evidence::OtherHost) {
        c.count(Kind::RstForeignSender);
        let who = c.endpoint(s);
        // Toward a side whose packets went to several next hops, the other one is a backend.
        let sprayed = c.flow.dirs[c.other()].mac_switches() > 0;
        let mut cul = Culprit::new(if sprayed { Role::OtherBackend } else { Role::Middlebox })
            .at((p.src(), p.sport))
            .mac(&p.src_mac);
        for (b, _) in &breaks {
            cul = cul.evidence(b.clone());
        }
        if sprayed {
            cul = cul.evidence(format!("packets toward {who} went to more than one next hop"));
        }
        let mut d = Detection::new(
            Kind::RstForeignSender,
            cul.clone(),
            format!(
                "RST from {who} {}: a different host sent it — {cul} — not the endpoint that carried the connection (middlebox, NAT, or another backend).",
                describe(&breaks)
            ),
        )
        .fingerprint(Fingerprint::of_side(&format!("expected ({} so far)", c.role(s)), &c.key, c.flow, s, c.macs))
        .fingerprint(Fingerprint::of_packet("this RST", p))
        .detail("disagreements", breaks.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>());
        d.sub_kind = Some(if paired { "paired" } else { "unpaired" });
        c.found.push(d);
    }
    if let Some(x) = c.extra() {
        if x.rst_ns.is_none() {
            x.rst_ns = Some(now);
            x.rst_side = s as u8;
        }
    }
    c.flow.dirs[s].flags |= dir_flags::RST;
}

fn paired_detection(c: &Ctx<'_>, w: &PairWait, breaks: &[(String, Evidence)]) -> Detection {
    let p = c.pkt;
    let s = c.side;
    let who = c.endpoint(s);
    let mac = mac_str(&p.src_mac);
    let sender_desc = if breaks.is_empty() {
        String::new()
    } else if breaks.iter().all(|(_, e)| *e == Evidence::NoSocket) {
        format!(
            " The RST {}: sent by a stack with no socket for this connection.",
            describe(breaks)
        )
    } else {
        format!(" The RST {}.", describe(breaks))
    };
    let dt_ms = (p.ts_ns.saturating_sub(w.since_ns)) as f64 / 1e6;
    let peer = c.endpoint(1 - s);
    let rst = |role: Role| {
        let mut cul = Culprit::new(role).at((p.src(), p.sport)).mac(&p.src_mac);
        for (b, _) in breaks {
            cul = cul.evidence(format!("the RST {b}"));
        }
        cul
    };
    let d = match w.kind {
        Kind::RstAfterStaleSegment => {
            let cul = rst(Role::NatHost)
                .evidence(format!("the segment from {peer} was out of window: {}", w.trigger.why))
                .evidence(format!("RST {dt_ms:.3} ms later with SEQ = its ACK {}", w.trigger.ack));
            Detection::new(
                Kind::RstAfterStaleSegment,
                cul.clone(),
                format!(
                    "A late segment from {peer} ({}) was answered {dt_ms:.3} ms later by a RST from {who} (MAC {mac}) with SEQ = its ACK {}: {cul} on {who}'s side judged it out of window (INVALID), did not translate it, and its own stack reset the connection.{sender_desc} Fix: drop conntrack INVALID packets, or set net.netfilter.nf_conntrack_tcp_be_liberal=1.",
                    w.trigger.why, w.trigger.ack
                ),
            )
        }
        Kind::MidstreamRst => {
            let mut cul = rst(Role::OtherBackend).evidence(format!(
                "RST {dt_ms:.3} ms after data (SEQ {}) on a flow without a handshake there",
                w.trigger.seq
            ));
            if w.trigger.why != TriggerWhy::Plain {
                cul = cul.evidence(w.trigger.why.to_string());
            }
            Detection::new(
                Kind::MidstreamRst,
                cul.clone(),
                format!(
                    "{who} (MAC {mac}) answered data from {peer} (SEQ {}, {} bytes) with RST {dt_ms:.3} ms later: it has no connection for this flow — it is {cul}, and the flow's earlier packets went elsewhere (ECMP / load-balancer split){}.{sender_desc}",
                    w.trigger.seq,
                    w.trigger.len,
                    if w.trigger.why == TriggerWhy::Plain { String::new() } else { format!("; {}", w.trigger.why) }
                ),
            )
        }
        _ => {
            let idle = w.trigger.idle_ns as f64 / 1e9;
            let cul = Culprit::new(Role::Peer)
                .at(c.key.endpoint(1 - s))
                .evidence(format!(
                    "{} bytes sent after {who}'s FIN, {idle:.3} s idle",
                    w.trigger.len
                ))
                .evidence(format!("{who} answered with RST"));
            Detection::new(
                Kind::RequestAfterFin,
                cul.clone(),
                format!(
                    "{peer} sent {} bytes on a connection {who} had already closed (FIN), after {idle:.3} s idle, and {who} answered with RST: a keep-alive connection was reused just as the peer's idle timeout closed it. Make the idle timeout of {cul} (the client's pool) shorter than the server's.",
                    w.trigger.len,
                ),
            )
            .detail("idle_s", idle)
        }
    };
    let mut d = d
        .fingerprint(Fingerprint::of_packet("the RST", p))
        .detail("trigger_seq", w.trigger.seq)
        .detail("trigger_ack", w.trigger.ack);
    d.first_ns = Some(w.since_ns);
    d
}

/// Forgets pairing waits older than the window.
pub fn expire_wait(x: &mut super::FlowExtra, now_ns: u64, window_ns: u64) {
    if x.wait.as_ref().is_some_and(|w| now_ns.saturating_sub(w.since_ns) > window_ns) {
        x.wait = None;
    }
}
