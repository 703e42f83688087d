//! The metrics/API server of a real `wirewatch run` (XDP attached to a veth in a namespace)
//! against what knocked the old one over: 1,500 idle connections under the systemd default
//! NOFILE of 1024, a 64 MiB request header, 20,000 pipelined requests never read, running out
//! of descriptors outright; and `/healthz` when the XDP program is taken away from outside.
//! After each, `/healthz` must answer (a liveness bound of 3 s, generous: it answers in
//! milliseconds) and memory must stay bounded.
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wirewatch_testkit::netns::{enter_current_thread, privileged_or_skip, Netns};
use wirewatch_testkit::tempdir::TempDir;
use wirewatch_testkit::topology::Topology;

static SERIAL: Mutex<()> = Mutex::new(());

const ADDR: &str = "127.0.0.1:9464";
/// The liveness bound of the issue: /healthz answers within this after each attack.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

struct Wirewatch {
    child: Child,
    log: std::path::PathBuf,
    /// Its log and evidence directory, removed after `drop` has stopped wirewatch.
    _dir: TempDir,
}

impl Wirewatch {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Wirewatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A namespace ("h") with a veth pair; wirewatch watches `tap0`.
fn namespace(tag: &str) -> Topology {
    let mut t = Topology::new();
    t.namespace("h", &format!("wwh{tag}{}", std::process::id())).unwrap();
    t.veth(("h", "tap0"), ("h", "tap1")).unwrap();
    t
}

/// Starts `wirewatch run` in `ns` (with NOFILE `nofile` when given) and waits for /healthz.
fn start(ns: &Netns, nofile: Option<u32>, extra: &[&str]) -> Wirewatch {
    let dir = TempDir::new(&format!("http-{}", ns.name));
    let log = dir.join("wirewatch.log");
    let bin = env!("CARGO_BIN_EXE_wirewatch");
    let mut c = match nofile {
        // prlimit execs wirewatch: the child's pid is wirewatch's.
        Some(n) => {
            let mut c = ns.command("prlimit");
            c.arg(format!("--nofile={n}:{n}")).arg(bin);
            c
        }
        None => ns.command(bin),
    };
    let ev = dir.join("evidence");
    c.args(["run", "--iface", "tap0", "--ring-size", "256", "--metrics", ADDR, "--evidence-dir"])
        .arg(&ev)
        .args(extra);
    let child =
        c.stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
    let mut ww = Wirewatch { child, log, _dir: dir };
    let started = Instant::now();
    loop {
        // The API is up before the interface is attached: wait for both.
        let attached = ww.log().contains("XDP attached");
        if attached && matches!(get(&ns.name, "/healthz", Duration::from_secs(2)), Ok((200, _))) {
            return ww;
        }
        assert!(ww.child.try_wait().unwrap().is_none(), "wirewatch exited:\n{}", ww.log());
        assert!(started.elapsed() < Duration::from_secs(30), "no /healthz:\n{}", ww.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `f` on a thread inside namespace `ns` (its sockets live there).
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter_current_thread(&ns).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// One GET on a new connection, answered within `within`: (status, body).
fn get(ns: &str, path: &str, within: Duration) -> std::io::Result<(u16, String)> {
    let path = path.to_string();
    in_ns(ns, move || {
        let addr: SocketAddr = ADDR.parse().unwrap();
        let mut s = TcpStream::connect_timeout(&addr, within)?;
        s.set_read_timeout(Some(within))?;
        s.set_write_timeout(Some(within))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: {ADDR}\r\nConnection: close\r\n\r\n")?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text:?}")))?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Ok((code, body))
    })
}

/// /healthz answers 200 within the bound, on a new connection.
fn healthz_answers(ns: &Netns, ww: &Wirewatch, after: &str) {
    let t = Instant::now();
    let r = get(&ns.name, "/healthz", ANSWER_WITHIN);
    let took = t.elapsed();
    assert!(
        matches!(&r, Ok((200, b)) if b == "ok\n") && took <= ANSWER_WITHIN,
        "after {after}: /healthz gave {r:?} in {took:?}\n{}",
        ww.log()
    );
    eprintln!("after {after}: /healthz answered in {took:?}");
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// The value of the sample `series` (name with labels, as printed) on a metrics page.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The test opens thousands of sockets itself.
fn raise_own_nofile(want: u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // Safety: getrlimit/setrlimit read and write the rlimit on this stack.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim), 0);
        lim.rlim_cur = lim.rlim_cur.max(want.min(lim.rlim_max));
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim), 0);
    }
    assert!(
        lim.rlim_cur >= want,
        "the test needs NOFILE {want}, the hard limit is {}",
        lim.rlim_max
    );
}

