//! The dispatcher's own record type: one Kafka record, independent of any client library.

use fleetstream_obs::trace::TraceParent;

/// Header carrying the producer's unique message id. It is set once when the producer creates
/// the message, so it survives producer retries and consumer redeliveries alike.
pub const MESSAGE_ID_HEADER: &str = "fs-message-id";
/// Header carrying the correlation id shared by everything a message causes downstream.
pub const CORRELATION_ID_HEADER: &str = "fs-correlation-id";
/// Header carrying the W3C trace context (`00-<trace id>-<span id>-<flags>`).
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// One Kafka record as the dispatcher sees it: what a worker read from a partition, or what
/// Lambda put in one entry of a Kafka event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchRecord {
    /// Topic the record was read from.
    pub topic: String,
    /// Partition within the topic.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// Record timestamp, milliseconds since the Unix epoch (Kafka uses -1 for "none").
    pub timestamp_ms: i64,
    /// Record key, if any.
    pub key: Option<Vec<u8>>,
    /// Record value: the telemetry event bytes (JSON). A null value is an empty vector.
    pub value: Vec<u8>,
    /// Headers in wire order; names may repeat.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// The trace id of a W3C `traceparent`: its 32 lowercase hex digits, or `None` when the header
/// is malformed or an id is all zeros, which W3C trace context says to ignore
/// ([`TraceParent::parse`]).
pub fn trace_id(traceparent: &str) -> Option<&str> {
    TraceParent::parse(traceparent).and_then(|_| traceparent.get(3..35))
}

impl BatchRecord {
    /// Value of the first header called `name`, if any.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Value of the first header called `name` as text, if present, non-empty and UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .filter(|s| !s.is_empty())
    }

    /// The producer's unique message id (header `fs-message-id`), if present, non-empty and UTF-8.
    pub fn message_id(&self) -> Option<&str> {
        self.header_str(MESSAGE_ID_HEADER)
    }

    /// The correlation id (header `fs-correlation-id`), for logs that follow one message.
    pub fn correlation_id(&self) -> Option<&str> {
        self.header_str(CORRELATION_ID_HEADER)
    }

    /// The W3C trace id of a well-formed `traceparent` header ([`trace_id`]).
    pub fn trace_id(&self) -> Option<&str> {
        trace_id(self.header_str(TRACEPARENT_HEADER)?)
    }

    /// The well-formed `traceparent` header, parsed: the producer's span and its sampling
    /// decision.
    pub fn trace_parent(&self) -> Option<TraceParent> {
        TraceParent::parse(self.header_str(TRACEPARENT_HEADER)?)
    }

    /// The key the idempotency store deduplicates on: the message id, else
    /// `topic-partition-offset`.
    ///
    /// The fallback only recognises *redeliveries* of the same stored record (consumer retries,
    /// Lambda retries, rebalances). A producer retry that wrote the message twice lands at two
    /// offsets and is not caught by it: that is what the message id header is for.
    pub fn dedup_key(&self) -> String {
        match self.message_id() {
            Some(id) => id.to_owned(),
            None => self.coordinates(),
        }
    }

    /// `topic-partition-offset`, the record's position, used in logs and as the fallback key.
    pub fn coordinates(&self) -> String {
        format!("{}-{}-{}", self.topic, self.partition, self.offset)
    }

    /// `topic-partition`, the key of Lambda's `records` map for this record.
    pub fn topic_partition(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(headers: Vec<(String, Vec<u8>)>) -> BatchRecord {
        BatchRecord {
            topic: "mt-c300".into(),
            partition: 2,
            offset: 41,
            headers,
            ..Default::default()
        }
    }

    #[test]
    fn dedup_key_prefers_message_id() {
        let r = record(vec![
            ("other".into(), b"x".to_vec()),
            (MESSAGE_ID_HEADER.into(), b"msg-1".to_vec()),
        ]);
        assert_eq!(r.message_id(), Some("msg-1"));
        assert_eq!(r.dedup_key(), "msg-1");
        assert_eq!(r.header("other"), Some(&b"x"[..]));
    }

    #[test]
    fn dedup_key_falls_back_to_coordinates() {
        assert_eq!(record(vec![]).dedup_key(), "mt-c300-2-41");
        // Empty or non-UTF-8 ids are not ids.
        let empty = record(vec![(MESSAGE_ID_HEADER.into(), vec![])]);
        assert_eq!(empty.message_id(), None);
        let binary = record(vec![(MESSAGE_ID_HEADER.into(), vec![0xff])]);
        assert_eq!(binary.dedup_key(), "mt-c300-2-41");
    }

    #[test]
    fn correlation_and_trace_ids_come_from_their_headers() {
        let r = record(vec![
            (CORRELATION_ID_HEADER.into(), b"run-7".to_vec()),
            (
                TRACEPARENT_HEADER.into(),
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec(),
            ),
        ]);
        assert_eq!(r.correlation_id(), Some("run-7"));
        assert_eq!(r.trace_id(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        // A later version may append fields.
        assert_eq!(
            trace_id("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736",
            "garbage",
        ] {
            let r = record(vec![(TRACEPARENT_HEADER.into(), bad.as_bytes().to_vec())]);
            assert_eq!(r.trace_id(), None, "{bad}");
        }
        assert_eq!(record(vec![]).correlation_id(), None);
    }
}
