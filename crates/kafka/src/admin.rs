//! Topic administration: create what the topology declares, describe what exists, report drift.
//! Nothing is ever deleted or altered here: drift is reported for a human to decide.

use crate::cluster::ClusterHandle;
use crate::context::ErrorCtx;
use crate::error::KafkaError;
use fleetstream_core::{TopicSpec, Topology};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use serde::Serialize;
use std::sync::OnceLock;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(15);

/// What a topic looks like on the cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopicState {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: u32,
    /// Replicas of partition 0.
    pub replication_factor: usize,
    /// Smallest in-sync replica set over the partitions.
    pub min_isr_observed: usize,
    /// Partition leaders, by partition.
    pub leaders: Vec<i32>,
    /// `min.insync.replicas`, when the cluster answers DescribeConfigs.
    pub min_insync_replicas: Option<u16>,
    /// `retention.ms`, when the cluster answers DescribeConfigs.
    pub retention_ms: Option<i64>,
}

/// One difference between the topology and the cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drift {
    /// Topic.
    pub topic: String,
    /// Setting that differs.
    pub setting: String,
    /// What the topology wants.
    pub wanted: String,
    /// What the cluster has.
    pub actual: String,
}

/// Result of `topics apply`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyReport {
    /// Topics created now.
    pub created: Vec<String>,
    /// Topics that existed and match.
    pub unchanged: Vec<String>,
    /// Differences found on existing topics (not fixed).
    pub drift: Vec<Drift>,
    /// Settings this cluster cannot report (the embedded cluster has no DescribeConfigs).
    pub unchecked: Vec<String>,
}

/// Why `topics apply` cannot create topics or read their configs over MSK IAM.
const MSK_IAM_ADMIN: &str = "this build cannot create topics or read their configs over MSK IAM: \
rust-rdkafka's admin client cannot answer librdkafka's OAUTHBEARER token requests. Create them \
with the AWS console, CLI or Terraform, or run `fleetstream topics apply` over SCRAM \
(sasl_ssl, port 9096) or mutual TLS (port 9094); produce and worker then run over IAM";

/// Admin operations on a cluster.
pub struct Admin {
    cluster: ClusterHandle,
    /// CreateTopics and DescribeConfigs, created on first use: a caller that only reads
    /// metadata (the worker's start-up check) opens one client, not two.
    client: OnceLock<AdminClient<DefaultClientContext>>,
    /// Metadata comes from a plain client whose events can be served: rust-rdkafka's
    /// `AdminClient` never polls librdkafka's main queue, so the errors that explain a timeout
    /// (authentication, TLS) would stay unread there.
    meta: BaseProducer<ErrorCtx>,
}

impl Admin {
    /// Connects a metadata client; the admin client follows when first needed.
    pub fn new(cluster: &ClusterHandle) -> Result<Self, KafkaError> {
        let meta: BaseProducer<ErrorCtx> = cluster
            .connection()
            .to_client_config()
            .create_with_context(ErrorCtx::for_connection(cluster.connection())?)
            .map_err(|e| crate::error::client_error(&e))?;
        crate::context::serve_first_token(meta.context().oauth.as_deref(), || {
            meta.poll(Duration::from_millis(10));
        });
        Ok(Admin {
            cluster: cluster.clone(),
            client: OnceLock::new(),
            meta,
        })
    }

