//! The control plane against the real things: Debian's Prometheus scraping a running wirewatch
//! that watches real traffic with anomalies (every PromQL expression of the shipped dashboard
//! must return data), the HTTP API, the bearer token, and evidence that cannot be written.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use wirewatch_testkit::netns::{enter_current_thread, privileged_or_skip, Netns};
use wirewatch_testkit::tempdir::TempDir;
use wirewatch_testkit::topology::{Subnets, Topology};
use wirewatch_testkit::traffic::{connect_from, serve_once};

static SERIAL: Mutex<()> = Mutex::new(());

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");

/// The value of the first sample of `name` (without labels or with) on a metrics page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with([' ', '{'])))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A literal for a PromQL regular expression (`=~`), as Grafana quotes a variable's value.
fn regex_quote(s: &str) -> String {
    s.chars()
        .flat_map(|c| if ".+*?()[]{}|^$\\".contains(c) { vec!['\\', '\\', c] } else { vec![c] })
        .collect()
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET `path` on `addr` from inside namespace `ns`; (status, body).
fn get(ns: &str, addr: &str, path: &str, token: Option<&str>) -> (u16, Vec<u8>) {
    let (ns, addr, path, token) =
        (ns.to_string(), addr.to_string(), path.to_string(), token.map(String::from));
    std::thread::spawn(move || {
        enter_current_thread(&ns).unwrap();
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&buf[..split]).to_string();
        let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (code, buf[split + 4..].to_vec())
    })
    .join()
    .unwrap()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// a ↔ b on a veth (10.79.0.0/24), b0 mirrored to the monitor's tap0.
fn topo(tag: &str) -> Topology {
    let pid = std::process::id();
    let names = (format!("wwca{tag}{pid}"), format!("wwcb{tag}{pid}"), format!("wwcm{tag}{pid}"));
    Topology::two_hosts_and_monitor(
        (&names.0, &names.1, &names.2),
        "tap0",
        Subnets { v4: "10.79.0", v6: None },
    )
    .unwrap()
}

/// Traffic with anomalies: transfers (handshake RTTs), a refused connection (syn_rejected),
/// a slow reader (zero windows).
fn traffic(t: &Topology) {
    let srv = |port| SocketAddr::new("10.79.0.2".parse().unwrap(), port);
    for port in [7001, 7002] {
        let h = serve_once(&t["b"].name, srv(port), None, |mut s| {
            let mut v = Vec::new();
            s.read_to_end(&mut v).map(|_| v.len())
        })
        .unwrap();
        connect_from(&t["a"].name, srv(port), |s| {
            s.unwrap().write_all(&vec![1u8; 200_000]).unwrap();
        })
        .join()
        .unwrap();
        h.join().unwrap().unwrap().unwrap();
    }
    assert!(connect_from(&t["a"].name, srv(7009), |s| s.is_err()).join().unwrap());
    let slow = serve_once(&t["b"].name, srv(7003), Some(4096), |mut s| {
        let mut buf = [0u8; 1024];
        let mut got = 0;
        loop {
            std::thread::sleep(Duration::from_millis(20));
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break got,
                Ok(n) => got += n,
            }
        }
    })
    .unwrap();
    connect_from(&t["a"].name, srv(7003), |s| s.unwrap().write_all(&vec![5u8; 60_000]).unwrap())
        .join()
        .unwrap();
    slow.join().unwrap().unwrap();
}

