//! The producer client: a librdkafka producer with a delivery callback and counters.
//!
//! fleetstream never chooses partitions: it sends a topic and a key, and librdkafka's
//! configured partitioner decides.

use crate::config::ProducerSettings;
use crate::context::ClientErrors;
use crate::error::{delivery_error_class, failure_kind, produce_error, FailureKind, KafkaError};
use rdkafka::client::ClientContext;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::statistics::Statistics;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a record was not delivered.
#[derive(Debug, Clone)]
pub struct DeliveryFailure {
    /// Low-cardinality class (`timed_out`, `too_large`, `not_enough_replicas`, ...).
    pub class: &'static str,
    /// The client's message.
    pub message: String,
    /// Whether the failure is about this record only (dead-letter it and go on), or the
    /// producer is gone (fatal), or neither.
    pub kind: FailureKind,
}

/// The outcome of one send, reported once per record.
#[derive(Debug)]
pub struct DeliveryReport<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition chosen by the partitioner (-1 if unknown).
    pub partition: i32,
    /// Offset (-1 if not delivered).
    pub offset: i64,
    /// Acked, or why not.
    pub result: Result<(), DeliveryFailure>,
    /// The record's value, as sent: what a refused record's dead-letter copy is made of.
    pub payload: Option<&'a [u8]>,
}

/// Receives delivery reports on librdkafka's polling thread. Keep it cheap.
pub trait DeliveryHandler: Send + Sync + 'static {
    /// Per-record data carried from send to report.
    type Token: Send + Sync + 'static;
    /// Called exactly once per record handed to [`KafkaProducer::send`] successfully.
    fn delivered(&self, token: Self::Token, report: DeliveryReport<'_>);
}

/// Counters from librdkafka statistics (when `statistics_interval` is set).
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Messages waiting in librdkafka's queue.
    pub queue_messages: AtomicU64,
    /// Produce request retries, over all brokers.
    pub tx_retries: AtomicU64,
}

#[doc(hidden)]
pub struct Ctx<H> {
    handler: Arc<H>,
    stats: Arc<ClientStats>,
    errors: Arc<ClientErrors>,
    oauth: Option<Arc<crate::msk_iam::MskIamTokens>>,
}

impl<H: DeliveryHandler> ClientContext for Ctx<H> {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.errors.record(&error, reason);
    }

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        crate::context::oauth_token(self.oauth.as_deref())
    }

    fn stats(&self, statistics: Statistics) {
        self.stats
            .queue_messages
            .store(statistics.msg_cnt, Ordering::Relaxed);
        let retries: u64 = statistics.brokers.values().map(|b| b.txretries).sum();
        self.stats.tx_retries.store(retries, Ordering::Relaxed);
    }
}

impl<H: DeliveryHandler> ProducerContext for Ctx<H> {
    type DeliveryOpaque = Box<H::Token>;

    fn delivery(&self, result: &DeliveryResult<'_>, token: Self::DeliveryOpaque) {
        let report = match result {
            Ok(m) => DeliveryReport {
                topic: m.topic(),
                partition: m.partition(),
                offset: m.offset(),
                result: Ok(()),
                payload: m.payload(),
            },
            Err((e, m)) => DeliveryReport {
                topic: m.topic(),
                partition: m.partition(),
                offset: -1,
                result: Err(DeliveryFailure {
                    class: delivery_error_class(e),
                    message: e.to_string(),
                    kind: e
                        .rdkafka_error_code()
                        .map_or(FailureKind::Other, failure_kind),
                }),
                payload: m.payload(),
            },
        };
        self.handler.delivered(*token, report);
    }
}

/// One record to send. Headers are `(name, value)` pairs.
#[derive(Debug, Clone, Copy)]
pub struct OutRecord<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Key; `None` sends keyless (random partition).
    pub key: Option<&'a [u8]>,
    /// Value.
    pub payload: &'a [u8],
    /// Headers.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// Record timestamp (CreateTime), ms since the epoch; `None` lets librdkafka stamp it
    /// (with a `gettimeofday` per record, which showed in the producer's profile).
    pub timestamp_ms: Option<i64>,
}

/// Who serves delivery reports.
enum Inner<H: DeliveryHandler> {
    /// A background thread polls (rust-rdkafka's `ThreadedProducer`).
    Threaded(ThreadedProducer<Ctx<H>>),
    /// The caller polls ([`KafkaProducer::poll`]).
    Polled(BaseProducer<Ctx<H>>),
}

