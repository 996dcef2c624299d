//! What a dispatch reports: a result per record, a summary, and the partial batch response
//! Lambda reads.

use crate::record::BatchRecord;
use serde::Serialize;

/// What happened to one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Delivered to every target of its route (possibly some in an earlier attempt).
    Dispatched,
    /// Every target already had it: a redelivery, no effect.
    Duplicate,
    /// Not (fully) delivered. `retriable`: a redelivery may succeed (target down, record in
    /// progress elsewhere); otherwise dead-letter it (`invalid:<class>`, `unknown_code:<code>`,
    /// a target's permanent rejection).
    Failed {
        /// Low-cardinality reason, e.g. `invalid:schema`, `target:archive:io`, `in_progress`.
        reason: String,
        /// Whether redelivering may succeed.
        retriable: bool,
    },
    /// Deliberately not delivered (unknown code under policy `skip`).
    Skipped {
        /// Why, e.g. `unknown_code:999`.
        reason: String,
    },
    /// Its id was already used by a different payload: two messages share an id. Not executed.
    Conflict,
}

/// The [`Outcome::Failed`] reason of a record whose marker another dispatch holds: that
/// dispatch is still running (or died, and the marker expires after its time to live).
pub const IN_PROGRESS: &str = "in_progress";

impl Outcome {
    /// Another dispatch of this record holds its marker: it will settle (or the marker expire),
    /// so the caller retries without giving up on the record (see [`IN_PROGRESS`]).
    pub fn is_in_progress(&self) -> bool {
        matches!(self, Outcome::Failed { reason, retriable: true } if reason == IN_PROGRESS)
    }

    /// The `outcome` label of [`fleetstream_obs::dispatch::RECORDS_TOTAL`].
    pub fn metric_label(&self) -> &'static str {
        match self {
            Outcome::Dispatched => "dispatched",
            Outcome::Duplicate => "duplicate",
            Outcome::Failed { .. } => "failed",
            Outcome::Skipped { .. } => "skipped",
            Outcome::Conflict => "conflict",
        }
    }

    /// Whether the record reached a final state its offset may be committed past without loss.
    pub fn is_settled(&self) -> bool {
        matches!(
            self,
            Outcome::Dispatched | Outcome::Duplicate | Outcome::Skipped { .. }
        )
    }
}

/// Result for one record, in input order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordResult {
    /// Record topic.
    pub topic: String,
    /// Record partition.
    pub partition: i32,
    /// Record offset.
    pub offset: i64,
    /// The producer's message id, if the record carried one.
    pub message_id: Option<String>,
    /// What happened.
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl RecordResult {
    pub(crate) fn new(record: &BatchRecord, outcome: Outcome) -> Self {
        Self {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            message_id: record.message_id().map(str::to_owned),
            outcome,
        }
    }
}

/// Identifies a record in a Kafka partial batch response: the `records` map key
/// (`"<topic>-<partition>"`) and the offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaItemIdentifier {
    /// `"<topic>-<partition>"`.
    pub partition: String,
    /// Record offset.
    pub offset: i64,
}

/// One entry of `batchItemFailures`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemFailure {
    /// The failed record.
    pub item_identifier: KafkaItemIdentifier,
}

/// The partial batch response for Kafka event sources with `ReportBatchItemFailures`:
/// `{"batchItemFailures": [{"itemIdentifier": {"partition": "<topic>-<partition>", "offset": N}}]}`.
///
/// Kafka's form differs from SQS/Kinesis (where `itemIdentifier` is a string): it is an object,
/// as in AWS's "error handling controls for Kafka event sources" and Powertools' Kafka batch
/// processor. Lambda resumes each listed topic-partition from its lowest listed offset and counts
/// the batch a success when the list is empty. This is what the Lambda binary returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResponse {
    /// Records to retry.
    pub batch_item_failures: Vec<BatchItemFailure>,
}

/// Counts by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// [`Outcome::Dispatched`].
    pub dispatched: usize,
    /// [`Outcome::Duplicate`].
    pub duplicates: usize,
    /// [`Outcome::Failed`], retriable or not.
    pub failed: usize,
    /// [`Outcome::Skipped`].
    pub skipped: usize,
    /// [`Outcome::Conflict`].
    pub conflicts: usize,
}

/// Everything a dispatch reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatchResponse {
    /// One result per input record, in input order.
    pub results: Vec<RecordResult>,
    /// Every record that is not settled (failed, retriable or not, and conflicts), in the
    /// Kafka partial-batch form. Non-retriable ones are listed too: leaving a record out lets
    /// Lambda commit past it, which is loss. Pair `ReportBatchItemFailures` with a maximum retry
    /// count and an on-failure destination so they end up dead-lettered.
    pub batch_item_failures: Vec<BatchItemFailure>,
    /// Counts by outcome.
    pub summary: Summary,
}

impl DispatchResponse {
    pub(crate) fn from_results(results: Vec<RecordResult>) -> Self {
        let mut summary = Summary::default();
        let mut batch_item_failures = Vec::new();
        for r in &results {
            match r.outcome {
                Outcome::Dispatched => summary.dispatched += 1,
                Outcome::Duplicate => summary.duplicates += 1,
                Outcome::Failed { .. } => summary.failed += 1,
                Outcome::Skipped { .. } => summary.skipped += 1,
                Outcome::Conflict => summary.conflicts += 1,
            }
            if !r.outcome.is_settled() {
                batch_item_failures.push(BatchItemFailure {
                    item_identifier: KafkaItemIdentifier {
                        partition: format!("{}-{}", r.topic, r.partition),
                        offset: r.offset,
                    },
                });
            }
        }
        Self {
            results,
            batch_item_failures,
            summary,
        }
    }

    /// The body the Lambda function returns.
    pub fn lambda_response(&self) -> BatchResponse {
        BatchResponse {
            batch_item_failures: self.batch_item_failures.clone(),
        }
    }

    /// Whether every record is settled (the whole batch may be committed).
    pub fn is_complete(&self) -> bool {
        self.batch_item_failures.is_empty()
    }
}
