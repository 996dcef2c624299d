//! How a batch reaches the dispatcher. In-process today; HTTP and Lambda Invoke share the trait.

use fleetstream_dispatcher::{BatchRecord, DispatchResponse, Dispatcher};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A transport failed as a whole (no per-record results).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The dispatcher is throttling (HTTP 429, Lambda TooManyRequests): back off.
    #[error("dispatcher is throttling: {0}")]
    Throttled(String),
    /// Any other failure: retry with backoff.
    #[error("dispatch failed: {0}")]
    Failed(String),
}

/// Boxed future returned by [`Transport::dispatch`].
pub type DispatchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<DispatchResponse, TransportError>> + Send + 'a>>;

/// Sends a batch to the dispatcher and returns its per-record results.
pub trait Transport: Send + Sync {
    /// Dispatches `records`.
    fn dispatch(&self, records: Vec<BatchRecord>) -> DispatchFuture<'_>;
}

/// Calls a [`Dispatcher`] in this process (the demo; a library call, no serialization).
///
/// Each dispatch runs on a task of its own ([`Dispatcher::dispatch_detached`]): if the worker
/// stops waiting (its shutdown timeout expires), the batch still settles its idempotency
/// markers, so a redelivery finds its records as duplicates instead of applying them again.
#[derive(Clone)]
pub struct InProcess(pub Arc<Dispatcher>);

impl Transport for InProcess {
    fn dispatch(&self, records: Vec<BatchRecord>) -> DispatchFuture<'_> {
        Box::pin(async move {
            self.0
                .dispatch_detached(records)
                .await
                .map_err(|e| TransportError::Failed(e.to_string()))
        })
    }
}
