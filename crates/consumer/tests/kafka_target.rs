//! The dispatcher's `kafka` target (fan-out) on a cluster: records arrive in the topic with
//! their key, value and message id; a replay is suppressed as duplicates, not produced again.
//! Embedded cluster by default, a real broker with FLEETSTREAM_TEST_BOOTSTRAP.

use fleetstream_consumer::KafkaTarget;
use fleetstream_dispatcher::idempotency::MemoryStore;
use fleetstream_dispatcher::{BatchRecord, Dispatcher, RoutingTable, MESSAGE_ID_HEADER};
use fleetstream_kafka::{read_topic_to_end, ProducerSettings};
use fleetstream_testkit::{apply_unique, cluster};
use std::sync::Arc;
use std::time::Duration;

const DOMAIN: &str = include_str!("../../../config/topology.toml");

fn event_json(code: u32, seq: u64) -> Vec<u8> {
    format!(
        r#"{{"truck_id":"TRK-{seq:06}","codigo":{code},"ts":{ts},"lat":-23.5,"lon":-46.6,"speed_kmh":60.0,"heading":90,"seq":{seq},"fuel_pct":50.0,"engine_temp_c":85.0,"odometer_km":1000.0,"driver_id":"DRV-1"}}"#,
        ts = 1_700_000_000_000u64 + seq
    )
    .into_bytes()
}

/// Five records with message ids and one without (its dedup key is its coordinates).
fn batch() -> Vec<BatchRecord> {
    (0..6)
        .map(|i| BatchRecord {
            topic: "source".into(),
            partition: 0,
            offset: i,
            timestamp_ms: 1_700_000_000_000,
            key: Some(format!("TRK-{i}").into_bytes()),
            value: event_json([300, 400][i as usize % 2], i as u64),
            headers: if i < 5 {
                vec![
                    (MESSAGE_ID_HEADER.into(), format!("m-{i}").into_bytes()),
                    ("fs-produced-at".into(), b"1".to_vec()),
                ]
            } else {
                Vec::new()
            },
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_target_produces_each_record_once_with_key_value_and_id() {
    let cluster = cluster();
    let (_, topology) = apply_unique(&cluster, DOMAIN).await;
    let conn = cluster.connection().clone();
    let topic = topology.source_topics().next().unwrap().name.clone();

    let routes = format!(
        "default = [\"fanout\"]\n[targets.fanout]\nkind = \"kafka\"\ntopic = \"{topic}\"\n"
    );
    let table = RoutingTable::from_toml_str(&routes, "/nonexistent").unwrap();
    let supplied = KafkaTarget::for_routes(&table, &ProducerSettings::new(conn.clone())).unwrap();
    assert_eq!(supplied.len(), 1);
    let dispatcher =
        Dispatcher::new_with_targets(table, Arc::new(MemoryStore::default()), supplied).unwrap();

    let first = dispatcher.dispatch(batch()).await;
    assert_eq!(first.summary.dispatched, 6, "{:?}", first.results);
    let replay = dispatcher.dispatch(batch()).await;
    assert_eq!(replay.summary.duplicates, 6, "{:?}", replay.results);

    let mut got = read_topic_to_end(&conn, &topic, Duration::from_secs(30)).unwrap();
    assert_eq!(
        got.len(),
        6,
        "one record per delivery, none from the replay"
    );
    got.sort_by_key(|r| r.key.clone());
    for (sent, r) in batch().iter().zip(&got) {
        assert_eq!(r.key, sent.key);
        assert_eq!(r.value, sent.value);
        let id = std::str::from_utf8(r.header(MESSAGE_ID_HEADER).unwrap()).unwrap();
        assert_eq!(id, sent.dedup_key(), "message id header");
        if sent.message_id().is_some() {
            assert_eq!(r.header("fs-produced-at"), Some(&b"1"[..]), "headers kept");
        }
    }
}
