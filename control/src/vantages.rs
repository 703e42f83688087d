//! How the vantages of one analysis relate: serial (one link behind the other, so a packet
//! seen at one and not the other was lost between them) or parallel (side by side, each with
//! its own share of the traffic). `analyze` learns it in a first pass over the start of the
//! input, so every worker judges losses the same way from the first packet; `--serial A,B`
//! names a pair serial whatever the traffic says.
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use dataplane::anomaly::paths::VantageMatcher;
use dataplane::capture::CaptureError;
use dataplane::vantage::{Relation, VantageRelations, Vantages};

use crate::sources::Source;

/// The first pass reads at most this many frames (all files together).
pub const FIRST_PASS_FRAMES: u64 = 2_000_000;
/// Packets the first pass keeps waiting for their match (about 250 bytes each); past it,
/// the search span shrinks to `FIRST_PASS_DENSE_WINDOW_NS`.
const FIRST_PASS_PENDING_MAX: usize = 1 << 19;
const FIRST_PASS_DENSE_WINDOW_NS: u64 = 1_000_000_000;

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

/// One vantage of an analysis: its name (as events and the summary show it) and its files,
/// read one after the other in time order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VantageInput {
    pub name: String,
    pub files: Vec<PathBuf>,
}

/// What says two files come from one sensor: how the capture was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Identity {
    pcapng: bool,
    linktype: u32,
    snaplen: u32,
    /// pcapng: the first interface's name (if_name), if it has one.
    if_name: Option<String>,
}

/// The capture parameters in a plain pcap or pcapng file's header (None: compressed, standard
/// input, or unreadable here — such a file stays a vantage of its own).
fn identity(path: &Path) -> Option<Identity> {
    use std::io::Read as _;
    if path.as_os_str() == "-" {
        return None;
    }
    let mut head = Vec::with_capacity(4096);
    std::fs::File::open(path).ok()?.take(65_536).read_to_end(&mut head).ok()?;
    let u32_at = |b: &[u8], at: usize, be: bool| -> Option<u32> {
        let x: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(if be { u32::from_be_bytes(x) } else { u32::from_le_bytes(x) })
    };
    let u16_at = |b: &[u8], at: usize, be: bool| -> Option<u16> {
        let x: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
        Some(if be { u16::from_be_bytes(x) } else { u16::from_le_bytes(x) })
    };
    match u32_at(&head, 0, false)? {
        m @ (0xa1b2_c3d4 | 0xa1b2_3c4d | 0xd4c3_b2a1 | 0x4d3c_b2a1) => {
            let be = matches!(m, 0xd4c3_b2a1 | 0x4d3c_b2a1);
            Some(Identity {
                pcapng: false,
                snaplen: u32_at(&head, 16, be)?,
                linktype: u32_at(&head, 20, be)? & 0x0fff_ffff,
                if_name: None,
            })
        }
        0x0a0d_0d0a => {
            let be = u32_at(&head, 8, false)? != 0x1a2b_3c4d;
            let shb_len = u32_at(&head, 4, be)? as usize;
            // The first interface description block (type 1) after the section header.
            let mut at = shb_len;
            loop {
                let kind = u32_at(&head, at, be)?;
                let len = u32_at(&head, at + 4, be)? as usize;
                if len < 12 || !len.is_multiple_of(4) {
                    return None;
                }
                if kind == 1 {
                    let body = head.get(at + 8..at + len - 4)?;
                    let linktype = u32::from(u16_at(body, 0, be)?);
                    let snaplen = u32_at(body, 4, be)?;
                    let mut if_name = None;
                    let mut o = 8;
                    while o + 4 <= body.len() {
                        let code = u16_at(body, o, be)?;
                        let olen = usize::from(u16_at(body, o + 2, be)?);
                        if code == 0 {
                            break;
                        }
                        if code == 2 {
                            let v = body.get(o + 4..o + 4 + olen)?;
                            if_name = Some(String::from_utf8_lossy(v).into_owned());
                        }
                        o += 4 + olen.div_ceil(4) * 4;
                    }
                    return Some(Identity { pcapng: true, linktype, snaplen, if_name });
                }
                at += len;
            }
        }
        _ => None,
    }
}

