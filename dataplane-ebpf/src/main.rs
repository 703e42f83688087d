//! wirewatch's XDP program: classify each frame with the shared parser (which opens tunnels
//! and MPLS), count the outcome,
//! cut TCP frames to the snap length, prepend metadata (in the metadata area, or where a kernel
//! refuses that, in front of the frame: [`wirewatch_xdp_head`]) and redirect them into the
//! receive queue's AF_XDP socket. Fails open: anything unknown or malformed is passed to the stack.
//!
//! Host mode (`run --host`, on an interface that carries the host's own traffic) takes nothing
//! from the stack: [`wirewatch_xdp_host`] and the TC egress program [`wirewatch_tc_egress`] copy
//! the headers of each TCP frame into one BPF ring buffer and let every frame go on.
#![no_std]
#![no_main]

use aya_ebpf::bindings::{xdp_action, TC_ACT_UNSPEC};
use aya_ebpf::helpers::{
    bpf_ktime_get_ns, bpf_skb_load_bytes, bpf_xdp_adjust_head, bpf_xdp_adjust_meta,
    bpf_xdp_adjust_tail, bpf_xdp_load_bytes,
};
use aya_ebpf::macros::{classifier, map, xdp};
use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::maps::{Array, LpmTrie, PerCpuArray, RingBuf, XskMap};
use aya_ebpf::programs::{TcContext, XdpContext};
use aya_ebpf::EbpfContext;
use dataplane_common::{
    classify, Bytes, FilterValue, HostRecord, HostRecordHeader, Outcome, TcpOffsets, XdpConfig,
    XdpMeta, HOST_F_EGRESS, HOST_SNAP_MAX, HOST_SNAP_SMALL, MAX_FILTER_PRIMITIVES, MAX_QUEUES,
    META_F_TRUNCATED, META_MAGIC, OUTCOME_COUNT, XDP_META_LEN,
};

#[map(name = "XSKS")]
static XSKS: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(OUTCOME_COUNT, 0);

/// Host mode's ring. The loader sets its size (a page in span mode, where nothing writes it).
#[map(name = "HOST_RING")]
static HOST_RING: RingBuf = RingBuf::with_byte_size(4096, 0);

/// `--filter`'s tables, filled by the loader before attach (see `XdpConfig::filter`).
#[map(name = "FILTER_PREFIXES")]
static FILTER_PREFIXES: LpmTrie<[u8; 16], FilterValue> =
    LpmTrie::with_max_entries(MAX_FILTER_PRIMITIVES as u32, 0);
#[map(name = "FILTER_PORTS")]
static FILTER_PORTS: Array<FilterValue> = Array::with_max_entries(65536, 0);
#[map(name = "FILTER_VLANS")]
static FILTER_VLANS: Array<u32> = Array::with_max_entries(4096, 0);

/// Set by the loader in `.rodata` before verification (see `XdpConfig`).
#[no_mangle]
static CONFIG: XdpConfig = XdpConfig {
    snaplen: XdpConfig::DEFAULT_SNAPLEN,
    non_tcp_drop: 0,
    filter: 0,
    filter_vlan_any: 0,
    filter_truth: [0; 8],
};

/// Always 0, but in `.bss`, so the verifier cannot know it: [`Frame::forget`] mixes it into an
/// offset to make the offset unknown to the verifier (a `.rodata` value would be folded).
#[no_mangle]
static mut UNKNOWN_ZERO: usize = 0;

/// One field of [`CONFIG`], read where it is used: each is one load (the whole 48-byte struct
/// read up front cost a dozen loads per frame).
#[inline(always)]
fn config<T: Copy>(field: &T) -> T {
    // Safety: CONFIG is a plain-data static in .rodata, set by the loader before attach; the
    // volatile read keeps LLVM from folding the compile-time default into the code.
    unsafe { core::ptr::read_volatile(field) }
}

/// The frame between `data` and `data_end`, read with checks the verifier can follow.
struct Frame {
    start: usize,
    end: usize,
}

