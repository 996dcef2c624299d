//! End-to-end behaviour of the dispatcher: dedup, routing, failures and recovery, decoding.

use fleetstream_core::Code;
use fleetstream_dispatcher::event::to_event_json;
use fleetstream_dispatcher::idempotency::{
    FileStore, FileStoreConfig, IdempotencyStore, MemoryStore,
};
use fleetstream_dispatcher::targets::{Delivery, MemoryTarget, Target, TargetError};
use fleetstream_dispatcher::{BatchRecord, DispatchResponse, Dispatcher, Outcome, RoutingTable};
use futures::future::{BoxFuture, FutureExt};
use std::sync::Arc;
use tokio::sync::{watch, Notify};

const ROUTES: &str = r#"
unknown_code = "dead_letter"
[routes]
"300" = ["alerts", "archive"]
"301" = ["alerts"]
"400" = ["archive"]
[targets.alerts]
kind = "memory"
[targets.archive]
kind = "memory"
"#;

fn event_json(code: u32, seq: u64) -> Vec<u8> {
    format!(
        r#"{{"truck_id":"TRK-{seq:06}","codigo":{code},"ts":{ts},"lat":-23.5,"lon":-46.6,"speed_kmh":60.0,"heading":90,"seq":{seq},"fuel_pct":50.0,"engine_temp_c":85.0,"odometer_km":1000.0,"driver_id":"DRV-1"}}"#,
        ts = 1_700_000_000_000u64 + seq
    )
    .into_bytes()
}

fn record(id: &str, offset: i64, code: u32) -> BatchRecord {
    BatchRecord {
        topic: "mt-c400".into(),
        partition: (offset % 3) as i32,
        offset,
        timestamp_ms: 1_700_000_000_000,
        key: Some(format!("{code}-0").into_bytes()),
        value: event_json(code, offset as u64),
        headers: vec![("fs-message-id".into(), id.as_bytes().to_vec())],
    }
}

/// Ten records: codes 300 (two targets), 301 and 400 mixed.
fn batch() -> Vec<BatchRecord> {
    (0..10)
        .map(|i| record(&format!("m-{i}"), i, [300, 301, 400][i as usize % 3]))
        .collect()
}

fn dispatcher(routes: &str, store: Arc<dyn IdempotencyStore>) -> Dispatcher {
    let table = RoutingTable::from_toml_str(routes, "/nonexistent").expect("valid routes");
    Dispatcher::new(table, store).expect("builds")
}

fn memory(d: &Dispatcher, name: &str) -> Arc<MemoryTarget> {
    d.memory_target(name).expect("memory target")
}

/// Every record of `batch()` has exactly one effect at each target of its route.
fn assert_exactly_once(d: &Dispatcher) {
    let (alerts, archive) = (memory(d, "alerts"), memory(d, "archive"));
    for r in batch() {
        let id = r.message_id().unwrap_or_default().to_owned();
        let code = [300, 301, 400][r.offset as usize % 3];
        let expect = |routed: bool| u32::from(routed);
        assert_eq!(alerts.effects(&id), expect(code != 400), "alerts {id}");
        assert_eq!(archive.effects(&id), expect(code != 301), "archive {id}");
    }
}

fn outcomes(r: &DispatchResponse) -> Vec<Outcome> {
    r.results.iter().map(|r| r.outcome.clone()).collect()
}

#[tokio::test]
async fn same_batch_three_times_has_one_effect_per_record() {
    let d = dispatcher(ROUTES, Arc::new(MemoryStore::default()));
    let first = d.dispatch(batch()).await;
    assert_eq!(first.summary.dispatched, 10);
    assert!(first.is_complete());
    for _ in 0..2 {
        let again = d.dispatch(batch()).await;
        assert_eq!(again.summary.duplicates, 10, "{:?}", again.summary);
        assert_eq!(again.summary.dispatched, 0);
    }
    assert_exactly_once(&d);
    // 4 records of code 300 and 3 of 301 at alerts; 4 of 300 and 3 of 400 at archive.
    assert_eq!(
        (memory(&d, "alerts").total(), memory(&d, "archive").total()),
        (7, 7)
    );
}