/// The first and last packet time of a file (None: no packets).
fn time_range(path: &Path) -> Result<Option<(u64, u64)>, CaptureError> {
    scan(path, 0).map(|(r, _)| r)
}

/// TCP packets of a file remembered to tell one sensor's rotated files (each packet in one
/// file only) from two sensors of the same traffic whose clocks differ (the same packets in
/// both, at other times).
const SIGNATURES: usize = 4096;

type Signatures = std::collections::HashSet<u64>;

/// A file's time range and the signatures of its first `keep` TCP packets (what survives
/// forwarding: addresses, ports, SEQ, ACK, IP-ID, flags, length).
fn scan(path: &Path, keep: usize) -> Result<(Option<(u64, u64)>, Signatures), CaptureError> {
    use std::hash::{Hash, Hasher};
    let mut r = dataplane::capture::CaptureReader::open(path)?;
    let mut f = dataplane::capture::CapturedFrame::default();
    let mut range: Option<(u64, u64)> = None;
    let mut sigs = Signatures::new();
    loop {
        match r.next_frame_into(&mut f) {
            Ok(true) => {
                let t = f.ts_ns;
                range = Some(range.map_or((t, t), |(a, b)| (a.min(t), b.max(t))));
                if sigs.len() < keep {
                    if let Ok(p) = dataplane::packet::decode(&f.data, f.orig_len, t, 0) {
                        let mut h = std::collections::hash_map::DefaultHasher::new();
                        (p.src(), p.dst(), p.sport, p.dport, p.seq.0, p.ack.0, p.ip_id, p.flags)
                            .hash(&mut h);
                        p.payload_len.hash(&mut h);
                        sigs.insert(h.finish());
                    }
                }
            }
            Ok(false) | Err(CaptureError::Truncated { .. }) => return Ok((range, sigs)),
            Err(e) => return Err(e),
        }
    }
}

/// The vantages of an analysis. Files named by `--vantage NAME=FILE,…` form those vantages;
/// of the others, files taken the same way (same format, link type and snap length; pcapng:
/// the same interface name) whose time ranges do not overlap are one sensor's rotated files
/// (`tcpdump -C/-G`, editcap): one vantage, named after its first file, read in time order.
/// Every other file is a vantage of its own.
pub fn group(
    files: &[PathBuf],
    named: &[(String, Vec<PathBuf>)],
) -> Result<Vec<VantageInput>, GroupError> {
    let mut out: Vec<VantageInput> = Vec::new();
    for (name, fs) in named {
        if out.iter().any(|v| &v.name == name) {
            return Err(GroupError::Usage(format!("--vantage names '{name}' twice")));
        }
        let mut timed = Vec::new();
        for f in fs {
            timed.push((time_range(f)?.map_or(0, |r| r.0), f.clone()));
        }
        timed.sort_by_key(|t| t.0);
        out.push(VantageInput {
            name: name.clone(),
            files: timed.into_iter().map(|t| t.1).collect(),
        });
    }
    for f in files {
        if named.iter().any(|(_, fs)| fs.contains(f)) {
            return Err(GroupError::Usage(format!(
                "{} is given both on its own and in --vantage: give it once",
                f.display()
            )));
        }
    }
    // Candidates for merging, with what they were taken with and when.
    let mut cands = Vec::new();
    let several = files.len() > 1;
    for (order, f) in files.iter().enumerate() {
        let id = if several { identity(f) } else { None };
        let (range, sigs) = if id.is_some() { scan(f, SIGNATURES)? } else { Default::default() };
        cands.push(Cand { order, id, range, sigs, file: f.clone() });
    }
    // In time order, each file joins the first group of its kind that ended before it began
    // and whose last file does not hold its packets (a second sensor whose clock is off by
    // more than the captures last would otherwise look like a continuation).
    let mut by_time: Vec<usize> = (0..cands.len()).collect();
    by_time.sort_by_key(|&i| (cands[i].range.map_or(u64::MAX, |r| r.0), cands[i].order));
    let mut groups: Vec<Group> = Vec::new();
    for i in by_time {
        let c = &cands[i];
        let joined = match (&c.id, c.range) {
            (Some(id), Some((first, _))) => groups.iter_mut().find(|g| {
                let prev = &cands[g.last];
                prev.id.as_ref() == Some(id)
                    && prev.range.is_some_and(|(_, end)| end <= first)
                    && repeats(&prev.sigs, &c.sigs) * 10 < c.sigs.len().max(1)
            }),
            _ => None,
        };
        match joined {
            Some(g) => {
                g.last = i;
                g.files.push(c.file.clone());
            }
            None => groups.push(Group { order: c.order, last: i, files: vec![c.file.clone()] }),
        }
    }
    // Vantages in the order their first file was given.
    groups.sort_by_key(|g| g.order);
    for Group { files: fs, .. } in groups {
        let name = file_name(&fs[0]);
        let name =
            if out.iter().any(|v| v.name == name) { fs[0].display().to_string() } else { name };
        out.push(VantageInput { name, files: fs });
    }
    if out.len() > dataplane::flow::MAX_VANTAGES {
        return Err(GroupError::Usage(format!(
            "{} vantages given ({} files); analyze matches at most {} vantages at once: name the files of one sensor with --vantage NAME=FILE,FILE… or merge them first (mergecap)",
            out.len(),
            files.len() + named.iter().map(|n| n.1.len()).sum::<usize>(),
            dataplane::flow::MAX_VANTAGES
        )));
    }
    Ok(out)
}

