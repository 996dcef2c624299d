//! Typed client configuration. Every raw librdkafka key fleetstream sets is written in this file,
//! in [`ProducerSettings::to_client_config`] and [`ConsumerSettings::to_client_config`].

use fleetstream_core::Partitioner;
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// A secret string whose `Debug` and `Display` print `***`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself; call only where it is handed to the client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How clients reach the brokers. MSK: `sasl_ssl` with SCRAM on 9096, or `ssl` (mTLS) on 9094.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no auth (the embedded cluster, a laptop broker).
    #[default]
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL over plaintext.
    SaslPlaintext,
    /// SASL over TLS (MSK SCRAM).
    SaslSsl,
}

impl SecurityProtocol {
    fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }
}

/// Connection settings shared by producers, consumers and the admin client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSettings {
    /// `host:port[,host:port]` of the brokers.
    pub bootstrap: String,
    /// Client id reported to brokers. Default `fleetstream`.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Security protocol. Default `plaintext`.
    #[serde(default)]
    pub security_protocol: SecurityProtocol,
    /// SASL mechanism (`SCRAM-SHA-512` on MSK), when the protocol uses SASL.
    #[serde(default)]
    pub sasl_mechanism: Option<String>,
    /// SASL user name.
    #[serde(default)]
    pub sasl_username: Option<String>,
    /// SASL password; printed as `***`.
    #[serde(default)]
    pub sasl_password: Option<Secret>,
    /// CA bundle for TLS; the system store when unset.
    #[serde(default)]
    pub ssl_ca_location: Option<String>,
    /// Client certificate (PEM) for mutual TLS (MSK's mTLS listener on 9094).
    #[serde(default)]
    pub ssl_certificate_location: Option<String>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub ssl_key_location: Option<String>,
    /// Pass phrase of an encrypted private key; printed as `***`.
    #[serde(default)]
    pub ssl_key_password: Option<Secret>,
    /// AWS region the MSK cluster is in: what MSK IAM tokens are signed for (with
    /// `sasl_mechanism` [`crate::msk_iam::MECHANISM`]).
    #[serde(default)]
    pub aws_region: Option<String>,
}

fn default_client_id() -> String {
    "fleetstream".into()
}

impl ConnectionSettings {
    /// Plaintext settings for a bootstrap string.
    pub fn plaintext(bootstrap: impl Into<String>) -> Self {
        ConnectionSettings {
            bootstrap: bootstrap.into(),
            client_id: default_client_id(),
            security_protocol: SecurityProtocol::Plaintext,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            ssl_key_password: None,
            aws_region: None,
        }
    }

    /// Checks what librdkafka would otherwise take silently: `bootstrap` must be a non-empty
    /// comma-separated list of `host:port` (an IPv6 host in brackets, `[::1]:9092`), each with
    /// a non-empty host and a port in 1..=65535. librdkafka reads the port as a C integer and
    /// truncates it to 16 bits, so `127.0.0.1:99999` would quietly dial port 34463.
    pub fn validate(&self) -> Result<(), SettingsError> {
        validate_bootstrap(&self.bootstrap)
    }

    /// Whether clients authenticate with MSK IAM (SASL/OAUTHBEARER with signed tokens).
    pub fn uses_msk_iam(&self) -> bool {
        self.sasl_mechanism
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case(crate::msk_iam::MECHANISM))
    }

    /// The token signer for one client, when it authenticates with MSK IAM: each client asks for
    /// its tokens (at start and at 80% of each one's 15 minutes) from its own poll.
    pub(crate) fn oauth(
        &self,
    ) -> Result<Option<std::sync::Arc<crate::msk_iam::MskIamTokens>>, crate::KafkaError> {
        if !self.uses_msk_iam() {
            return Ok(None);
        }
        let region = self.aws_region.as_deref().unwrap_or_default();
        crate::msk_iam::MskIamTokens::start(region)
            .map(|t| Some(std::sync::Arc::new(t)))
            .map_err(|e| crate::KafkaError::Client(format!("MSK IAM: {e}")))
    }

    fn apply(&self, c: &mut ClientConfig) {
        c.set("bootstrap.servers", &self.bootstrap);
        c.set("client.id", &self.client_id);
        c.set("security.protocol", self.security_protocol.as_str());
        if self.uses_msk_iam() {
            // The token comes from the client's context (`generate_oauth_token`).
            c.set("sasl.mechanism", "OAUTHBEARER");
        } else if let Some(m) = &self.sasl_mechanism {
            c.set("sasl.mechanism", m);
        }
        if let Some(u) = &self.sasl_username {
            c.set("sasl.username", u);
        }
        if let Some(p) = &self.sasl_password {
            c.set("sasl.password", p.expose());
        }
        if let Some(ca) = &self.ssl_ca_location {
            c.set("ssl.ca.location", ca);
        }
        if let Some(cert) = &self.ssl_certificate_location {
            c.set("ssl.certificate.location", cert);
        }
        if let Some(key) = &self.ssl_key_location {
            c.set("ssl.key.location", key);
        }
        if let Some(p) = &self.ssl_key_password {
            c.set("ssl.key.password", p.expose());
        }
    }

    /// Client config for admin and metadata calls.
    pub fn to_client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        self.apply(&mut c);
        c.set("log_level", "3");
        c
    }
}

