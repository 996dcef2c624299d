//! Metric names of the producer (`fleetstream produce --metrics-addr`), documented in
//! docs/OPERATIONS.md under "Producer metrics". Labels stay low-cardinality: `topic`,
//! `partition`, `class`, `clock`; never a truck or message id.

/// Counter: messages handed to librdkafka for the source topics.
pub const SENT_TOTAL: &str = "fleetstream_producer_sent_total";
/// Counter: payload bytes handed to librdkafka.
pub const SENT_BYTES_TOTAL: &str = "fleetstream_producer_sent_bytes_total";
/// Counter: messages acknowledged by the cluster (`acks=all`).
pub const ACKED_TOTAL: &str = "fleetstream_producer_acked_total";
/// Counter, labels `topic`, `partition`: acknowledged messages per partition.
pub const PARTITION_ACKED_TOTAL: &str = "fleetstream_producer_partition_acked_total";
/// Counter, label `class`: deliveries that failed after librdkafka's own retries.
pub const FAILED_TOTAL: &str = "fleetstream_producer_failed_total";
/// Counter, label `class`: events rejected before sending (no extractable code).
pub const REJECTED_TOTAL: &str = "fleetstream_producer_rejected_total";
/// Counter: rejected events written to the reject file or acked on the dead-letter topic.
pub const REJECTS_WRITTEN_TOTAL: &str = "fleetstream_producer_rejects_written_total";
/// Counter: malformed events injected on purpose (`--poison-rate`).
pub const POISON_INJECTED_TOTAL: &str = "fleetstream_producer_poison_injected_total";
/// Counter: produce request retries (librdkafka statistics).
pub const RETRIES_TOTAL: &str = "fleetstream_producer_retries_total";
/// Counter: times librdkafka's queue was full (the producer waited).
pub const QUEUE_FULL_TOTAL: &str = "fleetstream_producer_queue_full_total";
/// Counter (seconds): time spent waiting on a full queue.
pub const QUEUE_FULL_WAIT_SECONDS_TOTAL: &str =
    "fleetstream_producer_queue_full_wait_seconds_total";
/// Gauge: records in librdkafka's queue, not yet acknowledged.
pub const QUEUE_DEPTH: &str = "fleetstream_producer_queue_depth";
/// Gauge (msg/s): the target rate now (0 = unthrottled); `POST /rate?value=N` changes it.
pub const RATE_TARGET: &str = "fleetstream_producer_rate_target";
/// Gauge (msg/s): messages sent per second over the last few seconds.
pub const SEND_RATE: &str = "fleetstream_producer_send_rate";
/// Histogram (seconds), label `clock` (`send` or `intended`): delivery report minus the actual
/// send time, and minus the token bucket's intended send time (coordinated-omission safe).
pub const ACK_LATENCY_SECONDS: &str = "fleetstream_producer_ack_latency_seconds";

/// Upper bounds (seconds) of the ack latency buckets: 0.5 ms to 30 s. `linger.ms` is 5 ms, an
/// acks=all round trip a few ms; seconds mean a saturated queue or a broker in trouble.
pub const ACK_LATENCY_BUCKETS_SECONDS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
    30.0,
];
