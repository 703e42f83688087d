//! Connection setup: syn_unanswered, syn_rejected, synack_unacked, tuple_reuse.
use dataplane_common::tcp_flags::{ACK, RST, SYN};

use super::{mac_str, Ctx, Culprit, Detection, Fingerprint, Kind, OtherSpace, Role};
use crate::flow::{conn_flags, dir_flags};

/// Runs before the state machine moves (it needs the state the packet arrived in).
pub fn on_packet(c: &mut Ctx<'_>) {
    let p = c.pkt;
    let s = c.side;
    let now = p.ts_ns;
    let syn = p.has(SYN) && !p.has(ACK);
    let synack = p.has(SYN) && p.has(ACK);

    if syn {
        let d = &c.flow.dirs[s];
        let had_syn = d.flags & dir_flags::SYN != 0;
        let same_isn = had_syn && d.isn == p.seq;
        if had_syn
            && !same_isn
            && c.flow.state.is_open()
            && c.flow.state != crate::tcp::ConnState::SynSent
        {
            remember_other_space(c);
            tuple_reuse(c);
            return;
        }
        if c.flow.state.is_open()
            && !had_syn
            && c.flow.flags & conn_flags::MIDSTREAM != 0
            && c.flow.dirs[s].flags & dir_flags::SEEN != 0
        {
            // A SYN on a flow we picked up mid-stream with data already flowing from this side.
            remember_other_space(c);
            tuple_reuse(c);
            return;
        }
        if !same_isn && c.flow.state.is_closed() {
            // A new connection on a tuple whose last one closed: should a segment of the old
            // one still come, two connections share the tuple after all.
            remember_other_space(c);
        }
        if !same_isn || c.flow.state.is_closed() {
            // A new connection (first SYN, or a new incarnation after a close)... unless it is
            // the SYN a SYN-ACK seen first already answered (the flow picked up between them):
            // then the handshake's timing runs from that SYN-ACK, as its timer does.
            let od = &c.flow.dirs[c.other()];
            let answered = c.flow.flags & conn_flags::SYNACK_SEEN != 0
                && od.flags & dir_flags::DATA_OR_ACK != 0
                && od.last_ack.0 == p.seq.0.wrapping_add(1);
            c.handshake_restarted = !answered;
            c.flow.set_syns(1);
            c.flow.set_synacks(0);
            c.flow.flags &= !(conn_flags::HANDSHAKE_REPORTED | conn_flags::SYNACK_SEEN);
            c.flow.flags |= conn_flags::SYN_SEEN;
            c.flow.flags = if s == 1 {
                c.flow.flags | conn_flags::CLIENT_IS_HI
            } else {
                c.flow.flags & !conn_flags::CLIENT_IS_HI
            };
            c.flow.set_syn_dst_mac(c.dst_mac);
            c.flow.set_rtt_ns(None);
            new_sequence_space(c);
            if let Some(x) = c.extra() {
                if !answered {
                    x.syn_first_ns = Some(now);
                }
                x.syn_ns = Some(now);
                x.synack_first_ns = None;
            }
        } else {
            c.flow.set_syns(c.flow.syns().saturating_add(1));
            // The handshake RTT runs from the most recent SYN (a retransmitted SYN restarts it).
            if let Some(x) = c.extra() {
                x.syn_ns = Some(now);
            }
        }
        let d = &mut c.flow.dirs[s];
        d.flags |= dir_flags::SYN;
        d.isn = p.seq;
        // The SYN and two retransmissions: the engine arms SYN_ANSWER_GRACE_NS, and the
        // flow is reported then if still unanswered ([`syn_retried_unanswered`]).
    } else if synack {
        if c.flow.flags & conn_flags::SYNACK_SEEN != 0 && c.flow.dirs[s].isn == p.seq {
            c.flow.set_synacks(c.flow.synacks().saturating_add(1));
            if c.flow.synacks() == 2
                && c.flow.state == crate::tcp::ConnState::SynReceived
                && c.flow.flags & conn_flags::HANDSHAKE_REPORTED == 0
            {
                c.flow.flags |= conn_flags::HANDSHAKE_REPORTED;
                let first = c.extra_ref().and_then(|x| x.synack_first_ns).unwrap_or(now);
                c.found.push(synack_unacked(c, first, "was retransmitted"));
            }
        } else {
            c.flow.set_synacks(1);
            c.flow.flags |= conn_flags::SYNACK_SEEN;
            // In a simultaneous open (RFC 9293 §3.5, figure 8) the SYN-ACK repeats its sender's
            // own SYN: the same sequence space, and a retransmission of that SYN.
            let d = &c.flow.dirs[s];
            if d.flags & dir_flags::SYN == 0 || d.isn != p.seq {
                new_sequence_space(c);
            }
            if let Some(x) = c.extra() {
                x.synack_first_ns = Some(now);
            }
        }
        let d = &mut c.flow.dirs[s];
        d.flags |= dir_flags::SYN;
        d.isn = p.seq;
    } else if p.has(RST)
        && c.flow.state == crate::tcp::ConnState::SynSent
        && c.flow.client_side() == Some(c.other())
    {
        // The server side answered the SYN with RST.
        let client = c.endpoint(c.other());
        c.flow.flags |= conn_flags::HANDSHAKE_REPORTED;
        let cul = Culprit::new(Role::Peer)
            .at(c.key.endpoint(s))
            .mac(&p.src_mac)
            .evidence(format!("RST (TTL {}) answered the SYN", p.ttl));
        c.found.push(
            Detection::new(
                Kind::SynRejected,
                cul.clone(),
                format!("{cul} answered {client}'s SYN with RST: nothing listens on that port there, or a firewall rejects it in its name."),
            )
            .fingerprint(Fingerprint::of_packet("the RST", p)),
        );
    } else if c.flow.state == crate::tcp::ConnState::SynReceived
        && p.has(ACK)
        && c.flow.client_side() == Some(s)
    {
        // The third segment: Wireshark's first RTT is SYN → this ACK.
        if c.flow.rtt_ns().is_none() {
            if let Some(t) = c.extra_ref().and_then(|x| x.syn_ns) {
                let rtt = now.saturating_sub(t);
                c.flow.set_rtt_ns(Some(rtt));
                c.rtt_samples.push(rtt);
            }
        }
    }
}

