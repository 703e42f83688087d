//! `--filter`: the pcap-filter(7) subset `[src|dst] host ADDR`, `[src|dst] net ADDR/LEN`,
//! `[src|dst] port N` and `vlan [ID]`, joined by `and`/`&&`, `or`/`||`, `not`/`!` and
//! parentheses. As in pcap-filter, `not` binds tightest and `and`/`or` have equal precedence,
//! left to right (`a or b and c` is `(a or b) and c`). Addresses and ports are those of the
//! innermost packet (a tunnel's outer headers are the mirror's, not the traffic's); `vlan`
//! is the innermost frame's outer tag (ID 0, a priority tag, reads as untagged).
//!
//! The XDP program evaluates the same expression from load-time tables ([`Tables`]): each
//! primitive is one bit, set from a longest-prefix-match trie (addresses), a port table and a
//! VLAN table, and the expression is a truth table over those bits.
use std::net::IpAddr;

use dataplane_common::{FilterValue, MAX_FILTER_PRIMITIVES};

use crate::packet::TcpPacket;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Src,
    Dst,
    Either,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Primitive {
    /// An address prefix in IPv4-mapped IPv6 form (`len` counts in 128 bits).
    Net {
        dir: Dir,
        addr: [u8; 16],
        len: u8,
    },
    Port {
        dir: Dir,
        port: u16,
    },
    /// A tagged frame, with this VLAN ID if given.
    Vlan(Option<u16>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// The index of a primitive in [`Filter::primitives`].
    Is(usize),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub text: String,
    pub expr: Expr,
    pub primitives: Vec<Primitive>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} at {}", if *at >= text.len() { "the end".to_string() } else { format!("{:?}", &text[*at..]) })]
pub struct FilterError {
    pub text: String,
    /// Byte offset of the offending token.
    pub at: usize,
    pub what: String,
}

fn mapped(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Whether `addr` lies in the prefix `net`/`len` (both mapped).
fn within(addr: &[u8; 16], net: &[u8; 16], len: u8) -> bool {
    let (a, n) = (u128::from_be_bytes(*addr), u128::from_be_bytes(*net));
    let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
    a & mask == n & mask
}

impl Primitive {
    fn matches(&self, p: &TcpPacket) -> bool {
        let either = |dir: Dir, s: bool, d: bool| match dir {
            Dir::Src => s,
            Dir::Dst => d,
            Dir::Either => s || d,
        };
        match *self {
            Primitive::Net { dir, addr, len } => either(
                dir,
                within(&mapped(p.src()), &addr, len),
                within(&mapped(p.dst()), &addr, len),
            ),
            Primitive::Port { dir, port } => either(dir, p.sport == port, p.dport == port),
            Primitive::Vlan(id) => p.vlan != 0 && id.is_none_or(|v| v == p.vlan),
        }
    }
}

impl Expr {
    fn eval(&self, atom: &dyn Fn(usize) -> bool) -> bool {
        match self {
            Expr::Is(i) => atom(*i),
            Expr::Not(e) => !e.eval(atom),
            Expr::And(a, b) => a.eval(atom) && b.eval(atom),
            Expr::Or(a, b) => a.eval(atom) || b.eval(atom),
        }
    }
}

impl Filter {
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let tokens = tokenize(text);
        let mut p = Parser { text, tokens, pos: 0, primitives: Vec::new() };
        if p.tokens.is_empty() {
            return Err(p.error(text.len(), "an empty expression"));
        }
        let expr = p.expr()?;
        if let Some(&(at, t)) = p.tokens.get(p.pos) {
            return Err(p.error(at, &format!("unexpected {t:?}")));
        }
        if p.primitives.len() > MAX_FILTER_PRIMITIVES {
            return Err(p.error(
                0,
                &format!(
                    "{} primitives (the XDP program evaluates at most {MAX_FILTER_PRIMITIVES})",
                    p.primitives.len()
                ),
            ));
        }
        Ok(Self { text: text.to_string(), expr, primitives: p.primitives })
    }

    /// Whether a decoded packet passes the filter.
    pub fn matches(&self, p: &TcpPacket) -> bool {
        self.expr.eval(&|i| self.primitives[i].matches(p))
    }

    /// The tables the XDP program evaluates the filter from.
    pub fn tables(&self) -> Tables {
        let bit = |i: usize| 1u8 << i;
        let value = |dir: Dir, i: usize| FilterValue {
            as_src: if dir == Dir::Dst { 0 } else { bit(i) },
            as_dst: if dir == Dir::Src { 0 } else { bit(i) },
            _pad: [0; 2],
        };
        let or = |a: FilterValue, b: FilterValue| FilterValue {
            as_src: a.as_src | b.as_src,
            as_dst: a.as_dst | b.as_dst,
            _pad: [0; 2],
        };
        let mut t = Tables::default();
        // A longest-prefix match returns one entry: each prefix's value also holds the bits of
        // every shorter prefix containing it.
        for (i, p) in self.primitives.iter().enumerate() {
            match *p {
                Primitive::Net { addr, len, .. } => {
                    if !t.prefixes.iter().any(|&(a, l, _)| (a, l) == (addr, len)) {
                        t.prefixes.push((addr, len, FilterValue::default()));
                    }
                }
                Primitive::Port { dir, port } => match t.ports.iter_mut().find(|e| e.0 == port) {
                    Some(e) => e.1 = or(e.1, value(dir, i)),
                    None => t.ports.push((port, value(dir, i))),
                },
                Primitive::Vlan(Some(id)) => match t.vlans.iter_mut().find(|e| e.0 == id) {
                    Some(e) => e.1 |= bit(i),
                    None => t.vlans.push((id, bit(i))),
                },
                Primitive::Vlan(None) => t.vlan_any |= bit(i),
            }
        }
        for entry in &mut t.prefixes {
            for (i, p) in self.primitives.iter().enumerate() {
                if let Primitive::Net { dir, addr, len } = *p {
                    if len <= entry.1 && within(&entry.0, &addr, len) {
                        entry.2 = or(entry.2, value(dir, i));
                    }
                }
            }
        }
        for bits in 0..(1usize << self.primitives.len()) {
            if self.expr.eval(&|i| bits & (1 << i) != 0) {
                t.truth[bits / 32] |= 1 << (bits % 32);
            }
        }
        t
    }
}

/// The filter as the XDP program reads it: bit `i` of a value stands for primitive `i`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    /// Bit `b` is set when the primitives whose bits make up `b` satisfy the expression.
    pub truth: [u32; 8],
    /// (prefix, length in 128 bits, bits it sets as a source and as a destination).
    pub prefixes: Vec<([u8; 16], u8, FilterValue)>,
    pub ports: Vec<(u16, FilterValue)>,
    pub vlans: Vec<(u16, u8)>,
    /// Bits set by any tag (`vlan` without an ID).
    pub vlan_any: u8,
}

