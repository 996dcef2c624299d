//! fleetstream's producer: the notes' ProducerFactory, MessageGenerator, TopicRouter,
//! KeyResolver and MetricsEmitter.
//!
//! The producer declares intent (topic by code, key by strategy, `acks=all`) and never picks a
//! partition: Kafka's partitioner does. Pacing is a token bucket ([`rate::Pacer`]); latency is
//! measured both from the actual send and from the intended send time.
//!
//! ```no_run
//! # use std::sync::{Arc, atomic::AtomicBool};
//! use fleetstream_producer::{run, ProducerMetrics, RunSpec};
//! # fn spec() -> RunSpec { unimplemented!() }
//! let report = run(&spec(), Arc::new(ProducerMetrics::default()), &AtomicBool::new(false)).unwrap();
//! println!("{} msg/s", report.rate_achieved);
//! ```
#![warn(missing_docs)]

pub mod generator;
mod metrics;
pub mod rate;
mod run;

pub use generator::{CodeWeights, Generator, GeneratorConfig};
pub use metrics::{AckLatency, AckObserver, ProducerMetrics, SendMeta};
pub use rate::SharedRate;
pub use run::{run, ProducerError, ProducerReport, RunSpec};
