//! The `run --config` loader on arbitrary file contents: never a panic, every setting becomes
//! a `--flag` argument, every error is one line naming the file, and a file that is not TOML
//! (a line of /etc/shadow read through sudo) is never quoted back.
#![no_main]
use std::sync::OnceLock;

use clap::Args as _;
use libfuzzer_sys::fuzz_target;

/// Any 24 bytes of the input found in `msg` that cannot come from the messages' own words
/// (the input may spell out a message: a window counts only if it holds a byte none of
/// them uses, such as `$`, `/`, `*`, `;`, a control or a non-ASCII byte).
fn quotes_input(msg: &str, data: &[u8]) -> bool {
    let ours = |b: &u8| b.is_ascii_alphanumeric() || b" .,=()`:_-'[]{}#\"\\+".contains(b);
    data.windows(24)
        .filter(|w| !w.iter().all(ours))
        .any(|w| msg.as_bytes().windows(24).any(|m| m == w))
}

fuzz_target!(|data: &[u8]| {
    static RUN: OnceLock<clap::Command> = OnceLock::new();
    let run = RUN.get_or_init(|| wirewatch::cli::run::RunArgs::augment_args(clap::Command::new("run")));
    match wirewatch::cli::config::settings("fuzz.toml", data.to_vec(), &[], run) {
        Ok(args) => {
            for a in args {
                assert!(a.to_string_lossy().starts_with("--"), "{a:?}");
            }
        }
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(msg.starts_with("config fuzz.toml"), "{msg}");
            assert!(!msg.contains('\n'), "more than one line: {msg:?}");
            if msg.contains("TOML parse error") || msg.contains("not UTF-8") {
                assert!(!quotes_input(&msg, data), "the file's text is quoted: {msg}");
            }
        }
    }
});
