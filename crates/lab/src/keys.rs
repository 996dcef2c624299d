//! Key-strategy comparison and hot partitions.

use fleetstream_core::{KeyStrategy, Partitioner, Topology};
use fleetstream_producer::{Generator, GeneratorConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::HashMap;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct KeysInput<'a> {
    /// Topics, routing rules and the configured key settings (sub-keys per code).
    pub topology: &'a Topology,
    /// The producer's synthetic events (codes, weights, trucks, seed).
    pub generator: GeneratorConfig,
    /// The producer's partitioner setting.
    pub partitioner: Partitioner,
    /// Events drawn per strategy (the same events for every strategy).
    pub samples: u64,
    /// Target rate, msg/s: shares are turned into rates at it.
    pub rate: f64,
    /// Records/s one consumer keeps up with on one partition (a worker's measured throughput
    /// per partition). A partition above it builds lag.
    pub partition_capacity: f64,
}

/// One partition's load.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionLoad {
    /// Partition number.
    pub partition: u32,
    /// Share of the topic's traffic, in [0, 1].
    pub share: f64,
    /// msg/s at the target rate.
    pub rate: f64,
    /// Records/s by which its lag grows (0 when one consumer keeps up).
    pub lag_growth_per_sec: f64,
}

/// One topic's load under one strategy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopicLoad {
    /// Topic.
    pub topic: String,
    /// Its partition count in the topology.
    pub partitions: u32,
    /// Share of all traffic routed here.
    pub share: f64,
    /// msg/s at the target rate.
    pub rate: f64,
    /// Partitions that received anything.
    pub partitions_used: u32,
    /// Hottest partition's rate over the mean per partition (1.0 is perfectly even).
    pub max_over_mean: f64,
    /// The hottest partition.
    pub hottest: PartitionLoad,
    /// Partitions above the per-partition capacity.
    pub overloaded: u32,
    /// Every partition, by number.
    pub per_partition: Vec<PartitionLoad>,
    /// Distinct keys seen (0 without keys).
    pub distinct_keys: u64,
    /// The key with the most traffic, if any.
    pub hottest_key: Option<String>,
    /// Its msg/s at the target rate. One key is one partition: no partition count splits it.
    pub hottest_key_rate: f64,
    /// The code with the most traffic here (the same under every strategy).
    pub hottest_code: Option<u32>,
    /// Its msg/s at the target rate.
    pub hottest_code_rate: f64,
    /// Its sub-keys under `composite`, as the topology configures them.
    pub hottest_code_subkeys: u32,
}

/// One strategy over every source topic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategyLoad {
    /// `none`, `code`, `truck` or `composite`.
    pub strategy: KeyStrategy,
    /// Whether the topology configures this strategy.
    pub configured: bool,
    /// What stays in order under it.
    pub ordering: &'static str,
    /// Per source topic.
    pub topics: Vec<TopicLoad>,
}

/// The comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyComparison {
    /// Events drawn per strategy.
    pub samples: u64,
    /// Target msg/s.
    pub rate: f64,
    /// Records/s one consumer keeps up with on one partition.
    pub partition_capacity: f64,
    /// `murmur2_random` or `consistent_random`.
    pub partitioner: &'static str,
    /// `none`, `code`, `truck`, `composite`.
    pub strategies: Vec<StrategyLoad>,
}

impl KeyComparison {
    /// The topology's configured strategy.
    pub fn configured(&self) -> Option<&StrategyLoad> {
        self.strategies.iter().find(|s| s.configured)
    }
}

fn ordering(strategy: KeyStrategy) -> &'static str {
    match strategy {
        KeyStrategy::None => "none: a truck's events spread over every partition",
        KeyStrategy::Code => "per code: a hot code is one partition",
        KeyStrategy::Truck => "per truck",
        KeyStrategy::Composite => "per truck within a code (a code is split by truck hash)",
    }
}

/// Draws `samples` events from the producer's generator and places each under every key
/// strategy with the producer's router, key resolver and partitioner. Records without a key
/// are placed uniformly at random: librdkafka's sticky partitioner moves between partitions
/// per batch, which evens out over time.
pub fn compare_keys(
    input: &KeysInput<'_>,
) -> Result<KeyComparison, fleetstream_producer::GeneratorError> {
    let configured = input.topology.key_resolver().strategy();
    let mut strategies = Vec::new();
    for strategy in [
        KeyStrategy::None,
        KeyStrategy::Code,
        KeyStrategy::Truck,
        KeyStrategy::Composite,
    ] {
        strategies.push(StrategyLoad {
            strategy,
            configured: strategy == configured,
            ordering: ordering(strategy),
            topics: simulate(input, strategy)?,
        });
    }
    Ok(KeyComparison {
        samples: input.samples,
        rate: input.rate,
        partition_capacity: input.partition_capacity,
        partitioner: input.partitioner.librdkafka_name(),
        strategies,
    })
}

