//! `fleetstream produce` at the command line: on the embedded cluster by default, on a real
//! broker when FLEETSTREAM_TEST_BOOTSTRAP is set (the scale-out test needs the real broker and
//! says why it skips otherwise).

use fleetstream_kafka::{group_lag, ConnectionSettings};
use fleetstream_testkit::{is_real_broker, unique_topology, TEST_BOOTSTRAP};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The binary with a clean `FLEETSTREAM_*` environment (so the caller's settings cannot leak).
fn fleetstream() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fleetstream"));
    for (k, _) in std::env::vars() {
        if k.starts_with("FLEETSTREAM_") {
            c.env_remove(k);
        }
    }
    c
}

fn bootstrap() -> Option<String> {
    std::env::var(TEST_BOOTSTRAP)
        .ok()
        .filter(|b| !b.trim().is_empty())
}

/// A topology with random topic names, and the cluster flag for the cluster under test.
struct Setup {
    dir: tempfile::TempDir,
    topology: PathBuf,
    prefix: String,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (prefix, text) = unique_topology(fleetstream::DOMAIN_TOPOLOGY);
        let topology = dir.path().join("topology.toml");
        std::fs::write(&topology, text).unwrap();
        Setup {
            dir,
            topology,
            prefix,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `fleetstream produce` on the cluster under test with this topology, quiet.
    fn produce(&self, extra: &[&str]) -> Command {
        let mut c = fleetstream();
        c.arg("produce").arg("--quiet");
        match bootstrap() {
            Some(b) => c.args(["--bootstrap", &b]),
            None => c.arg("--embedded"),
        };
        c.arg("--topology").arg(&self.topology).args(extra);
        c
    }
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn summary(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("summary lacks {key}: {v}"))
}

/// `--otlp-endpoint` with `--trace-sample-ratio 1`: one `send` span per message, each with the
/// partition and offset its delivery report gave, and ids that match the record's traceparent.
/// With no collector listening, the run still sends and acks everything and says why spans are
/// lost.
#[test]
fn send_spans_reach_the_collector_and_a_dead_collector_costs_no_record() {
    let collector = fleetstream_obs::collector::Collector::start();
    let s = Setup::new();
    let json = s.path("t.json");
    let args = [
        "--rate",
        "0",
        "--count",
        "300",
        "--trace-sample-ratio",
        "1",
        "--json",
    ];
    let out = ok(s
        .produce(&args)
        .arg(&json)
        .args(["--otlp-endpoint", collector.url()])
        .output()
        .unwrap());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("tracing: OpenTelemetry spans to http://"),
        "the run says where spans go"
    );
    assert_eq!(u(&summary(&json), "acked"), 300);
    let spans = collector.spans();
    assert_eq!(spans.len(), 300, "one per message, sent on exit");
    let mut ids = std::collections::BTreeSet::new();
    for span in &spans {
        assert_eq!(span.service, "fleetstream-producer");
        assert_eq!(span.parent, None);
        assert_eq!(span.error, None);
        assert!(
            span.attributes["messaging.kafka.offset"]
                .parse::<i64>()
                .unwrap()
                >= 0
        );
        assert!(
            span.attributes["messaging.destination.partition.id"]
                .parse::<i32>()
                .unwrap()
                >= 0
        );
        assert!(ids.insert(span.attributes["messaging.message.id"].clone()));
    }

    // Nothing listens on port 1.
    let out = ok(s
        .produce(&args)
        .arg(&json)
        .args(["--otlp-endpoint", "http://127.0.0.1:1"])
        .output()
        .unwrap());
    assert_eq!(u(&summary(&json), "acked"), 300);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spans not exported") || err.contains("ExportError"),
        "{err}"
    );
}

#[test]
fn count_is_exact_and_every_sent_message_is_acked() {
    let s = Setup::new();
    let json = s.path("m.json");
    ok(
        s.produce(&["--rate", "0", "--count", "3000", "--threads", "2", "--json"])
            .arg(&json)
            .output()
            .unwrap(),
    );
    let v = summary(&json);
    assert_eq!(u(&v, "sent"), 3000);
    assert_eq!(u(&v, "acked"), u(&v, "sent"));
    assert_eq!(u(&v, "failed"), 0);
    assert_eq!(u(&v, "rejected"), 0);
    for clock in ["ack_latency_ms", "ack_latency_intended_ms"] {
        for p in ["p50", "p99", "p999", "max"] {
            assert!(v[clock][p].is_number(), "{clock}.{p} missing: {v}");
        }
    }
    assert!(v["rate_achieved"].is_number());
    let per_partition: u64 = v["per_partition"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|p| p.as_object().unwrap().values())
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(per_partition, 3000);
}

