use super::*;
use fleetstream_dispatcher::idempotency::conformance;
use lambda_runtime::Context;

const FIXTURE: &str =
    include_str!("../../../crates/dispatcher/tests/fixtures/aws-kafka-event.json");

fn event(json: &str) -> LambdaEvent<serde_json::Value> {
    LambdaEvent::new(serde_json::from_str(json).unwrap(), Context::default())
}

fn config(dir: &std::path::Path, routes: Option<&str>) -> LambdaConfig {
    let routes = routes.map(|text| {
        let path = dir.join("routes.toml");
        std::fs::write(&path, text).unwrap();
        path
    });
    LambdaConfig {
        routes,
        state_dir: dir.join("state"),
        retention: Duration::from_secs(3600),
        index_cache_bytes: 8 << 20,
        postgres: None,
        dynamodb: None,
        otlp_endpoint: None,
    }
}

/// The fixture with a `traceparent` on its first record (sampled) and second (not sampled).
fn traced_fixture() -> String {
    use fleetstream_dispatcher::event::{decode_event_json, to_event_json};
    let mut records = decode_event_json(FIXTURE.as_bytes()).unwrap();
    for (r, tp) in records.iter_mut().zip([
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319d-b7ad6b7169203332-00",
    ]) {
        r.headers
            .push(("traceparent".into(), tp.as_bytes().to_vec()));
    }
    to_event_json(&records).to_string()
}

/// Each invocation sends its spans before it returns (a frozen sandbox sends nothing): the
/// collector has the sampled record's span as soon as `handle` answers, with no shutdown.
#[tokio::test(flavor = "multi_thread")]
async fn spans_of_sampled_records_are_sent_before_the_invocation_returns() {
    let collector = fleetstream_obs::collector::Collector::start();
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(
        dir.path(),
        Some("default = [\"sink\"]\n[targets.sink]\nkind = \"memory\"\n"),
    );
    c.otlp_endpoint = Some(collector.url().to_string());
    let dispatcher = c.build().await.unwrap();
    let r = handle(&dispatcher, event(&traced_fixture())).await.unwrap();
    assert_eq!(r.summary.dispatched, 3);
    let spans = collector.spans();
    assert_eq!(spans.len(), 1, "only the sampled record: {spans:#?}");
    let s = &spans[0];
    assert_eq!(s.service, "fleetstream-dispatcher");
    assert_eq!(s.name, "dispatch mt-c300");
    assert_eq!(s.trace_id, 0x0af7651916cd43dd8448eb211c80319c);
    assert_eq!(s.parent, Some(0xb7ad6b7169203331));
    assert_eq!(s.attributes["messaging.kafka.offset"], "15");
    assert_eq!(s.attributes["messaging.message.id"], "msg-0001");
    assert_eq!(s.attributes["fleetstream.outcome"], "dispatched");
    assert_eq!(s.attributes["fleetstream.codigo"], "300");
    assert_eq!(s.error, None);
    // A redelivery is a duplicate, and its span says so.
    handle(&dispatcher, event(&traced_fixture())).await.unwrap();
    let spans = collector.spans();
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[1].attributes["fleetstream.outcome"], "duplicate");
}

#[tokio::test]
async fn dispatches_once_and_answers_the_partial_batch_response() {
    let dir = tempfile::tempdir().unwrap();
    let routes = "default = [\"sink\"]\n[targets.sink]\nkind = \"memory\"\n";
    let dispatcher = config(dir.path(), Some(routes)).build().await.unwrap();
    let first = handle(&dispatcher, event(FIXTURE)).await.unwrap();
    assert_eq!(first.summary.dispatched, 3);
    assert!(first.batch_item_failures.is_empty());
    let json = serde_json::to_value(&first).unwrap();
    assert_eq!(json["batchItemFailures"], serde_json::json!([]));
    assert_eq!(json["summary"]["dispatched"], 3);
    let again = handle(&dispatcher, event(FIXTURE)).await.unwrap();
    assert_eq!(again.summary.duplicates, 3);
    assert_eq!(dispatcher.memory_target("sink").unwrap().total(), 3);
}

#[tokio::test]
async fn failed_records_are_listed_in_kafka_form() {
    let dir = tempfile::tempdir().unwrap();
    // Only code 300 is routed: 301 and 400 are dead-lettered (non-retriable failures).
    let routes = "[routes]\n\"300\" = [\"sink\"]\n[targets.sink]\nkind = \"memory\"\n";
    let dispatcher = config(dir.path(), Some(routes)).build().await.unwrap();
    let response = handle(&dispatcher, event(FIXTURE)).await.unwrap();
    assert_eq!(
        (response.summary.dispatched, response.summary.failed),
        (1, 2)
    );
    let json = serde_json::to_value(&response).unwrap();
    assert_eq!(
        json["batchItemFailures"],
        serde_json::json!([
            {"itemIdentifier": {"partition": "mt-c300-1", "offset": 16}},
            {"itemIdentifier": {"partition": "mt-c400-0", "offset": 3}},
        ])
    );
}

