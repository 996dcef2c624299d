//! HTTP transport: POSTs the batch as a Lambda Kafka event to the Invoke path of
//! `fleetstream dispatch serve` (or anything that speaks it), and reads per-record results.

use crate::transport::{DispatchFuture, Transport, TransportError};
use bytes::Bytes;
use fleetstream_dispatcher::{
    event::to_event_json, BatchRecord, DispatchResponse, Outcome, RecordResult,
};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::collections::HashSet;
use std::time::Duration;

/// Invokes a dispatcher over HTTP (plain `http://`; put TLS in front with a proxy).
pub struct HttpInvoke {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: hyper::Uri,
    token: Option<String>,
    timeout: Duration,
}

impl HttpInvoke {
    /// `base` like `http://127.0.0.1:9100`; `function` is the name in the Invoke path.
    pub fn new(
        base: &str,
        function: &str,
        token: Option<String>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let base = base.trim_end_matches('/');
        if !base.starts_with("http://") {
            return Err(format!("{base:?} must be an http:// URL"));
        }
        let uri = format!("{base}/2015-03-31/functions/{function}/invocations")
            .parse()
            .map_err(|e| format!("{base:?} is not a URL: {e}"))?;
        Ok(HttpInvoke {
            client: Client::builder(TokioExecutor::new()).build_http(),
            uri,
            token,
            timeout,
        })
    }

    async fn call(&self, records: &[BatchRecord]) -> Result<DispatchResponse, TransportError> {
        let body = serde_json::to_vec(&to_event_json(records))
            .map_err(|e| TransportError::Failed(e.to_string()))?;
        let mut req =
            hyper::Request::post(self.uri.clone()).header("content-type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| TransportError::Failed(e.to_string()))?;
        let resp = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| TransportError::Failed(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| TransportError::Failed(format!("request: {e}")))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| TransportError::Failed(format!("response body: {e}")))?
            .to_bytes();
        if status.as_u16() == 429 {
            return Err(TransportError::Throttled(
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
        if !status.is_success() {
            return Err(TransportError::Failed(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| TransportError::Failed(format!("response is not JSON: {e}")))?;
        parse_response(&value, records)
    }
}

impl Transport for HttpInvoke {
    fn dispatch(&self, records: Vec<BatchRecord>) -> DispatchFuture<'_> {
        Box::pin(async move { self.call(&records).await })
    }
}

/// Reads a dispatcher's answer: per-record `results` when present (fleetstream's dispatcher),
/// else AWS's partial batch response (`batchItemFailures`: listed records failed and are
/// retried, the rest succeeded). A Lambda `FunctionError` body fails the whole batch.
pub fn parse_response(
    value: &serde_json::Value,
    records: &[BatchRecord],
) -> Result<DispatchResponse, TransportError> {
    if let Some(err) = value.get("errorMessage").or_else(|| value.get("errorType")) {
        return Err(TransportError::Failed(format!("function error: {err}")));
    }
    let results = if let Some(rs) = value.get("results").and_then(|r| r.as_array()) {
        if rs.len() != records.len() {
            return Err(TransportError::Failed(format!(
                "{} results for {} records",
                rs.len(),
                records.len()
            )));
        }
        rs.iter()
            .zip(records)
            .map(|(r, rec)| result(rec, outcome(r)))
            .collect()
    } else if let Some(failures) = value.get("batchItemFailures").and_then(|f| f.as_array()) {
        let failed: HashSet<(String, i64)> = failures
            .iter()
            .filter_map(|f| {
                let id = f.get("itemIdentifier")?;
                Some((
                    id.get("partition")?.as_str()?.to_string(),
                    id.get("offset")?.as_i64()?,
                ))
            })
            .collect();
        records
            .iter()
            .map(|rec| {
                let listed =
                    failed.contains(&(format!("{}-{}", rec.topic, rec.partition), rec.offset));
                result(
                    rec,
                    if listed {
                        Outcome::Failed {
                            reason: "batch_item_failure".into(),
                            retriable: true,
                        }
                    } else {
                        Outcome::Dispatched
                    },
                )
            })
            .collect()
    } else {
        return Err(TransportError::Failed(
            "response has neither results nor batchItemFailures".into(),
        ));
    };
    Ok(DispatchResponse {
        results,
        ..Default::default()
    })
}

fn outcome(r: &serde_json::Value) -> Outcome {
    let reason = || {
        r.get("reason")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_string()
    };
    match r.get("outcome").and_then(|o| o.as_str()) {
        Some("dispatched") => Outcome::Dispatched,
        Some("duplicate") => Outcome::Duplicate,
        Some("skipped") => Outcome::Skipped { reason: reason() },
        Some("conflict") => Outcome::Conflict,
        Some("failed") => Outcome::Failed {
            reason: reason(),
            retriable: r.get("retriable").and_then(|v| v.as_bool()).unwrap_or(true),
        },
        // Unknown answers are retried, never taken as success.
        other => Outcome::Failed {
            reason: format!("unknown outcome {other:?}"),
            retriable: true,
        },
    }
}

fn result(rec: &BatchRecord, outcome: Outcome) -> RecordResult {
    RecordResult {
        topic: rec.topic.clone(),
        partition: rec.partition,
        offset: rec.offset,
        message_id: rec.message_id().map(str::to_owned),
        outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn recs() -> Vec<BatchRecord> {
        (0..3)
            .map(|o| BatchRecord {
                topic: "t".into(),
                partition: 1,
                offset: o,
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn reads_per_record_results() {
        let v = json!({"results": [
            {"topic":"t","partition":1,"offset":0,"outcome":"dispatched"},
            {"topic":"t","partition":1,"offset":1,"outcome":"duplicate"},
            {"topic":"t","partition":1,"offset":2,"outcome":"failed","reason":"invalid:schema","retriable":false}
        ]});
        let r = parse_response(&v, &recs()).unwrap();
        assert_eq!(r.results[0].outcome, Outcome::Dispatched);
        assert_eq!(r.results[1].outcome, Outcome::Duplicate);
        assert_eq!(
            r.results[2].outcome,
            Outcome::Failed {
                reason: "invalid:schema".into(),
                retriable: false
            }
        );
    }

    #[test]
    fn reads_aws_partial_batch_responses() {
        let v =
            json!({"batchItemFailures": [{"itemIdentifier": {"partition": "t-1", "offset": 1}}]});
        let r = parse_response(&v, &recs()).unwrap();
        assert_eq!(r.results[0].outcome, Outcome::Dispatched);
        assert!(matches!(
            r.results[1].outcome,
            Outcome::Failed {
                retriable: true,
                ..
            }
        ));
        assert_eq!(r.results[2].outcome, Outcome::Dispatched);
    }

    #[test]
    fn function_errors_and_odd_answers_fail_the_batch() {
        assert!(parse_response(
            &json!({"errorMessage": "boom", "errorType": "Panic"}),
            &recs()
        )
        .is_err());
        assert!(parse_response(&json!({"hello": 1}), &recs()).is_err());
        assert!(parse_response(&json!({"results": []}), &recs()).is_err());
        let odd = json!({"results": [{"outcome":"maybe"},{"outcome":"dispatched"},{"outcome":"dispatched"}]});
        assert!(matches!(
            parse_response(&odd, &recs()).unwrap().results[0].outcome,
            Outcome::Failed {
                retriable: true,
                ..
            }
        ));
    }
}
