//! Worker settings: the same batching knobs as Lambda's Kafka event source.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How a worker batches and retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Worker id, in dead-letter headers and logs. Default `<host>-<pid>-<n>`.
    pub worker_id: String,
    /// Most records per batch. Default 500 (Lambda allows up to 10,000).
    pub batch_max_records: usize,
    /// Most payload bytes per batch. Default 6 MB: Lambda's synchronous payload limit.
    pub batch_max_bytes: usize,
    /// Longest a batch waits to fill. Default 100 ms (Lambda's default is 500 ms).
    #[serde(with = "humantime_serde")]
    pub batch_window: Duration,
    /// Dispatch attempts per record before it is dead-lettered. Default 5.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt with full jitter. Default 50 ms.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Cap on the retry delay. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Batches queued for dispatch beyond the one in flight. When full, the worker pauses its
    /// partitions (still polling, so the group keeps it) until there is room. Default 2.
    pub max_batches_queued: usize,
    /// How long a closed batch may wait for room in the queue before the worker pauses its
    /// partitions. No polling happens meanwhile, so keep it well under the session timeout.
    /// Default 500 ms.
    #[serde(with = "humantime_serde")]
    pub pause_after: Duration,
    /// Key-ordered concurrency: dispatch a batch in this many lanes at once, each key always in
    /// the same lane (so per-key order holds, at most one dispatch per key in flight). Relieves a
    /// hot partition when the dispatcher, not Kafka, is the bottleneck (as Confluent's Parallel
    /// Consumer does). Default 1: one dispatch at a time, in partition order.
    pub key_lanes: usize,
    /// Split a batch that fails as a whole and retry the halves (Lambda's bisect-on-error), so
    /// one bad record cannot block its neighbours. Default true.
    pub bisect_on_error: bool,
    /// Records older than this (by record timestamp) are dead-lettered instead of retried
    /// again (Lambda's maximum record age). Default 1 h.
    #[serde(with = "humantime_serde")]
    pub max_record_age: Duration,
    /// On shutdown, how long queued batches may take to finish before they are abandoned
    /// (not committed: re-delivered later). Default 30 s.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl WorkerConfig {
    /// Defaults with a worker id.
    pub fn new(worker_id: impl Into<String>) -> Self {
        WorkerConfig {
            worker_id: worker_id.into(),
            batch_max_records: 500,
            batch_max_bytes: 6_000_000,
            batch_window: Duration::from_millis(100),
            max_attempts: 5,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            max_batches_queued: 2,
            pause_after: Duration::from_millis(500),
            key_lanes: 1,
            bisect_on_error: true,
            max_record_age: Duration::from_secs(3600),
            shutdown_timeout: Duration::from_secs(30),
        }
    }

    /// Checks the settings, naming the bad key.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_max_records == 0 || self.batch_max_records > 10_000 {
            return Err("batch_max_records must be between 1 and 10000 (Lambda's limit)".into());
        }
        if self.batch_max_bytes == 0 {
            return Err("batch_max_bytes must be at least 1".into());
        }
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        if self.key_lanes == 0 || self.key_lanes > 256 {
            return Err("key_lanes must be between 1 and 256".into());
        }
        if self.max_batches_queued == 0 {
            return Err("max_batches_queued must be at least 1".into());
        }
        Ok(())
    }

    /// Delay before retry number `attempt` (1-based): exponential with full jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .backoff_base
            .saturating_mul(1u32 << attempt.min(16).saturating_sub(1));
        let cap = exp.min(self.backoff_max);
        cap.mul_f64(rand::random::<f64>())
    }
}
