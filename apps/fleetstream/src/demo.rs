//! `fleetstream demo`: the whole pipeline in one process, then an id-by-id account.
//!
//! producer (Pareto codes, composite keys, acks=all) -> Kafka topics -> one consumer group of N
//! workers per topology group -> in-process dispatcher (idempotent) -> recording sinks.
//! `lost` comes from the id ledger: every id Kafka acked must be found in a sink or in a
//! dead-letter topic. Counters are never subtracted to get it.

use crate::cli::DemoArgs;
use crate::{connect, load_topology, ConfigError, DEMO_ROUTES};
use anyhow::{bail, Context};
use fleetstream_consumer::{InProcess, Transport, Worker, WorkerConfig, WorkerMetrics};
use fleetstream_core::{
    IdLedger, KeyResolver, KeyStrategy, LedgerReport, MessageId, Partitioner, TopicRole,
};
use fleetstream_dispatcher::idempotency::MemoryStore;
use fleetstream_dispatcher::{Dispatcher, RoutingTable};
use fleetstream_kafka::{headers, read_topic_to_end, Admin, ConsumerSettings, ProducerSettings};
use fleetstream_obs::LatencySummary;
use fleetstream_producer::{
    AckObserver, GeneratorConfig, ProducerMetrics, ProducerReport, RunOptions, RunSpec, SharedRate,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The demo's summary (also written with `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    /// Which cluster ran it.
    pub cluster: String,
    /// Topology name.
    pub topology: String,
    /// Messages the producer handed to Kafka.
    pub produced: u64,
    /// Messages Kafka acknowledged (acks=all).
    pub acked: u64,
    /// Messages whose delivery failed at the producer.
    pub producer_failed: u64,
    /// Malformed events the generator made on purpose (`--poison-rate`).
    pub poison_injected: u64,
    /// Events the producer rejected (no extractable code) and dead-lettered itself.
    pub producer_rejected: u64,
    /// Records read by the workers (redeliveries included).
    pub consumed: u64,
    /// Distinct message ids with a dispatch effect in a sink.
    pub dispatched: u64,
    /// Redeliveries the dispatcher recognised and did not execute again.
    pub duplicates_suppressed: u64,
    /// Distinct message ids found in dead-letter topics.
    pub dead_lettered: u64,
    /// Acked ids found neither dispatched nor dead-lettered.
    pub lost: u64,
    /// Up to 10 lost ids.
    pub lost_sample: Vec<String>,
    /// Sink effects beyond one per id (must be 0: effectively-once).
    pub extra_effects: u64,
    /// Target rate, msg/s.
    pub rate_target: f64,
    /// Events sent per second over the producing window (producer rejects included).
    pub rate_achieved: f64,
    /// Producing window, seconds.
    pub producing_secs: f64,
    /// Producer timestamp -> dispatch acknowledged, ms.
    pub e2e_latency_ms: LatencySummary,
    /// Producer ack latency from the actual send, ms.
    pub ack_latency_ms: LatencySummary,
    /// Producer ack latency from the intended send time, ms.
    pub ack_latency_intended_ms: LatencySummary,
    /// Acked messages by topic and partition.
    pub per_partition: BTreeMap<String, BTreeMap<i32, u64>>,
    /// Dead letters by reason.
    pub dead_letter_reasons: BTreeMap<String, u64>,
    /// Consumer groups and their workers.
    pub workers: BTreeMap<String, usize>,
    /// Whether every acked id was accounted for before the drain timeout.
    pub drained: bool,
    /// Wall-clock seconds, start to summary.
    pub elapsed_secs: f64,
}

struct LedgerObserver(Mutex<IdLedger>);

impl AckObserver for LedgerObserver {
    fn acked(&self, seq: u64, _topic: &str, _partition: i32) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).acked(seq);
    }
}

