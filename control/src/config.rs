//! `wirewatch run --config FILE`: a TOML file whose keys are `run`'s long options in
//! snake_case (`xdp_mode = "native"`, `iface = ["eth1", "eth2"]`). The file becomes command-line
//! arguments placed before the real ones, so flags given on the command line win and both are
//! checked by the same rules. Errors name the file, the key, the value and what is allowed.
use std::ffi::OsString;

use anyhow::{bail, Context as _, Result};

/// Expands `run --config FILE` in `argv` into the file's settings. Other commands pass through.
pub fn expand(argv: Vec<OsString>, run_cmd: &clap::Command) -> Result<Vec<OsString>> {
    let Some(run_at) = argv.iter().position(|a| a == "run") else { return Ok(argv) };
    let mut path = None;
    let mut rest = Vec::new();
    let mut it = argv[run_at + 1..].iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--config" {
            path = Some(it.next().context("--config needs a file")?.clone());
        } else if let Some(p) = s.strip_prefix("--config=") {
            path = Some(OsString::from(p));
        } else {
            rest.push(a.clone());
        }
    }
    let Some(path) = path else { return Ok(argv) };
    let path_s = path.to_string_lossy().to_string();
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading the config file {path_s}"))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| anyhow::anyhow!("config {path_s}: {}", e.to_string().trim()))?;
    let cli_has_iface = rest.iter().any(|a| a == "--iface" || a == "-i" || a.to_string_lossy().starts_with("--iface="));
    let mut from_file = Vec::new();
    for (key, value) in &table {
        let flag = key.replace('_', "-");
        let Some(arg) = run_cmd.get_arguments().find(|a| a.get_long() == Some(flag.as_str())) else {
            let allowed: Vec<String> = run_cmd.get_arguments().filter_map(|a| a.get_long()).filter(|l| *l != "help" && *l != "config").map(|l| l.replace('-', "_")).collect();
            bail!("config {path_s}: unknown key `{key}`; allowed keys: {}", allowed.join(", "));
        };
        let takes_value = arg.get_action().takes_values();
        let mut push = |v: String| {
            from_file.push(OsString::from(format!("--{flag}")));
            from_file.push(OsString::from(v));
        };
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
                        other => bail!("config {path_s}: key `iface`: {other} is not an interface name (expected a string or a list of strings)"),
                    }
                }
            }
            toml::Value::String(s) if takes_value => {
                if key == "iface" && cli_has_iface {
                    continue;
                }
                push(s.clone())
            }
            toml::Value::Integer(i) if takes_value => push(i.to_string()),
            toml::Value::Float(f) if takes_value => push(f.to_string()),
            other => {
                let want = if takes_value { "a value" } else { "true or false" };
                bail!("config {path_s}: key `{key}`: {other} has the wrong type (expected {want}; see `wirewatch run --help` for --{flag})");
            }
        }
    }
    // Check the file on its own, so its mistakes are reported as the file's.
    let mut probe: Vec<OsString> = from_file.clone();
    if !from_file.iter().any(|a| a == "--iface") {
        probe.extend([OsString::from("--iface"), OsString::from("placeholder")]);
    }
    if let Err(e) = run_cmd.clone().no_binary_name(true).try_get_matches_from(&probe) {
        // clap's message minus usage and help hints: the problem and what is allowed.
        let msg = e.to_string();
        let what: Vec<&str> = msg
            .lines()
            .map(|l| l.trim().trim_start_matches("error: "))
            .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information"))
            .collect();
        bail!("config {path_s}: {}", what.join(" "));
    }
    let mut out: Vec<OsString> = argv[..=run_at].to_vec();
    out.extend(from_file);
    out.extend(rest);
    Ok(out)
}
