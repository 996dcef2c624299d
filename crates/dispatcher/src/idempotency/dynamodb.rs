//! DynamoDB store (feature `dynamodb`): one table shared by every dispatcher instance, the
//! usual place for a Lambda function's idempotency keys (no VPC, no connections to manage).
//!
//! Same semantics as [`super::PostgresStore`], one item per key:
//! - `begin` is one conditional `PutItem`: write an in-progress item unless the key exists, and
//!   take over an item whose in-progress marker expired or whose completion is older than the
//!   retention window. DynamoDB applies a condition and its write atomically, so of two
//!   concurrent `begin`s on one key exactly one acquires. When the condition fails, the old item
//!   (returned with the failure, or read back consistently) tells `Duplicate`, `InProgress` or
//!   `Conflict` (different payload hash; reported, never executed).
//! - `complete` turns the caller's in-progress item into done; `abort` deletes it.
//! - Times come from the instance's clock (DynamoDB conditions have no server clock). Lambda
//!   and EC2 clocks are NTP-synchronised; skew matters only against the 15-minute marker
//!   lifetime and the days of retention.
//! - Done items carry `ttl` (epoch seconds, completion plus retention). Turn on the table's Time
//!   to Live on that attribute and DynamoDB deletes them itself (usually within days); until
//!   then they are treated as absent anyway.
//!
//! The table: partition key `pk` (string), nothing else. See docs/DISPATCHER.md for the CLI or
//! CloudFormation lines, or [`DynamoStore::create_table`] for a local endpoint.

use super::{Begin, IdempotencyStore, StoreError, DEFAULT_IN_PROGRESS_TTL};
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{self, StreamExt};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default table name.
pub const DEFAULT_DYNAMODB_TABLE: &str = "fleetstream-idempotency";

/// Requests in flight at once for the batch forms (a Lambda batch holds up to thousands of
/// records; DynamoDB has no conditional batch write).
const CONCURRENCY: usize = 32;

/// Settings of [`DynamoStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamoStoreConfig {
    /// Table. Default [`DEFAULT_DYNAMODB_TABLE`].
    pub table: String,
    /// Endpoint override: an `http://` URL (a local emulator such as scripts/dynamodb) or an
    /// `https://` one. Default none: AWS's endpoint for the region, which needs a build with
    /// the `dynamodb-tls` feature.
    pub endpoint: Option<String>,
    /// How long a completed key is remembered. Default 7 days; must exceed the longest
    /// redelivery horizon (see [`super::FileStoreConfig::retention`]).
    pub retention: Duration,
    /// Lifetime of an in-progress marker. Default 15 min (Lambda's maximum timeout); must exceed
    /// the longest delivery, or a second instance may start the same key beside it.
    pub in_progress_ttl: Duration,
}

impl Default for DynamoStoreConfig {
    fn default() -> Self {
        Self {
            table: DEFAULT_DYNAMODB_TABLE.to_owned(),
            endpoint: None,
            retention: Duration::from_secs(7 * 24 * 3600),
            in_progress_ttl: DEFAULT_IN_PROGRESS_TTL,
        }
    }
}

/// The DynamoDB-backed store.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    config: DynamoStoreConfig,
    client: Client,
}

fn sdk_err<E, R>(what: &str, e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    StoreError::Database(format!("DynamoDB {what}: {}", describe(&e)))
}

/// A conditional write's outcome: a failed condition (`condition_failed`, the operation's
/// `is_conditional_check_failed_exception`) means there was nothing to do.
fn unless_condition_failed<T, E, R>(
    r: Result<T, SdkError<E, R>>,
    condition_failed: fn(&E) -> bool,
    what: impl FnOnce() -> String,
) -> Result<(), StoreError>
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(condition_failed) => Ok(()),
        Err(e) => Err(sdk_err(&what(), e)),
    }
}