/// Kafka-to-dispatcher time: each record's age from its Kafka timestamp when its batch's
/// dispatch began; records without a timestamp (-1) are left out.
#[tokio::test]
async fn record_age_is_measured_from_the_kafka_timestamp() {
    let d = dispatcher(ROUTES, Arc::new(MemoryStore::default()));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut records = batch();
    for (i, r) in records.iter_mut().enumerate() {
        r.timestamp_ms = if i == 0 { -1 } else { now_ms - 2_000 };
    }
    d.dispatch(records).await;
    let age = d.metrics().record_age();
    assert_eq!(
        age.count(),
        9,
        "the record without a timestamp is not counted"
    );
    let mean = age.sum_seconds() / 9.0;
    assert!((2.0..3.0).contains(&mean), "mean age {mean} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_of_one_batch_have_one_effect_each() {
    let d = Arc::new(dispatcher(ROUTES, Arc::new(MemoryStore::default())));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let d = Arc::clone(&d);
            tokio::spawn(async move { d.dispatch(batch()).await })
        })
        .collect();
    let mut dispatched = 0;
    for t in tasks {
        let r = t.await.expect("task");
        dispatched += r.summary.dispatched;
        // A concurrent copy either saw the record done, or busy (retriable), never executed it.
        for o in outcomes(&r) {
            assert!(
                matches!(o, Outcome::Dispatched | Outcome::Duplicate)
                    || o == Outcome::Failed {
                        reason: "in_progress".into(),
                        retriable: true
                    },
                "{o:?}"
            );
        }
    }
    assert_eq!(dispatched, 10);
    assert_exactly_once(&d);
    // Redelivering after the dust settles: all duplicates.
    assert_eq!(d.dispatch(batch()).await.summary.duplicates, 10);
}

#[tokio::test]
async fn failing_target_fails_its_records_then_recovery_is_exactly_once() {
    let d = dispatcher(ROUTES, Arc::new(MemoryStore::default()));
    memory(&d, "archive").set_failing(true);
    let down = d.dispatch(batch()).await;
    // Codes 300 and 400 go to archive: 7 records fail, retriably; 301 records succeed.
    assert_eq!(down.summary.failed, 7);
    assert_eq!(down.summary.dispatched, 3);
    let failed = down
        .results
        .iter()
        .find(|r| r.message_id.as_deref() == Some("m-0"))
        .unwrap();
    assert_eq!(
        failed.outcome,
        Outcome::Failed {
            reason: "target:archive:unavailable".into(),
            retriable: true
        }
    );
    assert_eq!(down.batch_item_failures.len(), 7);
    // Code 300 reached alerts already; the retry must not repeat that.
    assert_eq!(memory(&d, "alerts").effects("m-0"), 1);

    memory(&d, "archive").set_failing(false);
    let up = d.dispatch(batch()).await;
    assert_eq!(
        (
            up.summary.dispatched,
            up.summary.duplicates,
            up.summary.failed
        ),
        (7, 3, 0)
    );
    assert!(up.is_complete());
    assert_exactly_once(&d);
}

#[tokio::test]
async fn unknown_code_dead_letters_or_skips() {
    let unknown = vec![record("u-1", 1, 999)];
    let d = dispatcher(ROUTES, Arc::new(MemoryStore::default()));
    let r = d.dispatch(unknown.clone()).await;
    assert_eq!(
        outcomes(&r),
        vec![Outcome::Failed {
            reason: "unknown_code:999".into(),
            retriable: false
        }]
    );
    assert_eq!(
        r.batch_item_failures.len(),
        1,
        "dead-lettered records must not be committed past"
    );

    let skip = ROUTES.replace("\"dead_letter\"", "\"skip\"");
    let d = dispatcher(&skip, Arc::new(MemoryStore::default()));
    let r = d.dispatch(unknown).await;
    assert_eq!(
        outcomes(&r),
        vec![Outcome::Skipped {
            reason: "unknown_code:999".into()
        }]
    );
    assert!(r.is_complete());
    assert_eq!(
        memory(&d, "alerts").total() + memory(&d, "archive").total(),
        0
    );
}

