//! `fleetstream worker` as a process: killed with SIGKILL mid-stream and restarted, nothing is
//! lost and only what was uncommitted is read again. Embedded cluster by default (the mock
//! brokers listen on loopback, so the worker process can reach them), a real broker with
//! FLEETSTREAM_TEST_BOOTSTRAP.

use fleetstream_core::{MessageId, Topology};
use fleetstream_kafka::{group_lag, headers, read_topic_to_end};
use fleetstream_testkit::{
    apply, apply_unique, cluster, produce_telemetry, topology_fixture, unique_topology, wait_until,
    TopologyFixture,
};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn jsonl_ids(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["message_id"].as_str().map(str::to_owned))
        .collect()
}

fn spawn_worker(bootstrap: &str, topology: &Path, state: &Path, json: &Path) -> Child {
    spawn_worker_with(bootstrap, topology, state, json, &[])
}

fn spawn_worker_with(
    bootstrap: &str,
    topology: &Path,
    state: &Path,
    json: &Path,
    extra: &[&str],
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fleetstream"))
        .args([
            "worker",
            "--bootstrap",
            bootstrap,
            "--batch-window",
            "20ms",
            "--batch-max-records",
            "200",
            "--quiet",
        ])
        .args(extra)
        .arg("--topology")
        .arg(topology)
        .arg("--state-dir")
        .arg(state)
        .arg("--json")
        .arg(json)
        .stdout(Stdio::null())
        .spawn()
        .expect("worker starts")
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_killed_mid_stream_loses_nothing_and_rereads_only_uncommitted() {
    let TopologyFixture {
        cluster,
        dir,
        path: topology_path,
        topology,
        prefix,
    } = topology_fixture(fleetstream::DOMAIN_TOPOLOGY).await;
    let conn = cluster.connection().clone();
    let bootstrap = conn.bootstrap.clone();

    // 100,000 events over both topics, keyed by the topology's composite keys: enough that the
    // worker is still busy when its first offsets are committed (every second).
    let n = 100_000u64;
    let run = 0xabcd_u64;
    assert_eq!(produce_telemetry(&conn, &topology, run, n), n);

    let state = dir.path().join("state");
    let dispatched = state.join("dispatched.jsonl");
    let group = topology.groups().into_keys().next().unwrap();
    let topics: Vec<String> = topology.source_topics().map(|t| t.name.clone()).collect();
    let mut first = spawn_worker(
        &bootstrap,
        &topology_path,
        &state,
        &dir.path().join("w1.json"),
    );
    // Kill it as soon as the group has committed something: mid-stream by construction.
    let some = wait_until(Duration::from_secs(60), || {
        group_lag(&conn, &group, &topics, Duration::from_secs(5))
            .is_ok_and(|l| l.iter().any(|p| p.committed.is_some_and(|c| c > 0)))
    });
    first.kill().unwrap(); // SIGKILL: no shutdown, no final commit
    first.wait().unwrap();
    assert!(some, "the first worker never committed before the kill");

    let before = group_lag(&conn, &group, &topics, Duration::from_secs(10)).unwrap();
    let uncommitted: i64 = before.iter().map(|l| l.lag).sum();
    assert!(
        uncommitted > 0 && uncommitted < n as i64,
        "killed mid-stream: {uncommitted} uncommitted of {n}"
    );

    let w2_json = dir.path().join("w2.json");
    let mut second = spawn_worker(&bootstrap, &topology_path, &state, &w2_json);
    let drained = wait_until(Duration::from_secs(120), || {
        group_lag(&conn, &group, &topics, Duration::from_secs(5))
            .is_ok_and(|l| l.iter().all(|p| p.lag == 0))
    });
    // SIGTERM: graceful stop, which writes the JSON summary.
    Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    assert!(second.wait().unwrap().success());
    assert!(drained, "second worker did not catch up");

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&w2_json).unwrap()).unwrap();
    assert_eq!(
        summary["metrics"]["consumed"].as_i64(),
        Some(uncommitted),
        "re-read exactly the uncommitted records"
    );

    // Nothing lost: every id has an effect in the JSON-lines sink or sits in a dead-letter topic.
    let ids = jsonl_ids(&dispatched);
    let unique: HashSet<&String> = ids.iter().collect();
    let mut dead = HashSet::new();
    for t in topology
        .topics()
        .iter()
        .filter(|t| t.role == fleetstream_core::TopicRole::DeadLetter)
    {
        for r in read_topic_to_end(&conn, &t.name, Duration::from_secs(30)).unwrap() {
            dead.insert(
                String::from_utf8(r.header(headers::MESSAGE_ID).unwrap().to_vec()).unwrap(),
            );
        }
    }
    let missing: Vec<u64> = (0..n)
        .filter(|s| {
            let id = MessageId { run, seq: *s }.to_string();
            !unique.contains(&id) && !dead.contains(&id)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} lost, e.g. {:?} ({prefix})",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    // Repeated effects can only come from the batches in flight at the kill (effect written,
    // completion not yet recorded): at most a few batches.
    let mut counts: BTreeMap<&String, u32> = BTreeMap::new();
    for id in &ids {
        *counts.entry(id).or_default() += 1;
    }
    let repeated = counts.values().filter(|c| **c > 1).count();
    assert!(
        repeated <= 3 * 200,
        "{repeated} ids had more than one effect"
    );
}

