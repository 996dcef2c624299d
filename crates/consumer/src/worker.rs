//! The group worker: a poll loop that batches, and a settle task that dispatches.
//!
//! Delivery semantics: at-least-once. A record's offset is stored only after the record was
//! dispatched (or found a duplicate, or skipped by policy) or written to the dead-letter topic
//! with an ack ([`crate::settle`]); batches are settled one at a time in the order they were
//! read, so a partition's stored offset never passes an unsettled record. A crash re-delivers
//! what was not committed; the dispatcher's idempotency turns that into one effect.
//!
//! Backpressure: at most `max_batches_queued` batches wait for the settle task. When the queue
//! is full (dispatcher slow or throttling) the worker pauses its partitions and keeps polling,
//! so the group does not evict it, and resumes once there is room. Memory stays bounded by the
//! queue, one batch in hand, and librdkafka's (configured) prefetch.
//!
//! Pausing holds every partition of the worker, including any assigned while it holds, and a
//! resume reaches every partition it paused, by name, assigned or not at that moment: librdkafka
//! keeps a pause across revoke and re-assign, so a partition revoked while paused (a session
//! timeout during a cluster outage) and forgotten would never be consumed again once it came
//! back. [`GroupConsumer`] keeps that intent and applies it on every assignment.
//!
//! Errors from the poll are routine (a broker down: librdkafka reconnects by itself) and
//! logged; only a fatal client error ends the worker, after it settled what it had read.

use crate::config::WorkerConfig;
use crate::dead_letter::DeadLetterWriter;
use crate::metrics::WorkerMetrics;
use crate::settle::Settler;
use crate::transport::Transport;
use fleetstream_core::Topology;
use fleetstream_kafka::{
    ConsumedRecord, ConsumerSettings, GroupConsumer, GroupStats, KafkaError, ProducerSettings,
};
use fleetstream_obs::trace::Tracer;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Worker errors (start-up; the loop itself retries rather than fail).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Kafka client failure.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// Invalid worker settings.
    #[error("worker setting {0}")]
    Config(String),
}

/// One member of a consumer group.
pub struct Worker {
    settler: Arc<Settler>,
    consumer: Arc<GroupConsumer>,
}

