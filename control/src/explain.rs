//! `wirewatch explain [KIND]`: the detection catalog (docs/detections.md) on the command line.
use dataplane::anomaly::catalog::{class, NOT_DETECTED};
use dataplane::anomaly::Kind;

use crate::cli::explain::ExplainArgs;

/// Prints the kind's rule, meaning and next checks, or lists every kind. An unknown kind is
/// bad usage: Err carries the one-line message (exit status 2), naming close matches.
pub fn explain(args: &ExplainArgs) -> Result<(), String> {
    let text = text(args.kind.as_deref())?;
    // `wirewatch explain | head` closes the pipe early: that is not an error.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    Ok(())
}

/// What `explain` prints for `kind` (every kind when None).
fn text(kind: Option<&str>) -> Result<String, String> {
    use std::fmt::Write as _;
    let mut out = String::new();
    let Some(name) = kind else {
        let _ = writeln!(
            out,
            "Detections (`wirewatch explain KIND` for the rule and what to check next):\n"
        );
        for k in Kind::ALL {
            let tag = if k.is_sensor_health() { "  [sensor health]" } else { "" };
            let _ = writeln!(out, "  {:<24}{}{tag}", k.name(), first_sentence(k.meaning()));
        }
        if !NOT_DETECTED.is_empty() {
            let _ = writeln!(out, "\nIn the catalog, not detected by this version:");
            for (n, _) in NOT_DETECTED {
                let _ = writeln!(out, "  {n}");
            }
        }
        return Ok(out);
    };
    if let Some(k) = Kind::from_name(name) {
        let _ = writeln!(out, "{}  ({})\n", k.name(), class(k));
        let _ = writeln!(out, "Rule\n{}\n", indent(k.rule()));
        let _ = writeln!(out, "What it means\n{}\n", indent(k.meaning()));
        let _ = writeln!(out, "What to check next\n{}", indent(k.next_checks()));
        return Ok(out);
    }
    if let Some((n, rule)) = NOT_DETECTED.iter().find(|(n, _)| *n == name) {
        let _ = writeln!(out, "{n}  (in the catalog, not detected by this version)\n");
        let _ = writeln!(out, "Rule\n{}", indent(rule));
        return Ok(out);
    }
    let names = Kind::ALL.iter().map(|k| k.name()).chain(NOT_DETECTED.iter().map(|(n, _)| *n));
    let close = close_matches(name, names);
    let hint = if close.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", close.join(" or "))
    };
    Err(format!("unknown kind `{name}`{hint} (`wirewatch explain` lists every kind)"))
}

fn first_sentence(s: &str) -> &str {
    s.find(": ").or_else(|| s.find(". ")).map_or(s.trim_end_matches('.'), |i| &s[..i])
}

/// The text wrapped at 92 columns, indented by four spaces.
fn indent(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for w in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + w.len() > 88 {
            out.push_str("    ");
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(w);
    }
    out.push_str("    ");
    out.push_str(&line);
    out
}

/// Names within a few edits of `name`, or containing it (`rst` → every RST kind), best first.
fn close_matches<'a>(name: &str, names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let name = name.to_ascii_lowercase().replace('-', "_");
    let mut scored: Vec<(usize, &str)> = names
        .filter_map(|n| {
            let d = edit_distance(&name, n);
            (d <= 3 || (name.len() >= 3 && n.contains(name.as_str()))).then_some((d, n))
        })
        .collect();
    scored.sort_unstable();
    scored.into_iter().take(4).map(|(_, n)| n).collect()
}

/// Levenshtein distance over bytes (kind names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::{close_matches, edit_distance};

    #[test]
    fn close_matches_catch_typos_and_fragments() {
        assert_eq!(edit_distance("syn_unanswerd", "syn_unanswered"), 1);
        let kinds = ["syn_unanswered", "syn_rejected", "dup_ack", "midstream_rst"];
        assert_eq!(close_matches("syn-unanswerd", kinds.into_iter()), ["syn_unanswered"]);
        assert_eq!(close_matches("rst", kinds.into_iter()), ["midstream_rst"]);
        assert!(close_matches("bandwidth", kinds.into_iter()).is_empty());
    }
}
