//! POSTs each slice of records (one target, one code) as one JSON document to a URL.
//!
//! Cross-cutting behaviour, in order around each request: a per-target concurrency limit (a
//! semaphore: at most `concurrency` requests in flight, the rest wait), a per-request timeout,
//! and retries with exponential backoff for retriable answers. Classification:
//! - 2xx: delivered;
//! - 429 and 5xx, connection errors, timeouts: retriable; retried up to `max_attempts` in total
//!   (honouring a `Retry-After` of whole seconds, capped by [`MAX_BACKOFF`]), then reported as
//!   [`TargetError::Unavailable`] so the dispatcher releases the markers and the records are
//!   retried on redelivery;
//! - any other status (4xx, 3xx): [`TargetError::Rejected`], permanent, not retried.
//!
//! Delivery is at-least-once towards the endpoint: a request that timed out may have been
//! processed, and its retry sends the same records again. Every record carries its
//! `message_id` (also the `Idempotency-Key` header holds the slice's first and last ids) so the
//! endpoint can deduplicate. Plain HTTP only (no TLS): put a sidecar or a load balancer in front
//! of HTTPS endpoints.

use super::{Delivery, Target, TargetError};
use bytes::Bytes;
use fleetstream_core::{Code, TelemetryEvent};
use futures::future::{BoxFuture, FutureExt};
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// First retry waits this long; each further retry doubles it.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two attempts (also caps `Retry-After`).
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Validated settings of an [`HttpTarget`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTargetConfig {
    /// Endpoint, `http://host:port/path`.
    pub url: Uri,
    /// Timeout of one request (connect, send, read the answer).
    pub timeout: Duration,
    /// Attempts per slice, first included (at least 1).
    pub max_attempts: u32,
    /// Requests in flight at once (at least 1).
    pub concurrency: usize,
    /// Wait before the first retry; doubled each retry, capped at [`MAX_BACKOFF`].
    pub initial_backoff: Duration,
}

/// The JSON document POSTed for one slice.
#[derive(Serialize)]
struct Body<'a> {
    target: &'a str,
    code: Code,
    records: Vec<Item<'a>>,
}

#[derive(Serialize)]
struct Item<'a> {
    message_id: &'a str,
    topic: &'a str,
    partition: i32,
    offset: i64,
    event: &'a TelemetryEvent,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    Delivered,
    /// Retriable; optional server-requested wait.
    Retry(String, Option<Duration>),
    Permanent(String),
}

/// What an HTTP status means for the slice.
fn classify(status: StatusCode, retry_after: Option<Duration>) -> Attempt {
    if status.is_success() {
        Attempt::Delivered
    } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Attempt::Retry(format!("HTTP {}", status.as_u16()), retry_after)
    } else {
        Attempt::Permanent(format!("HTTP {}", status.as_u16()))
    }
}

/// Wait before retry number `retry` (1-based): `initial * 2^(retry-1)`, capped, with up to
/// 25% jitter removed so retries from many slices do not arrive in lockstep.
fn backoff(initial: Duration, retry: u32, jitter_seed: u64) -> Duration {
    let base = initial
        .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let jitter = base.mul_f64((jitter_seed % 1000) as f64 / 4000.0);
    base.saturating_sub(jitter)
}

/// Posts JSON batches to one endpoint. Cheap to share: the connection pool and the concurrency
/// limit are per target.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    name: String,
    config: HttpTargetConfig,
    client: Client<HttpConnector, Full<Bytes>>,
    limit: Arc<Semaphore>,
}

impl HttpTarget {
    /// A target called `name` posting to `config.url`.
    pub fn new(name: impl Into<String>, config: HttpTargetConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let limit = Arc::new(Semaphore::new(config.concurrency.max(1)));
        Self {
            name: name.into(),
            config,
            client,
            limit,
        }
    }

    /// The settings.
    pub fn config(&self) -> &HttpTargetConfig {
        &self.config
    }

