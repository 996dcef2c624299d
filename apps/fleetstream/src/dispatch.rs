//! `fleetstream dispatch ...`: the dispatcher's deployables that run from the CLI.

use crate::cli::ClusterArgs;
use crate::ConfigError;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use fleetstream_consumer::KafkaTarget;
use fleetstream_dispatcher::idempotency::{
    DiskStore, DiskStoreConfig, DynamoStore, DynamoStoreConfig, IdempotencyStore, PostgresStore,
    PostgresStoreConfig,
};
use fleetstream_dispatcher::routes::TargetKind;
use fleetstream_dispatcher::server::{self, ServerConfig, Token, DEFAULT_MAX_BODY_BYTES};
use fleetstream_dispatcher::targets::Target;
use fleetstream_dispatcher::{Dispatcher, RoutingTable};
use fleetstream_kafka::ProducerSettings;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `dispatch` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum DispatchCommand {
    /// Serve the dispatcher on AWS Lambda's Invoke API, locally.
    ///
    /// Any AWS SDK Lambda client with an endpoint override (e.g. `aws lambda invoke
    /// --endpoint-url http://127.0.0.1:9000 --function-name any ...`) sends Kafka events to
    /// `POST /2015-03-31/functions/{name}/invocations` and gets back the dispatch response:
    /// `results`, `batchItemFailures` (Kafka partial batch form) and `summary` (dispatched,
    /// duplicates, failed, skipped, conflicts). A malformed event gets 400, a missing token 401,
    /// an oversized body 413. `GET /metrics` serves Prometheus text.
    ///
    /// Idempotency keys are kept in <state-dir>/idempotency (an on-disk index whose memory is
    /// bounded by --index-cache: replays after a restart are still duplicates; a file store log
    /// left there by an older version is migrated into it once), or with --postgres-url or
    /// --dynamodb-table in a store shared by several servers. Without --routes every code goes to <state-dir>/dispatched.jsonl.
    ///
    /// Example: fleetstream dispatch serve --listen 127.0.0.1:9000 --state-dir /var/lib/fleetstream --routes config/routes.toml
    Serve(ServeArgs),
}

/// Flags of `dispatch serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The cluster `kafka` targets produce to (--bootstrap is required when the routes have
    /// one; unused otherwise).
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// OpenTelemetry export: a `dispatch` span per record the producer sampled.
    #[command(flatten)]
    pub otlp: crate::cli::OtlpArgs,
    /// Address to listen on; port 0 picks a free port (printed on the first line of output).
    #[arg(
        long,
        env = "FLEETSTREAM_DISPATCH_LISTEN",
        default_value = "127.0.0.1:9000"
    )]
    pub listen: SocketAddr,
    /// Directory for the idempotency store and relative `jsonl` target paths. Created if missing.
    /// One server per directory: the embedded store is single-process.
    #[arg(long, env = "FLEETSTREAM_STATE_DIR")]
    pub state_dir: PathBuf,
    /// Routing file (TOML: code -> targets, see config/routes.toml). Default: every code to
    /// <state-dir>/dispatched.jsonl.
    #[arg(long, env = "FLEETSTREAM_ROUTES")]
    pub routes: Option<PathBuf>,
    /// Require this bearer token on Invoke requests (`Authorization: Bearer <token>` or
    /// `X-Fleetstream-Token: <token>`). Prefer the environment variable: flags show in `ps`.
    #[arg(long, env = "FLEETSTREAM_DISPATCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Largest request body (bytes; suffixes KiB, MiB, KB, MB accepted). Default 6 MiB, Lambda's
    /// synchronous payload limit.
    #[arg(long, env = "FLEETSTREAM_DISPATCH_MAX_BODY", default_value_t = DEFAULT_MAX_BODY_BYTES, value_parser = parse_bytes)]
    pub max_body: usize,
    /// Batches dispatched at once; more wait their turn (like Lambda reserved concurrency).
    /// 0: no limit.
    #[arg(long, env = "FLEETSTREAM_DISPATCH_CONCURRENCY", default_value_t = 0)]
    pub concurrency: usize,
    /// How long completed idempotency keys are remembered. Must exceed the longest redelivery
    /// horizon (topic retention, Lambda's maximum record age: 7 days by default).
    #[arg(long, env = "FLEETSTREAM_DISPATCH_RETENTION", default_value = "7d", value_parser = crate::cli::parse_duration)]
    pub retention: Duration,
    /// Page cache of the embedded idempotency index (bytes; KiB, MiB suffixes). Bounds its
    /// memory whatever the retention; the default 64 MiB keeps the index's branch pages and
    /// recent keys in memory (docs/BENCHMARKS.md: 72 MiB resident with 10 million keys).
    #[arg(long, env = "FLEETSTREAM_INDEX_CACHE", default_value = "64MiB", value_parser = parse_bytes)]
    pub index_cache: usize,
    /// Keep idempotency keys in PostgreSQL instead of the state dir, so several servers (or
    /// Lambda instances) deduplicate against each other, e.g.
    /// postgresql://fleetstream@127.0.0.1:15432/fleetstream. Prefer the environment variable
    /// when the URL holds a password.
    #[arg(long, env = "FLEETSTREAM_POSTGRES_URL", hide_env_values = true)]
    pub postgres_url: Option<String>,
    /// Table of the PostgreSQL store (created if missing).
    #[arg(
        long,
        env = "FLEETSTREAM_POSTGRES_TABLE",
        default_value = "fleetstream_idempotency"
    )]
    pub postgres_table: String,
    /// Keep idempotency keys in this DynamoDB table instead (shared like --postgres-url; region
    /// and credentials from the usual AWS sources). The table has partition key `pk` (string);
    /// see docs/DISPATCHER.md. AWS's endpoint needs the `tls` build.
    #[arg(
        long,
        env = "FLEETSTREAM_DYNAMODB_TABLE",
        conflicts_with = "postgres_url"
    )]
    pub dynamodb_table: Option<String>,
    /// DynamoDB endpoint override, e.g. http://127.0.0.1:8766 (scripts/dynamodb).
    #[arg(
        long,
        env = "FLEETSTREAM_DYNAMODB_ENDPOINT",
        requires = "dynamodb_table"
    )]
    pub dynamodb_endpoint: Option<String>,
}

