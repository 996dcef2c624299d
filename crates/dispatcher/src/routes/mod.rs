//! The validated routing table: event code -> target names, with a default route and a policy
//! for codes nobody routes.

mod config;

pub use config::{RoutesConfig, TargetSpec, UnknownCodePolicy};

use crate::targets::HttpTargetConfig;
use fleetstream_core::Code;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Name of the single target used when there is no routing file.
pub const DEFAULT_TARGET: &str = "dispatched";
/// File of that target, under the state dir.
pub const DEFAULT_JSONL_FILE: &str = "dispatched.jsonl";

/// A routing file that cannot be used. Each variant names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    /// The file could not be read.
    #[error("cannot read routing file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Not TOML, or a key or value of the wrong type or unknown (the message names the key).
    #[error("routing file: {0}")]
    Parse(String),
    /// Parsed, but inconsistent.
    #[error("routing file: `{key}`: {message}")]
    Invalid {
        /// Dotted path of the bad key, e.g. `routes."300"[1]`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> RoutesError {
    RoutesError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// A validated target declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKind {
    /// In-process recording sink.
    Memory,
    /// JSON lines appended to this (absolute or state-dir-resolved) path.
    Jsonl(PathBuf),
    /// `tracing` output.
    Log,
    /// JSON batches POSTed to an endpoint.
    Http(HttpTargetConfig),
    /// Records produced to this Kafka topic. Implemented outside this crate (it links no Kafka
    /// client): the caller supplies it, see [`crate::Dispatcher::new_with_targets`].
    Kafka {
        /// Destination topic (a valid Kafka topic name).
        topic: String,
    },
}

impl TargetKind {
    /// The `kind` as written in the routing file.
    pub fn kind_name(&self) -> &'static str {
        match self {
            TargetKind::Memory => "memory",
            TargetKind::Jsonl(_) => "jsonl",
            TargetKind::Log => "log",
            TargetKind::Http(_) => "http",
            TargetKind::Kafka { .. } => "kafka",
        }
    }
}

/// Where one code goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// Deliver to these targets, in this order.
    Targets(&'a [String]),
    /// No route: report as skipped (policy `skip`).
    Skip,
    /// No route: report as a non-retriable failure to dead-letter (policy `dead_letter`).
    DeadLetter,
}

/// Validated routing: every route names declared, implemented targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingTable {
    routes: HashMap<Code, Vec<String>>,
    default: Vec<String>,
    unknown_code: UnknownCodePolicy,
    targets: BTreeMap<String, TargetKind>,
}

impl RoutingTable {
    /// Routing with no file: every code goes to one JSON lines file, `<state_dir>/dispatched.jsonl`.
    pub fn default_for_state_dir(state_dir: impl AsRef<Path>) -> Self {
        let path = state_dir.as_ref().join(DEFAULT_JSONL_FILE);
        Self {
            routes: HashMap::new(),
            default: vec![DEFAULT_TARGET.to_owned()],
            unknown_code: UnknownCodePolicy::DeadLetter,
            targets: BTreeMap::from([(DEFAULT_TARGET.to_owned(), TargetKind::Jsonl(path))]),
        }
    }

