//! `fleetstream produce`: publish telemetry (synthetic, a file or stdin), routed by code, keyed,
//! paced and measured, with a Prometheus endpoint, a live progress line and a JSON summary.
//!
//! Flags are validated into library types before any I/O and errors name the flag, its
//! environment variable or the config-file key (exit code 2). Precedence: flags >
//! `FLEETSTREAM_*` environment > `--config` file > defaults (see [`crate::config_file`]).

use crate::cli::{parse_duration, ClusterArgs, TopologyArgs};
use crate::{config_file, connect, load_topology, ConfigError};
use anyhow::{bail, Context};
use clap::Args;
use fleetstream_core::{KeyResolver, KeyStrategy, Partitioner, Topology};
use fleetstream_kafka::config::{Compression, SettingsError};
use fleetstream_kafka::{Admin, ProducerSettings};
use fleetstream_obs::prometheus::{self, Exposition, Response};
use fleetstream_producer::{
    AckedIdsWriter, GeneratorConfig, ProducerError, ProducerMetrics, ProducerReport, Ramp,
    RejectSink, RunOptions, RunSpec, SharedRate, SourceSpec,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `fleetstream produce` flags.
///
/// Examples:
///   fleetstream produce --embedded --rate 13000 --duration 20s --json r.json
///   fleetstream produce --bootstrap 127.0.0.1:9092 --ramp 1000..13000/60s --duration 90s --threads 4
///   fleetstream produce --embedded --rate 0 --count 2000000 --json m.json
///   fleetstream produce --bootstrap b:9092 --source file:events.jsonl --reject-file rejects.jsonl
#[derive(Debug, Clone, Args)]
pub struct ProduceArgs {
    /// Cluster selection.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Start an embedded cluster (librdkafka's mock cluster, in this process) instead of
    /// connecting to --bootstrap. One of the two is required.
    #[arg(long, env = "FLEETSTREAM_EMBEDDED")]
    pub embedded: bool,
    /// Topology selection.
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Target rate in messages per second, shared by all threads; 0 = as fast as possible.
    /// Change it while running with `POST /rate?value=N` on --metrics-addr.
    #[arg(long, env = "FLEETSTREAM_RATE", default_value_t = 1_000.0)]
    pub rate: f64,
    /// Also cap payload bytes per second (e.g. 2600000, 2.6M, 512KiB); unset = no byte cap.
    #[arg(long, env = "FLEETSTREAM_RATE_BYTES")]
    pub rate_bytes: Option<String>,
    /// Token bucket size in messages: how many may go at once after an idle spell.
    /// Default: 10 ms worth of --rate (at least 1).
    #[arg(long, env = "FLEETSTREAM_BURST")]
    pub burst: Option<u32>,
    /// Rate profile instead of a fixed --rate: linear `1000..13000/60s` (then holds 13000), or
    /// steps `1000,5000,10000@20s` (each held 20 s, then the last). A /rate call ends it.
    #[arg(long, env = "FLEETSTREAM_RAMP")]
    pub ramp: Option<String>,
    /// Sender threads sharing one librdkafka producer (it is thread-safe). The design notes
    /// try 1 -> 5 -> 10; each thread owns a shard of the trucks, so per-truck order holds.
    #[arg(long, env = "FLEETSTREAM_THREADS", default_value_t = 1)]
    pub threads: u32,
    /// Stop after this long (e.g. 20s, 5m). With neither --duration nor --count, a synthetic
    /// source is refused; a file or stdin runs to its end.
    #[arg(long, env = "FLEETSTREAM_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after exactly this many events (sent plus rejected).
    #[arg(long, env = "FLEETSTREAM_COUNT")]
    pub count: Option<u64>,
    /// Events: `synthetic` (Pareto 80/20 codes, ~200 B JSON), `file:PATH` or `stdin` (JSON
    /// lines; code and truck are extracted without a full parse).
    #[arg(long, env = "FLEETSTREAM_SOURCE", default_value = "synthetic")]
    pub source: String,
    /// Write events without a valid code here (JSON lines with reason and raw bytes in
    /// base64). Unset: to the dead-letter topic of the topology's default topic.
    #[arg(long, env = "FLEETSTREAM_REJECT_FILE")]
    pub reject_file: Option<PathBuf>,
    /// Key strategy: composite (code + hash(truck) mod K), code, truck or none.
    /// Default: the topology's [keys].
    #[arg(long, env = "FLEETSTREAM_KEY_STRATEGY")]
    pub key_strategy: Option<String>,
    /// Composite sub-keys per code, e.g. `300=12,301=6,default=2` (overrides the topology's).
    #[arg(long, env = "FLEETSTREAM_SUBKEYS")]
    pub subkeys: Option<String>,
    /// Partitioner: murmur2_random (as Java clients and Kafka's tools place keys) or
    /// consistent_random (librdkafka's and .NET's default). Mixed producers must agree.
    #[arg(
        long,
        env = "FLEETSTREAM_PARTITIONER",
        default_value = "murmur2_random"
    )]
    pub partitioner: String,
    /// Batch compression: none, lz4, gzip, snappy.
    #[arg(long, env = "FLEETSTREAM_COMPRESSION", default_value = "lz4")]
    pub compression: String,
    /// Time a batch waits to fill (librdkafka linger.ms).
    #[arg(long, env = "FLEETSTREAM_LINGER", default_value = "5ms", value_parser = parse_duration)]
    pub linger: Duration,
    /// Maximum batch size in bytes (librdkafka batch.size). Larger batches mean fewer requests
    /// for the brokers; at 13,000 msg/s batches stay far smaller than this (docs/BENCHMARKS.md).
    #[arg(long, env = "FLEETSTREAM_BATCH_BYTES", default_value_t = 1_048_576)]
    pub batch_bytes: usize,
    /// librdkafka queue bound in messages: beyond it the senders wait (never drop).
    #[arg(
        long,
        env = "FLEETSTREAM_QUEUE_MAX_MESSAGES",
        default_value_t = 100_000
    )]
    pub queue_max_messages: usize,
    /// librdkafka queue bound in KiB: with --queue-max-messages, bounds producer memory.
    #[arg(long, env = "FLEETSTREAM_QUEUE_MAX_KBYTES", default_value_t = 262_144)]
    pub queue_max_kbytes: usize,
    /// Time a record may take from send to ack, retries included; then it fails.
    #[arg(long, env = "FLEETSTREAM_DELIVERY_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub delivery_timeout: Duration,
    /// Trucks in the synthetic fleet.
    #[arg(long, env = "FLEETSTREAM_TRUCKS", default_value_t = 5_000)]
    pub trucks: u32,
    /// Generator seed (same seed and threads, same events).
    #[arg(long, env = "FLEETSTREAM_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Fraction of synthetic events made malformed on purpose (0..1), cycling six kinds.
    #[arg(long, env = "FLEETSTREAM_POISON_RATE", default_value_t = 0.0)]
    pub poison_rate: f64,
    /// Write the JSON summary here.
    #[arg(long, env = "FLEETSTREAM_JSON")]
    pub json: Option<PathBuf>,
    /// Record every acked message id in this file as the run goes (a few bytes a second:
    /// ranges of sequences), for `fleetstream audit` to check that each was dispatched or
    /// dead-lettered. A kill loses at most the last 200 ms of acks from the file.
    #[arg(long, env = "FLEETSTREAM_ACKED_IDS")]
    pub acked_ids: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics and `POST /rate?value=N`
    /// (e.g. 127.0.0.1:9464).
    #[arg(long, env = "FLEETSTREAM_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// OpenTelemetry export: a `send` span per sampled message, from send to ack.
    #[command(flatten)]
    pub otlp: crate::cli::OtlpArgs,
    /// Which messages are traced.
    #[command(flatten)]
    pub sampling: crate::cli::SamplingArgs,
    /// TOML file with the same keys as the flags (`rate = 13000`, `key-strategy = "code"`).
    /// Flags and environment win over it; unknown keys are refused.
    #[arg(long, env = "FLEETSTREAM_CONFIG")]
    pub config: Option<PathBuf>,
    /// No live progress line.
    #[arg(long, short, env = "FLEETSTREAM_QUIET")]
    pub quiet: bool,
}

