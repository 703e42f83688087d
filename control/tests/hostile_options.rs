//! Hostile option values, as an operator (or a script fed untrusted input) could pass them:
//! each is refused up front with exit status 2 and one line on stderr naming the option, the
//! value and what is allowed: no panic, no hang, nothing logged, attached or deleted first.
//!
//! Needs no root: the interface named does not exist, and every case must fail before it is
//! looked at (if validation let a case through, it would fail later with another status).
use std::ffi::OsString;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wirewatch_testkit::tempdir::TempDir;

const IFACE: &str = "wwhostile0";
const SECRET: &str = "hunter2-S3CR3T-do-not-echo";
const DEADLINE: Duration = Duration::from_secs(5);

struct Case {
    name: String,
    args: Vec<OsString>,
    env: Vec<(&'static str, &'static str)>,
    /// Substrings the error line must contain (the option and what is allowed).
    wants: Vec<String>,
}

fn case(name: impl Into<String>, args: &[&str], wants: &[&str]) -> Case {
    Case {
        name: name.into(),
        args: args.iter().map(OsString::from).collect(),
        env: Vec::new(),
        wants: wants.iter().map(ToString::to_string).collect(),
    }
}

/// `run --iface IFACE` plus `extra`.
fn run(name: impl Into<String>, extra: &[&str], wants: &[&str]) -> Case {
    let mut args = vec!["run", "--iface", IFACE];
    args.extend_from_slice(extra);
    case(name, &args, wants)
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs the binary with a deadline (a hang is a failure, not a stuck test run).
fn ww(args: &[OsString], env: &[(&str, &str)]) -> Outcome {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wirewatch"));
    cmd.args(args).env_remove("WIREWATCH_API_TOKEN").env("RUST_LOG", "debug");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = started.elapsed();
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    Outcome { code: status.and_then(|s| s.code()), stdout, stderr, took }
}

/// Writes `content` to `name` in `dir`; returns the path.
fn file(dir: &Path, name: &str, content: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p.to_str().unwrap().to_string()
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // Safety: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", p.display());
}

fn check(cases: &[Case]) {
    let mut failures = Vec::new();
    let mut slowest = Duration::ZERO;
    for c in cases {
        let o = ww(&c.args, &c.env);
        slowest = slowest.max(o.took);
        let lines: Vec<&str> = o.stderr.lines().collect();
        let mut why = Vec::new();
        if o.code != Some(2) {
            why.push(format!("exit status {:?}, want 2", o.code));
        }
        if lines.len() != 1 || !lines[0].starts_with("wirewatch: error: ") {
            why.push(format!(
                "want exactly one `wirewatch: error:` line on stderr, got {}",
                lines.len()
            ));
        }
        if o.stderr.contains("panicked") {
            why.push("panicked".into());
        }
        if o.took > DEADLINE {
            why.push(format!("took {:?} (killed)", o.took));
        }
        if !o.stdout.is_empty() {
            why.push("wrote to stdout".into());
        }
        if o.stderr.contains(SECRET) || o.stdout.contains(SECRET) {
            why.push("echoed the secret".into());
        }
        for w in &c.wants {
            if !o.stderr.contains(w.as_str()) {
                why.push(format!("`{w}` missing"));
            }
        }
        if !why.is_empty() {
            failures.push(format!(
                "{}: {}\n    stderr: {}",
                c.name,
                why.join("; "),
                o.stderr.trim_end().replace('\n', "\n            ")
            ));
        }
    }
    eprintln!("{} hostile cases, slowest {slowest:?}", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn hostile_numbers_are_refused_with_their_range() {
    let mut cases = Vec::new();
    let bad_floats = ["nan", "NaN", "inf", "-inf", "-1", "0", "1e300", "-1e300", "", "ten"];
    let floats = [
        ("--duration", "0.001..=31536000 seconds", &["1e-300", "31536001"][..]),
        ("--handshake-timeout", "0.001..=300 seconds", &["1e11", "1e-12", "301"][..]),
        ("--pairing-window", "1..=10000 ms", &["1e-12", "0.5", "10001"][..]),
        ("--vantage-window", "0.01..=10000 ms", &["1e-12", "1e11"][..]),
        ("--evidence-max-age-days", "0.001..=3650 days", &["1e-9", "3651"][..]),
    ];
    for (flag, allowed, extra) in floats {
        for v in bad_floats.iter().chain(extra) {
            // `--flag=v` reaches the value parser even for `-1`; `--flag v` must too.
            cases.push(run(format!("{flag}={v}"), &[&format!("{flag}={v}")], &[flag, allowed]));
        }
        cases.push(run(format!("{flag} -1"), &[flag, "-1"], &[flag, allowed]));
    }
    let bad_ints =
        ["nan", "inf", "-1", "1e300", "1.5", "99999999999999999999999999999999999999999", ""];
    let ints = [
        ("--storm-count", "2..=1000", &["0", "1", "1001"][..]),
        ("--max-flows", "1024..=67108864", &["0", "1023", "67108865"][..]),
        ("--snaplen", "96..=1024", &["0", "95", "1025"][..]),
        ("--busy-poll", "0..=1000000", &["1000001", "4294967296"][..]),
        ("--events-max-bytes", "1..=18446744073709551615", &["0", "18446744073709551616"][..]),
        ("--evidence-max-bytes", "0..=18446744073709551615", &["18446744073709551616"][..]),
        (
            "--ring-size",
            "power of two in 64..=32768",
            &["0", "1000", "32", "65536", "2147483648"][..],
        ),
        ("--queues", "`all` or a number of queues in 1..=4096", &["0", "4097", "some"][..]),
        ("--community-id-seed", "0..=65535", &["65536", "4294967296"][..]),
    ];
    for (flag, allowed, extra) in ints {
        for v in bad_ints.iter().chain(extra) {
            cases.push(run(format!("{flag}={v}"), &[&format!("{flag}={v}")], &[flag, allowed]));
        }
    }
    // The thresholds are shared with analyze; its file is not opened before they are checked.
    for (flag, v, allowed) in [
        ("--handshake-timeout", "1e11", "0.001..=300"),
        ("--pairing-window", "nan", "1..=10000"),
        ("--workers", "0", "1..=64"),
        ("--workers", "1e300", "1..=64"),
        ("--community-id-seed", "65536", "0..=65535"),
        ("--host-name", "", "1 to 253 letters"),
        ("--host-name", "two words", "1 to 253 letters"),
        ("--host-name", "line\nbreak", "1 to 253 letters"),
        ("--host-name", "\u{1b}[31mred", "1 to 253 letters"),
        ("--host-name", &"h".repeat(254), "1 to 253 letters"),
    ] {
        cases.push(case(
            format!("analyze {flag}={v}"),
            &["analyze", &format!("{flag}={v}"), "/nonexistent.pcap"],
            &[flag, allowed],
        ));
    }
    check(&cases);
}

#[test]
fn hostile_cpu_lists_and_interfaces_are_refused() {
    let mut cases = Vec::new();
    for v in [
        "5000",
        "1024",
        "0-99999999999",
        "0-18446744073709551615",
        "99999999999999999999999",
        "",
        ",",
        "1,1",
        "0,0-1",
        "3-1",
        "-1",
        "x",
        "0-",
    ] {
        cases.push(run(
            format!("--cpus={v}"),
            &[&format!("--cpus={v}")],
            &["--cpus", "online CPUs here"],
        ));
    }
    // Fits a cpu_set_t but is not online (unless this machine has 1024 CPUs).
    if !Path::new("/sys/devices/system/cpu/cpu1023").exists() {
        cases.push(run("--cpus 1023", &["--cpus", "1023"], &["--cpus", "not online"]));
    }
    // profile plans for other hosts, so only the kernel's ceiling applies; still no 800 GB.
    cases.push(case(
        "profile --cpus huge",
        &["profile", "apply", "--iface", IFACE, "--dry-run", "--cpus", "0-99999999999"],
        &["--cpus", "8191"],
    ));

    cases.push(run("--iface twice", &["--iface", IFACE], &["--iface wwhostile0 is given twice"]));
    cases.push(run("-i twice", &["-i", IFACE], &["given twice"]));
    let mut copies = vec!["run".to_string()];
    for _ in 0..20_000 {
        copies.extend(["--iface".to_string(), IFACE.to_string()]);
    }
    let copies: Vec<&str> = copies.iter().map(String::as_str).collect();
    cases.push(case("20000 copies of --iface", &copies, &["--iface"]));
    let mut many = vec!["run".to_string()];
    for i in 0..300 {
        many.extend(["--iface".to_string(), format!("wwh{i}")]);
    }
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    cases.push(case("300 interfaces", &many, &["--iface", "at most 128"]));
    for v in ["", "a/b", "a:b", "has space", ".", "..", "sixteen-bytes-xx"] {
        cases.push(case(
            format!("--iface {v:?}"),
            &["run", "--iface", v],
            &["--iface", "not an interface name"],
        ));
    }
    cases.push(case(
        "--metrics nonsense",
        &["run", "--iface", IFACE, "--metrics", "nonsense"],
        &["--metrics"],
    ));
    check(&cases);
}

#[test]
fn hostile_tokens_are_refused_without_being_quoted() {
    let dir = TempDir::new("hostile-token");
    let empty = file(&dir, "empty", b"");
    let newline = file(&dir, "newline", b"\n");
    let two_lines = file(&dir, "two-lines", format!("{SECRET}\n{SECRET}\n").as_bytes());
    let spaced = file(&dir, "spaced", format!("{SECRET} more\n").as_bytes());
    let big = file(&dir, "big", &vec![b'a'; 5000]);
    let good = file(&dir, "good", b"tok3n\n");
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let fifo = fifo.to_str().unwrap();
    let dirpath = dir.to_str().unwrap();
    let mut cases = vec![
        run("--api-token ''", &["--api-token", ""], &["--api-token", "is empty"]),
        run("--api-token=", &["--api-token="], &["--api-token", "is empty"]),
        run(
            "--api-token with a space",
            &["--api-token", &format!("{SECRET} x")],
            &["--api-token", "visible ASCII"],
        ),
        run(
            "--api-token with a newline",
            &["--api-token", &format!("{SECRET}\n")],
            &["--api-token", "visible ASCII"],
        ),
        run(
            "--api-token-file empty",
            &["--api-token-file", &empty],
            &["--api-token-file", "is empty"],
        ),
        run(
            "--api-token-file newline only",
            &["--api-token-file", &newline],
            &["--api-token-file", "is empty"],
        ),
        run(
            "--api-token-file two lines",
            &["--api-token-file", &two_lines],
            &["--api-token-file", "one line"],
        ),
        run(
            "--api-token-file spaced",
            &["--api-token-file", &spaced],
            &["--api-token-file", "one line"],
        ),
        run(
            "--api-token-file 5000 bytes",
            &["--api-token-file", &big],
            &["--api-token-file", "larger than 4096 bytes"],
        ),
        run(
            "--api-token-file /dev/zero",
            &["--api-token-file", "/dev/zero"],
            &["--api-token-file", "character device"],
        ),
        run("--api-token-file FIFO", &["--api-token-file", fifo], &["--api-token-file", "a FIFO"]),
        run(
            "--api-token-file directory",
            &["--api-token-file", dirpath],
            &["--api-token-file", "a directory"],
        ),
        run(
            "--api-token-file missing",
            &["--api-token-file", "/nonexistent/token"],
            &["--api-token-file", "cannot open"],
        ),
        run(
            "token and token file",
            &["--api-token", "abc", "--api-token-file", &good],
            &["--api-token-file", "use one"],
        ),
    ];
    let mut env_empty = run(
        "WIREWATCH_API_TOKEN=''",
        &["--metrics", "0.0.0.0:9464"],
        &["WIREWATCH_API_TOKEN", "is empty"],
    );
    env_empty.env.push(("WIREWATCH_API_TOKEN", ""));
    cases.push(env_empty);
    let mut env_and_file =
        run("WIREWATCH_API_TOKEN and a file", &["--api-token-file", &good], &["use one"]);
    env_and_file.env.push(("WIREWATCH_API_TOKEN", "abc"));
    cases.push(env_and_file);
    check(&cases);
}

#[test]
fn hostile_config_files_are_refused_without_being_quoted() {
    let dir = TempDir::new("hostile-config");
    let fifo = dir.join("fifo.toml");
    mkfifo(&fifo);
    let big = dir.join("big.toml");
    std::fs::File::create(&big).unwrap().set_len(2 << 20).unwrap();
    let shadow = file(
        &dir,
        "shadow",
        format!("root:$6${SECRET}:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n").as_bytes(),
    );
    let secret_key = file(&dir, "secret-key.toml", format!("\"{SECRET}\" = 1\n").as_bytes());
    let secret_string = file(&dir, "secret-string.toml", format!("{SECRET}\n").as_bytes());
    let not_utf8 = file(&dir, "latin1.toml", b"iface = \"x\"\n# caf\xe9\n");
    let with = |name: &str, text: &str| file(&dir, name, text.as_bytes());
    let cfg =
        |name: &str, path: &str, wants: &[&str]| case(name, &["run", "--config", path], wants);
    let mut cases = vec![
        cfg("/dev/zero", "/dev/zero", &["/dev/zero", "character device"]),
        cfg("FIFO", fifo.to_str().unwrap(), &["a FIFO"]),
        cfg("directory", dir.to_str().unwrap(), &["a directory"]),
        cfg("2 MiB", big.to_str().unwrap(), &["larger than 1048576 bytes"]),
        cfg("missing", "/nonexistent/wirewatch.toml", &["cannot open"]),
        cfg("shadow-like", &shadow, &["shadow", "line 1", "TOML parse error"]),
        cfg("secret as a key", &secret_key, &["line 1", "unknown key"]),
        cfg("secret as a line", &secret_string, &["line 1", "TOML parse error"]),
        cfg("not UTF-8", &not_utf8, &["line 2", "not UTF-8"]),
        cfg(
            "[run] table",
            &with("section.toml", "iface = \"x\"\n[run]\nsnaplen = 128\n"),
            &["line 2", "`run` is a table"],
        ),
        cfg(
            "dotted key",
            &with("dotted.toml", "iface = \"x\"\nthresholds.handshake_timeout = 3\n"),
            &["line 2", "`thresholds` is a table"],
        ),
        cfg(
            "inline table",
            &with("inline.toml", "iface = \"x\"\nmetrics = { addr = \"0.0.0.0:1\" }\n"),
            &["line 2", "`metrics` is a table"],
        ),
        cfg("[[iface]]", &with("aot.toml", "[[iface]]\nname = \"x\"\n"), &["line 1", "`iface`"]),
        cfg(
            "nested config key",
            &with("nested.toml", "iface = \"x\"\nconfig = \"/etc/other.toml\"\n"),
            &["line 2", "`config` cannot be set"],
        ),
        cfg(
            "help key",
            &with("help.toml", "iface = \"x\"\nhelp = true\n"),
            &["line 2", "`help` cannot be set"],
        ),
        cfg(
            "duplicate key",
            &with("dup.toml", "iface = \"x\"\nsnaplen = 128\nsnaplen = 256\n"),
            &["line 3", "duplicate key"],
        ),
        cfg(
            "duplicate iface",
            &with("dupif.toml", "iface = [\"x\", \"x\"]\n"),
            &["--iface x is given twice"],
        ),
        cfg(
            "duration nan",
            &with("nan.toml", "iface = \"x\"\nduration = nan\n"),
            &["--duration", "0.001..=31536000"],
        ),
        cfg(
            "handshake 1e300",
            &with("huge.toml", "iface = \"x\"\nhandshake_timeout = 1e300\n"),
            &["--handshake-timeout", "0.001..=300"],
        ),
        cfg(
            "age -inf",
            &with("age.toml", "iface = \"x\"\nevidence_max_age_days = -inf\n"),
            &["--evidence-max-age-days", "0.001..=3650"],
        ),
        cfg(
            "cpus huge",
            &with("cpus.toml", "iface = \"x\"\ncpus = \"0-99999999999\"\n"),
            &["--cpus"],
        ),
        cfg(
            "empty token",
            &with("token.toml", "iface = \"x\"\napi_token = \"\"\n"),
            &["--api-token", "is empty"],
        ),
        case(
            "--config twice",
            &["run", "--config", "/dev/null", "--config", "/dev/null"],
            &["--config is given twice"],
        ),
    ];
    // The file's own error names the file, not a line of the file.
    for c in &mut cases {
        c.wants.push("config".into());
    }
    check(&cases);
}

/// Nothing is removed before the options are checked: a hostile age limit used to delete every
/// evidence file at once.
#[test]
fn a_refused_age_limit_deletes_no_evidence() {
    let dir = TempDir::new("hostile-evidence");
    let kept = file(&dir, "old.pcapng", b"evidence");
    let d = dir.to_str().unwrap();
    for v in ["nan", "0", "-1", "1e300"] {
        let age = format!("--evidence-max-age-days={v}");
        let o = ww(&["run", "--iface", IFACE, "--evidence-dir", d, &age].map(OsString::from), &[]);
        assert_eq!(o.code, Some(2), "{v}: {}", o.stderr);
        assert!(Path::new(&kept).exists(), "--evidence-max-age-days={v} removed evidence");
    }
}

/// Output files into a directory that does not exist are refused before anything starts:
/// `analyze` before it opens its input (the capture here does not exist either, which would
/// be exit 3 if it were opened first). (`run` checks them once its interfaces resolve, before
/// attaching: control/tests/outputs.rs.)
#[test]
fn outputs_into_missing_directories_are_refused_at_start() {
    let dir = TempDir::new("hostile-outputs");
    let d = dir.to_str().unwrap();
    let missing = "/nonexistent-ww-dir/out";
    let mut cases = Vec::new();
    for flag in ["--events", "--verdicts"] {
        cases.push(case(
            format!("analyze {flag} into a missing directory"),
            &["analyze", flag, missing, "/nonexistent.pcap"],
            &[flag, "/nonexistent-ww-dir does not exist"],
        ));
        cases.push(case(
            format!("analyze {flag} a directory"),
            &["analyze", flag, d, "/nonexistent.pcap"],
            &[flag, "is a directory"],
        ));
    }
    cases.push(run(
        "--record-max-bytes too small",
        &["--record", "/tmp/x.pcapng", "--record-max-bytes", "100"],
        &["--record-max-bytes", "4096..="],
    ));
    check(&cases);
}
