//! A test OTLP/HTTP collector: accepts `POST /v1/traces` with protobuf bodies, as the
//! OpenTelemetry exporter sends them, and keeps every span it decodes. Feature `collector`.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};

/// One span as the collector received it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// The resource's `service.name`.
    pub service: String,
    /// Span name.
    pub name: String,
    /// OTLP span kind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    /// Trace id.
    pub trace_id: u128,
    /// Span id.
    pub span_id: u64,
    /// Parent span id; `None` for a root span.
    pub parent: Option<u64>,
    /// Attributes, values as text.
    pub attributes: BTreeMap<String, String>,
    /// The status message when the span is marked as an error.
    pub error: Option<String>,
    /// Start and end, nanoseconds since the epoch.
    pub start_ns: u64,
    /// End, nanoseconds since the epoch.
    pub end_ns: u64,
}

/// OTLP span kind `producer`.
pub const KIND_PRODUCER: i32 = 4;
/// OTLP span kind `consumer`.
pub const KIND_CONSUMER: i32 = 5;

/// A collector listening on 127.0.0.1 (a free port) until dropped with the test process.
#[derive(Debug, Clone)]
pub struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    requests: Arc<Mutex<u64>>,
}

impl Collector {
    /// Starts one; each connection is served on its own thread.
    pub fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a test collector");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let c = Collector {
            url,
            spans: Arc::default(),
            requests: Arc::default(),
        };
        let shared = c.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = shared.clone();
                std::thread::spawn(move || shared.serve(stream));
            }
        });
        c
    }

    /// The base URL, for `--otlp-endpoint`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Export requests received so far.
    pub fn requests(&self) -> u64 {
        *self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// HTTP/1.1 with keep-alive: requests one after another on one connection.
    fn serve(&self, stream: TcpStream) {
        let mut out = match stream.try_clone() {
            Ok(s) => s,
            Err(_) => return,
        };
        let mut reader = BufReader::new(stream);
        loop {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                return;
            }
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let status = if request_line.starts_with("POST /v1/traces ") {
                match ExportTraceServiceRequest::decode(body.as_slice()) {
                    Ok(req) => {
                        self.keep(req);
                        "200 OK"
                    }
                    Err(_) => "400 Bad Request",
                }
            } else {
                "404 Not Found"
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
            );
            if out.write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
    }

    fn keep(&self, req: ExportTraceServiceRequest) {
        let mut got = Vec::new();
        for rs in req.resource_spans {
            let service = rs
                .resource
                .map(|r| attributes(&r.attributes))
                .and_then(|mut a| a.remove("service.name"))
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                let id = |b: &[u8]| b.iter().fold(0u128, |a, x| (a << 8) | u128::from(*x));
                got.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    kind: span.kind,
                    trace_id: id(&span.trace_id),
                    span_id: id(&span.span_id) as u64,
                    parent: (!span.parent_span_id.is_empty())
                        .then(|| id(&span.parent_span_id) as u64),
                    attributes: attributes(&span.attributes),
                    // Status code 2 is ERROR.
                    error: span.status.filter(|s| s.code == 2).map(|s| s.message),
                    start_ns: span.start_time_unix_nano,
                    end_ns: span.end_time_unix_nano,
                });
            }
        }
        *self.requests.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(got);
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), v)
        })
        .collect()
}
