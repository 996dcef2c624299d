//! Settling a batch: every record ends dispatched (or a recognised duplicate, or skipped by
//! policy) or written to the dead-letter topic with an ack; only then are offsets stored.

use crate::config::WorkerConfig;
use crate::dead_letter::{DeadLetter, DeadLetterWriter};
use crate::metrics::WorkerMetrics;
use crate::transport::{Transport, TransportError};
use fleetstream_core::TelemetryEvent;
use fleetstream_dispatcher::{BatchRecord, Outcome};
use fleetstream_kafka::{headers, ConsumedRecord, GroupConsumer};
use fleetstream_obs::trace::{kafka_attributes, KeyValue, SpanKind, TraceParent, Tracer};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Owns everything a batch needs on its way out.
pub(crate) struct Settler {
    pub(crate) config: WorkerConfig,
    pub(crate) consumer: Arc<GroupConsumer>,
    pub(crate) dead_letters: DeadLetterWriter,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) metrics: Arc<WorkerMetrics>,
    pub(crate) dead_letter_topics: BTreeMap<String, String>,
    pub(crate) tracer: Option<Tracer>,
}

/// A sampled record whose `process` span is recorded once its batch is settled.
struct Traced {
    parent: TraceParent,
    topic: String,
    partition: i32,
    offset: i64,
}

impl Settler {
    /// Settles a batch, then stores its offsets. Records of a partition arrive in offset
    /// order and batches are settled one at a time, so storing the highest offset per
    /// partition never passes an unsettled record.
    pub(crate) async fn settle(&self, batch: Vec<ConsumedRecord>, opened: Instant) {
        if batch.is_empty() {
            return;
        }
        self.metrics.record_batch(batch.len(), opened.elapsed());
        let batch_len = batch.len();
        let traced: Vec<Traced> = match self.tracer {
            Some(_) => batch.iter().filter_map(traced).collect(),
            None => Vec::new(),
        };
        let mut letters: Vec<DeadLetter> = Vec::new();
        let mut valid: Vec<BatchRecord> = Vec::with_capacity(batch.len());
        let mut last: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for r in batch {
            let e = last
                .entry((r.topic.clone(), r.partition))
                .or_insert(r.offset);
            *e = (*e).max(r.offset);
            // Per-record isolation: a bad record is set aside, its partition keeps flowing.
            match TelemetryEvent::parse(&r.value) {
                Ok(_) => valid.push(to_batch_record(r)),
                Err(e) => {
                    letters.push(self.letter(to_batch_record(r), e.class(), e.to_string(), 0))
                }
            }
        }
        if self.config.key_lanes > 1 {
            // Key-ordered concurrency: each key keeps to one lane, so its records stay in offset
            // order with at most one dispatch in flight, while other keys' lanes run beside it.
            // Offsets are stored only after every lane settles: the committed offset never passes
            // an unfinished record.
            let lanes = self.config.key_lanes;
            let mut by_lane: Vec<Vec<BatchRecord>> = vec![Vec::new(); lanes];
            for r in valid {
                let lane = r.key.as_deref().map_or(r.partition as usize, |k| {
                    (fleetstream_core::murmur2(k) & 0x7fff_ffff) as usize
                }) % lanes;
                by_lane[lane].push(r);
            }
            let results =
                futures::future::join_all(by_lane.into_iter().filter(|l| !l.is_empty()).map(
                    |lane| async move {
                        let mut lane_letters = Vec::new();
                        self.dispatch(lane, &mut lane_letters).await;
                        lane_letters
                    },
                ))
                .await;
            letters.extend(results.into_iter().flatten());
        } else {
            self.dispatch(valid, &mut letters).await;
        }
        self.write_dead_letters(&letters).await;
        for ((topic, partition), offset) in last {
            if let Err(e) = self.consumer.store(&topic, partition, offset) {
                // The partition moved to another member: it re-delivers from the last commit.
                tracing::debug!(%topic, partition, error = %e, "offset not stored");
            }
        }
        if let Some(tracer) = &self.tracer {
            self.trace_settled(tracer, traced, &letters, (opened, batch_len));
        }
    }

