//! What events say about the sensor and how they name flows for other tools, settable on
//! `run` (and its config file: `community_id_seed = 1`, `host_name = "tap-3"`) and `analyze`.
use clap::Args;
use dataplane::engine::EngineConfig;

/// A host name as events carry it: 1 to 253 bytes of letters, digits, `.`, `-` and `_` (a DNS
/// name's characters, plus the underscore some sites use), so it cannot break a log line.
pub fn host_name(s: &str) -> Result<String, String> {
    let ok = (1..=253).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(s.to_string())
    } else {
        Err("allowed: 1 to 253 letters, digits, `.`, `-` or `_`".into())
    }
}

#[derive(Args, Debug, Clone)]
pub struct EventFields {
    /// Seed of the events' Community ID (`community_id`), 0 to 65535: set it to the seed your
    /// Zeek, Suricata or Wireshark uses so their flows join with wirewatch's events.
    #[arg(long, value_name = "N", default_value_t = 0, allow_negative_numbers = true,
          value_parser = crate::cli::options::whole::<u16>(0, 65535, ""))]
    pub community_id_seed: u16,
    /// The sensor's name in the events' `host` field [default: this machine's host name].
    #[arg(long, value_name = "NAME", value_parser = host_name)]
    pub host_name: Option<String>,
}

impl EventFields {
    pub fn apply(&self, c: &mut EngineConfig) {
        c.community_id_seed = self.community_id_seed;
        if let Some(h) = &self.host_name {
            c.host.clone_from(h);
        }
    }
}
