//! Loss, delay and flow control: retransmission (rto / fast / spurious), retransmission_storm,
//! out_of_order, dup_ack, ack_unseen_segment, ack_out_of_window, zero_window.
//!
//! The per-packet verdicts follow the order Wireshark's TCP analysis uses, so `analyze` can
//! be checked against tshark packet by packet; where wirewatch differs on purpose, the
//! difference is in the notes of the oracle test.
use dataplane_common::tcp_flags::{ACK, FIN, RST, SYN};

use super::{Ctx, Detection, Kind};
use crate::flow::dir_flags;

/// Per-packet verdict bits (what `analyze --verdicts` writes).
pub mod verdict {
    pub const RETRANSMISSION: u32 = 1 << 0;
    pub const FAST_RETRANSMISSION: u32 = 1 << 1;
    pub const SPURIOUS_RETRANSMISSION: u32 = 1 << 2;
    pub const OUT_OF_ORDER: u32 = 1 << 3;
    pub const DUP_ACK: u32 = 1 << 4;
    pub const ZERO_WINDOW: u32 = 1 << 5;
    pub const ACK_UNSEEN: u32 = 1 << 6;
    pub const KEEP_ALIVE: u32 = 1 << 7;
    pub const WINDOW_UPDATE: u32 = 1 << 8;
    pub const ZERO_WINDOW_PROBE: u32 = 1 << 9;
    pub const ACK_OUT_OF_WINDOW: u32 = 1 << 10;
    /// Suppressed as a span/tap duplicate before any detector saw it.
    pub const MIRROR_DUPLICATE: u32 = 1 << 11;

    /// Each bit's name in `analyze --verdicts`: Wireshark's `tcp.analysis.*` field name where
    /// it has one (`ack_lost_segment` for ACKs of unseen bytes), in bit order.
    pub const NAMES: [(u32, &str); 12] = [
        (RETRANSMISSION, "retransmission"),
        (FAST_RETRANSMISSION, "fast_retransmission"),
        (SPURIOUS_RETRANSMISSION, "spurious_retransmission"),
        (OUT_OF_ORDER, "out_of_order"),
        (DUP_ACK, "duplicate_ack"),
        (ZERO_WINDOW, "zero_window"),
        (ACK_UNSEEN, "ack_lost_segment"),
        (KEEP_ALIVE, "keep_alive"),
        (WINDOW_UPDATE, "window_update"),
        (ZERO_WINDOW_PROBE, "zero_window_probe"),
        (ACK_OUT_OF_WINDOW, "ack_out_of_window"),
        (MIRROR_DUPLICATE, "mirror_duplicate"),
    ];

    /// The names of the bits set in `v`, in bit order.
    pub fn names(v: u32) -> impl Iterator<Item = &'static str> {
        NAMES.iter().filter(move |(b, _)| v & b != 0).map(|(_, n)| *n)
    }
}
use verdict::{
    ACK_OUT_OF_WINDOW, ACK_UNSEEN, DUP_ACK, FAST_RETRANSMISSION, KEEP_ALIVE, OUT_OF_ORDER,
    RETRANSMISSION, SPURIOUS_RETRANSMISSION, WINDOW_UPDATE, ZERO_WINDOW, ZERO_WINDOW_PROBE,
};

/// What `DirState::dup_acks` holds for one sender: Wireshark's per-direction `dupacknum`
/// (packet-tcp.c, tcp_analyze_sequence_number), whether its last segment was a keep-alive
/// (`lastsegmentflags & TCP_A_KEEP_ALIVE`), and whether its last ACK was below its highest.
mod ack_run {
    /// Duplicate ACKs in a row (saturating: only compared with 2).
    pub const COUNT: u8 = 0x1f;
    /// This sender's last ACK was below its highest (`DirState::last_ack`): the capture
    /// reordered its ACKs. Wireshark compares the next one with that last ACK (`lastack`),
    /// so an ACK back at the highest is not at the same point.
    pub const LAST_ACK_BEHIND: u8 = 0x20;
    /// An ACK past everything this sender was seen sending was judged since its ACK last
    /// moved: Wireshark's dupacknum of -1.
    pub const UNSEEN_JUDGED: u8 = 0x40;
    /// This sender's last segment was a keep-alive.
    pub const KEEP_ALIVE_LAST: u8 = 0x80;
}

