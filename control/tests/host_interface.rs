//! `run` refuses an interface that carries the host's own traffic (issue 16, item 1): XDP
//! would take every TCP frame away from the host's stack. An interface with an IPv4 or a
//! global IPv6 address, or one a route goes out through, is refused with exit 2 and the
//! reason; a port with only its link-local IPv6 address (a span or tap port) is accepted.
use wirewatch_testkit::netns::{privileged_or_skip, Netns};
use wirewatch_testkit::topology::Topology;

fn run(ns: &Netns, iface: &str) -> (Option<i32>, String) {
    let o = ns
        .command(env!("CARGO_BIN_EXE_wirewatch"))
        .args(["run", "--iface", iface, "--duration", "1", "--metrics", "127.0.0.1:0"])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn an_interface_with_addresses_or_routes_is_refused_a_span_port_is_not() {
    if !privileged_or_skip("host_interface") {
        return;
    }
    let pid = std::process::id();
    let mut t = Topology::new();
    t.namespace("a", &format!("wwha{pid}")).unwrap();
    t.namespace("b", &format!("wwhb{pid}")).unwrap();
    t.veth(("a", "h0"), ("b", "h1")).unwrap();
    let a = &t["a"];
    a.run("ip link set lo up").unwrap();
    for (setup, reason) in [
        ("ip addr add 10.66.0.1/24 dev h0", "it has the address 10.66.0.1"),
        ("ip -6 addr add fd66::1/64 dev h0 nodad", "it has the address fd66::1"),
        ("ip route add 10.67.0.0/24 dev h0", "the route to 10.67.0.0/24 goes out through it"),
        ("ip -6 route add fd67::/64 dev h0", "the route to fd67::/64 goes out through it"),
    ] {
        a.run("ip addr flush dev h0 scope global").unwrap();
        a.run("ip route flush dev h0").unwrap();
        a.run("ip -6 route flush dev h0").unwrap();
        a.run(setup).unwrap();
        let (code, err) = run(a, "h0");
        assert_eq!(code, Some(2), "{setup}: {err}");
        assert!(err.contains("h0 carries this host's own traffic"), "{setup}: {err}");
        assert!(err.contains(reason), "{setup}: {err}");
        assert_eq!(err.lines().filter(|l| l.starts_with("wirewatch: error:")).count(), 1, "{err}");
        // Nothing was attached on the way out.
        assert!(!a.run("ip -d link show h0").unwrap().contains("prog/xdp"), "{setup}");
        assert!(err.contains("--allow-host-interface"), "{err}");
        assert!(err.contains("add --host"), "the refusal names host mode: {err}");
    }
    // The operator's override (a remote mirror's collector interface carries an address).
    let o = a
        .command(env!("CARGO_BIN_EXE_wirewatch"))
        .args(["run", "--iface", "h0", "--allow-host-interface", "--duration", "1"])
        .args(["--metrics", "127.0.0.1:0"])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    // A span port: up, only its link-local IPv6 address and the routes every interface has.
    a.run("ip addr flush dev h0 scope global").unwrap();
    a.run("ip route flush dev h0").unwrap();
    a.run("ip -6 route flush dev h0").unwrap();
    a.run("ip link set h0 down").unwrap();
    a.run("ip link set h0 up").unwrap();
    let (code, err) = run(a, "h0");
    assert_eq!(code, Some(0), "{err}");
}
