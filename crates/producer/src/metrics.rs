//! MetricsEmitter: counters, ack latency (from the actual send and from the intended send time),
//! errors by class, per-partition counts. Fed by librdkafka's delivery reports.

use fleetstream_kafka::{DeliveryHandler, DeliveryReport, FailureKind};
use fleetstream_obs::prometheus::{Exposition, HistogramSample};
use fleetstream_obs::trace::{KeyValue, Span};
use fleetstream_obs::{LatencyHistogram, LatencySummary};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Told of every acked message (the demo's id ledger listens here).
pub trait AckObserver: Send + Sync {
    /// `seq` was acked on `topic`/`partition`.
    fn acked(&self, seq: u64, topic: &str, partition: i32);
}

/// What travels with a record from send to delivery report.
#[derive(Debug)]
pub struct SendMeta {
    /// Sequence number of the message in this run.
    pub seq: u64,
    /// When it was handed to librdkafka.
    pub sent: Instant,
    /// When the schedule wanted it sent.
    pub intended: Instant,
    /// Payload bytes.
    pub bytes: u32,
    /// A rejected event written to the dead-letter topic (counted apart from `sent`/`acked`).
    pub dead_letter: bool,
    /// The OpenTelemetry span of a sampled message, ended by its delivery report.
    pub span: Option<Box<Span>>,
}

/// A record the cluster refused for itself in its delivery report (too large for the topic,
/// invalid): the send loop writes it to the reject sink, as a rejected event.
#[derive(Debug)]
pub(crate) struct Refused {
    /// Sequence number (its message id is `<run>-<seq>`).
    pub(crate) seq: u64,
    /// Delivery failure class (`too_large`, `invalid_record`).
    pub(crate) class: &'static str,
    /// The client's message.
    pub(crate) message: String,
    /// The record's value.
    pub(crate) payload: Vec<u8>,
}

/// Everything an ack updates, under one lock (one lock per delivery report, not two).
#[derive(Debug, Default)]
struct Acks {
    from_send: LatencyHistogram,
    from_intended: LatencyHistogram,
    /// Acked per topic, indexed by partition. A handful of topics: a linear search beats a
    /// map keyed by `String`.
    per_partition: Vec<(String, Vec<u64>)>,
}

impl Acks {
    fn count(&mut self, topic: &str, partition: i32) {
        let i = match self.per_partition.iter().position(|(t, _)| t == topic) {
            Some(i) => i,
            None => {
                self.per_partition.push((topic.to_string(), Vec::new()));
                self.per_partition.len() - 1
            }
        };
        // An acked record always has its partition; an unknown one (-1) is not folded into 0.
        let Ok(p) = usize::try_from(partition) else {
            return;
        };
        let parts = &mut self.per_partition[i].1;
        if parts.len() <= p {
            parts.resize(p + 1, 0);
        }
        parts[p] += 1;
    }
}

/// Live producer metrics; readable while running for progress lines.
#[derive(Default)]
pub struct ProducerMetrics {
    /// Messages handed to librdkafka.
    pub sent: AtomicU64,
    /// Payload bytes handed to librdkafka.
    pub sent_bytes: AtomicU64,
    /// Messages acked by the cluster.
    pub acked: AtomicU64,
    /// Messages that failed delivery after librdkafka's retries.
    pub failed: AtomicU64,
    /// Events rejected: no valid code, or refused by the client or broker for themselves.
    pub rejected: AtomicU64,
    /// Malformed events the generator made on purpose (`poison_rate`), sent or rejected.
    pub poison_injected: AtomicU64,
    /// Rejected events safely written: a reject-file line, or a dead-letter record acked.
    pub rejects_written: AtomicU64,
    /// Rejected events whose dead-letter write failed (the run then fails).
    pub rejects_failed: AtomicU64,
    /// Records in librdkafka's queue, sampled by the senders (about every 100 ms).
    pub queue_depth: AtomicU64,
    /// Produce request retries, from librdkafka statistics (when enabled).
    pub retries: AtomicU64,
    /// Nanoseconds spent waiting on a full librdkafka queue.
    pub queue_full_wait_ns: AtomicU64,
    /// Times the queue was found full.
    pub queue_full_events: AtomicU64,
    /// Records sent to a source topic that the cluster then refused for themselves (they are
    /// rejected events, not failed deliveries).
    pub refused_after_send: AtomicU64,
    /// Refused records waiting for the send loop to write them to the reject sink.
    refused: Mutex<Vec<Refused>>,
    refused_waiting: AtomicU64,
    /// A delivery report said librdkafka raised a fatal error.
    fatal_seen: std::sync::atomic::AtomicBool,
    failures: Mutex<BTreeMap<&'static str, u64>>,
    rejected_by_class: Mutex<BTreeMap<&'static str, u64>>,
    acks: Mutex<Acks>,
    observer: Option<Arc<dyn AckObserver>>,
}

impl std::fmt::Debug for ProducerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerMetrics")
            .field("sent", &self.sent)
            .field("acked", &self.acked)
            .finish()
    }
}

