//! The evidence budget: how many evidence files a process may write per second of packet time.
//! A leaf (it imports nothing of the crate), so the engine's configuration can hold it.

/// The evidence budget of a whole process: every worker draws from one token bucket, so the
/// number of evidence files does not grow with the number of workers. Taken only when a
/// detection wants evidence, never per packet.
#[derive(Clone, Debug)]
pub struct EvidenceBudget(std::sync::Arc<std::sync::Mutex<RateLimit>>);

impl EvidenceBudget {
    pub fn new(per_sec: f64) -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(RateLimit::new(per_sec))))
    }
    /// Whether one more evidence file may be written at packet time `now_ns`.
    pub fn allow(&self, now_ns: u64) -> bool {
        // A worker that panicked while holding the lock left a valid bucket behind.
        let mut r = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        r.allow(now_ns)
    }
}

/// Token bucket on packet time: at most `per_sec` files per second, bursts of the same size.
#[derive(Debug)]
pub struct RateLimit {
    per_sec: f64,
    tokens: f64,
    last_ns: u64,
    pub suppressed: u64,
}

impl RateLimit {
    pub fn new(per_sec: f64) -> Self {
        Self { per_sec, tokens: per_sec, last_ns: 0, suppressed: 0 }
    }
    pub fn allow(&mut self, now_ns: u64) -> bool {
        let dt = now_ns.saturating_sub(self.last_ns) as f64 / 1e9;
        self.last_ns = self.last_ns.max(now_ns);
        self.tokens = (self.tokens + dt * self.per_sec).min(self.per_sec.max(1.0));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_suppressed() {
        let mut r = RateLimit::new(10.0);
        let allowed = (0..30).filter(|_| r.allow(1_000_000_000)).count();
        assert_eq!((allowed, r.suppressed), (10, 20));
        assert!(r.allow(2_000_000_000));
    }
}
