//! Worker integration tests: embedded cluster by default, a real broker with
//! FLEETSTREAM_TEST_BOOTSTRAP.

use fleetstream_consumer::{InProcess, Transport, Worker, WorkerConfig, WorkerMetrics};
use fleetstream_core::MessageId;
use fleetstream_dispatcher::idempotency::MemoryStore;
use fleetstream_dispatcher::{Dispatcher, RoutingTable};
use fleetstream_kafka::{
    group_lag, headers, read_topic_to_end, ConsumerSettings, DeliveryHandler, DeliveryReport,
    KafkaProducer, OutRecord, ProducerSettings,
};
use fleetstream_producer::{Generator, GeneratorConfig};
use fleetstream_testkit::{apply_unique, cluster, wait_until};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const DOMAIN: &str = include_str!("../../../config/topology.toml");
const ROUTES: &str = r#"
default = ["sink"]
[targets.sink]
kind = "memory"
"#;

#[derive(Default)]
struct Acks(AtomicU64);
impl DeliveryHandler for Acks {
    type Token = ();
    fn delivered(&self, _: (), r: DeliveryReport<'_>) {
        assert!(r.result.is_ok(), "{:?}", r.result);
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Poison records go to the dead-letter topic with their reason and source coordinates while
/// the valid records around them, on the same partition, are dispatched; afterwards the group
/// has committed everything (lag 0), so nothing would be re-delivered.
#[tokio::test(flavor = "multi_thread")]
async fn poison_is_dead_lettered_while_the_partition_keeps_flowing() {
    let cluster = cluster();
    let (prefix, topology) = apply_unique(&cluster, DOMAIN).await;
    let topic = format!("{prefix}-mt-c300");
    let conn = cluster.connection().clone();

    // 300 valid events and 4 kinds of poison, all on one key so they share a partition.
    let acks = Arc::new(Acks::default());
    let producer = KafkaProducer::new(&ProducerSettings::new(conn.clone()), acks.clone()).unwrap();
    let mut generator = Generator::new(&GeneratorConfig::default()).unwrap();
    let run = 0xfeed_u64;
    let poison: [(&[u8], &str); 4] = [
        (b"{not json", "not_json"),
        (br#"{"truck_id":"TRK-1"}"#, "missing_code"),
        (&[0xff, 0xfe, 0x00], "not_utf8"),
        (br#"{"codigo":"abc","truck_id":"x"}"#, "invalid_code"),
    ];
    let mut expected_poison = BTreeMap::new();
    let mut payload = Vec::new();
    let mut seq = 0u64;
    for i in 0..300 {
        generator.next_event(1, &mut payload);
        let id = MessageId { run, seq }.to_string();
        let h: [(&str, &[u8]); 1] = [(headers::MESSAGE_ID, id.as_bytes())];
        producer
            .send(
                OutRecord {
                    topic: &topic,
                    key: Some(b"k"),
                    payload: &payload,
                    headers: &h,
                    timestamp_ms: None,
                },
                (),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        seq += 1;
        if i % 75 == 10 {
            let (bad, class) = poison[(i / 75) as usize];
            let id = MessageId { run, seq }.to_string();
            let h: [(&str, &[u8]); 1] = [(headers::MESSAGE_ID, id.as_bytes())];
            producer
                .send(
                    OutRecord {
                        topic: &topic,
                        key: Some(b"k"),
                        payload: bad,
                        headers: &h,
                        timestamp_ms: None,
                    },
                    (),
                )
                .map_err(|(e, _)| e)
                .unwrap();
            expected_poison.insert(id, class);
            seq += 1;
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(acks.0.load(Ordering::SeqCst), 304);

    let dispatcher = Arc::new(
        Dispatcher::new(
            RoutingTable::from_toml_str(ROUTES, "/nonexistent").unwrap(),
            Arc::new(MemoryStore::default()),
        )
        .unwrap(),
    );
    let metrics = Arc::new(WorkerMetrics::default());
    let group = topology.groups().into_keys().next().unwrap();
    let worker = Worker::new(
        WorkerConfig::new("test-worker"),
        &ConsumerSettings::new(conn.clone(), group.clone()),
        &ProducerSettings::new(conn.clone()),
        &topology,
        std::slice::from_ref(&topic),
        Arc::new(InProcess(dispatcher.clone())) as Arc<dyn Transport>,
        metrics.clone(),
    )
    .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(worker.run(stop_rx));
    let settled = {
        let m = metrics.clone();
        tokio::task::spawn_blocking(move || {
            wait_until(Duration::from_secs(60), || {
                m.dispatched.load(Ordering::SeqCst) + m.dead_lettered.load(Ordering::SeqCst) >= 304
            })
        })
        .await
        .unwrap()
    };
    assert!(settled, "worker settled {:?}", metrics.snapshot());
    stop_tx.send(true).unwrap();
    handle.await.unwrap().unwrap();

    let sink = dispatcher.memory_target("sink").unwrap();
    assert_eq!(sink.ids().len(), 300);
    assert!(sink.ids().iter().all(|id| sink.effects(id) == 1));
    let snap = metrics.snapshot();
    assert_eq!(snap.dead_lettered, 4, "{snap:?}");

    let dlq_topic = topology.dead_letter_for(&topic).unwrap().to_string();
    let letters = tokio::task::spawn_blocking(move || {
        read_topic_to_end(&conn, &dlq_topic, Duration::from_secs(30))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(letters.len(), 4);
    for l in &letters {
        let id = String::from_utf8(l.header(headers::MESSAGE_ID).unwrap().to_vec()).unwrap();
        let class =
            std::str::from_utf8(l.header(headers::dead_letter::ERROR_CLASS).unwrap()).unwrap();
        assert_eq!(Some(&class), expected_poison.get(&id), "dead letter {id}");
        assert_eq!(
            l.header(headers::dead_letter::SOURCE_TOPIC),
            Some(topic.as_bytes())
        );
        assert!(l
            .header(headers::dead_letter::SOURCE_OFFSET)
            .and_then(headers::parse_u64)
            .is_some());
        assert_eq!(
            l.header(headers::dead_letter::WORKER_ID),
            Some(&b"test-worker"[..])
        );
        assert!(!l
            .header(headers::dead_letter::ERROR_MESSAGE)
            .unwrap()
            .is_empty());
    }

    let lag = group_lag(
        cluster.connection(),
        &group,
        &[topic],
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(lag.iter().map(|l| l.lag).sum::<i64>(), 0, "{lag:?}");
    assert_eq!(lag.iter().map(|l| l.high_watermark).sum::<i64>(), 304);
}