fn validate(args: &DemoArgs) -> anyhow::Result<(Option<KeyStrategy>, Partitioner)> {
    if !args.rate.is_finite() || args.rate < 0.0 {
        bail!(ConfigError(format!(
            "--rate (FLEETSTREAM_RATE) must be >= 0 msg/s, got {}",
            args.rate
        )));
    }
    if args.duration.is_zero() {
        bail!(ConfigError(
            "--duration (FLEETSTREAM_DURATION) must be more than zero".into()
        ));
    }
    if args.drain_timeout.is_zero() {
        bail!(ConfigError(
            "--drain-timeout (FLEETSTREAM_DRAIN_TIMEOUT) must be more than zero: the workers need time to dispatch what was produced".into()
        ));
    }
    if args.workers == 0 {
        bail!(ConfigError(
            "--workers (FLEETSTREAM_WORKERS) must be at least 1".into()
        ));
    }
    if !(0.0..=1.0).contains(&args.poison_rate) {
        bail!(ConfigError(format!(
            "--poison-rate (FLEETSTREAM_POISON_RATE) must be a fraction in [0, 1], got {}",
            args.poison_rate
        )));
    }
    if args.trucks == 0 {
        bail!(ConfigError(
            "--trucks (FLEETSTREAM_TRUCKS) must be at least 1".into()
        ));
    }
    let keys = args
        .key_strategy
        .as_deref()
        .map(|s| {
            s.parse::<KeyStrategy>()
                .map_err(|e| ConfigError(format!("--key-strategy (FLEETSTREAM_KEY_STRATEGY): {e}")))
        })
        .transpose()?;
    let partitioner = args
        .partitioner
        .parse::<Partitioner>()
        .map_err(|e| ConfigError(format!("--partitioner (FLEETSTREAM_PARTITIONER): {e}")))?;
    Ok((keys, partitioner))
}

