//! What librdkafka reports outside any one call: authentication failures, TLS handshake
//! failures, all brokers down. Without this, a wrong SASL password or an untrusted certificate
//! shows up only as a metadata request that times out after 15 s. Every client context keeps
//! the newest such error so a failed call can say why.

use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError as RdError;
use std::sync::{Mutex, PoisonError};

/// How many distinct client errors are kept.
const KEPT: usize = 4;

/// The newest distinct client-level errors librdkafka reported, oldest first. A cause such as a
/// refused SASL login is usually followed by its consequence ("1/1 brokers are down"); keeping
/// a few distinct ones keeps the cause.
#[derive(Debug, Default)]
pub struct ClientErrors {
    recent: Mutex<Vec<String>>,
}

impl ClientErrors {
    /// Keeps `reason` (librdkafka's own text, which names the broker and the cause) and logs it:
    /// for long-lived clients, whose errors no call returns.
    pub(crate) fn record(&self, error: &RdError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, "{reason}");
        self.keep(error, reason);
    }

    /// Keeps `reason` without logging it: for clients whose failing call returns it.
    pub(crate) fn keep(&self, error: &RdError, reason: &str) {
        let text = if reason.is_empty() {
            error.to_string()
        } else {
            reason.to_owned()
        };
        // librdkafka appends timing that differs between repeats: "(after 135ms in state
        // AUTH_REQ, 1 identical error(s) suppressed)". "0/1 brokers are down" means recovery.
        let text = match text.rfind(" (after ") {
            Some(at) if text.ends_with(')') => text[..at].to_owned(),
            _ => text,
        };
        if text.starts_with("0/") && text.ends_with(" brokers are down") {
            return;
        }
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent.retain(|t| *t != text);
        recent.push(text);
        if recent.len() > KEPT {
            recent.remove(0);
        }
    }

    /// The newest distinct errors, oldest first.
    pub fn recent(&self) -> Vec<String> {
        self.recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `failure`, followed by the errors the client reported, when there are any.
    pub(crate) fn explain(&self, failure: impl std::fmt::Display) -> String {
        let recent = self.recent();
        if recent.is_empty() {
            failure.to_string()
        } else {
            format!("{failure}; the client reported: {}", recent.join("; "))
        }
    }
}

/// A client context that only keeps errors, for the short-lived metadata and audit clients:
/// their failing call carries the errors ([`ClientErrors::explain`]), so they are not logged.
#[derive(Debug, Default)]
pub struct ErrorCtx {
    pub(crate) errors: ClientErrors,
}

impl ClientContext for ErrorCtx {
    fn error(&self, error: RdError, reason: &str) {
        self.errors.keep(&error, reason);
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
        assert_eq!(errors.explain("metadata: timed out"), "metadata: timed out");
        let e = RdError::Global(RDKafkaErrorCode::Authentication);
        errors.record(&e, "SASL authentication error: bad password");
        for _ in 0..10 {
            errors.record(
                &RdError::Global(RDKafkaErrorCode::AllBrokersDown),
                "1/1 brokers are down",
            );
        }
        assert_eq!(
            errors.explain("metadata: timed out"),
            "metadata: timed out; the client reported: SASL authentication error: bad password; 1/1 brokers are down"
        );
        errors.record(&e, "SASL authentication error: bad password (after 135ms in state AUTH_REQ, 1 identical error(s) suppressed)");
        errors.record(
            &RdError::Global(RDKafkaErrorCode::AllBrokersDown),
            "0/1 brokers are down",
        );
        assert_eq!(
            errors.recent(),
            [
                "1/1 brokers are down",
                "SASL authentication error: bad password"
            ]
        );
        for i in 0..KEPT {
            errors.record(&e, &format!("error {i}"));
        }
        assert_eq!(errors.recent().len(), KEPT);
        assert_eq!(errors.recent()[0], "error 0");
    }
}
