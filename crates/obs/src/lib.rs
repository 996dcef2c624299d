//! fleetstream's telemetry home: latency histograms with the percentiles every report prints,
//! and logging setup. Metric names live here so every component reports the same ones
//! (documented in docs/OPERATIONS.md).
//!
//! ```
//! use fleetstream_obs::LatencyHistogram;
//! let mut h = LatencyHistogram::new();
//! h.record_micros(1_500);
//! assert_eq!(h.summary().count, 1);
//! ```
#![warn(missing_docs)]

#[cfg(feature = "collector")]
pub mod collector;
pub mod dispatch;
pub mod producer;
pub mod prometheus;
pub mod trace;
pub mod worker;

use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Duration;

/// Highest latency recorded exactly: one hour, in microseconds. Larger values are clamped.
const MAX_MICROS: u64 = 3_600_000_000;

/// A latency histogram in microseconds (3 significant digits), reported in milliseconds.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    inner: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        // Bounds are constants that are valid for hdrhistogram; this cannot fail.
        let inner = Histogram::new_with_bounds(1, MAX_MICROS, 3)
            .expect("static histogram bounds are valid");
        LatencyHistogram { inner }
    }

    /// Records one latency in microseconds (clamped to 1 µs .. 1 h).
    pub fn record_micros(&mut self, micros: u64) {
        self.inner.saturating_record(micros.clamp(1, MAX_MICROS));
    }

    /// Records one latency.
    pub fn record(&mut self, d: Duration) {
        self.record_micros(d.as_micros().min(u128::from(MAX_MICROS)) as u64);
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        // Same bounds on both sides, so adding cannot fail; ignore the impossible error.
        let _ = self.inner.add(&other.inner);
    }

    /// Samples at or below `micros`, for Prometheus buckets (exact to 3 significant digits).
    pub fn count_at_or_below_micros(&self, micros: u64) -> u64 {
        self.inner.count_between(0, micros.min(MAX_MICROS))
    }

    /// Sum of the samples in seconds (from the histogram's buckets).
    pub fn sum_seconds(&self) -> f64 {
        self.inner.mean() * self.inner.len() as f64 / 1e6
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.inner.len()
    }

    /// Whether no sample was recorded.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Percentiles in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        let ms = |q: f64| self.inner.value_at_quantile(q) as f64 / 1000.0;
        LatencySummary {
            count: self.inner.len(),
            p50: ms(0.50),
            p90: ms(0.90),
            p99: ms(0.99),
            p999: ms(0.999),
            max: self.inner.max() as f64 / 1000.0,
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

/// Sets up structured logs on stderr: `FLEETSTREAM_LOG` (or `RUST_LOG`) filters, default `warn`;
/// `json = true` writes one JSON object per line.
pub fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("FLEETSTREAM_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_samples() {
        let mut h = LatencyHistogram::new();
        for i in 1..=1000u64 {
            h.record_micros(i * 1000);
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50 - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99 - 990.0).abs() < 1.0, "{s:?}");
        assert!((s.max - 1000.0).abs() < 1.0, "{s:?}");
        let mut other = LatencyHistogram::new();
        other.record(Duration::from_secs(5));
        h.merge(&other);
        assert!(
            (h.summary().max - 5000.0).abs() < 5.0,
            "3 significant digits"
        );
    }
}