/// Loads of every source topic under one strategy (the same events for any strategy).
pub(crate) fn simulate(
    input: &KeysInput<'_>,
    strategy: KeyStrategy,
) -> Result<Vec<TopicLoad>, fleetstream_producer::GeneratorError> {
    let topology = input.topology;
    let resolver = topology.key_resolver().with_strategy(strategy);
    let mut generator = Generator::new(&input.generator)?;
    let mut sticky = SmallRng::seed_from_u64(input.generator.seed ^ 0x5eed);
    let topics = topology.topics();
    let mut counts: Vec<Vec<u64>> = topics
        .iter()
        .map(|t| vec![0; t.partitions as usize])
        .collect();
    let mut keys: Vec<HashMap<Vec<u8>, u64>> = vec![HashMap::new(); topics.len()];
    let mut codes: Vec<HashMap<u32, u64>> = vec![HashMap::new(); topics.len()];
    let (mut event, mut key) = (Vec::with_capacity(256), Vec::with_capacity(32));
    for i in 0..input.samples {
        let code = generator.next_event(i, &mut event);
        let t = topology.router().route_index(code);
        let partitions = topics[t].partitions;
        *codes[t].entry(code.0).or_default() += 1;
        let partition = if resolver.resolve_into(code, generator.last_truck(), &mut key) {
            match keys[t].get_mut(key.as_slice()) {
                Some(n) => *n += 1,
                None => {
                    keys[t].insert(key.clone(), 1);
                }
            }
            input.partitioner.partition(&key, partitions)
        } else {
            sticky.gen_range(0..partitions)
        };
        counts[t][partition as usize] += 1;
    }
    Ok(topology
        .source_topics()
        .map(|spec| {
            let t = topics.iter().position(|x| x.name == spec.name).unwrap_or(0);
            topic_load(input, &spec.name, &counts[t], &keys[t], &codes[t])
        })
        .collect())
}