impl Bytes for Frame {
    #[inline(always)]
    fn u8_at(&self, off: usize) -> Option<u8> {
        let p = self.start + off;
        // LLVM turns `p + 1 > end` into `p >= end`, which proves no range to the verifier
        // (off 0, right-open); an opaque 1 keeps the `pkt + 1 > pkt_end` form it follows.
        if p + core::hint::black_box(1) > self.end {
            return None;
        }
        // Safety: p + 1 <= data_end was checked just above, and data <= p (off is unsigned),
        // so the byte lies inside the frame the kernel handed us.
        Some(unsafe { *(p as *const u8) })
    }
    #[inline(always)]
    fn be16_at(&self, off: usize) -> Option<u16> {
        let p = self.start + off;
        // An opaque 2 for the same reason, and so LLVM cannot hoist `end - 2` (arithmetic on
        // pkt_end, which the verifier refuses) out of the tunnel-layer loop.
        if p + core::hint::black_box(2) > self.end {
            return None;
        }
        // Safety: p + 2 <= data_end was checked just above; the read is unaligned-safe.
        Some(u16::from_be(unsafe { core::ptr::read_unaligned(p as *const u16) }))
    }
    #[inline(always)]
    fn array_at<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
        let p = self.start + off;
        if p + N > self.end {
            return None;
        }
        // Safety: p + N <= data_end was checked just above, and data <= p, so the N bytes lie
        // inside the frame, which outlives this program run; [u8; N] has alignment 1.
        Some(unsafe { &*(p as *const [u8; N]) })
    }
    #[inline(always)]
    fn forget(&self, off: usize) -> usize {
        // Safety: a plain read of a static nothing writes (the volatile read keeps LLVM from
        // folding its initial value); a stale value is impossible, it stays 0.
        let zero = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(UNKNOWN_ZERO)) };
        (off ^ zero) & dataplane_common::MAX_HEADER_OFF
    }
}

/// Whether the frame's innermost addresses, ports and VLAN satisfy `--filter`: the bits of
/// the primitives they satisfy (one trie lookup per address, one table read per port and for
/// the tag) index the filter's truth table (dataplane/src/filter.rs builds both).
#[inline(always)]
fn filter_passes(frame: &Frame, o: &TcpOffsets) -> bool {
    let l3 = o.l3_off as usize;
    let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
    if o.ip_version == 4 {
        let Some(a) = frame.array_at::<8>(l3 + 12) else { return false };
        // IPv4-mapped IPv6 (RFC 4291 §2.5.5.2), as the loader keys IPv4 prefixes.
        src[10] = 0xff;
        src[11] = 0xff;
        dst[10] = 0xff;
        dst[11] = 0xff;
        src[12..].copy_from_slice(&a[..4]);
        dst[12..].copy_from_slice(&a[4..]);
    } else {
        let Some(a) = frame.array_at::<32>(l3 + 8) else { return false };
        src.copy_from_slice(&a[..16]);
        dst.copy_from_slice(&a[16..]);
    }
    let Some(ports) = frame.array_at::<4>(o.l4_off as usize) else { return false };
    let sport = u16::from_be_bytes([ports[0], ports[1]]) as u32;
    let dport = u16::from_be_bytes([ports[2], ports[3]]) as u32;
    let mut bits = 0u32;
    if let Some(v) = FILTER_PREFIXES.get(Key::new(128, src)) {
        bits |= v.as_src as u32;
    }
    if let Some(v) = FILTER_PREFIXES.get(Key::new(128, dst)) {
        bits |= v.as_dst as u32;
    }
    if let Some(v) = FILTER_PORTS.get(sport) {
        bits |= v.as_src as u32;
    }
    if let Some(v) = FILTER_PORTS.get(dport) {
        bits |= v.as_dst as u32;
    }
    // VLAN ID 0 is a priority tag, no VLAN: untagged, as user space reads it.
    if o.vlan_count > 0 && o.vlan_ids[0] != 0 {
        bits |= config(&CONFIG.filter_vlan_any);
        if let Some(v) = FILTER_VLANS.get(o.vlan_ids[0] as u32) {
            bits |= *v;
        }
    }
    let bits = bits & 0xff;
    config(&CONFIG.filter_truth[(bits >> 5) as usize & 7]) & (1 << (bits & 31)) != 0
}

#[inline(always)]
fn count(outcome: Outcome) {
    if let Some(c) = COUNTERS.get_ptr_mut(outcome as u32) {
        // Safety: the map lookup returned a valid pointer to this CPU's slot of a per-CPU
        // array; nothing else writes it while this program runs on this CPU.
        unsafe { *c += 1 };
    }
}

#[xdp]
pub fn wirewatch_xdp(ctx: XdpContext) -> u32 {
    let (outcome, action) = try_wirewatch_xdp::<false>(&ctx);
    count(outcome);
    action
}

/// The same program for a kernel or driver that refuses `bpf_xdp_adjust_meta` (the verifier
/// rejects the whole program then): the metadata goes in front of the frame itself, with
/// `bpf_xdp_adjust_head`, and user space reads it from the frame's first bytes.
#[xdp]
pub fn wirewatch_xdp_head(ctx: XdpContext) -> u32 {
    let (outcome, action) = try_wirewatch_xdp::<true>(&ctx);
    count(outcome);
    action
}

