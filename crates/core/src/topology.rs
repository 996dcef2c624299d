//! The topology file: topics (domains), partitions (scale), dead-letter topics, consumer groups,
//! replication, routing rules code -> topic, and key strategy.

use crate::event::Code;
use crate::key::{KeyResolver, KeysConfig};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A problem with a topology file, naming the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// TOML syntax or an unknown/mistyped field.
    #[error("topology file is invalid: {0}")]
    Parse(String),
    /// A semantically invalid value.
    #[error("topology key `{key}` is invalid: {reason}")]
    Invalid {
        /// Dotted path of the offending key, e.g. `topics[1].partitions`.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> TopologyError {
    TopologyError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Replication settings for a cluster size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationSettings {
    /// Copies of each partition.
    pub replication_factor: u16,
    /// Replicas that must acknowledge an `acks=all` write.
    pub min_insync_replicas: u16,
}

/// `[cluster]`: durability settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Replication on a cluster with at least `replication_factor` brokers (MSK: 3 and 2).
    pub replication_factor: u16,
    /// `min.insync.replicas` on such a cluster.
    pub min_insync_replicas: u16,
    /// What a smaller cluster (one broker on a laptop) gets instead; it cannot be durable.
    pub single_broker: ReplicationSettings,
}

/// What a topic is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicRole {
    /// Carries telemetry routed by the producer.
    Source,
    /// Carries records a worker could not process, with the reason in headers.
    DeadLetter,
}

/// One `[[topics]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partition count: the unit of parallelism; the hot topic gets more.
    pub partitions: u32,
    /// Dead-letter topic for this source topic (created with `dead_letter_partitions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
    /// Partitions of the dead-letter topic. Default 3: dead letters are rare.
    #[serde(default = "three")]
    pub dead_letter_partitions: u32,
    /// Consumer group that reads this topic. Default `[consumer].group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Retention in milliseconds. Default 7 days.
    #[serde(default = "week_ms")]
    pub retention_ms: u64,
    /// Role; `source` unless this entry is a dead-letter topic.
    #[serde(default = "source_role")]
    pub role: TopicRole,
}

fn three() -> u32 {
    3
}
fn week_ms() -> u64 {
    7 * 24 * 3600 * 1000
}
fn source_role() -> TopicRole {
    TopicRole::Source
}

/// One `[[routing.rules]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingRule {
    /// Codes this rule catches.
    pub codes: Vec<u32>,
    /// Destination topic.
    pub topic: String,
}

/// `[routing]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Topic for codes no rule names.
    pub default_topic: String,
    /// Rules, each code in at most one.
    #[serde(default)]
    pub rules: Vec<RoutingRule>,
}

/// `[consumer]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSection {
    /// Default consumer group for source topics.
    pub group: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopologyFile {
    name: String,
    cluster: ClusterConfig,
    consumer: ConsumerSection,
    topics: Vec<TopicSpec>,
    routing: RoutingConfig,
    #[serde(default)]
    keys: KeysConfig,
}

/// A validated topology.
#[derive(Debug, Clone)]
pub struct Topology {
    name: String,
    cluster: ClusterConfig,
    default_group: String,
    topics: Vec<TopicSpec>,
    routing: RoutingConfig,
    keys: KeysConfig,
    router: TopicRouter,
    key_resolver: KeyResolver,
}

impl Topology {
    /// The same topology with `topic` at `partitions` partitions: the lab's "what if".
    pub fn with_partitions(&self, topic: &str, partitions: u32) -> Result<Topology, TopologyError> {
        let mut t = self.clone();
        let names: Vec<&str> = self.topics.iter().map(|t| t.name.as_str()).collect();
        let spec = t
            .topics
            .iter_mut()
            .find(|s| s.name == topic)
            .ok_or_else(|| TopologyError::Invalid {
                key: format!("topics.{topic}"),
                reason: format!("no such topic (the topology has {})", names.join(", ")),
            })?;
        if partitions == 0 {
            return Err(TopologyError::Invalid {
                key: format!("topics.{topic}.partitions"),
                reason: "must be at least 1".into(),
            });
        }
        spec.partitions = partitions;
        for r in t.router.topics.iter_mut().filter(|s| s.name == topic) {
            r.partitions = partitions;
        }
        Ok(t)
    }

