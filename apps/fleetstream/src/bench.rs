//! `fleetstream bench worker`: worker throughput with an in-process dispatcher and a no-op
//! sink, and worker memory while the dispatcher is stalled. Benchmarks, not tests: they print
//! numbers for docs/BENCHMARKS.md and assert only that nothing was lost.

use crate::cli::{parse_duration, ClusterArgs};
use crate::{connect, ConfigError};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use fleetstream_consumer::{
    DispatchFuture, InProcess, Transport, Worker, WorkerConfig, WorkerMetrics,
};
use fleetstream_core::Topology;
use fleetstream_dispatcher::idempotency::{
    DiskStore, DiskStoreConfig, FileStore, FileStoreConfig, IdempotencyStore, MemoryStore,
};
use fleetstream_dispatcher::{BatchRecord, Dispatcher, RoutingTable};
use fleetstream_kafka::{Admin, ConsumerSettings, ProducerSettings};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// `bench` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum BenchCommand {
    /// Worker throughput (records/s) draining a pre-produced backlog through the in-process
    /// dispatcher into a no-op (log) sink; or, with --stall, worker memory while the
    /// dispatcher does not answer and the producer keeps going.
    Worker(BenchWorkerArgs),
}

/// `bench worker` flags.
#[derive(Debug, Clone, Args)]
pub struct BenchWorkerArgs {
    /// Cluster selection.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Records to pre-produce and drain (throughput mode).
    #[arg(long, default_value_t = 500_000)]
    pub records: u64,
    /// Workers in the group.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Idempotency store of the dispatcher: disk (the default deployable's), file (the former
    /// default, every key in memory) or memory.
    #[arg(long, default_value = "disk")]
    pub store: String,
    /// Stall mode: the dispatcher does not answer for this long while a producer process
    /// sends at --rate; RSS is sampled every second.
    #[arg(long, value_parser = parse_duration)]
    pub stall: Option<Duration>,
    /// Producer rate during the stall, msg/s.
    #[arg(long, default_value_t = 13_000.0)]
    pub rate: f64,
    /// Write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// A transport that holds every batch until released.
struct Stalled {
    inner: InProcess,
    release: Arc<Notify>,
    released: std::sync::atomic::AtomicBool,
}

impl Transport for Stalled {
    fn dispatch(&self, records: Vec<BatchRecord>) -> DispatchFuture<'_> {
        Box::pin(async move {
            while !self.released.load(Ordering::SeqCst) {
                let notified = self.release.notified();
                if self.released.load(Ordering::SeqCst) {
                    break;
                }
                notified.await;
            }
            self.inner.dispatch(records).await
        })
    }
}

/// Resident set size now and its high-water mark, MiB (from /proc/self/status).
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[derive(Debug, Serialize)]
struct BenchResult {
    mode: &'static str,
    cluster: String,
    records: u64,
    workers: usize,
    store: String,
    settled: u64,
    seconds_from_first_record: f64,
    records_per_sec: f64,
    batches: u64,
    mean_batch_records: f64,
    dispatch_p99_ms: f64,
    e2e_p99_ms: f64,
    rss_max_mib: f64,
    rss_during_stall_mib: Vec<f64>,
    pauses: u64,
    produced_during_stall: u64,
}

/// Runs a `bench` subcommand.
pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Worker(args) => worker(args).await,
    }
}

