//! `fleetstream lab keys|plan`: the architecture lab (crates/lab), no cluster needed.

use crate::cli::TopologyArgs;
use crate::{load_topology, ConfigError};
use anyhow::Context;
use clap::{Args, Subcommand};
use fleetstream_core::Partitioner;
use fleetstream_lab::{
    compare_keys, plan_partitions, KeyComparison, KeysInput, PartitionPlan, PlanInput,
};
use fleetstream_producer::GeneratorConfig;
use std::path::PathBuf;

/// Largest partition count the lab simulates for one topic (Kafka itself advises a few
/// thousand per broker; the simulation holds one counter per partition).
const MAX_PARTITIONS: u32 = 10_000;

/// `lab` subcommands.
#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Compare key strategies (none, code, truck, composite) on the topology: per partition
    /// share and msg/s, hot partitions, and how fast their lag grows when one consumer cannot
    /// keep up. Uses the producer's own generator, key resolver and partitioner.
    ///
    /// Example: fleetstream lab keys --rate 13000 --partition-capacity 1500
    Keys(LabArgs),
    /// Partitions per topic for a target rate with growth headroom, bounded by consumer and
    /// producer throughput per partition and by the skew of the configured key strategy; and
    /// whether the hottest key fits one consumer at all (no partition count splits one key).
    ///
    /// Example: fleetstream lab plan --rate 13000 --growth 2 --partition-capacity 1500
    Plan(PlanArgs),
}

/// Inputs shared by `lab keys` and `lab plan`.
#[derive(Debug, Clone, Args)]
pub struct LabArgs {
    /// Topology selection.
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Target rate, msg/s (today's traffic).
    #[arg(long, env = "FLEETSTREAM_RATE", default_value_t = 13_000.0)]
    pub rate: f64,
    /// Records/s one consumer keeps up with on one partition. Measure it: `fleetstream bench
    /// worker` gives records/s per worker; divide by the partitions it owned. The default is a
    /// deliberately modest downstream (a Lambda doing real work), not this machine's number.
    #[arg(
        long,
        env = "FLEETSTREAM_PARTITION_CAPACITY",
        default_value_t = 1_500.0
    )]
    pub partition_capacity: f64,
    /// Events simulated (the same events for every strategy).
    #[arg(long, env = "FLEETSTREAM_LAB_SAMPLES", default_value_t = 1_000_000)]
    pub samples: u64,
    /// Trucks in the synthetic population.
    #[arg(long, env = "FLEETSTREAM_TRUCKS", default_value_t = 5_000)]
    pub trucks: u32,
    /// Generator seed.
    #[arg(long, env = "FLEETSTREAM_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Partitioner: murmur2_random (Java client and Kafka's tools) or consistent_random
    /// (librdkafka's default).
    #[arg(
        long,
        env = "FLEETSTREAM_PARTITIONER",
        default_value = "murmur2_random"
    )]
    pub partitioner: String,
    /// What if: simulate these partition counts instead of the topology's, as TOPIC=N
    /// (repeat or comma-separate), e.g. --partitions mt-c400=28 to check a plan.
    #[arg(long, value_delimiter = ',')]
    pub partitions: Vec<String>,
    /// Also write the full result (every partition) as JSON here.
    #[arg(long, env = "FLEETSTREAM_JSON")]
    pub json: Option<PathBuf>,
}

/// `lab plan`.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// The simulation's inputs.
    #[command(flatten)]
    pub lab: LabArgs,
    /// Headroom: plan for this multiple of the target rate.
    #[arg(long, env = "FLEETSTREAM_GROWTH", default_value_t = 2.0)]
    pub growth: f64,
    /// msg/s one partition takes from producers. Kafka's usual planning figure is ~10 MB/s of
    /// writes per partition, 50,000 msg/s at 200 B; measure yours with scripts/bench-producer.
    #[arg(
        long,
        env = "FLEETSTREAM_PRODUCER_PARTITION_RATE",
        default_value_t = 50_000.0
    )]
    pub producer_partition_rate: f64,
    /// Largest partition count tried per topic. Each count tried is one simulation of
    /// --samples events; lower --samples for a faster search.
    #[arg(long, default_value_t = 64)]
    pub max_partitions: u32,
}

fn positive(name: &str, env: &str, v: f64) -> Result<f64, ConfigError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(ConfigError(format!(
            "--{name} ({env}) must be a positive number, got {v}"
        )))
    }
}

