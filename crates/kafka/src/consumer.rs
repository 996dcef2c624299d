//! The consumer-group client, with at-least-once offset handling: offsets are stored by the
//! caller only after a record is dispatched or dead-lettered, and the background committer
//! commits only stored offsets.

use crate::config::ConsumerSettings;
use crate::context::{ClientErrors, ErrorCtx};
use crate::error::KafkaError;
use crate::pause::{PauseIntent, Tp};
use rdkafka::client::{Client, ClientContext};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A record as read from Kafka, owned.
#[derive(Debug, Clone)]
pub struct ConsumedRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Record timestamp, ms since the epoch.
    pub timestamp_ms: Option<i64>,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Value (empty for a tombstone).
    pub value: Vec<u8>,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ConsumedRecord {
    /// First header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Group events, counted.
#[derive(Debug, Default)]
pub struct GroupStats {
    /// Partitions assigned over the member's life.
    pub assigned: AtomicU64,
    /// Partitions revoked over the member's life.
    pub revoked: AtomicU64,
    /// Commits that failed.
    pub commit_failures: AtomicU64,
}

#[doc(hidden)]
pub struct GroupCtx {
    stats: Arc<GroupStats>,
    /// Logs each distinct client error once (rust-rdkafka hands each to the context twice).
    errors: ClientErrors,
    oauth: Option<Arc<crate::msk_iam::MskIamTokens>>,
    /// What this member wants paused; held across the librdkafka call that applies it.
    pause: Mutex<PauseIntent>,
}

impl GroupCtx {
    fn intent(&self) -> MutexGuard<'_, PauseIntent> {
        self.pause.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ClientContext for GroupCtx {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.errors.record(&error, reason);
    }

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        crate::context::oauth_token(self.oauth.as_deref())
    }
}

impl ConsumerContext for GroupCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.stats
                .revoked
                .fetch_add(tpl.count() as u64, Ordering::Relaxed);
            self.intent().revoked(&names(tpl));
            // Work finished on revoked partitions is committed before they move, so the next
            // owner re-delivers as little as possible. Nothing unfinished was stored.
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(error = %e, "commit on revoke");
            }
        }
    }

    /// Makes librdkafka's pause flags of the newly assigned partitions agree with what this
    /// member wants (see [`crate::pause`]): paused while it holds, resumed otherwise, since
    /// librdkafka keeps a pause from before a revoke.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.stats
                .assigned
                .fetch_add(tpl.count() as u64, Ordering::Relaxed);
            tracing::debug!(partitions = tpl.count(), "assigned");
            let mut intent = self.intent();
            let plan = intent.assigned(&names(tpl));
            if !plan.pause.is_empty() {
                if let Err(e) = consumer.pause(&list(&plan.pause)) {
                    tracing::warn!(error = %e, "pausing newly assigned partitions failed");
                }
            }
            if !plan.resume.is_empty() {
                match consumer.resume(&list(&plan.resume)) {
                    Ok(()) if !plan.were_paused.is_empty() => tracing::info!(
                        partitions = %show(&plan.were_paused),
                        "resumed re-assigned partitions that were paused when they were revoked"
                    ),
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "resuming newly assigned partitions failed")
                    }
                }
            }
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &TopicPartitionList,
    ) {
        use rdkafka::error::KafkaError as E;
        use rdkafka::types::RDKafkaErrorCode as C;
        match result {
            Ok(()) | Err(E::ConsumerCommit(C::NoOffset)) => {}
            // Members leaving or joining: the next commit (or the new owner) covers it; at worst
            // records are re-delivered, never lost.
            Err(E::ConsumerCommit(
                C::RebalanceInProgress | C::IllegalGeneration | C::UnknownMemberId,
            )) => {
                self.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("offset commit refused during a rebalance");
            }
            Err(e) => {
                self.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "offset commit failed");
            }
        }
    }
}

/// A member of a consumer group.
pub struct GroupConsumer {
    inner: StreamConsumer<GroupCtx>,
    stats: Arc<GroupStats>,
}

