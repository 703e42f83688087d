//! Network-namespace plumbing for the lab and the privileged tests: namespaces that delete
//! themselves, commands run inside them, and entering one from a thread.
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};

/// A network namespace created with `ip netns add`; deleted (with everything in it) on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    keep: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("running `{cmd}`: {source}")]
    Spawn { cmd: String, source: io::Error },
}

/// Runs a command line (split on whitespace) on the host, failing with its stderr.
pub fn sh(cmdline: &str) -> Result<String, NetnsError> {
    let parts: Vec<&str> = cmdline.split_whitespace().collect();
    let out = Command::new(parts[0])
        .args(&parts[1..])
        .output()
        .map_err(|source| NetnsError::Spawn { cmd: cmdline.into(), source })?;
    check(cmdline, &out)
}

fn check(cmd: &str, out: &Output) -> Result<String, NetnsError> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetnsError::Command {
            cmd: cmd.into(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

impl Netns {
    /// Creates `name`, removing a leftover of the same name first, and brings up `lo`.
    pub fn create(name: &str) -> Result<Self, NetnsError> {
        let _ = sh(&format!("ip netns del {name}"));
        sh(&format!("ip netns add {name}"))?;
        let ns = Self { name: name.into(), keep: false };
        ns.run("ip link set lo up")?;
        Ok(ns)
    }

    /// Leaves the namespace in place when dropped (`--keep`).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Runs a command line inside the namespace.
    pub fn run(&self, cmdline: &str) -> Result<String, NetnsError> {
        sh(&format!("ip netns exec {} {cmdline}", self.name))
    }

    /// A `Command` that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Moves the calling thread into the namespace (sockets it opens afterwards live there).
    pub fn enter_current_thread(&self) -> io::Result<()> {
        enter_current_thread(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.keep {
            let _ = sh(&format!("ip netns del {}", self.name));
        }
    }
}

/// Moves the calling thread into the named namespace (`/run/netns/NAME`).
pub fn enter_current_thread(name: &str) -> io::Result<()> {
    let f = File::open(format!("/run/netns/{name}"))?;
    // SAFETY: plain syscall on a valid fd; affects only this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Creates a veth pair `a` (in `ns_a`) ↔ `b` (in `ns_b`), both up.
pub fn veth(ns_a: &Netns, a: &str, ns_b: &Netns, b: &str) -> Result<(), NetnsError> {
    sh(&format!(
        "ip link add {a} netns {} type veth peer name {b} netns {}",
        ns_a.name, ns_b.name
    ))?;
    ns_a.run(&format!("ip link set {a} up"))?;
    ns_b.run(&format!("ip link set {b} up"))?;
    Ok(())
}

/// Mirrors every frame leaving and entering `dev` (in `ns`) onto `mirror` with tc mirred:
/// a span port.
pub fn span(ns: &Netns, dev: &str, mirror: &str) -> Result<(), NetnsError> {
    ns.run(&format!("tc qdisc add dev {dev} clsact"))?;
    for dir in ["ingress", "egress"] {
        ns.run(&format!(
            "tc filter add dev {dev} {dir} protocol all u32 match u32 0 0 action mirred egress mirror dev {mirror}"
        ))?;
    }
    Ok(())
}

/// Whether privileged (root, netns, XDP) tests can run here. Without root they are skipped
/// with a message, unless `WIREWATCH_REQUIRE_PRIVILEGED=1` (set by CI), where skipping is a
/// failure.
pub fn privileged_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("WIREWATCH_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
        "{test}: needs root, and WIREWATCH_REQUIRE_PRIVILEGED=1 forbids skipping it"
    );
    eprintln!("SKIPPED {test}: needs root (run the suite with sudo)");
    false
}
