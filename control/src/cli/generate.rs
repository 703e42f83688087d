//! `wirewatch generate`'s arguments (hidden: for packaging).
use std::path::PathBuf;

use clap::{Args, ValueEnum};

#[derive(Args)]
pub struct GenerateArgs {
    /// What to write: `man` (wirewatch.1, wirewatch-run.1, …) or `completions` (wirewatch.bash,
    /// _wirewatch, wirewatch.fish).
    #[arg(value_enum)]
    pub(crate) what: What,
    /// Directory to write into (created if missing).
    #[arg(value_name = "DIR")]
    pub(crate) dir: PathBuf,
}

#[derive(ValueEnum, Clone, Copy)]
pub(crate) enum What {
    Man,
    Completions,
}