/// The JSON summary (`--json`): the producer report plus where it ran.
#[derive(Debug, Clone, Serialize)]
pub struct ProduceSummary {
    /// Which cluster.
    pub cluster: String,
    /// Topology name.
    pub topology: String,
    /// Partitioner in force.
    pub partitioner: String,
    /// Key strategy in force.
    pub key_strategy: String,
    /// The run.
    #[serde(flatten)]
    pub report: ProducerReport,
}

fn bad(flag: &str, env: &str, msg: impl std::fmt::Display) -> anyhow::Error {
    ConfigError(format!("--{flag} ({env}): {msg}")).into()
}

/// Parses `2600000`, `2.6M`, `512k`, `512KiB`, `1MiB` as bytes.
fn parse_bytes(s: &str) -> Option<f64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match unit
        .trim()
        .trim_end_matches("/s")
        .to_ascii_lowercase()
        .as_str()
    {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(n * mult).filter(|v| v.is_finite() && *v > 0.0)
}

fn parse_subkeys(s: &str) -> Option<(Option<u32>, BTreeMap<u32, u32>)> {
    let mut default = None;
    let mut map = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=')?;
        let v: u32 = v.trim().parse().ok().filter(|v| *v >= 1)?;
        match k.trim() {
            "default" => default = Some(v),
            code => {
                map.insert(code.parse().ok()?, v);
            }
        }
    }
    Some((default, map))
}

