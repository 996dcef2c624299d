//! The DynamoDB idempotency store against a DynamoDB endpoint (moto's server here; DynamoDB in
//! AWS behaves the same for these calls), as several dispatcher instances would share it.
//! Skipped (with a printed reason) unless FLEETSTREAM_TEST_DYNAMODB holds an http:// endpoint:
//!   scripts/dynamodb start
//!   FLEETSTREAM_TEST_DYNAMODB=$(scripts/dynamodb url) cargo test -p fleetstream-dispatcher --features dynamodb --test dynamodb_store
//!   scripts/dynamodb stop
#![cfg(feature = "dynamodb")]

use fleetstream_dispatcher::idempotency::{
    Begin, DynamoStore, DynamoStoreConfig, IdempotencyStore,
};
use fleetstream_dispatcher::targets::MemoryTarget;
use fleetstream_dispatcher::{BatchRecord, Dispatcher, Outcome, RoutingTable};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn endpoint() -> Option<String> {
    match std::env::var("FLEETSTREAM_TEST_DYNAMODB") {
        Ok(u) if !u.trim().is_empty() => Some(u),
        _ => {
            eprintln!(
                "skipped: FLEETSTREAM_TEST_DYNAMODB is unset (scripts/dynamodb start, then set it to $(scripts/dynamodb url))"
            );
            None
        }
    }
}

/// A table name of its own per test, so tests run in parallel on one endpoint.
fn config(endpoint: &str) -> DynamoStoreConfig {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    DynamoStoreConfig {
        table: format!(
            "fs-test-{}-{}-{}",
            std::process::id(),
            nanos % 1_000_000_000,
            N.fetch_add(1, Ordering::SeqCst)
        ),
        endpoint: Some(endpoint.to_owned()),
        ..DynamoStoreConfig::default()
    }
}

/// The table is created once per config; every other instance connects to it.
async fn created(c: &DynamoStoreConfig) -> DynamoStore {
    DynamoStore::create_table(c.clone()).await.unwrap()
}

#[tokio::test]
async fn follows_the_store_protocol() {
    let Some(endpoint) = endpoint() else { return };
    let store = created(&config(&endpoint)).await;
    assert_eq!(store.begin("a", 1).await.unwrap(), Begin::Acquired);
    assert_eq!(store.begin("a", 1).await.unwrap(), Begin::InProgress);
    assert_eq!(store.begin("a", 2).await.unwrap(), Begin::Conflict);
    store.abort("a").await.unwrap();
    assert_eq!(store.begin("a", 1).await.unwrap(), Begin::Acquired);
    store.complete("a").await.unwrap();
    assert_eq!(store.begin("a", 1).await.unwrap(), Begin::Duplicate);
    assert_eq!(store.begin("a", 9).await.unwrap(), Begin::Conflict);
    store.abort("a").await.unwrap();
    assert_eq!(store.begin("a", 1).await.unwrap(), Begin::Duplicate);
    // Hashes use all 64 bits.
    assert_eq!(store.begin("b", u64::MAX).await.unwrap(), Begin::Acquired);
    store.complete("b").await.unwrap();
    assert_eq!(store.begin("b", u64::MAX).await.unwrap(), Begin::Duplicate);
    assert_eq!(
        store.begin("b", u64::MAX - 1).await.unwrap(),
        Begin::Conflict
    );
}

#[tokio::test]
async fn batch_forms_follow_the_store_protocol() {
    let Some(endpoint) = endpoint() else { return };
    let store = created(&config(&endpoint)).await;
    let keys = |list: &[(&str, u64)]| -> Vec<(String, u64)> {
        list.iter().map(|(k, h)| ((*k).to_owned(), *h)).collect()
    };
    let strings = |list: &[&str]| -> Vec<String> { list.iter().map(|k| (*k).to_owned()).collect() };
    let first = keys(&[("x", 1), ("y", 2), ("z", 3)]);
    assert_eq!(
        store.begin_many(&first).await.unwrap(),
        vec![Begin::Acquired; 3]
    );
    store.complete_many(&strings(&["x", "y"])).await.unwrap();
    store.abort_many(&strings(&["z"])).await.unwrap();
    let again = keys(&[("x", 1), ("y", 9), ("z", 3), ("w", 4)]);
    assert_eq!(
        store.begin_many(&again).await.unwrap(),
        vec![
            Begin::Duplicate,
            Begin::Conflict,
            Begin::Acquired,
            Begin::Acquired
        ]
    );
    assert_eq!(
        store
            .begin_many(&keys(&[("z", 3), ("w", 5)]))
            .await
            .unwrap(),
        vec![Begin::InProgress, Begin::Conflict]
    );
    assert_eq!(store.begin("y", 2).await.unwrap(), Begin::Duplicate);
    assert!(store
        .begin_many(&keys(&[("d", 1), ("d", 1)]))
        .await
        .is_err());
    // More keys than requests in flight at once, answers in order.
    let many: Vec<(String, u64)> = (0..100).map(|i| (format!("m{i}"), i)).collect();
    assert_eq!(
        store.begin_many(&many).await.unwrap(),
        vec![Begin::Acquired; 100]
    );
    let names: Vec<String> = many.iter().map(|(k, _)| k.clone()).collect();
    store.complete_many(&names[..50]).await.unwrap();
    let answers = store.begin_many(&many).await.unwrap();
    assert_eq!(&answers[..50], &vec![Begin::Duplicate; 50][..]);
    assert_eq!(&answers[50..], &vec![Begin::InProgress; 50][..]);
}

