//! CPU time and peak memory, from the kernel's own accounting: getrusage(2) for the calling
//! thread, wait4(2) for a finished child (user + system), and the child's own VmHWM for its
//! peak memory (see `wait_usage`).
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

/// The peak RSS of a live process's own memory image (VmHWM of /proc/PID/status), bytes.
fn vm_hwm(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = s.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().strip_suffix("kB")?;
    kib.trim().parse::<u64>().ok().map(|k| k * 1024)
}

/// Reaps `child` with wait4 and returns its exit status and its rusage.
///
/// The peak RSS is the child's own: its VmHWM, sampled every 10 ms until it exits (the
/// memory image it execs starts with a fresh high-water mark). wait4's ru_maxrss is not used:
/// Linux starts a spawned child's maxrss at the *parent's* high-water mark (exec_mmap saves the
/// outgoing mm's, which for a vfork/posix_spawn child is the parent's), so after the bench had
/// held a large capture every child "peaked" at the bench's own size.
pub fn wait_usage(child: &mut Child) -> Result<(ExitStatus, Usage)> {
    let pid = child.id();
    let mut hwm = 0u64;
    loop {
        if let Some(b) = vm_hwm(pid) {
            hwm = hwm.max(b);
        }
        // waitid with WNOWAIT: has it exited? (It stays unreaped for wait4 below.)
        // Safety: siginfo is plain data that waitid fills; the pid is our own child.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // Safety: `info` is a valid, writable local for the call.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid,
                &raw mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // Safety: si_pid is set by waitid when a child changed state, 0 otherwise.
        if r < 0 || unsafe { info.si_pid() } != 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut status = 0;
    // Safety: rusage is plain data that wait4 fills; the pid is our own unreaped child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // Safety: `status` and `ru` are valid, writable locals for the call.
    let r = unsafe { libc::wait4(child.id() as i32, &raw mut status, 0, &raw mut ru) };
    if r < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let max_rss = hwm;
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