#[test]
fn idle_floods_huge_headers_and_unread_pipelines_never_silence_healthz() {
    if !privileged_or_skip("idle_floods_huge_headers_and_unread_pipelines_never_silence_healthz") {
        return;
    }
    let _s = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    raise_own_nofile(4096);
    let t = namespace("f");
    let ns = &t["h"];
    let ww = start(ns, Some(1024), &[]);
    let pid = ww.pid();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "wirewatch", "measuring the right process");
    let rss_before = rss_bytes(pid);

    // 1. 1,500 idle connections, more than the 1,024 descriptors wirewatch may open: all are
    // accepted by the kernel and held by the client, none sends a byte.
    let idle = in_ns(&ns.name, || {
        let addr: SocketAddr = ADDR.parse().unwrap();
        (0..1500)
            .map(|i| {
                TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("idle connection {i}: {e}"))
            })
            .collect::<Vec<_>>()
    });
    assert_eq!(idle.len(), 1500);
    healthz_answers(ns, &ww, "1,500 idle connections");
    eprintln!("RSS with 1,500 idle connections: {} bytes", rss_bytes(pid));
    // The server keeps to its connection cap, which it states at start.
    let log = ww.log();
    let cap: f64 = log
        .split("(at most ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no connection cap in the log:\n{log}"));
    assert!(cap < 1024.0, "cap {cap} is not below the descriptor limit");
    let (_, page) = get(&ns.name, "/metrics", ANSWER_WITHIN).unwrap();
    let open = sample(&page, "wirewatch_http_connections").unwrap();
    // The scrape's own connection may have just evicted another one still closing.
    assert!(open <= cap + 1.0, "{open} connections open, cap {cap}");

    // 2. A header over the limit is answered 431, and the client gets to read it: the server
    // answers as soon as the limit is passed, then keeps draining what the client still sends
    // (a lingering close). The rest of the head comes in pieces after pauses, so a server that
    // closed at once would have answered the second piece with a RST and failed the third
    // write with a broken pipe.
    let (status, _) = in_ns(&ns.name, || {
        let mut s = TcpStream::connect(ADDR).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let piece = "a".repeat(20 << 10);
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {piece}").unwrap();
        for i in 0..2 {
            std::thread::sleep(Duration::from_millis(200));
            s.write_all(piece.as_bytes())
                .unwrap_or_else(|e| panic!("piece {} of an oversized head: {e}", i + 2));
        }
        s.write_all(b"\r\n\r\n").unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).expect("the 431 and a clean close");
        let text = String::from_utf8_lossy(&buf).to_string();
        (text.split_whitespace().nth(1).map(String::from), text)
    });
    assert_eq!(status.as_deref(), Some("431"));

    // 3. A 64 MiB header: the server stops reading and closes long before it is all sent.
    let sent = in_ns(&ns.name, || {
        let mut s = TcpStream::connect(ADDR).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut sent = 0usize;
        let chunk = vec![b'a'; 1 << 20];
        if s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ").is_ok() {
            while sent < 64 << 20 {
                match s.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(_) => break,
                }
            }
        }
        sent
    });
    assert!(sent < 64 << 20, "the server took all {sent} bytes of a 64 MiB header");
    healthz_answers(ns, &ww, "a 64 MiB header");

    // 4. 20,000 pipelined requests whose answers are never read, on a connection kept open:
    // scrapes, whose pages soon fill every buffer between us, so the server's writes block.
    let pipelined = in_ns(&ns.name, || {
        let mut s = TcpStream::connect(ADDR).unwrap();
        wirewatch_testkit::traffic::small_rcvbuf(&s, 4096).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let one = format!("GET /metrics HTTP/1.1\r\nHost: {ADDR}\r\n\r\n");
        let all = one.repeat(20_000);
        let mut written = 0;
        let started = Instant::now();
        while written < all.len() {
            match s.write(&all.as_bytes()[written..]) {
                Ok(n) => written += n,
                // Both socket buffers are full: the server waits for us to read. Leave it so.
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => panic!("pipelining: {e}"),
            }
        }
        eprintln!("pipelined {written} of {} bytes in {:?}", all.len(), started.elapsed());
        s
    });
    healthz_answers(ns, &ww, "20,000 pipelined unread requests");

    // The answers are served, memory stayed bounded and the cap worked by closing the
    // quietest connections (counted).
    let rss_after = rss_bytes(pid);
    let grew = rss_after.saturating_sub(rss_before);
    eprintln!("RSS {rss_before} → {rss_after} bytes (+{grew})");
    assert!(grew < 32 << 20, "RSS grew by {grew} bytes");
    let (code, page) = get(&ns.name, "/metrics", ANSWER_WITHIN).unwrap();
    assert_eq!(code, 200);
    let evicted = sample(&page, "wirewatch_http_connections_closed_total{reason=\"evicted\"}");
    assert!(evicted.is_some_and(|n| n >= 1.0), "evictions: {evicted:?}\n{page}");
    assert!(page.contains("# HELP wirewatch_http_connections_closed_total "), "{page}");
    drop((idle, pipelined));
    healthz_answers(ns, &ww, "the clients went away");
    assert!(!ww.log().contains("panicked"), "{}", ww.log());
}

