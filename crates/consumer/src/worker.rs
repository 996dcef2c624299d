//! The group worker loop: read, batch, validate, dispatch, dead-letter, then store offsets.
//!
//! Delivery semantics: at-least-once. A record's offset is stored only after the record was
//! dispatched (or found a duplicate, or skipped by policy) or written to the dead-letter topic
//! with an ack; a batch is settled as a whole before any of its offsets are stored, and records
//! of a partition are processed in offset order. A crash re-delivers what was not committed;
//! the dispatcher's idempotency turns that into one effect.

use crate::config::WorkerConfig;
use crate::dead_letter::{DeadLetter, DeadLetterWriter};
use crate::metrics::WorkerMetrics;
use crate::transport::{Transport, TransportError};
use fleetstream_core::{TelemetryEvent, Topology};
use fleetstream_dispatcher::{BatchRecord, Outcome};
use fleetstream_kafka::{
    headers, ConsumedRecord, ConsumerSettings, GroupConsumer, KafkaError, ProducerSettings,
};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Worker errors (start-up; the loop itself retries rather than fail).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Kafka client failure.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

/// One member of a consumer group.
pub struct Worker {
    config: WorkerConfig,
    consumer: GroupConsumer,
    dead_letters: DeadLetterWriter,
    transport: Arc<dyn Transport>,
    metrics: Arc<WorkerMetrics>,
    dead_letter_topics: BTreeMap<String, String>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Worker {
    /// Joins the group and subscribes to `topics`. Dead letters go to each topic's
    /// dead-letter topic from `topology`.
    pub fn new(
        config: WorkerConfig,
        consumer: &ConsumerSettings,
        producer: &ProducerSettings,
        topology: &Topology,
        topics: &[String],
        transport: Arc<dyn Transport>,
        metrics: Arc<WorkerMetrics>,
    ) -> Result<Self, WorkerError> {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let dead_letter_topics = topics
            .iter()
            .map(|t| {
                (
                    t.clone(),
                    topology
                        .dead_letter_for(t)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("{t}-dlq")),
                )
            })
            .collect();
        Ok(Worker {
            dead_letters: DeadLetterWriter::new(producer, config.worker_id.clone())?,
            consumer: GroupConsumer::subscribe(consumer, &names)?,
            config,
            transport,
            metrics,
            dead_letter_topics,
        })
    }

    /// Partition assignment counters of this member.
    pub fn group_stats(&self) -> Arc<fleetstream_kafka::GroupStats> {
        self.consumer.stats()
    }