    /// Reads and validates a routing file; relative `jsonl` paths resolve under `state_dir`.
    pub fn load(path: impl AsRef<Path>, state_dir: impl AsRef<Path>) -> Result<Self, RoutesError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| RoutesError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_str(&text, state_dir)
    }

    /// Parses and validates routing TOML; relative `jsonl` paths resolve under `state_dir`.
    pub fn from_toml_str(text: &str, state_dir: impl AsRef<Path>) -> Result<Self, RoutesError> {
        let config: RoutesConfig =
            toml::from_str(text).map_err(|e| RoutesError::Parse(e.to_string()))?;
        Self::from_config(config, state_dir)
    }

    /// Validates a parsed routing file.
    pub fn from_config(
        config: RoutesConfig,
        state_dir: impl AsRef<Path>,
    ) -> Result<Self, RoutesError> {
        let state_dir = state_dir.as_ref();
        let mut targets = BTreeMap::new();
        for (name, spec) in config.targets {
            // Names are part of idempotency keys (`<target>:<id>`): keep them unambiguous.
            let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
            if name.is_empty() || !name.chars().all(valid) {
                return Err(invalid(
                    format!("targets.{name}"),
                    "target names use only letters, digits, '-' and '_'",
                ));
            }
            let kind = match spec {
                TargetSpec::Memory {} => TargetKind::Memory,
                TargetSpec::Log {} => TargetKind::Log,
                TargetSpec::Jsonl { path } if path.as_os_str().is_empty() => {
                    return Err(invalid(format!("targets.{name}.path"), "must not be empty"));
                }
                TargetSpec::Jsonl { path } => TargetKind::Jsonl(state_dir.join(path)),
                TargetSpec::Http {
                    url,
                    timeout,
                    max_attempts,
                    concurrency,
                    initial_backoff,
                } => TargetKind::Http(validate_http(
                    &name,
                    &url,
                    timeout,
                    max_attempts,
                    concurrency,
                    initial_backoff,
                )?),
                TargetSpec::Kafka { topic } => TargetKind::Kafka {
                    topic: validate_topic(&name, topic)?,
                },
            };
            targets.insert(name, kind);
        }
        let check_list = |key: String, names: &[String]| -> Result<(), RoutesError> {
            let mut seen = HashSet::new();
            for (i, name) in names.iter().enumerate() {
                if !targets.contains_key(name) {
                    return Err(invalid(
                        format!("{key}[{i}]"),
                        format!("unknown target `{name}`; declare it under [targets.{name}]"),
                    ));
                }
                if !seen.insert(name) {
                    return Err(invalid(
                        format!("{key}[{i}]"),
                        format!("target `{name}` listed twice"),
                    ));
                }
            }
            Ok(())
        };
        check_list("default".into(), &config.default)?;
        let mut routes = HashMap::new();
        for (code_text, names) in config.routes {
            let key = format!("routes.\"{code_text}\"");
            let code = code_text
                .parse::<u32>()
                .map_err(|_| invalid(&key, "not an event code (a non-negative integer)"))?;
            if names.is_empty() {
                return Err(invalid(
                    &key,
                    "empty target list; remove the route or name a target",
                ));
            }
            check_list(key.clone(), &names)?;
            if routes.insert(Code(code), names).is_some() {
                return Err(invalid(&key, format!("code {code} is routed twice")));
            }
        }
        Ok(Self {
            routes,
            default: config.default,
            unknown_code: config.unknown_code,
            targets,
        })
    }

    /// Where records with `code` go.
    pub fn route(&self, code: Code) -> Route<'_> {
        match self.routes.get(&code) {
            Some(names) => Route::Targets(names),
            None if !self.default.is_empty() => Route::Targets(&self.default),
            None => match self.unknown_code {
                UnknownCodePolicy::DeadLetter => Route::DeadLetter,
                UnknownCodePolicy::Skip => Route::Skip,
            },
        }
    }

    /// Declared targets by name.
    pub fn targets(&self) -> impl Iterator<Item = (&str, &TargetKind)> {
        self.targets.iter().map(|(n, k)| (n.as_str(), k))
    }
}

/// Kafka's own rule: 1 to 249 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
fn validate_topic(name: &str, topic: String) -> Result<String, RoutesError> {
    let key = format!("targets.{name}.topic");
    if topic.is_empty() {
        return Err(invalid(key, "must not be empty"));
    }
    // 249: the broker's limit on topic name length.
    if topic.len() > 249 {
        return Err(invalid(key, "longer than 249 characters"));
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !topic.chars().all(valid) || topic == "." || topic == ".." {
        return Err(invalid(
            key,
            format!("{topic:?} is not a topic name (letters, digits, '.', '_', '-')"),
        ));
    }
    Ok(topic)
}

fn validate_http(
    name: &str,
    url: &str,
    timeout: std::time::Duration,
    max_attempts: u32,
    concurrency: usize,
    initial_backoff: std::time::Duration,
) -> Result<HttpTargetConfig, RoutesError> {
    let key = |field: &str| format!("targets.{name}.{field}");
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| invalid(key("url"), format!("{url:?} is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(invalid(
                key("url"),
                "https is not supported (plain HTTP client); put a TLS-terminating proxy in front",
            ))
        }
        _ => {
            return Err(invalid(
                key("url"),
                format!("{url:?} must start with http://"),
            ))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid(key("url"), format!("{url:?} has no host")));
    }
    if timeout.is_zero() {
        return Err(invalid(key("timeout"), "must be more than 0"));
    }
    if max_attempts == 0 {
        return Err(invalid(key("max_attempts"), "must be at least 1"));
    }
    if concurrency == 0 {
        return Err(invalid(key("concurrency"), "must be at least 1"));
    }
    Ok(HttpTargetConfig {
        url: uri,
        timeout,
        max_attempts,
        concurrency,
        initial_backoff,
    })
}

#[cfg(test)]
mod tests;