#[tokio::test]
async fn a_missing_table_fails_at_connect_naming_it() {
    let Some(endpoint) = endpoint() else { return };
    let c = config(&endpoint);
    let err = DynamoStore::connect(c.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&c.table), "{err}");
}

#[tokio::test]
async fn remembers_across_instances() {
    let Some(endpoint) = endpoint() else { return };
    let c = config(&endpoint);
    let first = created(&c).await;
    assert_eq!(first.begin("k", 7).await.unwrap(), Begin::Acquired);
    first.complete("k").await.unwrap();
    assert_eq!(first.begin("busy", 7).await.unwrap(), Begin::Acquired);
    let second = DynamoStore::connect(c).await.unwrap();
    assert_eq!(second.begin("k", 7).await.unwrap(), Begin::Duplicate);
    assert_eq!(second.begin("k", 8).await.unwrap(), Begin::Conflict);
    // Another instance's live marker blocks this one.
    assert_eq!(second.begin("busy", 7).await.unwrap(), Begin::InProgress);
}

#[tokio::test]
async fn expired_markers_are_taken_over_and_retention_forgets() {
    let Some(endpoint) = endpoint() else { return };
    let mut c = config(&endpoint);
    c.in_progress_ttl = Duration::ZERO;
    c.retention = Duration::ZERO;
    let store = created(&c).await;
    assert_eq!(store.begin("k", 1).await.unwrap(), Begin::Acquired);
    tokio::time::sleep(Duration::from_millis(5)).await;
    // The holder died: its marker expired, a redelivery takes over.
    assert_eq!(store.begin("k", 1).await.unwrap(), Begin::Acquired);
    store.complete("k").await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Older than retention: treated as absent.
    assert_eq!(store.begin("k", 1).await.unwrap(), Begin::Acquired);
}

#[tokio::test]
async fn concurrent_begins_from_two_instances_acquire_each_key_once() {
    let Some(endpoint) = endpoint() else { return };
    let c = config(&endpoint);
    let stores = [
        Arc::new(created(&c).await),
        Arc::new(DynamoStore::connect(c).await.unwrap()),
    ];
    let mut tasks = Vec::new();
    for round in 0..4 {
        for store in &stores {
            let store = Arc::clone(store);
            tasks.push(tokio::spawn(async move {
                let mut acquired = Vec::new();
                for k in 0..50 {
                    let key = format!("key-{}", (k + round * 13) % 50);
                    if store.begin(&key, 1).await.unwrap() == Begin::Acquired {
                        acquired.push(key);
                    }
                }
                acquired
            }));
        }
    }
    let mut all: Vec<String> = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len(), "a key was acquired twice");
    assert_eq!(all.len(), 50);
}

fn record(i: i64) -> BatchRecord {
    BatchRecord {
        topic: "mt-c400".into(),
        partition: 0,
        offset: i,
        timestamp_ms: 1_700_000_000_000,
        key: None,
        value: format!(
            r#"{{"truck_id":"TRK-{i:06}","codigo":300,"ts":1700000000000,"lat":-23.5,"lon":-46.6,"speed_kmh":60.0,"heading":90,"seq":{i},"fuel_pct":50.0,"engine_temp_c":85.0,"odometer_km":1000.0,"driver_id":"DRV-1"}}"#
        )
        .into_bytes(),
        headers: vec![("fs-message-id".into(), format!("m-{i}").into_bytes())],
    }
}

#[tokio::test]
async fn two_dispatchers_delivering_one_batch_have_one_effect_per_record() {
    let Some(endpoint) = endpoint() else { return };
    let c = config(&endpoint);
    let sink = Arc::new(MemoryTarget::new("sink"));
    let routes = "default = [\"sink\"]\n[targets.sink]\nkind = \"memory\"\n";
    created(&c).await;
    let mut dispatchers = Vec::new();
    for _ in 0..2 {
        let table = RoutingTable::from_toml_str(routes, "/nonexistent").unwrap();
        let store = Arc::new(DynamoStore::connect(c.clone()).await.unwrap());
        let d = Dispatcher::new(table, store)
            .unwrap()
            .with_target(Arc::clone(&sink) as _);
        dispatchers.push(Arc::new(d));
    }
    let batch: Vec<BatchRecord> = (0..40).map(record).collect();
    // Two instances get the same batch at once (a rebalance, a Lambda retry racing the first).
    let runs: Vec<_> = dispatchers
        .iter()
        .map(|d| {
            let (d, batch) = (Arc::clone(d), batch.clone());
            tokio::spawn(async move { d.dispatch(batch).await })
        })
        .collect();
    for run in runs {
        let response = run.await.unwrap();
        for r in &response.results {
            assert!(
                matches!(&r.outcome, Outcome::Dispatched | Outcome::Duplicate)
                    || matches!(&r.outcome, Outcome::Failed { reason, retriable: true } if reason == "in_progress"),
                "{r:?}"
            );
        }
    }
    // Redeliveries settle whatever was in progress; nothing runs twice.
    for d in &dispatchers {
        let again = d.dispatch(batch.clone()).await;
        assert!(again.is_complete(), "{:?}", again.summary);
    }
    assert_eq!(sink.total(), 40);
    for i in 0..40 {
        assert_eq!(sink.effects(&format!("m-{i}")), 1, "m-{i}");
    }
}
