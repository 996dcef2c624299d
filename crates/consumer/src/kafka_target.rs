//! The dispatcher's `kafka` target (fan-out): produces every delivered record, unchanged, to a
//! topic. It lives here, not in the dispatcher crate, because the dispatcher links no Kafka
//! client (the Lambda binary must not link librdkafka).
//!
//! Delivery semantics: each record is produced with its original key, value and headers by an
//! idempotent `acks=all` producer, and [`Target::deliver`] returns only after every record of
//! the slice has its delivery report. Any failed report fails the whole slice with a retriable
//! [`TargetError::Unavailable`], so the dispatcher releases the records' idempotency markers
//! and a redelivery produces them again: towards the topic this is at-least-once (a slice that
//! half failed is produced again in full). Consumers of the topic deduplicate on the message id
//! header `fs-message-id`, which every produced record carries (added from the dispatcher's
//! dedup key when the source record had none).

use crate::acked::{all_acked, AckedProducer};
use fleetstream_core::Code;
use fleetstream_dispatcher::routes::TargetKind;
use fleetstream_dispatcher::targets::{Delivery, Target, TargetError};
use fleetstream_dispatcher::{RoutingTable, MESSAGE_ID_HEADER};
use fleetstream_kafka::{KafkaError, OutRecord, ProducerSettings};
use futures::future::{BoxFuture, FutureExt};
use std::sync::Arc;

/// Produces delivered records to one Kafka topic. One producer per target.
pub struct KafkaTarget {
    name: String,
    topic: String,
    producer: AckedProducer,
}

impl std::fmt::Debug for KafkaTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTarget")
            .field("name", &self.name)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaTarget {
    /// A target called `name` producing to `topic` with `settings` (idempotent, `acks=all`).
    pub fn new(
        name: impl Into<String>,
        topic: impl Into<String>,
        settings: &ProducerSettings,
    ) -> Result<Self, KafkaError> {
        Ok(Self {
            name: name.into(),
            topic: topic.into(),
            producer: AckedProducer::new(settings)?,
        })
    }

    /// The destination topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// One [`KafkaTarget`] per `kafka` target of `table`, to hand to
    /// [`fleetstream_dispatcher::Dispatcher::new_with_targets`].
    pub fn for_routes(
        table: &RoutingTable,
        settings: &ProducerSettings,
    ) -> Result<Vec<Arc<dyn Target>>, KafkaError> {
        let mut targets: Vec<Arc<dyn Target>> = Vec::new();
        for (name, kind) in table.targets() {
            if let TargetKind::Kafka { topic } = kind {
                targets.push(Arc::new(Self::new(name, topic.as_str(), settings)?));
            }
        }
        Ok(targets)
    }

    /// Enqueues every record, then awaits every report (all of them, even after a failure, so
    /// no report outlives the call unobserved). Any failure fails the slice, retriably.
    async fn produce(&self, records: &[Delivery<'_>]) -> Result<(), TargetError> {
        let mut waits = Vec::with_capacity(records.len());
        let mut failure = None;
        for d in records {
            let r = d.record;
            let mut headers: Vec<(&str, &[u8])> = r
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            if r.message_id().is_none() {
                headers.push((MESSAGE_ID_HEADER, d.id.as_bytes()));
            }
            let out = OutRecord {
                topic: &self.topic,
                key: r.key.as_deref(),
                payload: &r.value,
                headers: &headers,
                timestamp_ms: None,
            };
            match self.producer.send(out).await {
                Ok(ack) => waits.push(ack),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Err(e) = all_acked(waits).await {
            failure = failure.or(Some(e));
        }
        match failure {
            None => Ok(()),
            Some(reason) => Err(TargetError::Unavailable {
                target: self.name.clone(),
                reason: format!("produce to topic {}: {reason}", self.topic),
            }),
        }
    }
}

impl Target for KafkaTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(
        &'a self,
        _code: Code,
        records: &'a [Delivery<'a>],
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        self.produce(records).boxed()
    }
}
