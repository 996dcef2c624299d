//! In-memory store, and the marker state machine the file store shares.

use super::{Begin, IdempotencyStore, StoreError, DEFAULT_IN_PROGRESS_TTL};
use futures::future::{BoxFuture, FutureExt};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy)]
enum State {
    InProgress { expires: Instant },
    Done { at_unix_ms: u64 },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    hash: u64,
    state: State,
}

/// Key -> marker map with the begin/complete/abort rules. Not locked itself.
#[derive(Debug, Default)]
pub(super) struct Markers {
    entries: HashMap<String, Entry>,
}

pub(super) fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Markers {
    pub(super) fn begin(&mut self, key: &str, hash: u64, ttl: Duration) -> Begin {
        let now = Instant::now();
        if let Some(entry) = self.entries.get(key) {
            let live = match entry.state {
                State::Done { .. } => true,
                State::InProgress { expires } => expires > now,
            };
            if live {
                return match (entry.hash == hash, entry.state) {
                    (false, _) => Begin::Conflict,
                    (true, State::Done { .. }) => Begin::Duplicate,
                    (true, State::InProgress { .. }) => Begin::InProgress,
                };
            }
        }
        let expires = now + ttl;
        self.entries.insert(
            key.to_owned(),
            Entry {
                hash,
                state: State::InProgress { expires },
            },
        );
        Begin::Acquired
    }

    /// Marks an in-progress key done; returns its hash and time if it was in progress.
    pub(super) fn complete(&mut self, key: &str) -> Option<(u64, u64)> {
        let entry = self.entries.get_mut(key)?;
        match entry.state {
            State::InProgress { .. } => {
                let at = unix_ms_now();
                entry.state = State::Done { at_unix_ms: at };
                Some((entry.hash, at))
            }
            State::Done { .. } => None,
        }
    }

    pub(super) fn abort(&mut self, key: &str) {
        if let Some(Entry {
            state: State::InProgress { .. },
            ..
        }) = self.entries.get(key)
        {
            self.entries.remove(key);
        }
    }

    /// Records a key loaded as done (file store start-up).
    pub(super) fn insert_done(&mut self, key: String, hash: u64, at_unix_ms: u64) {
        self.entries.insert(
            key,
            Entry {
                hash,
                state: State::Done { at_unix_ms },
            },
        );
    }

    /// Done keys as `(key, hash, at)`, for compaction.
    pub(super) fn done(&self) -> impl Iterator<Item = (&str, u64, u64)> {
        self.entries.iter().filter_map(|(k, e)| match e.state {
            State::Done { at_unix_ms } => Some((k.as_str(), e.hash, at_unix_ms)),
            State::InProgress { .. } => None,
        })
    }

    /// Forgets done keys older than `cutoff_unix_ms`; returns how many.
    pub(super) fn forget_done_before(&mut self, cutoff_unix_ms: u64) -> usize {
        let before = self.entries.len();
        self.entries.retain(
            |_, e| !matches!(e.state, State::Done { at_unix_ms } if at_unix_ms < cutoff_unix_ms),
        );
        before - self.entries.len()
    }
}

/// Process-local store: everything is forgotten on exit, and nothing is forgotten before (no
/// retention; memory grows with distinct keys). For tests and one-shot demo runs.
#[derive(Debug)]
pub struct MemoryStore {
    markers: Mutex<Markers>,
    ttl: Duration,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(DEFAULT_IN_PROGRESS_TTL)
    }
}

impl MemoryStore {
    /// A store whose in-progress markers expire after `in_progress_ttl`.
    pub fn new(in_progress_ttl: Duration) -> Self {
        Self {
            markers: Mutex::new(Markers::default()),
            ttl: in_progress_ttl,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Markers) -> R) -> R {
        // A panic while holding the lock cannot leave the map half-updated: recover it.
        f(&mut self.markers.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl IdempotencyStore for MemoryStore {
    fn begin<'a>(
        &'a self,
        key: &'a str,
        payload_hash: u64,
    ) -> BoxFuture<'a, Result<Begin, StoreError>> {
        let result = self.with(|m| m.begin(key, payload_hash, self.ttl));
        futures::future::ready(Ok(result)).boxed()
    }

    fn complete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with(|m| m.complete(key));
        futures::future::ready(Ok(())).boxed()
    }

    fn abort<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with(|m| m.abort(key));
        futures::future::ready(Ok(())).boxed()
    }

    fn begin_many<'a>(
        &'a self,
        keys: &'a [(String, u64)],
    ) -> BoxFuture<'a, Result<Vec<Begin>, StoreError>> {
        let out = self.with(|m| keys.iter().map(|(k, h)| m.begin(k, *h, self.ttl)).collect());
        futures::future::ready(Ok(out)).boxed()
    }

    fn complete_many<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with(|m| {
            for k in keys {
                let _ = m.complete(k);
            }
        });
        futures::future::ready(Ok(())).boxed()
    }

    fn abort_many<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with(|m| keys.iter().for_each(|k| m.abort(k)));
        futures::future::ready(Ok(())).boxed()
    }
}
