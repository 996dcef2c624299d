//! Which cluster a command talks to: an external one (`--bootstrap`) or the embedded one.

use crate::config::ConnectionSettings;
use crate::embedded::EmbeddedCluster;
use crate::error::KafkaError;
use std::sync::Arc;

/// A cluster to talk to. Cloning shares the embedded cluster, which stops with the last clone.
#[derive(Debug, Clone)]
pub struct ClusterHandle {
    connection: ConnectionSettings,
    embedded: Option<Arc<EmbeddedCluster>>,
}

impl ClusterHandle {
    /// Starts an embedded (mock) cluster of `brokers` brokers in this process.
    pub fn embedded(brokers: usize) -> Result<Self, KafkaError> {
        let cluster = EmbeddedCluster::start(brokers)?;
        Ok(ClusterHandle {
            connection: ConnectionSettings::plaintext(cluster.bootstrap()),
            embedded: Some(Arc::new(cluster)),
        })
    }

    /// A real cluster reached with `connection`.
    pub fn external(connection: ConnectionSettings) -> Self {
        ClusterHandle {
            connection,
            embedded: None,
        }
    }

    /// Connection settings for clients.
    pub fn connection(&self) -> &ConnectionSettings {
        &self.connection
    }

    /// The embedded cluster, when this is one.
    pub fn embedded_cluster(&self) -> Option<&EmbeddedCluster> {
        self.embedded.as_deref()
    }

    /// Whether this is the in-process mock cluster.
    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    /// One line saying what this cluster is, for the first line of output.
    pub fn banner(&self) -> String {
        match &self.embedded {
            Some(e) => format!(
                "cluster: embedded librdkafka mock cluster, {} brokers at {} (in-process; no replication, keeps ~5 MiB per partition; not durable)",
                e.brokers(),
                e.bootstrap()
            ),
            None => format!("cluster: {}", self.connection.bootstrap),
        }
    }
}