/// One line: the service's error code and message, or the chain of causes (the SDK's own
/// `DisplayErrorContext` appends the whole raw response).
fn describe<E, R>(e: &SdkError<E, R>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    if let Some(se) = e.as_service_error() {
        return format!(
            "{}: {}",
            se.code().unwrap_or("error"),
            se.message().unwrap_or("(no message)")
        );
    }
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// An id no other `begin` call shares: process id, clock and a counter.
fn attempt_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}-{nanos:x}-{:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

const IN_PROGRESS: &str = "in_progress";
const DONE: &str = "done";

/// What the item found says about a `begin` whose conditional put failed. An item written by
/// this very call (`attempt`: the SDK re-sent the put after losing the first answer) is ours.
fn classify(
    item: Option<&HashMap<String, AttributeValue>>,
    payload_hash: u64,
    attempt: &str,
) -> Begin {
    let Some(item) = item else {
        // Deleted in between (an abort): someone else is retrying it right now.
        return Begin::InProgress;
    };
    if item
        .get("attempt")
        .and_then(|v| v.as_s().ok())
        .is_some_and(|a| a == attempt)
    {
        return Begin::Acquired;
    }
    let stored = item
        .get("hash")
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let done = item
        .get("state")
        .and_then(|v| v.as_s().ok())
        .is_some_and(|v| v == DONE);
    match (stored == Some(payload_hash), done) {
        (false, _) => Begin::Conflict,
        (true, true) => Begin::Duplicate,
        (true, false) => Begin::InProgress,
    }
}

impl DynamoStore {
    /// A client for the table (region and credentials from the usual AWS sources: the Lambda
    /// role, `AWS_REGION`, `AWS_ACCESS_KEY_ID`...), checked with `DescribeTable` so a missing
    /// table or a refused credential fails at start-up, naming the table.
    pub async fn connect(config: DynamoStoreConfig) -> Result<Self, StoreError> {
        let client = Self::client(&config).await?;
        client
            .describe_table()
            .table_name(&config.table)
            .send()
            .await
            .map_err(|e| sdk_err(&format!("table {:?}", config.table), e))?;
        Ok(Self { config, client })
    }

    /// The SDK client for `config`: plain HTTP to an `http://` endpoint (with a placeholder
    /// region and credentials when none are set), HTTPS otherwise.
    async fn client(config: &DynamoStoreConfig) -> Result<Client, StoreError> {
        if config.table.trim().is_empty() {
            return Err(StoreError::Database(
                "DynamoDB table name is empty".to_owned(),
            ));
        }
        let sdk = fleetstream_aws::sdk_config(config.endpoint.as_deref(), "DynamoDB endpoint")
            .await
            .map_err(StoreError::Database)?;
        Ok(Client::new(&sdk))
    }

    /// Creates the table (on-demand billing, key `pk`, Time to Live on `ttl`) unless it exists,
    /// and returns the store on it. For local endpoints and first set-ups; in AWS, create it
    /// with the rest of the infrastructure (docs/DISPATCHER.md).
    pub async fn create_table(config: DynamoStoreConfig) -> Result<Self, StoreError> {
        let client = Self::client(&config).await?;
        let created = client
            .create_table()
            .table_name(&config.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("pk")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(|e| StoreError::Database(e.to_string()))?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("pk")
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(|e| StoreError::Database(e.to_string()))?,
            )
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_resource_in_use_exception()) => {}
            Err(e) => return Err(sdk_err(&format!("create table {:?}", config.table), e)),
        }
        // DynamoDB creates tables asynchronously (CREATING); TTL and writes need it ACTIVE.
        client
            .wait_until_table_exists()
            .table_name(&config.table)
            .wait(Duration::from_secs(120))
            .await
            .map_err(|e| {
                StoreError::Database(format!(
                    "DynamoDB table {:?} did not become active: {e}",
                    config.table
                ))
            })?;
        let ttl = client
            .update_time_to_live()
            .table_name(&config.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name("ttl")
                    .build()
                    .map_err(|e| StoreError::Database(e.to_string()))?,
            )
            .send()
            .await;
        if let Err(e) = ttl {
            let text = describe(&e);
            // Re-running on a table whose TTL is already on is fine. Without it old keys are
            // never deleted: that costs storage, not correctness, so only warn.
            if !text.contains("already enabled") {
                tracing::warn!(table = %config.table, error = %text, "could not enable Time to Live");
            }
        }
        Ok(Self { config, client })
    }

    /// Settings in force.
    pub fn config(&self) -> &DynamoStoreConfig {
        &self.config
    }

    async fn begin_inner(&self, key: &str, payload_hash: u64) -> Result<Begin, StoreError> {
        let now = now_ms();
        let expires = now.saturating_add(millis(self.config.in_progress_ttl));
        // Unique to this call: if the SDK re-sends the put after a lost response, the retry
        // fails the condition against the item the first attempt wrote; this says it is ours.
        let attempt = attempt_id();
        let put = self
            .client
            .put_item()
            .table_name(&self.config.table)
            .item("pk", s(key))
            .item("hash", AttributeValue::N(payload_hash.to_string()))
            .item("state", s(IN_PROGRESS))
            .item("attempt", s(&attempt))
            .item("expires_ms", n(expires))
            // An orphaned marker (its record never redelivered) is deleted by Time to Live too.
            .item(
                "ttl",
                n(expires.saturating_add(millis(self.config.retention)) / 1000),
            )
            .condition_expression(
                "attribute_not_exists(pk) \
                 OR (#state = :in_progress AND expires_ms <= :now) \
                 OR (#state = :done AND done_ms < :forget_before)",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":in_progress", s(IN_PROGRESS))
            .expression_attribute_values(":done", s(DONE))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(
                ":forget_before",
                n(now.saturating_sub(millis(self.config.retention))),
            )
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let old = match put {
            Ok(_) => return Ok(Begin::Acquired),
            Err(e) => {
                let conditional = e
                    .as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception());
                if !conditional {
                    return Err(sdk_err(&self.what("put", key), e));
                }
                match e.into_service_error() {
                    PutItemError::ConditionalCheckFailedException(c) => c.item,
                    _ => None,
                }
            }
        };
        let item = match old {
            Some(item) => Some(item),
            // An endpoint that does not return the old item: read it back, strongly consistent.
            None => {
                self.client
                    .get_item()
                    .table_name(&self.config.table)
                    .key("pk", s(key))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| sdk_err(&self.what("get", key), e))?
                    .item
            }
        };
        Ok(classify(item.as_ref(), payload_hash, &attempt))
    }

    /// `<operation> <key> in table <table>`, for errors.
    fn what(&self, op: &str, key: &str) -> String {
        format!("{op} {key:?} in table {:?}", self.config.table)
    }

    async fn complete_inner(&self, key: &str) -> Result<(), StoreError> {
        let now = now_ms();
        let ttl_secs = now.saturating_add(millis(self.config.retention)) / 1000;
        let r = self
            .client
            .update_item()
            .table_name(&self.config.table)
            .key("pk", s(key))
            .update_expression("SET #state = :done, done_ms = :now, #ttl = :ttl REMOVE expires_ms")
            .condition_expression("#state = :in_progress")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":done", s(DONE))
            .expression_attribute_values(":in_progress", s(IN_PROGRESS))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":ttl", n(ttl_secs))
            .send()
            .await;
        // Not in progress (already done, or never begun): nothing to do, as in the others.
        unless_condition_failed(
            r,
            UpdateItemError::is_conditional_check_failed_exception,
            || self.what("complete", key),
        )
    }

    async fn abort_inner(&self, key: &str) -> Result<(), StoreError> {
        let r = self
            .client
            .delete_item()
            .table_name(&self.config.table)
            .key("pk", s(key))
            .condition_expression("#state = :in_progress")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":in_progress", s(IN_PROGRESS))
            .send()
            .await;
        // Done (or absent): an abort never forgets a completed key.
        unless_condition_failed(
            r,
            DeleteItemError::is_conditional_check_failed_exception,
            || self.what("abort", key),
        )
    }

    /// Runs `op` on every key, [`CONCURRENCY`] at a time, and returns the first error after all
    /// have run: a key left in progress would block its redeliveries until its marker expires.
    async fn each<'a, F, Fut>(&'a self, keys: &'a [String], op: F) -> Result<(), StoreError>
    where
        F: Fn(&'a Self, &'a str) -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>>,
    {
        let calls: Vec<_> = keys.iter().map(|k| op(self, k)).collect();
        let results: Vec<Result<(), StoreError>> = stream::iter(calls)
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect()
    }
}

