//! The catalog ships with the code: docs/detections.md is what the `kinds!` table generates,
//! and the kinds are exactly those of the design catalog (../shared/DETECTIONS.md, beside the
//! repository), each either detected or listed as not detected yet.
use std::collections::BTreeSet;
use std::path::Path;

use dataplane::anomaly::catalog::{markdown, NOT_DETECTED};
use dataplane::anomaly::Kind;

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

#[test]
fn docs_detections_md_is_generated_from_the_kinds_table() {
    let path = repo_root().join("docs/detections.md");
    let generated = markdown();
    if std::env::var_os("WIREWATCH_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if committed != generated {
        let first = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(generated.lines().count()));
        panic!(
            "{} differs from the kinds! table from line {} on; regenerate it with \
             WIREWATCH_BLESS=1 cargo test -p dataplane --test catalog",
            path.display(),
            first + 1
        );
    }
}

/// The kinds the design catalog defines: the first cell of its table rows, "| `name` | …".
fn catalog_kinds(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once("` |"))
        .map(|(name, _)| name.to_string())
        .collect()
}

#[test]
fn every_catalog_kind_is_detected_or_listed_as_not_yet_and_nothing_else() {
    let path = repo_root().join("../shared/DETECTIONS.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{}: {e} (the design catalog lives beside the repository)", path.display())
    });
    let catalog = catalog_kinds(&text);
    assert!(catalog.len() >= 20, "parsed only {catalog:?} from {}", path.display());
    let detected: BTreeSet<String> = Kind::ALL.iter().map(|k| k.name().to_string()).collect();
    let not_yet: BTreeSet<String> = NOT_DETECTED.iter().map(|(n, _)| (*n).to_string()).collect();
    let both: Vec<_> = detected.intersection(&not_yet).collect();
    assert!(both.is_empty(), "detected now, remove from NOT_DETECTED: {both:?}");
    let covered: BTreeSet<String> = detected.union(&not_yet).cloned().collect();
    let missing: Vec<_> = catalog.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "in {} but neither detected nor in NOT_DETECTED: {missing:?}",
        path.display()
    );
    let extra: Vec<_> = covered.difference(&catalog).collect();
    assert!(extra.is_empty(), "not in {}: {extra:?}", path.display());
}

#[test]
fn every_kind_has_rule_meaning_and_next_checks() {
    for k in Kind::ALL {
        for (what, text) in
            [("rule", k.rule()), ("meaning", k.meaning()), ("next", k.next_checks())]
        {
            assert!(text.len() > 20 && text.ends_with('.'), "{} {what}: {text:?}", k.name());
        }
    }
}
