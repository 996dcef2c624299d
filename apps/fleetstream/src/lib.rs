//! The `fleetstream` command: wiring of the library crates behind a CLI. Kept thin: each
//! subcommand validates its flags into library types, runs, and prints.
#![warn(missing_docs)]

pub mod audit;
pub mod bench;
pub mod cli;
pub mod config_file;
pub mod demo;
pub mod dispatch;
pub mod lab;
pub mod prefetch;
pub mod produce;
mod topics;
pub mod worker;
mod worker_metrics;

use anyhow::{bail, Context};
use cli::{ClusterArgs, Command, TopicsCommand, TopologyArgs};
use fleetstream_core::Topology;
use fleetstream_kafka::config::SecurityProtocol;
use fleetstream_kafka::{ClusterHandle, ConnectionSettings, Secret};
use fleetstream_obs::trace::{SampleRatio, TraceError, Tracer};

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
            Command::Audit(args) => audit::run(args).await,
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
        // A file that cannot be read is as much bad configuration as one that does not parse.
        path => (
            std::fs::read_to_string(path).map_err(|e| {
                ConfigError(format!(
                    "--topology (FLEETSTREAM_TOPOLOGY) {path}: cannot be read: {e}"
                ))
            })?,
            path.to_string(),
        ),
    };
    Topology::from_toml_str(&text).with_context(|| format!("in {origin}"))
}

/// Loads `--routes` for a dispatcher whose state is under `state_dir`. Every command that takes
/// the flag (`dispatch serve`, `worker`, `demo`) loads it here, so a file that cannot be read or
/// is not a valid routing table is refused the same way: exit 2, one message.
pub fn load_routes(
    path: &std::path::Path,
    state_dir: &std::path::Path,
) -> anyhow::Result<fleetstream_dispatcher::RoutingTable> {
    fleetstream_dispatcher::RoutingTable::load(path, state_dir).map_err(|e| {
        ConfigError(format!(
            "--routes (FLEETSTREAM_ROUTES) {}: {e}",
            path.display()
        ))
        .into()
    })
}

/// The SASL mechanisms the flags accept (librdkafka's names; case does not matter).
pub const SASL_MECHANISMS: [&str; 4] = [
    "SCRAM-SHA-512",
    "SCRAM-SHA-256",
    "PLAIN",
    fleetstream_kafka::msk_iam::MECHANISM,
];

/// The region MSK IAM tokens are signed for: `--aws-region`, else the AWS SDK's variables.
fn msk_iam_region(args: &ClusterArgs) -> anyhow::Result<String> {
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    args.aws_region
        .clone()
        .filter(|r| !r.is_empty())
        .or_else(|| from_env("AWS_REGION"))
        .or_else(|| from_env("AWS_DEFAULT_REGION"))
        .ok_or_else(|| {
            anyhow::Error::new(ConfigError(format!(
                "--sasl-mechanism {} needs the cluster's region: --aws-region \
                 (FLEETSTREAM_AWS_REGION), AWS_REGION or AWS_DEFAULT_REGION",
                fleetstream_kafka::msk_iam::MECHANISM
            )))
        })
}

