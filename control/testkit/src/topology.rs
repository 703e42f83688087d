//! The topology builder the lab and the privileged tests share: namespaces known by a role
//! ("a", "router", "mon"…), veths between them carrying wire-sized segments, addresses, and span
//! ports mirroring a link into a monitor's namespace. Everything it built goes when it is
//! dropped, a failing test's unwinding included: each namespace deletes itself, and takes its
//! veth ends, qdiscs, routes and nftables rules with it.
use std::ops::Index;

use crate::netns::{sh, span, veth, Netns, NetnsError};

#[derive(Debug, Default)]
pub struct Topology {
    /// (role, namespace), in creation order.
    spaces: Vec<(String, Netns)>,
    keep: bool,
}

/// Which IPv4 prefix and IPv6 prefix `two_hosts` puts on its link: `a` gets host 1 and `b`
/// host 2 (`10.79.0` → 10.79.0.1/24 and 10.79.0.2/24; `fd77:` → fd77::1/64 and fd77::2/64).
#[derive(Clone, Copy, Debug)]
pub struct Subnets<'a> {
    pub v4: &'a str,
    pub v6: Option<&'a str>,
}

impl Topology {
    pub fn new() -> Self {
        Self::default()
    }

    /// Two hosts on one link: namespace `a_name` (role "a", device `devs.0`) and `b_name`
    /// (role "b", device `devs.1`), addressed from `subnets`, with wire-sized segments.
    pub fn two_hosts(
        (a_name, b_name): (&str, &str),
        devs: (&str, &str),
        subnets: Subnets<'_>,
    ) -> Result<Self, NetnsError> {
        let mut t = Self::new();
        t.namespace("a", a_name)?;
        t.namespace("b", b_name)?;
        t.link(("a", devs.0), ("b", devs.1))?;
        t.address("a", devs.0, &format!("{}.1/24", subnets.v4))?;
        t.address("b", devs.1, &format!("{}.2/24", subnets.v4))?;
        if let Some(v6) = subnets.v6 {
            t.address("a", devs.0, &format!("{v6}:1/64"))?;
            t.address("b", devs.1, &format!("{v6}:2/64"))?;
        }
        Ok(t)
    }

    /// The span topology of the live tests: `two_hosts` with devices a0 and b0, and b0 mirrored
    /// (both directions) through sp0 into namespace `mon_name` (role "mon") as `mon_if`.
    pub fn two_hosts_and_monitor(
        names: (&str, &str, &str),
        mon_if: &str,
        subnets: Subnets<'_>,
    ) -> Result<Self, NetnsError> {
        let mut t = Self::two_hosts((names.0, names.1), ("a0", "b0"), subnets)?;
        t.namespace("mon", names.2)?;
        t.mirror(("b", "b0"), "sp0", ("mon", mon_if))?;
        Ok(t)
    }

    /// Creates namespace `name` (a leftover of that name is removed first), known here as
    /// `role`.
    pub fn namespace(&mut self, role: &str, name: &str) -> Result<&Netns, NetnsError> {
        let mut ns = Netns::create(name)?;
        if self.keep {
            ns.keep();
        }
        self.spaces.push((role.to_string(), ns));
        Ok(&self.spaces.last().expect("just pushed").1)
    }

    /// The namespace playing `role`, if there is one.
    pub fn get(&self, role: &str) -> Option<&Netns> {
        self.spaces.iter().find(|(r, _)| r == role).map(|(_, ns)| ns)
    }

    /// Leaves every namespace, present and future, in place when dropped (the lab's `--keep`).
    pub fn keep(&mut self) {
        self.keep = true;
        for (_, ns) in &mut self.spaces {
            ns.keep();
        }
    }

    /// Runs a command line inside `role`'s namespace.
    pub fn run(&self, role: &str, cmdline: &str) -> Result<String, NetnsError> {
        self[role].run(cmdline)
    }

    /// A veth between two namespaces, both ends up, offloads as the kernel set them (an
    /// underlay or a management link, where the test chooses).
    pub fn veth(
        &self,
        (a, dev_a): (&str, &str),
        (b, dev_b): (&str, &str),
    ) -> Result<(), NetnsError> {
        veth(&self[a], dev_a, &self[b], dev_b)
    }

    /// `veth` with `queues` transmit and receive queues at each end (AF_XDP binds a queue;
    /// a multi-queue pair spreads flows over them).
    pub fn veth_with_queues(
        &self,
        (a, dev_a): (&str, &str),
        (b, dev_b): (&str, &str),
        queues: u32,
    ) -> Result<(), NetnsError> {
        sh(&format!(
            "ip link add {dev_a} netns {} numtxqueues {queues} numrxqueues {queues} type veth peer name {dev_b} netns {} numtxqueues {queues} numrxqueues {queues}",
            self[a].name, self[b].name
        ))?;
        self.run(a, &format!("ip link set {dev_a} up"))?;
        self.run(b, &format!("ip link set {dev_b} up")).map(drop)
    }

