//! What the kernel says about an interface: driver, PCI id, device name. Read from
//! `/sys/class/net/IF` (Documentation/ABI/testing/sysfs-class-net), with `ethtool -i` for
//! virtual devices that have no `device` link (veth).
use std::fs;
use std::path::Path;
use std::process::Command;

use crate::{MatchQuality, Profile};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub iface: String,
    pub driver: String,
    /// `vendor:device` of the PCI function (for virtio, of the PCI transport under it).
    pub pci_id: Option<String>,
    /// Basename of `/sys/class/net/IF/device`: `0000:3b:00.0`, `virtio2`; None for veth.
    pub device: Option<String>,
    pub firmware: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("no interface {0} in this network namespace (see `ip link`)")]
    NoSuchInterface(String),
    #[error("cannot tell {iface}'s driver: no /sys/class/net/{iface}/device/driver and `ethtool -i` failed: {why}")]
    NoDriver { iface: String, why: String },
    #[error("{iface} ({driver}{}) matches no profile; the known ones are: {known}. Write one (see `wirewatch profile show veth`) and pass --profile-dir", pci.as_deref().map(|p| format!(", PCI {p}")).unwrap_or_default())]
    NoProfile { iface: String, driver: String, pci: Option<String>, known: String },
}

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn hex_id(p: &Path) -> Option<String> {
    let s = read_trim(p)?;
    let v = u16::from_str_radix(s.trim_start_matches("0x"), 16).ok()?;
    Some(format!("{v:04x}"))
}

/// Reads the interface's driver and device from sysfs (root: `/sys` normally; tests may point
/// elsewhere).
pub fn device_info(iface: &str) -> Result<DeviceInfo, DetectError> {
    device_info_at(Path::new("/sys"), iface)
}

pub fn device_info_at(sys: &Path, iface: &str) -> Result<DeviceInfo, DetectError> {
    let base = sys.join("class/net").join(iface);
    if !base.exists() {
        return Err(DetectError::NoSuchInterface(iface.to_string()));
    }
    let dev = base.join("device");
    let device = fs::canonicalize(&dev)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()));
    let mut driver = fs::read_link(dev.join("driver"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()));
    let mut firmware = None;
    // ethtool -i works for every driver, including those without a sysfs device (veth).
    match Command::new("ethtool").arg("-i").arg(iface).output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("driver:") {
                    driver.get_or_insert_with(|| v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("firmware-version:") {
                    firmware = Some(v.trim().to_string()).filter(|s| !s.is_empty() && s != "N/A");
                }
            }
        }
        Ok(out) if driver.is_none() => {
            return Err(DetectError::NoDriver {
                iface: iface.into(),
                why: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Err(e) if driver.is_none() => {
            return Err(DetectError::NoDriver { iface: iface.into(), why: e.to_string() })
        }
        _ => {}
    }
    let driver = driver.ok_or_else(|| DetectError::NoDriver {
        iface: iface.into(),
        why: "no driver reported".into(),
    })?;
    // virtio devices sit on a PCI transport one level up; the PCI id is the parent's.
    let on_virtio =
        fs::read_link(dev.join("subsystem")).ok().is_some_and(|p| p.ends_with("virtio"));
    let id_dir = if on_virtio { dev.join("..") } else { dev.clone() };
    let pci_id = match (hex_id(&id_dir.join("vendor")), hex_id(&id_dir.join("device"))) {
        (Some(v), Some(d)) => Some(format!("{v}:{d}")),
        _ => None,
    };
    Ok(DeviceInfo { iface: iface.to_string(), driver, pci_id, device, firmware })
}

/// The best profile for a device: a PCI id match beats a driver-wide profile, which beats a
/// profile of the same driver for other devices (used, but reported as a guess).
pub fn best<'a>(
    profiles: &'a [Profile],
    info: &DeviceInfo,
) -> Result<(&'a Profile, MatchQuality), DetectError> {
    profiles
        .iter()
        .map(|p| (p, p.matches(&info.driver, info.pci_id.as_deref())))
        .filter(|(_, q)| *q != MatchQuality::No)
        .max_by_key(|(_, q)| *q)
        .ok_or_else(|| DetectError::NoProfile {
            iface: info.iface.clone(),
            driver: info.driver.clone(),
            pci: info.pci_id.clone(),
            known: profiles.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "),
        })
}

/// `uname -r` of the running kernel.
pub fn kernel_release() -> String {
    read_trim(Path::new("/proc/sys/kernel/osrelease")).unwrap_or_default()
}