/// The connection settings for `--bootstrap`, checked: a SASL protocol needs a mechanism (and a
/// user name and password), a mechanism needs a SASL protocol and must be one of
/// [`SASL_MECHANISMS`], and a CA file, client certificate or key needs TLS and must be readable;
/// a certificate and its key come together. Each error names its flag and variable.
pub fn connection_settings(
    bootstrap: &str,
    args: &ClusterArgs,
) -> anyhow::Result<ConnectionSettings> {
    let mut c = ConnectionSettings::plaintext(bootstrap);
    c.validate()
        .map_err(|e| ConfigError(format!("--bootstrap (FLEETSTREAM_BOOTSTRAP): {e}")))?;
    c.security_protocol = match args.security_protocol.as_str() {
        "plaintext" => SecurityProtocol::Plaintext,
        "ssl" => SecurityProtocol::Ssl,
        "sasl_plaintext" => SecurityProtocol::SaslPlaintext,
        "sasl_ssl" => SecurityProtocol::SaslSsl,
        other => bail!(ConfigError(format!(
            "--security-protocol (FLEETSTREAM_SECURITY_PROTOCOL) {other:?} is not one of plaintext, ssl, sasl_plaintext, sasl_ssl"
        ))),
    };
    let sasl = matches!(
        c.security_protocol,
        SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
    );
    let mechanism = match (&args.sasl_mechanism, sasl) {
        (None, true) => bail!(ConfigError(format!(
            "--security-protocol {} needs --sasl-mechanism (FLEETSTREAM_SASL_MECHANISM), e.g. SCRAM-SHA-512",
            args.security_protocol
        ))),
        (Some(m), false) => bail!(ConfigError(format!(
            "--sasl-mechanism (FLEETSTREAM_SASL_MECHANISM) {m:?} needs --security-protocol sasl_ssl or sasl_plaintext, not {}",
            args.security_protocol
        ))),
        (Some(m), true) => {
            let upper = m.to_ascii_uppercase();
            if !SASL_MECHANISMS.contains(&upper.as_str()) {
                let hint = if upper == "OAUTHBEARER" {
                    " (for MSK IAM, which is OAUTHBEARER with AWS-signed tokens, use AWS_MSK_IAM)"
                } else {
                    ""
                };
                bail!(ConfigError(format!(
                    "--sasl-mechanism (FLEETSTREAM_SASL_MECHANISM) {m:?} is not one of {}{hint}",
                    SASL_MECHANISMS.join(", ")
                )));
            }
            if upper == fleetstream_kafka::msk_iam::MECHANISM {
                c.aws_region = Some(msk_iam_region(args)?);
                if c.security_protocol != SecurityProtocol::SaslSsl {
                    bail!(ConfigError(format!(
                        "--sasl-mechanism {upper} needs --security-protocol sasl_ssl (MSK's IAM \
                         listener, port 9098, is TLS only), not {}",
                        args.security_protocol
                    )));
                }
                for (value, flag) in [
                    (&args.sasl_username, "--sasl-username (FLEETSTREAM_SASL_USERNAME)"),
                    (&args.sasl_password, "--sasl-password (FLEETSTREAM_SASL_PASSWORD)"),
                ] {
                    if value.as_deref().is_some_and(|v| !v.is_empty()) {
                        bail!(ConfigError(format!(
                            "--sasl-mechanism {upper} signs with AWS credentials; {flag} does not apply"
                        )));
                    }
                }
            } else {
                for (value, flag) in [
                    (&args.sasl_username, "--sasl-username (FLEETSTREAM_SASL_USERNAME)"),
                    (&args.sasl_password, "--sasl-password (FLEETSTREAM_SASL_PASSWORD)"),
                ] {
                    if value.as_deref().is_none_or(str::is_empty) {
                        bail!(ConfigError(format!("--sasl-mechanism {upper} needs {flag}")));
                    }
                }
            }
            Some(upper)
        }
        (None, false) => None,
    };
    let tls = matches!(
        c.security_protocol,
        SecurityProtocol::Ssl | SecurityProtocol::SaslSsl
    );
    for (file, flag) in [
        (
            &args.ssl_ca_location,
            "--ssl-ca-location (FLEETSTREAM_SSL_CA_LOCATION)",
        ),
        (
            &args.ssl_certificate_location,
            "--ssl-certificate-location (FLEETSTREAM_SSL_CERTIFICATE_LOCATION)",
        ),
        (
            &args.ssl_key_location,
            "--ssl-key-location (FLEETSTREAM_SSL_KEY_LOCATION)",
        ),
    ] {
        let Some(file) = file else { continue };
        if !tls {
            bail!(ConfigError(format!(
                "{flag} needs --security-protocol ssl or sasl_ssl, not {}",
                args.security_protocol
            )));
        }
        // The CA may be a directory of certificates; the client's files are single PEM files.
        let pem = match std::fs::metadata(file) {
            Ok(m) if m.is_dir() && flag.starts_with("--ssl-ca-location") => continue,
            Ok(m) if m.is_dir() => Err(std::io::Error::other("it is a directory")),
            _ => std::fs::read_to_string(file),
        };
        match pem {
            Err(e) => bail!(ConfigError(format!("{flag} {file:?} cannot be read: {e}"))),
            Ok(text) if !text.contains("-----BEGIN ") => bail!(ConfigError(format!(
                "{flag} {file:?} is not PEM (no -----BEGIN line); convert a JKS or PKCS#12 file with openssl"
            ))),
            Ok(text)
                if text.contains("ENCRYPTED")
                    && flag.starts_with("--ssl-key-location")
                    && args.ssl_key_password.is_none() =>
            {
                bail!(ConfigError(format!(
                    "{flag} {file:?} is encrypted: set its pass phrase with FLEETSTREAM_SSL_KEY_PASSWORD (or --ssl-key-password)"
                )))
            }
            Ok(_) => {}
        }
    }
    match (&args.ssl_certificate_location, &args.ssl_key_location) {
        (Some(_), None) => bail!(ConfigError(
            "--ssl-certificate-location (FLEETSTREAM_SSL_CERTIFICATE_LOCATION) needs --ssl-key-location (FLEETSTREAM_SSL_KEY_LOCATION): the certificate's private key".into()
        )),
        (None, Some(_)) => bail!(ConfigError(
            "--ssl-key-location (FLEETSTREAM_SSL_KEY_LOCATION) needs --ssl-certificate-location (FLEETSTREAM_SSL_CERTIFICATE_LOCATION): the certificate it belongs to".into()
        )),
        _ => {}
    }
    if args.ssl_key_password.is_some() && args.ssl_key_location.is_none() {
        bail!(ConfigError(
            "--ssl-key-password (FLEETSTREAM_SSL_KEY_PASSWORD) is set without --ssl-key-location (FLEETSTREAM_SSL_KEY_LOCATION)"
                .into()
        ));
    }
    if args.aws_region.is_some() && c.aws_region.is_none() {
        bail!(ConfigError(format!(
            "--aws-region (FLEETSTREAM_AWS_REGION) is for --sasl-mechanism {}",
            fleetstream_kafka::msk_iam::MECHANISM
        )));
    }
    c.sasl_mechanism = mechanism;
    c.sasl_username = args.sasl_username.clone();
    c.sasl_password = args.sasl_password.clone().map(Secret::new);
    c.ssl_ca_location = args.ssl_ca_location.clone();
    c.ssl_certificate_location = args.ssl_certificate_location.clone();
    c.ssl_key_location = args.ssl_key_location.clone();
    c.ssl_key_password = args.ssl_key_password.clone().map(Secret::new);
    Ok(c)
}

