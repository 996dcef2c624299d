//! A local stand-in for AWS Lambda's Invoke API in front of a [`Dispatcher`] (feature `server`).
//!
//! `POST /2015-03-31/functions/{name}/invocations` takes a Lambda Kafka event, exactly what the
//! Kafka event source mapping would send the function, and answers 200 with the
//! [`crate::DispatchResponse`] JSON: `results`, `batchItemFailures` (Kafka partial batch form)
//! and `summary`. Any AWS SDK Lambda client pointed here with an endpoint override works
//! unchanged; the function name is accepted whatever it is.
//!
//! Errors are JSON `{"__type", "message", "errorClass"}` with the `x-amzn-ErrorType` header, the
//! form AWS SDKs read error codes from:
//! - 400 `InvalidRequestContentException`: the body is not a Kafka event (nothing dispatched);
//! - 401 `UnrecognizedClientException`: a token is configured and the request lacks it;
//! - 413 `RequestTooLargeException`: the body exceeds the limit (6 MiB by default, Lambda's).
//!
//! A dispatch runs to its settlement once begun, on a task of its own: a client that disconnects
//! or times out mid-request does not cut it short (its records end dispatched, their markers
//! completed, and a retry finds them as duplicates; see [`Dispatcher::dispatch_detached`]).
//!
//! `X-Amz-Invocation-Type: Event` answers 202 once the event decoded and dispatches in the
//! background; `DryRun` answers 204 without dispatching. `GET /metrics` serves Prometheus text
//! (names in [`fleetstream_obs::dispatch`]), `GET /health` answers `ok`.

mod config;

pub use config::{ServerConfig, Token, DEFAULT_MAX_BODY_BYTES};

use crate::metrics::Histogram;
use crate::Dispatcher;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use fleetstream_obs::dispatch as names;
use fleetstream_obs::prometheus::Exposition;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// The Invoke path, with AWS's API version date.
pub const INVOKE_PATH: &str = "/2015-03-31/functions/{name}/invocations";
/// Header carrying the token for clients whose `Authorization` holds something else.
pub const TOKEN_HEADER: &str = "x-fleetstream-token";

#[derive(Debug, Default)]
struct ServerMetrics {
    by_status: Mutex<BTreeMap<u16, u64>>,
    latency: Mutex<Histogram>,
}

#[derive(Debug)]
struct AppState {
    dispatcher: Arc<Dispatcher>,
    config: ServerConfig,
    metrics: ServerMetrics,
}

/// The server's routes over `dispatcher`. Serve it with [`serve`] or `axum::serve`.
pub fn router(dispatcher: Arc<Dispatcher>, config: ServerConfig) -> Router {
    let state = Arc::new(AppState {
        dispatcher,
        config,
        metrics: ServerMetrics::default(),
    });
    Router::new()
        .route(INVOKE_PATH, post(invoke))
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok\n" }))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// An error answer in the shape AWS SDKs parse.
fn error(status: StatusCode, aws_type: &'static str, class: &str, message: String) -> Response {
    let body = serde_json::json!({
        "__type": aws_type,
        "message": message,
        "errorClass": class,
    });
    let mut response = (status, json_body(body.to_string())).into_response();
    response
        .headers_mut()
        .insert("x-amzn-errortype", HeaderValue::from_static(aws_type));
    response
}

fn json_body(text: String) -> ([(header::HeaderName, &'static str); 1], String) {
    ([(header::CONTENT_TYPE, "application/json")], text)
}

fn authorized(config: &ServerConfig, headers: &HeaderMap) -> bool {
    let Some(token) = &config.token else {
        return true;
    };
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let bearer = text(header::AUTHORIZATION.as_str())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| token.matches(t.trim()));
    bearer || text(TOKEN_HEADER).is_some_and(|t| token.matches(t.trim()))
}

async fn invoke(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let response = answer(&state, &name, &headers, body).await;
    let status = response.status().as_u16();
    *state
        .metrics
        .by_status
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(status)
        .or_insert(0) += 1;
    state
        .metrics
        .latency
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .observe(started.elapsed());
    response
}

async fn answer(state: &Arc<AppState>, name: &str, headers: &HeaderMap, body: Body) -> Response {
    if !authorized(&state.config, headers) {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "UnrecognizedClientException",
            "unauthorized",
            "missing or wrong token: send `Authorization: Bearer <token>` or `X-Fleetstream-Token: <token>`".into(),
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let limit = state.config.max_body_bytes;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            "too_large",
            format!("request body exceeds {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(e) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(err) = source {
                if err.is::<http_body_util::LengthLimitError>() {
                    return too_large();
                }
                source = err.source();
            }
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContentException",
                "body",
                format!("cannot read the request body: {e}"),
            );
        }
    };
    let records = match crate::event::decode_event_json(&bytes) {
        Ok(records) => records,
        Err(e) => {
            tracing::info!(function = name, class = e.class(), error = %e, "rejected malformed event");
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContentException",
                e.class(),
                e.to_string(),
            );
        }
    };
    let invocation_type = headers
        .get("x-amz-invocation-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("RequestResponse");
    match invocation_type {
        "DryRun" => return StatusCode::NO_CONTENT.into_response(),
        "Event" => {
            let dispatcher = Arc::clone(&state.dispatcher);
            tokio::spawn(async move {
                let response = dispatcher.dispatch(records).await;
                tracing::info!(summary = ?response.summary, "asynchronous invocation dispatched");
            });
            return StatusCode::ACCEPTED.into_response();
        }
        _ => {}
    }
    // On a task of its own: axum drops this handler when the client disconnects or times out,
    // and a dispatch cut short after its targets applied effects would leave them unrecorded
    // (a retry would apply them again). The task settles the batch whoever is still waiting.
    let response = match state.dispatcher.dispatch_detached(records).await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(function = name, error = %e, "dispatch ended without an answer");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                "dispatch",
                e.to_string(),
            );
        }
    };
    tracing::debug!(function = name, summary = ?response.summary, "invocation dispatched");
    match serde_json::to_string(&response) {
        Ok(text) => {
            let mut out = (StatusCode::OK, json_body(text)).into_response();
            out.headers_mut().insert(
                "x-amz-executed-version",
                HeaderValue::from_static("$LATEST"),
            );
            out
        }
        // Serializing plain strings and numbers cannot fail; answer 500 rather than panic.
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            "encode",
            e.to_string(),
        ),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut e = Exposition::new();
    state.dispatcher.metrics().render(&mut e);
    let by_status = state
        .metrics
        .by_status
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for (status, n) in by_status {
        let status = status.to_string();
        e.counter(
            names::INVOCATIONS_TOTAL,
            "Invoke requests by HTTP status.",
            &[("status", status.as_str())],
            n as f64,
        );
    }
    let latency = state
        .metrics
        .latency
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .sample();
    e.histogram(
        names::INVOCATION_SECONDS,
        "Time to answer one Invoke request.",
        &[],
        &latency,
    );
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        e.finish(),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
