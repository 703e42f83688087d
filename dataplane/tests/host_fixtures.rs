//! Host mode's programs under BPF_PROG_TEST_RUN: the XDP program and the TC egress program pass
//! every frame on unchanged, copy the headers of TCP frames into the ring with the right
//! header, and count a full ring as a loss without ever dropping the frame.
use std::net::IpAddr;

use aya::maps::{MapData, RingBuf};
use aya::programs::{TestRun, TestRunOptions, TestRunResult};
use dataplane::loader::XdpProgram;
use dataplane_common::{
    tcp_flags, HostRecordHeader, Outcome, XdpConfig, HOST_F_EGRESS, META_F_TRUNCATED,
};
use wirewatch_testkit::craft::TcpSegment;
use wirewatch_testkit::netns::privileged_or_skip;

const XDP_PASS: u32 = 2;
/// TCX_NEXT (include/uapi/linux/bpf.h): the egress program's only answer.
const TCX_NEXT: u32 = -1i32 as u32;

fn addr(a: &str) -> IpAddr {
    a.parse().unwrap()
}

/// (name, frame, outcome): TCP frames of both families, short and longer than the snap
/// length, and frames the programs must leave alone.
fn frames() -> Vec<(&'static str, Vec<u8>, Outcome)> {
    let mut syn = TcpSegment::new(addr("10.9.0.1"), 40000, addr("10.9.0.2"), 80);
    syn.flags = tcp_flags::SYN;
    syn.mss = Some(1460);
    syn.timestamp = Some((1, 0));
    let mut data = syn.clone();
    data.flags = tcp_flags::ACK | tcp_flags::PSH;
    data.payload_len = 1400;
    let mut v6 = TcpSegment::new(addr("fd00::1"), 40000, addr("fd00::2"), 443);
    v6.payload_len = 200;
    let mut udp = syn.frame();
    udp[14 + 9] = 17;
    let mut bad_offset = syn.frame();
    bad_offset[14 + 20 + 12] = 0x10; // TCP data offset 1: shorter than the header
    vec![
        ("ipv4 SYN", syn.frame(), Outcome::HostCopied),
        ("ipv4 data 1400 B", data.frame(), Outcome::HostCopied),
        ("ipv6 data 200 B", v6.frame(), Outcome::HostCopied),
        ("udp", udp, Outcome::NonTcpPassed),
        ("tcp data offset 1", bad_offset, Outcome::MalformedTcpDataOffset),
    ]
}

/// Runs one program on `frame`: its return value and the frame as it left.
fn run(
    prog: &impl for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
    frame: &[u8],
) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; 4096];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

/// Every record waiting in the ring, as (header, frame bytes).
fn drain(ring: &mut RingBuf<MapData>) -> Vec<(HostRecordHeader, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(r) = ring.next() {
        let (h, data) = HostRecordHeader::split(&r).expect("a record holds its header");
        out.push((h, data.to_vec()));
    }
    out
}

#[test]
fn host_programs_pass_every_frame_and_copy_tcp_headers() {
    if !privileged_or_skip("host_programs_pass_every_frame_and_copy_tcp_headers") {
        return;
    }
    let mut prog = XdpProgram::load_host(XdpConfig::default(), None, 1 << 16)
        .expect("the verifier accepts both host-mode programs");
    let mut ring = prog.take_host_ring().unwrap();
    let snap = XdpConfig::DEFAULT_SNAPLEN as usize;
    let mut failures = Vec::new();
    for egress in [false, true] {
        for (name, frame, outcome) in frames() {
            let before = prog.counters().unwrap();
            let (verdict, out) =
                if egress { run(prog.egress(), &frame) } else { run(prog.program(), &frame) };
            let after = prog.counters().unwrap();
            let side = if egress { "egress" } else { "ingress" };
            let mut problems = Vec::new();
            let want = if egress { TCX_NEXT } else { XDP_PASS };
            if verdict != want {
                problems.push(format!("verdict {verdict} (want {want})"));
            }
            if out != frame {
                problems.push("the frame was modified".into());
            }
            let bumped: Vec<_> =
                Outcome::ALL.iter().filter(|o| after.get(**o) != before.get(**o)).collect();
            if bumped != [&outcome] {
                problems.push(format!("counters bumped {bumped:?} (want [{outcome:?}])"));
            }
            let records = drain(&mut ring);
            if outcome == Outcome::HostCopied {
                let kept = frame.len().min(snap);
                let want_flags = if egress { HOST_F_EGRESS } else { 0 }
                    | if frame.len() > snap { META_F_TRUNCATED } else { 0 };
                match records.as_slice() {
                    [(h, data)] => {
                        if h.orig_len as usize != frame.len()
                            || h.flags != want_flags
                            || h.ts_ns == 0
                        {
                            problems.push(format!("record header {h:?} (want flags {want_flags})"));
                        }
                        if data[..] != frame[..kept] {
                            problems.push(format!(
                                "record holds {} B (want the first {kept} B)",
                                data.len()
                            ));
                        }
                    }
                    _ => problems.push(format!("{} records (want 1)", records.len())),
                }
            } else if !records.is_empty() {
                problems.push(format!("{} records for a frame not copied", records.len()));
            }
            if !problems.is_empty() {
                failures.push(format!("{side} {name}: {}", problems.join("; ")));
            }
        }
    }
    assert!(failures.is_empty(), "{} fixture(s) failed:\n{}", failures.len(), failures.join("\n"));
}

/// Nobody reads the ring: once it is full each further frame is counted as lost, and still
/// passed on unchanged.
#[test]
fn a_full_host_ring_counts_losses_and_passes_the_frames() {
    if !privileged_or_skip("a_full_host_ring_counts_losses_and_passes_the_frames") {
        return;
    }
    let ring_bytes = 4096;
    let mut prog = XdpProgram::load_host(XdpConfig::default(), None, ring_bytes).unwrap();
    let frame = frames().remove(1).1;
    let sent = 100;
    for _ in 0..sent {
        let (verdict, out) = run(prog.program(), &frame);
        assert_eq!((verdict, out == frame), (XDP_PASS, true));
    }
    let c = prog.counters().unwrap();
    let (copied, full) = (c.get(Outcome::HostCopied), c.get(Outcome::HostRingFull));
    // A small record is 24 + 160 B plus the kernel's 8-byte record header: 21 fit in 4 KiB.
    assert_eq!(copied, u64::from(ring_bytes) / (24 + 160 + 8), "{:?}", c.nonzero());
    assert_eq!(copied + full, sent, "{:?}", c.nonzero());
    let mut ring = prog.take_host_ring().unwrap();
    assert_eq!(drain(&mut ring).len() as u64, copied);
}
