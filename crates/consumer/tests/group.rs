//! Worker behaviour under a slow or throttling dispatcher, rebalances, and ordering.
//! Embedded cluster by default, a real broker with FLEETSTREAM_TEST_BOOTSTRAP.

use fleetstream_consumer::{
    DispatchFuture, InProcess, Transport, TransportError, Worker, WorkerConfig, WorkerMetrics,
};
use fleetstream_core::{MessageId, Topology};
use fleetstream_dispatcher::idempotency::MemoryStore;
use fleetstream_dispatcher::{BatchRecord, Dispatcher, Outcome, RoutingTable, IN_PROGRESS};
use fleetstream_kafka::{ClusterHandle, ConsumerSettings, GroupConsumer, ProducerSettings};
use fleetstream_testkit::{apply_unique, cluster, produce_telemetry, wait_until};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

const DOMAIN: &str = include_str!("../../../config/topology.toml");
const ROUTES: &str = "default = [\"sink\"]\n[targets.sink]\nkind = \"memory\"\n";

struct Fixture {
    cluster: ClusterHandle,
    topology: Topology,
    dispatcher: Arc<Dispatcher>,
    group: String,
    topics: Vec<String>,
}

async fn fixture() -> Fixture {
    fixture_on(cluster()).await
}

async fn fixture_on(cluster: ClusterHandle) -> Fixture {
    let (_, topology) = apply_unique(&cluster, DOMAIN).await;
    let table = RoutingTable::from_toml_str(ROUTES, "/nonexistent").unwrap();
    let dispatcher = Arc::new(Dispatcher::new(table, Arc::new(MemoryStore::default())).unwrap());
    let (group, topics) = topology.groups().into_iter().next().unwrap();
    Fixture {
        cluster,
        topology,
        dispatcher,
        group,
        topics,
    }
}

impl Fixture {
    fn worker(
        &self,
        id: &str,
        settings: ConsumerSettings,
        transport: Arc<dyn Transport>,
        m: Arc<WorkerMetrics>,
    ) -> Worker {
        self.worker_with(id, settings, transport, m, |_| {})
    }

    fn worker_with(
        &self,
        id: &str,
        settings: ConsumerSettings,
        transport: Arc<dyn Transport>,
        m: Arc<WorkerMetrics>,
        tweak: impl FnOnce(&mut WorkerConfig),
    ) -> Worker {
        let mut cfg = WorkerConfig::new(id);
        cfg.batch_window = Duration::from_millis(20);
        cfg.batch_max_records = 100;
        cfg.max_batches_queued = 1;
        cfg.max_attempts = 1_000; // throttling must delay, not dead-letter
        cfg.backoff_max = Duration::from_millis(200);
        tweak(&mut cfg);
        let producer = ProducerSettings::new(self.cluster.connection().clone());
        Worker::new(
            cfg,
            &settings,
            &producer,
            &self.topology,
            &self.topics,
            transport,
            m,
        )
        .unwrap()
    }

    fn settings(&self) -> ConsumerSettings {
        ConsumerSettings::new(self.cluster.connection().clone(), self.group.clone())
    }

    fn produce(&self, run: u64, n: u64) {
        assert_eq!(
            produce_telemetry(self.cluster.connection(), &self.topology, run, n),
            n
        );
    }

    /// Every id of `run` below `n` has exactly one effect in the sink.
    fn assert_all_dispatched_once(&self, run: u64, n: u64) {
        let sink = self.dispatcher.memory_target("sink").unwrap();
        let ids: HashSet<String> = sink.ids().into_iter().collect();
        let missing: Vec<u64> = (0..n)
            .filter(|s| !ids.contains(&MessageId { run, seq: *s }.to_string()))
            .collect();
        assert!(
            missing.is_empty(),
            "{} lost, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        assert!(
            ids.iter().all(|id| sink.effects(id) == 1),
            "an id had two effects"
        );
    }
}

async fn wait(m: &Arc<WorkerMetrics>, settled: u64, secs: u64) -> bool {
    let m = m.clone();
    tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(secs), || {
            m.dispatched.load(Ordering::SeqCst)
                + m.duplicates.load(Ordering::SeqCst)
                + m.dead_lettered.load(Ordering::SeqCst)
                >= settled
        })
    })
    .await
    .unwrap()
}

/// Refuses every dispatch as throttled while `throttle` is set.
struct Throttling {
    inner: InProcess,
    throttle: AtomicBool,
    refused: AtomicU64,
}