/// The validated inputs of a simulation.
struct Inputs {
    topology: fleetstream_core::Topology,
    generator: GeneratorConfig,
    partitioner: Partitioner,
    rate: f64,
    capacity: f64,
}

impl Inputs {
    fn keys(&self, samples: u64) -> KeysInput<'_> {
        KeysInput {
            topology: &self.topology,
            generator: self.generator.clone(),
            partitioner: self.partitioner,
            samples,
            rate: self.rate,
            partition_capacity: self.capacity,
        }
    }
}

fn inputs(args: &LabArgs) -> anyhow::Result<Inputs> {
    let mut topology = load_topology(&args.topology)?;
    for what_if in &args.partitions {
        let (topic, n) = what_if
            .split_once('=')
            .and_then(|(t, n)| Some((t, n.parse::<u32>().ok()?)))
            .filter(|&(_, n)| n <= MAX_PARTITIONS)
            .ok_or_else(|| {
                ConfigError(format!(
                    "--partitions: `{what_if}` is not TOPIC=N with N a whole number up to {MAX_PARTITIONS}"
                ))
            })?;
        topology = topology
            .with_partitions(topic, n)
            .map_err(|e| ConfigError(format!("--partitions: {e}")))?;
    }
    let rate = positive("rate", "FLEETSTREAM_RATE", args.rate)?;
    let capacity = positive(
        "partition-capacity",
        "FLEETSTREAM_PARTITION_CAPACITY",
        args.partition_capacity,
    )?;
    if args.samples == 0 {
        return Err(
            ConfigError("--samples (FLEETSTREAM_LAB_SAMPLES) must be at least 1".into()).into(),
        );
    }
    let partitioner: Partitioner = args.partitioner.parse().map_err(|e: String| {
        ConfigError(format!("--partitioner (FLEETSTREAM_PARTITIONER): {e}"))
    })?;
    let generator = GeneratorConfig {
        trucks: args.trucks,
        seed: args.seed,
        ..GeneratorConfig::default()
    };
    // Fail on a bad generator setting (e.g. --trucks 0) here, naming the flag.
    fleetstream_producer::Generator::new(&generator).map_err(|e| match e.key {
        "trucks" => ConfigError(format!("--trucks (FLEETSTREAM_TRUCKS): {}", e.reason)),
        _ => ConfigError(e.to_string()),
    })?;
    Ok(Inputs {
        topology,
        generator,
        partitioner,
        rate,
        capacity,
    })
}

fn write_json(path: &Option<PathBuf>, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(value)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("\nfull result written to {}", path.display());
    }
    Ok(())
}

/// Runs a `lab` subcommand.
pub fn run(cmd: LabCommand) -> anyhow::Result<()> {
    match cmd {
        LabCommand::Keys(args) => {
            let i = inputs(&args)?;
            let c = compare_keys(&i.keys(args.samples)).map_err(|e| ConfigError(e.to_string()))?;
            print!("{}", keys_table(&c));
            write_json(&args.json, &c)
        }
        LabCommand::Plan(args) => {
            let growth = positive("growth", "FLEETSTREAM_GROWTH", args.growth)?;
            let producer_rate = positive(
                "producer-partition-rate",
                "FLEETSTREAM_PRODUCER_PARTITION_RATE",
                args.producer_partition_rate,
            )?;
            if args.max_partitions == 0 || args.max_partitions > MAX_PARTITIONS {
                return Err(ConfigError(format!(
                    "--max-partitions must be between 1 and {MAX_PARTITIONS}, got {}",
                    args.max_partitions
                ))
                .into());
            }
            let i = inputs(&args.lab)?;
            eprintln!(
                "simulating {} events per partition count tried (up to {} per topic)...",
                args.lab.samples, args.max_partitions
            );
            let plan = plan_partitions(&PlanInput {
                keys: i.keys(args.lab.samples),
                growth,
                producer_partition_rate: producer_rate,
                max_partitions: args.max_partitions,
            })
            .map_err(|e| ConfigError(e.to_string()))?;
            print!("{}", plan_table(&plan));
            write_json(&args.lab.json, &plan)
        }
    }
}

fn topic_width<'a>(topics: impl Iterator<Item = &'a String>) -> usize {
    topics.map(|t| t.len()).max().unwrap_or(5).max(5)
}

