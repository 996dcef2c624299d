//! The fleetstream dispatcher as an AWS Lambda function behind a Kafka event source mapping
//! (Amazon MSK or self-managed Kafka). Links no librdkafka: Lambda's pollers read Kafka.
//!
//! The function takes the event as a `serde_json::Value` and decodes it with
//! [`fleetstream_dispatcher::event::decode_event_value`], not as `LambdaEvent<KafkaEvent>`:
//! `aws_lambda_events` 1.2 loses a millisecond on many timestamps and panics on fractional ones.
//! It answers `{"batchItemFailures": [...], "summary": {...}}`: the Kafka partial batch response
//! (enable `ReportBatchItemFailures` on the mapping) plus counts for people and tests.
//!
//! Configuration, all from the environment (see [`LambdaConfig::from_env`]):
//! - `FLEETSTREAM_ROUTES`: routing file path (e.g. `/var/task/routes.toml`); unset: the bundled
//!   [`DEFAULT_ROUTES`], every code logged.
//! - `FLEETSTREAM_STATE_DIR`: idempotency store directory, default `/tmp/fleetstream`.
//! - `FLEETSTREAM_RETENTION`: how long completed keys are remembered, default `7d`.
//! - `FLEETSTREAM_INDEX_CACHE`: page cache of the `/tmp` store's index in bytes (`64MiB`,
//!   `512KiB` or a number), default 64 MiB: bounds its memory at any retention.
//! - `FLEETSTREAM_POSTGRES_URL`: when set, the idempotency store is PostgreSQL (table
//!   `FLEETSTREAM_POSTGRES_TABLE`, default `fleetstream_idempotency`) instead of `/tmp`.
//! - `FLEETSTREAM_DYNAMODB_TABLE`: when set, the idempotency store is that DynamoDB table (in
//!   the function's region, with its role's credentials; `FLEETSTREAM_DYNAMODB_ENDPOINT`
//!   overrides the endpoint, e.g. a local emulator). Not together with `FLEETSTREAM_POSTGRES_URL`.
//! - `FLEETSTREAM_IN_PROGRESS_TTL`: lifetime of a shared store's in-progress marker, default `15m`
//!   (Lambda's maximum timeout). Set it a little above the function's timeout: a marker left by
//!   an invocation that timed out blocks redeliveries of its records (reported `in_progress`,
//!   retriable) until it expires.
//! - `FLEETSTREAM_OTLP_ENDPOINT`: an OTLP/HTTP collector (the ADOT Lambda layer's is
//!   `http://localhost:4318`); the standard `OTEL_EXPORTER_OTLP_ENDPOINT` works too. The
//!   function then records a `dispatch` span for each record the producer sampled, and sends
//!   them before each invocation returns: Lambda freezes the sandbox between invocations.
//!
//! Idempotency: by default a [`DiskStore`] under `/tmp`. Each Lambda execution environment has
//! its own `/tmp` (up to 10 GB, kept while the environment is warm, lost when it is recycled), so
//! this deduplicates only redeliveries that reach the same warm instance; the function logs a
//! warning saying so at start-up ([`LambdaConfig::store_warning`]). Deduplication across
//! concurrent instances and cold starts needs a store shared by every instance: DynamoDB
//! (`FLEETSTREAM_DYNAMODB_TABLE`), the production setting, or PostgreSQL
//! (`FLEETSTREAM_POSTGRES_URL`, inside the VPC).
#![warn(missing_docs)]

use fleetstream_dispatcher::event::decode_event_value;
use fleetstream_dispatcher::idempotency::{
    DiskStore, DiskStoreConfig, DynamoStore, DynamoStoreConfig, IdempotencyStore, PostgresStore,
    PostgresStoreConfig, StoreError,
};
use fleetstream_dispatcher::{BatchItemFailure, Dispatcher, RoutesError, RoutingTable, Summary};
use fleetstream_obs::trace::{TraceError, Tracer};
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Routing used when `FLEETSTREAM_ROUTES` is unset: every code to the log target.
pub const DEFAULT_ROUTES: &str = include_str!("../routes-default.toml");
/// Default state directory: Lambda's only writable path is `/tmp`.
pub const DEFAULT_STATE_DIR: &str = "/tmp/fleetstream";

