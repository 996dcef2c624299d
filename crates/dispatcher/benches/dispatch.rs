//! Dispatcher throughput and local-server overhead. Not a test: prints numbers, asserts nothing
//! about speed. Run (release profile):
//!
//!   cargo bench -p fleetstream-dispatcher --features server,postgres --bench dispatch
//!   FLEETSTREAM_BENCH_POSTGRES=$(scripts/postgres url) cargo bench -p fleetstream-dispatcher --features server,postgres --bench dispatch
//!
//! Scenarios: records/s through `Dispatcher::dispatch` (batches of 500, Lambda-sized) with the
//! disk store (the embedded default), the file store (the former one) and, when FLEETSTREAM_BENCH_POSTGRES is set, the PostgreSQL store (1 and 8
//! dispatches at once); the per-invocation latency of the local Invoke server against calling
//! `dispatch` directly; with FLEETSTREAM_BENCH_LAMBDA_ENDPOINT (scripts/lambda-emulator start),
//! the same through AWS's runtime interface emulator running the Lambda binary.
//! FLEETSTREAM_BENCH_RECORDS scales the record counts (default 200000).

use bytes::Bytes;
use fleetstream_dispatcher::event::to_event_json;
use fleetstream_dispatcher::idempotency::{
    DiskStore, DiskStoreConfig, FileStore, FileStoreConfig, IdempotencyStore,
};
use fleetstream_dispatcher::server::{self, ServerConfig};
use fleetstream_dispatcher::{BatchRecord, Dispatcher, RoutingTable};
use fleetstream_obs::LatencyHistogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Instant;

const BATCH: usize = 500;
const ROUTES: &str = "default = [\"sink\"]\n[targets.sink]\nkind = \"memory\"\n";

fn record(run: &str, i: usize) -> BatchRecord {
    let code = [300, 301, 302, 303, 350, 400][i % 6];
    BatchRecord {
        topic: "mt-c400".into(),
        partition: (i % 12) as i32,
        offset: i as i64,
        timestamp_ms: 1_700_000_000_000,
        key: Some(format!("TRK-{:06}", i % 5000).into_bytes()),
        value: format!(
            r#"{{"truck_id":"TRK-{:06}","codigo":{code},"ts":1700000000000,"lat":-23.5,"lon":-46.6,"speed_kmh":60.0,"heading":90,"seq":{i},"fuel_pct":50.0,"engine_temp_c":85.0,"odometer_km":1000.0,"driver_id":"DRV-1"}}"#,
            i % 5000
        )
        .into_bytes(),
        headers: vec![("fs-message-id".into(), format!("{run}-{i}").into_bytes())],
    }
}

fn batches(run: &str, n: usize) -> Vec<Vec<BatchRecord>> {
    let records: Vec<BatchRecord> = (0..n).map(|i| record(run, i)).collect();
    records.chunks(BATCH).map(<[_]>::to_vec).collect()
}

fn dispatcher(store: Arc<dyn IdempotencyStore>) -> Arc<Dispatcher> {
    let table = RoutingTable::from_toml_str(ROUTES, "/nonexistent").expect("routes");
    Arc::new(Dispatcher::new(table, store).expect("dispatcher"))
}

