//! `fleetstream topics apply|describe`.

use crate::cli::TopicsArgs;
use crate::{connect, load_topology};
use anyhow::Context;
use fleetstream_kafka::Admin;

pub async fn apply(args: TopicsArgs) -> anyhow::Result<()> {
    let topology = load_topology(&args.topology)?;
    let cluster = connect(&args.cluster)?;
    let admin = Admin::new(&cluster)?;
    let report = admin
        .apply(&topology)
        .await
        .context("applying the topology")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for t in &report.created {
            println!("created   {t}");
        }
        for t in &report.unchanged {
            println!("ok        {t}");
        }
        for d in &report.drift {
            println!(
                "DRIFT     {}: {} is {} on the cluster, the topology wants {}",
                d.topic, d.setting, d.actual, d.wanted
            );
        }
        if !report.unchecked.is_empty() {
            let why = if cluster.connection().uses_msk_iam() {
                "over MSK IAM, which the admin client cannot use"
            } else {
                "embedded mock cluster"
            };
            println!(
                "note: this cluster cannot report {} ({why})",
                report.unchecked.join(", ")
            );
        }
        if report.drift.is_empty() {
            println!(
                "topology {:?}: {} topics in place, no drift",
                topology.name(),
                topology.topics().len()
            );
        } else {
            println!(
                "topology {:?}: {} drift(s) reported; nothing was changed",
                topology.name(),
                report.drift.len()
            );
        }
    }
    if report.drift.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{} drift(s) between the topology and the cluster",
            report.drift.len()
        )
    }
}

pub async fn describe(args: TopicsArgs) -> anyhow::Result<()> {
    let topology = load_topology(&args.topology)?;
    let cluster = connect(&args.cluster)?;
    let admin = Admin::new(&cluster)?;
    let names: Vec<String> = topology.topics().iter().map(|t| t.name.clone()).collect();
    let states = admin.describe(&names).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&states)?);
        return Ok(());
    }
    println!(
        "{:<28} {:>10} {:>8} {:>8} {:>12} {:>14}  declared",
        "topic", "partitions", "rf", "min-isr", "min.insync", "retention.ms"
    );
    for spec in topology.topics() {
        match states.iter().find(|s| s.name == spec.name) {
            Some(s) => println!(
                "{:<28} {:>10} {:>8} {:>8} {:>12} {:>14}  {} partitions, {:?}",
                s.name,
                s.partitions,
                s.replication_factor,
                s.min_isr_observed,
                s.min_insync_replicas.map_or("-".into(), |v| v.to_string()),
                s.retention_ms.map_or("-".into(), |v| v.to_string()),
                spec.partitions,
                spec.role,
            ),
            None => println!(
                "{:<28} {:>10}  (missing: run `fleetstream topics apply`)",
                spec.name, "-"
            ),
        }
    }
    Ok(())
}
