//! fleetstream's domain model, free of I/O.
//!
//! Everything the producer, the workers and the dispatcher must agree on lives here:
//! what a telemetry event is ([`TelemetryEvent`], [`Code`]), how to pull its code out of raw
//! bytes quickly ([`extract_code`]), which topic a code goes to ([`Topology`], [`TopicRouter`]),
//! which key it carries ([`KeyStrategy`], [`KeyResolver`]) and where Kafka will place that key
//! ([`Partitioner`]).
//!
//! ```
//! use fleetstream_core::{Code, Topology};
//! let topology = Topology::from_toml_str(include_str!("../../../config/topology.toml")).unwrap();
//! assert_eq!(topology.router().route(Code(300)).name, "mt-c400");
//! assert_eq!(topology.router().route(Code(350)).name, "mt-c300");
//! ```
#![warn(missing_docs)]

pub mod audit;
pub mod digits;
mod event;
mod key;
mod ledger;
mod partition;
mod topology;

pub use event::{
    extract_code, extract_truck_id, Code, EventError, TelemetryEvent, MAX_EVENT_BYTES,
};
pub use key::{KeyResolver, KeyStrategy, KeysConfig};
pub use ledger::{IdLedger, LedgerReport, MessageId};
pub use partition::{crc32_partition, murmur2, murmur2_partition, Partitioner};
pub use topology::{
    ClusterConfig, ReplicationSettings, RoutingConfig, RoutingRule, TopicRole, TopicRouter,
    TopicSpec, Topology, TopologyError,
};
