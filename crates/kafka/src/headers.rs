//! Header names and codec. Every produced record carries these; the dispatcher deduplicates on
//! [`MESSAGE_ID`], tracing follows [`TRACEPARENT`], latency is measured from [`PRODUCED_AT`].

/// Unique message id: the dispatcher's idempotency key. `<producer-run-hex>-<sequence>`.
pub const MESSAGE_ID: &str = "fs-message-id";
/// Correlation id shared by everything a message causes downstream.
pub const CORRELATION_ID: &str = "fs-correlation-id";
/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// Producer wall-clock time at send, milliseconds since the epoch, ASCII decimal.
pub const PRODUCED_AT: &str = "fs-produced-at";

/// Dead-letter headers (see the worker docs).
pub mod dead_letter {
    /// Error class (`not_json`, `missing_code`, `dispatch_failed`, ...).
    pub const ERROR_CLASS: &str = "fs-dlq-error-class";
    /// Human-readable error message.
    pub const ERROR_MESSAGE: &str = "fs-dlq-error-message";
    /// Source topic.
    pub const SOURCE_TOPIC: &str = "fs-dlq-source-topic";
    /// Source partition.
    pub const SOURCE_PARTITION: &str = "fs-dlq-source-partition";
    /// Source offset.
    pub const SOURCE_OFFSET: &str = "fs-dlq-source-offset";
    /// Source record timestamp (ms).
    pub const SOURCE_TIMESTAMP: &str = "fs-dlq-source-timestamp";
    /// Delivery attempts made.
    pub const ATTEMPTS: &str = "fs-dlq-attempts";
    /// Worker that dead-lettered it.
    pub const WORKER_ID: &str = "fs-dlq-worker-id";
}

/// Parses an ASCII decimal header value.
pub fn parse_u64(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}
