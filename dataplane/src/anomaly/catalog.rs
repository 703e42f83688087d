//! The detection catalog as it ships: docs/detections.md is generated from the `kinds!` table
//! (tests/catalog.rs diffs the committed file against [`markdown`] and checks that the kinds
//! match ../shared/DETECTIONS.md), and `wirewatch explain` prints the same text.
use std::fmt::Write as _;

use super::Kind;

/// Kinds ../shared/DETECTIONS.md defines that this version does not detect yet, with the
/// catalog's rule. A kind moves from here into `kinds!` when its detector lands (the catalog
/// test fails while it is in both).
pub const NOT_DETECTED: &[(&str, &str)] = &[];

/// What the kind is reported as.
pub fn class(k: Kind) -> &'static str {
    if k.is_sensor_health() {
        "sensor health (the tap or the sensor, not the network)"
    } else {
        "network fault"
    }
}

/// docs/detections.md.
pub fn markdown() -> String {
    let mut s = String::new();
    s.push_str(
        "<!-- Generated from the kinds! table in dataplane/src/anomaly/mod.rs: do not edit.\n     \
         Regenerate with: WIREWATCH_BLESS=1 cargo test -p dataplane --test catalog -->\n\
         # Detections\n\n\
         Every kind is a stable snake_case name: the `kind` label of `wirewatch_anomalies_total`,\n\
         the `kind` field of every event and the comment in evidence files. `wirewatch explain\n\
         KIND` prints the same text. Thresholds in `--option` form are options of `run` and\n\
         `analyze` (and keys of the `run` config file).\n\n",
    );
    s.push_str("| kind | reported as |\n|---|---|\n");
    for k in Kind::ALL {
        let _ = writeln!(s, "| [`{0}`](#{0}) | {1} |", k.name(), class(*k));
    }
    for k in Kind::ALL {
        let _ = write!(
            s,
            "\n## {}\n\n*{}*\n\n**Rule.** {}\n\n**What it means.** {}\n\n**What to check next.** {}\n",
            k.name(),
            class(*k),
            k.rule(),
            k.meaning(),
            k.next_checks()
        );
    }
    if NOT_DETECTED.is_empty() {
        return s;
    }
    s.push_str(
        "\n## In the catalog, not detected yet\n\n\
         The design catalog defines these; this version neither counts nor reports them.\n\n",
    );
    for (name, rule) in NOT_DETECTED {
        let _ = writeln!(s, "- `{name}`: {rule}");
    }
    s
}
