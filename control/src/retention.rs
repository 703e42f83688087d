//! Evidence retention: a size and an age limit on the evidence directory, oldest files removed
//! first, every removal counted. Failures are logged and counted, never fatal.
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub struct Retention {
    max_bytes: u64,
    max_age: Duration,
    /// Our evidence files, oldest first: (path, size, written).
    files: VecDeque<(PathBuf, u64, SystemTime)>,
    total: u64,
    pub removed: u64,
}

impl Retention {
    /// Starts from what the directory already holds (previous runs).
    pub fn new(dir: &Path, max_bytes: u64, max_age: Duration) -> Self {
        let mut files: Vec<(PathBuf, u64, SystemTime)> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "pcapng"))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((e.path(), m.len(), m.modified().ok()?))
            })
            .collect();
        files.sort_by_key(|f| f.2);
        let total = files.iter().map(|f| f.1).sum();
        let mut r = Self { max_bytes, max_age, files: files.into(), total, removed: 0 };
        r.enforce();
        r
    }

    /// Records a file just written and removes the oldest past the limits.
    pub fn added(&mut self, path: &Path) {
        if let Ok(m) = std::fs::metadata(path) {
            self.total += m.len();
            self.files.push_back((
                path.to_path_buf(),
                m.len(),
                m.modified().unwrap_or_else(|_| SystemTime::now()),
            ));
        }
        self.enforce();
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
                    metrics::counter!(crate::metrics::EVIDENCE_REMOVED).increment(1);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("evidence retention: cannot remove {}: {e}", path.display()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_size_limit_the_oldest_files_go_and_are_counted() {
        let dir = std::env::temp_dir().join(format!("ww-retention-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Retention::new(&dir, 2500, Duration::from_hours(1));
        let mut paths = Vec::new();
        for i in 0..5 {
            let p = dir.join(format!("{i}.pcapng"));
            std::fs::write(&p, vec![0u8; 1000]).unwrap();
            r.added(&p);
            paths.push(p);
        }
        // 5 × 1000 B against 2500 B: the three oldest are gone, the two newest stay.
        assert_eq!(r.removed, 3);
        assert!(paths[..3].iter().all(|p| !p.exists()));
        assert!(paths[3..].iter().all(|p| p.exists()));
        // Age: a zero age limit removes what a new run finds.
        let r2 = Retention::new(&dir, u64::MAX, Duration::ZERO);
        assert_eq!(r2.removed, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