#[inline(always)]
fn try_wirewatch_xdp<const META_IN_HEAD: bool>(ctx: &XdpContext) -> (Outcome, u32) {
    let (filter, non_tcp_drop) = (config(&CONFIG.filter), config(&CONFIG.non_tcp_drop));
    let frame = Frame { start: ctx.data(), end: ctx.data_end() };
    let wire_len = frame.end - frame.start;
    let snap_off = match classify(&frame, wire_len) {
        // With no filter the verifier drops this branch (CONFIG is read-only).
        Ok(o) if filter != 0 && !filter_passes(&frame, &o) => {
            return (Outcome::Filtered, xdp_action::XDP_PASS)
        }
        Ok(o) => o.snap_off as usize,
        Err(Outcome::NonTcpPassed) if non_tcp_drop != 0 => {
            return (Outcome::NonTcpDropped, xdp_action::XDP_DROP)
        }
        Err(other) => return (other, xdp_action::XDP_PASS),
    };

    // Without a socket on this queue the frame goes to the stack untouched.
    // Safety: ctx.ctx is the kernel's xdp_md for this invocation, valid for the whole call.
    let queue = unsafe { (*ctx.ctx).rx_queue_index };
    if XSKS.get(queue).is_none() {
        return (Outcome::NoSocket, xdp_action::XDP_PASS);
    }

    // Headers only: in copy mode the kernel copies the frame into user memory, so cut it first.
    // The snap length counts from the innermost frame: a tunnel's outer headers (~70 B for
    // VXLAN over IPv6) must not cut the inner TCP header.
    let mut flags = 0;
    let snaplen = config(&CONFIG.snaplen);
    let keep = snap_off + snaplen as usize;
    if snaplen != 0 && wire_len > keep {
        let delta = keep as i32 - wire_len as i32;
        // Safety: a helper call on this invocation's xdp_md; the kernel checks delta, and no
        // packet pointer taken before it is used after it.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
            // Never hand payload to user space: let the stack have the frame instead.
            return (Outcome::TruncateFailed, xdp_action::XDP_PASS);
        }
        flags |= META_F_TRUNCATED;
    }

    let m = XdpMeta {
        magic: META_MAGIC,
        flags,
        orig_len: wire_len as u32,
        _pad: 0,
        // Safety: bpf_ktime_get_ns takes no arguments and cannot fail.
        rx_ns: unsafe { bpf_ktime_get_ns() },
    };
    let mut meta_outcome = None;
    if META_IN_HEAD {
        // Safety: as for adjust_tail; data/data_end are re-read from ctx after the call.
        if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(XDP_META_LEN as i32)) } != 0 {
            // The frame as it came: user space tells it by the missing magic.
            meta_outcome = Some(Outcome::MetaFailed);
        } else if ctx.data() + XDP_META_LEN <= ctx.data_end() {
            // Safety: data + XDP_META_LEN <= data_end was checked just above, so the whole
            // XdpMeta lies in the head adjust_head added.
            unsafe { core::ptr::write_unaligned(ctx.data() as *mut XdpMeta, m) };
        } else {
            // Not reachable (adjust_head grew the frame by XDP_META_LEN), but the verifier
            // needs the check: take the unwritten bytes off again.
            // Safety: as above; it undoes the call before.
            unsafe { bpf_xdp_adjust_head(ctx.ctx, XDP_META_LEN as i32) };
            meta_outcome = Some(Outcome::MetaFailed);
        }
    } else {
        // Safety: as for adjust_tail; data/data_meta are re-read from ctx after the call.
        if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -(XDP_META_LEN as i32)) } == 0 {
            let meta = ctx.metadata();
            if meta + XDP_META_LEN <= ctx.data() {
                // Safety: meta + XDP_META_LEN <= data was checked just above, so the whole
                // XdpMeta lies in the metadata area adjust_meta reserved.
                unsafe { core::ptr::write_unaligned(meta as *mut XdpMeta, m) };
            } else {
                meta_outcome = Some(Outcome::MetaFailed);
            }
        } else {
            meta_outcome = Some(Outcome::MetaFailed);
        }
    }

    match XSKS.redirect(queue, xdp_action::XDP_PASS as u64) {
        Ok(action) => (meta_outcome.unwrap_or(Outcome::TcpRedirected), action),
        Err(_) => {
            if META_IN_HEAD && meta_outcome.is_none() {
                // The stack gets the frame without our header in front of it.
                // Safety: as above; it undoes the adjust_head that added the header.
                unsafe { bpf_xdp_adjust_head(ctx.ctx, XDP_META_LEN as i32) };
            }
            (Outcome::RedirectFailed, xdp_action::XDP_PASS)
        }
    }
}

