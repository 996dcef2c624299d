use super::conformance::{protocol, protocol_many};
use super::*;
use futures::future::BoxFuture;
use std::io::Write;
use std::sync::Arc;

#[tokio::test]
async fn memory_store_follows_the_protocol() {
    protocol(&MemoryStore::default()).await;
    protocol_many(&MemoryStore::default()).await;
}

#[tokio::test]
async fn default_batch_methods_follow_the_protocol() {
    /// Only the single-key methods: the trait's default batch methods are used.
    struct Single(MemoryStore);
    impl IdempotencyStore for Single {
        fn begin<'a>(&'a self, key: &'a str, h: u64) -> BoxFuture<'a, Result<Begin, StoreError>> {
            self.0.begin(key, h)
        }
        fn complete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
            self.0.complete(key)
        }
        fn abort<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
            self.0.abort(key)
        }
    }
    protocol_many(&Single(MemoryStore::default())).await;
}

#[tokio::test]
async fn file_store_follows_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    protocol(&FileStore::open(dir.path(), FileStoreConfig::default()).unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    protocol_many(&FileStore::open(dir.path(), FileStoreConfig::default()).unwrap()).await;
    // Batched completions were logged: they survive a reopen.
    let store = FileStore::open(dir.path(), FileStoreConfig::default()).unwrap();
    assert_eq!(store.begin("x", 1).await.unwrap(), Begin::Duplicate);
    assert_eq!(store.begin("y", 2).await.unwrap(), Begin::Duplicate);
    assert_eq!(store.begin("z", 3).await.unwrap(), Begin::Acquired);
}

#[tokio::test]
async fn expired_marker_can_be_taken_over() {
    let store = MemoryStore::new(Duration::from_millis(0));
    assert_eq!(store.begin("k", 1).await.unwrap(), Begin::Acquired);
    assert_eq!(store.begin("k", 1).await.unwrap(), Begin::Acquired);
}

#[tokio::test]
async fn file_store_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = FileStore::open(dir.path(), FileStoreConfig::default()).unwrap();
        for key in ["k1", "k2"] {
            assert_eq!(store.begin(key, 7).await.unwrap(), Begin::Acquired);
            store.complete(key).await.unwrap();
        }
        // In progress at "crash": not remembered, so the redelivery runs.
        assert_eq!(store.begin("k3", 7).await.unwrap(), Begin::Acquired);
    }
    let store = FileStore::open(dir.path(), FileStoreConfig::default()).unwrap();
    assert_eq!(store.begin("k1", 7).await.unwrap(), Begin::Duplicate);
    assert_eq!(store.begin("k2", 8).await.unwrap(), Begin::Conflict);
    assert_eq!(store.begin("k3", 7).await.unwrap(), Begin::Acquired);
}

#[tokio::test]
async fn file_store_forgets_entries_older_than_retention_and_torn_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file::LOG_FILE);
    let now = memory::unix_ms_now();
    let old = now - 8 * 24 * 3600 * 1000;
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(f, r#"{{"k":"old","h":1,"t":{old}}}"#).unwrap();
    writeln!(f, r#"{{"k":"new","h":1,"t":{now}}}"#).unwrap();
    write!(f, r#"{{"k":"torn","h":1,"#).unwrap(); // crash mid-write, no newline
    drop(f);
    let store = FileStore::open(dir.path(), FileStoreConfig::default()).unwrap();
    assert_eq!(store.begin("new", 1).await.unwrap(), Begin::Duplicate);
    assert_eq!(store.begin("old", 1).await.unwrap(), Begin::Acquired);
    // The log was rewritten: appending after the torn line does not corrupt the next key.
    store.complete("old").await.unwrap();
    drop(store);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("torn"), "{text}");
    let store = FileStore::open(dir.path(), FileStoreConfig::default()).unwrap();
    assert_eq!(store.begin("old", 1).await.unwrap(), Begin::Duplicate);
    assert_eq!(store.begin("new", 1).await.unwrap(), Begin::Duplicate);
}

#[tokio::test]
async fn compact_applies_retention() {
    let dir = tempfile::tempdir().unwrap();
    let config = FileStoreConfig {
        retention: Duration::ZERO,
        ..Default::default()
    };
    let store = FileStore::open(dir.path(), config).unwrap();
    assert_eq!(store.begin("k", 1).await.unwrap(), Begin::Acquired);
    store.complete("k").await.unwrap();
    std::thread::sleep(Duration::from_millis(2));
    assert_eq!(store.compact().unwrap(), 1);
    assert_eq!(store.begin("k", 1).await.unwrap(), Begin::Acquired);
}

#[test]
fn payload_hash_is_stable() {
    // Pinned: the file store persists these values across builds.
    assert_eq!(payload_hash(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(payload_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_ne!(payload_hash(b"ab"), payload_hash(b"ba"));
}

#[test]
fn file_store_config_parses_durations_and_rejects_unknown_keys() {
    let c: FileStoreConfig = toml::from_str("retention = \"14d\"\nfsync = true").unwrap();
    assert_eq!(c.retention, Duration::from_secs(14 * 86400));
    assert!(c.fsync);
    let err = toml::from_str::<FileStoreConfig>("retension = \"1d\"").unwrap_err();
    assert!(err.to_string().contains("retension"), "{err}");
}

#[tokio::test]
async fn memory_store_handles_share_one_state() {
    let m: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::default());
    super::conformance::concurrent_begins([Arc::clone(&m), Arc::clone(&m)]).await;
    let m: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::default());
    super::conformance::one_effect_per_record(vec![Arc::clone(&m), m]).await;
}

fn disk(dir: &std::path::Path) -> DiskStore {
    DiskStore::open(dir, DiskStoreConfig::default()).unwrap()
}

#[tokio::test]
async fn disk_store_follows_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    protocol(&disk(dir.path())).await;
    let dir = tempfile::tempdir().unwrap();
    protocol_many(&disk(dir.path())).await;
}

#[tokio::test]
async fn disk_store_expires_markers_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = DiskStoreConfig {
        retention: Duration::ZERO,
        in_progress_ttl: Duration::ZERO,
        ..Default::default()
    };
    super::conformance::expiry(&DiskStore::open(dir.path(), config).unwrap()).await;
}