impl IdempotencyStore for DynamoStore {
    fn begin<'a>(
        &'a self,
        key: &'a str,
        payload_hash: u64,
    ) -> BoxFuture<'a, Result<Begin, StoreError>> {
        self.begin_inner(key, payload_hash).boxed()
    }

    fn complete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.complete_inner(key).boxed()
    }

    fn abort<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.abort_inner(key).boxed()
    }

    /// Conditional puts, [`CONCURRENCY`] at a time. On an error, the markers taken are released
    /// before it is returned.
    fn begin_many<'a>(
        &'a self,
        keys: &'a [(String, u64)],
    ) -> BoxFuture<'a, Result<Vec<Begin>, StoreError>> {
        async move {
            let distinct: HashSet<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
            if distinct.len() != keys.len() {
                return Err(StoreError::Database(
                    "begin_many needs distinct keys".into(),
                ));
            }
            // Futures are lazy: collecting them first starts nothing.
            let calls: Vec<_> = keys.iter().map(|(k, h)| self.begin_inner(k, *h)).collect();
            let answers: Vec<Result<Begin, StoreError>> =
                stream::iter(calls).buffered(CONCURRENCY).collect().await;
            if let Some(i) = answers.iter().position(Result::is_err) {
                let taken: Vec<String> = keys
                    .iter()
                    .zip(&answers)
                    .filter(|(_, a)| matches!(a, Ok(Begin::Acquired)))
                    .map(|((k, _), _)| k.clone())
                    .collect();
                let _ = self.abort_many(&taken).await;
                let mut answers = answers;
                return Err(answers.swap_remove(i).unwrap_err());
            }
            answers.into_iter().collect()
        }
        .boxed()
    }

    fn complete_many<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<(), StoreError>> {
        self.each(keys, Self::complete_inner).boxed()
    }

    fn abort_many<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<(), StoreError>> {
        self.each(keys, Self::abort_inner).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(hash: u64, state: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".to_owned(), s("k")),
            ("hash".to_owned(), AttributeValue::N(hash.to_string())),
            ("state".to_owned(), s(state)),
        ])
    }

    #[test]
    fn an_existing_item_classifies_a_begin_that_did_not_acquire() {
        let c = |item: Option<&HashMap<String, AttributeValue>>, hash| classify(item, hash, "mine");
        assert_eq!(c(Some(&item(7, DONE)), 7), Begin::Duplicate);
        assert_eq!(c(Some(&item(7, IN_PROGRESS)), 7), Begin::InProgress);
        assert_eq!(c(Some(&item(7, DONE)), 8), Begin::Conflict);
        assert_eq!(c(Some(&item(7, IN_PROGRESS)), 8), Begin::Conflict);
        assert_eq!(c(Some(&item(u64::MAX, DONE)), u64::MAX), Begin::Duplicate);
        assert_eq!(c(None, 7), Begin::InProgress);
        // The SDK's retry of this very put met the item its first attempt wrote.
        let mut retried = item(7, IN_PROGRESS);
        retried.insert("attempt".to_owned(), s("mine"));
        assert_eq!(c(Some(&retried), 7), Begin::Acquired);
        retried.insert("attempt".to_owned(), s("someone else's"));
        assert_eq!(c(Some(&retried), 7), Begin::InProgress);
    }
}
