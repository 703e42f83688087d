//! `wirewatch`: a line-rate TCP anomaly monitor for tap and span ports.
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use wirewatch::cli::{self, config, options};
use wirewatch::{analyze, explain, generate, profile, run};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "wirewatch",
    version,
    about = "Line-rate TCP anomaly monitor for tap and span ports",
    long_about = "wirewatch watches TCP on a tap or span port through XDP and AF_XDP, keeps per-flow \
state for both directions, and names resets, black holes and split paths with the evidence.\n\n\
Examples:\n  sudo wirewatch run --iface eth1                 watch one span port, all queues\n  \
sudo wirewatch run --iface tapA --iface tapB    two vantage points in one process\n  \
sudo wirewatch run --host --iface eth0          this host's own connections, left untouched"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once at start; boxing would only move it")]
enum Command {
    /// Watch live traffic on one or more interfaces (needs CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW).
    #[command(args_override_self = true)]
    Run(cli::run::RunArgs),
    /// Analyse pcap/pcapng files with the same engine (several files = several vantage points).
    ///
    /// Exit status: 0 success, 2 bad usage, 3 unreadable or corrupt input (nothing analysed),
    /// 4 analysed but an input was cut short (a warning names the file and the offset; the
    /// results cover every complete record before it).
    Analyze(cli::analyze::AnalyzeArgs),
    /// Rebuild the real incidents in network namespaces and watch wirewatch diagnose them live
    /// (needs root). Example: sudo wirewatch lab --incident all
    #[cfg(feature = "lab")]
    Lab(wirewatch_lab::LabArgs),
    /// NIC tuning profiles (ConnectX-4 Lx…7, E810, X710, virtio, veth): list, show, detect which
    /// fits an interface, apply one (or print it as shell with --dry-run).
    ///
    /// Example: sudo wirewatch profile detect --iface ens1f0np0
    Profile(cli::profile::ProfileArgs),
    /// What a detection kind means: its rule, the likely cause and what to check next (the
    /// catalog, docs/detections.md). Without a kind, lists every kind.
    ///
    /// Example: wirewatch explain rst_after_stale_segment
    Explain(cli::explain::ExplainArgs),
    /// Write the man pages or shell completions (for packaging).
    #[command(hide = true)]
    Generate(cli::generate::GenerateArgs),
}

/// Bad usage: one line on stderr, exit status 2, before anything is attached or written.
fn usage_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("wirewatch: error: {msg}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cmd = Cli::command();
    let run_cmd = cmd.find_subcommand("run").expect("run is a subcommand");
    let argv = match config::expand(std::env::args_os().collect(), run_cmd) {
        Ok(a) => a,
        Err(e) => return usage_error(format_args!("{e:#}")),
    };
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => return usage_error(options::one_line(&e)),
    };
    if let Command::Run(args) = &cli.command {
        if let Err(msg) = args.check() {
            return usage_error(msg);
        }
    }
    match &cli.command {
        Command::Explain(args) => {
            return explain::explain(args).map_or_else(usage_error, |()| ExitCode::SUCCESS);
        }
        Command::Generate(args) => {
            return match generate::generate(args, Cli::command()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => usage_error(format_args!("{e:#}")),
            };
        }
        _ => {}
    }
    // Only now: nothing is logged until every option has been checked.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Analyze(args) => analyze::analyze(args),
        #[cfg(feature = "lab")]
        Command::Lab(args) => wirewatch_lab::lab(args),
        Command::Profile(args) => profile::profile(args),
        Command::Explain(_) | Command::Generate(_) => unreachable!("handled above"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The warnings naming each cut were printed with the results.
        Err(e) if e.downcast_ref::<analyze::Damaged>().is_some() => ExitCode::from(4),
        Err(e) if e.downcast_ref::<cli::Usage>().is_some() => usage_error(e),
        Err(e) => {
            // One line the operator can act on: the cause chain, outermost first.
            let mut msg = String::new();
            for cause in e.chain().map(ToString::to_string) {
                if !msg.contains(&cause) {
                    if !msg.is_empty() {
                        msg.push_str(": ");
                    }
                    msg.push_str(&cause);
                }
            }
            eprintln!("wirewatch: error: {msg}");
            if e.downcast_ref::<analyze::BadInput>().is_some() {
                ExitCode::from(3)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