impl Tables {
    /// The bits a frame with these fields sets, as the XDP program computes them (a linear
    /// longest-prefix match instead of the trie).
    pub fn bits(&self, src: IpAddr, dst: IpAddr, sport: u16, dport: u16, vlan: u16) -> u8 {
        let lpm = |a: [u8; 16]| {
            self.prefixes
                .iter()
                .filter(|(n, l, _)| within(&a, n, *l))
                .max_by_key(|(_, l, _)| *l)
                .map_or(FilterValue::default(), |e| e.2)
        };
        let port =
            |p: u16| self.ports.iter().find(|e| e.0 == p).map_or(FilterValue::default(), |e| e.1);
        let mut b = lpm(mapped(src)).as_src
            | lpm(mapped(dst)).as_dst
            | port(sport).as_src
            | port(dport).as_dst;
        if vlan != 0 {
            b |= self.vlan_any | self.vlans.iter().find(|e| e.0 == vlan).map_or(0, |e| e.1);
        }
        b
    }

    pub fn passes(&self, bits: u8) -> bool {
        self.truth[bits as usize / 32] & (1 << (bits % 32)) != 0
    }
}

fn tokenize(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut i = 0;
    let b = text.as_bytes();
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if matches!(c, b'(' | b')' | b'!') {
            out.push((i, &text[i..=i]));
            i += 1;
        } else if text[i..].starts_with("&&") || text[i..].starts_with("||") {
            out.push((i, &text[i..i + 2]));
            i += 2;
        } else {
            let start = i;
            while i < b.len()
                && !b[i].is_ascii_whitespace()
                && !matches!(b[i], b'(' | b')' | b'!' | b'&' | b'|')
            {
                i += 1;
            }
            if i == start {
                // A lone `&` or `|`.
                i += 1;
            }
            out.push((start, &text[start..i]));
        }
    }
    out
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<(usize, &'a str)>,
    pos: usize,
    primitives: Vec<Primitive>,
}