/// Wireshark's fast-retransmission horizon after the last duplicate ACK.
const FAST_RETX_NS: u64 = 20_000_000;
/// A zero-window episode this long becomes an event (shorter ones are only counted).
pub const ZERO_WINDOW_EVENT_NS: u64 = 500_000_000;

/// Capture completeness in bytes (Zeek's capture_loss counts the same): keeps the holes each
/// side's segments skipped and returns how many bytes this packet's ACK newly acknowledges
/// that the vantage never saw. Runs before [`on_packet`], on the sequence state before it.
///
/// Exact where the flag ([`verdict::ACK_UNSEEN`], Wireshark's single `maxseqtobeacked`) is
/// only a yes/no: segments captured out of order fill the holes they land in, and an ACK
/// captured before the segment after a hole counts that hole once.
pub fn unseen_acked(c: &mut Ctx<'_>) -> u32 {
    let p = c.pkt;
    let (s, o) = (c.side, c.other());
    let d = c.flow.dirs[s];
    let od = c.flow.dirs[o];
    if d.flags & dir_flags::SEEN != 0 && !p.has(RST) {
        if p.payload_len > 0 {
            if let Some(h) = c.extra_mut().and_then(|x| x.holes.as_deref_mut()) {
                h.fill(s, p.seq, p.seq + p.payload_len);
            }
        }
        // What a skip leaves unacknowledged: the peer may have acked part of it already (its
        // ACK was captured before this segment), and that ACK counted it.
        let acked = od.flags & dir_flags::DATA_OR_ACK != 0 && od.last_ack > d.next_seq;
        let from = if acked { od.last_ack } else { d.next_seq };
        if p.seq > from {
            if let Some(x) = c.extra() {
                x.holes.get_or_insert_with(Box::default).add(s, from, p.seq);
            }
        }
    }
    if !p.has(ACK) || p.has(RST) || od.flags & dir_flags::SEEN == 0 {
        return 0;
    }
    let mut unseen = 0;
    if let Some(x) = c.extra_mut() {
        if let Some(h) = x.holes.as_deref_mut() {
            unseen = h.take_below(o, p.ack);
            if h.is_empty() {
                x.holes = None;
            }
        }
    }
    // Beyond everything the peer was seen sending, and beyond what this side acked before.
    let acked_before = d.flags & dir_flags::DATA_OR_ACK != 0;
    let seen_to = if acked_before { od.next_seq.max(d.last_ack) } else { od.next_seq };
    unseen.saturating_add(p.ack.diff(seen_to).max(0) as u32)
}