impl Transport for Throttling {
    fn dispatch(&self, records: Vec<BatchRecord>) -> DispatchFuture<'_> {
        if self.throttle.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Box::pin(async { Err(TransportError::Throttled("429".into())) });
        }
        self.inner.dispatch(records)
    }
}

/// A dispatcher throttling for longer than max.poll.interval: the worker pauses its partitions
/// and keeps polling, so it is not evicted (no partition is revoked), then resumes and loses
/// nothing.
#[tokio::test(flavor = "multi_thread")]
async fn throttling_pauses_partitions_without_eviction_or_loss() {
    let f = fixture().await;
    let transport = Arc::new(Throttling {
        inner: InProcess(f.dispatcher.clone()),
        throttle: AtomicBool::new(true),
        refused: AtomicU64::new(0),
    });
    let metrics = Arc::new(WorkerMetrics::default());
    let mut settings = f.settings();
    settings.session_timeout = Duration::from_secs(6);
    settings.max_poll_interval = Duration::from_secs(6);
    let worker = f.worker("throttled", settings, transport.clone(), metrics.clone());
    let stats = worker.group_stats();
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(worker.run(stop_rx));

    let run = 1;
    let n = 3_000;
    tokio::task::block_in_place(|| f.produce(run, n));
    let paused = tokio::task::spawn_blocking({
        let m = metrics.clone();
        move || {
            wait_until(Duration::from_secs(30), || {
                m.paused_partitions.load(Ordering::SeqCst) > 0
            })
        }
    })
    .await
    .unwrap();
    assert!(
        paused,
        "a full queue must pause partitions: {:?}",
        metrics.snapshot()
    );
    // Longer than max.poll.interval (6 s): a worker that stopped polling would be evicted.
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(
        stats.revoked.load(Ordering::SeqCst),
        0,
        "the worker was evicted while throttled"
    );
    assert_eq!(metrics.dispatched.load(Ordering::SeqCst), 0);
    transport.throttle.store(false, Ordering::SeqCst);

    assert!(wait(&metrics, n, 60).await, "{:?}", metrics.snapshot());
    assert_eq!(
        metrics.paused_partitions.load(Ordering::SeqCst),
        0,
        "resumed"
    );
    stop_tx.send(true).unwrap();
    task.await.unwrap().unwrap();
    let s = metrics.snapshot();
    assert!(
        s.pauses >= 1 && s.throttled >= 1 && transport.refused.load(Ordering::SeqCst) >= 1,
        "{s:?}"
    );
    assert_eq!(
        s.dead_lettered, 0,
        "throttling delays, it does not dead-letter"
    );
    f.assert_all_dispatched_once(run, n);
}

/// (topic, partition, key).
type PartitionKey = (String, i32, Vec<u8>);

/// Records every dispatched (partition, key) -> offsets, in dispatch order.
struct Recording {
    inner: InProcess,
    seen: Mutex<BTreeMap<PartitionKey, Vec<i64>>>,
}

impl Transport for Recording {
    fn dispatch(&self, records: Vec<BatchRecord>) -> DispatchFuture<'_> {
        {
            let mut seen = self.seen.lock().unwrap();
            for r in &records {
                seen.entry((
                    r.topic.clone(),
                    r.partition,
                    r.key.clone().unwrap_or_default(),
                ))
                .or_default()
                .push(r.offset);
            }
        }
        self.inner.dispatch(records)
    }
}

