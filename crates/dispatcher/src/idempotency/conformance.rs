//! What every [`IdempotencyStore`] must do, as checks each store's tests run against it: the
//! memory and file stores in this crate's unit tests, PostgreSQL and DynamoDB in
//! `tests/postgres_store.rs` and `tests/dynamodb_store.rs`. A new store passes these first.
//!
//! Each check panics with the first answer that breaks the protocol. Built for tests only
//! (feature `conformance`), with the helpers the shared-store tests use.

use super::{Begin, IdempotencyStore};
use crate::targets::MemoryTarget;
use crate::{BatchRecord, Dispatcher, Outcome, RoutingTable};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The value of `var` (a shared store's URL or endpoint), or `None` after printing why the test
/// is skipped; `how` says how to get one (`scripts/postgres start, then
/// FLEETSTREAM_TEST_POSTGRES=$(scripts/postgres url)`).
pub fn env_or_skip(var: &str, how: &str) -> Option<String> {
    let value = std::env::var(var)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    if value.is_none() {
        eprintln!("skipped: {var} is unset ({how})");
    }
    value
}

/// [`env_or_skip`] for `FLEETSTREAM_TEST_POSTGRES`.
pub fn postgres_url() -> Option<String> {
    env_or_skip(
        "FLEETSTREAM_TEST_POSTGRES",
        "scripts/postgres start, then FLEETSTREAM_TEST_POSTGRES=$(scripts/postgres url)",
    )
}

/// [`env_or_skip`] for `FLEETSTREAM_TEST_DYNAMODB`.
pub fn dynamodb_endpoint() -> Option<String> {
    env_or_skip(
        "FLEETSTREAM_TEST_DYNAMODB",
        "scripts/dynamodb start, then FLEETSTREAM_TEST_DYNAMODB=$(scripts/dynamodb url)",
    )
}

/// A table name no other test or run uses: `prefix`, then the process id, the time and a
/// counter, joined by `sep` (`_` for PostgreSQL, `-` for DynamoDB).
pub fn unique_table(prefix: &str, sep: char) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}{sep}{}{sep}{}{sep}{}",
        std::process::id(),
        nanos % 1_000_000_000,
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// The single-key protocol: acquire, in progress, conflict, abort, complete, duplicate.
pub async fn protocol(store: &dyn IdempotencyStore) {
    assert_eq!(store.begin("a", 1).await.unwrap(), Begin::Acquired);
    // A second delivery while the first runs must not execute.
    assert_eq!(store.begin("a", 1).await.unwrap(), Begin::InProgress);
    assert_eq!(store.begin("a", 2).await.unwrap(), Begin::Conflict);
    store.abort("a").await.unwrap();
    // Released: a retry can run.
    assert_eq!(store.begin("a", 1).await.unwrap(), Begin::Acquired);
    store.complete("a").await.unwrap();
    assert_eq!(store.begin("a", 1).await.unwrap(), Begin::Duplicate);
    assert_eq!(store.begin("a", 9).await.unwrap(), Begin::Conflict);
    // Abort after completion does not forget the key.
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

/// The batch forms agree with the single-key ones, answer in order, and refuse repeated keys.
pub async fn protocol_many(store: &dyn IdempotencyStore) {
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
    // More keys than a store sends at once (DynamoDB: 32), answers in order.
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

/// A store whose in-progress markers expire at once and whose retention is zero: a redelivery
/// takes over a dead holder's marker, and a completed key older than retention is absent.
/// Leaves key `k` completed.
pub async fn expiry(store: &dyn IdempotencyStore) {
    assert_eq!(store.begin("k", 1).await.unwrap(), Begin::Acquired);
    tokio::time::sleep(Duration::from_millis(5)).await;
    // The holder died: its marker expired, a redelivery takes over.
    assert_eq!(store.begin("k", 1).await.unwrap(), Begin::Acquired);
    store.complete("k").await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Older than retention: treated as absent.
    assert_eq!(store.begin("k", 1).await.unwrap(), Begin::Acquired);
    store.complete("k").await.unwrap();
}

/// Two instances on one shared store (a second process, a reconnect): the second sees what the
/// first completed and respects its live marker.
pub async fn shared(first: &dyn IdempotencyStore, second: &dyn IdempotencyStore) {
    assert_eq!(first.begin("k", 7).await.unwrap(), Begin::Acquired);
    first.complete("k").await.unwrap();
    assert_eq!(first.begin("busy", 7).await.unwrap(), Begin::Acquired);
    assert_eq!(second.begin("k", 7).await.unwrap(), Begin::Duplicate);
    assert_eq!(second.begin("k", 8).await.unwrap(), Begin::Conflict);
    // Another instance's live marker blocks this one.
    assert_eq!(second.begin("busy", 7).await.unwrap(), Begin::InProgress);
}

/// Eight tasks over two instances race to begin the same 50 keys: each key is acquired once.
pub async fn concurrent_begins(stores: [Arc<dyn IdempotencyStore>; 2]) {
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

/// A valid telemetry event of `code` at offset `i`, with message id `m-{i}`.
pub fn record(i: i64, code: u32) -> BatchRecord {
    BatchRecord {
        topic: "mt-c400".into(),
        partition: 0,
        offset: i,
        timestamp_ms: 1_700_000_000_000,
        key: None,
        value: format!(
            r#"{{"truck_id":"TRK-{i:06}","codigo":{code},"ts":1700000000000,"lat":-23.5,"lon":-46.6,"speed_kmh":60.0,"heading":90,"seq":{i},"fuel_pct":50.0,"engine_temp_c":85.0,"odometer_km":1000.0,"driver_id":"DRV-1"}}"#
        )
        .into_bytes(),
        headers: vec![("fs-message-id".into(), format!("m-{i}").into_bytes())],
    }
}

/// One dispatcher per store instance gets the same 40-record batch at once (a rebalance, a
/// Lambda retry racing the first), then each again: every record has exactly one effect.
pub async fn one_effect_per_record(stores: Vec<Arc<dyn IdempotencyStore>>) {
    let sink = Arc::new(MemoryTarget::new("sink"));
    let routes = "default = [\"sink\"]\n[targets.sink]\nkind = \"memory\"\n";
    let dispatchers: Vec<Arc<Dispatcher>> = stores
        .into_iter()
        .map(|store| {
            let table = RoutingTable::from_toml_str(routes, "/nonexistent").unwrap();
            let d = Dispatcher::new(table, store)
                .unwrap()
                .with_target(Arc::clone(&sink) as _);
            Arc::new(d)
        })
        .collect();
    let batch: Vec<BatchRecord> = (0..40).map(|i| record(i, 300)).collect();
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
