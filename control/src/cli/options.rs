//! Checks on command-line values, run while clap parses (value parsers) or right after it
//! (`RunArgs::check`), before any command starts: numbers are finite and inside a stated
//! range, lists are bounded before they are expanded, files are small regular files. Each
//! error is one line naming the option, the value and what is allowed; nothing has been
//! attached, bound or written when it is printed, and the exit status is 2.
use std::fmt;
use std::fs::{FileType, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The inclusive range a number option accepts, and what it counts.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub min: f64,
    pub max: f64,
    pub unit: &'static str,
}

impl Bounds {
    /// A clap value parser for a finite number inside the bounds.
    pub fn number(self) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
        move |s| {
            let allowed = || format!("allowed: {}..={} {}", self.min, self.max, self.unit);
            match s.trim().parse::<f64>() {
                Ok(v) if v.is_finite() && v >= self.min && v <= self.max => Ok(v),
                Ok(v) if !v.is_nan() => Err(format!("out of range; {}", allowed())),
                _ => Err(format!("not a number; {}", allowed())),
            }
        }
    }

    /// A clap value parser for a time span given in `unit`s of `unit_secs` seconds each.
    /// Bounded and finite, so the conversion to a `Duration` (and later to nanoseconds)
    /// cannot panic or wrap.
    pub fn duration(
        self,
        unit_secs: f64,
    ) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
        let number = self.number();
        move |s| {
            let v = number(s)?;
            Duration::try_from_secs_f64(v * unit_secs)
                .map_err(|e| format!("{e}; allowed: {}..={} {}", self.min, self.max, self.unit))
        }
    }
}

/// A clap value parser for a whole number in `min..=max`. Unlike clap's ranged parsers it
/// states the range for every bad value (`nan`, `1e300`, `-1`), not only for numbers outside it.
pub fn whole<T>(
    min: i128,
    max: i128,
    unit: &'static str,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: TryFrom<i128> + Clone + Send + Sync + 'static,
{
    move |s| {
        let allowed =
            || format!("allowed: {min}..={max}{}{unit}", if unit.is_empty() { "" } else { " " });
        match s.trim().parse::<i128>() {
            Ok(v) if (min..=max).contains(&v) => {
                T::try_from(v).map_err(|_| format!("out of range; {}", allowed()))
            }
            Ok(_) => Err(format!("out of range; {}", allowed())),
            Err(_) => Err(format!("not a whole number; {}", allowed())),
        }
    }
}

/// Nanoseconds of a bounded `Duration`, saturating instead of wrapping.
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `sched_setaffinity` takes a `cpu_set_t`, which holds CPUs 0..CPU_SETSIZE (1024 with glibc).
pub const MAX_PINNABLE_CPU: usize = libc::CPU_SETSIZE as usize - 1;
/// The largest CPU number a kernel can have (x86-64 `CONFIG_NR_CPUS` is at most 8192), for
/// lists planned for other hosts (`profile apply --dry-run`).
pub const MAX_CPU: usize = 8191;

/// A CPU list such as `2,3`, `4-7` or `0,2-3`: in order, without duplicates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

/// Parses a CPU list whose numbers are at most `max`. Each range is checked before it is
/// expanded, so `0-99999999999` is an error, not an allocation.
pub fn parse_cpu_list(s: &str, max: usize) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    let mut seen = vec![false; max + 1];
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let number = |x: &str| {
            x.trim()
                .parse::<usize>()
                .map_err(|_| format!("`{part}` is not a CPU number or range (e.g. `2`, `4-7`)"))
        };
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(part)?, number(part)?),
        };
        if first > last {
            return Err(format!("CPU range {part} runs backwards"));
        }
        if last > max {
            return Err(format!("CPU {last} is beyond {max}, the highest allowed"));
        }
        for (cpu, seen) in (first..=last).zip(&mut seen[first..=last]) {
            if std::mem::replace(seen, true) {
                return Err(format!("CPU {cpu} is listed twice"));
            }
            cpus.push(cpu);
        }
    }
    if cpus.is_empty() {
        return Err("the list is empty".into());
    }
    Ok(cpus)
}

/// The CPUs that are online, as the kernel lists them (Documentation/ABI/stable/sysfs-devices-system-cpu).
fn online_cpus() -> (String, Vec<usize>) {
    if let Ok(text) = std::fs::read_to_string("/sys/devices/system/cpu/online") {
        let text = text.trim().to_string();
        if let Ok(cpus) = parse_cpu_list(&text, MAX_CPU) {
            return (text, cpus);
        }
    }
    let n = std::thread::available_parallelism().map(std::num::NonZero::get).unwrap_or(1);
    (format!("0-{}", n - 1), (0..n).collect())
}