    /// One `process <topic>` span per sampled record, child of the producer's span, from the
    /// moment its batch opened to the moment it was settled; a dead-lettered record's span is
    /// marked as an error with the dead letter's class and message.
    fn trace_settled(
        &self,
        tracer: &Tracer,
        traced: Vec<Traced>,
        letters: &[DeadLetter],
        (opened, batch_len): (Instant, usize),
    ) {
        let end = SystemTime::now();
        let start = end.checked_sub(opened.elapsed()).unwrap_or(end);
        for t in traced {
            let letter = letters.iter().find(|l| {
                l.source_offset == t.offset
                    && l.source_partition == t.partition
                    && l.source_topic == t.topic
            });
            let mut attributes =
                kafka_attributes("process", &t.topic, Some(t.partition), Some(t.offset));
            attributes.extend([
                KeyValue::new("messaging.batch.message_count", batch_len as i64),
                KeyValue::new("fleetstream.worker_id", self.config.worker_id.clone()),
                KeyValue::new(
                    "fleetstream.outcome",
                    if letter.is_some() {
                        "dead_letter"
                    } else {
                        "settled"
                    },
                ),
            ]);
            let error = letter.map(|l| {
                attributes.push(KeyValue::new("error.type", l.error_class.clone()));
                format!(
                    "{}: {}",
                    l.error_class,
                    crate::dead_letter::cut(
                        &l.error_message,
                        crate::dead_letter::LOGGED_ERROR_CHARS
                    )
                )
            });
            tracer.record(
                format!("process {}", t.topic),
                SpanKind::Consumer,
                &t.parent,
                (start, end),
                attributes,
                error,
            );
        }
    }

    /// Dispatches with retries (failed records only: partial batch responses), bisecting a
    /// batch that fails as a whole; what cannot be dispatched becomes a dead letter.
    async fn dispatch(&self, records: Vec<BatchRecord>, letters: &mut Vec<DeadLetter>) {
        // Work list of (records, attempts already made); halves of a bisected batch start over.
        let mut work: Vec<(Vec<BatchRecord>, u32)> = vec![(records, 0)];
        while let Some((mut pending, mut attempt)) = work.pop() {
            while !pending.is_empty() {
                attempt += 1;
                let started = Instant::now();
                let result = self.transport.dispatch(pending.clone()).await;
                self.metrics.record_dispatch(started.elapsed());
                match result {
                    Ok(resp) if resp.results.len() == pending.len() => {
                        pending = self.apply(pending, resp.results, attempt, letters);
                    }
                    Ok(resp) => {
                        let e = TransportError::Failed(format!(
                            "dispatcher answered {} results for {} records",
                            resp.results.len(),
                            pending.len()
                        ));
                        if let Some(split) =
                            self.on_batch_failure(&mut pending, attempt, &e, letters)
                        {
                            work.extend(split);
                        }
                    }
                    Err(e) => {
                        if matches!(e, TransportError::Throttled(_)) {
                            self.metrics.throttled.fetch_add(1, Ordering::Relaxed);
                        }
                        if let Some(split) =
                            self.on_batch_failure(&mut pending, attempt, &e, letters)
                        {
                            work.extend(split);
                        }
                    }
                }
                if !pending.is_empty() {
                    self.expire_old(&mut pending, attempt, letters);
                    self.metrics
                        .retries
                        .fetch_add(pending.len() as u64, Ordering::Relaxed);
                    tokio::time::sleep(self.config.backoff(attempt)).await;
                }
            }
        }
    }