    /// Runs until `stop` turns true: finishes the batch in hand, commits, leaves the group.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<(), WorkerError> {
        let mut batch: Vec<ConsumedRecord> = Vec::with_capacity(self.config.batch_max_records);
        let mut batch_bytes = 0usize;
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            let window = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.changed() => {}
                _ = window => {
                    self.process(std::mem::take(&mut batch)).await;
                    batch_bytes = 0;
                    deadline = None;
                }
                rec = self.consumer.recv() => match rec {
                    Ok(r) => {
                        self.metrics.record_consumed(&r.topic, r.partition);
                        batch_bytes += r.value.len();
                        batch.push(r);
                        if deadline.is_none() {
                            deadline = Some(tokio::time::Instant::now() + self.config.batch_window);
                        }
                        if batch.len() >= self.config.batch_max_records || batch_bytes >= self.config.batch_max_bytes {
                            self.process(std::mem::take(&mut batch)).await;
                            batch_bytes = 0;
                            deadline = None;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(worker = %self.config.worker_id, error = %e, "consume error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        // Records already read are finished before leaving; nothing read is abandoned unstored
        // except by a crash, and then it is re-delivered.
        if !batch.is_empty() {
            self.process(batch).await;
        }
        tokio::task::block_in_place(|| self.consumer.close());
        Ok(())
    }

    /// Settles a batch (every record dispatched or dead-lettered), then stores its offsets.
    async fn process(&self, batch: Vec<ConsumedRecord>) {
        if batch.is_empty() {
            return;
        }
        self.metrics.batches.fetch_add(1, Ordering::Relaxed);
        let mut letters: Vec<DeadLetter> = Vec::new();
        let mut pending: Vec<BatchRecord> = Vec::with_capacity(batch.len());
        let mut last: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for r in batch {
            let key = (r.topic.clone(), r.partition);
            let e = last.entry(key).or_insert(r.offset);
            *e = (*e).max(r.offset);
            // Per-record isolation: a bad record is set aside, its partition keeps flowing.
            match TelemetryEvent::parse(&r.value) {
                Ok(_) => pending.push(to_batch_record(r)),
                Err(e) => letters.push(self.letter(
                    to_batch_record(r),
                    e.class().to_string(),
                    e.to_string(),
                    0,
                )),
            }
        }
        let mut attempt = 0u32;
        while !pending.is_empty() {
            attempt += 1;
            let started = Instant::now();
            let result = self.transport.dispatch(pending.clone()).await;
            self.metrics.record_dispatch(started.elapsed());
            match result {
                Ok(resp) => {
                    let acked_at = now_ms();
                    let mut retry = Vec::new();
                    for (rec, res) in pending.into_iter().zip(resp.results) {
                        match res.outcome {
                            Outcome::Dispatched => {
                                self.metrics.dispatched.fetch_add(1, Ordering::Relaxed);
                                if let Some(t) = rec
                                    .header(headers::PRODUCED_AT)
                                    .and_then(headers::parse_u64)
                                {
                                    self.metrics.record_e2e_micros(
                                        (acked_at - t as i64).max(0) as u64 * 1000,
                                    );
                                }
                            }
                            Outcome::Duplicate => {
                                self.metrics.duplicates.fetch_add(1, Ordering::Relaxed);
                            }
                            Outcome::Skipped { .. } => {
                                self.metrics.skipped.fetch_add(1, Ordering::Relaxed);
                            }
                            Outcome::Failed {
                                reason,
                                retriable: true,
                            } if attempt < self.config.max_attempts => {
                                tracing::debug!(%reason, "retrying record");
                                retry.push(rec);
                            }
                            Outcome::Failed { reason, retriable } => {
                                let class = if retriable {
                                    "dispatch_failed"
                                } else {
                                    "dispatch_rejected"
                                };
                                letters.push(self.letter(rec, class.into(), reason, attempt));
                            }
                            Outcome::Conflict => {
                                letters.push(self.letter(
                                    rec,
                                    "id_conflict".into(),
                                    "message id reused with a different payload".into(),
                                    attempt,
                                ));
                            }
                        }
                    }
                    pending = retry;
                }
                Err(e) if attempt < self.config.max_attempts => {
                    tracing::warn!(worker = %self.config.worker_id, error = %e, attempt, "dispatch failed; retrying batch");
                }
                Err(e) => {
                    let class = match e {
                        TransportError::Throttled(_) => "dispatch_throttled",
                        TransportError::Failed(_) => "dispatch_failed",
                    };
                    for rec in pending.drain(..) {
                        letters.push(self.letter(rec, class.into(), e.to_string(), attempt));
                    }
                }
            }
            if !pending.is_empty() {
                self.metrics
                    .retries
                    .fetch_add(pending.len() as u64, Ordering::Relaxed);
                tokio::time::sleep(self.config.backoff(attempt)).await;
            }
        }
        self.write_dead_letters(&letters).await;
        for ((topic, partition), offset) in last {
            if let Err(e) = self.consumer.store(&topic, partition, offset) {
                // The partition moved to another member: it re-delivers from the last commit.
                tracing::debug!(%topic, partition, error = %e, "offset not stored");
            }
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
                    tokio::time::sleep(self.config.backoff(attempt)).await;
                }
            }
        }
        for l in letters {
            self.metrics.record_dead_letter(&l.error_class);
        }
    }

    fn letter(&self, r: BatchRecord, class: String, message: String, attempts: u32) -> DeadLetter {
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
            error_class: class,
            error_message: message,
            attempts,
        }
    }
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