/// Everything validated, before any I/O.
struct Plan {
    spec_without_cluster: Box<dyn FnOnce(ProducerSettings, Topology) -> RunSpec + Send>,
    topology: Topology,
    partitioner: Partitioner,
    compression: Compression,
    metrics_addr: Option<std::net::SocketAddr>,
    key_label: String,
}

fn validate(args: &ProduceArgs) -> anyhow::Result<Plan> {
    if args.embedded && args.cluster.bootstrap.is_some() {
        return Err(bad(
            "embedded",
            "FLEETSTREAM_EMBEDDED",
            "conflicts with --bootstrap (FLEETSTREAM_BOOTSTRAP); choose one",
        ));
    }
    if !args.embedded && args.cluster.bootstrap.is_none() {
        return Err(ConfigError(
            "fleetstream produce needs a cluster: --bootstrap HOST:PORT (FLEETSTREAM_BOOTSTRAP) or --embedded (FLEETSTREAM_EMBEDDED=true)".into(),
        )
        .into());
    }
    if !args.rate.is_finite() || args.rate < 0.0 {
        return Err(bad(
            "rate",
            "FLEETSTREAM_RATE",
            format!("must be >= 0 msg/s (0 = unthrottled), got {}", args.rate),
        ));
    }
    let rate_bytes = args
        .rate_bytes
        .as_deref()
        .map(|s| {
            parse_bytes(s).ok_or_else(|| {
                bad(
                    "rate-bytes",
                    "FLEETSTREAM_RATE_BYTES",
                    format!("{s:?} is not a byte rate like 2600000, 2.6M or 512KiB"),
                )
            })
        })
        .transpose()?;
    if args.burst == Some(0) {
        return Err(bad("burst", "FLEETSTREAM_BURST", "must be at least 1"));
    }
    let ramp = args
        .ramp
        .as_deref()
        .map(|s| {
            s.parse::<Ramp>()
                .map_err(|e| bad("ramp", "FLEETSTREAM_RAMP", e))
        })
        .transpose()?;
    if !(1..=256).contains(&args.threads) {
        return Err(bad(
            "threads",
            "FLEETSTREAM_THREADS",
            format!("must be 1..=256, got {}", args.threads),
        ));
    }
    if args.duration.is_some_and(|d| d.is_zero()) {
        return Err(bad(
            "duration",
            "FLEETSTREAM_DURATION",
            "must be more than zero",
        ));
    }
    if args.count == Some(0) {
        return Err(bad("count", "FLEETSTREAM_COUNT", "must be at least 1"));
    }
    let source: SourceSpec = args
        .source
        .parse()
        .map_err(|e| bad("source", "FLEETSTREAM_SOURCE", e))?;
    if source == SourceSpec::Synthetic && args.duration.is_none() && args.count.is_none() {
        return Err(ConfigError("a synthetic run needs --duration (FLEETSTREAM_DURATION) or --count (FLEETSTREAM_COUNT)".into()).into());
    }
    if let SourceSpec::File(p) = &source {
        if !p.is_file() {
            return Err(bad(
                "source",
                "FLEETSTREAM_SOURCE",
                format!("{} is not a readable file", p.display()),
            ));
        }
    }
    let strategy = args
        .key_strategy
        .as_deref()
        .map(|s| {
            s.parse::<KeyStrategy>()
                .map_err(|e| bad("key-strategy", "FLEETSTREAM_KEY_STRATEGY", e))
        })
        .transpose()?;
    let subkeys = args
        .subkeys
        .as_deref()
        .map(|s| {
            parse_subkeys(s).ok_or_else(|| {
                bad(
                    "subkeys",
                    "FLEETSTREAM_SUBKEYS",
                    format!("{s:?} is not like 300=12,301=6,default=2 (counts >= 1)"),
                )
            })
        })
        .transpose()?;
    let partitioner: Partitioner = args
        .partitioner
        .parse()
        .map_err(|e| bad("partitioner", "FLEETSTREAM_PARTITIONER", e))?;
    let compression: Compression = args
        .compression
        .parse()
        .map_err(|e| bad("compression", "FLEETSTREAM_COMPRESSION", e))?;
    let metrics_addr = args
        .metrics_addr
        .as_deref()
        .map(|a| {
            use std::net::ToSocketAddrs;
            a.to_socket_addrs()
                .ok()
                .and_then(|mut i| i.next())
                .ok_or_else(|| {
                    bad(
                        "metrics-addr",
                        "FLEETSTREAM_METRICS_ADDR",
                        format!("{a:?} is not an address like 127.0.0.1:9464"),
                    )
                })
        })
        .transpose()?;
    let generator = GeneratorConfig {
        trucks: args.trucks,
        seed: args.seed,
        poison_rate: args.poison_rate,
        ..GeneratorConfig::default()
    };
    if let Err(e) = generator.resolved_weights() {
        let flag = match e.key {
            "trucks" => "trucks",
            "poison_rate" => "poison-rate",
            other => other,
        };
        return Err(bad(
            flag,
            &format!(
                "FLEETSTREAM_{}",
                flag.replace('-', "_").to_ascii_uppercase()
            ),
            e.reason,
        ));
    }
    if args.trucks < args.threads {
        return Err(bad(
            "trucks",
            "FLEETSTREAM_TRUCKS",
            format!(
                "{} trucks cannot be shared by {} threads",
                args.trucks, args.threads
            ),
        ));
    }
    let topology = load_topology(&args.topology)?;
    let k = topology.keys();
    let strategy = strategy.unwrap_or(k.strategy);
    let (default_subkeys, mut map): (u32, BTreeMap<u32, u32>) = (
        k.default_subkeys,
        k.subkeys
            .iter()
            .filter_map(|(c, n)| c.parse().ok().map(|c| (c, *n)))
            .collect(),
    );
    let default_subkeys = match &subkeys {
        Some((d, m)) => {
            map.extend(m.iter().map(|(a, b)| (*a, *b)));
            d.unwrap_or(default_subkeys)
        }
        None => default_subkeys,
    };
    let keys = KeyResolver::new(strategy, default_subkeys, map);
    let key_label = format!("{strategy:?}").to_ascii_lowercase();
    let burst = args.burst.unwrap_or(((args.rate / 100.0) as u32).max(1));
    let options = RunOptions {
        source,
        threads: args.threads,
        ramp,
        rate_bytes: rate_bytes.map(SharedRate::new),
        burst_bytes: None,
        rejects: match &args.reject_file {
            Some(p) => RejectSink::File(p.clone()),
            None => RejectSink::DeadLetter,
        },
        trace_ratio: crate::sample_ratio(args.sampling.trace_sample_ratio)?,
        tracer: None,
    };
    if options.rejects == RejectSink::DeadLetter
        && topology
            .dead_letter_for(&topology.routing().default_topic)
            .is_none()
    {
        return Err(ConfigError(format!(
            "--reject-file (FLEETSTREAM_REJECT_FILE) is needed: the topology's default topic {:?} has no dead_letter topic for rejected events",
            topology.routing().default_topic
        ))
        .into());
    }
    let (rate, duration, count) = (args.rate, args.duration, args.count);
    let run_id: u64 = rand::random();
    Ok(Plan {
        spec_without_cluster: Box::new(move |settings, topology| RunSpec {
            topology,
            keys,
            settings,
            generator,
            rate: SharedRate::new(rate),
            burst,
            duration,
            count,
            run_id,
            options,
        }),
        topology,
        partitioner,
        compression,
        metrics_addr,
        key_label,
    })
}

