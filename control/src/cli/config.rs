//! `wirewatch run --config FILE`: a flat TOML file whose keys are `run`'s long options in
//! snake_case (`xdp_mode = "native"`, `iface = ["eth1", "eth2"]`). The file becomes command-line
//! arguments placed before the real ones, so flags given on the command line win and both are
//! checked by the same rules.
//!
//! The file may be read through sudo, so it is handled as untrusted: only a regular file of at
//! most 1 MiB is read (a FIFO or a device is refused before a byte is read), and errors name
//! the file, the line and the key but never quote the file's text.
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use clap::FromArgMatches as _;
use toml::Spanned;

/// Far more than any set of `run` options needs.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Keys that are options of `run` but make no sense in its config file.
const NOT_IN_FILE: [&str; 2] = ["config", "help"];

/// A key as it may appear in an error: quoted only if it looks like an option name, since
/// the file may not be a config file at all.
fn shown(key: &str) -> String {
    let option_like = (1..=32).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if option_like {
        format!("`{key}`")
    } else {
        "(not an option name)".to_string()
    }
}

/// The 1-based line of a byte offset; the end of the file counts as its last line (as toml
/// reports it: an unclosed `[` is on the line that opened it, not after the final newline).
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len().saturating_sub(1))]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Expands `run --config FILE` in `argv` into the file's settings. Other commands pass through.
pub fn expand(argv: Vec<OsString>, run_cmd: &clap::Command) -> Result<Vec<OsString>> {
    // `run` is the subcommand only in first position (`analyze run` names a file).
    if argv.get(1).is_none_or(|a| a != "run") {
        return Ok(argv);
    }
    let mut path = None;
    let mut rest = Vec::new();
    let mut it = argv[2..].iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        let given = if s == "--config" {
            Some(it.next().context("--config needs a file")?.clone())
        } else {
            s.strip_prefix("--config=").map(OsString::from)
        };
        match given {
            Some(_) if path.is_some() => bail!("--config is given twice; name one file"),
            Some(p) => path = Some(p),
            None => rest.push(a.clone()),
        }
    }
    let Some(path) = path else { return Ok(argv) };
    let path_s = path.to_string_lossy().to_string();
    let bytes = crate::cli::options::read_regular_file(Path::new(&path), MAX_CONFIG_BYTES)
        .map_err(|e| anyhow::anyhow!("config {path_s}: {e}"))?;
    let from_file = settings(&path_s, bytes, &rest, run_cmd)?;
    let mut out: Vec<OsString> = argv[..2].to_vec();
    out.extend(from_file);
    out.extend(rest);
    Ok(out)
}

