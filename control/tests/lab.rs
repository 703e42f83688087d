//! The incident lab as a user runs it: each incident diagnosed live, with the culprit named and
//! commented evidence tshark opens; and the same topology with the fault off stays quiet.
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;
use wirewatch_testkit::netns::privileged_or_skip;

mod chromium;

/// Incidents share the machine's two CPUs with their traffic: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn run_lab(incident: &str, control: bool) -> (bool, String, Vec<Value>) {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = std::env::temp_dir()
        .join(format!("ww-labtest-{incident}-{control}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("events.jsonl");
    // A hung lab must fail the test, not stall CI: coreutils timeout sends SIGINT (the lab
    // tears down on it), then SIGKILL.
    let mut cmd = Command::new("timeout");
    cmd.args(["--signal=INT", "--kill-after=20", "240", env!("CARGO_BIN_EXE_wirewatch")]);
    cmd.args(["lab", "--incident", incident, "--events"])
        .arg(&events)
        .arg("--evidence-dir")
        .arg(dir.join("evidence"));
    if control {
        cmd.arg("--control");
    }
    let out = cmd.output().unwrap();
    let stdout =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let evs: Vec<Value> = std::fs::read_to_string(&events)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    dataplane::schema::validate_events(&evs).unwrap();
    // Nothing left behind.
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(!left.lines().any(|l| l.starts_with("wwl-")), "namespaces left behind:\n{left}");
    (out.status.success(), stdout, evs)
}

fn event<'a>(evs: &'a [Value], kind: &str) -> &'a Value {
    evs.iter().find(|e| e["kind"] == kind).unwrap_or_else(|| panic!("no {kind} event in {evs:#?}"))
}

/// The evidence file of `e` opens in tshark and the packet it names carries the comment.
fn assert_evidence(e: &Value) {
    let path = e["evidence"]["path"].as_str().expect("event has evidence");
    let n = e["evidence"]["packets"][0].as_u64().unwrap();
    assert!(Path::new(path).exists(), "{path}");
    let out = Command::new("tshark")
        .args(["-n", "-r", path, "-T", "fields", "-e", "frame.number", "-e", "frame.comment"])
        .output()
        .unwrap();
    assert!(out.status.success(), "tshark cannot open {path}");
    let text = String::from_utf8_lossy(&out.stdout);
    let kind = e["kind"].as_str().unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("{n}\t")) && l.contains(&format!("wirewatch {kind}"))),
        "packet {n} of {path} lacks the {kind} comment:\n{text}"
    );
}

/// `kind=N` from the lab's "metrics: wirewatch_anomalies_total …" line (scraped from the
/// monitor's /metrics before it stopped).
fn metric(out: &str, kind: &str) -> u64 {
    out.lines()
        .filter(|l| l.trim_start().starts_with("metrics: wirewatch_anomalies_total"))
        .flat_map(|l| l.split_whitespace())
        .find_map(|kv| kv.strip_prefix(&format!("{kind}=")).and_then(|n| n.parse().ok()))
        .unwrap_or_else(|| panic!("no metric for {kind} in:\n{out}"))
}

/// The lab's report: it prints the index's path, the index lists every expected kind, and each
/// expected detection's page reads right in Chromium (chromium/mod.rs, `assert_page`). One
/// screenshot per incident, of its last expected detection's page (the one that names the
/// culprit: lost_between_sensors, rst_foreign_sender…) down to the trigger; with
/// WW_SCREENSHOT_DIR set (docs/report/ is made so) it is kept there as `INCIDENT.png`.
fn assert_report(incident: &str, out: &str, evs: &[Value], expected: &[&str]) {
    let index = out
        .lines()
        .find_map(|l| l.strip_prefix("report: "))
        .unwrap_or_else(|| panic!("the lab printed no report path:\n{out}"));
    let dom = chromium::dump_dom(Path::new(index));
    for k in expected {
        assert!(dom.contains(&format!("<td>{k}")), "the index lacks {k}");
    }
    let pages: Vec<_> = expected.iter().map(|k| chromium::assert_page(event(evs, k))).collect();
    let shown = event(evs, expected[expected.len() - 1]);
    let n = shown["evidence"]["packets"][0].as_u64().unwrap();
    let dir = std::env::var_os("WW_SCREENSHOT_DIR")
        .map_or_else(|| Path::new(index).parent().unwrap().to_path_buf(), Into::into);
    let png = dir.join(format!("{incident}.png"));
    // Down to a few rows past the trigger (a ladder row is 34 px, the header about 300).
    let height = (360 + 36 * (n as u32 + 4)).clamp(700, 1500);
    chromium::screenshot(&pages[pages.len() - 1], &png, height);
}