    fn client(&self) -> Result<&AdminClient<DefaultClientContext>, KafkaError> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        if self.cluster.connection().uses_msk_iam() {
            return Err(KafkaError::Admin(MSK_IAM_ADMIN.into()));
        }
        let c = self
            .cluster
            .connection()
            .to_client_config()
            .create()
            .map_err(|e| crate::error::client_error(&e))?;
        Ok(self.client.get_or_init(|| c))
    }

    /// The cluster's metadata. On failure, the error says what the client reported meanwhile
    /// (a refused SASL login, an untrusted certificate, no broker reachable).
    fn metadata(&self) -> Result<rdkafka::metadata::Metadata, KafkaError> {
        self.meta
            .client()
            .fetch_metadata(None, TIMEOUT)
            .map_err(|e| {
                // Serve the error events queued while the request waited.
                self.meta.poll(Duration::from_millis(10));
                KafkaError::Admin(
                    self.meta
                        .client()
                        .context()
                        .errors
                        .explain(format!("metadata: {e}"), TIMEOUT + TIMEOUT),
                )
            })
    }

    /// Which of `names` the cluster has, from metadata alone (no admin client). A topic this
    /// client may not describe (ACLs) is missing too.
    pub fn existing_topics(&self, names: &[String]) -> Result<Vec<String>, KafkaError> {
        let md = self.metadata()?;
        Ok(names
            .iter()
            .filter(|n| {
                md.topics().iter().any(|t| {
                    t.name() == n.as_str() && t.error().is_none() && !t.partitions().is_empty()
                })
            })
            .cloned()
            .collect())
    }

    /// Whether the cluster is librdkafka's mock cluster: ours in this process, or one another
    /// fleetstream process started (its cluster id says so). It has no DescribeConfigs or
    /// CreateTopics API.
    pub fn is_mock(&self) -> bool {
        self.cluster.is_embedded()
            || self
                .meta
                .client()
                .fetch_cluster_id(TIMEOUT)
                .is_some_and(|id| id.starts_with("mockCluster"))
    }

    /// Number of brokers in the cluster.
    pub fn broker_count(&self) -> Result<usize, KafkaError> {
        Ok(self.metadata()?.brokers().len())
    }

    /// Describes topics by name; missing topics are left out.
    pub async fn describe(&self, names: &[String]) -> Result<Vec<TopicState>, KafkaError> {
        let md = self.metadata()?;
        let mut out = Vec::new();
        for name in names {
            let Some(t) = md
                .topics()
                .iter()
                .find(|t| t.name() == name && t.error().is_none())
            else {
                continue;
            };
            if t.partitions().is_empty() {
                continue;
            }
            let mut parts: Vec<_> = t.partitions().iter().collect();
            parts.sort_by_key(|p| p.id());
            out.push(TopicState {
                name: name.clone(),
                partitions: parts.len() as u32,
                replication_factor: parts[0].replicas().len(),
                min_isr_observed: parts.iter().map(|p| p.isr().len()).min().unwrap_or(0),
                leaders: parts.iter().map(|p| p.leader()).collect(),
                min_insync_replicas: None,
                retention_ms: None,
            });
        }
        if !out.is_empty() && !self.cluster.connection().uses_msk_iam() && !self.is_mock() {
            let specs: Vec<ResourceSpecifier<'_>> = out
                .iter()
                .map(|t| ResourceSpecifier::Topic(&t.name))
                .collect();
            let results = self
                .client()?
                .describe_configs(&specs, &AdminOptions::new().request_timeout(Some(TIMEOUT)))
                .await
                .map_err(|e| KafkaError::Admin(format!("describe configs: {e}")))?;
            for (state, res) in out.iter_mut().zip(results) {
                if let Ok(res) = res {
                    state.min_insync_replicas = res
                        .get("min.insync.replicas")
                        .and_then(|e| e.value.as_deref())
                        .and_then(|v| v.parse().ok());
                    state.retention_ms = res
                        .get("retention.ms")
                        .and_then(|e| e.value.as_deref())
                        .and_then(|v| v.parse().ok());
                }
            }
        }
        Ok(out)
    }

    /// Creates missing topics and reports drift on existing ones.
    pub async fn apply(&self, topology: &Topology) -> Result<ApplyReport, KafkaError> {
        let brokers = self.broker_count()?;
        let repl = topology.replication_for(brokers);
        let names: Vec<String> = topology.topics().iter().map(|t| t.name.clone()).collect();
        let existing = self.describe(&names).await?;
        let mut report = ApplyReport::default();
        let missing: Vec<&TopicSpec> = topology
            .topics()
            .iter()
            .filter(|t| !existing.iter().any(|e| e.name == t.name))
            .collect();
        if !missing.is_empty() {
            if self.cluster.connection().uses_msk_iam() {
                let names: Vec<&str> = missing.iter().map(|t| t.name.as_str()).collect();
                return Err(KafkaError::Admin(format!(
                    "topics {names:?} are missing, and {MSK_IAM_ADMIN}"
                )));
            }
            if let Some(embedded) = self.cluster.embedded_cluster() {
                for t in &missing {
                    embedded.create_topic(&t.name, t.partitions, repl.replication_factor)?;
                }
            } else {
                let min_isr = repl.min_insync_replicas.to_string();
                let retention: Vec<String> =
                    missing.iter().map(|t| t.retention_ms.to_string()).collect();
                let new: Vec<NewTopic<'_>> = missing
                    .iter()
                    .zip(&retention)
                    .map(|(t, r)| {
                        NewTopic::new(
                            &t.name,
                            t.partitions as i32,
                            TopicReplication::Fixed(i32::from(repl.replication_factor)),
                        )
                        .set("min.insync.replicas", &min_isr)
                        .set("retention.ms", r)
                        .set("unclean.leader.election.enable", "false")
                    })
                    .collect();
                let results = self
                    .client()?
                    .create_topics(&new, &AdminOptions::new().operation_timeout(Some(TIMEOUT)))
                    .await
                    .map_err(|e| KafkaError::Admin(format!("create topics: {e}")))?;
                for r in results {
                    match r {
                        Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((name, code)) => {
                            return Err(KafkaError::Admin(format!("create {name}: {code}")))
                        }
                    }
                }
            }
            report.created = missing.iter().map(|t| t.name.clone()).collect();
            self.wait_for(&report.created).await?;
        }
        for state in &existing {
            let Some(spec) = topology.topic(&state.name) else {
                continue;
            };
            let before = report.drift.len();
            let mut drift = |setting: &str, wanted: String, actual: String| {
                report.drift.push(Drift {
                    topic: state.name.clone(),
                    setting: setting.into(),
                    wanted,
                    actual,
                })
            };
            if state.partitions != spec.partitions {
                drift(
                    "partitions",
                    spec.partitions.to_string(),
                    state.partitions.to_string(),
                );
            }
            if state.replication_factor != usize::from(repl.replication_factor) {
                drift(
                    "replication_factor",
                    repl.replication_factor.to_string(),
                    state.replication_factor.to_string(),
                );
            }
            if let Some(m) = state.min_insync_replicas {
                if m != repl.min_insync_replicas {
                    drift(
                        "min.insync.replicas",
                        repl.min_insync_replicas.to_string(),
                        m.to_string(),
                    );
                }
            }
            if let Some(r) = state.retention_ms {
                if r != spec.retention_ms as i64 {
                    drift("retention.ms", spec.retention_ms.to_string(), r.to_string());
                }
            }
            if report.drift.len() == before {
                report.unchanged.push(state.name.clone());
            }
        }
        if self.cluster.connection().uses_msk_iam() || self.is_mock() {
            report.unchecked = vec!["min.insync.replicas".into(), "retention.ms".into()];
        }
        Ok(report)
    }

    /// Waits until every topic in `names` has leaders for all partitions.
    async fn wait_for(&self, names: &[String]) -> Result<(), KafkaError> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let states = self.describe(names).await?;
            let ready = names.iter().all(|n| {
                states
                    .iter()
                    .any(|s| &s.name == n && s.partitions > 0 && s.leaders.iter().all(|l| *l >= 0))
            });
            if ready {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(KafkaError::Timeout(format!(
                    "topics {names:?} did not get leaders"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
