//! Engine replay cost in CPU time of the replaying thread (immune to other load on the
//! machine): `cargo run --release -p bench --example replay_cpu -- [flows] [packets]`.
use bench::gen;
use dataplane::engine::{Engine, EngineConfig};

fn thread_sys_ns() -> u64 {
    // Safety: a zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // Safety: RUSAGE_THREAD and a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &raw mut ru) };
    ru.ru_stime.tv_sec as u64 * 1_000_000_000 + ru.ru_stime.tv_usec as u64 * 1000
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // Safety: a valid clock id and out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[inline(never)]
fn replay_once(e: &mut Engine, cap: &gen::Capture) -> usize {
    if std::env::var_os("REPLAY_ONE_BY_ONE").is_some() {
        for i in 0..cap.frames.len() {
            let (d, o, ts) = cap.frame(i);
            e.process_frame(d, o, ts, 0, 0);
        }
    } else {
        let mut batch = Vec::with_capacity(256);
        for start in (0..cap.frames.len()).step_by(256) {
            batch.clear();
            batch.extend((start..(start + 256).min(cap.frames.len())).map(|i| cap.raw_frame(i)));
            e.process_frames(&batch, 0);
        }
    }
    e.finish();
    // The events' words are written when they are drained: counted with the rest.
    e.drain_events().len()
}

fn main() {
    let a: Vec<u64> = std::env::args().skip(1).filter_map(|s| s.parse().ok()).collect();
    let flows = a.first().copied().unwrap_or(100_000) as u32;
    let packets = a.get(1).copied().unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join("ww-replay-cpu");
    std::fs::create_dir_all(&dir).unwrap();
    let cap = gen::generate(
        &gen::Model { flows, packets, seed: 7, duration_ns: 10_000_000_000 },
        &dir.join("c.pcap"),
        128,
    )
    .unwrap();
    // REPLAY_ROUNDS=1 under `valgrind --tool=callgrind --toggle-collect=*replay_once*`
    // counts the engine's instructions alone.
    let rounds = std::env::var("REPLAY_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    for round in 0..rounds {
        let mut cfg = EngineConfig { flow_capacity: 1 << 21, ..Default::default() };
        if let Some(b) = std::env::var("REPLAY_HISTORY_BYTES").ok().and_then(|s| s.parse().ok()) {
            cfg.history_bytes = b;
        }
        let mut e = Engine::new(cfg, 0);
        let (t, sys) = (thread_cpu_ns(), thread_sys_ns());
        let events = replay_once(&mut e, &cap);
        let ns = thread_cpu_ns() - t;
        let sys = thread_sys_ns() - sys;
        println!(
            "round {round}: {:.0} ns/packet CPU ({:.0} of it system), {:.2} Mpps per CPU-second ({} events)",
            ns as f64 / cap.frames.len() as f64,
            sys as f64 / cap.frames.len() as f64,
            cap.frames.len() as f64 / ns as f64 * 1e3,
            events
        );
    }
}
