//! Spans reach an OTLP/HTTP collector with the ids, parents, times and attributes given.

use fleetstream_obs::collector::{Collector, KIND_CONSUMER, KIND_PRODUCER};
use fleetstream_obs::trace::{KeyValue, SpanKind, TraceParent, Tracer};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[test]
fn spans_reach_the_collector_as_one_trace() {
    let collector = Collector::start();
    let tracer = Tracer::from_settings(Some(collector.url()), "--otlp-endpoint", "fs-test")
        .unwrap()
        .expect("an endpoint gives a tracer");
    assert_eq!(tracer.endpoint(), format!("{}/v1/traces", collector.url()));

    let root = tracer.start(
        "send mt-c300",
        SpanKind::Producer,
        None,
        vec![KeyValue::new("messaging.message.id", "run-1")],
    );
    let parent = root.traceparent().expect("a live provider gives valid ids");
    assert!(
        parent.sampled,
        "a root span is sampled by the parent-based sampler"
    );
    root.end(vec![KeyValue::new("messaging.kafka.offset", 42)], None);

    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let end = start + Duration::from_millis(7);
    tracer.record(
        "process mt-c300",
        SpanKind::Consumer,
        &parent,
        (start, end),
        vec![KeyValue::new("fleetstream.outcome", "dead_letter")],
        Some("schema".into()),
    );
    // An unsampled parent records nothing.
    let unsampled = TraceParent {
        sampled: false,
        ..parent
    };
    tracer.record(
        "ignored",
        SpanKind::Consumer,
        &unsampled,
        (SystemTime::now(), SystemTime::now()),
        vec![],
        None,
    );
    tracer.shutdown().unwrap();

    let spans = collector.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let send = spans.iter().find(|s| s.kind == KIND_PRODUCER).unwrap();
    assert_eq!(send.service, "fs-test");
    assert_eq!(send.name, "send mt-c300");
    assert_eq!(
        (send.trace_id, send.span_id),
        (parent.trace_id, parent.span_id)
    );
    assert_eq!(send.parent, None);
    assert_eq!(send.attributes["messaging.message.id"], "run-1");
    assert_eq!(send.attributes["messaging.kafka.offset"], "42");
    assert_eq!(send.error, None);
    let process = spans.iter().find(|s| s.kind == KIND_CONSUMER).unwrap();
    assert_eq!(process.trace_id, parent.trace_id);
    assert_eq!(process.parent, Some(parent.span_id));
    assert_ne!(process.span_id, parent.span_id);
    assert_eq!(process.error.as_deref(), Some("schema"));
    assert_eq!(process.start_ns, 1_700_000_000 * 1_000_000_000);
    assert_eq!(process.end_ns - process.start_ns, 7_000_000);
}

#[test]
fn without_an_endpoint_there_is_no_tracer() {
    // The standard variables are not set in the test environment (CI does not set them).
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
    {
        return;
    }
    assert!(Tracer::from_settings(None, "--otlp-endpoint", "x")
        .unwrap()
        .is_none());
    assert!(Tracer::from_settings(Some("  "), "--otlp-endpoint", "x")
        .unwrap()
        .is_none());
}