/// Parses `6291456`, `512KiB`, `6MiB`, `6MB`.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 6291456, 512KiB or 6MiB"))?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        "KB" | "kB" => 1000,
        "MB" => 1000 * 1000,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?}; use KiB, MiB, KB or MB"
            ))
        }
    };
    n.checked_mul(factor)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

/// Runs a `dispatch` subcommand.
pub async fn run(cmd: DispatchCommand) -> anyhow::Result<()> {
    match cmd {
        DispatchCommand::Serve(args) => serve(args).await,
    }
}

/// The store behind a served dispatcher, for its retention housekeeping.
#[derive(Debug, Clone)]
pub enum StoreHandle {
    /// The embedded on-disk store under the state dir.
    Disk(Arc<DiskStore>),
    /// The shared PostgreSQL store.
    Postgres(Arc<PostgresStore>),
    /// The shared DynamoDB store: the table's Time to Live deletes old keys, nothing to do here.
    Dynamo,
}

impl StoreHandle {
    /// Forgets keys older than the retention window; returns how many.
    pub async fn apply_retention(&self) -> anyhow::Result<u64> {
        Ok(match self {
            // Deletes expired bucket files: off the async threads.
            StoreHandle::Disk(store) => {
                let store = Arc::clone(store);
                tokio::task::spawn_blocking(move || store.expire()).await?? as u64
            }
            StoreHandle::Postgres(store) => store.purge().await?,
            StoreHandle::Dynamo => 0,
        })
    }
}

/// How often `dispatch serve` applies retention: hourly, cheap next to a 7-day window.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Builds the dispatcher of `dispatch serve`: routes, then the DynamoDB store if
/// --dynamodb-table is set, the PostgreSQL store if --postgres-url is, else the embedded disk
/// store under the state dir.
pub async fn build_dispatcher(args: &ServeArgs) -> anyhow::Result<(Dispatcher, StoreHandle)> {
    if args.retention.is_zero() {
        anyhow::bail!(ConfigError(
            "--retention (FLEETSTREAM_DISPATCH_RETENTION) must be more than 0: the store would \
             forget each record as soon as it was dispatched, and every redelivery would apply \
             its effect again"
                .into()
        ));
    }
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating --state-dir {}", args.state_dir.display()))?;
    let table = match &args.routes {
        Some(path) => crate::load_routes(path, &args.state_dir)?,
        None => RoutingTable::default_for_state_dir(&args.state_dir),
    };
    let (store, handle): (Arc<dyn IdempotencyStore>, StoreHandle) = match &args.postgres_url {
        _ if args.dynamodb_table.is_some() => {
            let config = DynamoStoreConfig {
                table: args.dynamodb_table.clone().unwrap_or_default(),
                endpoint: args.dynamodb_endpoint.clone(),
                retention: args.retention,
                ..DynamoStoreConfig::default()
            };
            let store = DynamoStore::connect(config)
                .await
                .context("connecting to --dynamodb-table (FLEETSTREAM_DYNAMODB_TABLE)")?;
            (Arc::new(store), StoreHandle::Dynamo)
        }
        Some(url) => {
            let mut config = PostgresStoreConfig::new(url.clone());
            config.table = args.postgres_table.clone();
            config.retention = args.retention;
            let store = Arc::new(
                PostgresStore::connect(config)
                    .await
                    .context("connecting to --postgres-url (FLEETSTREAM_POSTGRES_URL)")?,
            );
            (store.clone(), StoreHandle::Postgres(store))
        }
        None => {
            let config = DiskStoreConfig {
                retention: args.retention,
                cache_bytes: args.index_cache,
                ..Default::default()
            };
            let store = Arc::new(
                DiskStore::open(args.state_dir.join("idempotency"), config)
                    .context("opening the idempotency store")?,
            );
            (store.clone(), StoreHandle::Disk(store))
        }
    };
    let kafka = kafka_targets(args, &table)?;
    let mut dispatcher = Dispatcher::new_with_targets(table, store, kafka)
        .context("building the dispatch targets")?;
    if args.concurrency > 0 {
        dispatcher = dispatcher.with_concurrency_limit(args.concurrency);
    }
    Ok((dispatcher, handle))
}

