//! Types shared by the XDP program and user space. Changing any of them changes the ABI.

/// Name of the XDP program inside the object file.
pub const XDP_PROGRAM_NAME: &str = "wirewatch_xdp";
/// The same program writing its [`XdpMeta`] in front of the frame (`bpf_xdp_adjust_head`)
/// instead of the metadata area, for kernels that refuse `bpf_xdp_adjust_meta`.
pub const XDP_HEAD_PROGRAM_NAME: &str = "wirewatch_xdp_head";
/// Host mode's programs: the XDP program that passes every frame on and copies its headers
/// into [`HOST_RING_MAP_NAME`], and the TC egress program that copies the host's outgoing
/// frames into the same ring.
pub const HOST_XDP_PROGRAM_NAME: &str = "wirewatch_xdp_host";
pub const HOST_TC_PROGRAM_NAME: &str = "wirewatch_tc_egress";
/// Name of host mode's BPF ring buffer (one [`HostRecord`] per copied frame).
pub const HOST_RING_MAP_NAME: &str = "HOST_RING";
/// Name of the XSKMAP (queue index → AF_XDP socket).
pub const XSK_MAP_NAME: &str = "XSKS";
/// Name of the per-CPU outcome counter array.
pub const COUNTERS_MAP_NAME: &str = "COUNTERS";
/// Name of the `.rodata` global holding [`XdpConfig`].
pub const CONFIG_GLOBAL_NAME: &str = "CONFIG";
/// Names of the `--filter` tables: address prefixes (LPM trie, IPv4 mapped into IPv6), ports
/// (an array indexed by port) and VLAN IDs (an array indexed by ID).
pub const FILTER_PREFIXES_MAP_NAME: &str = "FILTER_PREFIXES";
pub const FILTER_PORTS_MAP_NAME: &str = "FILTER_PORTS";
pub const FILTER_VLANS_MAP_NAME: &str = "FILTER_VLANS";
/// Primitives (`host`, `net`, `port`, `vlan`) in one filter: one bit each, and a truth table
/// of 2^8 bits in [`XdpConfig::filter_truth`].
pub const MAX_FILTER_PRIMITIVES: usize = 8;

/// What one filter table entry says about a packet: the primitives (bits) it satisfies when
/// the entry matches the packet's source, and when it matches its destination.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterValue {
    pub as_src: u8,
    pub as_dst: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FilterValue>() == 4);

/// Slots in the XSKMAP: the highest queue index wirewatch can bind, plus one.
pub const MAX_QUEUES: u32 = 256;

/// Load-time settings, written into `.rodata` by the loader before the program is verified,
/// so the program never pays a map lookup per packet for them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpConfig {
    /// Bytes of each redirected frame kept, counted from its innermost Ethernet header (or
    /// inner IP header, for tunnels that carry IP directly), so a tunnel's outer headers do
    /// not eat into it; longer frames are cut with `bpf_xdp_adjust_tail`. 0 keeps whole frames (zero-copy mode, where the kernel never copies the payload).
    pub snaplen: u32,
    /// 1: drop frames that are not TCP (dedicated tap); 0: pass them to the stack.
    pub non_tcp_drop: u32,
    /// 1: `--filter` is set: TCP frames it refuses are passed and counted (`Filtered`).
    pub filter: u32,
    /// Primitive bits set by any VLAN tag (`vlan` without an ID).
    pub filter_vlan_any: u32,
    /// Bit `b` set: a frame whose primitives' bits are `b` passes the filter.
    pub filter_truth: [u32; 8],
}
const _: () = assert!(size_of::<XdpConfig>() == 48);

impl XdpConfig {
    pub const DEFAULT_SNAPLEN: u32 = 128;
    /// Shortest snap length that still holds Ethernet + two VLAN tags + IPv6 + 4 small
    /// extension headers + a TCP header with the largest options.
    pub const MIN_SNAPLEN: u32 = 96;
}

impl Default for XdpConfig {
    fn default() -> Self {
        Self {
            snaplen: Self::DEFAULT_SNAPLEN,
            non_tcp_drop: 0,
            filter: 0,
            filter_vlan_any: 0,
            filter_truth: [0; 8],
        }
    }
}

