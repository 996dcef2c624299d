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
