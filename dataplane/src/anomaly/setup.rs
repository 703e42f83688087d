//! Connection setup: syn_unanswered, syn_rejected, synack_unacked, tuple_reuse.
use dataplane_common::tcp_flags::{ACK, RST, SYN};

use super::{mac_str, Ctx, Detection, Fingerprint, Kind};
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
            tuple_reuse(c);
            return;
        }
        if c.flow.state.is_open()
            && !had_syn
            && c.flow.flags & conn_flags::MIDSTREAM != 0
            && c.flow.dirs[s].flags & dir_flags::SEEN != 0
        {
            // A SYN on a flow we picked up mid-stream with data already flowing from this side.
            tuple_reuse(c);
            return;
        }
        if !same_isn || c.flow.state.is_closed() {
            // A new connection (first SYN, or a new incarnation after a close).
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
            if let Some(x) = c.extra() {
                x.syn_first_ns = Some(now);
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
        // Rule: the SYN and at least two retransmissions, never answered.
        if c.flow.syns() >= 3
            && c.flow.flags & (conn_flags::SYNACK_SEEN | conn_flags::HANDSHAKE_REPORTED) == 0
        {
            c.flow.flags |= conn_flags::HANDSHAKE_REPORTED;
            let first = c.extra_ref().and_then(|x| x.syn_first_ns).unwrap_or(c.first_ns);
            c.found.push(syn_unanswered(c, first, c.flow.syns() as u64));
        }
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
        let server = c.endpoint(s);
        c.flow.flags |= conn_flags::HANDSHAKE_REPORTED;
        c.found.push(
            Detection::new(
                Kind::SynRejected,
                format!("{server} answered {client}'s SYN with RST: nothing listens on that port there, or a firewall rejects it."),
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

fn syn_unanswered(c: &Ctx<'_>, first_ns: u64, syns: u64) -> Detection {
    let client = c.endpoint(c.flow.client_side().unwrap_or(c.side));
    let server = c.endpoint(1 - c.flow.client_side().unwrap_or(c.side));
    let mut d = Detection::new(
        Kind::SynUnanswered,
        format!(
            "{client}'s SYN to {server} was sent {syns} time(s) over {:.1} s and never answered (no SYN-ACK, no RST): something between this sensor and {server} drops it silently (firewall, ACL, black-holed route).",
            (c.pkt.ts_ns.saturating_sub(first_ns)) as f64 / 1e9
        ),
    )
    .detail("syns", syns);
    d.first_ns = Some(first_ns);
    d.count = syns;
    d
}

fn synack_unacked(c: &Ctx<'_>, first_ns: u64, how: &str) -> Detection {
    let server = c.endpoint(1 - c.flow.client_side().unwrap_or(0));
    let client = c.endpoint(c.flow.client_side().unwrap_or(0));
    let mut d = Detection::new(
        Kind::SynackUnacked,
        format!("{server}'s SYN-ACK to {client} {how} and {client} never completed the handshake: the SYN-ACK or the client's ACK is lost on the way."),
    );
    d.first_ns = Some(first_ns);
    d
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
    let explanation = format!(
        "A SYN with ISN {} arrived on {} ↔ {} while the connection {} is still open: two connections collide on one 4-tuple — {who}. Typical cause: two independent NAT/load-balancer paths mapping different clients onto the same source address and port.",
        p.seq,
        c.endpoint(s),
        c.endpoint(c.other()),
        if had_isn { format!("with ISN {old_isn}") } else { "picked up mid-stream".to_string() },
    );
    let mut d = Detection::new(Kind::TupleReuse, explanation)
        .fingerprint(old)
        .fingerprint(new)
        .detail("new_isn", p.seq.0);
    if had_isn {
        d = d.detail("old_isn", old_isn.0);
    }
    d = d.detail("new_sender_mac", mac_str(&p.src_mac));
    c.found.push(d);
}

/// Timer rule: a handshake still incomplete `handshake_timeout` after it began.
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