#[tokio::test]
async fn invalid_events_fail_per_record_with_their_class() {
    let d = dispatcher(ROUTES, Arc::new(MemoryStore::default()));
    let mut bad = record("bad-1", 5, 300);
    bad.value = br#"{"codigo":300}"#.to_vec();
    let r = d.dispatch(vec![record("ok-1", 4, 301), bad]).await;
    assert_eq!(r.results[0].outcome, Outcome::Dispatched);
    assert_eq!(
        r.results[1].outcome,
        Outcome::Failed {
            reason: "invalid:schema".into(),
            retriable: false
        }
    );
    let json = serde_json::to_value(r.lambda_response()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": {"partition": "mt-c400-2", "offset": 5}}]})
    );
}

#[tokio::test]
async fn same_id_different_payload_is_a_conflict_not_an_effect() {
    let d = dispatcher(ROUTES, Arc::new(MemoryStore::default()));
    d.dispatch(vec![record("m-1", 1, 301)]).await;
    let mut other = record("m-1", 7, 301);
    other.value = event_json(301, 99);
    let r = d.dispatch(vec![other.clone()]).await;
    assert_eq!(outcomes(&r), vec![Outcome::Conflict]);
    assert_eq!(r.summary.conflicts, 1);
    assert_eq!(memory(&d, "alerts").effects("m-1"), 1);
    // Inside one batch as well.
    let d = dispatcher(ROUTES, Arc::new(MemoryStore::default()));
    let r = d
        .dispatch(vec![record("m-1", 1, 301), other, record("m-1", 1, 301)])
        .await;
    assert_eq!(
        outcomes(&r),
        vec![Outcome::Dispatched, Outcome::Conflict, Outcome::Duplicate]
    );
    assert_eq!(memory(&d, "alerts").effects("m-1"), 1);
}

#[tokio::test]
async fn file_store_detects_duplicates_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let open = || Arc::new(FileStore::open(dir.path(), FileStoreConfig::default()).expect("opens"));
    let first = dispatcher(ROUTES, open());
    assert_eq!(first.dispatch(batch()).await.summary.dispatched, 10);
    drop(first); // "restart"
    let second = dispatcher(ROUTES, open());
    let r = second.dispatch(batch()).await;
    assert_eq!(r.summary.duplicates, 10);
    assert_eq!(
        memory(&second, "alerts").total() + memory(&second, "archive").total(),
        0
    );
}

#[tokio::test]
async fn handles_aws_shaped_events_and_rejects_malformed_ones() {
    let d = dispatcher(
        "default = [\"alerts\"]\n[targets.alerts]\nkind = \"memory\"",
        Arc::new(MemoryStore::default()),
    );
    let sample = include_bytes!("fixtures/aws-kafka-event.json");
    let r = d.handle_json(sample).await.expect("decodes");
    assert_eq!(r.summary.dispatched, 3);
    assert_eq!(
        memory(&d, "alerts").ids(),
        vec!["msg-0001", "msg-0002", "mt-c400-0-3"]
    );
    // Our own JSON for a batch is dispatchable the same way.
    let bytes = serde_json::to_vec(&to_event_json(&batch())).unwrap();
    assert_eq!(d.handle_json(&bytes).await.unwrap().summary.dispatched, 10);

    let err = d
        .handle_json(b"{\"records\": {\"t-0\": [{\"partition\": 0}]}}")
        .await
        .unwrap_err();
    assert_eq!(err.class(), "shape");
    let mut event = fleetstream_dispatcher::event::to_kafka_event(&batch()[..1]);
    if let Some(r) = event
        .records
        .values_mut()
        .next()
        .and_then(|l| l.first_mut())
    {
        r.value = Some("not base64!".into());
    }
    assert_eq!(d.handle_event(event).await.unwrap_err().class(), "base64");
    // Nothing from the rejected batches was dispatched.
    assert_eq!(memory(&d, "alerts").total(), 13);
}

