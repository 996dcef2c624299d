//! The send loop on a cluster: embedded by default, a real broker with
//! FLEETSTREAM_TEST_BOOTSTRAP. Poison events without a code are rejected (counted and written,
//! never dropped); poison with a code is sent; every delivery is accounted for.

use fleetstream_core::{MessageId, Topology};
use fleetstream_kafka::{headers, read_topic_to_end, ClusterHandle, ProducerSettings};
use fleetstream_producer::{
    run, GeneratorConfig, ProducerMetrics, RejectSink, RunOptions, RunSpec, SharedRate, SourceSpec,
};
use fleetstream_testkit::{apply_unique, cluster};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

const DOMAIN: &str = include_str!("../../../config/topology.toml");

fn setup() -> (ClusterHandle, Topology, String) {
    let cluster = cluster();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (prefix, topology) = rt.block_on(apply_unique(&cluster, DOMAIN));
    (cluster, topology, prefix)
}

fn spec(cluster: &ClusterHandle, topology: &Topology, count: u64, poison: f64) -> RunSpec {
    RunSpec {
        topology: topology.clone(),
        keys: topology.key_resolver().clone(),
        settings: ProducerSettings::new(cluster.connection().clone()),
        generator: GeneratorConfig {
            poison_rate: poison,
            ..GeneratorConfig::default()
        },
        rate: SharedRate::new(0.0),
        burst: 1,
        duration: None,
        count: Some(count),
        run_id: rand::random(),
        options: RunOptions::default(),
    }
}

#[test]
fn rejects_go_to_the_reject_file_with_their_reason() {
    let (cluster, topology, _) = setup();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rejects.jsonl");
    let mut s = spec(&cluster, &topology, 1200, 0.05);
    s.options.rejects = RejectSink::File(path.clone());
    s.options.threads = 3;
    let metrics = Arc::new(ProducerMetrics::default());
    let r = run(&s, metrics.clone(), &AtomicBool::new(false)).unwrap();

    // 5% of 1,200 is 60 poison events per generator shard's share; each thread injects its own.
    assert!(r.poison_injected > 0);
    assert_eq!(r.sent + r.rejected, 1200, "--count counts every event");
    assert_eq!(r.acked, r.sent);
    assert_eq!(r.failed, 0);
    assert_eq!(r.rejects_written, r.rejected);
    assert!(r.rejected > 0);
    assert_eq!(r.rejected_by_class.values().sum::<u64>(), r.rejected);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, r.rejected);
    for l in &lines {
        assert!(l["reason"]
            .as_str()
            .is_some_and(|c| r.rejected_by_class.contains_key(c)));
        let id = MessageId::parse(l["message_id"].as_str().unwrap().as_bytes()).unwrap();
        assert_eq!(format!("{:016x}", id.run), r.run_id);
        assert!(l["raw_base64"].as_str().is_some());
    }
    // The code-less kinds are rejected; the others (oversize, schema) were sent.
    for class in ["not_json", "missing_code", "invalid_code", "not_utf8"] {
        assert!(
            r.rejected_by_class.contains_key(class),
            "{:?}",
            r.rejected_by_class
        );
    }
    assert!(
        r.rejected < r.poison_injected,
        "oversize and schema poison is sent"
    );
    assert_eq!(
        metrics
            .poison_injected
            .load(std::sync::atomic::Ordering::Relaxed),
        r.poison_injected
    );
}