#[tokio::test]
async fn disk_store_handles_share_one_state() {
    let dir = tempfile::tempdir().unwrap();
    let s: Arc<dyn IdempotencyStore> = Arc::new(disk(dir.path()));
    super::conformance::shared(&*s, &*s).await;
    let dir = tempfile::tempdir().unwrap();
    let s: Arc<dyn IdempotencyStore> = Arc::new(disk(dir.path()));
    super::conformance::concurrent_begins([Arc::clone(&s), Arc::clone(&s)]).await;
    let dir = tempfile::tempdir().unwrap();
    let s: Arc<dyn IdempotencyStore> = Arc::new(disk(dir.path()));
    super::conformance::one_effect_per_record(vec![Arc::clone(&s), s]).await;
}

#[tokio::test]
async fn disk_store_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = disk(dir.path());
        for key in ["k1", "k2"] {
            assert_eq!(store.begin(key, 7).await.unwrap(), Begin::Acquired);
            store.complete(key).await.unwrap();
        }
        let batch: Vec<(String, u64)> = (0..500).map(|i| (format!("b{i}"), i)).collect();
        store.begin_many(&batch).await.unwrap();
        let names: Vec<String> = batch.iter().map(|(k, _)| k.clone()).collect();
        store.complete_many(&names).await.unwrap();
        // In progress at "crash": not remembered, so the redelivery runs.
        assert_eq!(store.begin("k3", 7).await.unwrap(), Begin::Acquired);
    }
    let store = disk(dir.path());
    assert_eq!(store.begin("k1", 7).await.unwrap(), Begin::Duplicate);
    assert_eq!(store.begin("k2", 8).await.unwrap(), Begin::Conflict);
    assert_eq!(store.begin("k3", 7).await.unwrap(), Begin::Acquired);
    assert_eq!(store.begin("b499", 499).await.unwrap(), Begin::Duplicate);
}

#[tokio::test]
async fn disk_store_replays_keys_not_yet_synced_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let config = DiskStoreConfig {
        // Never synced by time: only the pending log has the keys.
        sync_interval: Duration::from_secs(3600),
        ..Default::default()
    };
    let store = DiskStore::open(dir.path(), config.clone()).unwrap();
    assert_eq!(store.begin("k", 1).await.unwrap(), Begin::Acquired);
    store.complete("k").await.unwrap();
    // A crash: no sync on close, the index files keep only what was durable.
    std::mem::forget(store);
    let path = dir.path().join(disk::PENDING_FILE);
    assert!(std::fs::read_to_string(&path).unwrap().contains("\"k\""));
    // The forgotten store still holds the file locks: copy the files as the crash left them.
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
    }
    let store = DiskStore::open(copy.path(), config).unwrap();
    assert_eq!(store.begin("k", 1).await.unwrap(), Begin::Duplicate);
}

#[tokio::test]
async fn disk_store_deletes_buckets_older_than_retention() {
    let dir = tempfile::tempdir().unwrap();
    let now = memory::unix_ms_now();
    {
        let store = disk(dir.path());
        assert_eq!(store.begin("new", 1).await.unwrap(), Begin::Acquired);
        store.complete("new").await.unwrap();
    }
    // A bucket file from 8 days ago (the default retention is 7).
    let old_start = now - 8 * 24 * 3600 * 1000;
    let old = dir
        .path()
        .join(format!("{}-{}.redb", old_start, old_start + 60_000));
    let current = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "redb"))
        .unwrap();
    std::fs::copy(&current, &old).unwrap();
    let store = disk(dir.path());
    assert!(!old.exists(), "expired bucket file kept");
    assert!(current.exists());
    assert_eq!(store.begin("new", 1).await.unwrap(), Begin::Duplicate);
    assert_eq!(store.expire().unwrap(), 0);
}

#[test]
fn disk_store_config_parses_and_rejects_unknown_keys() {
    let c: DiskStoreConfig =
        toml::from_str("retention = \"14d\"\ncache_bytes = 1048576\nsync_interval = \"250ms\"")
            .unwrap();
    assert_eq!(c.retention, Duration::from_secs(14 * 86400));
    assert_eq!(c.cache_bytes, 1 << 20);
    assert_eq!(c.sync_interval, Duration::from_millis(250));
    let err = toml::from_str::<DiskStoreConfig>("cache_size = 1").unwrap_err();
    assert!(err.to_string().contains("cache_size"), "{err}");
}

#[tokio::test]
async fn disk_store_migrates_a_file_store_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let old = FileStore::open(dir.path(), FileStoreConfig::default()).unwrap();
        assert_eq!(old.begin("k", 5).await.unwrap(), Begin::Acquired);
        old.complete("k").await.unwrap();
    }
    let store = disk(dir.path());
    assert_eq!(store.begin("k", 5).await.unwrap(), Begin::Duplicate);
    assert!(!dir.path().join(file::LOG_FILE).exists());
    assert!(dir.path().join("idempotency.jsonl.migrated").exists());
    drop(store);
    // Once: the migrated keys are in the index now.
    assert_eq!(
        disk(dir.path()).begin("k", 6).await.unwrap(),
        Begin::Conflict
    );
}