/// Runs the family for one packet and returns its verdict bits. Updates the sender's
/// sequence tracking (next_seq, last ACK, window, duplicate-ACK run).
pub fn on_packet(c: &mut Ctx<'_>) -> u32 {
    let p = c.pkt;
    let (s, o) = (c.side, c.other());
    let now = p.ts_ns;
    let seglen = p.payload_len;
    let ctl = p.flags & (SYN | FIN | RST) != 0;
    let d = c.flow.dirs[s];
    let od = c.flow.dirs[o];
    let have_next = d.flags & dir_flags::SEEN != 0;
    let other_seen = od.flags & dir_flags::SEEN != 0;
    let mut v = 0u32;

    // Zero-window probe: one byte at next_seq while the peer's window is 0. Wireshark's
    // "ZERO WINDOW PROBE" jumps past the zero-window, keep-alive, window-update and
    // duplicate-ACK checks (packet-tcp.c, tcp_analyze_sequence_number, `goto finished_fwd`).
    if have_next && seglen == 1 && p.seq == d.next_seq && other_seen && od.window == 0 {
        v |= ZERO_WINDOW_PROBE;
    }
    let probe = v & ZERO_WINDOW_PROBE != 0;
    // Zero window: the sender advertises no room (Wireshark: not on SYN/FIN/RST).
    if p.window == 0 && !ctl && !probe {
        v |= ZERO_WINDOW;
    }
    // Keep-alive: ≤ 1 byte one below next_seq.
    if have_next && seglen <= 1 && !ctl && !probe && p.seq == d.next_seq - 1 {
        v |= KEEP_ALIVE;
    }
    let acking = p.has(ACK);
    let same_point = have_next
        && p.seq == d.next_seq
        && acking
        && p.ack == d.last_ack
        && d.dup_acks & ack_run::LAST_ACK_BEHIND == 0;
    if seglen == 0
        && !ctl
        && !probe
        && p.window != 0
        && same_point
        && d.flags & dir_flags::DATA_OR_ACK != 0
    {
        if p.window != d.window {
            v |= WINDOW_UPDATE;
        } else if od.dup_acks & ack_run::KEEP_ALIVE_LAST != 0 {
            // The answer to the peer's keep-alive repeats the last ACK: Wireshark's
            // "KEEP ALIVE ACK" (the peer's lastsegmentflags hold TCP_A_KEEP_ALIVE), checked
            // before "DUPLICATE ACK" and not one.
        } else if v & KEEP_ALIVE == 0 {
            v |= DUP_ACK;
        }
    }
    // ACK for bytes the other side was never seen sending (Wireshark's "ACKED LOST PACKET",
    // against the peer's maxseqtobeacked = what `ackable` returns).
    if acking && other_seen && !p.has(RST) && p.ack > c.ackable(o) {
        if c.ackable(o) < od.next_seq {
            // Past a hole: flag it once; from now on everything the sender was seen sending
            // is ackable (maxseqtobeacked moves up to nextseq).
            v |= ACK_UNSEEN;
            c.clear_lost_mark(o);
        } else {
            // Past everything the peer was seen sending (the capture missed its latest
            // segments or started mid-connection): Wireshark flags this only while the
            // peer's dupacknum is 0 and then sets it to -1, so an idle peer's repeated ACKs
            // (keep-alive answers, window probes) are flagged once until the peer's own ACK
            // moves.
            let run = &mut c.flow.dirs[o].dup_acks;
            if *run & (ack_run::COUNT | ack_run::UNSEEN_JUDGED) == 0 {
                v |= ACK_UNSEEN;
            }
            *run = (*run & ack_run::KEEP_ALIVE_LAST) | ack_run::UNSEEN_JUDGED;
        }
        if p.ack.diff(od.next_seq) as i64 > max_window(&od) as i64 {
            v |= ACK_OUT_OF_WINDOW;
        }
    } else if acking
        && d.flags & dir_flags::DATA_OR_ACK != 0
        && d.last_ack.diff(p.ack) as i64 > max_window(&d) as i64
    {
        // Far below the highest ACK already sent: an ACK from the past.
        v |= ACK_OUT_OF_WINDOW;
    }

    if (seglen > 0 || p.flags & (SYN | FIN) != 0) && v & KEEP_ALIVE == 0 {
        let mut not_advanced = have_next && p.seq < d.next_seq;
        if seglen > 1 && d.next_seq - 1 == p.seq {
            not_advanced = false;
        }
        let other_acked = od.flags & dir_flags::DATA_OR_ACK != 0;
        if seglen > 0 && other_acked && p.seq + seglen <= od.last_ack {
            v |= SPURIOUS_RETRANSMISSION;
        } else if not_advanced {
            let since_dupack = now.saturating_sub(c.first_ns + od.last_us as u64 * 1000);
            let t = now.saturating_sub(c.first_ns + d.next_seq_us as u64 * 1000);
            let ooo_thres = c.flow.rtt_ns().unwrap_or(c.cfg.reorder_default_ns);
            // Wireshark's dupacknum is a guint32 (packet-tcp.h): the -1 an ACK past
            // everything seen leaves in it passes the ">= 2 duplicate ACKs" test too.
            let run = c.flow.dirs[o].dup_acks;
            let dup_acks = run & ack_run::COUNT >= 2 || run & ack_run::UNSEEN_JUDGED != 0;
            if since_dupack < FAST_RETX_NS && dup_acks && od.last_ack == p.seq {
                v |= FAST_RETRANSMISSION;
            } else if d.next_seq != p.seq + p.seq_len() && t < ooo_thres {
                v |= OUT_OF_ORDER;
            } else {
                v |= RETRANSMISSION;
            }
        }
    }

    // A segment beyond next_seq skipped bytes this sensor never saw (capture gap): ACKs up to
    // the old next_seq are fine, beyond it they ack unseen bytes. Otherwise all is ackable.
    if have_next && p.seq > d.next_seq && !p.has(RST) {
        if c.extra_ref().is_none_or(|x| x.lost_mark.is_none()) {
            if let Some(x) = c.extra() {
                x.lost_mark = Some((d.next_seq, s as u8));
            }
        }
    } else if seglen > 0 || p.flags & (SYN | FIN) != 0 {
        // Only a segment covering the hole's start fills it (a retransmission). Segments in
        // order after the hole leave it open until an ACK passes it, as Wireshark keeps
        // maxseqtobeacked at the hole (packet-tcp.c, "ACKed segment that wasn't captured"):
        // in a bulk transfer the next segment comes before the ACK of the missing one.
        let fills = c
            .extra_ref()
            .and_then(|x| x.lost_mark)
            .is_none_or(|(mark, side)| side as usize != s || (p.seq <= mark && end_of(p) > mark));
        if fills {
            c.clear_lost_mark(s);
        }
    }

    // Update the sender's tracking (Wireshark: next_seq advances unless a zero-window probe).
    let end = p.seq + p.seq_len();
    let dm = &mut c.flow.dirs[s];
    if (!have_next || end > dm.next_seq) && v & ZERO_WINDOW_PROBE == 0 {
        dm.next_seq = end;
        dm.next_seq_us = c.now_us;
    }
    // Wireshark's dupacknum: a duplicate ACK counts up (from -1 to 1), a new ACK resets it
    // (one back at the highest after a lower one is new to Wireshark too).
    let behind = dm.dup_acks & ack_run::LAST_ACK_BEHIND != 0;
    let mut run = dm.dup_acks & !(ack_run::KEEP_ALIVE_LAST | ack_run::LAST_ACK_BEHIND);
    if v & DUP_ACK != 0 {
        run = ((run & ack_run::COUNT) + 1).min(ack_run::COUNT);
    } else if acking && (p.ack != dm.last_ack || behind) {
        run = 0;
    }
    if v & KEEP_ALIVE != 0 {
        run |= ack_run::KEEP_ALIVE_LAST;
    }
    let was_behind = behind && !acking;
    if was_behind || acking && dm.flags & dir_flags::DATA_OR_ACK != 0 && p.ack < dm.last_ack {
        run |= ack_run::LAST_ACK_BEHIND;
    }
    dm.dup_acks = run;
    if acking && (dm.flags & dir_flags::DATA_OR_ACK == 0 || p.ack > dm.last_ack) {
        dm.last_ack = p.ack;
    }
    // Only an ACK makes the sender's last ACK meaningful: a Fast Open SYN carries data but no
    // ACK (Wireshark's spurious-retransmission test skips a peer whose lastack is still 0,
    // packet-tcp.c "Check for spurious retransmission").
    if acking {
        dm.flags |= dir_flags::DATA_OR_ACK;
    }
    dm.window = p.window;

    // A retransmitted segment the peer now acknowledges is no longer a storm in the making.
    if acking {
        if let Some(x) = c.extra_mut() {
            if x.retx[o].is_some_and(|(q, _)| p.ack > crate::seq::SeqNumber(q)) {
                x.retx[o] = None;
            }
        }
    }

    if c.in_gap {
        // Our own loss: the sequence state above resynchronises, nothing is concluded.
        return v & (ZERO_WINDOW | KEEP_ALIVE | WINDOW_UPDATE | ZERO_WINDOW_PROBE);
    }
    count_and_report(c, v);
    v
}