/// A service seen answering a handshake (its SYN-ACK) at a vantage: what tells a service's
/// black hole (a filter in front of it, or the service down) from a dead path
/// (`service_blackhole`, made by the aggregator from these notes in time order).
#[derive(Clone, Debug, PartialEq)]
pub struct PathNote {
    pub at_ns: u64,
    pub vantage: String,
    pub service: (std::net::IpAddr, u16),
}

/// Which services answered lately, per vantage: four slots chosen by the service's hash,
/// each holding the service that last answered there. An engine refreshes a slot (and sends
/// a [`PathNote`]) at most every [`AnswerSlots::REFRESH_NS`] of packet time, so a busy path
/// costs a few notes a second, not one per connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct AnswerSlots([(u64, u64); 4]);

impl AnswerSlots {
    pub const REFRESH_NS: u64 = 50_000_000;

    /// A hash of the service, never 0 (0 marks an empty slot).
    fn id((addr, port): (std::net::IpAddr, u16)) -> u64 {
        let a = match addr {
            std::net::IpAddr::V4(a) => u128::from(a.to_bits()),
            std::net::IpAddr::V6(a) => a.to_bits(),
        };
        let h = (a as u64 ^ (a >> 64) as u64 ^ u64::from(port) << 48)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h | 1
    }

    /// `service` answered at `now_ns`: recorded if its slot is empty or older than
    /// [`Self::REFRESH_NS`]; returns whether it was (the engine sends a note then).
    pub fn refresh(&mut self, service: (std::net::IpAddr, u16), now_ns: u64) -> bool {
        let id = Self::id(service);
        let slot = &mut self.0[(id >> 32) as usize & 3];
        if slot.1 != 0 && now_ns.saturating_sub(slot.1) < Self::REFRESH_NS {
            return false;
        }
        *slot = (id, now_ns.max(1));
        true
    }

    /// `service` answered at `now_ns` (a note): recorded unconditionally.
    pub fn record(&mut self, service: (std::net::IpAddr, u16), now_ns: u64) {
        let id = Self::id(service);
        self.0[(id >> 32) as usize & 3] = (id, now_ns.max(1));
    }

    /// When a service other than `service` last answered.
    pub fn other_than(&self, service: (std::net::IpAddr, u16)) -> Option<u64> {
        let id = Self::id(service);
        self.0.iter().filter(|s| s.1 != 0 && s.0 != id).map(|s| s.1).max()
    }
}

