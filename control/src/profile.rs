//! `wirewatch profile …`: list, show, detect and apply the NIC tuning profiles of `hw-profiles/`,
//! and the same application for `wirewatch run --profile`.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use hw_profiles::plan::{dry_run, plan, Action, PlanContext};
use hw_profiles::sysfs::{best, device_info, kernel_release, DeviceInfo};
use hw_profiles::{KernelVersion, MatchQuality, Profile};

/// Where operators keep their own profiles; read when it exists.
pub const DEFAULT_PROFILE_DIR: &str = "/etc/wirewatch/hw-profiles";

#[derive(Args)]
pub struct ProfileArgs {
    #[command(subcommand)]
    cmd: ProfileCmd,
    /// Also load every *.toml here (a file named like a built-in profile replaces it)
    /// [default: /etc/wirewatch/hw-profiles when it exists]
    #[arg(long, global = true, value_name = "DIR")]
    profile_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ProfileCmd {
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

/// Loads the built-in profiles plus the directory's.
pub fn load_all(dir: Option<&Path>) -> Result<Vec<Profile>> {
    let dir = match dir {
        Some(d) => Some(d.to_path_buf()),
        None => Some(PathBuf::from(DEFAULT_PROFILE_DIR)).filter(|d| d.is_dir()),
    };
    Ok(hw_profiles::all(dir.as_deref())?)
}

fn by_name<'a>(profiles: &'a [Profile], name: &str) -> Result<&'a Profile> {
    profiles.iter().find(|p| p.name == name).with_context(|| {
        format!(
            "no profile named `{name}`; the known ones are: {}",
            profiles.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
        )
    })
}

/// The profile for `iface`: by name, or `auto` from the driver and PCI id. Logs a guess.
pub fn resolve<'a>(
    profiles: &'a [Profile],
    name: &str,
    iface: &str,
) -> Result<(&'a Profile, Option<DeviceInfo>)> {
    if name != "auto" {
        let info = device_info(iface).ok();
        return Ok((by_name(profiles, name)?, info));
    }
    let info = device_info(iface)?;
    let (p, q) = best(profiles, &info)?;
    if q == MatchQuality::DriverOnly {
        log::warn!(
            "{iface}: device {} is not listed in any {} profile; using {} as the closest (pass --profile NAME to choose)",
            info.pci_id.as_deref().unwrap_or("?"),
            info.driver,
            p.name
        );
    }
    Ok((p, Some(info)))
}

pub fn cpu_list_or_all(cpus: Option<&crate::cli::options::CpuList>) -> Vec<usize> {
    match cpus {
        Some(list) => list.0.clone(),
        None => (0..std::thread::available_parallelism().map(std::num::NonZero::get).unwrap_or(1))
            .collect(),
    }
}

pub fn running_kernel() -> Result<KernelVersion> {
    let r = kernel_release();
    KernelVersion::parse(&r).with_context(|| format!("cannot read the kernel version from `{r}`"))
}

/// What applying a profile did.
pub struct Applied {
    pub failed: usize,
    /// The symmetric-RSS step succeeded (each worker can own the flows of its queue).
    pub rss_symmetric: bool,
}

/// Runs every step of the plan, printing (or logging) each with its outcome.
pub fn apply(p: &Profile, ctx: &PlanContext, report: &mut dyn FnMut(bool, &str, &str)) -> Applied {
    let mut failed = 0;
    let mut rss_symmetric = false;
    for step in plan(p, ctx) {
        let mut errors = Vec::new();
        let mut done = None;
        for a in &step.alternatives {
            match perform(a) {
                Ok(()) => {
                    done = Some(a.shell());
                    break;
                }
                Err(e) => errors.push(format!("`{}`: {e}", a.shell())),
            }
        }
        match done {
            Some(cmd) => {
                rss_symmetric |= step.rss_symmetry;
                report(true, &step.what, &cmd);
            }
            None => {
                failed += 1;
                report(false, &step.what, &errors.join("; then "));
            }
        }
    }
    Applied { failed, rss_symmetric }
}

