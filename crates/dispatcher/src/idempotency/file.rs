//! Embedded file-backed store: an append-only log of completed keys under the state dir.

use super::memory::{unix_ms_now, Markers};
use super::{Begin, IdempotencyStore, StoreError, DEFAULT_IN_PROGRESS_TTL};
use futures::future::{BoxFuture, FutureExt};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// File name of the log inside the store directory.
pub const LOG_FILE: &str = "idempotency.jsonl";

/// Settings of [`FileStore`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileStoreConfig {
    /// How long a completed key is remembered. Default `7d`.
    ///
    /// Must exceed the longest redelivery horizon: a record redelivered after its key was
    /// forgotten is executed again. The horizon is the oldest record anything may still deliver:
    /// Kafka's default topic retention (7 days, someone resets a group to `earliest`) and the
    /// longest Lambda "maximum record age" (604,800 s = 7 days). Raise it with topic retention.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Lifetime of an in-progress marker. Default `15m` (Lambda's maximum timeout); must exceed
    /// the longest single delivery, or a second delivery may run beside it. Markers live in
    /// memory only: a restarted process has none, so a crash never blocks a key.
    #[serde(with = "humantime_serde")]
    pub in_progress_ttl: Duration,
    /// `fsync` after every completed key. Default `false`: each key is written to the OS at once
    /// (survives a process crash); only a machine crash can lose the last few, which then repeat
    /// their effect once on redelivery.
    pub fsync: bool,
}

impl Default for FileStoreConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(7 * 24 * 3600),
            in_progress_ttl: DEFAULT_IN_PROGRESS_TTL,
            fsync: false,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Line {
    /// Key.
    k: String,
    /// Payload hash.
    h: u64,
    /// Completion time, Unix ms.
    t: u64,
}

/// [`Line`] borrowed, for writing.
#[derive(Serialize)]
struct LineRef<'a> {
    k: &'a str,
    h: u64,
    t: u64,
}

#[derive(Debug)]
struct Inner {
    markers: Markers,
    file: File,
}

/// Completed keys in `<dir>/idempotency.jsonl`, one JSON line each, loaded on open.
///
/// Single-process: two processes must not share a directory (their in-progress markers are
/// not visible to each other). Writes are small and done under a lock on the calling thread.
#[derive(Debug)]
pub struct FileStore {
    inner: Mutex<Inner>,
    path: PathBuf,
    config: FileStoreConfig,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl FileStore {
    /// Opens (creating if needed) the store in `dir`, loading completed keys younger than the
    /// retention window and compacting the log if anything was dropped.
    pub fn open(dir: impl AsRef<Path>, config: FileStoreConfig) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(LOG_FILE);
        let cutoff = unix_ms_now().saturating_sub(config.retention.as_millis() as u64);
        let mut markers = Markers::default();
        let (mut kept, mut dropped, mut corrupt) = (0usize, 0usize, 0usize);
        if path.exists() {
            let reader = BufReader::new(File::open(&path).map_err(io_err(&path))?);
            for line in reader.split(b'\n') {
                let line = line.map_err(io_err(&path))?;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match serde_json::from_slice::<Line>(&line) {
                    Ok(l) if l.t >= cutoff => {
                        markers.insert_done(l.k, l.h, l.t);
                        kept += 1;
                    }
                    Ok(_) => dropped += 1,
                    // A torn last line from a crash mid-write, or damage: the key is lost, so
                    // that record may repeat its effect once. Say so.
                    Err(_) => corrupt += 1,
                }
            }
        }
        if corrupt > 0 {
            tracing::warn!(path = %path.display(), corrupt, "idempotency log had unreadable lines; dropped them");
        }
        tracing::debug!(path = %path.display(), kept, dropped, "idempotency log loaded");
        // Same key logged twice (only after a retention expiry) also shrinks on rewrite.
        let rewrite = dropped + corrupt > 0 || kept != markers.done().count();
        let file = if rewrite {
            write_compacted(&path, &markers)?
        } else {
            open_append(&path)?
        };
        Ok(Self {
            inner: Mutex::new(Inner { markers, file }),
            path,
            config,
        })
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Forgets keys older than the retention window and rewrites the log with the rest.
    /// Returns how many keys were forgotten. Cheap enough to run hourly.
    pub fn compact(&self) -> Result<usize, StoreError> {
        let cutoff = unix_ms_now().saturating_sub(self.config.retention.as_millis() as u64);
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let forgotten = inner.markers.forget_done_before(cutoff);
        inner.file = write_compacted(&self.path, &inner.markers)?;
        Ok(forgotten)
    }
}

fn open_append(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err(path))
}

