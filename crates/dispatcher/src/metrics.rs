//! Dispatcher metrics per target and code, rendered in the Prometheus text format.
//!
//! Names come from [`fleetstream_obs::dispatch`]. Counters are aggregated per batch and merged
//! under one short lock, so recording costs one lock per dispatch, not per record.

use fleetstream_core::Code;
use fleetstream_obs::dispatch as names;
use std::collections::BTreeMap;
use std::fmt::Write as _;
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

    /// Writes `_bucket`, `_sum` and `_count` lines; `labels` is `k="v",...` or empty.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, le) in names::LATENCY_BUCKETS_SECONDS.iter().enumerate() {
            cumulative += self.buckets[i];
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_seconds);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
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
            let (h, add) = (&mut total.latency, &stats.latency);
            for (slot, n) in h.buckets.iter_mut().zip(add.buckets) {
                *slot += n;
            }
            h.sum_seconds += add.sum_seconds;
            h.count += add.count;
        }
        for (outcome, n) in batch.outcomes {
            *inner.outcomes.entry(outcome).or_insert(0) += n;
        }
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

    /// Appends the metrics in the Prometheus text exposition format (version 0.0.4).
    pub fn render_prometheus(&self, out: &mut String) {
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
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((target, code), stats) in &inner.per_target {
                let _ = writeln!(
                    out,
                    "{name}{{target=\"{target}\",code=\"{code}\"}} {}",
                    get(stats)
                );
            }
        }
        let name = names::DELIVERY_SECONDS;
        let _ = writeln!(
            out,
            "# HELP {name} Time of one delivery call to one target.\n# TYPE {name} histogram"
        );
        for ((target, code), stats) in &inner.per_target {
            if stats.latency.count() > 0 {
                let labels = format!("target=\"{target}\",code=\"{code}\"");
                stats.latency.render(out, name, &labels);
            }
        }
        let name = names::RECORDS_TOTAL;
        let _ = writeln!(
            out,
            "# HELP {name} Records by final outcome.\n# TYPE {name} counter"
        );
        for (outcome, n) in &inner.outcomes {
            let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {n}");
        }
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
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
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
        let mut out = String::new();
        m.render_prometheus(&mut out);
        assert!(out
            .contains("fleetstream_dispatch_dispatched_total{target=\"alerts\",code=\"300\"} 4\n"));
        assert!(out.contains("fleetstream_dispatch_records_total{outcome=\"dispatched\"} 2\n"));
    }
}
