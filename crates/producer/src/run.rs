//! The send loop: source -> extract code (or reject) -> route topic -> resolve key -> send with
//! headers, paced by the token buckets, waiting (never dropping) when librdkafka's queue is
//! full. Several sender threads share one librdkafka producer (it is thread-safe); each has its
//! own generator over its own shard of the trucks, so a truck's events stay in order.

use crate::generator::{GeneratorConfig, GeneratorError};
use crate::metrics::{AckLatency, ProducerMetrics, SendMeta};
use crate::rate::{Ramp, SharedPacer, SharedRate};
use crate::rejects::{reject_class, RejectFile, RejectSink};
use crate::source::{Lines, Next, SourceSpec, ThreadSource};
use crate::wire::{decimal, traceparent, IdWriter};
use fleetstream_core::{
    extract_code, extract_truck_id, Code, EventError, KeyResolver, Topology, MAX_EVENT_BYTES,
};
use fleetstream_kafka::headers::{self, dead_letter};
use fleetstream_kafka::{KafkaError, KafkaProducer, OutRecord, ProducerSettings};
use fleetstream_obs::trace::{
    kafka_attributes, KeyValue, SampleRatio, Span, SpanKind, TraceParent, Tracer,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Everything a producer run needs, validated.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Topics and routing rules.
    pub topology: Topology,
    /// Key strategy in force.
    pub keys: KeyResolver,
    /// Client settings.
    pub settings: ProducerSettings,
    /// Synthetic source.
    pub generator: GeneratorConfig,
    /// Target rate (msg/s, 0 = unthrottled); may change while running.
    pub rate: SharedRate,
    /// Token bucket size: sends allowed at once after idling.
    pub burst: u32,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many events (sent plus rejected).
    pub count: Option<u64>,
    /// Id of this run, the prefix of every message id.
    pub run_id: u64,
    /// Source, threads, ramp, byte rate and reject handling; the default is one thread on the
    /// synthetic generator, rejects to the dead-letter topic.
    pub options: RunOptions,
}

/// The less common parts of a run; [`RunOptions::default`] suits the demo.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// Where events come from. Default synthetic.
    pub source: SourceSpec,
    /// Sender threads sharing the one librdkafka producer. Default 1.
    pub threads: u32,
    /// Rate profile; drives [`RunSpec::rate`] while it runs. Default none.
    pub ramp: Option<Ramp>,
    /// Byte rate, payload bytes/s, on top of the message rate; changeable while running.
    /// Default none.
    pub rate_bytes: Option<SharedRate>,
    /// Byte bucket size. Default none: 10 ms of the byte rate plus one largest event.
    pub burst_bytes: Option<u64>,
    /// Where rejected events go. Default the dead-letter topic.
    pub rejects: RejectSink,
    /// Share of messages whose `traceparent` says sampled (the head-sampling decision every
    /// later tier follows). Default [`DEFAULT_TRACE_SAMPLE_RATIO`].
    pub trace_ratio: SampleRatio,
    /// Exports a `send` span for each sampled message, ended by its delivery report. Default
    /// none.
    pub tracer: Option<Tracer>,
}

/// Default share of sampled messages: 1 in 1,000, about 13 traces a second at 13,000 msg/s.
pub const DEFAULT_TRACE_SAMPLE_RATIO: f64 = 0.001;

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            source: SourceSpec::Synthetic,
            threads: 1,
            ramp: None,
            rate_bytes: None,
            burst_bytes: None,
            rejects: RejectSink::DeadLetter,
            trace_ratio: SampleRatio::new(DEFAULT_TRACE_SAMPLE_RATIO)
                .expect("the default ratio is between 0 and 1"),
            tracer: None,
        }
    }
}

