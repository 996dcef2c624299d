//! PostgreSQL store (feature `postgres`): one table shared by every dispatcher instance, so
//! concurrent Lambda instances or servers deduplicate against each other.
//!
//! Same semantics as [`super::FileStore`], with the state in rows instead of process memory:
//! - `begin` is one conditional upsert: insert an in-progress row, or take over a row whose
//!   in-progress marker expired or whose completion is older than the retention window.
//!   Row locking makes it atomic: of two concurrent `begin`s on one key exactly one acquires,
//!   whatever the instance. Otherwise a lookup tells `Duplicate`, `InProgress` or `Conflict`
//!   (different payload hash; reported, never executed).
//! - `complete` turns the caller's in-progress row into done; `abort` deletes it.
//! - Times come from the database clock (`clock_timestamp()`), so instances' clock skew does
//!   not matter. [`PostgresStore::purge`] deletes completed rows older than the retention window
//!   (run it hourly); until then such rows are treated as absent anyway.
//!
//! Plain TCP (no TLS): run it inside the VPC, or add TLS before exposing the database.

use super::{Begin, IdempotencyStore, StoreError, DEFAULT_IN_PROGRESS_TTL};
use futures::future::{BoxFuture, FutureExt};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls, Statement};

/// Default table name.
pub const DEFAULT_TABLE: &str = "fleetstream_idempotency";

/// Settings of [`PostgresStore`].
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresStoreConfig {
    /// Connection string, `postgresql://user[:password]@host:port/db` or `host=.. user=..`.
    /// Required. `Debug` prints `***` (it may hold a password).
    pub url: String,
    /// Table; created if missing. Default [`DEFAULT_TABLE`]. Letters, digits and `_` only.
    pub table: String,
    /// How long a completed key is remembered. Default 7 days; must exceed the longest
    /// redelivery horizon (see [`super::FileStoreConfig::retention`]).
    pub retention: Duration,
    /// Lifetime of an in-progress marker. Default 15 min (Lambda's maximum timeout); must exceed
    /// the longest delivery, or a second instance may start the same key beside it.
    pub in_progress_ttl: Duration,
}

impl std::fmt::Debug for PostgresStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStoreConfig")
            .field("url", &"***")
            .field("table", &self.table)
            .field("retention", &self.retention)
            .field("in_progress_ttl", &self.in_progress_ttl)
            .finish()
    }
}

impl PostgresStoreConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            table: DEFAULT_TABLE.to_owned(),
            retention: Duration::from_secs(7 * 24 * 3600),
            in_progress_ttl: DEFAULT_IN_PROGRESS_TTL,
        }
    }
}