fn syn_unanswered(c: &Ctx<'_>, first_ns: u64, syns: u64) -> Detection {
    let cs = c.flow.client_side().unwrap_or(c.side);
    let now = c.pkt.ts_ns;
    let text = SynUnansweredText {
        client: c.key.endpoint(cs),
        server: c.key.endpoint(1 - cs),
        syns,
        first_ns,
        // Side state: unknown when the pool had no entry for this flow.
        last_syn_ns: c.extra_ref().and_then(|x| x.syn_ns).map(|t| t.max(first_ns).min(now)),
        now_ns: now,
    };
    let cul = Culprit::new(Role::FilterBetween).at(c.key.endpoint(1 - cs));
    let mut d = Detection::deferred(Kind::SynUnanswered, cul, text).detail("syns", syns);
    d.first_ns = Some(first_ns);
    d.count = syns;
    d
}

/// The words of a `syn_unanswered` event, written only when the event is read
/// ([`super::Event::render`]): a SYN flood makes one such event per spoofed SYN, and the
/// aggregator folds nearly all of them into the flood's one event without reading them.
#[derive(Clone, Debug)]
pub struct SynUnansweredText {
    client: (std::net::IpAddr, u16),
    server: (std::net::IpAddr, u16),
    syns: u64,
    first_ns: u64,
    last_syn_ns: Option<u64>,
    /// When the flow was reported.
    now_ns: u64,
}

impl SynUnansweredText {
    /// Adds the culprit's evidence and returns the explanation.
    pub fn write(&self, cul: &mut Culprit) -> String {
        let client = super::endpoint_str(self.client.0, self.client.1);
        let server = super::endpoint_str(self.server.0, self.server.1);
        let syns = self.syns;
        let secs = |ns: u64| ns as f64 / 1e9;
        // A wait under 1 ms (the handshake timeout falling on the last SYN itself) is none
        // to speak of.
        let wait = |w: u64, from: &str| match w {
            w if w < 1_000_000 => String::new(),
            w => format!(" in the {:.1} s after the {from}", secs(w)),
        };
        let (sent, waited) = match self.last_syn_ns {
            Some(last) => (
                format!(" over {:.1} s", secs(last.saturating_sub(self.first_ns))),
                wait(self.now_ns.saturating_sub(last), "last"),
            ),
            // Without the last SYN's time, the wait is told from the first.
            None => (String::new(), wait(self.now_ns.saturating_sub(self.first_ns), "first")),
        };
        cul.evidence.push(format!("{syns} SYN(s){sent}"));
        cul.evidence.push(format!("no SYN-ACK and no RST seen{waited}"));
        format!(
            "{client}'s SYN to {server} was sent {syns} time(s){sent} and not answered (no SYN-ACK, no RST){waited}: {cul} drops it silently (firewall, ACL, black-holed route), or {server} is down.",
        )
    }
}

fn synack_unacked(c: &Ctx<'_>, first_ns: u64, how: &str) -> Detection {
    let cs = c.flow.client_side().unwrap_or(0);
    let server = c.endpoint(1 - cs);
    let client = c.endpoint(cs);
    let cul = Culprit::new(Role::FilterBetween)
        .at(c.key.endpoint(cs))
        .evidence(format!("the SYN-ACK {how}"))
        .evidence("no ACK from the client seen");
    let mut d = Detection::new(
        Kind::SynackUnacked,
        cul.clone(),
        format!("{server}'s SYN-ACK to {client} {how} and {client} never completed the handshake: the SYN-ACK or the client's ACK is lost on the way, at {cul} (asymmetric routing, a stateful device seeing one direction)."),
    );
    d.first_ns = Some(first_ns);
    d
}

/// A SYN or SYN-ACK with a new ISN starts its sender's sequence space afresh: an ISN that
/// lies "behind" the old connection's (in wrapping order) must not make the new connection's
/// segments look like retransmissions of the old one, nor its ACKs like ACKs from the past.
fn new_sequence_space(c: &mut Ctx<'_>) {
    let d = &mut c.flow.dirs[c.side];
    d.next_seq = c.pkt.seq;
    d.flags &= !dir_flags::DATA_OR_ACK;
}