/// Why the function could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The routing file is missing or invalid.
    #[error("routes: {0}")]
    Routes(#[from] RoutesError),
    /// The idempotency store could not be opened.
    #[error("idempotency store: {0}")]
    Store(#[from] StoreError),
    /// A target could not be built.
    #[error("targets: {0}")]
    Build(#[from] fleetstream_dispatcher::BuildError),
    /// An environment variable has a bad value.
    #[error("environment variable {name}: {message}")]
    Env {
        /// The variable.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The span exporter could not be set up.
    #[error("tracing: {0}")]
    Tracing(#[from] TraceError),
    /// The Lambda runtime failed (e.g. not running inside Lambda or an emulator).
    #[error("lambda runtime: {0}")]
    Runtime(String),
}

/// Why one invocation failed as a whole. Lambda then retries the whole batch (or sends it to the
/// on-failure destination once retries are exhausted).
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The payload is not a Kafka event.
    #[error("malformed Kafka event ({class}): {message}")]
    MalformedEvent {
        /// Low-cardinality class (`shape`, `base64`, `timestamp`, ...).
        class: &'static str,
        /// Details.
        message: String,
    },
}

impl From<InvokeError> for Diagnostic {
    fn from(e: InvokeError) -> Self {
        Diagnostic {
            error_type: "MalformedKafkaEvent".into(),
            error_message: e.to_string(),
        }
    }
}

/// Settings read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaConfig {
    /// Routing file; `None`: [`DEFAULT_ROUTES`].
    pub routes: Option<PathBuf>,
    /// Idempotency store and relative `jsonl` paths. Default [`DEFAULT_STATE_DIR`].
    pub state_dir: PathBuf,
    /// Retention of completed keys. Default 7 days (Kafka's default topic retention and Lambda's
    /// longest maximum record age).
    pub retention: Duration,
    /// Page cache of the `/tmp` store's index, bytes. Default 64 MiB.
    pub index_cache_bytes: usize,
    /// The shared PostgreSQL store, if configured (its `Debug` hides the URL).
    pub postgres: Option<PostgresStoreConfig>,
    /// The shared DynamoDB store, if configured.
    pub dynamodb: Option<DynamoStoreConfig>,
    /// OTLP/HTTP collector for spans; unset: the standard `OTEL_EXPORTER_OTLP_*` variables, if
    /// any.
    pub otlp_endpoint: Option<String>,
}

impl LambdaConfig {
    /// Reads `FLEETSTREAM_ROUTES`, `FLEETSTREAM_STATE_DIR`, `FLEETSTREAM_RETENTION`,
    /// `FLEETSTREAM_POSTGRES_URL`, `FLEETSTREAM_POSTGRES_TABLE`, `FLEETSTREAM_DYNAMODB_TABLE`,
    /// `FLEETSTREAM_DYNAMODB_ENDPOINT`, `FLEETSTREAM_IN_PROGRESS_TTL`, `FLEETSTREAM_OTLP_ENDPOINT`.
    pub fn from_env() -> Result<Self, StartError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`Self::from_env`] over any lookup (tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, StartError> {
        let non_empty = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let retention = match non_empty("FLEETSTREAM_RETENTION") {
            Some(text) => humantime_duration(&text).map_err(|message| StartError::Env {
                name: "FLEETSTREAM_RETENTION",
                message,
            })?,
            None => DiskStoreConfig::default().retention,
        };
        let index_cache_bytes = match non_empty("FLEETSTREAM_INDEX_CACHE") {
            Some(text) => parse_bytes(&text).map_err(|message| StartError::Env {
                name: "FLEETSTREAM_INDEX_CACHE",
                message,
            })?,
            None => DiskStoreConfig::default().cache_bytes,
        };
        let ttl = match non_empty("FLEETSTREAM_IN_PROGRESS_TTL") {
            Some(text) => Some(
                humantime_duration(&text).map_err(|message| StartError::Env {
                    name: "FLEETSTREAM_IN_PROGRESS_TTL",
                    message,
                })?,
            ),
            None => None,
        };
        let postgres = non_empty("FLEETSTREAM_POSTGRES_URL").map(|url| {
            let mut c = PostgresStoreConfig::new(url);
            c.retention = retention;
            if let Some(table) = non_empty("FLEETSTREAM_POSTGRES_TABLE") {
                c.table = table;
            }
            if let Some(ttl) = ttl {
                c.in_progress_ttl = ttl;
            }
            c
        });
        let dynamodb = match non_empty("FLEETSTREAM_DYNAMODB_TABLE") {
            Some(table) => Some(DynamoStoreConfig {
                table,
                endpoint: non_empty("FLEETSTREAM_DYNAMODB_ENDPOINT"),
                retention,
                in_progress_ttl: ttl.unwrap_or(DynamoStoreConfig::default().in_progress_ttl),
            }),
            None if non_empty("FLEETSTREAM_DYNAMODB_ENDPOINT").is_some() => {
                return Err(StartError::Env {
                    name: "FLEETSTREAM_DYNAMODB_ENDPOINT",
                    message: "set without FLEETSTREAM_DYNAMODB_TABLE".into(),
                })
            }
            None => None,
        };
        if postgres.is_some() && dynamodb.is_some() {
            return Err(StartError::Env {
                name: "FLEETSTREAM_DYNAMODB_TABLE",
                message: "set together with FLEETSTREAM_POSTGRES_URL; choose one shared store"
                    .into(),
            });
        }
        Ok(Self {
            postgres,
            dynamodb,
            routes: non_empty("FLEETSTREAM_ROUTES").map(PathBuf::from),
            state_dir: non_empty("FLEETSTREAM_STATE_DIR")
                .map_or_else(|| PathBuf::from(DEFAULT_STATE_DIR), PathBuf::from),
            retention,
            index_cache_bytes,
            otlp_endpoint: non_empty("FLEETSTREAM_OTLP_ENDPOINT"),
        })
    }

    /// What to warn about at start-up: with no shared store configured, the store is in this
    /// execution environment's `/tmp` and deduplicates per warm instance only.
    pub fn store_warning(&self) -> Option<String> {
        if self.dynamodb.is_some() || self.postgres.is_some() {
            return None;
        }
        Some(format!(
            "idempotency store is in {} of this execution environment: it deduplicates per warm instance only \
             (concurrent instances and cold starts do not see each other's keys); set FLEETSTREAM_DYNAMODB_TABLE \
             for a shared store, the production setting (docs/DISPATCHER.md)",
            self.state_dir.join("idempotency").display()
        ))
    }

    /// Builds the dispatcher: routes, then the DynamoDB or PostgreSQL store if configured, else
    /// a disk store under `<state_dir>/idempotency` (a file store log left there by an older
    /// version is migrated into it once).
    pub async fn build(&self) -> Result<Dispatcher, StartError> {
        let table = match &self.routes {
            Some(path) => RoutingTable::load(path, &self.state_dir)?,
            None => RoutingTable::from_toml_str(DEFAULT_ROUTES, &self.state_dir)?,
        };
        let store: Arc<dyn IdempotencyStore> = match (&self.dynamodb, &self.postgres) {
            (Some(config), _) => Arc::new(DynamoStore::connect(config.clone()).await?),
            (None, Some(config)) => Arc::new(PostgresStore::connect(config.clone()).await?),
            (None, None) => Arc::new(DiskStore::open(
                self.state_dir.join("idempotency"),
                DiskStoreConfig {
                    retention: self.retention,
                    cache_bytes: self.index_cache_bytes,
                    ..Default::default()
                },
            )?),
        };
        let tracer = Tracer::from_settings(
            self.otlp_endpoint.as_deref(),
            "FLEETSTREAM_OTLP_ENDPOINT",
            "fleetstream-dispatcher",
        )?;
        Ok(Dispatcher::new(table, store)?.with_tracer(tracer))
    }
}

/// Parses `67108864`, `512KiB`, `64MiB`.
fn parse_bytes(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let factor = match unit.trim() {
        "" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        "GiB" => 1024 * 1024 * 1024,
        _ => {
            return Err(format!(
                "{text:?} is not a size like 64MiB, 512KiB or 67108864"
            ))
        }
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is not a size like 64MiB, 512KiB or 67108864"))
}

fn humantime_duration(text: &str) -> Result<Duration, String> {
    // `humantime_serde` is what the routing file uses; go through it for the same syntax.
    #[derive(serde::Deserialize)]
    struct D(#[serde(with = "humantime_serde")] Duration);
    serde_json::from_value::<D>(serde_json::Value::String(text.to_owned()))
        .map(|d| d.0)
        .map_err(|e| format!("{text:?} is not a duration like 7d or 36h: {e}"))
}

/// What the function returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LambdaResponse {
    /// Records to retry, Kafka partial batch form (read by Lambda with `ReportBatchItemFailures`).
    pub batch_item_failures: Vec<BatchItemFailure>,
    /// Counts by outcome (ignored by Lambda).
    pub summary: Summary,
}

/// Handles one invocation: decode the Kafka event, dispatch, answer the partial batch response.
/// A malformed event fails the invocation ([`InvokeError`]); per-record failures do not.
///
/// The dispatch is awaited here, not detached: the Lambda runtime awaits each handler to its end
/// and never drops a running one, so the dispatch settles its markers. A function timeout ends
/// the whole environment instead: its markers stay in progress until they expire
/// (`FLEETSTREAM_IN_PROGRESS_TTL`), never released, so a retry cannot apply an effect twice.
pub async fn handle(
    dispatcher: &Dispatcher,
    event: LambdaEvent<serde_json::Value>,
) -> Result<LambdaResponse, InvokeError> {
    let request_id = event.context.request_id.clone();
    let records = decode_event_value(event.payload).map_err(|e| {
        tracing::error!(request_id = %request_id, class = e.class(), error = %e, "malformed Kafka event");
        InvokeError::MalformedEvent {
            class: e.class(),
            message: e.to_string(),
        }
    })?;
    let count = records.len();
    // Kafka-to-dispatcher time of the oldest record: this function's lag, in time.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let oldest_ms = records
        .iter()
        .filter(|r| r.timestamp_ms >= 0)
        .map(|r| (now_ms - r.timestamp_ms).max(0))
        .max();
    let sampled = records
        .iter()
        .any(|r| r.trace_parent().is_some_and(|p| p.sampled));
    let response = dispatcher.dispatch(records).await;
    if let Some(tracer) = dispatcher.tracer().filter(|_| sampled).cloned() {
        // Lambda freezes the sandbox once the invocation returns: send the spans now.
        let flushed = tokio::task::spawn_blocking(move || tracer.flush()).await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(request_id = %request_id, error = %e, "spans not exported");
        }
    }
    let s = response.summary;
    tracing::info!(
        request_id = %request_id,
        records = count,
        dispatched = s.dispatched,
        duplicates = s.duplicates,
        failed = s.failed,
        skipped = s.skipped,
        conflicts = s.conflicts,
        record_age_ms_max = oldest_ms,
        "batch dispatched"
    );
    Ok(LambdaResponse {
        batch_item_failures: response.batch_item_failures,
        summary: s,
    })
}

/// JSON logs on stderr (CloudWatch Logs keeps one JSON object per line). Filter:
/// `FLEETSTREAM_LOG`, else `RUST_LOG`, else `info` (one line per batch).
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("FLEETSTREAM_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_current_span(false)
        .try_init();
}

/// Builds the dispatcher from the environment and runs the Lambda runtime loop until it fails.
///
/// Needs the Lambda runtime environment (`AWS_LAMBDA_RUNTIME_API`, ...): inside Lambda or a
/// runtime interface emulator (scripts/lambda-emulator).
pub async fn run() -> Result<(), StartError> {
    let config = LambdaConfig::from_env()?;
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        return Err(StartError::Runtime(
            "AWS_LAMBDA_RUNTIME_API is unset: run inside Lambda or under scripts/lambda-emulator"
                .into(),
        ));
    }
    if let Some(warning) = config.store_warning() {
        tracing::warn!("{warning}");
    }
    let dispatcher = Arc::new(config.build().await?);
    tracing::info!(config = ?config, "dispatcher lambda starting");
    let handler = lambda_runtime::service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let dispatcher = Arc::clone(&dispatcher);
        async move { handle(&dispatcher, event).await }
    });
    lambda_runtime::run(handler)
        .await
        .map_err(|e| StartError::Runtime(e.to_string()))
}

#[cfg(test)]
mod tests;