struct Batch {
    records: Vec<ConsumedRecord>,
    opened: Instant,
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
        config
            .validate()
            .map_err(|e| WorkerError::Config(e.to_string()))?;
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
        let consumer = Arc::new(GroupConsumer::subscribe(consumer, &names)?);
        let settler = Settler {
            dead_letters: DeadLetterWriter::new(producer, config.worker_id.clone())?,
            consumer: consumer.clone(),
            config,
            transport,
            metrics,
            dead_letter_topics,
            tracer: None,
        };
        Ok(Worker {
            settler: Arc::new(settler),
            consumer,
        })
    }

    /// Records a `process <topic>` span for each settled record whose `traceparent` says
    /// sampled (see [`fleetstream_obs::trace`]).
    pub fn with_tracer(mut self, tracer: Option<Tracer>) -> Self {
        // The settler is shared only once `run` starts, so this is its only handle.
        if let Some(settler) = Arc::get_mut(&mut self.settler) {
            settler.tracer = tracer;
        }
        self
    }

    /// Partition assignment counters of this member.
    pub fn group_stats(&self) -> Arc<GroupStats> {
        self.consumer.stats()
    }

    /// Runs until `stop` turns true: stops fetching, settles what was read (up to the shutdown
    /// timeout; the rest is abandoned uncommitted and re-delivered later), commits, leaves.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<(), WorkerError> {
        let config = self.settler.config.clone();
        let metrics = self.settler.metrics.clone();
        let (tx, mut rx) = mpsc::channel::<Batch>(config.max_batches_queued);
        let settler = self.settler.clone();
        let settle_task = tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                settler.settle(b.records, b.opened).await;
            }
        });

        let mut batch: Vec<ConsumedRecord> = Vec::with_capacity(config.batch_max_records);
        let mut batch_bytes = 0usize;
        let mut opened = Instant::now();
        let mut deadline: Option<tokio::time::Instant> = None;
        // A closed batch the queue had no room for; while it waits, partitions are paused.
        let mut blocked: Option<Batch> = None;
        let mut fatal: Option<KafkaError> = None;
        let mut retry_tick = tokio::time::interval(Duration::from_millis(20));
        retry_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

        loop {
            if *stop.borrow() {
                break;
            }
            let window = async {
                match deadline {
                    Some(d) if blocked.is_none() => tokio::time::sleep_until(d).await,
                    _ => std::future::pending().await,
                }
            };
            let mut close_batch = false;
            tokio::select! {
                _ = stop.changed() => {}
                _ = window => close_batch = true,
                _ = retry_tick.tick(), if blocked.is_some() => {
                    if let Some(b) = blocked.take() {
                        match tx.try_send(b) {
                            Ok(()) => self.resume(),
                            Err(mpsc::error::TrySendError::Full(b)) => blocked = Some(b),
                            Err(mpsc::error::TrySendError::Closed(_)) => break,
                        }
                    }
                }
                rec = self.consumer.recv() => match rec {
                    Ok(r) => {
                        metrics.record_consumed(&r.topic, r.partition);
                        if batch.is_empty() {
                            opened = Instant::now();
                            deadline = Some(tokio::time::Instant::now() + config.batch_window);
                        }
                        batch_bytes += r.value.len();
                        batch.push(r);
                        close_batch = batch.len() >= config.batch_max_records || batch_bytes >= config.batch_max_bytes;
                    }
                    Err(e) if e.is_fatal() => {
                        tracing::error!(worker = %config.worker_id, error = %e, "the Kafka client failed: settling what was read, then stopping");
                        fatal = Some(e);
                        break;
                    }
                    Err(e) => {
                        // Routine (a broker down or restarting): librdkafka reconnects by itself.
                        tracing::warn!(worker = %config.worker_id, error = %e, "consume error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            if close_batch && blocked.is_none() && !batch.is_empty() {
                let b = Batch {
                    records: std::mem::take(&mut batch),
                    opened,
                };
                batch_bytes = 0;
                deadline = None;
                // A full queue is normal while draining a backlog: wait a little for room
                // (pausing makes librdkafka drop its prefetch and fetch again on resume). If
                // the dispatcher stays behind, pause and keep polling.
                match tokio::time::timeout(config.pause_after, tx.reserve()).await {
                    Ok(Ok(permit)) => permit.send(b),
                    Ok(Err(_)) => break,
                    Err(_) => {
                        blocked = Some(b);
                        self.pause();
                    }
                }
            }
        }

        // Shutdown: everything read is settled if it can be within the timeout.
        let shutdown = async {
            if let Some(b) = blocked.take() {
                let _ = tx.send(b).await;
            }
            if !batch.is_empty() {
                let _ = tx
                    .send(Batch {
                        records: batch,
                        opened,
                    })
                    .await;
            }
            drop(tx);
            let _ = settle_task.await;
        };
        if tokio::time::timeout(config.shutdown_timeout, shutdown)
            .await
            .is_err()
        {
            tracing::warn!(worker = %config.worker_id, "shutdown timeout: unsettled batches are abandoned and will be re-delivered");
        }
        let consumer = self.consumer;
        drop(self.settler);
        tokio::task::block_in_place(move || match Arc::try_unwrap(consumer) {
            Ok(c) => c.close(),
            // The settle task still holds it (abandoned): offsets stay as stored; librdkafka
            // commits stored offsets when the last handle drops.
            Err(c) => {
                let _ = c.commit_stored();
            }
        });
        match fatal {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Holds every partition (those assigned later too) while a closed batch waits for room.
    fn pause(&self) {
        match self.consumer.pause_assigned() {
            Ok(0) => {}
            Ok(_) => {
                self.settler.metrics.pauses.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "pause failed"),
        }
        self.paused_gauge();
    }

    /// Resumes every partition paused by [`Worker::pause`], by name, assigned or not.
    fn resume(&self) {
        if let Err(e) = self.consumer.resume_all() {
            tracing::warn!(error = %e, "resume failed");
        }
        self.paused_gauge();
    }

    fn paused_gauge(&self) {
        self.settler
            .metrics
            .paused_partitions
            .store(self.consumer.paused_count() as u64, Ordering::Relaxed);
    }
}
