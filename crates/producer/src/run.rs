//! The send loop: generate -> extract code -> route topic -> resolve key -> send with headers,
//! paced by the token bucket, waiting (never dropping) when librdkafka's queue is full.

use crate::generator::{Generator, GeneratorConfig, GeneratorError};
use crate::metrics::{AckLatency, ProducerMetrics, SendMeta};
use crate::rate::{Pacer, SharedRate};
use fleetstream_core::{KeyResolver, MessageId, Topology};
use fleetstream_kafka::{headers, KafkaError, KafkaProducer, OutRecord, ProducerSettings};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Stop after this many messages.
    pub count: Option<u64>,
    /// Id of this run, the prefix of every message id.
    pub run_id: u64,
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
}

/// The JSON summary of a run.
#[derive(Debug, Clone, Serialize)]
pub struct ProducerReport {
    /// Run id (message id prefix).
    pub run_id: String,
    /// Messages handed to librdkafka.
    pub sent: u64,
    /// Messages acked by the cluster.
    pub acked: u64,
    /// Messages that failed delivery.
    pub failed: u64,
    /// Events rejected before sending.
    pub rejected: u64,
    /// Target rate, msg/s (0 = unthrottled).
    pub rate_target: f64,
    /// Messages sent per second over the producing window.
    pub rate_achieved: f64,
    /// Producing window, seconds (first to last send).
    pub producing_secs: f64,
    /// Payload MB/s over the producing window.
    pub mb_per_sec: f64,
    /// Ack latency from the actual send, ms.
    pub ack_latency_ms: fleetstream_obs::LatencySummary,
    /// Ack latency from the intended send time, ms (coordinated-omission safe).
    pub ack_latency_intended_ms: fleetstream_obs::LatencySummary,
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

/// Runs the producer on the calling thread until the duration or count is reached or `stop`
/// is set, then waits for every outstanding delivery report.
pub fn run(
    spec: &RunSpec,
    metrics: Arc<ProducerMetrics>,
    stop: &AtomicBool,
) -> Result<ProducerReport, ProducerError> {
    if spec.duration.is_none() && spec.count.is_none() {
        return Err(ProducerError::Unbounded);
    }
    let mut generator = Generator::new(&spec.generator)?;
    let producer = KafkaProducer::new(&spec.settings, metrics.clone())?;
    let topics: Vec<String> = spec
        .topology
        .topics()
        .iter()
        .map(|t| t.name.clone())
        .collect();
    let router = spec.topology.router();

    let start = Instant::now();
    let mut pacer = Pacer::new(spec.rate.clone(), spec.burst, start);
    let mut payload = Vec::with_capacity(256);
    let mut key = Vec::with_capacity(32);
    let mut id = String::with_capacity(40);
    let mut trace = String::with_capacity(56);
    let mut produced_at = String::with_capacity(16);
    let mut code_text = String::with_capacity(8);
    let mut seq: u64 = 0;
    let mut last_send = start;
    let deadline = spec.duration.map(|d| start + d);

    loop {
        if stop.load(Ordering::Relaxed) || spec.count.is_some_and(|c| seq >= c) {
            break;
        }
        let intended = pacer.take(Instant::now());
        if deadline.is_some_and(|d| intended >= d) {
            break;
        }
        let now = Instant::now();
        if intended > now + Duration::from_micros(200) {
            std::thread::sleep(intended - now);
        }
        let ts = now_ms();
        let code = generator.next_event(ts, &mut payload);
        let topic = &topics[router.route_index(code)];
        let has_key = spec
            .keys
            .resolve_into(code, generator.last_truck(), &mut key);
        let mid = MessageId {
            run: spec.run_id,
            seq,
        };
        mid.write_to(&mut id);
        trace.clear();
        let trace_id = (u128::from(spec.run_id) << 64) | u128::from(seq);
        trace.push_str(&headers::traceparent(
            trace_id,
            seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        ));
        produced_at.clear();
        produced_at.push_str(&ts.to_string());
        code_text.clear();
        code_text.push_str(&code.0.to_string());
        let hdrs: [(&str, &[u8]); 5] = [
            (headers::MESSAGE_ID, id.as_bytes()),
            (headers::CORRELATION_ID, id.as_bytes()),
            (headers::TRACEPARENT, trace.as_bytes()),
            (headers::PRODUCED_AT, produced_at.as_bytes()),
            (headers::CODE, code_text.as_bytes()),
        ];
        let record = OutRecord {
            topic,
            key: has_key.then_some(key.as_slice()),
            payload: &payload,
            headers: &hdrs,
        };
        let mut meta = SendMeta {
            seq,
            sent: Instant::now(),
            intended,
            bytes: payload.len() as u32,
        };
        loop {
            match producer.send(record, meta) {
                Ok(()) => break,
                Err((KafkaError::QueueFull, back)) => {
                    // Backpressure: librdkafka's queue is full. Wait for deliveries; never drop.
                    let waited = Instant::now();
                    std::thread::sleep(Duration::from_millis(1));
                    metrics.queue_full_events.fetch_add(1, Ordering::Relaxed);
                    metrics
                        .queue_full_wait_ns
                        .fetch_add(waited.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    meta = back;
                    meta.sent = Instant::now();
                }
                Err((e, _)) => return Err(ProducerError::Kafka(e)),
            }
        }
        metrics.sent.fetch_add(1, Ordering::Relaxed);
        metrics
            .sent_bytes
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        last_send = Instant::now();
        seq += 1;
    }
    let window = last_send.duration_since(start);
    // Every record handed over gets a delivery report before we return: acked or failed.
    producer.flush(spec.settings.delivery_timeout + Duration::from_secs(5))?;
    Ok(report(
        spec,
        &metrics,
        window,
        producer.stats().tx_retries.load(Ordering::Relaxed),
    ))
}

fn report(spec: &RunSpec, m: &ProducerMetrics, window: Duration, retries: u64) -> ProducerReport {
    let secs = window.as_secs_f64().max(1e-9);
    let sent = m.sent.load(Ordering::Relaxed);
    let AckLatency {
        from_send,
        from_intended,
    } = m.latency();
    ProducerReport {
        run_id: format!("{:016x}", spec.run_id),
        sent,
        acked: m.acked.load(Ordering::Relaxed),
        failed: m.failed.load(Ordering::Relaxed),
        rejected: m.rejected.load(Ordering::Relaxed),
        rate_target: spec.rate.get(),
        rate_achieved: sent as f64 / secs,
        producing_secs: secs,
        mb_per_sec: m.sent_bytes.load(Ordering::Relaxed) as f64 / secs / 1e6,
        ack_latency_ms: from_send,
        ack_latency_intended_ms: from_intended,
        queue_full_wait_ms: m.queue_full_wait_ns.load(Ordering::Relaxed) as f64 / 1e6,
        retries,
        failures: m.failures(),
        per_partition: m.per_partition(),
    }
}