/// Latency both ways, for reports.
#[derive(Debug, Clone, Serialize)]
pub struct AckLatency {
    /// From the actual send.
    pub from_send: LatencySummary,
    /// From the intended send time (includes time the producer itself was behind).
    pub from_intended: LatencySummary,
}

impl ProducerMetrics {
    /// Metrics that also tell `observer` of every ack.
    pub fn with_observer(observer: Option<Arc<dyn AckObserver>>) -> Self {
        ProducerMetrics {
            observer,
            ..Default::default()
        }
    }

    /// Ack latency so far.
    pub fn latency(&self) -> AckLatency {
        let h = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        AckLatency {
            from_send: h.from_send.summary(),
            from_intended: h.from_intended.summary(),
        }
    }

    /// Failures by class.
    pub fn failures(&self) -> BTreeMap<&'static str, u64> {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Rejected events by reason.
    pub fn rejected_by_class(&self) -> BTreeMap<&'static str, u64> {
        self.rejected_by_class
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counts one rejected event of `class`.
    pub fn count_reject(&self, class: &'static str) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        *self
            .rejected_by_class
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(class)
            .or_default() += 1;
    }

    /// Whether refused records wait for [`ProducerMetrics::take_refused`] (one relaxed load).
    pub(crate) fn has_refused(&self) -> bool {
        self.refused_waiting.load(Ordering::Relaxed) > 0
    }

    /// The refused records waiting to be written to the reject sink.
    pub(crate) fn take_refused(&self) -> Vec<Refused> {
        let mut r = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        self.refused_waiting.store(0, Ordering::Relaxed);
        std::mem::take(&mut *r)
    }

    /// Whether a delivery report carried librdkafka's fatal error.
    pub(crate) fn fatal_seen(&self) -> bool {
        self.fatal_seen.load(Ordering::Relaxed)
    }

    /// Acked messages per topic and partition.
    pub fn per_partition(&self) -> BTreeMap<String, BTreeMap<i32, u64>> {
        // Copy under the lock (every delivery report takes it), convert after.
        let snapshot = self
            .acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .per_partition
            .clone();
        snapshot
            .iter()
            .map(|(t, parts)| {
                let parts = parts
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(|(p, n)| (p as i32, *n))
                    .collect();
                (t.clone(), parts)
            })
            .collect()
    }
}

impl ProducerMetrics {
    /// Writes every producer metric into a Prometheus exposition (names in
    /// [`fleetstream_obs::producer`]). The caller adds the rate gauges it owns.
    pub fn write_prometheus(&self, e: &mut Exposition) {
        use fleetstream_obs::producer as n;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        e.counter(
            n::SENT_TOTAL,
            "Messages handed to librdkafka for the source topics.",
            &[],
            get(&self.sent),
        );
        e.counter(
            n::SENT_BYTES_TOTAL,
            "Payload bytes handed to librdkafka.",
            &[],
            get(&self.sent_bytes),
        );
        e.counter(
            n::ACKED_TOTAL,
            "Messages acknowledged by the cluster (acks=all).",
            &[],
            get(&self.acked),
        );
        let failures = self.failures();
        if failures.is_empty() {
            e.counter(
                n::FAILED_TOTAL,
                "Deliveries failed after librdkafka's retries, by class.",
                &[("class", "none")],
                0.0,
            );
        }
        for (class, v) in failures {
            e.counter(
                n::FAILED_TOTAL,
                "Deliveries failed after librdkafka's retries, by class.",
                &[("class", class)],
                v as f64,
            );
        }
        let rejected = self.rejected_by_class();
        if rejected.is_empty() {
            e.counter(
                n::REJECTED_TOTAL,
                "Events rejected (no extractable code, or refused by the client or broker for themselves), by class.",
                &[("class", "none")],
                0.0,
            );
        }
        for (class, v) in rejected {
            e.counter(
                n::REJECTED_TOTAL,
                "Events rejected (no extractable code, or refused by the client or broker for themselves), by class.",
                &[("class", class)],
                v as f64,
            );
        }
        e.counter(
            n::REJECTS_WRITTEN_TOTAL,
            "Rejected events written to the reject file or acked on the dead-letter topic.",
            &[],
            get(&self.rejects_written),
        );
        e.counter(
            n::POISON_INJECTED_TOTAL,
            "Malformed events injected on purpose (poison rate).",
            &[],
            get(&self.poison_injected),
        );
        e.counter(
            n::RETRIES_TOTAL,
            "Produce request retries (librdkafka statistics).",
            &[],
            get(&self.retries),
        );
        e.counter(
            n::QUEUE_FULL_TOTAL,
            "Times librdkafka's queue was full and the producer waited.",
            &[],
            get(&self.queue_full_events),
        );
        e.counter(
            n::QUEUE_FULL_WAIT_SECONDS_TOTAL,
            "Seconds spent waiting on a full librdkafka queue.",
            &[],
            get(&self.queue_full_wait_ns) / 1e9,
        );
        e.gauge(
            n::QUEUE_DEPTH,
            "Records in librdkafka's queue, not yet acknowledged.",
            &[],
            get(&self.queue_depth),
        );
        let (send, intended) = {
            let h = self.acks.lock().unwrap_or_else(|p| p.into_inner());
            (
                HistogramSample::from_latency(&h.from_send, &n::ACK_LATENCY_BUCKETS_SECONDS),
                HistogramSample::from_latency(&h.from_intended, &n::ACK_LATENCY_BUCKETS_SECONDS),
            )
        };
        let help = "Ack latency: delivery report minus the send (clock=send) or minus the intended send time (clock=intended).";
        e.histogram(n::ACK_LATENCY_SECONDS, help, &[("clock", "send")], &send);
        e.histogram(
            n::ACK_LATENCY_SECONDS,
            help,
            &[("clock", "intended")],
            &intended,
        );
        for (topic, parts) in self.per_partition() {
            for (p, v) in parts {
                let p = p.to_string();
                e.counter(
                    n::PARTITION_ACKED_TOTAL,
                    "Acknowledged messages per topic and partition.",
                    &[("topic", &topic), ("partition", &p)],
                    v as f64,
                );
            }
        }
    }
}