/// accept() failing with EMFILE is survived: the limit is lowered under the running process
/// (as a leak elsewhere would use it up), idle connections pile up, and /healthz still
/// answers because the quietest connection is closed to make room; after the limit is raised
/// again everything works as before.
#[test]
fn the_accept_loop_survives_running_out_of_descriptors() {
    if !privileged_or_skip("the_accept_loop_survives_running_out_of_descriptors") {
        return;
    }
    let _s = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    raise_own_nofile(4096);
    let t = namespace("e");
    let ns = &t["h"];
    let ww = start(ns, None, &[]);
    let pid = ww.pid();
    let limit = open_fds(pid) + 4;
    let prlimit = |n: usize| {
        let out = std::process::Command::new("prlimit")
            .args(["--pid", &pid.to_string(), &format!("--nofile={n}:")])
            .output()
            .unwrap();
        assert!(out.status.success(), "prlimit: {}", String::from_utf8_lossy(&out.stderr));
    };
    prlimit(limit);
    let idle =
        in_ns(&ns.name, || (0..50).map(|_| TcpStream::connect(ADDR).unwrap()).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_millis(500));
    healthz_answers(ns, &ww, "running out of descriptors");
    prlimit(4096);
    let (_, page) = get(&ns.name, "/metrics", ANSWER_WITHIN).unwrap();
    let errors = sample(&page, "wirewatch_http_accept_errors_total{reason=\"out_of_resources\"}");
    assert!(errors.is_some_and(|n| n >= 1.0), "accept errors: {errors:?}\n{page}");
    assert!(ww.log().contains("HTTP accept failed"), "{}", ww.log());
    drop(idle);
    healthz_answers(ns, &ww, "the limit was raised again");
}

/// The bpf(2) command numbers and the link's id, as `bpftool link detach` uses them
/// (include/uapi/linux/bpf.h).
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_DETACH: libc::c_long = 34;