/// `XdpMeta::magic`: lets user space tell our metadata from stale headroom bytes.
pub const META_MAGIC: u32 = 0x5757_4d31; // "WWM1"
/// The frame was cut to the snap length; `orig_len` holds its length on the wire.
pub const META_F_TRUNCATED: u32 = 1 << 0;
/// `rx_ns` is a NIC hardware timestamp (else `bpf_ktime_get_ns`, CLOCK_MONOTONIC).
pub const META_F_HW_TIMESTAMP: u32 = 1 << 1;

/// Metadata the XDP program writes in front of each redirected frame: in the metadata area
/// (`bpf_xdp_adjust_meta`), right before the packet data; or, from [`XDP_HEAD_PROGRAM_NAME`],
/// as the frame's first `XDP_META_LEN` bytes (`bpf_xdp_adjust_head`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpMeta {
    pub magic: u32,
    pub flags: u32,
    /// Frame length before truncation.
    pub orig_len: u32,
    pub _pad: u32,
    /// Receive time in nanoseconds (see [`META_F_HW_TIMESTAMP`] for the clock).
    pub rx_ns: u64,
}
/// The kernel allows at most 32 bytes of metadata, in multiples of 4.
pub const XDP_META_LEN: usize = 24;
const _: () = assert!(size_of::<XdpMeta>() == XDP_META_LEN);
const _: () = assert!(XDP_META_LEN.is_multiple_of(4) && XDP_META_LEN <= 32);

impl XdpMeta {
    /// Decodes metadata from the `XDP_META_LEN` bytes in front of a frame (host byte order,
    /// written by the program running on this host). `None` if the magic is wrong.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() < XDP_META_LEN {
            return None;
        }
        let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let magic = u32_at(0);
        if magic != META_MAGIC {
            return None;
        }
        let mut ns = [0u8; 8];
        ns.copy_from_slice(&b[16..24]);
        Some(Self {
            magic,
            flags: u32_at(4),
            orig_len: u32_at(8),
            _pad: 0,
            rx_ns: u64::from_ne_bytes(ns),
        })
    }
}

/// Host mode: the frame left the host (TC egress); else it arrived (XDP).
pub const HOST_F_EGRESS: u32 = 1 << 2;

/// Frame bytes a host-mode ring record holds: the longest snap length (1024) and the outer
/// headers of two tunnels in front of it, which the snap length does not count.
pub const HOST_SNAP_MAX: usize = 1280;
/// Frame bytes of the small record, taken when the frame's kept bytes fit: with the default
/// snap length of 128, records stay small and the ring holds ~7 times as many.
pub const HOST_SNAP_SMALL: usize = 160;

/// What precedes each frame copied into host mode's ring. The kernel aligns ring records to
/// 8 bytes, so the header is 8-byte sized and the frame bytes follow it directly.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostRecordHeader {
    /// [`META_F_TRUNCATED`], [`HOST_F_EGRESS`].
    pub flags: u32,
    /// Frame length on the wire (for egress, the skb's length: a GSO frame before it is
    /// segmented, as a capture on the host sees it).
    pub orig_len: u32,
    /// Frame bytes copied after the header (at most the record's capacity).
    pub cap_len: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the frame was copied.
    pub ts_ns: u64,
}
pub const HOST_RECORD_HEADER_LEN: usize = 24;
const _: () = assert!(size_of::<HostRecordHeader>() == HOST_RECORD_HEADER_LEN);

/// One ring record: the header and up to `N` frame bytes. A fixed size per `N`, because the
/// verifier only lets `bpf_ringbuf_reserve` take a constant size (kernel/bpf/verifier.c,
/// `check_helper_call`: "R2 is not a known constant" for BPF_FUNC_ringbuf_reserve).
#[repr(C)]
pub struct HostRecord<const N: usize> {
    pub header: HostRecordHeader,
    pub data: [u8; N],
}
const _: () = assert!(size_of::<HostRecord<HOST_SNAP_SMALL>>() == 24 + HOST_SNAP_SMALL);
const _: () = assert!(size_of::<HostRecord<HOST_SNAP_MAX>>() == 24 + HOST_SNAP_MAX);

