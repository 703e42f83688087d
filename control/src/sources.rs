//! The inputs of `wirewatch analyze`: one capture file (or standard input) each, read and
//! decoded in time order, with what the summary reports about the file's health: frames that
//! carry no readable TCP (by cause), timestamps re-sorted, time jumps, and where it was cut.
use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};

use dataplane::capture::{CaptureError, CaptureReader, CapturedFrame, Compression, FrameRef};
use dataplane::packet::{decode_in, unread_cause, TcpPacket, Unread};
use dataplane::vantage::Vantages;
use dataplane_common::Outcome;

/// Bytes of a frame kept after decoding, at most: what the evidence history may need.
pub const KEEP: usize = dataplane::evidence::FRAME_KEEP;

/// Time going backwards by more than this is a time jump (../shared/DETECTIONS.md
/// `time_jump`): a concatenated or merged capture, a clock step. Less is an interleaving
/// (multi-queue capture, several writers) that the re-sort window puts back in order.
pub const TIME_JUMP_NS: u64 = 1_000_000_000;
/// A frame leaves the re-sort window once a frame this much later was read...
pub const RESORT_WINDOW_NS: u64 = 10_000_000;
/// ...or once the window holds this many frames (which bounds its memory: a frame keeps at
/// most `KEEP` bytes).
pub const RESORT_MAX_FRAMES: usize = 4096;

/// How many frames ahead of the one leaving the window [`Source::next`] fetches into the cache.
const RELEASE_AHEAD: usize = 4;
/// The cache lines a [`Ready`] spans.
const READY_LINES: usize = size_of::<Ready>().div_ceil(64);

/// A decoded frame waiting in (or leaving) the re-sort window.
pub struct Ready {
    pub ts_ns: u64,
    /// 1-based record number in its file (tshark's frame.number).
    pub frame_no: u64,
    pub pkt: Result<TcpPacket, Outcome>,
    pub len: u16,
    pub bytes: [u8; KEEP],
    /// Time jumped back before this frame: everything before it belongs to another timeline.
    pub jump_from_ns: Option<u64>,
}

impl PartialEq for Ready {
    fn eq(&self, o: &Self) -> bool {
        (self.ts_ns, self.frame_no) == (o.ts_ns, o.frame_no)
    }
}
impl Eq for Ready {}
impl PartialOrd for Ready {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ready {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.ts_ns, self.frame_no).cmp(&(o.ts_ns, o.frame_no))
    }
}

/// Health of one input, as the summary shows it.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct InputHealth {
    /// The vantage's name (its file's name, or the first of its rotated files').
    pub file: String,
    /// The files read one after the other as this one vantage (rotated files of one sensor,
    /// or `--vantage NAME=FILE,…`), in time order; empty for a single file.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    pub compression: &'static str,
    /// Records read.
    pub frames: u64,
    /// Frames carrying TCP the engine read.
    pub tcp: u64,
    /// TCP frames `--filter` refused (not counted in `tcp`).
    pub filtered: u64,
    /// Frames without readable TCP, by cause (see `dataplane::packet::Unread`).
    pub not_ip: u64,
    pub not_tcp: u64,
    pub encapsulated: u64,
    pub fragment: u64,
    pub cut_short: u64,
    pub malformed: u64,
    /// Frames that arrived before a frame read earlier (by at most `TIME_JUMP_NS`), put back
    /// in time order by the re-sort window.
    pub resorted: u64,
    /// Such frames older than what the window had already released: analysed out of order.
    pub resort_overflow: u64,
    /// Times the clock went back by more than `TIME_JUMP_NS`.
    pub time_jumps: u64,
    /// First and last packet time, ns since the epoch.
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
    /// Where the file was cut, when it was.
    pub cut_at: Option<u64>,
    /// ACKs of data this file never showed (filled in from the engines at the end).
    pub capture_loss: dataplane::engine::VantageCapture,
    /// `capture_loss` as Zeek's percent_lost: the share of ACKs that acknowledged unseen data.
    pub capture_loss_percent: f64,
}

impl InputHealth {
    fn count(&mut self, u: Unread) {
        *match u {
            Unread::NotIp => &mut self.not_ip,
            Unread::NotTcp => &mut self.not_tcp,
            Unread::Encapsulated => &mut self.encapsulated,
            Unread::Fragment => &mut self.fragment,
            Unread::CutShort => &mut self.cut_short,
            Unread::Malformed => &mut self.malformed,
        } += 1;
    }

    /// Frames without readable TCP.
    pub fn unread(&self) -> u64 {
        self.not_ip
            + self.not_tcp
            + self.encapsulated
            + self.fragment
            + self.cut_short
            + self.malformed
    }
}

