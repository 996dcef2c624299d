//! Readers under broker faults. These need the embedded cluster's fault hooks (librdkafka's
//! mock cluster takes a broker down and up), so they run on the embedded cluster even when
//! FLEETSTREAM_TEST_BOOTSTRAP names a real broker; the fault suite covers real brokers.

use fleetstream_kafka::{
    read_topic_to_end, ClusterHandle, DeliveryHandler, DeliveryReport, KafkaProducer, OutRecord,
    ProducerSettings,
};
use fleetstream_testkit::unique;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
struct Acks(AtomicU64);

impl DeliveryHandler for Acks {
    type Token = ();
    fn delivered(&self, _: (), r: DeliveryReport<'_>) {
        if r.result.is_ok() {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A 3-broker embedded cluster with a 6-partition topic (two partitions led by each broker)
/// holding `n` records.
fn cluster_with_records(n: u64) -> (ClusterHandle, String) {
    let cluster = ClusterHandle::embedded(3).expect("embedded cluster");
    let topic = unique("dead-letters");
    cluster
        .embedded_cluster()
        .expect("embedded")
        .create_topic(&topic, 6, 1)
        .expect("create topic");
    let acks = Arc::new(Acks::default());
    let producer = KafkaProducer::new(
        &ProducerSettings::new(cluster.connection().clone()),
        acks.clone(),
    )
    .expect("producer");
    for i in 0..n {
        let key = format!("truck-{i}");
        let rec = OutRecord {
            topic: &topic,
            key: Some(key.as_bytes()),
            payload: b"{}",
            headers: &[],
            timestamp_ms: None,
        };
        producer.send(rec, ()).map_err(|(e, _)| e).expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    assert_eq!(acks.0.load(Ordering::SeqCst), n);
    (cluster, topic)
}

/// Issue 12, defect 3: reading the dead-letter topics back treated librdkafka's routine error
/// for one dead broker (transport failure, all brokers down) as fatal, so the demo's accounting
/// aborted with no summary. With a broker down, then up again, the read finishes and misses
/// nothing.
#[test]
fn reading_dead_letters_rides_through_a_broker_down_then_up() {
    let n = 600;
    let (cluster, topic) = cluster_with_records(n);
    let embedded = cluster.embedded_cluster().expect("embedded");
    embedded.broker_down(2).expect("broker down");
    let reader = std::thread::spawn({
        let (conn, topic) = (cluster.connection().clone(), topic.clone());
        move || read_topic_to_end(&conn, &topic, Duration::from_secs(60))
    });
    // Long enough for the reader to meet the dead broker (a refused connection, a request to
    // the leader it cannot reach), then the broker comes back.
    std::thread::sleep(Duration::from_secs(3));
    embedded.broker_up(2).expect("broker up");
    let records = reader
        .join()
        .expect("reader thread")
        .expect("a broker down then up must not end the read");
    assert_eq!(records.len() as u64, n);
}

/// A read that cannot finish by its deadline (the broker leading some partitions stays down)
/// fails naming what it could not read, rather than returning a partial count.
#[test]
fn a_read_that_cannot_finish_names_what_is_missing() {
    let (cluster, topic) = cluster_with_records(60);
    cluster
        .embedded_cluster()
        .expect("embedded")
        .broker_down(2)
        .expect("broker down");
    let err = read_topic_to_end(cluster.connection(), &topic, Duration::from_secs(6))
        .expect_err("a partition is unreachable")
        .to_string();
    assert!(err.contains(&format!("{topic}/")), "{err}");
}