/// A free loopback port (bound then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// producer -> Kafka -> worker (Lambda transport, AWS SDK) -> `dispatch serve` (Lambda's Invoke
/// API) -> JSON-lines target: every id dispatched exactly once, offsets committed.
#[tokio::test(flavor = "multi_thread")]
async fn worker_invokes_the_dispatcher_through_the_lambda_api() {
    let TopologyFixture {
        cluster,
        dir,
        path: topology_path,
        topology,
        prefix: _,
    } = topology_fixture(fleetstream::DOMAIN_TOPOLOGY).await;
    let conn = cluster.connection().clone();

    let port = free_port();
    let serve_state = dir.path().join("serve");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_fleetstream"))
        .args([
            "dispatch",
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--state-dir")
        .arg(&serve_state)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));

    let n = 3_000u64;
    let run = 0x1a4b_u64;
    assert_eq!(produce_telemetry(&conn, &topology, run, n), n);
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut worker = spawn_worker_with(
        &conn.bootstrap,
        &topology_path,
        &dir.path().join("worker-state"),
        &dir.path().join("w.json"),
        &["--transport", "lambda", "--lambda-endpoint", &endpoint],
    );
    let group = topology.groups().into_keys().next().unwrap();
    let topics: Vec<String> = topology.source_topics().map(|t| t.name.clone()).collect();
    let drained = wait_until(Duration::from_secs(90), || {
        group_lag(&conn, &group, &topics, Duration::from_secs(5))
            .is_ok_and(|l| l.iter().all(|p| p.lag == 0))
    });
    Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(worker.wait().unwrap().success());
    serve.kill().unwrap();
    serve.wait().unwrap();
    assert!(drained, "the worker did not commit everything");

    let ids = jsonl_ids(&serve_state.join("dispatched.jsonl"));
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), unique.len(), "an id was dispatched twice");
    for seq in 0..n {
        assert!(
            unique.contains(&MessageId { run, seq }.to_string()),
            "id {seq} not dispatched"
        );
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("w.json")).unwrap()).unwrap();
    assert_eq!(summary["metrics"]["dispatched"].as_u64(), Some(n));
}

fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// `--metrics-addr` serves Prometheus text with the dispatched counter and the lag gauge;
/// `--otlp-endpoint` gets a `process` and a `dispatch` span for each sampled record, sent when
/// the worker stops on SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn worker_exports_metrics_lag_and_spans() {
    let TopologyFixture {
        cluster,
        dir,
        path: topology_path,
        topology,
        prefix: _,
    } = topology_fixture(fleetstream::DOMAIN_TOPOLOGY).await;
    let conn = cluster.connection().clone();
    assert_eq!(produce_telemetry(&conn, &topology, 9, 500), 500);

    let port = free_port();
    let collector = fleetstream_obs::collector::Collector::start();
    let mut worker = spawn_worker_with(
        &conn.bootstrap,
        &topology_path,
        &dir.path().join("state"),
        &dir.path().join("w.json"),
        &[
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
            "--otlp-endpoint",
            collector.url(),
        ],
    );
    let mut last = String::new();
    let ok = wait_until(Duration::from_secs(60), || {
        last = scrape(port);
        last.contains("fleetstream_worker_dispatched_total 500")
            && last.contains("fleetstream_worker_lag{topic=")
            && last.contains("fleetstream_worker_e2e_latency_seconds_bucket")
    });
    Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(worker.wait().unwrap().success());
    assert!(ok, "metrics never showed the work:\n{last}");

    // produce_telemetry samples every tenth of its 500 records (run 9).
    let spans = collector.spans();
    for (service, name) in [
        ("fleetstream-worker", "process"),
        ("fleetstream-worker", "dispatch"),
    ] {
        let parents: std::collections::BTreeSet<u64> = spans
            .iter()
            .filter(|s| s.service == service && s.name.starts_with(name))
            .map(|s| {
                let seq = s.parent.expect("a child of the producer's span") - 1;
                assert_eq!(
                    fleetstream_testkit::test_traceparent(9, seq),
                    format!("00-{:032x}-{:016x}-01", s.trace_id, seq + 1),
                    "{s:?}"
                );
                seq
            })
            .collect();
        let want: std::collections::BTreeSet<u64> = (0..500).step_by(10).collect();
        assert_eq!(parents, want, "{name} spans");
    }
}