/// toml's messages quote what they expected (`.`, `=`) and sometimes what they found (a
/// duplicate key): anything quoted that is not punctuation or an option name is left out,
/// since it is the file's text.
fn unquoted(message: &str) -> String {
    let mut out = String::new();
    for (i, part) in message.split('`').enumerate() {
        let punctuation = part.len() <= 3 && !part.bytes().any(|b| b.is_ascii_alphanumeric());
        if i % 2 == 0 || punctuation || shown(part).starts_with('`') {
            if i % 2 == 1 {
                out.push('`');
                out.push_str(part);
                out.push('`');
            } else {
                out.push_str(part);
            }
        } else {
            out.push_str("(text of the file)");
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The `--flag=value` arguments a config file's `bytes` stand for (`path_s` names it in
/// errors; `rest` is the command line after `run`, which wins), checked by `run`'s own rules.
/// Errors name the file, the line and the key, never the file's text.
pub fn settings(
    path_s: &str,
    bytes: Vec<u8>,
    rest: &[OsString],
    run_cmd: &clap::Command,
) -> Result<Vec<OsString>> {
    let text = String::from_utf8(bytes).map_err(|e| {
        let line =
            e.as_bytes()[..e.utf8_error().valid_up_to()].iter().filter(|b| **b == b'\n').count()
                + 1;
        anyhow::anyhow!("config {path_s}: line {line} is not UTF-8 text")
    })?;
    // toml's Display of a parse error quotes the offending line; its message alone does not
    // (it says what was expected, naming at most a key).
    let table: BTreeMap<Spanned<String>, toml::Value> =
        toml::from_str(&text).map_err(|e: toml::de::Error| {
            let at =
                e.span().map(|s| format!(" line {}", line_of(&text, s.start))).unwrap_or_default();
            let what = unquoted(e.message());
            anyhow::anyhow!("config {path_s}{at}: TOML parse error ({what})")
        })?;
    let mut entries: Vec<_> = table.into_iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    let cli_has_iface = rest
        .iter()
        .any(|a| a == "--iface" || a == "-i" || a.to_string_lossy().starts_with("--iface="));
    let mut from_file = Vec::new();
    for (key, value) in &entries {
        let (line, key) = (line_of(&text, key.span().start), key.get_ref().as_str());
        let (at, k) = (format!("config {path_s} line {line}"), shown(key));
        if value.is_table() {
            bail!("{at}: key {k} is a table; the file is flat, `key = value` lines only (no [sections] or dotted keys)");
        }
        let flag = key.replace('_', "-");
        let arg = run_cmd.get_arguments().find(|a| a.get_long() == Some(flag.as_str()));
        let Some(arg) = arg.filter(|_| !NOT_IN_FILE.contains(&key)) else {
            if NOT_IN_FILE.contains(&key) {
                bail!("{at}: key {k} cannot be set in a config file");
            }
            let allowed: Vec<String> = run_cmd
                .get_arguments()
                .filter_map(|a| a.get_long())
                .filter(|l| !NOT_IN_FILE.contains(l))
                .map(|l| l.replace('-', "_"))
                .collect();
            bail!("{at}: unknown key {k}; allowed keys: {}", allowed.join(", "));
        };
        let takes_value = arg.get_action().takes_values();
        // `--flag=value`, so a value such as `-inf` is not taken for an option.
        let mut push = |v: String| from_file.push(OsString::from(format!("--{flag}={v}")));
        match value {
            toml::Value::Boolean(b) if !takes_value => {
                if *b {
                    from_file.push(OsString::from(format!("--{flag}")));
                }
            }
            toml::Value::Array(items) if key == "iface" => {
                if cli_has_iface {
                    continue;
                }
                for i in items {
                    match i {
                        toml::Value::String(s) => push(s.clone()),
                        _ => bail!("{at}: key {k}: every item must be an interface name in quotes"),
                    }
                }
            }
            toml::Value::String(s) if takes_value => {
                if key == "iface" && cli_has_iface {
                    continue;
                }
                push(s.clone());
            }
            toml::Value::Integer(i) if takes_value => push(i.to_string()),
            toml::Value::Float(f) if takes_value => push(f.to_string()),
            other => {
                let want = if takes_value { "a value" } else { "true or false" };
                bail!("{at}: key {k} has the wrong type: expected {want}, found {} (see `wirewatch run --help` for --{flag})", other.type_str());
            }
        }
    }
    let file_has_iface = from_file.iter().any(|a| a.to_string_lossy().starts_with("--iface="));
    if !file_has_iface && !cli_has_iface {
        bail!("config {path_s} sets no interface and none is given with --iface: add a line such as iface = [\"eth1\"] to it");
    }
    // Check the file on its own, so its mistakes are reported as the file's.
    let mut probe: Vec<OsString> = from_file.clone();
    if !from_file.iter().any(|a| a.to_string_lossy().starts_with("--iface=")) {
        probe.extend([OsString::from("--iface"), OsString::from("placeholder")]);
    }
    let matches =
        run_cmd.clone().no_binary_name(true).try_get_matches_from(&probe).map_err(|e| {
            anyhow::anyhow!("config {path_s}: {}", crate::cli::options::one_line(&e))
        })?;
    let file_args = crate::cli::run::RunArgs::from_arg_matches(&matches)
        .map_err(|e| anyhow::anyhow!("config {path_s}: {}", crate::cli::options::one_line(&e)))?;
    file_args.check().map_err(|e| anyhow::anyhow!("config {path_s}: {e}"))?;
    Ok(from_file)
}