/// The span exporter `--otlp-endpoint` (or the standard `OTEL_EXPORTER_OTLP_*` variables)
/// asks for, named `service` unless `OTEL_SERVICE_NAME` names it; `None` when none is set.
/// Call it before connecting, so a bad endpoint fails first; [`announce_tracer`] after the
/// cluster's banner.
pub fn tracer(args: &cli::OtlpArgs, service: &str) -> anyhow::Result<Option<Tracer>> {
    let t = Tracer::from_settings(
        args.otlp_endpoint.as_deref(),
        "--otlp-endpoint (FLEETSTREAM_OTLP_ENDPOINT)",
        service,
    )
    .map_err(|e| match e {
        TraceError::Endpoint { .. } => anyhow::Error::new(ConfigError(e.to_string())),
        other => anyhow::Error::new(other),
    })?;
    Ok(t)
}

/// Prints where spans go, if anywhere.
pub fn announce_tracer(t: Option<&Tracer>, sampling: Option<SampleRatio>) {
    if let Some(t) = t {
        match sampling {
            Some(s) => println!(
                "tracing: OpenTelemetry spans to {}, {} of messages sampled",
                t.endpoint(),
                s.ratio()
            ),
            None => println!(
                "tracing: OpenTelemetry spans to {}, for records the producer sampled",
                t.endpoint()
            ),
        }
    }
}

/// The sampling share of `--trace-sample-ratio`, checked.
pub fn sample_ratio(ratio: f64) -> anyhow::Result<SampleRatio> {
    SampleRatio::new(ratio).map_err(|e| {
        ConfigError(format!(
            "--trace-sample-ratio (FLEETSTREAM_TRACE_SAMPLE_RATIO): {e}"
        ))
        .into()
    })
}

