//! The whole engine fed arbitrary frames with arbitrary timestamps and vantages: never a panic.
#![no_main]
use dataplane::engine::{Engine, EngineConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cfg = EngineConfig {
        vantages: vec!["a".into(), "b".into()].into(),
        history_bytes: 1 << 20,
        flow_capacity: 64,
        record_verdicts: true,
        ..Default::default()
    };
    let mut e = Engine::new(cfg, 0);
    // Records: [len u8][dt_ms u8][vantage u8] then len bytes of frame.
    let mut i = 0;
    let mut t = 1_700_000_000_000_000_000u64;
    while i + 3 <= data.len() {
        let (len, dt, v) = (data[i] as usize, data[i + 1] as u64, (data[i + 2] & 1) as u16);
        i += 3;
        let end = (i + len).min(data.len());
        let frame = &data[i..end];
        i = end;
        t += dt * 1_000_000;
        e.process_frame(frame, frame.len() as u32, t, v, i as u64);
        e.drain_events();
        e.drain_evidence();
    }
    e.tick(t + 10_000_000_000);
    e.finish();
});