/// A setting that cannot work; names the key and the bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A bootstrap entry is not `host:port` with a port in 1..=65535.
    #[error("bootstrap entry {entry:?} {reason}; expected host:port[,host:port...] with ports 1..=65535")]
    Bootstrap {
        /// The entry at fault (the whole list when it is empty).
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A client setting is out of the range that makes sense (or that librdkafka accepts).
    #[error("`{key}` {reason}")]
    OutOfRange {
        /// The field of the settings struct, e.g. `delivery_timeout`.
        key: &'static str,
        /// What is accepted.
        reason: &'static str,
    },
}

/// Checks a bootstrap list (see [`ConnectionSettings::validate`]).
pub fn validate_bootstrap(list: &str) -> Result<(), SettingsError> {
    let bad = |entry: &str, reason| {
        Err(SettingsError::Bootstrap {
            entry: entry.to_string(),
            reason,
        })
    };
    if list.trim().is_empty() {
        return bad(list, "is empty");
    }
    for entry in list.split(',') {
        let e = entry.trim();
        if e.is_empty() {
            return bad(entry, "is empty (a stray comma?)");
        }
        // librdkafka also accepts a `proto://` prefix per entry (`PLAINTEXT://b-1:9092`).
        let addr = e.split_once("://").map_or(e, |(_, rest)| rest);
        let Some((host, port)) = addr.rsplit_once(':') else {
            return bad(e, "has no port");
        };
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return bad(e, "has no host");
        }
        if host.contains(':') && !addr.starts_with('[') {
            return bad(e, "is an IPv6 address without brackets, like [::1]:9092");
        }
        match port.parse::<u32>() {
            Ok(p) if (1..=65535).contains(&p) => {}
            Ok(_) => return bad(e, "has a port outside 1..=65535"),
            Err(_) => return bad(e, "has a port that is not a number"),
        }
    }
    Ok(())
}

/// Compression codec for produced batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// No compression.
    None,
    /// LZ4: cheap on CPU, good on repetitive JSON. The default.
    #[default]
    Lz4,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            "gzip" => Ok(Compression::Gzip),
            "snappy" => Ok(Compression::Snappy),
            o => Err(format!(
                "unknown compression {o:?}; expected none, lz4, gzip or snappy"
            )),
        }
    }
}

/// Producer settings. `acks=all` and idempotence are not settings: fleetstream always sets them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProducerSettings {
    /// Where the brokers are.
    pub connection: ConnectionSettings,
    /// Key placement. Default `murmur2_random` (as the Java client and Kafka's tools).
    pub partitioner: Partitioner,
    /// Time a record may spend from send to ack, retries included. Default 120 s.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// Time a batch waits to fill. Default 5 ms (librdkafka's).
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Maximum batch size in bytes. Default 1 MiB (docs/BENCHMARKS.md: on the real broker it
    /// beat 128 KiB by ~13% unthrottled; on the mock cluster 128 KiB was ~10% cheaper).
    pub batch_bytes: usize,
    /// Compression. Default `lz4`.
    pub compression: Compression,
    /// librdkafka queue bound in messages (`QueueFull` beyond it). Default 100,000.
    pub queue_max_messages: usize,
    /// librdkafka queue bound in KiB. Default 262,144 (256 MiB): memory is bounded by configuration.
    pub queue_max_kbytes: usize,
    /// Statistics interval for queue depth and broker RTT; zero disables. Default 0.
    #[serde(with = "humantime_serde")]
    pub statistics_interval: Duration,
}

