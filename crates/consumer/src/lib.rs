//! fleetstream's consumer-group worker.
//!
//! Workers join one consumer group per topology group, read records in batches (max records,
//! max bytes, window: Lambda's knobs), isolate each bad record into the dead-letter topic,
//! dispatch the rest through a [`Transport`], and store offsets only after the whole batch is
//! settled. Scale by starting more workers: Kafka moves partitions between them.
#![warn(missing_docs)]

mod acked;
mod config;
mod dead_letter;
mod http;
mod kafka_target;
mod lambda;
mod metrics;
mod settle;
mod transport;
mod worker;

pub use config::{InvalidSetting, WorkerConfig};
pub use dead_letter::{DeadLetter, DeadLetterWriter};
pub use http::{parse_response, HttpInvoke};
pub use kafka_target::KafkaTarget;
pub use lambda::LambdaInvoke;
pub use metrics::{WorkerMetrics, WorkerSnapshot};
pub use transport::{DispatchFuture, InProcess, Transport, TransportError};
pub use worker::{Worker, WorkerError};
