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

impl DeadLetter {
    /// Value of the first original header called `name` as text, if non-empty UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .filter(|v| !v.is_empty())
    }

    /// Logs the letter with the ids that follow its message (message id, correlation id, trace
    /// id), so an operator can find it from any of them.
    pub(crate) fn log(&self, worker: &str) {
        use fleetstream_dispatcher::{
            CORRELATION_ID_HEADER, MESSAGE_ID_HEADER, TRACEPARENT_HEADER,
        };
        tracing::info!(
            target: "fleetstream::dead_letter",
            worker,
            dead_letter_topic = %self.topic,
            source_topic = %self.source_topic,
            source_partition = self.source_partition,
            source_offset = self.source_offset,
            message_id = self.header_str(MESSAGE_ID_HEADER).unwrap_or_default(),
            correlation_id = self.header_str(CORRELATION_ID_HEADER).unwrap_or_default(),
            trace_id = self
                .header_str(TRACEPARENT_HEADER)
                .and_then(fleetstream_dispatcher::trace_id)
                .unwrap_or_default(),
            class = %self.error_class,
            error = %self.error_message,
            attempts = self.attempts,
            "dead-lettered"
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_dead_letter_logs_the_ids_that_follow_its_message() {
        let letter = DeadLetter {
            topic: "mt-c300-dlq".into(),
            source_topic: "mt-c300".into(),
            source_partition: 2,
            source_offset: 41,
            source_timestamp_ms: 1_700_000_000_000,
            key: None,
            value: b"not json".to_vec(),
            headers: vec![
                ("fs-message-id".into(), b"abc-7".to_vec()),
                ("fs-correlation-id".into(), b"corr-1".to_vec()),
                (
                    "traceparent".into(),
                    b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec(),
                ),
            ],
            error_class: "not_json".into(),
            error_message: "expected value at line 1".into(),
            attempts: 1,
        };
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || letter.log("w1"));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        let fields = &line["fields"];
        assert_eq!(fields["message"], "dead-lettered", "{text}");
        assert_eq!(fields["message_id"], "abc-7", "{text}");
        assert_eq!(fields["correlation_id"], "corr-1", "{text}");
        assert_eq!(
            fields["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
            "{text}"
        );
        assert_eq!(fields["class"], "not_json", "{text}");
        assert_eq!(fields["source_offset"], 41, "{text}");
    }
}
