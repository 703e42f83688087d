//! The evidence store: each evidence file written (a failure logged and counted, never fatal)
//! and kept under retention, a size and an age limit, oldest removed first, every removal
//! counted. Only names of the form evidence files take
//! (`{ms}-{kind}-w{worker}-{seq}.pcapng`, dataplane/src/evidence.rs `evidence_path`) are ever
//! touched: anything else in the directory (a capture an operator keeps there, another tool's
//! files) is left alone. Temporary files of writes that failed, or that a killed process left
//! (`….pcapng.tmp`), are removed. Failures are logged and counted, never fatal.
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use dataplane::evidence::{is_evidence_name, EvidenceJob};

/// The temporary name an evidence file (`….pcapng.tmp`) or its report page (`….html.tmp`) is
/// written under before it is renamed into place.
fn is_evidence_tmp_name(name: &str) -> bool {
    name.strip_suffix(".tmp").is_some_and(|n| {
        is_evidence_name(n)
            || n.strip_suffix(".html")
                .is_some_and(|stem| is_evidence_name(&format!("{stem}.pcapng")))
    })
}

pub struct Retention {
    max_bytes: u64,
    max_age: Duration,
    /// Our evidence files, oldest first: (path, its size and its report page's, written).
    files: VecDeque<(PathBuf, u64, SystemTime)>,
    /// Bytes of the evidence files and their pages: what `--evidence-max-bytes` bounds.
    total: u64,
    pub removed: u64,
}

/// The size of an evidence file's report page, 0 if it has none.
fn page_bytes(evidence: &Path) -> u64 {
    std::fs::metadata(crate::outputs::report::page_of(evidence)).map_or(0, |m| m.len())
}

