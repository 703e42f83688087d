//! Headless Chromium as the reader of the report pages (docs/report.md): the DOM it builds and
//! the screenshot it takes, each call bounded in time, with a throwaway profile and nothing to
//! fetch (the pages hold no reference to the network).
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A hung browser fails the test, not the suite.
const TIMEOUT: Duration = Duration::from_secs(90);

fn binary() -> PathBuf {
    for dir in std::env::var_os("PATH").iter().flat_map(std::env::split_paths) {
        let p = dir.join("chromium");
        if p.is_file() {
            return p;
        }
    }
    panic!("chromium is not installed: run `bash scripts/setup.sh` as root (it installs Debian's chromium package), then run the test again");
}

/// Runs chromium headless on `page` with `args`; returns its standard output.
fn run(page: &Path, args: &[String]) -> String {
    let profile = std::env::temp_dir().join(format!(
        "ww-chromium-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    ));
    let mut cmd = Command::new(binary());
    cmd.args([
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--no-proxy-server",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(format!("file://{}", page.display()))
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    // Its own process group: on expiry the browser and its helpers go together.
    .process_group(0);
    let mut child = cmd.spawn().expect("starting chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > TIMEOUT {
            // SAFETY: signalling the process group of our own child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&profile);
            panic!("chromium did not finish {} within {TIMEOUT:?}", page.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader.join().unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(status.success(), "chromium failed on {}: {status}", page.display());
    out
}

/// The DOM chromium built from `page`, serialized.
pub fn dump_dom(page: &Path) -> String {
    let dom = run(page, &["--dump-dom".into()]);
    assert!(dom.contains("</html>"), "no DOM for {}: {dom}", page.display());
    dom
}

/// A screenshot of the top `height` CSS pixels of `page` into `png`, at 3/4 scale (a ladder
/// legible in a PNG of 100-200 KB). Headless Chromium paints a page scrolled to a `#fragment`
/// blank, so the window grows instead.
pub fn screenshot(page: &Path, png: &Path, height: u32) {
    let _ = std::fs::remove_file(png);
    run(
        page,
        &[
            format!("--screenshot={}", png.display()),
            format!("--window-size=1240,{height}"),
            "--force-device-scale-factor=0.75".into(),
            "--hide-scrollbars".into(),
        ],
    );
    let bytes = std::fs::read(png).unwrap_or_default();
    // A blank page of that size is about 5 KB.
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
        "no screenshot of {} ({} bytes)",
        page.display(),
        bytes.len()
    );
}

/// One ladder arrow as the DOM holds it.
#[derive(Debug)]
pub struct Arrow {
    pub frame: u32,
    pub classes: Vec<String>,
    pub trigger: Vec<String>,
    /// Its text content (label, fingerprints, culprit), tags stripped.
    pub text: String,
}

fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(&tag[at..at + tag[at..].find('"')?])
}

/// The text of markup, tags stripped and the five entities the serializer writes decoded.
pub fn text_of(markup: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in markup.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The ladder's arrows (`<g class="arrow …" data-frame="N">`, which hold no nested group).
pub fn arrows(dom: &str) -> Vec<Arrow> {
    let mut out = Vec::new();
    for part in dom.split("<g ").skip(1) {
        let Some(end) = part.find('>') else { continue };
        let tag = format!(" {}", &part[..end]);
        let Some(frame) = attr(&tag, "data-frame") else { continue };
        let classes: Vec<String> =
            attr(&tag, "class").unwrap_or("").split_whitespace().map(String::from).collect();
        if !classes.iter().any(|c| c == "arrow") {
            continue;
        }
        let body = &part[end + 1..part.find("</g>").unwrap_or(part.len())];
        out.push(Arrow {
            frame: frame.parse().unwrap(),
            classes,
            trigger: attr(&tag, "data-trigger")
                .unwrap_or("")
                .split_whitespace()
                .map(String::from)
                .collect(),
            text: text_of(body),
        });
    }
    out
}

/// Frames of a capture as tshark counts them.
pub fn tshark_frames(file: &Path) -> u32 {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(file)
        .args(["-T", "fields", "-e", "frame.number"])
        .output()
        .unwrap();
    assert!(out.status.success(), "tshark cannot read {}", file.display());
    String::from_utf8_lossy(&out.stdout).lines().count() as u32
}

/// Whether tshark reads frame `n` of `file` as a RST.
pub fn tshark_is_rst(file: &Path, n: u32) -> bool {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(file)
        .args(["-Y", &format!("frame.number == {n}"), "-T", "fields", "-e", "tcp.flags.reset"])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    matches!(s.trim(), "1" | "True" | "true")
}

/// What a user checks on the page of `event` (a detection with evidence): every frame of the
/// evidence file is an arrow, numbered 1..N as tshark numbers them; the triggering packet's
/// arrow is highlighted and names the kind; a RST trigger carries the culprit the explanation
/// names. Returns the page's path.
pub fn assert_page(event: &serde_json::Value) -> PathBuf {
    let evidence =
        PathBuf::from(event["evidence"]["path"].as_str().expect("the event has evidence"));
    let n = event["evidence"]["packets"][0].as_u64().unwrap() as u32;
    let kind = event["kind"].as_str().unwrap();
    let page = evidence.with_extension("html");
    assert!(page.exists(), "no report page {} for the {kind} event", page.display());
    let dom = dump_dom(&page);
    let arrows = arrows(&dom);
    let frames: Vec<u32> = arrows.iter().map(|a| a.frame).collect();
    let want: Vec<u32> = (1..=tshark_frames(&evidence)).collect();
    assert_eq!(
        frames,
        want,
        "arrows of {} against the frames of {}",
        page.display(),
        evidence.display()
    );
    let trigger = &arrows[n as usize - 1];
    assert!(
        trigger.classes.iter().any(|c| c == "trigger") && trigger.trigger.iter().any(|k| k == kind),
        "frame {n} of {} is not highlighted as the {kind} trigger: {trigger:?}",
        page.display()
    );
    // Highlighted means named: no arrow is marked without the kinds it fired, and the frames
    // that fired nothing are plain.
    for a in &arrows {
        assert_eq!(a.classes.iter().any(|c| c == "trigger"), !a.trigger.is_empty(), "{a:?}");
    }
    assert!(arrows.iter().any(|a| a.trigger.is_empty()), "every arrow highlighted");
    if tshark_is_rst(&evidence, n) {
        let culprit: dataplane::anomaly::Culprit =
            serde_json::from_value(event["culprit"].clone()).unwrap();
        let named = culprit.to_string();
        assert!(event["explanation"].as_str().unwrap().contains(&named), "{named}");
        assert!(
            trigger.text.contains(&format!("culprit: {named}")),
            "the RST's arrow (frame {n}) does not name the culprit {named:?}: {}",
            trigger.text
        );
    }
    page
}