/// An in-process worker whose routes name a `kafka` target fans every record out to that topic.
#[tokio::test(flavor = "multi_thread")]
async fn in_process_worker_fans_out_to_a_kafka_target() {
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let (_, text) = unique_topology(fleetstream::DOMAIN_TOPOLOGY);
    let topology_path = dir.path().join("topology.toml");
    std::fs::write(&topology_path, &text).unwrap();
    let topology = Topology::from_toml_str(&text).unwrap();
    // A second copy of the topology only provides the (empty) fan-out topic.
    apply(&cluster, &topology).await;
    let (_, sink) = apply_unique(&cluster, fleetstream::DOMAIN_TOPOLOGY).await;
    let fanout = sink.source_topics().next().unwrap().name.clone();
    let routes = dir.path().join("routes.toml");
    std::fs::write(
        &routes,
        format!(
            "default = [\"fanout\"]\n[targets.fanout]\nkind = \"kafka\"\ntopic = \"{fanout}\"\n"
        ),
    )
    .unwrap();
    let conn = cluster.connection().clone();
    let (n, run) = (500u64, 0xfa_u64);
    assert_eq!(produce_telemetry(&conn, &topology, run, n), n);

    let routes_arg = routes.to_string_lossy().into_owned();
    let mut worker = spawn_worker_with(
        &conn.bootstrap,
        &topology_path,
        &dir.path().join("state"),
        &dir.path().join("w.json"),
        &["--routes", &routes_arg],
    );
    let group = topology.groups().into_keys().next().unwrap();
    let topics: Vec<String> = topology.source_topics().map(|t| t.name.clone()).collect();
    let drained = wait_until(Duration::from_secs(90), || {
        group_lag(&conn, &group, &topics, Duration::from_secs(5))
            .is_ok_and(|l| l.iter().all(|p| p.lag == 0))
    });
    Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(worker.wait().unwrap().success());
    assert!(drained, "the worker did not commit everything");

    let out = read_topic_to_end(&conn, &fanout, Duration::from_secs(30)).unwrap();
    let ids: HashSet<String> = out
        .iter()
        .map(|r| String::from_utf8(r.header(headers::MESSAGE_ID).unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(out.len() as u64, n, "one record per event in {fanout}");
    for seq in 0..n {
        assert!(
            ids.contains(&MessageId { run, seq }.to_string()),
            "id {seq}"
        );
    }
}

/// A worker whose source topics are not on the cluster says so and exits, instead of joining the
/// group and waiting for partitions that never come.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_without_its_source_topics_exits_naming_them() {
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let (prefix, text) = unique_topology(fleetstream::DOMAIN_TOPOLOGY);
    let topology = dir.path().join("topology.toml");
    std::fs::write(&topology, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fleetstream"))
        .args(["worker", "--quiet", "--bootstrap"])
        .arg(&cluster.connection().bootstrap)
        .arg("--topology")
        .arg(&topology)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{prefix}-mt-c400")) && stderr.contains("topics apply"),
        "{stderr}"
    );
}

/// Issue 12, defect 5: `--dispatch-timeout 0s` was accepted (every HTTP dispatch then gave up
/// before its answer). A bad worker setting is refused before any connection, naming its flag
/// and variable, with exit code 2 like every other bad flag.
#[test]
fn zero_dispatch_timeout_is_refused_naming_the_flag() {
    for (args, env, flag) in [
        (
            vec!["--dispatch-timeout", "0s"],
            None,
            "--dispatch-timeout (FLEETSTREAM_DISPATCH_TIMEOUT)",
        ),
        (
            vec![],
            Some(("FLEETSTREAM_DISPATCH_TIMEOUT", "0s")),
            "--dispatch-timeout (FLEETSTREAM_DISPATCH_TIMEOUT)",
        ),
        (
            vec!["--key-lanes", "0"],
            None,
            "--key-lanes (FLEETSTREAM_KEY_LANES)",
        ),
        (
            vec!["--max-record-age", "0s"],
            None,
            "--max-record-age (FLEETSTREAM_MAX_RECORD_AGE)",
        ),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fleetstream"));
        // Port 1 on loopback: nothing listens, and nothing may be tried before the check.
        command.args([
            "worker",
            "--quiet",
            "--transport",
            "http",
            "--bootstrap",
            "127.0.0.1:1",
        ]);
        command
            .args(["--dispatch-url", "http://127.0.0.1:1"])
            .args(&args);
        if let Some((k, v)) = env {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?} {env:?}: {stderr}");
    }
}