/// A file that may join others as one vantage: its place in the arguments, how it was
/// taken, and when.
struct Cand {
    order: usize,
    id: Option<Identity>,
    range: Option<(u64, u64)>,
    /// Signatures of its first TCP packets (see [`SIGNATURES`]).
    sigs: Signatures,
    file: PathBuf,
}

/// Files grouped as one vantage so far: the first one's place in the arguments, the last
/// one's (a candidate index), and the files in time order.
struct Group {
    order: usize,
    last: usize,
    files: Vec<PathBuf>,
}

/// How many of `b`'s signatures `a` holds too.
fn repeats(a: &Signatures, b: &Signatures) -> usize {
    b.iter().filter(|x| a.contains(x)).count()
}

/// A file's name as the summary and events show it.
pub fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Capture(#[from] CaptureError),
}

/// What the first pass learned, and whether it read the whole input.
pub struct FirstPass {
    pub relations: VantageRelations,
    pub complete: bool,
    /// Each file's first and last packet time, when the pass read them whole (in vantage 0's
    /// clock: the offsets removed).
    pub ranges: Option<Vec<(u64, u64)>>,
    /// Each vantage's clock minus vantage 0's (ns): what `analyze` removes from its times.
    pub offsets: Vec<i64>,
}

/// Each vantage's clock offset from vantage 0, from the pairs' estimates: a vantage is
/// reached through pairs with at least `LOSS_MIN_MATCHES` matched packets (else 0).
fn offsets_from_zero(pairs: &[(u16, u16, i64, u32)], n: usize) -> Vec<i64> {
    let mut off: Vec<Option<i64>> = vec![None; n];
    if n == 0 {
        return Vec::new();
    }
    off[0] = Some(0);
    let mut changed = true;
    while changed {
        changed = false;
        for &(a, b, d, m) in pairs {
            if m < dataplane::vantage::LOSS_MIN_MATCHES {
                continue;
            }
            let (a, b) = (usize::from(a), usize::from(b));
            match (off.get(a).copied().flatten(), off.get(b).copied().flatten()) {
                (Some(x), None) if b < n => {
                    off[b] = Some(x + d);
                    changed = true;
                }
                (None, Some(y)) if a < n => {
                    off[a] = Some(y - d);
                    changed = true;
                }
                _ => {}
            }
        }
    }
    off.into_iter().map(|o| o.unwrap_or(0)).collect()
}