fn start_wirewatch(mon: &Netns, dir: &Path, extra: &[&str]) -> Kill {
    let mut c = mon.command(env!("CARGO_BIN_EXE_wirewatch"));
    c.args(["run", "--iface", "tap0", "--evidence-dir"]).arg(dir.join("evidence")).args(extra);
    let child = Kill(c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    std::thread::sleep(Duration::from_millis(1500));
    child
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    if !privileged_or_skip("every_dashboard_query_returns_data_from_a_real_prometheus") {
        return;
    }
    let _s = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = TempDir::new("prom");
    std::fs::create_dir_all(dir.join("tsdb")).unwrap();
    let t = topo("p");
    let _ww = start_wirewatch(&t["mon"], &dir, &["--metrics", "127.0.0.1:9464"]);
    let cfg = dir.join("prometheus.yml");
    // The shipped alert rules are loaded too: they must evaluate on a live sensor's series.
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: wirewatch\n    static_configs:\n      - targets: ['127.0.0.1:9464']\n",
            Path::new(DEPLOY).join("prometheus/wirewatch-alerts.yml").display()
        ),
    )
    .unwrap();
    let _prom = Kill(
        t["mon"]
            .command("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .args(["--web.listen-address=127.0.0.1:9090", "--log.level=warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (run scripts/setup.sh)"),
    );
    traffic(&t);

    // The live page passes promtool's checks (HELP and TYPE for every metric, naming lints).
    let (code, page) = get(&t["mon"].name, "127.0.0.1:9464", "/metrics", None);
    assert_eq!(code, 200);
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (run scripts/setup.sh)");
    check.stdin.take().unwrap().write_all(&page).unwrap();
    let out = check.wait_with_output().unwrap();
    let page = String::from_utf8_lossy(&page);
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "promtool check metrics:\n{}{}\n{page}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_open_fds",
        "process_max_fds",
        "wirewatch_xdp_attached_info",
        "wirewatch_worker_heartbeat_timestamp_seconds",
    ] {
        let v: f64 = sample(&page, name).unwrap_or_else(|| panic!("no {name} in\n{page}"));
        assert!(v > 0.0, "{name} = {v}");
    }
    assert!(!page.contains("wirewatch_xdp_attached{"), "the old name is gone");

    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(DEPLOY).join("grafana/wirewatch-dashboard.json"))
            .unwrap(),
    )
    .unwrap();
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(vars.contains(&"job") && vars.contains(&"instance"), "{vars:?}");
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        let title = p["title"].as_str().unwrap();
        let unit = p["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or("");
        assert!(!unit.is_empty(), "panel {title} sets no unit");
        if p["type"] == "timeseries" || p["type"] == "bargauge" {
            assert_eq!(p["options"]["legend"]["showLegend"], true, "panel {title}: no legend");
        }
        for t in p["targets"].as_array().unwrap() {
            let legend = t["legendFormat"].as_str().unwrap_or("");
            assert!(!legend.is_empty(), "panel {title}: a query without legendFormat");
            let e = t["expr"].as_str().unwrap().to_string();
            // Every selector of every metric is filtered by both variables.
            for (i, _) in e.match_indices("wirewatch_").chain(e.match_indices("process_")) {
                let rest = &e[i..];
                let sel = rest.find(['{', ')', ' ', '[']).map_or("", |j| &rest[j..]);
                assert!(
                    sel.starts_with("{job=~\"$job\", instance=~\"$instance\""),
                    "panel {title}: {e} does not filter every selector by job and instance"
                );
            }
            exprs.push(e);
        }
    }
    assert!(exprs.len() >= 20);
    let query = |e: &str| -> (u16, serde_json::Value) {
        let (code, body) = get(
            &t["mon"].name,
            "127.0.0.1:9090",
            &format!("/api/v1/query?query={}", urlencode(e)),
            None,
        );
        (code, serde_json::from_slice(&body).unwrap_or_default())
    };
    let with = |e: &str, instance: &str| {
        e.replace("$job", "wirewatch").replace("$instance", &regex_quote(instance))
    };
    let empty_ones = |instance: &str| -> Vec<String> {
        exprs
            .iter()
            .filter_map(|e| {
                let (code, v) = query(&with(e, instance));
                let empty = code != 200
                    || v["status"] != "success"
                    || v["data"]["result"].as_array().is_none_or(Vec::is_empty);
                empty.then(|| format!("{e} → {code} {v}"))
            })
            .collect()
    };
    // Prometheus needs a few scrapes before rates exist: poll, up to a minute.
    let mut empty = empty_ones("127.0.0.1:9464");
    for _ in 0..60 {
        if empty.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        empty = empty_ones("127.0.0.1:9464");
    }
    assert!(
        empty.is_empty(),
        "{} of {} dashboard queries returned nothing for this sensor:\n{}",
        empty.len(),
        exprs.len(),
        empty.join("\n")
    );
    // ...and nothing for another sensor: the filter applies to every query.
    let other = empty_ones("192.0.2.1:9464");
    assert_eq!(other.len(), exprs.len(), "queries that ignore $instance: {exprs:#?}");
    // The variables' own queries (label_values) list this sensor.
    let (_, body) = get(
        &t["mon"].name,
        "127.0.0.1:9090",
        &format!(
            "/api/v1/label/instance/values?match[]={}",
            urlencode("wirewatch_build_info{job=~\"wirewatch\"}")
        ),
        None,
    );
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["data"], serde_json::json!(["127.0.0.1:9464"]), "{v}");
    // The shipped rules evaluate without error on the live series.
    let (_, body) = get(&t["mon"].name, "127.0.0.1:9090", "/api/v1/rules", None);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let rules = v["data"]["groups"][0]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 7, "{v}");
    for r in rules {
        assert_eq!(r["health"], "ok", "{r}");
    }

    // Every event the sensor reported validates against the schema.
    let (code, body) = get(&t["mon"].name, "127.0.0.1:9464", "/api/events", None);
    assert_eq!(code, 200);
    let all: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert!(!all.is_empty());
    dataplane::schema::validate_events(&all).unwrap();
    // The anomalies are really there, by kind.
    let (_, body) = get(
        &t["mon"].name,
        "127.0.0.1:9090",
        &format!(
            "/api/v1/query?query={}",
            urlencode("wirewatch_anomalies_total{kind=\"syn_rejected\"}")
        ),
        None,
    );
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["data"]["result"][0]["value"][1], "1", "{v}");
    // Capture completeness per vantage, with its HELP: the transfers' ACKs are counted.
    let (_, page) = get(&t["mon"].name, "127.0.0.1:9464", "/metrics", None);
    let page = String::from_utf8_lossy(&page);
    for name in [
        "wirewatch_capture_acks_total",
        "wirewatch_capture_gap_acks_total",
        "wirewatch_capture_gap_bytes_total",
    ] {
        assert!(page.contains(&format!("# HELP {name} ")), "{name} has no HELP:\n{page}");
    }
    let acks: f64 = page
        .lines()
        .find_map(|l| l.strip_prefix("wirewatch_capture_acks_total{vantage=\"tap0\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no capture acks for tap0:\n{page}"));
    assert!(acks > 10.0, "{acks} ACKs counted");

    // The API on the same instance.
    let (code, body) = get(&t["mon"].name, "127.0.0.1:9464", "/api/events?kind=syn_rejected", None);
    assert_eq!(code, 200);
    let evs: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(evs.len(), 1, "{evs:?}");
    let t_ev = evs[0]["time_last_ns"].as_u64().unwrap();
    let (_, body) = get(
        &t["mon"].name,
        "127.0.0.1:9464",
        &format!("/api/events?since={:.3}", t_ev as f64 / 1e9 + 0.001),
        None,
    );
    let later: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert!(
        later.iter().all(|e| e["time_last_ns"].as_u64().unwrap() > t_ev),
        "since filters by time"
    );
    let (code, _) = get(&t["mon"].name, "127.0.0.1:9464", "/api/events?kind=not_a_kind", None);
    assert_eq!(code, 400);
    let path = evs[0]["evidence"]["path"].as_str().unwrap().to_string();
    let id = Path::new(&path).file_name().unwrap().to_str().unwrap().to_string();
    std::thread::sleep(Duration::from_secs(3)); // the "after" packets window closes, the file is written
    let (code, bytes) = get(&t["mon"].name, "127.0.0.1:9464", &format!("/api/evidence/{id}"), None);
    assert_eq!(code, 200);
    assert_eq!(bytes, std::fs::read(&path).unwrap(), "download is byte-identical to the file");
    let (code, _) =
        get(&t["mon"].name, "127.0.0.1:9464", "/api/evidence/..%2F..%2Fetc%2Fpasswd", None);
    assert_eq!(code, 400);
    // Its report page, drawn by the event loop beside the file once it was written.
    let page = Path::new(&path).with_extension("html");
    let (code, html) = get(
        &t["mon"].name,
        "127.0.0.1:9464",
        &format!("/api/report/{}", page.file_name().unwrap().to_str().unwrap()),
        None,
    );
    assert_eq!(code, 200, "{}", page.display());
    let html = String::from_utf8_lossy(&html);
    let n = evs[0]["evidence"]["packets"][0].as_u64().unwrap();
    assert!(
        html.contains(&format!(
            r#"class="arrow trigger rst" data-frame="{n}" data-trigger="syn_rejected""#
        )),
        "the refusing RST, frame {n}, is the highlighted trigger:\n{html}"
    );
    assert_eq!(html, std::fs::read_to_string(&page).unwrap());
    let (code, body) = get(&t["mon"].name, "127.0.0.1:9464", "/api/flows/top", None);
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&body).contains("10.79.0.2:7009"));
}

