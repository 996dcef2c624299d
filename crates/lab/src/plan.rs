//! Partition calculator.

use crate::keys::{simulate, KeysInput};
use fleetstream_core::KeyStrategy;
use fleetstream_producer::GeneratorError;
use serde::Serialize;

/// What to plan for.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    /// The simulation's inputs: topology (its configured key strategy is planned for), events,
    /// partitioner, today's rate and the per-partition consumer capacity.
    pub keys: KeysInput<'a>,
    /// Headroom multiplier on the rate (2.0: plan for twice today's traffic).
    pub growth: f64,
    /// msg/s one partition takes from the producers (write throughput per partition).
    pub producer_partition_rate: f64,
    /// Largest partition count the search tries per topic.
    pub max_partitions: u32,
}

/// One topic's plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopicPlan {
    /// Topic.
    pub topic: String,
    /// Partitions in the topology.
    pub current_partitions: u32,
    /// msg/s at today's rate.
    pub rate: f64,
    /// msg/s planned for (rate x growth).
    pub planned_rate: f64,
    /// Partitions if the load were even, for consumers: ceil(planned / capacity).
    pub for_consumers: u32,
    /// Partitions for the producers' writes: ceil(planned / producer rate per partition).
    pub for_producers: u32,
    /// Hottest partition's planned msg/s at the current count, under the key strategy.
    pub hottest_now: f64,
    /// Smallest count from max(for_consumers, for_producers) up to the search limit at which
    /// the simulated hottest partition fits one consumer at the planned rate; `None` if none
    /// does (the keys are too few or too hot: more partitions do not help), or if the bound
    /// itself is above the limit.
    pub recommended: Option<u32>,
    /// The even-load bound is above the search limit: nothing was searched.
    pub bound_exceeds_max: bool,
    /// Hottest partition's planned msg/s at the recommended count (or at the search limit).
    pub hottest_at_recommended: f64,
    /// Partitions that carry traffic at that count.
    pub used_at_recommended: u32,
    /// The hottest key and its planned msg/s. One key is one partition.
    pub hottest_key: Option<String>,
    /// Planned msg/s of the hottest key.
    pub hottest_key_planned_rate: f64,
    /// Whether one consumer keeps up with the hottest key at the planned rate.
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
    /// The strategy planned for (the topology's).
    pub strategy: KeyStrategy,
    /// Headroom multiplier.
    pub growth: f64,
    /// Records/s one consumer keeps up with on one partition.
    pub partition_capacity: f64,
    /// msg/s one partition takes from producers.
    pub producer_partition_rate: f64,
    /// Largest count searched.
    pub max_partitions: u32,
    /// Per source topic.
    pub topics: Vec<TopicPlan>,
}

fn ceil_div(a: f64, b: f64) -> u32 {
    if b <= 0.0 {
        return u32::MAX;
    }
    (a / b).ceil().clamp(1.0, u32::MAX as f64) as u32
}

