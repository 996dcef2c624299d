//! Command-line interface. Every flag also reads a `FLEETSTREAM_*` environment variable;
//! flags win over the environment.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// fleetstream: truck telemetry on Kafka, from producer to dispatcher.
///
/// Without --bootstrap, commands that need a cluster start an embedded one (librdkafka's mock
/// cluster, in this process) and say so on the first line of output. With --bootstrap they use
/// a real cluster: a laptop broker from `scripts/kafka start`, or Amazon MSK.
#[derive(Debug, Parser)]
#[command(name = "fleetstream", version, propagate_version = true)]
pub struct Cli {
    /// Write logs as JSON lines on stderr (filter with FLEETSTREAM_LOG, e.g. `info`).
    #[arg(long, global = true, env = "FLEETSTREAM_LOG_JSON")]
    pub log_json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses a command line (the process's, in `main`) with
    /// [`negative_numbers_as_values`].
    pub fn try_parse_with_negative_values<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = negative_numbers_as_values(<Self as clap::CommandFactory>::command())
            .try_get_matches_from(args)?;
        <Self as clap::FromArgMatches>::from_arg_matches(&matches)
    }
}

/// Lets every flag that takes a value take a negative number as that value (`--rate -1`,
/// `--count -5`), in `cmd` and its subcommands: the flag's own parser or check then refuses it,
/// naming the flag and what it accepts (exit 2). Otherwise clap reads `-1` as an unknown flag
/// and never says which flag was given a bad value.
pub fn negative_numbers_as_values(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| {
        if a.get_action().takes_values() {
            a.allow_negative_numbers(true)
        } else {
            a
        }
    })
    .mut_subcommands(negative_numbers_as_values)
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole pipeline: producer -> Kafka -> 3 workers -> dispatcher, then account for
    /// every message id.
    ///
    /// Example: fleetstream demo --duration 15s --rate 13000 --json s.json
    Demo(DemoArgs),
    /// Create and inspect the topology's topics.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Publish telemetry: synthetic or JSON lines, routed by code, keyed, paced, measured.
    Produce(crate::produce::ProduceArgs),
    /// Run a consumer-group worker that batches records to the dispatcher.
    Worker(crate::worker::WorkerArgs),
    /// The dispatcher: route records by code to targets, idempotently.
    #[command(subcommand)]
    Dispatch(crate::dispatch::DispatchCommand),
    /// Benchmarks that print numbers for docs/BENCHMARKS.md.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
    /// Prove by message id that every acked id was dispatched or dead-lettered, once.
    ///
    /// Reads the producers' acked-ids files (`produce --acked-ids`), the dispatchers' jsonl
    /// sinks and the dead-letter topics; reports lost, unseen, duplicated effects and per-truck
    /// order violations (Jepsen's names). Exit 1 on any lost, unseen or duplicated id.
    ///
    /// Example: fleetstream audit --bootstrap 127.0.0.1:9092 --acked-ids runs/ --effects archive=dispatch/archive.jsonl --wait 60s --json audit.json
    Audit(crate::audit::AuditArgs),
    /// The architecture lab: key strategies, hot partitions, partition counts. No cluster.
    #[command(subcommand)]
    Lab(crate::lab::LabCommand),
}

/// `topics` subcommands.
#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create missing topics and report drift (wrong partitions, replication, settings).
    /// Never deletes or alters anything.
    Apply(TopicsArgs),
    /// Print the topology's topics as the cluster has them.
    Describe(TopicsArgs),
}

/// Which cluster.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Bootstrap servers of a real cluster (host:port,...). Unset: start an embedded cluster.
    #[arg(long, env = "FLEETSTREAM_BOOTSTRAP")]
    pub bootstrap: Option<String>,
    /// Brokers of the embedded cluster.
    #[arg(long, env = "FLEETSTREAM_EMBEDDED_BROKERS", default_value_t = 3)]
    pub embedded_brokers: usize,
    /// Security protocol: plaintext, ssl, sasl_plaintext, sasl_ssl (MSK SCRAM on port 9096 and
    /// MSK IAM on 9098: sasl_ssl; MSK mTLS on 9094: ssl).
    #[arg(
        long,
        env = "FLEETSTREAM_SECURITY_PROTOCOL",
        default_value = "plaintext"
    )]
    pub security_protocol: String,
    /// SASL mechanism: SCRAM-SHA-512 (MSK SCRAM), SCRAM-SHA-256, PLAIN, or AWS_MSK_IAM (MSK IAM:
    /// SASL/OAUTHBEARER with tokens signed from AWS's default credentials chain, the
    /// environment, a profile, the ECS task role or the EC2 instance role; needs --aws-region).
    #[arg(long, env = "FLEETSTREAM_SASL_MECHANISM")]
    pub sasl_mechanism: Option<String>,
    /// AWS region of the MSK cluster, for AWS_MSK_IAM. Unset: AWS_REGION, then
    /// AWS_DEFAULT_REGION.
    #[arg(long, env = "FLEETSTREAM_AWS_REGION")]
    pub aws_region: Option<String>,
    /// SASL user name.
    #[arg(long, env = "FLEETSTREAM_SASL_USERNAME")]
    pub sasl_username: Option<String>,
    /// SASL password (prefer the environment variable over the flag).
    #[arg(long, env = "FLEETSTREAM_SASL_PASSWORD", hide_env_values = true)]
    pub sasl_password: Option<String>,
    /// CA certificates (PEM file) that TLS trusts, for brokers whose certificates a private CA
    /// signed. Unset: the system store (enough for MSK, whose certificates chain to Amazon's
    /// public CAs).
    #[arg(long, env = "FLEETSTREAM_SSL_CA_LOCATION")]
    pub ssl_ca_location: Option<String>,
    /// Client certificate (PEM file) for mutual TLS, as MSK's mTLS listener (port 9094) asks;
    /// with --ssl-key-location and --security-protocol ssl.
    #[arg(long, env = "FLEETSTREAM_SSL_CERTIFICATE_LOCATION")]
    pub ssl_certificate_location: Option<String>,
    /// The client certificate's private key (PEM file).
    #[arg(long, env = "FLEETSTREAM_SSL_KEY_LOCATION")]
    pub ssl_key_location: Option<String>,
    /// Pass phrase of an encrypted private key (prefer the environment variable over the flag).
    #[arg(long, env = "FLEETSTREAM_SSL_KEY_PASSWORD", hide_env_values = true)]
    pub ssl_key_password: Option<String>,
}