impl<'a> Parser<'a> {
    fn error(&self, at: usize, what: &str) -> FilterError {
        FilterError { text: self.text.to_string(), at, what: what.to_string() }
    }

    fn peek(&self) -> Option<&'a str> {
        self.tokens.get(self.pos).map(|t| t.1)
    }

    fn at(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.text.len(), |t| t.0)
    }

    fn next(&mut self, what: &str) -> Result<&'a str, FilterError> {
        let t =
            self.peek().ok_or_else(|| self.error(self.text.len(), &format!("{what} expected")))?;
        self.pos += 1;
        Ok(t)
    }

    /// expr := unary (("and" | "&&" | "or" | "||") unary)*, left to right.
    fn expr(&mut self) -> Result<Expr, FilterError> {
        let mut e = self.unary()?;
        while let Some(t) = self.peek() {
            let and = match t {
                "and" | "&&" => true,
                "or" | "||" => false,
                _ => break,
            };
            self.pos += 1;
            let r = self.unary()?;
            e = if and {
                Expr::And(Box::new(e), Box::new(r))
            } else {
                Expr::Or(Box::new(e), Box::new(r))
            };
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        match self.peek() {
            Some("not" | "!") => {
                self.pos += 1;
                Ok(Expr::Not(Box::new(self.unary()?)))
            }
            Some("(") => {
                self.pos += 1;
                let e = self.expr()?;
                let at = self.at();
                match self.next("`)`")? {
                    ")" => Ok(e),
                    t => Err(self.error(at, &format!("`)` expected, not {t:?}"))),
                }
            }
            _ => self.primitive(),
        }
    }

    fn primitive(&mut self) -> Result<Expr, FilterError> {
        let start = self.at();
        let mut t = self.next("a primitive (host, net, port, vlan)")?;
        let dir = match t {
            "src" => Dir::Src,
            "dst" => Dir::Dst,
            _ => Dir::Either,
        };
        if dir != Dir::Either {
            t = self.next("host, net or port")?;
        }
        let at = self.at();
        let p = match t {
            "host" | "net" => {
                let v = self.next("an address")?;
                let (addr, len) = match v.split_once('/') {
                    Some((a, l)) if t == "net" => (a, Some(l)),
                    _ => (v, None),
                };
                let ip: IpAddr = addr
                    .parse()
                    .map_err(|_| self.error(at, &format!("{addr:?} is not an IP address")))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let len = match len {
                    None => max,
                    Some(l) => l
                        .parse::<u8>()
                        .ok()
                        .filter(|l| *l <= max)
                        .ok_or_else(|| self.error(at, &format!("prefix length {l:?} is not 0–{max}")))?,
                };
                let len = if ip.is_ipv4() { len + 96 } else { len };
                let addr = mapped(ip);
                // Host bits set: pcap-filter refuses `net 10.0.0.1/8` too.
                if len < 128 && u128::from_be_bytes(addr) & (u128::MAX >> len) != 0 {
                    return Err(self.error(at, &format!("{v:?} has bits set past its prefix length")));
                }
                Primitive::Net { dir, addr, len }
            }
            "port" => {
                let v = self.next("a port number")?;
                let port = v
                    .parse::<u16>()
                    .map_err(|_| self.error(at, &format!("{v:?} is not a port number (0–65535)")))?;
                Primitive::Port { dir, port }
            }
            "vlan" if dir == Dir::Either => {
                match self.peek().and_then(|v| v.parse::<u16>().ok().map(|n| (v, n))) {
                    // ID 0 is a priority tag (802.1Q), read as untagged.
                    Some((_, id)) if (1..4096).contains(&id) => {
                        self.pos += 1;
                        Primitive::Vlan(Some(id))
                    }
                    Some((v, _)) => {
                        return Err(self.error(at, &format!("VLAN ID {v} is not 1–4095")))
                    }
                    None => Primitive::Vlan(None),
                }
            }
            other => {
                return Err(self.error(
                    start,
                    &format!("{other:?} is not a primitive this filter reads (host, net, port, vlan, with src/dst, and, or, not, parentheses)"),
                ))
            }
        };
        self.primitives.push(p);
        Ok(Expr::Is(self.primitives.len() - 1))
    }
}

#[cfg(test)]
mod tests {
    use wirewatch_testkit::craft::TcpSegment;

    use super::*;
    use crate::packet::decode;