impl GroupConsumer {
    /// Joins `settings.group` and subscribes to `topics`.
    pub fn subscribe(settings: &ConsumerSettings, topics: &[&str]) -> Result<Self, KafkaError> {
        let stats = Arc::new(GroupStats::default());
        let inner: StreamConsumer<GroupCtx> = settings
            .to_client_config()
            .create_with_context(GroupCtx {
                stats: stats.clone(),
                errors: ClientErrors::default(),
                oauth: settings.connection.oauth()?,
                pause: Mutex::default(),
            })
            .map_err(|e| crate::error::client_error(&e))?;
        inner
            .subscribe(topics)
            .map_err(|e| KafkaError::Consume(e.to_string()))?;
        Ok(GroupConsumer { inner, stats })
    }

    /// Client-level errors (authentication, TLS, brokers down) librdkafka reported while this
    /// member was polled; each is also logged once.
    pub fn errors(&self) -> &ClientErrors {
        &self.inner.context().errors
    }

    /// Next record. Polling also serves rebalances and keeps the member in the group.
    ///
    /// An error is routine (a broker down, a transport failure: librdkafka reconnects by itself;
    /// poll again) unless [`KafkaError::is_fatal`] says otherwise.
    pub async fn recv(&self) -> Result<ConsumedRecord, KafkaError> {
        match self.inner.recv().await {
            Ok(m) => Ok(to_record(&m)),
            Err(e) => Err(poll_error(self.inner.client(), &e)),
        }
    }

