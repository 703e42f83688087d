//! Just enough of the bpf(2) syscall for the benchmarks: load a two-instruction XDP program
//! (the bare baseline, the XDP_TX traffic generator, the live path's floor) or TC classifier (the egress baseline) and run BPF_PROG_TEST_RUN on any
//! program fd, optionally with live frames (include/uapi/linux/bpf.h, union bpf_attr).
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
/// `enum bpf_attach_type`'s BPF_XDP, and XDP_FLAGS_DRV_MODE (include/uapi/linux/if_link.h).
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
pub const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
pub const XDP_DROP: i32 = 1;
pub const XDP_PASS: i32 = 2;
pub const XDP_TX: i32 = 3;
/// TCX_NEXT / TC_ACT_UNSPEC: what the host-mode egress program answers.
pub const TCX_NEXT: i32 = -1;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    _rest: [u64; 12],
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// `union bpf_attr`'s `link_create` for an XDP link: the interface takes the place of the
/// target fd.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    _rest: [u64; 6],
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // Safety: attr is a valid, zero-padded bpf_attr prefix of the size passed.
    let r =
        unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut::<T>(attr), size_of::<T>()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// An XDP program that returns `action` and nothing else: `r0 = action; exit`.
pub fn constant_program(action: i32, name: &str) -> io::Result<OwnedFd> {
    constant_of_type(BPF_PROG_TYPE_XDP, action, name)
}

/// A TC classifier that returns `action` and nothing else (the egress baseline).
pub fn constant_classifier(action: i32, name: &str) -> io::Result<OwnedFd> {
    constant_of_type(BPF_PROG_TYPE_SCHED_CLS, action, name)
}

fn constant_of_type(prog_type: u32, action: i32, name: &str) -> io::Result<OwnedFd> {
    // struct bpf_insn { u8 code; u8 dst:4 src:4; s16 off; s32 imm; }: BPF_ALU64|BPF_MOV|BPF_K, BPF_JMP|BPF_EXIT.
    let mut insns = [0u64; 2];
    insns[0] = 0xb7 | ((action as u32 as u64) << 32);
    insns[1] = 0x95;
    let license = b"GPL\0";
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: 2,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    for (d, s) in attr.prog_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // Safety: the kernel returned a new program fd that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches an XDP program to the interface `ifindex` of the calling thread's namespace in
/// native mode; it stays attached until the returned link is dropped.
pub fn attach_xdp(prog: &impl AsRawFd, ifindex: u32) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: XDP_FLAGS_DRV_MODE,
        ..Default::default()
    };
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    // Safety: the kernel returned a new link fd that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `struct xdp_md` for the test run: data/data_end/data_meta are offsets, then the ifindex
/// and queue the frame pretends to arrive on.
fn xdp_md(len: usize, ifindex: u32) -> [u8; 24] {
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

#[derive(Clone, Copy, Debug)]
pub struct RunResult {
    pub retval: u32,
    /// Average nanoseconds per repetition, as measured by the kernel.
    pub ns_per_run: u32,
}

/// BPF_PROG_TEST_RUN of `prog` over `frame`, `repeat` times. With `live`, frames really leave
/// through `ifindex` (XDP_TX / redirect) in batches of 64.
pub fn test_run(
    prog: &impl AsRawFd,
    frame: &[u8],
    repeat: u32,
    ifindex: u32,
    live: bool,
) -> io::Result<RunResult> {
    let ctx = xdp_md(frame.len(), ifindex);
    let mut out = vec![0u8; if live { 0 } else { frame.len() + 256 }];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ctx_size_in: ctx.len() as u32,
        ctx_in: ctx.as_ptr() as u64,
        ..Default::default()
    };
    if live {
        attr.flags = BPF_F_TEST_XDP_LIVE_FRAMES;
        attr.batch_size = 64;
    } else {
        attr.data_out = out.as_mut_ptr() as u64;
        attr.data_size_out = out.len() as u32;
    }
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(RunResult { retval: attr.retval, ns_per_run: attr.duration })
}

/// BPF_PROG_TEST_RUN of a TC classifier over `frame` (an Ethernet frame the kernel wraps in an
/// skb, `bpf_prog_test_run_skb` in net/bpf/test_run.c), `repeat` times, without a context.
pub fn test_run_skb(prog: &impl AsRawFd, frame: &[u8], repeat: u32) -> io::Result<RunResult> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        data_size_out: out.len() as u32,
        repeat,
        ..Default::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(RunResult { retval: attr.retval, ns_per_run: attr.duration })
}