/// Sends the spans still queued, then stops the exporters, all at once on blocking threads
/// (each waits for its collector up to [`fleetstream_obs::trace::SHUTDOWN_TIMEOUT`]).
pub async fn shutdown_tracers(tracers: &[Option<Tracer>]) {
    let stops = tracers.iter().flatten().cloned().map(|t| {
        tokio::task::spawn_blocking(move || {
            if let Err(e) = t.shutdown() {
                tracing::warn!(error = %e, "spans not exported");
            }
        })
    });
    futures::future::join_all(stops).await;
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
            ClusterHandle::external(connection_settings(b.trim(), args)?)
        }
        None => {
            let security = [
                (args.security_protocol != "plaintext", "--security-protocol"),
                (args.sasl_mechanism.is_some(), "--sasl-mechanism"),
                (args.ssl_ca_location.is_some(), "--ssl-ca-location"),
                (
                    args.ssl_certificate_location.is_some(),
                    "--ssl-certificate-location",
                ),
                (args.ssl_key_location.is_some(), "--ssl-key-location"),
                (args.aws_region.is_some(), "--aws-region"),
            ];
            if let Some((_, flag)) = security.iter().find(|(set, _)| *set) {
                bail!(ConfigError(format!(
                    "{flag} applies to a cluster named by --bootstrap (FLEETSTREAM_BOOTSTRAP); \
                     the embedded cluster is plaintext only"
                )));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(protocol: &str, mechanism: Option<&str>) -> ClusterArgs {
        ClusterArgs {
            bootstrap: Some("b-1.example:9096".into()),
            embedded_brokers: 3,
            security_protocol: protocol.into(),
            sasl_mechanism: mechanism.map(str::to_owned),
            sasl_username: Some("fleetstream".into()),
            sasl_password: Some("pw".into()),
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            ssl_key_password: None,
            aws_region: None,
        }
    }

    fn refusal(a: &ClusterArgs) -> String {
        connection_settings("b-1.example:9096", a)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn security_flags_become_the_connection_settings() {
        let ca = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca.path(), "-----BEGIN CERTIFICATE-----\n...\n").unwrap();
        let mut a = args("sasl_ssl", Some("SCRAM-SHA-512"));
        a.ssl_ca_location = Some(ca.path().display().to_string());
        let c = connection_settings("b-1.example:9096", &a).unwrap();
        assert_eq!(c.security_protocol, SecurityProtocol::SaslSsl);
        assert_eq!(c.sasl_mechanism.as_deref(), Some("SCRAM-SHA-512"));
        assert_eq!(c.sasl_username.as_deref(), Some("fleetstream"));
        assert_eq!(c.sasl_password.as_ref().map(Secret::expose), Some("pw"));
        assert_eq!(c.ssl_ca_location, a.ssl_ca_location);
        let plain = connection_settings("h:9092", &args("plaintext", None)).unwrap();
        assert_eq!(plain.security_protocol, SecurityProtocol::Plaintext);
    }

    #[test]
    fn inconsistent_security_flags_fail_naming_the_flag() {
        assert!(refusal(&args("tls", None)).contains("--security-protocol"));
        assert!(refusal(&args("sasl_ssl", None)).contains("--sasl-mechanism"));
        assert!(refusal(&args("ssl", Some("SCRAM-SHA-512"))).contains("needs --security-protocol"));
        let mut a = args("sasl_ssl", Some("SCRAM-SHA-512"));
        a.sasl_password = None;
        assert!(refusal(&a).contains("FLEETSTREAM_SASL_PASSWORD"));
        a = args("sasl_ssl", Some("SCRAM-SHA-256"));
        a.sasl_username = Some(String::new());
        assert!(refusal(&a).contains("--sasl-username"));
        a = args("ssl", None);
        a.ssl_ca_location = Some("/nonexistent/ca.pem".into());
        assert!(refusal(&a).contains("cannot be read"));
        let ca = tempfile::NamedTempFile::new().unwrap();
        a = args("plaintext", None);
        a.ssl_ca_location = Some(ca.path().display().to_string());
        assert!(refusal(&a).contains("needs --security-protocol ssl or sasl_ssl"));
        assert!(refusal(&args("sasl_ssl", Some("OAUTHBEARER"))).contains("use AWS_MSK_IAM"));
        assert!(refusal(&args("sasl_ssl", Some("GSSAPI"))).contains("SCRAM-SHA-512"));
        // Case does not matter, for the check either.
        a = args("sasl_ssl", Some("scram-sha-512"));
        a.sasl_password = None;
        assert!(refusal(&a).contains("--sasl-password"));
        a.sasl_password = Some("pw".into());
        let c = connection_settings("h:9096", &a).unwrap();
        assert_eq!(c.sasl_mechanism.as_deref(), Some("SCRAM-SHA-512"));
    }

    #[test]
    fn msk_iam_flags_are_checked_and_passed_on() {
        let iam = |protocol: &str| {
            let mut a = args(protocol, Some("aws_msk_iam"));
            a.sasl_username = None;
            a.sasl_password = None;
            a.aws_region = Some("sa-east-1".into());
            a
        };
        let c = connection_settings("b-1.example:9098", &iam("sasl_ssl")).unwrap();
        assert_eq!(c.sasl_mechanism.as_deref(), Some("AWS_MSK_IAM"));
        assert_eq!(c.aws_region.as_deref(), Some("sa-east-1"));
        assert!(c.uses_msk_iam());
        assert_eq!(c.sasl_username, None);
        let err = refusal(&iam("sasl_plaintext"));
        assert!(err.contains("needs --security-protocol sasl_ssl"), "{err}");
        let mut a = iam("sasl_ssl");
        a.sasl_password = Some("pw".into());
        let err = refusal(&a);
        assert!(
            err.contains("--sasl-password") && err.contains("does not apply"),
            "{err}"
        );
        // A region for another mechanism is a mistake worth naming.
        a = args("sasl_ssl", Some("SCRAM-SHA-512"));
        a.aws_region = Some("sa-east-1".into());
        assert!(refusal(&a).contains("--aws-region (FLEETSTREAM_AWS_REGION) is for"));
        // Without --aws-region the SDK's variables are read; with neither, the error names all.
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            a = iam("sasl_ssl");
            a.aws_region = None;
            let err = refusal(&a);
            assert!(
                err.contains(
                    "--aws-region (FLEETSTREAM_AWS_REGION), AWS_REGION or AWS_DEFAULT_REGION"
                ),
                "{err}"
            );
        }
    }

    #[test]
    fn security_flags_without_bootstrap_are_refused_before_the_embedded_cluster_starts() {
        let mut a = args("ssl", None);
        a.bootstrap = None;
        let err = connect(&a).unwrap_err().to_string();
        assert!(
            err.contains("--security-protocol applies to a cluster named by --bootstrap"),
            "{err}"
        );
        a = args("plaintext", None);
        a.bootstrap = None;
        a.ssl_key_location = Some("/k.pem".into());
        let err = connect(&a).unwrap_err().to_string();
        assert!(err.contains("--ssl-key-location applies"), "{err}");
    }

    #[test]
    fn client_certificate_flags_are_checked_and_passed_on() {
        let pem = |text: &str| {
            let f = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(f.path(), text).unwrap();
            f
        };
        let cert = pem("-----BEGIN CERTIFICATE-----\n...\n");
        let key = pem("-----BEGIN ENCRYPTED PRIVATE KEY-----\n...\n");
        let path = |f: &tempfile::NamedTempFile| Some(f.path().display().to_string());
        let mut a = args("ssl", None);
        a.ssl_certificate_location = path(&cert);
        a.ssl_key_location = path(&key);
        a.ssl_key_password = Some("phrase".into());
        let c = connection_settings("b-1.example:9094", &a).unwrap();
        assert_eq!(c.security_protocol, SecurityProtocol::Ssl);
        assert_eq!(c.ssl_certificate_location, a.ssl_certificate_location);
        assert_eq!(c.ssl_key_location, a.ssl_key_location);
        assert_eq!(
            c.ssl_key_password.as_ref().map(Secret::expose),
            Some("phrase")
        );

        let mut b = a.clone();
        b.ssl_key_location = None;
        assert!(
            refusal(&b).contains("needs --ssl-key-location"),
            "{}",
            refusal(&b)
        );
        b = a.clone();
        b.ssl_certificate_location = None;
        assert!(refusal(&b).contains("needs --ssl-certificate-location"));
        b = a.clone();
        b.ssl_key_location = Some("/nonexistent/client.key".into());
        assert!(refusal(&b).contains("--ssl-key-location (FLEETSTREAM_SSL_KEY_LOCATION) \"/nonexistent/client.key\" cannot be read"));
        b = a.clone();
        b.security_protocol = "plaintext".into();
        assert!(refusal(&b).contains("--ssl-certificate-location (FLEETSTREAM_SSL_CERTIFICATE_LOCATION) needs --security-protocol ssl or sasl_ssl"));
        b = args("ssl", None);
        b.ssl_key_password = Some("phrase".into());
        assert!(refusal(&b)
            .contains("--ssl-key-password (FLEETSTREAM_SSL_KEY_PASSWORD) is set without"));
        // An encrypted key without its pass phrase, a file that is not PEM, a directory.
        b = a.clone();
        b.ssl_key_password = None;
        assert!(refusal(&b)
            .contains("is encrypted: set its pass phrase with FLEETSTREAM_SSL_KEY_PASSWORD"));
        let jks = pem("\u{fe}\u{ed}binary");
        b = a.clone();
        b.ssl_certificate_location = path(&jks);
        assert!(refusal(&b).contains("is not PEM"), "{}", refusal(&b));
        let dir = tempfile::tempdir().unwrap();
        b = a.clone();
        b.ssl_key_location = Some(dir.path().display().to_string());
        assert!(refusal(&b).contains("it is a directory"), "{}", refusal(&b));
        // A plain key needs no pass phrase.
        let plain = pem("-----BEGIN PRIVATE KEY-----\n...\n");
        b = a.clone();
        b.ssl_key_location = path(&plain);
        b.ssl_key_password = None;
        assert!(connection_settings("h:9094", &b).is_ok());
    }
}
