//! Metric names of the worker (`fleetstream worker --metrics-addr`), documented in
//! docs/OPERATIONS.md under "Worker metrics". Labels: `topic`, `partition`, `reason`.

/// Counter, labels `topic`, `partition`: records read from Kafka (re-deliveries included).
pub const CONSUMED_TOTAL: &str = "fleetstream_worker_consumed_total";
/// Counter: records dispatched with an effect.
pub const DISPATCHED_TOTAL: &str = "fleetstream_worker_dispatched_total";
/// Counter: re-deliveries the dispatcher recognised (no second effect).
pub const DUPLICATES_TOTAL: &str = "fleetstream_worker_duplicates_total";
/// Counter, label `reason`: records written to a dead-letter topic.
pub const DEAD_LETTERED_TOTAL: &str = "fleetstream_worker_dead_lettered_total";
/// Counter: records skipped by the dispatcher's unknown-code policy.
pub const SKIPPED_TOTAL: &str = "fleetstream_worker_skipped_total";
/// Counter: records sent again after a failure.
pub const RETRIES_TOTAL: &str = "fleetstream_worker_retries_total";
/// Counter: dispatches refused as throttled (429 / TooManyRequests).
pub const THROTTLED_TOTAL: &str = "fleetstream_worker_throttled_total";
/// Counter: batches split after failing as a whole.
pub const BISECTIONS_TOTAL: &str = "fleetstream_worker_bisections_total";
/// Counter: batches dispatched.
pub const BATCHES_TOTAL: &str = "fleetstream_worker_batches_total";
/// Counter: times partitions were paused for backpressure.
pub const PAUSES_TOTAL: &str = "fleetstream_worker_pauses_total";
/// Gauge: partitions paused now.
pub const PAUSED_PARTITIONS: &str = "fleetstream_worker_paused_partitions";
/// Gauge, labels `topic`, `partition`: records written and not committed by the group (the
/// SLO). Refreshed every 5 s from the brokers.
pub const LAG: &str = "fleetstream_worker_lag";
/// Histogram (seconds): producer timestamp header to dispatch acknowledged.
pub const E2E_LATENCY_SECONDS: &str = "fleetstream_worker_e2e_latency_seconds";
/// Histogram (seconds): one dispatch call.
pub const DISPATCH_LATENCY_SECONDS: &str = "fleetstream_worker_dispatch_latency_seconds";

/// Histogram (seconds): first record of a batch to its dispatch (the batching window at work).
pub const BATCH_FILL_SECONDS: &str = "fleetstream_worker_batch_fill_seconds";
/// Gauge: mean records per batch so far.
pub const BATCH_RECORDS_MEAN: &str = "fleetstream_worker_batch_records_mean";

/// Bucket bounds (seconds) for both histograms: 1 ms to 60 s. The batch window (100 ms by
/// default) sets the floor of end-to-end latency; seconds mean backpressure or retries.
pub const LATENCY_BUCKETS_SECONDS: [f64; 15] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
];