/// `run --cpus`: workers are pinned to these, so each must be online and fit a `cpu_set_t`.
pub fn pinnable_cpu_list(s: &str) -> Result<CpuList, String> {
    let (online_text, online) = online_cpus();
    let cpus = parse_cpu_list(s, MAX_PINNABLE_CPU)
        .map_err(|e| format!("{e}; online CPUs here: {online_text}"))?;
    if let Some(cpu) = cpus.iter().find(|c| !online.contains(c)) {
        return Err(format!("CPU {cpu} is not online; online CPUs here: {online_text}"));
    }
    Ok(CpuList(cpus))
}

/// `profile apply --cpus`: may plan for another host, so only the kernel's ceiling applies.
pub fn any_cpu_list(s: &str) -> Result<CpuList, String> {
    parse_cpu_list(s, MAX_CPU).map(CpuList)
}

/// An interface name the kernel could accept (net/core/dev.c `dev_valid_name`): 1 to 15 bytes
/// (IFNAMSIZ 16 with the NUL), not `.` or `..`, no `/`, `:` or whitespace.
pub fn iface_name(s: &str) -> Result<String, String> {
    let valid = !s.is_empty()
        && s.len() < libc::IFNAMSIZ
        && s != "."
        && s != ".."
        && !s.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace());
    if valid {
        Ok(s.to_string())
    } else {
        Err(format!("not an interface name (1 to {} bytes, no `/`, `:` or spaces); list them with `ip link`", libc::IFNAMSIZ - 1))
    }
}

/// `--queues`: every RX queue, or the first N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queues {
    All,
    First(u32),
}

/// A sanity bound only: `run` checks the number against the interface's real RX queue count.
pub const MAX_QUEUES: u32 = 4096;

pub fn queues(s: &str) -> Result<Queues, String> {
    if s == "all" {
        return Ok(Queues::All);
    }
    match s.parse::<u32>() {
        Ok(n) if (1..=MAX_QUEUES).contains(&n) => Ok(Queues::First(n)),
        _ => Err(format!("expected `all` or a number of queues in 1..={MAX_QUEUES}")),
    }
}

/// AF_XDP ring sizes: the kernel wants a power of two (net/xdp/xsk.c `xsk_init_queue`); the
/// bounds keep the UMEM (two frames per ring slot, up to 4 KiB each) at most 256 MiB a queue.
pub const MIN_RING: u32 = 64;
pub const MAX_RING: u32 = 32768;

pub fn ring_size(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n.is_power_of_two() && (MIN_RING..=MAX_RING).contains(&n) => Ok(n),
        _ => Err(format!("expected a power of two in {MIN_RING}..={MAX_RING}")),
    }
}

/// A bearer token. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Why the token cannot be used, without quoting it: empty, or holding a character that
    /// cannot appear in an `Authorization: Bearer` value (RFC 6750 §2.1: a b64token is
    /// visible ASCII).
    pub fn problem(&self) -> Option<&'static str> {
        if self.0.is_empty() {
            Some("is empty")
        } else if !self.0.bytes().all(|b| b.is_ascii_graphic()) {
            Some("holds a space, a line break or a non-ASCII character (a bearer token is visible ASCII, RFC 6750 §2.1)")
        } else {
            None
        }
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<hidden>)")
    }
}

/// `--api-token`: accepted as given, checked by `RunArgs::check`, whose error does not quote it.
pub fn api_token(s: &str) -> Result<ApiToken, String> {
    Ok(ApiToken(s.to_string()))
}

/// Token files are one short line.
pub const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// `--api-token-file`: a regular file of at most 4 KiB holding the token; one trailing line
/// break is removed. Errors never quote the file's content.
pub fn api_token_file(s: &str) -> Result<ApiToken, String> {
    let bytes = read_regular_file(Path::new(s), MAX_TOKEN_FILE_BYTES)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| "is not text (a bearer token is visible ASCII)".to_string())?;
    let line = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if line.is_empty() {
        return Err("is empty; write the token on its first line".into());
    }
    let token = ApiToken(line.to_string());
    match token.problem() {
        Some(p) => Err(format!("{p}; the file must hold the token alone on one line")),
        None => Ok(token),
    }
}

