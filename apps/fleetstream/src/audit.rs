//! `fleetstream audit`: proves, by message id, across processes and restarts, that every id the
//! producers had acknowledged was dispatched or dead-lettered, and that none had two effects at
//! one target. The account itself is [`fleetstream_core::audit`]; this reads its inputs.

use crate::cli::{parse_duration, ClusterArgs, TopologyArgs};
use crate::{connection_settings, load_topology, ConfigError};
use anyhow::{bail, Context};
use clap::Args;
use fleetstream_core::audit::{AckedIds, Audit, AuditReport};
use fleetstream_core::{MessageId, TopicRole, Topology};
use fleetstream_kafka::{group_lag, headers, read_topic_to_end, ConnectionSettings};
use serde::Serialize;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `audit`.
#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// The cluster whose dead-letter topics and lag are read (--bootstrap is required: the
    /// embedded cluster lives and dies with one process).
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The topology: its dead-letter topics are read, its groups' lag decides lost vs unseen.
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Acked-ids files written by `fleetstream produce --acked-ids`, or directories whose
    /// `*.acked` files are all read (one per producer run; restarts add files).
    #[arg(long = "acked-ids", env = "FLEETSTREAM_ACKED_IDS", required = true, num_args = 1.., value_delimiter = ',')]
    pub acked_ids: Vec<PathBuf>,
    /// Effects: files of the dispatchers' `jsonl` targets, as `NAME=PATH` or `PATH` (the
    /// file's stem names the target). Two effects of one id at one target are a duplicate.
    #[arg(long, env = "FLEETSTREAM_EFFECTS", num_args = 1.., value_delimiter = ',')]
    pub effects: Vec<String>,
    /// Keep re-reading until every acked id is accounted for and the groups have no lag, for
    /// at most this long (0: read once). Ids still missing then are lost if the groups had
    /// drained, unseen if they still had lag.
    #[arg(long, env = "FLEETSTREAM_AUDIT_WAIT", default_value = "0s", value_parser = parse_duration)]
    pub wait: Duration,
    /// Write the report as JSON to this file (`-`: standard output).
    #[arg(long, env = "FLEETSTREAM_JSON")]
    pub json: Option<PathBuf>,
}

/// The JSON report: the account plus what was read.
#[derive(Debug, Serialize)]
pub struct AuditSummary {
    /// The verdict.
    #[serde(flatten)]
    pub report: AuditReport,
    /// Acked-ids files read.
    pub acked_files: usize,
    /// Effect lines that were not effects (torn by a crash, or another writer's).
    pub unreadable_effect_lines: u64,
    /// Dead-letter records read, by topic.
    pub dead_letter_records: u64,
    /// Total lag of the topology's groups when the account was taken.
    pub lag: i64,
    /// Seconds spent waiting for the account to close.
    pub waited_s: f64,
}

fn acked_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading --acked-ids {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "acked"))
                .collect();
            if found.is_empty() {
                bail!(ConfigError(format!(
                    "--acked-ids {}: no *.acked files in this directory",
                    p.display()
                )));
            }
            found.sort();
            out.extend(found);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            bail!(ConfigError(format!(
                "--acked-ids {}: no such file or directory",
                p.display()
            )));
        }
    }
    Ok(out)
}

fn effect_files(specs: &[String]) -> anyhow::Result<Vec<(String, PathBuf)>> {
    specs
        .iter()
        .map(|s| {
            let (name, path) = match s.split_once('=') {
                Some((n, p)) if !n.is_empty() => (n.to_owned(), PathBuf::from(p)),
                _ => {
                    let p = PathBuf::from(s);
                    let stem = p
                        .file_stem()
                        .map(|x| x.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    (stem, p)
                }
            };
            if !path.is_file() {
                bail!(ConfigError(format!(
                    "--effects {s}: {} is not a file",
                    path.display()
                )));
            }
            Ok((name, path))
        })
        .collect()
}

/// One pass over every input. Returns the account and what it read.
fn take_account(
    acked: &[AckedIds],
    effects: &[(String, PathBuf)],
    conn: &ConnectionSettings,
    topology: &Topology,
) -> anyhow::Result<(Audit, u64, u64)> {
    let mut audit = Audit::default();
    for ids in acked {
        audit.add_acked(ids);
    }
    let mut unreadable = 0u64;
    for (name, path) in effects {
        let file = std::fs::File::open(path)
            .with_context(|| format!("opening --effects {}", path.display()))?;
        let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
        let mut line = Vec::with_capacity(512);
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .with_context(|| format!("reading --effects {}", path.display()))?;
            if n == 0 {
                break;
            }
            if !audit.effect_line(name, line.strip_suffix(b"\n").unwrap_or(&line)) {
                unreadable += 1;
            }
        }
    }
    let mut dead_letters = 0u64;
    for dlq in topology
        .topics()
        .iter()
        .filter(|t| t.role == TopicRole::DeadLetter)
    {
        let records = read_topic_to_end(conn, &dlq.name, Duration::from_secs(60))
            .with_context(|| format!("reading dead-letter topic {}", dlq.name))?;
        dead_letters += records.len() as u64;
        for r in &records {
            audit.dead_lettered(r.header(headers::MESSAGE_ID).and_then(MessageId::parse));
        }
    }
    Ok((audit, unreadable, dead_letters))
}