fn perform(a: &Action) -> Result<()> {
    match a {
        Action::Run(argv) => {
            let out = Command::new(&argv[0])
                .args(&argv[1..])
                .output()
                .with_context(|| format!("cannot run {} (is it installed?)", argv[0]))?;
            if out.status.success() {
                return Ok(());
            }
            let err = String::from_utf8_lossy(&out.stderr);
            let msg = err.lines().filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join(" / ");
            bail!(
                "exit {}: {}",
                out.status.code().unwrap_or(-1),
                if msg.is_empty() { "no message".into() } else { msg }
            )
        }
        Action::Write { path, value } => {
            fs::write(path, value).with_context(|| format!("writing {value} to {path}"))
        }
        Action::IrqAffinity { irq, cpu } => {
            let table =
                fs::read_to_string("/proc/interrupts").context("reading /proc/interrupts")?;
            let n = table
                .lines()
                .find(|l| l.split_whitespace().last() == Some(irq.as_str()))
                .and_then(|l| l.split(':').next())
                .map(|n| n.trim().to_string())
                .with_context(|| format!("no interrupt named {irq} in /proc/interrupts"))?;
            let path = format!("/proc/irq/{n}/smp_affinity_list");
            fs::write(&path, cpu.to_string()).with_context(|| format!("writing {cpu} to {path}"))
        }
        Action::Nothing(_) => Ok(()),
    }
}

pub fn profile(args: ProfileArgs) -> Result<()> {
    let profiles = load_all(args.profile_dir.as_deref())?;
    match args.cmd {
        ProfileCmd::List => {
            println!("{:<14} {:<12} {:<14} description", "name", "drivers", "speeds (Gb/s)");
            for p in &profiles {
                let speeds = p.speeds_gbps.iter().map(u32::to_string).collect::<Vec<_>>().join("/");
                println!(
                    "{:<14} {:<12} {:<14} {}",
                    p.name,
                    p.matches.drivers.join(","),
                    speeds,
                    p.description
                );
            }
        }
        ProfileCmd::Show { name } => {
            let p = by_name(&profiles, &name)?;
            // The file it was loaded from: an operator's file replaces a built-in of that name.
            let dir =
                args.profile_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_PROFILE_DIR));
            let file = dir.join(format!("{}.toml", p.name));
            match hw_profiles::BUILTIN.iter().find(|(n, _)| *n == p.name) {
                Some((_, text)) if !file.exists() => print!("{text}"),
                _ => print!("{}", fs::read_to_string(&file)?),
            }
        }
        ProfileCmd::Detect { iface } => {
            let info = device_info(&iface)?;
            println!("interface  {}", info.iface);
            println!("driver     {}", info.driver);
            println!("pci id     {}", info.pci_id.as_deref().unwrap_or("- (not a PCI device)"));
            println!("device     {}", info.device.as_deref().unwrap_or("-"));
            println!("firmware   {}", info.firmware.as_deref().unwrap_or("-"));
            println!("kernel     {}", kernel_release());
            let (p, q) = best(&profiles, &info)?;
            let how = match q {
                MatchQuality::Device => "driver and device id match",
                MatchQuality::Driver => "driver matches (the profile covers all its devices)",
                _ => "driver matches, device not listed: closest guess",
            };
            println!("profile    {} ({how})", p.name);
            if p.symmetric_rss() {
                let methods: Vec<String> = p.rss.methods.iter().map(|m| format!("{m:?}")).collect();
                println!("rss        symmetric when one of [{}] succeeds on apply; otherwise workers hand packets to the flow's owner", methods.join(", "));
            } else {
                println!("rss        cannot hash symmetrically: workers hand packets to the flow's owner");
            }
        }
        ProfileCmd::Apply { iface, profile, cpus, dry_run: dry, kernel, device } => {
            let worker_cpus = cpu_list_or_all(cpus.as_ref());
            let kernel = match kernel {
                Some(k) => KernelVersion::parse(&k)
                    .with_context(|| format!("--kernel {k}: expected a release like 6.8"))?,
                None => running_kernel()?,
            };
            let (p, info) = if dry && profile != "auto" {
                (by_name(&profiles, &profile)?, device_info(&iface).ok())
            } else {
                resolve(&profiles, &profile, &iface)?
            };
            let device = device.or_else(|| info.and_then(|i| i.device));
            let ctx = PlanContext { iface: iface.clone(), worker_cpus, kernel, device };
            if dry {
                print!("{}", dry_run(p, &ctx));
                return Ok(());
            }
            println!("applying {} to {iface}:", p.name);
            let r = apply(p, &ctx, &mut |ok, what, detail| {
                if ok {
                    println!("  ok      {what}\n          {detail}");
                } else {
                    println!("  FAILED  {what}\n          {detail}");
                }
            });
            if r.failed > 0 {
                bail!(
                    "{} of the steps failed on {iface} (listed above); the others were applied",
                    r.failed
                );
            }
        }
    }
    Ok(())
}
