//! What `run` writes, against a real monitor on a span port in namespaces: evidence retention
//! touches only wirewatch's own files (and cleans temporary files of unfinished writes), a
//! full disk under the events file and the evidence directory is a counted, logged failure
//! that monitoring survives (and recovers from), and `--record` rotates by size.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wirewatch_testkit::netns::{enter_current_thread, privileged_or_skip};
use wirewatch_testkit::tempdir::TempDir;
use wirewatch_testkit::topology::{Subnets, Topology};
use wirewatch_testkit::traffic::{connect_from, serve_once};

static SERIAL: Mutex<()> = Mutex::new(());

/// a ↔ b on a veth (10.78.0.0/24), b0 mirrored to the monitor's tap0 (as
/// control/tests/control_plane.rs).
fn topo(tag: &str) -> Topology {
    let pid = std::process::id();
    let names = (format!("wwoa{tag}{pid}"), format!("wwob{tag}{pid}"), format!("wwom{tag}{pid}"));
    Topology::two_hosts_and_monitor(
        (&names.0, &names.1, &names.2),
        "tap0",
        Subnets { v4: "10.78.0", v6: None },
    )
    .unwrap()
}

/// A refused connection: one `syn_rejected` event (with evidence).
fn refused(t: &Topology, port: u16) {
    let srv = SocketAddr::new("10.78.0.2".parse().unwrap(), port);
    assert!(connect_from(&t["a"].name, srv, |s| s.is_err()).join().unwrap());
}

struct Wirewatch {
    child: Child,
    log: PathBuf,
}

