//! The DynamoDB idempotency store against a DynamoDB endpoint (moto's server here; DynamoDB in
//! AWS behaves the same for these calls), as several dispatcher instances would share it: the
//! checks every store passes (`idempotency::conformance`), plus DynamoDB's own.
//! Skipped (with a printed reason) unless FLEETSTREAM_TEST_DYNAMODB holds an http:// endpoint:
//!   scripts/dynamodb start
//!   FLEETSTREAM_TEST_DYNAMODB=$(scripts/dynamodb url) cargo test -p fleetstream-dispatcher --features dynamodb --test dynamodb_store
//!   scripts/dynamodb stop
#![cfg(feature = "dynamodb")]

use fleetstream_dispatcher::idempotency::{
    conformance, DynamoStore, DynamoStoreConfig, IdempotencyStore,
};
use std::sync::Arc;
use std::time::Duration;

fn endpoint() -> Option<String> {
    conformance::dynamodb_endpoint()
}

/// A table name of its own per test, so tests run in parallel on one endpoint.
fn config(endpoint: &str) -> DynamoStoreConfig {
    DynamoStoreConfig {
        table: conformance::unique_table("fs-test", '-'),
        endpoint: Some(endpoint.to_owned()),
        ..DynamoStoreConfig::default()
    }
}

/// The table is created once per config; every other instance connects to it.
async fn created(c: &DynamoStoreConfig) -> Arc<DynamoStore> {
    Arc::new(DynamoStore::create_table(c.clone()).await.unwrap())
}

async fn connected(c: &DynamoStoreConfig) -> Arc<DynamoStore> {
    Arc::new(DynamoStore::connect(c.clone()).await.unwrap())
}

#[tokio::test]
async fn follows_the_store_protocol() {
    let Some(endpoint) = endpoint() else { return };
    conformance::protocol(&*created(&config(&endpoint)).await).await;
}

#[tokio::test]
async fn batch_forms_follow_the_store_protocol() {
    let Some(endpoint) = endpoint() else { return };
    let store = created(&config(&endpoint)).await;
    conformance::protocol_many(&*store).await;
    // A key twice in one batch is refused before any request.
    let twice = vec![("d".to_owned(), 1), ("d".to_owned(), 1)];
    assert!(store.begin_many(&twice).await.is_err());
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
    conformance::shared(&*first, &*connected(&c).await).await;
}

#[tokio::test]
async fn expired_markers_are_taken_over_and_retention_forgets() {
    let Some(endpoint) = endpoint() else { return };
    let mut c = config(&endpoint);
    c.in_progress_ttl = Duration::ZERO;
    c.retention = Duration::ZERO;
    conformance::expiry(&*created(&c).await).await;
}

#[tokio::test]
async fn concurrent_begins_from_two_instances_acquire_each_key_once() {
    let Some(endpoint) = endpoint() else { return };
    let c = config(&endpoint);
    let first = created(&c).await;
    conformance::concurrent_begins([first, connected(&c).await]).await;
}

#[tokio::test]
async fn two_dispatchers_delivering_one_batch_have_one_effect_per_record() {
    let Some(endpoint) = endpoint() else { return };
    let c = config(&endpoint);
    let first = created(&c).await;
    conformance::one_effect_per_record(vec![first, connected(&c).await]).await;
}