fn db_err(e: tokio_postgres::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// One connection with its prepared statements.
struct Conn {
    client: Client,
    begin: Statement,
    lookup: Statement,
    complete: Statement,
    abort: Statement,
    begin_many: Statement,
    lookup_many: Statement,
    complete_many: Statement,
    abort_many: Statement,
}

/// The PostgreSQL-backed store. One connection, pipelined: concurrent calls share it. A broken
/// connection is replaced on the next call (that call fails, retriable).
pub struct PostgresStore {
    config: PostgresStoreConfig,
    conn: Mutex<Option<Arc<Conn>>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the epoch on the database clock.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

impl PostgresStore {
    /// Connects, creates the table if missing and prepares the statements.
    pub async fn connect(config: PostgresStoreConfig) -> Result<Self, StoreError> {
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '_';
        if config.table.is_empty()
            || !config.table.chars().all(valid)
            || config.table.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(StoreError::Database(format!(
                "table name {:?}: use letters, digits and '_' (not first)",
                config.table
            )));
        }
        let store = Self {
            config,
            conn: Mutex::new(None),
        };
        store.conn().await?;
        Ok(store)
    }

    async fn open(&self) -> Result<Conn, StoreError> {
        let (client, connection) = tokio_postgres::connect(&self.config.url, NoTls)
            .await
            .map_err(db_err)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "idempotency store connection closed");
            }
        });
        let t = &self.config.table;
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                    key TEXT PRIMARY KEY,
                    payload_hash BIGINT NOT NULL,
                    done BOOLEAN NOT NULL,
                    expires_ms BIGINT,
                    done_ms BIGINT
                );
                CREATE INDEX IF NOT EXISTS {t}_done_ms ON {t} (done_ms) WHERE done"
            ))
            .await
            .map_err(db_err)?;
        // $1 key, $2 hash, $3 in-progress ttl ms, $4 retention ms.
        let begin = client
            .prepare(&format!(
                "INSERT INTO {t} AS r (key, payload_hash, done, expires_ms, done_ms)
                 VALUES ($1, $2, false, {NOW_MS} + $3, NULL)
                 ON CONFLICT (key) DO UPDATE
                   SET payload_hash = EXCLUDED.payload_hash, done = false,
                       expires_ms = EXCLUDED.expires_ms, done_ms = NULL
                   WHERE (NOT r.done AND r.expires_ms <= {NOW_MS})
                      OR (r.done AND r.done_ms < {NOW_MS} - $4)
                 RETURNING 1"
            ))
            .await
            .map_err(db_err)?;
        let lookup = client
            .prepare(&format!(
                "SELECT payload_hash, done FROM {t} WHERE key = $1"
            ))
            .await
            .map_err(db_err)?;
        let complete = client
            .prepare(&format!(
                "UPDATE {t} SET done = true, done_ms = {NOW_MS}, expires_ms = NULL
                 WHERE key = $1 AND NOT done"
            ))
            .await
            .map_err(db_err)?;
        let abort = client
            .prepare(&format!("DELETE FROM {t} WHERE key = $1 AND NOT done"))
            .await
            .map_err(db_err)?;
        // The batch forms: one statement per batch. Keys are locked in sorted order so two
        // instances upserting overlapping batches do not deadlock.
        let begin_many = client
            .prepare(&format!(
                "INSERT INTO {t} AS r (key, payload_hash, done, expires_ms, done_ms)
                 SELECT k, h, false, {NOW_MS} + $3, NULL
                   FROM unnest($1::text[], $2::bigint[]) AS i(k, h) ORDER BY k
                 ON CONFLICT (key) DO UPDATE
                   SET payload_hash = EXCLUDED.payload_hash, done = false,
                       expires_ms = EXCLUDED.expires_ms, done_ms = NULL
                   WHERE (NOT r.done AND r.expires_ms <= {NOW_MS})
                      OR (r.done AND r.done_ms < {NOW_MS} - $4)
                 RETURNING key"
            ))
            .await
            .map_err(db_err)?;
        let lookup_many = client
            .prepare(&format!(
                "SELECT key, payload_hash, done FROM {t} WHERE key = ANY($1)"
            ))
            .await
            .map_err(db_err)?;
        let complete_many = client
            .prepare(&format!(
                "UPDATE {t} SET done = true, done_ms = {NOW_MS}, expires_ms = NULL
                 WHERE key = ANY($1) AND NOT done"
            ))
            .await
            .map_err(db_err)?;
        let abort_many = client
            .prepare(&format!("DELETE FROM {t} WHERE key = ANY($1) AND NOT done"))
            .await
            .map_err(db_err)?;
        Ok(Conn {
            client,
            begin,
            lookup,
            complete,
            abort,
            begin_many,
            lookup_many,
            complete_many,
            abort_many,
        })
    }

    async fn conn(&self) -> Result<Arc<Conn>, StoreError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.client.is_closed()) {
            return Ok(Arc::clone(conn));
        }
        let conn = Arc::new(self.open().await?);
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }

    fn millis(d: Duration) -> i64 {
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }

    async fn begin_inner(&self, key: &str, payload_hash: u64) -> Result<Begin, StoreError> {
        let conn = self.conn().await?;
        // Stored as the same 64 bits, signed.
        let hash = payload_hash as i64;
        let ttl = Self::millis(self.config.in_progress_ttl);
        let retention = Self::millis(self.config.retention);
        let acquired = conn
            .client
            .query_opt(&conn.begin, &[&key, &hash, &ttl, &retention])
            .await
            .map_err(db_err)?;
        if acquired.is_some() {
            return Ok(Begin::Acquired);
        }
        let row = conn
            .client
            .query_opt(&conn.lookup, &[&key])
            .await
            .map_err(db_err)?;
        Ok(match row {
            // Deleted in between (an abort): someone else is retrying it right now.
            None => Begin::InProgress,
            Some(row) => {
                let (stored, done): (i64, bool) = (row.get(0), row.get(1));
                match (stored == hash, done) {
                    (false, _) => Begin::Conflict,
                    (true, true) => Begin::Duplicate,
                    (true, false) => Begin::InProgress,
                }
            }
        })
    }

    async fn begin_many_inner(&self, keys: &[(String, u64)]) -> Result<Vec<Begin>, StoreError> {
        let distinct: HashSet<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
        if distinct.len() != keys.len() {
            return Err(StoreError::Database(
                "begin_many needs distinct keys".into(),
            ));
        }
        let conn = self.conn().await?;
        let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
        let hashes: Vec<i64> = keys.iter().map(|(_, h)| *h as i64).collect();
        let ttl = Self::millis(self.config.in_progress_ttl);
        let retention = Self::millis(self.config.retention);
        let acquired: HashSet<String> = conn
            .client
            .query(&conn.begin_many, &[&names, &hashes, &ttl, &retention])
            .await
            .map_err(db_err)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let others: Vec<&str> = names
            .iter()
            .copied()
            .filter(|k| !acquired.contains(*k))
            .collect();
        let mut stored: HashMap<String, (i64, bool)> = HashMap::new();
        if !others.is_empty() {
            let rows = conn.client.query(&conn.lookup_many, &[&others]).await;
            let rows = match rows {
                Ok(rows) => rows,
                Err(e) => {
                    // Hold nothing on error: release what this call took.
                    let taken: Vec<&str> = acquired.iter().map(String::as_str).collect();
                    let _ = conn.client.execute(&conn.abort_many, &[&taken]).await;
                    return Err(db_err(e));
                }
            };
            for row in rows {
                stored.insert(row.get(0), (row.get(1), row.get(2)));
            }
        }
        Ok(keys
            .iter()
            .map(|(key, hash)| {
                if acquired.contains(key) {
                    return Begin::Acquired;
                }
                match stored.get(key) {
                    None => Begin::InProgress,
                    Some(&(h, _)) if h != *hash as i64 => Begin::Conflict,
                    Some(&(_, true)) => Begin::Duplicate,
                    Some(&(_, false)) => Begin::InProgress,
                }
            })
            .collect())
    }

    async fn execute_many(
        &self,
        pick: fn(&Conn) -> &Statement,
        keys: &[String],
    ) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.client
            .execute(pick(&conn), &[&keys])
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Deletes completed keys older than the retention window; returns how many.
    pub async fn purge(&self) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        let retention = Self::millis(self.config.retention);
        conn.client
            .execute(
                &format!(
                    "DELETE FROM {} WHERE done AND done_ms < {NOW_MS} - $1",
                    self.config.table
                ),
                &[&retention],
            )
            .await
            .map_err(db_err)
    }

    /// Deletes every row (tests and benchmarks).
    pub async fn clear(&self) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.client
            .batch_execute(&format!("TRUNCATE {}", self.config.table))
            .await
            .map_err(db_err)
    }
}

impl IdempotencyStore for PostgresStore {
    fn begin<'a>(
        &'a self,
        key: &'a str,
        payload_hash: u64,
    ) -> BoxFuture<'a, Result<Begin, StoreError>> {
        self.begin_inner(key, payload_hash).boxed()
    }

    fn complete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let conn = self.conn().await?;
            conn.client
                .execute(&conn.complete, &[&key])
                .await
                .map_err(db_err)?;
            Ok(())
        }
        .boxed()
    }

    fn abort<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let conn = self.conn().await?;
            conn.client
                .execute(&conn.abort, &[&key])
                .await
                .map_err(db_err)?;
            Ok(())
        }
        .boxed()
    }

    /// Two statements per batch: the conditional upsert, then one lookup for the keys it did
    /// not acquire.
    fn begin_many<'a>(
        &'a self,
        keys: &'a [(String, u64)],
    ) -> BoxFuture<'a, Result<Vec<Begin>, StoreError>> {
        self.begin_many_inner(keys).boxed()
    }

    fn complete_many<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<(), StoreError>> {
        self.execute_many(|c| &c.complete_many, keys).boxed()
    }

    fn abort_many<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<(), StoreError>> {
        self.execute_many(|c| &c.abort_many, keys).boxed()
    }
}
