//! The Lambda binary must not link librdkafka (no C build in a Lambda package, a small
//! bootstrap, nothing Kafka-client-shaped to configure): Lambda's own pollers read Kafka.
//!
//! Checked on Cargo.lock, without running cargo: every package reachable from this one through
//! the lock file's dependency lists. The lock file lists the union over all features, targets
//! and dev-dependencies, so this is stricter than `cargo tree -p fleetstream-dispatcher-lambda`
//! (which scripts/lambda-emulator check-deps also runs).

use std::collections::{BTreeSet, HashMap};

#[test]
fn lambda_binary_links_no_librdkafka() {
    let lock_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock");
    let text = std::fs::read_to_string(lock_path).expect("Cargo.lock at the workspace root");
    let lock: toml::Table = toml::from_str(&text).expect("Cargo.lock is TOML");
    let packages = lock["package"].as_array().expect("[[package]] entries");
    let mut deps: HashMap<String, Vec<String>> = HashMap::new();
    for p in packages {
        let name = p["name"].as_str().expect("name").to_owned();
        let list: Vec<String> = p
            .get("dependencies")
            .and_then(|d| d.as_array())
            .map(|d| {
                d.iter()
                    .filter_map(|v| v.as_str())
                    // Entries are "name" or "name version" when several versions exist.
                    .map(|s| s.split(' ').next().unwrap_or(s).to_owned())
                    .collect()
            })
            .unwrap_or_default();
        deps.entry(name).or_default().extend(list);
    }
    let root = "fleetstream-dispatcher-lambda";
    assert!(deps.contains_key(root), "{root} is in Cargo.lock");
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_owned()];
    while let Some(name) = todo.pop() {
        if seen.insert(name.clone()) {
            todo.extend(deps.get(&name).cloned().unwrap_or_default());
        }
    }
    // The walk works: the dispatcher library is reached.
    assert!(seen.contains("fleetstream-dispatcher"), "{seen:?}");
    let kafka: Vec<_> = seen
        .iter()
        .filter(|n| n.contains("rdkafka") || n.as_str() == "fleetstream-kafka")
        .collect();
    assert!(kafka.is_empty(), "the Lambda binary reaches {kafka:?}");
}
