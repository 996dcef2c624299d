//! `fleetstream worker --metrics-addr`: Prometheus exposition of the worker's metrics and the
//! group's lag per partition.

use fleetstream_consumer::WorkerMetrics;
use fleetstream_kafka::PartitionLag;
use fleetstream_obs::prometheus::{serve, Exposition, HistogramSample, Response, Server};
use fleetstream_obs::worker as names;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// Lag per partition, refreshed by the caller.
pub type SharedLag = Arc<Mutex<Vec<PartitionLag>>>;

/// Renders the worker's metrics.
pub fn render(m: &WorkerMetrics, lag: &[PartitionLag]) -> String {
    let s = m.snapshot();
    let mut e = Exposition::new();
    for (topic, parts) in &s.per_partition {
        for (p, n) in parts {
            let p = p.to_string();
            e.counter(
                names::CONSUMED_TOTAL,
                "Records read from Kafka.",
                &[("topic", topic), ("partition", &p)],
                *n as f64,
            );
        }
    }
    e.counter(
        names::DISPATCHED_TOTAL,
        "Records dispatched with an effect.",
        &[],
        s.dispatched as f64,
    );
    e.counter(
        names::DUPLICATES_TOTAL,
        "Re-deliveries recognised by the dispatcher.",
        &[],
        s.duplicates as f64,
    );
    for (reason, n) in &s.dead_letter_reasons {
        e.counter(
            names::DEAD_LETTERED_TOTAL,
            "Records written to a dead-letter topic.",
            &[("reason", reason)],
            *n as f64,
        );
    }
    e.counter(
        names::SKIPPED_TOTAL,
        "Records skipped by policy.",
        &[],
        s.skipped as f64,
    );
    e.counter(
        names::RETRIES_TOTAL,
        "Records sent again after a failure.",
        &[],
        s.retries as f64,
    );
    e.counter(
        names::THROTTLED_TOTAL,
        "Dispatches refused as throttled.",
        &[],
        s.throttled as f64,
    );
    e.counter(
        names::BISECTIONS_TOTAL,
        "Batches split after failing as a whole.",
        &[],
        s.bisections as f64,
    );
    e.counter(
        names::BATCHES_TOTAL,
        "Batches dispatched.",
        &[],
        s.batches as f64,
    );
    e.counter(
        names::PAUSES_TOTAL,
        "Times partitions were paused for backpressure.",
        &[],
        s.pauses as f64,
    );
    e.gauge(
        names::PAUSED_PARTITIONS,
        "Partitions paused now.",
        &[],
        m.paused_partitions.load(Ordering::Relaxed) as f64,
    );
    for l in lag {
        let p = l.partition.to_string();
        e.gauge(
            names::LAG,
            "Records not yet committed by the group.",
            &[("topic", &l.topic), ("partition", &p)],
            l.lag as f64,
        );
    }
    let [e2e, dispatch, fill] = m.histograms();
    e.histogram(
        names::E2E_LATENCY_SECONDS,
        "Producer timestamp to dispatch acknowledged.",
        &[],
        &HistogramSample::from_latency(&e2e, &names::LATENCY_BUCKETS_SECONDS),
    );
    e.histogram(
        names::DISPATCH_LATENCY_SECONDS,
        "One dispatch call.",
        &[],
        &HistogramSample::from_latency(&dispatch, &names::LATENCY_BUCKETS_SECONDS),
    );
    e.histogram(
        names::BATCH_FILL_SECONDS,
        "First record of a batch to its dispatch.",
        &[],
        &HistogramSample::from_latency(&fill, &names::LATENCY_BUCKETS_SECONDS),
    );
    e.gauge(
        names::BATCH_RECORDS_MEAN,
        "Mean records per batch.",
        &[],
        s.mean_batch_records,
    );
    e.finish()
}

/// Serves `GET /metrics` on `addr`.
pub fn start(
    addr: SocketAddr,
    metrics: Arc<WorkerMetrics>,
    lag: SharedLag,
) -> std::io::Result<Server> {
    serve(addr, move |req| {
        if req.path == "/metrics" {
            let lag = lag.lock().unwrap_or_else(|p| p.into_inner()).clone();
            Response::metrics(render(&metrics, &lag))
        } else {
            Response::not_found()
        }
    })
}
