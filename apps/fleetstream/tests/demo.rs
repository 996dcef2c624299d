//! The walking skeleton end to end: producer -> Kafka -> group of workers -> dispatcher, and the
//! id ledger. Embedded cluster by default; a real broker with FLEETSTREAM_TEST_BOOTSTRAP.

use fleetstream::cli::{ClusterArgs, DemoArgs, TopologyArgs};
use fleetstream_testkit::{unique_topology, TEST_BOOTSTRAP};
use std::process::Command;
use std::time::Duration;

fn demo_args(topology_file: &std::path::Path, json: &std::path::Path) -> DemoArgs {
    DemoArgs {
        cluster: ClusterArgs {
            bootstrap: std::env::var(TEST_BOOTSTRAP)
                .ok()
                .filter(|b| !b.trim().is_empty()),
            embedded_brokers: 3,
            security_protocol: "plaintext".into(),
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
        },
        topology: TopologyArgs {
            topology: topology_file.display().to_string(),
        },
        duration: Duration::from_secs(3),
        rate: 2_000.0,
        workers: 3,
        trucks: 500,
        seed: 7,
        key_strategy: None,
        partitioner: "murmur2_random".into(),
        routes: None,
        poison_rate: 0.0,
        drain_timeout: Duration::from_secs(60),
        json: Some(json.to_path_buf()),
        quiet: true,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_accounts_for_every_message_id() {
    let dir = tempfile::tempdir().unwrap();
    let (_, text) = unique_topology(fleetstream::DOMAIN_TOPOLOGY);
    let topo = dir.path().join("topology.toml");
    std::fs::write(&topo, text).unwrap();
    let json = dir.path().join("s.json");

    let s = fleetstream::demo::run(demo_args(&topo, &json))
        .await
        .unwrap();
    assert!(s.produced > 0);
    assert_eq!(s.acked, s.produced);
    assert_eq!(s.lost, 0, "{:?}", s.lost_sample);
    assert_eq!(s.dispatched + s.dead_lettered, s.acked);
    assert_eq!(s.extra_effects, 0);
    assert!(s.drained);
    // The hot codes 300-303 go to mt-c400 and spread over several of its partitions.
    let c400: u64 = s
        .per_partition
        .iter()
        .filter(|(t, _)| t.ends_with("mt-c400"))
        .flat_map(|(_, p)| p.values())
        .sum();
    let c300: u64 = s
        .per_partition
        .iter()
        .filter(|(t, _)| t.ends_with("mt-c300"))
        .flat_map(|(_, p)| p.values())
        .sum();
    assert_eq!(c400 + c300, s.acked);
    assert!(
        c400 > 3 * c300,
        "80/20 skew puts most traffic on mt-c400: {c400} vs {c300}"
    );
    let used = s
        .per_partition
        .iter()
        .find(|(t, _)| t.ends_with("mt-c400"))
        .unwrap()
        .1
        .len();
    assert!(
        used >= 6,
        "composite keys should spread hot codes, used {used} partitions"
    );

    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for key in [
        "produced",
        "acked",
        "consumed",
        "dispatched",
        "duplicates_suppressed",
        "dead_lettered",
        "lost",
        "rate_achieved",
        "per_partition",
    ] {
        assert!(written.get(key).is_some(), "summary lacks {key}");
    }
    for key in ["p50", "p99", "max"] {
        assert!(
            written["e2e_latency_ms"].get(key).is_some(),
            "e2e_latency_ms lacks {key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hybrid_demo_gives_high_priority_its_own_group() {
    let dir = tempfile::tempdir().unwrap();
    let (prefix, text) = unique_topology(fleetstream::HYBRID_TOPOLOGY);
    let topo = dir.path().join("topology.toml");
    std::fs::write(&topo, text).unwrap();
    let mut args = demo_args(&topo, &dir.path().join("s.json"));
    args.workers = 1;
    let s = fleetstream::demo::run(args).await.unwrap();
    assert_eq!(s.lost, 0);
    assert_eq!(s.workers.len(), 2, "{:?}", s.workers);
    assert!(s
        .per_partition
        .contains_key(&format!("{prefix}-high_priority_events")));
}

/// Issue 4's demo criterion, small: every poison event ends up dead-lettered, nothing else
/// does, and nothing is lost.
#[tokio::test(flavor = "multi_thread")]
async fn poison_events_all_end_up_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let (_, text) = unique_topology(fleetstream::DOMAIN_TOPOLOGY);
    let topo = dir.path().join("topology.toml");
    std::fs::write(&topo, text).unwrap();
    let mut args = demo_args(&topo, &dir.path().join("s.json"));
    args.poison_rate = 0.01;
    let s = fleetstream::demo::run(args).await.unwrap();
    assert!(s.poison_injected >= 50, "{s:?}");
    assert!(
        s.producer_rejected > 0 && s.producer_rejected < s.poison_injected,
        "some poison has a valid code and reaches the workers: {s:?}"
    );
    assert_eq!(
        s.dead_lettered, s.poison_injected,
        "{:?}",
        s.dead_letter_reasons
    );
    assert_eq!(s.lost, 0);
    assert_eq!(
        s.dispatched + s.dead_lettered,
        s.acked + s.producer_rejected
    );
}

fn fleetstream() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fleetstream"))
}

#[test]
fn bad_configuration_fails_at_start_naming_the_key() {
    let out = fleetstream().args(["demo", "--rate=-5"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--rate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        fleetstream::DOMAIN_TOPOLOGY.replace("partitions = 12", "partitions = 0"),
    )
    .unwrap();
    let out = fleetstream()
        .args(["topics", "describe", "--topology"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("topics[0].partitions"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = fleetstream()
        .args(["demo", "--partitioner", "random"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--partitioner"));

    let out = fleetstream()
        .args(["demo", "--duration", "soon"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap rejects it with its usage code"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--duration"));
}

#[test]
fn embedded_cluster_is_announced_on_the_first_line() {
    let out = fleetstream().args(["topics", "apply"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .next()
            .unwrap()
            .starts_with("cluster: embedded librdkafka mock cluster"),
        "{stdout}"
    );
    assert!(stdout.contains("created   mt-c400"), "{stdout}");
}
