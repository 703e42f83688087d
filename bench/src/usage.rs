//! CPU time and peak memory, from the kernel's own accounting: getrusage(2) for the calling
//! thread, wait4(2) for a finished child (user + system; ru_maxrss in KiB on Linux).
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

fn tv(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

/// User + system CPU time of the calling thread so far (RUSAGE_THREAD, Linux ≥ 2.6.26).
pub fn thread_cpu() -> Duration {
    // Safety: rusage is plain data that getrusage fills; RUSAGE_THREAD names the calling thread.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // Safety: `ru` is a valid, writable rusage for the call.
    let r = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &raw mut ru) };
    debug_assert_eq!(r, 0, "getrusage(RUSAGE_THREAD) cannot fail with a valid pointer");
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// What a finished child cost.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    /// User + system CPU time.
    pub cpu: Duration,
    /// Peak resident set size, bytes.
    pub max_rss: u64,
}

/// Reaps `child` with wait4 and returns its exit status and its rusage.
pub fn wait_usage(child: &mut Child) -> Result<(ExitStatus, Usage)> {
    let mut status = 0;
    // Safety: rusage is plain data that wait4 fills; the pid is our own unreaped child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // Safety: `status` and `ru` are valid, writable locals for the call.
    let r = unsafe { libc::wait4(child.id() as i32, &raw mut status, 0, &raw mut ru) };
    if r < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let max_rss = u64::try_from(ru.ru_maxrss).unwrap_or(0) * 1024;
    Ok((ExitStatus::from_raw(status), Usage { cpu: tv(ru.ru_utime) + tv(ru.ru_stime), max_rss }))
}

/// Runs `cmd` to completion (stdout to `stdout`, stderr to `stderr`, no stdin) and returns its
/// usage; an unsuccessful exit is an error quoting the last line it wrote to stderr.
pub fn run_measured(mut cmd: Command, stdout: &Path, stderr: &Path) -> Result<Usage> {
    let out =
        std::fs::File::create(stdout).with_context(|| format!("creating {}", stdout.display()))?;
    let err =
        std::fs::File::create(stderr).with_context(|| format!("creating {}", stderr.display()))?;
    let mut child =
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().with_context(|| {
            format!("starting {cmd:?} (is it installed? scripts/bench.sh installs the baselines)")
        })?;
    let (status, usage) = wait_usage(&mut child)?;
    if !status.success() {
        let text = std::fs::read_to_string(stderr).unwrap_or_default();
        bail!(
            "{cmd:?} failed ({status}): {}",
            text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("")
        );
    }
    Ok(usage)
}