/// Messages per second over the last few seconds, for the progress line and the exporter.
#[derive(Debug, Default)]
struct RecentRate {
    bits: AtomicU64,
}

impl RecentRate {
    fn set(&self, v: f64) {
        self.bits.store(v.to_bits(), Ordering::Relaxed)
    }
    fn get(&self) -> f64 {
        f64::from_bits(self.bits.load(Ordering::Relaxed))
    }
}

fn exporter(
    addr: std::net::SocketAddr,
    metrics: Arc<ProducerMetrics>,
    rate: SharedRate,
    recent: Arc<RecentRate>,
) -> anyhow::Result<prometheus::Server> {
    prometheus::serve(addr, move |req| {
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/metrics") => {
                let mut e = Exposition::new();
                metrics.write_prometheus(&mut e);
                use fleetstream_obs::producer as n;
                e.gauge(
                    n::RATE_TARGET,
                    "Target rate now, msg/s (0 = unthrottled).",
                    &[],
                    rate.get(),
                );
                e.gauge(
                    n::SEND_RATE,
                    "Messages sent per second over the last few seconds.",
                    &[],
                    recent.get(),
                );
                Response::metrics(e.finish())
            }
            ("POST", "/rate") => match req.param("value").and_then(|v| v.parse::<f64>().ok()) {
                Some(v) if v.is_finite() && v >= 0.0 => {
                    rate.set(v);
                    tracing::info!(rate = v, "rate changed through /rate");
                    Response::text(200, format!("rate {v} msg/s\n"))
                }
                _ => Response::text(
                    400,
                    "POST /rate?value=N with N >= 0 msg/s (0 = unthrottled)\n",
                ),
            },
            (_, "/rate") | (_, "/metrics") => {
                Response::text(405, "GET /metrics, POST /rate?value=N\n")
            }
            _ => Response::not_found(),
        }
    })
    .with_context(|| format!("serving metrics on {addr}"))
}

