//! The consumer-group client, with at-least-once offset handling: offsets are stored by the
//! caller only after a record is dispatched or dead-lettered, and the background committer
//! commits only stored offsets.

use crate::config::ConsumerSettings;
use crate::context::{ClientErrors, ErrorCtx};
use crate::error::KafkaError;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
            // Work finished on revoked partitions is committed before they move, so the next
            // owner re-delivers as little as possible. Nothing unfinished was stored.
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(error = %e, "commit on revoke");
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.stats
                .assigned
                .fetch_add(tpl.count() as u64, Ordering::Relaxed);
            tracing::debug!(partitions = tpl.count(), "assigned");
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
    pub async fn recv(&self) -> Result<ConsumedRecord, KafkaError> {
        let m = self
            .inner
            .recv()
            .await
            .map_err(|e| KafkaError::Consume(e.to_string()))?;
        Ok(to_record(&m))
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

    /// Pauses fetching from partitions (polling continues, so the member stays in the group).
    pub fn pause(&self, partitions: &[(String, i32)]) -> Result<(), KafkaError> {
        self.inner
            .pause(&tpl(partitions))
            .map_err(|e| KafkaError::Consume(format!("pause: {e}")))
    }

    /// Resumes fetching from paused partitions.
    pub fn resume(&self, partitions: &[(String, i32)]) -> Result<(), KafkaError> {
        self.inner
            .resume(&tpl(partitions))
            .map_err(|e| KafkaError::Consume(format!("resume: {e}")))
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

fn tpl(partitions: &[(String, i32)]) -> TopicPartitionList {
    let mut t = TopicPartitionList::new();
    for (topic, p) in partitions {
        t.add_partition(topic, *p);
    }
    t
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

/// `(partition, low, high)` watermarks of every partition of `topic`; an error when the
/// metadata reports one for the topic.
fn watermarks(
    consumer: &BaseConsumer<ErrorCtx>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<(i32, i64, i64)>, KafkaError> {
    let failed = |what: String| KafkaError::Consume(explain(consumer, what, timeout * 2));
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| failed(format!("metadata for {topic}: {e}")))?;
    // A missing topic, or one this principal may not describe, is an error, not an empty one.
    if let Some(err) = md.topics().iter().find_map(|t| t.error()) {
        return Err(failed(format!(
            "topic {topic}: {}",
            rdkafka::types::RDKafkaErrorCode::from(err)
        )));
    }
    let mut out = Vec::new();
    for p in md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
    {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .map_err(|e| failed(format!("watermarks {topic}/{p}: {e}")))?;
        out.push((p, low, high));
    }
    Ok(out)
}

/// Reads every record of `topic` from the beginning up to the high watermarks seen at the start
/// (no consumer group, nothing committed). For audits such as "which ids were dead-lettered".
pub fn read_topic_to_end(
    connection: &crate::config::ConnectionSettings,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<ConsumedRecord>, KafkaError> {
    let consumer = side_consumer(connection, "fleetstream-audit")?;
    let mut ends = std::collections::BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for (p, low, high) in watermarks(&consumer, topic, timeout)? {
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Offset(low))
                .map_err(|e| KafkaError::Consume(e.to_string()))?;
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| KafkaError::Consume(e.to_string()))?;
    let deadline = std::time::Instant::now() + timeout;
    while !ends.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(KafkaError::Timeout(explain(
                &consumer,
                format!("reading {topic} to its end"),
                timeout * 2,
            )));
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.map_err(|e| KafkaError::Consume(e.to_string()))?;
        let (p, o) = (m.partition(), m.offset());
        out.push(to_record(&m));
        if ends.get(&p).is_some_and(|end| o + 1 >= *end) {
            ends.remove(&p);
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
    for topic in topics {
        for (p, low, high) in watermarks(&consumer, topic, timeout)? {
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
