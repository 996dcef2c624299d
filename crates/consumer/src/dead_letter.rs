//! Writes records the pipeline could not process to the dead-letter topic, with the reason,
//! and waits for the `acks=all` acknowledgement. Only then may the source offset be stored.

use fleetstream_kafka::{
    headers::dead_letter as h, DeliveryHandler, DeliveryReport, KafkaError, KafkaProducer,
    OutRecord, ProducerSettings,
};
use std::sync::Arc;
use tokio::sync::oneshot;

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

struct AckHandler;

impl DeliveryHandler for AckHandler {
    type Token = oneshot::Sender<Result<(), String>>;
    fn delivered(&self, token: Self::Token, report: DeliveryReport<'_>) {
        let _ = token.send(
            report
                .result
                .map_err(|f| format!("{}: {}", f.class, f.message)),
        );
    }
}

/// The dead-letter producer.
pub struct DeadLetterWriter {
    producer: KafkaProducer<AckHandler>,
    worker_id: String,
}

impl DeadLetterWriter {
    /// Creates the writer.
    pub fn new(
        settings: &ProducerSettings,
        worker_id: impl Into<String>,
    ) -> Result<Self, KafkaError> {
        Ok(DeadLetterWriter {
            producer: KafkaProducer::new(settings, Arc::new(AckHandler))?,
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
            };
            let (tx, rx) = oneshot::channel();
            let mut token = tx;
            loop {
                match self.producer.send(record, token) {
                    Ok(()) => break,
                    Err((KafkaError::QueueFull, back)) => {
                        token = back;
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(e.to_string()),
                }
            }
            waits.push(rx);
        }
        let mut first_error = None;
        for w in waits {
            match w.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => first_error = first_error.or(Some(e)),
                Err(_) => first_error = first_error.or(Some("delivery report lost".to_string())),
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
