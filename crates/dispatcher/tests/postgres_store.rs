//! The PostgreSQL idempotency store against a real PostgreSQL, as several dispatcher instances
//! would share it: the checks every store passes (`idempotency::conformance`), plus PostgreSQL's
//! own. Skipped (with a printed reason) unless FLEETSTREAM_TEST_POSTGRES holds a URL:
//!   scripts/postgres start
//!   FLEETSTREAM_TEST_POSTGRES=$(scripts/postgres url) cargo test -p fleetstream-dispatcher --features postgres --test postgres_store
//!   scripts/postgres stop
#![cfg(feature = "postgres")]

use fleetstream_dispatcher::idempotency::{
    conformance, IdempotencyStore, PostgresStore, PostgresStoreConfig,
};
use std::sync::Arc;
use std::time::Duration;

fn url() -> Option<String> {
    conformance::postgres_url()
}

/// A table of its own per test, so tests run in parallel on one database.
fn config(url: &str) -> PostgresStoreConfig {
    let mut c = PostgresStoreConfig::new(url);
    c.table = conformance::unique_table("fs_test", '_');
    c
}

async fn store(c: &PostgresStoreConfig) -> Arc<PostgresStore> {
    Arc::new(PostgresStore::connect(c.clone()).await.unwrap())
}

#[tokio::test]
async fn follows_the_store_protocol() {
    let Some(url) = url() else { return };
    conformance::protocol(&*store(&config(&url)).await).await;
}

#[tokio::test]
async fn batch_forms_follow_the_store_protocol() {
    let Some(url) = url() else { return };
    let store = store(&config(&url)).await;
    conformance::protocol_many(&*store).await;
    // One statement per batch: a key twice in it is refused, not half-applied.
    let twice = vec![("d".to_owned(), 1), ("d".to_owned(), 1)];
    assert!(store.begin_many(&twice).await.is_err());
}

#[tokio::test]
async fn remembers_across_reconnects_and_instances() {
    let Some(url) = url() else { return };
    let c = config(&url);
    conformance::shared(&*store(&c).await, &*store(&c).await).await;
}

#[tokio::test]
async fn expired_markers_are_taken_over_and_retention_forgets() {
    let Some(url) = url() else { return };
    let mut c = config(&url);
    c.in_progress_ttl = Duration::ZERO;
    c.retention = Duration::ZERO;
    let store = store(&c).await;
    conformance::expiry(&*store).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    // The completed key is older than retention: purged.
    assert_eq!(store.purge().await.unwrap(), 1);
}

#[tokio::test]
async fn concurrent_begins_from_two_instances_acquire_each_key_once() {
    let Some(url) = url() else { return };
    let c = config(&url);
    conformance::concurrent_begins([store(&c).await, store(&c).await]).await;
}

#[tokio::test]
async fn two_dispatchers_delivering_one_batch_have_one_effect_per_record() {
    let Some(url) = url() else { return };
    let c = config(&url);
    conformance::one_effect_per_record(vec![store(&c).await, store(&c).await]).await;
}