impl Retention {
    /// Starts from the evidence files the directory already holds (previous runs), and removes
    /// the temporary files that previous runs left behind.
    pub fn new(dir: &Path, max_bytes: u64, max_age: Duration) -> Self {
        let mut files = Vec::new();
        let mut stale_tmp = 0u64;
        for e in std::fs::read_dir(dir).into_iter().flatten().filter_map(Result::ok) {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(m) = e.metadata() else { continue };
            if !m.is_file() {
                continue;
            }
            if is_evidence_tmp_name(name) {
                match std::fs::remove_file(e.path()) {
                    Ok(()) => stale_tmp += 1,
                    Err(err) => log::warn!(
                        "evidence retention: cannot remove the stale temporary file {}: {err}",
                        e.path().display()
                    ),
                }
            } else if is_evidence_name(name) {
                let size = m.len() + page_bytes(&e.path());
                files.push((e.path(), size, m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
            }
        }
        if stale_tmp > 0 {
            log::info!(
                "evidence retention: removed {stale_tmp} temporary file(s) of unfinished writes in {}",
                dir.display()
            );
        }
        files.sort_by_key(|f| f.2);
        let total = files.iter().map(|f| f.1).sum();
        let mut r = Self { max_bytes, max_age, files: files.into(), total, removed: 0 };
        r.enforce();
        r
    }

    /// Writes one evidence file and keeps it under retention. A full or unwritable disk never
    /// stops monitoring: the failure is logged and counted, and the answer is false.
    pub fn write(&mut self, job: &EvidenceJob, vantage_names: &[String]) -> bool {
        match job.write(vantage_names) {
            Ok(()) => {
                crate::export::metrics::evidence_written();
                self.added(&job.path);
                true
            }
            Err(err) => {
                crate::export::metrics::evidence_failed();
                Self::failed(&job.path);
                log::warn!("evidence {} not written: {err}", job.path.display());
                false
            }
        }
    }

    /// Records a file just written and removes the oldest past the limits.
    pub fn added(&mut self, path: &Path) {
        if let Ok(m) = std::fs::metadata(path) {
            let size = m.len() + page_bytes(path);
            self.total += size;
            self.files.push_back((
                path.to_path_buf(),
                size,
                m.modified().unwrap_or_else(|_| SystemTime::now()),
            ));
        }
        self.enforce();
    }

    /// The report page of the evidence file `path` was (re)drawn: its bytes count against the
    /// size limit from now on (a page is often several times its pcapng), and the oldest files
    /// past the limits go.
    pub fn page_drawn(&mut self, path: &Path) {
        // The newest files are at the back, and pages are drawn soon after their evidence.
        let Some(entry) = self.files.iter_mut().rev().find(|f| f.0 == path) else { return };
        let size = std::fs::metadata(path).map_or(0, |m| m.len()) + page_bytes(path);
        self.total = self.total.saturating_sub(entry.1) + size;
        entry.1 = size;
        self.enforce();
    }

    /// A write of `path` failed: its temporary file (perhaps empty, on a full disk) goes.
    pub fn failed(path: &Path) {
        let tmp = path.with_extension("pcapng.tmp");
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("evidence: cannot remove {}: {e}", tmp.display()),
        }
    }

    fn enforce(&mut self) {
        let now = SystemTime::now();
        while let Some((path, size, when)) = self.files.front().cloned() {
            let too_old = now.duration_since(when).unwrap_or_default() > self.max_age;
            if self.total <= self.max_bytes && !too_old {
                break;
            }
            self.files.pop_front();
            self.total = self.total.saturating_sub(size);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    self.removed += 1;
                    crate::export::metrics::evidence_removed();
                    // Its report page goes with it (a page without its evidence links nowhere).
                    let page = crate::outputs::report::page_of(&path);
                    if let Err(e) = std::fs::remove_file(&page) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            log::warn!("evidence retention: cannot remove {}: {e}", page.display());
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    crate::export::metrics::output_failed("retention");
                    log::warn!("evidence retention: cannot remove {}: {e}", path.display());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Self {
            let d = std::env::temp_dir().join(format!("ww-retention-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Self(d)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn ours(i: u64) -> String {
        format!("{}-syn_rejected-w0-{i}.pcapng", 1_700_000_000_000 + i)
    }

    #[test]
    fn evidence_names_are_recognised_exactly() {
        assert!(is_evidence_name("1700000000000-syn_rejected-w0-1.pcapng"));
        assert!(is_evidence_name("0-rst_after_stale_segment-w12-99.pcapng"));
        for not in [
            "capture.pcapng",
            "1700000000000-syn_rejected-w0-1.pcapng.tmp",
            "1700000000000-not_a_kind-w0-1.pcapng",
            "1700000000000-syn_rejected-0-1.pcapng",
            "x-syn_rejected-w0-1.pcapng",
            "1700000000000-syn_rejected-w0-.pcapng",
            "../1700000000000-syn_rejected-w0-1.pcapng",
            "1700000000000-syn_rejected-w0-1.pcap",
        ] {
            assert!(!is_evidence_name(not), "{not}");
        }
        assert!(is_evidence_tmp_name("1700000000000-syn_rejected-w0-1.pcapng.tmp"));
        assert!(is_evidence_tmp_name("1700000000000-syn_rejected-w0-1.html.tmp"));
        for not in ["index.html.tmp", "1700000000000-syn_rejected-w0-1.html", "x.html.tmp"] {
            assert!(!is_evidence_tmp_name(not), "{not}");
        }
    }

    #[test]
    fn past_the_size_limit_the_oldest_files_go_and_are_counted() {
        let dir = Dir::new("size");
        let mut r = Retention::new(&dir.0, 2500, Duration::from_hours(1));
        let mut paths = Vec::new();
        for i in 0..5 {
            let p = dir.0.join(ours(i));
            std::fs::write(&p, vec![0u8; 1000]).unwrap();
            r.added(&p);
            paths.push(p);
        }
        // 5 × 1000 B against 2500 B: the three oldest are gone, the two newest stay.
        assert_eq!(r.removed, 3);
        assert!(paths[..3].iter().all(|p| !p.exists()));
        assert!(paths[3..].iter().all(|p| p.exists()));
        // Age: a zero age limit removes what a new run finds.
        let r2 = Retention::new(&dir.0, u64::MAX, Duration::ZERO);
        assert_eq!(r2.removed, 2);
    }

    #[test]
    fn a_report_page_goes_with_its_evidence_file() {
        let dir = Dir::new("page");
        let mut r = Retention::new(&dir.0, 1500, Duration::from_hours(1));
        let mut pages = Vec::new();
        for i in 0..2 {
            let p = dir.0.join(ours(i));
            std::fs::write(&p, vec![0u8; 1000]).unwrap();
            let page = crate::outputs::report::page_of(&p);
            std::fs::write(&page, "<!DOCTYPE html>").unwrap();
            pages.push(page);
            r.added(&p);
        }
        // The older evidence file went over the limit, and its page with it.
        assert_eq!(r.removed, 1);
        assert!(!pages[0].exists(), "{}", pages[0].display());
        assert!(pages[1].exists());
        // A page drawn later counts too: 1000 B of evidence and a 600 B page are over 1500 B,
        // so the newer file and its page go when the newest one's page arrives.
        let p = dir.0.join(ours(2));
        std::fs::write(&p, vec![0u8; 400]).unwrap();
        r.added(&p);
        assert_eq!(r.removed, 1, "1000 + 15 + 400 B fit in 1500 B");
        let page = crate::outputs::report::page_of(&p);
        std::fs::write(&page, vec![b'x'; 600]).unwrap();
        r.page_drawn(&p);
        assert_eq!(r.removed, 2, "1000 + 15 + 400 + 600 B do not");
        assert!(!pages[1].exists() && page.exists() && p.exists());
        // A restart counts the pages it finds.
        let r3 = Retention::new(&dir.0, 999, Duration::from_hours(1));
        assert_eq!(r3.removed, 1, "400 + 600 B are over 999 B");
        assert!(!page.exists() && !p.exists());
        // A user's own page of the same stem as no evidence file stays.
        let own = dir.0.join("notes.html");
        std::fs::write(&own, "mine").unwrap();
        let _ = Retention::new(&dir.0, 0, Duration::ZERO);
        assert!(own.exists() && !pages[1].exists());
    }

    /// A user's own captures, other files and directories in the evidence directory survive
    /// any limit; temporary files of unfinished writes are cleaned up.
    #[test]
    fn only_files_wirewatch_wrote_are_removed() {
        let dir = Dir::new("own");
        let keep = [
            "my-capture.pcapng",
            "1700000000000-not_a_kind-w0-1.pcapng",
            "notes.txt",
            "1700000000000-syn_rejected-w0-1.pcapng.bak",
        ];
        for k in keep {
            std::fs::write(dir.0.join(k), b"user data").unwrap();
        }
        std::fs::create_dir(dir.0.join(ours(7))).unwrap();
        std::fs::write(dir.0.join(ours(1)), b"evidence").unwrap();
        let tmp = dir.0.join(format!("{}.tmp", ours(2)));
        std::fs::write(&tmp, b"").unwrap();
        let r = Retention::new(&dir.0, 0, Duration::ZERO);
        assert_eq!(r.removed, 1);
        assert!(!dir.0.join(ours(1)).exists());
        assert!(!tmp.exists(), "the stale temporary file is gone");
        for k in keep {
            assert!(dir.0.join(k).exists(), "{k} was removed");
        }
        assert!(dir.0.join(ours(7)).is_dir());
        // A failed write's temporary file goes too.
        let failed = dir.0.join(ours(3));
        std::fs::write(failed.with_extension("pcapng.tmp"), b"").unwrap();
        Retention::failed(&failed);
        assert!(!failed.with_extension("pcapng.tmp").exists());
    }
}