/// The `kafka` targets of `table`, producing to the cluster of --bootstrap, which they need
/// (an embedded cluster would vanish with the server). None without such targets.
fn kafka_targets(args: &ServeArgs, table: &RoutingTable) -> anyhow::Result<Vec<Arc<dyn Target>>> {
    let Some((name, _)) = table
        .targets()
        .find(|(_, kind)| matches!(kind, TargetKind::Kafka { .. }))
    else {
        return Ok(Vec::new());
    };
    if args.cluster.bootstrap.is_none() {
        bail!(ConfigError(format!(
            "target `{name}` (kind = \"kafka\") needs --bootstrap (FLEETSTREAM_BOOTSTRAP): the cluster to produce to"
        )));
    }
    let cluster = crate::connect(&args.cluster)?;
    KafkaTarget::for_routes(table, &ProducerSettings::new(cluster.connection().clone()))
        .context("creating the producers of the kafka targets")
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let tracer = crate::tracer(&args.otlp, "fleetstream-dispatcher")?;
    let (dispatcher, store) = build_dispatcher(&args).await?;
    let dispatcher = Arc::new(dispatcher.with_tracer(tracer.clone()));
    // Retention housekeeping; the disk store also applies it at every start and sync.
    tokio::spawn(async move {
        let mut every = tokio::time::interval(RETENTION_EVERY);
        every.tick().await;
        loop {
            every.tick().await;
            match store.apply_retention().await {
                Ok(n) => tracing::info!(forgotten = n, "idempotency retention applied"),
                Err(e) => tracing::warn!(error = %e, "idempotency retention failed"),
            }
        }
    });
    let token =
        match &args.token {
            Some(t) => Some(Token::new(t.clone()).ok_or_else(|| {
                ConfigError("--token (FLEETSTREAM_DISPATCH_TOKEN) is empty".into())
            })?),
            None => None,
        };
    let config = ServerConfig {
        max_body_bytes: args.max_body,
        token,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding --listen {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let stop = shutdown_signal()?;
    // First line of output: scripts and tests read the address from it. A closed stdout is not
    // a reason to stop serving: write errors are ignored.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "fleetstream dispatch serve: listening on http://{addr}"
    );
    let _ = writeln!(
        out,
        "  invoke:  POST http://{addr}/2015-03-31/functions/<any-name>/invocations"
    );
    let _ = writeln!(out, "  metrics: GET  http://{addr}/metrics");
    drop(out);
    crate::announce_tracer(tracer.as_ref(), None);
    let _ = std::io::stdout().flush();
    let app = server::router(dispatcher, config);
    server::serve(listener, app, stop)
        .await
        .context("serving")?;
    crate::shutdown_tracers(&[tracer]).await;
    let _ = writeln!(std::io::stdout(), "fleetstream dispatch serve: stopped");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled (the server polls it from a task of its own): a signal sent as soon
/// as the "listening" line is out is always handled, never the default action that would kill
/// the process before it exports its spans.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("100"), Ok(100));
        assert_eq!(parse_bytes("6MiB"), Ok(6 * 1024 * 1024));
        assert_eq!(parse_bytes("2 KB"), Ok(2000));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("6GB").is_err());
        assert!(parse_bytes("x").is_err());
    }
}
