//! The dispatcher's own record type: one Kafka record, independent of any client library.

/// Header carrying the producer's unique message id. It is set once when the producer creates
/// the message, so it survives producer retries and consumer redeliveries alike.
pub const MESSAGE_ID_HEADER: &str = "fs-message-id";

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

impl BatchRecord {
    /// Value of the first header called `name`, if any.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The producer's unique message id (header `fs-message-id`), if present, non-empty and UTF-8.
    pub fn message_id(&self) -> Option<&str> {
        self.header(MESSAGE_ID_HEADER)
            .and_then(|v| std::str::from_utf8(v).ok())
            .filter(|s| !s.is_empty())
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
}