impl PartialEq for SharedRate {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// Producer errors.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// Bad generator settings.
    #[error(transparent)]
    Generator(#[from] GeneratorError),
    /// Kafka client failure.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// Neither a duration nor a count, nor a stop signal: the run would never end by itself.
    #[error("a run needs --duration or --count")]
    Unbounded,
    /// A setting is invalid; names it.
    #[error("producer setting `{key}` is invalid: {reason}")]
    Config {
        /// Key at fault.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Reading the source failed.
    #[error("reading the source {source_name}: {error}")]
    Source {
        /// Which source.
        source_name: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// Writing the reject file failed: rejected events cannot be kept, so the run stops.
    #[error("writing the reject file {path}: {error}")]
    RejectFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The run started and then had to end early (librdkafka's fatal error, the source or the
    /// reject file failing). Every record handed over was still reported (acked or failed), so
    /// the report of what it did is here, to be written like any other.
    #[error("{error}")]
    Ended {
        /// Why it ended.
        error: Box<ProducerError>,
        /// What it did until then.
        report: Box<ProducerReport>,
    },
}

/// The JSON summary of a run.
#[derive(Debug, Clone, Serialize)]
pub struct ProducerReport {
    /// Run id (message id prefix).
    pub run_id: String,
    /// Sender threads.
    pub threads: u32,
    /// Messages handed to librdkafka for the source topics, less those the cluster refused for
    /// themselves in their delivery report (those are rejected events).
    pub sent: u64,
    /// Messages acked by the cluster.
    pub acked: u64,
    /// Messages that failed delivery.
    pub failed: u64,
    /// Rejected events: no extractable code, or refused by the client or the cluster for
    /// themselves (`oversize`, `invalid_record`); none of them is in `sent`.
    pub rejected: u64,
    /// Rejected events by reason (`not_json`, `missing_code`, `invalid_code`, `not_utf8`,
    /// `oversize`, `invalid_record`).
    pub rejected_by_class: BTreeMap<&'static str, u64>,
    /// Where rejected events went: `dead-letter:<topic>` or `file:<path>`.
    pub rejects_to: String,
    /// Rejected events safely written (reject-file lines, or dead-letter records acked).
    pub rejects_written: u64,
    /// Rejected events whose dead-letter write failed.
    pub rejects_failed: u64,
    /// Malformed events the generator made on purpose (sent or rejected).
    pub poison_injected: u64,
    /// Target rate at the end, msg/s (0 = unthrottled).
    pub rate_target: f64,
    /// Messages sent per second over the producing window.
    pub rate_achieved: f64,
    /// Producing window, seconds (start to last send).
    pub producing_secs: f64,
    /// Start to the last delivery report, seconds (the flush included).
    pub total_secs: f64,
    /// Acked messages per second over `total_secs`: throughput including the wait for acks.
    pub acked_per_sec: f64,
    /// Payload MB/s over the producing window.
    pub mb_per_sec: f64,
    /// Ack latency from the actual send, ms.
    pub ack_latency_ms: fleetstream_obs::LatencySummary,
    /// Ack latency from the intended send time, ms (coordinated-omission safe).
    pub ack_latency_intended_ms: fleetstream_obs::LatencySummary,
    /// Times librdkafka's queue was full.
    pub queue_full_events: u64,
    /// Time spent waiting on a full producer queue, ms.
    pub queue_full_wait_ms: f64,
    /// Produce request retries reported by librdkafka statistics.
    pub retries: u64,
    /// Failures by class.
    pub failures: BTreeMap<&'static str, u64>,
    /// Acked messages per topic and partition.
    pub per_partition: BTreeMap<String, BTreeMap<i32, u64>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where rejects go, opened.
enum Rejects {
    DeadLetter(String),
    File(RejectFile),
}

/// State shared by the sender threads of one run.
struct Shared<'a> {
    spec: &'a RunSpec,
    metrics: &'a ProducerMetrics,
    producer: KafkaProducer<ProducerMetrics>,
    topics: Vec<String>,
    pacer: SharedPacer,
    lines: Option<Lines>,
    rejects: Rejects,
    worker_id: String,
    next_seq: AtomicU64,
    stop: &'a AtomicBool,
    /// Set when the source ends or a thread fails: every thread stops.
    done: AtomicBool,
    start: Instant,
    /// Wall clock at `start`, ms since the epoch: event times are derived from it.
    start_epoch_ms: u64,
    deadline: Option<Instant>,
    /// Nanoseconds from `start` to the last send, over all threads.
    last_send_ns: AtomicU64,
}

/// Runs the producer until the duration or count is reached, the source ends or `stop` is set,
/// then waits for every outstanding delivery report. Blocks the calling thread.
pub fn run(
    spec: &RunSpec,
    metrics: Arc<ProducerMetrics>,
    stop: &AtomicBool,
) -> Result<ProducerReport, ProducerError> {
    let opts = &spec.options;
    if spec.duration.is_none() && spec.count.is_none() && opts.source == SourceSpec::Synthetic {
        return Err(ProducerError::Unbounded);
    }
    if opts.threads == 0 {
        return Err(ProducerError::Config {
            key: "threads",
            reason: "must be at least 1".into(),
        });
    }
    // Validate the generator once here so a bad setting names its key before any I/O.
    spec.generator.resolved_weights()?;
    let rejects = match &opts.rejects {
        RejectSink::File(p) => Rejects::File(RejectFile::open(p.clone()).map_err(|error| {
            ProducerError::RejectFile {
                path: p.clone(),
                error,
            }
        })?),
        RejectSink::DeadLetter => {
            let default = &spec.topology.routing().default_topic;
            match spec.topology.dead_letter_for(default) {
                Some(t) => Rejects::DeadLetter(t.to_string()),
                None => {
                    return Err(ProducerError::Config {
                        key: "reject_file",
                        reason: format!(
                            "the default topic {default:?} has no dead_letter topic in the topology; set a reject file"
                        ),
                    })
                }
            }
        }
    };
    let lines = Lines::open(&opts.source).map_err(|error| ProducerError::Source {
        source_name: format!("{:?}", opts.source),
        error,
    })?;
    // The sender threads poll for delivery reports themselves (see `wait_until`): records are
    // then freed by the threads that allocated them, which on 2 cores is several times faster
    // than a separate polling thread fighting over malloc's arenas (docs/BENCHMARKS.md).
    let producer = KafkaProducer::new_polled(&spec.settings, metrics.clone())?;
    // The run's clock starts once librdkafka can have its producer id (~0.6 s after creation):
    // records sent earlier would wait for it and count as ack latency of the run.
    producer.wait_for_producer_id(Duration::from_millis(100));
    let start = Instant::now();
    let bytes = opts.rate_bytes.clone().map(|r| {
        let burst = opts
            .burst_bytes
            .unwrap_or((r.get() / 100.0) as u64 + MAX_EVENT_BYTES as u64);
        (r, burst)
    });
    let shared = Shared {
        spec,
        metrics: &metrics,
        producer,
        topics: spec
            .topology
            .topics()
            .iter()
            .map(|t| t.name.clone())
            .collect(),
        pacer: SharedPacer::new(spec.rate.clone(), spec.burst, bytes, start),
        lines,
        rejects,
        worker_id: format!("producer-{:016x}", spec.run_id),
        next_seq: AtomicU64::new(0),
        stop,
        done: AtomicBool::new(false),
        start,
        start_epoch_ms: now_ms(),
        deadline: spec.duration.map(|d| start + d),
        last_send_ns: AtomicU64::new(0),
    };

    let ramp_done = AtomicBool::new(false);
    let results: Vec<Result<(), ProducerError>> = std::thread::scope(|s| {
        let ramp = opts
            .ramp
            .as_ref()
            .map(|r| s.spawn(|| r.drive(&spec.rate, start, &ramp_done)));
        let senders: Vec<_> = (0..opts.threads)
            .map(|i| {
                let shared = &shared;
                std::thread::Builder::new()
                    .name(format!("fs-send-{i}"))
                    .spawn_scoped(s, move || {
                        let r = sender(shared, i);
                        if r.is_err() {
                            shared.done.store(true, Ordering::Relaxed);
                        }
                        r
                    })
            })
            .collect();
        let results = senders
            .into_iter()
            .map(|h| match h {
                Ok(h) => h.join().unwrap_or_else(|_| {
                    Err(ProducerError::Config {
                        key: "threads",
                        reason: "a sender thread panicked".into(),
                    })
                }),
                Err(error) => Err(ProducerError::Config {
                    key: "threads",
                    reason: format!("could not start a sender thread: {error}"),
                }),
            })
            .collect();
        ramp_done.store(true, Ordering::Relaxed);
        if let Some(r) = ramp {
            let _ = r.join();
        }
        results
    });
    let window = Duration::from_nanos(shared.last_send_ns.load(Ordering::Relaxed));
    let mut failure = results.into_iter().find_map(Result::err);
    // Every record handed over gets a delivery report before we return: acked or failed. A
    // record the cluster refused for itself is then written to the reject sink, and a
    // dead-letter copy needs one more flush (dead-letter records are never refused again: see
    // `write_reject`).
    let timeout = spec.settings.delivery_timeout + Duration::from_secs(5);
    let mut ids = IdWriter::new(spec.run_id);
    let flushed = loop {
        let flushed = shared.producer.flush(timeout);
        if flushed.is_err() || !metrics.has_refused() {
            break flushed;
        }
        if let Err(e) = write_refused(&shared, &mut ids) {
            failure = failure.or(Some(e));
        }
    };
    if let Rejects::File(f) = &shared.rejects {
        if let Err(error) = f.flush() {
            failure = failure.or(Some(ProducerError::RejectFile {
                path: f.path().to_path_buf(),
                error,
            }));
        }
    }
    if let Some(fatal) = shared.producer.fatal_error() {
        failure = failure.or(Some(ProducerError::Kafka(KafkaError::Fatal(fatal))));
    }
    if let Err(e) = flushed {
        failure = failure.or(Some(ProducerError::Kafka(e)));
    }
    metrics.retries.store(
        shared.producer.stats().tx_retries.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    metrics.queue_depth.store(0, Ordering::Relaxed);
    let report = report(&shared, window, start.elapsed());
    match failure {
        None => Ok(report),
        Some(error) => Err(ProducerError::Ended {
            error: Box::new(error),
            report: Box::new(report),
        }),
    }
}

/// Finds the code, reading past an oversize event's limit: an oversize event with a code is
/// sent (the workers dead-letter it as `oversize`), only an event without one is rejected.
fn code_of(payload: &[u8]) -> Result<Code, EventError> {
    match extract_code(payload) {
        Err(EventError::Oversize(n)) => {
            extract_code(&payload[..MAX_EVENT_BYTES]).map_err(|_| EventError::Oversize(n))
        }
        r => r,
    }
}

/// One sender thread.
fn sender(sh: &Shared<'_>, index: u32) -> Result<(), ProducerError> {
    let spec = sh.spec;
    let m = sh.metrics;
    let mut source = ThreadSource::new(
        &spec.generator,
        sh.lines.as_ref(),
        index,
        spec.options.threads,
    )?;
    let router = spec.topology.router();
    let mut payload = Vec::with_capacity(256);
    let mut key = Vec::with_capacity(32);
    let mut ids = IdWriter::new(spec.run_id);
    let mut trace = [0u8; 55];
    let mut ts_buf = [0u8; 20];
    let mut last_sample = sh.start;
    let mut polls: u64 = 0;
    loop {
        if sh.stop.load(Ordering::Relaxed) || sh.done.load(Ordering::Relaxed) {
            return Ok(());
        }
        if m.fatal_seen() {
            if let Some(fatal) = sh.producer.fatal_error() {
                return Err(ProducerError::Kafka(KafkaError::Fatal(fatal)));
            }
        }
        if m.has_refused() {
            write_refused(sh, &mut ids)?;
        }
        let now = Instant::now();
        let mut intended = sh.pacer.take_message(now);
        if sh.deadline.is_some_and(|d| intended >= d) {
            return Ok(());
        }
        polls += 1;
        // One clock read per message where possible: `now` stamps the send, the event time and
        // the progress bookkeeping (the vDSO clock showed in profiles at ~7%).
        let mut now = now;
        if intended > now || polls.is_multiple_of(8) {
            now = wait_until(sh, intended).max(now);
        }
        let seq = sh.next_seq.fetch_add(1, Ordering::Relaxed);
        if spec.count.is_some_and(|c| seq >= c) {
            return Ok(());
        }
        let ts = sh.start_epoch_ms + now.duration_since(sh.start).as_millis() as u64;
        let generated = match source.next(ts, &mut payload) {
            Ok(Next::Event(g)) => g,
            Ok(Next::End) => {
                sh.done.store(true, Ordering::Relaxed);
                return Ok(());
            }
            Err(error) => {
                return Err(ProducerError::Source {
                    source_name: format!("{:?}", spec.options.source),
                    error,
                })
            }
        };
        if generated.is_some_and(|g| g.poison.is_some()) {
            m.poison_injected.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(at) = sh.pacer.take_bytes(now, payload.len() as u64) {
            now = wait_until(sh, at).max(now);
            intended = intended.max(at);
        }
        let code = match generated.and_then(|g| g.code) {
            Some(c) => Ok(c),
            None => code_of(&payload),
        };
        let id = ids.id(seq);
        // Deterministic ids: trace = run and sequence, span = a mix of the sequence, which
        // also decides sampling. A sampled message sent with a tracer takes its span's ids.
        let mixed = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut parent = TraceParent {
            trace_id: (u128::from(spec.run_id) << 64) | u128::from(seq),
            span_id: mixed | 1,
            sampled: spec.options.trace_ratio.sampled(mixed),
        };
        let produced_at = decimal(ts, &mut ts_buf);
        match code {
            Ok(code) => {
                let topic = &sh.topics[router.route_index(code)];
                let truck = match source.last_truck() {
                    Some(t) => t,
                    None => extract_truck_id(&payload).unwrap_or_default(),
                };
                let has_key = spec.keys.resolve_into(code, truck, &mut key);
                let span = match &spec.options.tracer {
                    Some(tracer) if parent.sampled => {
                        let span = send_span(tracer, topic, id, has_key.then_some(&key[..]), code);
                        parent = span.traceparent().unwrap_or(parent);
                        Some(Box::new(span))
                    }
                    _ => None,
                };
                traceparent(&parent, &mut trace);
                let hdrs: [(&str, &[u8]); 4] = [
                    (headers::MESSAGE_ID, id),
                    (headers::CORRELATION_ID, id),
                    (headers::TRACEPARENT, &trace),
                    (headers::PRODUCED_AT, produced_at),
                ];
                let record = OutRecord {
                    topic,
                    key: has_key.then_some(key.as_slice()),
                    payload: &payload,
                    headers: &hdrs,
                    timestamp_ms: Some(ts as i64),
                };
                if let Sent::Refused { class, message } =
                    send(sh, record, seq, (intended, now), (false, span))?
                {
                    // The client refused this record for itself (over message.max.bytes): a
                    // rejected event, not the end of the run.
                    parent.sampled = false;
                    traceparent(&parent, &mut trace);
                    let reject = Reject {
                        seq,
                        id,
                        class: refused_class(class),
                        message: &message,
                        payload: &payload,
                        ts,
                        produced_at,
                        trace: &trace,
                    };
                    write_reject(sh, &reject, (intended, now))?;
                }
            }
            Err(e) => {
                // A rejected event gets no span, so no trace: its dead letter is not followed.
                parent.sampled = false;
                traceparent(&parent, &mut trace);
                let message = e.to_string();
                let reject = Reject {
                    seq,
                    id,
                    class: reject_class(&payload, &e),
                    message: &message,
                    payload: &payload,
                    ts,
                    produced_at,
                    trace: &trace,
                };
                write_reject(sh, &reject, (intended, now))?;
            }
        }
        let sent_at = now;
        sh.last_send_ns.fetch_max(
            sent_at.duration_since(sh.start).as_nanos() as u64,
            Ordering::Relaxed,
        );
        if sent_at.duration_since(last_sample) > Duration::from_millis(100) {
            last_sample = sent_at;
            m.queue_depth
                .store(sh.producer.in_flight() as u64, Ordering::Relaxed);
            m.retries.store(
                sh.producer.stats().tx_retries.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
        }
    }
}

/// The span of one sampled message, from its send to its delivery report (OpenTelemetry's
/// messaging conventions).
fn send_span(tracer: &Tracer, topic: &str, id: &[u8], key: Option<&[u8]>, code: Code) -> Span {
    let mut attributes = kafka_attributes("send", topic, None, None);
    attributes.push(KeyValue::new(
        "messaging.message.id",
        String::from_utf8_lossy(id).into_owned(),
    ));
    attributes.push(KeyValue::new("fleetstream.codigo", i64::from(code.0)));
    if let Some(k) = key {
        attributes.push(KeyValue::new(
            "messaging.kafka.message.key",
            String::from_utf8_lossy(k).into_owned(),
        ));
    }
    tracer.start(
        format!("send {topic}"),
        SpanKind::Producer,
        None,
        attributes,
    )
}

/// Serves delivery reports until `t`: waiting is polling, in sleeps of at most
/// [`fleetstream_kafka::POLL_SLICE`] (250 µs) while records are in flight, so a delivery report
/// is served at most that late, which bounds the error this adds to ack latency. With nothing in
/// flight and one sender thread it sleeps until `t`. Returns the time it last read.
fn wait_until(sh: &Shared<'_>, t: Instant) -> Instant {
    loop {
        sh.producer.poll(Duration::ZERO);
        let now = Instant::now();
        if t <= now + Duration::from_micros(50) {
            return now;
        }
        let wait = t - now;
        // Other sender threads may send while this one sleeps: poll at least every slice.
        let wait = if sh.spec.options.threads > 1 {
            wait.min(fleetstream_kafka::POLL_SLICE)
        } else {
            wait
        };
        sh.producer.poll(wait);
    }
}

/// What became of a record handed to [`send`].
enum Sent {
    /// In librdkafka's queue; its delivery report will say the rest.
    Queued,
    /// The client refused this record for itself (larger than `message.max.bytes`, invalid).
    Refused {
        /// Delivery failure class (`too_large`, `invalid_record`).
        class: &'static str,
        /// The client's message.
        message: String,
    },
}

/// The reject reason of a record refused by the client or the cluster, from the failure class.
fn refused_class(class: &'static str) -> &'static str {
    match class {
        "too_large" => "oversize",
        other => other,
    }
}

/// One rejected event to write.
struct Reject<'a> {
    seq: u64,
    id: &'a [u8],
    class: &'static str,
    message: &'a str,
    payload: &'a [u8],
    ts: u64,
    produced_at: &'a [u8],
    trace: &'a [u8],
}

/// Counts one rejected event and writes it to the reject sink: a reject-file line with the
/// whole event, or a dead-letter record. A dead-letter copy keeps at most the first
/// [`MAX_EVENT_BYTES`] of the event (an event that large is not telemetry, and the cut copy
/// fits any topic's record limit, so the dead-letter write is not refused in turn); its error
/// message says so, and `--reject-file` keeps whole events.
fn write_reject(
    sh: &Shared<'_>,
    r: &Reject<'_>,
    times: (Instant, Instant),
) -> Result<(), ProducerError> {
    let m = sh.metrics;
    m.count_reject(r.class);
    match &sh.rejects {
        Rejects::File(f) => {
            let id_text = String::from_utf8_lossy(r.id);
            f.write(r.class, r.message, &id_text, r.payload)
                .map_err(|error| ProducerError::RejectFile {
                    path: f.path().to_path_buf(),
                    error,
                })?;
            m.rejects_written.fetch_add(1, Ordering::Relaxed);
        }
        Rejects::DeadLetter(topic) => {
            let cut = r.payload.len() > MAX_EVENT_BYTES;
            let message = if cut {
                format!(
                    "{} (dead-letter copy cut to the first {MAX_EVENT_BYTES} of {} bytes)",
                    r.message,
                    r.payload.len()
                )
            } else {
                r.message.to_string()
            };
            let hdrs: [(&str, &[u8]); 8] = [
                (headers::MESSAGE_ID, r.id),
                (headers::CORRELATION_ID, r.id),
                (headers::TRACEPARENT, r.trace),
                (headers::PRODUCED_AT, r.produced_at),
                (dead_letter::ERROR_CLASS, r.class.as_bytes()),
                (dead_letter::ERROR_MESSAGE, message.as_bytes()),
                (dead_letter::ATTEMPTS, b"0"),
                (dead_letter::WORKER_ID, sh.worker_id.as_bytes()),
            ];
            let record = OutRecord {
                topic,
                key: None,
                payload: &r.payload[..r.payload.len().min(MAX_EVENT_BYTES)],
                headers: &hdrs,
                timestamp_ms: Some(r.ts as i64),
            };
            if let Sent::Refused { class, message } = send(sh, record, r.seq, times, (true, None))?
            {
                m.rejects_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(seq = r.seq, topic, class, error = %message, "dead-letter write of a rejected event refused");
            }
        }
    }
    Ok(())
}

/// Writes the records the cluster refused in their delivery reports to the reject sink.
fn write_refused(sh: &Shared<'_>, ids: &mut IdWriter) -> Result<(), ProducerError> {
    let spec = sh.spec;
    for refused in sh.metrics.take_refused() {
        let now = Instant::now();
        let ts = sh.start_epoch_ms + now.duration_since(sh.start).as_millis() as u64;
        let mut ts_buf = [0u8; 20];
        let mut trace = [0u8; 55];
        let parent = TraceParent {
            trace_id: (u128::from(spec.run_id) << 64) | u128::from(refused.seq),
            span_id: refused.seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            sampled: false,
        };
        traceparent(&parent, &mut trace);
        // The broker checks whole batches, and librdkafka does not split a refused one: say
        // which size this record had, as it may have been refused with an oversize neighbour.
        let message = if refused.class == "too_large" {
            format!(
                "{}: the broker refused the batch this {}-byte record was in (over the topic's \
                 max.message.bytes)",
                refused.message,
                refused.payload.len()
            )
        } else {
            refused.message
        };
        let reject = Reject {
            seq: refused.seq,
            id: ids.id(refused.seq),
            class: refused_class(refused.class),
            message: &message,
            payload: &refused.payload,
            ts,
            produced_at: decimal(ts, &mut ts_buf),
            trace: &trace,
        };
        write_reject(sh, &reject, (now, now))?;
    }
    Ok(())
}

/// Hands one record to librdkafka, waiting while its queue is full (backpressure: never drop).
/// A record the client refuses for itself comes back as [`Sent::Refused`] for the caller to
/// reject; only a fatal or unexpected client error is an error of the run.
fn send(
    sh: &Shared<'_>,
    record: OutRecord<'_>,
    seq: u64,
    (intended, now): (Instant, Instant),
    (dead_letter, span): (bool, Option<Box<Span>>),
) -> Result<Sent, ProducerError> {
    let m = sh.metrics;
    let mut meta = SendMeta {
        seq,
        sent: now,
        intended,
        bytes: record.payload.len() as u32,
        dead_letter,
        span,
    };
    loop {
        match sh.producer.send(record, meta) {
            Ok(()) => break,
            Err((KafkaError::QueueFull, back)) => {
                let waited = Instant::now();
                // Backpressure: serve delivery reports to make room; never drop.
                sh.producer.poll(Duration::from_millis(1));
                m.queue_full_events.fetch_add(1, Ordering::Relaxed);
                m.queue_full_wait_ns
                    .fetch_add(waited.elapsed().as_nanos() as u64, Ordering::Relaxed);
                meta = back;
                meta.sent = Instant::now();
            }
            Err((e, back)) => {
                if let Some(span) = back.span {
                    span.end(
                        vec![KeyValue::new("error.type", "send")],
                        Some(e.to_string()),
                    );
                }
                return match e {
                    KafkaError::RecordRefused { class, message } => {
                        Ok(Sent::Refused { class, message })
                    }
                    e => Err(ProducerError::Kafka(e)),
                };
            }
        }
    }
    if !dead_letter {
        m.sent.fetch_add(1, Ordering::Relaxed);
        m.sent_bytes
            .fetch_add(record.payload.len() as u64, Ordering::Relaxed);
    }
    Ok(Sent::Queued)
}

fn report(sh: &Shared<'_>, window: Duration, total: Duration) -> ProducerReport {
    let (spec, m) = (sh.spec, sh.metrics);
    let secs = window.as_secs_f64().max(1e-9);
    let total = total.as_secs_f64().max(1e-9);
    let sent = m
        .sent
        .load(Ordering::Relaxed)
        .saturating_sub(m.refused_after_send.load(Ordering::Relaxed));
    let acked = m.acked.load(Ordering::Relaxed);
    let AckLatency {
        from_send,
        from_intended,
    } = m.latency();
    ProducerReport {
        run_id: format!("{:016x}", spec.run_id),
        threads: spec.options.threads,
        sent,
        acked,
        failed: m.failed.load(Ordering::Relaxed),
        rejected: m.rejected.load(Ordering::Relaxed),
        rejected_by_class: m.rejected_by_class(),
        rejects_to: match &sh.rejects {
            Rejects::DeadLetter(t) => format!("dead-letter:{t}"),
            Rejects::File(f) => format!("file:{}", f.path().display()),
        },
        rejects_written: m.rejects_written.load(Ordering::Relaxed),
        rejects_failed: m.rejects_failed.load(Ordering::Relaxed),
        poison_injected: m.poison_injected.load(Ordering::Relaxed),
        rate_target: spec.rate.get(),
        rate_achieved: sent as f64 / secs,
        producing_secs: secs,
        total_secs: total,
        acked_per_sec: acked as f64 / total,
        mb_per_sec: m.sent_bytes.load(Ordering::Relaxed) as f64 / secs / 1e6,
        ack_latency_ms: from_send,
        ack_latency_intended_ms: from_intended,
        queue_full_events: m.queue_full_events.load(Ordering::Relaxed),
        queue_full_wait_ms: m.queue_full_wait_ns.load(Ordering::Relaxed) as f64 / 1e6,
        retries: m.retries.load(Ordering::Relaxed),
        failures: m.failures(),
        per_partition: m.per_partition(),
    }
}
