//! `wirewatch run`: attach the XDP program to each interface, bind one AF_XDP socket per
//! queue, run one pinned worker per socket until SIGINT/SIGTERM, then detach and report.
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use crossbeam_channel::bounded;
use dataplane::engine::{Engine, EngineConfig};
use dataplane::worker::{QueueCounters, Worker};
use dataplane_common::XdpConfig;

use crate::cli::run::{NonTcpArg, RunArgs};
use crate::export::health::{egress_problems, problems};
use crate::export::metrics::publish_run;
use crate::live::attach::{
    host_reader, plan_queues, profile_defaults, resolve_interfaces, socket_options, span_readers,
};
use crate::live::signals::{install_signal_handlers, HANGUP, STOP};
use crate::live::summary::{read_driver_losses, DriverBaseline, LossSummary, Outputs, RunSummary};
use crate::live::{EngineSink, OwnedFrame, SinkWiring};
use crate::outputs::events::{event_loop, EventOutput, Output};
use crate::outputs::recorder::RecordSender;
use crate::profile::apply_profiles;
use crate::stats::{QueueInfo, SharedStats};

pub fn run(args: RunArgs) -> Result<()> {
    let missing = crate::live::caps::missing_for_live_capture();
    if !missing.is_empty() {
        bail!(
            "missing capabilities {}: run as root, or grant them (e.g. `setcap cap_bpf,cap_net_admin,cap_net_raw,cap_perfmon+ep $(which wirewatch)` or systemd AmbientCapabilities)",
            missing.join(", ")
        );
    }
    let cpus = crate::profile::cpu_list_or_all(args.cpus.as_ref());
    let config = XdpConfig {
        snaplen: args.snaplen,
        non_tcp_drop: (args.non_tcp == NonTcpArg::Drop) as u32,
        ..XdpConfig::default()
    };
    // Resolve everything before touching any interface, so bad input leaves nothing behind.
    let ifindexes = resolve_interfaces(&args)?;
    args.check_outputs().map_err(crate::cli::Usage)?;
    let tuning = match &args.profile {
        Some(name) => Some(apply_profiles(&args, name, &cpus)?),
        None => None,
    };
    let mut args = args;
    let socket = profile_defaults(&mut args, tuning.as_ref());
    let mut xsk_opts = socket_options(&args, socket);
    let plan = plan_queues(&args, &ifindexes, tuning.as_ref())?;
    // With one interface whose RSS is symmetric, both directions of a flow arrive on one queue:
    // its worker owns the flow and nothing is handed over. Otherwise the owner is a hash of the
    // flow and workers hand packets to it.
    let queue_owned = args.ifaces.len() == 1
        && tuning.as_ref().is_some_and(|t| t.rss_symmetric.iter().all(|s| *s));
    log::info!(
        "flow ownership: {}",
        if queue_owned {
            "by queue (symmetric RSS from the profile)"
        } else {
            "by flow hash, packets handed to the owning worker"
        }
    );

    // Created now: a path that cannot be written is an error before anything is attached.
    let record_thread = match &args.record {
        Some(path) => Some(crate::outputs::recorder::start(path, &args)?),
        None => None,
    };

    let stop = Arc::new(AtomicBool::new(false));
    install_signal_handlers();

    // Engines: one per worker; flows are owned by hash, frames of another worker's flow are
    // handed over (no symmetric RSS needed).
    let nworkers: usize = plan.iter().map(|p| p.2.len()).sum();
    if args.ring_size.is_none() {
        xsk_opts.ring_size = dataplane::xsk::auto_ring_size(nworkers, xsk_opts.frame_size);
    }
    if args.host {
        log::info!(
            "host mode: a ring buffer of {} MiB per interface",
            dataplane::host::RING_BYTES >> 20
        );
    } else {
        log::info!(
            "AF_XDP rings of {} frames, {} MiB of socket buffers per queue",
            xsk_opts.ring_size,
            (u64::from(xsk_opts.ring_size) * 2 * u64::from(xsk_opts.frame_size)) >> 20
        );
    }
    // The interfaces, and the mirror sessions the workers find in them (numbered once).
    let vantages = dataplane::vantage::Vantages::new(args.ifaces.clone());
    let mut engine_cfg = EngineConfig {
        evidence_dir: Some(args.evidence_dir.clone()),
        vantages: vantages.clone(),
        // No rehash pause while the receive rings fill.
        flow_index_grows: false,
        ..Default::default()
    };
    args.thresholds.apply(&mut engine_cfg);
    for (a, b) in crate::vantages::serial_indices(&args.serial, &args.ifaces)? {
        engine_cfg.vantage_relations.force_serial(a, b);
    }
    args.event_fields.apply(&mut engine_cfg);
    // Every worker draws evidence from one budget (files per second for the whole sensor).
    engine_cfg.evidence_budget =
        Some(dataplane::budget::EvidenceBudget::new(engine_cfg.evidence_per_sec));
    if let Err(e) = std::fs::create_dir_all(&args.evidence_dir) {
        log::warn!(
            "evidence directory {}: {e}; detections continue without evidence files",
            args.evidence_dir.display()
        );
    }
    let api_cfg = crate::export::api::ApiConfig {
        addr: args.metrics,
        token: args.token().map(|t| t.as_str().to_string()),
        allow_insecure: args.api_insecure,
        evidence_dir: args.evidence_dir.clone(),
    };
    crate::export::api::check_bind(&api_cfg)?;
    let prom = crate::export::metrics::install()?;
    let (out_tx, out_rx) = bounded::<Output>(65536);
    let worker_stats: Vec<Arc<SharedStats>> =
        (0..nworkers).map(|_| Arc::new(SharedStats::default())).collect();
    let seen = Arc::new(crate::export::api::EventStore::new(10_000));
    let health = Arc::new(crate::export::api::Health::default());
    crate::export::api::serve(api_cfg, prom, seen.clone(), health.clone())?;
    let output_cfg = EventOutput {
        json_stdout: args.events.as_ref().is_some_and(|p| p.as_os_str() == "-"),
        events_file: args.events.clone().filter(|p| p.as_os_str() != "-"),
        vantages: vantages.clone(),
        rotate_bytes: args.events_max_bytes.max(1),
        rotate_keep: crate::outputs::recorder::KEEP,
        retention: crate::outputs::evidence::Retention::new(
            &args.evidence_dir,
            args.evidence_max_bytes,
            args.evidence_max_age_days,
        ),
    };
    let seen2 = seen.clone();
    let output_thread = std::thread::Builder::new()
        .name("ww-events".into())
        .spawn(move || event_loop(&out_rx, output_cfg, &seen2))?;
    let (inbox_tx, mut inbox_rx): (Vec<_>, Vec<_>) =
        (0..nworkers).map(|_| bounded::<OwnedFrame>(16384)).unzip();
    inbox_rx.reverse();
    let mut programs = Vec::new();
    let mut driver_base = Vec::new();
    let draining = Arc::new(std::sync::atomic::AtomicUsize::new(nworkers));
    let mut attached = Vec::new();
    // Host mode: each interface's TC egress program, by id, for /healthz.
    let mut egress_attached = Vec::new();
    let mut workers = Vec::new();
    let mut summaries = Vec::new();
    let mut worker_no = 0usize;
    let wiring = SinkWiring {
        peers: inbox_tx.clone(),
        peer_stats: worker_stats.clone(),
        out: out_tx.clone(),
        queue_owned,
    };
    let mut new_sink = |id: usize| {
        EngineSink::new(
            Engine::new(engine_cfg.per_worker(nworkers), id),
            id,
            inbox_rx.pop().expect("one inbox per worker"),
            record_thread.as_ref().map(RecordSender::new),
            &wiring,
        )
    };
    for (vantage, (iface, idx, queue_ids)) in plan.iter().enumerate() {
        if args.host {
            let cpu = cpus[worker_no % cpus.len()];
            let (mut prog, reader, info, prog_id) =
                host_reader(&args, config, (iface, *idx, vantage as u16), cpu, &draining)?;
            egress_attached.push((iface.clone(), prog.egress().info().map(|i| i.id()).ok()));
            // After attaching, as for AF_XDP: attaching resets some drivers' queues.
            driver_base.push(DriverBaseline::new(iface));
            attached.push((iface.clone(), *idx, prog_id));
            summaries.push(info);
            workers.push(reader.spawn(new_sink(worker_no), stop.clone())?);
            worker_no += 1;
            programs.push((iface.clone(), prog));
            continue;
        }
        let (prog, xdp_mode, queues, prog_id) =
            span_readers(&args, config, (iface, *idx), queue_ids, &xsk_opts)?;
        // Attaching native XDP and binding sockets reset some drivers' queues: the baseline
        // is taken after them.
        driver_base.push(DriverBaseline::new(iface));
        attached.push((iface.clone(), *idx, prog_id));
        for xsk in queues {
            let counters = Arc::new(QueueCounters::default());
            let cpu = cpus[worker_no % cpus.len()];
            worker_no += 1;
            summaries.push(QueueInfo {
                iface: iface.clone(),
                vantage: vantage as u16,
                queue: xsk.queue,
                xdp_mode,
                copy_mode: xsk.mode.name(),
                zero_copy_fallback: xsk.fallback_reason.clone(),
                counters: counters.clone(),
            });
            let sink = new_sink(worker_no - 1);
            let w = Worker {
                xsk,
                vantage: vantage as u16,
                cpu: Some(cpu),
                counters,
                draining: draining.clone(),
            };
            workers.push(w.spawn(sink, stop.clone())?);
        }
        programs.push((iface.clone(), prog));
    }

    let started = Instant::now();
    let mut last_export = Instant::now().checked_sub(Duration::from_secs(1)).unwrap();
    while !STOP.load(Relaxed) {
        if HANGUP.swap(false, Relaxed) {
            log::info!(
                "SIGHUP: the events file is reopened before the next event; other settings take effect on restart"
            );
        }
        if args.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        if last_export.elapsed() >= Duration::from_millis(500) {
            last_export = Instant::now();
            read_driver_losses(&summaries, &mut driver_base, config.non_tcp_drop != 0);
            publish_run(&summaries, &programs, &worker_stats);
            let mut now_wrong = problems(&summaries, &workers, &worker_stats, &attached);
            now_wrong.extend(egress_problems(&egress_attached));
            health.set(now_wrong);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    log::info!("stopping: detaching, then draining the queues");
    // Detach first, so nothing is redirected after the workers' last read: what the program
    // counted and what the sockets delivered then add up exactly.
    for (iface, p) in &mut programs {
        if let Err(e) = p.detach() {
            log::warn!("{iface}: detaching XDP: {e}");
        }
    }
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Relaxed);
    let mut record_dropped = 0;
    for h in workers {
        let sink = h.join().map_err(|_| anyhow::anyhow!("a worker thread panicked"))?;
        record_dropped += sink.record_dropped;
    }
    read_driver_losses(&summaries, &mut driver_base, config.non_tcp_drop != 0);
    publish_run(&summaries, &programs, &worker_stats);
    let xdp_counts: Vec<_> = programs.iter().filter_map(|(_, p)| p.counters().ok()).collect();
    let xdp = programs
        .iter()
        .map(|(iface, p)| (iface.clone(), p.counters().map(|c| c.nonzero()).unwrap_or_default()))
        .collect();
    drop(programs); // detaches
    drop(inbox_tx);
    drop(out_tx);
    // The wiring holds a sender of the events queue too: the event thread ends only when
    // every sender is gone.
    drop(wiring);
    let (events, evidence_written, evidence_failed) =
        output_thread.join().map_err(|_| anyhow::anyhow!("the event thread panicked"))?;
    let recorded = match record_thread {
        Some((tx, free, h)) => {
            drop((tx, free));
            let (recorded, not_written) =
                h.join().map_err(|_| anyhow::anyhow!("the recorder thread panicked"))?;
            record_dropped += not_written;
            recorded
        }
        None => 0,
    };
    let summary = RunSummary::collect(
        &summaries,
        &driver_base,
        LossSummary::of(&xdp_counts, &summaries, &driver_base, &worker_stats),
        &worker_stats,
        &vantages,
        Outputs { xdp, recorded, record_dropped, events, evidence_written, evidence_failed },
    );
    summary.log();
    if let Some(p) = &args.summary_json {
        std::fs::write(p, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