#[tokio::test]
async fn malformed_event_fails_the_invocation() {
    let dir = tempfile::tempdir().unwrap();
    let dispatcher = config(dir.path(), None).build().await.unwrap();
    let bad = FIXTURE.replacen("1700000000123", "1.5", 1);
    let err = handle(&dispatcher, event(&bad)).await.unwrap_err();
    assert!(err.to_string().contains("timestamp"), "{err}");
    let diagnostic = Diagnostic::from(err);
    assert_eq!(diagnostic.error_type, "MalformedKafkaEvent");
    let err = handle(&dispatcher, event(r#"{"records": "x"}"#))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        InvokeError::MalformedEvent { class: "shape", .. }
    ));
}

#[tokio::test]
async fn bundled_routes_log_every_code_and_the_store_survives_a_cold_start() {
    let dir = tempfile::tempdir().unwrap();
    let first = config(dir.path(), None).build().await.unwrap();
    assert_eq!(
        handle(&first, event(FIXTURE))
            .await
            .unwrap()
            .summary
            .dispatched,
        3
    );
    drop(first);
    // Same /tmp (a warm environment re-initialised): still duplicates.
    let second = config(dir.path(), None).build().await.unwrap();
    assert_eq!(
        handle(&second, event(FIXTURE))
            .await
            .unwrap()
            .summary
            .duplicates,
        3
    );
}

