//! Time buckets of completed keys: one redb file per slice of the retention window, named
//! `<start_ms>-<end_ms>.redb`, so expiry deletes whole files (no long delete transaction that
//! would stall dispatches, and disk use follows the retention window).

use super::super::StoreError;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::fs;
use std::path::{Path, PathBuf};

/// A completed key to write: `(key, payload hash, completed at Unix ms)`.
pub(super) type Entry<'a> = (&'a str, u64, u64);

/// Key -> (payload hash, completion time in Unix ms).
const DONE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("done");

/// Buckets per retention window: 7 is one a day at the default 7 days, so a key is deleted at
/// most a day after its retention ends.
pub(super) const BUCKETS_PER_RETENTION: u64 = 7;
/// Narrowest bucket (1 minute): a tiny retention (tests) must not create a file per batch.
const MIN_BUCKET_MS: u64 = 60_000;

pub(super) fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Database(format!("disk index: {}", e.into()))
}

struct Bucket {
    start: u64,
    end: u64,
    path: PathBuf,
    db: Database,
    /// Has commits not yet made durable.
    dirty: bool,
}

/// The bucket files of one store, oldest first. Not locked itself.
pub(super) struct Buckets {
    dir: PathBuf,
    width_ms: u64,
    cache_bytes: usize,
    list: Vec<Bucket>,
}

