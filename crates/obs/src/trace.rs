//! OpenTelemetry spans for sampled records, exported over OTLP/HTTP (protobuf bodies).
//!
//! Sampling is decided once, by the producer, from [`SampleRatio`], and travels with each
//! record in its W3C `traceparent` header: flag `01` means sampled. The producer records a
//! `send` span for a sampled record (its id is the header's parent id, its end is the ack);
//! the worker and the dispatcher record one span each for a record whose flag says sampled,
//! as children of that span. So one trace shows a record from send to dispatch, and at 13,000
//! msg/s a ratio of 0.001 exports about 40 spans a second in all.
//!
//! Nothing is exported unless an endpoint is set: [`Tracer::from_settings`] returns `None`.
//!
//! ```
//! use fleetstream_obs::trace::{SampleRatio, TraceParent};
//! let t = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
//! assert!(t.sampled);
//! assert_eq!(t.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
//! assert!(SampleRatio::new(1.0).unwrap().sampled(u64::MAX));
//! assert!(!SampleRatio::new(0.0).unwrap().sampled(0));
//! ```

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::Context;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use opentelemetry::trace::SpanKind;
pub use opentelemetry::KeyValue;

/// The OTLP/HTTP path for traces, appended to a base endpoint.
pub const TRACES_PATH: &str = "/v1/traces";

/// How long one export may take unless `OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT` says otherwise.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long [`Tracer::shutdown`] waits for the last export.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// A W3C `traceparent`: `<version>-<trace id>-<parent id>-<flags>`, lowercase hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id (never zero).
    pub trace_id: u128,
    /// The parent span's id (never zero).
    pub span_id: u64,
    /// Flag bit 0: the caller may have recorded; downstream records too.
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a header value strictly: two hex digits of version (not `ff`), 32 of trace id,
    /// 16 of parent id and 2 of flags, lowercase, ids not all zeros, which W3C trace context
    /// says to ignore. Version `00` has exactly these four fields; later versions may append
    /// more.
    pub fn parse(s: &str) -> Option<TraceParent> {
        fn hex(s: &str, len: usize) -> bool {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }
        let mut parts = s.split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let well_formed = hex(version, 2)
            && version != "ff"
            && (version != "00" || parts.next().is_none())
            && hex(trace, 32)
            && hex(parent, 16)
            && hex(flags, 2);
        if !well_formed {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(parent, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(TraceParent {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    fn context(&self) -> Context {
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(self.trace_id),
            SpanId::from(self.span_id),
            flags,
            true,
            TraceState::default(),
        ))
    }
}

impl fmt::Display for TraceParent {
    /// Version 00.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

/// Head sampling by ratio, decided from a well-mixed 64-bit hash of the record (the producer
/// uses its sequence number times a large odd constant), so the choice costs one comparison
/// and repeats from run to run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleRatio {
    ratio: f64,
    /// Sampled when the hash's top 53 bits are below this.
    threshold: u64,
}

impl SampleRatio {
    /// `ratio` in `0..=1`: 0 samples nothing, 1 everything.
    pub fn new(ratio: f64) -> Result<SampleRatio, String> {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(format!("{ratio} is not between 0 and 1"));
        }
        Ok(SampleRatio {
            ratio,
            threshold: (ratio * (1u64 << 53) as f64) as u64,
        })
    }

    /// Whether the record with this hash is sampled.
    pub fn sampled(&self, hash: u64) -> bool {
        (hash >> 11) < self.threshold
    }

    /// The ratio.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }
}

/// The OpenTelemetry messaging attributes of a Kafka record every tier's span carries:
/// `messaging.system`, `messaging.operation.type` (`send`, `process`), the topic and, once known,
/// partition and offset.
pub fn kafka_attributes(
    operation: &'static str,
    topic: &str,
    partition: Option<i32>,
    offset: Option<i64>,
) -> Vec<KeyValue> {
    let mut a = Vec::with_capacity(8);
    a.push(KeyValue::new("messaging.system", "kafka"));
    a.push(KeyValue::new("messaging.operation.type", operation));
    a.push(KeyValue::new(
        "messaging.destination.name",
        topic.to_string(),
    ));
    if let Some(p) = partition {
        a.push(KeyValue::new(
            "messaging.destination.partition.id",
            p.to_string(),
        ));
    }
    if let Some(o) = offset {
        a.push(KeyValue::new("messaging.kafka.offset", o));
    }
    a
}

/// Setting up the exporter failed.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The endpoint (flag or `OTEL_EXPORTER_OTLP_*ENDPOINT`) cannot be used; names it.
    #[error("{setting}: {reason}")]
    Endpoint {
        /// Flag or variable at fault.
        setting: String,
        /// What is wrong.
        reason: String,
    },
    /// The OpenTelemetry SDK refused to build the exporter or failed to flush.
    #[error("OpenTelemetry: {0}")]
    Sdk(String),
}

