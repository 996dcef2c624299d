use super::*;
use fleetstream_core::{Code, TelemetryEvent};

/// A Kafka event in the shape AWS documents (numeric timestamps, signed header bytes).
const AWS_SAMPLE: &str = include_str!("../tests/fixtures/aws-kafka-event.json");

fn sample_records() -> Vec<BatchRecord> {
    vec![
        BatchRecord {
            topic: "mt-c300".into(),
            partition: 0,
            offset: 7,
            timestamp_ms: 1_700_000_000_001,
            key: Some(b"TRK-1".to_vec()),
            value: br#"{"codigo":300}"#.to_vec(),
            headers: vec![
                ("fs-message-id".into(), b"m-1".to_vec()),
                ("bin".into(), vec![0, 127, 128, 255]),
            ],
        },
        BatchRecord {
            topic: "mt-c300".into(),
            partition: 0,
            offset: 8,
            timestamp_ms: 1_700_000_000_002,
            key: None,
            value: vec![],
            headers: vec![],
        },
        BatchRecord {
            topic: "mt-c400".into(),
            partition: 3,
            offset: 1,
            timestamp_ms: 5,
            key: Some(vec![]),
            value: b"x".to_vec(),
            headers: vec![("a".into(), vec![]), ("a".into(), b"2".to_vec())],
        },
    ]
}

#[test]
fn aws_sample_decodes() {
    let records = decode_event_json(AWS_SAMPLE.as_bytes()).expect("AWS sample decodes");
    assert_eq!(records.len(), 3);
    let first = &records[0];
    assert_eq!(
        (first.topic.as_str(), first.partition, first.offset),
        ("mt-c300", 1, 15)
    );
    assert_eq!(first.timestamp_ms, 1_700_000_000_123);
    assert_eq!(first.key.as_deref(), Some(&b"TRK-000042"[..]));
    assert_eq!(first.message_id(), Some("msg-0001"));
    // Signed bytes come back as the original unsigned bytes.
    assert_eq!(first.header("trace"), Some(&[0xff, 0, 0x7f, 0x80][..]));
    let event = TelemetryEvent::parse(&first.value).expect("value is a telemetry event");
    assert_eq!(event.codigo, Code(300));
    assert_eq!(records[1].offset, 16);
    let last = &records[2];
    assert_eq!(
        (last.topic.as_str(), last.partition, last.key.is_none()),
        ("mt-c400", 0, true)
    );
    assert_eq!(last.dedup_key(), "mt-c400-0-3");
}

#[test]
fn typed_serialization_writes_string_timestamps_but_ours_writes_numbers() {
    let typed = serde_json::to_value(to_kafka_event(&sample_records())).expect("serializes");
    let ts = &typed["records"]["mt-c300-0"][0]["timestamp"];
    assert!(
        ts.is_string(),
        "aws_lambda_events changed: timestamp is now {ts}"
    );
    let ours = to_event_json(&sample_records());
    assert_eq!(
        ours["records"]["mt-c300-0"][0]["timestamp"],
        1_700_000_000_001u64
    );
    assert_eq!(ours["eventSource"], "aws:kafka");
    assert_eq!(
        ours["records"]["mt-c300-0"][0]["headers"][1]["bin"],
        serde_json::json!([0, 127, -128, -1])
    );
}

#[test]
fn round_trips_through_json_and_typed_event() {
    let records = sample_records();
    let bytes = serde_json::to_vec(&to_event_json(&records)).expect("serializes");
    assert_eq!(decode_event_json(&bytes).expect("decodes"), records);
    assert_eq!(
        from_kafka_event(to_kafka_event(&records)).expect("decodes"),
        records
    );
    // The typed event's own (string timestamp) JSON decodes too.
    let typed = serde_json::to_vec(&to_kafka_event(&records)).expect("serializes");
    assert_eq!(decode_event_json(&typed).expect("decodes"), records);
}