/// A second worker joins and leaves mid-stream: partitions move twice, nothing is lost, no
/// effect happens twice, and one worker alone dispatches each key in offset order.
#[tokio::test(flavor = "multi_thread")]
async fn second_worker_joining_and_leaving_loses_nothing() {
    let f = fixture().await;
    let recording = Arc::new(Recording {
        inner: InProcess(f.dispatcher.clone()),
        seen: Mutex::new(BTreeMap::new()),
    });
    let m1 = Arc::new(WorkerMetrics::default());
    let (stop1, rx1) = watch::channel(false);
    let w1 = tokio::spawn(
        f.worker("one", f.settings(), recording.clone(), m1.clone())
            .run(rx1),
    );

    let run = 2;
    tokio::task::block_in_place(|| f.produce(run, 4_000));
    assert!(wait(&m1, 4_000, 60).await);
    // Per-key order on a single worker: offsets strictly increase in dispatch order.
    for ((topic, p, key), offsets) in recording.seen.lock().unwrap().iter() {
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "{topic}/{p} key {:?} out of order: {offsets:?}",
            String::from_utf8_lossy(key)
        );
    }

    let m2 = Arc::new(WorkerMetrics::default());
    let (stop2, rx2) = watch::channel(false);
    let worker2 = f.worker(
        "two",
        f.settings(),
        Arc::new(InProcess(f.dispatcher.clone())),
        m2.clone(),
    );
    let stats2 = worker2.group_stats();
    let w2 = tokio::spawn(worker2.run(rx2));
    let assigned = tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(30), || {
            stats2.assigned.load(Ordering::SeqCst) > 0
        })
    })
    .await
    .unwrap();
    assert!(assigned, "the second worker never got a partition");
    // More records while the group has two members, then the second one leaves.
    tokio::task::block_in_place(|| f.produce(run + 1, 4_000));
    let joined = tokio::task::spawn_blocking({
        let m2 = m2.clone();
        move || {
            wait_until(Duration::from_secs(30), || {
                m2.consumed.load(Ordering::SeqCst) > 0
            })
        }
    })
    .await
    .unwrap();
    stop2.send(true).unwrap();
    w2.await.unwrap().unwrap();
    tokio::task::block_in_place(|| f.produce(run + 2, 4_000));

    let total = |m: &WorkerMetrics| {
        m.dispatched.load(Ordering::SeqCst) + m.duplicates.load(Ordering::SeqCst)
    };
    let done = tokio::task::spawn_blocking({
        let (m1, m2) = (m1.clone(), m2.clone());
        move || {
            wait_until(Duration::from_secs(90), || {
                total(&m1) + total(&m2) >= 12_000
            })
        }
    })
    .await
    .unwrap();
    stop1.send(true).unwrap();
    w1.await.unwrap().unwrap();
    assert!(done, "one {:?} two {:?}", m1.snapshot(), m2.snapshot());
    assert!(joined, "the second worker never consumed a record");
    for r in [run, run + 1, run + 2] {
        f.assert_all_dispatched_once(r, 4_000);
    }
}

/// A slow dispatcher, recording order and how many calls overlap.
struct SlowRecording {
    inner: InProcess,
    seen: Mutex<BTreeMap<PartitionKey, Vec<i64>>>,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
}