/// Progress output: redrawn every second on a terminal, one line every 5 s otherwise.
struct Progress {
    started: Instant,
    tty: bool,
    quiet: bool,
    last_slot: u64,
    last: (Instant, u64),
}

impl Progress {
    fn tick(&mut self, m: &ProducerMetrics, rate: &SharedRate, recent: &RecentRate) {
        let now = Instant::now();
        let sent = m.sent.load(Ordering::Relaxed);
        let dt = now.duration_since(self.last.0).as_secs_f64();
        if dt >= 0.5 {
            recent.set((sent - self.last.1.min(sent)) as f64 / dt);
            self.last = (now, sent);
        }
        if self.quiet {
            return;
        }
        let secs = now.duration_since(self.started).as_secs_f64();
        if !self.tty {
            let slot = secs as u64 / 5;
            if slot == 0 || slot == self.last_slot {
                return;
            }
            self.last_slot = slot;
        }
        let lat = m.latency();
        let line = format!(
            "[{secs:>5.0}s] sent {sent:>10} ({:>8.0}/s, target {:>8.0}) acked {:>10} failed {} rejected {} queue {:>6} | ack p99 {:.1} ms (intended {:.1} ms)",
            recent.get(),
            rate.get(),
            m.acked.load(Ordering::Relaxed),
            m.failed.load(Ordering::Relaxed),
            m.rejected.load(Ordering::Relaxed),
            m.queue_depth.load(Ordering::Relaxed),
            lat.from_send.p99,
            lat.from_intended.p99,
        );
        if self.tty {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
    }
}

/// Runs `fleetstream produce`.
pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let args = config_file::layered("produce", &argv, "config", args)?;
    run_with(args).await.map(|_| ())
}

