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
        }
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