async fn worker(args: BenchWorkerArgs) -> anyhow::Result<()> {
    if args.workers == 0 {
        bail!(ConfigError("--workers must be at least 1".into()));
    }
    let prefix = format!("bench-{:08x}", rand::random::<u32>());
    let text = crate::DOMAIN_TOPOLOGY
        .replace("\"mt-c", &format!("\"{prefix}-mt-c"))
        .replace("\"fleetstream-workers\"", &format!("\"{prefix}-workers\""));
    let topology = Topology::from_toml_str(&text)?;
    let cluster = connect(&args.cluster)?;
    Admin::new(&cluster)?.apply(&topology).await?;
    let conn = cluster.connection().clone();
    let state = tempfile_dir(&prefix)?;
    let store: Arc<dyn IdempotencyStore> = match args.store.as_str() {
        "disk" => Arc::new(DiskStore::open(
            state.join("idempotency"),
            DiskStoreConfig::default(),
        )?),
        "file" => Arc::new(FileStore::open(
            state.join("idempotency"),
            FileStoreConfig::default(),
        )?),
        "memory" => Arc::new(MemoryStore::default()),
        other => bail!(ConfigError(format!(
            "--store {other:?}: expected disk, file or memory"
        ))),
    };
    // A log target with logging at warn is a no-op sink: the cost measured is the worker's
    // and the dispatcher's (validation, dedup store, routing), not a downstream's.
    let table = RoutingTable::from_toml_str(
        "default = [\"noop\"]\n[targets.noop]\nkind = \"log\"\n",
        &state,
    )?;
    let dispatcher = Arc::new(Dispatcher::new(table, store)?);
    let (group, topics) = topology
        .groups()
        .into_iter()
        .next()
        .context("topology has a group")?;
    let topo_file = state.join("topology.toml");
    std::fs::write(&topo_file, &text)?;
    let producer_cmd = {
        let (bootstrap, topo_file, state) =
            (conn.bootstrap.clone(), topo_file.clone(), state.clone());
        move |extra: Vec<String>| run_producer(&bootstrap, &topo_file, &state, &extra)
    };

    let metrics = Arc::new(WorkerMetrics::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let stalled = args.stall.map(|_| {
        Arc::new(Stalled {
            inner: InProcess(dispatcher.clone()),
            release: Arc::new(Notify::new()),
            released: false.into(),
        })
    });
    let produced;
    let mut rss_samples = Vec::new();
    let mut handles = Vec::new();
    let start_workers = |handles: &mut Vec<_>| -> anyhow::Result<()> {
        for i in 0..args.workers {
            let transport: Arc<dyn Transport> = match &stalled {
                Some(s) => s.clone(),
                None => Arc::new(InProcess(dispatcher.clone())),
            };
            let w = Worker::new(
                WorkerConfig::new(format!("bench-{i}")),
                &ConsumerSettings::new(conn.clone(), group.clone()),
                &ProducerSettings::new(conn.clone()),
                &topology,
                &topics,
                transport,
                metrics.clone(),
            )?;
            handles.push(tokio::spawn(w.run(stop_rx.clone())));
        }
        Ok(())
    };

    let first_record_at;
    if let (Some(stall), Some(s)) = (args.stall, &stalled) {
        start_workers(&mut handles)?;
        println!(
            "stall: dispatcher held for {}, producer at {} msg/s",
            humantime::format_duration(stall),
            args.rate
        );
        let extra = vec![
            "--rate".to_string(),
            args.rate.to_string(),
            "--duration".to_string(),
            format!("{}s", stall.as_secs()),
        ];
        let producer = tokio::task::spawn_blocking(move || producer_cmd(extra));
        tokio::pin!(producer);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let report = loop {
            tokio::select! {
                r = &mut producer => break r??,
                _ = tick.tick() => {
                    let (rss, _) = rss_mib();
                    rss_samples.push((rss * 10.0).round() / 10.0);
                    eprintln!("rss {rss:.1} MiB, paused partitions {}", metrics.paused_partitions.load(Ordering::Relaxed));
                }
            }
        };
        produced = report["acked"].as_u64().unwrap_or(0);
        s.released.store(true, Ordering::SeqCst);
        s.release.notify_waiters();
        first_record_at = Instant::now();
    } else {
        println!("producing {} records", args.records);
        let extra = vec![
            "--rate".to_string(),
            "0".to_string(),
            "--count".to_string(),
            args.records.to_string(),
        ];
        let report = tokio::task::spawn_blocking(move || producer_cmd(extra)).await??;
        produced = report["acked"].as_u64().unwrap_or(0);
        start_workers(&mut handles)?;
        // Time from the first record read: the group join is not the worker's throughput.
        while metrics.consumed.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        first_record_at = Instant::now();
    }
    let settled = || {
        metrics.dispatched.load(Ordering::Relaxed)
            + metrics.duplicates.load(Ordering::Relaxed)
            + metrics.dead_lettered.load(Ordering::Relaxed)
    };
    // Stop waiting once nothing moves for 30 s: on the embedded cluster a backlog beyond the
    // mock's ~5 MiB per partition is silently dropped and would never arrive.
    let (mut last, mut last_change) = (0, Instant::now());
    while settled() < produced {
        if settled() != last {
            (last, last_change) = (settled(), Instant::now());
        } else if last_change.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = first_record_at.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    for h in handles {
        h.await??;
    }
    let s = metrics.snapshot();
    let result = BenchResult {
        mode: if args.stall.is_some() {
            "stall"
        } else {
            "throughput"
        },
        cluster: cluster.banner(),
        records: produced,
        workers: args.workers,
        store: args.store.clone(),
        settled: settled(),
        seconds_from_first_record: secs,
        records_per_sec: settled() as f64 / secs,
        batches: s.batches,
        mean_batch_records: s.mean_batch_records,
        dispatch_p99_ms: s.dispatch_latency_ms.p99,
        e2e_p99_ms: s.e2e_latency_ms.p99,
        rss_max_mib: rss_mib().1,
        rss_during_stall_mib: rss_samples,
        pauses: s.pauses,
        produced_during_stall: if args.stall.is_some() { produced } else { 0 },
    };
    println!("{}", serde_json::to_string_pretty(&result)?);
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_vec_pretty(&result)?)?;
    }
    let _ = std::fs::remove_dir_all(&state);
    if result.settled < produced {
        let hint = if cluster.is_embedded() {
            " (the embedded mock cluster keeps only ~5 MiB per partition: use fewer --records or a real broker)"
        } else {
            ""
        };
        bail!(
            "only {} of {} records settled, no progress for 30 s{hint}",
            result.settled,
            produced
        );
    }
    Ok(())
}

fn tempfile_dir(prefix: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(prefix);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Runs `fleetstream produce` as a separate process (so its memory is not the worker's) and
/// returns its JSON summary.
fn run_producer(
    bootstrap: &str,
    topology: &std::path::Path,
    state: &std::path::Path,
    extra: &[String],
) -> anyhow::Result<serde_json::Value> {
    let json = state.join(format!("produce-{}.json", rand::random::<u32>()));
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(["produce", "--bootstrap", bootstrap, "--quiet"])
        .arg("--topology")
        .arg(topology)
        .arg("--json")
        .arg(&json)
        .args(extra)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running fleetstream produce")?;
    if !status.success() {
        bail!("fleetstream produce failed: {status}");
    }
    Ok(serde_json::from_slice(&std::fs::read(&json)?)?)
}
