//! `fleetstream worker`: one member of a consumer group, dispatching batches to the dispatcher
//! in-process, over HTTP to `fleetstream dispatch serve`, or to AWS Lambda.

use crate::cli::{parse_duration, ClusterArgs, TopologyArgs};
use crate::{connect, load_topology, ConfigError};
use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use fleetstream_consumer::{
    HttpInvoke, InProcess, KafkaTarget, LambdaInvoke, Transport, Worker, WorkerConfig,
    WorkerMetrics,
};
use fleetstream_core::Topology;
use fleetstream_dispatcher::idempotency::{DiskStore, DiskStoreConfig};
use fleetstream_dispatcher::{Dispatcher, RoutingTable};
use fleetstream_kafka::{group_lag, Admin, ClusterHandle, ProducerSettings};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How batches reach the dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportKind {
    /// A dispatcher library in this process (routes from --routes, store under --state-dir).
    InProcess,
    /// HTTP POST of the Lambda Kafka event to `fleetstream dispatch serve` (--dispatch-url).
    Http,
    /// AWS Lambda Invoke through the AWS SDK (--dispatch-function; --lambda-endpoint for a
    /// runtime emulator or `fleetstream dispatch serve`).
    Lambda,
}

/// `fleetstream worker` flags.
///
/// Start several workers (processes or machines) with the same flags to scale: Kafka spreads
/// the group's partitions over them. SIGTERM or Ctrl-C stops fetching, settles what was read,
/// commits and leaves the group.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Cluster selection.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Topology selection.
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// OpenTelemetry export: a `process` span per sampled record (and, in process, a
    /// `dispatch` span).
    #[command(flatten)]
    pub otlp: crate::cli::OtlpArgs,
    /// Consumer group to join; its topics come from the topology. Default: the topology's
    /// [consumer].group (the hybrid topology's high-priority topic has its own group).
    #[arg(long, env = "FLEETSTREAM_GROUP")]
    pub group: Option<String>,
    /// Worker id in dead-letter headers and logs. Default: host-pid.
    #[arg(long, env = "FLEETSTREAM_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Transport to the dispatcher.
    #[arg(
        long,
        env = "FLEETSTREAM_TRANSPORT",
        value_enum,
        default_value = "in-process"
    )]
    pub transport: TransportKind,
    /// Routing file for the in-process dispatcher. Default: every code to a JSON-lines file
    /// under --state-dir.
    #[arg(long, env = "FLEETSTREAM_ROUTES")]
    pub routes: Option<PathBuf>,
    /// State directory of the in-process dispatcher (idempotency store, JSON-lines targets).
    #[arg(
        long,
        env = "FLEETSTREAM_STATE_DIR",
        default_value = "fleetstream-state"
    )]
    pub state_dir: PathBuf,
    /// Base URL of `fleetstream dispatch serve`, e.g. http://127.0.0.1:9100.
    #[arg(long, env = "FLEETSTREAM_DISPATCH_URL")]
    pub dispatch_url: Option<String>,
    /// Function name in the Invoke path (the Lambda function for --transport lambda).
    #[arg(
        long,
        env = "FLEETSTREAM_DISPATCH_FUNCTION",
        default_value = "fleetstream-dispatcher"
    )]
    pub dispatch_function: String,
    /// Endpoint override for the Lambda transport (an http:// runtime emulator or
    /// `fleetstream dispatch serve`).
    #[arg(long, env = "FLEETSTREAM_LAMBDA_ENDPOINT")]
    pub lambda_endpoint: Option<String>,
    /// Bearer token for `dispatch serve --token`.
    #[arg(long, env = "FLEETSTREAM_DISPATCH_TOKEN", hide_env_values = true)]
    pub dispatch_token: Option<String>,
    /// How long to wait for the answer to one dispatch call (--transport http) before giving
    /// up and retrying the batch; more than 0. The dispatcher finishes a dispatch it began
    /// either way, so the retry finds duplicates, not a second effect.
    #[arg(long, env = "FLEETSTREAM_DISPATCH_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub dispatch_timeout: Duration,
    /// Most records per batch (Lambda allows up to 10,000).
    #[arg(long, env = "FLEETSTREAM_BATCH_MAX_RECORDS", default_value_t = 500)]
    pub batch_max_records: usize,
    /// Most payload bytes per batch (6 MB: Lambda's synchronous payload limit).
    #[arg(long, env = "FLEETSTREAM_BATCH_MAX_BYTES", default_value_t = 6_000_000)]
    pub batch_max_bytes: usize,
    /// Longest a batch waits to fill.
    #[arg(long, env = "FLEETSTREAM_BATCH_WINDOW", default_value = "100ms", value_parser = parse_duration)]
    pub batch_window: Duration,
    /// Dispatch attempts per record before it is dead-lettered.
    #[arg(long, env = "FLEETSTREAM_MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: u32,
    /// Batches queued behind the one in flight before partitions are paused.
    #[arg(long, env = "FLEETSTREAM_MAX_BATCHES_QUEUED", default_value_t = 2)]
    pub max_batches_queued: usize,
    /// Dead-letter records older than this instead of retrying them.
    #[arg(long, env = "FLEETSTREAM_MAX_RECORD_AGE", default_value = "1h", value_parser = parse_duration)]
    pub max_record_age: Duration,
    /// Key-ordered concurrency: dispatch each batch in N lanes at once, each key always in the
    /// same lane (per-key order kept; offsets stored only when all lanes finish). 1 = in
    /// partition order, one dispatch at a time.
    #[arg(long, env = "FLEETSTREAM_KEY_LANES", default_value_t = 1)]
    pub key_lanes: usize,
    /// Do not split failing batches (bisect-on-error is on by default).
    #[arg(long, env = "FLEETSTREAM_NO_BISECT")]
    pub no_bisect: bool,
    /// Stop by itself after this long (default: run until SIGTERM/Ctrl-C).
    #[arg(long, env = "FLEETSTREAM_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Write a JSON summary (counters, latencies, lag per partition) here on exit.
    #[arg(long, env = "FLEETSTREAM_JSON")]
    pub json: Option<PathBuf>,
    /// Serve Prometheus metrics (counters, latency histograms, lag per partition) at
    /// http://ADDR/metrics, e.g. 127.0.0.1:9464.
    #[arg(long, env = "FLEETSTREAM_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// No progress lines.
    #[arg(long, short)]
    pub quiet: bool,
    /// librdkafka prefetch bounds: most of a draining worker's memory.
    #[command(flatten)]
    pub prefetch: crate::prefetch::PrefetchArgs,
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!("{host}-{}", std::process::id())
}

