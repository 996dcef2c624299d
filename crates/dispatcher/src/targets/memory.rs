//! In-process recording sink: proves "exactly one effect per record" in tests and the demo.

use super::{Delivery, Target, TargetError};
use fleetstream_core::Code;
use futures::future::{BoxFuture, FutureExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

/// Counts every delivered record by id. Can be switched to fail, to exercise retries.
#[derive(Debug, Default)]
pub struct MemoryTarget {
    name: String,
    effects: Mutex<HashMap<String, u32>>,
    failing: AtomicBool,
}

impl MemoryTarget {
    /// An empty, healthy target.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Default::default()
        }
    }

    /// How many times the record with this id was delivered (0 if never).
    pub fn effects(&self, id: &str) -> u32 {
        self.lock().get(id).copied().unwrap_or(0)
    }

    /// Total deliveries, counting repeats.
    pub fn total(&self) -> u64 {
        self.lock().values().map(|&n| u64::from(n)).sum()
    }

    /// Ids delivered at least once, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// While `true`, every delivery fails with a retriable `Unavailable` error and records nothing.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.effects.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Target for MemoryTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(
        &'a self,
        _code: Code,
        records: &'a [Delivery<'a>],
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        let result = if self.failing.load(Ordering::SeqCst) {
            Err(TargetError::Unavailable {
                target: self.name.clone(),
                reason: "switched to failing".into(),
            })
        } else {
            let mut effects = self.lock();
            for d in records {
                *effects.entry(d.id.to_owned()).or_insert(0) += 1;
            }
            Ok(())
        };
        futures::future::ready(result).boxed()
    }
}
