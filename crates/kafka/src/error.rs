//! Errors of the Kafka layer.

use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};

/// A Kafka operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// Creating a client failed (bad configuration).
    #[error("could not create the Kafka client: {0}")]
    Client(String),
    /// The embedded cluster could not start.
    #[error("could not start the embedded Kafka cluster: {0}")]
    Embedded(String),
    /// An admin or metadata call failed.
    #[error("Kafka admin call failed: {0}")]
    Admin(String),
    /// The local producer queue is full: wait for deliveries and retry.
    #[error("producer queue is full")]
    QueueFull,
    /// Producing failed.
    #[error("produce failed: {0}")]
    Produce(String),
    /// The client refused this one record for itself (larger than `message.max.bytes`, or
    /// invalid). The producer is fine: dead-letter the record and go on.
    #[error("record refused ({class}): {message}")]
    RecordRefused {
        /// Low-cardinality class, as [`crate::DeliveryFailure::class`]: `too_large` or
        /// `invalid_record`.
        class: &'static str,
        /// The client's message.
        message: String,
    },
    /// Consuming or committing failed.
    #[error("consume failed: {0}")]
    Consume(String),
    /// Timed out.
    #[error("timed out: {0}")]
    Timeout(String),
    /// librdkafka raised a fatal error (`rd_kafka_fatal_error`, e.g. an idempotent producer
    /// fenced): the client can do nothing more and must be replaced. Unlike a routine error (a broker down, a transport failure), which
    /// librdkafka recovers from by itself, this ends what the client was doing.
    #[error("fatal Kafka client error: {0}")]
    Fatal(String),
}

impl KafkaError {
    /// Whether retrying the same call may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            KafkaError::QueueFull | KafkaError::Timeout(_) | KafkaError::Produce(_)
        )
    }

    /// Whether the client that returned this can do nothing more (see [`KafkaError::Fatal`]).
    pub fn is_fatal(&self) -> bool {
        matches!(self, KafkaError::Fatal(_))
    }
}

/// Wraps a client-creation error, adding the cure when TLS/SASL was asked of a build without it.
pub(crate) fn client_error(e: &RdError) -> KafkaError {
    let text = e.to_string();
    if text.contains("OpenSSL not available") || (text.contains("SASL") && text.contains("not")) {
        KafkaError::Client(format!("{text} (this build has no TLS/SASL: rebuild with `--features tls`, which needs libssl-dev)"))
    } else if text.contains("ssl.key.location failed") {
        KafkaError::Client(format!(
            "{text} (the client's private key could not be read: a missing or wrong pass \
             phrase (ssl.key.password), or not a PEM key)"
        ))
    } else if text.contains("ssl.certificate.location failed") {
        KafkaError::Client(format!(
            "{text} (the client certificate could not be read: not a PEM certificate)"
        ))
    } else {
        KafkaError::Client(text)
    }
}

/// Classifies an error `send` returned: wait (queue full), this record only, the client is
/// gone (fatal), or anything else.
pub(crate) fn produce_error(e: &RdError) -> KafkaError {
    match e {
        RdError::MessageProduction(RDKafkaErrorCode::QueueFull) => KafkaError::QueueFull,
        RdError::MessageProduction(code) => match failure_kind(*code) {
            FailureKind::Record => KafkaError::RecordRefused {
                class: delivery_error_class(e),
                message: e.to_string(),
            },
            FailureKind::Fatal => KafkaError::Fatal(e.to_string()),
            FailureKind::Other => KafkaError::Produce(e.to_string()),
        },
        other => KafkaError::Produce(other.to_string()),
    }
}

/// What a failed send or delivery means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// About this record only (too large for the client or the broker, invalid): the producer
    /// is fine, the record goes to its dead-letter path.
    Record,
    /// librdkafka raised a fatal error: the producer can send nothing more.
    Fatal,
    /// Anything else: librdkafka has already retried (timeouts, missing replicas, ...).
    Other,
}

/// Whether an error code is about one record, the client, or neither.
pub(crate) fn failure_kind(code: RDKafkaErrorCode) -> FailureKind {
    match code {
        // The broker checks each batch against the topic's max.message.bytes, the client each
        // record against its message.max.bytes; the record is too large either way.
        RDKafkaErrorCode::MessageSizeTooLarge
        | RDKafkaErrorCode::MessageBatchTooLarge
        | RDKafkaErrorCode::InvalidMessageSize
        | RDKafkaErrorCode::InvalidMessage
        | RDKafkaErrorCode::InvalidRecord => FailureKind::Record,
        RDKafkaErrorCode::Fatal => FailureKind::Fatal,
        _ => FailureKind::Other,
    }
}

/// Low-cardinality class of a delivery failure, for metrics.
pub(crate) fn delivery_error_class(e: &RdError) -> &'static str {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageTimedOut) => "timed_out",
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidMessageSize,
        ) => "too_large",
        Some(RDKafkaErrorCode::InvalidMessage | RDKafkaErrorCode::InvalidRecord) => {
            "invalid_record"
        }
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) | Some(RDKafkaErrorCode::UnknownTopic) => {
            "unknown_topic"
        }
        Some(RDKafkaErrorCode::NotEnoughReplicas)
        | Some(RDKafkaErrorCode::NotEnoughReplicasAfterAppend) => "not_enough_replicas",
        Some(RDKafkaErrorCode::TopicAuthorizationFailed) => "authorization",
        Some(RDKafkaErrorCode::Fatal) => "fatal",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_errors_are_classified_per_record_fatal_or_wait() {
        let e = |c| produce_error(&RdError::MessageProduction(c));
        assert!(matches!(
            e(RDKafkaErrorCode::QueueFull),
            KafkaError::QueueFull
        ));
        assert!(matches!(
            e(RDKafkaErrorCode::MessageSizeTooLarge),
            KafkaError::RecordRefused {
                class: "too_large",
                ..
            }
        ));
        assert!(matches!(
            e(RDKafkaErrorCode::InvalidRecord),
            KafkaError::RecordRefused {
                class: "invalid_record",
                ..
            }
        ));
        assert!(matches!(e(RDKafkaErrorCode::Fatal), KafkaError::Fatal(_)));
        assert!(matches!(
            e(RDKafkaErrorCode::UnknownTopic),
            KafkaError::Produce(_)
        ));
    }
}
