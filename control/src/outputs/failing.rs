//! Outputs that fail (a full disk, a closed pipe): monitoring goes on, the failures are
//! counted and logged without flooding the log.

/// A run of failed writes to one output: counted every time, logged when it starts, every
/// minute while it lasts, and when the output works again (not once per event).
pub struct Failing {
    output: &'static str,
    since: Option<(std::time::Instant, u64)>,
}

impl Failing {
    pub fn new(output: &'static str) -> Self {
        Self { output, since: None }
    }

    pub fn failed(&mut self, what: &dyn std::fmt::Display) {
        crate::export::metrics::output_failed(self.output);
        match &mut self.since {
            Some((t, n)) if t.elapsed() < std::time::Duration::from_mins(1) => *n += 1,
            Some((t, n)) => {
                log::error!(
                    "{} output still failing ({} more failed write(s)): {what}",
                    self.output,
                    *n + 1
                );
                *t = std::time::Instant::now();
                *n = 0;
            }
            None => {
                log::error!(
                    "{} output failed: {what}; monitoring goes on, failures are counted in {}{{output=\"{}\"}}",
                    self.output,
                    crate::export::metrics::OUTPUT_FAILED,
                    self.output
                );
                self.since = Some((std::time::Instant::now(), 0));
            }
        }
    }

    pub fn ok(&mut self) {
        if self.since.take().is_some() {
            log::info!("{} output works again", self.output);
        }
    }
}
