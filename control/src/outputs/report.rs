//! `run`'s reports (docs/report.md): a page beside each evidence file (`<stem>.html`), written
//! in the event loop once both the file and the events that name it are in — never on the
//! packet path. Served at `/api/report/{id}`; retention removes it with its evidence file.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use dataplane::anomaly::Event;
use dataplane::report::Detection;

/// Evidence files whose events are remembered for their page at most; past it the oldest
/// written ones are forgotten (a late event for them gets no page update).
const TRACKED_FILES: usize = 4096;

#[derive(Default)]
pub struct Pages {
    /// Per evidence file, the detections that name it, and whether the file is written.
    files: HashMap<PathBuf, (Vec<Detection>, bool)>,
    order: std::collections::VecDeque<PathBuf>,
    /// Evidence files whose page was (re)drawn since the last [`take_drawn`](Self::take_drawn),
    /// for retention to count.
    drawn: Vec<PathBuf>,
}

impl Pages {
    /// An event as it is written: if it names evidence already on disk, its page is (re)drawn
    /// now (an aggregate window can hold a handshake failure past its file).
    pub fn event(&mut self, e: &Event) {
        let Some(ev) = &e.evidence else { return };
        let Some(d) = serde_json::to_value(e).ok().as_ref().and_then(Detection::from_event) else {
            return;
        };
        let path = PathBuf::from(&ev.path);
        if !self.files.contains_key(&path) {
            self.forget_past_bound();
            self.order.push_back(path.clone());
        }
        let entry = self.files.entry(path.clone()).or_default();
        entry.0.push(d);
        if entry.1 {
            self.draw(&path);
        }
    }

    /// An evidence file just written: its page is drawn if any event named it.
    pub fn evidence_written(&mut self, path: &Path) {
        if let Some(entry) = self.files.get_mut(path) {
            entry.1 = true;
            self.draw(path);
        } else {
            self.forget_past_bound();
            self.order.push_back(path.to_path_buf());
            self.files.insert(path.to_path_buf(), (Vec::new(), true));
        }
    }

    /// The evidence files whose pages were drawn since the last call.
    pub fn take_drawn(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.drawn)
    }

    fn draw(&mut self, path: &Path) {
        let Some((detections, _)) = self.files.get(path) else { return };
        if detections.is_empty() {
            return;
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let of_file: Vec<&Detection> = detections.iter().collect();
        // A page that cannot be drawn costs its page only: the evidence stands.
        match dataplane::report::write_page(dir, path, &of_file) {
            Ok(_) => self.drawn.push(path.to_path_buf()),
            Err(e) => {
                crate::export::metrics::output_failed("report");
                log::warn!("report: {e}");
            }
        }
    }

    fn forget_past_bound(&mut self) {
        while self.order.len() >= TRACKED_FILES {
            if let Some(old) = self.order.pop_front() {
                self.files.remove(&old);
            }
        }
    }
}

/// The page of an evidence file, whose name retention and the API accept: `<stem>.html`.
pub fn page_of(evidence: &Path) -> PathBuf {
    evidence.with_extension("html")
}
