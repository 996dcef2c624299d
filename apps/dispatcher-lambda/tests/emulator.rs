//! The Lambda binary under a real Lambda runtime (AWS's runtime interface emulator), invoked
//! through the official AWS SDK Lambda client, as Lambda's Kafka pollers and the worker's Lambda
//! transport would.
//!
//! Skipped (with a printed reason) unless FLEETSTREAM_TEST_LAMBDA_ENDPOINT is set:
//!   scripts/lambda-emulator start
//!   FLEETSTREAM_TEST_LAMBDA_ENDPOINT=http://127.0.0.1:9001 cargo test -p fleetstream-dispatcher-lambda --test emulator
//!   scripts/lambda-emulator stop

use aws_sdk_lambda::primitives::Blob;
use fleetstream_dispatcher::event::to_event_json;
use fleetstream_dispatcher::BatchRecord;
use std::time::{SystemTime, UNIX_EPOCH};

/// The RIE serves a single function, called `function`.
const FUNCTION: &str = "function";

fn endpoint() -> Option<String> {
    match std::env::var("FLEETSTREAM_TEST_LAMBDA_ENDPOINT") {
        Ok(e) if !e.trim().is_empty() => Some(e.trim().to_owned()),
        _ => {
            eprintln!(
                "skipped: FLEETSTREAM_TEST_LAMBDA_ENDPOINT is unset (start the emulator with \
                 scripts/lambda-emulator start, then set it to http://127.0.0.1:9001)"
            );
            None
        }
    }
}

async fn client(endpoint: &str) -> aws_sdk_lambda::Client {
    // Plain HTTP with placeholder region and credentials, as the worker's Lambda transport.
    let shared = fleetstream_aws::sdk_config(Some(endpoint), "the test endpoint")
        .await
        .unwrap();
    aws_sdk_lambda::Client::new(&shared)
}

/// Three records with message ids unique to this run (the emulator's store outlives a test run).
fn event() -> String {
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let records: Vec<BatchRecord> = [(300u32, 0i32), (301, 0), (400, 1)]
        .iter()
        .enumerate()
        .map(|(i, &(code, partition))| BatchRecord {
            topic: "mt-c400".into(),
            partition,
            offset: i as i64,
            timestamp_ms: 1_700_000_000_123,
            key: Some(b"TRK-000001".to_vec()),
            value: format!(
                r#"{{"truck_id":"TRK-000001","codigo":{code},"ts":1700000000000,"lat":-23.5,"lon":-46.6,"speed_kmh":60.0,"heading":90,"seq":{i},"fuel_pct":50.0,"engine_temp_c":85.0,"odometer_km":1000.0,"driver_id":"DRV-1"}}"#
            )
            .into_bytes(),
            headers: vec![(
                "fs-message-id".into(),
                format!("emu-{run}-{i}").into_bytes(),
            )],
        })
        .collect();
    to_event_json(&records).to_string()
}

async fn invoke(
    lambda: &aws_sdk_lambda::Client,
    body: &str,
) -> (Option<String>, serde_json::Value) {
    let out = lambda
        .invoke()
        .function_name(FUNCTION)
        .payload(Blob::new(body.as_bytes()))
        .send()
        .await
        .expect("the emulator answers");
    assert_eq!(out.status_code(), 200);
    let payload = out
        .payload()
        .map(|b| b.as_ref().to_vec())
        .unwrap_or_default();
    let json = serde_json::from_slice(&payload).expect("JSON payload");
    (out.function_error().map(str::to_owned), json)
}

/// One test, invocations in sequence: the emulator runs one invocation at a time (a second
/// concurrent one crashes it), like one Lambda execution environment.
#[tokio::test]
async fn sdk_invoke_through_the_runtime_emulator() {
    let Some(endpoint) = endpoint() else { return };
    let lambda = client(&endpoint).await;
    let body = event();
    let (error, first) = invoke(&lambda, &body).await;
    assert_eq!(error, None, "{first}");
    assert_eq!(first["summary"]["dispatched"], 3, "{first}");
    assert_eq!(first["batchItemFailures"], serde_json::json!([]), "{first}");
    // Same warm instance, same /tmp store: a redelivery has no second effect.
    let (_, replay) = invoke(&lambda, &body).await;
    assert_eq!(replay["summary"]["duplicates"], 3, "{replay}");
    // A malformed event fails the invocation (Lambda retries the batch, then its on-failure
    // destination takes it) without taking the function down.
    // (Lambda also sets `X-Amz-Function-Error: Unhandled`; the emulator sends only the body.)
    let (_, payload) = invoke(&lambda, r#"{"records": {"t-0": [{"timestamp": 1.5}]}}"#).await;
    assert_eq!(payload["errorType"], "MalformedKafkaEvent", "{payload}");
    let (error, again) = invoke(&lambda, &body).await;
    assert_eq!(error, None, "{again}");
    assert_eq!(again["summary"]["duplicates"], 3, "{again}");
}
