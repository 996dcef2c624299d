//! The `fleetstream` command: wiring of the library crates behind a CLI. Kept thin: each
//! subcommand validates its flags into library types, runs, and prints.
#![warn(missing_docs)]

pub mod bench;
pub mod cli;
pub mod config_file;
pub mod demo;
pub mod dispatch;
pub mod lab;
pub mod produce;
mod topics;
pub mod worker;
mod worker_metrics;

use anyhow::{bail, Context};
use cli::{ClusterArgs, Command, TopicsCommand, TopologyArgs};
use fleetstream_core::Topology;
use fleetstream_kafka::config::SecurityProtocol;
use fleetstream_kafka::{ClusterHandle, ConnectionSettings, Secret};

/// Built-in copy of config/topology.toml.
pub const DOMAIN_TOPOLOGY: &str = include_str!("../../../config/topology.toml");
/// Built-in copy of config/topology-hybrid.toml.
pub const HYBRID_TOPOLOGY: &str = include_str!("../../../config/topology-hybrid.toml");
/// Built-in copy of config/routes-demo.toml.
pub const DEMO_ROUTES: &str = include_str!("../../../config/routes-demo.toml");

/// Runs a parsed command line.
pub fn run(cli: cli::Cli) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        match cli.command {
            Command::Demo(args) => demo::run(args).await.map(|_| ()),
            Command::Topics(TopicsCommand::Apply(args)) => topics::apply(args).await,
            Command::Topics(TopicsCommand::Describe(args)) => topics::describe(args).await,
            Command::Produce(args) => produce::run(args).await,
            Command::Worker(args) => worker::run(args).await,
            Command::Dispatch(cmd) => dispatch::run(cmd).await,
            Command::Bench(cmd) => bench::run(cmd).await,
            Command::Lab(cmd) => lab::run(cmd),
        }
    })
}

/// Exit code for an error: 2 for bad input (configuration), 1 otherwise.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.chain()
        .any(|c| c.is::<ConfigError>() || c.is::<fleetstream_core::TopologyError>())
    {
        2
    } else {
        1
    }
}

/// A configuration value is invalid; names the flag or key.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Loads a topology: a file path, or `domain` / `hybrid` for the built-in ones.
pub fn load_topology(args: &TopologyArgs) -> anyhow::Result<Topology> {
    let (text, origin) = match args.topology.as_str() {
        "domain" => (
            DOMAIN_TOPOLOGY.to_string(),
            "built-in domain topology".to_string(),
        ),
        "hybrid" => (
            HYBRID_TOPOLOGY.to_string(),
            "built-in hybrid topology".to_string(),
        ),
        path => (
            std::fs::read_to_string(path).with_context(|| format!("reading --topology {path}"))?,
            path.to_string(),
        ),
    };
    Topology::from_toml_str(&text).with_context(|| format!("in {origin}"))
}

/// Connects to `--bootstrap`, or starts the embedded cluster; prints which on the first line.
pub fn connect(args: &ClusterArgs) -> anyhow::Result<ClusterHandle> {
    let handle = match &args.bootstrap {
        Some(b) => {
            if b.trim().is_empty() {
                bail!(ConfigError(
                    "--bootstrap (FLEETSTREAM_BOOTSTRAP) is empty".into()
                ));
            }
            let mut c = ConnectionSettings::plaintext(b.trim());
            c.security_protocol = match args.security_protocol.as_str() {
                "plaintext" => SecurityProtocol::Plaintext,
                "ssl" => SecurityProtocol::Ssl,
                "sasl_plaintext" => SecurityProtocol::SaslPlaintext,
                "sasl_ssl" => SecurityProtocol::SaslSsl,
                other => bail!(ConfigError(format!(
                    "--security-protocol (FLEETSTREAM_SECURITY_PROTOCOL) {other:?} is not one of plaintext, ssl, sasl_plaintext, sasl_ssl"
                ))),
            };
            c.sasl_mechanism = args.sasl_mechanism.clone();
            c.sasl_username = args.sasl_username.clone();
            c.sasl_password = args.sasl_password.clone().map(Secret::new);
            ClusterHandle::external(c)
        }
        None => {
            if args.embedded_brokers == 0 {
                bail!(ConfigError(
                    "--embedded-brokers (FLEETSTREAM_EMBEDDED_BROKERS) must be at least 1".into()
                ));
            }
            ClusterHandle::embedded(args.embedded_brokers)
                .context("starting the embedded cluster")?
        }
    };
    println!("{}", handle.banner());
    Ok(handle)
}
