//! The whole engine fed arbitrary frames with arbitrary timestamps and vantages: never a panic,
//! and the batched path (`process_frames`, which decodes ahead) answers exactly as one frame
//! at a time does: the same verdicts, events, counters and vantages.
#![no_main]
use dataplane::engine::{Engine, EngineConfig};
use dataplane::worker::RawFrame;
use libfuzzer_sys::fuzz_target;

fn engine() -> Engine {
    let cfg = EngineConfig {
        vantages: vec!["a".into(), "b".into()].into(),
        history_bytes: 1 << 20,
        flow_capacity: 64,
        record_verdicts: true,
        host: "fuzz".into(),
        ..Default::default()
    };
    Engine::new(cfg, 0)
}

/// What the two paths must agree on, once the input is over.
fn outcome(e: &mut Engine, events: &mut Vec<String>, end_ns: u64) -> String {
    e.tick(end_ns);
    e.finish();
    events.extend(e.drain_events().iter().map(|ev| serde_json::to_string(ev).unwrap()));
    events.sort();
    let mut verdicts = e.drain_verdicts();
    verdicts.sort_unstable();
    let s = e.stats();
    format!(
        "{verdicts:?}\n{events:?}\n{} {:?} {:?} {:?}\n{:?}",
        s.packets,
        s.anomalies,
        s.undecodable,
        s.capture,
        e.cfg.vantages.names()
    )
}

fuzz_target!(|data: &[u8]| {
    // Records: [len u8][dt_ms u8][vantage u8] then len bytes of frame.
    let mut frames = Vec::new();
    let mut i = 0;
    let mut t = 1_700_000_000_000_000_000u64;
    while i + 3 <= data.len() {
        let (len, dt, v) = (data[i] as usize, data[i + 1] as u64, (data[i + 2] & 1) as u16);
        i += 3;
        let end = (i + len).min(data.len());
        t += dt * 1_000_000;
        frames.push(RawFrame { data: &data[i..end], orig_len: (end - i) as u32, ts_ns: t, vantage: v });
        i = end;
    }
    let end_ns = t + 10_000_000_000;

    let mut one = engine();
    let mut one_events = Vec::new();
    for (k, f) in frames.iter().enumerate() {
        one.process_frame(f.data, f.orig_len, f.ts_ns, f.vantage, k as u64 + 1);
        one_events.extend(one.drain_events().iter().map(|ev| serde_json::to_string(ev).unwrap()));
        one.drain_evidence();
    }
    let want = outcome(&mut one, &mut one_events, end_ns);

    // Batches of a size the input picks (1 to 97 frames).
    let size = 1 + data.first().map_or(0, |b| usize::from(*b) % 97);
    let mut batched = engine();
    let mut batched_events = Vec::new();
    for (n, chunk) in frames.chunks(size).enumerate() {
        batched.process_frames(chunk, (n * size) as u64 + 1);
        batched.drain_evidence();
    }
    let got = outcome(&mut batched, &mut batched_events, end_ns);
    assert_eq!(got, want, "batches of {size} differ from one frame at a time");
});
