//! Partition calculator.

use crate::keys::KeyComparison;
use fleetstream_core::KeyStrategy;
use serde::Serialize;

/// What to plan for.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// Loads at the target rate under the topology's key strategy ([`crate::compare_keys`]).
    pub comparison: &'a KeyComparison,
    /// Headroom multiplier on the target rate (2.0: plan for twice today's traffic).
    pub growth: f64,
    /// msg/s one partition takes from the producers (write throughput per partition).
    pub producer_partition_rate: f64,
}

/// One topic's plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopicPlan {
    /// Topic.
    pub topic: String,
    /// Partitions in the topology today.
    pub current_partitions: u32,
    /// msg/s at the target rate.
    pub rate: f64,
    /// msg/s planned for (rate x growth).
    pub planned_rate: f64,
    /// Partitions so that consumers keep up if the load were even: ceil(planned / capacity).
    pub for_consumers: u32,
    /// Partitions so that producers' writes fit: ceil(planned / producer rate per partition).
    pub for_producers: u32,
    /// Hottest partition over the mean under the key strategy, as simulated today.
    pub skew: f64,
    /// `for_consumers` scaled by the skew, so the hottest partition also keeps up.
    pub for_skew: u32,
    /// The largest of the three.
    pub recommended: u32,
    /// The hottest key and its planned msg/s. One key is one partition.
    pub hottest_key: Option<String>,
    /// Planned msg/s of the hottest key.
    pub hottest_key_planned_rate: f64,
    /// Whether one consumer keeps up with the hottest key at the planned rate. When it does
    /// not, no partition count helps: split the key (composite sub-keys) or make consumers
    /// faster.
    pub hottest_key_fits: bool,
    /// The hottest code.
    pub hottest_code: Option<u32>,
    /// Sub-keys it needs under `composite` so each fits one consumer at the planned rate.
    pub subkeys_needed: u32,
    /// Sub-keys the topology gives it.
    pub subkeys_configured: u32,
}

/// The plan for every source topic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionPlan {
    /// The strategy the loads were simulated with.
    pub strategy: KeyStrategy,
    /// Headroom multiplier.
    pub growth: f64,
    /// Records/s one consumer keeps up with on one partition.
    pub partition_capacity: f64,
    /// msg/s one partition takes from producers.
    pub producer_partition_rate: f64,
    /// Per source topic.
    pub topics: Vec<TopicPlan>,
}

fn ceil_div(a: f64, b: f64) -> u32 {
    if b <= 0.0 {
        return u32::MAX;
    }
    (a / b).ceil().clamp(1.0, u32::MAX as f64) as u32
}

/// Partitions per source topic: enough for consumers and producers at `rate x growth`, scaled
/// by the skew the key strategy produces today. The skew is measured at today's partition
/// count; re-run the lab with the recommended count to check it.
pub fn plan_partitions(input: &PlanInput<'_>) -> Option<PartitionPlan> {
    let c = input.comparison;
    let strategy = c.configured()?;
    let capacity = c.partition_capacity;
    let topics = strategy
        .topics
        .iter()
        .map(|t| {
            let planned = t.rate * input.growth;
            let for_consumers = ceil_div(planned, capacity);
            let for_producers = ceil_div(planned, input.producer_partition_rate);
            let skew = t.max_over_mean.max(1.0);
            let for_skew = ceil_div(planned * skew, capacity);
            let key_planned = t.hottest_key_rate * input.growth;
            TopicPlan {
                topic: t.topic.clone(),
                current_partitions: t.partitions,
                rate: t.rate,
                planned_rate: planned,
                for_consumers,
                for_producers,
                skew,
                for_skew,
                recommended: for_consumers.max(for_producers).max(for_skew),
                hottest_key: t.hottest_key.clone(),
                hottest_key_planned_rate: key_planned,
                hottest_key_fits: key_planned <= capacity,
                hottest_code: t.hottest_code,
                subkeys_needed: ceil_div(t.hottest_code_rate * input.growth, capacity),
                subkeys_configured: t.hottest_code_subkeys,
            }
        })
        .collect();
    Some(PartitionPlan {
        strategy: strategy.strategy,
        growth: input.growth,
        partition_capacity: capacity,
        producer_partition_rate: input.producer_partition_rate,
        topics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{compare_keys, KeysInput};
    use fleetstream_core::{Partitioner, Topology};
    use fleetstream_producer::GeneratorConfig;

    const DOMAIN: &str = include_str!("../../../config/topology.toml");

    fn plan(capacity: f64, growth: f64, producer_rate: f64) -> PartitionPlan {
        let topology = Topology::from_toml_str(DOMAIN).unwrap();
        let c = compare_keys(&KeysInput {
            topology: &topology,
            generator: GeneratorConfig::default(),
            partitioner: Partitioner::Murmur2Random,
            samples: 40_000,
            rate: 13_000.0,
            partition_capacity: capacity,
        })
        .unwrap();
        plan_partitions(&PlanInput {
            comparison: &c,
            growth,
            producer_partition_rate: producer_rate,
        })
        .unwrap()
    }

    #[test]
    fn partitions_follow_the_planned_rate_over_each_bound() {
        let p = plan(1_000.0, 2.0, 50_000.0);
        assert_eq!(p.strategy, KeyStrategy::Composite);
        let hot = p.topics.iter().find(|t| t.topic == "mt-c400").unwrap();
        assert!((hot.planned_rate - 2.0 * hot.rate).abs() < 1e-9);
        // ~10,400 msg/s today, ~20,800 planned: 21 consumers' worth at 1,000/s each.
        assert_eq!(
            hot.for_consumers,
            (hot.planned_rate / 1_000.0).ceil() as u32
        );
        assert_eq!(hot.for_producers, 1);
        assert!(hot.skew >= 1.0);
        assert_eq!(
            hot.for_skew,
            (hot.planned_rate * hot.skew / 1_000.0).ceil() as u32
        );
        assert_eq!(hot.recommended, hot.for_skew.max(hot.for_consumers));
        assert!(hot.recommended > hot.current_partitions);
        // Code 300 carries more than one consumer can take even split 12 ways.
        assert_eq!(hot.hottest_code, Some(300));
        assert_eq!(hot.subkeys_configured, 12);
        assert!(hot.subkeys_needed > 12, "{}", hot.subkeys_needed);
    }

    #[test]
    fn a_slow_write_path_bounds_the_count_too() {
        let p = plan(100_000.0, 1.0, 500.0);
        let cold = p.topics.iter().find(|t| t.topic == "mt-c300").unwrap();
        assert_eq!(cold.for_consumers, 1);
        assert_eq!(
            cold.for_producers,
            (cold.planned_rate / 500.0).ceil() as u32
        );
        assert_eq!(cold.recommended, cold.for_producers.max(cold.for_skew));
        assert!(cold.hottest_key_fits);
    }
}