/// Plans partitions per source topic for the topology's key strategy. The even-load bound is
/// arithmetic; the skew is simulated: from that bound up to `max_partitions`, the first count
/// whose simulated hottest partition fits one consumer at the planned rate.
pub fn plan_partitions(input: &PlanInput<'_>) -> Result<PartitionPlan, GeneratorError> {
    let k = &input.keys;
    let strategy = k.topology.key_resolver().strategy();
    let capacity = k.partition_capacity;
    let now = simulate(k, strategy)?;
    let mut topics = Vec::new();
    for t in &now {
        let planned = t.rate * input.growth;
        let for_consumers = ceil_div(planned, capacity);
        let for_producers = ceil_div(planned, input.producer_partition_rate);
        let start = for_consumers.max(for_producers);
        let (mut recommended, mut hottest_at, mut used_at) = (None, 0.0, 0);
        for n in start..=input.max_partitions {
            let what_if = k
                .topology
                .with_partitions(&t.topic, n)
                .expect("the topic comes from this topology and n >= 1");
            let loads = simulate(
                &KeysInput {
                    topology: &what_if,
                    ..k.clone()
                },
                strategy,
            )?;
            let load = loads
                .iter()
                .find(|l| l.topic == t.topic)
                .expect("the same source topics");
            hottest_at = load.hottest.rate * input.growth;
            used_at = load.partitions_used;
            if hottest_at <= capacity {
                recommended = Some(n);
                break;
            }
        }
        let key_planned = t.hottest_key_rate * input.growth;
        topics.push(TopicPlan {
            topic: t.topic.clone(),
            current_partitions: t.partitions,
            rate: t.rate,
            planned_rate: planned,
            for_consumers,
            for_producers,
            hottest_now: t.hottest.rate * input.growth,
            recommended,
            bound_exceeds_max: start > input.max_partitions,
            hottest_at_recommended: hottest_at,
            used_at_recommended: used_at,
            hottest_key: t.hottest_key.clone(),
            hottest_key_planned_rate: key_planned,
            hottest_key_fits: key_planned <= capacity,
            hottest_code: t.hottest_code,
            subkeys_needed: ceil_div(t.hottest_code_rate * input.growth, capacity),
            subkeys_configured: t.hottest_code_subkeys,
        });
    }
    Ok(PartitionPlan {
        strategy,
        growth: input.growth,
        partition_capacity: capacity,
        producer_partition_rate: input.producer_partition_rate,
        max_partitions: input.max_partitions,
        topics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetstream_core::{Partitioner, Topology};
    use fleetstream_producer::GeneratorConfig;

    const DOMAIN: &str = include_str!("../../../config/topology.toml");

    fn plan(text: &str, capacity: f64, growth: f64, producer_rate: f64) -> PartitionPlan {
        let topology = Topology::from_toml_str(text).unwrap();
        plan_partitions(&PlanInput {
            keys: KeysInput {
                topology: &topology,
                generator: GeneratorConfig::default(),
                partitioner: Partitioner::Murmur2Random,
                samples: 20_000,
                rate: 13_000.0,
                partition_capacity: capacity,
            },
            growth,
            producer_partition_rate: producer_rate,
            max_partitions: 40,
        })
        .unwrap()
    }

    fn topic<'a>(p: &'a PartitionPlan, name: &str) -> &'a TopicPlan {
        p.topics.iter().find(|t| t.topic == name).unwrap()
    }

    #[test]
    fn truck_keys_get_the_smallest_count_whose_hottest_partition_fits() {
        let truck = DOMAIN.replace(r#"strategy = "composite""#, r#"strategy = "truck""#);
        let p = plan(&truck, 1_500.0, 2.0, 50_000.0);
        assert_eq!(p.strategy, KeyStrategy::Truck);
        let hot = topic(&p, "mt-c400");
        assert!((hot.planned_rate - 2.0 * hot.rate).abs() < 1e-9);
        assert_eq!(
            hot.for_consumers,
            (hot.planned_rate / 1_500.0).ceil() as u32
        );
        assert_eq!(hot.for_producers, 1);
        let n = hot
            .recommended
            .expect("thousands of truck keys spread evenly");
        assert!(n >= hot.for_consumers && n <= 40, "{n}");
        assert!(hot.hottest_at_recommended <= 1_500.0);
        assert_eq!(hot.used_at_recommended, n);
        // The count before it did not fit (or it is the even-load bound itself).
        if n > hot.for_consumers {
            let topology = Topology::from_toml_str(&truck)
                .unwrap()
                .with_partitions("mt-c400", n - 1)
                .unwrap();
            let loads = simulate(
                &KeysInput {
                    topology: &topology,
                    generator: GeneratorConfig::default(),
                    partitioner: Partitioner::Murmur2Random,
                    samples: 20_000,
                    rate: 13_000.0,
                    partition_capacity: 1_500.0,
                },
                KeyStrategy::Truck,
            )
            .unwrap();
            let l = loads.iter().find(|l| l.topic == "mt-c400").unwrap();
            assert!(l.hottest.rate * 2.0 > 1_500.0);
        }
    }

    #[test]
    fn code_keys_never_fit_when_one_code_exceeds_a_consumer() {
        let code = DOMAIN.replace(r#"strategy = "composite""#, r#"strategy = "code""#);
        let p = plan(&code, 1_500.0, 2.0, 50_000.0);
        let hot = topic(&p, "mt-c400");
        assert_eq!(hot.recommended, None);
        assert_eq!(hot.hottest_key.as_deref(), Some("300"));
        assert!(!hot.hottest_key_fits);
        assert!(hot.hottest_at_recommended >= hot.hottest_key_planned_rate - 1e-6);
        // Code 300 planned at ~12,900 msg/s needs ~9 sub-keys of 1,500/s each.
        assert_eq!(hot.hottest_code, Some(300));
        assert_eq!(
            hot.subkeys_needed,
            ceil_div(hot.hottest_key_planned_rate, 1_500.0)
        );
    }

    #[test]
    fn nothing_is_searched_above_the_limit() {
        let topology = Topology::from_toml_str(DOMAIN).unwrap();
        let p = plan_partitions(&PlanInput {
            keys: KeysInput {
                topology: &topology,
                generator: GeneratorConfig::default(),
                partitioner: Partitioner::Murmur2Random,
                samples: 1_000,
                rate: 13_000.0,
                partition_capacity: 1.0,
            },
            growth: 1.0,
            producer_partition_rate: 50_000.0,
            max_partitions: 64,
        })
        .unwrap();
        let hot = topic(&p, "mt-c400");
        assert!(hot.for_consumers > 64);
        assert!(hot.bound_exceeds_max);
        assert_eq!((hot.recommended, hot.used_at_recommended), (None, 0));
    }

    #[test]
    fn a_slow_write_path_bounds_the_count_too() {
        let p = plan(DOMAIN, 100_000.0, 1.0, 500.0);
        let cold = topic(&p, "mt-c300");
        assert_eq!(cold.for_consumers, 1);
        assert_eq!(
            cold.for_producers,
            (cold.planned_rate / 500.0).ceil() as u32
        );
        assert_eq!(cold.recommended, Some(cold.for_producers));
        assert!(cold.hottest_key_fits);
    }
}