/// The `lab keys` table.
pub fn keys_table(c: &KeyComparison) -> String {
    let mut out = format!(
        "{} events at {:.0} msg/s, partitioner {}, one consumer keeps up with {:.0} records/s per partition\n\n",
        c.samples, c.rate, c.partitioner, c.partition_capacity
    );
    let w = topic_width(
        c.strategies
            .iter()
            .flat_map(|s| &s.topics)
            .map(|t| &t.topic),
    );
    out.push_str(&format!(
        "{:<12} {:<w$} {:>6} {:>9} {:>6} {:>10} {:>9} {:>10} {:>12}  {}\n",
        "strategy",
        "topic",
        "msg/s",
        "used/all",
        "skew",
        "hottest",
        "lagging",
        "lag +/s",
        "hottest key",
        "order kept"
    ));
    for s in &c.strategies {
        let name =
            format!("{:?}{}", s.strategy, if s.configured { " *" } else { "" }).to_lowercase();
        for t in &s.topics {
            let growth: f64 = t.per_partition.iter().map(|p| p.lag_growth_per_sec).sum();
            out.push_str(&format!(
                "{:<12} {:<w$} {:>6.0} {:>9} {:>6.2} {:>10} {:>9} {:>10.0} {:>12}  {}\n",
                name,
                t.topic,
                t.rate,
                format!("{}/{}", t.partitions_used, t.partitions),
                t.max_over_mean,
                format!("p{} {:.0}", t.hottest.partition, t.hottest.rate),
                t.overloaded,
                growth,
                t.hottest_key
                    .as_deref()
                    .map(|k| format!("{k} {:.0}", t.hottest_key_rate))
                    .unwrap_or_else(|| "-".into()),
                s.ordering,
            ));
        }
    }
    out.push_str(
        "\n* the topology's strategy. skew = hottest partition / mean. lagging = partitions above \
         the capacity; lag +/s = records/s their lag grows by, together.\n",
    );
    out
}

/// The `lab plan` table.
pub fn plan_table(p: &PartitionPlan) -> String {
    let mut out = format!(
        "plan for {:.1}x today's rate, strategy {:?}, {:.0} records/s per consumer and partition, {:.0} msg/s of writes per partition\n\n",
        p.growth, p.strategy, p.partition_capacity, p.producer_partition_rate
    )
    .to_lowercase();
    let w = topic_width(p.topics.iter().map(|t| &t.topic));
    out.push_str(&format!(
        "{:<w$} {:>5} {:>8} {:>9} {:>10} {:>10} {:>12} {:>10} {:>16}\n",
        "topic",
        "now",
        "msg/s",
        "planned",
        "even load",
        "producers",
        "hottest now",
        "RECOMMEND",
        "hottest there"
    ));
    for t in &p.topics {
        let recommend = match (t.recommended, t.bound_exceeds_max) {
            (Some(n), _) => n.to_string(),
            (None, true) => format!(">{}", p.max_partitions),
            (None, false) => format!("none<={}", p.max_partitions),
        };
        out.push_str(&format!(
            "{:<w$} {:>5} {:>8.0} {:>9.0} {:>10} {:>10} {:>12.0} {:>10} {:>16}\n",
            t.topic,
            t.current_partitions,
            t.rate,
            t.planned_rate,
            t.for_consumers,
            t.for_producers,
            t.hottest_now,
            recommend,
            format!(
                "{:.0} ({} used)",
                t.hottest_at_recommended, t.used_at_recommended
            ),
        ));
    }
    out.push('\n');
    for t in &p.topics {
        if t.bound_exceeds_max {
            out.push_str(&format!(
                "{}: even load alone needs {} partitions, above --max-partitions {}: nothing searched.\n",
                t.topic, t.for_consumers.max(t.for_producers), p.max_partitions
            ));
        } else if t.recommended.is_none() {
            out.push_str(&format!(
                "{}: no count up to {} keeps the hottest partition under {:.0}/s: its keys are too few or too hot, and more partitions do not split a key.\n",
                t.topic, p.max_partitions, p.partition_capacity
            ));
        }
        if let (Some(code), Some(key)) = (t.hottest_code, t.hottest_key.as_deref()) {
            let verdict = if t.hottest_key_fits {
                "fits"
            } else {
                "does NOT fit"
            };
            out.push_str(&format!(
                "{}: hottest key {key} at {:.0} msg/s planned {verdict} one consumer. Code {code} needs {} sub-key(s) under composite (configured: {}).\n",
                t.topic, t.hottest_key_planned_rate, t.subkeys_needed, t.subkeys_configured
            ));
        }
    }
    out.push_str(
        "\neven load = planned / capacity; RECOMMEND = the smallest count from there whose simulated hottest partition fits one consumer.\n",
    );
    out
}
