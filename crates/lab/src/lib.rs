//! The architecture lab: numbers to defend a topology with, computed by the same generator, key
//! resolver, router and partitioner the producer uses, so the lab cannot disagree with what
//! the producer would do. No cluster is needed.
//!
//! - [`compare_keys`]: every key strategy over the topology's topics. Per partition: the share
//!   of traffic, the rate at a target msg/s, and whether one consumer keeps up with it (hot
//!   partitions and how fast their lag grows).
//! - [`plan_partitions`]: partitions per topic for a target rate with growth headroom, bounded
//!   by consumer and producer throughput per partition, and the key that no partition count
//!   can split.

mod keys;
mod plan;

pub use keys::{compare_keys, KeyComparison, KeysInput, PartitionLoad, StrategyLoad, TopicLoad};
pub use plan::{plan_partitions, PartitionPlan, PlanInput, TopicPlan};
