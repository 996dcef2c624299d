//! The worker's librdkafka prefetch bounds as flags: most of a draining worker's memory is
//! records librdkafka fetched ahead of the worker (docs/WORKER.md, "Memory").

use clap::Args;
use fleetstream_kafka::ConsumerSettings;

/// Prefetch flags of `fleetstream worker` and `fleetstream bench worker`.
#[derive(Debug, Clone, Args)]
pub struct PrefetchArgs {
    /// Upper bound of the records librdkafka fetches ahead of the worker, KiB of payload
    /// (librdkafka `queued.max.messages.kbytes`, counted over the whole consumer queue, not per
    /// partition). Each prefetched record also costs about 0.5 KiB of librdkafka bookkeeping on
    /// top of its payload, and one fetch answer per broker may overshoot it.
    #[arg(long, env = "FLEETSTREAM_PREFETCH_MAX_KBYTES", default_value_t = DEFAULT_PREFETCH_MAX_KBYTES)]
    pub prefetch_max_kbytes: usize,
    /// Records librdkafka stops prefetching at (`queued.min.messages`, over the whole consumer
    /// queue): with small records this, not the KiB bound, is the one that binds.
    #[arg(long, env = "FLEETSTREAM_PREFETCH_MIN_MESSAGES", default_value_t = DEFAULT_PREFETCH_MIN_MESSAGES)]
    pub prefetch_min_messages: usize,
    /// Largest answer to one fetch request, bytes, per broker connection (`fetch.max.bytes`).
    #[arg(long, env = "FLEETSTREAM_FETCH_MAX_BYTES", default_value_t = DEFAULT_FETCH_MAX_BYTES)]
    pub fetch_max_bytes: usize,
}

/// Default of `--prefetch-max-kbytes`.
pub const DEFAULT_PREFETCH_MAX_KBYTES: usize = 16 * 1024;
/// Default of `--prefetch-min-messages`.
pub const DEFAULT_PREFETCH_MIN_MESSAGES: usize = 10_000;
/// Default of `--fetch-max-bytes`.
pub const DEFAULT_FETCH_MAX_BYTES: usize = 4 * 1024 * 1024;

impl PrefetchArgs {
    /// Writes the flags into the consumer settings.
    pub fn apply(&self, settings: &mut ConsumerSettings) {
        settings.prefetch_max_kbytes = self.prefetch_max_kbytes;
        settings.prefetch_min_messages = self.prefetch_min_messages;
        settings.fetch_max_bytes = self.fetch_max_bytes;
    }

    /// Consumer settings for a connection and group with these bounds.
    pub fn settings(
        &self,
        connection: fleetstream_kafka::ConnectionSettings,
        group: impl Into<String>,
    ) -> ConsumerSettings {
        let mut s = ConsumerSettings::new(connection, group);
        self.apply(&mut s);
        s
    }
}

#[cfg(test)]
mod tests {
    use crate::worker::WorkerArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        worker: WorkerArgs,
    }

    /// Issue 12, defect 6: the worker's prefetch bounds are flags that reach librdkafka.
    #[test]
    fn worker_prefetch_flags_reach_librdkafka_keys() {
        let cli = Cli::try_parse_from([
            "worker",
            "--prefetch-max-kbytes",
            "2048",
            "--prefetch-min-messages",
            "3000",
            "--fetch-max-bytes",
            "1048576",
        ])
        .unwrap();
        let conn = fleetstream_kafka::ConnectionSettings::plaintext("127.0.0.1:9092");
        let c = cli.worker.prefetch.settings(conn, "g").to_client_config();
        assert_eq!(c.get("queued.max.messages.kbytes"), Some("2048"));
        assert_eq!(c.get("queued.min.messages"), Some("3000"));
        assert_eq!(c.get("fetch.max.bytes"), Some("1048576"));
    }
}