impl ProducerSettings {
    /// Defaults for a connection.
    pub fn new(connection: ConnectionSettings) -> Self {
        ProducerSettings {
            connection,
            partitioner: Partitioner::Murmur2Random,
            delivery_timeout: Duration::from_secs(120),
            linger: Duration::from_millis(5),
            batch_bytes: 1024 * 1024,
            compression: Compression::Lz4,
            queue_max_messages: 100_000,
            queue_max_kbytes: 256 * 1024,
            statistics_interval: Duration::ZERO,
        }
    }

    /// Checks the settings before a client is built: the connection
    /// ([`ConnectionSettings::validate`]), then each bound, naming the field. librdkafka would
    /// refuse some of these only when the client is created, with its own key names, and take
    /// others (a zero delivery timeout: every record fails at once).
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.connection.validate()?;
        // librdkafka's range for batch.size and the queue bounds: a C int, at least 1.
        const INT: std::ops::RangeInclusive<usize> = 1..=2_147_483_647;
        let checks = [
            (
                "delivery_timeout",
                self.delivery_timeout >= Duration::from_secs(1),
                "must be at least 1s: it covers every retry of a record",
            ),
            (
                "linger",
                self.linger <= Duration::from_secs(300),
                "must be at most 5m",
            ),
            (
                "batch_bytes",
                INT.contains(&self.batch_bytes),
                "must be 1..=2147483647",
            ),
            (
                "queue_max_messages",
                INT.contains(&self.queue_max_messages),
                "must be 1..=2147483647",
            ),
            (
                "queue_max_kbytes",
                INT.contains(&self.queue_max_kbytes),
                "must be 1..=2147483647",
            ),
        ];
        match checks.into_iter().find(|(_, ok, _)| !ok) {
            Some((key, _, reason)) => Err(SettingsError::OutOfRange { key, reason }),
            None => Ok(()),
        }
    }

    /// The one place producer librdkafka keys are written.
    pub fn to_client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        self.connection.apply(&mut c);
        // Durability: every in-sync replica acknowledges; idempotence makes retries safe
        // (no duplicates, no reordering within a partition). librdkafka's default is false.
        c.set("acks", "all");
        c.set("enable.idempotence", "true");
        c.set("partitioner", self.partitioner.librdkafka_name());
        c.set(
            "delivery.timeout.ms",
            self.delivery_timeout.as_millis().to_string(),
        );
        c.set("linger.ms", self.linger.as_millis().to_string());
        c.set("batch.size", self.batch_bytes.to_string());
        c.set("compression.type", self.compression.as_str());
        c.set(
            "queue.buffering.max.messages",
            self.queue_max_messages.to_string(),
        );
        c.set(
            "queue.buffering.max.kbytes",
            self.queue_max_kbytes.to_string(),
        );
        c.set(
            "statistics.interval.ms",
            self.statistics_interval.as_millis().to_string(),
        );
        c.set("log_level", "3");
        c
    }
}

/// Partition assignment strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Assignment {
    /// Incremental rebalancing: only moved partitions stop. The default.
    #[default]
    CooperativeSticky,
    /// Eager range assignment (stop-the-world rebalances).
    Range,
}

/// Where a new group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OffsetReset {
    /// From the oldest retained record: a new group must not skip data. The default.
    #[default]
    Earliest,
    /// From the end.
    Latest,
}

/// Consumer group settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumerSettings {
    /// Where the brokers are.
    pub connection: ConnectionSettings,
    /// Consumer group id.
    pub group: String,
    /// Assignment strategy. Default cooperative-sticky.
    pub assignment: Assignment,
    /// Start position of a new group. Default earliest.
    pub offset_reset: OffsetReset,
    /// Session timeout. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// How often stored offsets are committed. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Upper bound between polls before the member is evicted. Default 300 s.
    #[serde(with = "humantime_serde")]
    pub max_poll_interval: Duration,
    /// Longest a broker holds a fetch waiting for data. Default 50 ms: at ~1,000 msg/s per
    /// partition the batch window, not the fetch, should set latency.
    #[serde(with = "humantime_serde")]
    pub fetch_wait_max: Duration,
    /// Upper bound of librdkafka's prefetched-record queue, KiB. Default 16,384 (16 MiB;
    /// librdkafka's own is 64 MiB): with a stalled dispatcher this is most of the worker's
    /// memory, so it is bounded by configuration.
    pub prefetch_max_kbytes: usize,
    /// Records librdkafka tries to keep prefetched per partition. Default 10,000 (librdkafka:
    /// 100,000).
    pub prefetch_min_messages: usize,
    /// Largest answer to one fetch request, bytes, per broker connection. Default 4 MiB
    /// (librdkafka's own is 50 MiB: with three brokers a draining worker held 150 MiB of fetch
    /// answers). A record batch larger than this is still returned whole, so it never blocks
    /// progress; 4 MiB is 20,000 records of 200 B, far more than a fetch round trip needs at
    /// 13,000 msg/s.
    pub fetch_max_bytes: usize,
}

