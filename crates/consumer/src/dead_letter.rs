//! Writes records the pipeline could not process to the dead-letter topic, with the reason,
//! and waits for the `acks=all` acknowledgement. Only then may the source offset be stored.

use crate::acked::{all_acked, AckedProducer};
use fleetstream_kafka::{headers::dead_letter as h, KafkaError, OutRecord, ProducerSettings};

/// A record to dead-letter, with why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Destination (the source topic's dead-letter topic).
    pub topic: String,
    /// Source topic.
    pub source_topic: String,
    /// Source partition.
    pub source_partition: i32,
    /// Source offset.
    pub source_offset: i64,
    /// Source timestamp, ms.
    pub source_timestamp_ms: i64,
    /// Original key.
    pub key: Option<Vec<u8>>,
    /// Original value, untouched.
    pub value: Vec<u8>,
    /// Original headers (kept, so the message id travels on).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Error class (low cardinality).
    pub error_class: String,
    /// Error message.
    pub error_message: String,
    /// Attempts made.
    pub attempts: u32,
}

/// The dead-letter producer.
pub struct DeadLetterWriter {
    producer: AckedProducer,
    worker_id: String,
}

impl DeadLetterWriter {
    /// Creates the writer.
    pub fn new(
        settings: &ProducerSettings,
        worker_id: impl Into<String>,
    ) -> Result<Self, KafkaError> {
        Ok(DeadLetterWriter {
            producer: AckedProducer::new(settings)?,
            worker_id: worker_id.into(),
        })
    }

    /// Writes every letter and waits for all acks. `Err` if any write failed: the caller must
    /// not store the source offsets, and retries.
    pub async fn write_all(&self, letters: &[DeadLetter]) -> Result<(), String> {
        let mut waits = Vec::with_capacity(letters.len());
        for l in letters {
            let partition = l.source_partition.to_string();
            let offset = l.source_offset.to_string();
            let ts = l.source_timestamp_ms.to_string();
            let attempts = l.attempts.to_string();
            let mut hdrs: Vec<(&str, &[u8])> = l
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            hdrs.extend([
                (h::ERROR_CLASS, l.error_class.as_bytes()),
                (h::ERROR_MESSAGE, l.error_message.as_bytes()),
                (h::SOURCE_TOPIC, l.source_topic.as_bytes()),
                (h::SOURCE_PARTITION, partition.as_bytes()),
                (h::SOURCE_OFFSET, offset.as_bytes()),
                (h::SOURCE_TIMESTAMP, ts.as_bytes()),
                (h::ATTEMPTS, attempts.as_bytes()),
                (h::WORKER_ID, self.worker_id.as_bytes()),
            ]);
            let record = OutRecord {
                topic: &l.topic,
                key: l.key.as_deref(),
                payload: &l.value,
                headers: &hdrs,
                timestamp_ms: None,
            };
            waits.push(self.producer.send(record).await?);
        }
        all_acked(waits).await
    }
}