/// Keeps the sequence spaces the tuple carried before this SYN (a connection both sides
/// exchanged data or ACKs on), for [`collision`].
fn remember_other_space(c: &mut Ctx<'_>) {
    let p = c.pkt;
    let s = c.side;
    let d = &c.flow.dirs;
    if d[0].flags & dir_flags::DATA_OR_ACK == 0 || d[1].flags & dir_flags::DATA_OR_ACK == 0 {
        return;
    }
    let isn = |i: usize| (d[i].flags & dir_flags::SYN != 0).then_some(d[i].isn.0);
    let space = OtherSpace {
        next: [d[0].next_seq, d[1].next_seq],
        isn: [isn(0), isn(1)],
        new_isn: p.seq.0,
        new_side: s as u8,
    };
    if let Some(x) = c.extra() {
        x.other_space = Some(Box::new(space));
    }
}

/// A segment outside the current connection's window that continues the connection the tuple
/// carried before (see [`remember_other_space`]): two connections share the tuple. Reported
/// once as `tuple_reuse`, naming both sequence spaces and both senders; returns whether the
/// segment belongs to the collision (a RST answering it does too).
pub fn collision(c: &mut Ctx<'_>, win: u32) -> bool {
    let p = c.pkt;
    let s = c.side;
    let Some(o) = c.extra_ref().and_then(|x| x.other_space.as_deref().copied()) else {
        return false;
    };
    let ack = p.has(ACK).then_some(p.ack);
    if !o.continues(s, p.seq, ack, win) {
        return false;
    }
    if c.flow.flags & conn_flags::REUSE_REPORTED != 0 {
        return true;
    }
    c.flow.flags |= conn_flags::REUSE_REPORTED;
    let ns = o.new_side as usize;
    let what = if p.has(RST) {
        "RST"
    } else if p.payload_len > 0 {
        "segment"
    } else {
        "ACK"
    };
    let old_isn = o.isn[s];
    let space = |isn: Option<u32>| isn.map_or_else(|| "unseen".to_string(), |i| i.to_string());
    let mut new = Fingerprint::of_side(
        &format!("sender of the new connection (ISN {})", o.new_isn),
        &c.key,
        c.flow,
        ns,
        c.macs,
    );
    new.isn = Some(o.new_isn);
    let mut old = Fingerprint::of_packet(
        &format!("sender continuing the old connection (ISN {})", space(old_isn)),
        p,
    );
    old.isn = old_isn;
    let mut cul = Culprit::new(Role::OtherSender)
        .at((p.src(), p.sport))
        .mac(&p.src_mac)
        .evidence(format!(
            "{what} SEQ {} ACK {} continues the old connection (next SEQ {} / {})",
            p.seq,
            p.ack,
            o.next[s],
            o.next[1 - s]
        ))
        .evidence(format!("the new connection began with ISN {}", o.new_isn));
    if old.mac != new.mac {
        cul = cul.evidence(format!("MAC {} vs the new connection's {}", old.mac, new.mac));
    }
    let new_mac = new.mac.clone();
    let explanation = format!(
        "A {what} from {} continues the connection this tuple carried before (SEQ {} near its next SEQ {}, ISN {}) after a new connection (ISN {}) began on {} ↔ {}: two connections collide on one 4-tuple, and this {what} comes from {cul}. Typical cause: two NAT gateways (or load-balancer paths) mapping different clients onto the same public address and port; the peer's answers to it (a RST) belong to the collision, not to a NAT on the peer's side.",
        c.endpoint(s),
        p.seq,
        o.next[s],
        space(old_isn),
        o.new_isn,
        c.endpoint(s),
        c.endpoint(1 - s),
    );
    let mut d = Detection::new(Kind::TupleReuse, cul, explanation)
        .fingerprint(new)
        .fingerprint(old)
        .detail("new_isn", o.new_isn)
        .detail("old_next_seq", vec![o.next[s].0, o.next[1 - s].0])
        .detail("new_sender_mac", new_mac);
    if let Some(i) = old_isn {
        d = d.detail("old_isn", i);
    }
    d.sub_kind = Some("continued");
    c.found.push(d);
    true
}

