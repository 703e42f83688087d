//! How the vantages of one analysis relate: serial (one link behind the other, so a packet
//! seen at one and not the other was lost between them) or parallel (side by side, each with
//! its own share of the traffic). `analyze` learns it in a first pass over the start of the
//! input, so every worker judges losses the same way from the first packet; `--serial A,B`
//! names a pair serial whatever the traffic says.
use std::path::PathBuf;

use anyhow::{bail, Result};
use dataplane::anomaly::paths::{Relation, VantageMatcher, VantageRelations};
use dataplane::capture::{CaptureError, CaptureReader, CapturedFrame};
use dataplane::packet::decode;

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
}

/// Reads the start of every file in time order and matches packets across them, as the
/// engine will, to judge each pair of vantages.
pub fn first_pass(
    files: &[PathBuf],
    serial: &[(u16, u16)],
    window_ns: u64,
) -> Result<FirstPass, CaptureError> {
    let mut relations = VantageRelations::default();
    for &(a, b) in serial {
        relations.force_serial(a, b);
    }
    let mut matcher = VantageMatcher::with_relations(relations, true);
    let mut readers = Vec::with_capacity(files.len());
    for f in files {
        readers.push(CaptureReader::open(f)?);
    }
    let mut slots: Vec<Option<CapturedFrame>> = Vec::with_capacity(files.len());
    // A file cut short ends at its cut here too (the analysis warns about it).
    let next = |r: &mut CaptureReader<_>, f: &mut CapturedFrame| match r.next_frame_into(f) {
        Err(CaptureError::Truncated { .. }) => Ok(false),
        other => other,
    };
    for r in &mut readers {
        let mut f = CapturedFrame::default();
        slots.push(if next(r, &mut f)? { Some(f) } else { None });
    }
    let mut read = 0u64;
    let mut last_expire = 0u64;
    // Few files: a linear scan for the earliest frame is cheaper than a heap.
    while let Some(v) = (0..slots.len())
        .filter(|&v| slots[v].is_some())
        .min_by_key(|&v| slots[v].as_ref().map_or(u64::MAX, |f| f.ts_ns))
    {
        if read >= FIRST_PASS_FRAMES {
            matcher.finish(files.len());
            return Ok(FirstPass { relations: matcher.relations, complete: false });
        }
        read += 1;
        let f = slots[v].as_mut().expect("chosen because it holds a frame");
        if let Ok(p) = decode(&f.data, f.orig_len, f.ts_ns, v as u16) {
            matcher.observe(&p, 0, 0);
            if p.ts_ns.saturating_sub(last_expire) >= 10_000_000 {
                last_expire = p.ts_ns;
                matcher.expire(p.ts_ns, window_ns, files.len());
            }
        }
        if !next(&mut readers[v], f)? {
            slots[v] = None;
        }
    }
    matcher.finish(files.len());
    Ok(FirstPass { relations: matcher.relations, complete: true })
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
