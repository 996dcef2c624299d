//! `fleetstream audit` across processes: a producer records its acked ids, a worker (another
//! process) dispatches them to a jsonl sink and dead-letters the poison, and the audit (a third)
//! accounts for every id. Then the sink is damaged as a fault would: one effect gone, one applied
//! twice, and the audit must name both and exit 1. On the embedded cluster this test process
//! hosts, or on FLEETSTREAM_TEST_BOOTSTRAP.

use fleetstream_testkit::{topology_fixture, TopologyFixture};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn fleetstream() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fleetstream"));
    for (k, _) in std::env::vars() {
        if k.starts_with("FLEETSTREAM_") {
            c.env_remove(k);
        }
    }
    c
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn audit(
    bootstrap: &str,
    topology: &Path,
    acked: &Path,
    sink: &Path,
    json: &Path,
    wait: &str,
) -> Output {
    fleetstream()
        .args(["audit", "--bootstrap", bootstrap, "--topology"])
        .arg(topology)
        .arg("--acked-ids")
        .arg(acked)
        .arg("--effects")
        .arg(format!("archive={}", sink.display()))
        .args(["--wait", wait, "--json"])
        .arg(json)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_accounts_for_every_acked_id_and_names_a_lost_and_a_doubled_one() {
    let TopologyFixture {
        cluster,
        dir,
        path: topology,
        ..
    } = topology_fixture(fleetstream::DOMAIN_TOPOLOGY).await;
    let bootstrap = cluster.connection().bootstrap.clone();
    let acked = dir.path().join("acked");
    let state = dir.path().join("state");

    let out = fleetstream()
        .args([
            "produce",
            "--quiet",
            "--bootstrap",
            &bootstrap,
            "--topology",
        ])
        .arg(&topology)
        .args(["--count", "2000", "--rate", "0", "--poison-rate", "0.02"])
        .arg("--acked-ids")
        .arg(acked.join("run-1.acked"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("acked ids recorded"),
        "{}",
        show(&out)
    );
    // A worker in its own process, in-process dispatcher writing every code to a jsonl sink.
    let out = fleetstream()
        .args(["worker", "--quiet", "--bootstrap", &bootstrap, "--topology"])
        .arg(&topology)
        .arg("--state-dir")
        .arg(&state)
        .args(["--duration", "15s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let sink = state.join("dispatched.jsonl");
    assert!(
        sink.is_file(),
        "no sink at {}: {}",
        sink.display(),
        show(&out)
    );

    let json = dir.path().join("audit.json");
    let out = audit(&bootstrap, &topology, &acked, &sink, &json, "90s");
    assert!(out.status.success(), "{}", show(&out));
    let r: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["acked"], 2000, "{r}");
    assert_eq!(
        (r["lost"].as_u64(), r["unseen"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
    assert_eq!(r["duplicated"], 0, "{r}");
    assert_eq!(r["lag"], 0, "{r}");
    let dead = r["dead_lettered"].as_u64().unwrap();
    assert!(dead >= 30, "2% poison must be dead-lettered: {r}");
    assert_eq!(r["dispatched"].as_u64().unwrap() + dead, 2000, "{r}");

    // Damage the sink: drop the first effect, apply the second twice.
    let text = std::fs::read_to_string(&sink).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let lost_id: Value = serde_json::from_str(lines[0]).unwrap();
    let damaged = format!("{}\n{}\n", lines[1..].join("\n"), lines[1]);
    std::fs::write(&sink, damaged).unwrap();
    // Drained (lag 0): a missing id is lost, at once.
    let out = audit(&bootstrap, &topology, &acked, &sink, &json, "0s");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let r: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["lost"], 1, "{r}");
    assert_eq!(r["missing_sample"][0], lost_id["message_id"], "{r}");
    assert_eq!(r["duplicated"], 1, "{r}");
    assert_eq!(r["anomalies"]["lost-write"], 1, "{r}");
    assert_eq!(r["anomalies"]["duplicate"], 1, "{r}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 lost"),
        "{}",
        show(&out)
    );
}

#[test]
fn audit_without_bootstrap_or_with_a_bad_file_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let acked = dir.path().join("x.acked");
    std::fs::write(&acked, "not an acked-ids file\n").unwrap();
    let out = fleetstream()
        .args(["audit", "--acked-ids"])
        .arg(&acked)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--bootstrap"),
        "{}",
        show(&out)
    );
    let out = fleetstream()
        .args(["audit", "--bootstrap", "127.0.0.1:9", "--acked-ids"])
        .arg(&acked)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an acked-ids file"),
        "{}",
        show(&out)
    );
}
