//! `wirewatch explain` as an operator uses it: every kind the engine can report is explained
//! (rule, meaning, next checks, as in docs/detections.md), and a mistyped kind is bad usage
//! that names the kind meant.
use std::process::Command;

use dataplane::anomaly::Kind;

fn ww(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wirewatch")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Words of a text, so wrapping at any column compares equal.
fn words(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn explain_lists_every_kind_and_explains_each() {
    let (code, list, _) = ww(&["explain"]);
    assert_eq!(code, 0);
    for k in Kind::ALL {
        assert!(
            list.lines().any(|l| l.trim_start().starts_with(k.name())),
            "{} not listed",
            k.name()
        );
        let (code, out, err) = ww(&["explain", k.name()]);
        assert_eq!(code, 0, "explain {}: {err}", k.name());
        let out = words(&out);
        for (heading, text) in [
            ("Rule", k.rule()),
            ("What it means", k.meaning()),
            ("What to check next", k.next_checks()),
        ] {
            assert!(
                out.contains(&format!("{heading} {}", words(text))),
                "explain {}: {heading} missing in {out}",
                k.name()
            );
        }
    }
}

#[test]
fn a_mistyped_kind_is_bad_usage_naming_the_close_match() {
    let (code, out, err) = ww(&["explain", "rst_after_stale_segmnt"]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("unknown kind `rst_after_stale_segmnt`"), "{err}");
    assert!(err.contains("did you mean rst_after_stale_segment?"), "{err}");
    let (code, _, err) = ww(&["explain", "bandwidth"]);
    assert_eq!(code, 2);
    assert!(!err.contains("did you mean"), "{err}");
}
