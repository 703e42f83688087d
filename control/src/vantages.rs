//! How the vantages of one analysis relate: serial (one link behind the other, so a packet
//! seen at one and not the other was lost between them) or parallel (side by side, each with
//! its own share of the traffic). `analyze` learns it in a first pass over the start of the
//! input, so every worker judges losses the same way from the first packet; `--serial A,B`
//! names a pair serial whatever the traffic says.
use std::path::PathBuf;

use anyhow::{bail, Result};
use dataplane::anomaly::paths::{Relation, VantageMatcher, VantageRelations};
use dataplane::capture::CaptureError;

use crate::sources::Source;

/// The first pass reads at most this many frames (all files together).
pub const FIRST_PASS_FRAMES: u64 = 2_000_000;

/// `--serial A,B`: two vantage names, comma-separated.
pub fn serial_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once(',') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(',') => {
            if a == b {
                Err(format!("'{s}' names one vantage twice; name two different ones"))
            } else {
                Ok((a.to_string(), b.to_string()))
            }
        }
        _ => Err(format!(
            "'{s}' is not two vantage names separated by a comma (e.g. outside.pcap,inside.pcap)"
        )),
    }
}

/// The `--serial` pairs as vantage indices; an unknown name is an error listing the names.
pub fn serial_indices(pairs: &[(String, String)], names: &[String]) -> Result<Vec<(u16, u16)>> {
    let index = |n: &str| -> Result<u16> {
        match names.iter().position(|x| x == n) {
            Some(i) => Ok(i as u16),
            None => bail!(
                "--serial names '{n}', which is not a vantage here; the vantages are: {}",
                names.join(", ")
            ),
        }
    };
    pairs.iter().map(|(a, b)| Ok((index(a)?, index(b)?))).collect()
}

/// What the first pass learned, and whether it read the whole input.
pub struct FirstPass {
    pub relations: VantageRelations,
    pub complete: bool,
    /// Each file's first and last packet time, when the pass read them whole.
    pub ranges: Option<Vec<(u64, u64)>>,
}

/// Reads the start of every file in time order (as `analyze` will: re-sorted, cut files
/// read up to the cut) and matches packets across them, as the engine will, to judge each
/// pair of vantages. Standard input cannot be read twice: with it, pairs are judged as the
/// engines go.
pub fn first_pass(
    files: &[PathBuf],
    serial: &[(u16, u16)],
    window_ns: u64,
) -> Result<FirstPass, CaptureError> {
    let mut relations = VantageRelations::default();
    for &(a, b) in serial {
        relations.force_serial(a, b);
    }
    if files.iter().any(|f| f.as_os_str() == "-") {
        return Ok(FirstPass { relations, complete: false, ranges: None });
    }
    let mut matcher = VantageMatcher::with_relations(relations, true);
    let mut sources = Vec::with_capacity(files.len());
    for (v, f) in files.iter().enumerate() {
        sources.push(Source::open(f, f.display().to_string(), v as u16)?);
    }
    let mut heads = Vec::with_capacity(files.len());
    for s in &mut sources {
        heads.push(s.next()?);
    }
    let mut read = 0u64;
    let mut last_expire = 0u64;
    // Few files: a linear scan for the earliest frame is cheaper than a heap.
    while let Some(v) = (0..heads.len())
        .filter(|&v| heads[v].is_some())
        .min_by_key(|&v| heads[v].as_ref().map_or(u64::MAX, |r| r.ts_ns))
    {
        if read >= FIRST_PASS_FRAMES {
            matcher.finish(files.len());
            return Ok(FirstPass { relations: matcher.relations, complete: false, ranges: None });
        }
        read += 1;
        let r = heads[v].take().expect("chosen because it holds a frame");
        if let Ok(p) = &r.pkt {
            matcher.observe(p, 0, 0);
            if p.ts_ns.saturating_sub(last_expire) >= 10_000_000 {
                last_expire = p.ts_ns;
                matcher.expire(p.ts_ns, window_ns, files.len());
            }
        }
        sources[v].recycle(r);
        heads[v] = sources[v].next()?;
    }
    matcher.finish(files.len());
    let ranges = sources
        .iter()
        .map(|s| (s.health.first_ns.unwrap_or(u64::MAX), s.health.last_ns.unwrap_or(0)))
        .collect();
    Ok(FirstPass { relations: matcher.relations, complete: true, ranges: Some(ranges) })
}

/// One line per judged pair, for the summary.
pub fn describe(relations: &VantageRelations, names: &[String]) -> Vec<serde_json::Value> {
    let name = |v: u16| names.get(v as usize).cloned().unwrap_or_else(|| format!("vantage {v}"));
    relations
        .judged()
        .into_iter()
        .map(|(a, b, rel, shared, both)| {
            serde_json::json!({
                "vantages": [name(a), name(b)],
                "relation": match rel {
                    Relation::Serial => "serial",
                    Relation::Parallel => "parallel",
                    Relation::Unknown => "unknown",
                },
                "shared_packets": shared,
                "seen_at_both": both,
            })
        })
        .collect()
}