    /// Applies per-record results; returns the records to retry.
    fn apply(
        &self,
        pending: Vec<BatchRecord>,
        results: Vec<fleetstream_dispatcher::RecordResult>,
        attempt: u32,
        letters: &mut Vec<DeadLetter>,
    ) -> Vec<BatchRecord> {
        let acked_at = now_ms();
        let mut retry = Vec::new();
        for (rec, res) in pending.into_iter().zip(results) {
            match res.outcome {
                Outcome::Dispatched => {
                    self.metrics.dispatched.fetch_add(1, Ordering::Relaxed);
                    if let Some(t) = rec
                        .header(headers::PRODUCED_AT)
                        .and_then(headers::parse_u64)
                    {
                        self.metrics
                            .record_e2e_micros((acked_at - t as i64).max(0) as u64 * 1000);
                    }
                }
                Outcome::Duplicate => {
                    self.metrics.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Skipped { .. } => {
                    self.metrics.skipped.fetch_add(1, Ordering::Relaxed);
                }
                // In progress elsewhere: an earlier dispatch of this record (one its caller gave
                // up on) still runs and will settle it, or its marker expires. Giving up now
                // would dead-letter a record whose effect may be applied, so it is retried
                // without counting attempts; `max_record_age` still bounds the wait.
                ref o @ Outcome::Failed {
                    ref reason,
                    retriable: true,
                } if attempt < self.config.max_attempts || o.is_in_progress() => {
                    tracing::debug!(%reason, "retrying record");
                    retry.push(rec);
                }
                Outcome::Failed { reason, retriable } => {
                    let class = if retriable {
                        "dispatch_failed"
                    } else {
                        "dispatch_rejected"
                    };
                    letters.push(self.letter(rec, class, reason, attempt));
                }
                Outcome::Conflict => {
                    letters.push(self.letter(
                        rec,
                        "id_conflict",
                        "message id reused with a different payload".into(),
                        attempt,
                    ));
                }
            }
        }
        retry
    }

    /// The transport failed for the whole batch. Retry while attempts remain; then bisect a
    /// batch of several records (returning the halves), or dead-letter a single record.
    fn on_batch_failure(
        &self,
        pending: &mut Vec<BatchRecord>,
        attempt: u32,
        error: &TransportError,
        letters: &mut Vec<DeadLetter>,
    ) -> Option<Vec<(Vec<BatchRecord>, u32)>> {
        tracing::warn!(worker = %self.config.worker_id, %error, attempt, records = pending.len(), "dispatch failed");
        if attempt < self.config.max_attempts {
            return None;
        }
        if self.config.bisect_on_error && pending.len() > 1 {
            self.metrics.bisections.fetch_add(1, Ordering::Relaxed);
            let right = pending.split_off(pending.len() / 2);
            let left = std::mem::take(pending);
            // Pushed right first so the left half (older offsets) is dispatched first.
            return Some(vec![(right, 0), (left, 0)]);
        }
        let class = match error {
            TransportError::Throttled(_) => "dispatch_throttled",
            TransportError::Failed(_) => "dispatch_failed",
        };
        for rec in pending.drain(..) {
            letters.push(self.letter(rec, class, error.to_string(), attempt));
        }
        None
    }

    /// Dead-letters records past the maximum record age instead of retrying them again.
    fn expire_old(
        &self,
        pending: &mut Vec<BatchRecord>,
        attempt: u32,
        letters: &mut Vec<DeadLetter>,
    ) {
        let oldest_allowed = now_ms() - self.config.max_record_age.as_millis() as i64;
        let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(pending)
            .into_iter()
            .partition(|r| r.timestamp_ms >= 0 && r.timestamp_ms < oldest_allowed);
        *pending = keep;
        for rec in old {
            letters.push(self.letter(
                rec,
                "max_record_age",
                format!("older than {:?}", self.config.max_record_age),
                attempt,
            ));
        }
    }

    /// Writes dead letters until the cluster acks them all. Never skips: a failed write is
    /// retried with backoff, and the batch's offsets stay unstored meanwhile.
    async fn write_dead_letters(&self, letters: &[DeadLetter]) {
        if letters.is_empty() {
            return;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.dead_letters.write_all(letters).await {
                Ok(()) => break,
                Err(e) => {
                    self.metrics
                        .dead_letter_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!(worker = %self.config.worker_id, error = %e, attempt, "dead-letter write failed; retrying");
                    tokio::time::sleep(self.config.backoff(attempt).max(Duration::from_millis(10)))
                        .await;
                }
            }
        }
        for l in letters {
            self.metrics.record_dead_letter(&l.error_class);
        }
        crate::dead_letter::log_written(&self.config.worker_id, letters);
    }

    fn letter(&self, r: BatchRecord, class: &str, message: String, attempts: u32) -> DeadLetter {
        DeadLetter {
            topic: self
                .dead_letter_topics
                .get(&r.topic)
                .cloned()
                .unwrap_or_else(|| format!("{}-dlq", r.topic)),
            source_topic: r.topic,
            source_partition: r.partition,
            source_offset: r.offset,
            source_timestamp_ms: r.timestamp_ms,
            key: r.key,
            value: r.value,
            headers: r.headers,
            error_class: class.to_string(),
            error_message: message,
            attempts,
        }
    }
}

/// The record's sampled `traceparent`, with where it was read from.
fn traced(r: &ConsumedRecord) -> Option<Traced> {
    let parent = r
        .header(headers::TRACEPARENT)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(TraceParent::parse)
        .filter(|p| p.sampled)?;
    Some(Traced {
        parent,
        topic: r.topic.clone(),
        partition: r.partition,
        offset: r.offset,
    })
}

fn to_batch_record(r: ConsumedRecord) -> BatchRecord {
    BatchRecord {
        topic: r.topic,
        partition: r.partition,
        offset: r.offset,
        timestamp_ms: r.timestamp_ms.unwrap_or(-1),
        key: r.key,
        value: r.value,
        headers: r.headers,
    }
}
