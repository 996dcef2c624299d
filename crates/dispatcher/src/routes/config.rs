//! The routing file as written (`config/routes.toml`), before validation.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Raw routing file. Validate with [`crate::RoutingTable::from_config`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesConfig {
    /// Targets for every code without its own entry in `routes`. Default: empty, so such codes
    /// fall under `unknown_code`.
    #[serde(default)]
    pub default: Vec<String>,
    /// What to do with a code that has no route when `default` is empty. Default `dead_letter`.
    #[serde(default)]
    pub unknown_code: UnknownCodePolicy,
    /// Event code -> target names, e.g. `"300" = ["alerts", "archive"]`. Default: empty.
    #[serde(default)]
    pub routes: BTreeMap<String, Vec<String>>,
    /// Targets by name, e.g. `[targets.archive]`. Default: none.
    #[serde(default)]
    pub targets: BTreeMap<String, TargetSpec>,
}

/// Policy for codes nobody routes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownCodePolicy {
    /// Report the record as a non-retriable failure (`unknown_code:<code>`), so the worker writes
    /// it to its dead-letter topic (or Lambda to its on-failure destination). Nothing is lost.
    #[default]
    DeadLetter,
    /// Report it as skipped and let its offset be committed: a deliberate drop.
    Skip,
}

/// A declared target, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetSpec {
    /// In-process recording sink ([`crate::targets::MemoryTarget`]); no settings.
    Memory {},
    /// Appends JSON lines ([`crate::targets::JsonlTarget`]).
    Jsonl {
        /// File to append to; a relative path is under the state dir. Required.
        path: PathBuf,
    },
    /// Logs through `tracing` ([`crate::targets::LogTarget`]); no settings.
    Log {},
    /// POSTs each slice (one code) as a JSON batch to a URL ([`crate::targets::HttpTarget`]):
    /// 429 and 5xx are retried with backoff, other 4xx are permanent failures.
    Http {
        /// Endpoint URL, `http://host:port/path` (plain HTTP). Required.
        url: String,
        /// Timeout of one request. Default `5s`.
        #[serde(default = "default_http_timeout", with = "humantime_serde")]
        timeout: Duration,
        /// Attempts per slice before the records fail (retriable). Default 3.
        #[serde(default = "default_http_attempts")]
        max_attempts: u32,
        /// Requests in flight at once. Default 4.
        #[serde(default = "default_http_concurrency")]
        concurrency: usize,
        /// Wait before the first retry, doubled for each further one (at most 5 s). Default
        /// `100ms`.
        #[serde(default = "default_http_backoff", with = "humantime_serde")]
        initial_backoff: Duration,
    },
    /// Produces every record, unchanged (key, value, headers), to a Kafka topic: fan-out to
    /// other consumers. The dispatcher links no Kafka client, so the program embedding it must
    /// supply the implementation (`fleetstream worker` and `fleetstream dispatch serve` do; the
    /// Lambda binary cannot and refuses such a routing file at start-up).
    Kafka {
        /// Destination topic, e.g. `"fleet-fanout"`. Required.
        topic: String,
    },
}

fn default_http_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_http_attempts() -> u32 {
    3
}

fn default_http_concurrency() -> usize {
    4
}

fn default_http_backoff() -> Duration {
    crate::targets::DEFAULT_INITIAL_BACKOFF
}