#[test]
fn token_non_loopback_and_unwritable_evidence() {
    if !privileged_or_skip("token_non_loopback_and_unwritable_evidence") {
        return;
    }
    let _s = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = TempDir::new("api");
    let t = topo("t");
    // Non-loopback without a token: refused at start.
    let out = t["mon"]
        .command(env!("CARGO_BIN_EXE_wirewatch"))
        .args(["run", "--iface", "tap0", "--metrics", "0.0.0.0:9464"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--api-token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A token-protected instance whose evidence directory cannot be written.
    std::fs::write(dir.join("evidence"), b"a file, not a directory").unwrap();
    let _ww = start_wirewatch(&t["mon"], &dir, &["--api-token", "s3cret"]);
    assert_eq!(get(&t["mon"].name, "127.0.0.1:9464", "/api/events", None).0, 401);
    assert_eq!(get(&t["mon"].name, "127.0.0.1:9464", "/metrics", Some("wrong")).0, 401);
    assert_eq!(get(&t["mon"].name, "127.0.0.1:9464", "/healthz", None).0, 200);
    // Detections go on without evidence; the failures are counted.
    let srv = SocketAddr::new("10.79.0.2".parse().unwrap(), 7009);
    assert!(connect_from(&t["a"].name, srv, |s| s.is_err()).join().unwrap());
    std::thread::sleep(Duration::from_secs(4));
    let (code, body) =
        get(&t["mon"].name, "127.0.0.1:9464", "/api/events?kind=syn_rejected", Some("s3cret"));
    assert_eq!(code, 200);
    assert_eq!(serde_json::from_slice::<Vec<serde_json::Value>>(&body).unwrap().len(), 1);
    let (_, metrics) = get(&t["mon"].name, "127.0.0.1:9464", "/metrics", Some("s3cret"));
    let m = String::from_utf8_lossy(&metrics);
    let failed =
        m.lines().find(|l| l.starts_with("wirewatch_evidence_files_failed_total")).unwrap_or("");
    assert!(failed.ends_with(" 1"), "{failed}\n{m}");
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = Path::new(DEPLOY).join("prometheus");
    for args in [
        &["check", "rules", "wirewatch-alerts.yml"][..],
        &["test", "rules", "wirewatch-alerts.test.yml"][..],
        &["check", "config", "prometheus.yml"][..],
    ] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool (run scripts/setup.sh)");
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `systemctl reload` sends SIGHUP: the monitor keeps running and writes the next events to a
/// new file at the --events path once the old one was moved away.
#[test]
fn sighup_reopens_the_events_file_and_keeps_running() {
    if !privileged_or_skip("sighup_reopens_the_events_file_and_keeps_running") {
        return;
    }
    let _s = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = TempDir::new("hup");
    let t = topo("h");
    let events = dir.join("events.jsonl");
    let mut ww = start_wirewatch(&t["mon"], &dir, &["--events", events.to_str().unwrap()]);
    let refused = |port| {
        let srv = SocketAddr::new("10.79.0.2".parse().unwrap(), port);
        assert!(connect_from(&t["a"].name, srv, |s| s.is_err()).join().unwrap());
    };
    // Polls until `path` holds a syn_rejected event (the event thread writes asynchronously).
    let wait_for_event = |path: &Path| {
        for _ in 0..100 {
            if std::fs::read_to_string(path).is_ok_and(|s| s.contains("\"syn_rejected\"")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no syn_rejected event in {}", path.display());
    };
    refused(7011);
    wait_for_event(&events);
    std::fs::rename(&events, dir.join("events.jsonl.moved")).unwrap();
    // SAFETY: signalling our own child, which is still running (it is waited for only on drop).
    assert_eq!(unsafe { libc::kill(ww.0.id() as i32, libc::SIGHUP) }, 0);
    refused(7012);
    wait_for_event(&events);
    assert!(ww.0.try_wait().unwrap().is_none(), "wirewatch exited on SIGHUP");
    let moved = std::fs::read_to_string(dir.join("events.jsonl.moved")).unwrap();
    assert_eq!(moved.lines().count(), 1, "{moved}");
    let new = std::fs::read_to_string(&events).unwrap();
    assert_eq!(new.lines().count(), 1, "{new}");
    assert!(new.contains("7012") && moved.contains("7011"), "{moved}\n{new}");
}
