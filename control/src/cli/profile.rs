//! `wirewatch profile`'s arguments.
use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Args)]
pub struct ProfileArgs {
    #[command(subcommand)]
    pub(crate) cmd: ProfileCmd,
    /// Also load every *.toml here (a file named like a built-in profile replaces it)
    /// [default: /etc/wirewatch/hw-profiles when it exists]
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) profile_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum ProfileCmd {
    /// List the profiles: name, drivers, speeds, description.
    List,
    /// Print one profile's TOML, with the reasons and sources of every setting.
    Show { name: String },
    /// Read an interface's driver and PCI id from the kernel and name the profile that fits.
    Detect {
        #[arg(long, short = 'i', value_name = "IF")]
        iface: String,
    },
    /// Tune an interface: each ethtool/ip/sysfs step is run and reported; failures do not stop
    /// the others, and the exit status is 1 if any failed.
    ///
    /// Example: sudo wirewatch profile apply --iface ens1f0np0 --cpus 2-5 --dry-run
    Apply {
        #[arg(long, short = 'i', value_name = "IF")]
        iface: String,
        /// A profile name, or `auto` to detect it from the interface's driver and device
        #[arg(long, default_value = "auto", value_name = "NAME|auto")]
        profile: String,
        /// Worker cores, one queue each (e.g. `2-5` or `2,4,6`) [default: every CPU we may use]
        #[arg(long, value_name = "LIST", value_parser = crate::cli::options::any_cpu_list)]
        cpus: Option<crate::cli::options::CpuList>,
        /// Print the steps as shell commands instead of running them
        #[arg(long)]
        dry_run: bool,
        /// Plan for this kernel release instead of the running one (dry runs for other hosts)
        #[arg(long, value_name = "X.Y", requires = "dry_run")]
        kernel: Option<String>,
        /// The device name used in interrupt names (a PCI address such as 0000:3b:00.0) for a
        /// dry run of an interface that is not on this host
        #[arg(long, value_name = "NAME", requires = "dry_run")]
        device: Option<String>,
    },
}