impl Transport for SlowRecording {
    fn dispatch(&self, records: Vec<BatchRecord>) -> DispatchFuture<'_> {
        Box::pin(async move {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            {
                let mut seen = self.seen.lock().unwrap();
                for r in &records {
                    seen.entry((
                        r.topic.clone(),
                        r.partition,
                        r.key.clone().unwrap_or_default(),
                    ))
                    .or_default()
                    .push(r.offset);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            let out = self.inner.dispatch(records).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            out
        })
    }
}

/// Key-ordered concurrency: several keys of a batch are dispatched at once, each key's records
/// still in offset order, nothing lost, and the group commits everything at the end.
#[tokio::test(flavor = "multi_thread")]
async fn key_lanes_dispatch_keys_concurrently_in_order() {
    let f = fixture().await;
    let transport = Arc::new(SlowRecording {
        inner: InProcess(f.dispatcher.clone()),
        seen: Mutex::new(BTreeMap::new()),
        in_flight: AtomicU64::new(0),
        max_in_flight: AtomicU64::new(0),
    });
    let metrics = Arc::new(WorkerMetrics::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let run = 5;
    let n = 3_000;
    tokio::task::block_in_place(|| f.produce(run, n));
    let worker = f.worker_with(
        "lanes",
        f.settings(),
        transport.clone(),
        metrics.clone(),
        |c| {
            c.key_lanes = 8;
            c.batch_max_records = 500;
        },
    );
    let task = tokio::spawn(worker.run(stop_rx));
    assert!(wait(&metrics, n, 60).await, "{:?}", metrics.snapshot());
    stop_tx.send(true).unwrap();
    task.await.unwrap().unwrap();

    assert!(
        transport.max_in_flight.load(Ordering::SeqCst) > 1,
        "lanes never overlapped"
    );
    for ((topic, p, key), offsets) in transport.seen.lock().unwrap().iter() {
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "{topic}/{p} key {:?} out of order: {offsets:?}",
            String::from_utf8_lossy(key)
        );
    }
    f.assert_all_dispatched_once(run, n);
    let lag = fleetstream_kafka::group_lag(
        f.cluster.connection(),
        &f.group,
        &f.topics,
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(lag.iter().map(|l| l.lag).sum::<i64>(), 0, "{lag:?}");
}

/// Holds every dispatch until `open` turns true: a dispatcher (or dead-letter write) blocked by
/// an outage.
struct Gated {
    inner: InProcess,
    open: watch::Receiver<bool>,
}

impl Transport for Gated {
    fn dispatch(&self, records: Vec<BatchRecord>) -> DispatchFuture<'_> {
        Box::pin(async move {
            let mut open = self.open.clone();
            let _ = open.wait_for(|o| *o).await;
            self.inner.dispatch(records).await
        })
    }
}

/// Waits up to `secs` for `done`, off the runtime's worker threads.
async fn wait_for(secs: u64, done: impl FnMut() -> bool + Send + 'static) -> bool {
    tokio::task::spawn_blocking(move || wait_until(Duration::from_secs(secs), done))
        .await
        .unwrap()
}

/// Issue 12, defect 2: a worker paused all its partitions (dispatch blocked), some were revoked
/// while paused, the blocked batch settled and the worker resumed only the partitions assigned
/// at that instant; librdkafka keeps a pause across revoke and re-assign, so when the revoked
/// partitions came back they stayed paused for good (lag grew without end, nothing logged).
/// Pause -> revoke -> resume -> re-assign: every record must still be dispatched.
#[tokio::test(flavor = "multi_thread")]
async fn partitions_paused_before_revoke_are_consumed_after_reassign() {
    let f = fixture().await;
    let (open_tx, open_rx) = watch::channel(false);
    let transport = Arc::new(Gated {
        inner: InProcess(f.dispatcher.clone()),
        open: open_rx,
    });
    let metrics = Arc::new(WorkerMetrics::default());
    let worker = f.worker_with("held", f.settings(), transport, metrics.clone(), |c| {
        c.pause_after = Duration::from_millis(100);
    });
    let stats = worker.group_stats();
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(worker.run(stop_rx));

    let run = 21;
    let n = 3_000;
    tokio::task::block_in_place(|| f.produce(run, n));
    // 1. Dispatch blocked: the queue fills and the worker pauses its partitions.
    let m = metrics.clone();
    assert!(
        wait_for(60, move || m.paused_partitions.load(Ordering::SeqCst) > 0).await,
        "the worker never paused: {:?}",
        metrics.snapshot()
    );

    // 2. A second member joins: some of the paused partitions are revoked from the worker.
    // It reads without storing offsets, so whatever it reads is re-delivered when it leaves.
    let topics: Vec<&str> = f.topics.iter().map(String::as_str).collect();
    let member = Arc::new(GroupConsumer::subscribe(&f.settings(), &topics).unwrap());
    let poller = tokio::spawn({
        let member = member.clone();
        async move {
            loop {
                let _ = member.recv().await;
            }
        }
    });
    let s = stats.clone();
    assert!(
        wait_for(60, move || s.revoked.load(Ordering::SeqCst) > 0).await,
        "the second member never took a partition"
    );

    // 3. The outage ends: the blocked batches settle and the worker resumes.
    open_tx.send(true).unwrap();
    let m = metrics.clone();
    assert!(
        wait_for(60, move || m.paused_partitions.load(Ordering::SeqCst) == 0).await,
        "the worker never resumed: {:?}",
        metrics.snapshot()
    );

    // 4. The second member leaves: its partitions come back to the worker.
    let assigned_before = stats.assigned.load(Ordering::SeqCst);
    poller.abort();
    let _ = poller.await;
    let member = Arc::try_unwrap(member).ok().expect("the poller is gone");
    tokio::task::block_in_place(move || member.close());
    let s = stats.clone();
    assert!(
        wait_for(60, move || s.assigned.load(Ordering::SeqCst)
            > assigned_before)
        .await,
        "the partitions never came back to the worker"
    );

    // 5. More records on every partition; all of both runs must be dispatched.
    tokio::task::block_in_place(|| f.produce(run + 1, n));
    let sink = f.dispatcher.memory_target("sink").unwrap();
    let all_there = wait_for(90, move || sink.ids().len() as u64 >= 2 * n).await;
    let sink = f.dispatcher.memory_target("sink").unwrap();
    let seen = sink.ids().len();
    stop_tx.send(true).unwrap();
    task.await.unwrap().unwrap();
    assert!(
        all_there,
        "{} of {} records never dispatched: partitions re-assigned after a pause stayed paused \
         ({:?})",
        2 * n as usize - seen,
        2 * n,
        metrics.snapshot()
    );
    for r in [run, run + 1] {
        f.assert_all_dispatched_once(r, n);
    }
}

/// Answers `in_progress` for every record of its first `busy` calls, after letting the
/// dispatcher apply them: another dispatch of those records (one whose caller gave up) still
/// holds their markers, as after a worker's --dispatch-timeout expired mid-request.
struct InProgressFirst {
    inner: InProcess,
    busy: AtomicU64,
}

impl Transport for InProgressFirst {
    fn dispatch(&self, records: Vec<BatchRecord>) -> DispatchFuture<'_> {
        Box::pin(async move {
            let mut response = self.inner.dispatch(records).await?;
            let busy = self
                .busy
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
                .is_ok();
            if busy {
                for r in &mut response.results {
                    r.outcome = Outcome::Failed {
                        reason: IN_PROGRESS.into(),
                        retriable: true,
                    };
                }
            }
            Ok(response)
        })
    }
}