impl DeliveryHandler for ProducerMetrics {
    type Token = SendMeta;

    fn delivered(&self, meta: SendMeta, report: DeliveryReport<'_>) {
        let now = Instant::now();
        if meta.dead_letter {
            // A rejected event's dead-letter record: it is accounted for once it is acked.
            match report.result {
                Ok(()) => {
                    self.rejects_written.fetch_add(1, Ordering::Relaxed);
                    if let Some(o) = &self.observer {
                        o.acked(meta.seq, report.topic, report.partition);
                    }
                }
                Err(failure) => {
                    self.rejects_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(seq = meta.seq, topic = report.topic, class = failure.class, error = %failure.message, "dead-letter write of a rejected event failed");
                }
            }
            return;
        }
        if let Some(span) = meta.span {
            end_send_span(*span, &report);
        }
        if let Err(failure) = &report.result {
            match failure.kind {
                // About this record only: it becomes a rejected event, dead-lettered by the send
                // loop; the run goes on.
                FailureKind::Record => {
                    tracing::warn!(seq = meta.seq, topic = report.topic, class = failure.class, error = %failure.message, "the cluster refused a record; it goes to the reject sink");
                    self.refused_after_send.fetch_add(1, Ordering::Relaxed);
                    self.refused
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Refused {
                            seq: meta.seq,
                            class: failure.class,
                            message: failure.message.clone(),
                            payload: report.payload.unwrap_or_default().to_vec(),
                        });
                    self.refused_waiting.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                FailureKind::Fatal => self.fatal_seen.store(true, Ordering::Relaxed),
                FailureKind::Other => {}
            }
        }
        match report.result {
            Ok(()) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
                {
                    let mut a = self.acks.lock().unwrap_or_else(|p| p.into_inner());
                    a.from_send.record(now - meta.sent);
                    a.from_intended
                        .record(now.saturating_duration_since(meta.intended));
                    a.count(report.topic, report.partition);
                }
                if let Some(o) = &self.observer {
                    o.acked(meta.seq, report.topic, report.partition);
                }
            }
            Err(failure) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                *self
                    .failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(failure.class)
                    .or_default() += 1;
                tracing::warn!(seq = meta.seq, topic = report.topic, class = failure.class, error = %failure.message, "delivery failed");
            }
        }
    }
}

/// Ends a sampled message's span with where it landed, or why it did not.
fn end_send_span(span: Span, report: &DeliveryReport<'_>) {
    let mut attributes = vec![KeyValue::new(
        "messaging.destination.partition.id",
        report.partition.to_string(),
    )];
    // (The topic and the rest were set when the span started.)
    let error = match &report.result {
        Ok(()) => {
            attributes.push(KeyValue::new("messaging.kafka.offset", report.offset));
            None
        }
        Err(failure) => {
            attributes.push(KeyValue::new("error.type", failure.class));
            Some(failure.message.clone())
        }
    };
    span.end(attributes, error);
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetstream_kafka::DeliveryReport;

    fn ack(m: &ProducerMetrics, topic: &str, partition: i32) {
        let now = Instant::now();
        let meta = SendMeta {
            seq: 0,
            sent: now,
            intended: now,
            bytes: 200,
            dead_letter: false,
            span: None,
        };
        m.delivered(
            meta,
            DeliveryReport {
                topic,
                partition,
                offset: 0,
                result: Ok(()),
                payload: None,
            },
        );
    }

    #[test]
    fn acks_are_counted_per_topic_and_partition() {
        let m = ProducerMetrics::default();
        for (t, p) in [("a", 0), ("a", 0), ("a", 3), ("b", 1), ("a", -1)] {
            ack(&m, t, p);
        }
        let want = BTreeMap::from([
            ("a".to_string(), BTreeMap::from([(0, 2), (3, 1)])),
            ("b".to_string(), BTreeMap::from([(1, 1)])),
        ]);
        assert_eq!(
            m.per_partition(),
            want,
            "no zero rows, -1 not folded into 0"
        );
        assert_eq!(m.acked.load(Ordering::Relaxed), 5);
        assert_eq!(m.latency().from_send.count, 5);
    }
}