#[tokio::test]
async fn default_routing_writes_every_code_to_one_jsonl_file() {
    let dir = tempfile::tempdir().unwrap();
    let table = RoutingTable::default_for_state_dir(dir.path());
    let d = Dispatcher::new(table, Arc::new(MemoryStore::default())).unwrap();
    assert_eq!(d.dispatch(batch()).await.summary.dispatched, 10);
    let text = std::fs::read_to_string(dir.path().join("dispatched.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10);
    let mut ids: Vec<_> = lines
        .iter()
        .map(|l| l["message_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10);
}

/// Applies the effects of a slice, then, for `slow_code` until `open` is set, holds its
/// answer: a target that wrote but whose acknowledgement is slow (a stalled downstream, a
/// dispatch that outlives its caller's patience).
struct AppliedThenSlow {
    open: watch::Sender<bool>,
    slow_code: Code,
    applied: Notify,
    inner: MemoryTarget,
}

impl AppliedThenSlow {
    fn new(slow_code: u32) -> Arc<Self> {
        Arc::new(AppliedThenSlow {
            open: watch::channel(false).0,
            slow_code: Code(slow_code),
            applied: Notify::new(),
            inner: MemoryTarget::new("alerts"),
        })
    }
}

impl Target for AppliedThenSlow {
    fn name(&self) -> &str {
        "alerts"
    }

    fn deliver<'a>(
        &'a self,
        code: Code,
        records: &'a [Delivery<'a>],
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        let slow = !*self.open.borrow() && code == self.slow_code;
        async move {
            let result = self.inner.deliver(code, records).await;
            if slow {
                self.applied.notify_one();
                let _ = self.open.subscribe().wait_for(|open| *open).await;
            }
            result
        }
        .boxed()
    }
}

const ALERTS_ONLY: &str = "default = [\"alerts\"]\n[targets.alerts]\nkind = \"memory\"";

/// Runs `d.dispatch(records)` until `target` has applied its effects, then drops the dispatch
/// future (the caller gave up), and lets any task spawned by the drop run.
async fn drop_after_effects(d: &Dispatcher, target: &AppliedThenSlow, records: Vec<BatchRecord>) {
    tokio::select! {
        _ = d.dispatch(records) => panic!("the slow target answers only once opened"),
        _ = target.applied.notified() => {}
    }
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// Issue 12, defect 1: a dispatch dropped after its target applied the effects (a `dispatch
/// serve` client that timed out, a killed worker) released its markers, and the redelivery
/// applied every effect a second time. The markers now stay in progress: the redelivery is
/// told `in_progress` (retriable) and applies nothing.
#[tokio::test]
async fn dropped_request_after_effect_does_not_apply_twice() {
    let target = AppliedThenSlow::new(301);
    let d = dispatcher(ALERTS_ONLY, Arc::new(MemoryStore::default())).with_target(target.clone());
    let records: Vec<BatchRecord> = (0..100)
        .map(|i| record(&format!("d-{i}"), i, 301))
        .collect();
    drop_after_effects(&d, &target, records.clone()).await;
    target.open.send_replace(true);

    let again = d.dispatch(records.clone()).await;
    for (r, result) in records.iter().zip(&again.results) {
        let id = r.message_id().unwrap_or_default();
        assert_eq!(target.inner.effects(id), 1, "effects of {id}");
        assert_eq!(
            result.outcome,
            Outcome::Failed {
                reason: "in_progress".into(),
                retriable: true
            },
            "{id}"
        );
    }
}

/// The other half of the rule: a marker whose delivery never began (here: the second code's
/// slice, waiting behind the first one at the same target) is released by the drop, so its
/// record is dispatched by the redelivery at once; the begun one stays in progress.
#[tokio::test]
async fn cancelled_dispatch_releases_only_markers_whose_delivery_never_began() {
    let target = AppliedThenSlow::new(300);
    let d = dispatcher(ALERTS_ONLY, Arc::new(MemoryStore::default())).with_target(target.clone());
    let records = vec![record("begun", 1, 300), record("waiting", 2, 301)];
    drop_after_effects(&d, &target, records.clone()).await;
    assert_eq!(target.inner.effects("waiting"), 0);
    target.open.send_replace(true);

    let again = d.dispatch(records).await;
    assert_eq!(
        outcomes(&again),
        vec![
            Outcome::Failed {
                reason: "in_progress".into(),
                retriable: true
            },
            Outcome::Dispatched
        ]
    );
    assert_eq!(target.inner.effects("begun"), 1);
    assert_eq!(target.inner.effects("waiting"), 1);
}

/// A detached dispatch settles even though its caller gave up: the redelivery finds
/// duplicates, one effect each.
#[tokio::test]
async fn detached_dispatch_settles_after_its_caller_gives_up() {
    let target = AppliedThenSlow::new(301);
    let d = Arc::new(
        dispatcher(ALERTS_ONLY, Arc::new(MemoryStore::default())).with_target(target.clone()),
    );
    let records: Vec<BatchRecord> = (0..10).map(|i| record(&format!("s-{i}"), i, 301)).collect();
    tokio::select! {
        _ = d.dispatch_detached(records.clone()) => panic!("the slow target answers only once opened"),
        _ = target.applied.notified() => {}
    }
    target.open.send_replace(true);
    let mut again = d.dispatch(records.clone()).await;
    while again.summary.failed > 0 {
        // Still in progress on the detached task: retry as a worker would.
        tokio::task::yield_now().await;
        again = d.dispatch(records.clone()).await;
    }
    assert_eq!(again.summary.duplicates, 10);
    for r in &records {
        assert_eq!(target.inner.effects(r.message_id().unwrap_or_default()), 1);
    }
}

#[tokio::test]
async fn concurrency_limit_still_dispatches_everything() {
    let d =
        Arc::new(dispatcher(ROUTES, Arc::new(MemoryStore::default())).with_concurrency_limit(1));
    let (a, b) = tokio::join!(d.dispatch(batch()), d.dispatch(batch()));
    // With one permit the second call runs after the first: pure duplicates, no in-progress.
    assert_eq!(a.summary.dispatched + b.summary.dispatched, 10);
    assert_eq!(a.summary.duplicates + b.summary.duplicates, 10);
    assert_exactly_once(&d);
}

const KAFKA_ROUTES: &str = r#"
default = ["fanout"]
[targets.fanout]
kind = "kafka"
topic = "fleet-fanout"
"#;

/// A `kafka` target has no implementation in this crate: building without one names it; a
/// target supplied under its name is used.
#[tokio::test]
async fn kafka_target_must_be_supplied_by_the_caller() {
    let table = RoutingTable::from_toml_str(KAFKA_ROUTES, "/nonexistent").unwrap();
    let err = Dispatcher::new(table.clone(), Arc::new(MemoryStore::default())).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("`fanout`") && message.contains("kafka"),
        "{message}"
    );

    let supplied = Arc::new(MemoryTarget::new("fanout"));
    let target: Arc<dyn Target> = supplied.clone();
    let d = Dispatcher::new_with_targets(table, Arc::new(MemoryStore::default()), vec![target])
        .unwrap();
    assert_eq!(d.dispatch(batch()).await.summary.dispatched, 10);
    assert_eq!(supplied.total(), 10);
}