#[test]
fn rejects_are_counted_and_written_to_the_reject_file() {
    let s = Setup::new();
    let (json, rejects) = (s.path("r.json"), s.path("rejects.jsonl"));
    ok(
        s.produce(&["--rate", "0", "--count", "2400", "--poison-rate", "0.05"])
            .arg("--reject-file")
            .arg(&rejects)
            .arg("--json")
            .arg(&json)
            .output()
            .unwrap(),
    );
    let v = summary(&json);
    let rejected = u(&v, "rejected");
    // 5% of 2,400 is 120 poison events, 4 of every 6 kinds have no code.
    assert_eq!(u(&v, "poison_injected"), 120);
    assert_eq!(rejected, 80);
    assert_eq!(u(&v, "sent") + rejected, 2400);
    assert_eq!(u(&v, "acked"), u(&v, "sent"));
    assert_eq!(u(&v, "rejects_written"), rejected);
    let lines = std::fs::read_to_string(&rejects).unwrap();
    assert_eq!(lines.lines().count() as u64, rejected);
    for line in lines.lines() {
        let l: Value = serde_json::from_str(line).unwrap();
        let reason = l["reason"].as_str().unwrap();
        assert!(v["rejected_by_class"][reason].as_u64().unwrap() > 0);
    }
}

#[test]
fn config_file_sits_under_environment_and_flags() {
    let s = Setup::new();
    let config = s.path("produce.toml");
    std::fs::write(
        &config,
        "rate = 0\ncount = 100\nkey-strategy = \"truck\"\npartitioner = \"consistent_random\"\n",
    )
    .unwrap();
    let run = |cmd: &mut Command, name: &str| -> Value {
        let json = s.path(name);
        ok(cmd
            .arg("--config")
            .arg(&config)
            .arg("--json")
            .arg(&json)
            .output()
            .unwrap());
        summary(&json)
    };
    // File over defaults.
    let v = run(&mut s.produce(&[]), "a.json");
    assert_eq!(u(&v, "sent"), 100);
    assert_eq!(v["key_strategy"], "truck");
    assert_eq!(v["partitioner"], "consistent_random");
    // Environment over the file.
    let v = run(s.produce(&[]).env("FLEETSTREAM_COUNT", "150"), "b.json");
    assert_eq!(u(&v, "sent"), 150);
    // Flags over the environment.
    let v = run(
        s.produce(&["--count", "170", "--key-strategy", "code"])
            .env("FLEETSTREAM_COUNT", "150"),
        "c.json",
    );
    assert_eq!(u(&v, "sent"), 170);
    assert_eq!(v["key_strategy"], "code");
}