impl HostRecordHeader {
    /// Decodes the header at the start of a ring record and returns the frame bytes after it,
    /// or `None` when the record is shorter than its header says (never written by our
    /// programs: counted by the reader, not trusted).
    pub fn split(record: &[u8]) -> Option<(Self, &[u8])> {
        let head = record.get(..HOST_RECORD_HEADER_LEN)?;
        let u32_at =
            |o: usize| u32::from_ne_bytes([head[o], head[o + 1], head[o + 2], head[o + 3]]);
        let mut ns = [0u8; 8];
        ns.copy_from_slice(&head[16..24]);
        let h = Self {
            flags: u32_at(0),
            orig_len: u32_at(4),
            cap_len: u32_at(8),
            _pad: 0,
            ts_ns: u64::from_ne_bytes(ns),
        };
        let data =
            record.get(HOST_RECORD_HEADER_LEN..HOST_RECORD_HEADER_LEN + h.cap_len as usize)?;
        Some((h, data))
    }
}

/// Every way the XDP program can dispose of a frame; the index into the per-CPU counters.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// TCP, redirected into the queue's AF_XDP socket.
    TcpRedirected = 0,
    /// TCP, but no AF_XDP socket bound on this queue: passed to the stack untouched.
    NoSocket = 1,
    NonTcpPassed = 2,
    NonTcpDropped = 3,
    /// IPv4/IPv6 fragment after the first: no TCP header to read, passed.
    LaterFragment = 4,
    MalformedEthernet = 5,
    MalformedVlan = 6,
    MalformedIpv4 = 7,
    MalformedIpv4Ihl = 8,
    MalformedIpv6 = 9,
    MalformedIpv6Ext = 10,
    Ipv6ExtChainTooLong = 11,
    MalformedTcp = 12,
    MalformedTcpDataOffset = 13,
    /// `bpf_xdp_adjust_tail` refused to cut the frame: passed, not redirected whole.
    TruncateFailed = 14,
    /// `bpf_xdp_adjust_meta` (`bpf_xdp_adjust_head` in [`XDP_HEAD_PROGRAM_NAME`]) refused the
    /// metadata: redirected without it.
    MetaFailed = 15,
    /// TCP, the queue's slot held a socket, but `bpf_redirect_map` refused the frame (the
    /// socket left the XSKMAP between the lookup and the redirect): passed to the stack, cut,
    /// with its metadata in the metadata area (the header [`XDP_HEAD_PROGRAM_NAME`] put in
    /// front of it is taken off again). Failures after the program returns (the socket's rings full) are
    /// the socket's `XDP_STATISTICS` and the driver's counters, not an outcome.
    RedirectFailed = 16,
    /// A GRE, ERSPAN, VXLAN or GENEVE header cut short, with a length that points past its
    /// packet, or with a version this parser does not know.
    MalformedTunnel = 17,
    /// An MPLS label stack cut short, or without a bottom-of-stack label within
    /// `MAX_MPLS_LABELS`.
    MalformedMpls = 18,
    /// A tunnel inside the `MAX_TUNNEL_DEPTH`th tunnel: passed, not opened.
    TunnelTooDeep = 19,
    /// TCP that `--filter` refuses: passed to the stack untouched.
    Filtered = 20,
    /// Host mode: TCP, its headers copied into the ring, the frame passed on untouched.
    HostCopied = 21,
    /// Host mode: TCP, the ring had no room for its headers (user space fell behind): a lost
    /// frame; the frame itself is passed on untouched.
    HostRingFull = 22,
    /// Host mode: TCP, but copying its bytes into the reserved record failed (never seen:
    /// the length is within the frame): a lost frame, passed on untouched.
    HostCopyFailed = 23,
}
pub const OUTCOME_COUNT: u32 = 24;

