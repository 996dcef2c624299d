//! Delivery targets: where routed records go.
//!
//! A [`Target`] receives the records of one batch that share one event code, in partition order,
//! and either takes all of them or fails; on failure the dispatcher releases their idempotency
//! markers and reports them failed, so a redelivery retries exactly those records.

mod http;
mod jsonl;
mod log;
mod memory;

pub use http::{HttpTarget, HttpTargetConfig, DEFAULT_INITIAL_BACKOFF, MAX_BACKOFF};
pub use jsonl::JsonlTarget;
pub use log::LogTarget;
pub use memory::MemoryTarget;

use crate::record::BatchRecord;
use fleetstream_core::{Code, TelemetryEvent};
use futures::future::BoxFuture;

/// One record handed to a target: the validated event plus where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// The record's dedup key (its message id, else `topic-partition-offset`).
    pub id: &'a str,
    /// The Kafka record.
    pub record: &'a BatchRecord,
    /// The parsed, validated event.
    pub event: &'a TelemetryEvent,
}

/// Why a target did not take a slice of records.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// I/O failed (file, socket): worth retrying.
    #[error("target `{target}`: I/O error: {source}")]
    Io {
        /// Target name.
        target: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The target is temporarily unavailable: worth retrying.
    #[error("target `{target}` unavailable: {reason}")]
    Unavailable {
        /// Target name.
        target: String,
        /// Why.
        reason: String,
    },
    /// The target refused the records for good (e.g. HTTP 4xx): retrying will not help.
    #[error("target `{target}` rejected the records: {reason}")]
    Rejected {
        /// Target name.
        target: String,
        /// Why.
        reason: String,
    },
}

impl TargetError {
    /// Whether a redelivery may succeed.
    pub fn is_retriable(&self) -> bool {
        !matches!(self, TargetError::Rejected { .. })
    }

    /// Low-cardinality class for the failure reason and metrics.
    pub fn class(&self) -> &'static str {
        match self {
            TargetError::Io { .. } => "io",
            TargetError::Unavailable { .. } => "unavailable",
            TargetError::Rejected { .. } => "rejected",
        }
    }
}

/// A delivery target. Object-safe (boxed futures, no `async-trait`): the dispatcher holds targets
/// as `Arc<dyn Target>` and shares them across concurrent dispatches.
pub trait Target: Send + Sync {
    /// The name routes refer to.
    fn name(&self) -> &str;
    /// Delivers `records`, all with event code `code`, in order. All or nothing from the
    /// dispatcher's point of view: an error fails every record of the slice.
    fn deliver<'a>(
        &'a self,
        code: Code,
        records: &'a [Delivery<'a>],
    ) -> BoxFuture<'a, Result<(), TargetError>>;
}