/// Exports spans over OTLP/HTTP from a background thread (the SDK's batch processor). Cheap to
/// clone; every clone shares one exporter. Call [`Tracer::shutdown`] before exiting: spans
/// still queued are sent then.
#[derive(Clone)]
pub struct Tracer {
    inner: Arc<Inner>,
}

struct Inner {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    endpoint: String,
}

impl fmt::Debug for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracer")
            .field("endpoint", &self.inner.endpoint)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Tracer {
    /// The same exporter.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// Where spans go: the flag's base URL (`/v1/traces` appended unless present), else the
/// standard variables, which the SDK reads itself; `None` when nothing is set.
fn resolve_endpoint(
    flag: Option<&str>,
    flag_name: &str,
) -> Result<Option<(String, bool)>, TraceError> {
    let (setting, url, ours) = match flag.map(str::trim).filter(|s| !s.is_empty()) {
        Some(url) => (flag_name.to_string(), url.to_string(), true),
        None => {
            let var = [
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ]
            .into_iter()
            .find_map(|v| {
                std::env::var(v)
                    .ok()
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| (v, s))
            });
            match var {
                Some((v, url)) => (v.to_string(), url, false),
                None => return Ok(None),
            }
        }
    };
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", _)) => {
            return Err(TraceError::Endpoint {
                setting,
                reason: format!(
                    "{url:?}: this build exports over plain HTTP only; point it at a collector \
                     on the host or in the VPC (the ADOT Lambda layer listens on \
                     http://localhost:4318)"
                ),
            })
        }
        _ => {
            return Err(TraceError::Endpoint {
                setting,
                reason: format!("{url:?} is not an http:// URL, e.g. http://localhost:4318"),
            })
        }
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(TraceError::Endpoint {
            setting,
            reason: format!("{url:?} has no host"),
        });
    }
    if !ours {
        // The SDK uses the per-signal variable as it is and appends the path to the other.
        let shown = if setting == "OTEL_EXPORTER_OTLP_ENDPOINT" {
            format!("{}{TRACES_PATH}", url.trim_end_matches('/'))
        } else {
            url
        };
        return Ok(Some((shown, false)));
    }
    let base = url.trim_end_matches('/');
    let full = if base.ends_with(TRACES_PATH) {
        base.to_string()
    } else {
        format!("{base}{TRACES_PATH}")
    };
    Ok(Some((full, true)))
}

impl Tracer {
    /// A tracer exporting to `endpoint` (the flag `flag_name`, a base URL such as
    /// `http://localhost:4318`), or else to `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; `None` when none is set. `service` names the process
    /// unless `OTEL_SERVICE_NAME` does. Only `http://` URLs are accepted.
    pub fn from_settings(
        endpoint: Option<&str>,
        flag_name: &str,
        service: &str,
    ) -> Result<Option<Tracer>, TraceError> {
        let Some((url, ours)) = resolve_endpoint(endpoint, flag_name)? else {
            return Ok(None);
        };
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
        if ours {
            exporter = exporter.with_endpoint(url.clone());
        }
        // A slow collector must not hold a Lambda invocation (which flushes before it returns)
        // for the SDK's default 10 s; the standard variables still win.
        if [
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ]
        .iter()
        .all(|v| std::env::var_os(v).is_none())
        {
            exporter = exporter.with_timeout(EXPORT_TIMEOUT);
        }
        let exporter = exporter
            .build()
            .map_err(|e| TraceError::Sdk(format!("building the OTLP exporter for {url}: {e}")))?;
        let mut resource = Resource::builder();
        if std::env::var("OTEL_SERVICE_NAME").is_err() {
            resource = resource.with_service_name(service.to_string());
        }
        let provider = SdkTracerProvider::builder()
            // The producer decides; everyone else follows the record's flag.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_resource(resource.build())
            .with_batch_exporter(exporter)
            .build();
        let tracer = provider.tracer("fleetstream");
        Ok(Some(Tracer {
            inner: Arc::new(Inner {
                provider,
                tracer,
                endpoint: url,
            }),
        }))
    }

