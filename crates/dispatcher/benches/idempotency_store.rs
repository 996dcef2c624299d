//! The embedded idempotency stores under millions of keys: `begin_many`/`complete_many`
//! throughput in batches of 500 and the process's resident memory. Not a test: prints numbers,
//! asserts nothing about speed. Run (release profile; one store per process, so the memory
//! figure is that store's):
//!
//!   cargo bench -p fleetstream-dispatcher --bench idempotency_store
//!   FLEETSTREAM_BENCH_STORE=file FLEETSTREAM_BENCH_KEYS=2000000 cargo bench -p fleetstream-dispatcher --bench idempotency_store
//!
//! FLEETSTREAM_BENCH_STORE: `disk` (default, the embedded default) or `file` (the former one,
//! every key in memory). FLEETSTREAM_BENCH_KEYS: keys to complete (default 5,000,000), message
//! ids as the producer writes them (a run prefix and a decimal sequence number).
//! FLEETSTREAM_BENCH_CACHE: the disk store's cache in bytes (default its 64 MiB).

use fleetstream_dispatcher::idempotency::{
    Begin, DiskStore, DiskStoreConfig, FileStore, FileStoreConfig, IdempotencyStore,
};
use std::time::Instant;

const BATCH: usize = 500;

/// (VmRSS, VmHWM) in MiB, from /proc (Linux).
fn memory_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn disk_mib(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        total += entry.metadata().map_or(0, |m| m.len());
    }
    total / (1024 * 1024)
}

fn batch(start: usize) -> Vec<(String, u64)> {
    (start..start + BATCH)
        .map(|i| (format!("p-7f3a9c21e5d04b18-{i}"), i as u64))
        .collect()
}

fn line(name: &str, value: String) {
    println!("{name:<58} {value}");
}

fn main() {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let kind = env("FLEETSTREAM_BENCH_STORE").unwrap_or_else(|| "disk".into());
    let keys: usize = env("FLEETSTREAM_BENCH_KEYS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Box<dyn IdempotencyStore> = match kind.as_str() {
        "file" => Box::new(FileStore::open(dir.path(), FileStoreConfig::default()).expect("store")),
        _ => {
            let mut config = DiskStoreConfig::default();
            if let Some(bytes) = env("FLEETSTREAM_BENCH_CACHE").and_then(|v| v.parse().ok()) {
                config.cache_bytes = bytes;
            }
            Box::new(DiskStore::open(dir.path(), config).expect("store"))
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (rss0, _) = memory_mib();
        let batches = keys / BATCH;
        let started = Instant::now();
        let mut window = Instant::now();
        for b in 0..batches {
            let work = batch(b * BATCH);
            let answers = store.begin_many(&work).await.expect("begin_many");
            assert!(answers.iter().all(|a| *a == Begin::Acquired));
            let names: Vec<String> = work.into_iter().map(|(k, _)| k).collect();
            store.complete_many(&names).await.expect("complete_many");
            let done = (b + 1) * BATCH;
            if done.is_multiple_of(1_000_000) {
                let (rss, _) = memory_mib();
                line(
                    &format!(
                        "{kind} store, new keys, {}M..{}M",
                        done / 1_000_000 - 1,
                        done / 1_000_000
                    ),
                    format!(
                        "{:>10.0} keys/s, RSS {rss} MiB",
                        1_000_000.0 / window.elapsed().as_secs_f64()
                    ),
                );
                window = Instant::now();
            }
        }
        let rate = (batches * BATCH) as f64 / started.elapsed().as_secs_f64();
        let (rss, hwm) = memory_mib();
        line(
            &format!(
                "{kind} store, {} new keys, begin_many + complete_many",
                batches * BATCH
            ),
            format!("{rate:>10.0} keys/s"),
        );
        line(
            "  resident memory: start / end / peak",
            format!(
                "{rss0} / {rss} / {hwm} MiB, disk {} MiB",
                disk_mib(dir.path())
            ),
        );
        // Redeliveries of recent records: the last 200,000 keys again, all duplicates.
        let recent = batches.min(400);
        let started = Instant::now();
        for b in batches - recent..batches {
            let answers = store
                .begin_many(&batch(b * BATCH))
                .await
                .expect("begin_many");
            assert!(answers.iter().all(|a| *a == Begin::Duplicate));
        }
        line(
            &format!("  {} recent keys again (all duplicates)", recent * BATCH),
            format!(
                "{:>10.0} keys/s",
                (recent * BATCH) as f64 / started.elapsed().as_secs_f64()
            ),
        );
    });
}