/// Where OpenTelemetry spans go.
#[derive(Debug, Clone, Default, Args)]
pub struct OtlpArgs {
    /// Export OpenTelemetry spans of sampled records to this OTLP/HTTP collector, e.g.
    /// http://localhost:4318 (`/v1/traces` is appended). Unset: the standard
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT; none of them, no spans.
    /// The producer decides which records are sampled (--trace-sample-ratio) and the flag
    /// travels in each record's traceparent header.
    #[arg(long, env = "FLEETSTREAM_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// Which messages are traced: the producer's decision, which every later tier follows.
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Share of messages marked sampled in their traceparent header (0..1, default 1 in 1,000).
    /// Workers and dispatchers record spans for those only, so this one setting decides the
    /// volume of the whole pipeline's traces.
    #[arg(long, env = "FLEETSTREAM_TRACE_SAMPLE_RATIO", default_value_t = fleetstream_producer::DEFAULT_TRACE_SAMPLE_RATIO)]
    pub trace_sample_ratio: f64,
}

impl Default for SamplingArgs {
    fn default() -> Self {
        SamplingArgs {
            trace_sample_ratio: fleetstream_producer::DEFAULT_TRACE_SAMPLE_RATIO,
        }
    }
}

/// Which topology.
#[derive(Debug, Clone, Args)]
pub struct TopologyArgs {
    /// Topology: a TOML file, or `domain` / `hybrid` for the built-in copies of
    /// config/topology.toml and config/topology-hybrid.toml.
    #[arg(long, env = "FLEETSTREAM_TOPOLOGY", default_value = "domain")]
    pub topology: String,
}

/// `topics apply|describe`.
#[derive(Debug, Clone, Args)]
pub struct TopicsArgs {
    /// Cluster selection.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Topology selection.
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Cluster selection.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Topology selection.
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// How long the producer runs (e.g. 15s, 2m).
    #[arg(long, env = "FLEETSTREAM_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Producer rate in messages per second; 0 = as fast as possible.
    #[arg(long, env = "FLEETSTREAM_RATE", default_value_t = 13_000.0)]
    pub rate: f64,
    /// Workers per consumer group.
    #[arg(long, env = "FLEETSTREAM_WORKERS", default_value_t = 3)]
    pub workers: usize,
    /// Trucks in the synthetic fleet.
    #[arg(long, env = "FLEETSTREAM_TRUCKS", default_value_t = 5_000)]
    pub trucks: u32,
    /// Generator seed (same seed, same events).
    #[arg(long, env = "FLEETSTREAM_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Key strategy: code, truck, composite, none. Default: the topology's [keys].
    #[arg(long, env = "FLEETSTREAM_KEY_STRATEGY")]
    pub key_strategy: Option<String>,
    /// Partitioner: murmur2_random (Java-compatible) or consistent_random (librdkafka's default).
    #[arg(
        long,
        env = "FLEETSTREAM_PARTITIONER",
        default_value = "murmur2_random"
    )]
    pub partitioner: String,
    /// Fraction of events the generator makes malformed on purpose (bad JSON, missing or
    /// non-numeric code, invalid UTF-8, oversize, schema-invalid); every one must end up in a
    /// dead-letter topic.
    #[arg(long, env = "FLEETSTREAM_POISON_RATE", default_value_t = 0.0)]
    pub poison_rate: f64,
    /// Routing file of the in-process dispatcher. Default: built-in config/routes-demo.toml.
    #[arg(long, env = "FLEETSTREAM_ROUTES")]
    pub routes: Option<PathBuf>,
    /// Longest wait, after producing stops, for workers to account for every message.
    #[arg(long, env = "FLEETSTREAM_DRAIN_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Write the summary as JSON to this file.
    #[arg(long, env = "FLEETSTREAM_JSON")]
    pub json: Option<PathBuf>,
    /// OpenTelemetry export.
    #[command(flatten)]
    pub otlp: OtlpArgs,
    /// Which messages are traced.
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// No live progress line.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Parses `15s`, `2m`, `500ms`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 15s, 2m or 500ms: {e}"))
}
