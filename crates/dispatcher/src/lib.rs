//! fleetstream's dispatcher: takes batches of Kafka records, routes each record by its event
//! code to downstream targets, and makes redeliveries harmless.
//!
//! Upstream is at-least-once (Kafka consumer retries, Lambda retries, rebalances), so the same
//! record can arrive many times. The dispatcher keeps one effect per record and target with an
//! [`IdempotencyStore`](idempotency::IdempotencyStore), keyed on the producer's message id
//! (header `fs-message-id`).
//!
//! The same [`Dispatcher`] runs in-process in the demo, inside the Lambda binary (input: the
//! Lambda Kafka event, see [`event`]; output: the Kafka partial batch response,
//! [`BatchResponse`]) and behind a local HTTP server. It knows nothing about librdkafka.
//!
//! ```
//! use fleetstream_dispatcher::{idempotency::MemoryStore, BatchRecord, Dispatcher, RoutingTable};
//! use std::sync::Arc;
//!
//! let toml = r#"
//!     default = ["alerts"]
//!     [targets.alerts]
//!     kind = "memory"
//! "#;
//! let table = RoutingTable::from_toml_str(toml, "/tmp/state").unwrap();
//! let dispatcher = Dispatcher::new(table, Arc::new(MemoryStore::default())).unwrap();
//! let record = BatchRecord {
//!     topic: "mt-c400".into(),
//!     value: br#"{"truck_id":"TRK-1","codigo":300,"ts":1,"lat":0.0,"lon":0.0,"speed_kmh":0.0,
//!         "heading":0,"seq":1,"fuel_pct":50.0,"engine_temp_c":80.0,"odometer_km":1.0,"driver_id":"D"}"#.to_vec(),
//!     headers: vec![("fs-message-id".into(), b"m-1".to_vec())],
//!     ..Default::default()
//! };
//! let rt = tokio::runtime::Runtime::new().unwrap();
//! let first = rt.block_on(dispatcher.dispatch(vec![record.clone()]));
//! let again = rt.block_on(dispatcher.dispatch(vec![record]));
//! assert_eq!((first.summary.dispatched, again.summary.duplicates), (1, 1));
//! assert_eq!(dispatcher.memory_target("alerts").unwrap().effects("m-1"), 1);
//! ```
#![warn(missing_docs)]

pub mod event;
pub mod idempotency;
pub mod metrics;
mod record;
mod response;
pub mod routes;
#[cfg(feature = "server")]
pub mod server;
mod service;
pub mod targets;

pub use event::DecodeError;
pub use record::{
    trace_id, BatchRecord, CORRELATION_ID_HEADER, MESSAGE_ID_HEADER, TRACEPARENT_HEADER,
};
pub use response::{
    BatchItemFailure, BatchResponse, DispatchResponse, KafkaItemIdentifier, Outcome, RecordResult,
    Summary, IN_PROGRESS,
};
pub use routes::{RoutesError, RoutingTable};
pub use service::{BuildError, DetachedError, Dispatcher};

/// The Lambda Kafka event types, re-exported so callers need not depend on `aws_lambda_events`.
pub use aws_lambda_events::event::kafka::{KafkaEvent, KafkaRecord};