pub struct Source {
    reader: CaptureReader<Box<dyn Read>>,
    /// Files of the same vantage still to read, in time order (rotated files of one sensor).
    pending: VecDeque<PathBuf>,
    /// Where the reader rebuilds a frame it cannot lend where it lies (not Ethernet, pcapng).
    slot: CapturedFrame,
    intake: Intake,
    /// Frames read and not yet released, in time order (then record number). Captures are
    /// nearly always in order already: a frame goes on the back in O(1), and only one that
    /// arrived early is inserted in place.
    window: VecDeque<Box<Ready>>,
    /// The first frame after a time jump, held until the old timeline has left the window.
    held: Option<Box<Ready>>,
    done: bool,
    /// Size of the file (None for standard input), for progress.
    pub size: Option<u64>,
    /// Bytes read from the vantage's files already finished.
    done_bytes: u64,
    /// This vantage's clock offset from the reference vantage (ns), removed from its times.
    pub shift_ns: i64,
    /// `--filter`: TCP packets it refuses reach the engine as `Outcome::Filtered`.
    pub filter: Option<std::sync::Arc<dataplane::filter::Filter>>,
    pub health: InputHealth,
    /// Set when the input ended inside a record.
    pub damage: Option<CaptureError>,
}

/// What decoding a frame into a box for the window reads and keeps, apart from the reader:
/// the frame is decoded where the reader lent it (no copy of the whole frame first).
struct Intake {
    vantage: u16,
    /// The run's vantages: a frame inside a mirror session is at the session's own.
    vantages: Vantages,
    /// Released frames' boxes, reused (no allocation per frame once the window filled).
    #[expect(clippy::vec_box, reason = "the boxes move between the window and this pool")]
    spare: Vec<Box<Ready>>,
    /// The latest time read, and the latest released.
    max_read_ns: Option<u64>,
    released_ns: u64,
    /// Whether the frames' bytes are kept (the evidence history needs them).
    keep_frames: bool,
}

impl Source {
    pub fn open(
        path: &Path,
        file: String,
        vantage: u16,
        vantages: &Vantages,
    ) -> Result<Self, CaptureError> {
        let reader = CaptureReader::open(path)?;
        let size = if path.as_os_str() == "-" {
            None
        } else {
            std::fs::metadata(path).ok().filter(std::fs::Metadata::is_file).map(|m| m.len())
        };
        let compression = match reader.compression() {
            Compression::None => "none",
            c => c.name(),
        };
        Ok(Self {
            reader,
            pending: VecDeque::new(),
            slot: CapturedFrame::default(),
            intake: Intake {
                vantage,
                vantages: vantages.clone(),
                spare: Vec::new(),
                max_read_ns: None,
                released_ns: 0,
                keep_frames: true,
            },
            window: VecDeque::new(),
            held: None,
            done: false,
            size,
            done_bytes: 0,
            shift_ns: 0,
            filter: None,
            health: InputHealth { file, compression, ..Default::default() },
            damage: None,
        })
    }

    /// One vantage read from several files in turn (`paths` in time order, not overlapping:
    /// the rotated files of one sensor), as if they were one capture; frames are numbered
    /// across them (as mergecap would).
    pub fn open_chain(
        paths: &[PathBuf],
        name: String,
        vantage: u16,
        vantages: &Vantages,
    ) -> Result<Self, CaptureError> {
        let (first, rest) = paths.split_first().expect("a vantage has at least one file");
        let mut me = Self::open(first, name, vantage, vantages)?;
        me.pending = rest.iter().cloned().collect();
        me.size = paths
            .iter()
            .map(|p| std::fs::metadata(p).ok().filter(std::fs::Metadata::is_file).map(|m| m.len()))
            .sum();
        if !rest.is_empty() {
            me.health.files = paths.iter().map(|p| p.display().to_string()).collect();
        }
        Ok(me)
    }

    /// Bytes of the file read so far (compressed bytes for a compressed file).
    pub fn bytes_read(&self) -> u64 {
        self.done_bytes + self.reader.raw_read()
    }

    /// Moves on to the vantage's next file, if any: true if there is one.
    fn next_file(&mut self) -> Result<bool, CaptureError> {
        let Some(p) = self.pending.pop_front() else { return Ok(false) };
        self.done_bytes += self.reader.raw_read();
        self.reader = CaptureReader::open(&p)?;
        Ok(true)
    }

