//! The dispatcher service: dedup, validate, route and deliver one batch.

use crate::event::{decode_event_json, from_kafka_event, DecodeError};
use crate::idempotency::{payload_hash, Begin, IdempotencyStore};
use crate::metrics::{BatchMetrics, DispatchMetrics};
use crate::record::BatchRecord;
use crate::response::{DispatchResponse, Outcome, RecordResult};
use crate::routes::{Route, RoutingTable, TargetKind};
use crate::targets::{
    Delivery, HttpTarget, JsonlTarget, LogTarget, MemoryTarget, Target, TargetError,
};
use aws_lambda_events::event::kafka::KafkaEvent;
use fleetstream_core::{extract_code, Code, TelemetryEvent};
use fleetstream_obs::trace::{kafka_attributes, KeyValue, SpanKind, Tracer};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;

/// A target could not be built from the routing table.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A file the target writes could not be opened.
    #[error("cannot open target `{name}`: {source}")]
    Open {
        /// Target name.
        name: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The routing file declares a target this crate does not implement (`kind = "kafka"`: the
    /// dispatcher links no Kafka client) and the caller supplied none under its name.
    #[error(
        "target `{name}` (kind = \"{kind}\") has no implementation here: this dispatcher links \
         no Kafka client, so the program must supply one (`fleetstream worker` and \
         `fleetstream dispatch serve` do; the Lambda binary cannot: route to `http` instead)"
    )]
    NotSupplied {
        /// Target name.
        name: String,
        /// The target's `kind` in the routing file.
        kind: &'static str,
    },
}

/// Routes records to targets with exactly one effect per record and target, as long as the
/// store remembers the record (see [`crate::idempotency`] for the limits).
///
/// `Send + Sync`: share one as `Arc<Dispatcher>` between workers; dispatches run concurrently.
pub struct Dispatcher {
    table: RoutingTable,
    store: Arc<dyn IdempotencyStore>,
    targets: HashMap<String, Arc<dyn Target>>,
    memory: HashMap<String, Arc<MemoryTarget>>,
    limit: Option<Semaphore>,
    metrics: Arc<DispatchMetrics>,
    tracer: Option<Tracer>,
}

// Workers share one dispatcher: keep it `Send + Sync` (a compile error here otherwise).
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Dispatcher>();
};

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.targets.keys().collect();
        names.sort();
        f.debug_struct("Dispatcher")
            .field("targets", &names)
            .finish_non_exhaustive()
    }
}

/// One span per sampled record: where it came from, how long after it was written to Kafka its
/// dispatch began, and its outcome (failed and conflicting records are marked as errors).
fn trace_records(
    tracer: &Tracer,
    records: &[BatchRecord],
    results: &[RecordResult],
    started: SystemTime,
) {
    let ended = SystemTime::now();
    let started_ms = started
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for (record, result) in records.iter().zip(results) {
        let Some(parent) = record.trace_parent().filter(|p| p.sampled) else {
            continue;
        };
        let mut attributes = kafka_attributes(
            "process",
            &record.topic,
            Some(record.partition),
            Some(record.offset),
        );
        attributes.push(KeyValue::new(
            "fleetstream.outcome",
            result.outcome.metric_label(),
        ));
        if let Some(id) = &result.message_id {
            attributes.push(KeyValue::new("messaging.message.id", id.clone()));
        }
        if let Ok(code) = extract_code(&record.value) {
            attributes.push(KeyValue::new("fleetstream.codigo", i64::from(code.0)));
        }
        if record.timestamp_ms >= 0 {
            attributes.push(KeyValue::new(
                "fleetstream.kafka_to_dispatch_ms",
                (started_ms - record.timestamp_ms).max(0),
            ));
        }
        let error = match &result.outcome {
            Outcome::Failed { reason, .. } => Some(reason.clone()),
            Outcome::Conflict => Some("message id reused with a different payload".into()),
            Outcome::Skipped { reason } => {
                attributes.push(KeyValue::new("fleetstream.reason", reason.clone()));
                None
            }
            Outcome::Dispatched | Outcome::Duplicate => None,
        };
        tracer.record(
            format!("dispatch {}", record.topic),
            SpanKind::Consumer,
            &parent,
            (started, ended),
            attributes,
            error,
        );
    }
}

