//! Dispatcher metrics per target and code, rendered in the Prometheus text format.
//!
//! Names come from [`fleetstream_obs::dispatch`]. Counters are aggregated per batch and merged
//! under one short lock, so recording costs one lock per dispatch, not per record.

use fleetstream_core::Code;
use fleetstream_obs::dispatch as names;
use fleetstream_obs::prometheus::{Exposition, HistogramSample};
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// A Prometheus histogram with the fixed buckets of [`names::LATENCY_BUCKETS_SECONDS`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Per-bucket counts (not cumulative); one extra slot for `+Inf`.
    buckets: [u64; names::LATENCY_BUCKETS_SECONDS.len() + 1],
    sum_seconds: f64,
    count: u64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = names::LATENCY_BUCKETS_SECONDS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(names::LATENCY_BUCKETS_SECONDS.len());
        self.buckets[slot] += 1;
        self.sum_seconds += secs;
        self.count += 1;
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the observations, seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_seconds
    }

    /// Adds another histogram's observations.
    pub fn add(&mut self, other: &Histogram) {
        for (slot, n) in self.buckets.iter_mut().zip(other.buckets) {
            *slot += n;
        }
        self.sum_seconds += other.sum_seconds;
        self.count += other.count;
    }

    /// The histogram in the form [`Exposition::histogram`] writes.
    pub fn sample(&self) -> HistogramSample {
        let mut cumulative = Vec::with_capacity(names::LATENCY_BUCKETS_SECONDS.len());
        let mut running = 0;
        for n in &self.buckets[..names::LATENCY_BUCKETS_SECONDS.len()] {
            running += n;
            cumulative.push(running);
        }
        HistogramSample {
            bounds: names::LATENCY_BUCKETS_SECONDS.to_vec(),
            cumulative,
            count: self.count,
            sum: self.sum_seconds,
        }
    }
}

/// Counters and latency of one target for one code.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetCodeStats {
    /// Records the target took.
    pub dispatched: u64,
    /// Records the target failed to take.
    pub failed: u64,
    /// Redeliveries suppressed before reaching the target.
    pub duplicates: u64,
    /// Delivery call latency.
    pub latency: Histogram,
}

/// A counter's name, help text and how to read it from the stats.
type Counter = (&'static str, &'static str, fn(&TargetCodeStats) -> u64);

/// Per-batch accumulator, merged into [`DispatchMetrics`] once per dispatch.
#[derive(Debug, Default)]
pub(crate) struct BatchMetrics {
    per_target: BTreeMap<(String, u32), TargetCodeStats>,
    outcomes: BTreeMap<&'static str, u64>,
    pub(crate) record_age: Histogram,
}

impl BatchMetrics {
    pub(crate) fn entry(&mut self, target: &str, code: Code) -> &mut TargetCodeStats {
        // Few distinct (target, code) pairs per batch: a lookup before allocating the key.
        let key = (target.to_owned(), code.0);
        self.per_target.entry(key).or_default()
    }

    pub(crate) fn outcome(&mut self, outcome: &'static str) {
        *self.outcomes.entry(outcome).or_insert(0) += 1;
    }
}

#[derive(Debug, Default)]
struct Inner {
    per_target: BTreeMap<(String, u32), TargetCodeStats>,
    outcomes: BTreeMap<&'static str, u64>,
    record_age: Histogram,
}

/// Cumulative dispatcher metrics since start. Shared by every dispatch of one [`crate::Dispatcher`].
#[derive(Debug, Default)]
pub struct DispatchMetrics {
    inner: Mutex<Inner>,
}

