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

    /// Logs the letter at debug level (target `fleetstream::dead_letter`) with the ids that
    /// follow its message (message id, correlation id, trace id), so an operator can find it
    /// from any of them. The error is cut to [`LOGGED_ERROR_CHARS`]: a schema error quotes the
    /// event, which should stay in the dead-letter topic rather than the log pipeline.
    pub(crate) fn log(&self, worker: &str) {
        use fleetstream_dispatcher::{
            CORRELATION_ID_HEADER, MESSAGE_ID_HEADER, TRACEPARENT_HEADER,
        };
        tracing::debug!(
            target: "fleetstream::dead_letter",
            worker,
            dead_letter_topic = %self.topic,
            source_topic = %self.source_topic,
            source_partition = self.source_partition,
            source_offset = self.source_offset,
            message_id = self.header_str(MESSAGE_ID_HEADER),
            correlation_id = self.header_str(CORRELATION_ID_HEADER),
            trace_id = self
                .header_str(TRACEPARENT_HEADER)
                .and_then(fleetstream_dispatcher::trace_id),
            class = %self.error_class,
            error = %cut(&self.error_message, LOGGED_ERROR_CHARS),
            attempts = self.attempts,
            "dead-lettered"
        );
    }
}

/// How much of a dead letter's error message its log line carries.
pub const LOGGED_ERROR_CHARS: usize = 200;

/// The first `max` characters of `text`, with `…` when cut.
pub(crate) fn cut(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]).into(),
        None => text.into(),
    }
}

/// One line per write of dead letters (info, target `fleetstream::dead_letter`): how many, by
/// class. The per-letter lines with their ids are at debug level, so a batch that dead-letters
/// every record does not flood the log.
pub(crate) fn log_written(worker: &str, letters: &[DeadLetter]) {
    let mut classes = std::collections::BTreeMap::<&str, usize>::new();
    for l in letters {
        *classes.entry(l.error_class.as_str()).or_default() += 1;
    }
    let classes: Vec<String> = classes.iter().map(|(c, n)| format!("{c}={n}")).collect();
    tracing::info!(
        target: "fleetstream::dead_letter",
        worker,
        records = letters.len(),
        classes = %classes.join(","),
        "dead letters written"
    );
    for l in letters {
        l.log(worker);
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
            error_message: format!("invalid type: string \"{}\"", "x".repeat(500)),
            attempts: 1,
        };
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        let mut anonymous = letter.clone();
        anonymous.headers.clear();
        tracing::subscriber::with_default(subscriber, || {
            log_written("w1", &[letter.clone(), anonymous])
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0]["level"], "INFO", "{text}");
        assert_eq!(lines[0]["fields"]["records"], 2, "{text}");
        assert_eq!(lines[0]["fields"]["classes"], "not_json=2", "{text}");
        let fields = &lines[1]["fields"];
        assert_eq!(lines[1]["level"], "DEBUG", "{text}");
        assert_eq!(fields["message"], "dead-lettered", "{text}");
        assert_eq!(fields["message_id"], "abc-7", "{text}");
        assert_eq!(fields["correlation_id"], "corr-1", "{text}");
        assert_eq!(
            fields["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
            "{text}"
        );
        assert_eq!(fields["class"], "not_json", "{text}");
        assert_eq!(fields["source_offset"], 41, "{text}");
        // The error is cut: a schema error quotes the event.
        let error = fields["error"].as_str().unwrap();
        assert_eq!(error.chars().count(), LOGGED_ERROR_CHARS + 1, "{error}");
        assert!(error.ends_with('…'), "{error}");
        // A letter without the headers has no id fields, not empty ones.
        let bare = lines[2]["fields"].as_object().unwrap();
        assert!(
            !bare.contains_key("message_id") && !bare.contains_key("trace_id"),
            "{text}"
        );
    }

    #[test]
    fn header_names_match_the_kafka_layer() {
        use fleetstream_kafka::headers;
        assert_eq!(
            fleetstream_dispatcher::MESSAGE_ID_HEADER,
            headers::MESSAGE_ID
        );
        assert_eq!(
            fleetstream_dispatcher::CORRELATION_ID_HEADER,
            headers::CORRELATION_ID
        );
        assert_eq!(
            fleetstream_dispatcher::TRACEPARENT_HEADER,
            headers::TRACEPARENT
        );
    }
}