/// Total lag of every group of the topology on its topics.
fn total_lag(conn: &ConnectionSettings, topology: &Topology) -> anyhow::Result<i64> {
    let mut lag = 0;
    for (group, topics) in topology.groups() {
        lag += group_lag(conn, &group, &topics, Duration::from_secs(30))
            .with_context(|| format!("reading the lag of group {group}"))?
            .iter()
            .map(|p| p.lag)
            .sum::<i64>();
    }
    Ok(lag)
}

/// Runs the audit; exits 1 (through the error) on any lost, unseen or duplicated id.
pub async fn run(args: AuditArgs) -> anyhow::Result<()> {
    let Some(bootstrap) = args.cluster.bootstrap.as_deref().map(str::trim) else {
        bail!(ConfigError(
            "audit needs --bootstrap (FLEETSTREAM_BOOTSTRAP): the cluster whose dead-letter \
             topics and lag it reads"
                .into()
        ));
    };
    let conn = connection_settings(bootstrap, &args.cluster)?;
    let topology = load_topology(&args.topology)?;
    let mut acked = Vec::new();
    let files = acked_files(&args.acked_ids)?;
    for f in &files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading --acked-ids {}", f.display()))?;
        acked.push(
            AckedIds::parse(&text)
                .map_err(|e| ConfigError(format!("--acked-ids {}: {e}", f.display())))?,
        );
    }
    let effects = effect_files(&args.effects)?;
    let started = Instant::now();
    let summary = tokio::task::spawn_blocking(move || -> anyhow::Result<AuditSummary> {
        loop {
            // Lag first: what was committed before the account was taken is in it.
            let lag = total_lag(&conn, &topology)?;
            let (audit, unreadable, dead_letters) =
                take_account(&acked, &effects, &conn, &topology)?;
            let report = audit.report(lag == 0);
            let done = report.ok && lag == 0;
            if done || started.elapsed() >= args.wait {
                return Ok(AuditSummary {
                    report,
                    acked_files: acked.len(),
                    unreadable_effect_lines: unreadable,
                    dead_letter_records: dead_letters,
                    lag,
                    waited_s: started.elapsed().as_secs_f64(),
                });
            }
            eprintln!(
                "audit: {} of {} acked ids not accounted for yet, lag {lag}; reading again",
                report.unseen + report.lost,
                report.acked
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    })
    .await
    .context("audit thread")??;
    print_summary(&summary);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&summary)?;
        if path == Path::new("-") {
            println!("{text}");
        } else {
            std::fs::write(path, text)
                .with_context(|| format!("writing --json {}", path.display()))?;
        }
    }
    let r = &summary.report;
    if !r.ok {
        bail!(
            "audit failed: {} lost, {} unseen, {} ids with duplicated effects (e.g. {:?} {:?})",
            r.lost,
            r.unseen,
            r.duplicated,
            r.missing_sample,
            r.duplicated_sample
        );
    }
    Ok(())
}

fn print_summary(s: &AuditSummary) {
    let r = &s.report;
    println!("{:<28} {:>12}", "producer runs", r.runs);
    println!("{:<28} {:>12}", "acked", r.acked);
    println!("{:<28} {:>12}", "dispatched", r.dispatched);
    println!("{:<28} {:>12}", "dead-lettered", r.dead_lettered);
    println!("{:<28} {:>12}", "lost (lost-write)", r.lost);
    println!("{:<28} {:>12}", "unseen (lag remained)", r.unseen);
    println!("{:<28} {:>12}", "duplicated effects (ids)", r.duplicated);
    println!("{:<28} {:>12}", "order violations", r.nonmonotonic);
    println!("{:<28} {:>12}", "foreign effects", r.foreign_effects);
    println!(
        "{:<28} {:>12}",
        "unreadable effect lines", s.unreadable_effect_lines
    );
    println!("{:<28} {:>12}", "lag at the account", s.lag);
    for (target, n) in &r.effects_by_target {
        println!("  effects at {target:<16} {n:>12}");
    }
    if r.ok {
        println!("every acked id is dispatched or dead-lettered, each effect applied once");
    }
}