#[xdp]
pub fn wirewatch_xdp_host(ctx: XdpContext) -> u32 {
    let frame = Frame { start: ctx.data(), end: ctx.data_end() };
    let outcome = copy_headers(&frame, frame.end - frame.start, 0, |dst, len| {
        // Safety: a helper call on this invocation's xdp_md; dst is a ring record's data array
        // of at least `len` bytes (copy_headers bounds it), and the kernel checks the offset
        // and length against the frame.
        unsafe { bpf_xdp_load_bytes(ctx.ctx, 0, dst.cast(), len) }
    });
    count(outcome);
    // Never anything else: the frame belongs to the host.
    xdp_action::XDP_PASS
}

/// Host mode's egress half: the host's outgoing frames, before the qdisc. The TCP stack builds
/// each segment's headers in the skb's linear area (`__tcp_transmit_skb` in
/// net/ipv4/tcp_output.c pushes them with `skb_push`), so the parser reads them in place; a
/// GSO frame is seen once, before it is segmented, as a capture on the host sees it.
#[classifier]
pub fn wirewatch_tc_egress(ctx: TcContext) -> i32 {
    let frame = Frame { start: ctx.data(), end: ctx.data_end() };
    let outcome = copy_headers(&frame, ctx.len() as usize, HOST_F_EGRESS, |dst, len| {
        // Safety: a helper call on this invocation's __sk_buff; dst is a ring record's data
        // array of at least `len` bytes, and the kernel checks offset and length against the
        // skb (paged data included).
        unsafe { bpf_skb_load_bytes(ctx.as_ptr(), 0, dst.cast(), len) }
    });
    count(outcome);
    // TCX_NEXT (include/uapi/linux/bpf.h, `enum tcx_action_base`; TC_ACT_UNSPEC for cls_bpf):
    // the frame goes on to the next program and the qdisc, as if we were not there.
    TC_ACT_UNSPEC
}

/// Host mode: classifies the frame like the span program (filter included) and copies its
/// first bytes, up to the snap length counted from the innermost frame, into the ring. The
/// frame itself is never touched.
#[inline(always)]
fn copy_headers(
    frame: &Frame,
    wire_len: usize,
    flags: u32,
    load: impl FnOnce(*mut u8, u32) -> i64,
) -> Outcome {
    let snap_off = match classify(frame, wire_len) {
        Ok(o) if config(&CONFIG.filter) != 0 && !filter_passes(frame, &o) => {
            return Outcome::Filtered
        }
        Ok(o) => o.snap_off as usize,
        Err(other) => return other,
    };
    let snaplen = config(&CONFIG.snaplen) as usize;
    let keep = if snaplen == 0 { wire_len } else { wire_len.min(snap_off + snaplen) };
    let flags = flags | if keep < wire_len { META_F_TRUNCATED } else { 0 };
    // The small record when the kept bytes fit it (the default snap length), else the large
    // one, cut to its capacity (a longer snap only happens behind deep tunnels).
    if keep <= HOST_SNAP_SMALL {
        to_ring::<HOST_SNAP_SMALL>(keep, wire_len, flags, load)
    } else {
        to_ring::<HOST_SNAP_MAX>(keep, wire_len, flags, load)
    }
}

#[inline(always)]
fn to_ring<const N: usize>(
    keep: usize,
    wire_len: usize,
    mut flags: u32,
    load: impl FnOnce(*mut u8, u32) -> i64,
) -> Outcome {
    let Some(mut entry) = HOST_RING.reserve::<HostRecord<N>>(0) else {
        return Outcome::HostRingFull;
    };
    // The verifier needs the length bounded by the record: an opaque N keeps LLVM from
    // folding the comparison into a form it cannot follow.
    let mut len = keep;
    if len > core::hint::black_box(N) {
        len = N;
        flags |= META_F_TRUNCATED;
    }
    let rec = entry.as_mut_ptr();
    // Safety: rec points to a reserved ring record of size_of::<HostRecord<N>>() bytes, ours
    // until submit or discard; the data array holds N >= len bytes.
    let copied = unsafe { load(core::ptr::addr_of_mut!((*rec).data).cast(), len as u32) };
    if len == 0 || copied != 0 {
        entry.discard(0);
        return Outcome::HostCopyFailed;
    }
    let header = HostRecordHeader {
        flags,
        orig_len: wire_len as u32,
        cap_len: len as u32,
        _pad: 0,
        // Safety: bpf_ktime_get_ns takes no arguments and cannot fail.
        ts_ns: unsafe { bpf_ktime_get_ns() },
    };
    // Safety: as above; the header is the record's first field.
    unsafe { core::ptr::addr_of_mut!((*rec).header).write(header) };
    entry.submit(0);
    Outcome::HostCopied
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// The kernel reads this string to decide whether GPL-only helpers may be called
// (`bpf_prog_load`, kernel/bpf/syscall.c, via `license_is_gpl_compatible` in
// include/linux/license.h, which lists "Dual MIT/GPL"); it matches the crate's `MIT OR GPL-2.0`.
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