    /// Marks `offset` of `topic`/`partition` done: the next commit moves past it.
    ///
    /// Call only once the record (and every earlier one of its partition) was dispatched or
    /// dead-lettered with an ack. Fails if the partition is no longer assigned, which is safe:
    /// the new owner re-delivers from the last commit.
    pub fn store(&self, topic: &str, partition: i32, offset: i64) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset + 1))
            .map_err(|e| KafkaError::Consume(e.to_string()))?;
        self.inner
            .store_offsets(&tpl)
            .map_err(|e| KafkaError::Consume(format!("store offset: {e}")))
    }

    /// Commits stored offsets now and waits for the broker.
    pub fn commit_stored(&self) -> Result<(), KafkaError> {
        match self.inner.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => Ok(()),
            Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            )) => Ok(()),
            Err(e) => Err(KafkaError::Consume(format!("commit: {e}"))),
        }
    }

    /// Holds this member's partitions: pauses fetching from every assigned partition, and from
    /// any assigned later, until [`GroupConsumer::resume_all`] (polling continues, so the member
    /// stays in the group). Returns how many partitions it paused now.
    pub fn pause_assigned(&self) -> Result<usize, KafkaError> {
        let ctx = self.inner.context();
        let mut intent = ctx.intent();
        let fresh = intent.hold(self.assignment());
        if fresh.is_empty() {
            return Ok(0);
        }
        self.inner
            .pause(&list(&fresh))
            .map_err(|e| KafkaError::Consume(format!("pause: {e}")))?;
        Ok(fresh.len())
    }

    /// Ends the hold: resumes, by name, every partition this member paused, whether or not it
    /// is assigned at the moment (librdkafka would keep the pause of a revoked partition into
    /// its next assignment). Returns how many it resumed.
    pub fn resume_all(&self) -> Result<usize, KafkaError> {
        let ctx = self.inner.context();
        let mut intent = ctx.intent();
        let paused = intent.release();
        if paused.is_empty() {
            return Ok(0);
        }
        // librdkafka skips (and does not fail on) a partition it no longer knows; the next
        // assignment of such a partition resumes it (`post_rebalance`).
        match self.inner.resume(&list(&paused)) {
            Ok(()) => Ok(paused.len()),
            Err(e) => {
                intent.release_failed(paused);
                Err(KafkaError::Consume(format!("resume: {e}")))
            }
        }
    }

    /// How many partitions this member has paused (assigned or not).
    pub fn paused_count(&self) -> usize {
        self.inner.context().intent().paused()
    }

    /// Whether this member holds its partitions ([`GroupConsumer::pause_assigned`]).
    pub fn holds(&self) -> bool {
        self.inner.context().intent().holds()
    }

    /// Currently assigned partitions.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        self.inner
            .assignment()
            .map(|t| {
                t.elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Lag per assigned partition: high watermark minus committed offset (blocking network call).
    pub fn lag(&self, timeout: Duration) -> Result<Vec<(String, i32, i64)>, KafkaError> {
        let assigned = self
            .inner
            .assignment()
            .map_err(|e| KafkaError::Consume(e.to_string()))?;
        let committed = self
            .inner
            .committed_offsets(assigned, timeout)
            .map_err(|e| KafkaError::Consume(e.to_string()))?;
        let mut out = Vec::new();
        for e in committed.elements() {
            let (low, high) = self
                .inner
                .fetch_watermarks(e.topic(), e.partition(), timeout)
                .map_err(|e| KafkaError::Consume(e.to_string()))?;
            let pos = match e.offset() {
                Offset::Offset(o) => o,
                _ => low,
            };
            out.push((e.topic().to_string(), e.partition(), (high - pos).max(0)));
        }
        Ok(out)
    }

    /// Group event counters (shared; outlives the consumer).
    pub fn stats(&self) -> Arc<GroupStats> {
        self.stats.clone()
    }

    /// Commits stored offsets and leaves the group.
    ///
    /// A commit refused because the group is rebalancing (other members leaving at the same
    /// time) is retried briefly; if it still fails the offsets stay uncommitted, which means
    /// re-delivery (the dispatcher deduplicates), never loss. librdkafka's close also makes a
    /// final commit of stored offsets.
    pub fn close(self) {
        for attempt in 0..5 {
            match self.commit_stored() {
                Ok(()) => break,
                // Members leaving together keep the group rebalancing: expected, and harmless
                // (the next owner re-delivers; the dispatcher deduplicates). Anything else is not.
                Err(e) if attempt == 4 && e.to_string().contains("RebalanceInProgress") => {
                    tracing::info!(error = %e, "final commit refused during a rebalance; uncommitted records will be re-delivered")
                }
                Err(e) if attempt == 4 => {
                    tracing::warn!(error = %e, "final commit failed; uncommitted records will be re-delivered")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        self.inner.unsubscribe();
        drop(self.inner);
    }
}

fn list(partitions: &[Tp]) -> TopicPartitionList {
    let mut t = TopicPartitionList::new();
    for (topic, p) in partitions {
        t.add_partition(topic, *p);
    }
    t
}

fn names(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

/// `topic/partition` list for a log line.
fn show(partitions: &[Tp]) -> String {
    let all: Vec<String> = partitions.iter().map(|(t, p)| format!("{t}/{p}")).collect();
    all.join(",")
}

/// Classifies an error a consumer's poll returned. librdkafka reports a dead broker, a refused
/// connection or "all brokers down" as an error event on the poll while it reconnects by
/// itself: routine ([`KafkaError::Consume`]), to log and poll again. Only a fatal error
/// (`rd_kafka_fatal_error`) ends the client ([`KafkaError::Fatal`]).
fn poll_error<C: ClientContext>(client: &Client<C>, e: &rdkafka::error::KafkaError) -> KafkaError {
    if let Some((code, reason)) = client.fatal_error() {
        return KafkaError::Fatal(format!("{code}: {reason}"));
    }
    match e {
        rdkafka::error::KafkaError::MessageConsumptionFatal(_) => KafkaError::Fatal(e.to_string()),
        _ => KafkaError::Consume(e.to_string()),
    }
}

/// `failure`, with what the client reported in the last `window` (served from its queue first:
/// log lines come first there, so an empty poll does not mean no error is queued).
fn explain(consumer: &BaseConsumer<ErrorCtx>, failure: String, window: Duration) -> String {
    let end = std::time::Instant::now() + Duration::from_millis(20);
    while std::time::Instant::now() < end {
        let _ = consumer.poll(Duration::from_millis(1));
    }
    consumer.context().errors.explain(failure, window)
}

/// A consumer that reads without joining `group` (no subscription, nothing committed): for
/// audits and lag.
fn side_consumer(
    connection: &crate::config::ConnectionSettings,
    group: &str,
) -> Result<BaseConsumer<ErrorCtx>, KafkaError> {
    let mut cfg = connection.to_client_config();
    cfg.set("group.id", group);
    cfg.set("enable.auto.commit", "false");
    cfg.set("enable.partition.eof", "false");
    let consumer: BaseConsumer<ErrorCtx> = cfg
        .create_with_context(ErrorCtx::for_connection(connection)?)
        .map_err(|e| crate::error::client_error(&e))?;
    crate::context::serve_first_token(consumer.context().oauth.as_deref(), || {
        let _ = consumer.poll(Duration::from_millis(10));
    });
    Ok(consumer)
}

/// Longest a single metadata or watermark request of a reader waits before it is tried again
/// (with a broker down, librdkafka may hold a request until its timeout).
const ATTEMPT: Duration = Duration::from_secs(5);

/// Pause between two attempts of a request that failed.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Runs a blocking request of a side consumer, each attempt with at most `per_attempt`, again
/// after a routine failure (a broker down, a leader moving, a transport error: librdkafka
/// recovers from these by itself) until `until`. A fatal client error ends it at once; the
/// last failure, past `until`, is returned with what the client reported meanwhile.
fn retrying<T>(
    consumer: &BaseConsumer<ErrorCtx>,
    what: &dyn Fn() -> String,
    per_attempt: Duration,
    until: Instant,
    mut call: impl FnMut(Duration) -> rdkafka::error::KafkaResult<T>,
) -> Result<T, KafkaError> {
    let started = Instant::now();
    let mut attempts = 0u32;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        attempts += 1;
        match call(per_attempt.min(left).max(Duration::from_millis(100))) {
            Ok(v) => return Ok(v),
            Err(e) => {
                if let Some((code, reason)) = consumer.client().fatal_error() {
                    return Err(KafkaError::Fatal(format!("{}: {code}: {reason}", what())));
                }
                if Instant::now() + RETRY_PAUSE >= until {
                    let failure = format!("{}: {e} (after {attempts} attempt(s))", what());
                    return Err(KafkaError::Consume(explain(
                        consumer,
                        failure,
                        started.elapsed() + per_attempt,
                    )));
                }
                tracing::debug!(error = %e, "{}: retrying", what());
                std::thread::sleep(RETRY_PAUSE);
            }
        }
    }
}

/// `(partition, low, high)` watermarks of every partition of `topic`; an error when the
/// metadata reports one for the topic. Routine failures are retried until `until`.
fn watermarks(
    consumer: &BaseConsumer<ErrorCtx>,
    topic: &str,
    per_attempt: Duration,
    until: Instant,
) -> Result<Vec<(i32, i64, i64)>, KafkaError> {
    let md = retrying(
        consumer,
        &|| format!("metadata for {topic}"),
        per_attempt,
        until,
        |t| consumer.fetch_metadata(Some(topic), t),
    )?;
    // A missing topic, or one this principal may not describe, is an error, not an empty one.
    if let Some(err) = md.topics().iter().find_map(|t| t.error()) {
        return Err(KafkaError::Consume(explain(
            consumer,
            format!(
                "topic {topic}: {}",
                rdkafka::types::RDKafkaErrorCode::from(err)
            ),
            per_attempt * 2,
        )));
    }
    let mut out = Vec::new();
    for p in md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
    {
        let (low, high) = retrying(
            consumer,
            &|| format!("watermarks {topic}/{p}"),
            per_attempt,
            until,
            |t| consumer.fetch_watermarks(topic, p, t),
        )?;
        out.push((p, low, high));
    }
    Ok(out)
}

/// Reads every record of `topic` from the beginning up to the high watermarks seen at the start
/// (no consumer group, nothing committed). For audits such as "which ids were dead-lettered".
///
/// Rides through a broker down or restarting: librdkafka's routine errors (transport failure,
/// all brokers down) are logged once and the read goes on while librdkafka reconnects. Only a
/// fatal client error ([`KafkaError::Fatal`]) or `timeout` ends it early, and a timeout names
/// the partitions not read to their end: never a silent partial result.
pub fn read_topic_to_end(
    connection: &crate::config::ConnectionSettings,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<ConsumedRecord>, KafkaError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let consumer = side_consumer(connection, "fleetstream-audit")?;
    // Next offset to read and end offset per partition still to read.
    let mut todo = std::collections::BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for (p, low, high) in watermarks(&consumer, topic, ATTEMPT.min(timeout), deadline)? {
        if high > low {
            todo.insert(p, (low, high));
            tpl.add_partition_offset(topic, p, Offset::Offset(low))
                .map_err(|e| KafkaError::Consume(e.to_string()))?;
        }
    }
    let mut out = Vec::new();
    if todo.is_empty() {
        return Ok(out);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| KafkaError::Consume(e.to_string()))?;
    while !todo.is_empty() {
        if Instant::now() > deadline {
            let missing: Vec<String> = todo
                .iter()
                .map(|(p, (next, end))| format!("{topic}/{p} at offset {next} of {end}"))
                .collect();
            return Err(KafkaError::Timeout(explain(
                &consumer,
                format!(
                    "reading {topic} to its end within {:?}: {} partition(s) not read to their \
                     end ({}); {} record(s) read",
                    timeout,
                    todo.len(),
                    missing.join(", "),
                    out.len()
                ),
                started.elapsed(),
            )));
        }
        let m = match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Ok(m)) => m,
            Some(Err(e)) => match poll_error(consumer.client(), &e) {
                fatal @ KafkaError::Fatal(_) => return Err(fatal),
                _ => {
                    // Routine: librdkafka reconnects by itself. Logged once per distinct error.
                    consumer.context().errors.record(&e, "");
                    continue;
                }
            },
        };
        let (p, o) = (m.partition(), m.offset());
        out.push(to_record(&m));
        if let Some((next, end)) = todo.get_mut(&p) {
            *next = o + 1;
            if *next >= *end {
                todo.remove(&p);
            }
        }
    }
    Ok(out)
}

fn to_record<M: Message>(m: &M) -> ConsumedRecord {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_string(),
                        h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    ConsumedRecord {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        timestamp_ms: m.timestamp().to_millis(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        headers,
    }
}

/// Committed offset and lag of one partition for a group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Committed offset (next to read), `None` if the group never committed here.
    pub committed: Option<i64>,
    /// High watermark (next offset to be written).
    pub high_watermark: i64,
    /// Records written and not yet committed by the group: the SLO.
    pub lag: i64,
}

/// Lag per partition of `group` on `topics`, read without joining the group.
pub fn group_lag(
    connection: &crate::config::ConnectionSettings,
    group: &str,
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<PartitionLag>, KafkaError> {
    let consumer = side_consumer(connection, group)?;
    let mut tpl = TopicPartitionList::new();
    let mut marks = Vec::new();
    let until = Instant::now() + timeout;
    for topic in topics {
        for (p, low, high) in watermarks(&consumer, topic, timeout, until)? {
            tpl.add_partition(topic, p);
            marks.push((topic.clone(), p, low, high));
        }
    }
    let committed = consumer.committed_offsets(tpl, timeout).map_err(|e| {
        KafkaError::Consume(explain(
            &consumer,
            format!("committed offsets: {e}"),
            timeout * 2,
        ))
    })?;
    Ok(marks
        .into_iter()
        .map(|(topic, partition, low, high)| {
            let c = committed
                .find_partition(&topic, partition)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            PartitionLag {
                lag: (high - c.unwrap_or(low)).max(0),
                topic,
                partition,
                committed: c,
                high_watermark: high,
            }
        })
        .collect())
}
