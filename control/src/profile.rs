//! `wirewatch profile …`: list, show, detect and apply the NIC tuning profiles of `hw-profiles/`,
//! and the same application for `wirewatch run --profile`.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};
use hw_profiles::plan::{dry_run, plan, Action, PlanContext};
use hw_profiles::sysfs::{best, device_info, kernel_release, DeviceInfo};
use hw_profiles::{KernelVersion, MatchQuality, Profile};

use crate::cli::profile::{ProfileArgs, ProfileCmd};
use crate::cli::run::RunArgs;

/// Where operators keep their own profiles; read when it exists.
pub const DEFAULT_PROFILE_DIR: &str = "/etc/wirewatch/hw-profiles";

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
/// The profiles applied by `run --profile`, one per interface.
pub struct Tuning {
    pub profiles: Vec<Profile>,
    pub kernel: KernelVersion,
    pub rss_symmetric: Vec<bool>,
}

/// Resolves and applies a profile to every interface before anything is attached, logging each
/// step; a failed step is a warning (the sensor still runs, perhaps slower or with hand-off).
pub fn apply_profiles(args: &RunArgs, name: &str, cpus: &[usize]) -> Result<Tuning> {
    let all = load_all(args.profile_dir.as_deref())?;
    let kernel = running_kernel()?;
    let mut resolved = Vec::new();
    for iface in &args.ifaces {
        let (p, info) = resolve(&all, name, iface)?;
        resolved.push((iface, p.clone(), info));
    }
    let mut rss_symmetric = Vec::new();
    for (iface, p, info) in &resolved {
        log::info!("{iface}: applying hw-profile {} ({})", p.name, p.description);
        let ctx = PlanContext {
            iface: (*iface).clone(),
            worker_cpus: cpus.to_vec(),
            kernel,
            device: info.as_ref().and_then(|i| i.device.clone()),
        };
        let r = apply(p, &ctx, &mut |ok, what, detail| {
            if ok {
                log::info!("{iface}: {what}: {detail}");
            } else {
                log::warn!("{iface}: could not apply \"{what}\": {detail}");
            }
        });
        if r.failed > 0 {
            log::warn!("{iface}: {} profile step(s) failed (above); continuing", r.failed);
        }
        rss_symmetric.push(r.rss_symmetric);
    }
    let profiles: Vec<_> = resolved.into_iter().map(|(_, p, _)| p).collect();
    Ok(Tuning { profiles, kernel, rss_symmetric })
}
