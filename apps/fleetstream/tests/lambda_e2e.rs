//! End to end through the real Lambda runtime emulator (issue 5): producer -> Kafka ->
//! `fleetstream worker --transport lambda` (AWS SDK Invoke) -> AWS's runtime interface emulator
//! -> the dispatcher Lambda binary -> `http` target -> a recorder in this test. Nothing lost,
//! every id delivered exactly once.
//!
//! Needs the emulator running with a routing file whose default route is an `http` target at
//! [`RECORDER_ADDR`]`/events`; `scripts/e2e-lambda` sets that up and runs this test with
//! `FLEETSTREAM_TEST_LAMBDA_E2E=http://127.0.0.1:9001`. Without that variable the test skips.

use fleetstream_core::MessageId;
use fleetstream_kafka::group_lag;
use fleetstream_testkit::{produce_telemetry, topology_fixture, wait_until, TopologyFixture};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The Invoke endpoint of the emulator, e.g. `http://127.0.0.1:9001`.
const ENDPOINT_VAR: &str = "FLEETSTREAM_TEST_LAMBDA_E2E";
/// Where the routing file written by `scripts/e2e-lambda` sends every code.
const RECORDER_ADDR: &str = "127.0.0.1:18089";

/// Message ids received by the recorder, in arrival order (repeats kept).
type Received = Arc<Mutex<Vec<String>>>;

/// Serves one keep-alive HTTP/1.1 connection: each request's JSON body is the HTTP target's
/// slice document (`{"target", "code", "records": [{"message_id", ...}]}`); answers 200.
fn serve_connection(stream: TcpStream, received: Received) {
    let mut writer = stream.try_clone().expect("clone stream");
    let mut reader = BufReader::new(stream);
    loop {
        let mut content_length = 0usize;
        let mut first = true;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return, // connection closed
                Ok(_) => {}
            }
            let line = line.trim_end();
            if line.is_empty() {
                if first {
                    continue;
                }
                break;
            }
            first = false;
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().expect("content-length");
                }
            }
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let doc: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
        let ids = doc["records"]
            .as_array()
            .expect("records array")
            .iter()
            .map(|r| r["message_id"].as_str().expect("message_id").to_owned());
        received.lock().unwrap().extend(ids);
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// Starts the recorder on [`RECORDER_ADDR`]; runs until the test process exits.
fn start_recorder() -> Received {
    let listener = TcpListener::bind(RECORDER_ADDR)
        .unwrap_or_else(|e| panic!("recorder cannot bind {RECORDER_ADDR}: {e}"));
    let received = Received::default();
    let shared = Arc::clone(&received);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let received = Arc::clone(&shared);
            std::thread::spawn(move || serve_connection(stream, received));
        }
    });
    received
}

#[tokio::test(flavor = "multi_thread")]
async fn producer_worker_emulator_lambda_http_target_loses_nothing() {
    let Ok(endpoint) = std::env::var(ENDPOINT_VAR) else {
        eprintln!(
            "skipped: set {ENDPOINT_VAR} to a running emulator (scripts/e2e-lambda does it all)"
        );
        return;
    };
    let received = start_recorder();

    let TopologyFixture {
        cluster,
        dir,
        path: topology_path,
        topology,
        prefix,
    } = topology_fixture(fleetstream::DOMAIN_TOPOLOGY).await;
    let conn = cluster.connection().clone();

    let n = 2_000u64;
    let run = 0xe2e5_u64;
    assert_eq!(produce_telemetry(&conn, &topology, run, n), n);

    // One worker, one key lane: one Invoke at a time (the emulator serves one at once).
    let summary_path = dir.path().join("w.json");
    let mut worker = Command::new(env!("CARGO_BIN_EXE_fleetstream"))
        .args([
            "worker",
            "--bootstrap",
            &conn.bootstrap,
            "--batch-window",
            "20ms",
            "--batch-max-records",
            "200",
            "--quiet",
            "--transport",
            "lambda",
            "--dispatch-function",
            "function",
            "--lambda-endpoint",
            &endpoint,
        ])
        .arg("--topology")
        .arg(&topology_path)
        .arg("--state-dir")
        .arg(dir.path().join("worker-state"))
        .arg("--json")
        .arg(&summary_path)
        .stdout(Stdio::null())
        .spawn()
        .expect("worker starts");

    let group = topology.groups().into_keys().next().unwrap();
    let topics: Vec<String> = topology.source_topics().map(|t| t.name.clone()).collect();
    let drained = wait_until(Duration::from_secs(180), || {
        group_lag(&conn, &group, &topics, Duration::from_secs(5))
            .is_ok_and(|l| l.iter().all(|p| p.lag == 0))
    });
    Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(worker.wait().unwrap().success(), "worker exit status");
    assert!(drained, "the worker did not commit everything ({prefix})");

    let ids = received.lock().unwrap().clone();
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for id in &ids {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let expected: Vec<String> = (0..n)
        .map(|seq| MessageId { run, seq }.to_string())
        .collect();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {n} ids never reached the HTTP target, e.g. {:?} ({prefix})",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let repeated: Vec<(&str, u32)> = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(id, c)| (*id, *c))
        .collect();
    assert!(
        repeated.is_empty(),
        "{} ids reached the HTTP target more than once, e.g. {:?}",
        repeated.len(),
        &repeated[..repeated.len().min(5)]
    );
    assert_eq!(ids.len() as u64, n, "only this run's ids arrived");

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary_path).unwrap()).unwrap();
    assert_eq!(summary["metrics"]["dispatched"].as_u64(), Some(n));
}