/// Runs `fleetstream produce` with already-layered arguments; returns the summary.
pub async fn run_with(mut args: ProduceArgs) -> anyhow::Result<ProduceSummary> {
    let plan = validate(&args)?;
    let tracer = crate::tracer(&args.otlp, "fleetstream-producer")?;
    if args.embedded {
        args.cluster.bootstrap = None;
    }
    let cluster = connect(&args.cluster)?;
    let mut settings = ProducerSettings::new(cluster.connection().clone());
    settings.partitioner = plan.partitioner;
    settings.compression = plan.compression;
    settings.linger = args.linger;
    settings.batch_bytes = args.batch_bytes;
    settings.queue_max_messages = args.queue_max_messages;
    settings.queue_max_kbytes = args.queue_max_kbytes;
    settings.delivery_timeout = args.delivery_timeout;
    // Statistics once a second feed the retries metric; the cost is one JSON parse a second.
    settings.statistics_interval = Duration::from_secs(1);
    // The library's checks, before the topology is applied; an out-of-range field is named
    // by its flag (`batch_bytes` is --batch-bytes, FLEETSTREAM_BATCH_BYTES).
    settings.validate().map_err(|e| match &e {
        SettingsError::OutOfRange { key, reason } => {
            let flag = key.replace('_', "-");
            bad(
                &flag,
                &format!("FLEETSTREAM_{}", key.to_ascii_uppercase()),
                reason,
            )
        }
        other => ConfigError(other.to_string()).into(),
    })?;
    let applied = Admin::new(&cluster)?
        .apply(&plan.topology)
        .await
        .context("applying the topology (create missing topics; nothing is altered)")?;
    println!(
        "topology {:?}: {} topics ({} created, {} drift)",
        plan.topology.name(),
        plan.topology.topics().len(),
        applied.created.len(),
        applied.drift.len()
    );
    for d in &applied.drift {
        println!(
            "  drift: {} {} is {}, wanted {}",
            d.topic, d.setting, d.actual, d.wanted
        );
    }
    let mut spec = (plan.spec_without_cluster)(settings, plan.topology.clone());
    spec.options.tracer = tracer.clone();
    crate::announce_tracer(tracer.as_ref(), Some(spec.options.trace_ratio));

    let acked_ids = match &args.acked_ids {
        Some(path) => Some(Arc::new(
            AckedIdsWriter::create(path, spec.run_id)
                .with_context(|| format!("creating --acked-ids {}", path.display()))?,
        )),
        None => None,
    };
    let metrics = Arc::new(ProducerMetrics::with_observer(
        acked_ids
            .clone()
            .map(|w| w as Arc<dyn fleetstream_producer::AckObserver>),
    ));
    let recent = Arc::new(RecentRate::default());
    let _server = match plan.metrics_addr {
        Some(addr) => {
            let s = exporter(addr, metrics.clone(), spec.rate.clone(), recent.clone())?;
            println!(
                "metrics on http://{}/metrics (POST /rate?value=N changes the rate)",
                s.addr()
            );
            Some(s)
        }
        None => None,
    };
    println!(
        "producing run {:016x}: {} thread(s), rate {}, {}; Ctrl-C stops early",
        spec.run_id,
        spec.options.threads,
        match (&spec.options.ramp, spec.rate.get()) {
            (Some(_), _) => format!("ramp {}", args.ramp.as_deref().unwrap_or("")),
            (None, r) if r > 0.0 => format!("{r} msg/s"),
            _ => "unthrottled".into(),
        },
        match (spec.duration, spec.count) {
            (Some(d), Some(c)) => format!("for {} or {c} events", humantime::format_duration(d)),
            (Some(d), None) => format!("for {}", humantime::format_duration(d)),
            (None, Some(c)) => format!("{c} events"),
            (None, None) => "to the end of the input".into(),
        },
    );

    let stop = Arc::new(AtomicBool::new(false));
    let rate = spec.rate.clone();
    let producer = {
        let (m, stop) = (metrics.clone(), stop.clone());
        tokio::task::spawn_blocking(move || fleetstream_producer::run(&spec, m, &stop))
    };
    let mut progress = Progress {
        started: Instant::now(),
        tty: std::io::stderr().is_terminal(),
        quiet: args.quiet,
        last_slot: 0,
        last: (Instant::now(), 0),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(producer);
    let (report, ended) = loop {
        tokio::select! {
            r = &mut producer => break match r.context("producer thread")? {
                Ok(report) => (report, None),
                // The run ended early (a fatal client error, the source failing): its summary
                // is still printed and written, then the error ends the command.
                Err(ProducerError::Ended { error, report }) => (*report, Some(error)),
                Err(e) => return Err(e.into()),
            },
            _ = tick.tick() => progress.tick(&metrics, &rate, &recent),
            _ = tokio::signal::ctrl_c() => {
                eprintln!("\ninterrupted: stopping, then waiting for outstanding acks");
                stop.store(true, Ordering::Relaxed);
            }
        }
    };
    if progress.tty && !progress.quiet {
        eprintln!();
    }
    if let Some(w) = &acked_ids {
        let n = w
            .finish()
            .with_context(|| format!("writing --acked-ids {}", w.path().display()))?;
        println!("{n} acked ids recorded in {}", w.path().display());
    }
    let summary = ProduceSummary {
        cluster: cluster.banner(),
        topology: plan.topology.name().to_string(),
        partitioner: plan.partitioner.librdkafka_name().to_string(),
        key_strategy: plan.key_label,
        report,
    };
    print_summary(&summary.report);
    if let Some(path) = &args.json {
        let text = serde_json::to_vec_pretty(&summary)?;
        std::fs::write(path, text).with_context(|| format!("writing --json {}", path.display()))?;
    }
    crate::shutdown_tracers(&[tracer]).await;
    if let Some(error) = ended {
        return Err(anyhow::Error::new(*error).context("the run ended early"));
    }
    let r = &summary.report;
    if r.failed > 0 || r.rejects_failed > 0 || r.acked != r.sent {
        bail!(
            "{} deliveries failed, {} rejected events could not be dead-lettered, {} of {} sent were acked",
            r.failed,
            r.rejects_failed,
            r.acked,
            r.sent
        );
    }
    Ok(summary)
}

fn print_summary(r: &ProducerReport) {
    println!(
        "sent {} acked {} failed {} rejected {} (written {}, to {}) poison {}",
        r.sent, r.acked, r.failed, r.rejected, r.rejects_written, r.rejects_to, r.poison_injected
    );
    println!(
        "rate {:.0} msg/s ({:.2} MB/s) over {:.2} s, target {}; {:.0} acked/s over {:.2} s with the final flush; queue full {} times ({:.0} ms waited), retries {}",
        r.rate_achieved, r.mb_per_sec, r.producing_secs, r.rate_target, r.acked_per_sec, r.total_secs, r.queue_full_events, r.queue_full_wait_ms, r.retries
    );
    let (s, i) = (&r.ack_latency_ms, &r.ack_latency_intended_ms);
    println!(
        "ack latency ms from send: p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}; from intended: p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
        s.p50, s.p99, s.p999, s.max, i.p50, i.p99, i.p999, i.max
    );
    for (topic, parts) in &r.per_partition {
        let total: u64 = parts.values().sum();
        println!("  {topic}: {total} acked over {} partitions", parts.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_rates_parse() {
        assert_eq!(parse_bytes("2600000"), Some(2_600_000.0));
        assert_eq!(parse_bytes("2.6M"), Some(2_600_000.0));
        assert_eq!(parse_bytes("512KiB"), Some(524_288.0));
        assert_eq!(parse_bytes("1mib/s"), Some(1_048_576.0));
        assert_eq!(parse_bytes("0"), None);
        assert_eq!(parse_bytes("fast"), None);
    }

    #[test]
    fn subkeys_parse() {
        let (d, m) = parse_subkeys("300=12, 301=6,default=2").unwrap();
        assert_eq!(d, Some(2));
        assert_eq!(m.get(&300), Some(&12));
        assert!(parse_subkeys("300=0").is_none());
        assert!(parse_subkeys("x=1").is_none());
    }
}
