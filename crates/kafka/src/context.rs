//! What librdkafka reports outside any one call: authentication failures, TLS handshake
//! failures, all brokers down. Without this, a wrong SASL password or an untrusted certificate
//! shows up only as a metadata request that times out after 15 s. Every client context keeps
//! the newest such error so a failed call can say why.

use crate::msk_iam::MskIamTokens;
use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::error::KafkaError as RdError;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How many distinct client errors are kept.
const KEPT: usize = 4;

/// How long an error is kept: a failure later than this does not cite it, and a repeat after
/// it is logged again.
const KEEP_FOR: Duration = Duration::from_secs(300);

/// The newest distinct client-level errors librdkafka reported, oldest first, each with when it
/// was last seen. A cause such as a refused SASL login is usually followed by its consequence
/// ("1/1 brokers are down"); keeping a few distinct ones keeps the cause.
#[derive(Debug, Default)]
pub struct ClientErrors {
    recent: Mutex<Vec<(Instant, String)>>,
}

impl ClientErrors {
    /// Keeps `reason` (librdkafka's own text, which names the broker and the cause) and logs it
    /// the first time: for long-lived clients, whose errors no call returns. (rust-rdkafka hands
    /// one error event to the context twice.)
    pub(crate) fn record(&self, error: &RdError, reason: &str) {
        if self.keep(error, reason) {
            tracing::warn!(target: "librdkafka", %error, "{reason}");
        }
    }

    /// Keeps `reason` without logging it: for clients whose failing call returns it. Returns
    /// whether it is new (not seen in the last [`KEEP_FOR`]).
    pub(crate) fn keep(&self, error: &RdError, reason: &str) -> bool {
        let text = if reason.is_empty() {
            error.to_string()
        } else {
            reason.to_owned()
        };
        // librdkafka appends timing that differs between repeats: "(after 135ms in state
        // AUTH_REQ, 1 identical error(s) suppressed)". "0/1 brokers are down" reports recovery.
        let text = match text.rfind(" (after ") {
            Some(at) if text.ends_with(')') => text[..at].to_owned(),
            _ => text,
        };
        if text.starts_with("0/") && text.ends_with(" brokers are down") {
            return false;
        }
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent.retain(|(at, _)| now.duration_since(*at) < KEEP_FOR);
        let before = recent.len();
        recent.retain(|(_, t)| *t != text);
        let new = recent.len() == before;
        recent.push((now, text));
        if recent.len() > KEPT {
            recent.remove(0);
        }
        new
    }

    /// The distinct errors seen in the last `window`, oldest first.
    pub fn recent(&self, window: Duration) -> Vec<String> {
        let now = Instant::now();
        self.recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(at, _)| now.duration_since(*at) <= window)
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// `failure`, followed by the errors the client reported in the last `window` (the failed
    /// call's own time), when there are any.
    pub(crate) fn explain(&self, failure: impl std::fmt::Display, window: Duration) -> String {
        let recent = self.recent(window);
        if recent.is_empty() {
            failure.to_string()
        } else {
            format!("{failure}; the client reported: {}", recent.join("; "))
        }
    }
}

/// What a client's `generate_oauth_token` answers: a fresh MSK IAM token, or why not. librdkafka
/// asks at start and at 80% of each token's lifetime, from the client's poll; a failure is
/// reported as a client error ("Failed to acquire SASL OAUTHBEARER token") and retried.
pub(crate) fn oauth_token(
    oauth: Option<&MskIamTokens>,
) -> Result<OAuthToken, Box<dyn std::error::Error>> {
    let tokens = oauth.ok_or(
        "SASL/OAUTHBEARER without a token source: fleetstream supports it for MSK IAM only \
         (--sasl-mechanism AWS_MSK_IAM)",
    )?;
    let token = tokens.token()?;
    Ok(OAuthToken {
        token: token.value,
        // MSK takes the principal from the signature; librdkafka wants a name all the same.
        principal_name: "fleetstream".into(),
        lifetime_ms: token.expires_ms,
    })
}

/// Longest wait for a client's first token request to be served.
const FIRST_TOKEN_WAIT: Duration = Duration::from_secs(15);

