//! Test helpers shared by the integration tests.
//!
//! [`cluster`] gives the cluster under test: a real broker when `FLEETSTREAM_TEST_BOOTSTRAP` is
//! set (CI runs the suite against `scripts/kafka start`), the embedded mock cluster otherwise.
//! [`unique`] gives random names so tests never share topics or groups.
#![warn(missing_docs)]

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
