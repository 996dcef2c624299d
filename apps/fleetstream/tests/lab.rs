//! `fleetstream lab`: the key comparison and the partition plan from the command line.

use std::process::Command;

fn fleetstream(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleetstream"));
    for (k, _) in std::env::vars() {
        if k.starts_with("FLEETSTREAM_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).output().unwrap()
}

#[test]
fn lab_keys_compares_every_strategy_on_the_topology() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("keys.json");
    let out = fleetstream(&[
        "lab",
        "keys",
        "--samples",
        "20000",
        "--partition-capacity",
        "1500",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("composite *"), "{table}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let strategies = v["strategies"].as_array().unwrap();
    let names: Vec<&str> = strategies
        .iter()
        .map(|s| s["strategy"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["none", "code", "truck", "composite"]);
    for s in strategies {
        let rate: f64 = s["topics"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["per_partition"].as_array().unwrap())
            .map(|p| p["rate"].as_f64().unwrap())
            .sum();
        assert!((rate - 13_000.0).abs() < 1e-6, "{rate}");
    }
    // Code keys put the hot code on one partition, above what one consumer takes.
    let code = &strategies[1]["topics"][0];
    assert_eq!(code["topic"], "mt-c400");
    assert_eq!(code["hottest_key"], "300");
    assert!(code["overloaded"].as_u64().unwrap() >= 1);
}

#[test]
fn lab_plan_recommends_partitions_and_checks_the_hottest_key() {
    let out = fleetstream(&[
        "lab",
        "plan",
        "--samples",
        "20000",
        "--growth",
        "2",
        "--partition-capacity",
        "1000",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("RECOMMEND"), "{table}");
    assert!(table.contains("mt-c400: hottest key 300-"), "{table}");
}

#[test]
fn lab_partitions_simulates_a_what_if_count() {
    let out = fleetstream(&[
        "lab",
        "keys",
        "--samples",
        "20000",
        "--partitions",
        "mt-c400=20,mt-c300=6",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("/20 "), "{table}");
    assert!(table.contains("/6 "), "{table}");
    let out = fleetstream(&["lab", "keys", "--partitions", "mt-c999=3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("topics.mt-c999"));
}

#[test]
fn lab_rejects_bad_numbers_naming_the_flag() {
    let out = fleetstream(&["lab", "plan", "--growth", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--growth (FLEETSTREAM_GROWTH)"), "{err}");
    let out = fleetstream(&["lab", "keys", "--partitioner", "round_robin"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("--partitioner"));
}