    async fn attempt(&self, body: Bytes, key: &HeaderValue) -> Attempt {
        let Ok(_permit) = self.limit.acquire().await else {
            return Attempt::Retry("concurrency limit closed".into(), None);
        };
        let request = Request::post(self.config.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("idempotency-key", key.clone())
            .header("x-fleetstream-target", self.name.as_str())
            .body(Full::new(body));
        let request = match request {
            Ok(r) => r,
            Err(e) => return Attempt::Permanent(format!("cannot build the request: {e}")),
        };
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| Duration::from_secs(s).min(MAX_BACKOFF));
            // Read the body so the connection goes back to the pool.
            let _ = response.into_body().collect().await;
            Ok::<_, hyper_util::client::legacy::Error>((status, retry_after))
        };
        match tokio::time::timeout(self.config.timeout, exchange).await {
            Ok(Ok((status, retry_after))) => classify(status, retry_after),
            Ok(Err(e)) => Attempt::Retry(format!("request failed: {e}"), None),
            Err(_) => Attempt::Retry(format!("no answer within {:?}", self.config.timeout), None),
        }
    }
}

impl Target for HttpTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(
        &'a self,
        code: Code,
        records: &'a [Delivery<'a>],
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        async move {
            let body = Body {
                target: &self.name,
                code,
                records: records
                    .iter()
                    .map(|d| Item {
                        message_id: d.id,
                        topic: &d.record.topic,
                        partition: d.record.partition,
                        offset: d.record.offset,
                        event: d.event,
                    })
                    .collect(),
            };
            let body = Bytes::from(serde_json::to_vec(&body).map_err(|e| {
                TargetError::Rejected {
                    target: self.name.clone(),
                    reason: format!("cannot serialize the batch: {e}"),
                }
            })?);
            let key = match (records.first(), records.last()) {
                (Some(first), Some(last)) => format!("{}:{}..{}", code.0, first.id, last.id),
                _ => return Ok(()),
            };
            let key = HeaderValue::from_str(&key)
                .unwrap_or_else(|_| HeaderValue::from_static("non-ascii-ids"));
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::from(d.subsec_nanos()))
                .unwrap_or(0);
            let mut last = String::new();
            for attempt in 1..=self.config.max_attempts.max(1) {
                match self.attempt(body.clone(), &key).await {
                    Attempt::Delivered => return Ok(()),
                    Attempt::Permanent(reason) => {
                        return Err(TargetError::Rejected {
                            target: self.name.clone(),
                            reason,
                        })
                    }
                    Attempt::Retry(reason, retry_after) => {
                        tracing::debug!(target_name = %self.name, attempt, reason = %reason, "HTTP delivery will be retried");
                        last = reason;
                        if attempt < self.config.max_attempts {
                            let wait = retry_after.unwrap_or_else(|| {
                                backoff(
                                    self.config.initial_backoff,
                                    attempt,
                                    seed.wrapping_add(u64::from(attempt)),
                                )
                            });
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
            }
            Err(TargetError::Unavailable {
                target: self.name.clone(),
                reason: format!("{last} after {} attempts", self.config.max_attempts),
            })
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify(StatusCode::OK, None), Attempt::Delivered);
        assert_eq!(classify(StatusCode::NO_CONTENT, None), Attempt::Delivered);
        for s in [429, 500, 502, 503, 504] {
            let status = StatusCode::from_u16(s).unwrap();
            assert!(matches!(classify(status, None), Attempt::Retry(..)), "{s}");
        }
        for s in [400, 401, 404, 409, 413, 422, 301] {
            let status = StatusCode::from_u16(s).unwrap();
            assert!(
                matches!(classify(status, None), Attempt::Permanent(_)),
                "{s}"
            );
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let initial = Duration::from_millis(100);
        assert_eq!(backoff(initial, 1, 0), Duration::from_millis(100));
        assert_eq!(backoff(initial, 3, 0), Duration::from_millis(400));
        let jittered = backoff(initial, 3, 999);
        assert!(jittered < Duration::from_millis(400) && jittered >= Duration::from_millis(300));
        assert_eq!(backoff(initial, 30, 0), MAX_BACKOFF);
    }
}