    /// Where spans go.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// Starts a span now: a root span without `parent`. End it with [`Span::end`].
    pub fn start(
        &self,
        name: impl Into<String>,
        kind: SpanKind,
        parent: Option<&TraceParent>,
        attributes: Vec<KeyValue>,
    ) -> Span {
        let cx = parent.map_or_else(Context::new, TraceParent::context);
        let span = self
            .inner
            .tracer
            .span_builder(name.into())
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&self.inner.tracer, &cx);
        Span(span)
    }

    /// Records a finished span, child of `parent`, from `start` to `end`; an `error` marks it
    /// failed. Does nothing unless `parent` is sampled.
    pub fn record(
        &self,
        name: impl Into<String>,
        kind: SpanKind,
        parent: &TraceParent,
        (start, end): (SystemTime, SystemTime),
        attributes: Vec<KeyValue>,
        error: Option<String>,
    ) {
        if !parent.sampled {
            return;
        }
        let mut span = self
            .inner
            .tracer
            .span_builder(name.into())
            .with_kind(kind)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&self.inner.tracer, &parent.context());
        if let Some(e) = error {
            span.set_status(Status::error(e));
        }
        span.end_with_timestamp(end.max(start));
    }

    /// Sends every finished span now; blocks until the collector answers or times out. For
    /// AWS Lambda, call it before returning each invocation: a frozen sandbox sends nothing.
    pub fn flush(&self) -> Result<(), TraceError> {
        self.inner
            .provider
            .force_flush()
            .map_err(|e| TraceError::Sdk(format!("flushing spans to {}: {e}", self.inner.endpoint)))
    }

    /// Sends what is queued and stops the exporter, waiting at most [`SHUTDOWN_TIMEOUT`];
    /// later spans are dropped. Blocks: from async code, call it on a blocking thread.
    pub fn shutdown(&self) -> Result<(), TraceError> {
        self.inner
            .provider
            .shutdown_with_timeout(SHUTDOWN_TIMEOUT)
            .map_err(|e| {
                TraceError::Sdk(format!(
                    "shutting down the exporter to {}: {e}",
                    self.inner.endpoint
                ))
            })
    }
}

/// A span in progress (see [`Tracer::start`]). Dropping it ends it.
pub struct Span(opentelemetry_sdk::trace::Span);

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Span").field(&self.traceparent()).finish()
    }
}

impl Span {
    /// This span as the parent of others, for the record's `traceparent` header; `None` when
    /// the SDK gave it no valid ids (its provider was shut down).
    pub fn traceparent(&self) -> Option<TraceParent> {
        let sc = self.0.span_context();
        sc.is_valid().then(|| TraceParent {
            trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
            sampled: sc.is_sampled(),
        })
    }

    /// Ends the span now, with `attributes` added; an `error` marks it failed.
    pub fn end(mut self, attributes: Vec<KeyValue>, error: Option<String>) {
        self.0.set_attributes(attributes);
        if let Some(e) = error {
            self.0.set_status(Status::error(e));
        }
        self.0.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parsing_is_strict() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceParent::parse(good).unwrap();
        assert_eq!(t.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(t.span_id, 0x00f067aa0ba902b7);
        assert!(t.sampled);
        assert_eq!(t.to_string(), good);
        let unsampled = TraceParent::parse(&good.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled);
        // Later versions may append fields; 00 may not.
        assert!(TraceParent::parse(&format!("01{}-extra", &good[2..])).is_some());
        for bad in [
            format!("{good}-extra"),
            good.to_uppercase(),
            good.replace("4bf92f3577b34da6a3ce929d0e0e4736", &"0".repeat(32)),
            good.replace("00f067aa0ba902b7", &"0".repeat(16)),
            format!("ff{}", &good[2..]),
            good[..54].to_string(),
            "00-xyz-abc-01".into(),
            String::new(),
        ] {
            assert_eq!(TraceParent::parse(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sample_ratio_samples_its_share_of_mixed_hashes() {
        for ratio in [0.0, 0.001, 0.1, 0.5, 1.0] {
            let s = SampleRatio::new(ratio).unwrap();
            let n = 200_000u64;
            let hits = (0..n)
                .filter(|i| s.sampled(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
                .count() as f64;
            let want = ratio * n as f64;
            assert!(
                (hits - want).abs() <= want * 0.05 + 1.0,
                "ratio {ratio}: {hits} of {n}"
            );
        }
        assert!(SampleRatio::new(1.5).is_err());
        assert!(SampleRatio::new(-0.1).is_err());
        assert!(SampleRatio::new(f64::NAN).is_err());
    }

    #[test]
    fn endpoints_are_checked_and_completed() {
        let r = |s: &str| resolve_endpoint(Some(s), "--otlp-endpoint");
        assert_eq!(
            r("http://localhost:4318").unwrap(),
            Some(("http://localhost:4318/v1/traces".into(), true))
        );
        assert_eq!(
            r("http://c:4318/v1/traces/").unwrap(),
            Some(("http://c:4318/v1/traces".into(), true))
        );
        for bad in ["https://x:4318", "localhost:4318", "http://", "ftp://x"] {
            let e = r(bad).unwrap_err().to_string();
            assert!(e.starts_with("--otlp-endpoint: "), "{e}");
        }
        assert!(r("https://x")
            .unwrap_err()
            .to_string()
            .contains("plain HTTP"));
    }
}
