//! The batched path (`Engine::process_frames`, which decodes frames ahead of processing them)
//! against one frame at a time: the same verdicts, events, counters and vantages, also when
//! a remote mirror session first appears in the middle of a batch (numbering a session
//! changes how the frames before it are processed, so it must not happen ahead of them).
use dataplane::engine::{Engine, EngineConfig};
use dataplane::packet::{decode_ahead, decode_in};
use dataplane::vantage::Vantages;
use dataplane::worker::RawFrame;
use dataplane_common::tcp_flags::{ACK, RST, SYN};
use wirewatch_testkit::craft::TcpSegment;
use wirewatch_testkit::encap::{wrap, Encap, Outer};

const T0: u64 = 1_700_000_000_000_000_000;

fn erspan(frame: &[u8], session: u16) -> Vec<u8> {
    let outer = Outer::new("192.0.2.1".parse().unwrap(), "192.0.2.9".parse().unwrap());
    wrap(frame, &Encap::ErspanII { session }, &outer)
}

/// A connection with data both ways, a refused one, and a reset: each frame seen on the
/// input directly and, from frame `mirror_from` on, also inside ERSPAN session 12, with one
/// server segment the mirror never carries.
fn traffic(mirror_from: usize) -> Vec<(Vec<u8>, u64)> {
    let (c, s) = ("10.1.0.1".parse().unwrap(), "10.1.0.2".parse().unwrap());
    let seg = |from_client: bool, flags: u8, seq: u32, ack: u32, len: usize| {
        let mut t = if from_client {
            TcpSegment::new(c, 40000, s, 80)
        } else {
            TcpSegment::new(s, 80, c, 40000)
        };
        (t.flags, t.seq, t.ack, t.payload_len) = (flags, seq, ack, len);
        t.frame()
    };
    let mut plain = vec![
        seg(true, SYN, 100, 0, 0),
        seg(false, SYN | ACK, 5000, 101, 0),
        seg(true, ACK, 101, 5001, 0),
    ];
    let mut sseq = 5001;
    for round in 0..120u32 {
        plain.push(seg(true, ACK, 101 + round * 100, sseq, 100));
        for _ in 0..2 {
            plain.push(seg(false, ACK, sseq, 201 + round * 100, 1000));
            sseq += 1000;
        }
        plain.push(seg(true, ACK, 201 + round * 100, sseq, 0));
    }
    // Refused: a SYN answered by a RST.
    let mut refused = TcpSegment::new(c, 40001, s, 81);
    refused.flags = SYN;
    plain.push(refused.frame());
    let mut rst = TcpSegment::new(s, 81, c, 40001);
    (rst.flags, rst.ack) = (RST | ACK, 1);
    plain.push(rst.frame());
    plain.push(seg(false, RST, sseq, 0, 0));

    let mut out = Vec::new();
    for (i, f) in plain.iter().enumerate() {
        let t = T0 + i as u64 * 1_000_000;
        out.push((f.clone(), t));
        // The mirror never carries the server's segment 300.
        if i >= mirror_from && i != 300 {
            out.push((erspan(f, 12), t + 50_000));
        }
    }
    out
}

fn engine() -> Engine {
    let cfg = EngineConfig {
        vantages: Vantages::new(vec!["a".into()]),
        record_verdicts: true,
        host: "test".into(),
        ..Default::default()
    };
    Engine::new(cfg, 0)
}

/// Everything a user could compare: verdicts, events, counters, the vantages found.
fn outcome(mut e: Engine, last_ts: u64) -> String {
    e.tick(last_ts + 60_000_000_000);
    e.finish();
    let mut verdicts = e.drain_verdicts();
    verdicts.sort_unstable();
    let mut events: Vec<String> =
        e.drain_events().iter().map(|ev| serde_json::to_string(ev).unwrap()).collect();
    events.sort();
    let s = e.stats();
    format!(
        "verdicts {verdicts:?}\nevents {events:#?}\npackets {} anomalies {:?} capture {:?}\nvantages {:?}",
        s.packets,
        s.anomalies,
        s.capture,
        e.cfg.vantages.names()
    )
}

#[test]
fn decode_ahead_leaves_a_new_mirror_session_unnumbered() {
    let v = Vantages::new(vec!["a".into()]);
    let plain =
        TcpSegment::new("10.1.0.1".parse().unwrap(), 1, "10.1.0.2".parse().unwrap(), 2).frame();
    let inner = erspan(&plain, 7);
    let len = |f: &[u8]| f.len() as u32;
    assert!(decode_ahead(&plain, len(&plain), 0, 0, &v).is_some_and(|r| r.is_ok()));
    assert!(decode_ahead(&inner, len(&inner), 0, 0, &v).is_none(), "a new session decoded ahead");
    assert_eq!(v.len(), 1, "decoding ahead numbered the session");
    let p = decode_in(&inner, len(&inner), 0, 0, &v).unwrap();
    assert_eq!((p.vantage, v.len()), (1, 2));
    // Known now: decoded ahead like any frame, at its vantage.
    let again = decode_ahead(&inner, len(&inner), 0, 0, &v).expect("a known session");
    assert_eq!(again.unwrap().vantage, 1);
}

#[test]
fn batched_and_one_at_a_time_agree_across_a_new_mirror_session() {
    // The session starts inside the first batch, on a batch boundary and late.
    for mirror_from in [10, 64, 200] {
        let frames = traffic(mirror_from);
        let last_ts = frames.last().unwrap().1;
        let mut one = engine();
        for (k, (f, t)) in frames.iter().enumerate() {
            one.process_frame(f, f.len() as u32, *t, 0, k as u64 + 1);
        }
        let want = outcome(one, last_ts);
        assert!(want.contains("a/erspan2:12@192.0.2.1"), "the session was found: {want}");
        for batch in [1, 7, 64, 1000] {
            let mut batched = engine();
            let raw: Vec<RawFrame<'_>> = frames
                .iter()
                .map(|(f, t)| RawFrame { data: f, orig_len: f.len() as u32, ts_ns: *t, vantage: 0 })
                .collect();
            for (n, chunk) in raw.chunks(batch).enumerate() {
                batched.process_frames(chunk, (n * batch) as u64 + 1);
            }
            let got = outcome(batched, last_ts);
            assert_eq!(got, want, "mirror from frame {mirror_from}, batches of {batch}");
        }
    }
}