    /// Parses and validates a topology from TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self, TopologyError> {
        let file: TopologyFile =
            toml::from_str(text).map_err(|e| TopologyError::Parse(e.to_string()))?;
        Self::validate(file)
    }

    fn validate(file: TopologyFile) -> Result<Self, TopologyError> {
        let c = &file.cluster;
        if c.replication_factor == 0 {
            return Err(invalid("cluster.replication_factor", "must be at least 1"));
        }
        if c.min_insync_replicas == 0 || c.min_insync_replicas > c.replication_factor {
            return Err(invalid(
                "cluster.min_insync_replicas",
                "must be between 1 and replication_factor",
            ));
        }
        let s = c.single_broker;
        if s.replication_factor != 1 || s.min_insync_replicas != 1 {
            return Err(invalid(
                "cluster.single_broker",
                "a single broker can only hold replication_factor = 1, min_insync_replicas = 1",
            ));
        }
        if file.consumer.group.trim().is_empty() {
            return Err(invalid("consumer.group", "must not be empty"));
        }
        let mut topics: Vec<TopicSpec> = Vec::new();
        let mut names = BTreeSet::new();
        for (i, t) in file.topics.iter().enumerate() {
            check_topic_name(&format!("topics[{i}].name"), &t.name)?;
            if t.partitions == 0 {
                return Err(invalid(
                    format!("topics[{i}].partitions"),
                    "must be at least 1",
                ));
            }
            if !names.insert(t.name.clone()) {
                return Err(invalid(
                    format!("topics[{i}].name"),
                    format!("topic {:?} is declared twice", t.name),
                ));
            }
            topics.push(t.clone());
        }
        // Dead-letter topics are declared by their source topic; materialise them.
        for (i, t) in file.topics.iter().enumerate() {
            if let Some(dl) = &t.dead_letter {
                check_topic_name(&format!("topics[{i}].dead_letter"), dl)?;
                if t.dead_letter_partitions == 0 {
                    return Err(invalid(
                        format!("topics[{i}].dead_letter_partitions"),
                        "must be at least 1",
                    ));
                }
                if names.contains(dl) {
                    continue;
                }
                names.insert(dl.clone());
                topics.push(TopicSpec {
                    name: dl.clone(),
                    partitions: t.dead_letter_partitions,
                    dead_letter: None,
                    dead_letter_partitions: t.dead_letter_partitions,
                    group: None,
                    retention_ms: 14 * 24 * 3600 * 1000,
                    role: TopicRole::DeadLetter,
                });
            }
        }
        let known = |key: String, topic: &str| -> Result<(), TopologyError> {
            if names.contains(topic) {
                Ok(())
            } else {
                Err(invalid(
                    key,
                    format!("topic {topic:?} is not declared in [[topics]]"),
                ))
            }
        };
        known("routing.default_topic".into(), &file.routing.default_topic)?;
        let mut by_code = BTreeMap::new();
        for (i, rule) in file.routing.rules.iter().enumerate() {
            known(format!("routing.rules[{i}].topic"), &rule.topic)?;
            if rule.codes.is_empty() {
                return Err(invalid(
                    format!("routing.rules[{i}].codes"),
                    "must list at least one code",
                ));
            }
            for code in &rule.codes {
                if by_code.insert(*code, rule.topic.clone()).is_some() {
                    return Err(invalid(
                        format!("routing.rules[{i}].codes"),
                        format!("code {code} is routed by two rules"),
                    ));
                }
            }
        }
        let mut subkeys = BTreeMap::new();
        if file.keys.default_subkeys == 0 {
            return Err(invalid("keys.default_subkeys", "must be at least 1"));
        }
        for (code, k) in &file.keys.subkeys {
            let parsed: u32 = code.parse().map_err(|_| {
                invalid(
                    format!("keys.subkeys.{code}"),
                    "key must be an event code (an integer)",
                )
            })?;
            if *k == 0 {
                return Err(invalid(
                    format!("keys.subkeys.{code}"),
                    "must be at least 1",
                ));
            }
            subkeys.insert(parsed, *k);
        }
        let index: BTreeMap<String, usize> = topics
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let router = TopicRouter {
            topics: topics.clone(),
            by_code: by_code.into_iter().map(|(c, t)| (c, index[&t])).collect(),
            default: index[&file.routing.default_topic],
        };
        let key_resolver = KeyResolver::new(file.keys.strategy, file.keys.default_subkeys, subkeys);
        Ok(Topology {
            name: file.name,
            cluster: file.cluster,
            default_group: file.consumer.group,
            topics,
            routing: file.routing,
            keys: file.keys,
            router,
            key_resolver,
        })
    }

    /// Topology name (for logs).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Every topic, source and dead-letter.
    pub fn topics(&self) -> &[TopicSpec] {
        &self.topics
    }
    /// Source topics only.
    pub fn source_topics(&self) -> impl Iterator<Item = &TopicSpec> {
        self.topics.iter().filter(|t| t.role == TopicRole::Source)
    }
    /// A topic by name.
    pub fn topic(&self, name: &str) -> Option<&TopicSpec> {
        self.topics.iter().find(|t| t.name == name)
    }
    /// The consumer group that reads `topic`.
    pub fn group_for<'a>(&'a self, topic: &'a TopicSpec) -> &'a str {
        topic.group.as_deref().unwrap_or(&self.default_group)
    }
    /// Source topics grouped by consumer group (group -> topics).
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in self.source_topics() {
            out.entry(self.group_for(t).to_string())
                .or_default()
                .push(t.name.clone());
        }
        out
    }
    /// Cluster durability settings.
    pub fn cluster(&self) -> &ClusterConfig {
        &self.cluster
    }
    /// Replication for a cluster of `brokers` brokers: the full setting when it fits, else the
    /// file's `single_broker` fallback.
    pub fn replication_for(&self, brokers: usize) -> ReplicationSettings {
        if brokers >= usize::from(self.cluster.replication_factor) {
            ReplicationSettings {
                replication_factor: self.cluster.replication_factor,
                min_insync_replicas: self.cluster.min_insync_replicas,
            }
        } else {
            self.cluster.single_broker
        }
    }
    /// Routing section as written.
    pub fn routing(&self) -> &RoutingConfig {
        &self.routing
    }
    /// Keys section as written.
    pub fn keys(&self) -> &KeysConfig {
        &self.keys
    }
    /// Code -> topic router.
    pub fn router(&self) -> &TopicRouter {
        &self.router
    }
    /// Key resolver built from `[keys]`.
    pub fn key_resolver(&self) -> &KeyResolver {
        &self.key_resolver
    }
    /// The dead-letter topic for a source topic, if declared.
    pub fn dead_letter_for(&self, topic: &str) -> Option<&str> {
        self.topic(topic).and_then(|t| t.dead_letter.as_deref())
    }
}

