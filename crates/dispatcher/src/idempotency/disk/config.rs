//! Settings of the disk store.

use super::super::DEFAULT_IN_PROGRESS_TTL;
use serde::Deserialize;
use std::time::Duration;

/// Settings of [`DiskStore`](super::DiskStore).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiskStoreConfig {
    /// How long a completed key is remembered. Default `7d`.
    ///
    /// Must exceed the longest redelivery horizon: Kafka's default topic retention (7 days,
    /// someone resets a group to `earliest`) and Lambda's longest "maximum record age" (7 days).
    /// Keys are kept for at least this long and deleted at most one bucket
    /// (a seventh of it) later: disk use is bounded by about 8/7 of the window's keys.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Lifetime of an in-progress marker. Default `15m` (Lambda's maximum timeout); must exceed
    /// the longest single delivery. Markers live in memory only (they are as many as the keys
    /// being dispatched at once): a restarted process has none, so a crash never blocks a key.
    #[serde(with = "humantime_serde")]
    pub in_progress_ttl: Duration,
    /// Page cache of the index, in bytes, shared by all bucket files. Default 64 MiB.
    ///
    /// This, not the retention, bounds the store's memory (measured: 72 MiB resident with 3 and
    /// with 10 million keys; docs/BENCHMARKS.md). 64 MiB holds the B-tree's branch pages and
    /// the recent leaves, which is what new keys (appended at the right of the tree) and
    /// redeliveries (of recent records) touch; older keys are read from disk. Half goes to the
    /// bucket being written, the rest is split among the older buckets.
    pub cache_bytes: usize,
    /// How often the index is made durable (`fsync`). Default `1s`.
    ///
    /// Between two syncs completed keys are in a pending log written to the OS at once, so a
    /// process crash loses none; a machine crash can lose this long of keys (their records
    /// then repeat their effect once on redelivery) unless `fsync` is set.
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
    /// `fsync` the pending log after every batch of completed keys. Default `false`.
    pub fsync: bool,
}

impl Default for DiskStoreConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(7 * 24 * 3600),
            in_progress_ttl: DEFAULT_IN_PROGRESS_TTL,
            cache_bytes: 64 * 1024 * 1024,
            sync_interval: Duration::from_secs(1),
            fsync: false,
        }
    }
}