#[test]
fn config_comes_from_the_environment() {
    let empty = LambdaConfig::from_lookup(|_| None).unwrap();
    assert_eq!(empty.routes, None);
    assert_eq!(empty.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    assert_eq!(empty.retention, Duration::from_secs(7 * 86400));
    let set = LambdaConfig::from_lookup(|name| match name {
        "FLEETSTREAM_ROUTES" => Some("/var/task/routes.toml".into()),
        "FLEETSTREAM_STATE_DIR" => Some("/tmp/x".into()),
        "FLEETSTREAM_RETENTION" => Some("36h".into()),
        "FLEETSTREAM_OTLP_ENDPOINT" => Some("http://localhost:4318".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(set.routes, Some(PathBuf::from("/var/task/routes.toml")));
    assert_eq!(set.otlp_endpoint.as_deref(), Some("http://localhost:4318"));
    assert_eq!(empty.otlp_endpoint, None);
    assert_eq!(set.retention, Duration::from_secs(36 * 3600));
    let bad = LambdaConfig::from_lookup(|name| {
        (name == "FLEETSTREAM_RETENTION").then(|| "soon".to_owned())
    })
    .unwrap_err();
    assert!(bad.to_string().contains("FLEETSTREAM_RETENTION"), "{bad}");
    let pg = LambdaConfig::from_lookup(|name| match name {
        "FLEETSTREAM_POSTGRES_URL" => Some("postgresql://u:hunter2@db/x".into()),
        "FLEETSTREAM_POSTGRES_TABLE" => Some("dedup".into()),
        "FLEETSTREAM_IN_PROGRESS_TTL" => Some("70s".into()),
        _ => None,
    })
    .unwrap();
    let c = pg.postgres.as_ref().unwrap();
    assert_eq!(c.in_progress_ttl, Duration::from_secs(70));
    assert_eq!(
        (c.table.as_str(), c.retention),
        ("dedup", Duration::from_secs(7 * 86400))
    );
    assert!(!format!("{pg:?}").contains("hunter2"), "{pg:?}");
    let ddb = LambdaConfig::from_lookup(|name| match name {
        "FLEETSTREAM_DYNAMODB_TABLE" => Some("dedup".into()),
        "FLEETSTREAM_DYNAMODB_ENDPOINT" => Some("http://127.0.0.1:8766".into()),
        "FLEETSTREAM_IN_PROGRESS_TTL" => Some("70s".into()),
        "FLEETSTREAM_RETENTION" => Some("2d".into()),
        _ => None,
    })
    .unwrap();
    let c = ddb.dynamodb.as_ref().unwrap();
    assert_eq!(
        (c.table.as_str(), c.endpoint.as_deref()),
        ("dedup", Some("http://127.0.0.1:8766"))
    );
    assert_eq!(
        (c.in_progress_ttl, c.retention),
        (Duration::from_secs(70), Duration::from_secs(2 * 86400))
    );
    assert!(ddb.postgres.is_none());
    let both = LambdaConfig::from_lookup(|name| match name {
        "FLEETSTREAM_DYNAMODB_TABLE" => Some("dedup".into()),
        "FLEETSTREAM_POSTGRES_URL" => Some("postgresql://db/x".into()),
        _ => None,
    })
    .unwrap_err()
    .to_string();
    assert!(
        both.contains("FLEETSTREAM_DYNAMODB_TABLE") && both.contains("FLEETSTREAM_POSTGRES_URL"),
        "{both}"
    );
    let stray = LambdaConfig::from_lookup(|name| {
        (name == "FLEETSTREAM_DYNAMODB_ENDPOINT").then(|| "http://x".to_owned())
    })
    .unwrap_err()
    .to_string();
    assert!(stray.contains("FLEETSTREAM_DYNAMODB_TABLE"), "{stray}");
}

/// Two Lambda instances (separate /tmp) whose configs `share` gives the same shared store: a
/// batch dispatched by one is a duplicate at the other.
async fn two_instances_share_one_store(share: impl Fn(&mut LambdaConfig)) {
    let instance = |dir: &std::path::Path| {
        let mut c = config(dir, None);
        share(&mut c);
        c
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = instance(a.path()).build().await.unwrap();
    let second = instance(b.path()).build().await.unwrap();
    let one = handle(&first, event(FIXTURE)).await.unwrap();
    let two = handle(&second, event(FIXTURE)).await.unwrap();
    assert_eq!(one.summary.dispatched, 3, "{one:?}");
    assert_eq!(two.summary.duplicates, 3, "{two:?}");
}

/// Skipped unless FLEETSTREAM_TEST_DYNAMODB holds an endpoint (scripts/dynamodb start).
#[tokio::test]
async fn instances_sharing_dynamodb_deduplicate_across_each_other() {
    let Some(endpoint) = conformance::dynamodb_endpoint() else {
        return;
    };
    let ddb = DynamoStoreConfig {
        table: conformance::unique_table("fs-lambda-test", '-'),
        endpoint: Some(endpoint),
        ..DynamoStoreConfig::default()
    };
    DynamoStore::create_table(ddb.clone()).await.unwrap();
    two_instances_share_one_store(|c| c.dynamodb = Some(ddb.clone())).await;
}

/// Skipped unless FLEETSTREAM_TEST_POSTGRES holds a URL (scripts/postgres start).
#[tokio::test]
async fn instances_sharing_postgres_deduplicate_across_each_other() {
    let Some(url) = conformance::postgres_url() else {
        return;
    };
    // A fresh table per run: the throwaway cluster outlives the test.
    let mut pg = PostgresStoreConfig::new(url);
    pg.table = conformance::unique_table("fs_lambda_test", '_');
    two_instances_share_one_store(|c| c.postgres = Some(pg.clone())).await;
}

#[tokio::test]
async fn an_unusable_otlp_endpoint_is_a_start_error_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), None);
    c.otlp_endpoint = Some("https://collector.example:4318".into());
    let e = c.build().await.unwrap_err().to_string();
    assert!(e.starts_with("tracing: FLEETSTREAM_OTLP_ENDPOINT: "), "{e}");
    assert!(e.contains("plain HTTP"), "{e}");
}

#[tokio::test]
async fn bad_routes_file_is_a_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = config(dir.path(), Some("default = [\"nope\"]"))
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::Routes(_)), "{err}");
}

#[test]
fn default_store_warns_that_it_deduplicates_per_warm_instance_only() {
    let default = LambdaConfig::from_lookup(|_| None).unwrap();
    let warning = default.store_warning().unwrap();
    assert!(warning.contains("per warm instance only"), "{warning}");
    assert!(
        warning.contains("/tmp/fleetstream/idempotency"),
        "{warning}"
    );
    assert!(warning.contains("FLEETSTREAM_DYNAMODB_TABLE"), "{warning}");
    let shared = LambdaConfig::from_lookup(|name| {
        (name == "FLEETSTREAM_DYNAMODB_TABLE").then(|| "dedup".to_owned())
    })
    .unwrap();
    assert_eq!(shared.store_warning(), None);
}

#[test]
fn index_cache_comes_from_the_environment() {
    let default = LambdaConfig::from_lookup(|_| None).unwrap();
    assert_eq!(default.index_cache_bytes, 64 << 20);
    let set = LambdaConfig::from_lookup(|name| {
        (name == "FLEETSTREAM_INDEX_CACHE").then(|| "16MiB".to_owned())
    })
    .unwrap();
    assert_eq!(set.index_cache_bytes, 16 << 20);
    let bad = LambdaConfig::from_lookup(|name| {
        (name == "FLEETSTREAM_INDEX_CACHE").then(|| "lots".to_owned())
    })
    .unwrap_err();
    assert!(bad.to_string().contains("FLEETSTREAM_INDEX_CACHE"), "{bad}");
}