    fn pkt(src: &str, sport: u16, dst: &str, dport: u16, vlan: u16) -> TcpPacket {
        let mut s = TcpSegment::new(src.parse().unwrap(), sport, dst.parse().unwrap(), dport);
        if vlan != 0 {
            s.vlans = vec![vlan];
        }
        let f = s.frame();
        decode(&f, f.len() as u32, 0, 0).unwrap()
    }

    #[test]
    fn pcap_filter_semantics() {
        let p = pkt("10.1.2.3", 40000, "192.168.0.9", 443, 0);
        for (f, want) in [
            ("host 10.1.2.3", true),
            ("src host 10.1.2.3", true),
            ("dst host 10.1.2.3", false),
            ("net 10.0.0.0/8", true),
            ("dst net 192.168.0.0/16 and port 443", true),
            ("port 80", false),
            ("not port 80", true),
            ("! port 443", false),
            ("port 80 || port 443", true),
            // pcap-filter: and/or equal precedence, left to right.
            ("port 443 or port 80 and port 22", false),
            ("port 443 or (port 80 and port 22)", true),
            ("vlan", false),
            ("not vlan 5", true),
            ("host 10.1.2.3 && (dst port 443 || dst port 8443)", true),
            ("host ::ffff:10.1.2.3", true),
            ("net fd00::/8", false),
        ] {
            assert_eq!(Filter::parse(f).unwrap().matches(&p), want, "{f}");
        }
        let v = pkt("fd00::1", 1, "fd00::2", 2, 100);
        for (f, want) in
            [("vlan", true), ("vlan 100", true), ("vlan 101", false), ("net fd00::/16", true)]
        {
            assert_eq!(Filter::parse(f).unwrap().matches(&v), want, "{f}");
        }
    }

    #[test]
    fn malformed_filters_are_one_clear_error() {
        for (f, says) in [
            ("", "empty"),
            ("host", "an address expected"),
            ("host 10.0.0.300", "not an IP address"),
            ("net 10.0.0.1/8", "bits set past its prefix length"),
            ("net 10.0.0.0/33", "prefix length"),
            ("port 70000", "not a port number"),
            ("port 80 and", "a primitive"),
            ("(port 80", "`)` expected"),
            ("port 80)", "unexpected \")\""),
            ("tcp port 80", "not a primitive"),
            ("vlan 5000", "VLAN ID"),
            ("vlan 0", "VLAN ID"),
            ("port 1 or port 2 or port 3 or port 4 or port 5 or port 6 or port 7 or port 8 or port 9", "at most"),
            ("port 80 & port 81", "unexpected \"&\""),
        ] {
            let e = Filter::parse(f).expect_err(f).to_string();
            assert!(e.contains(says), "{f:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    /// The tables the XDP program reads give the expression's answer: nested prefixes in
    /// both families, ports, VLANs, every combination of addresses, ports and tags below.
    #[test]
    fn tables_agree_with_the_expression() {
        let filters = [
            "net 10.0.0.0/8 and not src net 10.1.0.0/16 or dst host 10.1.2.3",
            "(src port 80 or dst port 443) and not host fd00::1 and vlan",
            "dst net fd00::/8 and not dst net fd00:1::/32 and (vlan 7 or not vlan)",
            "port 22 and port 22 or src host 10.1.2.3 and dst net 0.0.0.0/0",
        ];
        let addrs = ["10.1.2.3", "10.1.9.9", "10.200.0.1", "192.0.2.1"];
        let addrs6 = ["fd00::1", "fd00:1::5", "fd01::1", "2001:db8::1"];
        let ports = [22u16, 80, 443, 1000];
        for f in filters {
            let filter = Filter::parse(f).unwrap();
            let t = filter.tables();
            let mut checked = 0;
            for family in [&addrs, &addrs6] {
                for s in family {
                    for d in family {
                        for &sp in &ports {
                            for &dp in &ports {
                                for vlan in [0u16, 7, 9] {
                                    let p = pkt(s, sp, d, dp, vlan);
                                    let bits = t.bits(p.src(), p.dst(), sp, dp, vlan);
                                    assert_eq!(
                                        t.passes(bits),
                                        filter.matches(&p),
                                        "{f}: {s}:{sp} > {d}:{dp} vlan {vlan}"
                                    );
                                    checked += 1;
                                }
                            }
                        }
                    }
                }
            }
            assert_eq!(checked, 2 * 16 * 16 * 3);
        }
    }
}
