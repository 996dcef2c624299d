//! Test helpers shared by the integration tests.
//!
//! [`cluster`] gives the cluster under test: a real broker when `FLEETSTREAM_TEST_BOOTSTRAP` is
//! set (CI runs the suite against `scripts/kafka start`), the embedded mock cluster otherwise.
//! [`unique`] gives random names so tests never share topics or groups.
#![warn(missing_docs)]

use fleetstream_core::Topology;
use fleetstream_kafka::{ClusterHandle, ConnectionSettings};

/// Environment variable naming a real cluster for the integration tests.
pub const TEST_BOOTSTRAP: &str = "FLEETSTREAM_TEST_BOOTSTRAP";

/// The cluster under test: `FLEETSTREAM_TEST_BOOTSTRAP`, or a fresh 3-broker embedded cluster.
pub fn cluster() -> ClusterHandle {
    match std::env::var(TEST_BOOTSTRAP) {
        Ok(b) if !b.trim().is_empty() => {
            ClusterHandle::external(ConnectionSettings::plaintext(b.trim()))
        }
        _ => ClusterHandle::embedded(3).expect("embedded cluster starts"),
    }
}

/// Whether the tests run against a real broker.
pub fn is_real_broker() -> bool {
    std::env::var(TEST_BOOTSTRAP).is_ok_and(|b| !b.trim().is_empty())
}

/// `prefix-<random hex>`: a topic or group name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// The names in the checked-in topologies that tests rename to keep runs apart.
const TOPOLOGY_NAMES: [&str; 5] = [
    "mt-c400",
    "mt-c300",
    "high_priority_events",
    "fleetstream-workers",
    "fleetstream-high-priority",
];

/// A copy of a topology file's text whose topics and groups carry a random prefix, so tests on
/// a shared real broker never see each other's data or offsets.
pub fn unique_topology(text: &str) -> (String, String) {
    let prefix = unique("t");
    let mut out = text.to_string();
    for name in TOPOLOGY_NAMES {
        out = out.replace(&format!("\"{name}"), &format!("\"{prefix}-{name}"));
    }
    (prefix, out)
}

/// Renames a topology file's text with [`unique_topology`] and applies it to `cluster`; returns
/// the random prefix and the topology.
pub async fn apply_unique(cluster: &ClusterHandle, text: &str) -> (String, Topology) {
    let (prefix, text) = unique_topology(text);
    let topology = Topology::from_toml_str(&text).expect("valid topology");
    apply(cluster, &topology).await;
    (prefix, topology)
}

/// Applies `topology` to `cluster` (creates what is missing).
pub async fn apply(cluster: &ClusterHandle, topology: &Topology) {
    fleetstream_kafka::Admin::new(cluster)
        .expect("admin client")
        .apply(topology)
        .await
        .expect("apply the topology");
}

/// A topology of one topic with `partitions` partitions and replication factor 1; its consumer
/// group and its default route have the topic's name.
pub fn one_topic_topology(topic: &str, partitions: u32) -> Topology {
    Topology::from_toml_str(&format!(
        r#"name = "{topic}"
[cluster]
replication_factor = 1
min_insync_replicas = 1
single_broker = {{ replication_factor = 1, min_insync_replicas = 1 }}
[consumer]
group = "{topic}"
[[topics]]
name = "{topic}"
partitions = {partitions}
[routing]
default_topic = "{topic}"
"#
    ))
    .expect("valid one-topic topology")
}

/// Polls `done` every 50 ms until it returns true or `timeout` passes; returns the last answer.
/// For waiting on asynchronous effects; never used to assert on speed.
pub fn wait_until(timeout: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

struct CountAcks(std::sync::atomic::AtomicU64);

impl fleetstream_kafka::DeliveryHandler for CountAcks {
    type Token = ();
    fn delivered(&self, _: (), r: fleetstream_kafka::DeliveryReport<'_>) {
        if r.result.is_ok() {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// Produces `n` synthetic events routed and keyed by `topology`, each with message id
/// `run-<seq>` and a `traceparent` ([`test_traceparent`]), waits for every ack and returns how
/// many were acked.
pub fn produce_telemetry(
    connection: &ConnectionSettings,
    topology: &fleetstream_core::Topology,
    run: u64,
    n: u64,
) -> u64 {
    use fleetstream_kafka::{headers, KafkaProducer, OutRecord, ProducerSettings};
    let acks = std::sync::Arc::new(CountAcks(Default::default()));
    let producer = KafkaProducer::new(&ProducerSettings::new(connection.clone()), acks.clone())
        .expect("producer");
    let mut generator =
        fleetstream_producer::Generator::new(&fleetstream_producer::GeneratorConfig::default())
            .expect("generator");
    let (mut payload, mut key) = (Vec::new(), Vec::new());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    for seq in 0..n {
        let code = generator.next_event(now, &mut payload);
        topology
            .key_resolver()
            .resolve_into(code, generator.last_truck(), &mut key);
        let topic = &topology.router().route(code).name;
        let id = fleetstream_core::MessageId { run, seq }.to_string();
        let at = now.to_string();
        let trace = test_traceparent(run, seq);
        let h: [(&str, &[u8]); 3] = [
            (headers::MESSAGE_ID, id.as_bytes()),
            (headers::PRODUCED_AT, at.as_bytes()),
            (headers::TRACEPARENT, trace.as_bytes()),
        ];
        let rec = OutRecord {
            topic,
            key: Some(&key),
            payload: &payload,
            headers: &h,
            timestamp_ms: None,
        };
        while let Err((e, _)) = producer.send(rec, ()) {
            assert!(e.is_retriable(), "{e}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    producer
        .flush(std::time::Duration::from_secs(60))
        .expect("flush");
    acks.0.load(std::sync::atomic::Ordering::SeqCst)
}

/// The `traceparent` [`produce_telemetry`] gives message `seq` of `run`: trace id `run`,`seq`,
/// parent span id `seq + 1`, sampled when `seq` is a multiple of 10.
pub fn test_traceparent(run: u64, seq: u64) -> String {
    let sampled = if seq.is_multiple_of(10) { "01" } else { "00" };
    format!("00-{run:016x}{seq:016x}-{:016x}-{sampled}", seq + 1)
}

/// A topology with unique names, written to a temporary file and applied to the cluster under
/// test: what most process-level tests start from.
pub struct TopologyFixture {
    /// The cluster under test.
    pub cluster: ClusterHandle,
    /// Temporary directory (holds the topology file; removed on drop).
    pub dir: tempfile::TempDir,
    /// Path of the topology file, for `--topology`.
    pub path: std::path::PathBuf,
    /// The parsed topology.
    pub topology: Topology,
    /// The random prefix of its topic and group names.
    pub prefix: String,
}

/// Builds a [`TopologyFixture`] from a topology file's text (renamed with [`unique_topology`]).
pub async fn topology_fixture(base: &str) -> TopologyFixture {
    let cluster = cluster();
    let dir = tempfile::tempdir().expect("temp dir");
    let (prefix, text) = unique_topology(base);
    let path = dir.path().join("topology.toml");
    std::fs::write(&path, &text).expect("write topology");
    let topology = Topology::from_toml_str(&text).expect("valid topology");
    apply(&cluster, &topology).await;
    TopologyFixture {
        cluster,
        dir,
        path,
        topology,
        prefix,
    }
}
