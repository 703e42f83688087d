//! The engine's answers on the benchmark capture, pinned: every per-packet verdict and every
//! event of a 20k-flow replay (bench/src/gen.rs, seed 7) must equal bench/golden/replay.txt.
//! A change to the flow table, the pipeline or the timers must not change what is detected;
//! a change that means to (a detector fix) regenerates the file with WIREWATCH_BLESS=1 and
//! says why in its commit.
use std::fmt::Write as _;
use std::path::PathBuf;

use bench::gen;
use dataplane::engine::{Engine, EngineConfig};
use dataplane::worker::RawFrame;

/// The replay's verdicts, events and counters; `batched`: through `process_frames` (the
/// look-ahead path analyze and the benchmark use) instead of one `process_frame` at a time.
fn replay_text(batched: bool) -> String {
    let dir = std::env::temp_dir().join(format!("ww-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model =
        gen::Model { flows: 20_000, packets: 200_000, seed: 7, duration_ns: 10_000_000_000 };
    let cap = gen::generate(&model, &dir.join("golden.pcap"), 128).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    // A fixed sensor name: the golden file does not depend on the machine it is made on.
    let cfg = EngineConfig { record_verdicts: true, host: "golden".into(), ..Default::default() };
    let mut e = Engine::new(cfg, 0);
    if batched {
        // Uneven batches, so that look-ahead windows straddle their ends.
        let mut start = 0;
        for n in (1..).map(|k| [1, 7, 64, 300][k % 4]) {
            if start == cap.frames.len() {
                break;
            }
            let end = (start + n).min(cap.frames.len());
            let frames: Vec<RawFrame<'_>> = (start..end).map(|i| cap.raw_frame(i)).collect();
            e.process_frames(&frames, start as u64 + 1);
            start = end;
        }
    } else {
        for i in 0..cap.frames.len() {
            let (data, orig, ts) = cap.frame(i);
            e.process_frame(data, orig, ts, 0, i as u64 + 1);
        }
    }
    e.finish();
    let mut out = String::new();
    let mut verdicts = e.drain_verdicts();
    verdicts.sort_unstable();
    for (n, v) in verdicts.iter().filter(|(_, v)| *v != 0) {
        writeln!(out, "frame {n} {v:#x}").unwrap();
    }
    let drained = e.drain_events();
    let json: Vec<serde_json::Value> =
        drained.iter().map(|ev| serde_json::to_value(ev).unwrap()).collect();
    dataplane::schema::validate_events(&json).unwrap();
    let mut events: Vec<String> =
        drained.iter().map(|ev| serde_json::to_string(ev).unwrap()).collect();
    events.sort();
    for ev in events {
        out.push_str(&ev);
        out.push('\n');
    }
    let s = e.stats();
    writeln!(out, "packets {} anomalies {:?}", s.packets, s.anomalies).unwrap();
    out
}

#[test]
fn replay_matches_the_golden_file() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden/replay.txt");
    if std::env::var_os("WIREWATCH_BLESS").is_some() {
        std::fs::write(&path, replay_text(false)).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (generate it with WIREWATCH_BLESS=1)", path.display()));
    for batched in [false, true] {
        let got = replay_text(batched);
        if got != want {
            let first = got
                .lines()
                .zip(want.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(got.lines().count().min(want.lines().count()));
            panic!(
                "the replay ({}) differs from {} at line {}:\n  got:  {}\n  want: {}\n({} vs {} lines)",
                if batched { "batched" } else { "one frame at a time" },
                path.display(),
                first + 1,
                got.lines().nth(first).unwrap_or("<end>"),
                want.lines().nth(first).unwrap_or("<end>"),
                got.lines().count(),
                want.lines().count()
            );
        }
    }
}