/// Dispatches every batch with `parallel` dispatches at once; returns records/s.
async fn throughput(d: &Arc<Dispatcher>, work: Vec<Vec<BatchRecord>>, parallel: usize) -> f64 {
    let total: usize = work.iter().map(Vec::len).sum();
    let queue = Arc::new(std::sync::Mutex::new(work));
    let started = Instant::now();
    let workers: Vec<_> = (0..parallel)
        .map(|_| {
            let (d, queue) = (Arc::clone(d), Arc::clone(&queue));
            tokio::spawn(async move {
                loop {
                    let next = queue.lock().expect("queue").pop();
                    let Some(batch) = next else { break };
                    let n = batch.len();
                    let response = d.dispatch(batch).await;
                    let s = response.summary;
                    assert_eq!(s.dispatched + s.duplicates, n, "{s:?}");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

fn line(name: &str, value: String) {
    println!("{name:<58} {value}");
}

async fn file_store(n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileStore::open(dir.path(), FileStoreConfig::default()).expect("store");
    let d = dispatcher(Arc::new(store));
    let rate = throughput(&d, batches("file", n), 1).await;
    line(
        &format!("file store, {n} records, batches of {BATCH}, 1 at a time"),
        format!("{rate:>10.0} records/s"),
    );
    let rate = throughput(&d, batches("file", n), 1).await;
    line(
        "  same records again (all duplicates)",
        format!("{rate:>10.0} records/s"),
    );
    let d2 = dispatcher(Arc::new(
        FileStore::open(dir.path().join("2"), FileStoreConfig::default()).expect("store"),
    ));
    let rate = throughput(&d2, batches("file2", n), 2).await;
    line(
        &format!("file store, {n} records, 2 dispatches at once"),
        format!("{rate:>10.0} records/s"),
    );
}

async fn disk_store(n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = DiskStore::open(dir.path(), DiskStoreConfig::default()).expect("store");
    let d = dispatcher(Arc::new(store));
    let rate = throughput(&d, batches("disk", n), 1).await;
    line(
        &format!("disk store, {n} records, batches of {BATCH}, 1 at a time"),
        format!("{rate:>10.0} records/s"),
    );
    let rate = throughput(&d, batches("disk", n), 1).await;
    line(
        "  same records again (all duplicates)",
        format!("{rate:>10.0} records/s"),
    );
    let d2 = dispatcher(Arc::new(
        DiskStore::open(dir.path().join("2"), DiskStoreConfig::default()).expect("store"),
    ));
    let rate = throughput(&d2, batches("disk2", n), 2).await;
    line(
        &format!("disk store, {n} records, 2 dispatches at once"),
        format!("{rate:>10.0} records/s"),
    );
}

async fn postgres(url: &str, n: usize) {
    use fleetstream_dispatcher::idempotency::{PostgresStore, PostgresStoreConfig};
    let mut config = PostgresStoreConfig::new(url);
    config.table = "fleetstream_bench".into();
    let store = PostgresStore::connect(config).await.expect("postgres");
    store.clear().await.expect("truncate");
    let d = dispatcher(Arc::new(store));
    for parallel in [1, 8] {
        let run = format!("pg{parallel}");
        let rate = throughput(&d, batches(&run, n), parallel).await;
        line(
            &format!("postgres store, {n} records, {parallel} dispatches at once"),
            format!("{rate:>10.0} records/s"),
        );
    }
}

async fn server_overhead(invocations: usize) {
    let store = Arc::new(fleetstream_dispatcher::idempotency::MemoryStore::default());
    let d = dispatcher(store);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/2015-03-31/functions/bench/invocations",
        listener.local_addr().expect("addr")
    );
    let app = server::router(Arc::clone(&d), ServerConfig::default());
    tokio::spawn(server::serve(listener, app, std::future::pending()));
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    for size in [1usize, 500] {
        let mut direct = LatencyHistogram::new();
        let mut http = LatencyHistogram::new();
        for i in 0..invocations {
            let records: Vec<BatchRecord> = (0..size)
                .map(|j| record(&format!("direct{size}"), i * size + j))
                .collect();
            let started = Instant::now();
            d.dispatch(records).await;
            direct.record(started.elapsed());

            let records: Vec<BatchRecord> = (0..size)
                .map(|j| record(&format!("http{size}"), i * size + j))
                .collect();
            let body = Bytes::from(to_event_json(&records).to_string());
            let started = Instant::now();
            let request = hyper::Request::post(&url)
                .body(Full::new(body))
                .expect("request");
            let response = client.request(request).await.expect("response");
            assert_eq!(response.status(), 200);
            let _ = response.into_body().collect().await.expect("body");
            http.record(started.elapsed());
        }
        let (a, b) = (direct.summary(), http.summary());
        line(
            &format!("{size}-record invocation, dispatch() direct, p50/p99 ms"),
            format!("{:>8.3} / {:.3}", a.p50, a.p99),
        );
        line(
            &format!("{size}-record invocation, via local server, p50/p99 ms"),
            format!("{:>8.3} / {:.3}", b.p50, b.p99),
        );
        line(
            "  server overhead per invocation (p50 difference), ms",
            format!("{:>8.3}", b.p50 - a.p50),
        );
    }
}

/// Per-invocation latency through AWS's runtime interface emulator running the Lambda binary
/// (scripts/lambda-emulator start). One invocation at a time: the emulator serves one.
async fn emulator(endpoint: &str, invocations: usize) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let url = format!("{endpoint}/2015-03-31/functions/function/invocations");
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    for size in [1usize, 500] {
        let mut h = LatencyHistogram::new();
        for i in 0..invocations {
            let records: Vec<BatchRecord> = (0..size)
                .map(|j| record(&format!("emu{run}-{size}"), i * size + j))
                .collect();
            let body = Bytes::from(to_event_json(&records).to_string());
            let started = Instant::now();
            let request = hyper::Request::post(&url)
                .body(Full::new(body))
                .expect("request");
            let response = client.request(request).await.expect("response");
            let bytes = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            h.record(started.elapsed());
            let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
            assert_eq!(v["summary"]["dispatched"], size, "{v}");
        }
        let s = h.summary();
        line(
            &format!("{size}-record invocation, via runtime emulator, p50/p99 ms"),
            format!("{:>8.3} / {:.3}", s.p50, s.p99),
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let n: usize = std::env::var("FLEETSTREAM_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        disk_store(n).await;
        file_store(n).await;
        match std::env::var("FLEETSTREAM_BENCH_POSTGRES") {
            Ok(url) if !url.is_empty() => postgres(&url, (n / 4).max(BATCH)).await,
            _ => println!(
                "postgres store: skipped (set FLEETSTREAM_BENCH_POSTGRES, see scripts/postgres)"
            ),
        }
        server_overhead(300).await;
        match std::env::var("FLEETSTREAM_BENCH_LAMBDA_ENDPOINT") {
            Ok(url) if !url.is_empty() => emulator(&url, 300).await,
            _ => println!("runtime emulator: skipped (set FLEETSTREAM_BENCH_LAMBDA_ENDPOINT, see scripts/lambda-emulator)"),
        }
    });
}