/// Idempotency key of one record at one target. Target names cannot contain `:` (validated).
fn store_key(target: &str, id: &str) -> String {
    format!("{target}:{id}")
}

/// The result of one slice: `(target, code)`, the result, how long the delivery took.
type DeliveryResult<'p> = ((&'p str, Code), Result<(), TargetError>, Duration);

/// One target's deliveries, one slice per code, in order of first appearance.
type CodeGroups<'d> = Vec<(Code, Vec<Delivery<'d>>)>;

/// A record that passed validation and routing, before taking markers.
struct Routed<'r> {
    index: usize,
    id: String,
    hash: u64,
    event: TelemetryEvent,
    code: Code,
    names: &'r [String],
}

/// A record that passed validation and routing and holds markers at some targets.
struct Pending<'r> {
    index: usize,
    id: String,
    event: TelemetryEvent,
    code: Code,
    targets: Vec<&'r str>,
}

/// Markers taken by one dispatch and not yet settled, and whether delivery to their target may
/// have begun. This is what a dispatch dropped before it settles (its caller gave up, a timeout
/// expired, the runtime shut down) leaves behind, and the delivery semantics are:
///
/// - a marker whose delivery never began is released (`abort_many`), so a redelivery runs
///   without waiting;
/// - a marker whose delivery may have begun is **never released**: the target may already have
///   applied the effect, and releasing the marker would let a redelivery apply it a second
///   time. It stays in progress: redeliveries get `in_progress` (retriable) until the store's
///   in-progress lifetime expires, then run again (at-least-once for that one record, after a
///   crash-like stop; never two effects while the marker lives).
///
/// Cancellation is the exception, not the way to stop a dispatch: callers that can give up
/// (an HTTP request, a timeout) use [`Dispatcher::dispatch_detached`], which runs every dispatch
/// to its settlement whether or not its caller is still waiting.
struct Held {
    store: Arc<dyn IdempotencyStore>,
    state: Mutex<HeldKeys>,
}

#[derive(Default)]
struct HeldKeys {
    /// Taken, delivery not begun: safe to release.
    unstarted: HashSet<String>,
    /// Taken and handed to a target: left in progress if the dispatch is dropped.
    started: usize,
}

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, HeldKeys> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add_all(&self, keys: impl IntoIterator<Item = String>) {
        self.lock().unstarted.extend(keys);
    }

    /// Delivery of these markers' records is about to begin: from now on a drop must not
    /// release them.
    fn begin_delivery(&self, keys: impl IntoIterator<Item = String>) {
        let mut state = self.lock();
        for key in keys {
            if state.unstarted.remove(&key) {
                state.started += 1;
            }
        }
    }

    /// Every marker was completed or released: nothing to clean up on drop.
    fn clear(&self) {
        *self.lock() = HeldKeys::default();
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let state = std::mem::take(&mut *self.lock());
        if state.started > 0 {
            tracing::warn!(
                markers = state.started,
                "dispatch dropped after delivery began: its markers stay in progress until they \
                 expire (redeliveries get in_progress meanwhile), never released"
            );
        }
        if state.unstarted.is_empty() {
            return;
        }
        let keys: Vec<String> = state.unstarted.into_iter().collect();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let store = Arc::clone(&self.store);
            handle.spawn(async move {
                let _ = store.abort_many(&keys).await;
            });
        }
    }
}

