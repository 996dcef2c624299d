//! The HTTP target against a local endpoint (axum on 127.0.0.1:0): batching, retries of 429 and
//! 5xx, permanent 4xx, timeouts, the per-target concurrency limit, and a target that is down
//! then recovers with every effect exactly once.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use fleetstream_dispatcher::idempotency::conformance::record;
use fleetstream_dispatcher::idempotency::MemoryStore;
use fleetstream_dispatcher::{BatchRecord, Dispatcher, Outcome, RoutingTable};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the endpoint saw and how it answers.
#[derive(Default)]
struct Endpoint {
    /// Statuses to answer before answering 200 (front first); `Retry-After: 0` on 429.
    script: VecDeque<u16>,
    /// Sleep before answering.
    delay: Duration,
    requests: usize,
    /// Times each message id was received in an answered-200 request.
    effects: HashMap<String, u32>,
    codes: Vec<u64>,
    in_flight: usize,
    max_in_flight: usize,
}

type Shared = Arc<Mutex<Endpoint>>;

async fn handle(State(state): State<Shared>, body: axum::body::Bytes) -> Response {
    let (status, delay) = {
        let mut s = state.lock().unwrap();
        s.requests += 1;
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        (s.script.pop_front().unwrap_or(200), s.delay)
    };
    tokio::time::sleep(delay).await;
    let mut s = state.lock().unwrap();
    s.in_flight -= 1;
    if status == 200 {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        s.codes.push(v["code"].as_u64().unwrap());
        for r in v["records"].as_array().unwrap() {
            assert!(r["event"]["truck_id"].is_string(), "{r}");
            *s.effects
                .entry(r["message_id"].as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
    }
    let mut response = StatusCode::from_u16(status).unwrap().into_response();
    if status == 429 {
        response
            .headers_mut()
            .insert("retry-after", "0".parse().unwrap());
    }
    response
}

async fn serve_on(listener: tokio::net::TcpListener, state: Shared) {
    let app = Router::new()
        .route("/events", post(handle))
        .with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
}

async fn endpoint(script: &[u16], delay: Duration) -> (SocketAddr, Shared) {
    let state: Shared = Arc::new(Mutex::new(Endpoint {
        script: script.iter().copied().collect(),
        delay,
        ..Default::default()
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    serve_on(listener, Arc::clone(&state)).await;
    (addr, state)
}

fn routes(addr: SocketAddr, extra: &str) -> String {
    format!(
        "default = [\"api\"]\n[targets.api]\nkind = \"http\"\nurl = \"http://{addr}/events\"\ntimeout = \"500ms\"\nmax_attempts = 3\ninitial_backoff = \"1ms\"\n{extra}"
    )
}

fn dispatcher(routes: &str) -> Dispatcher {
    let table = RoutingTable::from_toml_str(routes, "/nonexistent").expect("valid routes");
    Dispatcher::new(table, Arc::new(MemoryStore::default())).expect("builds")
}

fn batch(n: i64) -> Vec<BatchRecord> {
    (0..n)
        .map(|i| record(i, [300, 301][i as usize % 2]))
        .collect()
}

#[tokio::test]
async fn posts_one_json_batch_per_code() {
    let (addr, state) = endpoint(&[], Duration::ZERO).await;
    let d = dispatcher(&routes(addr, ""));
    let response = d.dispatch(batch(6)).await;
    assert_eq!(response.summary.dispatched, 6, "{response:?}");
    let s = state.lock().unwrap();
    assert_eq!(s.requests, 2, "one request per code");
    let mut codes = s.codes.clone();
    codes.sort();
    assert_eq!(codes, vec![300, 301]);
    assert_eq!(s.effects.len(), 6);
    assert!(s.effects.values().all(|&n| n == 1));
}

#[tokio::test]
async fn retries_429_and_5xx_then_delivers_once() {
    let (addr, state) = endpoint(&[503, 429], Duration::ZERO).await;
    let d = dispatcher(&routes(addr, ""));
    let records = vec![record(0, 300), record(2, 300)];
    let response = d.dispatch(records).await;
    assert_eq!(response.summary.dispatched, 2, "{response:?}");
    let s = state.lock().unwrap();
    assert_eq!(s.requests, 3);
    assert_eq!(s.effects["m-0"], 1);
}

#[tokio::test]
async fn exhausted_retries_are_retriable_failures() {
    let (addr, state) = endpoint(&[500, 502, 504], Duration::ZERO).await;
    let d = dispatcher(&routes(addr, ""));
    let response = d.dispatch(vec![record(0, 300)]).await;
    assert_eq!(response.summary.failed, 1);
    assert!(
        matches!(&response.results[0].outcome, Outcome::Failed { retriable: true, reason } if reason == "target:api:unavailable"),
        "{:?}",
        response.results[0]
    );
    assert_eq!(state.lock().unwrap().requests, 3, "max_attempts = 3");
    // The marker was released: the redelivery runs (and the endpoint now answers 200).
    let response = d.dispatch(vec![record(0, 300)]).await;
    assert_eq!(response.summary.dispatched, 1);
    assert_eq!(state.lock().unwrap().effects["m-0"], 1);
}

#[tokio::test]
async fn client_errors_are_permanent_and_not_retried() {
    let (addr, state) = endpoint(&[400], Duration::ZERO).await;
    let d = dispatcher(&routes(addr, ""));
    let response = d.dispatch(vec![record(0, 300)]).await;
    assert!(
        matches!(&response.results[0].outcome, Outcome::Failed { retriable: false, reason } if reason == "target:api:rejected"),
        "{:?}",
        response.results[0]
    );
    assert_eq!(response.batch_item_failures.len(), 1);
    assert_eq!(state.lock().unwrap().requests, 1);
}

#[tokio::test]
async fn slow_endpoint_times_out() {
    let (addr, state) = endpoint(&[], Duration::from_secs(2)).await;
    let d = dispatcher(&routes(addr, "").replace("max_attempts = 3", "max_attempts = 2"));
    let response = d.dispatch(vec![record(0, 300)]).await;
    assert!(
        matches!(
            &response.results[0].outcome,
            Outcome::Failed {
                retriable: true,
                ..
            }
        ),
        "{:?}",
        response.results[0]
    );
    assert_eq!(state.lock().unwrap().requests, 2);
}

#[tokio::test]
async fn concurrency_limit_bounds_requests_in_flight() {
    let (addr, state) = endpoint(&[], Duration::from_millis(50)).await;
    let d = Arc::new(dispatcher(&routes(addr, "concurrency = 2")));
    // Eight batches at once, each one request: at most two may be at the endpoint together.
    let runs = (0..8).map(|i| {
        let d = Arc::clone(&d);
        tokio::spawn(async move { d.dispatch(vec![record(i, 300)]).await })
    });
    for run in futures::future::join_all(runs).await {
        assert_eq!(run.unwrap().summary.dispatched, 1);
    }
    let s = state.lock().unwrap();
    assert_eq!(s.requests, 8);
    assert!(s.max_in_flight <= 2, "max in flight {}", s.max_in_flight);
    assert!(s.max_in_flight >= 1);
}

#[tokio::test]
async fn target_down_fails_per_record_then_recovers_exactly_once() {
    // Reserve a port, then close it: connections are refused (the target is down).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    // Two targets: `api` is down, `archive` (in-process) is up.
    let routes = format!(
        "{}\n[targets.archive]\nkind = \"memory\"\n",
        routes(addr, "").replace("default = [\"api\"]", "default = [\"api\", \"archive\"]")
    );
    let d = dispatcher(&routes);
    let records = batch(5);
    let down = d.dispatch(records.clone()).await;
    assert_eq!(down.summary.failed, 5, "{down:?}");
    assert_eq!(down.batch_item_failures.len(), 5);
    for r in &down.results {
        assert!(
            matches!(&r.outcome, Outcome::Failed { retriable: true, reason } if reason == "target:api:unavailable"),
            "{r:?}"
        );
    }
    let archive = d.memory_target("archive").unwrap();
    assert_eq!(
        archive.total(),
        5,
        "the healthy target took its records once"
    );

    // Recovery: the endpoint comes up on the same port; Kafka/Lambda redeliver, twice.
    let state: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    serve_on(listener, Arc::clone(&state)).await;
    let recovered = d.dispatch(records.clone()).await;
    assert_eq!(recovered.summary.dispatched, 5, "{recovered:?}");
    let again = d.dispatch(records).await;
    assert_eq!(again.summary.duplicates, 5, "{again:?}");

    let s = state.lock().unwrap();
    assert_eq!(s.effects.len(), 5);
    assert!(s.effects.values().all(|&n| n == 1), "{:?}", s.effects);
    for i in 0..5 {
        assert_eq!(archive.effects(&format!("m-{i}")), 1);
    }
    let stats = d.metrics().stats("api", fleetstream_core::Code(300));
    assert_eq!((stats.dispatched, stats.failed), (3, 3));
}
