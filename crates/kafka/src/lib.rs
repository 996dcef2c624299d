//! fleetstream's Kafka layer: the only crate that imports `rdkafka`.
//!
//! - [`config`]: typed producer/consumer/connection settings, turned into librdkafka keys in one
//!   function each (`acks=all` and idempotence always on; manual offset store always on).
//! - [`ClusterHandle`]: an external cluster (`--bootstrap`) or the embedded librdkafka mock
//!   cluster ([`EmbeddedCluster`]) started in-process.
//! - [`Admin`]: `topics apply` / `topics describe` (create missing, report drift, delete nothing).
//! - [`KafkaProducer`], [`GroupConsumer`]: the clients the producer and the workers use.
//! - [`headers`]: header names every record carries.
//!
//! ```no_run
//! use fleetstream_kafka::ClusterHandle;
//! let cluster = ClusterHandle::embedded(3).unwrap();
//! println!("{}", cluster.banner());
//! ```
#![warn(missing_docs)]

mod admin;
mod cluster;
pub mod config;
mod consumer;
mod context;
mod embedded;
mod error;
pub mod headers;
pub mod msk_iam;
mod pause;
mod producer;

pub use admin::{Admin, ApplyReport, Drift, TopicState};
pub use cluster::ClusterHandle;
pub use config::{ConnectionSettings, ConsumerSettings, ProducerSettings, Secret};
pub use consumer::{
    group_lag, read_topic_to_end, ConsumedRecord, GroupConsumer, GroupStats, PartitionLag,
};
pub use context::ClientErrors;
pub use embedded::EmbeddedCluster;
pub use error::{FailureKind, KafkaError};
pub use producer::{
    ClientStats, DeliveryFailure, DeliveryHandler, DeliveryReport, KafkaProducer, OutRecord,
    POLL_SLICE, PRODUCER_ID_DELAY,
};