/// Runs the demo and prints its summary.
pub async fn run(args: DemoArgs) -> anyhow::Result<DemoSummary> {
    let started = Instant::now();
    let (key_override, partitioner) = validate(&args)?;
    let topology = load_topology(&args.topology)?;
    let state_dir = std::env::temp_dir().join(format!("fleetstream-demo-{}", std::process::id()));
    let table = match &args.routes {
        Some(p) => crate::load_routes(p, &state_dir)?,
        None => RoutingTable::from_toml_str(DEMO_ROUTES, &state_dir)
            .context("in the built-in routing file")?,
    };

    // One exporter per component, so a trace shows the three services a record crosses.
    let trace_ratio = crate::sample_ratio(args.sampling.trace_sample_ratio)?;
    let (ptracer, wtracer, dtracer) = match crate::tracer(&args.otlp, "fleetstream-producer")? {
        Some(p) => (
            Some(p),
            crate::tracer(&args.otlp, "fleetstream-worker")?,
            crate::tracer(&args.otlp, "fleetstream-dispatcher")?,
        ),
        None => (None, None, None),
    };
    let cluster = connect(&args.cluster)?;
    crate::announce_tracer(ptracer.as_ref(), Some(trace_ratio));
    let admin = Admin::new(&cluster)?;
    let applied = admin
        .apply(&topology)
        .await
        .context("applying the topology")?;
    println!(
        "topology {:?}: {} topics ({} created, {} drift)",
        topology.name(),
        topology.topics().len(),
        applied.created.len(),
        applied.drift.len()
    );
    for d in &applied.drift {
        println!(
            "  drift: {} {} is {}, wanted {}",
            d.topic, d.setting, d.actual, d.wanted
        );
    }

    let dispatcher = Arc::new(
        Dispatcher::new(table, Arc::new(MemoryStore::new(Duration::from_secs(30))))?
            .with_tracer(dtracer.clone()),
    );
    let transport: Arc<dyn Transport> = Arc::new(InProcess(dispatcher.clone()));
    let conn = cluster.connection().clone();
    let mut producer_settings = ProducerSettings::new(conn.clone());
    producer_settings.partitioner = partitioner;

    // Workers: N per consumer group (the hybrid topology has a separate high-priority group).
    let wmetrics = Arc::new(WorkerMetrics::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = Vec::new();
    let mut group_sizes = BTreeMap::new();
    let mut group_stats = Vec::new();
    // Per group: how many of its workers must own a partition before producing.
    let mut owners_needed = Vec::new();
    for (group, topics) in topology.groups() {
        let partitions: u64 = topics
            .iter()
            .filter_map(|t| topology.topic(t))
            .map(|t| u64::from(t.partitions))
            .sum();
        owners_needed.push((
            group_stats.len(),
            args.workers,
            partitions.min(args.workers as u64) as usize,
        ));
        for i in 0..args.workers {
            let cfg = WorkerConfig::new(format!("demo-{group}-{i}"));
            let w = Worker::new(
                cfg,
                &ConsumerSettings::new(conn.clone(), group.clone()),
                &producer_settings,
                &topology,
                &topics,
                transport.clone(),
                wmetrics.clone(),
            )?
            .with_tracer(wtracer.clone());
            group_stats.push(w.group_stats());
            workers.push(tokio::spawn(w.run(stop_rx.clone())));
        }
        println!(
            "group {group}: {} workers on {}",
            args.workers,
            topics.join(", ")
        );
        group_sizes.insert(group, args.workers);
    }

    // Wait for the groups to assign every source partition, and every worker to own some, so
    // latency measures the pipeline rather than the first join (the mock cluster delays it
    // ~3 s). Every source partition owned is not enough: a worker that joins after the others
    // were assigned triggers a second rebalance mid-run, whose redeliveries showed as a 2.8 s
    // end-to-end p99 and ~270 suppressed duplicates on the real broker.
    let source_partitions: u64 = topology
        .source_topics()
        .map(|t| u64::from(t.partitions))
        .sum();
    let join_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let per_worker: Vec<u64> = group_stats
            .iter()
            .map(|g| {
                g.assigned
                    .load(Ordering::Relaxed)
                    .saturating_sub(g.revoked.load(Ordering::Relaxed))
            })
            .collect();
        let owned: u64 = per_worker.iter().sum();
        let groups_complete = owners_needed.iter().all(|&(first, n, needed)| {
            per_worker[first..first + n]
                .iter()
                .filter(|&&p| p > 0)
                .count()
                >= needed
        });
        if owned >= source_partitions && groups_complete {
            println!("workers own all {source_partitions} source partitions");
            break;
        }
        if Instant::now() > join_deadline {
            println!("workers own {owned} of {source_partitions} source partitions after 30 s; producing anyway");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Producer on a thread of its own (it paces with sleeps and blocks on a full queue).
    let run_id: u64 = rand::random();
    let ledger = Arc::new(LedgerObserver(Mutex::new(IdLedger::new(run_id))));
    let pmetrics = Arc::new(ProducerMetrics::with_observer(Some(
        ledger.clone() as Arc<dyn AckObserver>
    )));
    let keys = match key_override {
        Some(s) => {
            let k = topology.keys();
            let sub = k
                .subkeys
                .iter()
                .filter_map(|(c, n)| c.parse().ok().map(|c| (c, *n)))
                .collect();
            KeyResolver::new(s, k.default_subkeys, sub)
        }
        None => topology.key_resolver().clone(),
    };
    let spec = RunSpec {
        topology: topology.clone(),
        keys,
        settings: producer_settings.clone(),
        generator: GeneratorConfig {
            trucks: args.trucks,
            seed: args.seed,
            poison_rate: args.poison_rate,
            ..GeneratorConfig::default()
        },
        rate: SharedRate::new(args.rate),
        // 200 ms of credit: a sender descheduled briefly (2 cores, brokers and workers in the
        // same process) catches up instead of forfeiting sends.
        burst: ((args.rate / 5.0) as u32).max(1),
        duration: Some(args.duration),
        count: None,
        run_id,
        options: RunOptions {
            trace_ratio,
            tracer: ptracer.clone(),
            ..Default::default()
        },
    };
    println!(
        "producing for {} at {} msg/s (run {run_id:016x}); Ctrl-C stops early",
        humantime::format_duration(args.duration),
        if args.rate > 0.0 {
            format!("{}", args.rate)
        } else {
            "unthrottled".into()
        }
    );
    let stop_producer = Arc::new(AtomicBool::new(false));
    let producer = {
        let (pm, stop) = (pmetrics.clone(), stop_producer.clone());
        tokio::task::spawn_blocking(move || fleetstream_producer::run(&spec, pm, &stop))
    };

    let progress = Progress {
        started: Instant::now(),
        quiet: args.quiet,
        tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        last_line: Default::default(),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(producer);
    let report: ProducerReport = loop {
        tokio::select! {
            r = &mut producer => break r.context("producer thread")??,
            _ = tick.tick() => progress.line(&pmetrics, &wmetrics),
            _ = tokio::signal::ctrl_c() => {
                eprintln!("\ninterrupted: stopping the producer, then draining");
                stop_producer.store(true, Ordering::Relaxed);
            }
        }
    };

    // Drain: wait until workers have settled as many records as were acked.
    let acked = report.acked;
    let drain_deadline = Instant::now() + args.drain_timeout;
    let drained = loop {
        let settled = wmetrics.dispatched.load(Ordering::Relaxed)
            + wmetrics.dead_lettered.load(Ordering::Relaxed);
        if settled >= acked {
            break true;
        }
        if Instant::now() > drain_deadline {
            break false;
        }
        tokio::select! {
            _ = tick.tick() => progress.line(&pmetrics, &wmetrics),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    };
    progress.end();
    let _ = stop_tx.send(true);
    for w in workers {
        w.await.context("worker task")??;
    }
    crate::shutdown_tracers(&[ptracer.clone(), wtracer.clone(), dtracer]).await;

    // The account, id by id: sinks hold the dispatched ids, dead-letter topics the others.
    let mut dead_letter_ids = Vec::new();
    for dlq in topology
        .topics()
        .iter()
        .filter(|t| t.role == TopicRole::DeadLetter)
    {
        let conn = conn.clone();
        let name = dlq.name.clone();
        // The reader rides through a broker down or restarting (librdkafka's routine errors);
        // 60 s leaves room for its reconnect backoff (up to 10 s) after a broker comes back.
        let records = tokio::task::spawn_blocking(move || {
            read_topic_to_end(&conn, &name, Duration::from_secs(60))
        })
        .await
        .context("dead-letter reader")?
        .with_context(|| {
            format!(
                "reading dead-letter topic {} back for the account (without it, no `lost` figure)",
                dlq.name
            )
        })?;
        dead_letter_ids.extend(
            records
                .iter()
                .filter_map(|r| r.header(headers::MESSAGE_ID).and_then(MessageId::parse)),
        );
    }
    let mut extra_effects = 0u64;
    {
        let mut l = ledger.0.lock().unwrap_or_else(|p| p.into_inner());
        for (name, _) in dispatcher.routing().targets() {
            let Some(sink) = dispatcher.memory_target(name) else {
                continue;
            };
            for id in sink.ids() {
                extra_effects += u64::from(sink.effects(&id).saturating_sub(1));
                if let Some(mid) = MessageId::parse(id.as_bytes()) {
                    l.dispatched(mid);
                }
            }
        }
        for mid in dead_letter_ids {
            l.dead_lettered(mid);
        }
    }
    let ledger_report: LedgerReport = ledger.0.lock().unwrap_or_else(|p| p.into_inner()).report();
    let w = wmetrics.snapshot();
    let summary = DemoSummary {
        cluster: cluster.banner(),
        topology: topology.name().to_string(),
        produced: report.sent,
        acked: report.acked,
        producer_failed: report.failed,
        poison_injected: report.poison_injected,
        producer_rejected: report.rejected,
        consumed: w.consumed,
        dispatched: ledger_report.dispatched,
        duplicates_suppressed: w.duplicates,
        dead_lettered: ledger_report.dead_lettered,
        lost: ledger_report.lost,
        lost_sample: ledger_report.lost_sample.clone(),
        extra_effects,
        rate_target: args.rate,
        // Events per second: with --poison-rate the producer's own rejects (written to a
        // dead-letter topic) are events the token bucket paced too.
        rate_achieved: (report.sent + report.rejected) as f64 / report.producing_secs.max(1e-9),
        producing_secs: report.producing_secs,
        e2e_latency_ms: w.e2e_latency_ms,
        ack_latency_ms: report.ack_latency_ms,
        ack_latency_intended_ms: report.ack_latency_intended_ms,
        per_partition: report.per_partition.clone(),
        dead_letter_reasons: w.dead_letter_reasons.clone(),
        workers: group_sizes,
        drained,
        elapsed_secs: started.elapsed().as_secs_f64(),
    };
    print_summary(&summary);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing --json {}", path.display()))?;
        println!("summary written to {}", path.display());
    }
    let _ = std::fs::remove_dir_all(&state_dir);
    if summary.lost > 0 {
        bail!(
            "{} acked messages were neither dispatched nor dead-lettered (e.g. {:?})",
            summary.lost,
            summary.lost_sample
        );
    }
    Ok(summary)
}

struct Progress {
    started: Instant,
    quiet: bool,
    tty: bool,
    last_line: std::sync::atomic::AtomicU64,
}

impl Progress {
    fn line(&self, p: &ProducerMetrics, w: &WorkerMetrics) {
        if self.quiet {
            return;
        }
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        // On a terminal the line redraws every second; in a log, one line every 5 s.
        if !self.tty {
            let slot = secs as u64 / 5;
            if slot == 0 || self.last_line.swap(slot, Ordering::Relaxed) == slot {
                return;
            }
        }
        let sent = p.sent.load(Ordering::Relaxed);
        let e2e = w.snapshot().e2e_latency_ms;
        eprint!(
            "{}[{:>4.0}s] produced {:>9} ({:>7.0}/s) acked {:>9} | consumed {:>9} dispatched {:>9} dup {:>6} dlq {:>6} | e2e p99 {:>6.1} ms   ",
            if self.tty { "\r" } else { "" },
            secs,
            sent,
            sent as f64 / secs,
            p.acked.load(Ordering::Relaxed),
            w.consumed.load(Ordering::Relaxed),
            w.dispatched.load(Ordering::Relaxed),
            w.duplicates.load(Ordering::Relaxed),
            w.dead_lettered.load(Ordering::Relaxed),
            e2e.p99,
        );
        if !self.tty {
            eprintln!();
        }
        let _ = std::io::stderr().flush();
    }

    fn end(&self) {
        if !self.quiet && self.tty {
            eprintln!();
        }
    }
}

fn print_summary(s: &DemoSummary) {
    println!();
    println!("{:<24} {:>12}", "produced", s.produced);
    println!("{:<24} {:>12}", "acked", s.acked);
    println!("{:<24} {:>12}", "consumed", s.consumed);
    println!("{:<24} {:>12}", "dispatched", s.dispatched);
    println!(
        "{:<24} {:>12}",
        "duplicates suppressed", s.duplicates_suppressed
    );
    println!("{:<24} {:>12}", "dead-lettered", s.dead_lettered);
    if s.poison_injected > 0 {
        println!(
            "{:<24} {:>12} ({} rejected by the producer)",
            "poison injected", s.poison_injected, s.producer_rejected
        );
    }
    println!("{:<24} {:>12}", "lost (id ledger)", s.lost);
    println!(
        "{:<24} {:>12.1} msg/s (target {})",
        "rate achieved", s.rate_achieved, s.rate_target
    );
    println!(
        "{:<24} p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        "end-to-end latency", s.e2e_latency_ms.p50, s.e2e_latency_ms.p99, s.e2e_latency_ms.max
    );
    println!(
        "{:<24} p50 {:.1} ms, p99 {:.1} ms (from intended send: p99 {:.1} ms)",
        "producer ack latency",
        s.ack_latency_ms.p50,
        s.ack_latency_ms.p99,
        s.ack_latency_intended_ms.p99
    );
    for (topic, parts) in &s.per_partition {
        let counts: Vec<String> = parts.iter().map(|(p, n)| format!("{p}:{n}")).collect();
        println!("{:<24} {}", topic, counts.join(" "));
    }
    if s.lost == 0 && s.drained {
        println!("every acked message id is accounted for: nothing lost");
    }
}
