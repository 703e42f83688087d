//! `wirewatch analyze`'s arguments.
use std::path::PathBuf;

use clap::{Args, ValueEnum};

#[derive(Args, Debug, Clone)]
pub struct AnalyzeArgs {
    /// pcap or pcapng files, plain or compressed with gzip or zstd (told by their first
    /// bytes); `-` reads standard input. Several files are several vantage points of the same
    /// traffic (e.g. both sides of a firewall): packets are matched across them.
    /// Files of one sensor rotated by size or time (`tcpdump -C/-G`, editcap: the same link
    /// type and snap length, pcapng the same interface name, time ranges that do not overlap)
    /// are one vantage, read in time order; the summary lists them.
    #[arg(required_unless_present = "vantage", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// One vantage made of these files, read one after the other in time order, named NAME
    /// in events and the summary. Repeatable; overrides the automatic grouping for the files
    /// it names.
    #[arg(long = "vantage", value_name = "NAME=FILE,FILE…",
          value_parser = crate::cli::options::vantage_arg)]
    pub vantage: Vec<(String, Vec<PathBuf>)>,
    /// Worker threads, 1 to 64; flows are sharded over them (default: one per CPU, at most 64).
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = crate::cli::options::whole::<usize>(1, 64, "workers"))]
    pub workers: Option<usize>,
    /// Write every event as one JSON object per line here (`-` for stdout; the summary then
    /// goes to stderr).
    #[arg(long, value_name = "OUT.jsonl")]
    pub events: Option<PathBuf>,
    /// Keep evidence: a pcapng slice per detection, headers only, with the triggering packet
    /// commented (open it in Wireshark). Its packets before the detection come from a history
    /// of recent headers (64 MiB, shared by the workers) kept only with this option or
    /// --report: without them the analysis copies no frame and uses far less memory.
    #[arg(long, value_name = "DIR")]
    pub evidence_dir: Option<PathBuf>,
    /// Draw each detection: DIR/index.html lists them by kind and time, and each evidence
    /// file gets a page (`<evidence name>.html`: the ladder of its packets, the time–sequence
    /// graph for retransmissions, the explanation and thresholds). Self-contained HTML, no
    /// script; open it in any browser. Pages follow evidence: without --evidence-dir the
    /// evidence is kept in DIR too, and a detection over --evidence-rate gets an index row
    /// and no page (docs/report.md).
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Evidence files written per second of capture time at most, 0.1 to 100000, or
    /// `unlimited` (offline, every detection can keep its evidence).
    #[arg(long, value_name = "N|unlimited", default_value = "10",
          value_parser = evidence_rate)]
    pub evidence_rate: f64,
    /// Summary format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write each TCP packet's analysis flags (retransmission, out_of_order, dup_ack,
    /// zero_window, ack_unseen_segment…) as `vantage frame flags` lines, to compare with
    /// tshark's tcp.analysis.* fields.
    #[arg(long, value_name = "OUT.tsv")]
    pub verdicts: Option<PathBuf>,
    /// Two vantages (file names, as the summary shows them) that are serial: one link behind
    /// the other, such as either side of a firewall, so a packet seen at one and never at the
    /// other was lost between them. Repeatable. Without it, pairs are judged from the traffic:
    /// serial when ≥ 90 % of the packets of connections both carry reach both; parallel (two
    /// backends of one VIP) otherwise, and then no loss is inferred between them. A remote
    /// mirror's sessions inside a file (ERSPAN session, VNI, GRE key, from each sender) are
    /// vantages of their own, named FILE/KIND:SESSION@SENDER; their pairs are judged from the
    /// traffic.
    #[arg(long = "serial", value_name = "A,B", value_parser = crate::cli::options::serial_pair)]
    pub serial: Vec<(String, String)>,
    /// Analyse only the TCP packets this pcap-filter expression matches: `[src|dst] host ADDR`,
    /// `[src|dst] net ADDR/LEN`, `[src|dst] port N`, `vlan [ID]`, joined by and/or/not and
    /// parentheses (and/or of equal precedence, left to right, as in pcap-filter), at most 8
    /// primitives; tunnelled frames are judged by their innermost headers.
    #[arg(long, value_name = "EXPR", value_parser = |s: &str| dataplane::filter::Filter::parse(s).map_err(|e| e.to_string()))]
    pub filter: Option<dataplane::filter::Filter>,
    #[command(flatten)]
    pub thresholds: crate::cli::thresholds::Thresholds,
    #[command(flatten)]
    pub event_fields: crate::cli::event_fields::EventFields,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// `--evidence-rate`: a bounded rate, or `unlimited`.
fn evidence_rate(s: &str) -> Result<f64, String> {
    if s.eq_ignore_ascii_case("unlimited") {
        return Ok(f64::INFINITY);
    }
    match s.parse::<f64>() {
        Ok(v) if (0.1..=100_000.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?}: give evidence files per second, 0.1 to 100000, or unlimited")),
    }
}
