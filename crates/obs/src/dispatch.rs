//! Metric names of the dispatcher (crates/dispatcher) and its local Invoke server, exported in
//! the Prometheus text format on `GET /metrics` of `fleetstream dispatch serve`.
//!
//! Labels stay low-cardinality: `target` (a routing-table name), `code` (an event code, a few
//! dozen at most), `outcome`, `status`. Never a truck or message id.

/// Counter, labels `target`, `code`: records a target took (the effect happened).
pub const DISPATCHED_TOTAL: &str = "fleetstream_dispatch_dispatched_total";
/// Counter, labels `target`, `code`: records a target failed to take (retriable or not).
pub const FAILED_TOTAL: &str = "fleetstream_dispatch_failed_total";
/// Counter, labels `target`, `code`: redeliveries suppressed by the idempotency store (or
/// repeated inside one batch), so no second effect happened.
pub const DUPLICATES_TOTAL: &str = "fleetstream_dispatch_duplicates_suppressed_total";
/// Histogram (seconds), labels `target`, `code`: time of one delivery call (one slice of a batch
/// with one code) to one target, retries included.
pub const DELIVERY_SECONDS: &str = "fleetstream_dispatch_delivery_seconds";
/// Counter, label `outcome` (`dispatched`, `duplicate`, `failed`, `skipped`, `conflict`): records
/// by final outcome, across targets.
pub const RECORDS_TOTAL: &str = "fleetstream_dispatch_records_total";
/// Histogram (seconds), no labels: Kafka-to-dispatcher time, the age of each record (its Kafka
/// timestamp, the producer's send time) when the dispatch of its batch began. Lag in time, as
/// the dispatcher sees it, whether a worker or an event source mapping delivered the batch.
pub const RECORD_AGE_SECONDS: &str = "fleetstream_dispatch_record_age_seconds";
/// Counter, label `status` (HTTP status code): Invoke requests answered by the local server.
pub const INVOCATIONS_TOTAL: &str = "fleetstream_dispatch_invocations_total";
/// Histogram (seconds), no labels: time to answer one Invoke request (decode, dispatch, encode).
pub const INVOCATION_SECONDS: &str = "fleetstream_dispatch_invocation_seconds";

/// Upper bounds (seconds) of the latency histogram buckets: 0.5 ms to 10 s, covering an
/// in-process sink (sub-millisecond) up to an HTTP target retrying with backoff.
pub const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