/// A detached dispatch ([`Dispatcher::dispatch_detached`]) ended without an answer: its task
/// panicked or the runtime shut down. Its records have no outcome: retry them all.
#[derive(Debug, thiserror::Error)]
#[error("the dispatch task ended without an answer: {0}")]
pub struct DetachedError(#[from] tokio::task::JoinError);

impl Dispatcher {
    /// Builds every target the table declares (opening `jsonl` files) over `store`. Fails with
    /// [`BuildError::NotSupplied`] if the table declares a `kafka` target: use
    /// [`Dispatcher::new_with_targets`] to supply it.
    pub fn new(table: RoutingTable, store: Arc<dyn IdempotencyStore>) -> Result<Self, BuildError> {
        Self::new_with_targets(table, store, Vec::new())
    }

    /// Like [`Dispatcher::new`], with targets built by the caller: each one replaces the
    /// declared target of the same name (as [`Dispatcher::with_target`] does afterwards), and
    /// is required for every target kind this crate does not implement (`kafka`).
    pub fn new_with_targets(
        table: RoutingTable,
        store: Arc<dyn IdempotencyStore>,
        supplied: Vec<Arc<dyn Target>>,
    ) -> Result<Self, BuildError> {
        let mut supplied: HashMap<String, Arc<dyn Target>> = supplied
            .into_iter()
            .map(|t| (t.name().to_owned(), t))
            .collect();
        let mut targets: HashMap<String, Arc<dyn Target>> = HashMap::new();
        let mut memory = HashMap::new();
        for (name, kind) in table.targets() {
            if let Some(target) = supplied.remove(name) {
                targets.insert(name.to_owned(), target);
                continue;
            }
            let target: Arc<dyn Target> = match kind {
                TargetKind::Memory => {
                    let m = Arc::new(MemoryTarget::new(name));
                    memory.insert(name.to_owned(), Arc::clone(&m));
                    m
                }
                TargetKind::Log => Arc::new(LogTarget::new(name)),
                TargetKind::Http(config) => Arc::new(HttpTarget::new(name, config.clone())),
                TargetKind::Jsonl(path) => Arc::new(JsonlTarget::open(name, path).map_err(
                    |source| BuildError::Open {
                        name: name.to_owned(),
                        source,
                    },
                )?),
                TargetKind::Kafka { .. } => {
                    return Err(BuildError::NotSupplied {
                        name: name.to_owned(),
                        kind: kind.kind_name(),
                    })
                }
            };
            targets.insert(name.to_owned(), target);
        }
        // Supplied targets no route names (routes decide which names are used).
        targets.extend(supplied);
        Ok(Self {
            table,
            store,
            targets,
            memory,
            limit: None,
            metrics: Arc::new(DispatchMetrics::default()),
            tracer: None,
        })
    }

    /// Replaces the target called `target.name()` (tests, custom sinks). Routes still decide
    /// which names are used.
    pub fn with_target(mut self, target: Arc<dyn Target>) -> Self {
        self.memory.remove(target.name());
        self.targets.insert(target.name().to_owned(), target);
        self
    }

    /// At most `max` dispatches run at once; the rest wait (like Lambda reserved concurrency).
    pub fn with_concurrency_limit(mut self, max: usize) -> Self {
        self.limit = Some(Semaphore::new(max.max(1)));
        self
    }

    /// Records a `dispatch <topic>` span for each record whose `traceparent` says sampled, as a
    /// child of the producer's span, from the start of its batch's dispatch to its outcome.
    pub fn with_tracer(mut self, tracer: Option<Tracer>) -> Self {
        self.tracer = tracer;
        self
    }

    /// The span exporter set by [`Dispatcher::with_tracer`], if any.
    pub fn tracer(&self) -> Option<&Tracer> {
        self.tracer.as_ref()
    }

    /// The `memory` target called `name`, to count effects.
    pub fn memory_target(&self, name: &str) -> Option<Arc<MemoryTarget>> {
        self.memory.get(name).cloned()
    }

    /// Metrics per target and code since this dispatcher was built.
    pub fn metrics(&self) -> &DispatchMetrics {
        &self.metrics
    }

    /// The routing table in use.
    pub fn routing(&self) -> &RoutingTable {
        &self.table
    }

    /// Decodes a Lambda Kafka event and dispatches its records.
    pub async fn handle_event(&self, event: KafkaEvent) -> Result<DispatchResponse, DecodeError> {
        Ok(self.dispatch(from_kafka_event(event)?).await)
    }

    /// Decodes untrusted event JSON (AWS's shape) and dispatches its records.
    pub async fn handle_json(&self, bytes: &[u8]) -> Result<DispatchResponse, DecodeError> {
        Ok(self.dispatch(decode_event_json(bytes)?).await)
    }

    /// Dispatches one batch. Per record: validate the event, route it by code; then take an
    /// idempotency marker per record and target (one store call for the batch), deliver each
    /// target its records grouped by code, then mark done (success) or release the markers
    /// (failure, so a redelivery retries), again one store call each.
    ///
    /// Never fails as a whole: each record gets an [`Outcome`]. The caller may commit offsets
    /// only up to the first record that is not [`Outcome::is_settled`].
    ///
    /// A dispatch should run to its settlement once begun. If this future is dropped first
    /// (cancelled, timed out), markers whose delivery never began are released, and markers
    /// whose delivery may have begun are left in progress until they expire: never released,
    /// since their effects may already be applied. A caller that may stop waiting (an HTTP
    /// handler, a timeout) should call [`Dispatcher::dispatch_detached`] instead.
    pub async fn dispatch(&self, records: Vec<BatchRecord>) -> DispatchResponse {
        let started = SystemTime::now();
        let _permit = match &self.limit {
            Some(semaphore) => semaphore.acquire().await.ok(),
            None => None,
        };
        let held = Held {
            store: Arc::clone(&self.store),
            state: Mutex::new(HeldKeys::default()),
        };
        let mut outcomes: Vec<Option<Outcome>> = vec![None; records.len()];
        let mut metrics = BatchMetrics::default();
        let started_ms = started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for r in records.iter().filter(|r| r.timestamp_ms >= 0) {
            let age_ms = (started_ms - r.timestamp_ms).max(0) as u64;
            metrics.record_age.observe(Duration::from_millis(age_ms));
        }
        // Ids seen earlier in this batch: a producer duplicate inside one batch.
        let mut seen: HashMap<String, u64> = HashMap::new();
        let mut routed = Vec::new();
        for (index, record) in records.iter().enumerate() {
            match self.route_record(index, record, &mut seen, &mut metrics) {
                Ok(r) => routed.push(r),
                Err(outcome) => outcomes[index] = Some(outcome),
            }
        }
        let pending = self
            .take_markers(routed, &mut outcomes, &held, &mut metrics)
            .await;
        let mut delivered = HashMap::new();
        for (key, result, elapsed) in self.deliver(&records, &pending, &held).await {
            metrics.entry(key.0, key.1).latency.observe(elapsed);
            delivered.insert(key, result);
        }
        let (mut done, mut release) = (Vec::new(), Vec::new());
        for p in &pending {
            let mut failures = Vec::new();
            for target in &p.targets {
                let key = store_key(target, &p.id);
                let result = delivered.get(&(*target, p.code));
                let stats = metrics.entry(target, p.code);
                match result {
                    Some(Ok(())) => {
                        stats.dispatched += 1;
                        done.push(key);
                    }
                    Some(Err(e)) => {
                        stats.failed += 1;
                        failures.push((*target, e.class(), e.is_retriable()));
                        release.push(key);
                    }
                    None => {
                        stats.failed += 1;
                        failures.push((*target, "missing", false));
                        release.push(key);
                    }
                }
            }
            outcomes[p.index] = Some(match failures.first() {
                None => Outcome::Dispatched,
                Some((target, class, _)) => Outcome::Failed {
                    reason: format!("target:{target}:{class}"),
                    retriable: failures.iter().all(|f| f.2),
                },
            });
        }
        if !done.is_empty() {
            if let Err(e) = self.store.complete_many(&done).await {
                // The effects happened; only a restart could now repeat them.
                tracing::warn!(keys = done.len(), error = %e, "could not record completion");
            }
        }
        if !release.is_empty() {
            let _ = self.store.abort_many(&release).await;
        }
        held.clear();
        let results: Vec<RecordResult> = records
            .iter()
            .zip(outcomes)
            .map(|(r, o)| {
                // Every record gets an outcome above; if not, retrying is the safe answer.
                let o = o.unwrap_or(Outcome::Failed {
                    reason: "internal".into(),
                    retriable: true,
                });
                metrics.outcome(o.metric_label());
                RecordResult::new(r, o)
            })
            .collect();
        self.metrics.merge(metrics);
        if let Some(tracer) = &self.tracer {
            trace_records(tracer, &records, &results, started);
        }
        let response = DispatchResponse::from_results(results);
        tracing::debug!(summary = ?response.summary, "batch dispatched");
        response
    }

    /// Like [`Dispatcher::dispatch`], on a task of its own: the dispatch runs to its settlement
    /// (markers completed or released, one effect per record and target) even if the caller
    /// stops waiting, since dropping this future drops only the task's handle, never the task.
    /// Use it wherever the caller can give up mid-dispatch: an HTTP request whose client
    /// disconnects or times out, a `tokio::time::timeout`, a `select!`.
    ///
    /// Fails only if the task ended without an answer (it panicked, or the runtime shut down):
    /// then no record has an outcome and all should be retried.
    pub async fn dispatch_detached(
        self: &Arc<Self>,
        records: Vec<BatchRecord>,
    ) -> Result<DispatchResponse, DetachedError> {
        let this = Arc::clone(self);
        Ok(tokio::spawn(async move { this.dispatch(records).await }).await?)
    }

    /// Validates and routes one record. `Err` is its final outcome (invalid, unknown code,
    /// repeated inside the batch).
    fn route_record<'r>(
        &'r self,
        index: usize,
        record: &BatchRecord,
        seen: &mut HashMap<String, u64>,
        metrics: &mut BatchMetrics,
    ) -> Result<Routed<'r>, Outcome> {
        let event = TelemetryEvent::parse(&record.value).map_err(|e| Outcome::Failed {
            reason: format!("invalid:{}", e.class()),
            retriable: false,
        })?;
        let code = event.codigo;
        let names = match self.table.route(code) {
            Route::Targets(names) => names,
            Route::Skip => {
                return Err(Outcome::Skipped {
                    reason: format!("unknown_code:{code}"),
                })
            }
            Route::DeadLetter => {
                return Err(Outcome::Failed {
                    reason: format!("unknown_code:{code}"),
                    retriable: false,
                })
            }
        };
        let id = record.dedup_key();
        let hash = payload_hash(&record.value);
        if let Some(&earlier) = seen.get(&id) {
            if earlier == hash {
                for name in names {
                    metrics.entry(name, code).duplicates += 1;
                }
                return Err(Outcome::Duplicate);
            }
            return Err(Outcome::Conflict);
        }
        seen.insert(id.clone(), hash);
        Ok(Routed {
            index,
            id,
            hash,
            event,
            code,
            names,
        })
    }

    /// Takes the markers of every routed record at every target of its route in one store
    /// call. Records that hold at least one marker become pending; the others get their final
    /// outcome (duplicate everywhere, conflict, in progress elsewhere, store failure), and a
    /// record blocked at one target releases the markers it took at the others.
    async fn take_markers<'r>(
        &'r self,
        routed: Vec<Routed<'r>>,
        outcomes: &mut [Option<Outcome>],
        held: &Held,
        metrics: &mut BatchMetrics,
    ) -> Vec<Pending<'r>> {
        let keys: Vec<(String, u64)> = routed
            .iter()
            .flat_map(|r| r.names.iter().map(|n| (store_key(n, &r.id), r.hash)))
            .collect();
        if keys.is_empty() {
            return Vec::new();
        }
        let begun = match self.store.begin_many(&keys).await {
            Ok(begun) if begun.len() == keys.len() => begun,
            result => {
                match result {
                    Err(e) => {
                        tracing::warn!(keys = keys.len(), error = %e, "idempotency store failed")
                    }
                    Ok(_) => tracing::warn!("idempotency store answered the wrong number of keys"),
                }
                for r in &routed {
                    outcomes[r.index] = Some(Outcome::Failed {
                        reason: "store".into(),
                        retriable: true,
                    });
                }
                return Vec::new();
            }
        };
        held.add_all(
            keys.iter()
                .zip(&begun)
                .filter(|(_, b)| **b == Begin::Acquired)
                .map(|((k, _), _)| k.clone()),
        );
        let mut begun = begun.into_iter();
        let mut pending = Vec::new();
        let mut release = Vec::new();
        for r in routed {
            let mut acquired: Vec<&'r str> = Vec::new();
            let (mut conflict, mut busy) = (false, false);
            for name in r.names {
                match begun.next() {
                    Some(Begin::Acquired) => acquired.push(name.as_str()),
                    Some(Begin::Duplicate) => metrics.entry(name, r.code).duplicates += 1,
                    Some(Begin::InProgress) | None => busy = true,
                    Some(Begin::Conflict) => conflict = true,
                }
            }
            let blocked = if conflict {
                Some(Outcome::Conflict)
            } else if busy {
                Some(Outcome::Failed {
                    reason: crate::response::IN_PROGRESS.into(),
                    retriable: true,
                })
            } else if acquired.is_empty() {
                Some(Outcome::Duplicate)
            } else {
                None
            };
            match blocked {
                Some(outcome) => {
                    release.extend(acquired.iter().map(|name| store_key(name, &r.id)));
                    outcomes[r.index] = Some(outcome);
                }
                None => pending.push(Pending {
                    index: r.index,
                    id: r.id,
                    event: r.event,
                    code: r.code,
                    targets: acquired,
                }),
            }
        }
        if !release.is_empty() {
            let _ = self.store.abort_many(&release).await;
        }
        pending
    }

    /// Delivers pending records: each target gets one slice per code, in record order; targets
    /// run concurrently, a target's slices one after another.
    async fn deliver<'p>(
        &self,
        records: &[BatchRecord],
        pending: &'p [Pending<'p>],
        held: &Held,
    ) -> Vec<DeliveryResult<'p>> {
        let mut slices: Vec<(&'p str, CodeGroups<'_>)> = Vec::new();
        for p in pending {
            let delivery = Delivery {
                id: &p.id,
                record: &records[p.index],
                event: &p.event,
            };
            for &target in &p.targets {
                let pos = match slices.iter().position(|(t, _)| *t == target) {
                    Some(pos) => pos,
                    None => {
                        slices.push((target, Vec::new()));
                        slices.len() - 1
                    }
                };
                let groups = &mut slices[pos].1;
                match groups.iter_mut().find(|(c, _)| *c == p.code) {
                    Some((_, list)) => list.push(delivery),
                    None => groups.push((p.code, vec![delivery])),
                }
            }
        }
        let per_target = slices.iter().map(|(name, groups)| async move {
            let mut out = Vec::new();
            for (code, list) in groups {
                // From here the target may apply effects: a drop must leave these markers.
                held.begin_delivery(list.iter().map(|d| store_key(name, d.id)));
                let started = Instant::now();
                let result = match self.targets.get(*name) {
                    Some(target) => target.deliver(*code, list).await,
                    None => Err(TargetError::Rejected { target: (*name).to_owned(), reason: "not built".into() }),
                };
                if let Err(e) = &result {
                    tracing::warn!(target_name = %name, code = code.0, records = list.len(), error = %e, "delivery failed");
                }
                out.push(((*name, *code), result, started.elapsed()));
            }
            out
        });
        futures::future::join_all(per_target)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}