#[test]
fn rejects_go_to_the_dead_letter_topic_with_headers() {
    let (cluster, topology, prefix) = setup();
    let s = spec(&cluster, &topology, 600, 0.1);
    let r = run(
        &s,
        Arc::new(ProducerMetrics::default()),
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(r.acked, r.sent);
    assert_eq!(r.sent + r.rejected, 600);
    assert!(r.rejected > 0);
    assert_eq!(
        r.rejects_written, r.rejected,
        "every dead-letter record acked"
    );
    let dlq = format!("{prefix}-mt-c300-dlq");
    assert_eq!(r.rejects_to, format!("dead-letter:{dlq}"));
    let records = read_topic_to_end(cluster.connection(), &dlq, Duration::from_secs(30)).unwrap();
    assert_eq!(records.len() as u64, r.rejected);
    for rec in &records {
        let class =
            std::str::from_utf8(rec.header(headers::dead_letter::ERROR_CLASS).unwrap()).unwrap();
        assert!(r.rejected_by_class.contains_key(class));
        assert!(rec.header(headers::dead_letter::ERROR_MESSAGE).is_some());
        assert_eq!(rec.header(headers::dead_letter::ATTEMPTS), Some(&b"0"[..]));
        assert_eq!(
            rec.header(headers::dead_letter::WORKER_ID),
            Some(format!("producer-{}", r.run_id).as_bytes())
        );
        let id = MessageId::parse(rec.header(headers::MESSAGE_ID).unwrap()).unwrap();
        assert_eq!(format!("{:016x}", id.run), r.run_id);
    }
}

#[test]
fn json_lines_from_a_file_are_sent_or_rejected() {
    let (cluster, topology, _) = setup();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let rejects = dir.path().join("rejects.jsonl");
    std::fs::write(
        &input,
        concat!(
            r#"{"truck_id":"TRK-000001","codigo":300,"ts":1}"#,
            "\n",
            r#"{"truck_id":"TRK-000002","codigo":"301","ts":2}"#,
            "\n\n",
            r#"{"truck_id":"TRK-000003","ts":3}"#,
            "\n",
            "not json\n",
        ),
    )
    .unwrap();
    let mut s = spec(&cluster, &topology, 0, 0.0);
    s.count = None;
    s.options.source = SourceSpec::File(input);
    s.options.rejects = RejectSink::File(rejects.clone());
    let r = run(
        &s,
        Arc::new(ProducerMetrics::default()),
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!((r.sent, r.acked, r.rejected), (2, 2, 2));
    assert_eq!(r.rejected_by_class.get("missing_code"), Some(&1));
    assert_eq!(r.rejected_by_class.get("not_json"), Some(&1));
    assert_eq!(std::fs::read_to_string(rejects).unwrap().lines().count(), 2);
}

#[test]
fn a_missing_dead_letter_topic_names_the_setting() {
    let text = DOMAIN.replace("dead_letter = \"mt-c300-dlq\"", "");
    let topology = Topology::from_toml_str(&text).unwrap();
    let cluster = ClusterHandle::embedded(1).unwrap();
    let s = spec(&cluster, &topology, 10, 0.0);
    let e = run(
        &s,
        Arc::new(ProducerMetrics::default()),
        &AtomicBool::new(false),
    )
    .unwrap_err();
    assert!(e.to_string().contains("reject_file"), "{e}");
}

#[test]
fn every_record_carries_the_four_headers_of_the_wire_contract() {
    let (cluster, topology, prefix) = setup();
    let mut s = spec(&cluster, &topology, 400, 0.0);
    s.options.trace_ratio = fleetstream_obs::trace::SampleRatio::new(0.25).unwrap();
    let before_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let r = run(
        &s,
        Arc::new(ProducerMetrics::default()),
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!((r.sent, r.acked), (400, 400));
    let mut records = Vec::new();
    for topic in ["mt-c400", "mt-c300"] {
        let name = format!("{prefix}-{topic}");
        records.extend(
            read_topic_to_end(cluster.connection(), &name, Duration::from_secs(30)).unwrap(),
        );
    }
    assert_eq!(records.len(), 400);
    let mut seqs = std::collections::BTreeSet::new();
    let mut sampled = 0;
    for rec in &records {
        let names: Vec<&str> = rec.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                headers::MESSAGE_ID,
                headers::CORRELATION_ID,
                headers::TRACEPARENT,
                headers::PRODUCED_AT
            ],
            "exactly the contract's headers, in order"
        );
        let raw_id = rec.header(headers::MESSAGE_ID).unwrap();
        let id = MessageId::parse(raw_id).unwrap();
        assert_eq!(format!("{:016x}", id.run), r.run_id);
        assert!(seqs.insert(id.seq), "message ids are unique");
        assert_eq!(rec.header(headers::CORRELATION_ID), Some(raw_id));
        let trace = std::str::from_utf8(rec.header(headers::TRACEPARENT).unwrap()).unwrap();
        let parts: Vec<&str> = trace.split('-').collect();
        assert_eq!(parts.len(), 4, "{trace}");
        assert_eq!(parts[0], "00");
        assert!(["00", "01"].contains(&parts[3]), "{trace}");
        sampled += usize::from(parts[3] == "01");
        assert!(
            fleetstream_obs::trace::TraceParent::parse(trace).is_some(),
            "{trace}"
        );
        assert_eq!(
            parts[1],
            format!("{}{:016x}", r.run_id, id.seq),
            "trace id = run, seq"
        );
        assert!(parts[2].len() == 16 && parts[2] != "0000000000000000");
        let at = headers::parse_u64(rec.header(headers::PRODUCED_AT).unwrap()).unwrap();
        assert!(
            at >= before_ms && at <= before_ms + 60_000,
            "{at} vs {before_ms}"
        );
        assert_eq!(
            rec.timestamp_ms,
            Some(at as i64),
            "the record's CreateTime is the producer time of fs-produced-at"
        );
    }
    assert_eq!(seqs.len(), 400);
    // --trace-sample-ratio 0.25: about a quarter say sampled, from a hash of the sequence.
    assert!((60..=140).contains(&sampled), "{sampled} of 400 sampled");
}

/// An input file: a normal line, `big` (if any), then `after` normal lines. Returns its path.
fn input_with(dir: &std::path::Path, big: Option<&str>, after: u32) -> std::path::PathBuf {
    let line = |i: u32| {
        format!(
            r#"{{"truck_id":"TRK-{i:06}","codigo":{},"ts":{i}}}"#,
            300 + i % 7
        )
    };
    let mut text = line(0) + "\n";
    if let Some(b) = big {
        text += b;
        text += "\n";
    }
    for i in 1..=after {
        text += &(line(i) + "\n");
    }
    let path = dir.join("in.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

/// Every message id of run `run_id` on `topics`, by sequence, with its record.
fn ids_on(
    cluster: &ClusterHandle,
    topics: &[String],
    run_id: &str,
) -> std::collections::BTreeMap<u64, fleetstream_kafka::ConsumedRecord> {
    let mut out = std::collections::BTreeMap::new();
    for t in topics {
        for rec in read_topic_to_end(cluster.connection(), t, Duration::from_secs(30)).unwrap() {
            let id = MessageId::parse(rec.header(headers::MESSAGE_ID).unwrap()).unwrap();
            assert_eq!(format!("{:016x}", id.run), run_id);
            assert!(out.insert(id.seq, rec).is_none(), "one record per id");
        }
    }
    out
}

/// Issue 12, defect 4: a line over the client's record limit (librdkafka's
/// `message.max.bytes`, 1,000,000 bytes) made `send` fail with `MessageSizeTooLarge`, which
/// ended the run: the lines after it were never sent and no report came back. It is dead-lettered
/// as `oversize` (the copy cut to the first 64 KiB) and the run goes on.
#[test]
fn oversize_line_is_dead_lettered_and_the_run_goes_on() {
    let (cluster, topology, prefix) = setup();
    let dir = tempfile::tempdir().unwrap();
    let big = format!(
        r#"{{"truck_id":"TRK-000099","codigo":301,"ts":99,"padding":"{}"}}"#,
        "x".repeat(1_200_000)
    );
    let mut s = spec(&cluster, &topology, 0, 0.0);
    s.count = None;
    s.options.source = SourceSpec::File(input_with(dir.path(), Some(&big), 20));
    let r = run(
        &s,
        Arc::new(ProducerMetrics::default()),
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!((r.sent, r.acked, r.failed), (21, 21, 0), "{r:?}");
    assert_eq!(r.rejected_by_class.get("oversize"), Some(&1), "{r:?}");
    assert_eq!((r.rejected, r.rejects_written), (1, 1));
    let dlq = format!("{prefix}-mt-c300-dlq");
    let letters = ids_on(&cluster, std::slice::from_ref(&dlq), &r.run_id);
    assert_eq!(letters.len(), 1);
    let (seq, letter) = letters.iter().next().unwrap();
    assert_eq!(*seq, 1, "the second line");
    assert_eq!(
        letter.header(headers::dead_letter::ERROR_CLASS),
        Some(&b"oversize"[..])
    );
    assert_eq!(letter.value, big.as_bytes()[..64 * 1024]);
    let message =
        String::from_utf8_lossy(letter.header(headers::dead_letter::ERROR_MESSAGE).unwrap())
            .into_owned();
    assert!(
        message.contains(&format!("of {} bytes", big.len())),
        "{message}"
    );
    let sources = [format!("{prefix}-mt-c400"), format!("{prefix}-mt-c300")];
    let sent = ids_on(&cluster, &sources, &r.run_id);
    assert_eq!(
        sent.keys().copied().collect::<Vec<_>>(),
        [0].into_iter().chain(2..=21).collect::<Vec<u64>>(),
        "every other line was produced, the ones after the big one too"
    );
}

/// Issue 12, defect 4, the broker's side: a record under the client's limit but over the
/// topic's `max.message.bytes` is refused in its delivery report (`MESSAGE_TOO_LARGE`). That was
/// counted as a failed delivery (exit 1, the event in no dead-letter topic). Each refused record
/// is dead-lettered as `oversize` and the run goes on. The embedded cluster does not enforce
/// topic configs, so it is told to refuse the first produce request.
#[test]
fn records_the_broker_refuses_as_too_large_are_dead_lettered_and_the_run_goes_on() {
    let cluster = ClusterHandle::embedded(1).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (prefix, topology) = rt.block_on(apply_unique(&cluster, DOMAIN));
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(&cluster, &topology, 0, 0.0);
    s.count = None;
    s.options.source = SourceSpec::File(input_with(dir.path(), None, 29));
    cluster
        .embedded_cluster()
        .unwrap()
        .refuse_next_produce_requests_as_too_large(1)
        .unwrap();
    let r = run(
        &s,
        Arc::new(ProducerMetrics::default()),
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(r.failed, 0, "{r:?}");
    let refused = r.rejected_by_class.get("oversize").copied().unwrap_or(0);
    assert!(refused >= 1, "{r:?}");
    assert_eq!(r.rejected, refused, "{r:?}");
    assert_eq!(r.sent + r.rejected, 30, "{r:?}");
    assert_eq!(r.acked, r.sent);
    assert_eq!(r.rejects_written, r.rejected);
    let letters = ids_on(&cluster, &[format!("{prefix}-mt-c300-dlq")], &r.run_id);
    assert_eq!(letters.len() as u64, refused);
    for letter in letters.values() {
        assert_eq!(
            letter.header(headers::dead_letter::ERROR_CLASS),
            Some(&b"oversize"[..])
        );
        assert!(letter.value.starts_with(br#"{"truck_id":"TRK-"#));
    }
    let sources = [format!("{prefix}-mt-c400"), format!("{prefix}-mt-c300")];
    let sent = ids_on(&cluster, &sources, &r.run_id);
    assert_eq!(sent.len() as u64, r.acked);
    let all: Vec<u64> = sent
        .keys()
        .chain(letters.keys())
        .copied()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        all,
        (0..30).collect::<Vec<u64>>(),
        "every line produced or dead-lettered"
    );
}

/// A fatal client error (here: the idempotent producer id refused, which librdkafka raises as
/// fatal) ends the run, but with the report of what it did, so `produce` still prints and
/// writes its summary. It used to end with the bare error and no report.
#[test]
fn a_fatal_client_error_ends_the_run_with_its_report() {
    let cluster = ClusterHandle::embedded(1).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_, topology) = rt.block_on(apply_unique(&cluster, DOMAIN));
    cluster
        .embedded_cluster()
        .unwrap()
        .refuse_next_producer_id_requests(1)
        .unwrap();
    let s = spec(&cluster, &topology, 50, 0.0);
    let e = run(
        &s,
        Arc::new(ProducerMetrics::default()),
        &AtomicBool::new(false),
    )
    .unwrap_err();
    let fleetstream_producer::ProducerError::Ended { error, report } = e else {
        panic!("the run ended without its report: {e:?}");
    };
    assert!(
        matches!(
            *error,
            fleetstream_producer::ProducerError::Kafka(fleetstream_kafka::KafkaError::Fatal(_))
        ),
        "{error:?}"
    );
    assert_eq!(report.run_id, format!("{:016x}", s.run_id));
    assert_eq!(report.acked, 0, "{report:?}");
}
