//! Worker metrics, shared and readable while running.

use fleetstream_obs::{LatencyHistogram, LatencySummary};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Counters and histograms of one or more workers.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    /// Records read from Kafka.
    pub consumed: AtomicU64,
    /// Records dispatched (first effect).
    pub dispatched: AtomicU64,
    /// Records the dispatcher had already seen (redeliveries suppressed).
    pub duplicates: AtomicU64,
    /// Records written to a dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Records skipped by the dispatcher's policy.
    pub skipped: AtomicU64,
    /// Batches dispatched.
    pub batches: AtomicU64,
    /// Dispatch retries (records re-sent).
    pub retries: AtomicU64,
    /// Dead-letter writes that failed (and were retried).
    pub dead_letter_failures: AtomicU64,
    /// Dispatches refused with throttling (HTTP 429, Lambda TooManyRequests).
    pub throttled: AtomicU64,
    /// Batches split in two after failing as a whole.
    pub bisections: AtomicU64,
    /// Times partitions were paused for backpressure.
    pub pauses: AtomicU64,
    /// Partitions paused right now.
    pub paused_partitions: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    e2e: LatencyHistogram,
    dispatch: LatencyHistogram,
    batch_fill: LatencyHistogram,
    batch_records: u64,
    dead_letter_reasons: BTreeMap<String, u64>,
    per_partition: BTreeMap<String, BTreeMap<i32, u64>>,
}

/// A snapshot for reports.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerSnapshot {
    /// Records read.
    pub consumed: u64,
    /// Records dispatched.
    pub dispatched: u64,
    /// Redeliveries suppressed by the dispatcher.
    pub duplicates: u64,
    /// Records dead-lettered.
    pub dead_lettered: u64,
    /// Records skipped by policy.
    pub skipped: u64,
    /// Batches.
    pub batches: u64,
    /// Retried records.
    pub retries: u64,
    /// Throttled dispatches.
    pub throttled: u64,
    /// Bisected batches.
    pub bisections: u64,
    /// Pause events (backpressure).
    pub pauses: u64,
    /// Mean records per batch.
    pub mean_batch_records: f64,
    /// Time from a batch's first record to its dispatch, ms.
    pub batch_fill_ms: LatencySummary,
    /// Producer timestamp header -> dispatch acknowledged, ms.
    pub e2e_latency_ms: LatencySummary,
    /// Dispatch call latency per batch, ms.
    pub dispatch_latency_ms: LatencySummary,
    /// Dead letters by reason.
    pub dead_letter_reasons: BTreeMap<String, u64>,
    /// Records consumed per topic and partition.
    pub per_partition: BTreeMap<String, BTreeMap<i32, u64>>,
}

impl WorkerMetrics {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn record_e2e_micros(&self, micros: u64) {
        self.inner().e2e.record_micros(micros);
    }

    pub(crate) fn record_dispatch(&self, d: std::time::Duration) {
        self.inner().dispatch.record(d);
    }

    pub(crate) fn record_batch(&self, records: usize, fill: std::time::Duration) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        let mut i = self.inner();
        i.batch_fill.record(fill);
        i.batch_records += records as u64;
    }

    pub(crate) fn record_consumed(&self, topic: &str, partition: i32) {
        self.consumed.fetch_add(1, Ordering::Relaxed);
        let mut i = self.inner();
        *i.per_partition
            .entry(topic.to_string())
            .or_default()
            .entry(partition)
            .or_default() += 1;
    }

    pub(crate) fn record_dead_letter(&self, reason: &str) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        *self
            .inner()
            .dead_letter_reasons
            .entry(reason.to_string())
            .or_default() += 1;
    }

    /// Copies of the end-to-end, dispatch and batch-fill histograms (for exporters).
    pub fn histograms(&self) -> [fleetstream_obs::LatencyHistogram; 3] {
        let i = self.inner();
        [i.e2e.clone(), i.dispatch.clone(), i.batch_fill.clone()]
    }

    /// A consistent-enough snapshot.
    pub fn snapshot(&self) -> WorkerSnapshot {
        let i = self.inner();
        WorkerSnapshot {
            consumed: self.consumed.load(Ordering::Relaxed),
            dispatched: self.dispatched.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            bisections: self.bisections.load(Ordering::Relaxed),
            pauses: self.pauses.load(Ordering::Relaxed),
            mean_batch_records: i.batch_records as f64
                / (self.batches.load(Ordering::Relaxed).max(1)) as f64,
            batch_fill_ms: i.batch_fill.summary(),
            e2e_latency_ms: i.e2e.summary(),
            dispatch_latency_ms: i.dispatch.summary(),
            dead_letter_reasons: i.dead_letter_reasons.clone(),
            per_partition: i.per_partition.clone(),
        }
    }
}
