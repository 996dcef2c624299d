//! Idempotency stores: remember which records already had their effect, so redeliveries
//! (Kafka and Lambda are at-least-once) do not repeat it.
//!
//! Protocol, per key: [`IdempotencyStore::begin`] takes an *in-progress marker* (with an expiry)
//! or reports that the key is done, busy or conflicting; after the effect the caller calls
//! [`IdempotencyStore::complete`]; on failure [`IdempotencyStore::abort`] releases the marker so
//! a retry can run.
//!
//! What this does and does not guarantee: two concurrent deliveries of one key never both
//! execute while the marker is live. A crash *between* the effect and `complete` leaves the key
//! not done, so the redelivery repeats the effect: targets that must be exactly-once even then
//! need to deduplicate on the message id themselves. If a delivery outlives its marker's expiry,
//! a second delivery may start; keep the expiry above the longest delivery.
//!
//! Stores: [`MemoryStore`] (tests, one-shot runs), [`DiskStore`] (the embedded default: an
//! on-disk index with expiry, memory bounded by its cache setting, survives restarts,
//! single-process), [`FileStore`] (the former embedded default: every key of the retention
//! window in memory; kept selectable by name) and, shared by several dispatcher instances (e.g.
//! concurrent Lambda instances), `PostgresStore` (feature `postgres`) and `DynamoStore`
//! (feature `dynamodb`).

#[cfg(any(test, feature = "conformance"))]
#[doc(hidden)]
pub mod conformance;
mod disk;
#[cfg(feature = "dynamodb")]
mod dynamodb;
mod file;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;

pub use disk::{DiskStore, DiskStoreConfig};
#[cfg(feature = "dynamodb")]
pub use dynamodb::{DynamoStore, DynamoStoreConfig, DEFAULT_DYNAMODB_TABLE};
pub use file::{FileStore, FileStoreConfig};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresStore, PostgresStoreConfig, DEFAULT_TABLE};

use futures::future::{BoxFuture, FutureExt};
use std::time::Duration;

/// Default lifetime of an in-progress marker: 15 minutes, Lambda's maximum function timeout, so
/// a marker outlives any single invocation that holds it.
pub const DEFAULT_IN_PROGRESS_TTL: Duration = Duration::from_secs(15 * 60);

/// Result of [`IdempotencyStore::begin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// The caller holds the marker and must execute, then `complete` or `abort`.
    Acquired,
    /// Already done with the same payload: skip, it is a redelivery.
    Duplicate,
    /// Another delivery holds a live marker: do not execute; retry later.
    InProgress,
    /// The key is known with a different payload hash: two different messages share an id.
    /// Reported, never executed.
    Conflict,
}

/// A store failure. Always retriable from the dispatcher's point of view: nothing was executed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the store's file failed.
    #[error("idempotency store I/O on {path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The database refused or failed a statement, or the connection failed.
    #[error("idempotency store database: {0}")]
    Database(String),
}

/// Deduplication state shared by all dispatches. Object-safe (boxed futures, no `async-trait`)
/// so the dispatcher can hold any store as `Arc<dyn IdempotencyStore>`.
pub trait IdempotencyStore: Send + Sync {
    /// Tries to take the in-progress marker for `key` carrying `payload_hash`.
    fn begin<'a>(
        &'a self,
        key: &'a str,
        payload_hash: u64,
    ) -> BoxFuture<'a, Result<Begin, StoreError>>;
    /// Marks `key` done (the effect happened); later `begin`s report `Duplicate` or `Conflict`.
    fn complete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Releases the marker for `key` without marking it done, so a retry can run.
    fn abort<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// [`Self::begin`] for distinct keys at once; the answer `i` is for `keys[i]`. On error no
    /// marker is held. Stores override it to save round trips (one statement, one lock); the
    /// default calls `begin` per key and releases what it took if one fails.
    fn begin_many<'a>(
        &'a self,
        keys: &'a [(String, u64)],
    ) -> BoxFuture<'a, Result<Vec<Begin>, StoreError>> {
        async move {
            let mut out = Vec::with_capacity(keys.len());
            for (key, hash) in keys {
                match self.begin(key, *hash).await {
                    Ok(b) => out.push(b),
                    Err(e) => {
                        for ((key, _), b) in keys.iter().zip(&out) {
                            if *b == Begin::Acquired {
                                let _ = self.abort(key).await;
                            }
                        }
                        return Err(e);
                    }
                }
            }
            Ok(out)
        }
        .boxed()
    }

    /// [`Self::complete`] for many keys; tries every key, returns the first error.
    fn complete_many<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<(), StoreError>> {
        in_turn(keys, |k| self.complete(k)).boxed()
    }

    /// [`Self::abort`] for many keys; tries every key, returns the first error.
    fn abort_many<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<(), StoreError>> {
        in_turn(keys, |k| self.abort(k)).boxed()
    }
}

/// Runs `op` on every key in turn and returns the first error once all have run: a release or
/// completion must not stop at one failed key.
async fn in_turn<'a, F>(keys: &'a [String], op: F) -> Result<(), StoreError>
where
    F: Fn(&'a str) -> BoxFuture<'a, Result<(), StoreError>>,
{
    let mut first = Ok(());
    for key in keys {
        if let Err(e) = op(key).await {
            first = first.and(Err(e));
        }
    }
    first
}

/// Stable 64-bit FNV-1a hash of a payload. Stable across builds and Rust versions (unlike
/// `DefaultHasher`), which matters because the file store persists it. Detects accidental id
/// reuse; it is not a defence against an adversary crafting collisions.
pub fn payload_hash(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests;
