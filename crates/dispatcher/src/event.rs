//! Conversion between [`BatchRecord`]s and the AWS Lambda Kafka event
//! ([`aws_lambda_events::event::kafka::KafkaEvent`]).
//!
//! The shape: `{"eventSource": "aws:kafka", "records": {"<topic>-<partition>": [record, ...]}}`,
//! each record with a base64 `key` and `value`, a millisecond `timestamp` and `headers` as a list
//! of one-entry maps `{name: [signed bytes]}` (Java's `byte` is signed; `aws_lambda_events` types
//! them `Vec<i8>`).
//!
//! Two traps in `aws_lambda_events` 1.2 shape this module:
//! - serializing a [`KafkaEvent`] writes `timestamp` as a *string*, while AWS sends a *number*;
//!   [`to_event_json`] writes AWS's shape.
//! - deserializing a fractional timestamp (`1.5`) *panics* inside the crate (an `assert_eq!`),
//!   and whole ones are converted through `f64` seconds, losing a millisecond on many values.
//!   [`decode_event_json`] and [`decode_event_value`] check timestamps first and restore the
//!   exact values, so untrusted JSON (the local HTTP server, the Lambda binary) should go through
//!   them, not through `serde_json` into [`KafkaEvent`]: the Lambda binary should take a
//!   `serde_json::Value` payload rather than `LambdaEvent<KafkaEvent>`.

use crate::record::BatchRecord;
use aws_lambda_events::encodings::MillisecondTimestamp;
use aws_lambda_events::event::kafka::{KafkaEvent, KafkaRecord};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use std::collections::{BTreeMap, HashMap};

/// `eventSource` of events from MSK; self-managed Kafka uses `SelfManagedKafka`. Both decode.
pub const EVENT_SOURCE: &str = "aws:kafka";

/// Why an event could not be decoded. Always the caller's fault (a client error, HTTP 400): the
/// whole batch is rejected, nothing is dispatched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or JSON that does not have the Kafka event shape.
    #[error("event is not a Kafka event: {0}")]
    Shape(String),
    /// A timestamp that is not a non-negative integer number of milliseconds.
    #[error("record {records_key}[{index}]: timestamp {value} is not a whole, non-negative number of milliseconds")]
    Timestamp {
        /// Key of the `records` map entry.
        records_key: String,
        /// Index in that entry's list.
        index: usize,
        /// The offending value, as JSON.
        value: String,
    },
    /// `key` or `value` is not valid base64.
    #[error("record {topic}-{partition}@{offset}: field `{field}` is not valid base64")]
    Base64 {
        /// Record topic.
        topic: String,
        /// Record partition.
        partition: i64,
        /// Record offset.
        offset: i64,
        /// `key` or `value`.
        field: &'static str,
    },
    /// The partition does not fit Kafka's 32-bit partition number.
    #[error("record {topic}@{offset}: partition {partition} is out of range")]
    Partition {
        /// Record topic.
        topic: String,
        /// The partition as sent.
        partition: i64,
        /// Record offset.
        offset: i64,
    },
    /// A record without `topic` whose `records` key does not name one either.
    #[error("records entry `{0}` has a record without a topic")]
    MissingTopic(String),
}

impl DecodeError {
    /// Low-cardinality class for metrics and error responses.
    pub fn class(&self) -> &'static str {
        match self {
            DecodeError::Shape(_) => "shape",
            DecodeError::Timestamp { .. } => "timestamp",
            DecodeError::Base64 { .. } => "base64",
            DecodeError::Partition { .. } => "partition",
            DecodeError::MissingTopic(_) => "missing_topic",
        }
    }
}

/// Builds the Lambda event for `records`, grouped under `"<topic>-<partition>"` in input order.
///
/// Kafka's `-1` ("no timestamp") and other negative timestamps become `0`: the AWS type cannot
/// carry them through JSON (its decoder rejects negative values).
pub fn to_kafka_event(records: &[BatchRecord]) -> KafkaEvent {
    let mut grouped: HashMap<String, Vec<KafkaRecord>> = HashMap::new();
    for record in records {
        grouped
            .entry(record.topic_partition())
            .or_default()
            .push(to_kafka_record(record));
    }
    let mut event = KafkaEvent::default();
    event.event_source = Some(EVENT_SOURCE.to_owned());
    event.records = grouped;
    event
}

fn to_kafka_record(record: &BatchRecord) -> KafkaRecord {
    let mut out = KafkaRecord::default();
    out.topic = Some(record.topic.clone());
    out.partition = i64::from(record.partition);
    out.offset = record.offset;
    out.timestamp = MillisecondTimestamp(
        chrono::DateTime::from_timestamp_millis(record.timestamp_ms.max(0)).unwrap_or_default(),
    );
    out.timestamp_type = Some("CREATE_TIME".to_owned());
    out.key = record.key.as_deref().map(|k| BASE64.encode(k));
    out.value = Some(BASE64.encode(&record.value));
    out.headers = record
        .headers
        .iter()
        .map(|(name, value)| {
            let signed = value.iter().map(|&b| b as i8).collect();
            HashMap::from([(name.clone(), signed)])
        })
        .collect();
    out
}