/// Reads the start of every file in time order (as `analyze` will: re-sorted, cut files
/// read up to the cut) and matches packets across them within ±30 s, to judge each pair of
/// vantages and estimate their clock offsets. Standard input cannot be read twice: with it,
/// pairs are judged as the engines go.
pub fn first_pass(
    vantages: &[VantageInput],
    serial: &[(u16, u16)],
    set: &Vantages,
) -> Result<FirstPass, CaptureError> {
    let mut relations = VantageRelations::default();
    for &(a, b) in serial {
        relations.force_serial(a, b);
    }
    if vantages.iter().flat_map(|v| &v.files).any(|f| f.as_os_str() == "-") {
        return Ok(FirstPass { relations, complete: false, ranges: None, offsets: Vec::new() });
    }
    let files = vantages;
    // Packets are matched across ±30 s here, so that clocks far apart still match (the
    // offsets found are removed before the analysis proper matches within the window).
    let window_ns = dataplane::anomaly::paths::CLOCK_SEARCH_NS;
    let mut matcher = VantageMatcher::with_relations(relations, true);
    matcher.clock = Some(dataplane::anomaly::paths::ClockSamples::default());
    let mut sources = Vec::with_capacity(files.len());
    for (v, f) in files.iter().enumerate() {
        sources.push(Source::open_chain(&f.files, f.name.clone(), v as u16, set)?);
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
            matcher.finish(set.len());
            return Ok(settle(matcher, set, false, None));
        }
        read += 1;
        let r = heads[v].take().expect("chosen because it holds a frame");
        if let Ok(p) = &r.pkt {
            matcher.observe(p, 0, 0);
            if p.ts_ns.saturating_sub(last_expire) >= 10_000_000 {
                last_expire = p.ts_ns;
                // Bounded memory: an input too dense to hold 30 s of packets is searched
                // within a shorter span.
                let w = if matcher.pending_len() > FIRST_PASS_PENDING_MAX {
                    FIRST_PASS_DENSE_WINDOW_NS
                } else {
                    window_ns
                };
                matcher.expire(p.ts_ns, w, set.len());
            }
        }
        sources[v].recycle(r);
        heads[v] = sources[v].next()?;
    }
    matcher.finish(set.len());
    let ranges = sources
        .iter()
        .map(|s| (s.health.first_ns.unwrap_or(u64::MAX), s.health.last_ns.unwrap_or(0)))
        .collect();
    Ok(settle(matcher, set, true, Some(ranges)))
}

/// The first pass's answer: the clock offsets, and the pairs judged again with the offsets
/// removed — a pair whose clocks differ by more than the vantage window matched nothing while
/// the offsets were unknown, so it is judged from the matches the wide search made.
fn settle(
    matcher: VantageMatcher,
    set: &Vantages,
    complete: bool,
    ranges: Option<Vec<(u64, u64)>>,
) -> FirstPass {
    // A clock belongs to an input: a mirror session's packets carry its input's timestamps.
    let pairs: Vec<(u16, u16, i64, u32)> = matcher
        .clock
        .as_ref()
        .map(dataplane::anomaly::paths::ClockSamples::offsets)
        .unwrap_or_default()
        .into_iter()
        .map(|(a, b, d, m)| (set.input_of(a), set.input_of(b), d, m))
        .filter(|(a, b, _, _)| a != b)
        .collect();
    let offsets = offsets_from_zero(&pairs, set.inputs().len());
    let mut relations = matcher.relations;
    relations.set_offsets(set.per_vantage(&offsets));
    let ranges = ranges.map(|r| {
        let by_input: Vec<(u64, u64)> = r
            .into_iter()
            .zip(&offsets)
            .map(|((a, b), &o)| (a.saturating_add_signed(-o), b.saturating_add_signed(-o)))
            .collect();
        set.per_vantage(&by_input)
    });
    FirstPass { relations, complete, ranges, offsets }
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
                "clock_offset_s": relations.offset_between(a, b) as f64 / 1e9,
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
