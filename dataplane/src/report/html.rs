//! The pages as text: HTML with inline SVG and CSS, no script, no fetch (the
//! Content-Security-Policy says so to the browser). Every string that comes from the input —
//! file, vantage and interface names, addresses, MACs, explanations, details — goes through
//! [`escape`] on its way in.
use std::collections::HashMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use dataplane_common::tcp_flags;

use super::ladder::{self, flag_names, Arrow, Column, EvidenceFrame, Looks};
use super::{stevens, Detection, INDEX_ROWS};
use crate::anomaly::{endpoint_str, Kind, Role};

/// Text for HTML element content and quoted attribute values alike.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// No script, no fetch, no frames, no forms: styles inline, images only as data.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:16px 24px;color:#1b1b1b;background:#fff}
h1{font-size:20px;margin:0 0 8px} h2{font-size:16px;margin:20px 0 6px}
table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;vertical-align:top}
td.culprit{color:#c62828}
.detection{border-left:4px solid #d33;padding:2px 12px;margin:12px 0;background:#fafafa}
.explanation{max-width:1000px} .muted{color:#666}
svg text{font:12px ui-monospace,monospace;fill:#1b1b1b}
svg line.col{stroke:#999;stroke-width:1.5} svg .colname{font-weight:bold} svg .coltype{fill:#666}
svg .arrow line{stroke:#2a5ca8;stroke-width:1.6}
svg .arrow.rst line{stroke:#c62828} svg .arrow.lost line{stroke-dasharray:6 4}
svg .arrow.linked line{stroke:#7a7a7a} svg .arrow.undecoded line{stroke:#bbb;stroke-dasharray:2 3}
svg .hl{fill:none} svg .arrow.trigger .hl{fill:#fff3a8;stroke:#e0b400}
svg .mismatch{fill:#c62828;font-weight:bold} svg .culprit{fill:#c62828;font-weight:bold}
svg .lostmark{fill:#c62828;font-weight:bold;font-size:13px}
svg.stevens .axis{stroke:#444} svg.stevens .seg{stroke:#2a5ca8;stroke-width:3}
svg.stevens .seg.trigger{stroke:#c62828} svg.stevens .ack{fill:none;stroke:#2e7d32;stroke-width:1.5}
svg.stevens .window{fill:none;stroke:#e08a00;stroke-width:1.5}
";

fn head(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n",
        escape(title)
    );
}

fn flow_str(d: &Detection) -> String {
    format!("{} → {}", endpoint_str(d.client.0, d.client.1), endpoint_str(d.server.0, d.server.1))
}

/// "kind (sub-kind)", escaped: a detection's heading and its index row's first cell.
fn kind_label(d: &Detection) -> String {
    match &d.sub_kind {
        Some(sub) => format!("{} ({})", escape(&d.kind), escape(sub)),
        None => escape(&d.kind),
    }
}

/// The anchor of a detection on its page.
fn anchor(d: &Detection) -> String {
    let n = d.evidence.as_ref().map_or(0, |e| e.1);
    format!("d-{}-{n}", d.kind)
}

/// The page of one evidence file: each detection that names it, the ladder, and the
/// time–sequence graph when one of them is in the retransmission family.
pub(super) fn page(
    evidence: &Path,
    link: &str,
    frames: &[EvidenceFrame],
    detections: &[&Detection],
) -> String {
    let file = evidence.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut out = String::new();
    let Some(first) = detections.first() else {
        head(&mut out, &file);
        out.push_str("<p>No detection names this evidence file.</p></body></html>\n");
        return out;
    };
    head(&mut out, &format!("wirewatch {} {}", first.kind, flow_str(first)));
    let _ = writeln!(
        out,
        "<h1>{} <span class=\"muted\">{}</span></h1>",
        escape(&first.kind),
        escape(&flow_str(first))
    );
    // What fired, on one line each; the ladder next, the explanations after it.
    out.push_str("<table class=\"fired\"><tr><th>kind</th><th>packet</th><th>culprit</th></tr>");
    for d in detections {
        let _ = write!(
            out,
            "<tr><td><a href=\"#{}\">{}</a></td><td><a href=\"#f{n}\">{n}</a></td><td class=\"culprit\">{}</td></tr>",
            escape(&anchor(d)),
            escape(&d.kind),
            escape(&d.culprit.to_string()),
            n = d.evidence.as_ref().map_or(0, |e| e.1),
        );
    }
    out.push_str("</table>\n");
    // The first lost_between_sensors detection gives the vantages that missed its packet.
    let lost = detections.iter().find(|d| d.kind == Kind::LostBetweenSensors.name());
    let missing: Vec<String> = lost
        .and_then(|d| d.details.get("missing_at"))
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    let lost_frame = lost.and_then(|d| d.evidence.as_ref().map(|e| e.1));
    let l = ladder::layout(frames, first.client, first.server, &missing, lost_frame);
    let _ = writeln!(
        out,
        "<h2>Ladder</h2><p class=\"muted\">{} frames of {}; SEQ/ACK relative as Wireshark shows them; the highlighted row is the packet that fired.</p>",
        frames.len(),
        escape(&file)
    );
    ladder_svg(&mut out, &l, detections);
    for d in detections.iter().filter(|d| d.wants_stevens()) {
        let Some((_, n)) = &d.evidence else { continue };
        let Some(from_client) = frames
            .iter()
            .find(|f| f.number == *n)
            .and_then(|f| f.packet.as_ref())
            .map(|p| (p.src(), p.sport) == d.client)
        else {
            continue;
        };
        if let Some(svg) = stevens::graph(frames, d.client, from_client, *n) {
            let _ = write!(
                out,
                "<h2 id=\"stevens\">Time–sequence graph ({})</h2><p class=\"muted\">Data sent by {}: segments as bars, the peer's ACK and the right edge of its receive window as step lines.</p>\n{svg}\n",
                escape(&d.kind),
                escape(&if from_client { endpoint_str(d.client.0, d.client.1) } else { endpoint_str(d.server.0, d.server.1) }),
            );
            break;
        }
    }
    out.push_str("<h2>Detections</h2>\n");
    for d in detections {
        detection(&mut out, d, link, &file);
    }
    out.push_str("</body></html>\n");
    out
}

fn detection(out: &mut String, d: &Detection, link: &str, file: &str) {
    let _ = write!(
        out,
        "<section class=\"detection\" id=\"{}\"><h3>{}</h3><table>\
         <tr><th>time</th><td>{}</td></tr><tr><th>flow</th><td>{}</td></tr>\
         <tr><th>vantage</th><td>{}</td></tr><tr><th>culprit</th><td class=\"culprit\">{} <span class=\"muted\">({})</span></td></tr>",
        escape(&anchor(d)),
        kind_label(d),
        escape(&d.time),
        escape(&flow_str(d)),
        escape(&d.vantage),
        escape(&d.culprit.to_string()),
        escape(d.culprit.role.name()),
    );
    if let Some((_, n)) = &d.evidence {
        let _ = write!(
            out,
            "<tr><th>evidence</th><td><a href=\"{}\">{}</a>, packet {n}</td></tr>",
            escape(link),
            escape(file)
        );
    }
    out.push_str("</table>");
    let _ = write!(out, "<p class=\"explanation\">{}</p>", escape(&d.explanation));
    if !d.details.is_empty() {
        out.push_str("<h4>Thresholds and details</h4><table>");
        for (k, v) in &d.details {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(&v));
        }
        out.push_str("</table>");
    }
    out.push_str("</section>\n");
}

const LADDER_W: f64 = 1180.0;
const GUTTER: f64 = 150.0;
const MARGIN: f64 = 140.0;
const ROW: f64 = 34.0;

fn looks_line(who: &str, l: &Looks, other: Option<&Looks>) -> String {
    let field = |name: &str, v: String, differs: bool| {
        if differs {
            format!("<tspan class=\"mismatch\">{name} {}</tspan>", escape(&v))
        } else {
            format!("{name} {}", escape(&v))
        }
    };
    let ts = |t: Option<u32>| t.map_or("none".into(), |v| v.to_string());
    let mut s = escape(who);
    let _ = write!(
        s,
        " {}  {}  {}  {}",
        field("MAC", l.mac.clone(), other.is_some_and(|o| o.mac != l.mac)),
        field("TTL", l.ttl.to_string(), other.is_some_and(|o| o.ttl.abs_diff(l.ttl) > 1)),
        field("IP-ID", l.ip_id.to_string(), false),
        field(
            "TSval",
            ts(l.timestamp),
            other.is_some_and(|o| o.timestamp.is_some() != l.timestamp.is_some())
        ),
    );
    s
}

fn ladder_svg(out: &mut String, l: &ladder::Ladder, detections: &[&Detection]) {
    let n = l.columns.len().max(2);
    let colx =
        |i: usize| GUTTER + MARGIN + i as f64 * (LADDER_W - GUTTER - 2.0 * MARGIN) / (n - 1) as f64;
    let t0 = l.arrows.first().map_or(0, |a| a.ts_ns);
    // Rows first: their heights decide the picture's.
    let mut body = String::new();
    let mut y = 70.0;
    for a in &l.arrows {
        y = arrow_svg(&mut body, a, detections, y, t0, &colx);
    }
    let height = y + 10.0;
    let _ = write!(
        out,
        r#"<svg class="ladder" xmlns="http://www.w3.org/2000/svg" width="{LADDER_W}" height="{height}" viewBox="0 0 {LADDER_W} {height}" role="img" aria-label="ladder diagram"><defs><marker id="head" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="context-stroke"/></marker></defs>"#
    );
    for (i, c) in l.columns.iter().enumerate() {
        let (name, class) = match c {
            Column::Endpoint(s) => (s, "column endpoint"),
            Column::Vantage(s) => (s, "column vantage"),
        };
        let x = colx(i);
        let _ = write!(
            out,
            r#"<g class="{class}"><text class="colname" x="{x:.1}" y="20" text-anchor="middle">{}</text><text class="coltype" x="{x:.1}" y="36" text-anchor="middle">{}</text><line class="col" x1="{x:.1}" y1="44" x2="{x:.1}" y2="{:.1}"/></g>"#,
            escape(name),
            if class == "column endpoint" { "endpoint" } else { "vantage" },
            height - 6.0
        );
    }
    out.push_str(&body);
    out.push_str("</svg>\n");
}

/// One arrow; returns the next row's y.
fn arrow_svg(
    out: &mut String,
    a: &Arrow,
    detections: &[&Detection],
    y: f64,
    t0: u64,
    colx: &dyn Fn(usize) -> f64,
) -> f64 {
    let rst = a.tcp.as_ref().is_some_and(|t| t.flags & tcp_flags::RST != 0);
    let triggers: Vec<&&Detection> =
        detections.iter().filter(|d| d.evidence.as_ref().is_some_and(|e| e.1 == a.frame)).collect();
    let mut class = String::from("arrow");
    for (on, c) in [
        (!triggers.is_empty(), " trigger"),
        (rst, " rst"),
        (a.lost, " lost"),
        (a.after.is_some(), " linked"),
        (a.tcp.is_none(), " undecoded"),
    ] {
        if on {
            class.push_str(c);
        }
    }
    let mut attrs = format!(r#"id="f{n}" class="{class}" data-frame="{n}""#, n = a.frame);
    if !triggers.is_empty() {
        let kinds: Vec<&str> = triggers.iter().map(|d| d.kind.as_str()).collect();
        let _ = write!(attrs, r#" data-trigger="{}""#, escape(&kinds.join(" ")));
    }
    if let Some(p) = a.after {
        let _ = write!(attrs, r#" data-after="{p}""#);
    }
    let _ = write!(attrs, r#" data-vantages="{}""#, escape(&a.vantages.join(",")));
    // Extra lines under the arrow: the RST's looks against the flow's, and the culprit.
    let culprits = if rst { culprits_of_rst(a, detections) } else { Vec::new() };
    let extra = if rst { 2 } else { 0 } + culprits.len();
    let height = ROW + 15.0 * extra as f64 + if extra > 0 { 6.0 } else { 0.0 };
    let (x1, x2) = (colx(a.from), colx(a.to));
    let (ya, yb) = (y + 8.0, y + 18.0);
    let _ = write!(out, "<g {attrs}>");
    let _ = write!(
        out,
        r#"<rect class="hl" x="2" y="{:.1}" width="{:.1}" height="{:.1}"/>"#,
        y - 14.0,
        LADDER_W - 4.0,
        height - 4.0
    );
    let _ = write!(
        out,
        r#"<text x="6" y="{:.1}">#{} +{:.6}s</text>"#,
        yb - 4.0,
        a.frame,
        a.ts_ns.saturating_sub(t0) as f64 / 1e9
    );
    let label = match &a.tcp {
        Some(t) => {
            let mut s = format!("{}  Seq={}", flag_names(t.flags), t.rel_seq);
            if let Some(ack) = t.rel_ack {
                let _ = write!(s, " Ack={ack}");
            }
            let _ = write!(s, " Len={} Win={}", t.len, t.window);
            s
        }
        None => "not a TCP frame the decoder reads".into(),
    };
    let vant = if a.vantages.is_empty() {
        String::new()
    } else {
        format!("  @ {}", a.vantages.join(", "))
    };
    let mid = f64::midpoint(x1, x2);
    let _ = write!(
        out,
        r#"<text class="label" x="{mid:.1}" y="{:.1}" text-anchor="middle">{}{}</text>"#,
        y + 2.0,
        escape(&label),
        escape(&vant)
    );
    let _ = write!(
        out,
        r#"<line x1="{x1:.1}" y1="{ya:.1}" x2="{x2:.1}" y2="{yb:.1}" marker-end="url(#head)"/>"#
    );
    if a.lost {
        let _ = write!(
            out,
            r#"<text class="lostmark" x="{:.1}" y="{:.1}">✕ last seen here</text>"#,
            x2 + if x2 > x1 { 6.0 } else { -120.0 },
            yb - 2.0
        );
    }
    let mut line_y = yb + 16.0;
    let lx = GUTTER + 10.0;
    if let Some((this, flow)) = &a.rst_looks {
        let _ = write!(
            out,
            r#"<text class="looks" x="{lx}" y="{line_y:.1}">{}</text>"#,
            looks_line("this RST:", this, flow.as_ref())
        );
        line_y += 15.0;
        let flow_line = match flow {
            Some(f) => looks_line("the flow's:", f, None),
            None => "the flow's: no earlier packet from this sender in the slice".into(),
        };
        let _ = write!(out, r#"<text class="looks" x="{lx}" y="{line_y:.1}">{flow_line}</text>"#);
        line_y += 15.0;
    }
    for c in culprits {
        let _ = write!(
            out,
            r#"<text class="culprit" x="{lx}" y="{line_y:.1}">culprit: {}</text>"#,
            escape(&c)
        );
        line_y += 15.0;
    }
    out.push_str("</g>");
    y + height
}

/// Who a RST arrow is labelled with: the culprit of each detection it triggered, and of each
/// detection that blames a sender (not a path or the sensor) at the address (and port, when
/// named) the RST came from.
fn culprits_of_rst(a: &Arrow, detections: &[&Detection]) -> Vec<String> {
    let Some(t) = &a.tcp else { return Vec::new() };
    let mut out: Vec<String> = Vec::new();
    for d in detections {
        let triggered = d.evidence.as_ref().is_some_and(|e| e.1 == a.frame);
        let sends =
            !matches!(d.culprit.role, Role::FilterBetween | Role::ParallelPaths | Role::Sensor);
        let sender =
            sends && d.culprit.addr == Some(t.src.0) && d.culprit.port.is_none_or(|p| p == t.src.1);
        let c = d.culprit.to_string();
        if (triggered || sender) && !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// The index: one row per detection, by kind and time; floods and scans are one event, so one
/// row each. `pages` maps evidence files to their pages; `failed` names pages not made.
pub(super) fn index(
    detections: &[Detection],
    omitted: u64,
    pages: &HashMap<PathBuf, PathBuf>,
    failed: &[String],
) -> String {
    let mut out = String::new();
    head(&mut out, "wirewatch report");
    let _ = writeln!(
        out,
        "<h1>wirewatch report</h1><p class=\"muted\">{} detection(s), by kind and time. A detection without a page kept no evidence (an aggregate, or over the evidence rate).</p>",
        detections.len() as u64 + omitted
    );
    out.push_str("<table class=\"index\"><tr><th>kind</th><th>time</th><th>flow</th><th>vantage</th><th>culprit</th><th>report</th></tr>\n");
    for d in detections.iter().take(INDEX_ROWS) {
        let page = d.evidence.as_ref().and_then(|(f, n)| Some((pages.get(f)?, n)));
        let link = match page {
            Some((p, n)) => {
                let name =
                    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                format!(
                    "<a href=\"{}#{}\">{}</a> (packet {n})",
                    escape(&name),
                    escape(&anchor(d)),
                    escape(&name)
                )
            }
            None => "—".into(),
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{link}</td></tr>",
            kind_label(d),
            escape(&d.time),
            escape(&flow_str(d)),
            escape(&d.vantage),
            escape(&d.culprit.to_string()),
        );
    }
    out.push_str("</table>\n");
    let unlisted = detections.len().saturating_sub(INDEX_ROWS) as u64 + omitted;
    if unlisted > 0 {
        let _ = writeln!(out, "<p>{unlisted} more detection(s) not listed.</p>");
    }
    for f in failed {
        let _ = writeln!(out, "<p class=\"muted\">No page: {}</p>", escape(f));
    }
    out.push_str("</body></html>\n");
    out
}
