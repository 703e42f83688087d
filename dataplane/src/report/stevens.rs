//! The time–sequence graph (Stevens, TCP/IP Illustrated; Wireshark's "Stevens" flow graph) of
//! one direction of the evidence: each segment a vertical bar from its first to its last byte,
//! the receiver's ACK as a step line, and the receive window's right edge (ACK + window scaled
//! by the shift the receiver's SYN announced) as a second step line.
use std::fmt::Write;

use dataplane_common::tcp_flags;

use super::ladder::{EvidenceFrame, Relative};

const W: f64 = 960.0;
const H: f64 = 300.0;
const PAD: f64 = 48.0;

/// The SVG for the data sent by the side `from_client` says, or `None` when the slice holds
/// no data in that direction.
pub(super) fn graph(
    frames: &[EvidenceFrame],
    client: (std::net::IpAddr, u16),
    from_client: bool,
    trigger: u32,
) -> Option<String> {
    let mut rel = Relative::default();
    // (frame, t, rel_seq, len) of the data; (t, rel_ack, right window edge) of the ACKs back.
    let mut segs = Vec::new();
    let mut acks = Vec::new();
    // The receiver's window shift, known only if its SYN is in the slice (RFC 7323 §2.3:
    // the shift applies to every segment after the SYN).
    let mut shift: Option<u8> = None;
    for f in frames {
        let Some(p) = &f.packet else { continue };
        let sent_by_client = (p.src(), p.sport) == client;
        let (seq, ack) = rel.of(p, sent_by_client);
        if sent_by_client == from_client {
            if p.payload_len > 0 {
                segs.push((f.number, f.ts_ns, seq, p.payload_len));
            }
        } else {
            if p.has(tcp_flags::SYN) {
                shift = p.opts.wscale.map(|s| s.min(14));
                continue;
            }
            if let Some(a) = ack {
                let win = u64::from(p.window) << shift.unwrap_or(0);
                acks.push((f.ts_ns, a, a + win as i64));
            }
        }
    }
    if segs.is_empty() {
        return None;
    }
    let t0 = segs.iter().map(|s| s.1).chain(acks.iter().map(|a| a.0)).min()?;
    let t1 = segs.iter().map(|s| s.1).chain(acks.iter().map(|a| a.0)).max()?.max(t0 + 1);
    let y0 = segs.iter().map(|s| s.2).chain(acks.iter().map(|a| a.1)).min()?;
    let y1 = segs
        .iter()
        .map(|s| s.2 + i64::from(s.3))
        .chain(acks.iter().map(|a| a.2))
        .max()?
        .max(y0 + 1);
    let x = |t: u64| PAD + (t - t0) as f64 / (t1 - t0) as f64 * (W - 2.0 * PAD);
    let y = |s: i64| H - PAD - (s - y0) as f64 / (y1 - y0) as f64 * (H - 2.0 * PAD);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="stevens" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="time-sequence graph">"#
    );
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{PAD}" y1="{b}" x2="{r}" y2="{b}"/><line class="axis" x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{b}"/>"#,
        b = H - PAD,
        r = W - PAD
    );
    let _ = write!(
        svg,
        r#"<text x="{PAD}" y="{ty}">0 s</text><text x="{rx}" y="{ty}" text-anchor="end">+{dt:.6} s</text><text x="4" y="{yb}">{y0}</text><text x="4" y="{yt}">{y1}</text>"#,
        ty = H - PAD + 16.0,
        rx = W - PAD,
        dt = (t1 - t0) as f64 / 1e9,
        yb = H - PAD,
        yt = PAD + 4.0,
    );
    for pts in [
        acks.iter().map(|a| (a.0, a.1)).collect::<Vec<_>>(),
        acks.iter().map(|a| (a.0, a.2)).collect(),
    ]
    .iter()
    .zip(["ack", "window"])
    {
        let (pts, class) = pts;
        if pts.is_empty() {
            continue;
        }
        // A step line: each value holds until the next ACK.
        let mut d = String::new();
        for (i, &(t, v)) in pts.iter().enumerate() {
            if i == 0 {
                let _ = write!(d, "M{:.1},{:.1} ", x(t), y(v));
            } else {
                let _ = write!(d, "H{:.1} V{:.1} ", x(t), y(v));
            }
        }
        let _ = write!(d, "H{:.1}", x(t1));
        let _ = write!(svg, r#"<path class="{class}" d="{d}"/>"#);
    }
    for &(n, t, s, len) in &segs {
        let class = if n == trigger { "seg trigger" } else { "seg" };
        let _ = write!(
            svg,
            r#"<line class="{class}" data-segment="{n}" x1="{px:.1}" y1="{a:.1}" x2="{px:.1}" y2="{b:.1}"><title>frame {n}: SEQ {s}, {len} bytes</title></line>"#,
            px = x(t),
            a = y(s),
            b = y(s + i64::from(len)),
        );
    }
    svg.push_str(
        r#"<text class="legend" x="700" y="20">| segment  — ACK  — receive window</text></svg>"#,
    );
    Some(svg)
}