    /// The next frame in time order; `None` at the end of the input (or at the cut of a
    /// damaged one, see `damage`). Corruption is an error.
    pub fn next(&mut self) -> Result<Option<Box<Ready>>, CaptureError> {
        loop {
            if let Some(first) = self.window.front() {
                let full = self.window.len() >= RESORT_MAX_FRAMES;
                let aged = self
                    .intake
                    .max_read_ns
                    .is_some_and(|m| m.saturating_sub(first.ts_ns) > RESORT_WINDOW_NS);
                // A jump waits until the old timeline has left the window.
                if self.done || full || aged || self.held.is_some() {
                    // A frame waits in the window for ~1,000 others: its box has left the
                    // nearest caches by the time it leaves. Fetch those a few places behind.
                    if let Some(next) = self.window.get(RELEASE_AHEAD) {
                        let at: *const u8 = (&raw const **next).cast();
                        for line in 0..READY_LINES {
                            dataplane::mem::prefetch_line(at.wrapping_add(line * 64));
                        }
                    }
                    let Some(r) = self.window.pop_front() else { unreachable!() };
                    self.intake.released_ns = self.intake.released_ns.max(r.ts_ns);
                    return Ok(Some(r));
                }
            } else if let Some(r) = self.held.take() {
                // The old timeline is out: the new one starts with the frame after the jump.
                self.intake.released_ns = 0;
                self.window.push_back(r);
                continue;
            } else if self.done {
                return Ok(None);
            }
            match self.reader.next_frame_ref(&mut self.slot) {
                Ok(Some(f)) => {
                    let filter = self.filter.as_deref();
                    let r = self.intake.ingest(f, &mut self.health, self.shift_ns, filter);
                    if r.jump_from_ns.is_some() {
                        self.held = Some(r);
                    } else {
                        self.enqueue(r);
                    }
                }
                Ok(None) => self.done = !self.next_file()?,
                Err(e @ CaptureError::Truncated { .. }) => {
                    if let CaptureError::Truncated { offset, .. } = &e {
                        self.health.cut_at = Some(*offset);
                    }
                    self.damage = Some(e);
                    // A rotated file cut short (its writer was killed) ends its own part only.
                    self.done = !self.next_file()?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Puts a frame in the window at its place in time order.
    fn enqueue(&mut self, r: Box<Ready>) {
        if self.window.back().is_none_or(|last| **last <= *r) {
            self.window.push_back(r);
        } else {
            let at = self.window.partition_point(|x| **x <= *r);
            self.window.insert(at, r);
        }
    }

    /// Whether the frames' first bytes go with them to the engine (the default): without
    /// evidence, the engine keeps no history and needs only the decoded packets.
    pub fn keep_frames(&mut self, keep: bool) {
        self.intake.keep_frames = keep;
    }

    /// Gives a released frame's box back for reuse.
    pub fn recycle(&mut self, r: Box<Ready>) {
        if self.intake.spare.len() < RESORT_MAX_FRAMES {
            self.intake.spare.push(r);
        }
    }
}

impl Intake {
    /// Decodes the frame `f` (with the vantage's clock offset `shift_ns` removed) into a box
    /// for the window, counting it in `h`.
    fn ingest(
        &mut self,
        f: FrameRef<'_>,
        h: &mut InputHealth,
        shift_ns: i64,
        filter: Option<&dataplane::filter::Filter>,
    ) -> Box<Ready> {
        h.frames += 1;
        let ts = f.ts_ns.saturating_add_signed(-shift_ns);
        h.first_ns = Some(h.first_ns.map_or(ts, |x| x.min(ts)));
        h.last_ns = Some(h.last_ns.map_or(ts, |x| x.max(ts)));
        let mut jump_from_ns = None;
        match self.max_read_ns {
            Some(m) if ts.saturating_add(TIME_JUMP_NS) < m => {
                h.time_jumps += 1;
                jump_from_ns = Some(m);
                self.max_read_ns = Some(ts);
            }
            Some(m) if ts < m => {
                if ts < self.released_ns {
                    h.resort_overflow += 1;
                } else {
                    h.resorted += 1;
                }
            }
            _ => self.max_read_ns = Some(ts),
        }
        let mut r = self.spare.pop().unwrap_or_else(|| {
            Box::new(Ready {
                ts_ns: 0,
                frame_no: 0,
                pkt: Err(Outcome::NonTcpPassed),
                len: 0,
                bytes: [0; KEEP],
                jump_from_ns: None,
            })
        });
        // Decoded into its box (no copy of the packet afterwards).
        r.pkt = decode_in(f.data, f.orig_len, ts, self.vantage, &self.vantages);
        if let (Ok(p), Some(filter)) = (&r.pkt, filter) {
            if !filter.matches(p) {
                r.pkt = Err(Outcome::Filtered);
            }
        }
        match &r.pkt {
            Ok(_) => h.tcp += 1,
            Err(Outcome::Filtered) => h.filtered += 1,
            Err(o) => h.count(unread_cause(f.data, f.orig_len, *o)),
        }
        let keep = if self.keep_frames {
            dataplane::evidence::keep_len(r.pkt.as_ref().ok(), f.data)
        } else {
            0
        };
        r.ts_ns = ts;
        r.frame_no = h.frames;
        r.len = keep as u16;
        r.bytes[..keep].copy_from_slice(&f.data[..keep]);
        r.jump_from_ns = jump_from_ns;
        r
    }
}