impl ConsumerSettings {
    /// Defaults for a connection and group.
    pub fn new(connection: ConnectionSettings, group: impl Into<String>) -> Self {
        ConsumerSettings {
            connection,
            group: group.into(),
            assignment: Assignment::CooperativeSticky,
            offset_reset: OffsetReset::Earliest,
            session_timeout: Duration::from_secs(10),
            commit_interval: Duration::from_secs(1),
            max_poll_interval: Duration::from_secs(300),
            fetch_wait_max: Duration::from_millis(50),
            prefetch_max_kbytes: 16 * 1024,
            prefetch_min_messages: 10_000,
            fetch_max_bytes: 4 * 1024 * 1024,
        }
    }

    /// The one place consumer librdkafka keys are written.
    pub fn to_client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        self.connection.apply(&mut c);
        c.set("group.id", &self.group);
        c.set(
            "partition.assignment.strategy",
            match self.assignment {
                Assignment::CooperativeSticky => "cooperative-sticky",
                Assignment::Range => "range",
            },
        );
        c.set(
            "auto.offset.reset",
            match self.offset_reset {
                OffsetReset::Earliest => "earliest",
                OffsetReset::Latest => "latest",
            },
        );
        // At-least-once: librdkafka would store an offset as soon as the record is handed to us
        // (enable.auto.offset.store=true). We store it ourselves only after the record was
        // dispatched or dead-lettered; the auto-committer then commits only stored offsets.
        c.set("enable.auto.offset.store", "false");
        c.set("enable.auto.commit", "true");
        c.set(
            "auto.commit.interval.ms",
            self.commit_interval.as_millis().to_string(),
        );
        c.set(
            "session.timeout.ms",
            self.session_timeout.as_millis().to_string(),
        );
        c.set(
            "max.poll.interval.ms",
            self.max_poll_interval.as_millis().to_string(),
        );
        c.set("enable.partition.eof", "false");
        c.set(
            "fetch.wait.max.ms",
            self.fetch_wait_max.as_millis().to_string(),
        );
        // The worker's memory: prefetched records and the fetch answers in flight are most of
        // it, so both are bounded here (see the fields' docs).
        c.set(
            "queued.max.messages.kbytes",
            self.prefetch_max_kbytes.to_string(),
        );
        c.set(
            "queued.min.messages",
            self.prefetch_min_messages.to_string(),
        );
        c.set("fetch.max.bytes", self.fetch_max_bytes.to_string());
        c.set("log_level", "3");
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12, defect 6: the prefetch bounds were documented and defaulted but never written
    /// to librdkafka, so a worker ran with its 64 MiB queue and 50 MiB fetches per broker.
    #[test]
    fn consumer_prefetch_bounds_reach_librdkafka() {
        let mut s = ConsumerSettings::new(ConnectionSettings::plaintext("b:9092"), "g");
        s.prefetch_max_kbytes = 1234;
        s.prefetch_min_messages = 567;
        s.fetch_max_bytes = 2_000_000;
        let c = s.to_client_config();
        assert_eq!(c.get("queued.max.messages.kbytes"), Some("1234"));
        assert_eq!(c.get("queued.min.messages"), Some("567"));
        assert_eq!(c.get("fetch.max.bytes"), Some("2000000"));
    }

