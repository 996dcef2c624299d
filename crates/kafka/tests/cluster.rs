//! Integration tests of the Kafka layer: on the embedded cluster by default, on a real broker
//! when FLEETSTREAM_TEST_BOOTSTRAP is set.

use fleetstream_core::{crc32_partition, murmur2_partition, Partitioner, Topology};
use fleetstream_kafka::{
    Admin, DeliveryHandler, DeliveryReport, KafkaProducer, OutRecord, ProducerSettings,
};
use fleetstream_testkit::{
    apply, apply_unique, cluster, one_topic_topology, unique, unique_topology, wait_until,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DOMAIN: &str = include_str!("../../../config/topology.toml");
const HYBRID: &str = include_str!("../../../config/topology-hybrid.toml");

#[tokio::test(flavor = "multi_thread")]
async fn apply_creates_the_topology_then_finds_it_in_place() {
    let cluster = cluster();
    let (prefix, text) = unique_topology(HYBRID);
    let topology = Topology::from_toml_str(&text).unwrap();
    let admin = Admin::new(&cluster).unwrap();

    let first = admin.apply(&topology).await.unwrap();
    assert_eq!(first.created.len(), topology.topics().len(), "{first:?}");
    assert!(first.drift.is_empty(), "{first:?}");

    let second = admin.apply(&topology).await.unwrap();
    assert!(second.created.is_empty(), "{second:?}");
    assert_eq!(
        second.unchanged.len(),
        topology.topics().len(),
        "{second:?}"
    );

    let names: Vec<String> = topology.topics().iter().map(|t| t.name.clone()).collect();
    let states = admin.describe(&names).await.unwrap();
    let hp = states
        .iter()
        .find(|s| s.name == format!("{prefix}-high_priority_events"))
        .unwrap();
    assert_eq!(hp.partitions, 4);
    let c400 = states
        .iter()
        .find(|s| s.name == format!("{prefix}-mt-c400"))
        .unwrap();
    assert_eq!(c400.partitions, 12);
    let brokers = admin.broker_count().unwrap();
    assert_eq!(
        c400.replication_factor,
        usize::from(topology.replication_for(brokers).replication_factor)
    );
    if !cluster.is_embedded() {
        assert_eq!(
            c400.min_insync_replicas,
            Some(topology.replication_for(brokers).min_insync_replicas)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_reports_partition_drift_and_changes_nothing() {
    let cluster = cluster();
    let (_, text) = unique_topology(DOMAIN);
    let small =
        Topology::from_toml_str(&text.replace("partitions = 12", "partitions = 2")).unwrap();
    let wanted = Topology::from_toml_str(&text).unwrap();
    let admin = Admin::new(&cluster).unwrap();
    admin.apply(&small).await.unwrap();

    let report = admin.apply(&wanted).await.unwrap();
    let drift: Vec<_> = report
        .drift
        .iter()
        .filter(|d| d.setting == "partitions")
        .collect();
    assert_eq!(drift.len(), 1, "{report:?}");
    assert_eq!(
        (drift[0].wanted.as_str(), drift[0].actual.as_str()),
        ("12", "2")
    );
    let name = drift[0].topic.clone();
    let after = admin.describe(&[name]).await.unwrap();
    assert_eq!(
        after[0].partitions, 2,
        "apply must not alter an existing topic"
    );
}

#[derive(Default)]
struct Placements(Mutex<Vec<(Vec<u8>, i32, bool)>>);

impl DeliveryHandler for Placements {
    type Token = Vec<u8>;
    fn delivered(&self, key: Vec<u8>, report: DeliveryReport<'_>) {
        self.0
            .lock()
            .unwrap()
            .push((key, report.partition, report.result.is_ok()));
    }
}

/// The partitioner setting decides placement, and Kafka places keys exactly where
/// fleetstream-core predicts (murmur2 as the Java client, CRC32 as librdkafka's default).
#[tokio::test(flavor = "multi_thread")]
async fn broker_placement_matches_the_predicted_partition() {
    let cluster = cluster();
    let topic = unique("placement");
    let topology = one_topic_topology(&topic, 12);
    apply(&cluster, &topology).await;

    for partitioner in [Partitioner::Murmur2Random, Partitioner::ConsistentRandom] {
        let handler = Arc::new(Placements::default());
        let mut settings = ProducerSettings::new(cluster.connection().clone());
        settings.partitioner = partitioner;
        let producer = KafkaProducer::new(&settings, handler.clone()).unwrap();
        let keys: Vec<Vec<u8>> = (0..200)
            .map(|i| format!("{}-{}", 300 + i % 4, i % 12).into_bytes())
            .collect();
        for k in &keys {
            producer
                .send(
                    OutRecord {
                        topic: &topic,
                        key: Some(k),
                        payload: b"{}",
                        headers: &[],
                        timestamp_ms: None,
                    },
                    k.clone(),
                )
                .map_err(|(e, _)| e)
                .unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        assert!(wait_until(Duration::from_secs(10), || handler
            .0
            .lock()
            .unwrap()
            .len()
            == keys.len()));
        for (key, partition, ok) in handler.0.lock().unwrap().iter() {
            assert!(ok, "delivery failed for {key:?}");
            let expected = match partitioner {
                Partitioner::Murmur2Random => murmur2_partition(key, 12),
                Partitioner::ConsistentRandom => crc32_partition(key, 12),
            };
            assert_eq!(
                *partition as u32,
                expected,
                "{partitioner:?} key {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }
}

/// A run's clock starts only after librdkafka's first producer-id request (500 ms after the
/// client is created): waiting returns no earlier than that plus the margin, and a second wait
/// on the same, now older, producer returns at once.
#[test]
fn waiting_for_the_producer_id_covers_librdkafkas_first_request() {
    let cluster = cluster();
    let created = std::time::Instant::now();
    let producer = KafkaProducer::new_polled(
        &ProducerSettings::new(cluster.connection().clone()),
        Arc::new(Placements::default()),
    )
    .unwrap();
    producer.wait_for_producer_id(Duration::from_millis(100));
    let waited = created.elapsed();
    assert!(
        waited >= fleetstream_kafka::PRODUCER_ID_DELAY + Duration::from_millis(100),
        "{waited:?}"
    );
    let again = std::time::Instant::now();
    producer.wait_for_producer_id(Duration::from_millis(100));
    assert!(again.elapsed() < Duration::from_millis(500));
}

/// CPU time of the calling thread (user + system), from /proc (10 ms ticks).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("/proc/thread-self/stat");
    // Fields after the command name, which is in parentheses and may hold spaces: state is
    // field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')').expect("stat has a command") + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|x| x.parse().expect("numeric utime/stime"))
        .collect();
    Duration::from_millis((f[0] + f[1]) * 10)
}

/// Waiting for delivery reports is sleeping, not spinning. rust-rdkafka's `poll(t)` polls
/// librdkafka in whole milliseconds until `t` has passed, so the last fraction of every call was a
/// busy loop: here, about a third of the wall time (~150 ms of CPU) with `poll(1.5 ms)`.
#[test]
fn polling_waits_without_spinning() {
    let cluster = cluster();
    let producer = KafkaProducer::new_polled(
        &ProducerSettings::new(cluster.connection().clone()),
        Arc::new(Placements::default()),
    )
    .unwrap();
    producer.wait_for_producer_id(Duration::ZERO);
    let (cpu, started) = (thread_cpu(), std::time::Instant::now());
    for _ in 0..300 {
        producer.poll(Duration::from_micros(1500));
    }
    let (cpu, wall) = (thread_cpu() - cpu, started.elapsed());
    assert!(
        wall >= Duration::from_millis(450),
        "poll returned early: {wall:?}"
    );
    assert!(cpu < wall / 6, "{cpu:?} of CPU while waiting {wall:?}");
}

/// A flush that cannot finish (no broker) fails after its timeout and says how many records
/// are left.
#[test]
fn a_flush_that_cannot_finish_names_what_is_left() {
    let nowhere = fleetstream_kafka::ConnectionSettings::plaintext("127.0.0.1:1");
    let producer = KafkaProducer::new_polled(
        &ProducerSettings::new(nowhere),
        Arc::new(Placements::default()),
    )
    .unwrap();
    let record = OutRecord {
        topic: "nowhere",
        key: Some(b"k"),
        payload: b"{}",
        headers: &[],
        timestamp_ms: None,
    };
    producer
        .send(record, b"k".to_vec())
        .map_err(|(e, _)| e)
        .unwrap();
    let err = producer.flush(Duration::from_millis(300)).unwrap_err();
    assert!(err.to_string().contains("still unreported"), "{err}");
}

/// A flush returns once every record is reported, with no background thread serving reports.
#[tokio::test(flavor = "multi_thread")]
async fn a_flush_returns_with_every_record_reported() {
    let cluster = cluster();
    let (_, topology) = apply_unique(&cluster, DOMAIN).await;
    let topic = topology.topics()[0].name.clone();
    let handler = Arc::new(Placements::default());
    let producer = KafkaProducer::new_polled(
        &ProducerSettings::new(cluster.connection().clone()),
        handler.clone(),
    )
    .unwrap();
    for i in 0..100u32 {
        let key = i.to_string().into_bytes();
        let record = OutRecord {
            topic: &topic,
            key: Some(&key),
            payload: b"{}",
            headers: &[],
            timestamp_ms: None,
        };
        producer
            .send(record, key.clone())
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(producer.in_flight(), 0);
    let seen = handler.0.lock().unwrap();
    assert_eq!(seen.len(), 100);
    assert!(seen.iter().all(|(_, _, ok)| *ok), "{seen:?}");
}

/// Reading a topic the cluster does not have fails naming it, instead of reading nothing.
#[tokio::test(flavor = "multi_thread")]
async fn reading_a_missing_topic_fails_naming_it() {
    let cluster = cluster();
    let topic = unique("missing");
    let err =
        fleetstream_kafka::read_topic_to_end(cluster.connection(), &topic, Duration::from_secs(10))
            .unwrap_err()
            .to_string();
    assert!(
        err.contains(&topic) && err.contains("Unknown topic"),
        "{err}"
    );
    let err = fleetstream_kafka::group_lag(
        cluster.connection(),
        &unique("g"),
        std::slice::from_ref(&topic),
        Duration::from_secs(10),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains(&topic), "{err}");
}