impl Wirewatch {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// SIGTERM and wait: files are flushed and the summary written.
    fn stop(mut self) -> String {
        // Safety: signalling our own child, which has not been waited for yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for Wirewatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(t: &Topology, dir: &Path, args: &[&str]) -> Wirewatch {
    let log = dir.join("wirewatch.log");
    let child = t["mon"]
        .command(env!("CARGO_BIN_EXE_wirewatch"))
        .args(["run", "--iface", "tap0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let ww = Wirewatch { child, log };
    let started = Instant::now();
    while !ww.log().contains("XDP attached") {
        assert!(started.elapsed() < Duration::from_secs(30), "not attached:\n{}", ww.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    ww
}

/// GET `path` on the monitor's API.
fn get(ns: &str, path: &str) -> (u16, String) {
    let (ns, path) = (ns.to_string(), path.to_string());
    std::thread::spawn(move || {
        enter_current_thread(&ns).unwrap();
        let mut s = TcpStream::connect("127.0.0.1:9464").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        let code = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
        (code, buf.split_once("\r\n\r\n").unwrap().1.to_string())
    })
    .join()
    .unwrap()
}

fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{page}"))
}

/// Polls until `f` holds, for up to 15 s.
fn eventually(what: &str, ww: &Wirewatch, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(15), "never: {what}\n{}", ww.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A 256 KiB tmpfs mounted at a path (a disk that fills up); unmounted on drop, before the
/// test's directory goes.
struct Tmpfs(PathBuf);
impl Tmpfs {
    fn mount(path: &Path) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount: {}", String::from_utf8_lossy(&out.stderr));
        Self(path.to_path_buf())
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).output();
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn retention_removes_only_its_own_files_and_cleans_unfinished_writes() {
    if !privileged_or_skip("retention_removes_only_its_own_files_and_cleans_unfinished_writes") {
        return;
    }
    let _s = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = TempDir::new("out-ret");
    let ev = dir.join("evidence");
    std::fs::create_dir_all(&ev).unwrap();
    // An operator's capture, a file of another tool, and what a killed run left behind.
    let mine = ["incident-42.pcapng", "notes.txt", "1700000000000-not_a_kind-w0-1.pcapng"];
    for m in mine {
        std::fs::write(ev.join(m), b"keep me").unwrap();
    }
    let old_ours = "1700000000000-syn_rejected-w0-1.pcapng";
    std::fs::write(ev.join(old_ours), b"old evidence").unwrap();
    let stale = "1700000000001-syn_rejected-w0-2.pcapng.tmp";
    std::fs::write(ev.join(stale), b"").unwrap();
    let t = topo("r");
    // A budget of 1 byte: every evidence file of ours goes, at start and as it is written.
    let ww =
        start(&t, &dir, &["--evidence-dir", ev.to_str().unwrap(), "--evidence-max-bytes", "1"]);
    refused(&t, 7021);
    eventually("the new evidence file is written and removed", &ww, || {
        let (_, page) = get(&t["mon"].name, "/metrics");
        sample(&page, "wirewatch_evidence_files_written_total") >= 1.0
            && sample(&page, "wirewatch_evidence_files_removed_total") >= 2.0
    });
    let left = files_in(&ev);
    let mut want: Vec<String> = mine.iter().map(ToString::to_string).collect();
    want.sort();
    assert_eq!(left, want, "only the operator's files stay\n{}", ww.log());
    assert!(ww.log().contains("removed 1 temporary file"), "{}", ww.log());
}

#[test]
fn a_full_disk_is_counted_and_logged_and_monitoring_goes_on() {
    if !privileged_or_skip("a_full_disk_is_counted_and_logged_and_monitoring_goes_on") {
        return;
    }
    let _s = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = TempDir::new("out-full");
    let small = dir.join("small");
    let _tmpfs = Tmpfs::mount(&small);
    let events = small.join("events.jsonl");
    let ev = small.join("evidence");
    let t = topo("f");
    let ww = start(
        &t,
        &dir,
        &["--events", events.to_str().unwrap(), "--evidence-dir", ev.to_str().unwrap()],
    );
    // The disk fills up before the first event (the events file is open, still empty).
    let filler = small.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    while f.write_all(&[0u8; 4096]).is_ok() {}
    drop(f);
    refused(&t, 7031);
    let failures = |series: &str| {
        let (_, page) = get(&t["mon"].name, "/metrics");
        sample(&page, series)
    };
    eventually("the failed writes are counted", &ww, || {
        failures("wirewatch_output_failures_total{output=\"events\"}") >= 1.0
            && failures("wirewatch_evidence_files_failed_total") >= 1.0
    });
    let log = ww.log();
    assert!(log.contains("events output failed") && log.contains("No space left"), "{log}");
    // The detection is still served, and no empty temporary evidence file is left behind.
    let (code, body) = get(&t["mon"].name, "/api/events?kind=syn_rejected");
    assert_eq!(code, 200);
    assert!(body.contains("7031"), "{body}");
    let tmp: Vec<String> = files_in(&ev).into_iter().filter(|n| n.contains(".tmp")).collect();
    assert!(tmp.is_empty(), "temporary files left on the full disk: {tmp:?}");
    // Space again: the next event is written, and the log says the output recovered.
    std::fs::remove_file(&filler).unwrap();
    refused(&t, 7032);
    eventually("the event after the disk was freed is written", &ww, || {
        std::fs::read_to_string(&events).is_ok_and(|s| s.contains("7032"))
    });
    assert!(ww.log().contains("events output works again"), "{}", ww.log());
    let (_, page) = get(&t["mon"].name, "/metrics");
    assert!(page.contains("# HELP wirewatch_output_failures_total "), "{page}");
}

#[test]
fn the_record_file_rotates_by_size() {
    if !privileged_or_skip("the_record_file_rotates_by_size") {
        return;
    }
    let _s = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = TempDir::new("out-rec");
    let rec = dir.join("rec.pcapng");
    let t = topo("c");
    let ww = start(&t, &dir, &["--record", rec.to_str().unwrap(), "--record-max-bytes", "65536"]);
    // 8 MB through the span: ~5,600 frames of 128 B kept, far more than six files of 64 KiB
    // hold.
    let srv = SocketAddr::new("10.78.0.2".parse().unwrap(), 7041);
    let h = serve_once(&t["b"].name, srv, None, |mut s| {
        let mut v = Vec::new();
        s.read_to_end(&mut v).map(|_| v.len())
    })
    .unwrap();
    connect_from(&t["a"].name, srv, |s| s.unwrap().write_all(&vec![7u8; 8_000_000]).unwrap())
        .join()
        .unwrap();
    assert_eq!(h.join().unwrap().unwrap().unwrap(), 8_000_000);
    std::thread::sleep(Duration::from_secs(1));
    let log = ww.stop();
    let mut names = files_in(&dir);
    names.retain(|n| n.starts_with("rec.pcapng"));
    let want: Vec<String> = std::iter::once("rec.pcapng".to_string())
        .chain((1..=5).map(|i| format!("rec.pcapng.{i}")))
        .collect();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(names, want_sorted, "{log}");
    for n in &want {
        let p = dir.join(n);
        let len = std::fs::metadata(&p).unwrap().len();
        assert!(len <= 65536, "{n} is {len} bytes");
        // Each file is a whole capture that analyze reads without complaint.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wirewatch"))
            .args(["analyze", "--format", "json"])
            .arg(&p)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{n}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// `run` with an output file in a directory that does not exist stops at start with exit
/// status 2 and one line, before the interface is touched.
#[test]
fn run_refuses_outputs_into_missing_directories_before_attaching() {
    if !privileged_or_skip("run_refuses_outputs_into_missing_directories_before_attaching") {
        return;
    }
    let _s = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = TempDir::new("out-miss");
    let t = topo("m");
    for flag in ["--events", "--record", "--summary-json"] {
        for (path, why) in [
            ("/nonexistent-ww-dir/out", "/nonexistent-ww-dir does not exist"),
            (dir.to_str().unwrap(), "is a directory"),
        ] {
            let out = t["mon"]
                .command(env!("CARGO_BIN_EXE_wirewatch"))
                .args(["run", "--iface", "tap0", flag, path, "--duration", "5"])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{flag} {path}: {err}");
            let lines: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
            assert_eq!(lines.len(), 1, "{err}");
            assert!(lines[0].contains(flag) && lines[0].contains(why), "{err}");
            assert!(!err.contains("XDP attached"), "{err}");
            let link = t["mon"].run("ip -d link show tap0").unwrap();
            assert!(!link.contains("prog/xdp"), "an XDP program was left attached:\n{link}");
        }
    }
}
