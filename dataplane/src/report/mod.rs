//! The incident as a picture (docs/report.md): one self-contained HTML page per evidence file
//! — a ladder diagram of its frames, the Stevens time–sequence graph for the retransmission
//! family, and each detection's explanation and thresholds — and an index of every detection.
//! Pages follow evidence: a detection without an evidence file (rate-limited, or an aggregate)
//! gets an index row and no page, so the pages written are bounded by the evidence budget and
//! go when retention removes their evidence file.
//!
//! Built from the events as JSON (what `run`, `analyze` and the lab all hold) and the evidence
//! file read back: used by all three, so it lives beside the evidence writer.
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::anomaly::{Culprit, Kind};

mod html;
pub mod ladder;
mod stevens;

pub use html::{escape, CSP};

/// Rows the index lists at most; the rest are counted in its last line.
pub const INDEX_ROWS: usize = 10_000;

/// One detection as the report reads it from its event (docs/events.md).
#[derive(Clone, Debug)]
pub struct Detection {
    pub kind: String,
    pub sub_kind: Option<String>,
    pub time: String,
    pub time_ns: u64,
    /// The connection's originator and responder (`src_ip`/`dest_ip`): the ladder's left and
    /// right columns.
    pub client: (IpAddr, u16),
    pub server: (IpAddr, u16),
    pub vantage: String,
    pub culprit: Culprit,
    pub explanation: String,
    pub details: serde_json::Map<String, serde_json::Value>,
    /// The evidence file and the 1-based number of the triggering packet inside it.
    pub evidence: Option<(PathBuf, u32)>,
}

#[derive(Deserialize)]
struct EventJson {
    kind: String,
    sub_kind: Option<String>,
    time_last: String,
    time_last_ns: u64,
    src_ip: IpAddr,
    src_port: u16,
    dest_ip: IpAddr,
    dest_port: u16,
    vantage: String,
    culprit: Culprit,
    explanation: String,
    #[serde(default)]
    details: serde_json::Map<String, serde_json::Value>,
    evidence: Option<EvidenceJson>,
}

#[derive(Deserialize)]
struct EvidenceJson {
    path: PathBuf,
    packets: Vec<u32>,
}

impl Detection {
    /// Reads an event; `None` for anything that is not one (a report is never refused over
    /// one odd line).
    pub fn from_event(v: &serde_json::Value) -> Option<Self> {
        let e = EventJson::deserialize(v).ok()?;
        Some(Self {
            kind: e.kind,
            sub_kind: e.sub_kind,
            time: e.time_last,
            time_ns: e.time_last_ns,
            client: (e.src_ip, e.src_port),
            server: (e.dest_ip, e.dest_port),
            vantage: e.vantage,
            culprit: e.culprit,
            explanation: e.explanation,
            details: e.details,
            evidence: e
                .evidence
                .and_then(|x| Some((x.path, x.packets.first().copied().filter(|&n| n > 0)?))),
        })
    }

    fn kind(&self) -> Option<Kind> {
        Kind::from_name(&self.kind)
    }