    #[test]
    fn producer_is_always_durable_and_idempotent() {
        let c = ProducerSettings::new(ConnectionSettings::plaintext("b:9092")).to_client_config();
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("partitioner"), Some("murmur2_random"));
    }

    #[test]
    fn consumer_stores_offsets_by_hand() {
        let c =
            ConsumerSettings::new(ConnectionSettings::plaintext("b:9092"), "g").to_client_config();
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(
            c.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
    }

    #[test]
    fn client_certificate_settings_reach_librdkafka() {
        let mut s = ConnectionSettings::plaintext("b:9094");
        s.security_protocol = SecurityProtocol::Ssl;
        s.ssl_certificate_location = Some("/c/client.pem".into());
        s.ssl_key_location = Some("/c/client.key".into());
        s.ssl_key_password = Some(Secret::new("phrase"));
        let c = s.to_client_config();
        assert_eq!(c.get("security.protocol"), Some("ssl"));
        assert_eq!(c.get("ssl.certificate.location"), Some("/c/client.pem"));
        assert_eq!(c.get("ssl.key.location"), Some("/c/client.key"));
        assert_eq!(c.get("ssl.key.password"), Some("phrase"));
        let plain = ConnectionSettings::plaintext("b:9092").to_client_config();
        assert_eq!(plain.get("ssl.key.location"), None);
    }

    #[test]
    fn msk_iam_is_oauthbearer_to_librdkafka() {
        let mut s = ConnectionSettings::plaintext("b-1.example:9098");
        s.security_protocol = SecurityProtocol::SaslSsl;
        s.sasl_mechanism = Some(crate::msk_iam::MECHANISM.into());
        s.aws_region = Some("us-east-1".into());
        assert!(s.uses_msk_iam());
        let c = s.to_client_config();
        assert_eq!(c.get("sasl.mechanism"), Some("OAUTHBEARER"));
        assert_eq!(c.get("sasl.username"), None);
        assert!(s.oauth().unwrap().is_some());
        s.sasl_mechanism = Some("SCRAM-SHA-512".into());
        assert!(!s.uses_msk_iam());
        assert_eq!(
            s.to_client_config().get("sasl.mechanism"),
            Some("SCRAM-SHA-512")
        );
        assert!(s.oauth().unwrap().is_none());
    }

    #[test]
    fn bootstrap_lists_are_checked_entry_by_entry() {
        for ok in [
            "b:9092",
            "127.0.0.1:9092, 127.0.0.1:9093",
            "[::1]:9092",
            "PLAINTEXT://b-1.example:9096",
            "b:65535",
        ] {
            assert_eq!(validate_bootstrap(ok), Ok(()), "{ok}");
        }
        for (bad, entry, reason) in [
            ("127.0.0.1:99999", "127.0.0.1:99999", "outside 1..=65535"),
            ("b:0", "b:0", "outside 1..=65535"),
            ("b:x", "b:x", "not a number"),
            ("b", "b", "no port"),
            (":9092", ":9092", "no host"),
            ("b:9092,,c:9092", "", "stray comma"),
            ("  ", "  ", "is empty"),
            ("::1:9092", "::1:9092", "brackets"),
        ] {
            let e = validate_bootstrap(bad).unwrap_err();
            let SettingsError::Bootstrap { entry: got, .. } = &e else {
                panic!("{e:?}");
            };
            assert_eq!(got, entry, "{bad}");
            assert!(e.to_string().contains(reason), "{bad}: {e}");
        }
        assert!(ConnectionSettings::plaintext("127.0.0.1:99999")
            .validate()
            .is_err());
    }

    #[test]
    fn producer_settings_out_of_range_name_their_field() {
        let ok = ProducerSettings::new(ConnectionSettings::plaintext("b:9092"));
        assert_eq!(ok.validate(), Ok(()));
        let key_of = |s: ProducerSettings| match s.validate() {
            Err(SettingsError::OutOfRange { key, .. }) => key,
            other => panic!("{other:?}"),
        };
        let mut s = ok.clone();
        s.delivery_timeout = Duration::ZERO;
        assert_eq!(key_of(s), "delivery_timeout");
        let mut s = ok.clone();
        s.linger = Duration::from_secs(301);
        assert_eq!(key_of(s), "linger");
        let mut s = ok.clone();
        s.batch_bytes = 0;
        assert_eq!(key_of(s), "batch_bytes");
        let mut s = ok.clone();
        s.queue_max_messages = 0;
        assert_eq!(key_of(s), "queue_max_messages");
        let mut s = ok.clone();
        s.queue_max_kbytes = usize::MAX;
        assert_eq!(key_of(s), "queue_max_kbytes");
        let mut s = ok;
        s.connection.bootstrap = "b:0".into();
        assert!(matches!(s.validate(), Err(SettingsError::Bootstrap { .. })));
    }

    #[test]
    fn secrets_do_not_print() {
        let mut s = ConnectionSettings::plaintext("b:9092");
        s.sasl_password = Some(Secret::new("hunter2"));
        s.ssl_key_password = Some(Secret::new("key-phrase"));
        let printed = format!("{s:?}");
        assert!(
            !printed.contains("hunter2") && !printed.contains("key-phrase"),
            "{printed}"
        );
    }
}