/// The id of the XDP link process `pid` holds (from /proc/PID/fdinfo, kernel/bpf/syscall.c
/// `bpf_link_show_fdinfo`).
fn xdp_link_id(pid: u32) -> u32 {
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap().flatten() {
        let info = std::fs::read_to_string(e.path()).unwrap_or_default();
        if info.lines().any(|l| l.split_whitespace().eq(["link_type:", "xdp"])) {
            return info
                .lines()
                .find_map(|l| l.strip_prefix("link_id:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap();
        }
    }
    panic!("process {pid} holds no XDP link");
}

/// Detaches an XDP link from outside the process that made it.
fn detach_link(id: u32) {
    let mut attr = [0u32; 16];
    attr[0] = id;
    // Safety: bpf(2) reads `attr` (zeroed beyond the fields the command uses) for its size.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_LINK_GET_FD_BY_ID, attr.as_ptr(), size_of_val(&attr))
    };
    assert!(fd >= 0, "BPF_LINK_GET_FD_BY_ID: {}", std::io::Error::last_os_error());
    let mut attr = [0u32; 16];
    attr[0] = fd as u32;
    // Safety: as above; `fd` is the link descriptor just returned.
    let r =
        unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_DETACH, attr.as_ptr(), size_of_val(&attr)) };
    let err = std::io::Error::last_os_error();
    // Safety: `fd` is ours and closed once.
    unsafe { libc::close(fd as i32) };
    assert_eq!(r, 0, "BPF_LINK_DETACH: {err}");
}