impl Buckets {
    /// Opens every bucket file in `dir` (created if missing).
    pub(super) fn open(
        dir: &Path,
        retention_ms: u64,
        cache_bytes: usize,
    ) -> Result<Self, StoreError> {
        let mut found = Vec::new();
        let entries = fs::read_dir(dir).map_err(|source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".redb")) else {
                continue;
            };
            let Some((start, end)) = stem.split_once('-') else {
                continue;
            };
            if let (Ok(start), Ok(end)) = (start.parse::<u64>(), end.parse::<u64>()) {
                found.push((start, end, entry.path()));
            }
        }
        found.sort_by_key(|(start, _, _)| *start);
        let mut buckets = Self {
            dir: dir.to_owned(),
            width_ms: (retention_ms / BUCKETS_PER_RETENTION).max(MIN_BUCKET_MS),
            cache_bytes,
            list: Vec::with_capacity(found.len()),
        };
        let last = found.len().saturating_sub(1);
        for (i, (start, end, path)) in found.into_iter().enumerate() {
            let db = buckets.open_db(&path, i == last)?;
            buckets.list.push(Bucket {
                start,
                end,
                path,
                db,
                dirty: false,
            });
        }
        Ok(buckets)
    }

    /// The newest bucket gets half the cache (it takes every write); the others share the rest.
    fn open_db(&self, path: &Path, newest: bool) -> Result<Database, StoreError> {
        let half = self.cache_bytes / 2;
        let cache = if newest {
            half
        } else {
            half / BUCKETS_PER_RETENTION as usize
        };
        let db = Database::builder()
            .set_cache_size(cache.max(1024 * 1024))
            .create(path)
            .map_err(db_err)?;
        // Make sure the table exists, so readers never meet a missing one.
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(DONE).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(db)
    }

    /// For each key, its newest entry `(hash, completed_at_ms)`, looking at buckets newest first
    /// and skipping buckets that end before `cutoff_ms` (wholly expired). One read transaction
    /// per bucket for the whole batch.
    pub(super) fn lookup(
        &self,
        keys: &[&str],
        cutoff_ms: u64,
    ) -> Result<Vec<Option<(u64, u64)>>, StoreError> {
        let mut out = vec![None; keys.len()];
        let mut open = keys.len();
        for bucket in self.list.iter().rev() {
            if open == 0 || bucket.end <= cutoff_ms {
                break;
            }
            let txn = bucket.db.begin_read().map_err(db_err)?;
            let table = txn.open_table(DONE).map_err(db_err)?;
            for (key, slot) in keys.iter().zip(out.iter_mut()) {
                if slot.is_none() {
                    if let Some(v) = table.get(*key).map_err(db_err)? {
                        *slot = Some(v.value());
                        open -= 1;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Index of the bucket that takes a key completed at `t`: the one whose slice holds `t`,
    /// else a new newest one, else (an old `t` in no slice, from a replayed log) the newest.
    fn bucket_for(&mut self, t: u64) -> Result<usize, StoreError> {
        if let Some(i) = self.list.iter().rposition(|b| b.start <= t && t < b.end) {
            return Ok(i);
        }
        let newest_end = self.list.last().map(|b| b.end);
        if newest_end.is_some_and(|end| t < end) {
            return Ok(self.list.len() - 1);
        }
        let start = (t / self.width_ms * self.width_ms).max(newest_end.unwrap_or(0));
        let end = start + self.width_ms;
        // The previous newest stops taking writes: sync it, reopen it with a small cache.
        if let Some(prev) = self.list.pop() {
            sync(&prev.db)?;
            let path = prev.path.clone();
            drop(prev);
            let db = self.open_db(&path, false)?;
            let (start, end) = parse_name(&path).unwrap_or((0, 0));
            self.list.push(Bucket {
                start,
                end,
                path,
                db,
                dirty: false,
            });
        }
        let path = self.dir.join(format!("{start}-{end}.redb"));
        let db = self.open_db(&path, true)?;
        self.list.push(Bucket {
            start,
            end,
            path,
            db,
            dirty: false,
        });
        Ok(self.list.len() - 1)
    }

    /// Writes `(key, hash, completed_at_ms)` entries, one transaction per bucket touched
    /// (normally one). `durable`: commit with `fsync`; otherwise the caller's pending log
    /// covers them until [`Self::sync`].
    pub(super) fn insert(
        &mut self,
        entries: &[Entry<'_>],
        durable: bool,
    ) -> Result<(), StoreError> {
        // Bucket indices are stable: `bucket_for` only appends.
        let mut groups: Vec<(usize, Vec<&Entry<'_>>)> = Vec::new();
        for entry in entries {
            let i = self.bucket_for(entry.2)?;
            match groups.iter_mut().find(|(g, _)| *g == i) {
                Some((_, group)) => group.push(entry),
                None => groups.push((i, vec![entry])),
            }
        }
        for (i, group) in groups {
            let Some(bucket) = self.list.get_mut(i) else {
                continue;
            };
            let mut txn = bucket.db.begin_write().map_err(db_err)?;
            if durable {
                txn.set_quick_repair(true);
            } else {
                txn.set_durability(Durability::None).map_err(db_err)?;
            }
            {
                let mut table = txn.open_table(DONE).map_err(db_err)?;
                for (key, hash, t) in group {
                    table.insert(*key, (*hash, *t)).map_err(db_err)?;
                }
            }
            txn.commit().map_err(db_err)?;
            // A durable commit also makes the earlier non-durable ones durable.
            bucket.dirty = !durable;
        }
        Ok(())
    }

    /// Makes every bucket's commits durable (`fsync`).
    pub(super) fn sync(&mut self) -> Result<(), StoreError> {
        for bucket in self.list.iter_mut().filter(|b| b.dirty) {
            sync(&bucket.db)?;
            bucket.dirty = false;
        }
        Ok(())
    }

    /// Deletes the files of buckets that end at or before `cutoff_ms`; returns how many.
    pub(super) fn expire(&mut self, cutoff_ms: u64) -> Result<usize, StoreError> {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.list)
            .into_iter()
            .partition(|b| b.end <= cutoff_ms);
        self.list = kept;
        let n = gone.len();
        for bucket in gone {
            let path = bucket.path.clone();
            drop(bucket);
            fs::remove_file(&path).map_err(|source| StoreError::Io {
                path: path.display().to_string(),
                source,
            })?;
        }
        Ok(n)
    }

    /// Bucket files open.
    pub(super) fn len(&self) -> usize {
        self.list.len()
    }
}

fn parse_name(path: &Path) -> Option<(u64, u64)> {
    let stem = path.file_stem()?.to_str()?;
    let (a, b) = stem.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// An empty commit with `fsync`: makes the earlier non-durable commits durable, and saves the
/// allocator state (quick repair) so reopening after a crash does not scan the whole file.
fn sync(db: &Database) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(db_err)?;
    txn.set_quick_repair(true);
    txn.commit().map_err(db_err)
}
