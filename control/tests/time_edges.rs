//! Capture timestamps at the end of the u64 nanosecond range (pcapng allows them; a damaged
//! or hostile file has them): deadlines computed from them must not wrap, so a complete
//! handshake is never reported unanswered.
use std::process::Command;

use dataplane::pcapng::PcapngWriter;
use dataplane_common::tcp_flags::{ACK, FIN, PSH, SYN};
use wirewatch_testkit::craft::TcpSegment;
use wirewatch_testkit::tempdir::TempDir;

fn capture_at(path: &std::path::Path, start_ns: u64, answered: bool) {
    let mut w = PcapngWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    w.interface("tap0", 128).unwrap();
    let (c, s) = ("10.2.0.1".parse().unwrap(), "10.2.0.2".parse().unwrap());
    let mut t = start_ns;
    let (mut cs, mut ss) = (1000u32, 5000u32);
    let steps: [(bool, u8, usize); 7] = [
        (true, SYN, 0),
        (false, SYN | ACK, 0),
        (true, ACK, 0),
        (true, ACK | PSH, 100),
        (false, ACK | PSH, 200),
        (true, FIN | ACK, 0),
        (false, FIN | ACK, 0),
    ];
    let steps = if answered { &steps[..] } else { &steps[..1] };
    for &(from_client, flags, len) in steps {
        let mut g = if from_client {
            TcpSegment::new(c, 40000, s, 80)
        } else {
            TcpSegment::new(s, 80, c, 40000)
        };
        let (seq, ack) = if from_client { (&mut cs, ss) } else { (&mut ss, cs) };
        g.seq = *seq;
        g.ack = if flags == SYN { 0 } else { ack };
        g.flags = flags;
        g.payload_len = len;
        *seq = seq.wrapping_add(len as u32 + u32::from(flags & (SYN | FIN) != 0));
        let f = g.frame();
        w.packet(0, t, &f[..f.len().min(128)], f.len() as u32, None).unwrap();
        t = t.saturating_add(1_000_000);
    }
    // Another connection's SYN 5 s later moves the clock past the handshake's 3 s deadline.
    let mut later = TcpSegment::new(c, 40001, s, 81);
    later.flags = SYN;
    let f = later.frame();
    w.packet(0, t.saturating_add(5_000_000_000), &f[..f.len().min(128)], f.len() as u32, None)
        .unwrap();
}

#[test]
fn a_complete_handshake_near_the_end_of_time_is_not_unanswered() {
    let dir = TempDir::new("time-edges");
    for (name, start) in [
        ("ordinary", 1_700_000_000_000_000_000u64),
        ("a second before the end", u64::MAX - 1_000_000_000),
        ("10 ms before the end", u64::MAX - 10_000_000),
    ] {
        let p = dir.join("c.pcapng");
        let events = |answered| {
            capture_at(&p, start, answered);
            let out = Command::new(env!("CARGO_BIN_EXE_wirewatch"))
                .args(["analyze", "--events", "-"])
                .arg(&p)
                .env("RUST_LOG", "warn")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("panicked"), "{name}: {stderr}");
            assert_eq!(out.status.code(), Some(0), "{name}: {stderr}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let complete = events(true);
        // (The later SYN itself may be judged at the very end of time, where its deadline
        // saturates: only the complete handshake to port 80 matters here.)
        let on_80 = |l: &&str| l.contains("syn_unanswered") && l.contains("\"dest_port\":80,");
        let wrong: Vec<&str> = complete.lines().filter(on_80).collect();
        assert!(wrong.is_empty(), "{name}, complete:\n{complete}");
        if name == "ordinary" {
            // The control: a SYN alone is reported, so the check above can fail.
            let lone = events(false);
            assert_eq!(lone.lines().filter(on_80).count(), 1, "{name}, a lone SYN:\n{lone}");
        }
    }
}