fn check(incident: &str, expected: &[&str], culprit: impl Fn(&[Value])) {
    let (ok, out, evs) = run_lab(incident, false);
    assert!(ok, "{out}");
    for k in expected {
        assert_evidence(event(&evs, k));
        assert!(metric(&out, k) >= 1, "the metrics must count {k}:\n{out}");
    }
    assert_report(incident, &out, &evs, expected);
    culprit(&evs);
    let (ok, out, evs) = run_lab(incident, true);
    assert!(ok, "control: {out}");
    for k in expected {
        assert!(!evs.iter().any(|e| e["kind"] == *k), "control raised {k}: {evs:#?}");
        assert_eq!(metric(&out, k), 0, "control counted {k}");
    }
}

#[test]
fn conntrack_invalid_names_the_nat_host() {
    if !privileged_or_skip("conntrack_invalid_names_the_nat_host") {
        return;
    }
    check("conntrack-invalid", &["rst_after_stale_segment", "data_after_rst"], |evs| {
        let e = event(evs, "rst_after_stale_segment");
        let x = e["explanation"].as_str().unwrap();
        // The NAT host's address and MAC, and the mechanism.
        assert_eq!(e["flow"]["src"], "10.81.2.1");
        assert!(
            x.contains("10.81.2.1")
                && x.contains("MAC")
                && x.contains("conntrack")
                && x.contains("be_liberal"),
            "{x}"
        );
    });
}

#[test]
fn keepalive_race_reports_the_idle_time() {
    if !privileged_or_skip("keepalive_race_reports_the_idle_time") {
        return;
    }
    check("keepalive-race", &["request_after_fin"], |evs| {
        let e = event(evs, "request_after_fin");
        let idle = e["details"]["idle_s"].as_f64().unwrap();
        assert!((0.9..2.0).contains(&idle), "idle {idle}");
        assert!(e["explanation"].as_str().unwrap().contains("10.82.0.2:8080"));
        assert!(
            !evs.iter().any(|e| e["kind"] == "rst_foreign_sender"),
            "the server's own RST is not foreign"
        );
    });
}

#[test]
fn syn_blackhole_names_both_sides_of_the_firewall() {
    if !privileged_or_skip("syn_blackhole_names_both_sides_of_the_firewall") {
        return;
    }
    check("syn-blackhole", &["syn_unanswered", "lost_between_sensors"], |evs| {
        let e = event(evs, "lost_between_sensors");
        assert_eq!(e["details"]["seen_at"], "upstream");
        assert_eq!(e["details"]["missing_at"][0], "downstream");
        assert!(event(evs, "syn_unanswered")["explanation"]
            .as_str()
            .unwrap()
            .contains("10.83.2.2:8080"));
    });
}

#[test]
fn ecmp_split_names_the_odd_backend() {
    if !privileged_or_skip("ecmp_split_names_the_odd_backend") {
        return;
    }
    check("ecmp-split", &["split_path", "midstream_rst", "rst_foreign_sender"], |evs| {
        let rst = event(evs, "rst_foreign_sender");
        assert_eq!(rst["flow"]["src"], "10.84.9.9", "the foreign RST comes from the VIP");
        let x = rst["explanation"].as_str().unwrap();
        assert!(x.contains("source MAC"), "{x}");
        let m = event(evs, "midstream_rst")["explanation"].as_str().unwrap().to_string();
        assert!(m.contains("MAC") && m.contains("no connection"), "{m}");
    });
}

#[test]
fn tuple_collision_names_both_connections() {
    if !privileged_or_skip("tuple_collision_names_both_connections") {
        return;
    }
    check("tuple-collision", &["tuple_reuse"], |evs| {
        let e = event(evs, "tuple_reuse");
        assert!(e["details"]["old_isn"].is_u64() && e["details"]["new_isn"].is_u64());
        assert_ne!(e["details"]["old_isn"], e["details"]["new_isn"]);
        let fps = e["fingerprints"].as_array().unwrap();
        assert_eq!(fps.len(), 2, "both senders' fingerprints");
        assert_ne!(fps[0]["mac"], fps[1]["mac"], "the two senders differ: {fps:?}");
        assert_eq!(e["flow"]["sport"], 61902);
    });
}
