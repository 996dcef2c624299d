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
    /// How long the worker waits for the answer to one dispatch call over HTTP before it gives
    /// up and retries the batch with backoff. The dispatcher runs a dispatch it began to its
    /// settlement whether or not the worker still waits, so the retry finds its records as
    /// duplicates (or `in_progress`, retried again), never applies them twice. Must be more
    /// than zero: a zero timeout would give up on every call before any answer. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub dispatch_timeout: Duration,
}

/// A worker setting out of range, by key. Each key is also the `fleetstream worker` flag of the
/// same name with dashes (`dispatch_timeout`: `--dispatch-timeout`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} {reason}")]
pub struct InvalidSetting {
    /// The setting's key, e.g. `dispatch_timeout`.
    pub key: &'static str,
    /// Why the value is refused, e.g. `must be more than 0`.
    pub reason: &'static str,
}

fn invalid(key: &'static str, reason: &'static str) -> Result<(), InvalidSetting> {
    Err(InvalidSetting { key, reason })
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
            dispatch_timeout: Duration::from_secs(30),
        }
    }

    /// Checks the settings, naming the bad key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.batch_max_records == 0 || self.batch_max_records > 10_000 {
            return invalid(
                "batch_max_records",
                "must be between 1 and 10000 (Lambda's limit)",
            );
        }
        if self.batch_max_bytes == 0 {
            return invalid("batch_max_bytes", "must be at least 1");
        }
        if self.max_attempts == 0 {
            return invalid("max_attempts", "must be at least 1");
        }
        if self.key_lanes == 0 || self.key_lanes > 256 {
            return invalid("key_lanes", "must be between 1 and 256");
        }
        if self.max_batches_queued == 0 {
            return invalid("max_batches_queued", "must be at least 1");
        }
        if self.dispatch_timeout.is_zero() {
            return invalid(
                "dispatch_timeout",
                "must be more than 0 (a zero timeout gives up on every dispatch before its answer)",
            );
        }
        if self.max_record_age.is_zero() {
            return invalid(
                "max_record_age",
                "must be more than 0 (a zero age dead-letters every record before its first retry)",
            );
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12, defect 5: `--dispatch-timeout 0s` was accepted, and every dispatch call then
    /// gave up before its answer.
    #[test]
    fn zero_dispatch_timeout_is_refused() {
        let mut config = WorkerConfig::new("w");
        assert_eq!(config.validate(), Ok(()));
        config.dispatch_timeout = Duration::ZERO;
        let err = config.validate().unwrap_err();
        assert_eq!(err.key, "dispatch_timeout");
        assert!(err
            .to_string()
            .starts_with("dispatch_timeout must be more than 0"));
        config.dispatch_timeout = Duration::from_millis(1);
        assert_eq!(config.validate(), Ok(()));
        config.max_record_age = Duration::ZERO;
        assert_eq!(config.validate().unwrap_err().key, "max_record_age");
    }
}