#[test]
fn negative_timestamp_encodes_as_zero() {
    let mut records = sample_records();
    records[0].timestamp_ms = -1;
    let decoded = from_kafka_event(to_kafka_event(&records)).expect("decodes");
    assert_eq!(decoded[0].timestamp_ms, 0);
}

fn decode_err(json: serde_json::Value) -> DecodeError {
    decode_event_value(json).expect_err("must not decode")
}

fn one_record(record: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"eventSource": "aws:kafka", "records": {"t-0": [record]}})
}

/// Regression: `aws_lambda_events` 1.2 decodes via f64 seconds and loses a millisecond.
#[test]
fn regression_millisecond_timestamps_are_exact() {
    for ms in [
        1_700_000_000_123u64,
        1_700_000_000_001,
        1_595_035_749_700,
        0,
        1,
        999,
        4_102_444_800_999,
    ] {
        for ts in [serde_json::json!(ms), serde_json::json!(ms.to_string())] {
            let json = one_record(
                serde_json::json!({"topic": "t", "partition": 0, "offset": 1, "timestamp": ts, "key": null, "value": "", "headers": []}),
            );
            let records = decode_event_value(json).expect("decodes");
            assert_eq!(records[0].timestamp_ms, ms as i64, "{ts}");
        }
    }
}

/// Regression: `aws_lambda_events` 1.2 panics (assert_eq!) on a fractional timestamp.
#[test]
fn regression_fractional_timestamp_is_an_error_not_a_panic() {
    let base = serde_json::json!({"topic": "t", "partition": 0, "offset": 1, "key": null, "value": "", "headers": []});
    for bad in [
        serde_json::json!(1.5),
        serde_json::json!("1.5"),
        serde_json::json!(-3),
        serde_json::json!(null),
        serde_json::json!(""),
    ] {
        let mut record = base.clone();
        record["timestamp"] = bad;
        assert_eq!(decode_err(one_record(record)).class(), "timestamp");
    }
}

#[test]
fn malformed_events_are_typed_errors() {
    assert_eq!(
        decode_event_json(b"{not json").unwrap_err().class(),
        "shape"
    );
    assert_eq!(
        decode_err(serde_json::json!({"records": [1, 2]})).class(),
        "shape"
    );
    assert_eq!(
        decode_err(serde_json::json!({"records": {"t-0": [{"offset": 1}]}})).class(),
        "shape"
    );
    let record = |field: &str, value: serde_json::Value| {
        let mut r = serde_json::json!({"topic": "t", "partition": 0, "offset": 1, "timestamp": 1, "key": null, "value": "", "headers": []});
        r[field] = value;
        one_record(r)
    };
    assert_eq!(decode_err(record("value", "***".into())).class(), "base64");
    assert_eq!(decode_err(record("key", "@".into())).class(), "base64");
    assert_eq!(
        decode_err(record("partition", (1i64 << 40).into())).class(),
        "partition"
    );
    assert_eq!(
        decode_err(record("headers", serde_json::json!([{"h": [300]}]))).class(),
        "shape"
    );
    let no_topic = serde_json::json!({"records": {"0": [{"partition": 0, "offset": 1, "timestamp": 1, "key": null, "value": "", "headers": []}]}});
    assert_eq!(decode_err(no_topic).class(), "missing_topic");
    // Empty and null record maps are empty batches, not errors.
    assert_eq!(
        decode_event_value(serde_json::json!({"records": null})),
        Ok(vec![])
    );
    assert_eq!(decode_event_value(serde_json::json!({})), Ok(vec![]));
}

#[test]
fn missing_topic_falls_back_to_records_key() {
    let json = serde_json::json!({"records": {"mt-c300-4": [{"partition": 4, "offset": 1, "timestamp": 1, "key": null, "value": "", "headers": []}]}});
    let records = decode_event_value(json).expect("decodes");
    assert_eq!(records[0].topic, "mt-c300");
}