fn check_topic_name(key: &str, name: &str) -> Result<(), TopologyError> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(key, format!("{name:?} is not a legal Kafka topic name (ASCII letters, digits, '.', '_', '-'; at most 249)")))
    }
}

/// Chooses the topic for a code: domain routing, or priority routing with the hybrid file.
#[derive(Debug, Clone)]
pub struct TopicRouter {
    topics: Vec<TopicSpec>,
    by_code: BTreeMap<u32, usize>,
    default: usize,
}

impl TopicRouter {
    /// The topic for `code`.
    pub fn route(&self, code: Code) -> &TopicSpec {
        let i = self.by_code.get(&code.0).copied().unwrap_or(self.default);
        &self.topics[i]
    }
    /// Index of the topic for `code` in [`Topology::topics`] (cheap, for hot loops).
    pub fn route_index(&self, code: Code) -> usize {
        self.by_code.get(&code.0).copied().unwrap_or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CURRENT: &str = include_str!("../../../config/topology.toml");
    const HYBRID: &str = include_str!("../../../config/topology-hybrid.toml");

    #[test]
    fn a_what_if_partition_count_changes_one_topic_only() {
        let t = Topology::from_toml_str(include_str!("../../../config/topology.toml")).unwrap();
        let w = t.with_partitions("mt-c400", 16).unwrap();
        assert_eq!(w.topic("mt-c400").unwrap().partitions, 16);
        assert_eq!(w.topic("mt-c300").unwrap().partitions, 4);
        assert_eq!(w.router().route(Code(300)).partitions, 16);
        assert_eq!(t.topic("mt-c400").unwrap().partitions, 12);
        let e = t.with_partitions("nope", 3).unwrap_err().to_string();
        assert!(e.contains("topics.nope") && e.contains("mt-c400"), "{e}");
        assert!(t.with_partitions("mt-c300", 0).is_err());
    }

    #[test]
    fn checked_in_topology_follows_the_notes() {
        let t = Topology::from_toml_str(CURRENT).unwrap();
        assert_eq!(t.topic("mt-c400").unwrap().partitions, 12);
        assert_eq!(t.topic("mt-c300").unwrap().partitions, 4);
        for code in 300..=303 {
            assert_eq!(t.router().route(Code(code)).name, "mt-c400");
        }
        assert_eq!(t.router().route(Code(304)).name, "mt-c300");
        assert_eq!(t.router().route(Code(999)).name, "mt-c300");
        for src in ["mt-c400", "mt-c300"] {
            let dl = t.dead_letter_for(src).unwrap();
            assert_eq!(t.topic(dl).unwrap().role, TopicRole::DeadLetter);
        }
        assert_eq!(
            t.replication_for(3),
            ReplicationSettings {
                replication_factor: 3,
                min_insync_replicas: 2
            }
        );
        assert_eq!(
            t.replication_for(1),
            ReplicationSettings {
                replication_factor: 1,
                min_insync_replicas: 1
            }
        );
    }

    #[test]
    fn hybrid_topology_isolates_code_300_in_its_own_group() {
        let t = Topology::from_toml_str(HYBRID).unwrap();
        let hp = t.router().route(Code(300));
        assert_eq!(hp.name, "high_priority_events");
        assert_eq!(hp.partitions, 4);
        assert_eq!(t.router().route(Code(301)).name, "mt-c400");
        assert_eq!(t.router().route(Code(400)).name, "mt-c300");
        let groups = t.groups();
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert_ne!(t.group_for(hp), t.group_for(t.topic("mt-c400").unwrap()));
    }

    #[test]
    fn errors_name_the_bad_key() {
        let bad = CURRENT.replace("partitions = 12", "partitions = 0");
        let err = Topology::from_toml_str(&bad).unwrap_err().to_string();
        assert!(err.contains("topics[0].partitions"), "{err}");

        let bad = CURRENT.replace("default_topic = \"mt-c300\"", "default_topic = \"nope\"");
        let err = Topology::from_toml_str(&bad).unwrap_err().to_string();
        assert!(err.contains("routing.default_topic"), "{err}");

        let bad = CURRENT.replace("[cluster]", "[cluster]\nbogus = 1");
        let err = Topology::from_toml_str(&bad).unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");

        let bad = CURRENT.replace(
            "\n[keys]",
            "\n[[routing.rules]]\ncodes = [300]\ntopic = \"mt-c300\"\n\n[keys]",
        );
        let err = Topology::from_toml_str(&bad).unwrap_err().to_string();
        assert!(
            err.contains("routing.rules[1].codes") && err.contains("300"),
            "{err}"
        );
    }
}