/// An idempotent, `acks=all` producer.
pub struct KafkaProducer<H: DeliveryHandler> {
    inner: Inner<H>,
    stats: Arc<ClientStats>,
    errors: Arc<ClientErrors>,
    created: Instant,
}

/// librdkafka first asks for the idempotent producer id this long after the client is created
/// (`rd_kafka_idemp_init` starts a 500 ms timer: "there are no available brokers this early").
/// Records sent before then wait in its queue, which showed as a ~0.5 s ack-latency spike at
/// the start of every run.
pub const PRODUCER_ID_DELAY: Duration = Duration::from_millis(500);

/// Longest sleep between two polls while [`KafkaProducer::poll`] or [`KafkaProducer::flush`]
/// wait: the most a delivery report can be served late (ack latency is measured when it is).
pub const POLL_SLICE: Duration = Duration::from_micros(250);

impl<H: DeliveryHandler> KafkaProducer<H> {
    /// Creates a producer that reports deliveries to `handler` from a background thread.
    pub fn new(settings: &ProducerSettings, handler: Arc<H>) -> Result<Self, KafkaError> {
        Self::create(settings, handler, |c, ctx| {
            c.create_with_context(ctx).map(Inner::Threaded)
        })
    }

    /// Creates a producer whose delivery reports (and statistics) are served only inside
    /// [`KafkaProducer::poll`] and [`KafkaProducer::flush`], on the calling thread. For hot send
    /// loops: a record's memory is then freed by the thread that allocated it, which avoids
    /// malloc arena contention with a separate polling thread (measured: the difference between
    /// ~0.14 and ~0.8 M msg/s on 2 cores). The caller must poll regularly.
    pub fn new_polled(settings: &ProducerSettings, handler: Arc<H>) -> Result<Self, KafkaError> {
        Self::create(settings, handler, |c, ctx| {
            c.create_with_context(ctx).map(Inner::Polled)
        })
    }

    fn create(
        settings: &ProducerSettings,
        handler: Arc<H>,
        make: impl FnOnce(rdkafka::ClientConfig, Ctx<H>) -> Result<Inner<H>, rdkafka::error::KafkaError>,
    ) -> Result<Self, KafkaError> {
        let stats = Arc::new(ClientStats::default());
        let errors = Arc::new(ClientErrors::default());
        let ctx = Ctx {
            handler,
            stats: stats.clone(),
            errors: errors.clone(),
            oauth: settings.connection.oauth()?,
        };
        let inner =
            make(settings.to_client_config(), ctx).map_err(|e| crate::error::client_error(&e))?;
        Ok(KafkaProducer {
            inner,
            stats,
            errors,
            created: Instant::now(),
        })
    }

    /// Serves delivery reports for `timeout`: everything pending at once, then again after each
    /// sleep of at most [`POLL_SLICE`] until `timeout` has passed (a report may be served up to
    /// one slice late). `Duration::ZERO` serves one pending event (a delivery report covers one
    /// partition's batch) and returns at once: the cheap call for hot send loops. On a producer
    /// from [`KafkaProducer::new`] a background thread serves reports, so this just sleeps.
    ///
    /// Why slices: rust-rdkafka's `BaseProducer::poll(t)` keeps polling until `t` has passed
    /// and converts what is left to whole milliseconds for librdkafka, so its last millisecond
    /// (and the fraction after every early report) is a busy loop. That was ~10% of a core for
    /// a producer at 100 msg/s, and 1 ms of spinning per full-queue wait.
    pub fn poll(&self, timeout: Duration) {
        let Inner::Polled(p) = &self.inner else {
            if !timeout.is_zero() {
                std::thread::sleep(timeout);
            }
            return;
        };
        if timeout.is_zero() {
            p.poll(Duration::ZERO);
            return;
        }
        let end = Instant::now() + timeout;
        loop {
            self.serve_pending();
            let now = Instant::now();
            if now >= end {
                return;
            }
            std::thread::sleep(self.nap(end - now));
        }
    }

    /// Serves every pending event: rust-rdkafka's `poll(0)` takes one per call, so call it
    /// while that keeps lowering [`KafkaProducer::in_flight`] (bounded, in case events keep
    /// coming).
    fn serve_pending(&self) {
        let Inner::Polled(p) = &self.inner else {
            return;
        };
        let mut left = self.in_flight();
        for _ in 0..10_000 {
            p.poll(Duration::ZERO);
            let now = self.in_flight();
            if now >= left {
                return;
            }
            left = now;
        }
    }

