use super::*;
use crate::idempotency::MemoryStore;
use crate::RoutingTable;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const FIXTURE: &str = include_str!("../../tests/fixtures/aws-kafka-event.json");
const ROUTES: &str = r#"
default = ["archive"]
[targets.archive]
kind = "memory"
"#;

struct Running {
    base: String,
    dispatcher: Arc<Dispatcher>,
}

async fn start(config: ServerConfig) -> Running {
    let table = RoutingTable::from_toml_str(ROUTES, "/nonexistent").unwrap();
    let dispatcher = Arc::new(Dispatcher::new(table, Arc::new(MemoryStore::default())).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = router(Arc::clone(&dispatcher), config);
    tokio::spawn(serve(listener, app, std::future::pending()));
    Running { base, dispatcher }
}

async fn call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, HeaderMap, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = axum::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = client
        .request(request.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn invoke_url(base: &str) -> String {
    format!("{base}/2015-03-31/functions/fleetstream-dispatcher/invocations")
}

#[tokio::test]
async fn invoke_dispatches_then_reports_duplicates() {
    let server = start(ServerConfig::default()).await;
    let url = invoke_url(&server.base);
    let (status, headers, body) = call("POST", &url, &[], FIXTURE.into()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["summary"]["dispatched"], 3, "{body}");
    assert_eq!(v["batchItemFailures"], serde_json::json!([]));
    let (_, _, body) = call("POST", &url, &[], FIXTURE.into()).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["summary"]["duplicates"], 3, "{body}");
    let archive = server.dispatcher.memory_target("archive").unwrap();
    assert_eq!(archive.effects("msg-0001"), 1);
    assert_eq!(archive.total(), 3);

    let (status, _, text) = call("GET", &format!("{}/metrics", server.base), &[], vec![]).await;
    assert_eq!(status, 200);
    for line in [
        "fleetstream_dispatch_dispatched_total{target=\"archive\",code=\"300\"} 1\n",
        "fleetstream_dispatch_duplicates_suppressed_total{target=\"archive\",code=\"400\"} 1\n",
        "fleetstream_dispatch_invocations_total{status=\"200\"} 2\n",
        "fleetstream_dispatch_delivery_seconds_count{target=\"archive\",code=\"301\"} 1\n",
        "fleetstream_dispatch_invocation_seconds_count 2\n",
        // Three records with timestamps, twice; from 2023, so all past the last bucket.
        "fleetstream_dispatch_record_age_seconds_count 6\n",
        "fleetstream_dispatch_record_age_seconds_bucket{le=\"10\"} 0\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[tokio::test]
async fn malformed_events_are_client_errors_and_dispatch_nothing() {
    let server = start(ServerConfig::default()).await;
    let url = invoke_url(&server.base);
    let bad_base64 = FIXTURE.replacen("VFJLLTAwMDA0Mg==", "not base64!", 1);
    let fractional = FIXTURE.replacen("1700000000123", "1.5", 1);
    for (body, class) in [
        ("{not json".to_owned(), "shape"),
        (r#"{"records": 7}"#.to_owned(), "shape"),
        (bad_base64, "base64"),
        (fractional, "timestamp"),
    ] {
        let (status, headers, text) = call("POST", &url, &[], body.into_bytes()).await;
        assert_eq!(status, 400, "{text}");
        assert_eq!(
            headers["x-amzn-errortype"],
            "InvalidRequestContentException"
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["errorClass"], class, "{text}");
        assert!(!v["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(
        server.dispatcher.memory_target("archive").unwrap().total(),
        0
    );
}

#[tokio::test]
async fn token_is_required_when_configured() {
    let config = ServerConfig {
        token: Token::new("s3cret"),
        ..Default::default()
    };
    assert_eq!(format!("{:?}", config.token), "Some(***)");
    let server = start(config).await;
    let url = invoke_url(&server.base);
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong")],
        vec![("authorization", "Bearer s3cre")],
        vec![("x-fleetstream-token", "s3cret-and-more")],
    ] {
        let (status, h, _) = call("POST", &url, &headers, FIXTURE.into()).await;
        assert_eq!(status, 401, "{headers:?}");
        assert_eq!(h["www-authenticate"], "Bearer");
    }
    assert_eq!(
        server.dispatcher.memory_target("archive").unwrap().total(),
        0
    );
    let (status, _, _) = call(
        "POST",
        &url,
        &[("authorization", "Bearer s3cret")],
        FIXTURE.into(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, body) = call(
        "POST",
        &url,
        &[("x-fleetstream-token", "s3cret")],
        FIXTURE.into(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("\"duplicates\":3"), "{body}");
    // Metrics stay open.
    let (status, _, _) = call("GET", &format!("{}/metrics", server.base), &[], vec![]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let server = start(ServerConfig {
        max_body_bytes: 100,
        ..Default::default()
    })
    .await;
    let (status, headers, _) = call("POST", &invoke_url(&server.base), &[], FIXTURE.into()).await;
    assert_eq!(status, 413);
    assert_eq!(headers["x-amzn-errortype"], "RequestTooLargeException");
    assert_eq!(
        server.dispatcher.memory_target("archive").unwrap().total(),
        0
    );
}

#[tokio::test]
async fn dry_run_and_event_invocations() {
    let server = start(ServerConfig::default()).await;
    let url = invoke_url(&server.base);
    let (status, _, _) = call(
        "POST",
        &url,
        &[("x-amz-invocation-type", "DryRun")],
        FIXTURE.into(),
    )
    .await;
    assert_eq!(status, 204);
    let archive = server.dispatcher.memory_target("archive").unwrap();
    assert_eq!(archive.total(), 0);
    let (status, _, _) = call(
        "POST",
        &url,
        &[("x-amz-invocation-type", "Event")],
        FIXTURE.into(),
    )
    .await;
    assert_eq!(status, 202);
    for _ in 0..200 {
        if archive.total() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(archive.total(), 3);
}

/// Applies a slice's effects, then holds its answer until `gate` opens; `dropped` says whether
/// the delivery future was dropped (its request cancelled) while it waited.
struct SlowAck {
    inner: crate::targets::MemoryTarget,
    applied: tokio::sync::Notify,
    gate: tokio::sync::watch::Sender<bool>,
    dropped: std::sync::atomic::AtomicBool,
}

/// Sets its flag when dropped while armed.
struct DropFlag<'a>(Option<&'a std::sync::atomic::AtomicBool>);

impl Drop for DropFlag<'_> {
    fn drop(&mut self) {
        if let Some(flag) = self.0 {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

impl crate::targets::Target for SlowAck {
    fn name(&self) -> &str {
        "archive"
    }

    fn deliver<'a>(
        &'a self,
        code: fleetstream_core::Code,
        records: &'a [crate::targets::Delivery<'a>],
    ) -> futures::future::BoxFuture<'a, Result<(), crate::targets::TargetError>> {
        Box::pin(async move {
            let result = self.inner.deliver(code, records).await;
            self.applied.notify_one();
            let mut flag = DropFlag(Some(&self.dropped));
            let _ = self.gate.subscribe().wait_for(|open| *open).await;
            flag.0 = None;
            result
        })
    }
}

fn big_event(n: i64) -> Vec<u8> {
    let records: Vec<crate::BatchRecord> = (0..n)
        .map(|i| crate::BatchRecord {
            topic: "mt-c300".into(),
            partition: (i % 6) as i32,
            offset: i,
            timestamp_ms: 1_700_000_000_000,
            key: Some(format!("TRK-{i:06}").into_bytes()),
            value: format!(
                r#"{{"truck_id":"TRK-{i:06}","codigo":300,"ts":1700000000000,"lat":-23.5,"lon":-46.6,"speed_kmh":60.0,"heading":90,"seq":{i},"fuel_pct":50.0,"engine_temp_c":85.0,"odometer_km":1000.0,"driver_id":"DRV-1"}}"#
            )
            .into_bytes(),
            headers: vec![("fs-message-id".into(), format!("big-{i}").into_bytes())],
        })
        .collect();
    crate::event::to_event_json(&records)
        .to_string()
        .into_bytes()
}

/// Issue 12, defect 1: a client that gave up on a request (disconnected, or its timeout
/// expired) after the target applied the effects but before the dispatch recorded them made
/// axum drop the handler, the dispatch with it, and its markers were released: the client's
/// retry applied every effect a second time. The dispatch now runs to its settlement on a task
/// of its own; the retry finds duplicates.
#[tokio::test]
async fn dropped_request_after_effect_does_not_apply_twice() {
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncWriteExt;
    const N: i64 = 2_000;
    let target = Arc::new(SlowAck {
        inner: crate::targets::MemoryTarget::new("archive"),
        applied: tokio::sync::Notify::new(),
        gate: tokio::sync::watch::channel(false).0,
        dropped: Default::default(),
    });
    let table = RoutingTable::from_toml_str(ROUTES, "/nonexistent").unwrap();
    let dispatcher = Arc::new(
        Dispatcher::new(table, Arc::new(MemoryStore::default()))
            .unwrap()
            .with_target(target.clone()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(Arc::clone(&dispatcher), ServerConfig::default());
    tokio::spawn(serve(listener, app, std::future::pending()));
    let body = big_event(N);

    // The first attempt: the client sends the event and gives up (closes its connection) once
    // the effects are applied, before the answer.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /2015-03-31/functions/fleetstream-dispatcher/invocations HTTP/1.1\r\n\
         host: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    target.applied.notified().await;
    drop(stream);
    // Give the server time to see the disconnect (it drops the handler if the dispatch is
    // not detached); not an assertion, only how long the slow answer stays slow.
    for _ in 0..200 {
        if target.dropped.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    target.gate.send_replace(true);

    // The retry, as a worker would: again while records are in progress.
    let url = invoke_url(&format!("http://{addr}"));
    let mut summary = serde_json::Value::Null;
    for _ in 0..200 {
        let (status, _, text) = call("POST", &url, &[], body.clone()).await;
        assert_eq!(status, 200, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        summary = v["summary"].clone();
        if summary["failed"] == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let twice: Vec<i64> = (0..N)
        .filter(|i| target.inner.effects(&format!("big-{i}")) != 1)
        .collect();
    assert!(
        twice.is_empty(),
        "{} of {N} ids without exactly one effect (first: big-{}); last summary {summary}",
        twice.len(),
        twice[0]
    );
    assert_eq!(summary["duplicates"], N, "{summary}");
}
