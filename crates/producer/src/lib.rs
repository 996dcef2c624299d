//! fleetstream's producer: the notes' ProducerFactory, MessageGenerator, TopicRouter,
//! KeyResolver and MetricsEmitter.
//!
//! The producer declares intent (topic by code, key by strategy, `acks=all`) and never picks a
//! partition: Kafka's partitioner does. Pacing is a token bucket ([`rate::Pacer`]) in msg/s and
//! optionally bytes/s, with a ramp profile ([`rate::Ramp`]); latency is measured both from the
//! actual send and from the intended send time. Events without an extractable code, and
//! records the client or the cluster refuses for themselves (`oversize`, `invalid_record`), are
//! rejected to a reject file or a dead-letter topic ([`RejectSink`]), never dropped, and the run
//! goes on; only a fatal client error ends it early ([`ProducerError::Ended`], with the report).
//!
//! ```no_run
//! # use std::sync::{Arc, atomic::AtomicBool};
//! use fleetstream_producer::{run, ProducerMetrics, RunSpec};
//! # fn spec() -> RunSpec { unimplemented!() }
//! let report = run(&spec(), Arc::new(ProducerMetrics::default()), &AtomicBool::new(false)).unwrap();
//! println!("{} msg/s", report.rate_achieved);
//! ```
#![warn(missing_docs)]

pub mod acked_ids;
pub mod generator;
mod metrics;
pub mod rate;
mod rejects;
mod run;
mod source;
mod wire;

pub use acked_ids::AckedIdsWriter;
pub use generator::{
    CodeWeights, Generated, Generator, GeneratorConfig, GeneratorError, PoisonKind,
};
pub use metrics::{AckLatency, AckObserver, ProducerMetrics, SendMeta};
pub use rate::{Ramp, SharedRate};
pub use rejects::{reject_class, RejectSink};
pub use run::{
    run, ProducerError, ProducerReport, RunOptions, RunSpec, DEFAULT_TRACE_SAMPLE_RATIO,
};
pub use source::SourceSpec;