fn tuple_reuse(c: &mut Ctx<'_>) {
    let p = c.pkt;
    let s = c.side;
    if c.flow.flags & conn_flags::REUSE_REPORTED != 0 {
        return;
    }
    c.flow.flags |= conn_flags::REUSE_REPORTED;
    let old = Fingerprint::of_side("sender of the live connection", &c.key, c.flow, s, c.macs);
    let mut new = Fingerprint::of_packet("sender of the new SYN", p);
    new.isn = Some(p.seq.0);
    let old_isn = c.flow.dirs[s].isn;
    let had_isn = c.flow.dirs[s].flags & dir_flags::SYN != 0;
    let mut diffs = Vec::new();
    if old.mac != new.mac {
        diffs.push(format!("MAC {} vs {}", old.mac, new.mac));
    }
    if old.ttl != new.ttl {
        diffs.push(format!("TTL {} vs {}", old.ttl, new.ttl));
    }
    let who = if diffs.is_empty() {
        "possibly the same host".to_string()
    } else {
        format!("a different sender ({})", diffs.join(", "))
    };
    let mut cul = Culprit::new(Role::OtherSender).at((p.src(), p.sport)).mac(&p.src_mac).evidence(
        if had_isn {
            format!("new ISN {} while ISN {old_isn} is open", p.seq)
        } else {
            format!("new ISN {} on a connection picked up mid-stream", p.seq)
        },
    );
    for d in &diffs {
        cul = cul.evidence(d.clone());
    }
    let explanation = format!(
        "A SYN with ISN {} arrived on {} ↔ {} while the connection {} is still open: two connections collide on one 4-tuple — {who}; the new one comes from {cul}. Typical cause: two independent NAT/load-balancer paths mapping different clients onto the same source address and port.",
        p.seq,
        c.endpoint(s),
        c.endpoint(c.other()),
        if had_isn { format!("with ISN {old_isn}") } else { "picked up mid-stream".to_string() },
    );
    let mut d = Detection::new(Kind::TupleReuse, cul, explanation)
        .fingerprint(old)
        .fingerprint(new)
        .detail("new_isn", p.seq.0);
    if had_isn {
        d = d.detail("old_isn", old_isn.0);
    }
    d = d.detail("new_sender_mac", mac_str(&p.src_mac));
    c.found.push(d);
}

/// SYNs (the first and its retransmissions) after which an unanswered handshake is reported
/// without waiting out the handshake timeout.
pub const SYN_TRIES: u8 = 3;
/// How long the last of those SYNs may wait for its SYN-ACK before the flow is reported:
/// RFC 6298's initial RTO (1 s), after which the sender itself counts the SYN lost. The
/// report waits because the SYN-ACK to that very SYN may still come: under 1 % random loss
/// the first two SYNs of a connection are sometimes both lost, and Linux's first SYN
/// retransmissions come 1 s apart (`tcp_syn_linear_timeouts`), before a 3 s timeout.
pub const SYN_ANSWER_GRACE_NS: u64 = 1_000_000_000;

/// Whether the flow's SYN was sent [`SYN_TRIES`] times or more and is still unanswered, and
/// (for a packet just seen) whether that packet counted as one of them (`syns_before`: the
/// count before it; 0 to ask only about the flow): the engine then arms the grace of
/// [`SYN_ANSWER_GRACE_NS`], and reports the flow if nothing came when the grace after the
/// last SYN runs out, or when the flow leaves the table before.
pub fn syn_retried_unanswered(flow: &crate::flow::FlowRecord, syns_before: u8) -> bool {
    flow.syns() > syns_before
        && flow.syns() >= SYN_TRIES
        && flow.state == crate::tcp::ConnState::SynSent
        && flow.flags & (conn_flags::SYNACK_SEEN | conn_flags::HANDSHAKE_REPORTED) == 0
}

/// Timer rule: a handshake still incomplete `handshake_timeout` after it began; and (the
/// engine checks [`syn_retried_unanswered`] first) a SYN sent three times or more still
/// unanswered [`SYN_ANSWER_GRACE_NS`] after the last, or when its flow leaves the table.
pub fn on_timeout(c: &mut Ctx<'_>) {
    if c.flow.flags & conn_flags::HANDSHAKE_REPORTED != 0 {
        return;
    }
    match c.flow.state {
        crate::tcp::ConnState::SynSent if c.flow.flags & conn_flags::SYNACK_SEEN == 0 => {
            c.flow.flags |= conn_flags::HANDSHAKE_REPORTED;
            let first = c.extra_ref().and_then(|x| x.syn_first_ns).unwrap_or(c.first_ns);
            let d = syn_unanswered(c, first, c.flow.syns() as u64);
            c.found.push(d);
        }
        crate::tcp::ConnState::SynReceived => {
            c.flow.flags |= conn_flags::HANDSHAKE_REPORTED;
            let first = c.extra_ref().and_then(|x| x.synack_first_ns).unwrap_or(c.pkt.ts_ns);
            let d = synack_unacked(c, first, "got no ACK within the handshake timeout");
            c.found.push(d);
        }
        _ => {}
    }
}