impl DispatchMetrics {
    pub(crate) fn merge(&self, batch: BatchMetrics) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, stats) in batch.per_target {
            let total = inner.per_target.entry(key).or_default();
            total.dispatched += stats.dispatched;
            total.failed += stats.failed;
            total.duplicates += stats.duplicates;
            total.latency.add(&stats.latency);
        }
        for (outcome, n) in batch.outcomes {
            *inner.outcomes.entry(outcome).or_insert(0) += n;
        }
        inner.record_age.add(&batch.record_age);
    }

    /// Kafka-to-dispatcher time of every record with a timestamp so far.
    pub fn record_age(&self) -> Histogram {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record_age
            .clone()
    }

    /// Stats of `target` for `code` so far (zeros if none).
    pub fn stats(&self, target: &str, code: Code) -> TargetCodeStats {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .per_target
            .get(&(target.to_owned(), code.0))
            .cloned()
            .unwrap_or_default()
    }

    /// Adds the metrics to a Prometheus text exposition (format 0.0.4).
    pub fn render(&self, e: &mut Exposition) {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let counters: [Counter; 3] = [
            (names::DISPATCHED_TOTAL, "Records a target took.", |s| {
                s.dispatched
            }),
            (
                names::FAILED_TOTAL,
                "Records a target failed to take.",
                |s| s.failed,
            ),
            (
                names::DUPLICATES_TOTAL,
                "Redeliveries suppressed by the idempotency store.",
                |s| s.duplicates,
            ),
        ];
        for (name, help, get) in counters {
            for ((target, code), stats) in &inner.per_target {
                let code = code.to_string();
                let labels = [("target", target.as_str()), ("code", code.as_str())];
                e.counter(name, help, &labels, get(stats) as f64);
            }
        }
        for ((target, code), stats) in &inner.per_target {
            if stats.latency.count() > 0 {
                let code = code.to_string();
                let labels = [("target", target.as_str()), ("code", code.as_str())];
                e.histogram(
                    names::DELIVERY_SECONDS,
                    "Time of one delivery call to one target, retries included.",
                    &labels,
                    &stats.latency.sample(),
                );
            }
        }
        for (outcome, n) in &inner.outcomes {
            e.counter(
                names::RECORDS_TOTAL,
                "Records by final outcome.",
                &[("outcome", outcome)],
                *n as f64,
            );
        }
        if inner.record_age.count() > 0 {
            e.histogram(
                names::RECORD_AGE_SECONDS,
                "Kafka-to-dispatcher time: a record's age (from its Kafka timestamp) when its dispatch began.",
                &[],
                &inner.record_age.sample(),
            );
        }
    }

    /// The metrics as Prometheus text.
    pub fn render_prometheus(&self) -> String {
        let mut e = Exposition::new();
        self.render(&mut e);
        e.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let mut e = Exposition::new();
        e.histogram("x", "help", &[("a", "b")], &h.sample());
        let out = e.finish();
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 3\n"), "{out}");
    }

    #[test]
    fn merge_adds_batches() {
        let m = DispatchMetrics::default();
        for _ in 0..2 {
            let mut b = BatchMetrics::default();
            b.entry("alerts", Code(300)).dispatched += 2;
            b.entry("alerts", Code(300)).duplicates += 1;
            b.outcome("dispatched");
            m.merge(b);
        }
        let s = m.stats("alerts", Code(300));
        assert_eq!((s.dispatched, s.duplicates, s.failed), (4, 2, 0));
        let out = m.render_prometheus();
        assert!(out
            .contains("fleetstream_dispatch_dispatched_total{target=\"alerts\",code=\"300\"} 4\n"));
        assert!(out.contains("fleetstream_dispatch_records_total{outcome=\"dispatched\"} 2\n"));
        assert!(
            !out.contains("record_age"),
            "no age histogram before a record with a timestamp"
        );
        let mut b = BatchMetrics::default();
        b.record_age.observe(Duration::from_millis(300));
        m.merge(b);
        let out = m.render_prometheus();
        assert!(
            out.contains("fleetstream_dispatch_record_age_seconds_bucket{le=\"0.5\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("fleetstream_dispatch_record_age_seconds_count 1\n"),
            "{out}"
        );
    }
}