/// The event as AWS sends it: like `serde_json::to_value(to_kafka_event(..))` but with numeric
/// timestamps.
pub fn to_event_json(records: &[BatchRecord]) -> serde_json::Value {
    let mut value = serde_json::to_value(to_kafka_event(records)).unwrap_or_default();
    if let Some(map) = value.get_mut("records").and_then(|r| r.as_object_mut()) {
        for list in map.values_mut().filter_map(|l| l.as_array_mut()) {
            for record in list {
                let numeric = record
                    .get("timestamp")
                    .and_then(|t| t.as_str())
                    .and_then(|s| s.parse::<u64>().ok());
                if let (Some(ms), Some(obj)) = (numeric, record.as_object_mut()) {
                    obj.insert("timestamp".into(), ms.into());
                }
            }
        }
    }
    value
}

/// Decodes a typed event into records, ordered by topic, partition, then as listed (offset order).
///
/// Timestamps are taken as the event holds them: if it was deserialized by `aws_lambda_events`
/// they may be a millisecond off (see the module docs); prefer [`decode_event_value`].
pub fn from_kafka_event(event: KafkaEvent) -> Result<Vec<BatchRecord>, DecodeError> {
    let mut sorted: BTreeMap<(String, i64), Vec<BatchRecord>> = BTreeMap::new();
    for (records_key, list) in event.records {
        for record in list {
            let decoded = from_kafka_record(&records_key, record)?;
            sorted
                .entry((decoded.topic.clone(), i64::from(decoded.partition)))
                .or_default()
                .push(decoded);
        }
    }
    Ok(sorted.into_values().flatten().collect())
}

fn from_kafka_record(records_key: &str, record: KafkaRecord) -> Result<BatchRecord, DecodeError> {
    let topic = match record.topic {
        Some(t) if !t.is_empty() => t,
        _ => records_key
            .rsplit_once('-')
            .map(|(t, _)| t.to_owned())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| DecodeError::MissingTopic(records_key.to_owned()))?,
    };
    let (partition_raw, offset) = (record.partition, record.offset);
    let partition = i32::try_from(partition_raw).map_err(|_| DecodeError::Partition {
        topic: topic.clone(),
        partition: partition_raw,
        offset,
    })?;
    let b64 = |field: &'static str, text: &str| {
        BASE64.decode(text).map_err(|_| DecodeError::Base64 {
            topic: topic.clone(),
            partition: partition_raw,
            offset,
            field,
        })
    };
    let key = record.key.as_deref().map(|k| b64("key", k)).transpose()?;
    let value = match record.value.as_deref() {
        Some(v) => b64("value", v)?,
        None => Vec::new(),
    };
    let mut headers = Vec::new();
    for map in record.headers {
        // Each map holds one header in AWS's shape; sort in case a sender packed several.
        let mut entries: Vec<_> = map.into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        headers.extend(
            entries
                .into_iter()
                .map(|(name, bytes)| (name, bytes.into_iter().map(|b| b as u8).collect())),
        );
    }
    Ok(BatchRecord {
        topic,
        partition,
        offset,
        timestamp_ms: record.timestamp.timestamp_millis(),
        key,
        value,
        headers,
    })
}

/// Decodes untrusted JSON bytes (AWS's shape, numeric or string timestamps) without panicking.
pub fn decode_event_json(bytes: &[u8]) -> Result<Vec<BatchRecord>, DecodeError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Shape(e.to_string()))?;
    decode_event_value(value)
}

/// Decodes an untrusted JSON value with `aws_lambda_events`, after checking every timestamp is
/// whole milliseconds (its decoder panics on fractions) and then restoring the exact values
/// (its decoder goes through `f64` seconds and loses a millisecond on many timestamps, e.g.
/// `1700000000123` -> `1700000000122`).
pub fn decode_event_value(value: serde_json::Value) -> Result<Vec<BatchRecord>, DecodeError> {
    let exact = exact_timestamps(&value)?;
    let mut event: KafkaEvent =
        serde_json::from_value(value).map_err(|e| DecodeError::Shape(e.to_string()))?;
    for (records_key, index, ms) in exact {
        let record = event
            .records
            .get_mut(&records_key)
            .and_then(|l| l.get_mut(index));
        let timestamp = i64::try_from(ms)
            .ok()
            .and_then(chrono::DateTime::from_timestamp_millis);
        if let (Some(record), Some(timestamp)) = (record, timestamp) {
            record.timestamp = MillisecondTimestamp(timestamp);
        }
    }
    from_kafka_event(event)
}

/// Every record's timestamp as exact milliseconds, by `records` key and index; an error for
/// any timestamp that is not a whole, non-negative number (or string of digits).
fn exact_timestamps(value: &serde_json::Value) -> Result<Vec<(String, usize, u64)>, DecodeError> {
    let mut out = Vec::new();
    let Some(records) = value.get("records").and_then(|r| r.as_object()) else {
        return Ok(out); // missing/null records: an empty event; other shapes fail in serde.
    };
    for (records_key, list) in records {
        let Some(list) = list.as_array() else {
            continue;
        };
        for (index, record) in list.iter().enumerate() {
            let Some(ts) = record.get("timestamp") else {
                continue;
            };
            let ms = match ts {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::String(s) if s.bytes().all(|b| b.is_ascii_digit()) => {
                    s.parse().ok()
                }
                _ => None,
            };
            match ms {
                Some(ms) => out.push((records_key.clone(), index, ms)),
                None => {
                    return Err(DecodeError::Timestamp {
                        records_key: records_key.clone(),
                        index,
                        value: ts.to_string(),
                    })
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
