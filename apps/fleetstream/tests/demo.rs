//! The walking skeleton end to end: producer -> Kafka -> group of workers -> dispatcher, and the
//! id ledger. Embedded cluster by default; a real broker with FLEETSTREAM_TEST_BOOTSTRAP.

use fleetstream::cli::{ClusterArgs, DemoArgs, TopologyArgs};
use fleetstream_obs::collector::{Collector, ReceivedSpan, KIND_CONSUMER, KIND_PRODUCER};
use fleetstream_testkit::{unique_topology, TEST_BOOTSTRAP};
use std::collections::BTreeMap;
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
            ssl_certificate_location: None,
            ssl_key_location: None,
            ssl_key_password: None,
            aws_region: None,
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
        otlp: Default::default(),
        sampling: Default::default(),
        quiet: true,
    }
}

/// With an OTLP endpoint, each sampled message is one trace across three services: the
/// producer's `send` span (send to ack), then the worker's `process` span and the dispatcher's
/// `dispatch` span as its children, all naming the same partition and offset. Poison that
/// reaches a worker ends in an error span, and nothing else is exported.
#[tokio::test(flavor = "multi_thread")]
async fn demo_traces_sampled_messages_across_three_services() {
    let collector = Collector::start();
    let dir = tempfile::tempdir().unwrap();
    let (_, text) = unique_topology(fleetstream::DOMAIN_TOPOLOGY);
    let topo = dir.path().join("topology.toml");
    std::fs::write(&topo, text).unwrap();
    let mut args = demo_args(&topo, &dir.path().join("s.json"));
    args.duration = Duration::from_secs(2);
    args.rate = 1_500.0;
    args.poison_rate = 0.2;
    args.sampling.trace_sample_ratio = 0.05;
    args.otlp.otlp_endpoint = Some(collector.url().to_string());
    let s = fleetstream::demo::run(args).await.unwrap();
    assert_eq!(s.lost, 0, "{:?}", s.lost_sample);

    let spans = collector.spans();
    let of = |service: &str| -> Vec<&ReceivedSpan> {
        spans.iter().filter(|x| x.service == service).collect()
    };
    let (sends, processes, dispatches) = (
        of("fleetstream-producer"),
        of("fleetstream-worker"),
        of("fleetstream-dispatcher"),
    );
    // The ratio is applied per message by a hash of its sequence number.
    let share = sends.len() as f64 / s.acked as f64;
    assert!(
        (0.03..0.07).contains(&share),
        "{} send spans for {} acked messages",
        sends.len(),
        s.acked
    );
    let by_id: BTreeMap<u64, &ReceivedSpan> = sends.iter().map(|x| (x.span_id, *x)).collect();
    for send in &sends {
        assert_eq!(send.kind, KIND_PRODUCER);
        assert_eq!(send.parent, None, "the producer starts each trace");
        assert!(send.name.starts_with("send "), "{send:?}");
        assert!(send.end_ns >= send.start_ns);
        assert!(
            send.attributes.contains_key("messaging.kafka.offset"),
            "acked: {send:?}"
        );
    }
    let mut dead_lettered = 0;
    for child in processes.iter().chain(&dispatches) {
        assert_eq!(child.kind, KIND_CONSUMER);
        let send = child
            .parent
            .and_then(|p| by_id.get(&p))
            .unwrap_or_else(|| panic!("no send span is the parent of {child:?}"));
        assert_eq!(child.trace_id, send.trace_id);
        for key in [
            "messaging.destination.name",
            "messaging.destination.partition.id",
            "messaging.kafka.offset",
        ] {
            assert_eq!(child.attributes[key], send.attributes[key], "{key}");
        }
        if child.error.is_some() {
            dead_lettered += 1;
        }
    }
    // Every sampled message was processed by a worker; those it did not dead-letter were
    // dispatched, with the message id the producer gave them.
    for send in &sends {
        let processed: Vec<_> = processes
            .iter()
            .filter(|p| p.parent == Some(send.span_id))
            .collect();
        assert!(!processed.is_empty(), "never processed: {send:?}");
        if processed.iter().all(|p| p.error.is_none()) {
            // A redelivery adds a `duplicate` span; one of them dispatched it.
            let d = dispatches
                .iter()
                .find(|d| {
                    d.parent == Some(send.span_id)
                        && d.attributes["fleetstream.outcome"] == "dispatched"
                })
                .unwrap_or_else(|| panic!("never dispatched: {send:?}"));
            assert_eq!(
                d.attributes["messaging.message.id"],
                send.attributes["messaging.message.id"]
            );
        } else {
            let p = processed.iter().find(|p| p.error.is_some()).unwrap();
            assert_eq!(p.attributes["fleetstream.outcome"], "dead_letter");
        }
    }
    eprintln!(
        "{} sent, {} processed ({dead_lettered} dead-lettered), {} dispatched spans",
        sends.len(),
        processes.len(),
        dispatches.len()
    );
    assert!(
        dead_lettered > 0,
        "20% poison among ~150 sampled messages: some reach a worker and are dead-lettered"
    );
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