impl Outcome {
    pub const ALL: [Outcome; OUTCOME_COUNT as usize] = [
        Outcome::TcpRedirected,
        Outcome::NoSocket,
        Outcome::NonTcpPassed,
        Outcome::NonTcpDropped,
        Outcome::LaterFragment,
        Outcome::MalformedEthernet,
        Outcome::MalformedVlan,
        Outcome::MalformedIpv4,
        Outcome::MalformedIpv4Ihl,
        Outcome::MalformedIpv6,
        Outcome::MalformedIpv6Ext,
        Outcome::Ipv6ExtChainTooLong,
        Outcome::MalformedTcp,
        Outcome::MalformedTcpDataOffset,
        Outcome::TruncateFailed,
        Outcome::MetaFailed,
        Outcome::RedirectFailed,
        Outcome::MalformedTunnel,
        Outcome::MalformedMpls,
        Outcome::TunnelTooDeep,
        Outcome::Filtered,
        Outcome::HostCopied,
        Outcome::HostRingFull,
        Outcome::HostCopyFailed,
    ];

    /// The `reason` label of `wirewatch_xdp_packets_total`.
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::TcpRedirected => "tcp_redirected",
            Outcome::NoSocket => "no_socket",
            Outcome::RedirectFailed => "redirect_failed",
            Outcome::NonTcpPassed => "non_tcp_passed",
            Outcome::NonTcpDropped => "non_tcp_dropped",
            Outcome::LaterFragment => "later_fragment",
            Outcome::MalformedEthernet => "malformed_ethernet",
            Outcome::MalformedVlan => "malformed_vlan",
            Outcome::MalformedIpv4 => "malformed_ipv4",
            Outcome::MalformedIpv4Ihl => "malformed_ipv4_ihl",
            Outcome::MalformedIpv6 => "malformed_ipv6",
            Outcome::MalformedIpv6Ext => "malformed_ipv6_ext",
            Outcome::Ipv6ExtChainTooLong => "ipv6_ext_chain_too_long",
            Outcome::MalformedTcp => "malformed_tcp",
            Outcome::MalformedTcpDataOffset => "malformed_tcp_data_offset",
            Outcome::TruncateFailed => "truncate_failed",
            Outcome::MetaFailed => "meta_failed",
            Outcome::MalformedTunnel => "malformed_tunnel",
            Outcome::MalformedMpls => "malformed_mpls",
            Outcome::TunnelTooDeep => "tunnel_too_deep",
            Outcome::Filtered => "filtered",
            Outcome::HostCopied => "host_copied",
            Outcome::HostRingFull => "host_ring_full",
            Outcome::HostCopyFailed => "host_copy_failed",
        }
    }

    pub const fn is_malformed(self) -> bool {
        ((self as u32) >= Outcome::MalformedEthernet as u32
            && (self as u32) <= Outcome::MalformedTcpDataOffset as u32)
            || matches!(self, Outcome::MalformedTunnel | Outcome::MalformedMpls)
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both are repr(C), Copy, and have no padding (size asserted above).
    unsafe impl aya::Pod for super::XdpConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::XdpMeta {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FilterValue {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(h: &HostRecordHeader, data: &[u8]) -> [u8; 64] {
        let mut r = [0u8; 64];
        r[0..4].copy_from_slice(&h.flags.to_ne_bytes());
        r[4..8].copy_from_slice(&h.orig_len.to_ne_bytes());
        r[8..12].copy_from_slice(&h.cap_len.to_ne_bytes());
        r[16..24].copy_from_slice(&h.ts_ns.to_ne_bytes());
        r[24..24 + data.len()].copy_from_slice(data);
        r
    }

    /// A record gives back its header and exactly `cap_len` frame bytes; one whose `cap_len`
    /// points past its end, or shorter than a header, is refused rather than read past.
    #[test]
    fn host_records_split_or_are_refused() {
        let h = HostRecordHeader {
            flags: HOST_F_EGRESS,
            orig_len: 1514,
            cap_len: 40,
            _pad: 0,
            ts_ns: 7,
        };
        let r = record(&h, &[0xab; 40]);
        let (got, data) = HostRecordHeader::split(&r).unwrap();
        assert_eq!((got, data), (h, &[0xab; 40][..]));
        let lying = record(&HostRecordHeader { cap_len: 41, ..h }, &[0; 40]);
        assert_eq!(HostRecordHeader::split(&lying), None);
        let huge = record(&HostRecordHeader { cap_len: u32::MAX, ..h }, &[0; 40]);
        assert_eq!(HostRecordHeader::split(&huge), None);
        assert_eq!(HostRecordHeader::split(&r[..23]), None);
    }
}