/// Fails at start-up when the cluster cannot be reached (with the client's reason: a refused
/// login, an untrusted certificate) or a source topic is missing, instead of joining the group
/// and waiting for partitions that never come. An embedded cluster (no `--bootstrap`) starts
/// empty, so the topology is applied to it instead.
async fn check_source_topics(
    cluster: &ClusterHandle,
    topology: &Topology,
    group: &str,
    topics: &[String],
) -> anyhow::Result<()> {
    let admin = Admin::new(cluster)?;
    if cluster.is_embedded() {
        admin
            .apply(topology)
            .await
            .context("creating the topology's topics on the embedded cluster")?;
        return Ok(());
    }
    let found = admin
        .existing_topics(topics)
        .context("checking the source topics on the cluster")?;
    let missing: Vec<&String> = topics.iter().filter(|t| !found.contains(t)).collect();
    if !missing.is_empty() {
        bail!(
            "group {group} reads {missing:?}, which the cluster does not have (or this principal \
             may not describe); `fleetstream topics apply` with the same --topology creates them"
        );
    }
    Ok(())
}

/// Runs `fleetstream worker`.
pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let topology = load_topology(&args.topology)?;
    let groups = topology.groups();
    let group = match &args.group {
        Some(g) => g.clone(),
        None => groups
            .keys()
            .next()
            .cloned()
            .context("the topology has no source topics")?,
    };
    let Some(topics) = groups.get(&group).cloned() else {
        bail!(ConfigError(format!(
            "--group (FLEETSTREAM_GROUP) {group:?} reads no topic of topology {:?}; its groups are {:?}",
            topology.name(),
            groups.keys().collect::<Vec<_>>()
        )));
    };
    let mut config = WorkerConfig::new(args.worker_id.clone().unwrap_or_else(default_worker_id));
    config.batch_max_records = args.batch_max_records;
    config.batch_max_bytes = args.batch_max_bytes;
    config.batch_window = args.batch_window;
    config.max_attempts = args.max_attempts;
    config.max_batches_queued = args.max_batches_queued;
    config.max_record_age = args.max_record_age;
    config.bisect_on_error = !args.no_bisect;
    config.key_lanes = args.key_lanes;
    config.dispatch_timeout = args.dispatch_timeout;
    // Each setting is the flag of the same name: name the flag and its variable.
    config.validate().map_err(|e| {
        ConfigError(format!(
            "--{} (FLEETSTREAM_{}): {}",
            e.key.replace('_', "-"),
            e.key.to_ascii_uppercase(),
            e.reason
        ))
    })?;

    // The routing file is configuration: refused (exit 2) before the cluster is contacted.
    let routes = match (&args.routes, args.transport) {
        (Some(p), TransportKind::InProcess) => Some(crate::load_routes(p, &args.state_dir)?),
        _ => None,
    };
    let tracer = crate::tracer(&args.otlp, "fleetstream-worker")?;
    let cluster = connect(&args.cluster)?;
    crate::announce_tracer(tracer.as_ref(), None);
    check_source_topics(&cluster, &topology, &group, &topics).await?;
    let conn = cluster.connection().clone();
    let transport: Arc<dyn Transport> = match args.transport {
        TransportKind::InProcess => {
            std::fs::create_dir_all(&args.state_dir)
                .with_context(|| format!("creating --state-dir {}", args.state_dir.display()))?;
            let table =
                routes.unwrap_or_else(|| RoutingTable::default_for_state_dir(&args.state_dir));
            let store = DiskStore::open(
                args.state_dir.join("idempotency"),
                DiskStoreConfig::default(),
            )
            .context("opening the idempotency store")?;
            // `kafka` targets produce to this worker's cluster.
            let kafka = KafkaTarget::for_routes(&table, &ProducerSettings::new(conn.clone()))
                .context("creating the producers of the kafka targets")?;
            Arc::new(InProcess(Arc::new(
                Dispatcher::new_with_targets(table, Arc::new(store), kafka)?
                    .with_tracer(tracer.clone()),
            )))
        }
        TransportKind::Http => {
            let Some(url) = &args.dispatch_url else {
                bail!(ConfigError(
                    "--transport http needs --dispatch-url (FLEETSTREAM_DISPATCH_URL)".into()
                ));
            };
            Arc::new(
                HttpInvoke::new(
                    url,
                    &args.dispatch_function,
                    args.dispatch_token.clone(),
                    config.dispatch_timeout,
                )
                .map_err(|e| ConfigError(format!("--dispatch-url: {e}")))?,
            )
        }
        TransportKind::Lambda => Arc::new(
            LambdaInvoke::new(&args.dispatch_function, args.lambda_endpoint.as_deref())
                .await
                .map_err(|e| ConfigError(format!("--transport lambda: {e}")))?,
        ),
    };

    let metrics = Arc::new(WorkerMetrics::default());
    let worker_id = config.worker_id.clone();
    let worker = Worker::new(
        config,
        &args.prefetch.settings(conn.clone(), group.clone()),
        &ProducerSettings::new(conn.clone()),
        &topology,
        &topics,
        transport,
        metrics.clone(),
    )?
    .with_tracer(tracer.clone());
    // Installed before the worker's first line: a SIGTERM sent as soon as it is out settles
    // and leaves the group, never the default action.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    println!("worker {worker_id}: group {group} on {}", topics.join(", "));
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(worker.run(stop_rx));

    // Lag per partition, the SLO: refreshed every 5 s for the exporter and progress lines.
    let lag: crate::worker_metrics::SharedLag = Default::default();
    let _exporter = match args.metrics_addr {
        Some(addr) => {
            let server = crate::worker_metrics::start(addr, metrics.clone(), lag.clone())
                .with_context(|| format!("--metrics-addr {addr}"))?;
            println!("metrics: http://{}/metrics", server.addr());
            Some(server)
        }
        None => None,
    };
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let until = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => { eprintln!("interrupted: settling and leaving the group"); break; }
            _ = term.recv() => { eprintln!("SIGTERM: settling and leaving the group"); break; }
            _ = &mut until => break,
            _ = tick.tick() => {
                let (conn, group, topics, shared) = (conn.clone(), group.clone(), topics.clone(), lag.clone());
                tokio::task::spawn_blocking(move || {
                    if let Ok(l) = group_lag(&conn, &group, &topics, Duration::from_secs(5)) {
                        *shared.lock().unwrap_or_else(|p| p.into_inner()) = l;
                    }
                });
                if args.quiet { continue; }
                let s = metrics.snapshot();
                let total_lag: i64 = lag.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|l| l.lag).sum();
                eprintln!(
                    "[{:>5.0}s] consumed {} dispatched {} dup {} dlq {} retries {} paused {} lag {} | e2e p99 {:.1} ms",
                    started.elapsed().as_secs_f64(), s.consumed, s.dispatched, s.duplicates, s.dead_lettered, s.retries,
                    metrics.paused_partitions.load(Ordering::Relaxed), total_lag, s.e2e_latency_ms.p99
                );
            },
        }
    }
    let _ = stop_tx.send(true);
    task.await.context("worker task")??;
    crate::shutdown_tracers(&[tracer]).await;

    let snapshot = metrics.snapshot();
    let lag = {
        let (conn, group, topics) = (conn.clone(), group.clone(), topics.clone());
        tokio::task::spawn_blocking(move || {
            group_lag(&conn, &group, &topics, Duration::from_secs(10))
        })
        .await?
    };
    let lag = match lag {
        Ok(l) => serde_json::to_value(l)?,
        Err(e) => serde_json::Value::String(format!("unavailable: {e}")),
    };
    let summary = serde_json::json!({
        "worker_id": worker_id,
        "group": group,
        "topics": topics,
        "elapsed_secs": started.elapsed().as_secs_f64(),
        "metrics": snapshot,
        "lag": lag,
    });
    println!(
        "worker {worker_id} stopped: consumed {} dispatched {} duplicates {} dead-lettered {}",
        snapshot.consumed, snapshot.dispatched, snapshot.duplicates, snapshot.dead_lettered
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing --json {}", path.display()))?;
    }
    Ok(())
}