/// Serves a new client's first token request, until it has a token or the request failed (at
/// most [`FIRST_TOKEN_WAIT`]), before a blocking call (metadata, watermarks) needs the
/// connection: librdkafka puts the request on the queue that `poll` serves, and a blocking call
/// would otherwise wait for a login that waits for it. A failure is not waited out: the call
/// then fails naming it (librdkafka's "Failed to acquire SASL OAUTHBEARER token: AWS
/// credentials: ..."), at start-up, where a missing role or variable should show. Returns at
/// once without MSK IAM.
pub(crate) fn serve_first_token(oauth: Option<&MskIamTokens>, mut poll: impl FnMut()) {
    let Some(tokens) = oauth else { return };
    let end = Instant::now() + FIRST_TOKEN_WAIT;
    while tokens.signed() == 0 && tokens.failed() == 0 && Instant::now() < end {
        poll();
    }
    // The failure's error event follows the failed request on the same queue.
    if tokens.signed() == 0 {
        poll();
    }
}

/// A client context that only keeps errors, for the short-lived metadata and audit clients:
/// their failing call carries the errors ([`ClientErrors::explain`]), so they are not logged.
#[derive(Debug, Default)]
pub struct ErrorCtx {
    pub(crate) errors: ClientErrors,
    pub(crate) oauth: Option<Arc<MskIamTokens>>,
}

impl ErrorCtx {
    /// A context for a client of `connection` (with its MSK IAM signer, if it uses one).
    pub(crate) fn for_connection(
        connection: &crate::config::ConnectionSettings,
    ) -> Result<Self, crate::KafkaError> {
        Ok(ErrorCtx {
            errors: ClientErrors::default(),
            oauth: connection.oauth()?,
        })
    }
}

impl ClientContext for ErrorCtx {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn error(&self, error: RdError, reason: &str) {
        self.errors.keep(&error, reason);
    }

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        oauth_token(self.oauth.as_deref())
    }
}

/// Metadata clients are producers that never send.
impl rdkafka::producer::ProducerContext for ErrorCtx {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

impl rdkafka::consumer::ConsumerContext for ErrorCtx {}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode;

    #[test]
    fn the_cause_survives_its_consequences() {
        let errors = ClientErrors::default();
        let window = Duration::from_secs(60);
        assert_eq!(
            errors.explain("metadata: timed out", window),
            "metadata: timed out"
        );
        let e = RdError::Global(RDKafkaErrorCode::Authentication);
        errors.record(&e, "SASL authentication error: bad password");
        let down = RdError::Global(RDKafkaErrorCode::AllBrokersDown);
        assert!(errors.keep(&down, "1/1 brokers are down"));
        for _ in 0..10 {
            assert!(
                !errors.keep(&down, "1/1 brokers are down"),
                "a repeat is not new"
            );
        }
        assert_eq!(
            errors.explain("metadata: timed out", window),
            "metadata: timed out; the client reported: SASL authentication error: bad password; 1/1 brokers are down"
        );
    }

    #[test]
    fn repeats_differ_only_in_timing_and_recovery_is_not_an_error() {
        let errors = ClientErrors::default();
        let window = Duration::from_secs(60);
        let e = RdError::Global(RDKafkaErrorCode::Authentication);
        let down = RdError::Global(RDKafkaErrorCode::AllBrokersDown);
        errors.keep(
            &e,
            "SASL authentication error: bad password (after 167ms in state AUTH_REQ)",
        );
        errors.keep(&down, "1/1 brokers are down");
        assert!(!errors.keep(
            &e,
            "SASL authentication error: bad password (after 135ms in state AUTH_REQ, 1 identical error(s) suppressed)"
        ));
        assert!(!errors.keep(&down, "0/1 brokers are down"));
        assert_eq!(
            errors.recent(window),
            [
                "1/1 brokers are down",
                "SASL authentication error: bad password"
            ]
        );
    }

    #[test]
    fn only_a_few_recent_errors_are_kept() {
        let errors = ClientErrors::default();
        let e = RdError::Global(RDKafkaErrorCode::Authentication);
        for i in 0..KEPT + 2 {
            errors.keep(&e, &format!("error {i}"));
        }
        let kept = errors.recent(Duration::from_secs(60));
        assert_eq!(kept.len(), KEPT);
        assert_eq!(kept[0], "error 2");
        // A failed call cites only what its own window saw.
        std::thread::sleep(Duration::from_millis(20));
        assert!(errors.recent(Duration::from_millis(10)).is_empty());
        assert_eq!(errors.explain("x", Duration::from_millis(10)), "x");
    }
}