fn topic_load(
    input: &KeysInput<'_>,
    topic: &str,
    counts: &[u64],
    keys: &HashMap<Vec<u8>, u64>,
    codes: &HashMap<u32, u64>,
) -> TopicLoad {
    let samples = input.samples.max(1) as f64;
    let total: u64 = counts.iter().sum();
    let per_partition: Vec<PartitionLoad> = counts
        .iter()
        .enumerate()
        .map(|(p, &n)| {
            let rate = input.rate * n as f64 / samples;
            PartitionLoad {
                partition: p as u32,
                share: if total == 0 {
                    0.0
                } else {
                    n as f64 / total as f64
                },
                rate,
                lag_growth_per_sec: (rate - input.partition_capacity).max(0.0),
            }
        })
        .collect();
    let hottest = per_partition
        .iter()
        .max_by(|a, b| a.rate.total_cmp(&b.rate))
        .cloned()
        .unwrap_or(PartitionLoad {
            partition: 0,
            share: 0.0,
            rate: 0.0,
            lag_growth_per_sec: 0.0,
        });
    let mean = total as f64 / counts.len().max(1) as f64;
    let (hottest_key, hottest_key_count) = keys
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(k, &n)| (Some(String::from_utf8_lossy(k).into_owned()), n))
        .unwrap_or((None, 0));
    let (hottest_code, hottest_code_count) = codes
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(&c, &n)| (Some(c), n))
        .unwrap_or((None, 0));
    TopicLoad {
        topic: topic.to_string(),
        partitions: counts.len() as u32,
        share: total as f64 / samples,
        rate: input.rate * total as f64 / samples,
        partitions_used: counts.iter().filter(|&&n| n > 0).count() as u32,
        max_over_mean: if mean > 0.0 {
            counts.iter().copied().max().unwrap_or(0) as f64 / mean
        } else {
            0.0
        },
        overloaded: per_partition
            .iter()
            .filter(|p| p.lag_growth_per_sec > 0.0)
            .count() as u32,
        hottest,
        per_partition,
        distinct_keys: keys.len() as u64,
        hottest_key,
        hottest_key_rate: input.rate * hottest_key_count as f64 / samples,
        hottest_code,
        hottest_code_rate: input.rate * hottest_code_count as f64 / samples,
        hottest_code_subkeys: hottest_code.map_or(1, |c| {
            input
                .topology
                .key_resolver()
                .subkeys_for(fleetstream_core::Code(c))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAIN: &str = include_str!("../../../config/topology.toml");

    fn compare(samples: u64, capacity: f64) -> KeyComparison {
        let topology = Topology::from_toml_str(DOMAIN).unwrap();
        compare_keys(&KeysInput {
            topology: &topology,
            generator: GeneratorConfig::default(),
            partitioner: Partitioner::Murmur2Random,
            samples,
            rate: 13_000.0,
            partition_capacity: capacity,
        })
        .unwrap()
    }

    fn load<'a>(c: &'a KeyComparison, s: KeyStrategy, topic: &str) -> &'a TopicLoad {
        let s = c.strategies.iter().find(|x| x.strategy == s).unwrap();
        s.topics.iter().find(|t| t.topic == topic).unwrap()
    }

    #[test]
    fn every_event_is_placed_once_under_every_strategy() {
        let c = compare(20_000, 1_000.0);
        assert_eq!(c.strategies.len(), 4);
        assert_eq!(c.configured().unwrap().strategy, KeyStrategy::Composite);
        for s in &c.strategies {
            let placed: f64 = s.topics.iter().map(|t| t.share).sum();
            assert!((placed - 1.0).abs() < 1e-9, "{:?}: {placed}", s.strategy);
            let rate: f64 = s
                .topics
                .iter()
                .flat_map(|t| &t.per_partition)
                .map(|p| p.rate)
                .sum();
            assert!((rate - 13_000.0).abs() < 1e-6);
        }
        // Routing does not depend on the key: the 80/20 codes put ~80% on mt-c400.
        let share = load(&c, KeyStrategy::None, "mt-c400").share;
        assert!((0.75..0.85).contains(&share), "{share}");
        for s in &c.strategies {
            assert_eq!(load(&c, s.strategy, "mt-c400").share, share);
        }
    }

    #[test]
    fn code_keys_pin_each_code_to_one_partition_and_composite_splits_them() {
        let c = compare(50_000, 1_000.0);
        let by_code = load(&c, KeyStrategy::Code, "mt-c400");
        // Four codes (300-303) route here: at most four partitions of twelve carry anything.
        assert_eq!(by_code.distinct_keys, 4);
        assert!(by_code.partitions_used <= 4);
        assert_eq!(by_code.hottest_key.as_deref(), Some("300"));
        let composite = load(&c, KeyStrategy::Composite, "mt-c400");
        // 12 + 6 + 4 + 4 sub-keys over 12 partitions.
        assert_eq!(composite.distinct_keys, 26);
        assert!(composite.partitions_used > by_code.partitions_used);
        assert!(composite.max_over_mean < by_code.max_over_mean);
        assert!(composite.hottest_key_rate < by_code.hottest_key_rate / 6.0);
        // Thousands of trucks hash almost evenly.
        let truck = load(&c, KeyStrategy::Truck, "mt-c400");
        assert!(truck.distinct_keys > 4_000);
        assert!(truck.max_over_mean < 1.2, "{}", truck.max_over_mean);
    }

    #[test]
    fn partitions_above_capacity_build_lag_at_the_difference() {
        let c = compare(50_000, 1_000.0);
        let by_code = load(&c, KeyStrategy::Code, "mt-c400");
        let hot = &by_code.hottest;
        assert!(hot.rate > 1_000.0);
        assert!((hot.lag_growth_per_sec - (hot.rate - 1_000.0)).abs() < 1e-9);
        let expected = by_code
            .per_partition
            .iter()
            .filter(|p| p.rate > 1_000.0)
            .count() as u32;
        assert_eq!(by_code.overloaded, expected);
        // With the capacity just above the hottest partition, nothing lags; just below, one does.
        let above = by_code.hottest.rate + 1.0;
        let relaxed = compare(50_000, above);
        let t = load(&relaxed, KeyStrategy::Code, "mt-c400");
        assert_eq!(t.overloaded, 0);
        assert!(t.per_partition.iter().all(|p| p.lag_growth_per_sec == 0.0));
        let tight = compare(50_000, by_code.hottest.rate - 1.0);
        let t = load(&tight, KeyStrategy::Code, "mt-c400");
        assert!(t.overloaded >= 1);
        assert!((t.hottest.lag_growth_per_sec - 1.0).abs() < 1e-9);
    }

    #[test]
    fn the_same_seed_gives_the_same_numbers() {
        assert_eq!(compare(5_000, 900.0), compare(5_000, 900.0));
    }
}