fn end_of(p: &crate::packet::TcpPacket) -> crate::seq::SeqNumber {
    p.seq + p.seq_len()
}

fn max_window(sender: &crate::flow::DirState) -> u32 {
    // The largest window this side could have advertised (RFC 7323 §2.3: at most 2^30).
    (65_535u32 << sender.wscale().min(14)).max(65_535)
}

const RETX_ANY: u32 = RETRANSMISSION | FAST_RETRANSMISSION | SPURIOUS_RETRANSMISSION;

fn count_and_report(c: &mut Ctx<'_>, v: u32) {
    let p = c.pkt;
    let s = c.side;
    if v & RETX_ANY != 0 {
        c.count(Kind::Retransmission);
        // Rule: the same segment (same SEQ) retransmitted storm_count times.
        let seq = p.seq.0;
        let n = match c.extra() {
            Some(x) => {
                let n = match x.retx[s] {
                    Some((q, n)) if q == seq => n + 1,
                    _ => 1,
                };
                x.retx[s] = Some((seq, n));
                n
            }
            None => 1,
        };
        if n >= c.cfg.storm_count && c.flow.flags & crate::flow::conn_flags::STORM_REPORTED == 0 {
            c.flow.flags |= crate::flow::conn_flags::STORM_REPORTED;
            c.count(Kind::RetransmissionStorm);
            let from = c.endpoint(s);
            let to = c.endpoint(c.other());
            let cul = super::Culprit::new(super::Role::FilterBetween)
                .at(c.key.endpoint(c.other()))
                .evidence(format!("SEQ {seq} sent {} times, never acknowledged", n + 1));
            let mut det = Detection::new(
                Kind::RetransmissionStorm,
                cul.clone(),
                format!(
                    "{from} sent the segment at SEQ {seq} {} times ({n} retransmissions) and {to} never acknowledged it: {cul} is black-holing data from {from} (or {to} is gone).",
                    n + 1
                ),
            )
            .detail("retransmissions", n);
            det.count = n as u64;
            c.found.push(det);
        }
    }
    if v & OUT_OF_ORDER != 0 {
        c.count(Kind::OutOfOrder);
    }
    if v & DUP_ACK != 0 {
        c.count(Kind::DupAck);
    }
    if v & ACK_UNSEEN != 0 {
        c.count(Kind::AckUnseenSegment);
    }
    if v & ACK_OUT_OF_WINDOW != 0 {
        c.count(Kind::AckOutOfWindow);
    }
    // Zero-window episodes per advertising side: counted on every packet, reported on close.
    let zw = v & ZERO_WINDOW != 0;
    if zw {
        c.count(Kind::ZeroWindow);
    }
    let now = p.ts_ns;
    let probe = v & ZERO_WINDOW_PROBE != 0;
    let o = c.other();
    if zw && c.extra_ref().is_none_or(|x| x.zero_window[s].is_none()) {
        if let Some(x) = c.extra() {
            x.zero_window[s] = Some((now, 0));
        }
    } else if probe {
        // The probe is sent by the other side toward the side advertising zero.
        if let Some((_, n)) = c.extra_mut().and_then(|x| x.zero_window[o].as_mut()) {
            *n += 1;
        }
    } else if !zw && p.flags & (SYN | RST) == 0 {
        if let Some((start, probes)) = c.extra_mut().and_then(|x| x.zero_window[s].take()) {
            let dur = now.saturating_sub(start);
            c.found.push(zero_window_ended(c, s, start, dur, probes));
        }
    }
}

fn zero_window_ended(c: &Ctx<'_>, side: usize, start: u64, dur: u64, probes: u32) -> Detection {
    let who = c.endpoint(side);
    let cul = super::Culprit::new(super::Role::Peer)
        .at(c.key.endpoint(side))
        .evidence(format!("window 0 for {:.3} s, {probes} probe(s)", dur as f64 / 1e9));
    let mut d = Detection::new(
        Kind::ZeroWindow,
        cul.clone(),
        format!(
            "{who} advertised a zero window for {:.3} s ({probes} probe(s)): the application on {cul} stopped reading, so the sender had to wait.",
            dur as f64 / 1e9
        ),
    )
    .detail("duration_s", dur as f64 / 1e9)
    .detail("probes", probes);
    d.first_ns = Some(start);
    d.sub_kind = Some(if dur >= ZERO_WINDOW_EVENT_NS { "long" } else { "short" });
    d
}

/// Zero-window episodes shorter than this are counted but produce no event.
pub fn is_reportable(d: &Detection) -> bool {
    d.kind != Kind::ZeroWindow || d.sub_kind == Some("long")
}