/// Issue 12: once a dispatch runs to its settlement after its caller gave up, the retry meets
/// `in_progress` until it settles. That is not a failure to count against --max-attempts:
/// dead-lettering those records would put records whose effect was applied in the dead-letter
/// topic. They are retried until the marker settles, and then reported duplicates.
#[tokio::test(flavor = "multi_thread")]
async fn records_in_progress_elsewhere_are_retried_not_dead_lettered() {
    let f = fixture().await;
    let transport = Arc::new(InProgressFirst {
        inner: InProcess(f.dispatcher.clone()),
        busy: AtomicU64::new(6),
    });
    let m = Arc::new(WorkerMetrics::default());
    let (stop, rx) = watch::channel(false);
    let worker = f.worker_with("busy", f.settings(), transport.clone(), m.clone(), |c| {
        c.max_attempts = 2;
    });
    let task = tokio::spawn(worker.run(rx));
    let run = 7;
    tokio::task::block_in_place(|| f.produce(run, 500));
    let done = tokio::task::spawn_blocking({
        let m = m.clone();
        move || {
            wait_until(Duration::from_secs(60), || {
                m.dispatched.load(Ordering::SeqCst)
                    + m.duplicates.load(Ordering::SeqCst)
                    + m.dead_lettered.load(Ordering::SeqCst)
                    >= 500
            })
        }
    })
    .await
    .unwrap();
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    let s = m.snapshot();
    assert!(done, "{s:?}");
    assert_eq!(transport.busy.load(Ordering::SeqCst), 0, "{s:?}");
    assert_eq!(
        s.dead_lettered, 0,
        "in_progress records were dead-lettered: {s:?}"
    );
    f.assert_all_dispatched_once(run, 500);
}

/// A broker dies mid-stream and comes back (the embedded cluster's fault hook; always the
/// embedded cluster, since a real one cannot be taken down from a test: scripts/faults does that
/// on 3 real brokers). The worker rides through the outage: every record, produced before,
/// during and after it, is dispatched exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_broker_down_and_back_mid_stream_loses_nothing() {
    let f = fixture_on(ClusterHandle::embedded(3).unwrap()).await;
    let m = Arc::new(WorkerMetrics::default());
    let (stop, rx) = watch::channel(false);
    let worker = f.worker(
        "outage",
        f.settings(),
        Arc::new(InProcess(f.dispatcher.clone())),
        m.clone(),
    );
    let task = tokio::spawn(worker.run(rx));
    let run = 11;
    tokio::task::block_in_place(|| f.produce(run, 2_000));
    assert!(wait(&m, 2_000, 60).await, "{:?}", m.snapshot());
    let mock = f.cluster.embedded_cluster().unwrap();
    mock.broker_down(2).unwrap();
    // Records keep coming during the outage; those for broker 2's partitions wait in the
    // producer until it is back.
    let producing = tokio::task::spawn_blocking({
        let conn = f.cluster.connection().clone();
        let topology = f.topology.clone();
        move || produce_telemetry(&conn, &topology, run + 1, 2_000)
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    mock.broker_up(2).unwrap();
    assert_eq!(producing.await.unwrap(), 2_000);
    let done = wait(&m, 4_000, 90).await;
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    assert!(done, "{:?}", m.snapshot());
    f.assert_all_dispatched_once(run, 2_000);
    f.assert_all_dispatched_once(run + 1, 2_000);
    assert_eq!(m.snapshot().dead_lettered, 0);
}