/// Polls /healthz until it answers `code`, for up to 10 s (the check runs twice a second).
fn healthz_becomes(ns: &Netns, ww: &Wirewatch, code: u16) -> String {
    let t = Instant::now();
    loop {
        match get(&ns.name, "/healthz", ANSWER_WITHIN) {
            Ok((c, body)) if c == code => return body,
            r if t.elapsed() > Duration::from_secs(10) => {
                panic!("/healthz never answered {code}; last {r:?}\n{}", ww.log())
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn healthz_is_503_with_the_reason_when_xdp_is_taken_away() {
    if !privileged_or_skip("healthz_is_503_with_the_reason_when_xdp_is_taken_away") {
        return;
    }
    let _s = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let t = namespace("x");
    let ns = &t["h"];
    let ww = start(ns, None, &["--api-token", "s3cret"]);
    assert_eq!(get(&ns.name, "/healthz", ANSWER_WITHIN).unwrap(), (200, "ok\n".into()));
    // Another tool detaches the program (bpftool link detach): capture stops silently.
    detach_link(xdp_link_id(ww.pid()));
    let body = healthz_becomes(ns, &ww, 503);
    assert!(body.contains("XDP program is no longer attached to tap0"), "{body}");
    assert!(ww.log().contains("unhealthy"), "{}", ww.log());
    // The interface itself goes away.
    ns.run("ip link del tap0").unwrap();
    let t = Instant::now();
    let body = loop {
        let body = healthz_becomes(ns, &ww, 503);
        if body.contains("interface tap0 is gone") || t.elapsed() > Duration::from_secs(10) {
            break body;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(body.contains("interface tap0 is gone"), "{body}");
    assert!(Path::new(&format!("/proc/{}", ww.pid())).exists(), "wirewatch kept running");
}

/// One raw request on a new connection; the whole answer as text.
fn raw(ns: &str, request: String) -> String {
    in_ns(ns, move || {
        let mut s = TcpStream::connect(ADDR).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).to_string()
    })
}

/// What a client or a script sends: %-encoded query values, HEAD, other methods, the token
/// from a file (and not in `ps`).
#[test]
fn the_api_decodes_queries_answers_head_and_takes_its_token_from_a_file() {
    if !privileged_or_skip("the_api_decodes_queries_answers_head_and_takes_its_token_from_a_file") {
        return;
    }
    let _s = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let token = "t0ken-from-a-file";
    let file = std::env::temp_dir().join(format!("ww-http-token-{}", std::process::id()));
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let t = namespace("q");
    let ns = &t["h"];
    let ww = start(ns, None, &["--api-token-file", file.to_str().unwrap()]);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", ww.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(token), "the token shows in ps");
    let req = |method: &str, target: &str, auth: bool| {
        let auth = if auth { format!("Authorization: Bearer {token}\r\n") } else { String::new() };
        raw(
            &ns.name,
            format!("{method} {target} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"),
        )
    };
    let status = |answer: &str| answer.split_whitespace().nth(1).unwrap_or("").to_string();
    assert_eq!(status(&req("GET", "/api/events", false)), "401");
    let ok = req("GET", "/api/events?since=2026-01-01T00%3A00%3A00Z&limit=5", true);
    assert_eq!(status(&ok), "200", "{ok}");
    assert!(ok.ends_with("[]"), "{ok}");
    assert_eq!(status(&req("GET", "/api/events?since=%zz", true)), "400");
    assert_eq!(status(&req("GET", "/api/events?kind=not_a_kind", true)), "400");
    // HEAD: the status and the headers of GET, no body.
    let head = req("HEAD", "/healthz", false);
    assert_eq!(status(&head), "200", "{head}");
    assert!(head.to_ascii_lowercase().contains("content-length: 3"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "a body after HEAD: {head:?}");
    let head = req("HEAD", "/metrics", true);
    assert_eq!(status(&head), "200", "{head}");
    assert!(head.ends_with("\r\n\r\n"), "a body after HEAD: {head:?}");
    let post = req("POST", "/api/events", true);
    assert_eq!(status(&post), "405", "{post}");
    assert!(post.contains("allow: GET, HEAD") || post.contains("Allow: GET, HEAD"), "{post}");
    // Traversal in any spelling is refused before the file system is asked.
    for id in ["..%2F..%2Fetc%2Fpasswd", "%2e%2e%2fx.pcapng", "..", "x.pcapng"] {
        let a = req("GET", &format!("/api/evidence/{id}"), true);
        assert_eq!(status(&a), "400", "{id}: {a}");
    }
    let _ = std::fs::remove_file(&file);
}

/// The thread id of the worker of `iface` queue 0 (threads are named `ww-IFACE-qN`).
fn worker_tid(pid: u32, iface: &str) -> i32 {
    let want = format!("ww-{iface}-q0");
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        if std::fs::read_to_string(t.join("comm")).is_ok_and(|c| c.trim() == want) {
            return t.file_name().unwrap().to_str().unwrap().parse().unwrap();
        }
    }
    panic!("no thread named {want} in /proc/{pid}/task");
}

/// A worker that stops going round its loop (wedged: here, one thread of the process stopped
/// with ptrace, the rest of wirewatch running) turns /healthz to 503 naming it; once it runs
/// again, /healthz is 200 again.
#[test]
fn healthz_is_503_while_a_worker_stands_still() {
    if !privileged_or_skip("healthz_is_503_while_a_worker_stands_still") {
        return;
    }
    let _s = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let t = namespace("w");
    let ns = &t["h"];
    let ww = start(ns, None, &[]);
    assert_eq!(get(&ns.name, "/healthz", ANSWER_WITHIN).unwrap(), (200, "ok\n".into()));
    let tid = worker_tid(ww.pid(), "tap0");
    // ptrace(2): PTRACE_SEIZE + PTRACE_INTERRUPT stop only the seized thread; this test thread
    // is its tracer until PTRACE_DETACH lets it go on.
    // Safety: plain ptrace requests on a thread id read from /proc; no pointers are passed.
    let seized = unsafe {
        libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0) == 0
            && libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0) == 0
    };
    assert!(seized, "ptrace: {}", std::io::Error::last_os_error());
    let mut status = 0;
    // Safety: waits for the traced thread's stop; `status` is a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(tid, &raw mut status, libc::__WALL) }, tid);
    let t = Instant::now();
    let body = loop {
        match get(&ns.name, "/healthz", ANSWER_WITHIN) {
            Ok((503, body)) => break body,
            Ok((200, _)) if t.elapsed() < Duration::from_secs(25) => {
                std::thread::sleep(Duration::from_millis(500));
            }
            r => panic!("/healthz while the worker stands still: {r:?}\n{}", ww.log()),
        }
    };
    assert!(body.contains("the worker of tap0 queue 0 has not gone round its loop"), "{body}");
    // Safety: releases the thread this test stopped.
    assert_eq!(unsafe { libc::ptrace(libc::PTRACE_DETACH, tid, 0, 0) }, 0);
    let body = healthz_becomes(ns, &ww, 200);
    assert_eq!(body, "ok\n");
}
