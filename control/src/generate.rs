//! `wirewatch generate man|completions DIR` (hidden): writes the man pages (one per command,
//! clap_mangen) and the bash, zsh and fish completions (clap_complete) from the CLI definition
//! itself, so they cannot drift from `--help`. scripts/package.sh runs it on the release binary
//! before cargo-deb packs the output: normal builds do not pay for it.
use std::path::Path;

use anyhow::{Context as _, Result};
use clap_complete::Shell;

use crate::cli::generate::{GenerateArgs, What};

pub fn generate(args: &GenerateArgs, cmd: clap::Command) -> Result<()> {
    let dir: &Path = &args.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    match args.what {
        What::Man => clap_mangen::generate_to(cmd, dir)
            .with_context(|| format!("writing man pages to {}", dir.display()))?,
        What::Completions => {
            // clap_complete offers hidden subcommands too: complete only the visible ones.
            let mut cmd = clap::Command::new("wirewatch")
                .version(env!("CARGO_PKG_VERSION"))
                .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                clap_complete::generate_to(shell, &mut cmd, "wirewatch", dir)
                    .with_context(|| format!("writing {shell} completions to {}", dir.display()))?;
            }
        }
    }
    Ok(())
}