    /// The retransmission family, whose pages carry the time–sequence graph
    /// (docs/detections.md, "Loss and reordering").
    fn wants_stevens(&self) -> bool {
        matches!(
            self.kind(),
            Some(
                Kind::Retransmission | Kind::RetransmissionStorm | Kind::OutOfOrder | Kind::DupAck
            )
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("reading the evidence file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("the evidence file {path} is not one wirewatch wrote: {why}")]
    NotEvidence { path: String, why: String },
    #[error("writing the report {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// The page of an evidence file: `<stem>.html` in `dir`.
pub fn page_path(dir: &Path, evidence: &Path) -> PathBuf {
    let stem = evidence
        .file_stem()
        .map(std::ffi::OsStr::to_os_string)
        .unwrap_or_else(|| "evidence".into());
    let mut name = stem;
    name.push(".html");
    dir.join(name)
}

/// Writes the page of one evidence file into `dir` for the `detections` that name it, and
/// returns its path.
pub fn write_page(
    dir: &Path,
    evidence: &Path,
    detections: &[&Detection],
) -> Result<PathBuf, ReportError> {
    let frames = ladder::read_evidence(evidence)?;
    let page = html::page(evidence, &link_to(dir, evidence), &frames, detections);
    let out = page_path(dir, evidence);
    write_atomic(&out, &page)?;
    Ok(out)
}

/// Writes `dir/index.html` and one page per evidence file the `events` name; returns the index
/// path. `omitted` counts detections the caller did not keep (past [`INDEX_ROWS`] without
/// evidence). A page that cannot be made (its evidence file gone, say) leaves its rows without
/// a link and is named in the index, never a failed report.
pub fn write_report(
    dir: &Path,
    events: &[serde_json::Value],
    omitted: u64,
) -> Result<PathBuf, ReportError> {
    std::fs::create_dir_all(dir)
        .map_err(|source| ReportError::Write { path: dir.display().to_string(), source })?;
    let mut detections: Vec<Detection> = events.iter().filter_map(Detection::from_event).collect();
    detections.sort_by(|a, b| (&a.kind, a.time_ns).cmp(&(&b.kind, b.time_ns)));
    let mut files: Vec<&Path> =
        detections.iter().filter_map(|d| d.evidence.as_ref().map(|e| e.0.as_path())).collect();
    files.sort();
    files.dedup();
    let mut pages = std::collections::HashMap::new();
    let mut failed = Vec::new();
    for f in files {
        let of_file: Vec<&Detection> =
            detections.iter().filter(|d| d.evidence.as_ref().is_some_and(|e| e.0 == f)).collect();
        match write_page(dir, f, &of_file) {
            Ok(p) => {
                pages.insert(f.to_path_buf(), p);
            }
            Err(e) => failed.push(e.to_string()),
        }
    }
    let index = html::index(&detections, omitted, &pages, &failed);
    let out = dir.join("index.html");
    write_atomic(&out, &index)?;
    Ok(out)
}

/// How a page in `dir` links to `target`: by name beside it, else by its absolute path.
fn link_to(dir: &Path, target: &Path) -> String {
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    match (abs(dir), target.parent().map(abs)) {
        (d, Some(t)) if d == t => {
            target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        }
        _ => abs(target).display().to_string(),
    }
}

fn write_atomic(out: &Path, text: &str) -> Result<(), ReportError> {
    let err = |source| ReportError::Write { path: out.display().to_string(), source };
    let tmp = out.with_extension("html.tmp");
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, out).map_err(err)
}

#[cfg(test)]
mod tests {
    use dataplane_common::tcp_flags::{ACK, RST, SYN};
    use wirewatch_testkit::craft::TcpSegment;

    use super::*;
    use crate::evidence::{EvidenceJob, EvidencePacket};

    const HOSTILE: &str = "<script>alert(1)</script>";

    fn event(kind: &str, t: u64, evidence: Option<(&Path, u32)>) -> serde_json::Value {
        let mut e = serde_json::json!({
            "kind": kind, "time_last": format!("t{t}"), "time_last_ns": t,
            "src_ip": "10.0.0.1", "src_port": 40000, "dest_ip": "10.0.0.2", "dest_port": 80,
            "vantage": HOSTILE,
            "culprit": {"role": "peer", "addr": "10.0.0.2", "port": 80, "mac": null, "evidence": []},
            "explanation": format!("the endpoint 10.0.0.2:80 {HOSTILE}"),
            "details": {"threshold": HOSTILE},
        });
        if let Some((p, n)) = evidence {
            e["evidence"] = serde_json::json!({"path": p, "packets": [n]});
        }
        e
    }

    #[test]
    fn the_index_lists_every_detection_and_pages_follow_evidence() {
        let dir = wirewatch_testkit::tempdir::TempDir::new("report-index");
        let (c, s) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut syn = TcpSegment::new(c, 40000, s, 80);
        syn.flags = SYN;
        let mut rst = TcpSegment::new(s, 80, c, 40000);
        (rst.flags, rst.ack) = (RST | ACK, 1);
        let evidence = dir.join("1-syn_rejected-w0-1.pcapng");
        EvidenceJob {
            path: evidence.clone(),
            packets: [syn.frame(), rst.frame()]
                .into_iter()
                .enumerate()
                .map(|(i, data)| EvidencePacket {
                    id: i as u32,
                    ts_ns: 1_000 + i as u64,
                    vantage: 0,
                    orig_len: data.len() as u32,
                    data,
                    comment: None,
                })
                .collect(),
            after_left: 0,
            after_until_ns: 0,
        }
        .write(&[HOSTILE.to_string()])
        .unwrap();
        let events = [
            event("syn_flood", 5, None),
            event("syn_rejected", 2, Some((&evidence, 2))),
            serde_json::json!({"not": "an event"}),
        ];
        let index = write_report(&dir, &events, 3).unwrap();
        let text = std::fs::read_to_string(&index).unwrap();
        // Two rows by kind (the aggregate without a page), the rest counted.
        let flood = text.find("<td>syn_flood").unwrap();
        let rejected = text.find("<td>syn_rejected").unwrap();
        assert!(flood < rejected, "by kind");
        assert!(text[flood..rejected].contains("<td>—</td>"), "the aggregate has no page");
        assert!(text.contains("href=\"1-syn_rejected-w0-1.html#d-syn_rejected-2\""));
        assert!(text.contains("3 more detection(s) not listed"));
        let page = std::fs::read_to_string(dir.join("1-syn_rejected-w0-1.html")).unwrap();
        for t in [&text, &page] {
            assert!(!t.contains(HOSTILE) && t.contains(&escape(HOSTILE)), "escaped everywhere");
            assert!(t.contains(CSP));
        }
        assert!(page
            .contains(r#"class="arrow trigger rst" data-frame="2" data-trigger="syn_rejected""#));
        assert!(page.contains("culprit: the endpoint 10.0.0.2:80"));
        assert!(
            page.contains(r#"<a href="1-syn_rejected-w0-1.pcapng">"#),
            "the evidence beside it"
        );
    }
}