fn describe(t: FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Reads a regular file of at most `cap` bytes. FIFOs, devices and directories are refused
/// after a non-blocking open (so a FIFO without a writer cannot hang us) and before a byte is
/// read; the cap holds even if the file grows while it is read. Errors quote no content.
pub fn read_regular_file(path: &Path, cap: u64) -> Result<Vec<u8>, String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot open it: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot stat it: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!("is {}, not a regular file", describe(meta.file_type())));
    }
    let too_big = || format!("is larger than {cap} bytes");
    if meta.len() > cap {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(cap + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > cap {
        return Err(too_big());
    }
    Ok(bytes)
}

/// An output file given on the command line (`-` is standard output): its directory must exist
/// and the path must not be a directory, so a typo is found before anything starts. The file
/// itself is created when it is first written.
pub fn output_file(flag: &str, path: &Path) -> Result<(), String> {
    if path.as_os_str() == "-" {
        return Ok(());
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(format!("{flag} {}: {} is not a directory", path.display(), dir.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "{flag} {}: the directory {} does not exist; create it first",
                path.display(),
                dir.display()
            ))
        }
        Err(e) => return Err(format!("{flag} {}: {}: {e}", path.display(), dir.display())),
    }
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(format!("{flag} {}: is a directory; name a file", path.display()));
    }
    Ok(())
}

/// clap's error as one line: the problem, what is allowed and its tip, without the usage block.
pub fn one_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information")
        })
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect();
    parts.join(" ")
}

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

/// `--vantage NAME=FILE,FILE…`.
pub fn vantage_arg(s: &str) -> Result<(String, Vec<PathBuf>), String> {
    let Some((name, files)) = s.split_once('=') else {
        return Err(format!("'{s}' is not NAME=FILE[,FILE…] (e.g. edge=edge-0.pcap,edge-1.pcap)"));
    };
    let files: Vec<PathBuf> =
        files.split(',').filter(|f| !f.is_empty()).map(PathBuf::from).collect();
    if name.is_empty() || name.contains(',') || files.is_empty() {
        return Err(format!("'{s}' is not NAME=FILE[,FILE…] (e.g. edge=edge-0.pcap,edge-1.pcap)"));
    }
    if files.iter().any(|f| f.as_os_str() == "-") {
        return Err(format!("'{s}': standard input cannot be part of a vantage of several files"));
    }
    Ok((name.to_string(), files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_bounded_before_they_are_expanded() {
        assert_eq!(parse_cpu_list("0,2-3", 7), Ok(vec![0, 2, 3]));
        assert_eq!(parse_cpu_list(" 4 - 5 ,", 7), Ok(vec![4, 5]));
        for (bad, why) in [
            ("0-99999999999", "beyond 7"),
            ("8", "beyond 7"),
            ("3-1", "backwards"),
            ("1,1", "twice"),
            ("0-2,2", "twice"),
            ("-1", "not a CPU number"),
            ("x", "not a CPU number"),
            ("99999999999999999999999", "not a CPU number"),
            (",", "empty"),
        ] {
            let e = parse_cpu_list(bad, 7).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn numbers_must_be_finite_and_in_range() {
        let p = Bounds { min: 0.001, max: 300.0, unit: "seconds" }.duration(1.0);
        assert_eq!(p("3"), Ok(Duration::from_secs(3)));
        assert_eq!(p("300"), Ok(Duration::from_mins(5)));
        for bad in ["nan", "NaN", "inf", "-inf", "-1", "0", "1e-12", "1e11", "1e300", "", "x"] {
            let e = p(bad).unwrap_err();
            assert!(e.contains("0.001..=300 seconds"), "{bad}: {e}");
        }
    }

    #[test]
    fn whole_numbers_state_their_range_for_any_bad_value() {
        let p = whole::<u32>(2, 1000, "");
        assert_eq!(p("5"), Ok(5));
        for bad in [
            "1",
            "1001",
            "-1",
            "nan",
            "1e300",
            "1.5",
            "99999999999999999999999999999999999999999",
            "",
        ] {
            let e = p(bad).unwrap_err();
            assert!(e.ends_with("allowed: 2..=1000"), "{bad}: {e}");
        }
    }

    #[test]
    fn token_problems_do_not_quote_the_token() {
        assert_eq!(ApiToken("s3cret-token".into()).problem(), None);
        assert_eq!(ApiToken(String::new()).problem(), Some("is empty"));
        let p = ApiToken("two words".into()).problem().unwrap();
        assert!(!p.contains("two"), "{p}");
        assert_eq!(format!("{:?}", ApiToken("s3cret".into())), "ApiToken(<hidden>)");
    }
}
