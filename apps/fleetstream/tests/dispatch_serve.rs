//! `fleetstream dispatch serve` driven by the official AWS SDK Lambda client, as a worker's Lambda
//! transport or any AWS tool would drive it: Invoke with an endpoint override.
//!
//! Runs the real binary, so the CLI wiring, the disk store across restarts and the HTTP surface
//! are all exercised.

use aws_sdk_lambda::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_lambda::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_lambda::error::BoxError;
use aws_sdk_lambda::operation::invoke::InvokeError;
use aws_sdk_lambda::primitives::Blob;
use fleetstream_dispatcher::idempotency::conformance;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// AWS's own event JSON: three records over two topic-partitions, codes 300, 301 and 400.
const EVENT: &str = include_str!("../../../crates/dispatcher/tests/fixtures/aws-kafka-event.json");
const FUNCTION: &str = "fleetstream-dispatcher";

/// The server process; killed (SIGKILL, no clean shutdown) on drop.
struct Server {
    child: Child,
    endpoint: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(state_dir: &Path, extra: &[&str]) -> Server {
    start_with_env(state_dir, extra, &[])
}

fn start_with_env(state_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetstream"))
        .args([
            "dispatch",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
        ])
        .arg(state_dir)
        .args(extra)
        .env_remove("FLEETSTREAM_ROUTES")
        .env_remove("FLEETSTREAM_DISPATCH_TOKEN")
        .env_remove("FLEETSTREAM_POSTGRES_URL")
        .env_remove("FLEETSTREAM_DYNAMODB_TABLE")
        .env_remove("FLEETSTREAM_DYNAMODB_ENDPOINT")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("fleetstream starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut reader = BufReader::new(stdout);
    let mut first = String::new();
    reader.read_line(&mut first).expect("reads the first line");
    // Keep draining so the server never writes to a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let endpoint = first
        .trim()
        .rsplit_once("listening on ")
        .map(|(_, url)| url.to_owned())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    Server { child, endpoint }
}

/// Sends the token in `X-Fleetstream-Token`: the SDK's `Authorization` header carries SigV4.
#[derive(Debug)]
struct TokenHeader(&'static str);

impl Intercept for TokenHeader {
    fn name(&self) -> &'static str {
        "TokenHeader"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        context
            .request_mut()
            .headers_mut()
            .insert("x-fleetstream-token", self.0);
        Ok(())
    }
}

async fn client(endpoint: &str, token: Option<&'static str>) -> aws_sdk_lambda::Client {
    // Plain HTTP with placeholder region and credentials, as the worker's Lambda transport.
    let shared = fleetstream_aws::sdk_config(Some(endpoint), "the test endpoint")
        .await
        .unwrap();
    let mut config = aws_sdk_lambda::config::Builder::from(&shared);
    if let Some(token) = token {
        config = config.interceptor(TokenHeader(token));
    }
    aws_sdk_lambda::Client::from_conf(config.build())
}

async fn invoke(client: &aws_sdk_lambda::Client, body: &str) -> serde_json::Value {
    let out = client
        .invoke()
        .function_name(FUNCTION)
        .payload(Blob::new(body.as_bytes()))
        .send()
        .await
        .expect("invoke succeeds");
    assert_eq!(out.status_code(), 200);
    assert_eq!(out.function_error(), None);
    let payload = out.payload().expect("a payload").as_ref();
    serde_json::from_slice(payload).expect("JSON payload")
}

/// Invokes with `body`, expecting the server to refuse it: the HTTP status and the error.
async fn refusal(client: &aws_sdk_lambda::Client, body: &str) -> (Option<u16>, InvokeError) {
    let err = client
        .invoke()
        .function_name(FUNCTION)
        .payload(Blob::new(body.as_bytes()))
        .send()
        .await
        .expect_err("refused");
    let status = err.raw_response().map(|r| r.status().as_u16());
    (status, err.into_service_error())
}

#[tokio::test]
async fn sdk_invoke_dispatches_once_across_replays_and_restarts() {
    let state = tempfile::tempdir().unwrap();
    let server = start(state.path(), &[]);
    let lambda = client(&server.endpoint, None).await;

    let first = invoke(&lambda, EVENT).await;
    assert_eq!(first["summary"]["dispatched"], 3, "{first}");
    assert_eq!(first["batchItemFailures"], serde_json::json!([]), "{first}");
    let replay = invoke(&lambda, EVENT).await;
    assert_eq!(replay["summary"]["duplicates"], 3, "{replay}");
    assert_eq!(replay["summary"]["dispatched"], 0, "{replay}");

    // Restart on the same state dir: the disk store remembers. SIGKILL, within the index's
    // sync interval, so this also shows completed keys survive a crash (pending log replayed).
    drop(server);
    let server = start(state.path(), &[]);
    let lambda = client(&server.endpoint, None).await;
    let after_restart = invoke(&lambda, EVENT).await;
    assert_eq!(after_restart["summary"]["duplicates"], 3, "{after_restart}");

    // One effect per record: the default jsonl target got each message once.
    let written = std::fs::read_to_string(state.path().join("dispatched.jsonl")).unwrap();
    let mut ids: Vec<String> = written
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["message_id"].to_string())
        .collect();
    assert_eq!(ids.len(), 3, "{written}");
    ids.dedup();
    assert_eq!(ids.len(), 3, "{written}");
}

/// With `--otlp-endpoint`, the server records a `dispatch` span for the record the producer
/// sampled, and sends it when it stops (SIGTERM).
#[tokio::test]
async fn sampled_records_are_traced_and_sent_on_shutdown() {
    use fleetstream_dispatcher::event::{decode_event_json, to_event_json};
    let collector = fleetstream_obs::collector::Collector::start();
    let state = tempfile::tempdir().unwrap();
    // No timed export for a minute: the span can only leave at shutdown.
    let mut server = start_with_env(
        state.path(),
        &["--otlp-endpoint", collector.url()],
        &[("OTEL_BSP_SCHEDULE_DELAY", "60000")],
    );
    let mut records = decode_event_json(EVENT.as_bytes()).unwrap();
    for (r, tp) in records.iter_mut().zip([
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319d-b7ad6b7169203332-00",
    ]) {
        r.headers
            .push(("traceparent".into(), tp.as_bytes().to_vec()));
    }
    let lambda = client(&server.endpoint, None).await;
    let out = invoke(&lambda, &to_event_json(&records).to_string()).await;
    assert_eq!(out["summary"]["dispatched"], 3, "{out}");
    assert_eq!(collector.spans().len(), 0, "nothing sent before shutdown");
    let status = sigterm(&mut server);
    assert!(status.success(), "{status}");
    let spans = collector.spans();
    assert_eq!(spans.len(), 1, "the sampled record only: {spans:#?}");
    assert_eq!(spans[0].service, "fleetstream-dispatcher");
    assert_eq!(spans[0].parent, Some(0xb7ad6b7169203331));
    assert_eq!(spans[0].attributes["fleetstream.outcome"], "dispatched");
}

/// Sends the server SIGTERM and waits for it to exit.
fn sigterm(server: &mut Server) -> std::process::ExitStatus {
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    server.child.wait().unwrap()
}

/// A SIGTERM sent as soon as the "listening" line is out stops the server cleanly (exit 0),
/// never by the signal's default action. The handler used to be installed only when
/// axum first polled the shutdown future from a task of its own, and CI once lost that race.
#[test]
fn sigterm_right_after_the_first_line_stops_cleanly() {
    for _ in 0..5 {
        let state = tempfile::tempdir().unwrap();
        let mut server = start(state.path(), &[]);
        let status = sigterm(&mut server);
        assert!(status.success(), "{status}");
    }
}

#[tokio::test]
async fn malformed_event_is_a_client_error() {
    let state = tempfile::tempdir().unwrap();
    let server = start(state.path(), &[]);
    let lambda = client(&server.endpoint, None).await;
    let bad = EVENT.replacen("VFJLLTAwMDA0Mg==", "%%% not base64 %%%", 1);
    for body in ["{\"records\": [1, 2]", bad.as_str()] {
        let (status, err) = refusal(&lambda, body).await;
        assert_eq!(status, Some(400));
        assert!(
            matches!(err, InvokeError::InvalidRequestContentException(_)),
            "{err:?}"
        );
    }
    // The server is still up and nothing was dispatched by the bad requests.
    let ok = invoke(&lambda, EVENT).await;
    assert_eq!(ok["summary"]["dispatched"], 3, "{ok}");
}

#[tokio::test]
async fn token_is_enforced() {
    let state = tempfile::tempdir().unwrap();
    let server = start(state.path(), &["--token", "t0ken"]);
    let anonymous = client(&server.endpoint, None).await;
    assert_eq!(refusal(&anonymous, EVENT).await.0, Some(401));
    let wrong = client(&server.endpoint, Some("t0ke")).await;
    assert_eq!(refusal(&wrong, EVENT).await.0, Some(401));
    let authorized = client(&server.endpoint, Some("t0ken")).await;
    let ok = invoke(&authorized, EVENT).await;
    assert_eq!(ok["summary"]["dispatched"], 3, "{ok}");
}

#[tokio::test]
async fn oversized_event_gets_413() {
    let state = tempfile::tempdir().unwrap();
    let server = start(state.path(), &["--max-body", "1KiB"]);
    let lambda = client(&server.endpoint, None).await;
    assert_eq!(refusal(&lambda, EVENT).await.0, Some(413));
}

/// Two servers (separate state dirs, as on two machines) started with the same shared-store
/// flags: a batch dispatched by one is a duplicate at the other, which dispatches nothing.
async fn two_servers_share_one_store(flags: &[&str]) {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = start(a.path(), flags);
    let second = start(b.path(), flags);
    let one = invoke(&client(&first.endpoint, None).await, EVENT).await;
    assert_eq!(one["summary"]["dispatched"], 3, "{one}");
    let two = invoke(&client(&second.endpoint, None).await, EVENT).await;
    assert_eq!(two["summary"]["duplicates"], 3, "{two}");
    // The second server's target never ran.
    let written =
        |dir: &Path| std::fs::read_to_string(dir.join("dispatched.jsonl")).unwrap_or_default();
    assert_eq!(written(a.path()).lines().count(), 3);
    assert_eq!(written(b.path()), "");
}

/// Skipped unless FLEETSTREAM_TEST_POSTGRES holds a URL (scripts/postgres start).
#[tokio::test]
async fn servers_sharing_postgres_deduplicate_across_each_other() {
    let Some(url) = conformance::postgres_url() else {
        return;
    };
    let table = conformance::unique_table("fs_serve_test", '_');
    two_servers_share_one_store(&["--postgres-url", &url, "--postgres-table", &table]).await;
}

/// Skipped unless FLEETSTREAM_TEST_DYNAMODB holds an endpoint (scripts/dynamodb start).
#[tokio::test]
async fn servers_sharing_dynamodb_deduplicate_across_each_other() {
    use fleetstream_dispatcher::idempotency::{DynamoStore, DynamoStoreConfig};
    let Some(endpoint) = conformance::dynamodb_endpoint() else {
        return;
    };
    let table = conformance::unique_table("fs-serve-test", '-');
    DynamoStore::create_table(DynamoStoreConfig {
        table: table.clone(),
        endpoint: Some(endpoint.clone()),
        ..DynamoStoreConfig::default()
    })
    .await
    .unwrap();
    two_servers_share_one_store(&["--dynamodb-table", &table, "--dynamodb-endpoint", &endpoint])
        .await;
}

/// A shared store or an OTLP endpoint that cannot be used stops the server at start-up, naming
/// the flag; two shared stores at once are refused.
#[test]
fn an_unusable_or_ambiguous_shared_store_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_fleetstream"))
            .args([
                "dispatch",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--state-dir",
            ])
            .arg(dir.path())
            .args(extra)
            .env_remove("FLEETSTREAM_POSTGRES_URL")
            .env_remove("FLEETSTREAM_DYNAMODB_TABLE")
            .env_remove("FLEETSTREAM_DYNAMODB_ENDPOINT")
            .output()
            .expect("fleetstream runs")
    };
    let out = run(&["--otlp-endpoint", "https://collector.example:4318"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--otlp-endpoint (FLEETSTREAM_OTLP_ENDPOINT)"),
        "{err}"
    );
    // Nothing listens on port 1.
    let out = run(&[
        "--dynamodb-table",
        "dedup",
        "--dynamodb-endpoint",
        "http://127.0.0.1:1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--dynamodb-table") && err.contains("dedup"),
        "{err}"
    );
    let out = run(&[
        "--dynamodb-table",
        "dedup",
        "--postgres-url",
        "postgresql://127.0.0.1:1/x",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--postgres-url"), "{err}");
}