/// Writes the done keys to a temporary file, syncs it and renames it over the log, so a crash
/// leaves either the old or the new log, never half of one.
fn write_compacted(path: &Path, markers: &Markers) -> Result<File, StoreError> {
    let tmp = path.with_extension("jsonl.tmp");
    let mut buf = Vec::new();
    for (k, h, t) in markers.done() {
        let line = Line {
            k: k.to_owned(),
            h,
            t,
        };
        // Serializing a struct of a string and two integers cannot fail.
        if serde_json::to_writer(&mut buf, &line).is_ok() {
            buf.push(b'\n');
        }
    }
    let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(&buf).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    open_append(path)
}

impl IdempotencyStore for FileStore {
    fn begin<'a>(
        &'a self,
        key: &'a str,
        payload_hash: u64,
    ) -> BoxFuture<'a, Result<Begin, StoreError>> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let result = inner
            .markers
            .begin(key, payload_hash, self.config.in_progress_ttl);
        futures::future::ready(Ok(result)).boxed()
    }

    fn complete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let result = (|| {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let Some((h, t)) = inner.markers.complete(key) else {
                return Ok(());
            };
            let mut line = serde_json::to_vec(&Line {
                k: key.to_owned(),
                h,
                t,
            })
            .unwrap_or_default();
            line.push(b'\n');
            // One write_all per line on an O_APPEND file: a crash leaves at most a torn last line.
            inner.file.write_all(&line).map_err(io_err(&self.path))?;
            if self.config.fsync {
                inner.file.sync_data().map_err(io_err(&self.path))?;
            }
            Ok(())
        })();
        futures::future::ready(result).boxed()
    }

    fn abort<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.markers.abort(key);
        futures::future::ready(Ok(())).boxed()
    }

    fn begin_many<'a>(
        &'a self,
        keys: &'a [(String, u64)],
    ) -> BoxFuture<'a, Result<Vec<Begin>, StoreError>> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let ttl = self.config.in_progress_ttl;
        let out = keys
            .iter()
            .map(|(k, h)| inner.markers.begin(k, *h, ttl))
            .collect();
        futures::future::ready(Ok(out)).boxed()
    }

    /// All lines in one `write` (one syscall per batch, not per key).
    fn complete_many<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<(), StoreError>> {
        let result = (|| {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let mut buf = Vec::with_capacity(keys.len() * 64);
            for key in keys {
                if let Some((h, t)) = inner.markers.complete(key) {
                    if serde_json::to_writer(&mut buf, &LineRef { k: key, h, t }).is_ok() {
                        buf.push(b'\n');
                    }
                }
            }
            if buf.is_empty() {
                return Ok(());
            }
            // One write_all on an O_APPEND file: a crash leaves at most a torn last line.
            inner.file.write_all(&buf).map_err(io_err(&self.path))?;
            if self.config.fsync {
                inner.file.sync_data().map_err(io_err(&self.path))?;
            }
            Ok(())
        })();
        futures::future::ready(result).boxed()
    }

    fn abort_many<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        for key in keys {
            inner.markers.abort(key);
        }
        futures::future::ready(Ok(())).boxed()
    }
}