    /// How long a wait of `left` may sleep before polling again: all of it when nothing is in
    /// flight (no report can arrive), otherwise at most [`POLL_SLICE`]. Each wake-up costs a
    /// timer and a context switch, which on a VM showed as ~20 µs of system time. With several
    /// threads sending on one producer, another may send during a long nap and its reports then
    /// wait for the next poll: such callers should wait in slices of at most [`POLL_SLICE`].
    pub fn nap(&self, left: Duration) -> Duration {
        if self.in_flight() == 0 {
            left
        } else {
            left.min(POLL_SLICE)
        }
    }

    /// Enqueues a record. On `Err((KafkaError::QueueFull, token))` the queue is full: wait for
    /// deliveries (see [`KafkaProducer::in_flight`]) and send again; never drop.
    pub fn send(
        &self,
        record: OutRecord<'_>,
        token: H::Token,
    ) -> Result<(), (KafkaError, H::Token)> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (k, v) in record.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        let mut r: BaseRecord<'_, [u8], [u8], Box<H::Token>> =
            BaseRecord::with_opaque_to(record.topic, Box::new(token))
                .payload(record.payload)
                .headers(headers);
        if let Some(k) = record.key {
            r = r.key(k);
        }
        if let Some(t) = record.timestamp_ms {
            r = r.timestamp(t);
        }
        let sent = match &self.inner {
            Inner::Threaded(p) => p.send(r),
            Inner::Polled(p) => p.send(r),
        };
        sent.map_err(|(e, r)| (produce_error(&e), *r.delivery_opaque))
    }

    /// Records handed to librdkafka and not yet reported, plus client events not yet served
    /// (librdkafka's `rd_kafka_outq_len`).
    pub fn in_flight(&self) -> usize {
        let n = match &self.inner {
            Inner::Threaded(p) => p.in_flight_count(),
            Inner::Polled(p) => p.in_flight_count(),
        };
        n.max(0) as usize
    }

    /// Waits for every queued record to be reported (acked or failed), serving reports; returns
    /// as soon as none is left, or fails after `timeout`.
    ///
    /// Not rust-rdkafka's `flush`: that serves reports in fixed 100 ms `poll` steps, so every
    /// flush took at least ~100 ms (and spun for the last millisecond of each step). Records
    /// still lingering are sent when their `linger.ms` is up (`rd_kafka_flush` bypasses linger
    /// only while it waits inside librdkafka, which this does not).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let end = Instant::now() + timeout;
        loop {
            self.serve_pending();
            let left = self.in_flight();
            if left == 0 {
                return Ok(());
            }
            let now = Instant::now();
            if now >= end {
                return Err(KafkaError::Timeout(self.errors.explain(
                    format!("flush: {left} records (or client events) still unreported after {timeout:?}"),
                    timeout.max(Duration::from_secs(60)),
                )));
            }
            std::thread::sleep((end - now).min(POLL_SLICE));
        }
    }

    /// Waits (polling) until librdkafka has had its first chance to get the idempotent producer
    /// id, plus `margin` for the request itself ([`PRODUCER_ID_DELAY`]). Call before a run's
    /// clock starts, so the first records are not measured waiting for it. A producer older than
    /// that returns at once.
    pub fn wait_for_producer_id(&self, margin: Duration) {
        let ready = self.created + PRODUCER_ID_DELAY + margin;
        loop {
            let now = Instant::now();
            if now >= ready {
                return;
            }
            self.poll((ready - now).min(Duration::from_millis(10)));
        }
    }

    /// librdkafka's fatal error, once it has raised one (`rd_kafka_fatal_error`): the producer
    /// can then send nothing more.
    pub fn fatal_error(&self) -> Option<String> {
        let e = match &self.inner {
            Inner::Threaded(p) => p.client().fatal_error(),
            Inner::Polled(p) => p.client().fatal_error(),
        };
        e.map(|(code, reason)| format!("{code}: {reason}"))
    }

    /// Client statistics.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Client-level errors (authentication, TLS, brokers down) librdkafka reported while this
    /// producer was polled.
    pub fn errors(&self) -> &ClientErrors {
        &self.errors
    }
}
