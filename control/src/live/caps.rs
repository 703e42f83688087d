//! Checks the effective capabilities up front, so a missing one is one clear error instead of
//! an EPERM from deep inside the BPF loader.

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;
const CAP_PERFMON: u32 = 38;

fn effective() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// The capabilities `run` needs that this process lacks, by name.
pub fn missing_for_live_capture() -> Vec<&'static str> {
    let eff = effective();
    let has = |c: u32| eff & (1u64 << c) != 0;
    let mut missing = Vec::new();
    // CAP_SYS_ADMIN covers BPF and PERFMON on every kernel.
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_NET_RAW) {
        missing.push("CAP_NET_RAW");
    }
    missing
}
