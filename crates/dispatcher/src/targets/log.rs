//! Logs each delivered record through `tracing` (target `fleetstream::dispatch`).

use super::{Delivery, Target, TargetError};
use fleetstream_core::Code;
use futures::future::{BoxFuture, FutureExt};

/// Writes one `info` event per record: id, code, truck, coordinates. For demos and debugging;
/// it has no failure mode, so it never causes a retry.
#[derive(Debug, Clone)]
pub struct LogTarget {
    name: String,
}

impl LogTarget {
    /// A log target called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

impl Target for LogTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(
        &'a self,
        code: Code,
        records: &'a [Delivery<'a>],
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        for d in records {
            tracing::info!(
                target: "fleetstream::dispatch",
                sink = %self.name,
                code = code.0,
                message_id = d.id,
                correlation_id = d.record.correlation_id(),
                trace_id = d.record.trace_id(),
                truck_id = %d.event.truck_id,
                topic = %d.record.topic,
                partition = d.record.partition,
                offset = d.record.offset,
                "dispatched"
            );
        }
        futures::future::ready(Ok(())).boxed()
    }
}