#[test]
fn bad_configuration_names_its_key_and_exits_2() {
    let s = Setup::new();
    let config = s.path("bad.toml");
    let cases: [(&str, &[&str], &str); 8] = [
        ("rte = 5\n", &[], "unknown key `rte`"),
        ("count = \"lots\"\n", &[], "--count"),
        ("count = 10\nthreads = 0\n", &[], "--threads"),
        ("count = 10\n", &["--ramp", "fast"], "--ramp"),
        ("count = 10\n", &["--partitioner", "java"], "--partitioner"),
        ("count = 10\ntrace-sample-ratio = 2.0\n", &[], "--trace-sample-ratio"),
        (
            "count = 10\notlp-endpoint = \"https://collector:4318\"\n",
            &[],
            "--otlp-endpoint (FLEETSTREAM_OTLP_ENDPOINT): \"https://collector:4318\": this build exports over plain HTTP only",
        ),
        ("count = 10\n", &["--otlp-endpoint", "localhost:4318"], "is not an http:// URL"),
    ];
    for (file, flags, named) in cases {
        std::fs::write(&config, file).unwrap();
        let out = s
            .produce(flags)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file:?} {flags:?}: {err}");
        assert!(err.contains(named), "{file:?} {flags:?}: {err}");
    }
    // No cluster chosen at all.
    let out = fleetstream()
        .args(["produce", "--count", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--embedded"));
}

/// The notes' phase 2: a second producer process with the same configuration, same topics,
/// same keys. Both complete with every message acked and the topics hold exactly the sum.
#[test]
fn two_producer_processes_with_the_same_configuration_scale_out() {
    let Some(b) = bootstrap() else {
        eprintln!(
            "skipped: scale-out needs a real broker; run `scripts/kafka start` and set {TEST_BOOTSTRAP}=127.0.0.1:9092"
        );
        return;
    };
    assert!(is_real_broker());
    let s = Setup::new();
    let children: Vec<_> = (0..2)
        .map(|i| {
            let json = s.path(&format!("p{i}.json"));
            let child = s
                .produce(&["--rate", "4000", "--count", "20000", "--threads", "2"])
                .arg("--json")
                .arg(&json)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (child, json)
        })
        .collect();
    let mut acked = 0;
    let mut runs = Vec::new();
    for (child, json) in children {
        ok(child.wait_with_output().unwrap());
        let v = summary(&json);
        assert_eq!(u(&v, "sent"), 20_000);
        assert_eq!(u(&v, "acked"), u(&v, "sent"));
        assert_eq!(u(&v, "failed"), 0);
        acked += u(&v, "acked");
        runs.push(v["run_id"].as_str().unwrap().to_string());
    }
    assert_ne!(runs[0], runs[1], "each process has its own run id");
    let topics = vec![
        format!("{}-mt-c400", s.prefix),
        format!("{}-mt-c300", s.prefix),
    ];
    let lag = group_lag(
        &ConnectionSettings::plaintext(b),
        &format!("{}-audit", s.prefix),
        &topics,
        Duration::from_secs(30),
    )
    .unwrap();
    let written: i64 = lag.iter().map(|p| p.high_watermark).sum();
    assert_eq!(written as u64, acked, "{lag:?}");
}

#[test]
fn json_lines_from_stdin_are_sent_and_bad_lines_rejected() {
    use std::io::Write;
    let s = Setup::new();
    let (json, rejects) = (s.path("s.json"), s.path("rejects.jsonl"));
    let mut child = s
        .produce(&["--source", "stdin", "--rate", "0"])
        .arg("--reject-file")
        .arg(&rejects)
        .arg("--json")
        .arg(&json)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for i in 0..50 {
            writeln!(
                stdin,
                r#"{{"truck_id":"TRK-{i:06}","codigo":{},"ts":{i}}}"#,
                300 + i % 7
            )
            .unwrap();
        }
        writeln!(stdin, r#"{{"truck_id":"TRK-000001","codigo":null}}"#).unwrap();
        writeln!(stdin, "garbage").unwrap();
    }
    ok(child.wait_with_output().unwrap());
    let v = summary(&json);
    assert_eq!(
        (u(&v, "sent"), u(&v, "acked"), u(&v, "rejected")),
        (50, 50, 2)
    );
    assert_eq!(std::fs::read_to_string(rejects).unwrap().lines().count(), 2);
}

/// `--metrics-addr` serves the documented metric names, and `POST /rate` changes the rate of
/// the running producer (seen in the summary's final target rate).
#[test]
fn metrics_endpoint_serves_prometheus_text_and_changes_the_rate() {
    use std::io::{BufRead, BufReader, Read, Write};
    let s = Setup::new();
    let json = s.path("x.json");
    let mut child = s
        .produce(&[
            "--rate",
            "200",
            "--duration",
            "4s",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .arg("--json")
        .arg(&json)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "no metrics line");
        if let Some(rest) = line.strip_prefix("metrics on http://") {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    let http = |request: &str| {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        write!(c, "{request} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut body = String::new();
        c.read_to_string(&mut body).unwrap();
        body
    };
    let metrics = http("GET /metrics");
    for name in [
        fleetstream_obs::producer::SENT_TOTAL,
        fleetstream_obs::producer::ACKED_TOTAL,
        fleetstream_obs::producer::QUEUE_DEPTH,
        fleetstream_obs::producer::RATE_TARGET,
    ] {
        assert!(
            metrics.contains(&format!("\n{name}")),
            "{name} missing:\n{metrics}"
        );
    }
    assert!(metrics.contains(
        "fleetstream_producer_ack_latency_seconds_bucket{clock=\"intended\",le=\"+Inf\"}"
    ));
    assert!(http("POST /rate?value=300").starts_with("HTTP/1.1 200"));
    assert!(http("POST /rate?value=-1").starts_with("HTTP/1.1 400"));
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success(), "{rest}");
    let v = summary(&json);
    assert_eq!(v["rate_target"].as_f64(), Some(300.0));
    assert_eq!(u(&v, "acked"), u(&v, "sent"));
}

/// Issue 12, defect 4: one input line over the client's record limit (librdkafka's
/// `message.max.bytes`, 1,000,000 bytes) ended the run with `MessageSizeTooLarge`; the lines
/// after it were dropped and no summary was written. It is a rejected event of class
/// `oversize` (written whole to the reject file) and the run goes on.
#[test]
fn oversize_line_is_rejected_and_the_run_goes_on() {
    let s = Setup::new();
    let (input, json, rejects) = (
        s.path("in.jsonl"),
        s.path("s.json"),
        s.path("rejects.jsonl"),
    );
    let line = |i: u32| {
        format!(
            r#"{{"truck_id":"TRK-{i:06}","codigo":{},"ts":{i}}}"#,
            300 + i % 7
        )
    };
    let big = format!(
        r#"{{"truck_id":"TRK-000099","codigo":301,"ts":99,"padding":"{}"}}"#,
        "x".repeat(1_200_000)
    );
    let mut text = line(0) + "\n";
    text += &big;
    text += "\n";
    for i in 1..=20 {
        text += &(line(i) + "\n");
    }
    std::fs::write(&input, text).unwrap();
    let out = s
        .produce(&["--rate", "0"])
        .arg("--source")
        .arg(format!("file:{}", input.display()))
        .arg("--reject-file")
        .arg(&rejects)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    ok(out);
    let v = summary(&json);
    assert_eq!((u(&v, "sent"), u(&v, "acked")), (21, 21), "{v}");
    assert_eq!(u(&v, "failed"), 0, "{v}");
    assert_eq!(u(&v, "rejected"), 1, "{v}");
    assert_eq!(v["rejected_by_class"]["oversize"], 1, "{v}");
    assert_eq!(u(&v, "rejects_written"), 1, "{v}");
    let lines = std::fs::read_to_string(&rejects).unwrap();
    let rejected: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rejected.len(), 1, "{lines}");
    assert_eq!(rejected[0]["reason"], "oversize");
    assert_eq!(rejected[0]["bytes"], big.len() as u64);
    assert!(rejected[0]["message_id"]
        .as_str()
        .is_some_and(|m| m.starts_with(v["run_id"].as_str().unwrap())));
}

/// Issue 12, defect 5: configuration a run cannot use exits 2 naming the flag and what it
/// accepts, before any I/O. `--bootstrap 127.0.0.1:99999` used to wrap to port 34463, and
/// `--rate -1` was refused by the argument parser as an unknown argument `-1`.
#[test]
fn bad_bootstrap_and_negative_numbers_are_named_and_exit_2() {
    let cases: [(&[&str], &[&str]); 6] = [
        (
            &["--bootstrap", "127.0.0.1:99999"],
            &["--bootstrap", "127.0.0.1:99999", "1..=65535"],
        ),
        (
            &["--bootstrap", "127.0.0.1:0"],
            &["--bootstrap", "127.0.0.1:0"],
        ),
        (
            &["--bootstrap", "b-1:9092,,b-2:9092"],
            &["--bootstrap", "empty"],
        ),
        (&["--bootstrap", ":9092"], &["--bootstrap", "\":9092\""]),
        (
            &["--bootstrap", "b-1"],
            &["--bootstrap", "\"b-1\"", "host:port"],
        ),
        (&["--embedded", "--rate", "-1"], &["--rate", "-1", ">= 0"]),
    ];
    for (flags, named) in cases {
        let out = fleetstream()
            .args(["produce", "--quiet", "--count", "5"])
            .args(flags)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        for n in named {
            assert!(err.contains(n), "{flags:?} should name {n:?}: {err}");
        }
    }
}
