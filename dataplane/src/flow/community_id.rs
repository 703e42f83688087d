//! Community ID v1 (corelight/community-id-spec, "community_id_v1"): the flow hash Zeek,
//! Suricata, Arkime, Elastic and Wireshark (`communityid` field) all compute, so an event can
//! be joined with their records by one string.
//!
//! SHA-1 over `seed (2 bytes, network order) · smaller address · larger address · protocol
//! (1 byte) · 0 (1 byte) · its port · the other port (2 bytes each, network order)`, where
//! the endpoint `(address, port)` that compares smaller comes first; the digest in base64
//! (with padding) after the version tag `1:`.
use super::FlowKey;

/// IANA protocol number of TCP (the only protocol wirewatch tracks).
const IPPROTO_TCP: u8 = 6;

/// The Community ID of a flow. Both directions give the same string; so do all vantages.
pub fn community_id(key: &FlowKey, seed: u16) -> String {
    // The key already orders its endpoints by (address, port) — byte-wise on the 16-byte
    // (IPv4-mapped) form, which for IPv4 is the order of the 4-byte addresses — exactly the
    // spec's "smaller endpoint first".
    let (lo, hi) = (key.lo, key.hi);
    let (lo_port, hi_port) = (key.lo_port, key.hi_port);
    let mut h = sha1_smol::Sha1::new();
    h.update(&seed.to_be_bytes());
    if key.family() == 4 {
        h.update(&lo[12..]);
        h.update(&hi[12..]);
    } else {
        h.update(&lo);
        h.update(&hi);
    }
    h.update(&[IPPROTO_TCP, 0]);
    h.update(&lo_port.to_be_bytes());
    h.update(&hi_port.to_be_bytes());
    let mut s = String::with_capacity(30);
    s.push_str("1:");
    base64_into(&h.digest().bytes(), &mut s);
    s
}

/// Standard base64 with padding (RFC 4648 section 4).
fn base64_into(data: &[u8], out: &mut String) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &[u8]) -> String {
        let mut o = String::new();
        base64_into(s, &mut o);
        o
    }

    #[test]
    fn base64_matches_the_rfc_4648_test_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn both_directions_and_every_vantage_share_the_id_and_the_seed_changes_it() {
        let a: std::net::IpAddr = "10.1.0.9".parse().unwrap();
        let b: std::net::IpAddr = "10.1.0.2".parse().unwrap();
        let (k1, _) = FlowKey::from_addrs(a, 40000, b, 443, 0, 0);
        let (k2, _) = FlowKey::from_addrs(b, 443, a, 40000, 0, 3);
        let id = community_id(&k1, 0);
        assert_eq!(id, community_id(&k2, 0));
        assert!(id.starts_with("1:") && id.len() == 30, "{id}");
        assert_ne!(id, community_id(&k1, 1));
        let v6: std::net::IpAddr = "fd00::1".parse().unwrap();
        let w6: std::net::IpAddr = "fd00::2".parse().unwrap();
        let (k6, _) = FlowKey::from_addrs(v6, 40000, w6, 443, 0, 0);
        assert_ne!(community_id(&k6, 0), id);
    }
}
