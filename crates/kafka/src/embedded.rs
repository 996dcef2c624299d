//! The embedded cluster: librdkafka's in-process mock cluster, on loopback ports.
//!
//! It speaks the real Kafka protocol (produce, fetch, groups, offset commits, idempotence) but
//! keeps only about 5 MiB or 100,000 batches per partition, has no replication and no TLS/SASL.
//! Good for demos and tests of behaviour; never evidence of durability.

use crate::error::KafkaError;
use rdkafka::mocking::MockCluster;
use std::sync::mpsc;
use std::thread::JoinHandle;

enum Command {
    CreateTopic {
        name: String,
        partitions: i32,
        replication: i32,
        reply: mpsc::Sender<Result<(), KafkaError>>,
    },
    RequestErrors {
        api: rdkafka::types::RDKafkaApiKey,
        errors: Vec<rdkafka::types::RDKafkaRespErr>,
        reply: mpsc::Sender<()>,
    },
    Broker {
        id: i32,
        up: bool,
        reply: mpsc::Sender<Result<(), KafkaError>>,
    },
    Stop,
}

/// A running embedded cluster. The mock cluster handle is not `Send`, so it lives on a thread
/// of its own; this handle is, and stops the cluster when dropped.
pub struct EmbeddedCluster {
    bootstrap: String,
    brokers: usize,
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedCluster")
            .field("bootstrap", &self.bootstrap)
            .field("brokers", &self.brokers)
            .finish()
    }
}

impl EmbeddedCluster {
    /// Starts a mock cluster with `brokers` brokers.
    pub fn start(brokers: usize) -> Result<Self, KafkaError> {
        let (tx, rx) = mpsc::channel::<Command>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, KafkaError>>();
        let n =
            i32::try_from(brokers).map_err(|_| KafkaError::Embedded("too many brokers".into()))?;
        let thread = std::thread::Builder::new()
            .name("fs-embedded-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(n) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(KafkaError::Embedded(e.to_string())));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                while let Ok(cmd) = rx.recv() {
                    match cmd {
                        Command::CreateTopic {
                            name,
                            partitions,
                            replication,
                            reply,
                        } => {
                            let r = cluster
                                .create_topic(&name, partitions, replication)
                                .map_err(|e| KafkaError::Admin(format!("create {name}: {e}")));
                            let _ = reply.send(r);
                        }
                        Command::RequestErrors { api, errors, reply } => {
                            cluster.request_errors(api, &errors);
                            let _ = reply.send(());
                        }
                        Command::Broker { id, up, reply } => {
                            let r = if up {
                                cluster.broker_up(id)
                            } else {
                                cluster.broker_down(id)
                            };
                            let _ = reply.send(r.map_err(|e| {
                                KafkaError::Embedded(format!(
                                    "broker {id} {}: {e}",
                                    if up { "up" } else { "down" }
                                ))
                            }));
                        }
                        Command::Stop => break,
                    }
                }
            })
            .map_err(|e| KafkaError::Embedded(e.to_string()))?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| KafkaError::Embedded("mock cluster thread exited".into()))??;
        Ok(EmbeddedCluster {
            bootstrap,
            brokers,
            commands: tx,
            thread: Some(thread),
        })
    }

    /// Bootstrap servers of the mock brokers (loopback).
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Number of brokers.
    pub fn brokers(&self) -> usize {
        self.brokers
    }

    /// Creates a topic (the mock has no CreateTopics API; this is its back door).
    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication: u16,
    ) -> Result<(), KafkaError> {
        let (reply, rx) = mpsc::channel();
        self.commands
            .send(Command::CreateTopic {
                name: name.to_string(),
                partitions: partitions as i32,
                replication: i32::from(replication),
                reply,
            })
            .map_err(|_| KafkaError::Embedded("mock cluster stopped".into()))?;
        rx.recv()
            .map_err(|_| KafkaError::Embedded("mock cluster stopped".into()))?
    }

    /// Fault hook: the next `requests` produce requests, to any broker, are answered
    /// `MESSAGE_TOO_LARGE`, as a real broker answers a batch over the topic's
    /// `max.message.bytes` (the mock cluster does not enforce topic configs itself).
    pub fn refuse_next_produce_requests_as_too_large(
        &self,
        requests: usize,
    ) -> Result<(), KafkaError> {
        use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
        let error = RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE;
        self.request_errors(RDKafkaApiKey::Produce, vec![error; requests])
    }

    /// Fault hook: the next `requests` requests for an idempotent producer id are answered
    /// `CLUSTER_AUTHORIZATION_FAILED`, which librdkafka raises as a fatal error of the producer
    /// (`rd_kafka_fatal_error`): it can send nothing more.
    pub fn refuse_next_producer_id_requests(&self, requests: usize) -> Result<(), KafkaError> {
        use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
        let error = RDKafkaRespErr::RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED;
        self.request_errors(RDKafkaApiKey::InitProducerId, vec![error; requests])
    }

    fn request_errors(
        &self,
        api: rdkafka::types::RDKafkaApiKey,
        errors: Vec<rdkafka::types::RDKafkaRespErr>,
    ) -> Result<(), KafkaError> {
        let (reply, rx) = mpsc::channel();
        self.commands
            .send(Command::RequestErrors { api, errors, reply })
            .map_err(|_| KafkaError::Embedded("mock cluster stopped".into()))?;
        rx.recv()
            .map_err(|_| KafkaError::Embedded("mock cluster stopped".into()))
    }
}

impl EmbeddedCluster {
    /// Takes broker `id` (1-based) down: its connections are closed and new ones refused, as
    /// when a broker process dies. Unlike a real cluster, the mock moves no partition
    /// leadership, so the partitions it leads are unavailable until [`EmbeddedCluster::broker_up`].
    pub fn broker_down(&self, id: i32) -> Result<(), KafkaError> {
        self.broker(id, false)
    }

    /// Brings broker `id` back up after [`EmbeddedCluster::broker_down`].
    pub fn broker_up(&self, id: i32) -> Result<(), KafkaError> {
        self.broker(id, true)
    }

    fn broker(&self, id: i32, up: bool) -> Result<(), KafkaError> {
        let (reply, rx) = mpsc::channel();
        self.commands
            .send(Command::Broker { id, up, reply })
            .map_err(|_| KafkaError::Embedded("mock cluster stopped".into()))?;
        rx.recv()
            .map_err(|_| KafkaError::Embedded("mock cluster stopped".into()))?
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