    /// A veth between two namespaces, both ends up, with segmentation and receive offloads off
    /// so segments are wire-sized, as on a real link and as a tap sees them.
    pub fn link(
        &self,
        (a, dev_a): (&str, &str),
        (b, dev_b): (&str, &str),
    ) -> Result<(), NetnsError> {
        veth(&self[a], dev_a, &self[b], dev_b)?;
        self.run(a, &format!("ethtool -K {dev_a} tso off gso off gro off"))?;
        self.run(b, &format!("ethtool -K {dev_b} tso off gso off gro off"))?;
        Ok(())
    }

    /// Adds `cidr` to `dev` in `role`'s namespace; IPv6 without duplicate address detection,
    /// so the address is usable at once.
    pub fn address(&self, role: &str, dev: &str, cidr: &str) -> Result<(), NetnsError> {
        if cidr.contains(':') {
            self.run(role, &format!("ip addr add {cidr} dev {dev} nodad")).map(drop)
        } else {
            self.run(role, &format!("ip addr add {cidr} dev {dev}")).map(drop)
        }
    }

    /// No duplicate address detection in `role`'s namespace, link-local addresses included:
    /// an address still in DAD makes the first IPv6 neighbour lookups fail, and the first
    /// connections with them.
    pub fn without_dad(&self, role: &str) -> Result<(), NetnsError> {
        self.run(role, "sysctl -qw net.ipv6.conf.default.accept_dad=0")?;
        self.run(role, "sysctl -qw net.ipv6.conf.all.accept_dad=0").map(drop)
    }

    /// `role`'s default routes: IPv4 via `gw4`, IPv6 via `gw6`.
    pub fn default_routes(&self, role: &str, gw4: &str, gw6: &str) -> Result<(), NetnsError> {
        self.run(role, &format!("ip route add default via {gw4}"))?;
        self.run(role, &format!("ip -6 route add default via {gw6}")).map(drop)
    }

    /// `role` forwards IPv4 and IPv6: a router.
    pub fn forwarding(&self, role: &str) -> Result<(), NetnsError> {
        self.run(role, "sysctl -qw net.ipv4.ip_forward=1")?;
        self.run(role, "sysctl -qw net.ipv6.conf.all.forwarding=1").map(drop)
    }

    /// A span port: every frame leaving and entering `dev` in `role`'s namespace mirrored onto
    /// a veth `mirror` whose peer `mon_if` sits in the monitor's namespace `mon`. The mirror end
    /// does not segment (the copies stay the wire's size).
    pub fn mirror(
        &self,
        (role, dev): (&str, &str),
        mirror: &str,
        (mon, mon_if): (&str, &str),
    ) -> Result<(), NetnsError> {
        self.mirror_with_queues((role, dev), mirror, (mon, mon_if), 1)
    }

    /// `mirror` with `queues` transmit and receive queues on the span pair: veth picks the
    /// receive queue of `mon_if` from the transmit queue `mirror` chose, which hashes each
    /// copy's flow hash (the sending socket's, different for the two directions): RSS that is
    /// not symmetric.
    pub fn mirror_with_queues(
        &self,
        (role, dev): (&str, &str),
        mirror: &str,
        (mon, mon_if): (&str, &str),
        queues: u32,
    ) -> Result<(), NetnsError> {
        if queues == 1 {
            veth(&self[role], mirror, &self[mon], mon_if)?;
        } else {
            self.veth_with_queues((role, mirror), (mon, mon_if), queues)?;
        }
        self.run(role, &format!("ethtool -K {mirror} tso off gso off"))?;
        span(&self[role], dev, mirror)
    }

    /// Mirrors `dev` in `role`'s namespace onto the existing device `mirror` as well (a second
    /// link into one span port, or a tunnel device feeding a remote monitor).
    pub fn also_mirror(&self, (role, dev): (&str, &str), mirror: &str) -> Result<(), NetnsError> {
        span(&self[role], dev, mirror)
    }
}

impl Index<&str> for Topology {
    type Output = Netns;

    /// The namespace playing `role`; a role the topology never created is a bug in the test.
    fn index(&self, role: &str) -> &Netns {
        self.get(role).unwrap_or_else(|| panic!("no namespace plays {role:?} in this topology"))
    }
}
